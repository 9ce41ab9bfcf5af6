//! The manager actor: the cluster's brain and the user's entry point.
//!
//! It accepts tasks (stored as Pending before anyone hears "accepted"), asks the scheduler actor
//! where each should run, records the placement (Scheduled on node X) durably, and only then sends
//! the task to that node's worker. A task that fits nowhere stays Pending with the reason, and is
//! tried again whenever capacity may have appeared (a task ended, a node joined or came back) and
//! on every poll. Nothing is dropped: a worker that cannot be reached puts the task back to
//! Pending, and a task stored as Scheduled is sent again after a manager restart.
//!
//! Workers are polled every `poll_interval` for their tasks and metrics: task states flow back
//! through the state machine, metrics go to the scheduler, and a node that stops answering is
//! marked Unreachable (no new tasks) until it answers again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::metrics::Stats;
use crate::node::{LOCAL_ADDRESS, Node, NodeReport, NodeStatus};
use crate::remote_worker::{RemoteConfig, RemoteWorker, WorkerHandle, http_base};
use crate::runtime::LogQuery;
use crate::scheduler::actor::{
    NodeUsage, Place, Release, Reserve, SchedulerActor, Snapshot, UpsertNode,
};
use crate::scheduler::{Algorithm, Resources};
use crate::store::{List, Put, Store, StoreError};
use crate::task::{Desired, InvalidTask, InvalidTransition, Task, TaskEvent, TaskId, TaskState};
use crate::worker::{
    GetNodeInfo, ListTasks, RunTask, StopTask, TaskLogs, Worker, WorkerError, WorkerStats,
};

/// Why the manager refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagerError {
    /// No task with this id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// No node with this name.
    #[error("node {0} not found")]
    NodeNotFound(String),
    /// The task's fields are wrong.
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
}

impl From<MailboxError> for ManagerError {
    fn from(_: MailboxError) -> Self {
        ManagerError::Closed
    }
}

/// How the manager behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerConfig {
    /// The scheduling algorithm.
    pub algorithm: Algorithm,
    /// How often every worker is asked for its tasks and metrics.
    pub poll_interval: Duration,
    /// Failed polls in a row after which a node is Unreachable.
    pub unreachable_after: u32,
    /// How remote workers are called.
    pub remote: RemoteConfig,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            algorithm: Algorithm::Epvm,
            poll_interval: Duration::from_secs(1),
            unreachable_after: 2,
            remote: RemoteConfig::default(),
        }
    }
}

/// A node the manager knows, with how to reach it and what it last said.
struct NodeEntry {
    node: Node,
    handle: WorkerHandle,
    status: NodeStatus,
    stats: Option<Stats>,
    last_seen: Option<DateTime<Utc>>,
    error: Option<String>,
    failures: u32,
    polling: bool,
}

/// The manager actor.
pub struct Manager {
    /// Settings.
    config: ManagerConfig,
    /// Where every task, event and node is written before anyone is told.
    store: Addr<Store>,
    /// Places tasks and keeps the reservations.
    scheduler: Addr<SchedulerActor>,
    /// Every task, as last written.
    tasks: HashMap<TaskId, Task>,
    /// Every node, by name.
    nodes: BTreeMap<String, NodeEntry>,
    /// Tasks whose placement or delivery is under way (not to be started twice).
    in_flight: HashSet<TaskId>,
    /// The order tasks arrived in, so the oldest waiting task is placed first.
    arrival: HashMap<TaskId, u64>,
    /// Tasks a node failed to take: not placed again before the instant, and the next wait.
    backoff: HashMap<TaskId, (Instant, Duration)>,
}

