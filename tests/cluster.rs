//! Clusters end to end over HTTP: `cube up` (all-in-one), and a manager with separate
//! `cube worker` processes reached through the remote-worker actor.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cube::config::{ClusterSettings, ManagerSettings, RuntimeChoice, Size, StoreChoice};
use serde_json::{Value, json};
use support::*;

const SETTLE: Duration = Duration::from_secs(40);

/// Polls `GET {base}/tasks/{id}` until the task is in `state`; returns it.
async fn wait_task(base: &str, id: &str, state: &str) -> Value {
    wait_task_state(&format!("{base}/tasks/{id}"), "/State", state, SETTLE).await
}

/// An in-process all-in-one cluster on the simulated runtime, nodes of 1 CPU and 1 GiB;
/// returns its URL (and the directory to keep alive).
async fn sim_cluster() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cluster =
        cube::serve::start_cluster(&cluster_settings(RuntimeChoice::Sim, dir.path(), 1 << 30))
            .await
            .unwrap();
    actix_rt::spawn(cluster.manager.server);
    (format!("http://{}", cluster.manager.addr), dir)
}

/// Submits `n` tasks built by `make` and waits until all run; returns them.
async fn run_tasks(base: &str, n: usize, make: impl Fn(usize) -> Value) -> Vec<Value> {
    let mut ids = Vec::new();
    for i in 0..n {
        let ev = make(i);
        let (status, body) = post(&format!("{base}/tasks"), &ev).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["State"], "Pending");
        ids.push(ev["Task"]["ID"].as_str().unwrap().to_string());
    }
    let mut tasks = Vec::new();
    for id in ids {
        tasks.push(wait_task(base, &id, "Running").await);
    }
    tasks
}

