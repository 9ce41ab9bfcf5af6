//! The worker actor: runs the tasks it is given, keeps track of them, and reports on them.
//!
//! It owns the tasks placed on its node. Every state change goes through `Task::transition` and
//! is written to the worker's store before anyone is told about it. Work is event-driven: a task
//! starts as soon as it is accepted, a stop reaches the runtime at once, and the runtime reports
//! containers that end on their own ([`ContainerExited`]). A periodic reconcile catches whatever
//! an event missed (a watch lost while the engine restarted, a container removed by hand).
//!
//! On start, the worker reloads its tasks from the store: Scheduled tasks are started, Running
//! tasks are looked up in the runtime and either watched again or marked as ended.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;

use crate::metrics::{GetStats, MetricsCollector, Stats};
use crate::runtime::{
    ContainerExited, ContainerInfo, ContainerStatus, DockerRuntime, Inspect, ListManaged, LogQuery,
    Logs, Ping, RuntimeError, RuntimeHandle, SimRuntime, Start, Stop, Watch,
};
use crate::scheduler::Resources;
use crate::store::{List, Put, Store, StoreError};
use crate::task::{InvalidTask, InvalidTransition, Task, TaskId, TaskState};

/// Why a worker refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// No task with this id on this worker.
    #[error("task {0} is not on this worker")]
    NotFound(TaskId),
    /// The task's fields are wrong.
    #[error(transparent)]
    Invalid(#[from] InvalidTask),
    /// The request does not fit the task's state.
    #[error("{0}")]
    Conflict(String),
    /// The state machine refused a change.
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    /// The container runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The worker actor is not running.
    #[error("the worker is shut down")]
    Closed,
    /// A remote worker did not answer.
    #[error("{0}")]
    Unreachable(String),
    /// A remote worker answered with an error status.
    #[error("{message}")]
    Rejected {
        /// The HTTP status it answered.
        status: u16,
        /// Its message.
        message: String,
    },
}

impl From<MailboxError> for WorkerError {
    fn from(_: MailboxError) -> Self {
        WorkerError::Closed
    }
}

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
    },
}

/// How a worker behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The worker's name, unique in the cluster; also the `cube.worker` label of its containers.
    pub name: String,
    /// How long a container gets to exit after SIGTERM before it is killed.
    pub stop_timeout: Duration,
    /// How often the worker compares its tasks with the runtime.
    pub reconcile_interval: Duration,
    /// What the worker offers to tasks (the scheduler's capacity for this node).
    pub capacity: Resources,
}

/// What a worker says about itself when a manager connects.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInfo {
    /// The worker's name.
    pub name: String,
    /// What it offers to tasks.
    pub capacity: Resources,
    /// `docker` or `sim`.
    pub runtime: String,
}

/// A task together with what its container is doing now.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskDetail {
    /// The task.
    pub task: Task,
    /// Its container, as the runtime sees it now (None if it never had one).
    pub container: Option<ContainerInfo>,
}

/// The worker actor.
pub struct Worker {
    /// Settings.
    config: WorkerConfig,
    /// Where every task and every change to it is written first.
    store: Addr<Store>,
    /// Docker or simulated.
    runtime: RuntimeHandle,
    /// Samples the machine for `GET /stats` (the worker adds its task count).
    metrics: Option<Addr<MetricsCollector>>,
    /// Every task of this worker, as last written to the store.
    tasks: HashMap<TaskId, Task>,
    /// Exits reported before the start that created the container was recorded.
    early_exits: HashMap<TaskId, ContainerExited>,
    /// Tasks whose stop is under way: their container's exit is the stop, not an event.
    stopping: HashSet<TaskId>,
}

