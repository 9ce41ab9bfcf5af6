//! The in-memory backend: the same interface as LMDB, gone when the process ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{Backend, StoreError, Table, WriteOp};

/// One ordered map per table, behind one lock (a write batch is applied atomically).
#[derive(Default)]
pub(crate) struct MemoryBackend {
    tables: Mutex<HashMap<Table, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryBackend {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Table, BTreeMap<String, Vec<u8>>>) -> T) -> T {
        // A panic while holding the lock cannot leave a half-applied batch (maps are only
        // inserted into), so a poisoned lock is still consistent.
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut tables)
    }
}

impl Backend for MemoryBackend {
    fn apply(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        self.with(|tables| {
            for op in ops {
                match op {
                    WriteOp::Put { table, key, value } => {
                        tables
                            .entry(*table)
                            .or_default()
                            .insert(key.clone(), value.clone());
                    }
                    WriteOp::Delete { table, key } => {
                        tables.entry(*table).or_default().remove(key);
                    }
                    WriteOp::DeletePrefix { table, prefix } => {
                        let map = tables.entry(*table).or_default();
                        let doomed: Vec<String> = map
                            .range(prefix.clone()..)
                            .map(|(k, _)| k)
                            .take_while(|k| k.starts_with(prefix.as_str()))
                            .cloned()
                            .collect();
                        for key in doomed {
                            map.remove(&key);
                        }
                    }
                }
            }
        });
        Ok(())
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(|t| t.get(&table).and_then(|m| m.get(key)).cloned()))
    }

    fn list(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self.with(|t| {
            t.get(&table)
                .map(|m| {
                    m.range(prefix.to_string()..)
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    fn count(&self, table: Table, prefix: &str) -> Result<u64, StoreError> {
        Ok(self.with(|t| {
            t.get(&table).map_or(0, |m| {
                m.range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .count() as u64
            })
        }))
    }

    fn wait_closed(&self) -> Box<dyn FnOnce() + Send> {
        Box::new(|| {})
    }
}
