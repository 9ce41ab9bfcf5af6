//! `cube run`: a task from a file or flags, submitted, and (with `--wait`) followed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cube_actors::task::{Empty, RestartPolicy, Task, TaskEvent, TaskState};

use super::client::ManagerClient;
use super::commands::{Output, ports};

/// What `cube run` starts, from flags (a file, when given, comes first; flags then override it).
#[derive(Debug, Default)]
pub struct RunSpec {
    /// A TaskEvent (the book's format) or a bare Task, as JSON.
    pub file: Option<std::path::PathBuf>,
    /// The image.
    pub image: Option<String>,
    /// The name.
    pub name: Option<String>,
    /// CPU cores.
    pub cpu: Option<f64>,
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Disk in bytes.
    pub disk: Option<u64>,
    /// Ports: `8080` (any free host port) or `9000:8080` (host 9000), optionally `/udp`.
    pub ports: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// An HTTP path for health checks.
    pub health_check: Option<String>,
    /// The restart policy.
    pub restart_policy: Option<RestartPolicy>,
    /// A command replacing the image's.
    pub cmd: Vec<String>,
}

/// Reads a task file: a TaskEvent (the book's format) or a bare Task.
pub fn read_task_file(path: &Path) -> anyhow::Result<TaskEvent> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read task file {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let event = if value.get("Task").is_some() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value::<Task>(value).map(TaskEvent::run)
    };
    event.with_context(|| format!("{} is not a task", path.display()))
}

impl RunSpec {
    /// The event to submit.
    pub fn event(self) -> anyhow::Result<TaskEvent> {
        let mut event = match &self.file {
            Some(path) => read_task_file(path)?,
            None => TaskEvent::run(Task::new("", "")),
        };
        let task = &mut event.task;
        if let Some(v) = self.image {
            task.image = v;
        }
        if let Some(v) = self.name {
            task.name = v;
        }
        if let Some(v) = self.cpu {
            task.cpu = v;
        }
        if let Some(v) = self.memory {
            task.memory = v;
        }
        if let Some(v) = self.disk {
            task.disk = v;
        }
        if let Some(v) = self.health_check {
            task.health_check = v.as_str().into();
        }
        if let Some(v) = self.restart_policy {
            task.restart_policy = v;
        }
        if !self.cmd.is_empty() {
            task.cmd = self.cmd;
        }
        task.env.extend(self.env);
        for port in self.ports {
            let (spec, host) = parse_port_flag(&port)?;
            task.exposed_ports.insert(spec.clone(), Empty {});
            if let Some(host) = host {
                task.port_bindings.insert(spec, host);
            }
        }
        if task.image.is_empty() {
            bail!("no image: give --image IMAGE or -f FILE with an \"Image\"");
        }
        Ok(event)
    }
}

/// `8080` → (`8080/tcp`, any host port); `9000:8080/udp` → (`8080/udp`, host `9000`).
fn parse_port_flag(flag: &str) -> anyhow::Result<(String, Option<String>)> {
    let (ports, proto) = flag.split_once('/').unwrap_or((flag, "tcp"));
    let (host, container) = match ports.split_once(':') {
        Some((h, c)) => (Some(h.to_string()), c),
        None => (None, ports),
    };
    let spec = format!("{container}/{proto}");
    if cube_actors::task::parse_port_spec(&spec).is_none()
        || host.as_ref().is_some_and(|h| h.parse::<u16>().is_err())
    {
        bail!("--port {flag}: expected PORT, HOSTPORT:PORT or PORT/udp, e.g. 8080 or 9000:8080");
    }
    Ok((spec, host))
}

