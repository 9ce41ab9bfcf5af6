//! How a worker behaves: [`WorkerConfig`].

use std::time::Duration;

use super::exit::RestartBudget;
use super::health::HealthSettings;
use crate::resources::Resources;
use crate::telemetry::WorkerMetrics;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The worker's name, unique in the cluster; also the `cube.worker` label of its containers.
    pub name: String,
    /// How long a container gets to exit after SIGTERM before it is killed.
    pub stop_timeout: Duration,
    /// How often the worker compares its tasks with the runtime.
    pub reconcile_interval: Duration,
    /// What the worker offers to tasks (the scheduler's capacity for this node).
    pub capacity: Resources,
    /// How many times, and how soon, tasks are restarted in place by their policy.
    pub restarts: RestartBudget,
    /// When and how tasks' health checks run.
    pub health: HealthSettings,
    /// If set: once its manager has not synced for this long, the worker stops its tasks (for
    /// tasks that must never run twice, when the manager may place them elsewhere meanwhile).
    pub stop_after_disconnect: Option<Duration>,
    /// One of the many nodes of a `cube up`: its start is routine (the start-up line counts
    /// them), logged at debug unless it takes tasks back.
    pub in_process: bool,
    /// Where the worker counts container starts, stops, exits and health checks.
    pub telemetry: WorkerMetrics,
}

impl WorkerConfig {
    /// A simulated node of a test, named `name`, offering `capacity`: in process, containers
    /// stopped at once, a reconcile every 50 ms, up to `max_restarts` restarts in place 20 ms
    /// apart, health checks at their defaults.
    pub fn test_node(name: impl Into<String>, capacity: Resources, max_restarts: u32) -> Self {
        WorkerConfig {
            name: name.into(),
            stop_timeout: Duration::ZERO,
            reconcile_interval: Duration::from_millis(50),
            capacity,
            restarts: RestartBudget {
                max_restarts,
                delay: Duration::from_millis(20),
                window: Duration::from_secs(600),
            },
            health: HealthSettings::default(),
            stop_after_disconnect: None,
            in_process: true,
            telemetry: WorkerMetrics::default(),
        }
    }
}
