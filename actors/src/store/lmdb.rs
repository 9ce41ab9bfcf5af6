//! The durable backend: one LMDB environment per data directory, through heed.
//!
//! Architecture invariant: this is the only module that uses heed.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use heed::types::{Bytes, Str};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};

use super::{Backend, Record, StoreError, Table, WriteOp};

/// The version of the on-disk layout. An older directory is migrated when opened (see
/// `LmdbBackend::migrate`); a newer one is refused.
///
/// - 1: tasks (keyed by task id), events (keyed by event id) and nodes.
/// - 2: tasks keyed `<submit time>.<task id>` and events `<task key>/<event id>`, in arrival
///   order (see the `Record` impls); `meta` may also hold a worker's feed head.
/// - 3: in the store shared by the nodes of one process, a node's tasks are keyed
///   `<task key>@<node>` rather than `<node>/<task key>` (`store::layout`, which moves them
///   when it opens the store); nothing else changed, and a store of one node is as in 2. The
///   number tells an older Cube, which would not find those tasks, to refuse the directory.
pub const FORMAT_VERSION: u32 = 3;

/// The key in the `meta` database that holds [`FORMAT_VERSION`].
const VERSION_KEY: &str = "format_version";

type Db = Database<'static, Str, Bytes>;

/// An open LMDB environment with one database per table plus `meta`.
pub(crate) struct LmdbBackend {
    env: Env,
    path: PathBuf,
    meta: Db,
    tables: [Db; 4],
}

impl LmdbBackend {
    /// Opens (creating if needed) the store in `dir`.
    pub(crate) fn open(dir: &Path, map_size: usize) -> Result<LmdbBackend, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.to_path_buf(),
            reason,
        };
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| open_err(format!("cannot create the data directory: {e}")))?;
        } else if !dir.is_dir() {
            return Err(open_err("not a directory".into()));
        }
        // SAFETY: LMDB maps the data file into memory; modifying it from outside while it is open
        // is undefined behaviour. Cube owns its data directory and opens it once per process.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(map_size)
                .max_dbs(8)
                .open(dir)
        }
        .map_err(|e| open_err(describe(e)))?;
        for file in ["data.mdb", "lock.mdb"] {
            let file = dir.join(file);
            if file.exists() {
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                    .map_err(|e| open_err(format!("cannot restrict {}: {e}", file.display())))?;
            }
        }
        let wtxn = env.write_txn().map_err(|e| open_err(describe(e)))?;
        let (meta, tables) = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> heed::Result<_> {
                let meta: Database<Str, Bytes> = opener.create_database(wtxn, Some("meta"))?;
                let mut tables = Vec::new();
                for table in Table::ALL {
                    tables.push(opener.create_database::<Str, Bytes>(wtxn, Some(table.name()))?);
                }
                let tables: [_; 4] = tables.try_into().expect("one database per table");
                Ok(CommitOrAbort::<_, ()>::Commit((meta, tables)))
            })
            .map_err(|e| open_err(describe(e)))?
            .unwrap_commit();
        let backend = LmdbBackend {
            env,
            path: dir.to_path_buf(),
            meta,
            tables,
        };
        backend.check_version()?;
        Ok(backend)
    }

    /// Writes the format version into a new store, or checks the one found.
    fn check_version(&self) -> Result<(), StoreError> {
        let rtxn = self.env.read_txn().map_err(|e| self.fail("read", e))?;
        let found = self
            .meta
            .get(&rtxn, VERSION_KEY)
            .map_err(|e| self.fail("read", e))?
            .map(|v| String::from_utf8_lossy(v).into_owned());
        drop(rtxn);
        match found {
            Some(v) if v == FORMAT_VERSION.to_string() => Ok(()),
            Some(v) if v == "1" => self.migrate(1),
            Some(v) if v == "2" => self.migrate(2),
            Some(found) => Err(StoreError::Version {
                path: self.path.clone(),
                found,
                expected: FORMAT_VERSION,
            }),
            None => self.set_version(&FORMAT_VERSION.to_string()),
        }
    }

    /// Brings a directory of format `from` to [`FORMAT_VERSION`] in one transaction: either the
    /// whole migration is committed, or nothing changed and the error names the path.
    fn migrate(&self, from: u32) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn().map_err(|e| self.fail("write", e))?;
        if from < 2 {
            self.rekey::<crate::task::Task>(&mut wtxn)?;
            self.rekey::<crate::task::StoredEvent>(&mut wtxn)?;
        }
        self.meta
            .put(
                &mut wtxn,
                VERSION_KEY,
                FORMAT_VERSION.to_string().as_bytes(),
            )
            .map_err(|e| self.fail("write", e))?;
        wtxn.commit().map_err(|e| self.fail("commit", e))?;
        log::info!(
            "store at {}: migrated from format version {from} to {FORMAT_VERSION}",
            self.path.display()
        );
        Ok(())
    }

    /// Stores every record of `R` under its current key ([`Record::key`]).
    fn rekey<R: Record>(&self, wtxn: &mut heed::RwTxn) -> Result<(), StoreError> {
        let db = self.db(R::TABLE);
        let old: Vec<(String, Vec<u8>)> = db
            .iter(wtxn)
            .map_err(|e| self.fail("read", e))?
            .map(|item| item.map(|(k, v)| (k.to_string(), v.to_vec())))
            .collect::<Result<_, _>>()
            .map_err(|e| self.fail("read", e))?;
        for (key, value) in old {
            let record: R = super::decode(&key, &value)?;
            let new_key = record.key();
            if new_key != key {
                db.delete(wtxn, &key).map_err(|e| self.fail("write", e))?;
                db.put(wtxn, &new_key, &value)
                    .map_err(|e| self.fail("write", e))?;
            }
        }
        Ok(())
    }

    fn set_version(&self, version: &str) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn().map_err(|e| self.fail("write", e))?;
        self.meta
            .put(&mut wtxn, VERSION_KEY, version.as_bytes())
            .map_err(|e| self.fail("write", e))?;
        wtxn.commit().map_err(|e| self.fail("commit", e))
    }

    fn db(&self, table: Table) -> Db {
        match table {
            Table::Tasks => self.tables[0],
            Table::Events => self.tables[1],
            Table::Nodes => self.tables[2],
            Table::Enrollments => self.tables[3],
            Table::Meta => self.meta,
        }
    }

    fn delete_prefix(
        &self,
        wtxn: &mut heed::RwTxn,
        table: Table,
        prefix: &str,
    ) -> heed::Result<()> {
        let mut iter = self.db(table).prefix_iter_mut(wtxn, prefix)?;
        while iter.next().transpose()?.is_some() {
            // SAFETY: no reference into the database is kept across the deletion.
            unsafe { iter.del_current()? };
        }
        Ok(())
    }

    fn fail(&self, operation: &'static str, e: heed::Error) -> StoreError {
        StoreError::Backend {
            operation,
            reason: format!("{} (store at {})", describe(e), self.path.display()),
        }
    }
}

