//! `cube`: the command line. Each subcommand loads its settings, calls the library and reports.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cube::config::{self, RuntimeChoice, StoreChoice, WorkerSettings};

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
    }
}
