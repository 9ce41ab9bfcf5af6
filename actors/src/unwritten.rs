//! What readers may see while a write is under way.
//!
//! Manager and worker apply a change to their working copy at once (so the next decision sees it)
//! and write it to the store in the background. Until that write is committed, readers through the
//! API must still see the last *durable* version. [`Unwritten`] keeps that version for each record
//! with writes in flight, and nothing for the others: it costs memory only for what is being
//! written now.

use std::collections::HashMap;
use std::hash::Hash;

/// The last durable version of each record that has writes in flight.
#[derive(Debug)]
pub struct Unwritten<K, V> {
    /// For each such record: its last durable version (`None`: not durable at all yet) and how
    /// many of its writes are in flight.
    durable: HashMap<K, (Option<V>, u32)>,
}

impl<K, V> Default for Unwritten<K, V> {
    fn default() -> Self {
        Unwritten {
            durable: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Unwritten<K, V> {
    /// To be called as the working copy of `key` changes from `replaced` (its version until
    /// now, durable unless writes are in flight) to a version that is being written. The
    /// replaced version is handed over, not copied: it is kept only if no write of `key` was in
    /// flight.
    pub fn begin(&mut self, key: &K, replaced: Option<V>) {
        self.durable
            .entry(key.clone())
            .and_modify(|(_, n)| *n += 1)
            .or_insert((replaced, 1));
    }

    /// A write of `key` begun earlier is committed (or failed for good): `version` is what it
    /// wrote (`None` for a deletion), copied only if more writes of `key` are in flight. Writes
    /// of one key commit in the order they began.
    pub fn done(&mut self, key: &K, version: Option<&V>) {
        if let Some((durable, n)) = self.durable.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.durable.remove(key);
            } else {
                *durable = version.cloned();
            }
        }
    }

    /// Forgets a write that was never sent (the change was undone before anyone could see it).
    pub fn abandon(&mut self, key: &K) {
        if let Some((_, n)) = self.durable.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.durable.remove(key);
            }
        }
    }

    /// What readers may see of `key`, given its working copy `current`.
    pub fn visible<'a>(&'a self, key: &K, current: Option<&'a V>) -> Option<&'a V> {
        match self.durable.get(key) {
            Some((durable, _)) => durable.as_ref(),
            None => current,
        }
    }

    /// Whether `key` has writes in flight.
    pub fn is_writing(&self, key: &K) -> bool {
        self.durable.contains_key(key)
    }

    /// How many records have writes in flight.
    pub fn len(&self) -> usize {
        self.durable.len()
    }

    /// Whether no record has a write in flight.
    pub fn is_empty(&self) -> bool {
        self.durable.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_the_durable_version_until_every_write_is_done() {
        let mut u: Unwritten<u32, &str> = Unwritten::default();
        // A new record is invisible until its first write commits.
        u.begin(&1, None);
        assert_eq!(u.visible(&1, Some(&"a")), None);
        u.done(&1, Some(&"a"));
        assert_eq!(u.visible(&1, Some(&"a")), Some(&"a"));
        // Two writes in flight: the first commit shows its version, the second the last.
        u.begin(&1, Some("a"));
        u.begin(&1, Some("b"));
        assert_eq!(u.visible(&1, Some(&"c")), Some(&"a"));
        u.done(&1, Some(&"b"));
        assert_eq!(u.visible(&1, Some(&"c")), Some(&"b"));
        u.done(&1, Some(&"c"));
        assert_eq!(u.visible(&1, Some(&"c")), Some(&"c"));
        assert!(u.is_empty());
    }
}
