//! The `cube` command line, run as a real binary against a running `cube up` cluster
//! (simulated runtime, so these tests need no Docker).

mod support;

use std::process::Output;

use serde_json::Value;
use support::CubeProcess;

/// A `cube up --runtime sim` cluster in its own process, on a free port.
fn cluster() -> (CubeProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let up = CubeProcess::spawn(
        &[
            "up",
            "--runtime",
            "sim",
            "--workers",
            "3",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--node-cpu",
            "1",
            "--node-memory",
            "1Gi",
        ],
        &[],
    );
    (up, dir)
}

/// Runs `cube args...` against `manager` (through CUBE_MANAGER) from the repository root.
fn cube(manager: &str, args: &[&str]) -> Output {
    support::cube_at(manager, args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `cube args...`, asserts it succeeded, returns its stdout.
fn ok(manager: &str, args: &[&str]) -> String {
    support::cube_ok(manager, args)
}

/// Runs `cube args...`, asserts it failed with exit code 1, returns its stderr.
fn fails(manager: &str, args: &[&str]) -> String {
    let out = cube(manager, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "cube {args:?} should fail: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// run --wait reports the node and port; status, node and logs show tables and JSON; tasks are
/// found by name and by ID prefix; stop ends them.
#[test]
fn run_status_node_logs_stop() {
    let (up, _dir) = cluster();
    let m = up.base.as_str();

    let out = ok(m, &["run", "-f", "config/examples/echo.json", "--wait"]);
    assert!(out.contains("Pending: waiting for a node"), "{out}");
    assert!(out.contains("task echo is running on node node-"), "{out}");
    assert!(out.contains("ports 7777/tcp->"), "{out}");

    let out = ok(
        m,
        &[
            "run",
            "--image",
            "cube/echo:latest",
            "--name",
            "web",
            "--memory",
            "64Mi",
            "--port",
            "7777",
            "--env",
            "A=1",
            "--wait",
            "-o",
            "json",
        ],
    );
    let web: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&web["State"], &web["Memory"], &web["Env"][0]),
        (&"Running".into(), &(64u64 << 20).into(), &"A=1".into())
    );
    let web_id = web["ID"].as_str().unwrap().to_string();

    let table = ok(m, &["status"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID", "NAME", "STATE", "NODE", "IMAGE", "PORTS", "RESTARTS", "AGE"
        ]
    );
    let web_row = table.lines().find(|l| l.contains(" web ")).unwrap();
    let cells: Vec<&str> = web_row.split_whitespace().collect();
    assert_eq!(cells[0], &web_id.replace('-', "")[..12]);
    assert_eq!(&cells[2..4], ["Running", web["Node"].as_str().unwrap()]);
    assert!(cells[5].starts_with("7777/tcp->"), "{web_row}");
    assert!(
        cells[7].ends_with('s'),
        "AGE from the real start time: {web_row}"
    );

    let json: Value = serde_json::from_str(&ok(m, &["status", "-o", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let by_prefix = ok(m, &["status", &web_id[..8]]);
    assert!(
        by_prefix.contains(&format!("ID:        {web_id}")),
        "{by_prefix}"
    );
    assert!(by_prefix.contains("State:     Running"), "{by_prefix}");

    let nodes = ok(m, &["node"]);
    let header: Vec<&str> = nodes.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "ADDRESS", "STATUS", "CPU", "MEMORY", "DISK", "TASKS"
        ]
    );
    assert_eq!(
        nodes
            .lines()
            .filter(|l| l.contains(" local ") && l.contains(" Ready "))
            .count(),
        3,
        "{nodes}"
    );
    assert!(nodes.contains("64 MiB/1 GiB"), "{nodes}");
    let json: Value = serde_json::from_str(&ok(m, &["node", "-o", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);

    let logs = ok(m, &["logs", "web"]);
    assert!(logs.contains("simulated container for task web"), "{logs}");
    let json: Value = serde_json::from_str(&ok(m, &["logs", "web", "-o", "json"])).unwrap();
    assert!(json[0].as_str().unwrap().contains("task web"), "{json}");

    let out = ok(m, &["stop", "web"]);
    assert_eq!(out, format!("task {web_id} (web) stopped: Completed\n"));
    let echo_id = serde_json::from_str::<Value>(&ok(m, &["status", "echo", "-o", "json"])).unwrap()
        ["ID"]
        .as_str()
        .unwrap()
        .to_string();
    ok(m, &["stop", &echo_id[..6]]);
    let json: Value = serde_json::from_str(&ok(m, &["status", "-o", "json"])).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|t| t["State"] == "Completed"),
        "{json}"
    );
}

/// run --wait on a task that fails exits 1 and says why; logs -f ends when the task does.
#[test]
fn a_failing_task_and_following_logs() {
    let (up, _dir) = cluster();
    let m = up.base.as_str();
    let err = fails(
        m,
        &["run", "-f", "config/examples/echo-fails.json", "--wait"],
    );
    assert!(
        err.contains("error: task echo-fails failed: container exited with code 3"),
        "{err}"
    );

    ok(
        m,
        &[
            "run",
            "--image",
            "x",
            "--name",
            "short",
            "--env",
            "EXIT_AFTER_MS=1500",
            "--wait",
        ],
    );
    let followed = ok(m, &["logs", "short", "-f"]);
    assert!(
        followed.contains("simulated container for task short"),
        "{followed}"
    );
    assert!(
        followed.contains("exiting with code 0 as asked"),
        "{followed}"
    );
}

/// Each error says what is wrong, and how to fix it where it can.
#[test]
fn errors_are_human() {
    let err = fails("127.0.0.1:1", &["status"]);
    assert!(
        err.contains("cannot reach the manager at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(
        err.contains("`cube up`") && err.contains("CUBE_MANAGER"),
        "{err}"
    );

    let (up, _dir) = cluster();
    let m = up.base.as_str();
    let err = fails(m, &["stop", "no-such-task"]);
    assert!(err.contains("no task matches `no-such-task`"), "{err}");
    let err = fails(m, &["run", "--image", "x", "--env", "NOEQUALS"]);
    assert!(
        err.contains("the manager refused the task: invalid task field `Env`"),
        "{err}"
    );
    let err = fails(m, &["run", "--name", "x"]);
    assert!(err.contains("no image"), "{err}");

    ok(m, &["run", "--image", "x", "--name", "a"]);
    ok(m, &["run", "--image", "x", "--name", "b"]);
    let err = fails(m, &["stop", ""]);
    assert!(err.contains("matches 2 tasks"), "{err}");

    let err = fails(
        m,
        &[
            "run",
            "--image",
            "x",
            "--memory",
            "5Ti",
            "--wait",
            "--timeout",
            "1",
        ],
    );
    assert!(
        err.contains("still Pending after 1s: waiting for a node: no node has 5 TiB free memory"),
        "{err}"
    );
}

/// Help shows examples; completions are generated for the shells.
#[test]
fn help_and_completions() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["stop", "--help"],
        &["status", "--help"],
        &["logs", "--help"],
        &["up", "--help"],
    ] {
        let out = ok("unused", args);
        assert!(out.contains("Examples:"), "cube {args:?}: {out}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = ok("unused", &["completions", shell]);
        assert!(
            script.contains("cube") && script.contains("status"),
            "{shell}"
        );
    }
}

/// status filters by state and node; rm removes finished tasks (and refuses a running one);
/// prune removes the rest and says how many.
#[test]
fn status_filters_rm_and_prune() {
    let (up, _dir) = cluster();
    let m = up.base.as_str();
    for name in ["a", "b", "c"] {
        ok(
            m,
            &[
                "run",
                "--image",
                "cube/echo:latest",
                "--name",
                name,
                "--wait",
                "--settle",
                "0",
            ],
        );
    }
    ok(m, &["stop", "a"]);
    ok(m, &["stop", "b"]);
    let completed = ok(m, &["status", "--state", "Completed", "-o", "json"]);
    let completed: Value = serde_json::from_str(&completed).unwrap();
    let names: Vec<&str> = completed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let running: Value =
        serde_json::from_str(&ok(m, &["status", "--state", "Running", "-o", "json"])).unwrap();
    let node = running[0]["Node"].as_str().unwrap().to_string();
    let on_node: Value =
        serde_json::from_str(&ok(m, &["status", "--node", &node, "-o", "json"])).unwrap();
    assert!(on_node.as_array().unwrap().iter().any(|t| t["Name"] == "c"));

    let err = fails(m, &["rm", "c"]);
    assert!(err.contains("stop it first"), "{err}");
    let out = ok(m, &["rm", "a"]);
    assert!(out.contains("(a) removed"), "{out}");
    let out = ok(m, &["prune"]);
    assert!(out.contains("removed 1 finished tasks"), "{out}");
    let left: Value = serde_json::from_str(&ok(m, &["status", "-o", "json"])).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["Name"], "c");
}
