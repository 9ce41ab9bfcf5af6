//! The metrics collector actor: what a worker's machine has and how busy it is.
//!
//! It samples `/proc` (through procfs) and the filesystem of the data directory (statvfs) in the
//! background, every `interval`; [`GetStats`] answers at once from the latest sample. CPU usage is
//! the share of non-idle time between the last two `/proc/stat` samples, so it is a real recent
//! figure, not an average since boot.

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use procfs::prelude::*;
use serde::{Deserialize, Serialize};

/// CPU figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CpuStats {
    /// Number of CPUs.
    pub cores: usize,
    /// Share of CPU time spent busy between the last two samples, 0-100.
    pub usage_percent: f64,
}

/// Memory figures, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemoryStats {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable`: what new work can use without swapping.
    pub available_bytes: u64,
    /// Total minus available.
    pub used_bytes: u64,
}

/// Disk figures for the filesystem holding the data directory, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiskStats {
    /// The path measured.
    pub path: PathBuf,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Space available to unprivileged users.
    pub free_bytes: u64,
    /// Total minus free.
    pub used_bytes: u64,
}

/// Load averages (runnable tasks averaged over 1, 5 and 15 minutes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoadStats {
    /// Over one minute.
    pub one: f64,
    /// Over five minutes.
    pub five: f64,
    /// Over fifteen minutes.
    pub fifteen: f64,
}

/// One sample of a worker's machine, as `GET /stats` returns it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Stats {
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
    /// Disk.
    pub disk: DiskStats,
    /// Load averages.
    pub load: LoadStats,
    /// Tasks the worker holds that are Scheduled or Running (filled in by the worker: the
    /// collector samples the machine, which simulated nodes may share).
    pub task_count: usize,
    /// When the sample was taken.
    pub sampled_at: Option<DateTime<Utc>>,
    /// What could not be read in this sample, if anything.
    pub errors: Vec<String>,
}

/// Busy and total CPU time from one `/proc/stat` read, in ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

/// The share of busy time between two samples, in percent (0 when no time passed).
fn cpu_percent(before: CpuTimes, after: CpuTimes) -> f64 {
    let total = after.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    let busy = after.busy.saturating_sub(before.busy);
    (busy as f64 / total as f64 * 100.0).clamp(0.0, 100.0)
}

fn read_cpu() -> Result<(CpuTimes, usize), String> {
    let stat = procfs::KernelStats::current().map_err(|e| format!("/proc/stat: {e}"))?;
    let t = stat.total;
    let idle = t.idle + t.iowait.unwrap_or(0);
    let busy = t.user
        + t.nice
        + t.system
        + t.irq.unwrap_or(0)
        + t.softirq.unwrap_or(0)
        + t.steal.unwrap_or(0);
    Ok((
        CpuTimes {
            busy,
            total: busy + idle,
        },
        stat.cpu_time.len(),
    ))
}

fn read_memory() -> Result<MemoryStats, String> {
    let m = procfs::Meminfo::current().map_err(|e| format!("/proc/meminfo: {e}"))?;
    let available = m
        .mem_available
        .unwrap_or(m.mem_free + m.cached + m.buffers)
        .min(m.mem_total);
    Ok(MemoryStats {
        total_bytes: m.mem_total,
        available_bytes: available,
        used_bytes: m.mem_total - available,
    })
}

fn read_load() -> Result<LoadStats, String> {
    let l = procfs::LoadAverage::current().map_err(|e| format!("/proc/loadavg: {e}"))?;
    Ok(LoadStats {
        one: f64::from(l.one),
        five: f64::from(l.five),
        fifteen: f64::from(l.fifteen),
    })
}

/// Total and free space of the filesystem holding `path`.
pub fn read_disk(path: &std::path::Path) -> Result<DiskStats, String> {
    let s =
        nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    let fragment = s.fragment_size() as u64;
    let total = s.blocks() as u64 * fragment;
    let free = s.blocks_available() as u64 * fragment;
    Ok(DiskStats {
        path: path.to_path_buf(),
        total_bytes: total,
        free_bytes: free,
        used_bytes: total.saturating_sub(free),
    })
}

