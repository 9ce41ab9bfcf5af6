//! The user-facing commands: run, stop, status, node, logs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use cube_actors::node::NodeReport;
use cube_actors::task::{Empty, RestartPolicy, Task, TaskEvent, TaskState};
use cube_actors::units::{format_bytes, trim_float};

use super::client::ManagerClient;
use super::table;

/// How read commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON, as the API returns it.
    Json,
}

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
            task.health_check = v;
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

/// `cube run`: submit, then (with `wait`) follow the task until it runs or fails.
pub async fn run(
    client: &ManagerClient,
    spec: RunSpec,
    wait: bool,
    timeout: Duration,
    output: Output,
) -> anyhow::Result<()> {
    let event = spec.event()?;
    let task = client.submit(&event).await?;
    if !wait {
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&task)?),
            Output::Table => println!("task {} ({}) submitted: {}", task.id, task.name, task.state),
        }
        return Ok(());
    }
    if output == Output::Table {
        println!("task {} ({}) submitted", task.id, task.name);
    }
    let deadline = Instant::now() + timeout;
    let mut last = (task.state, task.reason.clone());
    if output == Output::Table {
        println!("  {}: {}", task.state, task.reason);
    }
    loop {
        let task = client.task(&task.id.to_string()).await?;
        if (task.state, task.reason.clone()) != last {
            last = (task.state, task.reason.clone());
            if output == Output::Table {
                println!("  {}: {}", task.state, task.reason);
            }
        }
        match task.state {
            TaskState::Running => {
                match output {
                    Output::Json => println!("{}", serde_json::to_string_pretty(&task)?),
                    Output::Table => {
                        let node = task.node.as_deref().unwrap_or("?");
                        let ports = ports(&task);
                        if ports.is_empty() {
                            println!("task {} is running on node {node}", task.name);
                        } else {
                            println!(
                                "task {} is running on node {node}; ports {ports}",
                                task.name
                            );
                        }
                    }
                }
                return Ok(());
            }
            TaskState::Failed => bail!("task {} failed: {}", task.name, task.reason),
            TaskState::Completed => bail!(
                "task {} ended before it was seen running: {}",
                task.name,
                task.reason
            ),
            TaskState::Pending | TaskState::Scheduled => {}
        }
        if Instant::now() > deadline {
            bail!(
                "task {} is still {} after {}s: {} (it keeps going; `cube status {}` follows it)",
                task.name,
                task.state,
                timeout.as_secs(),
                task.reason,
                task.id
            );
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `cube stop`.
pub async fn stop(client: &ManagerClient, reference: &str, output: Output) -> anyhow::Result<()> {
    let task = client.resolve(reference).await?;
    let stopped = client.stop(&task.id.to_string()).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&stopped)?),
        Output::Table => println!(
            "task {} ({}) stopped: {}",
            stopped.id, stopped.name, stopped.state
        ),
    }
    Ok(())
}

/// Published ports as `7777/tcp->127.0.0.1:49153`, comma-separated.
fn ports(task: &Task) -> String {
    let mut out = Vec::new();
    for (port, bindings) in &task.host_ports {
        for b in bindings {
            let ip = if b.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &b.host_ip
            };
            out.push(format!("{port}->{ip}:{}", b.host_port));
        }
    }
    out.join(",")
}

fn age(since: Option<DateTime<Utc>>) -> String {
    since.map_or("-".into(), |t| table::age((Utc::now() - t).num_seconds()))
}

