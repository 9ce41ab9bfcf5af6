//! The commands that follow the manager's event stream: `cube events` and `cube status --watch`.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::Context as _;
use cube_actors::task::{Task, TaskState};
use serde_json::Value;
use uuid::Uuid;

use super::client::{EventStream, ManagerClient, StreamEvent};
use super::commands::{Output, task_table};

/// `cube events [--since CURSOR]`: prints every event as it happens, until the manager stops.
pub async fn events(
    client: &ManagerClient,
    since: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let mut stream = client.events(since, false).await?;
    while let Some(event) = stream.next().await? {
        match output {
            Output::Json if event.kind != "open" => {
                crate::out!("{}", serde_json::to_string(&event.data)?);
            }
            Output::Json => {}
            Output::Table => {
                if let Some(line) = describe(&event) {
                    crate::out!("{line}");
                }
            }
        }
    }
    eprintln!("the manager closed the event stream (it stopped?)");
    Ok(())
}

/// An event in one line: its cursor, time and what happened.
pub fn describe(event: &StreamEvent) -> Option<String> {
    let d = &event.data;
    let text = |key: &str| d[key].as_str().unwrap_or_default().to_string();
    let state = |key: &str| d[key].as_str().unwrap_or("-").to_string();
    let time = d["Time"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_default();
    let why = |reason: String| {
        if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        }
    };
    match event.kind.as_str() {
        "task" => {
            let id = text("Task");
            let node = d["Node"]
                .as_str()
                .map_or(String::new(), |n| format!(" on {n}"));
            let attempt = d["Attempt"].as_u64().unwrap_or(0);
            let restarts = if attempt > 0 {
                format!(" (restarts {attempt})")
            } else {
                String::new()
            };
            Some(format!(
                "{}  {time}  task {} ({})  {} -> {}{node}{restarts}{}",
                text("Cursor"),
                text("Name"),
                id.get(..8).unwrap_or(&id),
                state("From"),
                state("To"),
                why(text("Reason"))
            ))
        }
        "node" => Some(format!(
            "{}  {time}  node {}  {} -> {}{}",
            text("Cursor"),
            text("Node"),
            state("From"),
            state("To"),
            why(text("Reason"))
        )),
        "reset" if text("Cursor").is_empty() => Some(format!("-- reset: {}", text("Reason"))),
        "reset" => Some(format!(
            "-- reset: {} (the events that follow come after {})",
            text("Reason"),
            text("Cursor")
        )),
        _ => None,
    }
}

/// `cube status --watch`: the task table, redrawn as events change it.
pub async fn watch_status(
    client: &ManagerClient,
    filter: &str,
    state: Option<TaskState>,
    node: Option<&str>,
) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    loop {
        // Follow first, then load: what changes while the table loads comes through the stream,
        // applied after it, in order.
        let mut stream = client.events(None, false).await?;
        let mut tasks = load(client, filter).await?;
        draw(&tasks, state, node, terminal);
        if !follow(client, &mut stream, &mut tasks, state, node, terminal).await? {
            eprintln!("the manager closed the event stream (it stopped?)");
            return Ok(());
        }
        // A reset: events were lost, so the table is loaded again.
    }
}

/// The tasks as JSON (the table is drawn from them; events change their fields).
async fn load(client: &ManagerClient, filter: &str) -> anyhow::Result<BTreeMap<Uuid, Value>> {
    let tasks = client.tasks(filter).await?;
    tasks
        .into_iter()
        .map(|t| Ok((t.id, serde_json::to_value(&t)?)))
        .collect()
}

/// Applies events until the stream ends (false) or says events were lost (true).
async fn follow(
    client: &ManagerClient,
    stream: &mut EventStream,
    tasks: &mut BTreeMap<Uuid, Value>,
    state: Option<TaskState>,
    node: Option<&str>,
    terminal: bool,
) -> anyhow::Result<bool> {
    loop {
        let Some(event) = stream.next().await? else {
            return Ok(false);
        };
        match event.kind.as_str() {
            "reset" => return Ok(true),
            "task" => apply(client, tasks, &event.data).await?,
            _ => continue,
        }
        // A burst of events is drawn once.
        while let Ok(next) =
            actix_web::rt::time::timeout(Duration::from_millis(50), stream.next()).await
        {
            match next? {
                Some(e) if e.kind == "reset" => return Ok(true),
                Some(e) if e.kind == "task" => apply(client, tasks, &e.data).await?,
                Some(_) => {}
                None => return Ok(false),
            }
        }
        draw(tasks, state, node, terminal);
    }
}

/// Applies a task event to the table's tasks: a new task is fetched, a removed one dropped.
async fn apply(
    client: &ManagerClient,
    tasks: &mut BTreeMap<Uuid, Value>,
    event: &Value,
) -> anyhow::Result<()> {
    let id: Uuid = serde_json::from_value(event["Task"].clone())
        .context("the manager sent a task event without a task ID")?;
    if event["To"].is_null() {
        tasks.remove(&id);
        return Ok(());
    }
    let Some(task) = tasks.get_mut(&id) else {
        // New to this table: the task as it is now (it may be gone already).
        if let Ok(task) = client.task(&id.to_string()).await {
            tasks.insert(id, serde_json::to_value(&task)?);
        }
        return Ok(());
    };
    task["State"] = event["To"].clone();
    task["Node"] = event["Node"].clone();
    task["HostPorts"] = event["HostPorts"].clone();
    task["RestartCount"] = event["Attempt"].clone();
    task["Reason"] = event["Reason"].clone();
    if event["To"] == "Running" {
        task["StartTime"] = event["Time"].clone();
    }
    Ok(())
}

/// Prints the table: over the last one on a terminal, after it otherwise.
fn draw(
    tasks: &BTreeMap<Uuid, Value>,
    state: Option<TaskState>,
    node: Option<&str>,
    terminal: bool,
) {
    let mut shown: Vec<Task> = tasks
        .values()
        .filter_map(|v| serde_json::from_value::<Task>(v.clone()).ok())
        .filter(|t| state.is_none_or(|s| t.state() == s))
        .filter(|t| node.is_none_or(|n| t.node.as_deref() == Some(n)))
        .collect();
    shown.sort_by_key(|t| (t.submit_time, t.id));
    let now = chrono::Local::now().format("%H:%M:%S");
    if terminal {
        crate::out_raw!("\x1b[H\x1b[2J");
    }
    crate::out!("{} tasks at {now} (Ctrl-C to stop)", shown.len());
    crate::out_raw!("{}", task_table(shown.iter()));
    if !terminal {
        crate::out!("");
    }
}
