//! Health checks: what a worker's runtime asks a task's container to find out whether it is
//! healthy. The probe goes to an address the worker can reach: the port the container's first
//! exposed port is published on, on the worker's host.

use std::time::Duration;

use crate::task::Task;

/// What a health check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The check passed.
    Healthy,
    /// The check failed, and why (in words).
    Unhealthy(String),
}

/// The host port the first exposed port of `task` is published on.
fn published_port(task: &Task) -> Option<u16> {
    let first = task.exposed_ports.keys().next()?;
    task.host_ports
        .get(first)?
        .iter()
        .find_map(|b| b.host_port.parse().ok())
}

/// Runs `task`'s health check against its published port on `host`, within `timeout`: an HTTP
/// GET of its path (healthy on 2xx or 3xx), or a TCP connection (`tcp`).
pub async fn probe(task: &Task, host: &str, timeout: Duration) -> Health {
    let Some(port) = published_port(task) else {
        return Health::Unhealthy("the task's port is not published".into());
    };
    let host = if host == "0.0.0.0" || host.is_empty() {
        "127.0.0.1"
    } else {
        host
    };
    let check = task.health_check.as_str();
    if check == "tcp" {
        let connect = tokio::net::TcpStream::connect((host, port));
        return match actix::clock::timeout(timeout, connect).await {
            Ok(Ok(_)) => Health::Healthy,
            Ok(Err(e)) => Health::Unhealthy(format!("TCP {host}:{port}: {e}")),
            Err(_) => Health::Unhealthy(format!("TCP {host}:{port}: no answer in {timeout:?}")),
        };
    }
    let url = format!("http://{host}:{port}{check}");
    let client = awc::Client::builder().timeout(timeout).finish();
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() || response.status().is_redirection() => {
            Health::Healthy
        }
        Ok(response) => Health::Unhealthy(format!("GET {check} answered {}", response.status())),
        Err(e) => Health::Unhealthy(format!("GET {check}: {e}")),
    }
}

/// The simulated runtime's health: healthy, unless the task's `SIM_HEALTH_FAIL_AFTER_MS=N` says
/// it fails its checks from N ms after it started.
pub fn simulated(task: &Task, running_for: Duration) -> Health {
    let fail_after = task
        .env_var("SIM_HEALTH_FAIL_AFTER_MS")
        .and_then(|v| v.trim().parse::<u64>().ok());
    match fail_after {
        Some(ms) if running_for >= Duration::from_millis(ms) => Health::Unhealthy(format!(
            "GET {} answered 500 (simulated, failing from {ms} ms after start)",
            task.health_check
        )),
        _ => Health::Healthy,
    }
}