/// What this machine can offer to tasks: all its CPUs, its total memory, and the free space of
/// the filesystem holding `path`.
pub fn machine_capacity(path: &std::path::Path) -> crate::resources::Resources {
    crate::resources::Resources {
        cpu: read_cpu().map_or(1, |(_, cores)| cores.max(1)) as f64,
        memory: read_memory().map_or(0, |m| m.total_bytes),
        disk: read_disk(path).map_or(0, |d| d.free_bytes),
    }
}

/// Samples the machine in the background.
pub struct MetricsCollector {
    /// The directory whose filesystem is measured.
    data_dir: PathBuf,
    /// Time between samples.
    interval: Duration,
    /// The previous CPU reading, to compute usage from.
    last_cpu: Option<CpuTimes>,
    /// The latest sample.
    latest: Stats,
}

impl MetricsCollector {
    /// A collector measuring the filesystem of `data_dir`, sampling every `interval`.
    pub fn new(data_dir: PathBuf, interval: Duration) -> Self {
        MetricsCollector {
            data_dir,
            interval,
            last_cpu: None,
            latest: Stats::default(),
        }
    }

    fn sample(&mut self) {
        let mut errors = Vec::new();
        let mut stats = Stats {
            sampled_at: Some(Utc::now()),
            ..Stats::default()
        };
        match read_cpu() {
            Ok((times, cores)) => {
                stats.cpu.cores = cores;
                stats.cpu.usage_percent = self
                    .last_cpu
                    .map_or(0.0, |before| cpu_percent(before, times));
                self.last_cpu = Some(times);
            }
            Err(e) => errors.push(e),
        }
        match read_memory() {
            Ok(m) => stats.memory = m,
            Err(e) => errors.push(e),
        }
        match read_load() {
            Ok(l) => stats.load = l,
            Err(e) => errors.push(e),
        }
        match read_disk(&self.data_dir) {
            Ok(d) => stats.disk = d,
            Err(e) => errors.push(e),
        }
        for e in &errors {
            log::warn!("metrics: cannot read {e}");
        }
        stats.errors = errors;
        self.latest = stats;
    }
}

impl Actor for MetricsCollector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.sample();
        // A first CPU figure as soon as possible, then one per interval.
        ctx.run_later(Duration::from_millis(250).min(self.interval), |act, _| {
            act.sample()
        });
        ctx.run_interval(self.interval, |act, _| act.sample());
    }
}

/// The latest sample.
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

/// Handler for [`GetStats`].
impl Handler<GetStats> for MetricsCollector {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.latest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_the_busy_share_of_the_elapsed_time() {
        let before = CpuTimes {
            busy: 100,
            total: 1000,
        };
        assert_eq!(
            cpu_percent(
                before,
                CpuTimes {
                    busy: 150,
                    total: 1100
                }
            ),
            50.0
        );
        assert_eq!(cpu_percent(before, before), 0.0);
        assert_eq!(
            cpu_percent(
                before,
                CpuTimes {
                    busy: 100,
                    total: 1100
                }
            ),
            0.0
        );
    }

    #[actix_rt::test]
    async fn a_sample_matches_proc_and_statvfs() {
        let dir = tempfile::tempdir().unwrap();
        let collector =
            MetricsCollector::new(dir.path().to_path_buf(), Duration::from_millis(100)).start();
        actix_rt::time::sleep(Duration::from_millis(400)).await;
        let stats = collector.send(GetStats).await.unwrap();
        assert!(stats.errors.is_empty(), "{:?}", stats.errors);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(stats.memory.total_bytes, total_kb * 1024);
        assert!(stats.memory.available_bytes <= stats.memory.total_bytes);
        let proc_stat = std::fs::read_to_string("/proc/stat").unwrap();
        let cpu_lines = proc_stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        assert_eq!(stats.cpu.cores, cpu_lines);
        assert!((0.0..=100.0).contains(&stats.cpu.usage_percent));
        let disk = read_disk(dir.path()).unwrap();
        assert_eq!(stats.disk.total_bytes, disk.total_bytes);
    }
}
