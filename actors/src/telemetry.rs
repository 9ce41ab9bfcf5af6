//! The counters, gauges and histograms of a node, for `GET /metrics` (prometheus-client; the
//! binary registers them and encodes them in the OpenMetrics text format).
//!
//! Each part of the system owns a handle to its own metrics ([`ManagerMetrics`],
//! [`WorkerMetrics`], [`StoreMetrics`], [`HttpMetrics`]); a handle is cheap to clone (the
//! values are shared atomics) and carries no settings. Label values are bounded: states, node
//! statuses, outcomes, route patterns and node names, never a task's ID, name or environment.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::node::NodeReport;
use crate::task::TaskState;

/// One label with a value from a fixed set.
type Label = [(&'static str, &'static str); 1];
/// Two labels with values from fixed sets.
type Labels2 = [(&'static str, &'static str); 2];
/// The `node` label.
type NodeLabel = [(&'static str, String); 1];
/// A gauge of a float (CPUs).
type FloatGauge = Gauge<f64, AtomicU64>;

/// Latencies of requests and commits, from 0.1 ms to about 100 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 11))
}

/// The name of a state as a label value (the book's names).
pub fn state_label(state: Option<TaskState>) -> &'static str {
    match state {
        None => "none",
        Some(TaskState::Pending) => "Pending",
        Some(TaskState::Scheduled) => "Scheduled",
        Some(TaskState::Running) => "Running",
        Some(TaskState::Completed) => "Completed",
        Some(TaskState::Failed) => "Failed",
    }
}

/// The manager's metrics.
#[derive(Debug, Clone)]
pub struct ManagerMetrics {
    tasks: Family<Label, Gauge>,
    transitions: Family<Labels2, Counter>,
    submissions: Family<Label, Counter>,
    submit_seconds: Histogram,
    placements: Family<Label, Counter>,
    placement_seconds: Histogram,
    restarts: Counter,
    deliveries_failed: Counter,
    nodes: Family<Label, Gauge>,
    offered_cpu: Family<NodeLabel, FloatGauge>,
    reserved_cpu: Family<NodeLabel, FloatGauge>,
    offered_memory: Family<NodeLabel, Gauge>,
    reserved_memory: Family<NodeLabel, Gauge>,
    offered_disk: Family<NodeLabel, Gauge>,
    reserved_disk: Family<NodeLabel, Gauge>,
    node_tasks: Family<NodeLabel, Gauge>,
    subscribers: Gauge,
}

impl Default for ManagerMetrics {
    fn default() -> Self {
        ManagerMetrics {
            tasks: Family::default(),
            transitions: Family::default(),
            submissions: Family::default(),
            submit_seconds: latency(),
            placements: Family::default(),
            placement_seconds: latency(),
            restarts: Counter::default(),
            deliveries_failed: Counter::default(),
            nodes: Family::default(),
            offered_cpu: Family::default(),
            reserved_cpu: Family::default(),
            offered_memory: Family::default(),
            reserved_memory: Family::default(),
            offered_disk: Family::default(),
            reserved_disk: Family::default(),
            node_tasks: Family::default(),
            subscribers: Gauge::default(),
        }
    }
}

/// What became of a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submission {
    /// Stored (or already there: a repeat).
    Accepted,
    /// Invalid fields, or a state that does not allow it.
    Invalid,
    /// Refused for now (too much waiting to start).
    Busy,
    /// The store failed, or the manager is shutting down.
    Failed,
}

