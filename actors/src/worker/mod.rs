//! The worker actor: runs the tasks it is given, keeps track of them, and reports on them.
//!
//! It owns the tasks placed on its node. Every state change goes through `Task::transition`, gets
//! the next revision of the worker's feed ([`feed`]) and is written to the worker's store; what
//! the API and the feed show of a task is its last *durable* version. Work is event-driven: a task
//! starts as soon as it is accepted, a stop reaches the runtime at once, and the runtime reports
//! containers that end on their own ([`ContainerExited`]); what that means for the task is the
//! pure function [`exit::exit_outcome`]. A manager learns of each change through a long poll of
//! the feed ([`Sync`]), answered as soon as the change is durable. A periodic reconcile catches
//! whatever an event missed (a watch lost while the engine restarted, a container removed by
//! hand).
//!
//! On start, the worker reloads its tasks and its feed head from the store: Scheduled tasks are
//! started, Running tasks are looked up in the runtime and either watched again or marked as
//! ended.

mod config;
pub mod exit;
pub mod feed;
mod handlers;
pub mod health;
pub mod protocol;
mod reconcile;
mod restart;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::backoff::Backoff;
use crate::metrics::MetricsCollector;
use crate::runtime::{
    ContainerExited, ContainerInfo, DockerRuntime, Remove, RuntimeError, RuntimeHandle, SimEngine,
    SimRuntime, Start, Stop, Watch,
};
use crate::store::{Get, List, Op, OpenWriter, Put, Store, StoreError, Writer};
use crate::task::{Task, TaskId, TaskMap, TaskState};
use crate::unwritten::Unwritten;
pub use config::WorkerConfig;
use exit::{ExitOutcome, exit_outcome, short};
use feed::{Answer, Cursor, Feed, FeedHead};
pub use handlers::Sample;
pub use protocol::*;

/// Which runtime a worker runs its tasks on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeKind {
    /// The local Docker engine; ports are published on `publish_ip`.
    Docker {
        /// Host address for published ports.
        publish_ip: String,
    },
    /// Simulated containers; with `known_images`, only those images exist.
    Sim {
        /// The images the simulated node has, or `None` for all.
        known_images: Option<Vec<String>>,
        /// The simulated engine, when it is shared or must outlive the worker (tests that
        /// restart workers); `None` for one of its own.
        engine: Option<SimEngine>,
    },
}

/// A long poll of the feed waiting for a durable change.
struct Waiter {
    cursor: Cursor,
    reply: oneshot::Sender<SyncReply>,
}

/// The worker actor.
pub struct Worker {
    /// Settings.
    config: WorkerConfig,
    /// Where every task and every change to it is written first: the store's writer thread,
    /// straight (its actor is used only to load the tasks at start).
    writer: Writer,
    /// Docker or simulated.
    runtime: RuntimeHandle,
    /// Samples the machine for `GET /stats` (the worker adds its task count).
    metrics: Option<Addr<MetricsCollector>>,
    /// Every task of this worker, as last changed (possibly not durable yet).
    tasks: TaskMap,
    /// The durable version of tasks whose writes are in flight: what readers see.
    unwritten: Unwritten<TaskId, Task>,
    /// The numbered changes, for managers' syncs.
    feed: Feed,
    /// Syncs waiting for a change.
    waiters: Vec<Waiter>,
    /// Exits reported before the start that created the container was recorded.
    early_exits: HashMap<TaskId, ContainerExited>,
    /// Tasks whose stop is under way: their container's exit is the stop, not an event.
    stopping: HashSet<TaskId>,
    /// Tasks whose start found the engine unreachable: the wait before trying again.
    start_retries: HashMap<TaskId, Backoff>,
    /// Failed health checks in a row, by task.
    health_failures: HashMap<TaskId, u32>,
    /// Tasks whose health check is under way.
    probing: HashSet<TaskId>,
    /// When each task's health was last checked.
    last_probe: HashMap<TaskId, std::time::Instant>,
    /// The Running tasks that have a health check: the only ones the health tick looks at.
    checked: HashSet<TaskId>,
    /// The health tick, running while `checked` is not empty (a thousand idle nodes of one
    /// process would otherwise wake ten thousand times a second for nothing).
    health_tick: Option<SpawnHandle>,
    /// Containers labelled for this worker that no task owns, and when first seen so.
    orphans: HashMap<String, std::time::Instant>,
    /// When a manager last asked for the feed or the metrics (None: never).
    last_sync: Option<std::time::Instant>,
    /// How many reconciles have run (every few lists stopped containers too).
    reconciles: u64,
}

