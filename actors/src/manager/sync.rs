//! Keeping up with the workers: each node's change feed (a long poll that returns as soon as a
//! change is durable on the worker), its metrics (polled), and the pruning of history.
//!
//! A node's cursor moves only after the changes it covers are durable here: the next sync (the
//! acknowledgement) is sent once the writes of the previous one are committed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use actix::prelude::*;
use chrono::Utc;

use super::book::BookError;
use super::{Manager, PRUNE_PAUSE, PRUNE_SLICE};
use crate::scheduler::actor::NodeUsage;
use crate::task::{Task, TaskId};
use crate::worker::{ForgetTask, PROTOCOL_VERSION, Sync, SyncReply, WorkerStats};

impl Manager {
    /// Starts following the feed of every node not followed already.
    pub(super) fn sync_all(&mut self, ctx: &mut Context<Self>) {
        for name in self.nodes.names() {
            self.sync(name, ctx);
        }
    }

    /// Asks `name` for the changes after its cursor, applies them, and asks again.
    pub(super) fn sync(&mut self, name: String, ctx: &mut Context<Self>) {
        let (Some(entry), Some(handle)) = (self.nodes.get_mut(&name), self.handles.get(&name))
        else {
            return;
        };
        if entry.syncing {
            return;
        }
        entry.syncing = true;
        let generation = entry.generation;
        let request = Sync {
            cursor: entry.cursor,
            wait: self.config.sync_wait,
        };
        let handle = handle.clone();
        let fut = async move { handle.send(request).await };
        // A long poll waits up to `sync_wait`: off the manager's context (see `off_context`).
        self.off_context(ctx, fut, move |act, res, ctx| {
            act.synced(name, generation, res, ctx)
        });
    }

    /// A node answered a sync (or failed to): its changes are applied, and once they are
    /// durable here its cursor moves and it is asked again.
    fn synced(
        &mut self,
        name: String,
        generation: u64,
        res: Result<SyncReply, crate::worker::WorkerError>,
        ctx: &mut Context<Self>,
    ) {
        let current = self
            .nodes
            .get(&name)
            .is_some_and(|e| e.generation == generation);
        let applied = match res {
            Ok(reply) if current && reply.protocol == PROTOCOL_VERSION => {
                let status = self.nodes.answered(&name, Utc::now());
                self.status_changed(&name, status, ctx);
                let cursor = reply.cursor();
                Some((self.apply_sync(&name, reply, ctx), cursor))
            }
            Ok(reply) if current => {
                let e = format!(
                    "the worker speaks protocol {}, this manager {PROTOCOL_VERSION}",
                    reply.protocol
                );
                let status = self.nodes.failed(&name, e);
                self.status_changed(&name, status, ctx);
                None
            }
            Ok(_) => None,
            Err(e) => {
                if current {
                    let status = self.nodes.failed(&name, e.to_string());
                    self.status_changed(&name, status, ctx);
                }
                None
            }
        };
        let Some((failed, cursor)) = applied else {
            return self.sync_done(name, generation, None, ctx);
        };
        // The node's cursor moves once the writes of its changes are durable here.
        self.after_queued(ctx, move |act, durable, ctx| {
            let ok = durable && !failed.load(std::sync::atomic::Ordering::Relaxed);
            act.sync_done(name, generation, ok.then_some(cursor), ctx)
        });
    }

    /// A sync's changes are durable (`cursor`: where the node's feed is now applied), or it
    /// failed (`None`): the node is asked again, at once or after its back-off.
    fn sync_done(
        &mut self,
        name: String,
        generation: u64,
        cursor: Option<crate::worker::feed::Cursor>,
        ctx: &mut Context<Self>,
    ) {
        let Some(entry) = self
            .nodes
            .get_mut(&name)
            .filter(|e| e.generation == generation)
        else {
            return;
        };
        entry.syncing = false;
        match cursor {
            Some(cursor) => {
                let first = entry.cursor.is_none();
                self.nodes.advance(&name, generation, cursor);
                if first {
                    // Its feed is applied: it may take tasks now.
                    self.publish_node(&name);
                    self.place_pending(ctx);
                }
                self.retry_forgets(&name, ctx);
                self.sync(name, ctx);
            }
            None => {
                let wait = entry.retry.next_wait();
                ctx.run_later(wait, move |act, ctx| act.sync(name, ctx));
            }
        }
    }

