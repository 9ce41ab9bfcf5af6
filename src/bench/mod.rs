//! `cube bench`: the load benchmark, one command, no external tool (see [`load`]); and, with
//! `--sync-sizes`, the sync-size measure of the sync issue (see [`sync`]).
//!
//! Everything it measures runs in this process, on the simulated runtime, next to its clients,
//! and every figure is printed beside a baseline measured in the same run.

mod clients;
mod load;
mod sync;

use std::path::PathBuf;
use std::time::Duration;

use cube_actors::task::{Task, TaskEvent};

use crate::config::StoreChoice;

/// What `cube bench` measures.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds each measured phase lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent clients of the closed-loop phases (and of the floor).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Simulated worker nodes of the cluster.
    #[arg(long, default_value_t = 1000)]
    pub workers: usize,
    /// The store(s) to measure on: lmdb, memory, or both (one after the other).
    #[arg(long, default_value = "both")]
    pub store: StoreArg,
    /// Seconds a submitted task runs before it exits (a steady working set in long runs).
    #[arg(long, default_value_t = 3)]
    pub task_seconds: u64,
    /// Open loop: the offered rate, in submissions per second (default: half the rate the
    /// closed loop sustained), and twice that to see the overload behaviour.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The manager's `max_in_flight` (submissions handled at once; more get 429), if not its
    /// default.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Skip the open-loop phases.
    #[arg(long)]
    pub no_open_loop: bool,
    /// Then fill the history with this many finished tasks and measure the closed loop again
    /// (0: skip).
    #[arg(long, default_value_t = 0)]
    pub history: usize,
    /// A 2-second run on 20 nodes that checks the harness works (CI); no figure is meaningful.
    #[arg(long)]
    pub smoke: bool,
    /// Measure sync sizes instead (a worker over HTTP; `--history` and `--running` tasks).
    #[arg(long)]
    pub sync_sizes: bool,
    /// Running tasks on the worker for the last sync of `--sync-sizes`.
    #[arg(long, default_value_t = 1000)]
    pub running: usize,
    /// Where the clusters keep their data (a fresh directory under the system's temp dir if
    /// unset; removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `--store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreArg {
    Lmdb,
    Memory,
    Both,
}

impl StoreArg {
    fn stores(self) -> Vec<StoreChoice> {
        match self {
            StoreArg::Lmdb => vec![StoreChoice::Lmdb],
            StoreArg::Memory => vec![StoreChoice::Memory],
            StoreArg::Both => vec![StoreChoice::Lmdb, StoreChoice::Memory],
        }
    }
}

/// A task the simulated runtime ends after `after_ms` with code 0.
fn quick_task_after(name: &str, after_ms: u64) -> TaskEvent {
    let mut task = Task::new(name, "cube/echo:latest");
    task.env = vec!["EXIT_CODE=0".into(), format!("EXIT_AFTER_MS={after_ms}")];
    TaskEvent::run(task)
}

/// A task the simulated runtime ends at once with code 0.
fn quick_task(name: &str) -> TaskEvent {
    quick_task_after(name, 0)
}

/// A task that runs until stopped.
fn long_task(name: &str) -> TaskEvent {
    TaskEvent::run(Task::new(name, "cube/echo:latest"))
}

/// The token of the bench's servers (made for this run).
fn bench_token() -> &'static cube_actors::secret::Token {
    static TOKEN: std::sync::OnceLock<cube_actors::secret::Token> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| cube_actors::secret::Token::generate("bench"))
}

/// An HTTP client that sends the bench's token, with this timeout per request.
fn client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .bearer_auth(bench_token().expose())
        .timeout(timeout)
        .finish()
}

/// Posts quick tasks named `<prefix>-<client>-<i>` to `url` from `connections` clients until
/// `n` are accepted (a 429 is waited out, anything else fails); how many were posted (`n`
/// rounded up to a multiple of `connections`).
async fn fill(url: &str, connections: usize, n: usize, prefix: &str) -> anyhow::Result<usize> {
    let connections = connections.max(1);
    let per = n.div_ceil(connections);
    let clients = (0..connections).map(|c| {
        let client = client(Duration::from_secs(30));
        async move {
            for i in 0..per {
                let body = quick_task(&format!("{prefix}-{c}-{i}"));
                loop {
                    let mut r = client
                        .post(url)
                        .send_json(&body)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    // Read to its end, so that the connection is kept.
                    let _ = r.body().await;
                    match r.status().as_u16() {
                        200..=299 => break,
                        429 => actix_web::rt::time::sleep(Duration::from_millis(5)).await,
                        s => anyhow::bail!("posting {prefix} tasks to {url}: answered {s}"),
                    }
                }
            }
            anyhow::Ok(())
        }
    });
    for r in futures_util::future::join_all(clients).await {
        r?;
    }
    Ok(per * connections)
}

/// Runs the benchmark.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.smoke {
        args.seconds = 2;
        args.workers = args.workers.min(20);
        args.connections = args.connections.min(8);
        args.history = args.history.min(200);
    }
    let (dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => {
            let dir = std::env::temp_dir().join(format!("cube-bench-{}", uuid::Uuid::new_v4()));
            (dir, true)
        }
    };
    let result = if args.sync_sizes {
        sync::sync_sizes(&args, &dir).await
    } else {
        load::run(&args, &dir).await
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