/// The first wait before placing again a task that a node failed to take; it doubles up to
/// [`MAX_BACKOFF`] while deliveries keep failing, so a cluster whose engines are down is not
/// flooded with attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between placement attempts of a task that nodes keep failing to take.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Manager {
    /// Loads tasks and nodes from `store` and starts the manager. Remote nodes found in the store
    /// are reconnected; tasks found Scheduled are sent to their node again (workers take a task
    /// they already have as a no-op).
    pub async fn start(
        config: ManagerConfig,
        store: Addr<Store>,
    ) -> Result<Addr<Manager>, ManagerError> {
        let tasks: Vec<Task> = store.send(List::<Task>::all()).await??;
        let nodes: Vec<Node> = store.send(List::<Node>::all()).await??;
        let scheduler = SchedulerActor::new(config.algorithm).start();
        for task in &tasks {
            if let (true, Some(node)) = (task.state.is_active(), &task.node) {
                scheduler.do_send(Reserve {
                    task: task.id,
                    node: node.clone(),
                    demand: Resources::of(task),
                });
            }
        }
        let remote = config.remote.clone();
        Ok(Manager::create(move |_| {
            let mut manager = Manager {
                config,
                store,
                scheduler,
                arrival: tasks
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.id, i as u64))
                    .collect(),
                tasks: tasks.into_iter().map(|t| (t.id, t)).collect(),
                nodes: BTreeMap::new(),
                in_flight: HashSet::new(),
                backoff: HashMap::new(),
            };
            for node in nodes.into_iter().filter(|n| n.address != LOCAL_ADDRESS) {
                let handle = WorkerHandle::Remote(
                    RemoteWorker::new(node.address.clone(), remote.clone()).start(),
                );
                manager.insert_node(node, handle);
            }
            manager
        }))
    }

    fn persist<R: crate::store::Record>(
        &self,
        record: R,
    ) -> impl Future<Output = Result<(), ManagerError>> + use<R> {
        let store = self.store.clone();
        async move { Ok(store.send(Put(record)).await??) }
    }

    /// Records `task` and writes it in the background (for changes nobody waits on).
    fn record(&mut self, task: Task, ctx: &mut Context<Self>) {
        let id = task.id;
        self.tasks.insert(id, task.clone());
        ctx.spawn(self.persist(task).into_actor(self).map(move |res, _, _| {
            if let Err(e) = res {
                log::error!("task {id}: cannot record its new state: {e}");
            }
        }));
    }

    fn insert_node(&mut self, node: Node, handle: WorkerHandle) {
        self.scheduler.do_send(UpsertNode {
            name: node.name.clone(),
            capacity: node.capacity,
            ready: true,
            eligible: node.eligible,
        });
        self.nodes.insert(
            node.name.clone(),
            NodeEntry {
                node,
                handle,
                status: NodeStatus::Ready,
                stats: None,
                last_seen: None,
                error: None,
                failures: 0,
                polling: false,
            },
        );
    }

    /// Adds (or replaces) a node, stores it, and tries the waiting tasks on it.
    fn add_node(&mut self, node: Node, handle: WorkerHandle, ctx: &mut Context<Self>) {
        log::info!(
            "node {} joined at {} offering {} CPU, {} memory",
            node.name,
            node.address,
            node.capacity.cpu,
            crate::units::format_bytes(node.capacity.memory)
        );
        let joined_at = self.nodes.get(&node.name).map(|e| e.node.joined_at);
        let mut node = node;
        if let Some(t) = joined_at {
            node.joined_at = t;
        }
        self.insert_node(node.clone(), handle);
        self.backoff.clear();
        let name = node.name.clone();
        ctx.spawn(self.persist(node).into_actor(self).map(move |res, _, _| {
            if let Err(e) = res {
                log::error!("node {name}: cannot record it: {e}");
            }
        }));
        self.poll_all(ctx);
        self.place_pending(ctx);
    }

    fn set_status(
        &mut self,
        name: &str,
        status: NodeStatus,
        error: Option<String>,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self.nodes.get_mut(name) else {
            return;
        };
        entry.error = error;
        if entry.status == status {
            return;
        }
        match status {
            NodeStatus::Ready => log::info!("node {name} is ready again"),
            NodeStatus::Unreachable => log::warn!(
                "node {name} is unreachable: {}",
                entry.error.as_deref().unwrap_or("no answer")
            ),
        }
        entry.status = status;
        self.scheduler.do_send(UpsertNode {
            name: name.to_string(),
            capacity: entry.node.capacity,
            ready: status == NodeStatus::Ready,
            eligible: entry.node.eligible,
        });
        if status == NodeStatus::Ready {
            // A node came back: what waited for one may try again now.
            self.backoff.clear();
            self.place_pending(ctx);
        }
    }

    /// Tries to place every Pending task not already being placed, oldest first.
    fn place_pending(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let mut pending: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Pending && !self.in_flight.contains(&t.id))
            .filter(|t| self.backoff.get(&t.id).is_none_or(|(at, _)| now >= *at))
            .collect();
        pending.sort_by_key(|t| (self.arrival.get(&t.id).copied().unwrap_or(u64::MAX), t.id));
        let pending: Vec<Task> = pending.into_iter().cloned().collect();
        for task in pending {
            self.place(task, ctx);
        }
    }

    /// Asks the scheduler for a node for `task`; the scheduler serializes these, so placements
    /// made back to back see each other's reservations.
    fn place(&mut self, task: Task, ctx: &mut Context<Self>) {
        let id = task.id;
        self.in_flight.insert(id);
        let decision = self.scheduler.send(Place(task));
        ctx.spawn(
            decision
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(Ok(node)) => act.assign(id, node, ctx),
                    Ok(Err(unplaceable)) => {
                        act.in_flight.remove(&id);
                        act.keep_pending(id, format!("waiting for a node: {unplaceable}"), ctx);
                    }
                    Err(e) => {
                        act.in_flight.remove(&id);
                        log::error!("task {id}: scheduler unavailable: {e}");
                    }
                }),
        );
    }

    /// Leaves a task Pending with `reason` (stored only when the reason changed).
    fn keep_pending(&mut self, id: TaskId, reason: String, ctx: &mut Context<Self>) {
        if let Some(task) = self.tasks.get(&id)
            && task.state == TaskState::Pending
            && task.reason != reason
        {
            let mut task = task.clone();
            log::info!("task {id} ({}) stays Pending: {reason}", task.name);
            task.reason = reason;
            self.record(task, ctx);
        }
    }

    /// Records the placement durably, then sends the task to its node.
    fn assign(&mut self, id: TaskId, node: String, ctx: &mut Context<Self>) {
        let Some(mut task) = self.tasks.get(&id).cloned() else {
            self.in_flight.remove(&id);
            self.scheduler.do_send(Release(id));
            return;
        };
        if task.state != TaskState::Pending {
            // Stopped while the scheduler was deciding.
            self.in_flight.remove(&id);
            self.scheduler.do_send(Release(id));
            return;
        }
        if let Err(e) = task.transition(TaskState::Scheduled, format!("placed on node {node}")) {
            log::error!("{e}");
            self.in_flight.remove(&id);
            return;
        }
        task.node = Some(node);
        self.tasks.insert(id, task.clone());
        let persist = self.persist(task.clone());
        ctx.spawn(
            persist
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(()) => act.deliver(task, ctx),
                    Err(e) => {
                        log::error!("task {id}: cannot record its placement: {e}");
                        act.in_flight.remove(&id);
                    }
                }),
        );
    }

    /// Sends a Scheduled task to its node's worker.
    fn deliver(&mut self, task: Task, ctx: &mut Context<Self>) {
        let id = task.id;
        let Some(node) = task.node.clone() else {
            self.in_flight.remove(&id);
            return;
        };
        let Some(entry) = self.nodes.get(&node) else {
            self.in_flight.remove(&id);
            self.unplace(id, format!("node {node} is not in the cluster"), ctx);
            return;
        };
        self.in_flight.insert(id);
        let handle = entry.handle.clone();
        let fut = async move { handle.send(RunTask(task)).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.in_flight.remove(&id);
            match res {
                Ok(reported) => {
                    act.backoff.remove(&id);
                    act.merge(&node, reported, ctx)
                }
                Err(WorkerError::Invalid(e)) => {
                    act.fail(id, format!("node {node} refused the task: {e}"), ctx)
                }
                Err(e) => {
                    if matches!(e, WorkerError::Unreachable(_) | WorkerError::Closed) {
                        act.set_status(&node, NodeStatus::Unreachable, Some(e.to_string()), ctx);
                    }
                    let wait = act
                        .backoff
                        .get(&id)
                        .map_or(FIRST_BACKOFF, |(_, w)| (*w * 2).min(MAX_BACKOFF));
                    act.backoff.insert(id, (Instant::now() + wait, wait));
                    act.unplace(
                        id,
                        format!(
                            "could not be sent to node {node} ({e}); trying again in {}s",
                            wait.as_secs_f64()
                        ),
                        ctx,
                    );
                }
            }
        }));
    }

    /// Puts a Scheduled task back to Pending (its node did not take it) and frees its reservation.
    fn unplace(&mut self, id: TaskId, reason: String, ctx: &mut Context<Self>) {
        self.scheduler.do_send(Release(id));
        if let Some(task) = self.tasks.get(&id)
            && task.state == TaskState::Scheduled
        {
            let mut task = task.clone();
            log::warn!("task {id} ({}): {reason}", task.name);
            if task.transition(TaskState::Pending, reason).is_ok() {
                task.node = None;
                self.record(task, ctx);
            }
        }
    }

    fn fail(&mut self, id: TaskId, reason: String, ctx: &mut Context<Self>) {
        self.scheduler.do_send(Release(id));
        if let Some(task) = self.tasks.get(&id) {
            let mut task = task.clone();
            if task.transition(TaskState::Failed, reason).is_ok() {
                self.record(task, ctx);
            }
        }
    }

    /// Takes what a worker reports about a task into the manager's copy, through the state
    /// machine: a report that the table does not allow (a stale one) changes nothing.
    fn merge(&mut self, node: &str, reported: Task, ctx: &mut Context<Self>) {
        let Some(ours) = self.tasks.get(&reported.id) else {
            return;
        };
        if ours.node.as_deref() != Some(node) {
            return;
        }
        let mut task = ours.clone();
        if task.state != reported.state {
            if task
                .transition(reported.state, reported.reason.clone())
                .is_err()
            {
                return;
            }
            if !reported.state.is_active() {
                self.scheduler.do_send(Release(task.id));
            }
        }
        task.container_id = reported.container_id;
        task.host_ports = reported.host_ports;
        task.start_time = reported.start_time.or(task.start_time);
        task.finish_time = reported.finish_time.or(task.finish_time);
        task.exit_code = reported.exit_code;
        task.reason = reported.reason;
        if &task != ours {
            self.record(task, ctx);
        }
    }

    /// Asks every node that is not being asked already for its tasks and metrics.
    fn poll_all(&mut self, ctx: &mut Context<Self>) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            self.poll(name, ctx);
        }
    }

    fn poll(&mut self, name: String, ctx: &mut Context<Self>) {
        let Some(entry) = self.nodes.get_mut(&name) else {
            return;
        };
        if entry.polling {
            return;
        }
        entry.polling = true;
        let handle = entry.handle.clone();
        let fut = async move {
            let tasks = handle.send(ListTasks).await?;
            let stats = handle.send(WorkerStats).await.ok();
            Ok::<_, WorkerError>((tasks, stats))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let Some(entry) = act.nodes.get_mut(&name) else {
                return;
            };
            entry.polling = false;
            match res {
                Ok((tasks, stats)) => {
                    entry.failures = 0;
                    entry.last_seen = Some(Utc::now());
                    if let Some(stats) = stats {
                        act.scheduler.do_send(NodeUsage {
                            name: name.clone(),
                            cpu: stats.cpu.usage_percent / 100.0,
                            memory: if stats.memory.total_bytes > 0 {
                                stats.memory.used_bytes as f64 / stats.memory.total_bytes as f64
                            } else {
                                0.0
                            },
                        });
                        entry.stats = Some(stats);
                    }
                    act.set_status(&name, NodeStatus::Ready, None, ctx);
                    act.absorb(&name, tasks, ctx);
                }
                Err(e) => {
                    entry.failures += 1;
                    let unreachable = entry.failures >= act.config.unreachable_after;
                    if unreachable {
                        act.set_status(&name, NodeStatus::Unreachable, Some(e.to_string()), ctx);
                    }
                }
            }
        }));
    }

    /// Applies a node's task list; tasks placed there that it does not have are sent again.
    fn absorb(&mut self, node: &str, reported: Vec<Task>, ctx: &mut Context<Self>) {
        let known: HashSet<TaskId> = reported.iter().map(|t| t.id).collect();
        for task in reported {
            // A task the manager never heard of was given to the worker directly: not ours.
            let Some(ours) = self.tasks.get(&task.id) else {
                continue;
            };
            let placed_here =
                ours.node.as_deref() == Some(node) && ours.state != TaskState::Completed;
            if !placed_here && task.state.is_active() {
                // A delivery that timed out but arrived after all, a task since placed
                // elsewhere, or one stopped while its delivery was under way: it must not run.
                self.stop_stray(node, task.id, ctx);
                continue;
            }
            self.merge(node, task, ctx);
        }
        let missing: Vec<Task> = self
            .tasks
            .values()
            .filter(|t| {
                t.state == TaskState::Scheduled
                    && t.node.as_deref() == Some(node)
                    && !known.contains(&t.id)
                    && !self.in_flight.contains(&t.id)
            })
            .cloned()
            .collect();
        for task in missing {
            log::info!(
                "task {} is Scheduled on {node} but the node does not have it: sending it again",
                task.id
            );
            self.deliver(task, ctx);
        }
    }

    /// Stops a task that runs on `node` although the manager did not place it there.
    fn stop_stray(&mut self, node: &str, id: TaskId, ctx: &mut Context<Self>) {
        let Some(handle) = self.nodes.get(node).map(|e| e.handle.clone()) else {
            return;
        };
        log::warn!("task {id} runs on node {node} but is not placed there: stopping that copy");
        let node = node.to_string();
        ctx.spawn(
            async move {
                if let Err(e) = handle.send(StopTask(id)).await {
                    log::warn!("node {node}: could not stop stray task {id}: {e}");
                }
            }
            .into_actor(self),
        );
    }

    /// Stops a task, on its node if it has one. Stopping a Completed task returns it unchanged.
    fn stop(&mut self, id: TaskId) -> ResponseActFuture<Self, Result<Task, ManagerError>> {
        let Some(task) = self.tasks.get(&id).cloned() else {
            return Box::pin(fut::ready(Err(ManagerError::NotFound(id))));
        };
        if task.state == TaskState::Completed {
            return Box::pin(fut::ready(Ok(task)));
        }
        self.backoff.remove(&id);
        let node = task.node.clone();
        let handle = node
            .as_ref()
            .and_then(|n| self.nodes.get(n))
            .map(|e| e.handle.clone());
        let on_node = matches!(
            task.state,
            TaskState::Scheduled | TaskState::Running | TaskState::Failed
        );
        let remote_stop = async move {
            match (on_node, handle) {
                (true, Some(handle)) => match handle.send(StopTask(id)).await {
                    Ok(reported) => Ok(Some(reported)),
                    // The node never got it (or forgot it): nothing runs there.
                    Err(WorkerError::NotFound(_)) => Ok(None),
                    Err(error) if task.state == TaskState::Failed => {
                        log::warn!("task {id}: could not clean up on its node: {error}");
                        Ok(None)
                    }
                    Err(error) => Err(ManagerError::Worker {
                        node: node.unwrap_or_default(),
                        error,
                    }),
                },
                _ => Ok(None),
            }
        };
        Box::pin(remote_stop.into_actor(self).then(move |res, act, _| {
            let result = res.and_then(|reported| {
                let mut task = act
                    .tasks
                    .get(&id)
                    .cloned()
                    .ok_or(ManagerError::NotFound(id))?;
                if task.state != TaskState::Completed {
                    task.transition(TaskState::Completed, "stopped by user")?;
                }
                if let Some(reported) = reported {
                    task.container_id = reported.container_id;
                    task.finish_time = reported.finish_time.or(task.finish_time);
                    task.exit_code = reported.exit_code;
                }
                act.scheduler.do_send(Release(id));
                act.tasks.insert(id, task.clone());
                Ok(task)
            });
            let persist = result.as_ref().ok().map(|t| act.persist(t.clone()));
            async move {
                let task = result?;
                if let Some(persist) = persist {
                    persist.await?;
                }
                Ok(task)
            }
            .into_actor(act)
        }))
    }
}

