//! The task state machine: five states and the one table that says which changes are allowed.
//!
//! `Task::transition` (in `task/mod.rs`) is the only code that changes a task's state, and it asks
//! [`TaskState::can_transition_to`] first. ARCHITECTURE.md draws the same table as a diagram and
//! says why it differs from the book's.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a task is in its life.
///
/// On the wire a state is written by name (`"Running"`) and read either by name or by the book's
/// number (`0` = Pending … `4` = Failed), so the book's request files work unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum TaskState {
    /// Accepted and stored by the manager, not yet placed on a node.
    #[default]
    Pending,
    /// Placed on a node; the node has not reported the container running yet.
    Scheduled,
    /// The container is running.
    Running,
    /// Ended on purpose: stopped by the user, or the container exited with code 0.
    Completed,
    /// Ended by failure: the container could not start, exited non-zero, or vanished.
    Failed,
}

impl TaskState {
    /// Every state, in the book's numeric order.
    pub const ALL: [TaskState; 5] = [
        TaskState::Pending,
        TaskState::Scheduled,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Failed,
    ];

    /// Whether a task in state `self` may move to `next`.
    ///
    /// Staying in the same state is not a transition and is never allowed here: callers that
    /// receive the same state twice (a duplicate report) treat it as "nothing changed".
    pub fn can_transition_to(self, next: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, next),
            (Pending, Scheduled | Completed | Failed)
                | (Scheduled, Pending | Running | Completed | Failed)
                | (Running, Pending | Scheduled | Completed | Failed)
                | (Failed, Pending | Scheduled | Completed)
        )
    }

    /// Whether a container may exist for a task in this state.
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Scheduled | TaskState::Running)
    }

    /// The state's name, as written on the wire.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "Pending",
            TaskState::Scheduled => "Scheduled",
            TaskState::Running => "Running",
            TaskState::Completed => "Completed",
            TaskState::Failed => "Failed",
        }
    }

    /// The book's number for the state.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Reads a state from the book's number.
    pub fn from_number(n: u64) -> Option<TaskState> {
        TaskState::ALL.get(usize::try_from(n).ok()?).copied()
    }

    /// Reads a state from its name, ignoring case.
    pub fn from_name(name: &str) -> Option<TaskState> {
        TaskState::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::from_name(s)
            .or_else(|| s.parse::<u64>().ok().and_then(TaskState::from_number))
            .ok_or_else(|| format!("unknown task state `{s}`, expected one of Pending, Scheduled, Running, Completed, Failed or 0-4"))
    }
}

impl Serialize for TaskState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TaskState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TaskState;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a task state: a name (\"Running\") or the book's number (0-4)")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<TaskState, E> {
                TaskState::from_number(n).ok_or_else(|| {
                    E::custom(format!("unknown task state number {n}, expected 0-4"))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<TaskState, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "unknown task state number {n}, expected 0-4"
                    ))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<TaskState, E> {
                s.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::{self, *};

    /// Every one of the 25 pairs against the expected table (rows: from, columns: to, in the
    /// order Pending, Scheduled, Running, Completed, Failed).
    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        let expected: [(TaskState, [bool; 5]); 5] = [
            (Pending, [false, true, false, true, true]),
            (Scheduled, [true, false, true, true, true]),
            (Running, [true, true, false, true, true]),
            (Completed, [false, false, false, false, false]),
            (Failed, [true, true, false, true, false]),
        ];
        for (from, row) in expected {
            for (to, allowed) in TaskState::ALL.into_iter().zip(row) {
                assert_eq!(
                    from.can_transition_to(to),
                    allowed,
                    "{from} -> {to} should be {}",
                    if allowed { "allowed" } else { "refused" }
                );
            }
        }
    }

    #[test]
    fn states_read_by_number_or_name_and_write_by_name() {
        for (n, state) in TaskState::ALL.into_iter().enumerate() {
            let by_number: TaskState = serde_json::from_str(&n.to_string()).unwrap();
            assert_eq!(by_number, state);
            let written = serde_json::to_string(&state).unwrap();
            assert_eq!(written, format!("\"{}\"", state.name()));
            assert_eq!(serde_json::from_str::<TaskState>(&written).unwrap(), state);
        }
        assert_eq!(
            serde_json::from_str::<TaskState>("\"running\"").unwrap(),
            Running
        );
        let err = serde_json::from_str::<TaskState>("7").unwrap_err();
        assert!(
            err.to_string().contains("unknown task state number 7"),
            "{err}"
        );
        let err = serde_json::from_str::<TaskState>("\"Sleeping\"").unwrap_err();
        assert!(err.to_string().contains("Sleeping"), "{err}");
    }
}
