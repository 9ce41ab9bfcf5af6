//! `cube`: the command line. Each subcommand loads its settings, calls the library and reports.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use cube::cli::client::ManagerClient;
use cube::cli::commands::{self, Output};
use cube::cli::run::{self, RunSpec};
use cube::config::Size;
use cube_actors::task::RestartPolicy;

mod server_args;

/// mimalloc rather than glibc's malloc: the control plane allocates small objects on one thread
/// and frees them on another (a task's write is encoded on the manager's thread and freed by
/// the store's writer), where glibc's arenas spent a tenth of the busy threads' time (locks,
/// `malloc_consolidate`); see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use server_args::{ManagerArgs, UpArgs, WorkerArgs};

/// Cube: a small container orchestrator.
#[derive(Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  cube up                                   # manager + 3 nodes on this machine\n  cube run --image cube/echo:latest --port 7777 --wait\n  cube run -f config/examples/echo.json\n  cube status\n  cube node\n  cube logs web -f\n  cube stop web\n\nThe manager address comes from --manager, then CUBE_MANAGER, then http://localhost:5555."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a worker node: runs tasks as containers and serves its API (default 127.0.0.1:5556).
    #[command(
        after_help = "Examples:\n  cube worker\n  cube worker --name w1 --listen 0.0.0.0:5556 --data-dir /var/lib/cube/w1\n  cube worker --runtime sim --store memory"
    )]
    Worker(WorkerArgs),
    /// Start the manager: accepts tasks, schedules them on workers, serves its API (default 127.0.0.1:5555).
    #[command(
        after_help = "Examples:\n  cube manager --workers 10.0.0.7:5556,10.0.0.8:5556\n  cube manager --listen 0.0.0.0:5555 --scheduler roundrobin"
    )]
    Manager(ManagerArgs),
    /// Start an all-in-one cluster: a manager and N worker nodes in this process, sharing the local Docker engine.
    #[command(
        after_help = "Examples:\n  cube up\n  cube up --workers 5 --scheduler greedy\n  cube up --runtime sim --workers 100"
    )]
    Up(UpArgs),
    /// Run a task: from a file (the book's TaskEvent JSON, or a bare Task) and/or from flags.
    #[command(
        after_help = "Examples:\n  cube run -f config/examples/echo.json --wait\n  cube run --image cube/echo:latest --name web --memory 64Mi --cpu 0.5 --port 7777 --env GREETING=hi --wait\n  cube run --image cube/echo:latest --port 9000:7777 --health-check /health\n  cube run --image cube/echo:latest -- /echo"
    )]
    Run(RunArgs),
    /// Stop a task, named by its ID, a unique ID prefix, or its name.
    #[command(after_help = "Examples:\n  cube stop web\n  cube stop 21b23589")]
    Stop(StopArgs),
    /// Show every task as a table, or one task in detail.
    #[command(
        after_help = "Examples:\n  cube status\n  cube status web\n  cube status -o json\n  cube status --watch --state Running"
    )]
    Status(StatusArgs),
    /// Print what happens in the cluster as it happens: task transitions and node status changes.
    #[command(
        after_help = "Examples:\n  cube events\n  cube events --since 8582b189-42   # resume after that event\n  cube events -o json               # one JSON event per line"
    )]
    Events(EventsArgs),
    /// Remove finished tasks (Completed, or Failed) from the manager and their nodes.
    #[command(after_help = "Examples:\n  cube rm web\n  cube rm 21b23589 4f0c1e2a")]
    Rm(RmArgs),
    /// Remove every finished task now (they are also pruned after the retention).
    #[command(after_help = "Examples:\n  cube prune")]
    Prune(PlainArgs),
    /// Load benchmark: a simulated cluster in this process under concurrent clients (see BENCHMARKS.md).
    #[command(
        after_help = "Examples:\n  cube bench                      # 1,000 nodes, LMDB then memory, 10 s phases\n  cube bench --store lmdb --seconds 60 --history 50000\n  cube bench --rate 1000          # open loop at 1,000/s and 2,000/s\n  cube bench --smoke              # 2 s, to check it works\n  cube bench --sync-sizes         # bytes of a one-change sync"
    )]
    Bench(cube::bench::BenchArgs),
    /// Show the nodes: address, status, reserved/offered CPU, memory and disk, task count.
    #[command(
        after_help = "Examples:\n  cube node\n  cube node -o json\n  cube node drain node-2\n  cube node rm node-2"
    )]
    Node(NodeArgs),
    /// Show a task's output (the last lines; -f follows until the task ends).
    #[command(
        after_help = "Examples:\n  cube logs web\n  cube logs web -f\n  cube logs 21b23589 --tail 20"
    )]
    Logs(LogsArgs),
    /// Print the admin token of the manager (or the join token), as left for this user on this
    /// machine by the manager at that address.
    #[command(
        after_help = "Examples:\n  cube token\n  cube token --join\n  curl -H \"Authorization: Bearer $(cube token)\" localhost:5555/tasks\n  cube token -m localhost:5556     # a standalone worker's own token"
    )]
    Token(TokenArgs),
    /// Make the cluster's CA and the certificates of its manager and workers (for TLS).
    #[command(
        after_help = "Examples:\n  cube tls init\n  cube tls init --dir tls --cert manager=manager.lan,10.0.0.1 --cert w1=10.0.0.7 --cert w2=10.0.0.8\n\nThen: cube manager --tls-cert tls/manager.pem --tls-key tls/manager.key --tls-ca tls/ca.pem\n      cube worker --tls-cert tls/w1.pem --tls-key tls/w1.key --tls-ca tls/ca.pem --manager https://manager.lan:5555"
    )]
    Tls {
        #[command(subcommand)]
        action: TlsAction,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  cube completions bash > /etc/bash_completion.d/cube\n  cube completions zsh > \"${fpath[1]}/_cube\"\n  cube completions fish > ~/.config/fish/completions/cube.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Import the echo test program as a container image (no registry needed).
    #[command(
        after_help = "Examples:\n  cube image-echo --binary target/echo/x86_64-unknown-linux-gnu/release/cube-echo\n  (scripts/echo-image.sh builds the binary and runs this)"
    )]
    ImageEcho {
        /// The statically linked cube-echo binary.
        #[arg(long)]
        binary: PathBuf,
        /// The image name to give it.
        #[arg(long, default_value = "cube/echo:latest")]
        tag: String,
    },
}

