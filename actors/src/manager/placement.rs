//! Placement: place (ask the scheduler), assign (store the placement), deliver (send the task to
//! its node), and what happens when a node does not take it.

use std::time::Instant;

use actix::prelude::*;

use super::Manager;
use super::book::Merge;
use crate::scheduler::Demand;
use crate::scheduler::actor::{PlaceAvoiding, Release};
use crate::task::{RestartPolicy, Task, TaskId, TaskState};
use crate::worker::{RunTask, WorkerError};

impl Manager {
    /// Tries to place every Pending task that is not being placed or backing off, oldest first.
    pub(super) fn place_pending(&mut self, ctx: &mut Context<Self>) {
        for id in self.book.pending_ready(Instant::now()) {
            self.place(id, ctx);
        }
    }

    /// Asks the scheduler for a node for task `id`; the scheduler serializes these, so placements
    /// made back to back see each other's reservations.
    pub(super) fn place(&mut self, id: TaskId, ctx: &mut Context<Self>) {
        // Only a Pending task not already being placed: placing one twice would release the
        // reservation the first placement holds.
        let Some(demand) = self
            .book
            .working(&id)
            .filter(|t| t.state() == TaskState::Pending && !self.book.is_in_flight(&id))
            .map(Demand::of)
        else {
            return;
        };
        self.book.set_in_flight(id, true);
        let avoid = self.book.avoided(&id);
        let decision = self.scheduler.send(PlaceAvoiding {
            task: id,
            demand,
            avoid,
        });
        let began = Instant::now();
        self.off_context(ctx, decision, move |act, res, ctx| {
            if let Ok(decided) = &res {
                let seconds = began.elapsed().as_secs_f64();
                act.config.telemetry.placed(decided.is_ok(), seconds);
            }
            match res {
                Ok(Ok(node)) => act.assign(id, node, ctx),
                Ok(Err(unplaceable)) => {
                    act.book.set_in_flight(id, false);
                    let reason = format!("waiting for a node: {unplaceable}");
                    if let Some(change) = act.book.keep_pending(id, reason) {
                        log::info!("task {id} stays Pending: {}", change.reason);
                        act.commit_later(change, ctx);
                    }
                }
                Err(e) => {
                    act.book.set_in_flight(id, false);
                    log::error!("task {id}: scheduler unavailable: {e}");
                }
            }
        });
    }

    /// Records the placement on `node` durably (a new placement number), then sends the task.
    fn assign(&mut self, id: TaskId, node: String, ctx: &mut Context<Self>) {
        let Some(change) = self.book.place(id, &node) else {
            // Stopped (or gone) while the scheduler was deciding.
            self.book.set_in_flight(id, false);
            self.scheduler.do_send(Release(id));
            return;
        };
        let task = change.after.clone().expect("a placement keeps the task");
        self.commit_then(change, ctx, move |act, res, ctx| match res {
            Ok(()) => act.deliver(task, ctx),
            Err(_) => act.book.set_in_flight(id, false),
        });
    }

    /// Sends a Scheduled task to its node's worker.
    pub(super) fn deliver(&mut self, task: Task, ctx: &mut Context<Self>) {
        let id = task.id;
        let Some(node) = task.node.clone() else {
            self.book.set_in_flight(id, false);
            return;
        };
        let Some(handle) = self.handles.get(&node).cloned() else {
            self.book.set_in_flight(id, false);
            self.unplace(id, format!("node {node} is not in the cluster"), ctx);
            return;
        };
        self.book.set_in_flight(id, true);
        let fut = async move { handle.send(RunTask(task)).await };
        self.off_context(ctx, fut, move |act, res, ctx| {
            act.book.set_in_flight(id, false);
            match res {
                Ok(_) => {
                    // Taken. What becomes of the task comes through the node's feed, in order;
                    // this answer may arrive after later changes, so it is not applied.
                    act.book.clear_backoff(&id);
                }
                Err(WorkerError::Invalid(e)) => {
                    act.config.telemetry.delivery_failed();
                    let reason = format!("node {node} refused the task: {e}");
                    act.scheduler.do_send(Release(id));
                    if let Some(change) = act.book.fail(id, reason) {
                        act.commit_later(change, ctx);
                    }
                }
                Err(e) => {
                    act.config.telemetry.delivery_failed();
                    if matches!(e, WorkerError::Unreachable(_) | WorkerError::Closed) {
                        let status = act.nodes.unreachable(&node, e.to_string());
                        act.status_changed(&node, status, ctx);
                    }
                    let wait = act.book.back_off(id, Instant::now());
                    let reason = format!(
                        "could not be sent to node {node} ({e}); trying again in {}s",
                        wait.as_secs_f64()
                    );
                    act.unplace(id, reason, ctx);
                }
            }
        });
    }

