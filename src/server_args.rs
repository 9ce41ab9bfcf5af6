//! The arguments of the commands that start servers: `cube manager`, `cube up`, `cube worker`,
//! and how each turns into settings.

use std::path::PathBuf;

use cube::config::{
    self, ClusterSettings, ManagerSettings, RuntimeChoice, Size, StoreChoice, WorkerSettings,
};
use cube_actors::scheduler::Algorithm;

#[derive(clap::Args)]
pub struct ManagerArgs {
    /// Settings file (TOML, see config/manager.toml); flags override it.
    #[arg(long, short = 'c', env = "CUBE_MANAGER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the manager's HTTP API.
    #[arg(long, short = 'l')]
    pub listen: Option<String>,
    /// Where tasks and nodes are kept.
    #[arg(long, short = 's', value_enum)]
    pub store: Option<StoreChoice>,
    /// Data directory of the store.
    #[arg(long, short = 'd')]
    pub data_dir: Option<PathBuf>,
    /// Scheduling algorithm: epvm, roundrobin or greedy.
    #[arg(long)]
    pub scheduler: Option<Algorithm>,
    /// Milliseconds between polls of the workers' metrics.
    #[arg(long)]
    pub poll_interval_ms: Option<u64>,
    /// Finished tasks kept at most; older ones are pruned.
    #[arg(long)]
    pub retain_finished: Option<usize>,
    #[command(flatten)]
    pub security: ManagerSecurity,
}

/// A server's TLS files (manager or worker).
#[derive(clap::Args)]
pub struct TlsArgs {
    /// TLS certificate of this server (PEM, from `cube tls init`).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key of this server (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate: the peers' certificates must come from it.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// Sets the certificate, key and CA settings that were given.
    fn apply(self, [cert, key, ca]: [&mut PathBuf; 3]) {
        for (given, setting) in [
            (self.tls_cert, cert),
            (self.tls_key, key),
            (self.tls_ca, ca),
        ] {
            if let Some(v) = given {
                *setting = v;
            }
        }
    }
}

/// The manager's tokens and TLS (for `cube manager` and `cube up`).
#[derive(clap::Args)]
pub struct ManagerSecurity {
    /// The cluster's admin token (default: the one made at the first start, in the data dir).
    #[arg(long, env = "CUBE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The token workers enroll with (default: made at the first start, in the data dir).
    #[arg(long, env = "CUBE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Serve an address other machines reach without TLS anyway.
    #[arg(long)]
    pub allow_insecure_bind: bool,
    /// Let tasks bind host ports below 1024.
    #[arg(long)]
    pub allow_privileged_ports: bool,
}

impl ManagerSecurity {
    fn apply(self, s: &mut ManagerSettings) {
        if let Some(v) = self.token {
            s.token = v;
        }
        if let Some(v) = self.join_token {
            s.join_token = v;
        }
        self.tls
            .apply([&mut s.tls_cert, &mut s.tls_key, &mut s.tls_ca]);
        s.allow_insecure_bind |= self.allow_insecure_bind;
        s.allow_privileged_ports |= self.allow_privileged_ports;
        s.user_config_dir = cube::access::user_dir();
    }
}

impl ManagerArgs {
    pub fn settings(self) -> anyhow::Result<ManagerSettings> {
        let mut s: ManagerSettings = config::load(self.config.as_deref())?;
        self.security.apply(&mut s);
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
        if let Some(v) = self.poll_interval_ms {
            s.poll_interval_ms = v;
        }
        if let Some(v) = self.retain_finished {
            s.retain_finished = v;
        }
        Ok(s)
    }
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Settings file (TOML, see config/cluster.toml); flags override it.
    #[arg(long, short = 'c', env = "CUBE_CLUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// How many worker nodes.
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,
    /// Address of the manager's HTTP API.
    #[arg(long, short = 'l')]
    pub listen: Option<String>,
    /// Data directory (manager in <dir>/manager, the nodes, sharing one store, in <dir>/nodes).
    #[arg(long, short = 'd')]
    pub data_dir: Option<PathBuf>,
    /// Where tasks are kept.
    #[arg(long, short = 's', value_enum)]
    pub store: Option<StoreChoice>,
    /// Docker or simulated containers.
    #[arg(long, short = 'r', value_enum)]
    pub runtime: Option<RuntimeChoice>,
    /// Scheduling algorithm: epvm, roundrobin or greedy.
    #[arg(long)]
    pub scheduler: Option<Algorithm>,
    /// CPU cores each node offers (default: an equal share of the machine).
    #[arg(long)]
    pub node_cpu: Option<f64>,
    /// Memory each node offers, e.g. 2Gi (default: an equal share of the machine).
    #[arg(long)]
    pub node_memory: Option<Size>,
    /// Name the nodes <PREFIX>-1, <PREFIX>-2, ... (default node).
    #[arg(long)]
    pub node_prefix: Option<String>,
    /// Finished tasks kept at most; older ones are pruned.
    #[arg(long)]
    pub retain_finished: Option<usize>,
    #[command(flatten)]
    pub security: ManagerSecurity,
}

