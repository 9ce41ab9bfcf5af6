//! What a cluster shows of itself: `GET /metrics` (checked by an independent OpenMetrics
//! parser), the event stream `GET /events` with `cube events` and `cube status --watch`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cube::config::{ClusterSettings, ManagerSettings, RuntimeChoice, Size, StoreChoice};
use serde_json::{Value, json};
use support::*;

const METRICS_TOKEN: &str = "cube-test-metrics-0123456789abcdef";

/// Checks `text` with the parser of Python's `prometheus_client` (the reference OpenMetrics
/// parser); returns the number of metric families it read. Skips loudly when it is not
/// installed, unless `CUBE_REQUIRE_PROMETHEUS_PARSER=1` (as `.ci/run` sets).
fn openmetrics_families(text: &str) -> Option<usize> {
    const SCRIPT: &str = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        print(len(list(text_string_to_metric_families(sys.stdin.read()))))\n";
    let child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let required = std::env::var("CUBE_REQUIRE_PROMETHEUS_PARSER").is_ok_and(|v| v == "1");
    let mut child = match child {
        Ok(child) => child,
        Err(e) if !required => {
            eprintln!("!!! SKIPPED the OpenMetrics parser check: python3 cannot start ({e})");
            return None;
        }
        Err(e) => panic!("CUBE_REQUIRE_PROMETHEUS_PARSER=1 but python3 cannot start: {e}"),
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("No module named 'prometheus_client'") {
        assert!(
            !required,
            "CUBE_REQUIRE_PROMETHEUS_PARSER=1 but prometheus_client is not installed (pip install prometheus-client)"
        );
        eprintln!("!!! SKIPPED the OpenMetrics parser check: pip install prometheus-client");
        return None;
    }
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the output: {stderr}\n{text}"
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

/// The value of the sample `series` (name and labels, as written) in an exposition, if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.split(' ').next().unwrap().parse().unwrap())
}

/// The value of `series`, 0 when absent (a counter not yet incremented has no sample).
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or(0.0)
}

/// `GET /metrics` with `token`: OpenMetrics text, which the parser reads as at least `families`
/// families.
async fn scrape(base: &str, token: &str, families: usize) -> String {
    let mut response = awc::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let kind = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let body = response.body().limit(16 << 20).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    if let Some(read) = openmetrics_families(&text) {
        assert!(read >= families, "{read} families:\n{text}");
    }
    text
}

fn cluster_settings(dir: &std::path::Path) -> ClusterSettings {
    ClusterSettings {
        manager: ManagerSettings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.join("manager"),
            poll_interval_ms: 200,
            token: TEST_TOKEN.into(),
            join_token: TEST_JOIN_TOKEN.into(),
            metrics_token: METRICS_TOKEN.into(),
            ..ManagerSettings::default()
        },
        workers: 2,
        store: StoreChoice::Lmdb,
        data_dir: dir.to_path_buf(),
        runtime: RuntimeChoice::Sim,
        node_cpu: 1.0,
        node_memory: Size(1 << 30),
        node_disk: Size(1 << 30),
        max_restarts: 10,
        restart_delay_ms: 100,
        health_interval_ms: 100,
        health_grace_ms: 0,
        ..ClusterSettings::default()
    }
}

