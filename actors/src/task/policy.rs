//! A task's restart policy, by Docker's names.

use serde::{Deserialize, Deserializer, Serialize};

/// What happens when a task's container ends. Cube applies it itself (on the worker, in place,
/// within a budget of restarts); Docker's own restart policy is always off, so that Cube knows
/// of every restart. A stop by the user is final whatever the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart whenever the container ends, also with code 0.
    Always,
    /// Restart whenever the container ends (a user's stop is final in any case).
    UnlessStopped,
    /// Restart only when the container failed. A task that names no policy (the book's `""`)
    /// gets this one: the book's behaviour, restarted on failure, at most 3 times by default.
    #[default]
    OnFailure,
}

impl RestartPolicy {
    /// The policy's name on the wire (Docker's names; `""` reads as `no`).
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure => "on-failure",
        }
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "" | "on-failure" => Ok(RestartPolicy::OnFailure),
            other => Err(format!(
                "unknown restart policy `{other}`, expected one of \"\", no, always, unless-stopped, on-failure"
            )),
        }
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
