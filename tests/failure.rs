//! Tasks stay alive when their node does not: a worker that stops answering for good has its
//! tasks placed again on the others, and when it comes back it stops the copies it still runs.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cube::config::{ManagerSettings, StoreChoice};
use serde_json::{Value, json};
use support::*;

const SETTLE: Duration = Duration::from_secs(40);

/// A `cube worker` process on Docker (simulated without Docker) joining `manager`.
fn worker(name: &str, dir: &std::path::Path, manager: &str, docker: bool) -> CubeProcess {
    let data = dir.join(name);
    let runtime = if docker { "docker" } else { "sim" };
    let args = [
        "worker",
        "--listen",
        "127.0.0.1:0",
        "--name",
        name,
        "--runtime",
        runtime,
        "--publish-ip",
        "127.0.0.1",
        "--data-dir",
        data.to_str().unwrap(),
        "--cpu",
        "1",
        "--memory",
        "1Gi",
        "--stop-timeout",
        "1",
        "--manager",
        manager,
    ];
    CubeProcess::spawn(&args, &[])
}

/// Waits until `check` holds for the manager's tasks; returns them.
async fn until(
    base: &str,
    what: &str,
    check: impl Fn(&BTreeMap<String, Value>) -> bool,
) -> BTreeMap<String, Value> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = manager_tasks(base).await;
        if check(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "never {what}: {now:#?}");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A worker process killed for good: past the grace its node is Down and its tasks run on the
/// other worker under a new placement; started again, it stops its stale copies itself (seen on
/// its own API, and on the containers' placement labels).
#[actix_rt::test]
async fn a_lost_worker_s_tasks_run_elsewhere_and_it_stops_its_copies_when_back() {
    let docker = docker_ready().await;
    let image = if docker {
        echo_image().await
    } else {
        "sim/echo:latest"
    };
    let dir = tempfile::tempdir().unwrap();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let (a, b) = (format!("la-{suffix}"), format!("lb-{suffix}"));
    let _cleanup = (Cleanup(a.clone()), Cleanup(b.clone()));
    let settings = ManagerSettings {
        listen: "127.0.0.1:0".into(),
        store: StoreChoice::Lmdb,
        data_dir: dir.path().join("manager"),
        scheduler: "roundrobin".parse().unwrap(),
        poll_interval_ms: 200,
        node_down_after_ms: 2000,
        token: support::TEST_TOKEN.into(),
        join_token: support::TEST_JOIN_TOKEN.into(),
        ..ManagerSettings::default()
    };
    let manager = cube::serve::start_manager(&settings).await.unwrap();
    actix_rt::spawn(manager.server);
    let base = format!("http://{}", manager.addr);
    let mut workers = BTreeMap::from([
        (a.clone(), worker(&a, dir.path(), &base, docker)),
        (b.clone(), worker(&b, dir.path(), &base, docker)),
    ]);
    wait_ready_nodes(&base, 2, SETTLE).await;
    for _ in 0..4 {
        let ev = event(image, json!({"Memory": 64 << 20}));
        assert_eq!(post(&format!("{base}/tasks"), &ev).await.0, 201);
    }
    let running = until(&base, "all Running", |t| {
        t.len() == 4 && t.values().all(|t| t["State"] == "Running")
    })
    .await;
    // The node of the first task is lost ("b" below); the other ("a") takes its tasks.
    let lost_node = running.values().next().unwrap()["Node"]
        .as_str()
        .unwrap()
        .to_string();
    let (a, b) = if lost_node == b { (a, b) } else { (b, a) };
    let on_b: Vec<String> = running
        .values()
        .filter(|t| t["Node"] == b.as_str())
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect();
    let mut worker_b = workers.remove(&b).unwrap();

    // b is gone for good: its tasks run on a, placed again.
    worker_b.kill();
    let lost = Instant::now();
    let moved = until(&base, "moved to a", |t| {
        on_b.iter()
            .all(|id| t[id]["State"] == "Running" && t[id]["Node"] == a.as_str())
    })
    .await;
    println!(
        "tasks of the lost node running elsewhere after {:?}",
        lost.elapsed()
    );
    for id in &on_b {
        assert_eq!(moved[id]["Placement"], 2, "{}", moved[id]);
    }
    let (_, nodes) = get(&format!("{base}/nodes")).await;
    let b_node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Name"] == b.as_str())
        .unwrap();
    assert_eq!(b_node["Status"], "Down", "{b_node}");

    // b comes back with its store: it stops the copies of placement 1 itself.
    let worker_b = worker(&b, dir.path(), &base, docker);
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, its_tasks) = get(&format!("{}/tasks", worker_b.base)).await;
        let its_tasks = its_tasks.as_array().unwrap();
        let stopped = on_b.iter().all(|id| {
            its_tasks.iter().any(|t| {
                t["ID"] == id.as_str()
                    && t["State"] == "Completed"
                    && t["Reason"]
                        .as_str()
                        .unwrap()
                        .contains("placement 1 is stale")
            })
        });
        if stopped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b kept its copies: {its_tasks:#?}"
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    if docker {
        for id in &on_b {
            let out = std::process::Command::new("docker")
                .args(["ps", "-q", "--filter", &format!("label=cube.task.id={id}")])
                .args(["--filter", "label=cube.placement=1"])
                .output()
                .unwrap();
            assert!(
                out.stdout.is_empty(),
                "a copy of placement 1 of {id} still runs"
            );
        }
    }
    // The manager still has them running on a.
    let now = manager_tasks(&base).await;
    for id in &on_b {
        assert_eq!(
            (&now[id]["State"], &now[id]["Node"]),
            (&json!("Running"), &json!(a))
        );
    }
}

