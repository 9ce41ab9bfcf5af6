//! The store's messages: typed reads and writes of any [`Record`].

use std::marker::PhantomData;

use actix::prelude::*;

use super::{Record, Store, StoreError, WriteOp, Writer};

pub(crate) fn decode<R: Record>(key: &str, bytes: &[u8]) -> Result<R, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: R::TABLE,
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Stores a record, replacing any with the same key. Answered once the write is committed.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Put<R: Record>(pub R);

/// Handler for [`Put`].
impl<R: Record> Handler<Put<R>> for Store {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, Put(record): Put<R>, _: &mut Context<Self>) -> Self::Result {
        match Op::put(&record) {
            Ok(Op(op)) => self.write(vec![op]),
            Err(err) => Box::pin(async move { Err(err) }),
        }
    }
}

/// Reads the record under a key.
#[derive(Message)]
#[rtype(result = "Result<Option<R>, StoreError>")]
pub struct Get<R: Record> {
    /// The key.
    pub key: String,
    _record: PhantomData<R>,
}

impl<R: Record> Get<R> {
    /// Asks for the `R` stored under `key`.
    pub fn new(key: impl ToString) -> Self {
        Get {
            key: key.to_string(),
            _record: PhantomData,
        }
    }
}

/// Handler for [`Get`].
impl<R: Record> Handler<Get<R>> for Store {
    type Result = ResponseFuture<Result<Option<R>, StoreError>>;

    fn handle(&mut self, msg: Get<R>, _: &mut Context<Self>) -> Self::Result {
        self.read(move |scope| {
            scope
                .get(R::TABLE, &msg.key)?
                .map(|bytes| decode(&msg.key, &bytes))
                .transpose()
        })
    }
}

/// Reads every record of a type, in key order.
#[derive(Message)]
#[rtype(result = "Result<Vec<R>, StoreError>")]
pub struct List<R: Record>(PhantomData<R>);

impl<R: Record> Default for List<R> {
    fn default() -> Self {
        List(PhantomData)
    }
}

impl<R: Record> List<R> {
    /// Asks for every `R`.
    pub fn all() -> Self {
        Self::default()
    }
}

/// Handler for [`List`].
impl<R: Record> Handler<List<R>> for Store {
    type Result = ResponseFuture<Result<Vec<R>, StoreError>>;

    fn handle(&mut self, _: List<R>, _: &mut Context<Self>) -> Self::Result {
        self.read(|scope| {
            scope
                .list(R::TABLE)?
                .into_iter()
                .map(|(key, bytes)| decode(&key, &bytes))
                .collect()
        })
    }
}

/// Counts the records of a type.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct Count<R: Record>(PhantomData<R>);

impl<R: Record> Count<R> {
    /// Asks how many `R` there are.
    pub fn all() -> Self {
        Count(PhantomData)
    }
}

/// Handler for [`Count`].
impl<R: Record> Handler<Count<R>> for Store {
    type Result = ResponseFuture<Result<u64, StoreError>>;

    fn handle(&mut self, _: Count<R>, _: &mut Context<Self>) -> Self::Result {
        self.read(|scope| scope.count(R::TABLE))
    }
}

/// Removes the record under a key (nothing happens if there is none). Answered once committed.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Delete<R: Record> {
    /// The key.
    pub key: String,
    _record: PhantomData<R>,
}

impl<R: Record> Delete<R> {
    /// Asks to delete the `R` under `key`.
    pub fn new(key: impl ToString) -> Self {
        Delete {
            key: key.to_string(),
            _record: PhantomData,
        }
    }
}

/// Handler for [`Delete`].
impl<R: Record> Handler<Delete<R>> for Store {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: Delete<R>, _: &mut Context<Self>) -> Self::Result {
        self.write(vec![WriteOp::Delete {
            table: R::TABLE,
            key: msg.key,
        }])
    }
}

/// Stops the store, answering once its files are closed (so the directory can be opened again).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

/// Handler for [`Close`].
impl Handler<Close> for Store {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) -> Self::Result {
        // One node's part of a shared store leaves the files to the others.
        let wait = if self.writer.prefix.is_empty() {
            self.backend.wait_closed()
        } else {
            Box::new(|| {})
        };
        ctx.stop();
        Box::pin(async move {
            let _ = tokio::task::spawn_blocking(wait).await;
        })
    }
}

/// How many commits the store has made since it opened (each may hold many writes).
#[derive(Message)]
#[rtype(result = "u64")]
pub struct CommitCount;

/// Handler for [`CommitCount`].
impl Handler<CommitCount> for Store {
    type Result = u64;

    fn handle(&mut self, _: CommitCount, _: &mut Context<Self>) -> u64 {
        self.metrics.commits()
    }
}

/// One write of a [`Batch`], already encoded.
#[derive(Debug)]
pub struct Op(WriteOp);

impl Op {
    pub(super) fn into_inner(self) -> WriteOp {
        self.0
    }

    /// Stores `record`, replacing any with the same key.
    pub fn put<R: Record>(record: &R) -> Result<Op, StoreError> {
        // Sized for a task (~600 bytes as JSON): one allocation, no growth on the way.
        let mut value = Vec::with_capacity(1024);
        serde_json::to_writer(&mut value, record).map_err(|e| StoreError::Backend {
            operation: "encode",
            reason: e.to_string(),
        })?;
        Ok(Op(WriteOp::Put {
            table: R::TABLE,
            key: record.key(),
            value,
        }))
    }

    /// Removes the `R` under `key`.
    pub fn delete<R: Record>(key: impl ToString) -> Op {
        Op(WriteOp::Delete {
            table: R::TABLE,
            key: key.to_string(),
        })
    }

    /// Removes every `R` whose key starts with `prefix`.
    pub fn delete_prefix<R: Record>(prefix: impl ToString) -> Op {
        Op(WriteOp::DeletePrefix {
            table: R::TABLE,
            prefix: prefix.to_string(),
        })
    }
}

/// Applies several writes in one transaction: all of them are committed, or none. Answered once
/// committed.
#[derive(Message, Debug)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Batch(pub Vec<Op>);

/// Handler for [`Batch`].
impl Handler<Batch> for Store {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, Batch(ops): Batch, _: &mut Context<Self>) -> Self::Result {
        self.write(ops.into_iter().map(Op::into_inner).collect())
    }
}

/// This store's writes without its actor: a [`Writer`].
#[derive(Message, Debug)]
#[rtype(result = "Writer")]
pub struct OpenWriter;

/// Handler for [`OpenWriter`].
impl Handler<OpenWriter> for Store {
    type Result = MessageResult<OpenWriter>;

    fn handle(&mut self, _: OpenWriter, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.writer.clone())
    }
}
