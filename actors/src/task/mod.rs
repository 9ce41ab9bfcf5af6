//! The task: what a user asks Cube to run, and the event envelope it travels in.
//!
//! The JSON shape is the book's: PascalCase keys named after the Go fields, states as numbers or
//! names, a `TaskEvent {ID, State, Timestamp, Task}` as the request body. Units are fixed here
//! and nowhere else: `Cpu` is in cores, `Memory` and `Disk` are in bytes.

mod check;
mod event;
mod map;
mod policy;
mod state;
mod time;

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

pub use check::HealthCheck;
pub use event::{Desired, StoredEvent, TaskEvent, TaskRef};
pub use map::TaskMap;
pub use policy::RestartPolicy;
pub use state::TaskState;

/// A task's identity: the key in every store, on the manager and on the workers.
pub type TaskId = Uuid;

/// A port and protocol as Docker writes it: `"7777/tcp"`.
pub type PortSpec = String;

/// Something the task needs to run is missing or wrong; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid task field `{field}`: {reason}")]
pub struct InvalidTask {
    /// The JSON key of the field at fault.
    pub field: Cow<'static, str>,
    /// What is wrong with it.
    pub reason: String,
}

/// A state change the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task} cannot go from {from} to {to}")]
pub struct InvalidTransition {
    /// The task concerned.
    pub task: TaskId,
    /// Its state now.
    pub from: TaskState,
    /// The state that was asked for.
    pub to: TaskState,
}

/// An empty JSON object, the value type of Docker's port sets (`{"7777/tcp": {}}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// One published port on the host, as `docker inspect` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PortBinding {
    /// The host address the port is bound to (`0.0.0.0`, `::`, `127.0.0.1`).
    #[serde(default)]
    pub host_ip: String,
    /// The host port, as a string (Docker's convention).
    #[serde(default)]
    pub host_port: String,
}

/// A task: one container Cube keeps running somewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Task {
    /// The task's identity. A request without one gets a fresh one.
    #[serde(rename = "ID", default = "Uuid::new_v4")]
    pub id: TaskId,
    /// The Docker container running the task, set by the worker once it started one.
    #[serde(rename = "ContainerID", default)]
    pub container_id: String,
    /// The container of the attempt before, kept (stopped, with its logs) after a restart in
    /// place until the next one.
    #[serde(
        rename = "PreviousContainerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub previous_container_id: String,
    /// A human name for the task. A request without one is named after its id.
    #[serde(default)]
    pub name: String,
    /// Where the task is in its life. Private: it changes only through [`Task::transition`]
    /// (and is set once, to Pending or Scheduled, when a manager or worker admits the task).
    #[serde(default)]
    state: TaskState,
    /// The container image (`repo:tag`), used as is when present on the node, pulled otherwise.
    #[serde(default)]
    pub image: String,
    /// CPU cores reserved for the task, and its limit (`0` = no limit). Docker gets `Cpu × 1e9` NanoCPUs.
    #[serde(default)]
    pub cpu: f64,
    /// Memory in bytes, reserved and enforced as the container's limit (`0` = no limit).
    /// Requests may also write a size with a unit: `"256Mi"`.
    #[serde(default, deserialize_with = "size")]
    pub memory: u64,
    /// Disk in bytes the task needs on its node (a scheduling reservation); `"1Gi"` also reads.
    #[serde(default, deserialize_with = "size")]
    pub disk: u64,
    /// Container ports the task listens on (`{"7777/tcp": {}}`).
    #[serde(default)]
    pub exposed_ports: BTreeMap<PortSpec, Empty>,
    /// Where the exposed ports are published on the node, filled in by the worker.
    #[serde(default)]
    pub host_ports: BTreeMap<PortSpec, Vec<PortBinding>>,
    /// Fixed host ports asked for (`{"7777/tcp": "7777"}`); ports not named here get a free host port.
    #[serde(default)]
    pub port_bindings: BTreeMap<PortSpec, String>,
    /// What Cube does when the container ends.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// When the current container started (the book never set it; Cube does).
    #[serde(
        default,
        deserialize_with = "book_time",
        serialize_with = "time::serialize"
    )]
    pub start_time: Option<DateTime<Utc>>,
    /// When the task ended.
    #[serde(
        default,
        deserialize_with = "book_time",
        serialize_with = "time::serialize"
    )]
    pub finish_time: Option<DateTime<Utc>>,
    /// How the worker checks that the task is healthy; empty for no check. `"/health"` (the
    /// book's form): an HTTP GET of that path on the task's first exposed port, healthy on any
    /// 2xx or 3xx answer (the book accepted only 200). `"tcp"`: a TCP connection to that port.
    /// When, how often and how many failures make it unhealthy are worker settings, which the
    /// object form may set for this task (see [`HealthCheck`]).
    #[serde(default)]
    pub health_check: HealthCheck,
    /// How many times Cube restarted the task, in all.
    #[serde(default)]
    pub restart_count: u32,
    /// How many of those restarts were in place within the current placement (its worker's
    /// budget counts these).
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub restarts_here: u32,
    /// How many times the manager placed the task again on another node after it failed for
    /// good on one (its restarts in place spent).
    #[serde(default, skip_serializing_if = "is_zero32")]
    pub replacements: u32,
    /// Environment variables, each `KEY=value`.
    #[serde(default)]
    pub env: Vec<String>,
    /// A command that replaces the image's default (`["/echo", "--port", "8080"]`); empty for the default.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// The node the task is placed on.
    #[serde(default)]
    pub node: Option<String>,
    /// The exit code of the task's last container, once it has ended.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Why the task is in its state, in words ("container exited with code 3").
    #[serde(default)]
    pub reason: String,
    /// Which placement of the task this is: the manager mints a new number each time it places
    /// the task on a node (first start, or a move). A report or a container of an older placement
    /// is stale: the manager ignores it and has that copy stopped. 0 for a task never placed by a
    /// manager.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub placement: u64,
    /// On a worker: the revision of the worker's last change to this task, the position of that
    /// change in the worker's feed (see `worker::feed`). 0 elsewhere.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    /// When the manager accepted the task; the order tasks are listed and placed in.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "time::serialize"
    )]
    pub submit_time: Option<DateTime<Utc>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

