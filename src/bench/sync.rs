//! `cube bench --sync-sizes`: the bytes of one sync that carries one change, from a worker served
//! over HTTP, with no history, with `history` finished tasks behind it, and with `running` tasks
//! running (the sync issue's measure: a sync costs what changed, not what the worker holds).

use std::time::Duration;

use anyhow::{Context as _, bail};
use cube_actors::task::TaskEvent;
use serde_json::Value;

use super::{BenchArgs, bench_token, client, fill, long_task};
use crate::config::{RuntimeChoice, StoreChoice, WorkerSettings};
use crate::serve::start_worker;

/// A worker served over HTTP, and its base URL.
async fn http_worker(dir: &std::path::Path) -> anyhow::Result<String> {
    let settings = WorkerSettings {
        listen: "127.0.0.1:0".into(),
        name: "bench-worker".into(),
        store: StoreChoice::Lmdb,
        data_dir: dir.join("worker"),
        runtime: RuntimeChoice::Sim,
        token: bench_token().expose().to_string(),
        ..WorkerSettings::default()
    };
    let worker = start_worker(&settings).await?;
    actix_web::rt::spawn(worker.server);
    Ok(format!("http://{}", worker.addr))
}

/// The bytes of the body of `GET {base}/sync...` and the reply.
async fn sync(
    client: &awc::Client,
    base: &str,
    cursor: Option<(&str, u64)>,
) -> anyhow::Result<(usize, Value)> {
    let mut url = format!("{base}/sync?wait_ms=2000");
    if let Some((epoch, revision)) = cursor {
        url.push_str(&format!("&epoch={epoch}&revision={revision}"));
    }
    let mut r = client
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bytes = r.body().limit(1 << 30).await?;
    Ok((bytes.len(), serde_json::from_slice(&bytes)?))
}

/// The worker's cursor now.
async fn head(client: &awc::Client, base: &str) -> anyhow::Result<(String, u64)> {
    let (_, full) = sync(client, base, None).await?;
    let epoch = full["Epoch"].as_str().context("no epoch")?.to_string();
    Ok((epoch, full["Revision"].as_u64().context("no revision")?))
}

/// Waits until the worker's feed stands still (every task started or ended).
async fn at_rest(client: &awc::Client, base: &str) -> anyhow::Result<()> {
    let mut last = head(client, base).await?;
    loop {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        let now = head(client, base).await?;
        if now == last {
            return Ok(());
        }
        last = now;
    }
}

/// Submits `event` to the worker and returns the bytes and task count of the next sync from
/// the head before (once the task has started).
async fn one_change_sync(
    client: &awc::Client,
    base: &str,
    event: &TaskEvent,
) -> anyhow::Result<(usize, usize)> {
    at_rest(client, base).await?;
    let (epoch, revision) = head(client, base).await?;
    let r = client.post(format!("{base}/tasks")).send_json(event).await;
    if !r.map_err(|e| anyhow::anyhow!("{e}"))?.status().is_success() {
        bail!("the worker refused a task");
    }
    // The start and the Running state may come as one change or two; take both.
    at_rest(client, base).await?;
    let (bytes, reply) = sync(client, base, Some((&epoch, revision))).await?;
    let tasks = reply["Tasks"].as_array().map_or(0, Vec::len);
    Ok((bytes, tasks))
}

/// Sync sizes with and without history and running tasks.
pub async fn sync_sizes(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let base = http_worker(dir).await?;
    let client = client(Duration::from_secs(120));
    let (empty, _) = one_change_sync(&client, &base, &long_task("probe-0")).await?;
    let url = format!("{base}/tasks");
    fill(&url, args.connections, args.history, "hist").await?;
    let (loaded, _) = one_change_sync(&client, &base, &long_task("probe-1")).await?;
    println!("one-change sync, no history:       {empty:>9} bytes");
    println!(
        "one-change sync, {:>6} finished:  {loaded:>9} bytes",
        args.history
    );
    println!(
        "ratio:                             {:>9.2}",
        loaded as f64 / empty as f64
    );
    for i in 0..args.running {
        let r = client
            .post(&url)
            .send_json(&long_task(&format!("run-{i}")))
            .await;
        if !r.map_err(|e| anyhow::anyhow!("{e}"))?.status().is_success() {
            bail!("the worker refused a task");
        }
    }
    let (bytes, tasks) = one_change_sync(&client, &base, &long_task("probe-2")).await?;
    println!(
        "one-change sync, {} running:      {bytes:>9} bytes, {tasks} task(s)",
        args.running
    );
    Ok(())
}
