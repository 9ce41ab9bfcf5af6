//! What a new user meets in the first hour: `cube run --wait` means "started and stayed up",
//! read commands end quietly when their reader goes away, task names are unique among live
//! tasks, finished tasks show no stale facts, and routine traffic stays out of the log.

mod support;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::*;

/// A `cube up --runtime sim` cluster in its own process; its URL is `up.base`.
fn cluster(extra: &[&str]) -> (CubeProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "up",
        "--runtime",
        "sim",
        "--workers",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ];
    args.push(dir.path().to_str().unwrap());
    args.extend(extra);
    (CubeProcess::spawn(&args, &[]), dir)
}

/// `cube args...` against `manager`.
fn cube(manager: &str, args: &[&str]) -> Command {
    let mut cmd = support::cube_command();
    cmd.args(args)
        .env("CUBE_MANAGER", manager)
        .env_remove("RUST_LOG")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// `cube run --wait` of a task with `env`, 10 times at once; the exit codes.
fn ten_waits(manager: &str, env: &[&str]) -> Vec<Option<i32>> {
    let children: Vec<_> = (0..10)
        .map(|_| {
            let mut args = vec!["run", "--image", "cube/echo:latest", "--wait"];
            for e in env {
                args.extend(["--env", e]);
            }
            cube(manager, &args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|mut c| c.wait().unwrap().code())
        .collect()
}

/// `--wait` fails every time for tasks that fail 0.5, 1 and 2 s after they start, and succeeds
/// every time for a task that stays up and for one that ends at once with code 0.
#[test]
fn run_wait_means_started_and_stayed_up() {
    let (up, _dir) = cluster(&["--node-cpu", "100", "--node-memory", "64Gi"]);
    let m = up.base.as_str();
    for after in ["500", "1000", "2000"] {
        let exit_after = format!("EXIT_AFTER_MS={after}");
        let codes = ten_waits(m, &["EXIT_CODE=3", &exit_after]);
        assert!(
            codes.iter().all(|c| *c == Some(1)),
            "failing after {after} ms: {codes:?}"
        );
    }
    let codes = ten_waits(m, &[]);
    assert!(codes.iter().all(|c| *c == Some(0)), "staying up: {codes:?}");
    let codes = ten_waits(m, &["EXIT_CODE=0", "EXIT_AFTER_MS=0"]);
    assert!(
        codes.iter().all(|c| *c == Some(0)),
        "ending well at once: {codes:?}"
    );
}

/// A read command whose stdout is closed before it writes exits 0 with nothing on stderr.
#[test]
fn read_commands_end_quietly_when_their_reader_is_gone() {
    let (up, _dir) = cluster(&[]);
    let m = up.base.as_str();
    let out = cube(
        m,
        &["run", "--image", "cube/echo:latest", "--name", "piped"],
    )
    .output()
    .unwrap();
    assert!(out.status.success());
    for args in [
        &["status", "-o", "json"][..],
        &["status", "piped"],
        &["node"],
    ] {
        let mut child = cube(m, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(0), "cube {args:?}: {stderr}");
        assert_eq!(stderr, "", "cube {args:?}");
    }
}

/// A name taken by a live task gets 409, also when two submissions race; a finished task frees
/// its name.
#[actix_rt::test]
async fn names_are_unique_among_live_tasks() {
    let (up, _dir) = cluster(&[]);
    let url = format!("{}/tasks", up.base);
    let named = |name: &str| {
        let mut ev = event("cube/echo:latest", json!({}));
        ev["Task"]["Name"] = json!(name);
        ev
    };
    assert_eq!(post(&url, &named("web")).await.0, 201);
    let (status, body) = post(&url, &named("web")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["Message"].as_str().unwrap().contains("`web` is taken"),
        "{body}"
    );
    // Two at once: exactly one wins.
    let (a, b) =
        futures_util::future::join(post(&url, &named("race")), post(&url, &named("race"))).await;
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [201, 409]);
    // Stopped, `web` is free again.
    let (_, list) = get(&format!("{url}?name=web")).await;
    let id = list[0]["ID"].as_str().unwrap();
    assert_eq!(delete(&format!("{url}/{id}")).await.0, 200);
    assert_eq!(post(&url, &named("web")).await.0, 201);
}

/// A task that ended shows no host ports; stopping a Failed task keeps its failure.
#[actix_rt::test]
async fn finished_tasks_show_no_stale_facts() {
    let (up, _dir) = cluster(&[]);
    let url = format!("{}/tasks", up.base);
    let ev = event(
        "cube/echo:latest",
        json!({"ExposedPorts": {"7777/tcp": {}}}),
    );
    let id = ev["Task"]["ID"].as_str().unwrap().to_string();
    assert_eq!(post(&url, &ev).await.0, 201);
    let running = wait_task_state(&format!("{url}/{id}"), "/State", "Running", SETTLE).await;
    assert!(running["HostPorts"]["7777/tcp"].is_array(), "{running}");
    let (_, stopped) = delete(&format!("{url}/{id}")).await;
    assert_eq!(stopped["HostPorts"], json!({}), "{stopped}");

    let failing = event(
        "cube/echo:latest",
        json!({"Env": ["EXIT_CODE=3", "EXIT_AFTER_MS=0"], "ExposedPorts": {"7777/tcp": {}}, "RestartPolicy": "no"}),
    );
    let id = failing["Task"]["ID"].as_str().unwrap().to_string();
    assert_eq!(post(&url, &failing).await.0, 201);
    let failed = wait_task_state(&format!("{url}/{id}"), "/State", "Failed", SETTLE).await;
    assert_eq!(failed["HostPorts"], json!({}), "{failed}");
    let (status, after_stop) = delete(&format!("{url}/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(after_stop["State"], "Failed", "{after_stop}");
    assert_eq!(after_stop["Reason"], failed["Reason"]);
    assert_eq!(after_stop["ExitCode"], 3);
}

const SETTLE: Duration = Duration::from_secs(20);

/// At the default log level, a worker followed by a manager (syncs and metrics polls every
/// 100 ms for three seconds) writes no line per request.
#[test]
fn routine_traffic_stays_out_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("manager.toml");
    std::fs::write(&config, "sync_wait_ms = 100\npoll_interval_ms = 100\n").unwrap();
    let worker_log = dir.path().join("worker.log");
    let manager = CubeProcess::spawn(
        &[
            "manager",
            "-c",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
        ],
        &[],
    );
    let mut worker = support::cube_command()
        .args([
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--runtime",
            "sim",
            "--store",
            "memory",
        ])
        .args(["--name", "quiet", "--manager", &manager.base])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&worker_log).unwrap())
        .spawn()
        .unwrap();
    actix_rt::System::new().block_on(support::wait_ready_nodes(&manager.base, 1, SETTLE));
    std::thread::sleep(Duration::from_secs(3));
    let _ = worker.kill();
    let _ = worker.wait();
    let log = std::fs::read_to_string(&worker_log).unwrap();
    let requests: Vec<&str> = log.lines().filter(|l| l.contains("HTTP/1.1")).collect();
    assert!(
        requests.is_empty(),
        "per-request lines:\n{}",
        requests.join("\n")
    );
    assert!(
        log.contains("worker quiet started"),
        "the worker logged its start: {log}"
    );
}

/// Nodes of one `cube up` split the machine's CPU into tidy shares, and `cube node` says their
/// "% busy" is the machine's.
#[test]
fn shares_of_the_machine_are_tidy_and_say_whose_load_they_show() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = [
        "up",
        "--runtime",
        "sim",
        "--workers",
        "3",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
    ];
    let up = CubeProcess::spawn(&args, &[]);
    let m = up.base.as_str();
    let out = cube(m, &["node", "-o", "json"]).output().unwrap();
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for node in nodes.as_array().unwrap() {
        let cpu = node["Capacity"]["Cpu"].as_f64().unwrap();
        assert!(cpu.to_string().len() <= 6, "CPU share {cpu} is not rounded");
    }
    // The first metrics sample comes within a second or two.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let table = cube(m, &["node"]).output().unwrap();
        let table = String::from_utf8_lossy(&table.stdout).into_owned();
        if table.contains("busy") {
            assert!(table.contains("(machine "), "{table}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no metrics: {table}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A cluster whose nodes cannot start (their store's place is taken by a file) exits with a
/// clear error and status 1, not a panic.
#[test]
fn a_cluster_that_cannot_start_says_why_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nodes"), "not a directory").unwrap();
    let out = support::cube_command()
        .args([
            "up",
            "--runtime",
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a directory"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
