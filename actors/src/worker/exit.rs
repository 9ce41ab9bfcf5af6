//! What a container's end means for its task: a pure function, so every case has a unit test.

use crate::runtime::{ContainerExited, ContainerStatus};
use crate::task::{Task, TaskState};

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

    #[test]
    fn an_exit_before_the_start_is_recorded_waits_for_it() {
        let t = Task::new("t", "img").admit(TaskState::Scheduled, "accepted");
        assert_eq!(
            exit_outcome(&t, &exit(&t, "c1", exited(1)), false),
            ExitOutcome::Early
        );
    }
}
