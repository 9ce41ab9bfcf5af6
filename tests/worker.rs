//! A worker over HTTP, on the real Docker engine and on the simulated runtime.
//!
//! Each scenario is written once and run on both runtimes (`*_docker` and `*_sim`); checks that
//! need real containers (limits, labels, an answering port) run on Docker only.

mod support;

use std::time::Duration;

use cube::config::{RuntimeChoice, StoreChoice};
use serde_json::json;
use support::*;

const START: Duration = Duration::from_secs(30);

fn image_for(runtime: RuntimeChoice) -> &'static str {
    match runtime {
        RuntimeChoice::Docker => ECHO_IMAGE,
        RuntimeChoice::Sim => "sim/echo:latest",
    }
}

/// Runs `$scenario` once per runtime, skipping Docker where there is none.
macro_rules! on_both_runtimes {
    ($scenario:ident, $docker:ident, $sim:ident) => {
        #[actix_rt::test]
        async fn $docker() {
            if docker_ready().await {
                $scenario(RuntimeChoice::Docker).await;
            }
        }
        #[actix_rt::test]
        async fn $sim() {
            $scenario(RuntimeChoice::Sim).await;
        }
    };
}

/// A task starts with its limits, labels and ports; its port answers; stopping it removes the container.
async fn run_and_stop(runtime: RuntimeChoice) {
    let worker = TestWorker::start(runtime).await;
    let ev = event(
        image_for(runtime),
        json!({"Memory": 64 << 20, "Cpu": 0.5, "ExposedPorts": {"7777/tcp": {}}, "Env": ["GREETING=hi"]}),
    );
    let id = ev["Task"]["ID"].as_str().unwrap().to_string();
    let (status, body) = post(&format!("{}/tasks", worker.base), &ev).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["State"], "Scheduled");
    assert_eq!(body["Node"], worker.name.as_str());

    let task = worker.wait_state(&id, "Running", START).await;
    let container_id = task["ContainerID"].as_str().unwrap().to_string();
    let host_port = task["HostPorts"]["7777/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(task["StartTime"].is_string(), "StartTime is set: {task}");
    let (_, detail) = get(&format!("{}/tasks/{id}", worker.base)).await;
    assert_eq!(detail["Container"]["Status"], "Running");

    let (status, listed) = get(&format!("{}/tasks", worker.base)).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);

    if runtime == RuntimeChoice::Docker {
        let inspect = docker_inspect(&container_id).expect("the container exists");
        assert_eq!(inspect["HostConfig"]["Memory"], 64 << 20);
        assert_eq!(inspect["HostConfig"]["NanoCpus"], 500_000_000);
        assert_eq!(inspect["HostConfig"]["RestartPolicy"]["Name"], "no");
        let labels = &inspect["Config"]["Labels"];
        assert_eq!(labels["cube.task.id"], id.as_str());
        assert_eq!(labels["cube.worker"], worker.name.as_str());
        assert_eq!(labels["cube.managed"], "true");
        assert!(
            inspect["Config"]["Env"]
                .as_array()
                .unwrap()
                .contains(&json!("GREETING=hi"))
        );

        let echoed = post(
            &format!("http://127.0.0.1:{host_port}/"),
            &json!({"Msg": "hello"}),
        )
        .await;
        assert_eq!(echoed, (200, json!({"Msg": "hello"})));
        let (status, logs) = get(&format!("{}/tasks/{id}/logs", worker.base)).await;
        assert_eq!(status, 200);
        assert!(
            logs.as_str().unwrap().contains("listening on port 7777"),
            "{logs}"
        );
    }

    let (status, stopped) = delete(&format!("{}/tasks/{id}", worker.base)).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["State"], "Completed");
    assert_eq!(stopped["Reason"], "stopped by user");
    assert!(stopped["FinishTime"].is_string());
    // The stopped container stays, with its logs, until the task is forgotten.
    let (_, detail) = get(&format!("{}/tasks/{id}", worker.base)).await;
    assert!(
        detail["Container"]["Status"]["Exited"].is_object(),
        "{detail}"
    );
    // Stopping again is harmless.
    let (status, again) = delete(&format!("{}/tasks/{id}", worker.base)).await;
    assert_eq!((status, &again["State"]), (200, &json!("Completed")));
    // Forgetting removes the task and its container.
    let (status, _) = delete(&format!("{}/tasks/{id}?purge=true", worker.base)).await;
    assert_eq!(status, 204);
    assert_eq!(get(&format!("{}/tasks/{id}", worker.base)).await.0, 404);
    if runtime == RuntimeChoice::Docker {
        assert!(
            docker_inspect(&container_id).is_none(),
            "the container is removed"
        );
    }
}
on_both_runtimes!(run_and_stop, run_and_stop_docker, run_and_stop_sim);