#[derive(clap::Args)]
struct Target {
    /// The manager's address (default localhost:5555, HTTPS when that manager serves it).
    #[arg(long, short = 'm', env = "CUBE_MANAGER", global = true)]
    manager: Option<String>,
    /// The admin token (default: the one the manager at that address left for this user).
    #[arg(long, env = "CUBE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The CA certificate the manager's certificate must come from (default: likewise).
    #[arg(long, env = "CUBE_CA", global = true)]
    ca: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table", global = true)]
    output: Output,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    target: Target,
    /// A task file: the book's TaskEvent JSON, or a bare Task.
    #[arg(long, short = 'f', visible_alias = "filename")]
    file: Option<PathBuf>,
    /// The container image.
    #[arg(long, short = 'i')]
    image: Option<String>,
    /// The task's name.
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// CPU cores to reserve (and limit to).
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory to reserve (and limit to), e.g. 256Mi.
    #[arg(long)]
    memory: Option<Size>,
    /// Disk to reserve, e.g. 1Gi.
    #[arg(long)]
    disk: Option<Size>,
    /// A port to publish: PORT (any free host port), HOSTPORT:PORT, or PORT/udp. Repeatable.
    #[arg(long, short = 'p')]
    port: Vec<String>,
    /// An environment variable KEY=value. Repeatable.
    #[arg(long, short = 'e')]
    env: Vec<String>,
    /// An HTTP path answering 200 while the task is healthy.
    #[arg(long)]
    health_check: Option<String>,
    /// no, always, unless-stopped or on-failure.
    #[arg(long)]
    restart_policy: Option<RestartPolicy>,
    /// Wait until the task has run for --settle seconds (or ended with code 0), or failed; exit
    /// non-zero with the reason if it failed.
    #[arg(long, short = 'w')]
    wait: bool,
    /// With --wait: seconds the task must run without failing before it counts as started.
    #[arg(long, default_value_t = 3)]
    settle: u64,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// A command replacing the image's default (after --).
    #[arg(last = true)]
    cmd: Vec<String>,
}

