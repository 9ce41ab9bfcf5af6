//! Settings files (TOML, see `config/`) and the defaults behind them.
//!
//! Every setting has a default; a file sets some of them; command-line flags override both.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cube_actors::scheduler::Algorithm;
use cube_actors::units::parse_bytes;
use serde::Deserialize;

/// Which store a process keeps its tasks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreChoice {
    /// In memory: lost when the process ends.
    Memory,
    /// Durable, on LMDB in the data directory.
    Lmdb,
}

/// Which runtime a worker runs tasks on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// Real containers on the local Docker engine.
    Docker,
    /// Simulated containers in memory (no Docker needed).
    Sim,
}

/// A size in bytes, written as a number or with a unit (`"256Mi"`, `"8Gi"`, `"2G"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Size(n)),
            Raw::Text(t) => parse_bytes(&t).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_bytes(s).map(Size)
    }
}

/// Settings of `cube worker` (see `config/worker.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// Address of the worker's HTTP API.
    pub listen: String,
    /// The worker's name; empty means `worker-<hostname>`.
    pub name: String,
    /// Where tasks are kept.
    pub store: StoreChoice,
    /// Data directory; empty means a per-user one (see [`WorkerSettings::resolved_data_dir`]).
    pub data_dir: PathBuf,
    /// Largest size of the LMDB data file, in MiB.
    pub store_map_size_mib: usize,
    /// Docker or simulated containers.
    pub runtime: RuntimeChoice,
    /// Host address task ports are published on.
    pub publish_ip: String,
    /// With the sim runtime: the images the simulated node has (any other is "not pullable");
    /// empty means every image exists.
    pub sim_images: Vec<String>,
    /// Seconds a container gets to exit after SIGTERM.
    pub stop_timeout_secs: u64,
    /// Milliseconds between comparisons of the tasks with the runtime.
    pub reconcile_interval_ms: u64,
    /// Restarts in place a task's policy may ask for, per placement.
    pub max_restarts: u32,
    /// Milliseconds before the first restart in place; doubled for each next one (up to 30 s).
    pub restart_delay_ms: u64,
    /// Milliseconds a container must run for its task's restart budget to start afresh.
    pub restart_window_ms: u64,
    /// Milliseconds between health checks of a task that has one.
    pub health_interval_ms: u64,
    /// Milliseconds one health check may take.
    pub health_timeout_ms: u64,
    /// Milliseconds after a task's start before its health is checked.
    pub health_grace_ms: u64,
    /// Failed health checks in a row that make a task unhealthy (stopped, restarted by policy).
    pub health_failures: u32,
    /// Milliseconds without word from the manager after which the worker stops its tasks;
    /// 0 (the default) never does.
    pub stop_after_disconnect_ms: u64,
    /// Milliseconds between metrics samples.
    pub stats_interval_ms: u64,
    /// CPU cores offered to tasks; 0 means all of the machine's.
    pub cpu: f64,
    /// Memory offered to tasks; 0 means the machine's total.
    pub memory: Size,
    /// Disk offered to tasks; 0 means the free space of the data directory's filesystem.
    pub disk: Size,
    /// A manager to enroll with (`http://host:5555`); empty means none.
    pub manager: String,
    /// The address the manager should use to reach this worker; empty means `http://<listen>`
    /// (`https://` with TLS).
    pub advertise: String,
    /// The cluster's join token, to enroll with the manager; empty means the one `cube up` or
    /// `cube manager` left for this user on this machine.
    pub join_token: String,
    /// Enroll under a name already enrolled with another identity (this node lost its data).
    pub replace: bool,
    /// A token for calling this worker's API directly; empty means the one in the data
    /// directory (`worker.token`), made at its first start. Never the cluster's admin token.
    pub token: String,
    /// TLS: the worker's certificate and key (PEM), from `cube tls init`; empty means plain HTTP.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// TLS: the cluster's CA certificate, to check the manager's certificate when enrolling.
    pub tls_ca: PathBuf,
    /// Serve a non-loopback address without TLS anyway.
    pub allow_insecure_bind: bool,
    /// Where this user's tokens are kept for the CLI (not a file setting: from the environment).
    #[serde(skip)]
    pub user_config_dir: Option<PathBuf>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            listen: "127.0.0.1:5556".into(),
            name: String::new(),
            store: StoreChoice::Lmdb,
            data_dir: PathBuf::new(),
            store_map_size_mib: 1024,
            runtime: RuntimeChoice::Docker,
            publish_ip: "127.0.0.1".into(),
            sim_images: Vec::new(),
            stop_timeout_secs: 10,
            reconcile_interval_ms: 2000,
            max_restarts: 3,
            restart_delay_ms: 1000,
            restart_window_ms: 300_000,
            health_interval_ms: 5000,
            health_timeout_ms: 2000,
            health_grace_ms: 5000,
            health_failures: 3,
            stop_after_disconnect_ms: 0,
            stats_interval_ms: 1000,
            cpu: 0.0,
            memory: Size(0),
            disk: Size(0),
            manager: String::new(),
            advertise: String::new(),
            join_token: String::new(),
            replace: false,
            token: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_ca: PathBuf::new(),
            allow_insecure_bind: false,
            user_config_dir: None,
        }
    }
}

