//! Listing the book: filters, arrival order, pages with a cursor.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::{Order, TaskBook};
use crate::task::{Task, TaskState};

/// Which tasks a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks placed on this node.
    pub node: Option<String>,
    /// Only tasks of this name.
    pub name: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Only tasks after this cursor (from an earlier page).
    pub after: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    /// The tasks, in arrival order.
    pub tasks: Vec<Task>,
    /// The cursor of the next page, if there may be more.
    pub next: Option<String>,
}

/// Reads a listing cursor (`<nanos>.<task id>`).
fn parse_cursor(cursor: &str) -> Option<Order> {
    let (at, id) = cursor.split_once('.')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

impl TaskBook {
    /// A page of tasks matching `filter`, in arrival order. The work is proportional to the
    /// smallest index that applies, not to the whole history.
    pub fn query(&self, filter: &TaskFilter) -> Result<TaskPage, String> {
        let after = match &filter.after {
            Some(c) => Some(parse_cursor(c).ok_or_else(|| format!("`{c}` is not a cursor"))?),
            None => None,
        };
        let empty = BTreeSet::new();
        let named = filter.name.as_deref().map(|name| self.named(name));
        let mut candidates = vec![&self.all];
        if let Some(state) = filter.state {
            candidates.push(self.by_state.get(&state).unwrap_or(&empty));
        }
        if let Some(node) = &filter.node {
            candidates.push(self.by_node.get(node).unwrap_or(&empty));
        }
        if let Some(named) = &named {
            candidates.push(named);
        }
        let smallest = candidates
            .into_iter()
            .min_by_key(|c| c.len())
            .unwrap_or(&empty);
        let limit = filter.limit.unwrap_or(usize::MAX);
        let range = match after {
            Some(after) => smallest.range((Bound::Excluded(after), Bound::Unbounded)),
            None => smallest.range(..),
        };
        let mut tasks = Vec::new();
        let mut last = None;
        for key in range {
            if tasks.len() == limit {
                return Ok(TaskPage {
                    tasks,
                    next: last.map(|(at, id): Order| format!("{at}.{id}")),
                });
            }
            let Some(task) = self.get(&key.1) else {
                continue;
            };
            let matches = filter.state.is_none_or(|s| task.state() == s)
                && filter
                    .node
                    .as_ref()
                    .is_none_or(|n| task.node.as_ref() == Some(n))
                && filter.name.as_ref().is_none_or(|n| &task.name == n);
            if matches {
                tasks.push(task.clone());
                last = Some(*key);
            }
        }
        Ok(TaskPage { tasks, next: None })
    }
}
