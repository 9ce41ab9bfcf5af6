//! The worker's handlers for the messages of [`protocol`](super::protocol).

use actix::prelude::*;
use futures_util::future::Either;
use tokio::sync::oneshot;

use super::exit::short;
use super::feed::Answer;
use super::{
    ForgetTask, GetNodeInfo, GetTask, ListTasks, NodeInfo, PROTOCOL_VERSION, RunTask, StopTask,
    Sync, SyncReply, TaskDetail, TaskLogs, Waiter, Worker, WorkerError, WorkerStats,
};
use crate::metrics::{GetStats, Stats};
use crate::runtime::{ContainerExited, Inspect, ListManaged, Logs, Ping, Remove, Stop, Watch};
use crate::store::Op;
use crate::task::{Task, TaskState};
use crate::telemetry::StopCause;

/// What the worker does with a task it is asked to run.
enum Accept {
    /// It has this task already (same placement, or the request is of an older one).
    Existing(Task),
    /// A new start: the task to write, and the container of an earlier start to remove.
    Start(Task, Option<String>),
}

impl Worker {
    /// Decides what a request to run `task` means here (see [`RunTask`]).
    fn accept(&self, mut task: Task) -> Result<Accept, WorkerError> {
        task.normalize()?;
        let name = &self.config.name;
        let Some(existing) = self.tasks.get(&task.id) else {
            let reason = format!("accepted by worker {name}");
            return Ok(Accept::Start(self.admit(task, reason), None));
        };
        // The store key holds the submit time: the same task keeps the one it has here.
        task.submit_time = existing.submit_time;
        let old = Some(existing.container_id.clone());
        if task.placement > existing.placement {
            let reason = format!("accepted by worker {name} (placement {})", task.placement);
            return Ok(Accept::Start(self.admit(task, reason), old));
        }
        let same = task.placement == existing.placement;
        match existing.state() {
            TaskState::Completed if same => Err(WorkerError::Conflict(format!(
                "task {} is Completed; submit it under a new ID to run it again",
                task.id
            ))),
            // Given directly to this worker (no manager's placement), a Failed task asked to run
            // again runs again; one a manager placed is final (restarts are counted in place).
            TaskState::Failed if same && task.placement == 0 => {
                // Asked to run again: the same task, a new container.
                let restarts = task.restart_count.max(existing.restart_count);
                let mut task = self.admit(task, format!("restarting on worker {name}"));
                task.restart_count = restarts;
                Ok(Accept::Start(task, old))
            }
            _ => Ok(Accept::Existing(
                self.visible(&task.id).unwrap_or(existing).clone(),
            )),
        }
    }

    fn admit(&self, task: Task, reason: String) -> Task {
        let mut task = task.admit(TaskState::Scheduled, reason);
        task.node = Some(self.config.name.clone());
        // Given directly to the worker (the book's way): it arrives now. The submit time orders
        // the task in the store, and never changes after (`accept` keeps the one it has here).
        if task.submit_time.is_none() && !self.tasks.contains_key(&task.id) {
            task.submit_time = Some(chrono::Utc::now());
        }
        task
    }
}

/// Handler for [`RunTask`].
impl Handler<RunTask> for Worker {
    type Result = ResponseActFuture<Self, Result<Task, WorkerError>>;

    fn handle(&mut self, RunTask(task): RunTask, _: &mut Context<Self>) -> Self::Result {
        let runtime = self.runtime.clone();
        // The engine must answer before anything is stored, so that the sender can place the
        // task elsewhere while it does not.
        Box::pin(
            async move { runtime.send(Ping).await? }
                .into_actor(self)
                .then(move |ping, act, _| {
                    match ping
                        .map_err(WorkerError::from)
                        .and_then(|()| act.accept(task))
                    {
                        Ok(Accept::Start(task, old)) => {
                            let id = task.id;
                            let write = act.write(task).map(move |res, act, ctx| {
                                if res.is_ok() {
                                    act.launch(id, old, ctx);
                                }
                                res
                            });
                            Either::Left(write)
                        }
                        Ok(Accept::Existing(task)) => Either::Right(fut::ready(Ok(task))),
                        Err(e) => Either::Right(fut::ready(Err(e))),
                    }
                }),
        )
    }
}