fn per_node(tasks: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts
            .entry(t["Node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

/// Cluster settings for a test: loopback port 0, private data directory, quick polls.
fn cluster_settings(
    runtime: RuntimeChoice,
    dir: &std::path::Path,
    node_memory: u64,
) -> ClusterSettings {
    ClusterSettings {
        manager: ManagerSettings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.join("manager"),
            poll_interval_ms: 200,
            token: support::TEST_TOKEN.into(),
            join_token: support::TEST_JOIN_TOKEN.into(),
            ..ManagerSettings::default()
        },
        workers: 3,
        node_prefix: "node".into(),
        store: StoreChoice::Lmdb,
        data_dir: dir.to_path_buf(),
        runtime,
        publish_ip: "127.0.0.1".into(),
        stop_timeout_secs: 2,
        node_cpu: 1.0,
        node_memory: Size(node_memory),
        node_disk: Size(1 << 30),
        ..ClusterSettings::default()
    }
}

/// In-process all-in-one cluster on the simulated runtime: six tasks spread two per node,
/// a task bigger than any node waits Pending with its reason and runs once a node has room.
#[actix_rt::test]
async fn all_in_one_spreads_tasks_and_places_a_waiting_task_when_room_appears() {
    let (base, _dir) = sim_cluster().await;

    let (_, nodes) = get(&format!("{base}/nodes")).await;
    assert_eq!(nodes.as_array().unwrap().len(), 3, "{nodes}");
    let tasks = run_tasks(&base, 6, |_| {
        event("sim/echo:latest", json!({"Memory": 256 << 20}))
    })
    .await;
    assert_eq!(
        per_node(&tasks),
        BTreeMap::from([
            ("node-1".into(), 2),
            ("node-2".into(), 2),
            ("node-3".into(), 2)
        ])
    );

    // Each node has 512 MiB left: a 768 MiB task fits nowhere and says so.
    let big = event("sim/echo:latest", json!({"Memory": 768 << 20}));
    let big_id = big["Task"]["ID"].as_str().unwrap();
    assert_eq!(post(&format!("{base}/tasks"), &big).await.0, 201);
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let (_, waiting) = get(&format!("{base}/tasks/{big_id}")).await;
    assert_eq!(waiting["State"], "Pending");
    assert_eq!(
        waiting["Reason"],
        "waiting for a node: no node has 768 MiB free memory (most free: 512 MiB)"
    );

    // Stopping a task frees its node's reservation: the waiting task goes there.
    let victim = &tasks[0];
    let (status, stopped) =
        delete(&format!("{base}/tasks/{}", victim["ID"].as_str().unwrap())).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["State"], "Completed");
    let placed = wait_task(&base, big_id, "Running").await;
    assert_eq!(placed["Node"], victim["Node"]);

    let (_, nodes) = get(&format!("{base}/nodes")).await;
    let node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Name"] == victim["Node"])
        .unwrap();
    assert_eq!(node["Reserved"]["Memory"], (256 + 768) << 20);
    assert_eq!(node["TaskCount"], 2);
    assert_eq!(node["Status"], "Ready");
    assert!(
        node["Stats"]["Memory"]["TotalBytes"].as_u64().unwrap() > 0,
        "{node}"
    );
    // Each node's metrics count its own tasks, though the simulated nodes share a machine:
    // with one more task stopped elsewhere, the nodes hold 2, 1 and 2 tasks.
    let other = tasks.iter().find(|t| t["Node"] != victim["Node"]).unwrap();
    let (status, _) = delete(&format!("{base}/tasks/{}", other["ID"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, nodes) = get(&format!("{base}/nodes")).await;
        let counts: Vec<(Value, Value)> = nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["TaskCount"].clone(), n["Stats"]["TaskCount"].clone()))
            .collect();
        if counts.iter().all(|(placed, reported)| placed == reported) {
            let mut placed: Vec<u64> = counts.iter().map(|(p, _)| p.as_u64().unwrap()).collect();
            placed.sort();
            assert_eq!(placed, [1, 2, 2]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task counts disagree: {counts:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The manager API's errors: unknown ids, bad ids, unknown fields, resubmitting a stopped task,
/// a worker address that does not answer.
#[actix_rt::test]
async fn manager_api_errors_have_their_status_and_message() {
    let (base, _dir) = sim_cluster().await;
    let unknown = uuid::Uuid::new_v4();

    for url in [
        format!("{base}/tasks/{unknown}"),
        format!("{base}/tasks/{unknown}/logs"),
    ] {
        let (status, body) = get(&url).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["Message"], format!("task {unknown} not found"));
    }
    assert_eq!(delete(&format!("{base}/tasks/{unknown}")).await.0, 404);
    assert_eq!(get(&format!("{base}/tasks/nope")).await.0, 400);
    let (status, body) = post(
        &format!("{base}/tasks"),
        &json!({"Task": {"Image": "x", "Cpus": 1}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .contains("unknown field `Cpus`"),
        "{body}"
    );

    let ev = event("sim/echo:latest", json!({}));
    let id = ev["Task"]["ID"].as_str().unwrap();
    assert_eq!(post(&format!("{base}/tasks"), &ev).await.0, 201);
    wait_task(&base, id, "Running").await;
    // The book's way to stop: the same event with State 3.
    let mut stop = ev.clone();
    stop["State"] = json!(3);
    let (status, body) = post(&format!("{base}/tasks"), &stop).await;
    assert_eq!(
        (status, &body["State"]),
        (200, &json!("Completed")),
        "{body}"
    );
    let (status, body) = post(&format!("{base}/tasks"), &ev).await;
    assert_eq!(status, 409, "{body}");

    let enrolling = json!({
        "Name": "nowhere",
        "Address": "127.0.0.1:1",
        "NodeKey": "cube-node-0123456789abcdef",
        "Protocol": 2,
    });
    let (status, body) = post(&format!("{base}/nodes"), &enrolling).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .contains("the manager cannot reach http://127.0.0.1:1"),
        "{body}"
    );
}

/// `cube up --workers 3` on the real Docker engine: six echo tasks sent as book-style JSON all
/// run, spread over the three nodes, and answer on their ports; DELETE stops them and removes
/// their containers; a task larger than any node waits with its reason, then runs when room appears.
#[actix_rt::test]
async fn cube_up_runs_echo_tasks_on_docker() {
    if !docker_ready().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("up-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let up = CubeProcess::spawn(
        &[
            "up",
            "--node-prefix",
            &prefix,
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
    let names = [1, 2, 3].map(|i| format!("{prefix}-{i}"));
    let _cleanup = names.clone().map(Cleanup);
    let base = up.base.clone();
    let tasks = run_tasks(&base, 6, |_| {
        event(
            ECHO_IMAGE,
            json!({"Memory": 256 << 20, "ExposedPorts": {"7777/tcp": {}}}),
        )
    })
    .await;
    assert_eq!(per_node(&tasks), BTreeMap::from(names.map(|n| (n, 2))));
    for task in &tasks {
        let port = task["HostPorts"]["7777/tcp"][0]["HostPort"]
            .as_str()
            .unwrap();
        let echoed = post(
            &format!("http://127.0.0.1:{port}/"),
            &json!({"Msg": task["Name"]}),
        )
        .await;
        assert_eq!(echoed, (200, json!({"Msg": task["Name"]})));
        let inspect = docker_inspect(task["ContainerID"].as_str().unwrap()).unwrap();
        assert_eq!(inspect["Config"]["Labels"]["cube.worker"], task["Node"]);
    }

    let big = event(ECHO_IMAGE, json!({"Memory": 768 << 20}));
    let big_id = big["Task"]["ID"].as_str().unwrap();
    assert_eq!(post(&format!("{base}/tasks"), &big).await.0, 201);
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    let (_, waiting) = get(&format!("{base}/tasks/{big_id}")).await;
    assert_eq!(waiting["State"], "Pending", "{waiting}");
    assert!(
        waiting["Reason"]
            .as_str()
            .unwrap()
            .contains("768 MiB free memory"),
        "{waiting}"
    );

    for task in &tasks {
        let (status, stopped) =
            delete(&format!("{base}/tasks/{}", task["ID"].as_str().unwrap())).await;
        assert_eq!(
            (status, &stopped["State"]),
            (200, &json!("Completed")),
            "{stopped}"
        );
        // Stopped, the container stays (with its logs) until the task is removed.
        let container = task["ContainerID"].as_str().unwrap();
        let inspect = docker_inspect(container).expect("a stopped task keeps its container");
        assert_eq!(inspect["State"]["Running"], false, "{inspect}");
        let purge = format!("{base}/tasks/{}?purge=true", task["ID"].as_str().unwrap());
        assert_eq!(delete(&purge).await.0, 200);
        let deadline = Instant::now() + SETTLE;
        while docker_inspect(container).is_some() {
            assert!(
                Instant::now() < deadline,
                "container {container} still there"
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let placed = wait_task(&base, big_id, "Running").await;
    let (status, _) = delete(&format!("{base}/tasks/{big_id}")).await;
    assert_eq!(status, 200);
    let container = placed["ContainerID"].as_str().unwrap();
    assert_eq!(
        docker_inspect(container).unwrap()["State"]["Running"],
        false
    );
    assert_eq!(
        delete(&format!("{base}/tasks/{big_id}?purge=true")).await.0,
        200
    );
}

/// A manager and two `cube worker` processes on loopback: one worker listed with `--workers`,
/// one joining with `--manager`. Tasks land on both through the remote-worker actor; a killed
/// worker becomes Unreachable and is not chosen again; the manager restarted on its LMDB
/// directory still knows every task.
#[actix_rt::test]
async fn separate_manager_and_worker_processes() {
    let docker = docker_ready().await;
    let runtime = if docker { "docker" } else { "sim" };
    let image = if docker {
        ECHO_IMAGE
    } else {
        "sim/echo:latest"
    };
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let (name_a, name_b) = (format!("wa-{suffix}"), format!("wb-{suffix}"));
    let _cleanup = (Cleanup(name_a.clone()), Cleanup(name_b.clone()));
    let worker = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--runtime",
            runtime,
            "--publish-ip",
            "127.0.0.1",
            "--stop-timeout",
            "2",
            "--cpu",
            "1",
            "--memory",
            "1Gi",
        ];
        let data = path(name);
        args.extend(["--data-dir", &data]);
        args.extend(extra);
        CubeProcess::spawn(&args, &[])
    };
    let manager_args = [
        "manager",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &path("manager"),
        "--scheduler",
        "roundrobin",
        "--poll-interval-ms",
        "200",
    ];
    let mut manager = CubeProcess::spawn(&manager_args, &[]);
    let a = worker(&name_a, &["--manager", &manager.base]);
    let mut b = worker(&name_b, &["--manager", &manager.base]);
    wait_nodes(&manager.base, 2).await;

    let tasks = run_tasks(&manager.base, 4, |_| {
        event(image, json!({"Memory": 64 << 20}))
    })
    .await;
    assert_eq!(
        per_node(&tasks),
        BTreeMap::from([(name_a.clone(), 2), (name_b.clone(), 2)])
    );

    // Worker b dies: it turns Unreachable and new tasks all go to a.
    b.kill();
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, nodes) = get(&format!("{}/nodes", manager.base)).await;
        let b_node = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["Name"] == name_b.as_str())
            .unwrap()
            .clone();
        if b_node["Status"] == "Unreachable" {
            assert!(
                b_node["Error"].as_str().unwrap().contains("did not answer"),
                "{b_node}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker b never became Unreachable"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let more = run_tasks(&manager.base, 3, |_| {
        event(image, json!({"Memory": 64 << 20}))
    })
    .await;
    assert_eq!(per_node(&more), BTreeMap::from([(name_a.clone(), 3)]));

    // The manager restarts on its data directory and still knows all seven tasks and both nodes.
    manager.kill();
    let manager = CubeProcess::spawn(&manager_args, &[]);
    let (_, listed) = get(&format!("{}/tasks", manager.base)).await;
    assert_eq!(listed.as_array().unwrap().len(), 7, "{listed}");
    let on_a = more[0]["ID"].as_str().unwrap();
    let (_, task) = get(&format!("{}/tasks/{on_a}", manager.base)).await;
    assert_eq!(
        (&task["State"], &task["Node"]),
        (&json!("Running"), &json!(name_a))
    );
    // Both nodes come back from the store, with the reservations of the tasks placed on them.
    wait_nodes(&manager.base, 2).await;
    let (_, nodes) = get(&format!("{}/nodes", manager.base)).await;
    let a_node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Name"] == name_a.as_str())
        .unwrap();
    assert_eq!(
        (&a_node["TaskCount"], &a_node["Reserved"]["Memory"]),
        (&json!(5), &json!(5 * (64 << 20)))
    );
    drop(a);
}

async fn wait_nodes(base: &str, n: usize) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, nodes) = get(&format!("{base}/nodes")).await;
        if nodes.as_array().is_some_and(|a| a.len() == n) {
            return;
        }
        assert!(Instant::now() < deadline, "only {nodes} joined");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With the Docker engine down, a submitted task is kept Pending with the engine's error as its
/// reason, and tried again after a growing wait rather than dropped.
#[actix_rt::test]
async fn a_task_waits_while_the_engine_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let up = CubeProcess::spawn(
        &[
            "up",
            "--workers",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--node-prefix",
            "no-engine",
        ],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let ev = event("cube/echo:latest", json!({}));
    let id = ev["Task"]["ID"].as_str().unwrap();
    assert_eq!(post(&format!("{}/tasks", up.base), &ev).await.0, 201);
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, task) = get(&format!("{}/tasks/{id}", up.base)).await;
        let reason = task["Reason"].as_str().unwrap().to_string();
        if task["State"] == "Pending" && reason.contains("trying again in 1s") {
            assert!(reason.contains("container engine unreachable"), "{reason}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw the second wait: {task}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two tasks asking for the same fixed host port on a 3-node `cube up` (nodes that share the
/// machine's ports): one runs, the other waits Pending with a reason naming the port, and runs
/// once the first is stopped.
#[actix_rt::test]
async fn a_fixed_host_port_is_given_once_per_machine() {
    let docker = docker_ready().await;
    let image = if docker {
        echo_image().await
    } else {
        "sim/echo:latest"
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("port-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let runtime = if docker { "docker" } else { "sim" };
    let args = [
        "up",
        "--runtime",
        runtime,
        "--workers",
        "3",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--node-prefix",
        &prefix,
        "--node-cpu",
        "1",
        "--node-memory",
        "1Gi",
    ];
    let up = CubeProcess::spawn(&args, &[]);
    let _cleanup: Vec<Cleanup> = (1..=3).map(|i| Cleanup(format!("{prefix}-{i}"))).collect();
    // Outside the ephemeral range, where Docker gives other tests' containers their ports.
    let port = (0..1000)
        .map(|_| 20_000 + (uuid::Uuid::new_v4().as_u128() % 10_000) as u16)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap();
    let fixed = json!({"PortBindings": {"7777/tcp": port.to_string()}});
    let (first, second) = (event(image, fixed.clone()), event(image, fixed));
    let url = format!("{}/tasks", up.base);
    assert_eq!(post(&url, &first).await.0, 201);
    let first_id = first["Task"]["ID"].as_str().unwrap();
    let running = wait_task(&up.base, first_id, "Running").await;
    assert_eq!(
        running["HostPorts"]["7777/tcp"][0]["HostPort"],
        port.to_string()
    );
    assert_eq!(post(&url, &second).await.0, 201);
    let second_id = second["Task"]["ID"].as_str().unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, task) = get(&format!("{url}/{second_id}")).await;
        let reason = task["Reason"].as_str().unwrap();
        if reason.contains(&format!("host port {port} is taken")) {
            assert_eq!(task["State"], "Pending", "{task}");
            break;
        }
        assert!(Instant::now() < deadline, "{task}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delete(&format!("{url}/{first_id}")).await.0, 200);
    wait_task(&up.base, second_id, "Running").await;
}
