//! [`TaskMap`]: tasks by ID, for the maps that hold every task (the manager's book, a worker).

use std::collections::HashMap;

use super::{Task, TaskId};

/// Tasks by ID, each in a box of its own, so that a map of hundreds of thousands of tasks grows
/// by moving pointers. Held inline (472 bytes a task), a `HashMap` doubling at 458,752 tasks
/// moved 224 MiB into a fresh 512 MiB table at once: one insert took 343 ms, against 20 ms
/// boxed, and every message of the actor waited behind it. A cluster's workers fill evenly, so
/// a thousand nodes' maps doubled within moments of each other, on the thread they share.
#[derive(Debug, Default, Clone)]
pub struct TaskMap(HashMap<TaskId, Box<Task>>);

impl TaskMap {
    /// The task `id`.
    pub fn get(&self, id: &TaskId) -> Option<&Task> {
        self.0.get(id).map(|task| &**task)
    }

    /// Whether task `id` is here.
    pub fn contains_key(&self, id: &TaskId) -> bool {
        self.0.contains_key(id)
    }

    /// Adds or replaces task `id`.
    pub fn insert(&mut self, id: TaskId, task: Task) {
        self.0.insert(id, Box::new(task));
    }

    /// Removes task `id`, returning it.
    pub fn remove(&mut self, id: &TaskId) -> Option<Task> {
        self.0.remove(id).map(|task| *task)
    }

    /// Every task, in no order.
    pub fn values(&self) -> impl Iterator<Item = &Task> {
        self.0.values().map(|task| &**task)
    }

    /// Every ID, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &TaskId> {
        self.0.keys()
    }

    /// How many tasks.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Task> for TaskMap {
    fn from_iter<I: IntoIterator<Item = Task>>(tasks: I) -> Self {
        TaskMap(tasks.into_iter().map(|t| (t.id, Box::new(t))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
