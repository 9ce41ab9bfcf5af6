//! The writer thread of a store and the ways to it: every write of a store (or of the nodes
//! sharing one) goes to one thread, which takes whatever writes wait, applies them in one
//! transaction, commits, and only then tells each caller, on that thread.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Backend, Op, StoreError, WriteOp};
use crate::telemetry::StoreMetrics;

/// The most writes one commit takes; more wait for the next commit.
const MAX_BATCH: usize = 4096;

/// Writes waiting for their commit (all in the same one), with the caller to answer.
pub(super) struct PendingWrite {
    pub(super) ops: Vec<WriteOp>,
    pub(super) reply: OnCommit,
}

/// What runs on the writer thread once a write is committed (or failed). Dropped without
/// running (its write never reached a commit: the store shut down), it runs with
/// [`StoreError::Closed`], so that no caller is left waiting.
pub(super) struct OnCommit(pub(super) Option<Box<Told>>);

/// The call of an [`OnCommit`].
type Told = dyn FnOnce(Result<(), StoreError>) + Send;

impl OnCommit {
    pub(super) fn run(mut self, result: Result<(), StoreError>) {
        if let Some(call) = self.0.take() {
            call(result);
        }
    }
}

impl Drop for OnCommit {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            call(Err(StoreError::Closed));
        }
    }
}

/// A store's writes: they go straight to the writer thread, and their outcome is told by a call
/// on that thread. The store's actor writes through its own; a writer whose thread is busy (the
/// manager) takes one ([`OpenWriter`]) to skip the hops through the actor's mailbox.
///
/// Writes through a `Writer` and through the store's actor reach the writer thread in the order
/// they are sent (the actor sends when it handles a message).
#[derive(Clone)]
pub struct Writer {
    pub(super) writes: mpsc::UnboundedSender<PendingWrite>,
    /// The start of every key of its store in the backend: empty for a store of its own,
    /// `<node>/` for one node's part of a [`SharedStore`].
    pub(super) prefix: String,
}

impl Writer {
    /// Queues `ops` for the next commit, all in that one; `then` runs on the writer thread once
    /// they are durable (or failed). It must be quick: the next commit waits for it.
    pub fn write_then(
        &self,
        ops: Vec<Op>,
        then: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) {
        self.send(ops.into_iter().map(Op::into_inner).collect(), then);
    }

    /// [`Writer::write_then`] for ops already taken apart.
    pub(super) fn send(
        &self,
        ops: Vec<WriteOp>,
        then: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) {
        let ops = prefixed(&self.prefix, ops);
        let reply = OnCommit(Some(Box::new(then)));
        // A closed queue hands the write back: dropping it runs `then` with `Closed`.
        let _ = self.writes.send(PendingWrite { ops, reply });
    }
}

/// `ops` with `prefix` in front of every key.
fn prefixed(prefix: &str, mut ops: Vec<WriteOp>) -> Vec<WriteOp> {
    if !prefix.is_empty() {
        for op in &mut ops {
            let key = match op {
                WriteOp::Put { key, .. } | WriteOp::Delete { key, .. } => key,
                WriteOp::DeletePrefix { prefix, .. } => prefix,
            };
            key.insert_str(0, prefix);
        }
    }
    ops
}

/// The writer thread: take every waiting write, commit them together, answer everyone.
pub(super) fn write_loop(
    backend: Arc<dyn Backend>,
    mut queue: mpsc::UnboundedReceiver<PendingWrite>,
    metrics: &StoreMetrics,
) {
    let mut batch = Vec::new();
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut ops = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for write in batch.drain(..) {
            ops.extend(write.ops);
            replies.push(write.reply);
        }
        let began = std::time::Instant::now();
        let result = backend.apply(&ops);
        metrics.committed(replies.len(), began.elapsed().as_secs_f64());
        if let Err(e) = &result {
            log::error!("store commit of {} writes failed: {e}", ops.len());
        }
        for reply in replies {
            reply.run(result.clone());
        }
    }
}
