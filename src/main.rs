//! `cube`: the command line. Each subcommand loads its settings, calls the library and reports.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cube::config::{
    self, ClusterSettings, ManagerSettings, RuntimeChoice, Size, StoreChoice, WorkerSettings,
};
use cube_actors::scheduler::Algorithm;

/// Cube: a small container orchestrator.
#[derive(Parser)]
#[command(version, about, long_about = None)]
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
}

#[derive(clap::Args)]
struct ManagerArgs {
    /// Settings file (TOML, see config/manager.toml); flags override it.
    #[arg(long, short = 'c', env = "CUBE_MANAGER_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the manager's HTTP API.
    #[arg(long, short = 'l')]
    listen: Option<String>,
    /// Where tasks and nodes are kept.
    #[arg(long, short = 's', value_enum)]
    store: Option<StoreChoice>,
    /// Data directory of the store.
    #[arg(long, short = 'd')]
    data_dir: Option<PathBuf>,
    /// Scheduling algorithm: epvm, roundrobin or greedy.
    #[arg(long)]
    scheduler: Option<Algorithm>,
    /// Workers to connect to, comma-separated host:port.
    #[arg(long, short = 'w', value_delimiter = ',')]
    workers: Option<Vec<String>>,
    /// Milliseconds between polls of the workers.
    #[arg(long)]
    poll_interval_ms: Option<u64>,
}

impl ManagerArgs {
    fn settings(self) -> anyhow::Result<ManagerSettings> {
        let mut s: ManagerSettings = config::load(self.config.as_deref())?;
        if let Some(v) = self.listen {
            s.listen = v;
        }
        if let Some(v) = self.store {
            s.store = v;
        }
        if let Some(v) = self.data_dir {
            s.data_dir = v;
        }
        if let Some(v) = self.scheduler {
            s.scheduler = v;
        }
        if let Some(v) = self.workers {
            s.workers = v;
        }
        if let Some(v) = self.poll_interval_ms {
            s.poll_interval_ms = v;
        }
        Ok(s)
    }
}

#[derive(clap::Args)]
struct UpArgs {
    /// Settings file (TOML, see config/cluster.toml); flags override it.
    #[arg(long, short = 'c', env = "CUBE_CLUSTER_CONFIG")]
    config: Option<PathBuf>,
    /// How many worker nodes.
    #[arg(long, short = 'w')]
    workers: Option<usize>,
    /// Address of the manager's HTTP API.
    #[arg(long, short = 'l')]
    listen: Option<String>,
    /// Data directory (manager in <dir>/manager, nodes in <dir>/node-N).
    #[arg(long, short = 'd')]
    data_dir: Option<PathBuf>,
    /// Where tasks are kept.
    #[arg(long, short = 's', value_enum)]
    store: Option<StoreChoice>,
    /// Docker or simulated containers.
    #[arg(long, short = 'r', value_enum)]
    runtime: Option<RuntimeChoice>,
    /// Scheduling algorithm: epvm, roundrobin or greedy.
    #[arg(long)]
    scheduler: Option<Algorithm>,
    /// CPU cores each node offers (default: an equal share of the machine).
    #[arg(long)]
    node_cpu: Option<f64>,
    /// Memory each node offers, e.g. 2Gi (default: an equal share of the machine).
    #[arg(long)]
    node_memory: Option<Size>,
}

impl UpArgs {
    fn settings(self) -> anyhow::Result<ClusterSettings> {
        let mut s: ClusterSettings = config::load(self.config.as_deref())?;
        if let Some(v) = self.workers {
            s.workers = v;
        }
        if let Some(v) = self.listen {
            s.manager.listen = v;
        }
        if let Some(v) = self.data_dir {
            s.manager.data_dir = v.join("manager");
            s.data_dir = v;
        }
        if let Some(v) = self.store {
            s.store = v;
            s.manager.store = v;
        }
        if let Some(v) = self.runtime {
            s.runtime = v;
        }
        if let Some(v) = self.scheduler {
            s.manager.scheduler = v;
        }
        if let Some(v) = self.node_cpu {
            s.node_cpu = v;
        }
        if let Some(v) = self.node_memory {
            s.node_memory = v;
        }
        Ok(s)
    }
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// Settings file (TOML, see config/worker.toml); flags override it.
    #[arg(long, short = 'c', env = "CUBE_WORKER_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the worker's HTTP API.
    #[arg(long, short = 'l')]
    listen: Option<String>,
    /// The worker's name, unique in the cluster.
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Where tasks are kept.
    #[arg(long, short = 's', value_enum)]
    store: Option<StoreChoice>,
    /// Data directory of the store.
    #[arg(long, short = 'd')]
    data_dir: Option<PathBuf>,
    /// Docker or simulated containers.
    #[arg(long, short = 'r', value_enum)]
    runtime: Option<RuntimeChoice>,
    /// Host address task ports are published on.
    #[arg(long)]
    publish_ip: Option<String>,
    /// Seconds a container gets to exit after SIGTERM.
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// A manager to join, e.g. http://10.0.0.1:5555.
    #[arg(long, short = 'm')]
    manager: Option<String>,
    /// The address the manager should use to reach this worker (default http://<listen>).
    #[arg(long)]
    advertise: Option<String>,
    /// CPU cores offered to tasks (default: all).
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory offered to tasks, e.g. 4Gi (default: the machine's total).
    #[arg(long)]
    memory: Option<Size>,
}

impl WorkerArgs {
    fn settings(self) -> anyhow::Result<WorkerSettings> {
        let mut s: WorkerSettings = config::load(self.config.as_deref())?;
        if let Some(v) = self.listen {
            s.listen = v;
        }
        if let Some(v) = self.name {
            s.name = v;
        }
        if let Some(v) = self.store {
            s.store = v;
        }
        if let Some(v) = self.data_dir {
            s.data_dir = v;
        }
        if let Some(v) = self.runtime {
            s.runtime = v;
        }
        if let Some(v) = self.publish_ip {
            s.publish_ip = v;
        }
        if let Some(v) = self.stop_timeout {
            s.stop_timeout_secs = v;
        }
        if let Some(v) = self.manager {
            s.manager = v;
        }
        if let Some(v) = self.advertise {
            s.advertise = v;
        }
        if let Some(v) = self.cpu {
            s.cpu = v;
        }
        if let Some(v) = self.memory {
            s.memory = v;
        }
        Ok(s)
    }
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Worker(args) => {
            let settings = args.settings()?;
            actix_web::rt::System::new().block_on(async move {
                let node = cube::serve::start_worker(&settings).await?;
                println!(
                    "cube worker {} listening on http://{}",
                    node.name, node.addr
                );
                node.server.await.context("worker HTTP server failed")
            })
        }
        Command::Manager(args) => {
            let settings = args.settings()?;
            actix_web::rt::System::new().block_on(async move {
                let node = cube::serve::start_manager(&settings).await?;
                println!("cube manager listening on http://{}", node.addr);
                node.server.await.context("manager HTTP server failed")
            })
        }
        Command::Up(args) => {
            let settings = args.settings()?;
            actix_web::rt::System::new().block_on(async move {
                let cluster = cube::serve::start_cluster(&settings).await?;
                println!(
                    "cube cluster up: manager listening on http://{} with nodes {}",
                    cluster.manager.addr,
                    cluster.nodes.join(", ")
                );
                cluster
                    .manager
                    .server
                    .await
                    .context("manager HTTP server failed")
            })
        }
    }
}
