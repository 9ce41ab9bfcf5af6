//! The change feed and bounded history, end to end: a container exit reaches the manager through
//! the feed (not a timer), a sync carries only what changed, finished tasks are pruned on the
//! manager and on the worker, removal and listing work over HTTP, and a worker of another
//! protocol version is refused at join.

mod support;

use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::{App, HttpResponse, HttpServer, web};
use cube::config::{ManagerSettings, RuntimeChoice, StoreChoice};
use cube_actors::store::{Count, Store};
use cube_actors::task::StoredEvent;
use serde_json::{Value, json};
use support::*;

const SETTLE: Duration = Duration::from_secs(30);

/// A worker of this process served over HTTP (sim runtime unless told), enrolled with the
/// manager at `manager` when given (and then Ready there); its URL.
async fn http_worker(
    runtime: RuntimeChoice,
    store: StoreChoice,
    dir: &std::path::Path,
    manager: Option<&str>,
) -> String {
    let mut settings = worker_settings(runtime, store, dir);
    settings.name = format!("w-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    settings.manager = manager.unwrap_or_default().to_string();
    let worker = cube::serve::start_worker(&settings).await.unwrap();
    actix_rt::spawn(worker.server);
    if let Some(manager) = manager {
        wait_ready_nodes(manager, 1, SETTLE).await;
    }
    format!("http://{}", worker.addr)
}

/// A manager of this process, which workers enroll with over HTTP; its URL and store.
async fn http_manager(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut ManagerSettings),
) -> (String, Addr<Store>) {
    let mut settings = ManagerSettings {
        listen: "127.0.0.1:0".into(),
        store: StoreChoice::Lmdb,
        data_dir: dir.join("manager"),
        token: support::TEST_TOKEN.into(),
        join_token: support::TEST_JOIN_TOKEN.into(),
        ..ManagerSettings::default()
    };
    edit(&mut settings);
    let node = cube::serve::start_manager(&settings).await.unwrap();
    actix_rt::spawn(node.server);
    (format!("http://{}", node.addr), node.store)
}

/// A task the simulated runtime ends at once with code 0.
fn quick(name: &str) -> Value {
    let mut ev = event(
        "sim/echo:latest",
        json!({"Env": ["EXIT_CODE=0", "EXIT_AFTER_MS=0"]}),
    );
    ev["Task"]["Name"] = json!(name);
    ev
}

/// The bytes of `GET {worker}/sync` from `cursor`, and the reply.
async fn sync(worker: &str, cursor: Option<(&str, u64)>) -> (usize, Value) {
    let mut url = format!("{worker}/sync?wait_ms=3000");
    if let Some((epoch, revision)) = cursor {
        url.push_str(&format!("&epoch={epoch}&revision={revision}"));
    }
    let (status, body) = get(&url).await;
    assert_eq!(status, 200, "{body}");
    (serde_json::to_vec(&body).unwrap().len(), body)
}

/// Waits until `worker` has `n` tasks and none of them is still starting or about to end
/// (`running` of them Running, the rest Completed), so that its feed is at rest.
async fn at_rest(worker: &str, n: usize, running: usize) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, tasks) = get(&format!("{worker}/tasks")).await;
        let tasks = tasks.as_array().unwrap();
        let count = |state: &str| tasks.iter().filter(|t| t["State"] == state).count();
        if tasks.len() == n && count("Running") == running && count("Completed") == n - running {
            return;
        }
        assert!(Instant::now() < deadline, "the worker never settled");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bytes of the first sync after one more task is submitted to `worker`.
async fn one_change_sync(worker: &str, name: &str) -> (usize, Value) {
    let (_, head) = sync(worker, None).await;
    let epoch = head["Epoch"].as_str().unwrap().to_string();
    let revision = head["Revision"].as_u64().unwrap();
    let mut ev = event("sim/echo:latest", json!({}));
    ev["Task"]["Name"] = json!(name);
    assert_eq!(post(&format!("{worker}/tasks"), &ev).await.0, 201);
    sync(worker, Some((&epoch, revision))).await
}

