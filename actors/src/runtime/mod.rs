//! The container runtime: one set of messages, two actors behind it.
//!
//! - [`DockerRuntime`] runs tasks as Docker containers (the only module that uses bollard).
//! - [`SimRuntime`] runs them in memory, for big simulated clusters and machines without Docker.
//!
//! A worker holds a [`RuntimeHandle`] and does not know which one it talks to. Both tell the
//! worker when a container ends on its own, through the [`ContainerExited`] recipient they are
//! given at start.

mod docker;
pub mod health;
mod sim;

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::task::{PortBinding, PortSpec, Task, TaskId};

pub use docker::{DockerRuntime, docker_available, echo_image_tar, import_image};
pub use health::Health;
pub use sim::{SimEngine, SimRuntime};

/// The label every Cube container carries, with the value `true`.
pub const LABEL_MANAGED: &str = "cube.managed";
/// The label holding the task id.
pub const LABEL_TASK_ID: &str = "cube.task.id";
/// The label holding the task name.
pub const LABEL_TASK_NAME: &str = "cube.task.name";
/// The label holding the name of the worker that runs the container.
pub const LABEL_WORKER: &str = "cube.worker";
/// The label holding the task's placement number the container was started for.
pub const LABEL_PLACEMENT: &str = "cube.placement";
/// The label holding the task as it was started (JSON), to adopt the container from.
pub const LABEL_TASK: &str = "cube.task";
/// The label holding the store epoch of the worker that started the container.
pub const LABEL_STORE: &str = "cube.store";

/// The task of a container, read back from its [`LABEL_TASK`].
pub fn task_from_label(label: &str) -> Option<Task> {
    serde_json::from_str(label).ok()
}

/// What went wrong talking to the runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The engine cannot be reached (Docker down, socket missing).
    #[error("container engine unreachable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The image is neither on the node nor pullable.
    #[error("image `{image}` is not available: {reason}")]
    ImageUnavailable {
        /// The image.
        image: String,
        /// Why.
        reason: String,
    },
    /// The engine refused an operation.
    #[error("{operation} failed: {reason}")]
    Failed {
        /// What was being done.
        operation: &'static str,
        /// The engine's reason.
        reason: String,
    },
}

/// What a container is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum ContainerStatus {
    /// Created but not started, paused or restarting: alive, not serving.
    Waiting {
        /// The engine's word for it.
        status: String,
    },
    /// Running.
    Running,
    /// Ended.
    Exited {
        /// Its exit code.
        code: i64,
        /// Whether the kernel killed it for using too much memory.
        oom_killed: bool,
        /// The engine's error, if any.
        error: String,
    },
    /// No such container (removed, or never created on this engine).
    Missing,
}

/// A container as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInfo {
    /// The container's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The container's name.
    pub name: String,
    /// What it is doing.
    pub status: ContainerStatus,
    /// Where its ports are published.
    pub host_ports: BTreeMap<PortSpec, Vec<PortBinding>>,
    /// When it last started.
    pub started_at: Option<DateTime<Utc>>,
}

impl ContainerStatus {
    /// The reason a task gives for a container that ended this way, and whether that is a failure.
    pub fn exit_reason(&self) -> Option<(i64, bool, String)> {
        match self {
            ContainerStatus::Exited {
                code,
                oom_killed,
                error,
            } => {
                let mut reason = format!("container exited with code {code}");
                if *oom_killed {
                    reason.push_str(" (killed: out of memory)");
                }
                if !error.is_empty() {
                    reason.push_str(&format!(": {error}"));
                }
                Some((*code, *code != 0 || *oom_killed, reason))
            }
            _ => None,
        }
    }
}

/// A container carrying Cube's labels, as found by [`ListManaged`].
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedContainer {
    /// The container id.
    pub id: String,
    /// The task it runs, from its label (None if the label is unreadable).
    pub task_id: Option<TaskId>,
    /// The task's placement it was started for, from its label (None if absent).
    pub placement: Option<u64>,
    /// The task as it was started, from its label (None if absent or unreadable, for a
    /// container that is not running, and unless the listing asked for tasks): what a worker
    /// that lost its store adopts it from.
    pub task: Option<Task>,
    /// The store epoch of the worker that started it, from its label.
    pub store: Option<String>,
    /// Whether it is running.
    pub running: bool,
}

/// Starts a container for a task: the image is used if present and pulled otherwise.
#[derive(Message)]
#[rtype(result = "Result<ContainerInfo, RuntimeError>")]
pub struct Start {
    /// The task to run.
    pub task: Task,
    /// The store (epoch) of the worker starting it: its containers carry it as `cube.store`,
    /// so that the worker reaps only unowned containers it made itself.
    pub store: String,
}