#[derive(clap::Args)]
struct StopArgs {
    #[command(flatten)]
    target: Target,
    /// The task: ID, unique ID prefix, or name.
    task: String,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// One task (ID, unique ID prefix, or name); all tasks when left out.
    task: Option<String>,
    /// Only tasks in this state (Pending, Scheduled, Running, Completed, Failed).
    #[arg(long)]
    state: Option<cube_actors::task::TaskState>,
    /// Only tasks placed on this node.
    #[arg(long)]
    node: Option<String>,
    /// Keep the table on screen and redraw it as tasks change (from the event stream).
    #[arg(long, short = 'w', conflicts_with = "task")]
    watch: bool,
}

#[derive(clap::Args)]
struct EventsArgs {
    #[command(flatten)]
    target: Target,
    /// Start after this event (its `Cursor`, the first column), with the retained events since;
    /// without it, from now on. A cursor the manager no longer has gets a reset line first.
    #[arg(long)]
    since: Option<String>,
}

impl StatusArgs {
    /// The listing's query string.
    fn filter(&self) -> String {
        let mut parts = Vec::new();
        if let Some(state) = self.state {
            parts.push(format!("state={state}"));
        }
        if let Some(node) = &self.node {
            parts.push(format!("node={node}"));
        }
        parts.join("&")
    }
}

#[derive(clap::Args)]
struct RmArgs {
    #[command(flatten)]
    target: Target,
    /// The finished tasks to remove: IDs, unique ID prefixes, or names.
    #[arg(required = true)]
    tasks: Vec<String>,
}

#[derive(clap::Args)]
struct NodeArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: Option<NodeAction>,
}

#[derive(clap::Args)]
struct PlainArgs {
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The server's address (default localhost:5555).
    #[arg(long, short = 'm', env = "CUBE_MANAGER")]
    manager: Option<String>,
    /// The token workers enroll with, instead of the admin token.
    #[arg(long, conflicts_with = "metrics")]
    join: bool,
    /// The token that reads only GET /metrics (for Prometheus), instead of the admin token.
    #[arg(long)]
    metrics: bool,
}

#[derive(Subcommand)]
enum TlsAction {
    /// Make the CA (unless DIR has one) and a certificate per --cert.
    Init {
        /// Where the files go (default: tls/ under the per-user config directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// NAME=HOST,HOST...: a certificate NAME.pem/NAME.key for those DNS names or IPs.
        /// Repeatable (default: manager=localhost,127.0.0.1).
        #[arg(long = "cert")]
        certs: Vec<cube::pki::CertSpec>,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Take no new tasks there, place its tasks elsewhere and stop its copies of them.
    Drain {
        /// The node's name.
        name: String,
    },
    /// Drain the node, then remove it from the cluster.
    Rm {
        /// The node's name.
        name: String,
    },
}

#[derive(clap::Args)]
struct LogsArgs {
    #[command(flatten)]
    target: Target,
    /// The task: ID, unique ID prefix, or name.
    task: String,
    /// Keep printing new lines until the task ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// How many lines from the end.
    #[arg(long, default_value_t = 100)]
    tail: usize,
    /// The output of the attempt before the last restart in place.
    #[arg(long, short = 'p')]
    previous: bool,
}

/// Runs a server in an actix system. A server that cannot start exits at once with its error:
/// dropping a half-started system would run actors' start-up code without a runtime. Nothing is
/// lost by not unwinding: every write that was answered is committed.
fn serve(server: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let result = server.await;
        if let Err(e) = &result {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        result
    })
}

