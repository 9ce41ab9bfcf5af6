//! The book's plain value types: a task's history entries, the retention, what a report means.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Change;
use crate::task::TaskState;

/// One state change of a task, as its history shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Transition {
    /// When.
    pub at: DateTime<Utc>,
    /// From which state (`None`: the task was submitted).
    pub from: Option<TaskState>,
    /// To which state.
    pub to: TaskState,
    /// The placement.
    pub placement: u64,
    /// The restart count.
    pub attempt: u32,
    /// The node.
    pub node: Option<String>,
    /// Why.
    pub reason: String,
}

/// How many state changes of each task its history keeps.
pub const HISTORY: usize = 20;

/// How long finished tasks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many finished tasks are kept (the oldest go first).
    pub max_finished: usize,
    /// A finished task is kept at most this long after it finished.
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_finished: 1000,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// What a node reported about a task means.
#[derive(Debug, Clone, PartialEq)]
pub enum Merge {
    /// The manager has no such task (given to the worker directly, or pruned).
    Unknown,
    /// The node's copy is not the task's current placement (older, elsewhere, or stopped while
    /// its delivery was under way): it must not run.
    Stale {
        /// The placement of the node's copy.
        placement: u64,
    },
    /// Nothing new.
    Same,
    /// The report changed the task.
    Changed(Box<Change>),
}