impl WorkerSettings {
    /// The name, or `worker-<hostname>` when none is set.
    pub fn resolved_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".into());
        format!("worker-{host}")
    }

    /// The data directory; when none is set, a per-user one that does not depend on where the
    /// worker was started: `$XDG_DATA_HOME/cube/<name>`, else `~/.local/share/cube/<name>`
    /// (`./data/<name>` only when neither variable is set).
    pub fn resolved_data_dir(&self) -> PathBuf {
        self.data_dir_from(|name| std::env::var_os(name))
    }

    /// [`WorkerSettings::resolved_data_dir`], with the environment given.
    fn data_dir_from(&self, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
        if !self.data_dir.as_os_str().is_empty() {
            return self.data_dir.clone();
        }
        let var = |name| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let base = var("XDG_DATA_HOME")
            .or_else(|| var("HOME").map(|home| home.join(".local").join("share")))
            .map(|dir| dir.join("cube"))
            .unwrap_or_else(|| PathBuf::from("data"));
        base.join(self.resolved_name())
    }
}

/// Settings of `cube manager` (see `config/manager.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerSettings {
    /// Address of the manager's HTTP API.
    pub listen: String,
    /// Where tasks and nodes are kept.
    pub store: StoreChoice,
    /// Data directory of the store.
    pub data_dir: PathBuf,
    /// Largest size of the LMDB data file, in MiB.
    pub store_map_size_mib: usize,
    /// The scheduling algorithm: `roundrobin`, `epvm` or `greedy`.
    pub scheduler: Algorithm,
    /// Milliseconds between polls of every worker's metrics (task changes come as a feed).
    pub poll_interval_ms: u64,
    /// Milliseconds a sync waits on a worker for a task change before it answers "nothing".
    pub sync_wait_ms: u64,
    /// Milliseconds a worker may be silent before it is Down and its tasks are placed elsewhere.
    pub node_down_after_ms: u64,
    /// Times a task that failed for good on a node (its restarts in place spent) is placed again
    /// on another node, if its policy restarts it.
    pub max_replacements: u32,
    /// Milliseconds allowed for one call to a remote worker.
    pub worker_timeout_ms: u64,
    /// Submissions handled at once; more get 429 with Retry-After.
    pub max_in_flight: usize,
    /// Finished tasks kept at most (the oldest are pruned first, with their events).
    pub retain_finished: usize,
    /// Seconds a finished task is kept at most.
    pub retain_finished_secs: u64,
    /// Milliseconds between prunes of finished tasks past the retention.
    pub prune_interval_ms: u64,
    /// The cluster's admin token; empty means the one in the data directory (`admin.token`),
    /// made at the first start (or, with the memory store, a new one each start).
    pub token: String,
    /// The token workers enroll with; empty means `join.token` in the data directory, likewise.
    pub join_token: String,
    /// A token that only reads `GET /metrics`; empty means `metrics.token`, likewise.
    pub metrics_token: String,
    /// TLS: the manager's certificate and key (PEM), from `cube tls init`; empty means plain HTTP.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// TLS: the cluster's CA certificate, which `https://` workers' certificates must come from.
    pub tls_ca: PathBuf,
    /// Submissions are refused (429) while this many tasks wait to start.
    pub max_waiting: usize,
    /// At most this many events are kept for `GET /events` (for at most `retain_finished_secs`).
    pub max_events: usize,
    /// Let tasks bind host ports below 1024.
    pub allow_privileged_ports: bool,
    /// Serve a non-loopback address without TLS anyway.
    pub allow_insecure_bind: bool,
    /// Where this user's tokens are kept for the CLI (not a file setting: from the environment).
    #[serde(skip)]
    pub user_config_dir: Option<PathBuf>,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            listen: "127.0.0.1:5555".into(),
            store: StoreChoice::Lmdb,
            data_dir: PathBuf::from("data/manager"),
            store_map_size_mib: 1024,
            scheduler: Algorithm::Epvm,
            poll_interval_ms: 1000,
            sync_wait_ms: 20_000,
            node_down_after_ms: 30_000,
            max_replacements: 1,
            worker_timeout_ms: 10_000,
            max_in_flight: 1024,
            retain_finished: 1000,
            retain_finished_secs: 24 * 3600,
            prune_interval_ms: 5000,
            token: String::new(),
            join_token: String::new(),
            metrics_token: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_ca: PathBuf::new(),
            max_waiting: 2000,
            max_events: 10_000,
            allow_privileged_ports: false,
            allow_insecure_bind: false,
            user_config_dir: None,
        }
    }
}