impl Worker {
    /// Loads the worker's tasks from `store`, then starts the worker and its runtime.
    pub async fn start(
        config: WorkerConfig,
        store: Addr<Store>,
        runtime: RuntimeKind,
        metrics: Option<Addr<MetricsCollector>>,
    ) -> Result<Addr<Worker>, WorkerError> {
        let tasks = store.send(List::<Task>::all()).await??;
        let tasks = tasks.into_iter().map(|t| (t.id, t)).collect();
        Ok(Worker::create(move |ctx| {
            let exits = ctx.address().recipient();
            let runtime = match runtime {
                RuntimeKind::Docker { publish_ip } => RuntimeHandle::Docker(
                    DockerRuntime::new(config.name.clone(), publish_ip, exits).start(),
                ),
                RuntimeKind::Sim { known_images } => RuntimeHandle::Sim(
                    SimRuntime::new(exits, known_images.map(|i| i.into_iter().collect())).start(),
                ),
            };
            Worker {
                config,
                store,
                runtime,
                metrics,
                tasks,
                early_exits: HashMap::new(),
                stopping: HashSet::new(),
            }
        }))
    }

    /// Writes `task` to the store; resolves once it is durable.
    fn persist(&self, task: Task) -> impl Future<Output = Result<Task, WorkerError>> + use<> {
        let store = self.store.clone();
        async move {
            store.send(Put(task.clone())).await??;
            Ok(task)
        }
    }

    /// Records `task` as the current copy and writes it in the background (used for changes
    /// nobody waits on: a start finishing, a container exiting).
    fn record(&mut self, task: Task, ctx: &mut Context<Self>) {
        let id = task.id;
        self.tasks.insert(id, task.clone());
        ctx.spawn(self.persist(task).into_actor(self).map(move |res, _, _| {
            if let Err(e) = res {
                log::error!("task {id}: cannot record its new state: {e}");
            }
        }));
    }

    fn active_count(&self) -> usize {
        self.tasks.values().filter(|t| t.state.is_active()).count()
    }