impl Worker {
    /// Loads the worker's tasks and feed head from `store` (giving a new store its epoch), then
    /// starts the worker and its runtime.
    pub async fn start(
        config: WorkerConfig,
        store: Addr<Store>,
        runtime: RuntimeKind,
        metrics: Option<Addr<MetricsCollector>>,
    ) -> Result<Addr<Worker>, WorkerError> {
        Worker::start_on(None, config, store, runtime, metrics).await
    }

    /// [`Worker::start`], on `arbiter` (its thread) rather than the caller's: the nodes of an
    /// all-in-one cluster run on a thread of their own, apart from the manager's.
    pub async fn start_on(
        arbiter: Option<&ArbiterHandle>,
        config: WorkerConfig,
        store: Addr<Store>,
        runtime: RuntimeKind,
        metrics: Option<Addr<MetricsCollector>>,
    ) -> Result<Addr<Worker>, WorkerError> {
        let tasks = store.send(List::<Task>::all()).await??;
        let head = store.send(Get::<FeedHead>::new("feed")).await??;
        let feed = Feed::new(head, &tasks);
        if head.is_none() {
            // The epoch is durable before any manager hears of it.
            store.send(Put(feed.head())).await??;
        }
        let writer = store.send(OpenWriter).await?;
        let tasks = tasks.into_iter().collect();
        let build = move |ctx: &mut Context<Worker>| {
            let exits = ctx.address().recipient();
            let runtime = match runtime {
                RuntimeKind::Docker { publish_ip } => RuntimeHandle::Docker(
                    DockerRuntime::new(config.name.clone(), publish_ip, exits).start(),
                ),
                RuntimeKind::Sim {
                    known_images,
                    engine,
                } => RuntimeHandle::Sim(
                    SimRuntime::with_engine(
                        exits,
                        known_images.map(|i| i.into_iter().collect()),
                        engine.unwrap_or_default(),
                    )
                    .start(),
                ),
            };
            Worker {
                config,
                writer,
                runtime,
                metrics,
                tasks,
                unwritten: Unwritten::default(),
                feed,
                waiters: Vec::new(),
                early_exits: HashMap::new(),
                stopping: HashSet::new(),
                start_retries: HashMap::new(),
                health_failures: HashMap::new(),
                probing: HashSet::new(),
                last_probe: HashMap::new(),
                checked: HashSet::new(),
                health_tick: None,
                orphans: HashMap::new(),
                last_sync: None,
                reconciles: 0,
            }
        };
        let worker = match arbiter {
            Some(arbiter) => Worker::start_in_arbiter(arbiter, build),
            None => Worker::create(build),
        };
        // Before anyone can ask: containers whose task the store lost are taken back.
        worker.send(handlers::Adopt).await?;
        Ok(worker)
    }

    /// Makes `task` the current copy under the feed's next revision and writes it; resolves once
    /// it is durable (and so in the feed and visible).
    fn write(
        &mut self,
        mut task: Task,
    ) -> impl ActorFuture<Self, Output = Result<Task, WorkerError>> + use<> {
        let id = task.id;
        self.feed.stamp(&mut task);
        if task.state() == TaskState::Running && !task.health_check.is_empty() {
            self.checked.insert(id);
        } else {
            self.checked.remove(&id);
        }
        // Encoded here, so the store gets bytes rather than a copy of the task; sent now, so
        // writes reach the store in the order they were made.
        let sent = Op::put(&task).map(|op| self.commit(vec![op]));
        let replaced = self.tasks.insert(id, task.clone());
        self.unwritten.begin(&id, replaced);
        async move { sent?.await }
            .into_actor(self)
            .map(move |res, act, ctx| {
                act.ensure_health_tick(ctx);
                act.unwritten.done(&id, Some(&task));
                act.feed.written(task.revision);
                // A task just taken (Scheduled) is no news to the manager that sent it: the
                // long polls are answered once it starts or fails, with this change in the
                // same answer. That saves a sync round per task.
                if task.state() != TaskState::Scheduled {
                    act.wake_waiters();
                }
                match res {
                    Ok(()) => Ok(task),
                    Err(e) => {
                        log::error!(
                            "task {id}: cannot record its new state: {e}; managers will resync in full"
                        );
                        act.feed.new_epoch();
                        Err(e.into())
                    }
                }
            })
    }

