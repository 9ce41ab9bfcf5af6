//! Taking nodes out of the cluster: drain (no new tasks, its tasks moved away) and remove.

use actix::prelude::*;
use futures_util::future::Either;

use super::{Manager, ManagerError};
use crate::node::Node;
use crate::scheduler::actor::Release;
use crate::task::TaskId;
use crate::worker::{ForgetTask, StopTask};

/// Drains a node (`remove` false) or removes it (`remove` true): it takes no new tasks, its
/// tasks are placed again elsewhere and its copies of them stopped; a removed node is also
/// forgotten (and stored no more). Answers with the tasks moved away.
#[derive(Message)]
#[rtype(result = "Result<Vec<TaskId>, ManagerError>")]
pub struct RetireNode {
    /// The node's name.
    pub name: String,
    /// Whether to remove it once drained.
    pub remove: bool,
}

/// Handler for [`RetireNode`].
impl Handler<RetireNode> for Manager {
    type Result = ResponseFuture<Result<Vec<TaskId>, ManagerError>>;

    fn handle(&mut self, msg: RetireNode, ctx: &mut Context<Self>) -> Self::Result {
        let name = msg.name;
        let Some(entry) = self.nodes.get_mut(&name) else {
            return Box::pin(async move { Err(ManagerError::NodeNotFound(name)) });
        };
        entry.node.eligible = false;
        let node = entry.node.clone();
        let moved = self.book.placed_on(&name);
        let verb = if msg.remove { "removed" } else { "drained" };
        log::info!(
            "node {name} {verb} by user: moving its {} tasks",
            moved.len()
        );
        let handle = self.handles.get(&name).cloned();
        for id in &moved {
            let placement = self.book.working(id).map_or(0, |t| t.placement);
            let reason = format!("node {name} was {verb}: placing the task elsewhere");
            if let Some(change) = self.book.lose(*id, reason) {
                self.scheduler.do_send(Release(*id));
                self.commit_later(change, ctx);
            }
            if let Some(handle) = handle.clone() {
                let stop = StopTask {
                    id: *id,
                    placement: Some(placement),
                    stale: true,
                };
                let name = name.clone();
                let id = *id;
                let remove = msg.remove;
                ctx.spawn(
                    async move {
                        if let Err(e) = handle.send(stop).await {
                            log::warn!("node {name}: could not stop task {id}: {e}");
                            return;
                        }
                        // A removed node leaves nothing behind: its copy and container go too.
                        let placement = Some(placement);
                        if remove && let Err(e) = handle.send(ForgetTask { id, placement }).await {
                            log::warn!("node {name}: could not remove task {id}: {e}");
                        }
                    }
                    .into_actor(self),
                );
            }
        }
        let store = self.store.clone();
        let stored = if msg.remove {
            let before = self.nodes.get(&name).map(|e| e.status);
            self.node_event(&name, before, None, "removed".into());
            self.nodes.remove(&name);
            self.handles.remove(&name);
            self.scheduler
                .do_send(crate::scheduler::actor::RemoveNode(name.clone()));
            // A removed node's name is free again: its enrollment goes too.
            self.enrollments.remove(&name);
            let delete = crate::store::Batch(vec![
                crate::store::Op::delete::<Node>(name.clone()),
                crate::store::Op::delete::<super::Enrollment>(name.clone()),
            ]);
            Either::Left(store.send(delete))
        } else {
            let status = self.nodes.get(&name).map(|e| e.status);
            self.node_event(&name, status, status, "drained: takes no new tasks".into());
            self.publish_node(&name);
            Either::Right(store.send(crate::store::Put(node)))
        };
        self.place_pending(ctx);
        Box::pin(async move {
            stored.await??;
            Ok(moved)
        })
    }
}