/// Reads a size in bytes: a number (the book's form) or a string with a unit (`"256Mi"`).
fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d) {
        Ok(Raw::Number(n)) => Ok(n),
        Ok(Raw::Text(t)) => crate::units::parse_bytes(&t).map_err(serde::de::Error::custom),
        Err(_) => Err(serde::de::Error::custom(
            "expected a size in bytes (a whole number >= 0) or a string with a unit such as \"256Mi\"",
        )),
    }
}

/// Reads a time that the book may send as Go's zero time (`0001-01-01T00:00:00Z`), meaning "unset".
fn book_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let t = Option::<DateTime<Utc>>::deserialize(d)?;
    Ok(t.filter(|t| t.timestamp() > DateTime::<Utc>::UNIX_EPOCH.timestamp() - 62_000_000_000))
}

impl InvalidTask {
    /// Reads back the message of an `InvalidTask` (as a remote worker sends it), so that a
    /// refusal by a remote node is the same error as one by a local node.
    pub fn from_message(message: &str) -> InvalidTask {
        let parsed = message
            .strip_prefix("invalid task field `")
            .and_then(|rest| rest.split_once("`: "));
        match parsed {
            Some((field, reason)) => InvalidTask {
                field: field.to_string().into(),
                reason: reason.to_string(),
            },
            None => InvalidTask {
                field: "Task".into(),
                reason: message.to_string(),
            },
        }
    }
}

