//! What the worker does when a task's container ended: end the task, or restart it in place by
//! its policy (see [`restart_plan`]).

use actix::prelude::*;

use super::Worker;
use super::exit::{Plan, restart_plan};
use crate::task::{Task, TaskId, TaskState};

impl Worker {
    /// The container of `task` ended in `state` for `reason` (with `code`): the task ends, or
    /// goes back to Scheduled and starts again after the policy's wait.
    pub(super) fn ended(
        &mut self,
        mut task: Task,
        state: TaskState,
        reason: String,
        code: Option<i64>,
        ctx: &mut Context<Self>,
    ) {
        log::info!("task {} ({}): {reason}", task.id, task.name);
        let ran_for = task
            .start_time
            .and_then(|start| (chrono::Utc::now() - start).to_std().ok())
            .unwrap_or_default();
        match restart_plan(&task, state, reason, self.config.restarts, ran_for) {
            Plan::End { state, reason } => {
                if task.transition(state, reason).is_ok() {
                    task.exit_code = code;
                    task.host_ports.clear();
                    self.record(task, ctx);
                }
            }
            Plan::Restart {
                after,
                reason,
                restarts_here,
            } => {
                if task.transition(TaskState::Scheduled, reason).is_ok() {
                    self.config.telemetry.restarted();
                    // The container that ended is kept, with its logs, as the previous attempt's;
                    // the one before it goes.
                    let ended = std::mem::take(&mut task.container_id);
                    let old = std::mem::replace(&mut task.previous_container_id, ended);
                    task.restart_count += 1;
                    task.restarts_here = restarts_here;
                    task.exit_code = code;
                    task.host_ports.clear();
                    let (id, count) = (task.id, task.restart_count);
                    self.record(task, ctx);
                    ctx.run_later(after, move |act, ctx| {
                        if act.tasks.get(&id).is_some_and(|t| t.restart_count == count) {
                            act.start_again(id, Some(old).filter(|o| !o.is_empty()), ctx);
                        }
                    });
                }
            }
        }
    }

    /// Starts task `id` again after a wait, if it still waits to start (it was not stopped or
    /// forgotten meanwhile), removing `old`, its previous container.
    pub(super) fn start_again(&mut self, id: TaskId, old: Option<String>, ctx: &mut Context<Self>) {
        let waiting = self
            .tasks
            .get(&id)
            .is_some_and(|t| t.state() == TaskState::Scheduled && t.container_id.is_empty());
        if waiting {
            self.launch(id, old, ctx);
        }
    }
}
