//! The task book: every task the manager knows, as plain data. No actix, no I/O.
//!
//! Every change to a task is made here, and each returns one [`Change`] describing it (task,
//! from, to, placement, attempt, reason, and the task as it is after). That value is the one
//! thing the manager persists, counts and (later) publishes; [`TaskBook::apply`] applies it
//! deterministically, so that a replicated log could carry changes to other managers.
//!
//! Readers see only durable versions: a change is applied to the working copy at once (so the
//! next decision sees it), and shown to readers once the actor reports it written
//! ([`TaskBook::written`]).
//!
//! Indexes keep every question the manager asks often proportional to its answer, not to the
//! history: tasks by state, by node and by name, in arrival order; finished tasks by finish time
//! (for pruning); and the names of the tasks that are not finished (unique among them).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::task::{Task, TaskId, TaskMap, TaskState};
use crate::unwritten::Unwritten;

/// One change of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Change {
    /// The task.
    pub task: TaskId,
    /// Its state before (`None`: the task is new).
    pub from: Option<TaskState>,
    /// Its state after (`None`: the task was removed).
    pub to: Option<TaskState>,
    /// Its placement after the change.
    pub placement: u64,
    /// Its restart count after the change.
    pub attempt: u32,
    /// Its restart count before the change (0 for a new task).
    #[serde(default)]
    pub attempt_before: u32,
    /// Why, in words.
    pub reason: String,
    /// The task as it is after the change; `None` when it was removed.
    pub after: Option<Task>,
    /// When the change was made.
    pub at: DateTime<Utc>,
}

/// Why the book refused a change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BookError {
    /// No such task.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// A task with this ID exists and is not finished: the submission is a repeat.
    #[error("task {} exists", .0.id)]
    Exists(Box<Task>),
    /// The request does not fit the task's state.
    #[error("{0}")]
    Conflict(String),
}

/// Where a task sits in arrival order: its submit time, then its ID.
pub(super) type Order = (i64, TaskId);

/// The task book.
///
/// The maps that hold an entry per task the book keeps (finished ones too) are B-trees, or hold
/// boxes ([`TaskMap`]): a `HashMap` doubles all at once, and three of them holding ~460,000 tasks
/// each doubled on the same insert, which held the manager for more than half a second.
#[derive(Debug, Default)]
pub struct TaskBook {
    /// Every task, as last changed.
    tasks: TaskMap,
    /// Every task in arrival order.
    all: BTreeSet<Order>,
    /// Tasks by state, in arrival order.
    by_state: BTreeMap<TaskState, BTreeSet<Order>>,
    /// Tasks by node, in arrival order.
    by_node: BTreeMap<String, BTreeSet<Order>>,
    /// Tasks by name, then arrival order: one entry per task. (A set per name cost a B-tree
    /// node of ~280 bytes per task, with names nearly all unique.)
    by_name: BTreeSet<(String, Order)>,
    /// Finished tasks by finish time.
    finished: BTreeSet<Order>,
    /// The names of the tasks that are not finished.
    active_names: HashMap<String, TaskId>,
    /// The durable version of tasks whose writes are in flight.
    unwritten: Unwritten<TaskId, Task>,
    /// Tasks whose placement or delivery is under way.
    in_flight: HashSet<TaskId>,
    /// Tasks a node failed to take: not placed again before the instant.
    backoff: HashMap<TaskId, (Instant, Backoff)>,
    /// Nodes each task failed for good on (avoided when it is placed again).
    avoid: HashMap<TaskId, BTreeSet<String>>,
    /// The last state changes of each task, in arrival order: the tasks that change are the
    /// recent ones, at the end the walks of this tree share (keyed by ID, each change walked
    /// to a random leaf).
    history: BTreeMap<Order, VecDeque<Transition>>,
}