/// Runs a client command in an actix system.
fn client_command<F, Fut>(target: &Target, f: F) -> anyhow::Result<()>
where
    F: FnOnce(ManagerClient, Output) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let client = ManagerClient::connect(&cube::cli::client::Target {
        address: target.manager.clone(),
        token: target.token.clone(),
        ca: target.ca.clone(),
    })?;
    let output = target.output;
    actix_web::rt::System::new().block_on(f(client, output))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let server = matches!(
        cli.command,
        Command::Worker(_) | Command::Manager(_) | Command::Up(_)
    );
    // Servers log what they do; client commands only warn.
    let level = if server { "info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    match dispatch(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let spec = RunSpec {
                file: args.file,
                image: args.image,
                name: args.name,
                cpu: args.cpu,
                memory: args.memory.map(|s| s.0),
                disk: args.disk.map(|s| s.0),
                ports: args.port,
                env: args.env,
                health_check: args.health_check,
                restart_policy: args.restart_policy,
                cmd: args.cmd,
            };
            let wait = args.wait.then(|| run::Wait {
                settle: std::time::Duration::from_secs(args.settle),
                timeout: std::time::Duration::from_secs(args.timeout),
            });
            client_command(&args.target, |c, o| async move {
                run::run(&c, spec, wait, o).await
            })
        }
        Command::Stop(args) => client_command(&args.target, |c, o| async move {
            commands::stop(&c, &args.task, o).await
        }),
        Command::Status(args) if args.watch => {
            let filter = args.filter();
            client_command(&args.target, |c, _| async move {
                cube::cli::watch::watch_status(&c, &filter, args.state, args.node.as_deref()).await
            })
        }
        Command::Status(args) => {
            let filter = args.filter();
            client_command(&args.target, |c, o| async move {
                commands::status(&c, args.task.as_deref(), &filter, o).await
            })
        }
        Command::Events(args) => client_command(&args.target, |c, o| async move {
            cube::cli::watch::events(&c, args.since.as_deref(), o).await
        }),
        Command::Bench(args) => actix_web::rt::System::new().block_on(cube::bench::run(args)),
        Command::Rm(args) => client_command(&args.target, |c, o| async move {
            commands::rm(&c, &args.tasks, o).await
        }),
        Command::Prune(args) => {
            client_command(
                &args.target,
                |c, o| async move { commands::prune(&c, o).await },
            )
        }
        Command::Node(args) => client_command(&args.target, |c, o| async move {
            match args.action {
                None => commands::node(&c, o).await,
                Some(NodeAction::Drain { name }) => {
                    commands::retire_node(&c, &name, false, o).await
                }
                Some(NodeAction::Rm { name }) => commands::retire_node(&c, &name, true, o).await,
            }
        }),
        Command::Logs(args) => client_command(&args.target, |c, o| async move {
            commands::logs(&c, &args.task, args.tail, args.follow, args.previous, o).await
        }),
        Command::Token(args) => {
            let address = args
                .manager
                .unwrap_or_else(|| cube::cli::client::DEFAULT_MANAGER.into());
            let dir = cube::access::user_dir()
                .context("no per-user directory: set CUBE_CONFIG_DIR, XDG_CONFIG_HOME or HOME")?;
            let entry = cube::access::load(&dir, &address).with_context(|| {
                format!(
                    "no token for {address} in {}: start it on this machine as this user \
                     (`cube up`, `cube manager`), or read it from its data directory",
                    dir.display()
                )
            })?;
            let token = if args.join {
                entry
                    .join_token
                    .with_context(|| format!("{address} is not a manager: it has no join token"))?
            } else if args.metrics {
                entry.metrics_token.with_context(|| {
                    format!("no metrics token for {address} here (a worker has none; a manager started before this version: start it again)")
                })?
            } else {
                entry.token
            };
            println!("{token}");
            Ok(())
        }
        Command::Tls {
            action: TlsAction::Init { dir, certs },
        } => {
            let dir = match dir {
                Some(dir) => dir,
                None => cube::access::user_dir()
                    .context("no per-user directory: pass --dir")?
                    .join("tls"),
            };
            let certs = if certs.is_empty() {
                vec!["manager".parse().map_err(anyhow::Error::msg)?]
            } else {
                certs
            };
            for path in cube::pki::init(&dir, &certs)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cube", &mut std::io::stdout());
            Ok(())
        }
        Command::ImageEcho { binary, tag } => {
            let bytes = std::fs::read(&binary)
                .with_context(|| format!("cannot read {}", binary.display()))?;
            let tar = cube_actors::runtime::echo_image_tar(&bytes)?;
            let changes = vec!["CMD [\"/echo\"]".to_string(), "EXPOSE 7777".to_string()];
            actix_web::rt::System::new()
                .block_on(cube_actors::runtime::import_image(&tag, tar, changes))
                .with_context(|| format!("cannot import {tag}"))?;
            println!("imported {} as image {tag}", binary.display());
            Ok(())
        }
        Command::Worker(args) => {
            let settings = args.settings()?;
            serve(async move {
                let node = cube::serve::start_worker(&settings).await?;
                println!("cube worker {} listening on {}", node.name, node.url);
                // SIGTERM or SIGINT: the HTTP server stops taking requests and finishes those
                // under way; then the writes in flight are committed.
                node.server.await.context("worker HTTP server failed")?;
                cube::serve::flush(&[node.store]).await;
                eprintln!(
                    "cube worker {} stopped: its state is on disk, its containers keep running",
                    node.name
                );
                Ok(())
            })
        }
        Command::Manager(args) => {
            let settings = args.settings()?;
            serve(async move {
                let node = cube::serve::start_manager(&settings).await?;
                println!("cube manager listening on {}", node.url);
                println!("admin token: {} (`cube token` prints it)", node.token_place);
                node.server.await.context("manager HTTP server failed")?;
                cube::serve::flush(&[node.store]).await;
                eprintln!("cube manager stopped: every accepted task is on disk");
                Ok(())
            })
        }
        Command::Up(args) => {
            let settings = args.settings()?;
            let docker = settings.runtime == cube::config::RuntimeChoice::Docker;
            let (prefix, workers) = (settings.node_prefix.clone(), settings.workers);
            let served = serve(async move {
                let cluster = cube::serve::start_cluster(&settings).await?;
                println!(
                    "cube cluster up: manager listening on {} with {}",
                    cluster.manager.url,
                    cube::serve::summarize_nodes(&cluster.nodes)
                );
                println!(
                    "admin token: {} (`cube token` prints it)",
                    cluster.manager.token_place
                );
                cluster
                    .manager
                    .server
                    .await
                    .context("manager HTTP server failed")?;
                let _ = cluster
                    .manager
                    .manager
                    .send(cube_actors::manager::Shutdown)
                    .await;
                cluster.nodes_thread.stop().await;
                let mut stores = cluster.stores;
                stores.push(cluster.manager.store);
                cube::serve::flush(&stores).await;
                Ok(())
            });
            if docker {
                eprintln!(
                    "cube up stopped. Its tasks' containers keep running: `cube up` again takes \
                     them back (its state is on disk). To stop them, `cube stop` each task (or \
                     `cube prune` the finished ones) before Ctrl-C; to remove this cluster's \
                     containers: for n in $(seq 1 {workers}); do docker rm -f \
                     $(docker ps -aq --filter label=cube.worker={prefix}-$n); done"
                );
            }
            served
        }
    }
}