    /// Starts the container of a Scheduled task (replacing its old container, if any).
    fn launch(&mut self, id: TaskId, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get(&id).cloned() else {
            return;
        };
        let runtime = self.runtime.clone();
        let timeout = self.config.stop_timeout;
        let fut = async move {
            if !task.container_id.is_empty() {
                let old = task.container_id.clone();
                runtime
                    .send(Stop {
                        container_id: old,
                        timeout,
                    })
                    .await??;
            }
            runtime.send(Start { task }).await?
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
        let Some(mut task) = self.tasks.get(&id).cloned() else {
            return;
        };
        if task.state != TaskState::Scheduled {
            // Stopped while it was starting: the new container must not outlive the request.
            if let Ok(info) = result {
                let timeout = self.config.stop_timeout;
                self.runtime.do_send(Stop {
                    container_id: info.id,
                    timeout,
                });
            }
            return;
        }
        let outcome = match result {
            Ok(info) => {
                task.container_id = info.id.clone();
                task.host_ports = info.host_ports;
                let r = task.transition(
                    TaskState::Running,
                    format!("container {} started", short(&info.id)),
                );
                task.start_time = info.started_at.or(task.start_time);
                r
            }
            Err(e) => {
                log::warn!("task {id} ({}): {e}", task.name);
                task.transition(TaskState::Failed, format!("container could not start: {e}"))
            }
        };
        if let Err(e) = outcome {
            log::error!("{e}");
            return;
        }
        self.record(task, ctx);
        if let Some(exit) = self.early_exits.remove(&id) {
            self.container_ended(exit, ctx);
        }
    }

    /// Applies the end of a container to its task, if it is the task's current container.
    fn container_ended(&mut self, exit: ContainerExited, ctx: &mut Context<Self>) {
        let Some(task) = self.tasks.get(&exit.task_id) else {
            return;
        };
        if task.state == TaskState::Scheduled && task.container_id.is_empty() {
            self.early_exits.insert(exit.task_id, exit);
            return;
        }
        if task.state != TaskState::Running
            || task.container_id != exit.container_id
            || self.stopping.contains(&exit.task_id)
        {
            return;
        }
        let mut task = task.clone();
        let (next, reason, code) = match &exit.status {
            ContainerStatus::Missing => (
                TaskState::Failed,
                format!("container {} vanished", short(&exit.container_id)),
                None,
            ),
            status => match status.exit_reason() {
                Some((code, failed, reason)) => (
                    if failed {
                        TaskState::Failed
                    } else {
                        TaskState::Completed
                    },
                    reason,
                    Some(code),
                ),
                None => return,
            },
        };
        log::info!("task {} ({}): {reason}", task.id, task.name);
        if task.transition(next, reason).is_ok() {
            task.exit_code = code;
            self.record(task, ctx);
        }
    }

    /// Compares Running tasks with the runtime and applies what changed.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let running: Vec<(TaskId, String)> = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Running)
            .map(|t| (t.id, t.container_id.clone()))
            .collect();
        let completed: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Completed)
            .map(|t| t.id)
            .collect();
        let runtime = self.runtime.clone();
        let timeout = self.config.stop_timeout;
        let fut = async move {
            let mut seen = Vec::new();
            for (task_id, container_id) in running {
                match runtime
                    .send(Inspect {
                        container_id: container_id.clone(),
                    })
                    .await
                {
                    Ok(Ok(info)) => seen.push((task_id, info)),
                    Ok(Err(e)) | Err(e) => {
                        log::warn!("reconcile: cannot inspect container {container_id}: {e}");
                        return seen;
                    }
                }
            }
            // Containers of tasks already Completed (a stop that failed half-way) are removed.
            if let Ok(Ok(managed)) = runtime.send(ListManaged).await {
                for c in managed {
                    if c.task_id.is_some_and(|id| completed.contains(&id)) {
                        log::info!(
                            "reconcile: removing leftover container {} of a completed task",
                            short(&c.id)
                        );
                        let _ = runtime
                            .send(Stop {
                                container_id: c.id,
                                timeout,
                            })
                            .await;
                    }
                }
            }
            seen
        };
        ctx.spawn(fut.into_actor(self).map(|seen, act, ctx| {
            for (task_id, info) in seen {
                match info.status {
                    ContainerStatus::Running | ContainerStatus::Waiting { .. } => {
                        if let Some(task) = act.tasks.get(&task_id)
                            && task.container_id == info.id
                            && !info.host_ports.is_empty()
                            && task.host_ports != info.host_ports
                        {
                            let mut task = task.clone();
                            task.host_ports = info.host_ports;
                            act.record(task, ctx);
                        }
                    }
                    status => act.container_ended(
                        ContainerExited {
                            task_id,
                            container_id: info.id,
                            status,
                        },
                        ctx,
                    ),
                }
            }
        }));
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        let mut resume = Vec::new();
        for task in self.tasks.values() {
            match task.state {
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
            self.launch(id, ctx);
        }
        self.reconcile(ctx);
        ctx.run_interval(self.config.reconcile_interval, |act, ctx| {
            act.reconcile(ctx)
        });
        log::info!(
            "worker {} started with {} tasks on the {} runtime",
            self.config.name,
            self.tasks.len(),
            self.runtime.kind()
        );
    }
}

/// Runs a task on this worker. Answered once the task is stored as Scheduled; the container
/// starts right after. Submitting a task the worker already runs returns it unchanged. While the
/// container engine does not answer, new tasks are refused (and nothing is stored), so that the
/// sender can place them elsewhere.
#[derive(Message)]
#[rtype(result = "Result<Task, WorkerError>")]
pub struct RunTask(pub Task);

/// Handler for [`RunTask`].
impl Handler<RunTask> for Worker {
    type Result = ResponseActFuture<Self, Result<Task, WorkerError>>;