/// The first wait before placing again a task that a node failed to take.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between placement attempts of a task that nodes keep failing to take.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl TaskBook {
    /// A book holding `tasks`, all durable (as loaded from the store).
    pub fn load(tasks: impl IntoIterator<Item = Task>) -> TaskBook {
        let mut book = TaskBook::default();
        for task in tasks {
            if let Some(old) = book.tasks.remove(&task.id) {
                book.unindex(&old);
            }
            book.index(&task);
            book.tasks.insert(task.id, task);
        }
        book
    }

    /// Applies a change: the task becomes `change.after`, or is removed. Deterministic: the same
    /// changes applied in the same order give the same book.
    pub fn apply(&mut self, change: &Change) {
        self.replace(change);
    }

    /// [`TaskBook::apply`], returning the version of the task the change replaced.
    fn replace(&mut self, change: &Change) -> Option<Task> {
        let old = match &change.after {
            Some(task) => self.tasks.insert(task.id, task.clone()),
            None => self.tasks.remove(&change.task),
        };
        match (&old, &change.after) {
            (Some(old), Some(new)) => self.reindex(old, new),
            (Some(old), None) => self.unindex(old),
            (None, Some(new)) => self.index(new),
            (None, None) => {}
        }
        let was = old.as_ref().map(index::order);
        match &change.after {
            Some(task) => {
                let key = index::order(task);
                if let Some(was) = was.filter(|was| *was != key)
                    && let Some(moved) = self.history.remove(&was)
                {
                    self.history.insert(key, moved);
                }
                if change.from != change.to {
                    let history = self.history.entry(key).or_default();
                    if history.len() == HISTORY {
                        history.pop_front();
                    }
                    history.push_back(Transition {
                        at: change.at,
                        from: change.from,
                        to: task.state(),
                        placement: task.placement,
                        attempt: task.restart_count,
                        node: task.node.clone(),
                        reason: task.reason.clone(),
                    });
                }
            }
            None => {
                if let Some(was) = was {
                    self.history.remove(&was);
                }
            }
        }
        old
    }

    /// The last state changes of task `id` (since the manager started), oldest first.
    pub fn history(&self, id: &TaskId) -> Vec<Transition> {
        self.tasks
            .get(id)
            .and_then(|task| self.history.get(&index::order(task)))
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The change from the task as it is now to `after` (`None`: removed), applied to the
    /// working copy and held from readers until [`TaskBook::written`].
    fn propose(&mut self, id: TaskId, after: Option<Task>) -> Change {
        let before = self.tasks.get(&id);
        let change = Change {
            at: Utc::now(),
            task: id,
            from: before.map(Task::state),
            to: after.as_ref().map(Task::state),
            placement: after.as_ref().or(before).map_or(0, |t| t.placement),
            attempt: after.as_ref().or(before).map_or(0, |t| t.restart_count),
            attempt_before: before.map_or(0, |t| t.restart_count),
            reason: after
                .as_ref()
                .map_or_else(String::new, |t| t.reason.clone()),
            after,
        };
        let replaced = self.replace(&change);
        self.unwritten.begin(&id, replaced);
        change
    }

    /// `change` is durable: readers may see it.
    pub fn written(&mut self, change: &Change) {
        self.unwritten.done(&change.task, change.after.as_ref());
    }

    /// An admission whose write failed: the task is gone again, as if never submitted.
    pub fn undo_admission(&mut self, change: &Change) {
        if let Some(old) = self.tasks.remove(&change.task) {
            self.unindex(&old);
            self.history.remove(&index::order(&old));
        }
        self.unwritten.done(&change.task, None);
    }

    /// The task as readers may see it.
    pub fn get(&self, id: &TaskId) -> Option<&Task> {
        self.unwritten.visible(id, self.tasks.get(id))
    }

    /// The working copy of a task (with changes not yet durable): for decisions, not for readers.
    pub fn working(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// How many tasks the book holds.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the book holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Every finished task, oldest finish first.
    pub fn finished_ids(&self) -> Vec<TaskId> {
        self.finished.iter().map(|(_, id)| *id).collect()
    }

    /// How many finished tasks the book holds.
    /// How many tasks are in `state` now.
    pub fn count_in(&self, state: TaskState) -> usize {
        self.by_state.get(&state).map_or(0, BTreeSet::len)
    }

    /// How many tasks are finished.
    pub fn finished_count(&self) -> usize {
        self.finished.len()
    }

    /// Every task that may have a container (Scheduled or Running).
    pub fn active(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().filter(|t| t.state().is_active())
    }

    /// Admits a submitted task as Pending at `now`. A task whose ID exists and is not finished
    /// is a repeat ([`BookError::Exists`]); a finished one, or a name a task that is not
    /// finished has, is a conflict.
    pub fn admit(&mut self, task: Task, now: DateTime<Utc>) -> Result<Change, BookError> {
        if let Some(existing) = self.tasks.get(&task.id) {
            if existing.is_finished() {
                return Err(BookError::Conflict(format!(
                    "task {} is {}; submit it under a new ID to run it again",
                    task.id,
                    existing.state()
                )));
            }
            return match self.get(&task.id) {
                Some(visible) => Err(BookError::Exists(Box::new(visible.clone()))),
                None => Err(BookError::Conflict(format!(
                    "task {} is being submitted already",
                    task.id
                ))),
            };
        }
        if let Some(other) = self.active_names.get(&task.name) {
            return Err(BookError::Conflict(format!(
                "the name `{}` is taken by task {other}, which is not finished; choose another name or stop that task",
                task.name
            )));
        }
        let mut task = task.admit(TaskState::Pending, "waiting for a node");
        task.submit_time = Some(now);
        task.placement = 0;
        Ok(self.propose(task.id, Some(task)))
    }

    /// Moves a Pending task to a changed copy through the state machine, if allowed.
    pub(super) fn change(
        &mut self,
        id: TaskId,
        edit: impl FnOnce(&mut Task) -> Result<(), crate::task::InvalidTransition>,
    ) -> Option<Change> {
        let mut task = self.tasks.get(&id)?.clone();
        edit(&mut task).ok()?;
        (self.tasks.get(&id) != Some(&task)).then(|| self.propose(id, Some(task)))
    }

    /// Places a Pending task on `node`, minting its next placement number.
    pub fn place(&mut self, id: TaskId, node: &str) -> Option<Change> {
        self.change(id, |task| {
            task.transition(TaskState::Scheduled, format!("placed on node {node}"))?;
            task.node = Some(node.to_string());
            task.placement += 1;
            Ok(())
        })
    }

    /// Puts a Scheduled task back to Pending (its node did not take it).
    pub fn unplace(&mut self, id: TaskId, reason: String) -> Option<Change> {
        self.change(id, |task| {
            if task.state() != TaskState::Scheduled {
                return Err(not_from(task, TaskState::Pending));
            }
            task.transition(TaskState::Pending, reason)?;
            task.node = None;
            Ok(())
        })
    }

    /// Leaves a Pending task Pending with a new reason (a change only if the reason is new).
    pub fn keep_pending(&mut self, id: TaskId, reason: String) -> Option<Change> {
        self.change(id, |task| {
            if task.state() != TaskState::Pending {
                return Err(not_from(task, TaskState::Pending));
            }
            task.reason = reason;
            Ok(())
        })
    }

    /// Fails a task (a node found it invalid).
    pub fn fail(&mut self, id: TaskId, reason: String) -> Option<Change> {
        self.change(id, |task| {
            task.transition(TaskState::Failed, reason)?;
            task.host_ports.clear();
            Ok(())
        })
    }

    /// Records a user's stop: Completed, with what the node reported of the container's end.
    pub fn stopped(&mut self, id: TaskId, reported: Option<&Task>) -> Result<Change, BookError> {
        let mut task = self
            .tasks
            .get(&id)
            .cloned()
            .ok_or(BookError::NotFound(id))?;
        if !task.is_finished() {
            task.transition(TaskState::Completed, "stopped by user")
                .map_err(|e| BookError::Conflict(e.to_string()))?;
        }
        if let Some(reported) = reported {
            task.container_id = reported.container_id.clone();
            task.finish_time = reported.finish_time.or(task.finish_time);
            task.exit_code = reported.exit_code;
        }
        task.host_ports.clear();
        Ok(self.propose(id, Some(task)))
    }

    /// Takes what `node` reports about a task into the book, through the state machine: a
    /// report the table does not allow (a stale one) changes nothing.
    pub fn merge(&mut self, node: &str, reported: &Task) -> Merge {
        let Some(ours) = self.tasks.get(&reported.id) else {
            return Merge::Unknown;
        };
        let here = ours.node.as_deref() == Some(node);
        let stopped = ours.state() == TaskState::Completed && reported.state().is_active();
        if !here || reported.placement < ours.placement || stopped {
            return Merge::Stale {
                placement: reported.placement,
            };
        }
        if reported.placement > ours.placement {
            // A copy the manager does not know of yet (cannot happen unless the store lost a
            // placement): take no risk, treat it as stale.
            return Merge::Stale {
                placement: reported.placement,
            };
        }
        let mut task = ours.clone();
        if task.state() != reported.state()
            && task
                .transition(reported.state(), reported.reason.clone())
                .is_err()
        {
            return Merge::Same;
        }
        task.container_id = reported.container_id.clone();
        task.host_ports = reported.host_ports.clone();
        task.start_time = reported.start_time.or(task.start_time);
        task.finish_time = reported.finish_time.or(task.finish_time);
        task.exit_code = reported.exit_code;
        task.restart_count = reported.restart_count;
        task.restarts_here = reported.restarts_here;
        task.reason = reported.reason.clone();
        if &task == ours {
            return Merge::Same;
        }
        Merge::Changed(Box::new(self.propose(task.id, Some(task))))
    }

    /// Removes a finished task (a purge or a prune).
    pub fn remove(&mut self, id: TaskId) -> Result<Change, BookError> {
        let task = self.tasks.get(&id).ok_or(BookError::NotFound(id))?;
        if !task.is_finished() {
            return Err(BookError::Conflict(format!(
                "task {id} is {}; only a finished task (Completed, or Failed) can be removed: stop it first",
                task.state()
            )));
        }
        Ok(self.propose(id, None))
    }

    /// The finished tasks the retention does not keep at `now`: beyond the count (oldest first)
    /// and older than the age.
    pub fn prunable(&self, now: DateTime<Utc>, retention: Retention, most: usize) -> Vec<TaskId> {
        let excess = self.finished.len().saturating_sub(retention.max_finished);
        let cutoff = chrono::Duration::from_std(retention.max_age)
            .ok()
            .and_then(|age| (now - age).timestamp_nanos_opt())
            .unwrap_or(i64::MIN);
        self.finished
            .iter()
            .enumerate()
            .take_while(|(i, (at, _))| *i < excess || *at < cutoff)
            .map(|(_, (_, id))| *id)
            .filter(|id| !self.unwritten.is_writing(id))
            .take(most)
            .collect()
    }
}

pub(super) fn not_from(task: &Task, to: TaskState) -> crate::task::InvalidTransition {
    crate::task::InvalidTransition {
        task: task.id,
        from: task.state(),
        to,
    }
}

mod index;
mod placing;
mod query;
mod types;

pub use query::{TaskFilter, TaskPage};
pub use types::{HISTORY, Merge, Retention, Transition};

#[cfg(test)]
mod tests;
