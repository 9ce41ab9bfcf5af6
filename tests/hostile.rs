//! Hostile input and load, against real `cube` processes: a seeded generator of malformed and
//! hostile requests (bodies, paths, query strings, headers, tokens) for every route of the
//! manager and of a worker, and a bounded load of concurrent clients. Neither may get a 500, a
//! panic or a lost or doubled task.
//!
//! The seed is printed; `CUBE_HOSTILE_SEED=N` replays a run.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use serde_json::{Value, json};
use support::*;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A path parameter: sometimes valid, mostly not.
fn path_param(rng: &mut Rng) -> String {
    let long = "a".repeat(5000);
    let options = [
        uuid::Uuid::new_v4().to_string(),
        "not-a-uuid".into(),
        "%00".into(),
        "..%2F..%2Fetc%2Fpasswd".into(),
        long,
        "%D0%BA%D0%BB%D1%8E%D1%87".into(),
        "%F0%9F%99%82".into(),
        "'%20OR%201=1".into(),
        "21b23589-5d2d-4731-b5c9-a97e9832d02".into(),
        "%ff%fe".into(),
    ];
    rng.pick(&options).clone()
}

/// A query string: wrong types, huge numbers, unknown keys, repeated keys, bad escapes.
fn query(rng: &mut Rng) -> &'static str {
    const QUERIES: [&str; 17] = [
        "",
        "?tail=-1",
        "?tail=99999999999999999999999",
        "?limit=abc",
        "?limit=0",
        "?state=Sleeping",
        "?purge=maybe",
        "?purge=true",
        "?unknown=1",
        "?epoch=x&revision=1",
        "?epoch=21b23589-5d2d-4731-b5c9-a97e9832d021",
        "?wait_ms=18446744073709551615",
        "?after=%ff",
        "?tail=1&tail=2",
        "?since=-99999999999999",
        "?placement=-3",
        "?%zz=1",
    ];
    QUERIES[rng.below(QUERIES.len())]
}

/// A body: wrong types, huge numbers, deep nesting, unicode, truncated JSON, unknown fields,
/// random bytes, an oversize one.
fn body(rng: &mut Rng) -> Vec<u8> {
    let task = event("sim/echo:latest", json!({})).to_string();
    let cut = rng.below(task.len());
    let deep = "[".repeat(20_000) + &"]".repeat(20_000);
    let choice = rng.below(16);
    match choice {
        0 => b"{\"State\": \"x\", \"Task\": 5}".to_vec(),
        1 => b"[]".to_vec(),
        2 => b"{\"State\": 1e400, \"Task\": {\"Memory\": 18446744073709551616}}".to_vec(),
        3 => b"{\"State\": 2, \"Task\": {\"Image\": \"x\", \"Cpu\": -1, \"Memory\": -5}}".to_vec(),
        4 => deep.into_bytes(),
        5 => json!({"State": 2, "Task": {"Image": "\u{202e}🙂\u{0000}", "Name": "é\u{200b}"}})
            .to_string()
            .into_bytes(),
        6 => task.as_bytes()[..cut].to_vec(),
        7 => json!({"State": 2, "Task": {"Image": "x"}, "Evil": true})
            .to_string()
            .into_bytes(),
        8 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        9 => Vec::new(),
        10 => vec![b' '; 2 << 20],
        11 => b"null".to_vec(),
        12 => json!({"Name": "x/y", "Address": "ftp://a", "NodeKey": "k", "Protocol": 2})
            .to_string()
            .into_bytes(),
        13 => json!({"Name": "h", "Address": "http://127.0.0.1:9", "NodeKey": "cube-node-0123456789abcdef", "Protocol": 99})
            .to_string()
            .into_bytes(),
        14 => json!({"State": 2, "Task": {"Image": "x", "PortBindings": {"80/tcp": "80"}}})
            .to_string()
            .into_bytes(),
        _ => b"\"\xff\xfe\"".to_vec(),
    }
}

/// A content type.
fn content_type(rng: &mut Rng) -> Option<&'static str> {
    *rng.pick(&[
        Some("application/json"),
        Some("application/json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=utf-16"),
        Some("application/json;;=;"),
        Some("application/xml"),
        None,
    ])
}

/// What one server is: its base URL, routes, the token it takes, and the store to watch.
struct Target {
    role: &'static str,
    base: String,
    routes: Vec<(Method, &'static str)>,
    token: &'static str,
}

/// The IDs of the tasks a server holds (what a refused request must leave alone).
async fn stored(base: &str) -> BTreeSet<String> {
    let (status, list) = get(&format!("{base}/tasks")).await;
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect()
}

/// Sends one request; its status and body.
async fn send(
    method: Method,
    url: &str,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
) -> Result<(u16, Vec<u8>), String> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .disable_redirects()
        .finish();
    let mut request = client.request(method, url);
    for (k, v) in headers {
        request = request.insert_header((k, v));
    }
    let sent = match body {
        Some(body) => request.send_body(body).await,
        None => request.send().await,
    };
    let mut response = sent.map_err(|e| e.to_string())?;
    let streamed = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streamed {
        // The event stream does not end: its head is the answer.
        return Ok((response.status().as_u16(), Vec::new()));
    }
    let bytes = response
        .body()
        .limit(16 << 20)
        .await
        .map_err(|e| e.to_string())?;
    Ok((response.status().as_u16(), bytes.to_vec()))
}

