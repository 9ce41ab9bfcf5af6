//! The book's side of placement: which Pending tasks may be tried now, which placements and
//! deliveries are under way, and the back-off of tasks nodes failed to take.

use std::time::{Duration, Instant};

use super::{FIRST_BACKOFF, MAX_BACKOFF, TaskBook};
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
}
