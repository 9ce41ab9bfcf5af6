//! How the tasks of the nodes of one `cube up` lie in their shared store ([`NodeLayout`]).
//!
//! A node's store is the key prefix `<node>/` of the shared one. Task keys begin with their
//! submit time, so under a prefix per node the writes of one commit (a task each for many
//! nodes) fell one per page: with a thousand nodes nearly every write dirtied a page of its own,
//! and the nodes' writer spent more CPU copying and flushing pages than anything else did.
//!
//! So the tasks table keeps a node's task `<node>/<key>` as `<key>@<node>`: in submit order
//! across nodes, so that the tasks a commit writes (those just started, those just finished)
//! share pages. Which keys belong to which node is kept in memory, built by one pass over the
//! table when the store opens and updated after each commit; a node lists its tasks from it.
//! The other tables (a few records a node) keep the prefix. A store written with the prefix
//! layout is moved to this one, in one transaction, when it opens.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Backend, StoreError, Table, WriteOp};

/// A backend holding the nodes' tasks in submit order (see the module docs).
pub(crate) struct NodeLayout {
    inner: Arc<dyn Backend>,
    /// The keys of each node's tasks (without the node), by the node's prefix `<node>/`.
    index: Mutex<HashMap<String, BTreeSet<String>>>,
}

/// `<node>/<key>` (a task key as a node's store gives it) as the prefix `<node>/` and the key.
fn split_prefixed(key: &str) -> Option<(&str, &str)> {
    let cut = key.rfind('/')? + 1;
    Some((&key[..cut], &key[cut..]))
}

/// A node's task key as stored: `<key>@<node>`.
fn stored(prefix: &str, key: &str) -> String {
    format!("{key}@{}", &prefix[..prefix.len() - 1])
}

/// A stored key `<key>@<node>` as the prefix `<node>/` and the key (task keys hold no `@`).
fn split_stored(key: &str) -> Option<(String, &str)> {
    let (key, node) = key.split_once('@')?;
    Some((format!("{node}/"), key))
}

/// Whether `key` has the shape of a task's key: 16 hex digits, a dot, a task ID. What tells a
/// stored `<key>@<node>` from a `<node>/<key>` of the prefix layout whose node's name holds an
/// `@` (`team@x-1/<key>` would otherwise read as the key `team` of node `x-1/<key>`).
fn is_task_key(key: &str) -> bool {
    let (time, id) = key.split_at_checked(16).unwrap_or_default();
    time.bytes().all(|b| b.is_ascii_hexdigit())
        && id
            .strip_prefix('.')
            .is_some_and(|id| id.parse::<uuid::Uuid>().is_ok())
}

impl NodeLayout {
    /// Wraps `inner`, moving the tasks it holds under node prefixes to this layout first.
    pub(crate) fn open(inner: Arc<dyn Backend>) -> Result<NodeLayout, StoreError> {
        let mut index: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut moves = Vec::new();
        for (key, value) in inner.list(Table::Tasks, "")? {
            if let Some((prefix, k)) = split_stored(&key).filter(|(_, k)| is_task_key(k)) {
                index.entry(prefix).or_default().insert(k.to_string());
            } else if let Some((prefix, k)) = split_prefixed(&key) {
                index
                    .entry(prefix.to_string())
                    .or_default()
                    .insert(k.to_string());
                moves.push(WriteOp::Put {
                    table: Table::Tasks,
                    key: stored(prefix, k),
                    value,
                });
                moves.push(WriteOp::Delete {
                    table: Table::Tasks,
                    key,
                });
            }
        }
        if !moves.is_empty() {
            inner.apply(&moves)?;
            log::info!(
                "store: {} tasks of the nodes moved to the submit-ordered layout",
                moves.len() / 2
            );
        }
        Ok(NodeLayout {
            inner,
            index: Mutex::new(index),
        })
    }

