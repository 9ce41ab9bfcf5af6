//! The manager: the cluster's brain and the user's entry point.
//!
//! Its state is plain data: the [`book::TaskBook`] (tasks, arrival order, placements under way,
//! back-offs) and the [`nodes::NodeBook`] (membership, liveness, last report), both without actix
//! and unit-tested. The [`Manager`] actor wires them to the world and does the I/O:
//!
//! - `placement.rs`: place (ask the scheduler), assign (store the placement), deliver (send it).
//! - `sync.rs`: follow each worker's change feed (a long poll), poll metrics, prune history.
//! - `handlers.rs`: the messages the HTTP API sends.
//! - `turn.rs`: how it shares its thread (waits off its context that come back as a
//!   `Resume`, a yield every few messages).
//!
//! Every change to a task comes out of the book as one [`book::Change`], which the actor writes
//! to the store through its outbox (`outbox.rs`: the changes of one turn in one batch); readers
//! see it once it is durable. Nothing is dropped: a
//! task that fits nowhere stays Pending with the reason; a task a node did not take goes back to
//! Pending and is tried again with back-off; a task stored as Scheduled is sent again when its
//! node's full resync does not list it.

pub mod book;
mod enroll;
pub mod events;
mod handlers;
pub mod nodes;
mod outbox;
mod placement;
mod reply;
mod retire;
mod sync;
mod turn;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;

pub use book::{BookError, Change, Retention, TaskFilter, TaskPage, Transition};
pub use enroll::{ConnectWorker, Enroll, Enrollment};
pub use events::{Event, EventLog, Reset, Since, Subscription, What};
pub use handlers::*;
pub use retire::RetireNode;

use crate::node::{LOCAL_ADDRESS, Node, NodeStatus};
use crate::remote_worker::{RemoteConfig, RemoteWorker, WorkerHandle};
use crate::resources::Resources;
use crate::scheduler::actor::{Reserve, SchedulerActor, UpsertNode};
use crate::scheduler::{Algorithm, fixed_host_ports};
use crate::store::{List, OpenWriter, Put, Store, StoreError, Writer};
use crate::task::{InvalidTask, InvalidTransition, Task, TaskId};
use crate::telemetry::ManagerMetrics;
use crate::worker::WorkerError;
use book::TaskBook;
use nodes::NodeBook;

/// Why the manager refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagerError {
    /// No task with this id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// No node with this name.
    #[error("node {0} not found")]
    NodeNotFound(String),
    /// The task's fields (or a request's) are wrong.
    #[error(transparent)]
    Invalid(#[from] InvalidTask),
    /// The request does not fit the task's state.
    #[error("{0}")]
    Conflict(String),
    /// The state machine refused a change.
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    /// The task's node could not be reached or failed; nothing changed.
    #[error("node {node}: {error}")]
    Worker {
        /// The node.
        node: String,
        /// What went wrong there.
        error: WorkerError,
    },
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The manager is not running.
    #[error("the manager is shut down")]
    Closed,
    /// Too much is waiting to start: the submission is refused, to be retried later.
    #[error("{0}")]
    Busy(String),
}

impl From<MailboxError> for ManagerError {
    fn from(_: MailboxError) -> Self {
        ManagerError::Closed
    }
}

impl From<BookError> for ManagerError {
    fn from(e: BookError) -> Self {
        match e {
            BookError::NotFound(id) => ManagerError::NotFound(id),
            BookError::Exists(task) => {
                ManagerError::Conflict(format!("task {} exists already", task.id))
            }
            BookError::Conflict(message) => ManagerError::Conflict(message),
        }
    }
}