    /// Applies one sync reply from `node`; the writes it starts are queued (the node's cursor
    /// moves past it once they are durable). Returns the flag set if one of them fails.
    fn apply_sync(
        &mut self,
        node: &str,
        reply: SyncReply,
        ctx: &mut Context<Self>,
    ) -> Arc<AtomicBool> {
        let failed = Arc::new(AtomicBool::new(false));
        self.collecting = Some(Arc::clone(&failed));
        for task in &reply.tasks {
            self.absorb(node, task, ctx);
        }
        self.collecting = None;
        if reply.full {
            let reported: HashSet<TaskId> = reply.tasks.iter().map(|t| t.id).collect();
            // Routine for a node with nothing on it (every node of a fresh `cube up`).
            let level = if reply.tasks.is_empty() {
                log::Level::Debug
            } else {
                log::Level::Info
            };
            log::log!(
                level,
                "node {node}: full resync with {} tasks (store epoch {})",
                reply.tasks.len(),
                reply.epoch
            );
            for task in self.book.scheduled_on(node) {
                if !reported.contains(&task.id) {
                    log::info!(
                        "task {} is Scheduled on {node} but the node does not have it: sending it again",
                        task.id
                    );
                    self.deliver(task, ctx);
                }
            }
            // Running here by the book, unknown to the node (its store was lost and no container
            // of the task was left to adopt): it runs nowhere, so it is placed again.
            for id in self.book.placed_on(node) {
                let running = self
                    .book
                    .working(&id)
                    .is_some_and(|t| t.state() == crate::task::TaskState::Running);
                if running && !reported.contains(&id) && !self.book.is_in_flight(&id) {
                    let reason =
                        format!("node {node} does not have the task any more: placing it again");
                    log::warn!("task {id}: {reason}");
                    if let Some(change) = self.book.lose(id, reason) {
                        self.scheduler.do_send(crate::scheduler::actor::Release(id));
                        self.commit_later(change, ctx);
                    }
                }
            }
            self.place_pending(ctx);
        }
        failed
    }

    /// Asks every node that is not being asked already for its metrics.
    /// Polls the nodes of slice `slice` of `slices` (by their place in the node book).
    pub(super) fn poll_slice(&mut self, slice: usize, slices: usize, ctx: &mut Context<Self>) {
        for name in self.nodes.names_in_slice(slice, slices) {
            self.poll(name, ctx);
        }
    }

    pub(super) fn poll_all(&mut self, ctx: &mut Context<Self>) {
        for name in self.nodes.names() {
            self.poll(name, ctx);
        }
    }

    pub(super) fn poll(&mut self, name: String, ctx: &mut Context<Self>) {
        let (Some(entry), Some(handle)) = (self.nodes.get_mut(&name), self.handles.get(&name))
        else {
            return;
        };
        if entry.polling {
            return;
        }
        entry.polling = true;
        let handle = handle.clone();
        let fut = async move { handle.send(WorkerStats).await };
        self.off_context(ctx, fut, move |act, res, ctx| {
            let Some(entry) = act.nodes.get_mut(&name) else {
                return;
            };
            entry.polling = false;
            let status = match res {
                Ok(stats) => {
                    act.scheduler.do_send(NodeUsage {
                        name: name.clone(),
                        cpu: stats.cpu.usage_percent / 100.0,
                        memory: if stats.memory.total_bytes > 0 {
                            stats.memory.used_bytes as f64 / stats.memory.total_bytes as f64
                        } else {
                            0.0
                        },
                    });
                    act.nodes.set_stats(&name, stats);
                    act.nodes.answered(&name, Utc::now())
                }
                Err(e) => act.nodes.failed(&name, e.to_string()),
            };
            act.status_changed(&name, status, ctx);
        });
    }