/// A sync after one change costs the same with 2,000 finished tasks behind it as with none,
/// and carries that one change even with 200 tasks running.
#[actix_rt::test]
async fn a_sync_carries_only_what_changed_whatever_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let worker = http_worker(RuntimeChoice::Sim, StoreChoice::Memory, dir.path(), None).await;
    let (empty, reply) = one_change_sync(&worker, "probe-a").await;
    assert_eq!(reply["Tasks"].as_array().unwrap().len(), 1, "{reply}");
    for i in 0..2000 {
        assert_eq!(
            post(&format!("{worker}/tasks"), &quick(&format!("h{i}")))
                .await
                .0,
            201
        );
    }
    at_rest(&worker, 2001, 1).await;
    let (loaded, reply) = one_change_sync(&worker, "probe-b").await;
    assert_eq!(reply["Tasks"].as_array().unwrap().len(), 1, "{reply}");
    let ratio = loaded as f64 / empty as f64;
    assert!((0.9..=1.1).contains(&ratio), "{empty} vs {loaded} bytes");
    for i in 0..200 {
        let mut ev = event("sim/echo:latest", json!({}));
        ev["Task"]["Name"] = json!(format!("r{i}"));
        assert_eq!(post(&format!("{worker}/tasks"), &ev).await.0, 201);
    }
    at_rest(&worker, 2202, 202).await;
    let (_, reply) = one_change_sync(&worker, "probe-c").await;
    let tasks = reply["Tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{reply}");
    assert_eq!(tasks[0]["Name"], "probe-c");
    // A cursor of another epoch gets everything, as a full resync.
    let stale = sync(&worker, Some((&uuid::Uuid::new_v4().to_string(), 3)))
        .await
        .1;
    assert_eq!(stale["Full"], true);
    assert!(stale["Tasks"].as_array().unwrap().len() > 2000);
}