impl Actor for Manager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(self.config.poll_interval, |act, ctx| {
            act.poll_all(ctx);
            act.place_pending(ctx);
        });
        self.poll_all(ctx);
        log::info!(
            "manager started with {} tasks and {} nodes, scheduling with {}",
            self.tasks.len(),
            self.nodes.len(),
            self.config.algorithm
        );
    }
}

/// Accepts a task event: run a new task (stored Pending before the answer, then placed at once)
/// or stop one (`State: Completed`).
#[derive(Message)]
#[rtype(result = "Result<Task, ManagerError>")]
pub struct Submit(pub TaskEvent);

/// Handler for [`Submit`].
impl Handler<Submit> for Manager {
    type Result = ResponseActFuture<Self, Result<Task, ManagerError>>;

    fn handle(&mut self, Submit(event): Submit, _: &mut Context<Self>) -> Self::Result {
        let desired = match event.desired() {
            Ok(d) => d,
            Err(e) => return Box::pin(fut::ready(Err(e.into()))),
        };
        if desired == Desired::Stop {
            return self.stop(event.task.id);
        }
        let mut task = event.task.clone();
        if let Err(e) = task.normalize() {
            return Box::pin(fut::ready(Err(e.into())));
        }
        if let Some(existing) = self.tasks.get(&task.id) {
            let result = if existing.state == TaskState::Completed {
                Err(ManagerError::Conflict(format!(
                    "task {} is Completed; submit it under a new ID to run it again",
                    task.id
                )))
            } else {
                Ok(existing.clone())
            };
            return Box::pin(fut::ready(result));
        }
        task.state = TaskState::Pending;
        task.container_id.clear();
        task.host_ports.clear();
        task.node = None;
        task.exit_code = None;
        task.start_time = None;
        task.finish_time = None;
        task.reason = "waiting for a node".into();
        let mut event = event;
        event.task = task.clone();
        let store_event = self.persist(event);
        let store_task = self.persist(task.clone());
        let id = task.id;
        Box::pin(
            async move {
                // Both writes are queued at once, so they usually share one commit.
                let (event, stored) = futures_util::future::join(store_event, store_task).await;
                event?;
                stored?;
                Ok(task)
            }
            .into_actor(self)
            .map(move |res: Result<Task, ManagerError>, act, ctx| {
                if let Ok(task) = &res {
                    act.tasks.insert(id, task.clone());
                    act.arrival.insert(id, act.arrival.len() as u64);
                    act.place(task.clone(), ctx);
                }
                res
            }),
        )
    }
}