    /// Sends `ops` to the store's writer thread, to be committed together; resolves once they
    /// are durable. Every write of the worker goes this way, so they commit in the order made.
    fn commit(&self, ops: Vec<Op>) -> impl Future<Output = Result<(), StoreError>> + use<> {
        let (tell, told) = oneshot::channel();
        self.writer.write_then(ops, move |res| drop(tell.send(res)));
        async move { told.await.map_err(|_| StoreError::Closed)? }
    }

    /// Writes `task` in the background (for changes nobody waits on: a start finishing, a
    /// container exiting).
    fn record(&mut self, task: Task, ctx: &mut Context<Self>) {
        let write = self.write(task);
        ctx.spawn(write.map(|_, _, _| ()));
    }

    /// What readers may see of a task: its last durable version.
    fn visible(&self, id: &TaskId) -> Option<&Task> {
        self.unwritten.visible(id, self.tasks.get(id))
    }

    fn active_count(&self) -> usize {
        self.tasks.active_len()
    }

    /// The answer to a sync from `cursor`, now.
    fn sync_reply(&self, cursor: Option<Cursor>) -> SyncReply {
        let (full, tasks, revision) = match self.feed.answer(cursor) {
            Answer::Full => {
                let mut tasks: Vec<Task> = self
                    .tasks
                    .keys()
                    .filter_map(|id| self.visible(id).cloned())
                    .collect();
                tasks.sort_by_key(|t| t.revision);
                (true, tasks, self.feed.durable())
            }
            Answer::Changes(ids) => {
                let tasks = ids.iter().filter_map(|id| self.tasks.get(id).cloned());
                (false, tasks.collect(), self.feed.durable())
            }
            Answer::Nothing => (false, Vec::new(), cursor.map_or(0, |c| c.revision)),
        };
        SyncReply {
            protocol: PROTOCOL_VERSION,
            epoch: self.feed.epoch(),
            revision,
            full,
            tasks,
        }
    }

