//! The manager's messages (what the HTTP API asks) and their handlers.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use futures_util::future::Either;
use futures_util::future::join_all;
use tokio::sync::broadcast;

use super::book::{BookError, TaskFilter, TaskPage};
use super::events::{Since, Subscription};
use super::reply::Reply;
use super::{Manager, ManagerError};
use crate::node::{LOCAL_ADDRESS, Node, NodeReport};
use crate::remote_worker::WorkerHandle;
use crate::resources::Resources;
use crate::runtime::LogQuery;
use crate::scheduler::actor::{Release, Snapshot};
use crate::task::{Desired, StoredEvent, Task, TaskEvent, TaskId};
use crate::telemetry::Submission;
use crate::worker::{StopTask, TaskLogs, Worker, WorkerError};

/// Accepts a task event: run a new task (stored Pending before the answer, then placed at once)
/// or stop one (`State: Completed`).
#[derive(Message)]
#[rtype(result = "Result<Task, ManagerError>")]
pub struct Submit(pub TaskEvent);

/// Handler for [`Submit`].
impl Handler<Submit> for Manager {
    /// Answered from wherever the answer is known: a new task's 201 from the store's writer
    /// thread as soon as its commit is done (see [`Reply`]).
    type Result = Reply<Result<Task, ManagerError>>;

    fn handle(&mut self, Submit(event): Submit, ctx: &mut Context<Self>) -> Self::Result {
        let reply = Reply::new();
        let desired = match event.desired() {
            Ok(d) => d,
            Err(e) => {
                reply.tell(Err(e.into()));
                return reply;
            }
        };
        if desired == Desired::Stop {
            let answer = reply.clone();
            ctx.spawn(
                self.stop(event.task.id)
                    .map(move |res, _, _| answer.tell(res)),
            );
        } else {
            let began = std::time::Instant::now();
            let telemetry = self.config.telemetry.clone();
            let answer = reply.clone();
            self.admit(event, ctx, move |res| {
                let outcome = match &res {
                    Ok(_) => Submission::Accepted,
                    Err(ManagerError::Busy(_)) => Submission::Busy,
                    Err(ManagerError::Store(_) | ManagerError::Closed) => Submission::Failed,
                    Err(_) => Submission::Invalid,
                };
                telemetry.submitted(outcome, began.elapsed().as_secs_f64());
                answer.tell(res);
            });
        }
        self.breathe(ctx);
        reply
    }
}

impl Manager {
    /// Admits the task of a submission: stored Pending, then placed; `answer` gets the task as
    /// stored, or why not (once, from whichever thread knows first).
    fn admit(
        &mut self,
        event: TaskEvent,
        ctx: &mut Context<Self>,
        answer: impl Fn(Result<Task, ManagerError>) + Clone + Send + 'static,
    ) {
        // The envelope is stored beside the task as admitted (see `commit_admission`).
        let TaskEvent {
            id: event_id,
            state,
            timestamp,
            mut task,
        } = event;
        if let Err(e) = task.normalize() {
            return answer(Err(e.into()));
        }
        if !self.config.allow_privileged_ports
            && let Some(port) = crate::scheduler::fixed_host_ports(&task)
                .into_iter()
                .find(|p| *p < 1024)
        {
            return answer(Err(ManagerError::Invalid(crate::task::InvalidTask {
                field: "PortBindings".into(),
                reason: format!(
                    "host port {port} is below 1024, which this cluster does not allow (manager setting allow_privileged_ports)"
                ),
            })));
        }
        let waiting = self.count_waiting();
        if waiting >= self.config.max_waiting {
            return answer(Err(ManagerError::Busy(format!(
                "{waiting} tasks are waiting to start (the most is {}); retry in a second",
                self.config.max_waiting
            ))));
        }
        let change = match self.book.admit(task, Utc::now()) {
            Ok(change) => change,
            // The same submission again: the task as it is.
            Err(BookError::Exists(task)) => return answer(Ok(*task)),
            Err(e) => return answer(Err(e.into())),
        };
        let id = change.task;
        let envelope = |task: &Task| StoredEvent::of(event_id, state, timestamp, task);
        self.commit_admission(envelope, change, ctx, answer, move |act, ctx| {
            act.place(id, ctx)
        });
    }
}