impl ManagerMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tasks",
            "Tasks the manager holds, by state",
            self.tasks.clone(),
        );
        registry.register(
            "task_transitions",
            "Durable changes of task state, by state before (none: submitted) and after (none: removed)",
            self.transitions.clone(),
        );
        registry.register(
            "submissions",
            "Task submissions, by outcome (accepted, invalid, busy, failed)",
            self.submissions.clone(),
        );
        registry.register_with_unit(
            "submit_duration",
            "Time from a submission's arrival at the manager to its durable admission",
            Unit::Seconds,
            self.submit_seconds.clone(),
        );
        registry.register(
            "placements",
            "Placement decisions of the scheduler, by outcome (placed, unplaceable)",
            self.placements.clone(),
        );
        registry.register_with_unit(
            "placement_duration",
            "Time from asking the scheduler for a node to its decision",
            Unit::Seconds,
            self.placement_seconds.clone(),
        );
        registry.register(
            "task_restarts",
            "Restarts of tasks (a higher restart count reported by a node, or a new placement after a failure)",
            self.restarts.clone(),
        );
        registry.register(
            "deliveries_failed",
            "Placed tasks that could not be sent to their node or that it refused",
            self.deliveries_failed.clone(),
        );
        registry.register(
            "nodes",
            "Nodes of the cluster, by status",
            self.nodes.clone(),
        );
        registry.register(
            "node_offered_cpu",
            "CPUs a node offers to tasks",
            self.offered_cpu.clone(),
        );
        registry.register(
            "node_reserved_cpu",
            "CPUs reserved on a node by its active tasks",
            self.reserved_cpu.clone(),
        );
        registry.register_with_unit(
            "node_offered_memory",
            "Memory a node offers to tasks",
            Unit::Bytes,
            self.offered_memory.clone(),
        );
        registry.register_with_unit(
            "node_reserved_memory",
            "Memory reserved on a node by its active tasks",
            Unit::Bytes,
            self.reserved_memory.clone(),
        );
        registry.register_with_unit(
            "node_offered_disk",
            "Disk a node offers to tasks",
            Unit::Bytes,
            self.offered_disk.clone(),
        );
        registry.register_with_unit(
            "node_reserved_disk",
            "Disk reserved on a node by its active tasks",
            Unit::Bytes,
            self.reserved_disk.clone(),
        );
        registry.register(
            "node_tasks",
            "Active tasks placed on a node",
            self.node_tasks.clone(),
        );
        registry.register(
            "event_subscribers",
            "Clients following the event stream",
            self.subscribers.clone(),
        );
    }

    /// A durable change of a task's state; `restarted` if its restart count went up.
    pub fn transition(&self, from: Option<TaskState>, to: Option<TaskState>, restarted: bool) {
        if from != to {
            self.transitions
                .get_or_create(&[("from", state_label(from)), ("to", state_label(to))])
                .inc();
        }
        if restarted {
            self.restarts.inc();
        }
    }

    /// A submission ended with `outcome` after `seconds`.
    pub fn submitted(&self, outcome: Submission, seconds: f64) {
        let label = match outcome {
            Submission::Accepted => "accepted",
            Submission::Invalid => "invalid",
            Submission::Busy => "busy",
            Submission::Failed => "failed",
        };
        self.submissions.get_or_create(&[("outcome", label)]).inc();
        if outcome == Submission::Accepted {
            self.submit_seconds.observe(seconds);
        }
    }

    /// The scheduler decided (`placed` or not) after `seconds`.
    pub fn placed(&self, placed: bool, seconds: f64) {
        let label = if placed { "placed" } else { "unplaceable" };
        self.placements.get_or_create(&[("outcome", label)]).inc();
        self.placement_seconds.observe(seconds);
    }

    /// A placed task could not be sent to its node, or the node refused it.
    pub fn delivery_failed(&self) {
        self.deliveries_failed.inc();
    }

    /// Sets the gauges of what the manager holds: task counts by state, and the nodes.
    pub fn observe(&self, tasks: impl Fn(TaskState) -> usize, nodes: &[NodeReport]) {
        for state in TaskState::ALL {
            let count = i64::try_from(tasks(state)).unwrap_or(i64::MAX);
            self.tasks
                .get_or_create(&[("state", state_label(Some(state)))])
                .set(count);
        }
        let mut by_status = [0i64; 3];
        // Rebuilt from `nodes`: a node that left has no series any more.
        self.offered_cpu.clear();
        self.reserved_cpu.clear();
        let per_node = [
            &self.offered_memory,
            &self.reserved_memory,
            &self.offered_disk,
            &self.reserved_disk,
            &self.node_tasks,
        ];
        for family in per_node {
            family.clear();
        }
        for node in nodes {
            by_status[node.status as usize] += 1;
            let label = [("node", node.name.clone())];
            let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
            self.offered_cpu
                .get_or_create(&label)
                .set(node.capacity.cpu);
            self.reserved_cpu
                .get_or_create(&label)
                .set(node.reserved.cpu);
            self.offered_memory
                .get_or_create(&label)
                .set(bytes(node.capacity.memory));
            self.reserved_memory
                .get_or_create(&label)
                .set(bytes(node.reserved.memory));
            self.offered_disk
                .get_or_create(&label)
                .set(bytes(node.capacity.disk));
            self.reserved_disk
                .get_or_create(&label)
                .set(bytes(node.reserved.disk));
            self.node_tasks
                .get_or_create(&label)
                .set(i64::try_from(node.task_count).unwrap_or(i64::MAX));
        }
        for (status, count) in ["Ready", "Unreachable", "Down"].into_iter().zip(by_status) {
            self.nodes.get_or_create(&[("status", status)]).set(count);
        }
    }

    /// The number of clients following the event stream.
    pub fn subscribers(&self, n: usize) {
        self.subscribers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// A worker's metrics. The in-process nodes of a `cube up` share one (their sum), shown by the
/// manager.
#[derive(Debug, Clone, Default)]
pub struct WorkerMetrics {
    starts: Family<Label, Counter>,
    stops: Family<Label, Counter>,
    exits: Family<Label, Counter>,
    restarts: Counter,
    health_checks: Family<Label, Counter>,
}

/// Why the worker stopped a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// The task was stopped (by its user, or by the manager moving it).
    Task,
    /// Its health check failed too often.
    Unhealthy,
    /// It ran with no task, or a stale copy of one.
    Stray,
}

