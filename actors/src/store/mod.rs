//! The store actor: tasks, task events and nodes, kept in memory or durably in LMDB.
//!
//! Callers send typed messages (`Put`, `Get`, `List`, `Count`, `Delete`) for any [`Record`]. Both
//! backends sit behind one [`Backend`] interface and hold JSON bytes, so a record read back from
//! either is the record that was written.
//!
//! **Writes are group-committed.** Every write goes to one writer thread, which drains whatever
//! writes are waiting, applies them in one transaction, commits, and only then answers each caller.
//! A caller never hears "ok" before its write is durable, and a burst of concurrent writers costs
//! one commit (one fsync) rather than one each (`writer.rs`).
//!
//! **LMDB calls never run on the async executor**: writes run on the writer thread, reads on
//! tokio's blocking pool.

mod layout;
mod lmdb;
mod memory;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::telemetry::StoreMetrics;
use actix::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

pub use lmdb::FORMAT_VERSION;
pub use writer::Writer;
use writer::{PendingWrite, write_loop};

/// What can go wrong in the store. Every variant carries text rather than a source error so that
/// one failed commit can be reported to every caller whose write it held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The data directory or its files could not be opened.
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The data directory was written by another version of Cube's store format.
    #[error(
        "the store at {path} has format version {found}, this cube reads version {expected}; use a data directory of this version or move this one aside"
    )]
    Version {
        /// The data directory.
        path: PathBuf,
        /// The version found on disk.
        found: String,
        /// The version this build reads.
        expected: u32,
    },
    /// A stored value does not decode as the record it should be.
    #[error("corrupt {table} record `{key}` in the store: {reason}")]
    Corrupt {
        /// The table.
        table: Table,
        /// The record's key.
        key: String,
        /// The decoding error.
        reason: String,
    },
    /// A read or a commit failed.
    #[error("store {operation} failed: {reason}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The store actor has stopped.
    #[error("the store is shut down")]
    Closed,
}

impl From<MailboxError> for StoreError {
    fn from(_: MailboxError) -> Self {
        StoreError::Closed
    }
}

/// The tables of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Tasks, keyed by task id.
    Tasks,
    /// Task events, keyed by event id.
    Events,
    /// Nodes, keyed by node name.
    Nodes,
    /// The manager's enrolled workers (identity hash and call credential), keyed by node name.
    Enrollments,
    /// Small facts about the store itself (format version, a worker's feed head and epoch).
    Meta,
}

impl Table {
    /// Every table of records (`Meta` is apart: it also holds the format version).
    pub const ALL: [Table; 4] = [
        Table::Tasks,
        Table::Events,
        Table::Nodes,
        Table::Enrollments,
    ];

    /// The table's name (the LMDB database name).
    pub fn name(self) -> &'static str {
        match self {
            Table::Tasks => "tasks",
            Table::Events => "events",
            Table::Nodes => "nodes",
            Table::Enrollments => "enrollments",
            Table::Meta => "meta",
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A value kept in the store: it knows its table and its key.
pub trait Record: Serialize + DeserializeOwned + Send + Unpin + 'static {
    /// The table records of this type live in.
    const TABLE: Table;
    /// The record's key in its table.
    fn key(&self) -> String;
}

/// Tasks are keyed `<submit time, 16 hex digits of nanoseconds>.<task id>`: in arrival order, so
/// that the tasks being written (the recent ones) share the last pages of the table and a commit
/// dirties few pages however long the history is. A task's submit time never changes.
impl Record for crate::task::Task {
    const TABLE: Table = Table::Tasks;
    fn key(&self) -> String {
        task_key(self.submit_time, &self.id)
    }
}

/// The key of the task with this submit time and ID (see [`Record::key`] for tasks).
fn task_key(
    submit_time: Option<chrono::DateTime<chrono::Utc>>,
    id: &crate::task::TaskId,
) -> String {
    let nanos = submit_time.and_then(|t| t.timestamp_nanos_opt());
    let nanos = nanos.unwrap_or(0).max(0) as u64;
    // Written by hand: `format!` was 1% of a busy manager's time, most of it in `fmt`.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(16 + 1 + uuid::fmt::Hyphenated::LENGTH);
    key.extend(
        (0..16)
            .rev()
            .map(|i| HEX[(nanos >> (4 * i)) as usize & 0xf] as char),
    );
    key.push('.');
    push_id(&mut key, id);
    key
}

/// Appends `id` to `key`, hyphenated, lower case (as `Display` writes it, without `fmt`).
fn push_id(key: &mut String, id: &uuid::Uuid) {
    key.push_str(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
}

/// Events are keyed `<task key>/<event id>`: in arrival order too, and a task's events are
/// removed with it (by prefix, see [`events_of`]).
impl Record for crate::task::StoredEvent {
    const TABLE: Table = Table::Events;
    fn key(&self) -> String {
        let mut key = task_key(self.task.submit_time, &self.task.id);
        key.push('/');
        push_id(&mut key, &self.id);
        key
    }
}

/// The key prefix of the events of `task`.
pub fn events_of(task: &crate::task::Task) -> String {
    format!("{}/", task.key())
}

impl Record for crate::node::Node {
    const TABLE: Table = Table::Nodes;
    fn key(&self) -> String {
        self.name.clone()
    }
}

/// One change to the store, already encoded.
#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    Put {
        table: Table,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: String,
    },
    DeletePrefix {
        table: Table,
        prefix: String,
    },
}