impl Manager {
    /// Stops a task, on its node if it has one. Stopping a finished task returns it unchanged.
    fn stop(&mut self, id: TaskId) -> ResponseActFuture<Self, Result<Task, ManagerError>> {
        let Some(task) = self.book.working(&id).cloned() else {
            return Box::pin(fut::ready(Err(ManagerError::NotFound(id))));
        };
        if task.is_finished() {
            let visible = self
                .book
                .get(&id)
                .cloned()
                .ok_or(ManagerError::NotFound(id));
            return Box::pin(fut::ready(visible));
        }
        self.book.clear_backoff(&id);
        let node = task.node.clone();
        let handle = node.as_ref().and_then(|n| self.handles.get(n)).cloned();
        let stop = StopTask {
            id,
            placement: Some(task.placement),
            stale: false,
        };
        let remote_stop = async move {
            match (task.state().is_active(), handle) {
                (true, Some(handle)) => match handle.send(stop).await {
                    Ok(reported) => Ok(Some(reported)),
                    // The node never got it (or forgot it): nothing runs there.
                    Err(WorkerError::NotFound(_)) => Ok(None),
                    Err(error) => Err(ManagerError::Worker {
                        node: node.unwrap_or_default(),
                        error,
                    }),
                },
                _ => Ok(None),
            }
        };
        Box::pin(remote_stop.into_actor(self).then(move |res, act, ctx| {
            let change = res.and_then(|reported| Ok(act.book.stopped(id, reported.as_ref())?));
            match change {
                Ok(change) => {
                    act.scheduler.do_send(Release(id));
                    // What it held (capacity, host ports) may let a waiting task run.
                    act.place_pending(ctx);
                    let task = change.after.clone().expect("a stop keeps the task");
                    log::info!("task {id} ({}) stopped by user", task.name);
                    Either::Left(
                        act.commit(change, ctx)
                            .map(move |res, _, _| res.map(|()| task)),
                    )
                }
                Err(e) => Either::Right(fut::ready(Err(e))),
            }
        }))
    }
}

/// Stops a task. Stopping a finished task returns it unchanged.
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

/// Removes a finished task, with its events, here and on its node (`DELETE /tasks/{id}?purge`).
#[derive(Message)]
#[rtype(result = "Result<Task, ManagerError>")]
pub struct Purge(pub TaskId);

/// Handler for [`Purge`].
impl Handler<Purge> for Manager {
    type Result = ResponseFuture<Result<Task, ManagerError>>;

    fn handle(&mut self, Purge(id): Purge, ctx: &mut Context<Self>) -> Self::Result {
        let purged = self.purge(id, ctx);
        Box::pin(async move {
            let (task, written) = purged?;
            if written.await != Ok(true) {
                return Err(ManagerError::Conflict(format!(
                    "task {id} could not be removed"
                )));
            }
            log::info!("task {id} ({}) removed", task.name);
            Ok(task)
        })
    }
}

/// Removes every finished task now, whatever the retention; answers how many.
#[derive(Message)]
#[rtype(result = "Result<usize, ManagerError>")]
pub struct Prune;

/// Handler for [`Prune`].
impl Handler<Prune> for Manager {
    type Result = ResponseFuture<Result<usize, ManagerError>>;

    fn handle(&mut self, _: Prune, ctx: &mut Context<Self>) -> Self::Result {
        let writes: Vec<_> = (self.book.finished_ids())
            .into_iter()
            .filter_map(|id| self.purge(id, ctx).ok().map(|(_, written)| written))
            .collect();
        Box::pin(async move {
            let done = join_all(writes).await;
            let removed = done.into_iter().filter(|r| *r == Ok(true)).count();
            log::info!("pruned {removed} finished tasks on request");
            Ok(removed)
        })
    }
}

/// A page of tasks, filtered, in arrival order.
#[derive(Message)]
#[rtype(result = "Result<TaskPage, ManagerError>")]
pub struct ListTasks(pub TaskFilter);

