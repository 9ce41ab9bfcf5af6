//! `cube bench` (hidden): the load harness. It starts what it measures in this process, on the
//! simulated runtime, and reports figures against a baseline measured in the same run:
//!
//! - **Submissions**: all-in-one clusters on LMDB take `POST /tasks` from `connections`
//!   concurrent clients for `seconds`: fresh ones, and one that keeps `history` finished tasks
//!   (the retention keeps them all), measured in turns; it prints both rates and their ratio.
//! - **Sync size**: a worker served over HTTP; the bytes of one sync that carries one change, with
//!   no history and with `history` finished tasks behind it, and with `running` tasks running.
//!
//! Tasks ask the simulated runtime to exit at once (`EXIT_AFTER_MS=0`), so submitted tasks become
//! history as they would in a busy cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cube_actors::task::{Task, TaskEvent};
use serde_json::Value;

use crate::config::{ClusterSettings, RuntimeChoice, StoreChoice, WorkerSettings};
use crate::serve::{start_cluster, start_worker};

/// What `cube bench` measures.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds each submission phase lasts.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Worker nodes of the cluster.
    #[arg(long, default_value_t = 10)]
    pub workers: usize,
    /// Finished tasks in the history of the second phase (and behind the second sync).
    #[arg(long, default_value_t = 50_000)]
    pub history: usize,
    /// Running tasks on the worker for the last sync.
    #[arg(long, default_value_t = 1000)]
    pub running: usize,
    /// The cluster's store (the default, LMDB, is what `cube up` runs on).
    #[arg(long, value_enum, default_value = "lmdb")]
    pub store: StoreChoice,
    /// Where the cluster keeps its data (a fresh directory under the system's temp dir if unset;
    /// removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// A task the simulated runtime ends at once with code 0.
fn quick_task(name: &str) -> TaskEvent {
    let mut task = Task::new(name, "cube/echo:latest");
    task.env = vec!["EXIT_CODE=0".into(), "EXIT_AFTER_MS=0".into()];
    TaskEvent::run(task)
}

/// A task that runs until stopped.
fn long_task(name: &str) -> TaskEvent {
    TaskEvent::run(Task::new(name, "cube/echo:latest"))
}

/// The token of the bench's servers (made for this run).
fn bench_token() -> &'static cube_actors::secret::Token {
    static TOKEN: std::sync::OnceLock<cube_actors::secret::Token> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| cube_actors::secret::Token::generate("bench"))
}

/// An HTTP client that sends the bench's token, with this timeout per request.
fn client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .bearer_auth(bench_token().expose())
        .timeout(timeout)
        .finish()
}