    fn handle(&mut self, RunTask(mut task): RunTask, _: &mut Context<Self>) -> Self::Result {
        let id = task.id;
        let accepted = (|| {
            task.normalize()?;
            match self.tasks.get(&task.id) {
                Some(existing) if existing.state.is_active() => return Ok(None),
                Some(existing) if existing.state == TaskState::Completed => {
                    return Err(WorkerError::Conflict(format!(
                        "task {} is Completed; submit it under a new ID to run it again",
                        task.id
                    )));
                }
                Some(existing) => {
                    // A Failed task asked to run again: same task, new container.
                    task.state = existing.state;
                    task.container_id = existing.container_id.clone();
                    task.restart_count = task.restart_count.max(existing.restart_count);
                    task.transition(
                        TaskState::Scheduled,
                        format!("restarting on worker {}", self.config.name),
                    )?;
                }
                None => {
                    task.state = TaskState::Pending;
                    task.container_id.clear();
                    task.host_ports.clear();
                    task.exit_code = None;
                    task.transition(
                        TaskState::Scheduled,
                        format!("accepted by worker {}", self.config.name),
                    )?;
                }
            }
            task.node = Some(self.config.name.clone());
            Ok(Some(task))
        })();
        let task = match accepted {
            Ok(Some(task)) => task,
            Ok(None) => {
                let existing = self.tasks.get(&id).cloned();
                return Box::pin(fut::ready(existing.ok_or(WorkerError::NotFound(id))));
            }
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let previous = self.tasks.insert(id, task.clone());
        let runtime = self.runtime.clone();
        let persist = self.persist(task);
        let accept = async move {
            runtime.send(Ping).await??;
            persist.await
        };
        Box::pin(accept.into_actor(self).map(move |res, act, ctx| {
            match &res {
                Ok(_) => {
                    act.launch(id, ctx);
                }
                Err(_) => match previous {
                    Some(p) => {
                        act.tasks.insert(id, p);
                    }
                    None => {
                        act.tasks.remove(&id);
                    }
                },
            }
            res
        }))
    }
}

/// Stops a task: its container gets SIGTERM, is killed after the stop timeout, and is removed;
/// the task ends Completed. Stopping a Completed task again returns it unchanged.
#[derive(Message)]
#[rtype(result = "Result<Task, WorkerError>")]
pub struct StopTask(pub TaskId);

/// Handler for [`StopTask`].
impl Handler<StopTask> for Worker {
    type Result = ResponseActFuture<Self, Result<Task, WorkerError>>;

    fn handle(&mut self, StopTask(id): StopTask, _: &mut Context<Self>) -> Self::Result {
        let Some(task) = self.tasks.get(&id).cloned() else {
            return Box::pin(fut::ready(Err(WorkerError::NotFound(id))));
        };
        if task.state == TaskState::Completed {
            return Box::pin(fut::ready(Ok(task)));
        }
        // A Scheduled task has no container yet: the start, when it finishes, sees the task
        // Completed and removes what it created.
        let container = (task.state != TaskState::Scheduled && !task.container_id.is_empty())
            .then(|| task.container_id.clone());
        let runtime = self.runtime.clone();
        let timeout = self.config.stop_timeout;
        self.stopping.insert(id);
        let stop = async move {
            if let Some(container_id) = container {
                runtime
                    .send(Stop {
                        container_id,
                        timeout,
                    })
                    .await??;
            }
            Ok::<(), WorkerError>(())
        };
        Box::pin(stop.into_actor(self).then(move |res, act, _| {
            act.stopping.remove(&id);
            let result = res.and_then(|()| {
                let mut task = act
                    .tasks
                    .get(&id)
                    .cloned()
                    .ok_or(WorkerError::NotFound(id))?;
                if task.state != TaskState::Completed {
                    task.transition(TaskState::Completed, "stopped by user")?;
                }
                act.tasks.insert(id, task.clone());
                Ok(act.persist(task))
            });
            async move {
                match result {
                    Ok(persist) => persist.await,
                    Err(e) => Err(e),
                }
            }
            .into_actor(act)
        }))
    }
}

/// Every task of this worker.
#[derive(Message)]
#[rtype(result = "Result<Vec<Task>, WorkerError>")]
pub struct ListTasks;

/// Handler for [`ListTasks`].
impl Handler<ListTasks> for Worker {
    type Result = Result<Vec<Task>, WorkerError>;

