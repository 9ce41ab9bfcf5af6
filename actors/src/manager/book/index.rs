//! The book's indexes (see [`TaskBook`]): every task in arrival order, by state, by node and by
//! name; finished tasks by finish time; the names of the tasks not finished. Kept as each change
//! is applied, touching only the indexes whose key changed.

use std::collections::{BTreeMap, BTreeSet};

use super::{Order, TaskBook};
use crate::task::Task;

pub(super) fn order(task: &Task) -> Order {
    let at = task.submit_time.and_then(|t| t.timestamp_nanos_opt());
    (at.unwrap_or(0), task.id)
}

fn finished_order(task: &Task) -> Order {
    let at = task.finish_time.and_then(|t| t.timestamp_nanos_opt());
    (at.unwrap_or(0), task.id)
}

impl TaskBook {
    pub(super) fn index(&mut self, task: &Task) {
        let key = order(task);
        self.all.insert(key);
        self.by_state.entry(task.state()).or_default().insert(key);
        if let Some(node) = &task.node {
            self.by_node.entry(node.clone()).or_default().insert(key);
        }
        self.by_name.insert((task.name.clone(), key));
        if task.is_finished() {
            self.finished.insert(finished_order(task));
        } else {
            self.active_names.insert(task.name.clone(), task.id);
        }
    }

    /// [`TaskBook::unindex`] of `old` then [`TaskBook::index`] of `new` (the same task), touching
    /// only the indexes whose key changed: most changes keep the task's name, node and order.
    pub(super) fn reindex(&mut self, old: &Task, new: &Task) {
        let (was, is) = (order(old), order(new));
        let moved = was != is;
        if moved {
            self.all.remove(&was);
            self.all.insert(is);
        }
        if moved || old.state() != new.state() {
            remove_from(&mut self.by_state, &old.state(), &was);
            self.by_state.entry(new.state()).or_default().insert(is);
        }
        if moved || old.node != new.node {
            if let Some(node) = &old.node {
                remove_from(&mut self.by_node, node, &was);
            }
            if let Some(node) = &new.node {
                self.by_node.entry(node.clone()).or_default().insert(is);
            }
        }
        if moved || old.name != new.name {
            self.by_name.remove(&(old.name.clone(), was));
            self.by_name.insert((new.name.clone(), is));
        }
        if !old.is_finished() && !new.is_finished() && old.name == new.name {
            // Still active under its name: the name stays its own.
            match self.active_names.get_mut(&new.name) {
                Some(id) => *id = new.id,
                None => {
                    self.active_names.insert(new.name.clone(), new.id);
                }
            }
            return;
        }
        if old.is_finished() {
            self.finished.remove(&finished_order(old));
        } else if self.active_names.get(&old.name) == Some(&old.id) {
            self.active_names.remove(&old.name);
        }
        if new.is_finished() {
            self.finished.insert(finished_order(new));
        } else {
            self.active_names.insert(new.name.clone(), new.id);
        }
    }

    /// The tasks named `name`, in arrival order.
    pub(super) fn named(&self, name: &str) -> BTreeSet<Order> {
        let first = (name.to_string(), (i64::MIN, uuid::Uuid::nil()));
        self.by_name
            .range(first..)
            .take_while(|(n, _)| n == name)
            .map(|(_, order)| *order)
            .collect()
    }

    pub(super) fn unindex(&mut self, task: &Task) {
        let key = order(task);
        self.all.remove(&key);
        remove_from(&mut self.by_state, &task.state(), &key);
        if let Some(node) = &task.node {
            remove_from(&mut self.by_node, node, &key);
        }
        self.by_name.remove(&(task.name.clone(), key));
        if task.is_finished() {
            self.finished.remove(&finished_order(task));
        } else if self.active_names.get(&task.name) == Some(&task.id) {
            self.active_names.remove(&task.name);
        }
    }
}

fn remove_from<K: Ord>(map: &mut BTreeMap<K, BTreeSet<Order>>, key: &K, order: &Order) {
    if let Some(set) = map.get_mut(key) {
        set.remove(order);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