/// A worker killed with SIGKILL five times while three tasks run takes its tasks back each time:
/// the same containers keep running, nothing was restarted, no container is left over.
#[actix_rt::test]
async fn a_worker_killed_five_times_keeps_its_containers() {
    if !docker_ready().await {
        return;
    }
    let image = echo_image().await;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("k9-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let _cleanup = Cleanup(name.clone());
    let data = dir.path().join("data");
    let args = [
        "worker",
        "--listen",
        "127.0.0.1:0",
        "--name",
        &name,
        "--runtime",
        "docker",
        "--publish-ip",
        "127.0.0.1",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let mut worker = CubeProcess::spawn(&args, &[]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let ev = event(image, json!({}));
        assert_eq!(post(&format!("{}/tasks", worker.base), &ev).await.0, 201);
        ids.push(ev["Task"]["ID"].as_str().unwrap().to_string());
    }
    let containers = |base: String| {
        let ids = ids.clone();
        async move {
            let mut found = Vec::new();
            for id in &ids {
                let url = format!("{base}/tasks/{id}");
                let detail = wait_task_state(&url, "/Task/State", "Running", SETTLE).await;
                assert_eq!(detail["Task"]["RestartCount"], 0, "{detail}");
                assert_eq!(detail["Container"]["Status"], "Running", "{detail}");
                found.push(detail["Task"]["ContainerID"].as_str().unwrap().to_string());
            }
            found
        }
    };
    let before = containers(worker.base.clone()).await;
    for _ in 0..5 {
        worker.kill();
        worker = CubeProcess::spawn(&args, &[]);
        assert_eq!(containers(worker.base.clone()).await, before);
    }
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=cube.worker={name}"),
        ])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout);
    assert_eq!(all.lines().count(), 3, "containers of {name}: {all}");
}