    /// Puts a Scheduled task back to Pending (its node did not take it) and frees its
    /// reservation.
    pub(super) fn unplace(&mut self, id: TaskId, reason: String, ctx: &mut Context<Self>) {
        self.scheduler.do_send(Release(id));
        if let Some(change) = self.book.unplace(id, reason) {
            log::warn!("task {id}: {}", change.reason);
            self.commit_later(change, ctx);
        }
    }

    /// Takes one report of `node` about a task into the book (see [`Merge`]).
    pub(super) fn absorb(&mut self, node: &str, reported: &Task, ctx: &mut Context<Self>) {
        match self.book.merge(node, reported) {
            Merge::Unknown => {
                // Pruned here (its node could not be told then), or given to the worker
                // directly: a finished one is forgotten there, a live one is not ours.
                if reported.is_finished() && reported.placement > 0 {
                    self.forget_on(node, reported.id, reported.placement, ctx);
                }
            }
            Merge::Stale { placement } => {
                if reported.state().is_active() {
                    self.stop_stray(node, reported.id, placement, ctx);
                } else if reported.is_finished()
                    && self
                        .book
                        .working(&reported.id)
                        .and_then(|t| t.node.as_deref())
                        != Some(node)
                {
                    // An old copy, stopped: its node keeps it (and its logs) until the task is
                    // removed, and is then told to forget it too.
                    let copies = self.stale_copies.entry(reported.id).or_default();
                    copies.insert((node.to_string(), placement));
                }
            }
            Merge::Same => {}
            Merge::Changed(change) => {
                let failed = change.to == Some(TaskState::Failed);
                let finished = change.after.as_ref().is_some_and(Task::is_finished);
                if finished && change.from.is_some_and(|s| s.is_active()) {
                    self.scheduler.do_send(Release(change.task));
                }
                let replace = failed.then(|| change.after.clone()).flatten();
                self.commit_later(*change, ctx);
                if let Some(task) = replace {
                    self.maybe_replace(node, &task, ctx);
                }
                if finished {
                    // Capacity was freed: what waits may fit now.
                    self.place_pending(ctx);
                }
            }
        }
    }

    /// A task failed for good on `node` (its restarts in place spent): if its policy restarts
    /// it and the re-placement budget allows, it is placed again, on another node if one fits.
    fn maybe_replace(&mut self, node: &str, task: &Task, ctx: &mut Context<Self>) {
        let restarts = task.restart_policy != RestartPolicy::No;
        // Errors no restart fixes (image missing, invalid settings) are not retried elsewhere.
        let could_start = !task.reason.starts_with("container could not start");
        if !(restarts && could_start) {
            return;
        }
        if task.replacements >= self.config.max_replacements {
            let reason = format!(
                "{}; not placed again: it was placed on another node {} time(s) already, the most allowed",
                task.reason, task.replacements
            );
            if let Some(change) = self.book.annotate(task.id, reason) {
                self.commit_later(change, ctx);
            }
            return;
        }
        let reason = format!(
            "failed for good on node {node} ({}); placing it on another node (re-placement {} of {})",
            task.reason,
            task.replacements + 1,
            self.config.max_replacements
        );
        if let Some(change) = self.book.replace_elsewhere(task.id, reason) {
            log::info!("task {}: {}", task.id, change.reason);
            let copies = self.stale_copies.entry(task.id).or_default();
            copies.insert((node.to_string(), task.placement));
            self.commit_later(change, ctx);
            self.place_pending(ctx);
        }
    }

    /// Stops the copy of placement `placement` of task `id` that runs on `node` although the
    /// manager did not place it there (a delivery that timed out but arrived after all, a task
    /// since placed elsewhere, or one stopped while its delivery was under way).
    fn stop_stray(&mut self, node: &str, id: TaskId, placement: u64, ctx: &mut Context<Self>) {
        let Some(handle) = self.handles.get(node).cloned() else {
            return;
        };
        log::warn!(
            "task {id} runs on node {node} (placement {placement}) but is not placed there: stopping that copy"
        );
        let node = node.to_string();
        let stop = crate::worker::StopTask {
            id,
            placement: Some(placement),
            stale: true,
        };
        ctx.spawn(
            async move {
                if let Err(e) = handle.send(stop).await {
                    log::warn!("node {node}: could not stop stray task {id}: {e}");
                }
            }
            .into_actor(self),
        );
    }
}
