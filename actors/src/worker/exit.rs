//! What a container's end means for its task: a pure function, so every case has a unit test.

use std::time::Duration;

use crate::runtime::{ContainerExited, ContainerStatus};
use crate::task::{RestartPolicy, Task, TaskState};

/// What the worker does when the runtime says a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitOutcome {
    /// The task's container is not recorded yet (the exit beat the start's bookkeeping): keep the
    /// report and apply it once the start is recorded.
    Early,
    /// Not about the task's current container, or the end is a stop under way: nothing to do.
    Ignore,
    /// The task ends: its new state, why, and the exit code if there is one.
    End {
        /// Completed (exit 0) or Failed.
        state: TaskState,
        /// In words, for the task's `Reason`.
        reason: String,
        /// The container's exit code.
        code: Option<i64>,
    },
}

/// What `exit` means for `task`; `stopping` says a stop of the task is under way.
pub fn exit_outcome(task: &Task, exit: &ContainerExited, stopping: bool) -> ExitOutcome {
    if task.state() == TaskState::Scheduled && task.container_id.is_empty() {
        return ExitOutcome::Early;
    }
    if task.state() != TaskState::Running || task.container_id != exit.container_id || stopping {
        return ExitOutcome::Ignore;
    }
    match &exit.status {
        ContainerStatus::Missing => ExitOutcome::End {
            state: TaskState::Failed,
            reason: format!("container {} vanished", short(&exit.container_id)),
            code: None,
        },
        status => match status.exit_reason() {
            Some((code, failed, reason)) => ExitOutcome::End {
                state: if failed {
                    TaskState::Failed
                } else {
                    TaskState::Completed
                },
                reason,
                code: Some(code),
            },
            None => ExitOutcome::Ignore,
        },
    }
}

/// How many times, and how soon, a worker restarts a task in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBudget {
    /// Restarts in place allowed for one placement of a task.
    pub max_restarts: u32,
    /// The wait before the first restart; it doubles for each next one, up to [`MAX_DELAY`].
    pub delay: Duration,
    /// A container that ran at least this long before it ended starts a fresh budget: the
    /// restarts are counted within this window.
    pub window: Duration,
}

/// The longest wait before a restart.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

impl Default for RestartBudget {
    fn default() -> Self {
        RestartBudget {
            max_restarts: 3,
            delay: Duration::from_secs(1),
            window: Duration::from_secs(300),
        }
    }
}

/// What the worker does with a task whose container ended (an [`ExitOutcome::End`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Restart it in place after `after`: the task goes back to Scheduled (without passing
    /// through a terminal state) with `reason`, and its restart count grows by one.
    Restart {
        /// The wait before the new container starts.
        after: Duration,
        /// Why, in words ("restart 1 of 3 in 1s: container exited with code 3").
        reason: String,
        /// The task's restarts in place within its budget, this one included.
        restarts_here: u32,
    },
    /// It ends in `state` with `reason`.
    End {
        /// Completed or Failed.
        state: TaskState,
        /// Why, in words.
        reason: String,
    },
}