/// Stops a task. Stopping a Completed task returns it unchanged.
#[derive(Message)]
#[rtype(result = "Result<Task, ManagerError>")]
pub struct Stop(pub TaskId);

/// Handler for [`Stop`].
impl Handler<Stop> for Manager {
    type Result = ResponseActFuture<Self, Result<Task, ManagerError>>;

    fn handle(&mut self, Stop(id): Stop, _: &mut Context<Self>) -> Self::Result {
        self.stop(id)
    }
}

/// Every task, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<Task>")]
pub struct ListAll;

/// Handler for [`ListAll`].
impl Handler<ListAll> for Manager {
    type Result = MessageResult<ListAll>;

    fn handle(&mut self, _: ListAll, _: &mut Context<Self>) -> Self::Result {
        let mut tasks: Vec<Task> = self.tasks.values().cloned().collect();
        tasks.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        MessageResult(tasks)
    }
}

/// One task.
#[derive(Message)]
#[rtype(result = "Result<Task, ManagerError>")]
pub struct GetOne(pub TaskId);

/// Handler for [`GetOne`].
impl Handler<GetOne> for Manager {
    type Result = Result<Task, ManagerError>;

    fn handle(&mut self, GetOne(id): GetOne, _: &mut Context<Self>) -> Self::Result {
        self.tasks
            .get(&id)
            .cloned()
            .ok_or(ManagerError::NotFound(id))
    }
}