/// A container that exits 3 leaves its task Failed with exit code 3; one that exits 0, Completed.
async fn exit_codes(runtime: RuntimeChoice) {
    let worker = TestWorker::start(runtime).await;
    let failing = event(
        image_for(runtime),
        json!({"Env": ["EXIT_CODE=3", "EXIT_AFTER_MS=300"], "RestartPolicy": "no"}),
    );
    let clean = event(
        image_for(runtime),
        json!({"Env": ["EXIT_CODE=0", "EXIT_AFTER_MS=300"]}),
    );
    for ev in [&failing, &clean] {
        let (status, body) = post(&format!("{}/tasks", worker.base), ev).await;
        assert_eq!(status, 201, "{body}");
    }
    let id = failing["Task"]["ID"].as_str().unwrap();
    let task = worker.wait_state(id, "Failed", START).await;
    assert_eq!(task["ExitCode"], 3);
    assert_eq!(task["Reason"], "container exited with code 3");
    let id = clean["Task"]["ID"].as_str().unwrap();
    let task = worker.wait_state(id, "Completed", START).await;
    assert_eq!(task["ExitCode"], 0);
}
on_both_runtimes!(exit_codes, exit_codes_docker, exit_codes_sim);

/// A task that keeps failing is restarted in place by its policy (on-failure, also the default
/// for a task that names none), after a doubling wait, up to the budget; then it ends Failed
/// saying so. With `"RestartPolicy": "no"` it fails at once.
async fn restarts_by_policy(runtime: RuntimeChoice) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = worker_settings(runtime, StoreChoice::Memory, dir.path());
    settings.restart_delay_ms = 100;
    let worker = TestWorker::start_with(settings, dir).await;
    let failing = event(
        image_for(runtime),
        json!({"Env": ["EXIT_CODE=3", "EXIT_AFTER_MS=300"]}),
    );
    let once = event(
        image_for(runtime),
        json!({"Env": ["EXIT_CODE=3", "EXIT_AFTER_MS=300"], "RestartPolicy": "no"}),
    );
    for ev in [&failing, &once] {
        assert_eq!(post(&format!("{}/tasks", worker.base), ev).await.0, 201);
    }
    let task = worker
        .wait_state(failing["Task"]["ID"].as_str().unwrap(), "Failed", START)
        .await;
    assert_eq!(
        (&task["RestartCount"], &task["ExitCode"]),
        (&json!(3), &json!(3))
    );
    let reason = task["Reason"].as_str().unwrap();
    assert!(reason.contains("after 3 restarts"), "{reason}");
    let task = worker
        .wait_state(once["Task"]["ID"].as_str().unwrap(), "Failed", START)
        .await;
    assert_eq!(task["RestartCount"], 0);
    // The attempt before the last one kept its container, and its output reads back.
    let failing_id = failing["Task"]["ID"].as_str().unwrap();
    let logs = format!("{}/tasks/{failing_id}/logs?previous=true", worker.base);
    let (status, previous) = get(&logs).await;
    assert_eq!(status, 200, "{previous}");
    if runtime == RuntimeChoice::Sim {
        assert!(
            previous.as_str().unwrap().contains("exiting with code 3"),
            "{previous}"
        );
    }
    let once_id = once["Task"]["ID"].as_str().unwrap();
    let (status, _) = get(&format!(
        "{}/tasks/{once_id}/logs?previous=true",
        worker.base
    ))
    .await;
    assert_eq!(
        status, 409,
        "a task never restarted has no previous attempt"
    );
}
on_both_runtimes!(
    restarts_by_policy,
    restarts_by_policy_docker,
    restarts_by_policy_sim
);

