//! The user-facing commands: run, stop, status, node, logs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, Utc};
use cube_actors::node::NodeReport;
use cube_actors::task::{Task, TaskState};
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

/// `cube rm`: removes finished tasks (each by ID, unique ID prefix or name).
pub async fn rm(
    client: &ManagerClient,
    references: &[String],
    output: Output,
) -> anyhow::Result<()> {
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for reference in references {
        let result = async {
            let task = client.resolve(reference).await?;
            client.purge(&task.id.to_string()).await
        };
        match result.await {
            Ok(task) => removed.push(task),
            Err(e) => failures.push(format!("{reference}: {e:#}")),
        }
    }
    match output {
        Output::Json => crate::out!("{}", serde_json::to_string_pretty(&removed)?),
        Output::Table => {
            for task in &removed {
                crate::out!("task {} ({}) removed", task.id, task.name);
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// `cube prune`: removes every finished task.
pub async fn prune(client: &ManagerClient, output: Output) -> anyhow::Result<()> {
    let removed = client.prune().await?;
    match output {
        Output::Json => crate::out!("{}", serde_json::json!({ "Removed": removed })),
        Output::Table => crate::out!("removed {removed} finished tasks"),
    }
    Ok(())
}

/// `cube stop`.
pub async fn stop(client: &ManagerClient, reference: &str, output: Output) -> anyhow::Result<()> {
    let task = client.resolve(reference).await?;
    let stopped = client.stop(&task.id.to_string()).await?;
    match output {
        Output::Json => crate::out!("{}", serde_json::to_string_pretty(&stopped)?),
        Output::Table => crate::out!(
            "task {} ({}) stopped: {}",
            stopped.id,
            stopped.name,
            stopped.state()
        ),
    }
    Ok(())
}

/// Published ports as `7777/tcp->127.0.0.1:49153`, comma-separated.
pub(super) fn ports(task: &Task) -> String {
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
    filter: &str,
    output: Output,
) -> anyhow::Result<()> {
    if let Some(reference) = reference {
        let task = client.resolve(reference).await?;
        match output {
            Output::Json => crate::out!("{}", serde_json::to_string_pretty(&task)?),
            Output::Table => {
                let fields: [(&str, String); 14] = [
                    ("ID", task.id.to_string()),
                    ("Name", task.name.clone()),
                    ("State", task.state().to_string()),
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
                    crate::out!("{:<10} {value}", format!("{key}:"));
                }
                let history = client.history(&task.id.to_string()).await?;
                if !history.is_empty() {
                    crate::out!("History:");
                }
                for change in history {
                    crate::out!(
                        "  {} {} (placement {}, restarts {}): {}",
                        change["At"].as_str().unwrap_or("?"),
                        change["To"].as_str().unwrap_or("?"),
                        change["Placement"],
                        change["Attempt"],
                        change["Reason"].as_str().unwrap_or("")
                    );
                }
            }
        }
        return Ok(());
    }
    let tasks = client.tasks(filter).await?;
    match output {
        Output::Json => crate::out!("{}", serde_json::to_string_pretty(&tasks)?),
        Output::Table => crate::out_raw!("{}", task_table(tasks.iter())),
    }
    Ok(())
}

/// The table of `cube status`.
pub fn task_table<'a>(tasks: impl Iterator<Item = &'a Task>) -> String {
    let rows: Vec<Vec<String>> = tasks
        .map(|t| {
            vec![
                t.id.simple().to_string()[..12].to_string(),
                t.name.clone(),
                t.state().to_string(),
                t.node.clone().unwrap_or("-".into()),
                t.image.clone(),
                ports(t),
                t.restart_count.to_string(),
                age(t.start_time),
            ]
        })
        .collect();
    table::render(
        &[
            "ID", "NAME", "STATE", "NODE", "IMAGE", "PORTS", "RESTARTS", "AGE",
        ],
        &rows,
    )
}

fn node_row(n: &NodeReport) -> Vec<String> {
    // Nodes of one `cube up` share the machine: their CPU figure is the machine's, and says so.
    let whose = if n.address == cube_actors::node::LOCAL_ADDRESS {
        "machine "
    } else {
        ""
    };
    let usage = n.stats.as_ref().map_or(String::new(), |s| {
        format!(" ({whose}{}% busy)", s.cpu.usage_percent.round())
    });
    vec![
        n.name.clone(),
        n.address.clone(),
        if n.eligible {
            format!("{:?}", n.status)
        } else {
            format!("{:?} (drained)", n.status)
        },
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

/// `cube node drain NAME` (`remove` false) and `cube node rm NAME`.
pub async fn retire_node(
    client: &ManagerClient,
    name: &str,
    remove: bool,
    output: Output,
) -> anyhow::Result<()> {
    let moved = client.retire_node(name, remove).await?;
    match output {
        Output::Json => crate::out!("{}", serde_json::json!({ "Name": name, "Moved": moved })),
        Output::Table => {
            let verb = if remove { "removed" } else { "drained" };
            crate::out!("node {name} {verb}: {} tasks placed elsewhere", moved.len());
        }
    }
    Ok(())
}

/// `cube node`.
pub async fn node(client: &ManagerClient, output: Output) -> anyhow::Result<()> {
    let nodes = client.nodes().await?;
    match output {
        Output::Json => crate::out!("{}", serde_json::to_string_pretty(&nodes)?),
        Output::Table => {
            let rows: Vec<Vec<String>> = nodes.iter().map(node_row).collect();
            crate::out_raw!(
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
    previous: bool,
    output: Output,
) -> anyhow::Result<()> {
    let task = client.resolve(reference).await?;
    let id = task.id.to_string();
    if !follow || previous {
        let text = client.logs(&id, tail, None, false, previous).await?;
        match output {
            Output::Json => crate::out!(
                "{}",
                serde_json::to_string_pretty(&text.lines().collect::<Vec<_>>())?
            ),
            Output::Table => crate::out_raw!("{text}"),
        }
        return Ok(());
    }
    // Follow: ask again every half second for what is newer than the last line shown.
    let mut last: Option<DateTime<Utc>> = None;
    let mut shown_at_last: BTreeMap<String, ()> = BTreeMap::new();
    loop {
        // Whether the task has ended is asked before reading, so the last read has every line.
        let ended = !matches!(
            client.task(&id).await?.state(),
            TaskState::Running | TaskState::Scheduled | TaskState::Pending
        );
        let since = last.map(|t| t.timestamp());
        let tail = if last.is_none() { tail } else { 100_000 };
        let text = match client.logs(&id, tail, since, true, false).await {
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
                Output::Json => crate::out!("{}", serde_json::json!({"Time": time, "Line": body})),
                Output::Table => crate::out!("{body}"),
            }
        }
        if ended {
            return Ok(());
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
}
