//! The load benchmark: an all-in-one cluster on the simulated runtime (1,000 nodes by default)
//! in this process, driven over HTTP by clients of this process, once per store.
//!
//! For each store it measures, in this order and each for `--seconds`:
//!
//! 1. **The floor**: the same clients against `GET /health` of the same server: what the HTTP
//!    edge and the machine allow, the baseline of every ratio.
//! 2. **A closed loop**: each client submits book-shaped TaskEvents (fresh ID and name, no fixed
//!    host port, exiting after `--task-seconds`) back to back. Reported: submissions/s and the
//!    submit latency; submit→Running throughput and latency from the server's own timestamps
//!    (`SubmitTime`, stamped by the manager, and `StartTime`, stamped by the node when Running),
//!    read from `GET /tasks` afterwards (never by polling each task); 429s and errors; and that
//!    the tasks stored are exactly the ones answered 201.
//! 3. **An open loop** at a fixed rate (`--rate`, or half what the closed loop sustained), then at
//!    twice the sustained rate: latency at a given load, and what overload does (429 with
//!    Retry-After, or queueing).
//! 4. With `--history N`: N finished tasks are added, and the closed loop runs again.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::clients::{
    OPEN_LOOP_THREADS, Outcome, closed_loop, off_thread, open_loop, percentiles, refusals,
    submission,
};
use super::{BenchArgs, bench_token, client, fill};
use crate::config::{ClusterSettings, RuntimeChoice, StoreChoice};
use crate::serve::{NodesThread, start_cluster};

/// Every task of the cluster at `base`: ID to (name, SubmitTime, StartTime).
type Times = HashMap<String, (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>)>;

async fn task_times(base: &str) -> anyhow::Result<Times> {
    let client = client(Duration::from_secs(300));
    let mut times = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/tasks?limit=5000");
        if let Some(after) = &after {
            url.push_str(&format!("&after={after}"));
        }
        let mut r = client
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("listing tasks: {e}"))?;
        let next = r
            .headers()
            .get("Cube-Next-Cursor")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let page: Vec<Value> = r.json().limit(1 << 30).await.context("a page of tasks")?;
        for t in page {
            let time = |k: &str| t[k].as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok());
            let id = t["ID"].as_str().unwrap_or_default().to_string();
            let name = t["Name"].as_str().unwrap_or_default().to_string();
            times.insert(id, (name, time("SubmitTime"), time("StartTime")));
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(times),
        }
    }
}