/// The last lines of a task's output, from its node.
#[derive(Message)]
#[rtype(result = "Result<String, ManagerError>")]
pub struct Logs {
    /// The task.
    pub id: TaskId,
    /// Which lines.
    pub query: LogQuery,
}

/// Handler for [`Logs`].
impl Handler<Logs> for Manager {
    type Result = ResponseFuture<Result<String, ManagerError>>;

    fn handle(&mut self, msg: Logs, _: &mut Context<Self>) -> Self::Result {
        let Some(task) = self.tasks.get(&msg.id) else {
            return Box::pin(async move { Err(ManagerError::NotFound(msg.id)) });
        };
        let Some(node) = task.node.clone() else {
            let state = task.state;
            return Box::pin(async move {
                Err(ManagerError::Conflict(format!(
                    "task {} has not run on any node yet (it is {state})",
                    msg.id
                )))
            });
        };
        let Some(handle) = self.nodes.get(&node).map(|e| e.handle.clone()) else {
            return Box::pin(async move { Err(ManagerError::NodeNotFound(node)) });
        };
        Box::pin(async move {
            handle
                .send(TaskLogs {
                    id: msg.id,
                    query: msg.query,
                })
                .await
                .map_err(|error| ManagerError::Worker { node, error })
        })
    }
}