/// Submits from `connections` clients until `deadline` or until `limit` submissions succeeded;
/// returns how many did.
async fn submit_until(
    url: &str,
    connections: usize,
    deadline: Instant,
    limit: usize,
    prefix: &str,
) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..connections {
        let (url, done, failed) = (url.to_string(), done.clone(), failed.clone());
        let prefix = format!("{prefix}-{c}");
        clients.push(actix_web::rt::spawn(async move {
            let client = client(Duration::from_secs(30));
            let mut i = 0u64;
            while Instant::now() < deadline && (done.load(Ordering::Relaxed) as usize) < limit {
                i += 1;
                let event = quick_task(&format!("{prefix}-{i}"));
                match client.post(&url).send_json(&event).await {
                    Ok(r) if r.status().as_u16() == 201 => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) if r.status().as_u16() == 429 => {
                        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
                    }
                    Ok(r) => {
                        log::error!("bench: submission answered {}", r.status());
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => {
                        log::error!("bench: submission failed: {e}");
                        failed.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    for client in clients {
        client.await.context("a bench client panicked")?;
    }
    if failed.load(Ordering::Relaxed) {
        bail!("submissions failed (see the log)");
    }
    Ok(done.load(Ordering::Relaxed))
}

/// Waits until the cluster at `base` holds at least `n` Completed tasks.
async fn wait_completed(base: &str, n: usize) -> anyhow::Result<()> {
    let client = client(Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let url = format!("{base}/tasks?state=Completed&limit={n}");
        let mut r = client
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let body: Vec<Value> = r.json().limit(1 << 30).await?;
        if body.len() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} tasks completed in time", body.len());
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts an all-in-one cluster on the simulated runtime in `dir` that keeps every finished
/// task; its URL.
async fn bench_cluster(
    args: &BenchArgs,
    dir: &std::path::Path,
    prefix: &str,
) -> anyhow::Result<String> {
    let mut settings = ClusterSettings {
        workers: args.workers,
        runtime: RuntimeChoice::Sim,
        store: args.store,
        data_dir: dir.to_path_buf(),
        node_prefix: prefix.into(),
        ..ClusterSettings::default()
    };
    settings.manager.store = args.store;
    settings.manager.listen = "127.0.0.1:0".into();
    settings.manager.data_dir = dir.join("manager");
    settings.manager.retain_finished = usize::MAX;
    settings.manager.retain_finished_secs = 365 * 24 * 3600;
    settings.manager.max_in_flight = 4096;
    settings.manager.token = bench_token().expose().to_string();
    let cluster = start_cluster(&settings).await?;
    actix_web::rt::spawn(cluster.manager.server);
    Ok(format!("http://{}", cluster.manager.addr))
}

/// The submission rate to the cluster at `base` during one phase.
async fn rate(args: &BenchArgs, base: &str, prefix: &str) -> anyhow::Result<f64> {
    let phase = Duration::from_secs(args.seconds);
    let url = format!("{base}/tasks");
    let done = submit_until(
        &url,
        args.connections,
        Instant::now() + phase,
        usize::MAX,
        prefix,
    );
    Ok(done.await? as f64 / phase.as_secs_f64())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Submission rates, fresh and with history: a cluster is filled with `history` finished tasks
/// (not timed); then, `ROUNDS` times, a new fresh cluster and the loaded one are measured one
/// after the other, so that both see the same machine. The medians are compared.
async fn submissions(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    const ROUNDS: usize = 3;
    let loaded = bench_cluster(args, &dir.join("loaded"), "loaded").await?;
    let far = Instant::now() + Duration::from_secs(3600);
    submit_until(
        &format!("{loaded}/tasks"),
        args.connections,
        far,
        args.history,
        "history",
    )
    .await?;
    wait_completed(&loaded, args.history).await?;
    let (mut fresh_rates, mut loaded_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let fresh = bench_cluster(
            args,
            &dir.join(format!("fresh-{round}")),
            &format!("f{round}"),
        )
        .await?;
        fresh_rates.push(rate(args, &fresh, &format!("fresh{round}")).await?);
        loaded_rates.push(rate(args, &loaded, &format!("loaded{round}")).await?);
    }
    let (fresh, with_history) = (median(fresh_rates.clone()), median(loaded_rates.clone()));
    let show = |xs: &[f64]| {
        xs.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "submissions, fresh cluster:       {fresh:>9.0} tasks/s (median of {})",
        show(&fresh_rates)
    );
    println!(
        "submissions, {:>6}+ finished kept: {with_history:>8.0} tasks/s (median of {})",
        args.history,
        show(&loaded_rates)
    );
    println!(
        "ratio (with history / fresh):      {:>9.2}",
        with_history / fresh
    );
    Ok((fresh, with_history))
}

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
async fn sync_sizes(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let base = http_worker(dir).await?;
    let client = client(Duration::from_secs(120));
    let (empty, _) = one_change_sync(&client, &base, &long_task("probe-0")).await?;
    let url = format!("{base}/tasks");
    submit_until(
        &url,
        args.connections,
        Instant::now() + Duration::from_secs(3600),
        args.history,
        "hist",
    )
    .await?;
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

/// Runs the harness.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => {
            let dir = std::env::temp_dir().join(format!("cube-bench-{}", uuid::Uuid::new_v4()));
            (dir, true)
        }
    };
    let result = async {
        submissions(&args, &dir).await?;
        sync_sizes(&args, &dir).await
    }
    .await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
