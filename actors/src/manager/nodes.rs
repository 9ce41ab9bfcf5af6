//! The node book: the cluster's members, whether they answer, and what they last said. No actix,
//! no I/O: the manager actor keeps the handles to reach the nodes and tells the book what
//! happened.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backoff::Backoff;
use crate::metrics::Stats;
use crate::node::{Node, NodeStatus};
use crate::worker::feed::Cursor;

/// A node the manager knows, with what it last said.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// The node as stored.
    pub node: Node,
    /// Ready, Unreachable or Down.
    pub status: NodeStatus,
    /// Its status before the last change of status.
    pub previous: Option<NodeStatus>,
    /// Its latest metrics sample.
    pub stats: Option<Stats>,
    /// When it last answered.
    pub last_seen: Option<DateTime<Utc>>,
    /// Why it is unreachable (or the last failure).
    pub error: Option<String>,
    /// Failed calls in a row.
    failures: u32,
    /// Since when it has not answered (from its first failed call in a row).
    silent_since: Option<DateTime<Utc>>,
    /// How far the manager has applied the node's feed (None: never, or its store changed).
    pub cursor: Option<Cursor>,
    /// Changes with each join of this name: a sync started for an older join is dropped.
    pub generation: u64,
    /// Whether a sync is under way.
    pub syncing: bool,
    /// Whether a metrics poll is under way.
    pub polling: bool,
    /// The wait before the next sync after a failed one.
    pub retry: Backoff,
}

/// Every node, by name.
#[derive(Debug)]
pub struct NodeBook {
    nodes: BTreeMap<String, NodeEntry>,
    /// Failed calls in a row after which a node is Unreachable.
    unreachable_after: u32,
    /// How long a node may be silent before it is Down (and its tasks placed elsewhere).
    down_after: Duration,
    generations: u64,
}

impl NodeBook {
    /// An empty book; a node is Unreachable after `unreachable_after` failed calls in a row,
    /// and Down once silent for `down_after`.
    pub fn new(unreachable_after: u32, down_after: Duration) -> NodeBook {
        NodeBook {
            nodes: BTreeMap::new(),
            unreachable_after: unreachable_after.max(1),
            down_after,
            generations: 0,
        }
    }

    /// Marks Down every node silent for longer than `down_after` at `now`, and returns their
    /// names. A Down node's cursor is dropped: when it answers again, its first sync is a full
    /// one, so that every copy it still runs is seen (and the stale ones stopped).
    pub fn check_down(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let Ok(down_after) = chrono::Duration::from_std(self.down_after) else {
            return Vec::new();
        };
        let mut down = Vec::new();
        for entry in self.nodes.values_mut() {
            let silent = entry
                .silent_since
                .is_some_and(|since| now - since >= down_after);
            if silent && entry.status == NodeStatus::Unreachable {
                entry.status = NodeStatus::Down;
                entry.cursor = None;
                // A sync still under way must not put a cursor back: it belongs to the old
                // generation and is dropped when it ends; the next one is a full resync.
                self.generations += 1;
                entry.generation = self.generations;
                entry.syncing = false;
                down.push(entry.node.name.clone());
            }
        }
        down
    }

    /// Adds `node`, or replaces the node of that name (keeping when it first joined); it starts
    /// Ready, with no cursor (its first sync is a full one). Returns the join's generation.
    pub fn join(&mut self, mut node: Node) -> u64 {
        if let Some(old) = self.nodes.get(&node.name) {
            node.joined_at = old.node.joined_at;
        }
        self.generations += 1;
        let entry = NodeEntry {
            node,
            status: NodeStatus::Ready,
            previous: None,
            stats: None,
            last_seen: None,
            error: None,
            failures: 0,
            silent_since: None,
            cursor: None,
            generation: self.generations,
            syncing: false,
            polling: false,
            retry: Backoff::new(Duration::from_millis(250), Duration::from_secs(5)),
        };
        self.nodes.insert(entry.node.name.clone(), entry);
        self.generations
    }

    /// The node called `name`.
    pub fn get(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.get(name)
    }