/// Handler for [`ListTasks`].
impl Handler<ListTasks> for Manager {
    type Result = Result<TaskPage, ManagerError>;

    fn handle(&mut self, ListTasks(filter): ListTasks, _: &mut Context<Self>) -> Self::Result {
        self.book.query(&filter).map_err(|reason| {
            ManagerError::Invalid(crate::task::InvalidTask {
                field: "after".into(),
                reason,
            })
        })
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
        self.book
            .get(&id)
            .cloned()
            .ok_or(ManagerError::NotFound(id))
    }
}

/// A task's last state changes (since the manager started), oldest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<super::Transition>, ManagerError>")]
pub struct History(pub TaskId);

/// Handler for [`History`].
impl Handler<History> for Manager {
    type Result = Result<Vec<super::Transition>, ManagerError>;

    fn handle(&mut self, History(id): History, _: &mut Context<Self>) -> Self::Result {
        if self.book.get(&id).is_none() {
            return Err(ManagerError::NotFound(id));
        }
        Ok(self.book.history(&id))
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
    /// Those of the previous attempt's container.
    pub previous: bool,
}

/// Handler for [`Logs`].
impl Handler<Logs> for Manager {
    type Result = ResponseFuture<Result<String, ManagerError>>;

    fn handle(&mut self, msg: Logs, _: &mut Context<Self>) -> Self::Result {
        let Some(task) = self.book.get(&msg.id) else {
            return Box::pin(async move { Err(ManagerError::NotFound(msg.id)) });
        };
        let Some(node) = task.node.clone() else {
            let state = task.state();
            return Box::pin(async move {
                Err(ManagerError::Conflict(format!(
                    "task {} has not run on any node yet (it is {state})",
                    msg.id
                )))
            });
        };
        let Some(handle) = self.handles.get(&node).cloned() else {
            return Box::pin(async move { Err(ManagerError::NodeNotFound(node)) });
        };
        Box::pin(async move {
            let logs = TaskLogs {
                id: msg.id,
                query: msg.query,
                previous: msg.previous,
            };
            handle
                .send(logs)
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
        self.node_reports()
    }
}

impl Manager {
    /// Every node as `GET /nodes` shows it (with the scheduler's reservations).
    pub(super) fn node_reports(&mut self) -> ResponseActFuture<Self, Vec<NodeReport>> {
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
                        .entries()
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

/// Sets the manager's gauges (tasks by state, nodes, their resources) to what it holds now,
/// before `GET /metrics` encodes them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Observe;

/// Handler for [`Observe`].
impl Handler<Observe> for Manager {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Observe, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.node_reports().map(|nodes, act, _| {
            let telemetry = &act.config.telemetry;
            telemetry.observe(|state| act.book.count_in(state), &nodes);
            telemetry.subscribers(act.events.subscribers());
        }))
    }
}

/// Follows the event log from `since` (see [`super::events`]); with `nodes`, also every node's
/// report every [`LOAD_INTERVAL`] (not events: not numbered, not kept).
#[derive(Message)]
#[rtype(
    result = "Result<(Subscription, Option<broadcast::Receiver<Arc<Vec<NodeReport>>>>), ManagerError>"
)]
pub struct Subscribe {
    /// Where to start.
    pub since: Since,
    /// Whether to get the nodes' reports too.
    pub nodes: bool,
}

/// How often subscribers that asked for them get every node's report.
pub const LOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Handler for [`Subscribe`].
impl Handler<Subscribe> for Manager {
    type Result = Result<
        (
            Subscription,
            Option<broadcast::Receiver<Arc<Vec<NodeReport>>>>,
        ),
        ManagerError,
    >;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let subscription = self.events.subscribe(&msg.since);
        let loads = msg.nodes.then(|| self.loads.subscribe());
        Ok((subscription, loads))
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

/// Stops the manager: a graceful shutdown's step after its HTTP server stopped and before the
/// nodes of its process stop (it would report them unreachable as they go). Writes already
/// sent to the store still complete.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Handler for [`Shutdown`].
impl Handler<Shutdown> for Manager {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        // What is queued goes to the store before the manager stops.
        self.flush(ctx);
        ctx.stop();
    }
}