/// How the manager behaves.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The scheduling algorithm.
    pub algorithm: Algorithm,
    /// How often every worker is asked for its metrics (task changes come through the feed).
    pub poll_interval: Duration,
    /// How long a sync waits on the worker for a change before it answers "nothing new".
    pub sync_wait: Duration,
    /// Failed calls in a row after which a node is Unreachable.
    pub unreachable_after: u32,
    /// How long a node may be silent before it is Down and its tasks are placed elsewhere.
    pub node_down_after: Duration,
    /// Times a task that failed for good on a node is placed again on another, by its policy.
    pub max_replacements: u32,
    /// How long finished tasks are kept.
    pub retention: Retention,
    /// How often finished tasks past the retention are pruned.
    pub prune_interval: Duration,
    /// How remote workers are called.
    pub remote: RemoteConfig,
    /// Whether tasks may bind host ports below 1024.
    pub allow_privileged_ports: bool,
    /// Whether workers on other machines may enroll with plain `http://` addresses.
    pub allow_insecure_http: bool,
    /// Submissions are refused (429) while this many tasks wait to start (Pending or Scheduled):
    /// beyond what the cluster starts in about a second, a longer queue only adds latency.
    pub max_waiting: usize,
    /// How many tasks wait to start (Pending or Scheduled), as the manager last counted them:
    /// the HTTP edge reads it to refuse submissions before they queue for the manager.
    pub waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// At most this many events are kept for `GET /events` (and for at most the retention's age).
    pub max_events: usize,
    /// Where the manager counts what it does (shown by `GET /metrics`).
    pub telemetry: ManagerMetrics,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            algorithm: Algorithm::Epvm,
            poll_interval: Duration::from_secs(1),
            sync_wait: Duration::from_secs(20),
            unreachable_after: 2,
            node_down_after: Duration::from_secs(30),
            max_replacements: 1,
            retention: Retention::default(),
            prune_interval: Duration::from_secs(5),
            remote: RemoteConfig::default(),
            allow_privileged_ports: false,
            allow_insecure_http: false,
            max_waiting: 2000,
            waiting: Default::default(),
            max_events: 10_000,
            telemetry: ManagerMetrics::default(),
        }
    }
}

/// The manager actor.
pub struct Manager {
    /// Settings.
    config: ManagerConfig,
    /// Where every task, event and node is written before anyone is told.
    store: Addr<Store>,
    /// The same store's writes without its actor, for the outbox's batches.
    writer: Writer,
    /// Places tasks and keeps the reservations.
    scheduler: Addr<SchedulerActor>,
    /// Every task.
    book: TaskBook,
    /// Every node.
    nodes: NodeBook,
    /// How to reach each node.
    handles: HashMap<String, WorkerHandle>,
    /// Tasks pruned here that their node has not forgotten yet (it did not answer), by node,
    /// with the placement of the copy to forget.
    to_forget: HashMap<String, HashSet<(TaskId, u64)>>,
    /// Stopped copies of tasks on nodes other than the task's own (older placements), with
    /// their placement: forgotten there when the task is removed.
    stale_copies: HashMap<TaskId, HashSet<(String, u64)>>,
    /// While a sync reply is applied: set if one of the writes it starts fails (the node's
    /// cursor then stays where it was).
    collecting: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The task writes not yet sent to the store (see `outbox.rs`).
    outbox: outbox::Outbox,
    /// The enrolled remote workers, by name.
    enrollments: HashMap<String, Enrollment>,
    /// What happened, for `GET /events`.
    events: EventLog,
    /// Whether a prune is under way (a slice at a time).
    pruning: bool,
    /// Every node's report, every [`LOAD_INTERVAL`] while someone listens.
    loads: tokio::sync::broadcast::Sender<std::sync::Arc<Vec<crate::node::NodeReport>>>,
    /// Messages handled since the manager last let its thread's other tasks run.
    since_yield: u32,
}

