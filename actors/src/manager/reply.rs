//! Answers told from any thread, once.
//!
//! A submission's 201 waits for one thing: its commit. [`Reply`] lets the store's writer thread
//! answer the caller as soon as that commit is done, instead of queueing the answer behind the
//! manager's mailbox (a `ResponseFuture` would also run it as a task of the manager's thread).

use std::sync::{Arc, Mutex, PoisonError};

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;

/// The answer to one message, told once from any thread by [`Reply::tell`], and returned by the
/// handler: whichever comes first, the answer or actix's channel to the caller, waits for the
/// other. A `Reply` dropped untold leaves the caller with a closed mailbox.
pub struct Reply<T>(Arc<Mutex<Slot<T>>>);

enum Slot<T> {
    /// Neither the answer nor the caller's channel yet.
    Empty,
    /// The caller's channel, waiting for the answer.
    Waiting(OneshotSender<T>),
    /// The answer, waiting for the caller's channel.
    Ready(T),
    /// Told (or nobody waits).
    Done,
}

impl<T> Clone for Reply<T> {
    fn clone(&self) -> Self {
        Reply(Arc::clone(&self.0))
    }
}

impl<T> Reply<T> {
    pub(super) fn new() -> Reply<T> {
        Reply(Arc::new(Mutex::new(Slot::Empty)))
    }

    /// Tells the caller `value`; only the first answer counts.
    pub(super) fn tell(&self, value: T) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *slot, Slot::Done) {
            Slot::Empty => *slot = Slot::Ready(value),
            Slot::Waiting(tx) => {
                drop(slot);
                let _ = tx.send(value);
            }
            told @ (Slot::Ready(_) | Slot::Done) => *slot = told,
        }
    }

    /// Takes actix's channel to the caller (`None`: nobody waits).
    fn answer_to(&self, tx: Option<OneshotSender<T>>) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match (std::mem::replace(&mut *slot, Slot::Done), tx) {
            (Slot::Ready(value), Some(tx)) => {
                drop(slot);
                let _ = tx.send(value);
            }
            (Slot::Empty, Some(tx)) => *slot = Slot::Waiting(tx),
            _ => {}
        }
    }
}

impl<A, M, T> MessageResponse<A, M> for Reply<T>
where
    A: Actor,
    M: Message<Result = T>,
{
    fn handle(self, _: &mut A::Context, tx: Option<OneshotSender<T>>) {
        self.answer_to(tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn an_answer_told_before_the_caller_waits_reaches_it() {
        let reply = Reply::new();
        reply.tell(1);
        reply.tell(2);
        let (tx, mut rx) = oneshot::channel();
        reply.answer_to(Some(tx));
        assert_eq!(rx.try_recv(), Ok(1), "the first answer, once");
    }

    #[test]
    fn an_answer_told_after_the_caller_waits_reaches_it_from_another_thread() {
        let reply: Reply<u32> = Reply::new();
        let (tx, mut rx) = oneshot::channel();
        reply.answer_to(Some(tx));
        let told = reply.clone();
        std::thread::spawn(move || told.tell(7)).join().unwrap();
        assert_eq!(rx.try_recv(), Ok(7));
    }

    #[test]
    fn a_reply_dropped_untold_closes_the_callers_channel() {
        let reply: Reply<u32> = Reply::new();
        let (tx, mut rx) = oneshot::channel();
        reply.answer_to(Some(tx));
        drop(reply);
        assert!(matches!(
            rx.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
    }
}