/// The manager killed with SIGKILL during a burst of 200 submissions to workers in their own
/// processes: every submission it answered 201 is there after its restart and runs exactly once.
#[actix_rt::test]
async fn a_manager_killed_during_a_burst_loses_no_acknowledged_task() {
    let dir = tempfile::tempdir().unwrap();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let data = dir.path().join("manager");
    let manager_args = |listen: &str| {
        vec![
            "manager".to_string(),
            "--listen".into(),
            listen.into(),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
        ]
    };
    let first_args = manager_args("127.0.0.1:0");
    let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
    let mut manager = CubeProcess::spawn(&first_args, &[]);
    let workers: Vec<CubeProcess> = (0..2)
        .map(|i| {
            let name = format!("bw{i}-{suffix}");
            let args = [
                "worker",
                "--listen",
                "127.0.0.1:0",
                "--name",
                &name,
                "--runtime",
                "sim",
                "--store",
                "memory",
                "--cpu",
                "100",
                "--memory",
                "64Gi",
                "--manager",
                &manager.base,
            ];
            CubeProcess::spawn(&args, &[])
        })
        .collect();
    wait_ready_nodes(&manager.base, 2, SETTLE).await;
    let base = manager.base.clone();
    let listen = base.trim_start_matches("http://").to_string();
    let url = format!("{base}/tasks");
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let submissions = (0..200).map(|i| {
        let (url, acked) = (url.clone(), acked.clone());
        async move {
            let ev = event("sim/echo:latest", json!({"Name": format!("burst-{i}")}));
            let id = ev["Task"]["ID"].as_str().unwrap().to_string();
            let client = awc::Client::builder().bearer_auth(TEST_TOKEN).finish();
            match client.post(&url).send_json(&ev).await {
                Ok(r) if r.status().as_u16() == 201 => {
                    acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Some(id)
                }
                _ => None,
            }
        }
    });
    let burst = futures_util::future::join_all(submissions);
    // The kill lands in the middle of the burst: after the first few acknowledgements.
    let kill = async {
        let deadline = Instant::now() + SETTLE;
        while acked.load(std::sync::atomic::Ordering::SeqCst) < 5 && Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        manager.kill();
    };
    let (acknowledged, ()) = futures_util::future::join(burst, kill).await;
    let acknowledged: Vec<String> = acknowledged.into_iter().flatten().collect();
    assert!(
        !acknowledged.is_empty(),
        "nothing was acknowledged before the kill"
    );
    let again = manager_args(&listen);
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    let _manager = CubeProcess::spawn(&again, &[]);
    let deadline = Instant::now() + SETTLE;
    let all = loop {
        let now = manager_tasks(&base).await;
        let stuck: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !now.get(*id).is_some_and(|t| t["State"] == "Running"))
            .collect();
        if stuck.is_empty() {
            break now;
        }
        if Instant::now() > deadline {
            let mut on_workers = Vec::new();
            for worker in &workers {
                for id in &stuck {
                    on_workers.push(get(&format!("{}/tasks/{id}", worker.base)).await.1);
                }
            }
            panic!(
                "not Running: {:#?}\non the workers: {on_workers:#?}",
                stuck.iter().map(|id| &now[*id]).collect::<Vec<_>>(),
            );
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    };
    // Exactly once: each runs on one worker only.
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for worker in &workers {
        let (_, list) = get(&format!("{}/tasks", worker.base)).await;
        for t in list.as_array().unwrap() {
            if t["State"] == "Running" {
                *copies
                    .entry(t["ID"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    for id in &acknowledged {
        assert_eq!(copies.get(id), Some(&1), "{id}: {:?}", all.get(id));
    }
    println!("{} of 200 acknowledged before the kill", acknowledged.len());
}

/// `cube node drain` moves a node's tasks away and keeps new ones off it; `cube node rm` does
/// the same and removes the node from the cluster.
#[actix_rt::test]
async fn drained_and_removed_nodes_give_their_tasks_away() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "up",
        "--runtime",
        "sim",
        "--workers",
        "3",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--scheduler",
        "roundrobin",
    ];
    let up = CubeProcess::spawn(&args, &[]);
    let base = up.base.clone();
    for _ in 0..6 {
        let ev = event("sim/echo:latest", json!({}));
        assert_eq!(post(&format!("{base}/tasks"), &ev).await.0, 201);
    }
    until(&base, "all Running", |t| {
        t.len() == 6 && t.values().all(|t| t["State"] == "Running")
    })
    .await;
    let cube = |args: &[&str]| {
        let out = support::cube_command()
            .args(args)
            .env("CUBE_MANAGER", &base)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = cube(&["node", "drain", "node-1"]);
    assert!(
        out.contains("node node-1 drained: 2 tasks placed elsewhere"),
        "{out}"
    );
    let moved = until(&base, "off node-1", |t| {
        t.values()
            .all(|t| t["State"] == "Running" && t["Node"] != "node-1")
    })
    .await;
    assert_eq!(moved.values().filter(|t| t["Placement"] == 2).count(), 2);
    let (_, nodes) = get(&format!("{base}/nodes")).await;
    let node_1 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["Name"] == "node-1")
        .unwrap();
    assert_eq!(node_1["Eligible"], false, "{node_1}");

    let out = cube(&["node", "rm", "node-2"]);
    assert!(out.contains("node node-2 removed"), "{out}");
    until(&base, "all on node-3", |t| {
        t.values()
            .all(|t| t["State"] == "Running" && t["Node"] == "node-3")
    })
    .await;
    let (_, nodes) = get(&format!("{base}/nodes")).await;
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-1", "node-3"]);
    let (status, body) = delete(&format!("{base}/nodes/node-9")).await;
    assert_eq!(status, 404, "{body}");
}

/// A worker whose data dir was deleted while its containers ran: started again, it adopts them
/// from their labels: the same containers keep running, RestartCount unchanged, none orphaned or
/// duplicated.
#[actix_rt::test]
async fn a_worker_that_lost_its_store_adopts_its_containers() {
    if !docker_ready().await {
        return;
    }
    let image = echo_image().await;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("ad-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let _cleanup = Cleanup(name.clone());
    let settings = ManagerSettings {
        listen: "127.0.0.1:0".into(),
        store: StoreChoice::Lmdb,
        data_dir: dir.path().join("manager"),
        poll_interval_ms: 200,
        token: support::TEST_TOKEN.into(),
        join_token: support::TEST_JOIN_TOKEN.into(),
        ..ManagerSettings::default()
    };
    let manager = cube::serve::start_manager(&settings).await.unwrap();
    actix_rt::spawn(manager.server);
    let base = format!("http://{}", manager.addr);
    let mut first = worker(&name, dir.path(), &base, true);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let ev = event(image, json!({}));
        assert_eq!(post(&format!("{base}/tasks"), &ev).await.0, 201);
        ids.push(ev["Task"]["ID"].as_str().unwrap().to_string());
    }
    let before = until(&base, "Running", |t| {
        ids.iter()
            .all(|id| t.get(id).is_some_and(|t| t["State"] == "Running"))
    })
    .await;
    first.kill();
    std::fs::remove_dir_all(dir.path().join(&name)).unwrap();
    let second = worker(&name, dir.path(), &base, true);
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, on_worker) = get(&format!("{}/tasks", second.base)).await;
        let adopted = ids.iter().all(|id| {
            on_worker.as_array().unwrap().iter().any(|t| {
                t["ID"] == id.as_str()
                    && t["State"] == "Running"
                    && t["ContainerID"] == before[id]["ContainerID"]
                    && t["RestartCount"] == 0
            })
        });
        if adopted {
            break;
        }
        assert!(Instant::now() < deadline, "not adopted: {on_worker}");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    // The manager still has them on the same containers, and nothing was started twice.
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    let now = manager_tasks(&base).await;
    for id in &ids {
        assert_eq!(now[id]["State"], "Running", "{}", now[id]);
        assert_eq!(now[id]["ContainerID"], before[id]["ContainerID"]);
    }
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=cube.worker={name}"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

/// A task whose health check fails on Docker (the echo image's `/healthfail`), with 2 restarts
/// in place and 1 re-placement allowed: restarted twice on its node, then placed on the other
/// node under a new placement, restarted twice there, then Failed saying it was not placed
/// again.
#[actix_rt::test]
async fn an_unhealthy_task_is_restarted_in_place_then_placed_elsewhere_then_fails() {
    if !docker_ready().await {
        return;
    }
    let image = echo_image().await;
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("hc-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let _cleanup = (
        Cleanup(format!("{prefix}-1")),
        Cleanup(format!("{prefix}-2")),
    );
    let config = dir.path().join("cluster.toml");
    let settings = "max_restarts = 2\nrestart_delay_ms = 200\nhealth_interval_ms = 200\n\
                    health_grace_ms = 300\nhealth_failures = 2\nhealth_timeout_ms = 500\n\
                    stop_timeout_secs = 1\n[manager]\nmax_replacements = 1\npoll_interval_ms = 200\n";
    std::fs::write(&config, settings).unwrap();
    let data = dir.path().to_str().unwrap();
    let args = [
        "up",
        "-c",
        config.to_str().unwrap(),
        "--workers",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--node-prefix",
        &prefix,
        "--node-cpu",
        "1",
        "--node-memory",
        "1Gi",
    ];
    let up = CubeProcess::spawn(&args, &[]);
    let ev = event(
        image,
        json!({"HealthCheck": "/healthfail", "ExposedPorts": {"7777/tcp": {}}}),
    );
    let id = ev["Task"]["ID"].as_str().unwrap().to_string();
    assert_eq!(post(&format!("{}/tasks", up.base), &ev).await.0, 201);
    let first = wait_task_state(
        &format!("{}/tasks/{id}", up.base),
        "/State",
        "Running",
        SETTLE,
    )
    .await;
    let first_node = first["Node"].as_str().unwrap().to_string();
    let url = format!("{}/tasks/{id}", up.base);
    let failed = wait_task_state(&url, "/State", "Failed", Duration::from_secs(60)).await;
    assert_eq!(failed["Placement"], 2, "{failed}");
    assert_eq!(failed["Replacements"], 1, "{failed}");
    assert_eq!(failed["RestartCount"], 4, "{failed}");
    assert_ne!(failed["Node"], first_node.as_str(), "{failed}");
    let reason = failed["Reason"].as_str().unwrap();
    assert!(
        reason.contains("unhealthy: GET /healthfail answered 500"),
        "{reason}"
    );
    assert!(reason.contains("not placed again"), "{reason}");
    // Its history shows both placements.
    let (_, history) = get(&format!("{url}/history")).await;
    let placements: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["To"] == "Running")
        .map(|t| t["Placement"].as_u64().unwrap())
        .collect();
    assert!(
        placements.contains(&1) && placements.contains(&2),
        "{history}"
    );
}

/// SIGTERM stops a worker and a manager gracefully: they exit 0 and say what they did.
#[test]
fn sigterm_stops_servers_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let data = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    let worker_data = data("w");
    let manager_data = data("m");
    let servers: [&[&str]; 2] = [
        &[
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--runtime",
            "sim",
            "--name",
            "graceful",
            "--data-dir",
            &worker_data,
        ],
        &[
            "manager",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &manager_data,
        ],
    ];
    for args in servers {
        let mut child = support::cube_command()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(line.contains("listening on"), "{line}");
        // Its signal handlers are installed once its server runs.
        std::thread::sleep(Duration::from_millis(500));
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains("stopped"), "{args:?}: {stderr}");
    }
}