/// Handler for [`StopTask`].
impl Handler<StopTask> for Worker {
    type Result = ResponseActFuture<Self, Result<Task, WorkerError>>;

    fn handle(&mut self, msg: StopTask, _: &mut Context<Self>) -> Self::Result {
        let (id, stale) = (msg.id, msg.stale);
        let Some(task) = self.visible(&id).cloned() else {
            return Box::pin(fut::ready(Err(WorkerError::NotFound(id))));
        };
        let newer = msg.placement.is_some_and(|p| task.placement > p);
        if newer || task.is_finished() {
            return Box::pin(fut::ready(Ok(task)));
        }
        // A Scheduled task has no container yet: the start, when it finishes, sees the task
        // Completed and removes what it created.
        let container = (task.state() != TaskState::Scheduled && !task.container_id.is_empty())
            .then(|| task.container_id.clone());
        let runtime = self.runtime.clone();
        let timeout = self.config.stop_timeout;
        self.stopping.insert(id);
        if container.is_some() {
            self.config.telemetry.stopped(StopCause::Task);
        }
        let stop = async move {
            if let Some(container_id) = container {
                let stop = Stop {
                    container_id,
                    timeout,
                };
                runtime.send(stop).await??;
            }
            Ok::<(), WorkerError>(())
        };
        Box::pin(stop.into_actor(self).then(move |res, act, _| {
            act.stopping.remove(&id);
            let stopped = res.and_then(|()| {
                let mut task = act
                    .tasks
                    .get(&id)
                    .cloned()
                    .ok_or(WorkerError::NotFound(id))?;
                if task.is_finished() {
                    return Ok(None);
                }
                let reason = if stale {
                    log::info!(
                        "task {id}: stopping its stale copy (placement {})",
                        task.placement
                    );
                    format!(
                        "stopped: placement {} is stale, the task was placed again",
                        task.placement
                    )
                } else {
                    "stopped by user".to_string()
                };
                task.transition(TaskState::Completed, reason)?;
                task.host_ports.clear();
                Ok(Some(task))
            });
            match stopped {
                Ok(Some(task)) => Either::Left(act.write(task)),
                Ok(None) => {
                    let task = act.visible(&id).cloned().ok_or(WorkerError::NotFound(id));
                    Either::Right(fut::ready(task))
                }
                Err(e) => Either::Right(fut::ready(Err(e))),
            }
        }))
    }
}

/// Handler for [`ForgetTask`].
impl Handler<ForgetTask> for Worker {
    type Result = ResponseActFuture<Self, Result<(), WorkerError>>;

    fn handle(&mut self, msg: ForgetTask, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        let Some(task) = self.tasks.get(&id).cloned() else {
            return Box::pin(fut::ready(Err(WorkerError::NotFound(id))));
        };
        if msg.placement.is_some_and(|p| task.placement > p) {
            return Box::pin(fut::ready(Ok(())));
        }
        if !task.is_finished() {
            return Box::pin(fut::ready(Err(WorkerError::Conflict(format!(
                "task {id} is {}; only a finished task can be forgotten",
                task.state()
            )))));
        }
        let runtime = self.runtime.clone();
        let containers = [
            task.container_id.clone(),
            task.previous_container_id.clone(),
        ];
        let remove = async move {
            for container_id in containers.into_iter().filter(|c| !c.is_empty()) {
                runtime.send(Remove { container_id }).await??;
            }
            Ok::<(), WorkerError>(())
        };
        Box::pin(remove.into_actor(self).then(move |res, act, _| {
            if let Err(e) = res {
                return Either::Left(fut::ready(Err(e)));
            }
            // Still that finished copy? (A newer placement may have arrived meanwhile.)
            let placement = task.placement;
            let same = act
                .tasks
                .get(&id)
                .is_some_and(|t| t.is_finished() && t.placement == placement);
            if !same {
                return Either::Left(fut::ready(Ok(())));
            }
            let Some(task) = act.tasks.remove(&id) else {
                return Either::Left(fut::ready(Ok(())));
            };
            act.feed.remove(&task);
            // The head goes with the deletion, so revisions never go back after a restart.
            let key = crate::store::Record::key(&task);
            act.unwritten.begin(&id, Some(task));
            let ops = Op::put(&act.feed.head()).map(|head| vec![head, Op::delete::<Task>(key)]);
            let write = ops.map(|ops| act.commit(ops));
            let write = async move { write?.await };
            Either::Right(write.into_actor(act).map(move |res, act, _| {
                act.unwritten.done(&id, None);
                Ok(res?)
            }))
        }))
    }
}