async fn wait_for(base: &str, id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, task) = get(&format!("{base}/tasks/{id}")).await;
        if ok(&task) {
            return task;
        }
        assert!(Instant::now() < deadline, "waited for {what}: {task}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The named series of manager and nodes change as a task runs, exits, is restarted and is
/// stopped; the metrics token reads them; the output passes the OpenMetrics parser and holds no
/// task ID, name or environment.
#[actix_rt::test]
async fn metrics_follow_a_task_through_run_exit_restart_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cube::serve::start_cluster(&cluster_settings(dir.path()))
        .await
        .unwrap();
    actix_rt::spawn(cluster.manager.server);
    let base = format!("http://{}", cluster.manager.addr);
    wait_ready_nodes(&base, 2, Duration::from_secs(10)).await;

    let before = scrape(&base, METRICS_TOKEN, 20).await;
    assert_eq!(value(&before, r#"cube_nodes{status="Ready"}"#), 2.0);
    assert_eq!(
        value(&before, r#"cube_node_offered_cpu{node="node-1"}"#),
        1.0
    );
    assert_eq!(value(&before, r#"cube_tasks{state="Running"}"#), 0.0);

    // Runs, exits with code 3 after 400 ms, and is restarted by its policy; healthy meanwhile.
    let secret = "SECRET_VALUE_d41d8cd9";
    let ev = event(
        "cube/echo:latest",
        json!({
            "Name": "flaky-web",
            "Env": [format!("TOKEN={secret}"), "EXIT_CODE=3", "EXIT_AFTER_MS=400"],
            "ExposedPorts": {"7777/tcp": {}},
            "HealthCheck": "/health",
            "Cpu": 0.5,
            "RestartPolicy": "always",
        }),
    );
    let id = ev["Task"]["ID"].as_str().unwrap().to_string();
    let (status, body) = post(&format!("{base}/tasks"), &ev).await;
    assert_eq!(status, 201, "{body}");
    wait_for(&base, &id, "Running", |t| t["State"] == "Running").await;
    let running = scrape(&base, TEST_TOKEN, 20).await;
    let d = |text: &str, series: &str| value(text, series) - value(&before, series);
    assert_eq!(
        d(&running, r#"cube_submissions_total{outcome="accepted"}"#),
        1.0
    );
    assert_eq!(d(&running, "cube_submit_duration_seconds_count"), 1.0);
    assert!(d(&running, r#"cube_placements_total{outcome="placed"}"#) >= 1.0);
    assert!(d(&running, "cube_placement_duration_seconds_count") >= 1.0);
    assert_eq!(
        d(
            &running,
            r#"cube_task_transitions_total{from="none",to="Pending"}"#
        ),
        1.0
    );
    assert!(
        d(
            &running,
            r#"cube_task_transitions_total{from="Scheduled",to="Running"}"#
        ) >= 1.0
    );
    assert!(
        d(
            &running,
            r#"cube_worker_container_starts_total{outcome="started"}"#
        ) >= 1.0
    );
    assert!(d(&running, r#"cube_store_commits_total{store="manager"}"#) >= 2.0);
    assert!(d(&running, r#"cube_store_commits_total{store="nodes"}"#) >= 1.0);
    assert!(
        value(
            &running,
            r#"cube_store_commit_writes_count{store="manager"}"#
        ) >= 2.0
    );
    let node = body["Node"].as_str().map(String::from);
    let reserved: f64 = ["node-1", "node-2"]
        .iter()
        .map(|n| {
            value(
                &running,
                &format!(r#"cube_node_reserved_cpu{{node="{n}"}}"#),
            )
        })
        .sum();
    assert_eq!(reserved, 0.5, "{node:?}");

    // Exits, is restarted: counted by the worker and by the manager.
    wait_for(&base, &id, "a restart", |t| {
        t["RestartCount"].as_u64() >= Some(1) && t["State"] == "Running"
    })
    .await;
    let restarted = scrape(&base, TEST_TOKEN, 20).await;
    assert!(
        d(
            &restarted,
            r#"cube_worker_container_exits_total{outcome="failed"}"#
        ) >= 1.0
    );
    assert!(d(&restarted, "cube_worker_task_restarts_total") >= 1.0);
    assert!(d(&restarted, "cube_task_restarts_total") >= 1.0);
    assert!(
        d(
            &restarted,
            r#"cube_worker_container_starts_total{outcome="started"}"#
        ) >= 2.0
    );
    assert!(
        d(
            &restarted,
            r#"cube_worker_health_checks_total{result="healthy"}"#
        ) >= 1.0
    );

    // Stopped while it runs.
    wait_for(&base, &id, "Running", |t| t["State"] == "Running").await;
    let (status, _) = delete(&format!("{base}/tasks/{id}")).await;
    assert_eq!(status, 200);
    let stopped = scrape(&base, TEST_TOKEN, 20).await;
    assert!(
        d(
            &stopped,
            r#"cube_worker_container_stops_total{cause="task"}"#
        ) >= 1.0
    );
    assert!(
        d(
            &stopped,
            r#"cube_task_transitions_total{from="Running",to="Completed"}"#
        ) >= 1.0
    );
    assert_eq!(value(&stopped, r#"cube_tasks{state="Completed"}"#), 1.0);
    assert_eq!(value(&stopped, r#"cube_tasks{state="Running"}"#), 0.0);
    assert_eq!(
        value(&stopped, r#"cube_node_reserved_cpu{node="node-1"}"#),
        0.0
    );
    assert!(
        value(
            &stopped,
            r#"cube_http_requests_total{method="POST",route="/tasks",status="201"}"#
        ) >= 1.0
    );

    // Bounded labels: no task ID, name or environment anywhere.
    for text in [&running, &restarted, &stopped] {
        for leak in [id.as_str(), "flaky-web", secret, "EXIT_CODE"] {
            assert!(!text.contains(leak), "{leak} in the metrics");
        }
    }
    // The metrics token reads metrics, and nothing else.
    let (status, _) = awc::Client::new()
        .get(format!("{base}/tasks"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, 403);
    report("metrics", &stopped);
}

/// A standalone worker serves its own metrics: container starts and stops, its store's commits,
/// its machine.
#[actix_rt::test]
async fn a_worker_serves_its_own_metrics() {
    let worker = TestWorker::start(RuntimeChoice::Sim).await;
    let ev = event("cube/echo:latest", json!({}));
    let id = ev["Task"]["ID"].as_str().unwrap().to_string();
    let (status, body) = post(&format!("{}/tasks", worker.base), &ev).await;
    assert_eq!(status, 201, "{body}");
    worker
        .wait_state(&id, "Running", Duration::from_secs(10))
        .await;
    delete(&format!("{}/tasks/{id}", worker.base)).await;
    let text = scrape(&worker.base, TEST_TOKEN, 10).await;
    assert!(
        value(&text, "cube_machine_memory_total_bytes") > 0.0,
        "{text}"
    );
    assert!(value(&text, "cube_machine_cpu_cores") >= 1.0, "{text}");
    assert!(sample(&text, "cube_machine_load1").is_some(), "{text}");
    assert_eq!(
        value(
            &text,
            r#"cube_worker_container_starts_total{outcome="started"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&text, r#"cube_worker_container_stops_total{cause="task"}"#),
        1.0
    );
    assert!(value(&text, r#"cube_store_commits_total{store="worker"}"#) >= 2.0);
    assert!(!text.contains(&id));
}

/// The output lines of a process, read on a thread of their own.
struct Lines {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    child: Child,
}

impl Lines {
    fn of(mut child: Child) -> Lines {
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines {
            lines,
            seen: Vec::new(),
            child,
        }
    }

    /// Reads lines until one contains every part of `parts`; returns it.
    fn until(&mut self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if parts.iter().all(|p| line.contains(p)) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {parts:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cube_lines(args: &[&str]) -> Lines {
    let child = cube_command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Lines::of(child)
}

/// `cube run` of a task called `name` on the manager at `m`.
fn run(m: &str, name: &str, extra: &[&str]) {
    let args = ["run", "--image", "cube/echo:latest", "--name", name];
    cube_ok(m, &[&args[..], extra].concat());
}

/// `cube events` shows a task's transitions as they happen; `--since` resumes right after a
/// cursor, and a cursor older than the retained events gets the reset line first;
/// `cube status --watch` redraws its table from the stream.
#[test]
fn cube_events_shows_transitions_live_and_an_old_cursor_gets_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(
        &config,
        "[manager]\nmax_events = 6\npoll_interval_ms = 200\n",
    )
    .unwrap();
    let up = CubeProcess::spawn(
        &[
            "up",
            "--config",
            config.to_str().unwrap(),
            "--runtime",
            "sim",
            "--workers",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ],
        &[],
    );
    let m = up.base.as_str();
    let mut events = cube_lines(&["events", "-m", m]);
    let mut watch = cube_lines(&["status", "--watch", "-m", m]);
    watch.until(&["0 tasks at"]);
    // The stream is followed before anything is submitted: its first line is the task's.
    std::thread::sleep(Duration::from_millis(300));
    run(m, "ev1", &[]);
    events.until(&["task ev1", "- -> Pending"]);
    events.until(&["task ev1", "Pending -> Scheduled on node-"]);
    let running = events.until(&["task ev1", "Scheduled -> Running on node-"]);
    watch.until(&["ev1", "Running"]);
    cube_ok(m, &["stop", "ev1"]);
    events.until(&["task ev1", "Running -> Completed", "stopped by user"]);
    watch.until(&["ev1", "Completed"]);

    // Resume right after the Running event: the next one is the stop.
    let cursor = running.split_whitespace().next().unwrap();
    let mut resumed = cube_lines(&["events", "-m", m, "--since", cursor]);
    let next = resumed.until(&["task ev1"]);
    assert!(next.contains("Running -> Completed"), "{next}");
    assert!(
        !resumed.seen.iter().any(|l| l.contains("reset")),
        "{:?}",
        resumed.seen
    );

    // More events than the manager keeps (6): the first cursor is gone.
    for name in ["ev2", "ev3"] {
        run(m, name, &["--wait"]);
    }
    let first = format!("{}-1", cursor.rsplit_once('-').unwrap().0);
    let mut old = cube_lines(&["events", "-m", m, "--since", &first]);
    let reset = old.until(&["-- reset"]);
    assert!(reset.contains("no longer retained"), "{reset}");
    old.until(&["task ev3", "Scheduled -> Running"]);
    assert_eq!(
        old.seen.len(),
        1 + 6,
        "the reset, then the 6 retained: {:?}",
        old.seen
    );

    // The same over HTTP: Last-Event-ID resumes; `-o json` prints one event per line.
    let mut json_lines = cube_lines(&["events", "-m", m, "-o", "json", "--since", &first]);
    let line = json_lines.until(&["\"Reason\""]);
    let first_event: Value = serde_json::from_str(&line).unwrap();
    assert!(
        first_event["Reason"]
            .as_str()
            .unwrap()
            .contains("no longer retained")
    );
}