/// Where the bytes live: the same interface for memory and LMDB.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Applies all `ops` in one transaction and makes them durable before returning.
    fn apply(&self, ops: &[WriteOp]) -> Result<(), StoreError>;
    /// The value under `key`.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every `(key, value)` of `table` whose key starts with `prefix`, in key order.
    fn list(&self, table: Table, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// The number of records in `table` whose key starts with `prefix`.
    fn count(&self, table: Table, prefix: &str) -> Result<u64, StoreError>;
    /// Waits until the backend's files are closed (after the last handle is dropped).
    fn wait_closed(&self) -> Box<dyn FnOnce() + Send>;
}

/// Which backend a store uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// Everything in memory; lost when the process ends.
    Memory,
    /// Durable, in an LMDB environment in this directory.
    Lmdb {
        /// The data directory (created 0700 if missing).
        dir: PathBuf,
        /// The largest the data file may grow to, in bytes (the file is sparse).
        map_size: usize,
    },
}

/// The store actor. Cheap to talk to from any actor; see the module docs for how it works.
pub struct Store {
    /// Reads go straight to the backend (on the blocking pool).
    backend: Arc<dyn Backend>,
    /// Writes go to the writer thread, in the order the actor received them; dropping the last
    /// writer ends the thread. Its queue is unbounded: the actor's bounded mailbox is the
    /// back-pressure.
    writer: Writer,
    /// The writer thread's commits: how many, how long, how many writes each.
    metrics: StoreMetrics,
}

/// One backend and one writer thread shared by many stores, each a key prefix of it: the nodes
/// of one `cube up` (one LMDB environment, one commit for the writes of all of them, whatever
/// their number).
#[derive(Clone)]
pub struct SharedStore {
    backend: Arc<dyn Backend>,
    writes: mpsc::UnboundedSender<PendingWrite>,
    metrics: StoreMetrics,
}

impl SharedStore {
    /// Opens the backend of `kind` and starts its writer thread.
    pub fn open(kind: &StoreKind) -> Result<SharedStore, StoreError> {
        SharedStore::open_with(kind, StoreMetrics::default())
    }

    /// Opens the backend of `kind` and starts its writer thread, which counts its commits in
    /// `metrics`.
    pub fn open_with(kind: &StoreKind, metrics: StoreMetrics) -> Result<SharedStore, StoreError> {
        SharedStore::start_writer(open_backend(kind)?, metrics)
    }

    /// [`SharedStore::open_with`] for the nodes of one process: their tasks lie in submit
    /// order across nodes, so that a commit's writes share pages ([`layout::NodeLayout`]).
    pub fn open_nodes_with(
        kind: &StoreKind,
        metrics: StoreMetrics,
    ) -> Result<SharedStore, StoreError> {
        let backend = layout::NodeLayout::open(open_backend(kind)?)?;
        SharedStore::start_writer(Arc::new(backend), metrics)
    }

