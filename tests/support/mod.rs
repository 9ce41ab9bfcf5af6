//! What the integration tests share: the echo test image, workers started in-process or as
//! `cube` processes, HTTP calls and waiting.
//!
//! Docker-backed tests call [`docker_ready`] first. Without an engine they skip with a loud
//! message, unless `CUBE_REQUIRE_DOCKER=1`, where a missing engine fails the test.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cube::config::{RuntimeChoice, StoreChoice, WorkerSettings};
use serde_json::Value;
use tokio::sync::OnceCell;

/// The image the tests run: the workspace's echo program in a `FROM scratch` image.
pub const ECHO_IMAGE: &str = "cube-test/echo:latest";

/// The admin token of the tests' managers, and the token of their workers' own APIs: every
/// helper here sends it ([`get`], [`post`], [`delete`], the `cube` commands of [`cube_command`]).
pub const TEST_TOKEN: &str = "cube-test-token-0123456789abcdef";

/// The join token of the tests' managers (workers started by [`cube_command`] enroll with it).
pub const TEST_JOIN_TOKEN: &str = "cube-test-join-0123456789abcdef";

/// The per-user directory of the tests' `cube` processes (never the real home directory).
pub fn test_config_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cube-config")
}

/// Prints a test's figures and keeps them in `target/tmp/figures/<name>.txt`, which `.ci/run`
/// shows after the tests (cargo hides what passing tests print).
pub fn report(name: &str, text: &str) {
    println!("{text}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), text);
}

/// A `cube` command with the tests' environment: their tokens and per-user directory.
pub fn cube_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cube"));
    cmd.env("CUBE_TOKEN", TEST_TOKEN)
        .env("CUBE_WORKER_TOKEN", TEST_TOKEN)
        .env("CUBE_JOIN_TOKEN", TEST_JOIN_TOKEN)
        .env("CUBE_CONFIG_DIR", test_config_dir());
    cmd
}

/// `cube args...` against the manager at `manager`, from the workspace root.
pub fn cube_at(manager: &str, args: &[&str]) -> std::process::Output {
    cube_command()
        .args(args)
        .env("CUBE_MANAGER", manager)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// Runs `cube args...` against `manager`, asserts it succeeded, returns its stdout.
pub fn cube_ok(manager: &str, args: &[&str]) -> String {
    let out = cube_at(manager, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cube {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Whether Docker tests can run here. Fails instead of skipping when `CUBE_REQUIRE_DOCKER=1`.
pub async fn docker_ready() -> bool {
    if cube_actors::runtime::docker_available().await {
        echo_image().await;
        return true;
    }
    if std::env::var("CUBE_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        panic!("CUBE_REQUIRE_DOCKER=1 but no Docker engine answers (is dockerd running?)");
    }
    eprintln!(
        "\n!!!!! SKIPPING a Docker test: no Docker engine answers here. Set CUBE_REQUIRE_DOCKER=1 to make this a failure. !!!!!\n"
    );
    false
}

/// Builds the echo program statically and imports it as [`ECHO_IMAGE`], once per test process.
pub async fn echo_image() -> &'static str {
    static BUILT: OnceCell<()> = OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let binary = std::fs::read(build_echo_binary()).unwrap();
            // The image is also tagged with a hash of the binary, so an up-to-date image is
            // kept rather than imported again.
            let hash = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                binary.hash(&mut h);
                format!("{:016x}", h.finish())
            };
            let versioned = format!("{}:{hash}", ECHO_IMAGE.rsplit_once(':').unwrap().0);
            let docker = |args: &[&str]| {
                Command::new("docker")
                    .args(args)
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if !docker(&["image", "inspect", &versioned]) {
                let tar = cube_actors::runtime::echo_image_tar(&binary).unwrap();
                let changes = vec!["CMD [\"/echo\"]".into(), "EXPOSE 7777".into()];
                cube_actors::runtime::import_image(&versioned, tar, changes)
                    .await
                    .expect("importing the echo test image");
            }
            assert!(
                docker(&["tag", &versioned, ECHO_IMAGE]),
                "docker tag {versioned} {ECHO_IMAGE}"
            );
        })
        .await;
    ECHO_IMAGE
}

/// The static echo binary (built by [`echo_image`]).
pub fn echo_binary() -> PathBuf {
    build_echo_binary()
}

/// `cargo build` of the echo program, statically linked, in its own target directory (so it
/// does not wait on the lock of the build running the tests).
fn build_echo_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let target_dir = root.join("target").join("echo");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "cube-echo",
            "--target",
            &target,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .expect("running cargo to build the echo program");
    assert!(status.success(), "building the echo program failed");
    target_dir.join(target).join("release").join("cube-echo")
}

/// Worker settings for a test: loopback port 0, a unique name, a private data directory,
/// quick stops and reconciles.
pub fn worker_settings(runtime: RuntimeChoice, store: StoreChoice, dir: &Path) -> WorkerSettings {
    WorkerSettings {
        listen: "127.0.0.1:0".into(),
        name: format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        store,
        data_dir: dir.join("data"),
        store_map_size_mib: 64,
        runtime,
        publish_ip: "127.0.0.1".into(),
        sim_images: Vec::new(),
        stop_timeout_secs: 2,
        reconcile_interval_ms: 300,
        stats_interval_ms: 200,
        token: TEST_TOKEN.into(),
        join_token: TEST_JOIN_TOKEN.into(),
        ..WorkerSettings::default()
    }
}