    fn handle(&mut self, _: ListTasks, _: &mut Context<Self>) -> Self::Result {
        let mut tasks: Vec<Task> = self.tasks.values().cloned().collect();
        tasks.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(tasks)
    }
}

/// The worker's latest metrics sample.
#[derive(Message)]
#[rtype(result = "Result<Stats, WorkerError>")]
pub struct WorkerStats;

/// Handler for [`WorkerStats`].
impl Handler<WorkerStats> for Worker {
    type Result = ResponseFuture<Result<Stats, WorkerError>>;

    fn handle(&mut self, _: WorkerStats, _: &mut Context<Self>) -> Self::Result {
        let metrics = self.metrics.clone();
        // The task count is this worker's own (simulated nodes may share one collector).
        let active = self.active_count();
        Box::pin(async move {
            match metrics {
                Some(metrics) => {
                    let mut stats = metrics.send(GetStats).await?;
                    stats.task_count = active;
                    Ok(stats)
                }
                None => Err(WorkerError::Conflict(
                    "this worker collects no metrics".into(),
                )),
            }
        })
    }
}

/// The worker's name, capacity and runtime.
#[derive(Message)]
#[rtype(result = "Result<NodeInfo, WorkerError>")]
pub struct GetNodeInfo;

/// Handler for [`GetNodeInfo`].
impl Handler<GetNodeInfo> for Worker {
    type Result = Result<NodeInfo, WorkerError>;

    fn handle(&mut self, _: GetNodeInfo, _: &mut Context<Self>) -> Self::Result {
        Ok(NodeInfo {
            name: self.config.name.clone(),
            capacity: self.config.capacity,
            runtime: self.runtime.kind().to_string(),
        })
    }
}

/// One task and the live state of its container.
#[derive(Message)]
#[rtype(result = "Result<TaskDetail, WorkerError>")]
pub struct GetTask(pub TaskId);

/// Handler for [`GetTask`].
impl Handler<GetTask> for Worker {
    type Result = ResponseFuture<Result<TaskDetail, WorkerError>>;

    fn handle(&mut self, GetTask(id): GetTask, _: &mut Context<Self>) -> Self::Result {
        let Some(task) = self.tasks.get(&id).cloned() else {
            return Box::pin(async move { Err(WorkerError::NotFound(id)) });
        };
        let runtime = self.runtime.clone();
        Box::pin(async move {
            let container = if task.container_id.is_empty() {
                None
            } else {
                let container_id = task.container_id.clone();
                Some(runtime.send(Inspect { container_id }).await??)
            };
            Ok(TaskDetail { task, container })
        })
    }
}

/// The last lines a task's container wrote.
#[derive(Message)]
#[rtype(result = "Result<String, WorkerError>")]
pub struct TaskLogs {
    /// The task.
    pub id: TaskId,
    /// Which lines.
    pub query: LogQuery,
}

/// Handler for [`TaskLogs`].
impl Handler<TaskLogs> for Worker {
    type Result = ResponseFuture<Result<String, WorkerError>>;

    fn handle(&mut self, msg: TaskLogs, _: &mut Context<Self>) -> Self::Result {
        let Some(task) = self.tasks.get(&msg.id).cloned() else {
            return Box::pin(async move { Err(WorkerError::NotFound(msg.id)) });
        };
        let runtime = self.runtime.clone();
        Box::pin(async move {
            if task.container_id.is_empty() {
                return Err(WorkerError::Conflict(format!(
                    "task {} has no container yet (it is {})",
                    task.id, task.state
                )));
            }
            let container_id = task.container_id.clone();
            Ok(runtime
                .send(Logs {
                    container_id,
                    query: msg.query,
                })
                .await??)
        })
    }
}

/// Handler for [`ContainerExited`], sent by the runtime.
impl Handler<ContainerExited> for Worker {
    type Result = ();

    fn handle(&mut self, msg: ContainerExited, ctx: &mut Context<Self>) {
        self.container_ended(msg, ctx);
    }
}