/// `docker kill` of a task's container: the task runs again in a new container after the
/// back-off, with RestartCount 1 and the reason of the restart visible.
#[actix_rt::test]
async fn a_killed_container_is_restarted_in_place() {
    if !docker_ready().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut settings = worker_settings(RuntimeChoice::Docker, StoreChoice::Lmdb, dir.path());
    settings.restart_delay_ms = 500;
    let worker = TestWorker::start_with(settings, dir).await;
    let _cleanup = Cleanup(worker.name.clone());
    let ev = event(ECHO_IMAGE, json!({}));
    let id = ev["Task"]["ID"].as_str().unwrap().to_string();
    assert_eq!(post(&format!("{}/tasks", worker.base), &ev).await.0, 201);
    let first = worker.wait_state(&id, "Running", START).await;
    let container = first["ContainerID"].as_str().unwrap().to_string();
    let killed = std::process::Command::new("docker")
        .args(["kill", &container])
        .output()
        .unwrap();
    assert!(killed.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let task = loop {
        let task = worker.task(&id).await;
        if task["State"] == "Running" && task["RestartCount"] == 1 {
            break task;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not restarted: {task}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(task["ContainerID"], container.as_str());
    let reason = task["Reason"].as_str().unwrap();
    assert!(
        reason.contains("restart 1 of 3") && reason.contains("exited with code 137"),
        "{reason}"
    );
    assert!(docker_inspect(task["ContainerID"].as_str().unwrap()).is_some());
}

/// An image that is neither present nor pullable fails the task with a reason naming the image.
async fn missing_image(runtime: RuntimeChoice) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = worker_settings(runtime, StoreChoice::Lmdb, dir.path());
    settings.sim_images = vec!["sim/echo:latest".into()];
    let worker = TestWorker::start_with(settings, dir).await;
    let ev = event("cube-test/not-here:1", json!({}));
    let id = ev["Task"]["ID"].as_str().unwrap();
    let (status, _) = post(&format!("{}/tasks", worker.base), &ev).await;
    assert_eq!(status, 201);
    let task = worker.wait_state(id, "Failed", START).await;
    let reason = task["Reason"].as_str().unwrap();
    assert!(
        reason.contains("image `cube-test/not-here:1` is not available"),
        "{reason}"
    );
    assert!(task["ContainerID"] == "", "no container was made: {task}");
}
on_both_runtimes!(missing_image, missing_image_docker, missing_image_sim);

/// Every error of the API has its status code and a JSON message that says what is wrong.
async fn api_errors(runtime: RuntimeChoice) {
    let worker = TestWorker::start(runtime).await;
    let tasks = format!("{}/tasks", worker.base);
    let unknown = uuid::Uuid::new_v4();

    let (status, body) = post_raw(&tasks, "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["HTTPStatusCode"], 400);
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON body"),
        "{body}"
    );

    let (status, body) = post(
        &tasks,
        &json!({"State": 2, "Task": {"Image": "x", "Imagee": "y"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .contains("unknown field `Imagee`"),
        "{body}"
    );

    let (status, body) = post(&tasks, &json!({"State": 2, "Task": {"Name": "no-image"}})).await;
    assert_eq!(status, 400);
    assert!(
        body["Message"].as_str().unwrap().contains("`Image`"),
        "{body}"
    );

    let (status, body) = post_raw(&tasks, vec![b' '; 2 << 20]).await;
    assert_eq!(status, 413, "{body}");

    for url in [
        format!("{tasks}/{unknown}"),
        format!("{tasks}/{unknown}/logs"),
    ] {
        let (status, body) = get(&url).await;
        assert_eq!(status, 404, "{url}: {body}");
        assert_eq!(
            body["Message"],
            format!("task {unknown} is not on this worker")
        );
    }
    let (status, _) = delete(&format!("{tasks}/{unknown}")).await;
    assert_eq!(status, 404);
    let (status, body) = get(&format!("{tasks}/not-a-uuid")).await;
    assert_eq!(status, 400);
    assert!(
        body["Message"].as_str().unwrap().contains("not a task ID"),
        "{body}"
    );
    let (status, body) = get(&format!("{}/nowhere", worker.base)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = delete(&tasks).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["Message"], "DELETE is not allowed on /tasks");

    // A Completed task cannot be run again under the same ID.
    let ev = event(image_for(runtime), json!({}));
    let id = ev["Task"]["ID"].as_str().unwrap();
    assert_eq!(post(&tasks, &ev).await.0, 201);
    worker.wait_state(id, "Running", START).await;
    assert_eq!(delete(&format!("{tasks}/{id}")).await.0, 200);
    let (status, body) = post(&tasks, &ev).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["Message"].as_str().unwrap().contains("is Completed"),
        "{body}"
    );

    // Asking for the state Failed is not a request one can make.
    let mut failed = event(image_for(runtime), json!({}));
    failed["State"] = json!(4);
    let (status, body) = post(&tasks, &failed).await;
    assert_eq!(status, 400, "{body}");
}
on_both_runtimes!(api_errors, api_errors_docker, api_errors_sim);

/// `GET /stats` reports this machine: memory as /proc/meminfo says, CPUs, disk, task count.
#[actix_rt::test]
async fn stats_agree_with_proc() {
    let worker = TestWorker::start(RuntimeChoice::Sim).await;
    let ev = event("sim/echo:latest", json!({}));
    assert_eq!(post(&format!("{}/tasks", worker.base), &ev).await.0, 201);
    worker
        .wait_state(ev["Task"]["ID"].as_str().unwrap(), "Running", START)
        .await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let (status, stats) = get(&format!("{}/stats", worker.base)).await;
    assert_eq!(status, 200);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb = |key: &str| -> u64 {
        let line = meminfo.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(stats["Memory"]["TotalBytes"], kb("MemTotal:") * 1024);
    let available = stats["Memory"]["AvailableBytes"].as_u64().unwrap() as f64;
    let now = (kb("MemAvailable:") * 1024) as f64;
    assert!(
        (available - now).abs() / now < 0.10,
        "available {available} vs {now}"
    );
    assert!(stats["Cpu"]["Cores"].as_u64().unwrap() >= 1);
    let usage = stats["Cpu"]["UsagePercent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&usage));
    assert!(stats["Disk"]["TotalBytes"].as_u64().unwrap() > 0);
    assert!(
        stats["Disk"]["FreeBytes"].as_u64().unwrap()
            <= stats["Disk"]["TotalBytes"].as_u64().unwrap()
    );
    let load1: f64 = std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((stats["Load"]["One"].as_f64().unwrap() - load1).abs() < 2.0);
    assert_eq!(stats["TaskCount"], 1);
}

/// A worker killed with SIGKILL and started again on its LMDB directory still lists its tasks,
/// and finds its running container again (same container, still Running).
#[actix_rt::test]
async fn a_restarted_worker_keeps_its_tasks_and_containers() {
    if !docker_ready().await {
        return;
    }
    let (dir, name) = (tempfile::tempdir().unwrap(), test_name());
    let args = docker_worker_args(&name, dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _cleanup = Cleanup(name.clone());
    let mut first = CubeProcess::spawn(&args, &[]);
    let ev = event(ECHO_IMAGE, json!({"ExposedPorts": {"7777/tcp": {}}}));
    let id = ev["Task"]["ID"].as_str().unwrap();
    assert_eq!(post(&format!("{}/tasks", first.base), &ev).await.0, 201);
    let running = wait_running(&first.base, id).await;
    first.kill();

    let second = CubeProcess::spawn(&args, &[]);
    let (status, listed) = get(&format!("{}/tasks", second.base)).await;
    assert_eq!(status, 200);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["ID"], id);
    assert_eq!(listed[0]["State"], "Running");
    assert_eq!(listed[0]["ContainerID"], running["ContainerID"]);
    let (_, detail) = get(&format!("{}/tasks/{id}", second.base)).await;
    assert_eq!(detail["Container"]["Status"], "Running");
}

fn test_name() -> String {
    format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// `cube worker` arguments for a Docker worker named `name` keeping its LMDB store under `dir`.
fn docker_worker_args(name: &str, dir: &std::path::Path) -> Vec<String> {
    let data = dir.join("data").to_str().unwrap().to_string();
    [
        "worker",
        "--listen",
        "127.0.0.1:0",
        "--name",
        name,
        "--data-dir",
        &data,
        "--runtime",
        "docker",
        "--publish-ip",
        "127.0.0.1",
    ]
    .map(String::from)
    .to_vec()
}

async fn wait_running(base: &str, id: &str) -> serde_json::Value {
    let url = format!("{base}/tasks/{id}");
    wait_task_state(&url, "/Task/State", "Running", START).await["Task"].clone()
}

/// With the Docker engine unreachable, a new task is refused with 503 and not stored.
#[actix_rt::test]
async fn an_unreachable_docker_engine_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let worker = CubeProcess::spawn(
        &[
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "no-docker",
            "--store",
            "lmdb",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let (status, body) = post(
        &format!("{}/tasks", worker.base),
        &event("any/image:1", json!({})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["HTTPStatusCode"], 503);
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .starts_with("container engine unreachable"),
        "{body}"
    );
    let (_, listed) = get(&format!("{}/tasks", worker.base)).await;
    assert_eq!(listed, json!([]));
}

/// A container removed while its worker was down leaves its task Failed, saying it vanished.
#[actix_rt::test]
async fn a_vanished_container_fails_its_task() {
    if !docker_ready().await {
        return;
    }
    let (dir, name) = (tempfile::tempdir().unwrap(), test_name());
    let args = docker_worker_args(&name, dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _cleanup = Cleanup(name.clone());
    let mut first = CubeProcess::spawn(&args, &[]);
    let ev = event(ECHO_IMAGE, json!({"RestartPolicy": "no"}));
    let id = ev["Task"]["ID"].as_str().unwrap();
    assert_eq!(post(&format!("{}/tasks", first.base), &ev).await.0, 201);
    let task = wait_running(&first.base, id).await;
    first.kill();
    let container = task["ContainerID"].as_str().unwrap();
    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", container])
        .output()
        .unwrap();
    assert!(removed.status.success());

    let second = CubeProcess::spawn(&args, &[]);
    let url = format!("{}/tasks/{id}", second.base);
    let detail = wait_task_state(&url, "/Task/State", "Failed", START).await;
    let reason = detail["Task"]["Reason"].as_str().unwrap();
    assert_eq!(reason, format!("container {} vanished", &container[..12]));
}

/// A task whose health check fails (simulated: `SIM_HEALTH_FAIL_AFTER_MS`) is unhealthy after
/// the configured failures in a row: stopped and restarted in place, then Failed with the reason
/// once the restarts are spent; a healthy one keeps running.
#[actix_rt::test]
async fn an_unhealthy_task_is_restarted_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = worker_settings(RuntimeChoice::Sim, StoreChoice::Memory, dir.path());
    settings.restart_delay_ms = 100;
    settings.max_restarts = 1;
    settings.health_interval_ms = 100;
    settings.health_grace_ms = 0;
    settings.health_failures = 2;
    let worker = TestWorker::start_with(settings, dir).await;
    let port = json!({"7777/tcp": {}});
    let sick = event(
        "sim/echo:latest",
        json!({"HealthCheck": "/health", "ExposedPorts": port, "Env": ["SIM_HEALTH_FAIL_AFTER_MS=200"]}),
    );
    let well = event(
        "sim/echo:latest",
        json!({"HealthCheck": "/health", "ExposedPorts": port}),
    );
    for ev in [&sick, &well] {
        assert_eq!(post(&format!("{}/tasks", worker.base), ev).await.0, 201);
    }
    let failed = worker
        .wait_state(sick["Task"]["ID"].as_str().unwrap(), "Failed", START)
        .await;
    assert_eq!(failed["RestartCount"], 1);
    let reason = failed["Reason"].as_str().unwrap();
    assert!(
        reason.starts_with("unhealthy: GET /health answered 500"),
        "{reason}"
    );
    assert!(
        reason.contains("2 checks in a row") && reason.contains("after 1 restarts"),
        "{reason}"
    );
    let fine = worker.task(well["Task"]["ID"].as_str().unwrap()).await;
    assert_eq!(
        (&fine["State"], &fine["RestartCount"]),
        (&json!("Running"), &json!(0))
    );
    // The richer form sets this task's own threshold: one failed check is enough.
    let check = json!({"Check": "/health", "Failures": 1, "IntervalMs": 100, "GraceMs": 0});
    let strict = event(
        "sim/echo:latest",
        json!({"HealthCheck": check, "ExposedPorts": port, "RestartPolicy": "no",
               "Env": ["SIM_HEALTH_FAIL_AFTER_MS=0"]}),
    );
    assert_eq!(
        post(&format!("{}/tasks", worker.base), &strict).await.0,
        201
    );
    let failed = worker
        .wait_state(strict["Task"]["ID"].as_str().unwrap(), "Failed", START)
        .await;
    assert!(
        failed["Reason"]
            .as_str()
            .unwrap()
            .contains("(1 checks in a row)"),
        "{failed}"
    );
    assert_eq!(failed["HealthCheck"], check);
}

/// A container of this worker's store that no task owns is removed after a grace; one made by
/// another store (another cluster's worker of the same name) and the tasks' own are left alone.
#[actix_rt::test]
async fn unowned_containers_of_its_store_are_reaped() {
    if !docker_ready().await {
        return;
    }
    let worker = TestWorker::start(RuntimeChoice::Docker).await;
    let _cleanup = Cleanup(worker.name.clone());
    let ev = event(ECHO_IMAGE, json!({}));
    let id = ev["Task"]["ID"].as_str().unwrap().to_string();
    assert_eq!(post(&format!("{}/tasks", worker.base), &ev).await.0, 201);
    let task = worker.wait_state(&id, "Running", START).await;
    let (_, sync) = get(&format!("{}/sync", worker.base)).await;
    let epoch = sync["Epoch"].as_str().unwrap().to_string();
    let orphan = |store: &str| {
        let out = std::process::Command::new("docker")
            .args(["run", "-d", "--label", "cube.managed=true"])
            .args(["--label", &format!("cube.worker={}", worker.name)])
            .args(["--label", &format!("cube.task.id={}", uuid::Uuid::new_v4())])
            .args(["--label", &format!("cube.store={store}"), ECHO_IMAGE])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let ours = orphan(&epoch);
    let foreign = orphan("another-store");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while docker_inspect(&ours).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "orphan {ours} not reaped"
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        docker_inspect(&foreign).is_some(),
        "another store's container was removed"
    );
    assert!(docker_inspect(task["ContainerID"].as_str().unwrap()).is_some());
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &foreign])
        .output();
}
