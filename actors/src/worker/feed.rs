//! A worker's task changes as a numbered feed.
//!
//! Every change a worker makes to a task gets the next **revision** (kept in the task record, so
//! it survives a restart). A manager asks for the changes after the `(epoch, revision)` it has
//! applied and gets the tasks whose latest change is newer; a task changed ten times since is sent
//! once, as it is now. So the cost of a sync is proportional to what changed, not to the history.
//!
//! The **epoch** names the store: a fresh data directory, or `--store memory`, gets a new one, and
//! a manager whose cursor names another epoch gets the full list instead (a resync).
//!
//! Only durable changes are in the feed: a revision is *durable* once it and every revision
//! before it are committed, and replies stop there. No actix here: the worker actor stamps, tells
//! when writes commit, and answers from what this says.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{Record, Table};
use crate::task::{Task, TaskId};

/// The feed's head as stored (in the `meta` table): the store's epoch, and a revision at least
/// as high as any handed out (written before tasks are deleted, so revisions never go back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FeedHead {
    /// The store's epoch.
    pub epoch: Uuid,
    /// The highest revision handed out when this was written.
    pub revision: u64,
}

impl Record for FeedHead {
    const TABLE: Table = Table::Meta;
    fn key(&self) -> String {
        "feed".into()
    }
}

/// A position in a worker's feed: everything up to `revision` of store `epoch` is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cursor {
    /// The worker store's epoch.
    pub epoch: Uuid,
    /// The last revision applied.
    pub revision: u64,
}

/// The feed of one worker.
#[derive(Debug)]
pub struct Feed {
    epoch: Uuid,
    /// The last revision handed out.
    assigned: u64,
    /// Revisions handed out whose write has not finished.
    writing: BTreeSet<u64>,
    /// Each task's current revision, by revision.
    index: BTreeMap<u64, TaskId>,
}

/// What a sync asks of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Another epoch (or none): every task, as a full resync.
    Full,
    /// These tasks changed after the cursor, up to the durable revision.
    Changes(Vec<TaskId>),
    /// Nothing new yet.
    Nothing,
}

impl Feed {
    /// The feed of a store with `head` (None: a store that is new) holding `tasks`.
    pub fn new<'a>(head: Option<FeedHead>, tasks: impl IntoIterator<Item = &'a Task>) -> Feed {
        let mut feed = Feed {
            epoch: head.map_or_else(Uuid::new_v4, |h| h.epoch),
            assigned: head.map_or(0, |h| h.revision),
            writing: BTreeSet::new(),
            index: BTreeMap::new(),
        };
        for task in tasks {
            feed.assigned = feed.assigned.max(task.revision);
            feed.index.insert(task.revision, task.id);
        }
        feed
    }

    /// The store's epoch.
    pub fn epoch(&self) -> Uuid {
        self.epoch
    }

    /// The head to store now.
    pub fn head(&self) -> FeedHead {
        FeedHead {
            epoch: self.epoch,
            revision: self.assigned,
        }
    }

    /// The highest revision such that it and all before it are written.
    pub fn durable(&self) -> u64 {
        self.writing
            .first()
            .map_or(self.assigned, |first| first - 1)
    }

    /// Gives `task` the next revision (its change is about to be written).
    pub fn stamp(&mut self, task: &mut Task) {
        if task.revision != 0 && self.index.get(&task.revision) == Some(&task.id) {
            self.index.remove(&task.revision);
        }
        self.assigned += 1;
        task.revision = self.assigned;
        self.index.insert(task.revision, task.id);
        self.writing.insert(task.revision);
    }

    /// The write of `revision` finished (committed, or failed and logged: either way, no longer
    /// holding back the revisions after it).
    pub fn written(&mut self, revision: u64) {
        self.writing.remove(&revision);
    }

    /// A write failed: what managers applied may no longer match the store, so the feed starts
    /// a new epoch, and every manager's next sync is a full resync.
    pub fn new_epoch(&mut self) {
        self.epoch = Uuid::new_v4();
    }

    /// `task` is gone from the worker.
    pub fn remove(&mut self, task: &Task) {
        if self.index.get(&task.revision) == Some(&task.id) {
            self.index.remove(&task.revision);
        }
    }

    /// What a sync from `cursor` gets now.
    pub fn answer(&self, cursor: Option<Cursor>) -> Answer {
        match cursor {
            Some(c) if c.epoch == self.epoch => {
                let durable = self.durable();
                if durable <= c.revision {
                    return Answer::Nothing;
                }
                // A task changed again since (its newer change not durable yet) is not here: it
                // comes with that change. If that leaves nothing, there is nothing to say yet.
                let ids: Vec<TaskId> = self
                    .index
                    .range(c.revision + 1..=durable)
                    .map(|(_, id)| *id)
                    .collect();
                if ids.is_empty() {
                    Answer::Nothing
                } else {
                    Answer::Changes(ids)
                }
            }
            _ => Answer::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(n: u128) -> Task {
        let mut t = Task::new(format!("t{n}"), "img");
        t.id = Uuid::from_u128(n);
        t
    }

    #[test]
    fn a_sync_gets_only_durable_changes_after_its_cursor_once_per_task() {
        let (mut a, mut b) = (task(1), task(2));
        let mut feed = Feed::new(None, []);
        let epoch = feed.epoch();
        let at = |revision| Some(Cursor { epoch, revision });
        feed.stamp(&mut a);
        feed.stamp(&mut b);
        feed.stamp(&mut a);
        assert_eq!((a.revision, b.revision), (3, 2));
        // Nothing is durable yet.
        assert_eq!(feed.answer(at(0)), Answer::Nothing);
        // Revision 3 committed first (another batch): still held back by 1 and 2.
        feed.written(3);
        assert_eq!(feed.durable(), 0);
        feed.written(1);
        feed.written(2);
        assert_eq!(feed.answer(at(0)), Answer::Changes(vec![b.id, a.id]));
        assert_eq!(feed.answer(at(2)), Answer::Changes(vec![a.id]));
        assert_eq!(feed.answer(at(3)), Answer::Nothing);
        // Changed again, not yet durable: the older durable change is not sent on its own.
        feed.stamp(&mut b);
        assert_eq!(feed.answer(at(3)), Answer::Nothing);
        feed.written(4);
        assert_eq!(feed.answer(at(3)), Answer::Changes(vec![b.id]));
    }

    #[test]
    fn another_epoch_gets_a_full_resync_and_revisions_survive_a_reopen() {
        let mut a = task(1);
        let mut feed = Feed::new(None, []);
        feed.stamp(&mut a);
        feed.written(1);
        let other = Uuid::new_v4();
        let stale = Some(Cursor {
            epoch: other,
            revision: 1,
        });
        assert_eq!(feed.answer(stale), Answer::Full);
        assert_eq!(feed.answer(None), Answer::Full);
        // Reopened with its head: the same epoch, and new revisions go on from the head even
        // when the task that had the highest one was removed.
        let head = FeedHead {
            epoch: feed.epoch(),
            revision: 7,
        };
        let mut reopened = Feed::new(Some(head), [&a]);
        let mut b = task(2);
        reopened.stamp(&mut b);
        assert_eq!(b.revision, 8);
        assert_eq!(reopened.epoch(), feed.epoch());
    }
}
