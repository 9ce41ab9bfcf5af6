//! What is asked of a task ([`TaskEvent`], the book's request shape, and [`Desired`], what it
//! means), and the envelope of a submission as the manager stores it ([`StoredEvent`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{InvalidTask, Task, TaskId, TaskState};

/// A request about a task: run it (`State` Pending, Scheduled or Running) or stop it (`Completed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TaskEvent {
    /// The event's identity. A request without one gets a fresh one.
    #[serde(rename = "ID", default = "Uuid::new_v4")]
    pub id: Uuid,
    /// The state the sender wants the task in.
    #[serde(default = "running")]
    pub state: TaskState,
    /// When the event was made. A request without one gets the time it arrived.
    #[serde(default = "Utc::now")]
    pub timestamp: DateTime<Utc>,
    /// The task concerned.
    pub task: Task,
}

/// A submission as the manager stores it (the book's `EventDb`): the envelope of a
/// [`TaskEvent`], its task named rather than copied. The task is stored under its own key and its
/// specification never changes, so a second copy of it per submission (the larger half of the
/// store's bytes) told nothing. A record written with the whole task inside reads as this too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StoredEvent {
    /// The event's identity.
    #[serde(rename = "ID")]
    pub id: Uuid,
    /// The state the sender asked for.
    pub state: TaskState,
    /// When the event was made.
    pub timestamp: DateTime<Utc>,
    /// The task concerned.
    pub task: TaskRef,
}

/// A task named by what makes its store key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskRef {
    /// The task's ID.
    #[serde(rename = "ID")]
    pub id: TaskId,
    /// When it was admitted.
    pub submit_time: Option<DateTime<Utc>>,
}

impl StoredEvent {
    /// The stored form of the event with this `id`, `state` and `timestamp` about `task` as
    /// admitted.
    pub fn of(id: Uuid, state: TaskState, timestamp: DateTime<Utc>, task: &Task) -> StoredEvent {
        StoredEvent {
            id,
            state,
            timestamp,
            task: TaskRef {
                id: task.id,
                submit_time: task.submit_time,
            },
        }
    }
}

fn running() -> TaskState {
    TaskState::Running
}

/// What an event asks for, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    /// Run the task.
    Run,
    /// Stop the task.
    Stop,
}

impl TaskEvent {
    /// An event that asks for `task` to run.
    pub fn run(task: Task) -> TaskEvent {
        TaskEvent {
            id: Uuid::new_v4(),
            state: TaskState::Running,
            timestamp: Utc::now(),
            task,
        }
    }

    /// What the event asks for. `Failed` is not something one can ask for.
    pub fn desired(&self) -> Result<Desired, InvalidTask> {
        match self.state {
            TaskState::Pending | TaskState::Scheduled | TaskState::Running => Ok(Desired::Run),
            TaskState::Completed => Ok(Desired::Stop),
            TaskState::Failed => Err(InvalidTask {
                field: "State".into(),
                reason: "Failed is not a state one can ask for: use Running (2) to run a task or Completed (3) to stop it".into(),
            }),
        }
    }
}
