//! The book's side of placement: which Pending tasks may be tried now, which placements and
//! deliveries are under way, and the back-off of tasks nodes failed to take.

use std::time::{Duration, Instant};

use super::{Change, FIRST_BACKOFF, MAX_BACKOFF, TaskBook, not_from};
use crate::backoff::Backoff;
use crate::task::{Task, TaskId, TaskState};

impl TaskBook {
    /// Pending tasks that may be placed at `now` (not under way, not backing off), oldest first.
    pub fn pending_ready(&self, now: Instant) -> Vec<TaskId> {
        let Some(pending) = self.by_state.get(&TaskState::Pending) else {
            return Vec::new();
        };
        pending
            .iter()
            .map(|(_, id)| *id)
            .filter(|id| !self.in_flight.contains(id))
            .filter(|id| self.backoff.get(id).is_none_or(|(at, _)| now >= *at))
            .collect()
    }

    /// Tasks Scheduled on `node` whose delivery is not under way.
    pub fn scheduled_on(&self, node: &str) -> Vec<Task> {
        let Some(on_node) = self.by_node.get(node) else {
            return Vec::new();
        };
        on_node
            .iter()
            .filter_map(|(_, id)| self.tasks.get(id))
            .filter(|t| t.state() == TaskState::Scheduled && !self.in_flight.contains(&t.id))
            .cloned()
            .collect()
    }

    /// Marks a task's placement or delivery as under way (`true`) or over.
    pub fn set_in_flight(&mut self, id: TaskId, in_flight: bool) {
        if in_flight {
            self.in_flight.insert(id);
        } else {
            self.in_flight.remove(&id);
        }
    }

    /// Whether a task's placement or delivery is under way.
    pub fn is_in_flight(&self, id: &TaskId) -> bool {
        self.in_flight.contains(id)
    }

    /// A node failed to take the task: it is not placed again before the returned wait.
    pub fn back_off(&mut self, id: TaskId, now: Instant) -> Duration {
        let (at, backoff) = self
            .backoff
            .entry(id)
            .or_insert_with(|| (now, Backoff::new(FIRST_BACKOFF, MAX_BACKOFF)));
        let wait = backoff.next_wait();
        *at = now + wait;
        wait
    }

    /// The task was delivered (or stopped): no back-off any more.
    pub fn clear_backoff(&mut self, id: &TaskId) {
        self.backoff.remove(id);
    }

    /// Capacity may have appeared (a node joined or came back): every task may try again now.
    pub fn clear_backoffs(&mut self) {
        self.backoff.clear();
    }

    /// Takes a Scheduled or Running task off its node, which is lost: back to Pending, to be
    /// placed again (with a new placement number) elsewhere.
    pub fn lose(&mut self, id: TaskId, reason: String) -> Option<Change> {
        self.change(id, |task| {
            if !task.state().is_active() {
                return Err(not_from(task, TaskState::Pending));
            }
            task.transition(TaskState::Pending, reason)?;
            task.node = None;
            task.container_id.clear();
            task.host_ports.clear();
            Ok(())
        })
    }

    /// Places a task that failed for good on its node (restarts in place spent) again, avoiding
    /// that node: back to Pending, one more re-placement counted.
    pub fn replace_elsewhere(&mut self, id: TaskId, reason: String) -> Option<Change> {
        let node = self.tasks.get(&id)?.node.clone();
        let change = self.change(id, |task| {
            if task.state() != TaskState::Failed {
                return Err(not_from(task, TaskState::Pending));
            }
            task.transition(TaskState::Pending, reason)?;
            task.node = None;
            task.container_id.clear();
            task.host_ports.clear();
            task.replacements += 1;
            Ok(())
        })?;
        if let Some(node) = node {
            self.avoid.entry(id).or_default().insert(node);
        }
        Some(change)
    }

    /// Gives a task a new reason, its state unchanged.
    pub fn annotate(&mut self, id: TaskId, reason: String) -> Option<Change> {
        self.change(id, |task| {
            task.reason = reason;
            Ok(())
        })
    }

    /// The nodes task `id` failed for good on, to avoid when placing it again.
    pub fn avoided(&self, id: &TaskId) -> Vec<String> {
        self.avoid
            .get(id)
            .map(|nodes| nodes.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The tasks placed on `node` that may have a container there (Scheduled or Running).
    pub fn placed_on(&self, node: &str) -> Vec<TaskId> {
        let Some(on_node) = self.by_node.get(node) else {
            return Vec::new();
        };
        on_node
            .iter()
            .filter(|(_, id)| self.tasks.get(id).is_some_and(|t| t.state().is_active()))
            .map(|(_, id)| *id)
            .collect()
    }
}