/// heed's errors, in words a user can act on.
fn describe(e: heed::Error) -> String {
    match e {
        heed::Error::Mdb(heed::MdbError::Invalid) => {
            "the data file is not an LMDB file (corrupt, or written by something else)".into()
        }
        heed::Error::Mdb(heed::MdbError::VersionMismatch) => {
            "the data file was written by an incompatible LMDB version".into()
        }
        heed::Error::Mdb(heed::MdbError::Corrupted) => "the data file is corrupt".into(),
        heed::Error::Mdb(heed::MdbError::MapFull) => "the store is full: raise its map size".into(),
        heed::Error::EnvAlreadyOpened => "the store is already open in this process".into(),
        other => other.to_string(),
    }
}

impl Backend for LmdbBackend {
    fn apply(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn().map_err(|e| self.fail("write", e))?;
        for op in ops {
            match op {
                WriteOp::Put { table, key, value } => self.db(*table).put(&mut wtxn, key, value),
                WriteOp::Delete { table, key } => self.db(*table).delete(&mut wtxn, key).map(drop),
                WriteOp::DeletePrefix { table, prefix } => {
                    self.delete_prefix(&mut wtxn, *table, prefix)
                }
            }
            .map_err(|e| self.fail("write", e))?;
        }
        wtxn.commit().map_err(|e| self.fail("commit", e))
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rtxn = self.env.read_txn().map_err(|e| self.fail("read", e))?;
        let value = self
            .db(table)
            .get(&rtxn, key)
            .map_err(|e| self.fail("read", e))?;
        Ok(value.map(<[u8]>::to_vec))
    }

    fn list(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rtxn = self.env.read_txn().map_err(|e| self.fail("read", e))?;
        // LMDB takes no empty key: the whole table is a plain iteration.
        let pair = |item: heed::Result<(&str, &[u8])>| {
            item.map(|(k, v)| (k.to_string(), v.to_vec()))
                .map_err(|e| self.fail("read", e))
        };
        let db = self.db(table);
        if prefix.is_empty() {
            let iter = db.iter(&rtxn).map_err(|e| self.fail("read", e))?;
            iter.map(pair).collect()
        } else {
            let iter = db
                .prefix_iter(&rtxn, prefix)
                .map_err(|e| self.fail("read", e))?;
            iter.map(pair).collect()
        }
    }

    fn count(&self, table: Table, prefix: &str) -> Result<u64, StoreError> {
        let rtxn = self.env.read_txn().map_err(|e| self.fail("read", e))?;
        if prefix.is_empty() {
            return self.db(table).len(&rtxn).map_err(|e| self.fail("read", e));
        }
        let iter = self
            .db(table)
            .prefix_iter(&rtxn, prefix)
            .map_err(|e| self.fail("read", e))?;
        let mut n = 0;
        for item in iter {
            item.map_err(|e| self.fail("read", e))?;
            n += 1;
        }
        Ok(n)
    }

    fn wait_closed(&self) -> Box<dyn FnOnce() + Send> {
        let closing = self.env.clone().prepare_for_closing();
        Box::new(move || closing.wait())
    }
}

#[cfg(test)]
pub(crate) fn set_version_for_test(dir: &Path, version: &str) {
    let backend = LmdbBackend::open(dir, 1 << 24).unwrap();
    backend.set_version(version).unwrap();
    let wait = backend.wait_closed();
    drop(backend);
    wait();
}
