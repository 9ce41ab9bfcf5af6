//! [`TaskMap`]: tasks by ID, for the maps that hold every task (the manager's book, a worker).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use super::{Task, TaskId};

/// Tasks by ID, each in a box of its own, so that a map of hundreds of thousands of tasks grows
/// by moving pointers. Held inline (472 bytes a task), a `HashMap` doubling at 458,752 tasks
/// moved 224 MiB into a fresh 512 MiB table at once: one insert took 343 ms, against 20 ms
/// boxed, and every message of the actor waited behind it. A cluster's workers fill evenly, so
/// a thousand nodes' maps doubled within moments of each other, on the thread they share.
///
/// It also knows which of its tasks are active (Scheduled or Running: a container may exist),
/// so that what walks those (a worker's task count, its reconciles) costs what runs, not what
/// the map keeps.
#[derive(Debug, Default, Clone)]
pub struct TaskMap {
    tasks: HashMap<TaskId, Box<Task>>,
    active: HashSet<TaskId>,
}

impl TaskMap {
    /// The task `id`.
    pub fn get(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.get(id).map(|task| &**task)
    }

    /// Whether task `id` is here.
    pub fn contains_key(&self, id: &TaskId) -> bool {
        self.tasks.contains_key(id)
    }

    /// Adds or replaces task `id`, returning the version it replaced. A replaced task's box
    /// is reused: one lookup, no allocation.
    pub fn insert(&mut self, id: TaskId, task: Task) -> Option<Task> {
        if task.state().is_active() {
            self.active.insert(id);
        } else {
            self.active.remove(&id);
        }
        match self.tasks.entry(id) {
            Entry::Occupied(mut held) => Some(std::mem::replace(&mut **held.get_mut(), task)),
            Entry::Vacant(free) => {
                free.insert(Box::new(task));
                None
            }
        }
    }

    /// Removes task `id`, returning it.
    pub fn remove(&mut self, id: &TaskId) -> Option<Task> {
        self.active.remove(id);
        self.tasks.remove(id).map(|task| *task)
    }

    /// The active tasks, in no order.
    pub fn active(&self) -> impl Iterator<Item = &Task> {
        self.active.iter().filter_map(|id| self.get(id))
    }

    /// How many tasks are active.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Every task, in no order.
    pub fn values(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().map(|task| &**task)
    }

    /// Every ID, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &TaskId> {
        self.tasks.keys()
    }

    /// How many tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl FromIterator<Task> for TaskMap {
    fn from_iter<I: IntoIterator<Item = Task>>(tasks: I) -> Self {
        let mut map = TaskMap::default();
        for task in tasks {
            map.insert(task.id, task);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;

    #[test]
    fn a_task_map_gives_back_what_it_holds() {
        let (a, b) = (Task::new("a", "img"), Task::new("b", "img"));
        let mut map: TaskMap = [a.clone()].into_iter().collect();
        map.insert(b.id, b.clone());
        assert_eq!(map.get(&a.id), Some(&a));
        assert!(map.contains_key(&b.id) && map.len() == 2);
        assert_eq!(map.remove(&a.id), Some(a));
        assert_eq!(map.values().collect::<Vec<_>>(), vec![&b]);
        assert_eq!(map.keys().collect::<Vec<_>>(), vec![&b.id]);
        map.remove(&b.id);
        assert!(map.is_empty());
    }

    /// The active tasks are the Scheduled and Running ones, as they change and as they go.
    #[test]
    fn a_task_map_knows_its_active_tasks() {
        let (mut a, mut b) = (Task::new("a", "img"), Task::new("b", "img"));
        let mut map: TaskMap = [a.clone(), b.clone()].into_iter().collect();
        assert_eq!(map.active_len(), 0, "Pending");
        a.transition(TaskState::Scheduled, "placed").unwrap();
        b.transition(TaskState::Scheduled, "placed").unwrap();
        b.transition(TaskState::Running, "started").unwrap();
        map.insert(a.id, a.clone());
        map.insert(b.id, b.clone());
        assert_eq!(map.active_len(), 2);
        b.transition(TaskState::Completed, "exited").unwrap();
        map.insert(b.id, b.clone());
        assert_eq!(map.active().collect::<Vec<_>>(), vec![&a]);
        map.remove(&a.id);
        assert_eq!((map.active_len(), map.len()), (0, 1));
    }
}
