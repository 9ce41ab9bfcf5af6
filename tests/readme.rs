//! Runs every command of the README, in order, as written, against a `cube up` cluster started
//! here, and checks that each does what the README's text says it does.
//!
//! Skipped (the test does their work itself): `cargo run --release -- up` (the cluster is
//! started here), `cargo test --workspace` (this test is part of it) and `export PATH=...` (the
//! built `cube` is put first on every command's PATH). `./scripts/echo-image.sh` is replaced by
//! the test suite's own echo image build.
//!
//! Substituted, and nothing else: the manager's address (`localhost:5555`), the extra worker's
//! (`localhost:5556`, a free port here), and the image tag (`cube/echo:latest` becomes the
//! tests' own `cube-test/echo:latest`, also inside the example files, read from copies), so the
//! test leaves the user's images alone.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Cleanup, CubeProcess, ECHO_IMAGE};

/// The lines of the README's ```sh blocks.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            l if in_sh && !l.is_empty() && !l.starts_with('#') => commands.push(l.to_string()),
            _ => {}
        }
    }
    commands
}

/// What one README command printed.
struct Ran<'a> {
    command: &'a str,
    stdout: String,
    stderr: String,
    docker: bool,
}

impl Ran<'_> {
    fn has(&self, needle: &str) {
        assert!(
            self.stdout.contains(needle),
            "`{}` should print {needle:?}:\n{}{}",
            self.command,
            self.stdout,
            self.stderr
        );
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}`: not JSON ({e}): {}", self.command, self.stdout))
    }

    /// The JSON answer, which is not an error body.
    fn answer(&self) -> Value {
        let body = self.json();
        assert!(
            body.get("HTTPStatusCode").is_none(),
            "`{}`: {body}",
            self.command
        );
        body
    }
}

/// Checks that `ran` did what the README says that command does. Every README command must have
/// a rule here: a new command without one fails the test, so that what it does gets checked.
fn check(ran: &Ran, prefix: &str) {
    let c = ran.command;
    let node = format!("on node {prefix}-");
    match c {
        _ if c.starts_with("cube run -f config/examples/echo.json") => {
            ran.has(&format!("task echo is running {node}"));
        }
        _ if c.starts_with("cube run --image") => {
            ran.has(&format!("task web is running {node}"));
            ran.has("ports 7777/tcp->");
        }
        _ if c.starts_with("cube run -f config/examples/echo-fails.json") => {
            ran.has("failed, as expected");
            assert!(
                ran.stderr
                    .contains("task echo-fails failed: container exited with code 3"),
                "{}",
                ran.stderr
            );
        }
        _ if c.starts_with("cube run -f config/examples/echo-restarts.json") => {
            ran.has("(echo-restarts) submitted");
        }
        "cube status echo-restarts" => {
            let restarts = ran
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("Restarts:"))
                .and_then(|n| n.trim().parse::<u32>().ok());
            assert!(restarts.is_some_and(|n| n >= 1), "{}", ran.stdout);
            ran.has("restart ");
        }
        "cube stop echo-restarts" => ran.has("(echo-restarts) stopped: "),
        "cube status" => {
            ran.has("NAME");
            ran.has(" echo ");
            ran.has(" web ");
            ran.has("Running");
        }
        "cube status web" => {
            ran.has("Name:      web");
            ran.has("State:     Running");
        }
        "cube node" => {
            ran.has(&format!("{prefix}-1"));
            ran.has("Ready");
        }
        "cube logs web" => {
            let expected = if ran.docker {
                "listening on port 7777"
            } else {
                "simulated container"
            };
            ran.has(expected);
        }
        "cube status -o json" => {
            let names: Vec<String> = ran
                .answer()
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["Name"].as_str().unwrap().to_string())
                .collect();
            for name in ["echo", "web", "echo-fails"] {
                assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
            }
        }
        "cube node -o json" => assert_eq!(ran.answer().as_array().unwrap().len(), 3),
        "cube stop web" => ran.has("(web) stopped: Completed"),
        "cube stop echo" => ran.has("(echo) stopped: Completed"),
        "cube status --state Completed" => {
            ran.has(" web ");
            ran.has(" echo ");
            assert!(!ran.stdout.contains("Running"), "{}", ran.stdout);
        }
        "cube rm web" => ran.has("(web) removed"),
        // echo and echo-restarts (stopped) and echo-fails (failed).
        "cube prune" => ran.has("removed 3 finished tasks"),
        "cube node rm extra" => ran.has("node extra removed"),
        _ if c.starts_with("kill $(cat /tmp/cube-worker-extra.pid)") => {}
        _ if c.starts_with("sleep ") => {}
        "timeout 2 cube events --since 0 | head -3" => {
            ran.has(&format!("node {prefix}-1  - -> Ready: joined"));
            assert_eq!(ran.stdout.lines().count(), 3, "{}", ran.stdout);
        }
        _ if c.starts_with("cube worker --listen") => {}
        _ if c.starts_with("curl") => check_curl(ran, prefix),
        _ => panic!("no check for README command `{c}`: add one to tests/readme.rs"),
    }
}

/// The checks of the curl tour.
fn check_curl(ran: &Ran, prefix: &str) {
    let c = ran.command;
    let curl_task = "7f3c2b1a-0e9d-4c8b-a7f6-e5d4c3b2a190";
    let book_task = "21b23589-5d2d-4731-b5c9-a97e9832d021";
    if c.contains("/metrics") {
        // Five states and three node statuses; the cluster's three nodes are Ready.
        assert_eq!(ran.stdout.lines().count(), 8, "{}", ran.stdout);
        assert!(
            ran.stdout.contains("cube_nodes{status=\"Ready\"} 3"),
            "{}",
            ran.stdout
        );
        return;
    }
    if c.contains("/logs") {
        assert!(!ran.stdout.trim().is_empty(), "`{c}` printed no log lines");
        return;
    }
    let body = ran.answer();
    let on_5556 = c.contains("localhost:5556/");
    match () {
        _ if c.contains("--json @config/examples/echo-curl.json") => {
            assert_eq!(
                (&body["ID"], &body["State"]),
                (&Value::from(curl_task), &"Pending".into())
            )
        }
        _ if c.contains("--json @config/examples/book-task1.json") => {
            assert_eq!(body["ID"], book_task)
        }
        _ if c.contains("?purge=true") => {
            assert!(body["ID"] == curl_task || body["ID"] == book_task, "{body}")
        }
        _ if c.contains("-X DELETE") => {
            assert_eq!(
                (&body["ID"], &body["State"]),
                (&Value::from(curl_task), &"Completed".into())
            )
        }
        _ if c.ends_with(&format!("/tasks/{curl_task}")) => {
            assert_eq!(body["State"], "Running", "{body}");
            assert!(body["Node"].as_str().unwrap().starts_with(prefix), "{body}");
        }
        _ if c.ends_with(&format!("/tasks/{book_task}")) && ran.docker => {
            assert_eq!(body["State"], "Failed", "{body}");
            assert!(
                body["Reason"]
                    .as_str()
                    .unwrap()
                    .contains("timboring/echo-server"),
                "{body}"
            );
        }
        _ if c.ends_with(&format!("/tasks/{book_task}")) => assert!(body["State"].is_string()),
        _ if c.contains("tasks?state=Running") => {
            let tasks = body.as_array().unwrap();
            assert!(
                !tasks.is_empty() && tasks.iter().all(|t| t["State"] == "Running"),
                "{body}"
            );
        }
        _ if c.ends_with("localhost:5555/nodes/extra") => {
            assert_eq!(
                (&body["Name"], &body["Status"]),
                (&"extra".into(), &"Ready".into())
            )
        }
        _ if on_5556 && c.ends_with("/node") => assert_eq!(
            (&body["Name"], &body["Protocol"]),
            (&"extra".into(), &2.into())
        ),
        _ if on_5556 && c.ends_with("/stats") => assert!(body["Cpu"].is_object(), "{body}"),
        _ if on_5556 && c.ends_with("/tasks") => assert_eq!(body, Value::Array(Vec::new())),
        _ if c.ends_with("/tasks") => {
            assert!(body.as_array().is_some_and(|t| !t.is_empty()), "{body}")
        }
        _ if c.ends_with("/nodes") => assert_eq!(body.as_array().unwrap().len(), 3, "{body}"),
        _ if c.ends_with("/health") => assert_eq!(body["Status"], "ok"),
        _ => panic!("no check for README command `{c}`: add one to tests/readme.rs"),
    }
}

/// Kills the README's background `cube worker` (found by its unique listen address) at the end.
struct KillWorker(String);

impl Drop for KillWorker {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &format!("cube worker --listen {}", self.0)])
            .status();
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `command` with the test's addresses and image tag; example files are read from copies in
/// `copies` with the tag replaced.
fn substitute(command: &str, manager: &str, worker: &str, copies: &Path) -> String {
    let mut line = command
        .replace("localhost:5555", manager)
        .replace("localhost:5556", worker)
        .replace("cube/echo:latest", ECHO_IMAGE);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(root.join("config/examples")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let file = format!("config/examples/{name}");
        if line.contains(&file) {
            let text = std::fs::read_to_string(root.join(&file)).unwrap();
            let copy: PathBuf = copies.join(&name);
            std::fs::write(&copy, text.replace("cube/echo:latest", ECHO_IMAGE)).unwrap();
            line = line.replace(&file, copy.to_str().unwrap());
        }
    }
    line
}

#[actix_rt::test]
async fn every_readme_command_does_what_the_readme_says() {
    let docker = support::docker_ready().await;
    let root = env!("CARGO_MANIFEST_DIR");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_cube"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    // This user's per-user directory, as on a fresh machine: the cluster leaves its token there
    // and the README's commands find it with no token given.
    let home = tempfile::tempdir().unwrap();
    let config_dir = home.path().to_str().unwrap();
    let prefix = format!("readme-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let runtime = if docker { "docker" } else { "sim" };
    let up = CubeProcess::spawn(
        &[
            "up",
            "--runtime",
            runtime,
            "--listen",
            "127.0.0.1:0",
            "--node-prefix",
            &prefix,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[
            ("CUBE_CONFIG_DIR", config_dir),
            ("CUBE_TOKEN", ""),
            ("CUBE_JOIN_TOKEN", ""),
        ],
    );
    let _cleanup: Vec<Cleanup> = (1..=3).map(|i| Cleanup(format!("{prefix}-{i}"))).collect();
    let manager = up.base.trim_start_matches("http://").to_string();
    let worker = format!("127.0.0.1:{}", free_port());
    let _worker = KillWorker(worker.clone());
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let users_image = image_id("cube/echo:latest");
    let commands = readme_commands();
    assert!(commands.len() > 25, "the README has its tour: {commands:?}");
    let mut ran = 0;
    for command in &commands {
        if command.starts_with("cargo run --release -- up")
            || command == "cargo test --workspace"
            || command.starts_with("export PATH=")
        {
            continue;
        }
        if command == "./scripts/echo-image.sh" {
            if docker {
                support::echo_image().await;
            }
            continue;
        }
        let line = substitute(command, &manager, &worker, dir.path());
        let out = Command::new("sh")
            .args(["-c", &line])
            .current_dir(root)
            .env("PATH", &path)
            .env("CUBE_MANAGER", &manager)
            .env("CUBE_CONFIG_DIR", config_dir)
            .env_remove("CUBE_TOKEN")
            .env_remove("CUBE_JOIN_TOKEN")
            .env_remove("CUBE_WORKER_TOKEN")
            .env_remove("CUBE_MANAGER_CONFIG")
            .output()
            .unwrap();
        let result = Ran {
            command,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            docker,
        };
        assert!(
            out.status.success(),
            "README command failed: {command}\n{}{}",
            result.stdout,
            result.stderr
        );
        check(&result, &prefix);
        ran += 1;
    }
    assert!(ran > 25, "ran {ran} commands");
    assert_eq!(
        image_id("cube/echo:latest"),
        users_image,
        "the user's image was touched"
    );
}

/// The ID of a local Docker image, if there is such an image (and an engine).
fn image_id(tag: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