/// Whether `task`, whose container ended in `state` for `reason` after running for `ran_for`, is
/// restarted, by its policy and within `budget`.
pub fn restart_plan(
    task: &Task,
    state: TaskState,
    reason: String,
    budget: RestartBudget,
    ran_for: Duration,
) -> Plan {
    let wanted = match task.restart_policy {
        RestartPolicy::No => false,
        RestartPolicy::OnFailure => state == TaskState::Failed,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
    };
    if !wanted {
        return Plan::End { state, reason };
    }
    // A task that ran healthy for the whole window earned a fresh budget.
    let done = if ran_for >= budget.window {
        0
    } else {
        task.restarts_here
    };
    if done >= budget.max_restarts {
        let reason = format!(
            "{reason} (after {done} restarts on this node, the most its policy `{}` allows here)",
            task.restart_policy.name()
        );
        return Plan::End { state, reason };
    }
    let after = budget
        .delay
        .saturating_mul(2u32.saturating_pow(done))
        .min(MAX_DELAY);
    Plan::Restart {
        after,
        restarts_here: done + 1,
        reason: format!(
            "restart {} of {} in {}s: {reason}",
            done + 1,
            budget.max_restarts,
            after.as_secs_f64()
        ),
    }
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(container: &str) -> Task {
        let mut t = Task::new("t", "img").admit(TaskState::Scheduled, "accepted");
        t.container_id = container.into();
        t.transition(TaskState::Running, "started").unwrap();
        t
    }

    fn exit(task: &Task, container: &str, status: ContainerStatus) -> ContainerExited {
        ContainerExited {
            task_id: task.id,
            container_id: container.into(),
            status,
        }
    }

    fn exited(code: i64) -> ContainerStatus {
        ContainerStatus::Exited {
            code,
            oom_killed: false,
            error: String::new(),
        }
    }

    #[test]
    fn exit_0_completes_and_a_non_zero_exit_fails_with_its_code() {
        let t = running("c1");
        let ok = exit_outcome(&t, &exit(&t, "c1", exited(0)), false);
        assert!(matches!(
            ok,
            ExitOutcome::End {
                state: TaskState::Completed,
                code: Some(0),
                ..
            }
        ));
        let bad = exit_outcome(&t, &exit(&t, "c1", exited(3)), false);
        assert!(matches!(
            bad,
            ExitOutcome::End {
                state: TaskState::Failed,
                code: Some(3),
                ..
            }
        ));
    }

    #[test]
    fn a_vanished_container_fails_its_task_without_a_code() {
        let t = running("c1");
        let gone = exit_outcome(&t, &exit(&t, "c1", ContainerStatus::Missing), false);
        assert!(matches!(
            gone,
            ExitOutcome::End {
                state: TaskState::Failed,
                code: None,
                ..
            }
        ));
    }

    #[test]
    fn an_old_container_a_stop_or_a_live_container_changes_nothing() {
        let t = running("c2");
        assert_eq!(
            exit_outcome(&t, &exit(&t, "c1", exited(1)), false),
            ExitOutcome::Ignore
        );
        assert_eq!(
            exit_outcome(&t, &exit(&t, "c2", exited(1)), true),
            ExitOutcome::Ignore
        );
        let alive = ContainerStatus::Running;
        assert_eq!(
            exit_outcome(&t, &exit(&t, "c2", alive), false),
            ExitOutcome::Ignore
        );
    }

    fn ended(policy: RestartPolicy, restarts: u32, state: TaskState) -> Plan {
        let mut t = running("c1");
        t.restart_policy = policy;
        t.restart_count = restarts;
        t.restarts_here = restarts;
        restart_plan(
            &t,
            state,
            "container exited with code 3".into(),
            RestartBudget::default(),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn the_policy_and_the_budget_decide_a_restart_with_a_doubling_wait() {
        let failed = TaskState::Failed;
        let completed = TaskState::Completed;
        assert!(matches!(
            ended(RestartPolicy::No, 0, failed),
            Plan::End { .. }
        ));
        match ended(RestartPolicy::OnFailure, 0, failed) {
            Plan::Restart { after, reason, .. } => {
                assert_eq!(after, Duration::from_secs(1));
                assert_eq!(reason, "restart 1 of 3 in 1s: container exited with code 3");
            }
            other => panic!("{other:?}"),
        }
        let third = ended(RestartPolicy::OnFailure, 2, failed);
        assert!(matches!(third, Plan::Restart { after, .. } if after == Duration::from_secs(4)));
        match ended(RestartPolicy::OnFailure, 3, failed) {
            Plan::End { state, reason } => {
                assert_eq!(state, failed);
                assert!(reason.contains("after 3 restarts"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Exit 0: only `always` and `unless-stopped` restart.
        assert!(matches!(
            ended(RestartPolicy::OnFailure, 0, completed),
            Plan::End { .. }
        ));
        assert!(matches!(
            ended(RestartPolicy::Always, 0, completed),
            Plan::Restart { .. }
        ));
        assert!(matches!(
            ended(RestartPolicy::UnlessStopped, 0, completed),
            Plan::Restart { .. }
        ));
        // A container that ran for the whole window starts a fresh budget.
        let mut t = running("c1");
        t.restarts_here = 3;
        let window = RestartBudget::default().window;
        let plan = restart_plan(&t, failed, "x".into(), RestartBudget::default(), window);
        assert!(
            matches!(
                plan,
                Plan::Restart {
                    restarts_here: 1,
                    ..
                }
            ),
            "{plan:?}"
        );
    }

    #[test]
    fn an_exit_before_the_start_is_recorded_waits_for_it() {
        let t = Task::new("t", "img").admit(TaskState::Scheduled, "accepted");
        assert_eq!(
            exit_outcome(&t, &exit(&t, "c1", exited(1)), false),
            ExitOutcome::Early
        );
    }
}