    fn start_writer(
        backend: Arc<dyn Backend>,
        metrics: StoreMetrics,
    ) -> Result<SharedStore, StoreError> {
        let (writes, queue) = mpsc::unbounded_channel();
        let writer_backend = Arc::clone(&backend);
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("cube-store-writer".into())
            .spawn(move || write_loop(writer_backend, queue, &writer_metrics))
            .map_err(|e| StoreError::Open {
                path: PathBuf::from("<writer thread>"),
                reason: e.to_string(),
            })?;
        Ok(SharedStore {
            backend,
            writes,
            metrics,
        })
    }

    /// The store of node `name`: its records under the key prefix `<name>/`. Must be called
    /// inside an actix system.
    pub fn node(&self, name: &str) -> Addr<Store> {
        self.start(format!("{name}/"))
    }

    /// [`SharedStore::node`], its actor on `arbiter`: on the thread of the node that uses it,
    /// so that its messages and answers do not cross threads.
    pub fn node_on(&self, name: &str, arbiter: &ArbiterHandle) -> Addr<Store> {
        let store = self.store(format!("{name}/"));
        Store::start_in_arbiter(arbiter, move |_| store)
    }

    /// The whole of it as one store (no key prefix). Must be called inside an actix system.
    pub fn whole(&self) -> Addr<Store> {
        self.start(String::new())
    }

    fn start(&self, prefix: String) -> Addr<Store> {
        self.store(prefix).start()
    }

    fn store(&self, prefix: String) -> Store {
        Store {
            backend: Arc::clone(&self.backend),
            writer: Writer {
                writes: self.writes.clone(),
                prefix,
            },
            metrics: self.metrics.clone(),
        }
    }
}

impl Store {
    /// Opens a store of `kind` and starts its actor. Must be called inside an actix system.
    pub fn open(kind: &StoreKind) -> Result<Addr<Store>, StoreError> {
        Ok(SharedStore::open(kind)?.whole())
    }

    /// Opens an in-memory store.
    pub fn memory() -> Addr<Store> {
        Store::open(&StoreKind::Memory).expect("an in-memory store always opens")
    }

    /// Opens a durable store in `dir` with a 1 GiB map.
    pub fn lmdb(dir: &Path) -> Result<Addr<Store>, StoreError> {
        Store::open(&StoreKind::Lmdb {
            dir: dir.to_path_buf(),
            map_size: 1 << 30,
        })
    }
}

/// The backend of `kind`, open.
fn open_backend(kind: &StoreKind) -> Result<Arc<dyn Backend>, StoreError> {
    Ok(match kind {
        StoreKind::Memory => Arc::new(memory::MemoryBackend::default()),
        StoreKind::Lmdb { dir, map_size } => Arc::new(lmdb::LmdbBackend::open(dir, *map_size)?),
    })
}

impl Actor for Store {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Store {
    /// Queues `ops` for the next commit, all in that one (now, so writes keep the order they
    /// arrived in), and returns a future that waits for that commit.
    fn write(&self, ops: Vec<WriteOp>) -> ResponseFuture<Result<(), StoreError>> {
        let (reply, done) = oneshot::channel();
        // A caller that gave up waiting is no reason to stop.
        self.writer
            .send(ops, move |result| drop(reply.send(result)));
        Box::pin(async move { done.await.map_err(|_| StoreError::Closed)? })
    }

    /// Runs a read on the blocking pool, within this store's keys.
    fn read<T, F>(&self, f: F) -> ResponseFuture<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(Scope<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let backend = Arc::clone(&self.backend);
        let prefix = self.writer.prefix.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                f(Scope {
                    backend: &*backend,
                    prefix: &prefix,
                })
            })
            .await
            .map_err(|e| StoreError::Backend {
                operation: "read",
                reason: e.to_string(),
            })?
        })
    }
}

/// The backend as one store sees it: its keys, without their prefix.
struct Scope<'a> {
    backend: &'a dyn Backend,
    prefix: &'a str,
}

impl Scope<'_> {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if self.prefix.is_empty() {
            return self.backend.get(table, key);
        }
        self.backend.get(table, &format!("{}{key}", self.prefix))
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut items = self.backend.list(table, self.prefix)?;
        if !self.prefix.is_empty() {
            for (key, _) in &mut items {
                key.drain(..self.prefix.len());
            }
        }
        Ok(items)
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        self.backend.count(table, self.prefix)
    }
}

mod messages;

use messages::decode;
pub use messages::*;

#[cfg(test)]
mod tests;
