//! The manager's writes: every change to a task goes to the store through the [`Outbox`].
//!
//! The changes made while the manager handles its mailbox are queued, and sent to the store as
//! one batch once the messages already waiting are handled (a [`Flush`] message behind them).
//! A batch is one store message, one commit (it may share that commit with other stores' writes)
//! and one answer; each change's continuation then runs on the manager, in the order the changes
//! were made. Under load a batch holds the changes of dozens of tasks, where one message, one
//! spawned wait and one cross-thread wake-up each used to cost more than the change itself.
//!
//! Every task write goes through here, so the writes of one task reach the store in the order
//! they were made.
//!
//! A batch goes straight to the store's writer thread (a [`Writer`], not the store's actor), and
//! that thread queues the continuations back to the manager as one message as soon as the
//! commit is done. A write may also carry an early answer ([`Manager::commit_admission`]'s
//! 201), told on the writer thread right after: it does not wait for the manager's turn.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::turn::Resume;
use super::{Change, Manager, ManagerError};
use crate::store::{Op, StoreError, events_of};
use crate::task::{StoredEvent, Task};

/// What runs on the manager once a write is durable (or failed).
type Then = dyn FnOnce(&mut Manager, Result<(), ManagerError>, &mut Context<Manager>) + Send;

/// What is told on the store's writer thread once a write is durable, after the manager's
/// continuations are queued (so a caller told and asking again finds the change applied).
type Early = dyn FnOnce() + Send;

/// The writes queued since the last flush, with what waits on them.
#[derive(Default)]
pub(super) struct Outbox {
    /// Every op of the queued writes, in the order they were made.
    ops: Vec<Op>,
    /// The continuation of each queued write.
    then: Vec<Box<Then>>,
    /// The early answers of the queued writes, told only if their batch is durable.
    early: Vec<Box<Early>>,
    /// A [`Flush`] is in the mailbox.
    flush_queued: bool,
}

/// Sends the queued writes to the store (the manager sends it to itself, behind the messages
/// whose writes it batches).
pub(super) struct Flush;

impl Message for Flush {
    type Result = ();
}

impl Handler<Flush> for Manager {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }
}

/// The write of a change that keeps its task (a removal is written by
/// [`Manager::commit_removal_then`]).
pub(super) fn ops_of(change: &Change) -> Result<Vec<Op>, StoreError> {
    match &change.after {
        Some(task) => Op::put(task).map(|op| vec![op]),
        None => Err(StoreError::Backend {
            operation: "encode",
            reason: format!("the removal of task {} was not given its task", change.task),
        }),
    }
}

impl Manager {
    /// Queues `ops` for the next batch; `then` runs on the manager once they are durable (or
    /// failed). Ops that could not be encoded fail `then` alone, through the mailbox.
    fn queue_write(
        &mut self,
        ops: Result<Vec<Op>, StoreError>,
        ctx: &Context<Self>,
        then: Box<Then>,
    ) {
        match ops {
            Ok(ops) => {
                self.outbox.ops.extend(ops);
                self.outbox.then.push(then);
                if !self.outbox.flush_queued {
                    self.outbox.flush_queued = true;
                    ctx.address().do_send(Flush);
                }
            }
            Err(e) => Resume::send(&ctx.address(), move |act, ctx| {
                then(act, Err(e.into()), ctx)
            }),
        }
    }