/// With every timer at 10 s, a killed container of a separate `cube worker` process on Docker
/// shows as Failed in the manager's API within 2 s: the feed carried it.
#[actix_rt::test]
async fn a_container_exit_reaches_the_manager_through_the_feed_within_two_seconds() {
    if !docker_ready().await {
        return;
    }
    let image = echo_image().await;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("feed-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let _cleanup = Cleanup(name.clone());
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        "reconcile_interval_ms = 10000\nstats_interval_ms = 10000\n",
    )
    .unwrap();
    let data = dir.path().join("worker");
    let args = [
        "worker",
        "-c",
        config.to_str().unwrap(),
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
        "--cpu",
        "1",
        "--memory",
        "1Gi",
        "--stop-timeout",
        "1",
    ];
    let (base, _manager) = http_manager(dir.path(), |s| {
        s.poll_interval_ms = 10_000;
        s.prune_interval_ms = 10_000;
    })
    .await;
    let mut args = args.to_vec();
    args.extend(["--manager", &base]);
    let _worker = CubeProcess::spawn(&args, &[]);
    wait_ready_nodes(&base, 1, SETTLE).await;
    let ev = event(image, json!({"RestartPolicy": "no"}));
    let id = ev["Task"]["ID"].as_str().unwrap().to_string();
    assert_eq!(post(&format!("{base}/tasks"), &ev).await.0, 201);
    let url = format!("{base}/tasks/{id}");
    let running = wait_task_state(&url, "/State", "Running", SETTLE).await;
    let container = running["ContainerID"].as_str().unwrap().to_string();
    let killed = Instant::now();
    let status = std::process::Command::new("docker")
        .args(["kill", &container])
        .output()
        .unwrap();
    assert!(status.status.success(), "docker kill failed");
    loop {
        let (_, task) = get(&url).await;
        if task["State"] == "Failed" {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(2), "still {task}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "container exit seen by the manager after {:?}",
        killed.elapsed()
    );
}

/// With a retention of 3, finishing 8 tasks leaves at most 3 finished ones on the manager
/// (tasks and events) and in the worker's store.
#[actix_rt::test]
async fn finished_tasks_beyond_the_retention_are_pruned_on_manager_and_worker() {
    let dir = tempfile::tempdir().unwrap();
    let (base, manager) = http_manager(dir.path(), |s| {
        s.retain_finished = 3;
        s.prune_interval_ms = 100;
    })
    .await;
    let worker = http_worker(
        RuntimeChoice::Sim,
        StoreChoice::Lmdb,
        &dir.path().join("w"),
        Some(&base),
    )
    .await;
    let running = event("sim/echo:latest", json!({}));
    assert_eq!(post(&format!("{base}/tasks"), &running).await.0, 201);
    for i in 0..8 {
        assert_eq!(
            post(&format!("{base}/tasks"), &quick(&format!("q{i}")))
                .await
                .0,
            201
        );
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, on_manager) = get(&format!("{base}/tasks")).await;
        let (_, on_worker) = get(&format!("{worker}/tasks")).await;
        let events = manager
            .send(Count::<StoredEvent>::all())
            .await
            .unwrap()
            .unwrap();
        let finished = |list: &Value| {
            list.as_array()
                .unwrap()
                .iter()
                .filter(|t| t["State"] == "Completed")
                .count()
        };
        let settled = on_manager.as_array().unwrap().len() == 4
            && finished(&on_manager) == 3
            && on_worker.as_array().unwrap().len() == 4
            && events == 4;
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "manager: {on_manager}\nworker: {on_worker}\nevents: {events}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A prune of more finished tasks than one slice (200) removes them all, a slice at a time,
/// here and on the node.
#[actix_rt::test]
async fn a_prune_larger_than_a_slice_removes_every_finished_task() {
    let dir = tempfile::tempdir().unwrap();
    // The first timed prune comes after the 450 tasks are in and finished.
    let (base, _manager) = http_manager(dir.path(), |s| {
        s.retain_finished = 0;
        s.prune_interval_ms = 4000;
    })
    .await;
    let worker = http_worker(
        RuntimeChoice::Sim,
        StoreChoice::Memory,
        dir.path(),
        Some(&base),
    )
    .await;
    for i in 0..450 {
        let (status, body) = post(&format!("{base}/tasks"), &quick(&format!("p{i}"))).await;
        assert_eq!(status, 201, "{body}");
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, on_manager) = get(&format!("{base}/tasks")).await;
        let (_, on_worker) = get(&format!("{worker}/tasks")).await;
        let (left, there) = (
            on_manager.as_array().unwrap(),
            on_worker.as_array().unwrap(),
        );
        if left.is_empty() && there.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} left on the manager, {} on the node",
            left.len(),
            there.len()
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `?purge` removes a finished task (409 for a live one), `POST /tasks/prune` all of them, and
/// `GET /tasks` filters by state, node and name and pages with a cursor.
#[actix_rt::test]
async fn purge_prune_and_filtered_pages_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _manager) = http_manager(dir.path(), |_| {}).await;
    let worker = http_worker(
        RuntimeChoice::Sim,
        StoreChoice::Memory,
        dir.path(),
        Some(&base),
    )
    .await;
    let live = event("sim/echo:latest", json!({"Name": "live"}));
    let live_id = live["Task"]["ID"].as_str().unwrap().to_string();
    assert_eq!(post(&format!("{base}/tasks"), &live).await.0, 201);
    let mut done = Vec::new();
    for i in 0..5 {
        let ev = quick(&format!("q{i}"));
        done.push(ev["Task"]["ID"].as_str().unwrap().to_string());
        assert_eq!(post(&format!("{base}/tasks"), &ev).await.0, 201);
    }
    for id in &done {
        wait_task_state(&format!("{base}/tasks/{id}"), "/State", "Completed", SETTLE).await;
    }
    wait_task_state(
        &format!("{base}/tasks/{live_id}"),
        "/State",
        "Running",
        SETTLE,
    )
    .await;

    let (_, completed) = get(&format!("{base}/tasks?state=Completed")).await;
    assert_eq!(completed.as_array().unwrap().len(), 5);
    let (_, named) = get(&format!("{base}/tasks?name=live")).await;
    assert_eq!(named[0]["ID"], live_id.as_str());
    let (_, nowhere) = get(&format!("{base}/tasks?node=nowhere")).await;
    assert_eq!(nowhere, json!([]));
    let (status, bad) = get(&format!("{base}/tasks?state=Sleeping")).await;
    assert_eq!(status, 400, "{bad}");

    // Pages of two, in arrival order, following the cursor header.
    let client = awc::Client::builder().bearer_auth(TEST_TOKEN).finish();
    let mut url = format!("{base}/tasks?limit=2");
    let mut seen = Vec::new();
    loop {
        let mut resp = client.get(&url).send().await.unwrap();
        let page: Vec<Value> = resp.json().await.unwrap();
        seen.extend(page.iter().map(|t| t["ID"].as_str().unwrap().to_string()));
        match resp.headers().get("Cube-Next-Cursor") {
            Some(next) => url = format!("{base}/tasks?limit=2&after={}", next.to_str().unwrap()),
            None => break,
        }
    }
    let mut all = vec![live_id.clone()];
    all.extend(done.iter().cloned());
    assert_eq!(seen, all);

    let (status, refused) = delete(&format!("{base}/tasks/{live_id}?purge=true")).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["Message"]
            .as_str()
            .unwrap()
            .contains("stop it first"),
        "{refused}"
    );
    let (status, removed) = delete(&format!("{base}/tasks/{}?purge=true", done[0])).await;
    assert_eq!((status, &removed["ID"]), (200, &json!(done[0])));
    assert_eq!(get(&format!("{base}/tasks/{}", done[0])).await.0, 404);
    let (status, pruned) = post(&format!("{base}/tasks/prune"), &json!(null)).await;
    assert_eq!((status, pruned), (200, json!({"Removed": 4})));
    let (_, left) = get(&format!("{base}/tasks")).await;
    assert_eq!(left.as_array().unwrap().len(), 1);
    // The worker forgot them too.
    let deadline = Instant::now() + SETTLE;
    while get(&format!("{worker}/tasks"))
        .await
        .1
        .as_array()
        .unwrap()
        .len()
        != 1
    {
        assert!(Instant::now() < deadline, "the worker kept pruned tasks");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker that speaks another protocol version is refused at join, with both versions named.
#[actix_rt::test]
async fn a_worker_of_another_protocol_version_is_refused_at_join() {
    let old = HttpServer::new(|| {
        App::new().route(
            "/node",
            web::get().to(|| async {
                HttpResponse::Ok().json(json!({
                    "Name": "old-worker",
                    "Capacity": {"Cpu": 1.0, "Memory": 1 << 30, "Disk": 0},
                    "Runtime": "sim"
                }))
            }),
        )
    })
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = old.addrs()[0];
    actix_rt::spawn(old.workers(1).run());
    let dir = tempfile::tempdir().unwrap();
    let (base, _manager) = http_manager(dir.path(), |_| {}).await;
    let enrolling = json!({
        "Name": "old-worker",
        "Address": format!("http://{addr}"),
        "NodeKey": "cube-node-0123456789abcdef",
        "Protocol": 1,
    });
    let (status, body) = post(&format!("{base}/nodes"), &enrolling).await;
    assert_eq!(status, 409, "{body}");
    let message = body["Message"].as_str().unwrap();
    assert!(
        message.contains("version 1") && message.contains("version 2"),
        "{message}"
    );
    assert_eq!(get(&format!("{base}/nodes")).await.1, json!([]));
}