/// Handler for [`ListTasks`].
impl Handler<ListTasks> for Worker {
    type Result = Result<Vec<Task>, WorkerError>;

    fn handle(&mut self, _: ListTasks, _: &mut Context<Self>) -> Self::Result {
        let mut tasks: Vec<Task> = (self.tasks.keys())
            .filter_map(|id| self.visible(id).cloned())
            .collect();
        tasks.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(tasks)
    }
}

/// Handler for [`Sync`].
impl Handler<Sync> for Worker {
    type Result = ResponseFuture<Result<SyncReply, WorkerError>>;

    fn handle(&mut self, msg: Sync, _: &mut Context<Self>) -> Self::Result {
        self.last_sync = Some(std::time::Instant::now());
        let answer = self.feed.answer(msg.cursor);
        let cursor = match (answer, msg.cursor) {
            (Answer::Nothing, Some(cursor)) if !msg.wait.is_zero() => cursor,
            _ => {
                let reply = self.sync_reply(msg.cursor);
                return Box::pin(async move { Ok(reply) });
            }
        };
        let (reply, answered) = oneshot::channel();
        self.waiters.retain(|w| !w.reply.is_closed());
        self.waiters.push(Waiter { cursor, reply });
        let empty = SyncReply {
            protocol: PROTOCOL_VERSION,
            epoch: cursor.epoch,
            revision: cursor.revision,
            full: false,
            tasks: Vec::new(),
        };
        Box::pin(async move {
            match actix::clock::timeout(msg.wait, answered).await {
                Ok(Ok(reply)) => Ok(reply),
                // Nothing changed in time (or the worker is stopping): an empty answer.
                Ok(Err(_)) | Err(_) => Ok(empty),
            }
        })
    }
}

/// Handler for [`WorkerStats`].
impl Handler<WorkerStats> for Worker {
    type Result = ResponseFuture<Result<Stats, WorkerError>>;

    fn handle(&mut self, _: WorkerStats, _: &mut Context<Self>) -> Self::Result {
        // The manager polls metrics every second or so: word from it.
        self.last_sync = Some(std::time::Instant::now());
        self.sample()
    }
}

/// The worker's latest metrics sample, for its own `GET /metrics` (not word from a manager).
#[derive(Message)]
#[rtype(result = "Result<Stats, WorkerError>")]
pub struct Sample;

/// Handler for [`Sample`].
impl Handler<Sample> for Worker {
    type Result = ResponseFuture<Result<Stats, WorkerError>>;

    fn handle(&mut self, _: Sample, _: &mut Context<Self>) -> Self::Result {
        self.sample()
    }
}