    fn index(&self) -> MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        // Updated only after a commit, whole: a panic elsewhere leaves it consistent.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The keys of the tasks of the node of `prefix` (`<node>/`) that start with `start`.
    fn keys_under<'a>(
        index: &'a HashMap<String, BTreeSet<String>>,
        prefix: &str,
        start: &'a str,
    ) -> impl Iterator<Item = &'a String> {
        let keys = index.get(prefix).into_iter().flatten();
        keys.filter(move |k| k.starts_with(start))
    }

    /// `ops` in this layout; a prefix deletion of a node's tasks becomes one deletion each.
    fn translate(&self, ops: &[WriteOp]) -> Vec<WriteOp> {
        let mut out = Vec::with_capacity(ops.len());
        // The node tasks this batch puts (true) or deletes (false) before a prefix deletion,
        // which must see them as the index will once they are committed.
        let mut earlier: BTreeMap<(&str, &str), bool> = BTreeMap::new();
        for op in ops {
            let node_key = match op {
                WriteOp::Put { table, key, .. }
                | WriteOp::Delete { table, key }
                | WriteOp::DeletePrefix { table, prefix: key } => (*table == Table::Tasks)
                    .then(|| split_prefixed(key))
                    .flatten(),
            };
            let Some((prefix, k)) = node_key else {
                out.push(op.clone());
                continue;
            };
            let table = Table::Tasks;
            match op {
                WriteOp::Put { value, .. } => {
                    earlier.insert((prefix, k), true);
                    out.push(WriteOp::Put {
                        table,
                        key: stored(prefix, k),
                        value: value.clone(),
                    });
                }
                WriteOp::Delete { .. } => {
                    earlier.insert((prefix, k), false);
                    out.push(WriteOp::Delete {
                        table,
                        key: stored(prefix, k),
                    });
                }
                WriteOp::DeletePrefix { .. } => {
                    let mut doomed: BTreeSet<String> = Self::keys_under(&self.index(), prefix, k)
                        .cloned()
                        .collect();
                    for (&(p, key), &put) in &earlier {
                        if p == prefix && key.starts_with(k) && put {
                            doomed.insert(key.to_string());
                        }
                    }
                    for key in doomed {
                        // Deleting what is not there (deleted earlier in the batch) is no error.
                        out.push(WriteOp::Delete {
                            table,
                            key: stored(prefix, &key),
                        });
                    }
                    earlier.retain(|&(p, key), _| !(p == prefix && key.starts_with(k)));
                }
            }
        }
        out
    }

    /// Takes the committed `ops` (in this layout) into the index.
    fn committed(&self, ops: &[WriteOp]) {
        let mut index = self.index();
        for op in ops {
            match op {
                WriteOp::Put {
                    table: Table::Tasks,
                    key,
                    ..
                } => {
                    if let Some((prefix, k)) = split_stored(key) {
                        index.entry(prefix).or_default().insert(k.to_string());
                    }
                }
                WriteOp::Delete {
                    table: Table::Tasks,
                    key,
                } => {
                    if let Some((prefix, k)) = split_stored(key)
                        && let Some(keys) = index.get_mut(&prefix)
                    {
                        keys.remove(k);
                    }
                }
                WriteOp::DeletePrefix {
                    table: Table::Tasks,
                    prefix,
                } => {
                    for keys in index.values_mut() {
                        keys.retain(|k| !k.starts_with(prefix.as_str()));
                    }
                }
                _ => {}
            }
        }
    }

    /// The tasks whose key as a node's store gives it (`<node>/<key>`) starts with `prefix`.
    fn list_tasks(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let Some((node, start)) = split_prefixed(prefix) else {
            // Not one node's: every task, under the keys the stores give them.
            let mut all: Vec<(String, Vec<u8>)> = self
                .inner
                .list(Table::Tasks, "")?
                .into_iter()
                .map(|(key, value)| match split_stored(&key) {
                    Some((node, k)) => (format!("{node}{k}"), value),
                    None => (key, value),
                })
                .filter(|(key, _)| key.starts_with(prefix))
                .collect();
            all.sort_by(|a, b| a.0.cmp(&b.0));
            return Ok(all);
        };
        let keys: Vec<String> = Self::keys_under(&self.index(), node, start)
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            // Deleted since the index was read: not listed.
            if let Some(value) = self.inner.get(Table::Tasks, &stored(node, &k))? {
                out.push((format!("{node}{k}"), value));
            }
        }
        Ok(out)
    }
}

impl Backend for NodeLayout {
    fn apply(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let ops = self.translate(ops);
        self.inner.apply(&ops)?;
        self.committed(&ops);
        Ok(())
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match split_prefixed(key) {
            Some((prefix, k)) if table == Table::Tasks => self.inner.get(table, &stored(prefix, k)),
            _ => self.inner.get(table, key),
        }
    }

    fn list(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        match table {
            Table::Tasks => self.list_tasks(prefix),
            _ => self.inner.list(table, prefix),
        }
    }

    fn count(&self, table: Table, prefix: &str) -> Result<u64, StoreError> {
        match (table, split_prefixed(prefix)) {
            (Table::Tasks, Some((node, start))) => {
                Ok(Self::keys_under(&self.index(), node, start).count() as u64)
            }
            (Table::Tasks, None) => Ok(self.list_tasks(prefix)?.len() as u64),
            _ => self.inner.count(table, prefix),
        }
    }

    fn wait_closed(&self) -> Box<dyn FnOnce() + Send> {
        self.inner.wait_closed()
    }
}
