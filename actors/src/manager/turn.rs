//! How the manager shares its thread: work that waits elsewhere and comes back as a message
//! ([`Resume`], [`Manager::off_context`]), and a yield every few messages
//! ([`Manager::breathe`]).

use actix::prelude::*;

use super::Manager;

/// Work finished off the manager's context, coming back to it (see [`Manager::off_context`]).
pub(super) struct Resume(Box<ResumeFn>);

impl Resume {
    /// Queues `then` to run on the manager `to`, behind the messages already in its mailbox.
    pub(super) fn send(
        to: &Addr<Manager>,
        then: impl FnOnce(&mut Manager, &mut Context<Manager>) + Send + 'static,
    ) {
        to.do_send(Resume(Box::new(then)));
    }
}

/// What comes back to the manager: a closure over it.
type ResumeFn = dyn FnOnce(&mut Manager, &mut Context<Manager>) + Send;

impl Message for Resume {
    type Result = ();
}

impl Handler<Resume> for Manager {
    type Result = ();

    fn handle(&mut self, Resume(then): Resume, ctx: &mut Context<Self>) {
        then(self, ctx);
        self.breathe(ctx);
    }
}

/// Messages the manager handles in a row before it lets the other tasks of its thread run.
const MESSAGES_PER_TURN: u32 = 16;

impl Manager {
    /// Awaits `work` in a task of its own, then runs `then` on the manager with its outcome.
    ///
    /// For waits that can be long (a sync's long poll): actix polls every future spawned on a
    /// context each time the context wakes, so a thousand long polls parked there would make
    /// every message the manager handles cost a thousand polls.
    pub(super) fn off_context<T: Send + 'static>(
        &self,
        ctx: &Context<Self>,
        work: impl std::future::Future<Output = T> + 'static,
        then: impl FnOnce(&mut Manager, T, &mut Context<Manager>) + Send + 'static,
    ) {
        let manager = ctx.address();
        actix::spawn(async move {
            let outcome = work.await;
            Resume::send(&manager, move |act, ctx| then(act, outcome, ctx));
        });
    }

    /// Lets the other tasks of the manager's thread run every [`MESSAGES_PER_TURN`] messages.
    ///
    /// An actix context handles every message in its mailbox before it returns to the
    /// executor; under load, messages keep arriving from other threads and the manager would
    /// hold its thread for as long as they come, while the store and scheduler actors and the
    /// waits of `off_context` (which share the thread) wait for it.
    pub(super) fn breathe(&mut self, ctx: &mut Context<Self>) {
        self.since_yield += 1;
        if self.since_yield >= MESSAGES_PER_TURN {
            self.since_yield = 0;
            ctx.wait(tokio::task::yield_now().into_actor(self));
        }
    }
}