impl UpArgs {
    pub fn settings(self) -> anyhow::Result<ClusterSettings> {
        let mut s: ClusterSettings = config::load(self.config.as_deref())?;
        self.security.apply(&mut s.manager);
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
        if let Some(v) = self.node_prefix {
            s.node_prefix = v;
        }
        if let Some(v) = self.retain_finished {
            s.manager.retain_finished = v;
        }
        Ok(s)
    }
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Settings file (TOML, see config/worker.toml); flags override it.
    #[arg(long, short = 'c', env = "CUBE_WORKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the worker's HTTP API.
    #[arg(long, short = 'l')]
    pub listen: Option<String>,
    /// The worker's name, unique in the cluster.
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// Where tasks are kept.
    #[arg(long, short = 's', value_enum)]
    pub store: Option<StoreChoice>,
    /// Data directory of the store.
    #[arg(long, short = 'd')]
    pub data_dir: Option<PathBuf>,
    /// Docker or simulated containers.
    #[arg(long, short = 'r', value_enum)]
    pub runtime: Option<RuntimeChoice>,
    /// Host address task ports are published on.
    #[arg(long)]
    pub publish_ip: Option<String>,
    /// Seconds a container gets to exit after SIGTERM.
    #[arg(long)]
    pub stop_timeout: Option<u64>,
    /// A manager to join, e.g. http://10.0.0.1:5555.
    #[arg(long, short = 'm')]
    pub manager: Option<String>,
    /// The address the manager should use to reach this worker (default http://<listen>).
    #[arg(long)]
    pub advertise: Option<String>,
    /// CPU cores offered to tasks (default: all).
    #[arg(long)]
    pub cpu: Option<f64>,
    /// With --runtime sim: an image the simulated node has (repeat for more); any other image
    /// fails to start as on a node with no registry. Without it, every image exists.
    #[arg(long = "sim-image")]
    pub sim_images: Vec<String>,
    /// Memory offered to tasks, e.g. 4Gi (default: the machine's total).
    #[arg(long)]
    pub memory: Option<Size>,
    /// The cluster's join token, to enroll with --manager (default: the one this machine's
    /// manager left for this user).
    #[arg(long, env = "CUBE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Enroll under a name already enrolled with another identity: for a node whose data
    /// directory was lost. Needs the join token.
    #[arg(long)]
    pub replace: bool,
    /// A token for calling this worker's API directly (default: made at its first start, in
    /// its data dir). Never the cluster's admin token.
    #[arg(long, env = "CUBE_WORKER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Serve an address other machines reach without TLS anyway.
    #[arg(long)]
    pub allow_insecure_bind: bool,
}

impl WorkerArgs {
    pub fn settings(self) -> anyhow::Result<WorkerSettings> {
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
        if !self.sim_images.is_empty() {
            s.sim_images = self.sim_images;
        }
        if let Some(v) = self.cpu {
            s.cpu = v;
        }
        if let Some(v) = self.memory {
            s.memory = v;
        }
        if let Some(v) = self.join_token {
            s.join_token = v;
        }
        if let Some(v) = self.token {
            s.token = v;
        }
        self.tls
            .apply([&mut s.tls_cert, &mut s.tls_key, &mut s.tls_ca]);
        s.replace |= self.replace;
        s.allow_insecure_bind |= self.allow_insecure_bind;
        s.user_config_dir = cube::access::user_dir();
        Ok(s)
    }
}