    /// Removes the finished tasks the retention does not keep, here and on their nodes, a
    /// slice at a time: thousands of removals at once (a busy cluster's five seconds) would hold
    /// every other message, and the stores' writers, behind them.
    pub(super) fn prune(&mut self, ctx: &mut Context<Self>) {
        if self.pruning {
            return;
        }
        self.events.prune(Utc::now());
        self.prune_slice(ctx);
    }

    fn prune_slice(&mut self, ctx: &mut Context<Self>) {
        let doomed = self
            .book
            .prunable(Utc::now(), self.config.retention, PRUNE_SLICE + 1);
        let more = doomed.len() > PRUNE_SLICE;
        log::debug!("pruning {} finished tasks", doomed.len().min(PRUNE_SLICE));
        for id in doomed.into_iter().take(PRUNE_SLICE) {
            // Prunable means finished and not being written: the removal is accepted.
            let _ = self.purge(id, ctx);
        }
        self.pruning = more;
        if more {
            ctx.run_later(PRUNE_PAUSE, |act, ctx| act.prune_slice(ctx));
        }
    }

    /// Removes finished task `id` (and its events) from the book and the store, and has its nodes
    /// forget it. Returns the task and its write; a task that is not finished is refused.
    pub(super) fn purge(
        &mut self,
        id: TaskId,
        ctx: &mut Context<Self>,
    ) -> Result<(Task, tokio::sync::oneshot::Receiver<bool>), BookError> {
        let task = self
            .book
            .working(&id)
            .cloned()
            .ok_or(BookError::NotFound(id))?;
        let change = self.book.remove(id)?;
        let (done, written) = tokio::sync::oneshot::channel();
        let removed = task.clone();
        // A prune removes hundreds at a time: their waits go off the manager's context.
        self.commit_removal_then(change, &removed, ctx, move |act, res, ctx| {
            let ok = res.is_ok();
            let _ = done.send(ok);
            let stale = act.stale_copies.remove(&id).unwrap_or_default();
            if !ok {
                return;
            }
            if let Some(node) = &task.node {
                act.forget_on(node, id, task.placement, ctx);
            }
            for (node, placement) in stale {
                act.forget_on(&node, id, placement, ctx);
            }
        });
        Ok((removed, written))
    }

    /// Has `node` forget its copy (of `placement` or older) of finished task `id`; if it does
    /// not answer, it is asked again after its next successful sync.
    pub(super) fn forget_on(
        &mut self,
        node: &str,
        id: TaskId,
        placement: u64,
        ctx: &mut Context<Self>,
    ) {
        let Some(handle) = self.handles.get(node).cloned() else {
            return;
        };
        let node = node.to_string();
        let forget = ForgetTask {
            id,
            placement: Some(placement),
        };
        let fut = async move { handle.send(forget).await };
        self.off_context(ctx, fut, move |act, res, _| match res {
            Ok(()) | Err(crate::worker::WorkerError::NotFound(_)) => {
                if let Some(set) = act.to_forget.get_mut(&node) {
                    set.remove(&(id, placement));
                }
            }
            Err(e) => {
                log::debug!("node {node}: could not forget task {id} yet: {e}");
                act.to_forget
                    .entry(node)
                    .or_default()
                    .insert((id, placement));
            }
        });
    }

    fn retry_forgets(&mut self, node: &str, ctx: &mut Context<Self>) {
        let Some(set) = self.to_forget.remove(node) else {
            return;
        };
        for (id, placement) in set {
            self.forget_on(node, id, placement, ctx);
        }
    }
}