impl WorkerMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "worker_container_starts",
            "Container starts by the worker, by outcome (started, failed)",
            self.starts.clone(),
        );
        registry.register(
            "worker_container_stops",
            "Containers the worker stopped, by cause (task, unhealthy, stray)",
            self.stops.clone(),
        );
        registry.register(
            "worker_container_exits",
            "Containers that ended on their own, by what it made of their task (completed, failed)",
            self.exits.clone(),
        );
        registry.register(
            "worker_task_restarts",
            "Tasks restarted in place by their restart policy",
            self.restarts.clone(),
        );
        registry.register(
            "worker_health_checks",
            "Health checks run, by result (healthy, unhealthy, error)",
            self.health_checks.clone(),
        );
    }

    /// A container start ended: `ok` or not.
    pub fn started(&self, ok: bool) {
        let label = if ok { "started" } else { "failed" };
        self.starts.get_or_create(&[("outcome", label)]).inc();
    }

    /// The worker stopped a container.
    pub fn stopped(&self, cause: StopCause) {
        let label = match cause {
            StopCause::Task => "task",
            StopCause::Unhealthy => "unhealthy",
            StopCause::Stray => "stray",
        };
        self.stops.get_or_create(&[("cause", label)]).inc();
    }

    /// A container ended on its own; its task became `state`.
    pub fn exited(&self, state: TaskState) {
        let label = if state == TaskState::Completed {
            "completed"
        } else {
            "failed"
        };
        self.exits.get_or_create(&[("outcome", label)]).inc();
    }

    /// A task is restarted in place.
    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// A health check gave a result: `Some(healthy)`, or `None` when it could not run.
    pub fn checked(&self, healthy: Option<bool>) {
        let label = match healthy {
            Some(true) => "healthy",
            Some(false) => "unhealthy",
            None => "error",
        };
        self.health_checks.get_or_create(&[("result", label)]).inc();
    }
}

/// A standalone worker's machine, as its latest sample says (the manager shows it per node in
/// `GET /nodes`; a worker's own `GET /metrics` shows it for Prometheus).
#[derive(Debug, Clone, Default)]
pub struct MachineMetrics {
    cpu_usage: FloatGauge,
    cores: Gauge,
    memory_total: Gauge,
    memory_available: Gauge,
    disk_total: Gauge,
    disk_free: Gauge,
    load1: FloatGauge,
    tasks: Gauge,
}

impl MachineMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let float = [
            (
                "machine_cpu_usage_ratio",
                "Share of CPU time spent busy between the last two samples (0 to 1)",
                &self.cpu_usage,
            ),
            ("machine_load1", "Load average over one minute", &self.load1),
        ];
        for (name, help, gauge) in float {
            registry.register(name, help, gauge.clone());
        }
        let int = [
            (
                "machine_cpu_cores",
                "CPUs of the machine",
                &self.cores,
                None,
            ),
            (
                "machine_memory_total",
                "Memory of the machine",
                &self.memory_total,
                Some(Unit::Bytes),
            ),
            (
                "machine_memory_available",
                "Memory new work can use without swapping",
                &self.memory_available,
                Some(Unit::Bytes),
            ),
            (
                "machine_disk_total",
                "Size of the filesystem of the data directory",
                &self.disk_total,
                Some(Unit::Bytes),
            ),
            (
                "machine_disk_free",
                "Space free for unprivileged users on that filesystem",
                &self.disk_free,
                Some(Unit::Bytes),
            ),
            (
                "worker_tasks",
                "Tasks the worker holds that are Scheduled or Running",
                &self.tasks,
                None,
            ),
        ];
        for (name, help, gauge, unit) in int {
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, gauge.clone()),
                None => registry.register(name, help, gauge.clone()),
            }
        }
    }

    /// Sets the gauges to `sample`.
    pub fn observe(&self, sample: &crate::metrics::Stats) {
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.cpu_usage.set(sample.cpu.usage_percent / 100.0);
        self.cores.set(int(sample.cpu.cores as u64));
        self.memory_total.set(int(sample.memory.total_bytes));
        self.memory_available
            .set(int(sample.memory.available_bytes));
        self.disk_total.set(int(sample.disk.total_bytes));
        self.disk_free.set(int(sample.disk.free_bytes));
        self.load1.set(sample.load.one);
        self.tasks.set(int(sample.task_count as u64));
    }
}