impl Task {
    /// A pending task for `image`, with a fresh id and everything else at its default.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Task {
        Task {
            id: Uuid::new_v4(),
            container_id: String::new(),
            previous_container_id: String::new(),
            name: name.into(),
            state: TaskState::Pending,
            image: image.into(),
            cpu: 0.0,
            memory: 0,
            disk: 0,
            exposed_ports: BTreeMap::new(),
            host_ports: BTreeMap::new(),
            port_bindings: BTreeMap::new(),
            restart_policy: RestartPolicy::OnFailure,
            start_time: None,
            finish_time: None,
            health_check: HealthCheck::default(),
            restart_count: 0,
            restarts_here: 0,
            replacements: 0,
            env: Vec::new(),
            cmd: Vec::new(),
            node: None,
            exit_code: None,
            reason: String::new(),
            placement: 0,
            revision: 0,
            submit_time: None,
        }
    }

    /// Where the task is in its life.
    pub fn state(&self) -> TaskState {
        self.state
    }

    /// Whether the task is over for good: Completed, or Failed with nothing left to retry. This
    /// one predicate decides what counts as history (pruned after the retention), which names are
    /// free again, and what a worker may forget. A task its policy restarts goes from Running
    /// back to Scheduled, never through Failed, so every Failed task is finished.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, TaskState::Completed | TaskState::Failed)
    }

    /// Starts the life of a task received by a manager or a worker: it enters `state` (Pending
    /// on a manager, Scheduled on a worker) with `reason`, and whatever a request said about an
    /// earlier life (container, ports, times, exit code, node, revision) is cleared. This is the
    /// only place besides [`Task::transition`] that sets the state.
    pub fn admit(mut self, state: TaskState, reason: impl Into<String>) -> Task {
        self.state = state;
        self.reason = reason.into();
        self.container_id.clear();
        self.host_ports.clear();
        self.node = None;
        self.exit_code = None;
        self.start_time = None;
        self.finish_time = None;
        self.revision = 0;
        self.restarts_here = 0;
        self
    }

    /// Moves the task to `next` if the state machine allows it, recording `reason`.
    ///
    /// This is the only place a task's state changes. Entering `Running` sets `StartTime`;
    /// entering `Completed` or `Failed` sets `FinishTime`.
    pub fn transition(
        &mut self,
        next: TaskState,
        reason: impl Into<String>,
    ) -> Result<(), InvalidTransition> {
        if !self.state.can_transition_to(next) {
            return Err(InvalidTransition {
                task: self.id,
                from: self.state,
                to: next,
            });
        }
        let now = Utc::now();
        match next {
            TaskState::Running => {
                self.start_time = Some(now);
                self.finish_time = None;
                self.exit_code = None;
            }
            TaskState::Completed | TaskState::Failed => self.finish_time = Some(now),
            TaskState::Pending | TaskState::Scheduled => {}
        }
        self.state = next;
        self.reason = reason.into();
        Ok(())
    }

    /// Fills in what a request may leave out (a name) and checks every field a node needs.
    pub fn normalize(&mut self) -> Result<(), InvalidTask> {
        let invalid = |field: &'static str, reason: String| {
            Err(InvalidTask {
                field: field.into(),
                reason,
            })
        };
        if self.image.trim().is_empty() {
            return invalid(
                "Image",
                "an image is required, e.g. \"cube/echo:latest\"".into(),
            );
        }
        if self.name.is_empty() {
            self.name = format!("task-{}", &self.id.simple().to_string()[..8]);
        }
        if self.name.len() > 128
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return invalid(
                "Name",
                format!(
                    "`{}` must be at most 128 characters of letters, digits, '-', '_' and '.'",
                    self.name
                ),
            );
        }
        if !self.cpu.is_finite() || self.cpu < 0.0 {
            return invalid("Cpu", format!("{} is not a number of cores >= 0", self.cpu));
        }
        for port in self.exposed_ports.keys().chain(self.port_bindings.keys()) {
            if parse_port_spec(port).is_none() {
                return invalid(
                    "ExposedPorts",
                    format!("`{port}` is not a port like \"7777/tcp\" or \"53/udp\""),
                );
            }
        }
        for (port, host_port) in &self.port_bindings {
            if !self.exposed_ports.contains_key(port) {
                // A binding implies the port is exposed, as with `docker run -p`.
                self.exposed_ports.insert(port.clone(), Empty {});
            }
            if !host_port.is_empty() && host_port.parse::<u16>().map_or(true, |p| p == 0) {
                return invalid(
                    "PortBindings",
                    format!("host port `{host_port}` for {port} is not a port number 1-65535"),
                );
            }
        }
        let check = self.health_check.as_str();
        if !(check.is_empty() || check == "tcp" || check.starts_with('/')) {
            return invalid(
                "HealthCheck",
                format!("`{check}` is neither an HTTP path such as \"/health\" nor \"tcp\""),
            );
        }
        if !check.is_empty() && self.exposed_ports.is_empty() {
            return invalid(
                "HealthCheck",
                "a health check needs an exposed port to check, e.g. \"ExposedPorts\": {\"7777/tcp\": {}}".into(),
            );
        }
        if let Some(bad) = self
            .env
            .iter()
            .find(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty()))
        {
            return invalid("Env", format!("`{bad}` is not of the form KEY=value"));
        }
        Ok(())
    }

    /// The value of environment variable `key`, if the task sets it.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }

    /// The first published host port, as a number (the one a health check or a user would try).
    pub fn first_host_port(&self) -> Option<u16> {
        self.host_ports
            .values()
            .flatten()
            .find_map(|b| b.host_port.parse().ok())
    }
}