impl Worker {
    /// The machine's latest sample, with this worker's task count.
    fn sample(&self) -> ResponseFuture<Result<Stats, WorkerError>> {
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

/// Handler for [`GetNodeInfo`].
impl Handler<GetNodeInfo> for Worker {
    type Result = Result<NodeInfo, WorkerError>;

    fn handle(&mut self, _: GetNodeInfo, _: &mut Context<Self>) -> Self::Result {
        Ok(NodeInfo {
            name: self.config.name.clone(),
            capacity: self.config.capacity,
            runtime: self.runtime.kind().to_string(),
            protocol: PROTOCOL_VERSION,
        })
    }
}

/// Handler for [`GetTask`].
impl Handler<GetTask> for Worker {
    type Result = ResponseFuture<Result<TaskDetail, WorkerError>>;

    fn handle(&mut self, GetTask(id): GetTask, _: &mut Context<Self>) -> Self::Result {
        let Some(task) = self.visible(&id).cloned() else {
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

/// Handler for [`TaskLogs`].
impl Handler<TaskLogs> for Worker {
    type Result = ResponseFuture<Result<String, WorkerError>>;

    fn handle(&mut self, msg: TaskLogs, _: &mut Context<Self>) -> Self::Result {
        let Some(task) = self.visible(&msg.id).cloned() else {
            return Box::pin(async move { Err(WorkerError::NotFound(msg.id)) });
        };
        let runtime = self.runtime.clone();
        let previous = msg.previous;
        Box::pin(async move {
            if previous && task.previous_container_id.is_empty() {
                return Err(WorkerError::Conflict(format!(
                    "task {} has no previous container: it was not restarted on its node",
                    task.id
                )));
            }
            if task.container_id.is_empty() && !previous {
                let hint = if task.previous_container_id.is_empty() {
                    String::new()
                } else {
                    "; `cube logs TASK --previous` (logs?previous=true) shows its last attempt"
                        .into()
                };
                return Err(WorkerError::Conflict(format!(
                    "task {} has no container now (it is {}: {}){hint}",
                    task.id,
                    task.state(),
                    task.reason
                )));
            }
            let container_id = if previous {
                task.previous_container_id.clone()
            } else {
                task.container_id.clone()
            };
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

/// Takes back the running containers labelled for this worker whose task its store does not
/// know (the store was lost: a deleted data dir, `--store memory`), from the task their label
/// holds: the same container keeps running, with its placement and restart count. Answered once
/// the adopted tasks are durable; `Worker::start` waits for it, so a manager never sees the
/// worker without them.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Adopt;

/// Handler for [`Adopt`].
impl Handler<Adopt> for Worker {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Adopt, _: &mut Context<Self>) -> Self::Result {
        let runtime = self.runtime.clone();
        // Only running containers are adopted.
        let listed = async move {
            runtime
                .send(ListManaged {
                    all: false,
                    tasks: true,
                })
                .await
        };
        Box::pin(listed.into_actor(self).then(|listed, act, ctx| {
            let mut written = Vec::new();
            let containers = match listed {
                Ok(Ok(containers)) => containers,
                Ok(Err(e)) | Err(e) => {
                    log::warn!("cannot list this worker's containers to adopt them: {e}");
                    Vec::new()
                }
            };
            for c in containers.into_iter().filter(|c| c.running) {
                let Some(task) = c.task else {
                    continue;
                };
                if act.tasks.contains_key(&task.id) {
                    continue;
                }
                let reason = format!(
                    "container {} adopted: this worker's store did not know it",
                    short(&c.id)
                );
                log::info!("task {} ({}): {reason}", task.id, task.name);
                let (restarts, here) = (task.restart_count, task.restarts_here);
                let placement = task.placement;
                let mut task = act.admit(task, reason.clone());
                task.restart_count = restarts;
                task.restarts_here = here;
                task.placement = placement;
                task.container_id = c.id.clone();
                if task.transition(TaskState::Running, reason).is_err() {
                    continue;
                }
                act.runtime.do_send(Watch {
                    task_id: task.id,
                    container_id: c.id,
                });
                let (done, durable) = oneshot::channel();
                ctx.spawn(act.write(task).map(move |_, _, _| {
                    let _ = done.send(());
                }));
                written.push(durable);
            }
            futures_util::future::join_all(written)
                .into_actor(act)
                .map(|_, _, _| ())
        }))
    }
}