/// Settings of `cube up`: a manager and simulated worker nodes in one process
/// (see `config/cluster.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// The manager (its `workers` list is ignored: the nodes are in-process).
    pub manager: ManagerSettings,
    /// How many worker nodes.
    pub workers: usize,
    /// The nodes are named `<node_prefix>-1`, `<node_prefix>-2`, ... (and so are the labels of
    /// their containers).
    pub node_prefix: String,
    /// Where the nodes keep their tasks (each in `<data_dir>/<node name>`).
    pub store: StoreChoice,
    /// Data directory of the nodes.
    pub data_dir: PathBuf,
    /// Docker (shared local engine) or simulated containers.
    pub runtime: RuntimeChoice,
    /// Host address task ports are published on.
    pub publish_ip: String,
    /// Seconds a container gets to exit after SIGTERM.
    pub stop_timeout_secs: u64,
    /// Restarts in place a task's policy may ask for, per placement.
    pub max_restarts: u32,
    /// Milliseconds before the first restart in place; doubled for each next one (up to 30 s).
    pub restart_delay_ms: u64,
    /// Milliseconds a container must run for its task's restart budget to start afresh.
    pub restart_window_ms: u64,
    /// Milliseconds between health checks of a task that has one.
    pub health_interval_ms: u64,
    /// Milliseconds one health check may take.
    pub health_timeout_ms: u64,
    /// Milliseconds after a task's start before its health is checked.
    pub health_grace_ms: u64,
    /// Failed health checks in a row that make a task unhealthy (stopped, restarted by policy).
    pub health_failures: u32,
    /// CPU cores each node offers; 0 means an equal share of the machine.
    pub node_cpu: f64,
    /// Memory each node offers; 0 means an equal share of the machine.
    pub node_memory: Size,
    /// Disk each node offers; 0 means an equal share of the free space.
    pub node_disk: Size,
    /// Largest size of the nodes' shared LMDB data file, in MiB (the file is sparse).
    pub store_map_size_mib: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            manager: ManagerSettings {
                data_dir: PathBuf::from("data/cluster/manager"),
                ..ManagerSettings::default()
            },
            workers: 3,
            node_prefix: "node".into(),
            store: StoreChoice::Lmdb,
            data_dir: PathBuf::from("data/cluster"),
            runtime: RuntimeChoice::Docker,
            publish_ip: "127.0.0.1".into(),
            stop_timeout_secs: 10,
            max_restarts: 3,
            restart_delay_ms: 1000,
            restart_window_ms: 300_000,
            health_interval_ms: 5000,
            health_timeout_ms: 2000,
            health_grace_ms: 5000,
            health_failures: 3,
            node_cpu: 0.0,
            node_memory: Size(0),
            node_disk: Size(0),
            store_map_size_mib: 16 << 10,
        }
    }
}

/// Reads a settings file, or the defaults when `path` is None.
pub fn load<T: Default + for<'de> Deserialize<'de>>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's default data directory is per user, not relative to where it was started.
    #[test]
    fn a_worker_keeps_its_data_in_a_per_user_directory_by_default() {
        let settings = WorkerSettings {
            name: "w1".into(),
            ..WorkerSettings::default()
        };
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.into())
        };
        let home = settings.data_dir_from(env(&[("HOME", "/home/ada")]));
        assert_eq!(home, PathBuf::from("/home/ada/.local/share/cube/w1"));
        let xdg = settings.data_dir_from(env(&[("HOME", "/home/ada"), ("XDG_DATA_HOME", "/data")]));
        assert_eq!(xdg, PathBuf::from("/data/cube/w1"));
        let given = WorkerSettings {
            data_dir: "/srv/cube".into(),
            ..settings
        };
        assert_eq!(given.data_dir_from(env(&[])), PathBuf::from("/srv/cube"));
    }

    /// The shipped worker config parses and says what the defaults say.
    #[test]
    fn a_standalone_worker_publishes_task_ports_on_loopback_by_default() {
        assert_eq!(WorkerSettings::default().publish_ip, "127.0.0.1");
        assert_eq!(ClusterSettings::default().publish_ip, "127.0.0.1");
    }

    #[test]
    fn shipped_worker_config_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/worker.toml");
        let settings: WorkerSettings = load(Some(&path)).unwrap();
        assert_eq!(settings, WorkerSettings::default());
    }

    /// The shipped manager and cluster configs parse and say what the defaults say.
    #[test]
    fn shipped_manager_and_cluster_configs_match_the_defaults() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let manager: ManagerSettings = load(Some(&dir.join("manager.toml"))).unwrap();
        assert_eq!(manager, ManagerSettings::default());
        let cluster: ClusterSettings = load(Some(&dir.join("cluster.toml"))).unwrap();
        assert_eq!(cluster, ClusterSettings::default());
    }

    #[test]
    fn sizes_read_as_numbers_or_with_units() {
        let s: WorkerSettings = toml::from_str("memory = \"2Gi\"\ndisk = 1000").unwrap();
        assert_eq!((s.memory, s.disk), (Size(2 << 30), Size(1000)));
        let err = toml::from_str::<WorkerSettings>("memory = \"2 parsecs\"").unwrap_err();
        assert!(err.to_string().contains("parsecs"), "{err}");
    }

    #[test]
    fn unknown_settings_are_refused_by_name() {
        let err = toml::from_str::<WorkerSettings>("listn = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }
}