/// Submit→Running of the tasks `outcome` got accepted: waits (up to 60 s) until each has
/// started, then gives the throughput during the phase and the latencies. Checks that the tasks
/// stored under the phase's names are exactly the accepted ones (plus at most the `lost`
/// requests whose answer the client did not wait for).
async fn running(
    base: &str,
    phase: &str,
    outcome: &Outcome,
    lost: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let times = loop {
        let times = task_times(base).await?;
        let started = outcome
            .accepted
            .iter()
            .filter(|id| times.get(*id).is_some_and(|t| t.2.is_some()))
            .count();
        if started == outcome.accepted.len() || Instant::now() > deadline {
            break times;
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    };
    let stored = times
        .values()
        .filter(|(name, ..)| name.starts_with(&format!("{phase}-")))
        .count();
    if stored < outcome.accepted.len() || stored > outcome.accepted.len() + lost {
        bail!(
            "{phase}: {} submissions answered 201 but {stored} such tasks are stored",
            outcome.accepted.len()
        );
    }
    let ended = outcome.ended.expect("a finished phase");
    let mut latencies = Vec::new();
    let mut in_phase = 0;
    for id in &outcome.accepted {
        let (_, submitted, started) = &times[id];
        let (Some(submitted), Some(started)) = (submitted, started) else {
            bail!("{phase}: task {id} never started");
        };
        latencies.push((*started - *submitted).to_std().unwrap_or_default());
        if *started <= ended {
            in_phase += 1;
        }
    }
    Ok((in_phase as f64 / outcome.elapsed.as_secs_f64(), latencies))
}

/// An all-in-one cluster on the simulated runtime that keeps every finished task; its URL, once
/// every node is Ready.
/// A cluster under measure.
struct Running {
    server: actix_web::dev::ServerHandle,
    manager: actix::Addr<cube_actors::manager::Manager>,
    nodes: NodesThread,
}

impl Running {
    /// Stops its server, its manager, then its nodes: the next store's cluster runs alone.
    async fn stop(self) {
        self.server.stop(true).await;
        let _ = self.manager.send(cube_actors::manager::Shutdown).await;
        self.nodes.stop().await;
    }
}

async fn cluster(
    args: &BenchArgs,
    store: StoreChoice,
    dir: &Path,
) -> anyhow::Result<(String, Running)> {
    let mut settings = ClusterSettings {
        workers: args.workers,
        runtime: RuntimeChoice::Sim,
        store,
        data_dir: dir.to_path_buf(),
        node_prefix: "bench".into(),
        ..ClusterSettings::default()
    };
    settings.manager.store = store;
    settings.manager.listen = "127.0.0.1:0".into();
    settings.manager.data_dir = dir.join("manager");
    settings.manager.retain_finished = usize::MAX;
    settings.manager.retain_finished_secs = 365 * 24 * 3600;
    // Every task of every phase is kept (with its submitted envelope): at ~6,000 tasks/s a
    // run writes a few GiB, past the default 1 GiB map. The file is sparse.
    settings.manager.store_map_size_mib = 64 << 10;
    settings.manager.token = bench_token().expose().to_string();
    if let Some(n) = args.max_in_flight {
        settings.manager.max_in_flight = n;
    }
    let cluster = start_cluster(&settings).await?;
    let server = cluster.manager.server.handle();
    actix_web::rt::spawn(cluster.manager.server);
    let running = Running {
        server,
        manager: cluster.manager.manager.clone(),
        nodes: cluster.nodes_thread,
    };
    let base = format!("http://{}", cluster.manager.addr);
    let client = client(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut r = client
            .get(format!("{base}/nodes"))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let nodes: Vec<Value> = r.json().limit(1 << 30).await?;
        if nodes.iter().filter(|n| n["Status"] == "Ready").count() == args.workers {
            return Ok((base, running));
        }
        if Instant::now() > deadline {
            running.stop().await;
            bail!("the cluster's nodes were not Ready within 120 s");
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One closed-loop phase of submissions, reported; its submit→Running rate.
async fn submissions(args: &BenchArgs, base: &str, phase: &str, floor: f64) -> anyhow::Result<f64> {
    let url = format!("{base}/tasks");
    let duration = Duration::from_secs(args.seconds);
    let (connections, phase_name, owned) = (args.connections, phase.to_string(), args.clone());
    let outcome = off_thread(move || async move {
        closed_loop(&url, connections, duration, |c, i| {
            Some(submission(&owned, &phase_name, c, i))
        })
        .await
    })
    .await;
    if !outcome.errors.is_empty() {
        bail!(
            "{phase}: {} errors, first: {}",
            outcome.errors.len(),
            outcome.errors[0]
        );
    }
    let (running_rate, to_running) = running(base, phase, &outcome, 0).await?;
    println!(
        "  {phase:<26} submissions {:>8.0}/s ({:.3}x floor), submit {}; {} refused with 429{}, 0 errors",
        outcome.rate(),
        outcome.rate() / floor,
        percentiles(outcome.ok_latency.clone()),
        outcome.refused_latency.len(),
        refusals(&outcome)
    );
    println!(
        "  {:<26} submit→Running {:>5.0}/s ({:.3}x floor), {}; 201 answers = tasks stored = {}",
        "",
        running_rate,
        running_rate / floor,
        percentiles(to_running),
        outcome.accepted.len()
    );
    Ok(running_rate)
}

/// One open-loop phase at `rate`, reported.
async fn offered(
    args: &BenchArgs,
    base: &str,
    phase: &str,
    rate: f64,
    what: &str,
) -> anyhow::Result<()> {
    let generators = (0..OPEN_LOOP_THREADS).map(|c| {
        let url = format!("{base}/tasks");
        let (phase_name, owned) = (phase.to_string(), args.clone());
        let share = rate / OPEN_LOOP_THREADS as f64;
        off_thread(move || async move {
            let duration = Duration::from_secs(owned.seconds);
            open_loop(&url, share, duration, &phase_name, c, &owned).await
        })
    });
    let outcome = Outcome::merged(futures_util::future::join_all(generators).await);
    // Overload is what this phase is for: requests that got no answer in time are a result,
    // reported, not a failure of the harness.
    let lost = outcome.errors.len();
    if lost > 0 {
        println!(
            "  open loop at {rate:>6.0}/s ({what}): {lost} requests without an answer in 60 s (first: {})",
            outcome.errors[0]
        );
    }
    let (running_rate, to_running) = running(base, phase, &outcome, lost).await?;
    println!(
        "  open loop at {rate:>6.0}/s ({what}): accepted {:>6.0}/s, submit {}",
        outcome.rate(),
        percentiles(outcome.ok_latency.clone()),
    );
    println!(
        "  {:<28} submit→Running {:>5.0}/s, {}",
        "",
        running_rate,
        percentiles(to_running)
    );
    println!(
        "  {:<28} refused with 429 + Retry-After: {}{} ({})",
        "",
        outcome.refused_latency.len(),
        refusals(&outcome),
        percentiles(outcome.refused_latency.clone())
    );
    Ok(())
}

/// Fills the history with `n` finished tasks and waits until they are finished.
async fn fill_history(args: &BenchArgs, base: &str, n: usize) -> anyhow::Result<()> {
    let posted = fill(&format!("{base}/tasks"), args.connections, n, "history").await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    // Until every task has finished (the history's and the earlier phases'): the next floor
    // and loop then measure a cluster at rest, not the tail of this fill.
    while !quiet(base).await? {
        if Instant::now() > deadline {
            bail!("the cluster's tasks did not all finish within 10 minutes");
        }
        actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    }
    let ran = task_times(base)
        .await?
        .values()
        .filter(|(name, _, start)| name.starts_with("history-") && start.is_some())
        .count();
    if ran < posted {
        bail!("{} of the history's {posted} tasks never ran", posted - ran);
    }
    Ok(())
}

/// Whether no task of the cluster at `base` is Pending, Scheduled or Running.
async fn quiet(base: &str) -> anyhow::Result<bool> {
    let client = client(Duration::from_secs(60));
    for state in ["Pending", "Scheduled", "Running"] {
        let mut r = client
            .get(format!("{base}/tasks?state={state}&limit=1"))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("listing {state} tasks: {e}"))?;
        let page: Vec<Value> = r.json().await.context("a page of tasks")?;
        if !page.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs the load benchmark on each store asked for.
pub async fn run(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    println!(
        "cube bench: {} simulated nodes, {} clients, {} s phases, tasks run {} s; machine: {} cores",
        args.workers,
        args.connections,
        args.seconds,
        args.task_seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for store in args.store.stores() {
        let name = match store {
            StoreChoice::Lmdb => "lmdb",
            StoreChoice::Memory => "memory",
        };
        println!("store {name}:");
        let (base, running) = cluster(args, store, &dir.join(name)).await?;
        let measured = measure(args, &base).await;
        running.stop().await;
        measured?;
    }
    Ok(())
}

/// The floor: the bench's clients against `GET /health` of the cluster at `base`, reported;
/// its rate.
async fn health_floor(args: &BenchArgs, base: &str, phase: &str) -> anyhow::Result<f64> {
    let duration = Duration::from_secs(args.seconds);
    let (url, connections) = (format!("{base}/health"), args.connections);
    let health =
        off_thread(
            move || async move { closed_loop(&url, connections, duration, |_, _| None).await },
        )
        .await;
    if !health.errors.is_empty() {
        bail!("GET /health: {}", health.errors[0]);
    }
    let floor = health.rate();
    println!(
        "  {:<26} GET /health {:>8.0}/s, {}",
        phase,
        floor,
        percentiles(health.ok_latency.clone())
    );
    Ok(floor)
}

/// The phases of one store's run, against the cluster at `base`.
async fn measure(args: &BenchArgs, base: &str) -> anyhow::Result<()> {
    let floor = health_floor(args, base, "floor").await?;
    let fresh = submissions(args, base, "closed", floor).await?;
    if !args.no_open_loop {
        let half = args.rate.unwrap_or(fresh / 2.0).max(1.0);
        offered(args, base, "open-half", half, "half the sustained rate").await?;
        let twice = args.rate.map_or(fresh * 2.0, |r| r * 2.0).max(2.0);
        offered(args, base, "open-twice", twice, "twice the sustained rate").await?;
    }
    if args.history > 0 {
        fill_history(args, base, args.history).await?;
        println!("  with {} finished tasks in the history:", args.history);
        // Measured again: the machine's speed moves between phases minutes apart, and the
        // second ratio says how much of a change was the machine's.
        let again = health_floor(args, base, "floor again").await?;
        let loaded = submissions(args, base, "closed-history", again).await?;
        println!(
            "  {:<26} submit→Running with history / fresh: {:.2} ({:.2} as ratios to their floors)",
            "",
            loaded / fresh,
            (loaded / again) / (fresh / floor)
        );
    }
    Ok(())
}
