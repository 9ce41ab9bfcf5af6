//! Settings files (TOML, see `config/`) and the defaults behind them.
//!
//! Every setting has a default; a file sets some of them; command-line flags override both.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
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
    /// Data directory; empty means `./data/<name>`.
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
    /// Milliseconds between metrics samples.
    pub stats_interval_ms: u64,
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
            publish_ip: "0.0.0.0".into(),
            sim_images: Vec::new(),
            stop_timeout_secs: 10,
            reconcile_interval_ms: 2000,
            stats_interval_ms: 1000,
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

    /// The data directory, or `./data/<name>` when none is set.
    pub fn resolved_data_dir(&self) -> PathBuf {
        if self.data_dir.as_os_str().is_empty() {
            PathBuf::from("data").join(self.resolved_name())
        } else {
            self.data_dir.clone()
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

    /// The shipped worker config parses and says what the defaults say.
    #[test]
    fn shipped_worker_config_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/worker.toml");
        let settings: WorkerSettings = load(Some(&path)).unwrap();
        assert_eq!(settings, WorkerSettings::default());
    }

    #[test]
    fn unknown_settings_are_refused_by_name() {
        let err = toml::from_str::<WorkerSettings>("listn = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }
}