    /// The node called `name`, to change.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut NodeEntry> {
        self.nodes.get_mut(name)
    }

    /// Forgets the node called `name`.
    pub fn remove(&mut self, name: &str) -> Option<NodeEntry> {
        self.nodes.remove(name)
    }

    /// Every node, by name.
    pub fn entries(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.values()
    }

    /// Every node's name.
    pub fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// The names of slice `slice` of `slices` (every `slices`th name from the `slice`th).
    pub fn names_in_slice(&self, slice: usize, slices: usize) -> Vec<String> {
        self.nodes
            .keys()
            .skip(slice)
            .step_by(slices.max(1))
            .cloned()
            .collect()
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there is no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node answered at `now`. Returns its new status if that changed (it is Ready again).
    pub fn answered(&mut self, name: &str, now: DateTime<Utc>) -> Option<NodeStatus> {
        let entry = self.nodes.get_mut(name)?;
        entry.failures = 0;
        entry.silent_since = None;
        entry.last_seen = Some(now);
        entry.error = None;
        entry.retry.reset();
        set_status(entry, NodeStatus::Ready)
    }

    /// A call to the node failed with `error`. Returns its new status if that changed (it is
    /// Unreachable after enough failures in a row).
    pub fn failed(&mut self, name: &str, error: String) -> Option<NodeStatus> {
        let threshold = self.unreachable_after;
        let entry = self.nodes.get_mut(name)?;
        entry.failures += 1;
        entry.error = Some(error);
        entry.silent_since.get_or_insert_with(Utc::now);
        if entry.status == NodeStatus::Down {
            return None;
        }
        if entry.failures >= threshold {
            set_status(entry, NodeStatus::Unreachable)
        } else {
            None
        }
    }

    /// The node cannot take tasks now (its delivery failed as unreachable): Unreachable at once.
    pub fn unreachable(&mut self, name: &str, error: String) -> Option<NodeStatus> {
        let entry = self.nodes.get_mut(name)?;
        entry.error = Some(error);
        entry.silent_since.get_or_insert_with(Utc::now);
        if entry.status == NodeStatus::Down {
            return None;
        }
        set_status(entry, NodeStatus::Unreachable)
    }

    /// Records the node's latest metrics.
    pub fn set_stats(&mut self, name: &str, stats: Stats) {
        if let Some(entry) = self.nodes.get_mut(name) {
            entry.stats = Some(stats);
        }
    }

    /// The manager applied the node's feed up to `cursor` (durably), for the join `generation`.
    pub fn advance(&mut self, name: &str, generation: u64, cursor: Cursor) {
        if let Some(entry) = self.nodes.get_mut(name)
            && entry.generation == generation
        {
            entry.cursor = Some(cursor);
        }
    }
}

fn set_status(entry: &mut NodeEntry, status: NodeStatus) -> Option<NodeStatus> {
    if entry.status == status {
        return None;
    }
    entry.previous = Some(entry.status);
    entry.status = status;
    Some(status)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::resources::Resources;

    fn node(name: &str) -> Node {
        Node {
            name: name.into(),
            address: "local".into(),
            role: "worker".into(),
            capacity: Resources::default(),
            eligible: true,
            joined_at: Utc::now(),
        }
    }

    #[test]
    fn a_node_is_unreachable_after_enough_failures_and_ready_when_it_answers() {
        let mut book = NodeBook::new(2, Duration::from_secs(30));
        book.join(node("a"));
        assert_eq!(book.failed("a", "refused".into()), None);
        assert_eq!(
            book.failed("a", "refused".into()),
            Some(NodeStatus::Unreachable)
        );
        assert_eq!(book.failed("a", "refused".into()), None);
        assert_eq!(book.get("a").unwrap().error.as_deref(), Some("refused"));
        assert_eq!(book.answered("a", Utc::now()), Some(NodeStatus::Ready));
        assert_eq!(book.get("a").unwrap().error, None);
        // One failure after an answer is not enough again.
        assert_eq!(book.failed("a", "refused".into()), None);
    }

    #[test]
    fn a_node_silent_past_the_grace_is_down_with_its_cursor_dropped_and_ready_when_back() {
        let mut book = NodeBook::new(1, Duration::from_secs(30));
        let generation = book.join(node("a"));
        let cursor = Cursor {
            epoch: Uuid::new_v4(),
            revision: 9,
        };
        book.advance("a", generation, cursor);
        assert_eq!(
            book.failed("a", "refused".into()),
            Some(NodeStatus::Unreachable)
        );
        let soon = Utc::now() + chrono::Duration::seconds(5);
        assert!(book.check_down(soon).is_empty());
        let later = Utc::now() + chrono::Duration::seconds(31);
        assert_eq!(book.check_down(later), ["a"]);
        assert_eq!(book.get("a").unwrap().status, NodeStatus::Down);
        assert_eq!(book.get("a").unwrap().cursor, None);
        // A sync that was under way when it went Down cannot put its cursor back.
        book.advance("a", generation, cursor);
        assert_eq!(book.get("a").unwrap().cursor, None);
        assert!(book.check_down(later).is_empty(), "Down once");
        assert_eq!(book.failed("a", "refused".into()), None, "stays Down");
        assert_eq!(book.answered("a", later), Some(NodeStatus::Ready));
    }

    #[test]
    fn a_rejoin_keeps_the_join_time_resets_the_cursor_and_fences_old_syncs() {
        let mut book = NodeBook::new(2, Duration::from_secs(30));
        let first = book.join(node("a"));
        let joined_at = book.get("a").unwrap().node.joined_at;
        let cursor = Cursor {
            epoch: Uuid::new_v4(),
            revision: 4,
        };
        book.advance("a", first, cursor);
        assert_eq!(book.get("a").unwrap().cursor, Some(cursor));
        let second = book.join(node("a"));
        assert_ne!(first, second);
        assert_eq!(book.get("a").unwrap().node.joined_at, joined_at);
        assert_eq!(book.get("a").unwrap().cursor, None);
        // A sync of the first join that ends now does not move the new join's cursor.
        book.advance("a", first, cursor);
        assert_eq!(book.get("a").unwrap().cursor, None);
        assert_eq!(book.names(), ["a"]);
    }
}