impl Manager {
    /// Loads tasks and nodes from `store` and starts the manager. Remote nodes found in the store
    /// are reconnected; each node's first sync is a full one, after which tasks found Scheduled
    /// that the node does not have are sent again.
    pub async fn start(
        config: ManagerConfig,
        store: Addr<Store>,
    ) -> Result<Addr<Manager>, ManagerError> {
        let tasks: Vec<Task> = store.send(List::<Task>::all()).await??;
        let nodes: Vec<Node> = store.send(List::<Node>::all()).await??;
        let enrollments: HashMap<String, Enrollment> = store
            .send(List::<Enrollment>::all())
            .await??
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        let writer = store.send(OpenWriter).await?;
        let scheduler = SchedulerActor::new(config.algorithm).start();
        for task in tasks.iter().filter(|t| t.state().is_active()) {
            if let Some(node) = &task.node {
                scheduler.do_send(Reserve {
                    task: task.id,
                    node: node.clone(),
                    demand: Resources::of(task),
                    ports: fixed_host_ports(task),
                });
            }
        }
        let remote = config.remote.clone();
        Ok(Manager::create(move |_| {
            let mut manager = Manager {
                events: EventLog::new(config.max_events, config.retention.max_age),
                loads: tokio::sync::broadcast::channel(4).0,
                pruning: false,
                since_yield: 0,
                nodes: NodeBook::new(config.unreachable_after, config.node_down_after),
                config,
                store,
                writer,
                scheduler,
                book: TaskBook::load(tasks),
                handles: HashMap::new(),
                to_forget: HashMap::new(),
                collecting: None,
                outbox: Default::default(),
                stale_copies: HashMap::new(),
                enrollments,
            };
            for node in nodes.into_iter().filter(|n| n.address != LOCAL_ADDRESS) {
                let credential = manager
                    .enrollments
                    .get(&node.name)
                    .map(|e| e.credential.clone());
                let handle = WorkerHandle::Remote(
                    RemoteWorker::new(node.address.clone(), remote.clone(), credential).start(),
                );
                manager.insert_node(node, handle);
            }
            manager
        }))
    }

    /// A durable change: counted, and told to the event stream's subscribers.
    fn published(&mut self, change: &Change, name: Option<&str>) {
        self.count_waiting();
        self.config.telemetry.transition(
            change.from,
            change.to,
            change.attempt > change.attempt_before,
        );
        if let Some(what) = What::of_change(change, name) {
            self.events.push(what, change.at);
        }
    }

    /// How many tasks wait to start (Pending or Scheduled); also published for the HTTP edge.
    pub(super) fn count_waiting(&self) -> usize {
        let waiting = self.book.count_in(crate::task::TaskState::Pending)
            + self.book.count_in(crate::task::TaskState::Scheduled);
        self.config
            .waiting
            .store(waiting, std::sync::atomic::Ordering::Relaxed);
        waiting
    }

    /// A node joined (`from` None), changed status, or left (`to` None): an event.
    pub(super) fn node_event(
        &mut self,
        node: &str,
        from: Option<NodeStatus>,
        to: Option<NodeStatus>,
        reason: String,
    ) {
        let what = What::Node {
            node: node.to_string(),
            from,
            to,
            reason,
        };
        self.events.push(what, chrono::Utc::now());
    }

    fn insert_node(&mut self, node: Node, handle: WorkerHandle) -> u64 {
        let name = node.name.clone();
        self.handles.insert(name.clone(), handle);
        let before = self.nodes.get(&name).map(|e| e.status);
        let generation = self.nodes.join(node);
        let after = self.nodes.get(&name).map(|e| e.status);
        let reason = if before.is_some() {
            "joined again"
        } else {
            "joined"
        };
        self.node_event(&name, before, after, reason.to_string());
        self.publish_node(&name);
        generation
    }

    /// Tells the scheduler what `name` offers and whether it may take tasks: only a Ready node
    /// whose feed the manager has applied since it joined or came back (so that every copy it
    /// still runs is known, and the stale ones are being stopped, before it takes new work).
    pub(super) fn publish_node(&mut self, name: &str) {
        let Some(entry) = self.nodes.get(name) else {
            return;
        };
        self.scheduler.do_send(UpsertNode {
            name: name.to_string(),
            capacity: entry.node.capacity,
            ready: entry.status == NodeStatus::Ready && entry.cursor.is_some(),
            eligible: entry.node.eligible,
            host: entry.node.host().to_string(),
        });
    }

    /// Adds (or replaces) a node, stores it, starts following its feed and tries the waiting
    /// tasks on it.
    fn add_node(&mut self, node: Node, handle: WorkerHandle, ctx: &mut Context<Self>) {
        // The nodes of this process are named in the start-up line; a node that joins is news.
        let level = if node.address == LOCAL_ADDRESS {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "node {} joined at {} offering {} CPU, {} memory",
            node.name,
            node.address,
            crate::units::trim_float(node.capacity.cpu),
            crate::units::format_bytes(node.capacity.memory)
        );
        let name = node.name.clone();
        self.insert_node(node, handle);
        // Only the new node: the others are followed already (polling every node on each
        // join would cost a cluster of n nodes n² calls as it starts).
        self.poll(name.clone(), ctx);
        self.sync(name.clone(), ctx);
        let stored = self.nodes.get(&name).map(|e| e.node.clone());
        self.book.clear_backoffs();
        let store = self.store.clone();
        ctx.spawn(
            async move {
                if let Some(node) = stored
                    && let Err(e) = store
                        .send(Put(node))
                        .await
                        .map_err(StoreError::from)
                        .and_then(|r| r)
                {
                    log::error!("node {name}: cannot record it: {e}");
                }
            }
            .into_actor(self),
        );
        self.place_pending(ctx);
    }