/// Splits `"7777/tcp"` into its port and protocol; a bare `"7777"` means tcp.
pub fn parse_port_spec(spec: &str) -> Option<(u16, &str)> {
    let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    matches!(proto, "tcp" | "udp" | "sctp").then_some((port, proto))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOK_EVENT: &str = include_str!("../../../config/examples/book-task1.json");

    #[test]
    fn the_books_task_event_file_reads_unchanged() {
        let event: TaskEvent = serde_json::from_str(BOOK_EVENT).unwrap();
        assert_eq!(event.state, TaskState::Running);
        assert_eq!(event.task.state, TaskState::Scheduled);
        assert_eq!(event.task.name, "test-chapter-9.1");
        assert_eq!(event.task.health_check, "/health");
        assert_eq!(event.task.port_bindings["7777/tcp"], "7777");
        assert!(event.task.exposed_ports.contains_key("7777/tcp"));
        assert_eq!(event.desired().unwrap(), Desired::Run);
    }

    #[test]
    fn a_task_round_trips_through_json_with_states_by_name() {
        let mut task = Task::new("web", "cube/echo:latest");
        task.cpu = 0.5;
        task.memory = 64 << 20;
        task.env = vec!["A=1".into()];
        task.cmd = vec!["/echo".into()];
        task.host_ports.insert(
            "7777/tcp".into(),
            vec![PortBinding {
                host_ip: "0.0.0.0".into(),
                host_port: "49155".into(),
            }],
        );
        task.transition(TaskState::Scheduled, "placed").unwrap();
        task.transition(TaskState::Running, "started").unwrap();
        let event = TaskEvent::run(task);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["State"], "Running");
        assert_eq!(json["Task"]["State"], "Running");
        assert_eq!(json["Task"]["Memory"], 64 << 20);
        assert_eq!(
            json["Task"]["HostPorts"]["7777/tcp"][0]["HostPort"],
            "49155"
        );
        let back: TaskEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = serde_json::from_str::<Task>(r#"{"Image":"x","Imagee":"y"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `Imagee`"), "{err}");
        let err =
            serde_json::from_str::<TaskEvent>(r#"{"Task":{"Image":"x"},"Stat":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `Stat`"), "{err}");
    }

    #[test]
    fn sizes_read_as_bytes_or_with_units() {
        let task: Task =
            serde_json::from_str(r#"{"Image":"x","Memory":"256Mi","Disk":1024}"#).unwrap();
        assert_eq!((task.memory, task.disk), (256 << 20, 1024));
        let err = serde_json::from_str::<Task>(r#"{"Image":"x","Memory":-5}"#).unwrap_err();
        assert!(
            err.to_string().contains("expected a size in bytes"),
            "{err}"
        );
        let err =
            serde_json::from_str::<Task>(r#"{"Image":"x","Memory":"5 parsecs"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown size unit `parsecs`"),
            "{err}"
        );
    }

    #[test]
    fn go_zero_times_read_as_unset() {
        let task: Task = serde_json::from_str(
            r#"{"Image":"x","StartTime":"0001-01-01T00:00:00Z","FinishTime":"2024-05-01T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(task.start_time, None);
        assert!(task.finish_time.is_some());
    }

    #[test]
    fn transition_sets_times_and_refuses_what_the_table_refuses() {
        let mut task = Task::new("t", "img");
        assert!(task.transition(TaskState::Running, "skip").is_err());
        task.transition(TaskState::Scheduled, "placed").unwrap();
        task.transition(TaskState::Running, "started").unwrap();
        assert!(task.start_time.is_some());
        task.transition(TaskState::Completed, "stopped by user")
            .unwrap();
        assert!(task.finish_time.is_some());
        assert_eq!(task.reason, "stopped by user");
        let err = task.transition(TaskState::Running, "again").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("task {} cannot go from Completed to Running", task.id)
        );
    }

    #[test]
    fn normalize_names_the_field_at_fault() {
        let check = |json: &str, field: &str| {
            let mut task: Task = serde_json::from_str(json).unwrap();
            let err = task.normalize().unwrap_err();
            assert_eq!(err.field, field, "{err}");
        };
        check(r#"{"Name":"x"}"#, "Image");
        check(r#"{"Image":"i","Name":"a b"}"#, "Name");
        check(r#"{"Image":"i","Cpu":-1}"#, "Cpu");
        check(
            r#"{"Image":"i","ExposedPorts":{"http":{}}}"#,
            "ExposedPorts",
        );
        check(
            r#"{"Image":"i","PortBindings":{"80/tcp":"70000"}}"#,
            "PortBindings",
        );
        check(r#"{"Image":"i","Env":["NOEQUALS"]}"#, "Env");
        let mut task: Task =
            serde_json::from_str(r#"{"Image":"i","PortBindings":{"80/tcp":"8080"}}"#).unwrap();
        task.normalize().unwrap();
        assert!(task.name.starts_with("task-"));
        assert!(task.exposed_ports.contains_key("80/tcp"));
    }

    #[test]
    fn failed_is_not_a_desired_state() {
        let mut event = TaskEvent::run(Task::new("t", "i"));
        event.state = TaskState::Failed;
        assert_eq!(event.desired().unwrap_err().field, "State");
        event.state = TaskState::Completed;
        assert_eq!(event.desired().unwrap(), Desired::Stop);
    }
}