/// Stops a container (gracefully, then killed after the timeout) and keeps it, with its logs,
/// until [`Remove`]. A container that has already stopped, or is gone, is not an error.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct Stop {
    /// The container.
    pub container_id: String,
    /// How long it gets to exit after SIGTERM.
    pub timeout: Duration,
}

/// Runs a task's health check against its container (see [`health::probe`]).
#[derive(Message)]
#[rtype(result = "Health")]
pub struct Probe {
    /// The task, with its container and published ports.
    pub task: Task,
    /// How long the check may take.
    pub timeout: Duration,
}

/// Removes a container (stopped or not) and with it its logs; one already gone is not an error.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct Remove {
    /// The container.
    pub container_id: String,
}

/// Reads a container's state; a missing container is `ContainerStatus::Missing`, not an error.
#[derive(Message)]
#[rtype(result = "Result<ContainerInfo, RuntimeError>")]
pub struct Inspect {
    /// The container.
    pub container_id: String,
}

/// Which lines of a container's output to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// How many lines from the end.
    pub tail: usize,
    /// Only lines written at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Start each line with its RFC 3339 timestamp (how `logs -f` knows what it has shown).
    pub timestamps: bool,
}

impl LogQuery {
    /// The last `tail` lines, without timestamps.
    pub fn tail(tail: usize) -> LogQuery {
        LogQuery {
            tail,
            since: None,
            timestamps: false,
        }
    }
}

/// Reads what a container wrote to stdout and stderr.
#[derive(Message)]
#[rtype(result = "Result<String, RuntimeError>")]
pub struct Logs {
    /// The container.
    pub container_id: String,
    /// Which lines.
    pub query: LogQuery,
}

/// Lists the containers this worker created (by their labels): the running ones, or (`all`)
/// every one.
#[derive(Message)]
#[rtype(result = "Result<Vec<ManagedContainer>, RuntimeError>")]
pub struct ListManaged {
    /// Stopped containers too.
    pub all: bool,
    /// With the task each running container was started for (what adoption needs; a periodic
    /// reconcile does not, and reading it costs a copy of each task).
    pub tasks: bool,
}

/// Checks that the engine answers.
#[derive(Message)]
#[rtype(result = "Result<(), RuntimeError>")]
pub struct Ping;

/// Watches a running container and reports its exit (used again after a worker restart).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    /// The task it runs.
    pub task_id: TaskId,
    /// The container.
    pub container_id: String,
}

/// Sent by a runtime to its worker when a container ends on its own.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct ContainerExited {
    /// The task it ran.
    pub task_id: TaskId,
    /// The container.
    pub container_id: String,
    /// How it ended.
    pub status: ContainerStatus,
}

/// The runtime a worker uses: Docker or simulated, behind the same messages.
#[derive(Clone)]
pub enum RuntimeHandle {
    /// Real containers.
    Docker(Addr<DockerRuntime>),
    /// Simulated containers.
    Sim(Addr<SimRuntime>),
}

impl RuntimeHandle {
    /// Sends `msg` to whichever runtime this is and waits for the answer.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, RuntimeError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        DockerRuntime: Handler<M>,
        SimRuntime: Handler<M>,
    {
        let result = match self {
            RuntimeHandle::Docker(addr) => addr.send(msg).await,
            RuntimeHandle::Sim(addr) => addr.send(msg).await,
        };
        result.map_err(|e| RuntimeError::Unavailable {
            reason: format!("runtime actor stopped: {e}"),
        })
    }

    /// Sends `msg` without waiting.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        DockerRuntime: Handler<M>,
        SimRuntime: Handler<M>,
    {
        match self {
            RuntimeHandle::Docker(addr) => addr.do_send(msg),
            RuntimeHandle::Sim(addr) => addr.do_send(msg),
        }
    }

    /// `docker` or `sim`.
    pub fn kind(&self) -> &'static str {
        match self {
            RuntimeHandle::Docker(_) => "docker",
            RuntimeHandle::Sim(_) => "sim",
        }
    }
}

/// The container name for a task: readable, and unique per start
/// (`cube-<name>-<first 12 of the id>-p<placement>-r<restart count>`).
pub fn container_name(task: &Task) -> String {
    format!(
        "cube-{}-{}-p{}-r{}",
        task.name,
        &task.id.simple().to_string()[..12],
        task.placement,
        task.restart_count
    )
}

/// The exit a task asks for through `EXIT_CODE` / `EXIT_AFTER_MS` (read by the echo program and
/// the simulated runtime alike).
pub fn requested_exit(task: &Task) -> Option<(i64, Duration)> {
    let code = task
        .env_var("EXIT_CODE")
        .and_then(|v| v.trim().parse().ok());
    let after = task
        .env_var("EXIT_AFTER_MS")
        .and_then(|v| v.trim().parse().ok());
    if code.is_none() && after.is_none() {
        return None;
    }
    Some((code.unwrap_or(0), Duration::from_millis(after.unwrap_or(0))))
}