/// Every node with its live figures.
#[derive(Message)]
#[rtype(result = "Vec<NodeReport>")]
pub struct ListNodes;

/// Handler for [`ListNodes`].
impl Handler<ListNodes> for Manager {
    type Result = ResponseActFuture<Self, Vec<NodeReport>>;

    fn handle(&mut self, _: ListNodes, _: &mut Context<Self>) -> Self::Result {
        Box::pin(
            self.scheduler
                .send(Snapshot)
                .into_actor(self)
                .map(|views, act, _| {
                    let views: HashMap<String, _> = views
                        .unwrap_or_default()
                        .into_iter()
                        .map(|v| (v.name().to_string(), v))
                        .collect();
                    act.nodes
                        .values()
                        .map(|e| {
                            let view = views.get(&e.node.name);
                            NodeReport {
                                name: e.node.name.clone(),
                                address: e.node.address.clone(),
                                role: e.node.role.clone(),
                                status: e.status,
                                eligible: e.node.eligible,
                                capacity: e.node.capacity,
                                reserved: view.map(|v| v.reserved()).unwrap_or_default(),
                                task_count: view.map_or(0, |v| v.task_count()),
                                stats: e.stats.clone(),
                                last_seen: e.last_seen,
                                error: e.error.clone(),
                            }
                        })
                        .collect()
                }),
        )
    }
}