/// Every route of a manager and a worker, 60 hostile requests each with and without a valid
/// token: never a 500 (a 502/503 only with a message naming the worker, node or engine), always
/// a JSON error body, the servers keep answering, and a refused request changes no store.
#[actix_rt::test]
async fn hostile_requests_get_clear_refusals_and_change_nothing() {
    let seed = std::env::var("CUBE_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00c0_ffee_u64);
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let mut up = CubeProcess::spawn(
        &[
            "up",
            "--runtime",
            "sim",
            "--workers",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let worker_dir = dir.path().join("standalone");
    let mut worker = CubeProcess::spawn(
        &[
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--name",
            &format!(
                "hostile-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            ),
            "--runtime",
            "sim",
            "--data-dir",
            worker_dir.to_str().unwrap(),
            "--manager",
            &up.base,
        ],
        &[],
    );
    wait_ready_nodes(&up.base, 2, Duration::from_secs(20)).await;
    // Something to find: a task on each.
    let (status, _) = post(
        &format!("{}/tasks", up.base),
        &event("sim/echo:latest", json!({})),
    )
    .await;
    assert_eq!(status, 201);

    let targets = [
        Target {
            role: "manager",
            base: up.base.clone(),
            routes: cube::api::manager::route_list(),
            token: TEST_TOKEN,
        },
        Target {
            role: "worker",
            base: worker.base.clone(),
            routes: cube::api::worker::route_list(),
            token: TEST_TOKEN,
        },
    ];
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_route: BTreeMap<String, usize> = BTreeMap::new();
    for target in &targets {
        for (method, pattern) in &target.routes {
            for case in 0..120 {
                let with_token = case % 2 == 0;
                let mut path = pattern.to_string();
                while let Some(start) = path.find('{') {
                    let end = path[start..].find('}').unwrap() + start;
                    path.replace_range(start..=end, &path_param(&mut rng));
                }
                let url = format!("{}{path}{}", target.base, query(&mut rng));
                let mut headers = Vec::new();
                let token = match (with_token, rng.below(4)) {
                    (true, _) => Some(target.token.to_string()),
                    (false, 0) => None,
                    (false, 1) => Some("cube-admin-wrong-0123456789".into()),
                    (false, 2) => Some(TEST_JOIN_TOKEN.into()),
                    (false, _) => Some(format!("{}x", target.token)),
                };
                if let Some(token) = token {
                    let scheme = if rng.below(10) == 0 {
                        "Basic"
                    } else {
                        "Bearer"
                    };
                    headers.push(("Authorization", format!("{scheme} {token}")));
                }
                if rng.below(8) == 0 {
                    headers.push(("Origin", "http://evil.example".into()));
                }
                let send_body =
                    matches!(*method, Method::POST | Method::DELETE) || rng.below(4) == 0;
                let payload = send_body.then(|| body(&mut rng));
                if payload.is_some()
                    && let Some(ct) = content_type(&mut rng)
                {
                    headers.push(("Content-Type", ct.to_string()));
                }
                let before = stored(&target.base).await;
                let what = format!(
                    "{} {method} {url:.200} (case {case}, token {with_token})",
                    target.role
                );
                let (status, bytes) = send(method.clone(), &url, headers, payload)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
                let text = String::from_utf8_lossy(&bytes);
                assert_ne!(status, 500, "{what}: {text}");
                assert!(
                    status < 500 || status == 502 || status == 503,
                    "{what}: {status} {text}"
                );
                if status >= 400 {
                    let error: Value = serde_json::from_slice(&bytes)
                        .unwrap_or_else(|_| panic!("{what}: {status} without a JSON body: {text}"));
                    assert_eq!(error["HTTPStatusCode"], status, "{what}: {error}");
                    let message = error["Message"].as_str().unwrap_or_default();
                    assert!(!message.is_empty(), "{what}: no message");
                    assert!(
                        !message.contains(TEST_TOKEN),
                        "{what}: the token in an error"
                    );
                    if status >= 502 {
                        assert!(
                            ["worker", "node", "engine", "Docker"]
                                .iter()
                                .any(|w| message.contains(w)),
                            "{what}: a {status} must name what is unreachable: {message}"
                        );
                    }
                    assert_eq!(
                        stored(&target.base).await,
                        before,
                        "{what}: a refused request changed the store"
                    );
                }
                *counts
                    .entry(format!("{} {status}", target.role))
                    .or_default() += 1;
                *per_route
                    .entry(format!("{} {method} {pattern}", target.role))
                    .or_default() += 1;
            }
            for t in &targets {
                let (status, _) = get(&format!("{}/health", t.base)).await;
                assert_eq!(
                    status, 200,
                    "{} stopped answering after {method} {pattern}",
                    t.role
                );
            }
        }
    }
    assert!(
        up.child.try_wait().unwrap().is_none(),
        "the manager process died"
    );
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker process died"
    );
    let total: usize = counts.values().sum();
    let mut figures = format!(
        "hostile corpus (seed {seed}): {total} requests over {} routes of a manager and a worker, half with a valid token; no 500, no panic, no store changed by a refusal\n",
        per_route.len()
    );
    for (route, n) in &per_route {
        assert!(*n >= 100, "{route}: {n} cases");
        figures.push_str(&format!("  {n:>4}  {route}\n"));
    }
    for (status, n) in &counts {
        figures.push_str(&format!("  {n:>4}  answered {status}\n"));
    }
    report("hostile", &figures);
    up.kill();
    worker.kill();
}

/// Concurrent clients submitting and reading for a fixed time against an all-in-one cluster on
/// the simulated runtime: the only refusal is 429 with Retry-After (the designed backpressure),
/// and every task answered 201 is stored exactly once (and none that was not).
#[actix_rt::test]
async fn a_bounded_load_gets_only_backpressure_and_stores_each_task_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, "[manager]\nmax_in_flight = 8\n").unwrap();
    let up = CubeProcess::spawn(
        &[
            "up",
            "-c",
            config.to_str().unwrap(),
            "--runtime",
            "sim",
            "--workers",
            "3",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    wait_ready_nodes(&up.base, 3, Duration::from_secs(20)).await;
    const CLIENTS: usize = 32;
    let run_for = Duration::from_secs(3);
    let accepted = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (busy, reads, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::<String>::new())),
    );
    let deadline = Instant::now() + run_for;
    let clients = (0..CLIENTS).map(|c| {
        let (base, accepted, busy, reads, other) = (
            up.base.clone(),
            accepted.clone(),
            busy.clone(),
            reads.clone(),
            other.clone(),
        );
        async move {
            let client = awc::Client::builder()
                .bearer_auth(TEST_TOKEN)
                .timeout(Duration::from_secs(30))
                .finish();
            let mut i = 0;
            while Instant::now() < deadline {
                i += 1;
                let ev = event("sim/echo:latest", json!({"Name": format!("load-{c}-{i}")}));
                let id = ev["Task"]["ID"].as_str().unwrap().to_string();
                match client.post(format!("{base}/tasks")).send_json(&ev).await {
                    Ok(r) if r.status().as_u16() == 201 => {
                        accepted.lock().unwrap().push(id.clone())
                    }
                    Ok(r) if r.status().as_u16() == 429 => {
                        assert!(
                            r.headers().contains_key("retry-after"),
                            "429 without Retry-After"
                        );
                        busy.fetch_add(1, Ordering::Relaxed);
                        actix_rt::time::sleep(Duration::from_millis(5)).await;
                    }
                    Ok(r) => other
                        .lock()
                        .unwrap()
                        .push(format!("POST answered {}", r.status())),
                    Err(e) => other.lock().unwrap().push(format!("POST failed: {e}")),
                }
                let read = if i % 2 == 0 {
                    format!("{base}/tasks/{id}")
                } else {
                    format!("{base}/tasks?limit=20")
                };
                match client.get(&read).send().await {
                    Ok(mut r) if r.status().is_success() => {
                        let _ = r.body().limit(16 << 20).await;
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    // The task of a refused submission does not exist.
                    Ok(r) if r.status().as_u16() == 404 && i % 2 == 0 => {}
                    Ok(r) => other
                        .lock()
                        .unwrap()
                        .push(format!("GET answered {}", r.status())),
                    Err(e) => other.lock().unwrap().push(format!("GET failed: {e}")),
                }
            }
        }
    });
    futures_util::future::join_all(clients).await;
    let errors = other.lock().unwrap().clone();
    assert!(errors.is_empty(), "errors other than 429: {errors:?}");
    let accepted = accepted.lock().unwrap().clone();
    let listed = manager_tasks(&up.base).await;
    let (_, all) = get(&format!("{}/tasks", up.base)).await;
    let all = all.as_array().unwrap();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for t in all {
        *seen.entry(t["ID"].as_str().unwrap()).or_default() += 1;
    }
    for id in &accepted {
        assert_eq!(seen.get(id.as_str()), Some(&1), "task {id} answered 201");
    }
    assert_eq!(listed.len(), accepted.len(), "tasks stored = 201 answers");
    report(
        "load",
        &format!(
            "load: {CLIENTS} clients for {run_for:?} against cube up (sim, 3 nodes, max_in_flight 8): {} submissions accepted ({:.0}/s) and each stored once, {} refused with 429 + Retry-After, {} reads, 0 other errors",
            accepted.len(),
            accepted.len() as f64 / run_for.as_secs_f64(),
            busy.load(Ordering::Relaxed),
            reads.load(Ordering::Relaxed),
        ),
    );
}