/// A worker running in this test's actix system; its containers are removed when dropped.
pub struct TestWorker {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// Its name (the `cube.worker` label of its containers).
    pub name: String,
    /// Its data directory's parent.
    pub dir: tempfile::TempDir,
}

impl TestWorker {
    /// Starts a worker with `settings` (see [`worker_settings`]).
    pub async fn start_with(settings: WorkerSettings, dir: tempfile::TempDir) -> TestWorker {
        let node = cube::serve::start_worker(&settings)
            .await
            .expect("worker starts");
        actix_rt::spawn(node.server);
        TestWorker {
            base: format!("http://{}", node.addr),
            name: node.name,
            dir,
        }
    }

    /// Starts a worker on `runtime` with an LMDB store.
    pub async fn start(runtime: RuntimeChoice) -> TestWorker {
        let dir = tempfile::tempdir().unwrap();
        let settings = worker_settings(runtime, StoreChoice::Lmdb, dir.path());
        TestWorker::start_with(settings, dir).await
    }

    /// `GET /tasks/{id}`'s task.
    pub async fn task(&self, id: &str) -> Value {
        let (status, body) = get(&format!("{}/tasks/{id}", self.base)).await;
        assert_eq!(status, 200, "{body}");
        body["Task"].clone()
    }

    /// Waits until the task is in `state`, failing after `timeout`; returns the task.
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let detail = wait_task_state(
            &format!("{}/tasks/{id}", self.base),
            "/Task/State",
            state,
            timeout,
        )
        .await;
        detail["Task"].clone()
    }
}

/// The tasks of the manager at `base`, by ID.
pub async fn manager_tasks(base: &str) -> std::collections::BTreeMap<String, Value> {
    let (_, list) = get(&format!("{base}/tasks")).await;
    let list = list.as_array().expect("a task list").clone();
    list.into_iter()
        .map(|t| (t["ID"].as_str().unwrap().to_string(), t))
        .collect()
}

/// Waits until the manager at `base` has at least `n` Ready nodes, failing after `timeout`.
pub async fn wait_ready_nodes(base: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, nodes) = get(&format!("{base}/nodes")).await;
        let ready = nodes
            .as_array()
            .map_or(0, |a| a.iter().filter(|n| n["Status"] == "Ready").count());
        if ready >= n {
            return;
        }
        assert!(Instant::now() < deadline, "nodes never ready: {nodes}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET url` until the JSON at `pointer` (e.g. `/State`) equals `state`; returns the body.
/// Fails the test after `timeout`, showing the last answer.
pub async fn wait_task_state(url: &str, pointer: &str, state: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = get(url).await;
        assert_eq!(status, 200, "GET {url}: {body}");
        if body.pointer(pointer).is_some_and(|s| s == state) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not reach {state} within {timeout:?}: {body}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        remove_containers_of(&self.name);
    }
}

/// Removes a worker's containers (by its name) when dropped: when the test ends, however it ends.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_containers_of(&self.0);
    }
}

/// Removes every container labelled with worker `name` (so a failed test leaks nothing).
pub fn remove_containers_of(name: &str) {
    let Ok(out) = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=cube.worker={name}"),
        ])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&ids)
            .output();
    }
}

/// `docker inspect` of a container, or None when it does not exist.
pub fn docker_inspect(id: &str) -> Option<Value> {
    let out = Command::new("docker").args(["inspect", id]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(list[0].clone())
}

/// A task event as the book writes it, for `image`, with extra task fields merged in.
pub fn event(image: &str, extra: Value) -> Value {
    let mut task = serde_json::json!({
        "ID": uuid::Uuid::new_v4().to_string(),
        "Name": format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]),
        "State": 1,
        "Image": image,
    });
    if let (Some(task), Value::Object(extra)) = (task.as_object_mut(), extra) {
        task.extend(extra);
    }
    serde_json::json!({ "State": 2, "Task": task })
}

fn client() -> awc::Client {
    awc::Client::builder()
        .bearer_auth(TEST_TOKEN)
        .timeout(Duration::from_secs(30))
        .finish()
}

async fn answer(
    mut resp: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
        + Unpin,
    >,
) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.body().limit(16 << 20).await.expect("response body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// GET; the body as JSON (or a JSON string when it is not JSON).
pub async fn get(url: &str) -> (u16, Value) {
    answer(client().get(url).send().await.expect("GET")).await
}

/// POST of a JSON value.
pub async fn post(url: &str, body: &Value) -> (u16, Value) {
    answer(client().post(url).send_json(body).await.expect("POST")).await
}

/// POST of raw bytes.
pub async fn post_raw(url: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
    let body: Vec<u8> = body.into();
    answer(
        client()
            .post(url)
            .insert_header(("content-type", "application/json"))
            .send_body(body)
            .await
            .expect("POST"),
    )
    .await
}

/// DELETE.
pub async fn delete(url: &str) -> (u16, Value) {
    answer(client().delete(url).send().await.expect("DELETE")).await
}

/// A `cube` process, killed when dropped.
pub struct CubeProcess {
    /// The child.
    pub child: Child,
    /// The URL it printed it listens on.
    pub base: String,
}

impl CubeProcess {
    /// Runs `cube args...` with extra environment, and waits for its "listening on" line.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> CubeProcess {
        let mut cmd = cube_command();
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning cube");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("cube exited before saying where it listens")
                .unwrap();
            if let Some(at) = line.find("http://").or_else(|| line.find("https://")) {
                break line[at..].split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        CubeProcess { child, base }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CubeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