/// Adds a worker running in this process (all-in-one mode).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddLocalWorker {
    /// Its name.
    pub name: String,
    /// The worker actor.
    pub worker: Addr<Worker>,
    /// What it offers.
    pub capacity: Resources,
}

/// Handler for [`AddLocalWorker`].
impl Handler<AddLocalWorker> for Manager {
    type Result = ();

    fn handle(&mut self, msg: AddLocalWorker, ctx: &mut Context<Self>) {
        let node = Node {
            name: msg.name,
            address: LOCAL_ADDRESS.into(),
            role: "worker".into(),
            capacity: msg.capacity,
            eligible: true,
            joined_at: Utc::now(),
        };
        self.add_node(node, WorkerHandle::Local(msg.worker), ctx);
    }
}

/// Connects to the worker at `address` (`http://host:port`): asks its name and capacity and
/// adds it as a node. Answers with the node, or the error reaching it.
#[derive(Message)]
#[rtype(result = "Result<Node, ManagerError>")]
pub struct ConnectWorker {
    /// The worker's API address.
    pub address: String,
}

/// Handler for [`ConnectWorker`].
impl Handler<ConnectWorker> for Manager {
    type Result = ResponseActFuture<Self, Result<Node, ManagerError>>;

    fn handle(&mut self, msg: ConnectWorker, _: &mut Context<Self>) -> Self::Result {
        let address = http_base(&msg.address);
        let remote = RemoteWorker::new(address.clone(), self.config.remote.clone()).start();
        let handle = WorkerHandle::Remote(remote);
        let ask = handle.clone();
        let fut = async move { ask.send(GetNodeInfo).await };
        Box::pin(fut.into_actor(self).map(move |res, act, ctx| {
            let info = res.map_err(|error| ManagerError::Worker {
                node: address.clone(),
                error,
            })?;
            let node = Node {
                name: info.name,
                address,
                role: "worker".into(),
                capacity: info.capacity,
                eligible: true,
                joined_at: Utc::now(),
            };
            act.add_node(node.clone(), handle, ctx);
            Ok(node)
        }))
    }
}