/// `cube status [TASK]`.
pub async fn status(
    client: &ManagerClient,
    reference: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    if let Some(reference) = reference {
        let task = client.resolve(reference).await?;
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&task)?),
            Output::Table => {
                let fields: [(&str, String); 14] = [
                    ("ID", task.id.to_string()),
                    ("Name", task.name.clone()),
                    ("State", task.state.to_string()),
                    ("Reason", task.reason.clone()),
                    ("Node", task.node.clone().unwrap_or("-".into())),
                    ("Image", task.image.clone()),
                    (
                        "Container",
                        if task.container_id.is_empty() {
                            "-".into()
                        } else {
                            task.container_id.clone()
                        },
                    ),
                    ("Ports", ports(&task)),
                    ("CPU", trim_float(task.cpu)),
                    ("Memory", format_bytes(task.memory)),
                    ("Restarts", task.restart_count.to_string()),
                    (
                        "Started",
                        task.start_time.map_or("-".into(), |t| {
                            format!("{} ({} ago)", t.to_rfc3339(), age(Some(t)))
                        }),
                    ),
                    (
                        "Finished",
                        task.finish_time.map_or("-".into(), |t| t.to_rfc3339()),
                    ),
                    (
                        "Exit code",
                        task.exit_code.map_or("-".into(), |c| c.to_string()),
                    ),
                ];
                for (key, value) in fields {
                    println!("{:<10} {value}", format!("{key}:"));
                }
            }
        }
        return Ok(());
    }
    let tasks = client.tasks().await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&tasks)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = tasks
                .iter()
                .map(|t| {
                    vec![
                        t.id.simple().to_string()[..12].to_string(),
                        t.name.clone(),
                        t.state.to_string(),
                        t.node.clone().unwrap_or("-".into()),
                        t.image.clone(),
                        ports(t),
                        t.restart_count.to_string(),
                        age(t.start_time),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &[
                        "ID", "NAME", "STATE", "NODE", "IMAGE", "PORTS", "RESTARTS", "AGE"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

fn node_row(n: &NodeReport) -> Vec<String> {
    let usage = n.stats.as_ref().map_or(String::new(), |s| {
        format!(" ({}% busy)", s.cpu.usage_percent.round())
    });
    vec![
        n.name.clone(),
        n.address.clone(),
        format!("{:?}", n.status),
        format!(
            "{}/{}{usage}",
            trim_float(n.reserved.cpu),
            trim_float(n.capacity.cpu)
        ),
        format!(
            "{}/{}",
            format_bytes(n.reserved.memory),
            format_bytes(n.capacity.memory)
        ),
        format!(
            "{}/{}",
            format_bytes(n.reserved.disk),
            format_bytes(n.capacity.disk)
        ),
        n.task_count.to_string(),
    ]
}

/// `cube node`.
pub async fn node(client: &ManagerClient, output: Output) -> anyhow::Result<()> {
    let nodes = client.nodes().await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&nodes)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = nodes.iter().map(node_row).collect();
            print!(
                "{}",
                table::render(
                    &[
                        "NAME", "ADDRESS", "STATUS", "CPU", "MEMORY", "DISK", "TASKS"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

/// Splits a timestamped log line into its time and its text.
fn split_timestamp(line: &str) -> Option<(DateTime<Utc>, &str)> {
    let (time, text) = line.split_once(' ').unwrap_or((line, ""));
    let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    Some((time, text))
}

/// `cube logs`: the last lines, and with `follow`, new lines as they come until the task ends.
pub async fn logs(
    client: &ManagerClient,
    reference: &str,
    tail: usize,
    follow: bool,
    output: Output,
) -> anyhow::Result<()> {
    let task = client.resolve(reference).await?;
    let id = task.id.to_string();
    if !follow {
        let text = client.logs(&id, tail, None, false).await?;
        match output {
            Output::Json => println!(
                "{}",
                serde_json::to_string_pretty(&text.lines().collect::<Vec<_>>())?
            ),
            Output::Table => print!("{text}"),
        }
        return Ok(());
    }
    // Follow: ask again every half second for what is newer than the last line shown.
    let mut last: Option<DateTime<Utc>> = None;
    let mut shown_at_last: BTreeMap<String, ()> = BTreeMap::new();
    loop {
        // Whether the task has ended is asked before reading, so the last read has every line.
        let ended = !matches!(
            client.task(&id).await?.state,
            TaskState::Running | TaskState::Scheduled | TaskState::Pending
        );
        let since = last.map(|t| t.timestamp());
        let tail = if last.is_none() { tail } else { 100_000 };
        let text = match client.logs(&id, tail, since, true).await {
            Ok(text) => text,
            // A stopped task's container is gone with its output: nothing more to show.
            Err(_) if ended => return Ok(()),
            Err(e) => return Err(e),
        };
        for line in text.lines() {
            let Some((time, body)) = split_timestamp(line) else {
                continue;
            };
            if last.is_some_and(|l| time < l)
                || (last == Some(time) && shown_at_last.contains_key(body))
            {
                continue;
            }
            if last != Some(time) {
                shown_at_last.clear();
            }
            shown_at_last.insert(body.to_string(), ());
            last = Some(time);
            match output {
                Output::Json => println!("{}", serde_json::json!({"Time": time, "Line": body})),
                Output::Table => println!("{body}"),
            }
        }
        if ended {
            return Ok(());
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
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