    /// Answers the syncs waiting for a change that is now durable.
    fn wake_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let durable = self.feed.durable();
        for waiter in std::mem::take(&mut self.waiters) {
            if waiter.reply.is_closed() {
                continue;
            }
            let reply = (durable > waiter.cursor.revision)
                .then(|| self.sync_reply(Some(waiter.cursor)))
                .filter(|r| !r.tasks.is_empty());
            match reply {
                Some(reply) => {
                    let _ = waiter.reply.send(reply);
                }
                None => self.waiters.push(waiter),
            }
        }
    }

    /// Starts the container of a Scheduled task, first removing `old`, the container of an
    /// earlier start or placement, if any.
    fn launch(&mut self, id: TaskId, old: Option<String>, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get(&id).cloned() else {
            return;
        };
        let runtime = self.runtime.clone();
        let timeout = self.config.stop_timeout;
        let store = self.feed.epoch().to_string();
        let fut = async move {
            if let Some(container_id) = old.filter(|c| !c.is_empty()) {
                let stop = Stop {
                    container_id: container_id.clone(),
                    timeout,
                };
                runtime.send(stop).await??;
                runtime.send(Remove { container_id }).await??;
            }
            runtime.send(Start { task, store }).await?
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |res, act, ctx| act.start_finished(id, res, ctx)),
        );
    }

    fn start_finished(
        &mut self,
        id: TaskId,
        result: Result<ContainerInfo, RuntimeError>,
        ctx: &mut Context<Self>,
    ) {
        self.config.telemetry.started(result.is_ok());
        let Some(mut task) = self.tasks.get(&id).cloned() else {
            return;
        };
        if task.state() != TaskState::Scheduled || !task.container_id.is_empty() {
            // Stopped (or replaced) while it was starting: the new container must not outlive it.
            if let Ok(info) = result {
                let timeout = self.config.stop_timeout;
                self.runtime.do_send(Stop {
                    container_id: info.id.clone(),
                    timeout,
                });
                self.runtime.do_send(Remove {
                    container_id: info.id,
                });
            }
            return;
        }
        let outcome = match result {
            Ok(info) => {
                task.container_id = info.id.clone();
                task.host_ports = info.host_ports;
                // After a restart, the reason keeps why it was restarted.
                let started = match task.reason.strip_prefix("restart ") {
                    Some(why) => format!("container {} started (restart {why})", short(&info.id)),
                    None => format!("container {} started", short(&info.id)),
                };
                let r = task.transition(TaskState::Running, started);
                task.start_time = info.started_at.or(task.start_time);
                r
            }
            Err(RuntimeError::Unavailable { reason }) => {
                // Transient: the engine is down or restarting. The task stays Scheduled and the
                // start is tried again, with a doubling wait; no restart budget is spent.
                let retry = self.start_retries.entry(id).or_insert_with(|| {
                    Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
                });
                let wait = retry.next_wait();
                log::warn!("task {id} ({}): engine unreachable: {reason}", task.name);
                task.reason = format!(
                    "container engine unreachable ({reason}); trying again in {}s",
                    wait.as_secs_f64()
                );
                self.record(task, ctx);
                ctx.run_later(wait, move |act, ctx| act.start_again(id, None, ctx));
                return;
            }
            Err(e) => {
                // Image missing, invalid settings: no restart fixes these.
                log::warn!("task {id} ({}): {e}", task.name);
                task.transition(TaskState::Failed, format!("container could not start: {e}"))
            }
        };
        self.start_retries.remove(&id);
        if let Err(e) = outcome {
            log::error!("{e}");
            return;
        }
        self.record(task, ctx);
        if let Some(exit) = self.early_exits.remove(&id) {
            self.container_ended(exit, ctx);
        }
    }

    /// Applies the end of a container to its task (see [`exit_outcome`]).
    fn container_ended(&mut self, exit: ContainerExited, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get(&exit.task_id) else {
            return;
        };
        let stopping = self.stopping.contains(&exit.task_id);
        match exit_outcome(task, &exit, stopping) {
            ExitOutcome::Early => {
                self.early_exits.insert(exit.task_id, exit);
            }
            ExitOutcome::Ignore => {}
            ExitOutcome::End {
                state,
                reason,
                code,
            } => {
                self.config.telemetry.exited(state);
                let task = task.clone();
                self.ended(task, state, reason, code, ctx);
            }
        }
    }
}

/// A number below `n` (at least 1), at random: where in a cycle a node's periodic work falls,
/// so that the nodes of one process, started together, do not all do it at once.
fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u64
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        let mut resume = Vec::new();
        for task in self.tasks.values() {
            match task.state() {
                TaskState::Scheduled => resume.push(task.id),
                TaskState::Running => self.runtime.do_send(Watch {
                    task_id: task.id,
                    container_id: task.container_id.clone(),
                }),
                _ => {}
            }
        }
        for id in resume {
            log::info!("task {id}: resuming its start after a worker restart");
            self.launch(id, None, ctx);
        }
        // The first reconcile lists every container; the next full listings are staggered.
        self.reconcile(ctx);
        self.stagger_full_listings();
        // The nodes of one process start together: a random phase keeps their reconciles from
        // all falling in the same instant.
        let every = self.config.reconcile_interval;
        let phase = random_below(every.as_millis().max(1) as u64);
        ctx.run_later(Duration::from_millis(phase), move |_, ctx| {
            ctx.run_interval(every, |act, ctx| act.reconcile(ctx));
        });
        self.ensure_health_tick(ctx);
        if let Some(after) = self.config.stop_after_disconnect {
            let every = (after / 4).max(Duration::from_millis(100));
            ctx.run_interval(every, move |act, ctx| act.stop_if_disconnected(after, ctx));
        }
        // Routine for the nodes of a `cube up` with nothing to take back.
        let level = if self.tasks.is_empty() && self.config.in_process {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "worker {} started with {} tasks on the {} runtime (store epoch {})",
            self.config.name,
            self.tasks.len(),
            self.runtime.kind(),
            self.feed.epoch()
        );
    }
}