/// `cube run`: submit, then (with `wait`) follow the task until it has run for `settle` without
/// failing (or ended with code 0), or has failed.
pub async fn run(
    client: &ManagerClient,
    spec: RunSpec,
    wait: Option<Wait>,
    output: Output,
) -> anyhow::Result<()> {
    let event = spec.event()?;
    let task = client.submit(&event).await?;
    let Some(wait) = wait else {
        match output {
            Output::Json => crate::out!("{}", serde_json::to_string_pretty(&task)?),
            Output::Table => crate::out!(
                "task {} ({}) submitted: {}",
                task.id,
                task.name,
                task.state()
            ),
        }
        return Ok(());
    };
    if output == Output::Table {
        crate::out!("task {} ({}) submitted", task.id, task.name);
        crate::out!("  {}: {}", task.state(), task.reason);
    }
    let deadline = Instant::now() + wait.timeout;
    let mut last = (task.state(), task.reason.clone());
    // When the task was first seen Running, and its restart count then.
    let mut running_since: Option<(Instant, u32)> = None;
    loop {
        let task = client.task(&task.id.to_string()).await?;
        if (task.state(), task.reason.clone()) != last {
            last = (task.state(), task.reason.clone());
            if output == Output::Table {
                crate::out!("  {}: {}", task.state(), task.reason);
            }
        }
        if let Some((_, restarts)) = running_since
            && task.restart_count > restarts
        {
            bail!(
                "task {} was restarted while it settled: {}",
                task.name,
                task.reason
            );
        }
        match task.state() {
            TaskState::Running => {
                let (since, _) = *running_since.get_or_insert((Instant::now(), task.restart_count));
                if since.elapsed() >= wait.settle {
                    return settled(&task, output);
                }
            }
            TaskState::Failed => bail!("task {} failed: {}", task.name, task.reason),
            TaskState::Completed if task.exit_code == Some(0) => return settled(&task, output),
            TaskState::Completed => bail!(
                "task {} ended before it settled: {}",
                task.name,
                task.reason
            ),
            TaskState::Pending | TaskState::Scheduled => {}
        }
        if Instant::now() > deadline {
            bail!(
                "task {} is still {} after {}s: {} (it keeps going; `cube status {}` follows it)",
                task.name,
                task.state(),
                wait.timeout.as_secs(),
                task.reason,
                task.id
            );
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How `cube run --wait` waits.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// How long the task must run without failing.
    pub settle: Duration,
    /// How long to wait in all before giving up.
    pub timeout: Duration,
}

/// Prints a task that ran (or ended well) for `cube run --wait`.
fn settled(task: &Task, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => crate::out!("{}", serde_json::to_string_pretty(task)?),
        Output::Table => {
            let node = task.node.as_deref().unwrap_or("?");
            let ports = ports(task);
            match (task.state(), ports.is_empty()) {
                (TaskState::Completed, _) => {
                    crate::out!(
                        "task {} ran on node {node} and ended: {}",
                        task.name,
                        task.reason
                    )
                }
                (_, true) => crate::out!("task {} is running on node {node}", task.name),
                (_, false) => {
                    crate::out!(
                        "task {} is running on node {node}; ports {ports}",
                        task.name
                    )
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_flags_read_as_docker_does() {
        assert_eq!(parse_port_flag("8080").unwrap(), ("8080/tcp".into(), None));
        assert_eq!(
            parse_port_flag("9000:8080").unwrap(),
            ("8080/tcp".into(), Some("9000".into()))
        );
        assert_eq!(parse_port_flag("53/udp").unwrap(), ("53/udp".into(), None));
        assert!(parse_port_flag("http").is_err());
        assert!(parse_port_flag("x:80").is_err());
    }

    #[test]
    fn flags_build_a_book_shaped_event() {
        let spec = RunSpec {
            image: Some("cube/echo".into()),
            name: Some("web".into()),
            memory: Some(256 << 20),
            ports: vec!["7777".into()],
            env: vec!["A=1".into()],
            ..RunSpec::default()
        };
        let event = spec.event().unwrap();
        assert_eq!(event.state, TaskState::Running);
        assert_eq!(event.task.memory, 256 << 20);
        assert!(event.task.exposed_ports.contains_key("7777/tcp"));
        assert_eq!(event.task.env, ["A=1"]);
        assert!(
            RunSpec::default()
                .event()
                .unwrap_err()
                .to_string()
                .contains("no image")
        );
    }
}