    /// Applies a node's new status: the scheduler hears of it, and a node back to Ready may take
    /// the waiting tasks.
    fn status_changed(&mut self, name: &str, status: Option<NodeStatus>, ctx: &mut Context<Self>) {
        let (Some(status), Some(entry)) = (status, self.nodes.get(name)) else {
            return;
        };
        let reason = match status {
            NodeStatus::Ready => "answering again".to_string(),
            NodeStatus::Unreachable => entry.error.clone().unwrap_or_else(|| "no answer".into()),
            NodeStatus::Down => format!(
                "silent for {}s: its tasks are placed elsewhere",
                self.config.node_down_after.as_secs_f64()
            ),
        };
        match status {
            NodeStatus::Ready => log::info!("node {name} is ready again"),
            NodeStatus::Unreachable => log::warn!(
                "node {name} is unreachable: {}",
                entry.error.as_deref().unwrap_or("no answer")
            ),
            NodeStatus::Down => log::warn!(
                "node {name} is down (silent for {}s): placing its tasks elsewhere",
                self.config.node_down_after.as_secs_f64()
            ),
        }
        let before = entry.previous;
        self.node_event(name, before, Some(status), reason);
        self.publish_node(name);
        if status == NodeStatus::Down {
            self.lose_tasks_of(name, ctx);
        }
        if status != NodeStatus::Unreachable {
            self.book.clear_backoffs();
            self.place_pending(ctx);
        }
    }

    /// Gives every task placed on `node`, which is Down, a new placement elsewhere: each goes
    /// back to Pending (a change with the reason) and frees its reservation there.
    fn lose_tasks_of(&mut self, node: &str, ctx: &mut Context<Self>) {
        for id in self.book.placed_on(node) {
            let reason = format!("node {node} is down: placing the task elsewhere");
            if let Some(change) = self.book.lose(id, reason) {
                self.scheduler.do_send(crate::scheduler::actor::Release(id));
                self.commit_later(change, ctx);
            }
        }
    }
}

/// Finished tasks removed per turn of a prune.
const PRUNE_SLICE: usize = 200;
/// The pause between two slices of a prune (other messages go first).
const PRUNE_PAUSE: Duration = Duration::from_millis(10);

/// How many slices the nodes are polled in, one slice at a time, over each poll interval.
const POLL_SLICES: usize = 10;

impl Actor for Manager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        // Each node is polled once per interval, a tenth of them every tenth of it: a burst of
        // a thousand polls at once would hold the actor for a while every second.
        let mut slice = 0;
        ctx.run_interval(
            self.config.poll_interval / POLL_SLICES as u32,
            move |act, ctx| {
                act.poll_slice(slice, POLL_SLICES, ctx);
                slice = (slice + 1) % POLL_SLICES;
                if slice != 0 {
                    return;
                }
                for name in act.nodes.check_down(chrono::Utc::now()) {
                    act.status_changed(&name, Some(NodeStatus::Down), ctx);
                    act.sync_all(ctx);
                }
                act.place_pending(ctx);
            },
        );
        ctx.run_interval(self.config.prune_interval, |act, ctx| act.prune(ctx));
        ctx.run_interval(LOAD_INTERVAL, |act, ctx| {
            if act.loads.receiver_count() > 0 {
                let reports = act.node_reports().map(|nodes, act, _| {
                    let _ = act.loads.send(std::sync::Arc::new(nodes));
                });
                ctx.spawn(reports);
            }
        });
        self.poll_all(ctx);
        self.sync_all(ctx);
        log::info!(
            "manager started with {} tasks and {} nodes, scheduling with {}",
            self.book.len(),
            self.nodes.len(),
            self.config.algorithm
        );
    }
}