/// A store's metrics: its commits, how long they take and how many writes each holds, labelled
/// with the store's name. Stores whose metrics are [`StoreMetrics::named`] from one another share
/// the families, registered once (a family may appear only once in an exposition).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    store: &'static str,
    commits: Family<Label, Counter>,
    commit_seconds: Family<Label, Histogram, fn() -> Histogram>,
    batch: Family<Label, Histogram, fn() -> Histogram>,
}

fn batch_sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics::new("store")
    }
}

impl StoreMetrics {
    /// The metrics of the store called `store`, in families of their own.
    pub fn new(store: &'static str) -> StoreMetrics {
        StoreMetrics {
            store,
            commits: Family::default(),
            commit_seconds: Family::new_with_constructor(latency),
            batch: Family::new_with_constructor(batch_sizes),
        }
    }

    /// The metrics of the store called `store`, in the same families as these.
    pub fn named(&self, store: &'static str) -> StoreMetrics {
        StoreMetrics {
            store,
            ..self.clone()
        }
    }

    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "store_commits",
            "Commits of the store (each one transaction holding one or more writes)",
            self.commits.clone(),
        );
        registry.register_with_unit(
            "store_commit_duration",
            "Time a commit takes, durable write included",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        registry.register(
            "store_commit_writes",
            "Writes (group-committed requests) per commit",
            self.batch.clone(),
        );
    }

    /// A commit of `writes` writes took `seconds`.
    pub fn committed(&self, writes: usize, seconds: f64) {
        let label = [("store", self.store)];
        self.commits.get_or_create(&label).inc();
        self.commit_seconds.get_or_create(&label).observe(seconds);
        self.batch.get_or_create(&label).observe(writes as f64);
    }

    /// How many commits this store made.
    pub fn commits(&self) -> u64 {
        self.commits.get_or_create(&[("store", self.store)]).get()
    }
}

/// The HTTP edge's metrics: requests by method, route pattern and status.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<[(&'static str, String); 3], Counter>,
    seconds: Family<Label, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency),
        }
    }
}

impl HttpMetrics {
    /// Registers every metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern (unmatched: no route) and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (to the start of a streamed answer), by method",
            Unit::Seconds,
            self.seconds.clone(),
        );
    }

    /// A request to `route` was answered with `status` after `seconds`.
    pub fn answered(&self, method: &'static str, route: String, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&[
                ("method", method.to_string()),
                ("route", route),
                ("status", status.to_string()),
            ])
            .inc();
        self.seconds
            .get_or_create(&[("method", method)])
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn text(register: impl Fn(&mut Registry)) -> String {
        let mut registry = Registry::with_prefix("cube");
        register(&mut registry);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn transitions_are_counted_by_state_names_and_repeats_are_not() {
        let m = ManagerMetrics::default();
        m.transition(None, Some(TaskState::Pending), false);
        m.transition(Some(TaskState::Pending), Some(TaskState::Scheduled), false);
        m.transition(Some(TaskState::Running), Some(TaskState::Running), true);
        let out = text(|r| m.register(r));
        assert!(out.contains(r#"cube_task_transitions_total{from="none",to="Pending"} 1"#));
        assert!(out.contains(r#"cube_task_transitions_total{from="Pending",to="Scheduled"} 1"#));
        assert!(!out.contains(r#"from="Running",to="Running""#), "{out}");
        assert!(out.contains("cube_task_restarts_total 1"), "{out}");
        assert!(out.ends_with("# EOF\n"));
    }

    #[test]
    fn units_are_in_the_names() {
        let (m, s) = (ManagerMetrics::default(), StoreMetrics::default());
        m.submitted(Submission::Accepted, 0.002);
        s.committed(3, 0.001);
        let out = text(|r| {
            m.register(r);
            s.register(r);
        });
        assert!(
            out.contains("# TYPE cube_submit_duration_seconds histogram"),
            "{out}"
        );
        assert!(
            out.contains("cube_submit_duration_seconds_count 1"),
            "{out}"
        );
        assert!(
            out.contains(r#"cube_store_commit_duration_seconds_count{store="store"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"cube_store_commit_writes_sum{store="store"} 3"#),
            "{out}"
        );
        assert!(
            out.contains(r#"cube_submissions_total{outcome="accepted"} 1"#),
            "{out}"
        );
    }

    #[test]
    fn requests_are_counted_by_route_pattern() {
        let h = HttpMetrics::default();
        h.answered("GET", "/tasks/{id}".into(), 200, 0.001);
        h.answered("GET", "/tasks/{id}".into(), 200, 0.001);
        let out = text(|r| h.register(r));
        assert!(
            out.contains(
                r#"cube_http_requests_total{method="GET",route="/tasks/{id}",status="200"} 2"#
            ),
            "{out}"
        );
    }
}
