//! The worker protocol: the messages a manager (or the worker's HTTP API) sends a worker, their
//! answers and errors. A local worker takes them as actor messages; a remote one as HTTP calls
//! (`remote_worker`), with the same answers and the same error variants.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::feed::Cursor;
use crate::metrics::Stats;
use crate::resources::Resources;
use crate::runtime::{ContainerInfo, LogQuery, RuntimeError};
use crate::store::StoreError;
use crate::task::{InvalidTask, InvalidTransition, Task, TaskId};

/// The version of this protocol. A manager refuses, at join, a worker that speaks another.
///
/// - 1: the book's routes, polled in full.
/// - 2: placements, the change feed (`Sync`), and `ForgetTask`.
pub const PROTOCOL_VERSION: u32 = 2;

/// Why a worker refused or failed a request. A remote worker's answers are mapped back to these
/// same variants, so the manager handles a local and a remote refusal alike.
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
    /// A remote worker did not answer, or answered something that is not the protocol.
    #[error("{0}")]
    Unreachable(String),
}

impl From<MailboxError> for WorkerError {
    fn from(_: MailboxError) -> Self {
        WorkerError::Closed
    }
}

/// What a worker says about itself when a manager connects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInfo {
    /// The worker's name.
    pub name: String,
    /// What it offers to tasks.
    pub capacity: Resources,
    /// `docker` or `sim`.
    pub runtime: String,
    /// The worker protocol it speaks ([`PROTOCOL_VERSION`]); 1 for a worker that does not say.
    #[serde(default = "protocol_v1")]
    pub protocol: u32,
}

fn protocol_v1() -> u32 {
    1
}

/// A task together with what its container is doing now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskDetail {
    /// The task.
    pub task: Task,
    /// Its container, as the runtime sees it now (None if it never had one).
    pub container: Option<ContainerInfo>,
}

/// Runs a task on this worker. Answered once the task is stored as Scheduled; the container
/// starts right after. Submitting a task the worker already runs, of the same placement, returns
/// it unchanged; a newer placement replaces the old copy. While the container engine does not
/// answer, new tasks are refused (and nothing is stored), so that the sender can place them
/// elsewhere.
#[derive(Message)]
#[rtype(result = "Result<Task, WorkerError>")]
pub struct RunTask(pub Task);

/// Stops a task: its container gets SIGTERM, is killed after the stop timeout, and is removed;
/// the task ends Completed (a Failed task stays Failed). Stopping a finished task returns it
/// unchanged.
#[derive(Message)]
#[rtype(result = "Result<Task, WorkerError>")]
pub struct StopTask {
    /// The task.
    pub id: TaskId,
    /// Stop only a copy of this placement or older (a manager stopping a stale copy must not
    /// stop a newer one); `None` stops whatever the worker has.
    pub placement: Option<u64>,
    /// The copy is stale (the task was placed again, elsewhere or later), not stopped by a user.
    pub stale: bool,
}

impl StopTask {
    /// A user's stop of task `id`, whatever its placement.
    pub fn any(id: TaskId) -> StopTask {
        StopTask {
            id,
            placement: None,
            stale: false,
        }
    }
}

/// Forgets a finished task: its container (and so its logs) is removed, and the task is deleted
/// from the worker's store. Sent by the manager when it prunes the task. A task that is not
/// finished is refused (Conflict); an unknown one is `NotFound`.
#[derive(Message)]
#[rtype(result = "Result<(), WorkerError>")]
pub struct ForgetTask {
    /// The task.
    pub id: TaskId,
    /// Forget only a copy of this placement or older; `None` forgets whatever the worker has.
    pub placement: Option<u64>,
}

/// Every task of this worker, as last written.
#[derive(Message)]
#[rtype(result = "Result<Vec<Task>, WorkerError>")]
pub struct ListTasks;

/// The task changes after a cursor, as a long poll: answered at once when there are some (or when
/// the cursor is of another epoch: then with every task, `Full`), else as soon as one is durable,
/// else after `wait` with none.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<SyncReply, WorkerError>")]
pub struct Sync {
    /// What the caller has applied; `None` asks for everything.
    pub cursor: Option<Cursor>,
    /// How long to wait for a change.
    pub wait: Duration,
}

/// The answer to [`Sync`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SyncReply {
    /// The protocol the worker speaks.
    pub protocol: u32,
    /// The worker store's epoch.
    pub epoch: Uuid,
    /// The revision this reply brings the caller to.
    pub revision: u64,
    /// Whether `tasks` is every task of the worker (a resync) rather than the changes.
    pub full: bool,
    /// The tasks that changed (or all of them), as they are now.
    pub tasks: Vec<Task>,
}

impl SyncReply {
    /// The cursor after applying this reply.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            revision: self.revision,
        }
    }
}

/// The worker's latest metrics sample.
#[derive(Message)]
#[rtype(result = "Result<Stats, WorkerError>")]
pub struct WorkerStats;

/// The worker's name, capacity, runtime and protocol.
#[derive(Message)]
#[rtype(result = "Result<NodeInfo, WorkerError>")]
pub struct GetNodeInfo;

/// One task and the live state of its container.
#[derive(Message)]
#[rtype(result = "Result<TaskDetail, WorkerError>")]
pub struct GetTask(pub TaskId);

/// The last lines a task's container wrote.
#[derive(Message)]
#[rtype(result = "Result<String, WorkerError>")]
pub struct TaskLogs {
    /// The task.
    pub id: TaskId,
    /// Which lines.
    pub query: LogQuery,
    /// Those of the previous attempt's container (the one before the last restart in place).
    pub previous: bool,
}