/// With `stop_after_disconnect_ms`, a worker that loses its manager stops and fails its tasks.
#[actix_rt::test]
async fn a_worker_without_its_manager_stops_its_tasks_when_told_to() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, "stop_after_disconnect_ms = 1000\n").unwrap();
    let manager_data = dir.path().join("m");
    let manager_args = [
        "manager",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        manager_data.to_str().unwrap(),
    ];
    let mut manager = CubeProcess::spawn(&manager_args, &[]);
    let data = dir.path().join("w");
    let args = [
        "worker",
        "-c",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--name",
        "cautious",
        "--runtime",
        "sim",
        "--data-dir",
        data.to_str().unwrap(),
        "--manager",
        &manager.base,
    ];
    let worker = CubeProcess::spawn(&args, &[]);
    let ev = event("sim/echo:latest", json!({}));
    let id = ev["Task"]["ID"].as_str().unwrap().to_string();
    let deadline = Instant::now() + SETTLE;
    while post(&format!("{}/tasks", manager.base), &ev).await.0 != 201 {
        assert!(Instant::now() < deadline);
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let on_manager = format!("{}/tasks/{id}", manager.base);
    wait_task_state(&on_manager, "/State", "Running", SETTLE).await;
    let url = format!("{}/tasks/{id}", worker.base);
    // Still Running while the manager syncs.
    actix_rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(&url).await.1["Task"]["State"], "Running");
    manager.kill();
    let failed = wait_task_state(&url, "/Task/State", "Failed", SETTLE).await;
    let reason = failed["Task"]["Reason"].as_str().unwrap();
    assert!(reason.contains("no word from the manager"), "{reason}");
}