    /// Sends the queued writes to the store as one batch. Once it is durable (or failed), the
    /// writer thread sends their continuations back to the manager, in order, in one message,
    /// then tells the early answers.
    pub(super) fn flush(&mut self, ctx: &mut Context<Self>) {
        self.outbox.flush_queued = false;
        if self.outbox.then.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut self.outbox.ops);
        let waiting = std::mem::take(&mut self.outbox.then);
        let early = std::mem::take(&mut self.outbox.early);
        let manager = ctx.address();
        // Sent now: batches reach the store in the order they were flushed.
        self.writer.write_then(ops, move |res| {
            let durable = res.is_ok();
            let res = res.map_err(ManagerError::from);
            Resume::send(&manager, move |act, ctx| {
                for then in waiting {
                    then(act, res.clone(), ctx);
                }
            });
            if durable {
                for tell in early {
                    tell();
                }
            }
        });
    }

    /// Runs `then` once every write queued so far is durable (`true`) or one failed (`false`).
    /// Either way it runs after the failures of writes that could not be encoded, which go
    /// through the mailbox.
    pub(super) fn after_queued(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Manager, bool, &mut Context<Manager>) + Send + 'static,
    ) {
        if self.outbox.then.is_empty() {
            // Nothing to wait for but those failures: behind them in the mailbox.
            Resume::send(&ctx.address(), move |act, ctx| then(act, true, ctx));
            return;
        }
        // Queued last, in the same batch as the writes before it: it runs after theirs.
        self.queue_write(
            Ok(Vec::new()),
            ctx,
            Box::new(move |act, res, ctx| then(act, res.is_ok(), ctx)),
        );
    }

    /// Writes `change` in one commit; once durable, readers may see it. A removal is written
    /// by [`Manager::commit_removal_then`].
    pub(super) fn commit(
        &mut self,
        change: Change,
        ctx: &Context<Self>,
    ) -> impl ActorFuture<Self, Output = Result<(), ManagerError>> + use<> {
        let (done, outcome) = oneshot::channel();
        self.commit_then(change, ctx, move |_, res, _| {
            let _ = done.send(res);
        });
        async move { outcome.await.unwrap_or(Err(ManagerError::Closed)) }.into_actor(self)
    }

    /// Writes the removal of `task` (with its events), then runs `then` on the manager with the
    /// outcome.
    pub(super) fn commit_removal_then(
        &mut self,
        change: Change,
        task: &Task,
        ctx: &Context<Self>,
        then: impl FnOnce(&mut Manager, Result<(), ManagerError>, &mut Context<Manager>)
        + Send
        + 'static,
    ) {
        let ops = vec![
            Op::delete::<Task>(crate::store::Record::key(task)),
            Op::delete_prefix::<StoredEvent>(events_of(task)),
        ];
        let name = task.name.clone();
        self.queue_write(
            Ok(ops),
            ctx,
            Box::new(move |act, res, ctx| {
                act.wrote(&change, Some(&name), &res);
                then(act, res, ctx)
            }),
        );
    }

    /// `change` was written (`res`): published if it is durable; either way readers stop
    /// waiting on it.
    pub(super) fn wrote(
        &mut self,
        change: &Change,
        name: Option<&str>,
        res: &Result<(), ManagerError>,
    ) {
        match res {
            Ok(()) => self.published(change, name),
            Err(e) => log::error!("task {}: cannot record its change: {e}", change.task),
        }
        self.book.written(change);
    }

    /// Writes `change`, then runs `then` on the manager with the outcome.
    pub(super) fn commit_then(
        &mut self,
        change: Change,
        ctx: &Context<Self>,
        then: impl FnOnce(&mut Manager, Result<(), ManagerError>, &mut Context<Manager>)
        + Send
        + 'static,
    ) {
        let ops = ops_of(&change);
        self.queue_write(
            ops,
            ctx,
            Box::new(move |act, res, ctx| {
                act.wrote(&change, None, &res);
                then(act, res, ctx)
            }),
        );
    }

    /// Writes `change` in the background (for changes nobody waits on but a sync's cursor: a
    /// sync waits for them with [`Manager::after_queued`], and a failure is noted in
    /// `self.collecting`).
    pub(super) fn commit_later(&mut self, change: Change, ctx: &mut Context<Self>) {
        let failed = self.collecting.clone();
        self.commit_then(change, ctx, move |_, res, _| {
            if let (Err(_), Some(failed)) = (res, failed) {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }

    /// Stores the submitted envelope (`event` makes it, naming the task as admitted) and admits
    /// its task in one commit. Once it is durable, `answer` gets the task as stored at once, on
    /// the store's writer thread, and `then` runs on the manager; if it failed, the admission is
    /// undone and `answer` gets the error, on the manager.
    pub(super) fn commit_admission(
        &mut self,
        event: impl FnOnce(&Task) -> StoredEvent,
        change: Change,
        ctx: &Context<Self>,
        answer: impl Fn(Result<Task, ManagerError>) + Clone + Send + 'static,
        then: impl FnOnce(&mut Manager, &mut Context<Manager>) + Send + 'static,
    ) {
        let task = change.after.clone().expect("an admission has a task");
        let ops = Op::put(&event(&task)).and_then(|e| Ok(vec![e, Op::put(&task)?]));
        if ops.is_ok() {
            let answer = answer.clone();
            self.outbox.early.push(Box::new(move || answer(Ok(task))));
        }
        self.queue_write(
            ops,
            ctx,
            Box::new(move |act, res, ctx| match res {
                Ok(()) => {
                    act.wrote(&change, None, &Ok(()));
                    then(act, ctx)
                }
                Err(e) => {
                    act.book.undo_admission(&change);
                    answer(Err(e))
                }
            }),
        );
    }
}
