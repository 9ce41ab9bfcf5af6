//! Security by default: tokens on every route, no use from a browser page of another origin,
//! trusted workers (a credential of their own, a name bound to their identity) and TLS end to
//! end between the CLI, the manager and a worker in its own process.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use cube::config::{ManagerSettings, RuntimeChoice, StoreChoice};
use cube_actors::manager::Enrollment;
use cube_actors::store::List;
use serde_json::{Value, json};
use support::*;

const SETTLE: Duration = Duration::from_secs(20);

/// A manager of this process on loopback (sim nodes join it over HTTP); its URL and node.
async fn manager(dir: &Path, edit: impl FnOnce(&mut ManagerSettings)) -> cube::serve::ManagerNode {
    let mut settings = ManagerSettings {
        listen: "127.0.0.1:0".into(),
        store: StoreChoice::Lmdb,
        data_dir: dir.join("manager"),
        poll_interval_ms: 200,
        token: TEST_TOKEN.into(),
        join_token: TEST_JOIN_TOKEN.into(),
        ..ManagerSettings::default()
    };
    edit(&mut settings);
    cube::serve::start_manager(&settings).await.unwrap()
}

/// A request with exactly these headers (no token unless given); status, headers and body.
async fn raw(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, awc::http::header::HeaderMap, Value) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut request = client.request(method, url);
    for (k, v) in headers {
        request = request.insert_header((*k, *v));
    }
    let sent = match body {
        Some(body) => request.send_body(body.to_string()).await,
        None => request.send().await,
    };
    let mut response = sent.expect("the server answers");
    let bytes = response.body().limit(1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (response.status().as_u16(), response.headers().clone(), body)
}

/// A concrete path for a route's pattern.
fn concrete(path: &str) -> String {
    path.replace("{id}", "21b23589-5d2d-4731-b5c9-a97e9832d021")
        .replace("{name}", "nobody")
        .replace("{file}", "app.js")
}

/// Every route of the manager and of the worker, as their routers list them, answers 401 with
/// no token and with a wrong one (with a JSON body and `WWW-Authenticate`), except
/// `GET /health` and the dashboard's files (which hold no data, and forbid other origins' frames
/// and scripts); a join token opens only `POST /nodes`, and a worker takes neither the admin
/// nor the join token of the cluster.
#[actix_rt::test]
async fn every_route_but_health_answers_401_without_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = manager(dir.path(), |_| {}).await;
    actix_rt::spawn(node.server);
    let manager_base = format!("http://{}", node.addr);
    let mut settings = worker_settings(RuntimeChoice::Sim, StoreChoice::Memory, dir.path());
    settings.token = String::new();
    let worker = cube::serve::start_worker(&settings).await.unwrap();
    actix_rt::spawn(worker.server);
    let worker_base = format!("http://{}", worker.addr);

    let servers = [
        ("manager", &manager_base, cube::api::manager::route_list()),
        ("worker", &worker_base, cube::api::worker::route_list()),
    ];
    let mut checked = 0;
    for (role, base, routes) in servers {
        assert!(routes.len() >= 9, "{role} routes: {routes:?}");
        for (method, path) in routes {
            let url = format!("{base}{}", concrete(path));
            if method == Method::GET && path == "/health" {
                let (status, _, _) = raw(method, &url, &[], None).await;
                assert_eq!(status, 200, "{role} GET /health is open");
                continue;
            }
            if method == Method::GET && (path == "/" || path.starts_with("/ui/")) {
                let (status, headers, _) = raw(method, &url, &[], None).await;
                assert_eq!(status, 200, "{role} GET {path} is open");
                let policy = headers
                    .get("content-security-policy")
                    .unwrap()
                    .to_str()
                    .unwrap();
                assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
                assert!(policy.contains("script-src 'self'"), "{policy}");
                continue;
            }
            let wrong = "Bearer cube-admin-0000000000000000000000";
            let admin = format!("Bearer {TEST_TOKEN}");
            let join = format!("Bearer {TEST_JOIN_TOKEN}");
            let mut refused = vec![("no token", vec![]), ("a wrong token", vec![wrong])];
            if role == "worker" {
                refused.push(("the admin token", vec![admin.as_str()]));
                refused.push(("the join token", vec![join.as_str()]));
            }
            for (what, token) in refused {
                let headers: Vec<(&str, &str)> =
                    token.iter().map(|t| ("Authorization", *t)).collect();
                let (status, headers, body) = raw(method.clone(), &url, &headers, None).await;
                assert_eq!(status, 401, "{role} {method} {path} with {what}: {body}");
                assert_eq!(body["HTTPStatusCode"], 401, "{body}");
                assert!(headers.contains_key("www-authenticate"));
                checked += 1;
            }
            if role == "manager" && !(method == Method::POST && path == "/nodes") {
                let headers = [("Authorization", join.as_str())];
                let (status, _, body) = raw(method.clone(), &url, &headers, None).await;
                assert_eq!(status, 403, "{method} {path} with the join token: {body}");
            }
        }
    }
    println!("{checked} refusals checked");
}

/// A `text/plain` or form POST is refused with 415 and a cross-origin one with 403, even with
/// the token, and none of them stores a task; the same task sent as JSON from the same origin is
/// accepted.
#[actix_rt::test]
async fn browsers_cannot_be_used_against_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let node = manager(dir.path(), |_| {}).await;
    actix_rt::spawn(node.server);
    let base = format!("http://{}", node.addr);
    let url = format!("{base}/tasks");
    let task = event("sim/echo:latest", json!({})).to_string();
    let bearer = format!("Bearer {TEST_TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let json_type = ("Content-Type", "application/json");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);
    let cases: [Case; 5] = [
        (
            "text/plain",
            vec![auth, ("Content-Type", "text/plain")],
            415,
        ),
        (
            "a form",
            vec![auth, ("Content-Type", "application/x-www-form-urlencoded")],
            415,
        ),
        ("no content type", vec![auth], 415),
        (
            "another origin",
            vec![auth, json_type, ("Origin", "http://evil.example")],
            403,
        ),
        (
            "a cross-site fetch",
            vec![auth, json_type, ("Sec-Fetch-Site", "cross-site")],
            403,
        ),
    ];
    for (what, headers, expected) in cases {
        let (status, _, body) = raw(Method::POST, &url, &headers, Some(&task)).await;
        assert_eq!(status, expected, "{what}: {body}");
    }
    assert_eq!(
        get(&url).await.1,
        json!([]),
        "a refused request stored nothing"
    );
    let origin = base.clone();
    let same = [auth, json_type, ("Origin", origin.as_str())];
    let (status, _, body) = raw(Method::POST, &url, &same, Some(&task)).await;
    assert_eq!(status, 201, "{body}");
}

/// `cube` run from another directory, by the user who started `cube up`, finds the admin token
/// with none given; with another user's (empty) directory it is refused with a hint.
#[test]
fn the_cli_finds_the_token_from_any_directory() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config_dir = home.path().to_str().unwrap();
    let up = CubeProcess::spawn(
        &[
            "up",
            "--runtime",
            "sim",
            "--workers",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[("CUBE_CONFIG_DIR", config_dir), ("CUBE_TOKEN", "")],
    );
    let cli = |dir: &str, args: &[&str]| -> Output {
        support::cube_command()
            .args(args)
            .args(["--manager", &up.base])
            .current_dir(elsewhere.path())
            .env("CUBE_CONFIG_DIR", dir)
            .env_remove("CUBE_TOKEN")
            .output()
            .unwrap()
    };
    let run = cli(
        config_dir,
        &["run", "--image", "sim/echo:latest", "--name", "found"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let status = cli(config_dir, &["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("found"));
    let token = cli(config_dir, &["token"]);
    let printed = String::from_utf8_lossy(&token.stdout).trim().to_string();
    let kept = std::fs::read_to_string(data.path().join("manager/admin.token")).unwrap();
    assert_eq!(
        printed,
        kept.trim(),
        "cube token prints the data dir's token"
    );

    let stranger = tempfile::tempdir().unwrap();
    let refused = cli(stranger.path().to_str().unwrap(), &["status"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("no token for this manager here"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&printed),
        "the token is never printed in an error"
    );
}

/// Two enrolled workers: the credential the manager calls one with is refused by the other,
/// which takes its own; the manager keeps each credential in its store, the workers only its
/// hash.
#[actix_rt::test]
async fn one_workers_credential_opens_no_other_worker() {
    let dir = tempfile::tempdir().unwrap();
    let node = manager(dir.path(), |_| {}).await;
    let store = node.store.clone();
    actix_rt::spawn(node.server);
    let base = format!("http://{}", node.addr);
    let mut workers = Vec::new();
    for name in ["cred-a", "cred-b"] {
        let mut settings = worker_settings(
            RuntimeChoice::Sim,
            StoreChoice::Lmdb,
            &dir.path().join(name),
        );
        settings.name = name.into();
        settings.manager = base.clone();
        let worker = cube::serve::start_worker(&settings).await.unwrap();
        actix_rt::spawn(worker.server);
        workers.push((settings.data_dir.clone(), format!("http://{}", worker.addr)));
    }
    wait_ready_nodes(&base, 2, SETTLE).await;
    let enrollments: Vec<Enrollment> = store.send(List::all()).await.unwrap().unwrap();
    let credential = |name: &str| {
        let e = enrollments.iter().find(|e| e.name == name).unwrap();
        format!("Bearer {}", e.credential.expose())
    };
    let b_tasks = format!("{}/tasks", workers[1].1);
    let (a, b) = (credential("cred-a"), credential("cred-b"));
    let (status, _, _) = raw(
        Method::GET,
        &b_tasks,
        &[("Authorization", a.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 401, "worker b refuses worker a's credential");
    let (status, _, body) = raw(
        Method::GET,
        &b_tasks,
        &[("Authorization", b.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 200, "worker b takes its own: {body}");
    let kept = std::fs::read_to_string(workers[1].0.join("manager.sha256")).unwrap();
    assert!(!kept.contains(b.trim_start_matches("Bearer ")));
    assert_eq!(kept.trim().len(), 64, "the worker keeps the hash only");
}

/// A second worker under an enrolled node's name is refused (its identity differs); started
/// with `--replace` (and the join token) it takes the name over, and the manager calls it at
/// its new address.
#[actix_rt::test]
async fn a_name_is_kept_by_its_identity_and_replace_takes_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = manager(dir.path(), |_| {}).await;
    actix_rt::spawn(node.server);
    let base = format!("http://{}", node.addr);
    let name = format!("dup-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let worker = |data: &str, extra: &[&str]| {
        let data = dir.path().join(data);
        let mut args = vec![
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--name",
            &name,
            "--runtime",
            "sim",
            "--manager",
            &base,
            "--data-dir",
            data.to_str().unwrap(),
        ];
        args.extend(extra);
        CubeProcess::spawn(&args, &[])
    };
    let address_of = |name: String| {
        let base = base.clone();
        async move {
            let (_, node) = get(&format!("{base}/nodes/{name}")).await;
            (
                node["Address"].as_str().unwrap_or_default().to_string(),
                node["Status"].clone(),
            )
        }
    };
    let mut first = worker("first", &[]);
    wait_ready_nodes(&base, 1, SETTLE).await;

    // The API refuses another identity under that name, and says how to replace it.
    let claim = json!({
        "Name": name,
        "Address": "http://127.0.0.1:9",
        "NodeKey": "cube-node-someone-else-0123456789",
        "Protocol": 2,
    });
    let join = format!("Bearer {TEST_JOIN_TOKEN}");
    let headers = [
        ("Authorization", join.as_str()),
        ("Content-Type", "application/json"),
    ];
    let url = format!("{base}/nodes");
    let (status, _, body) = raw(Method::POST, &url, &headers, Some(&claim.to_string())).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["Message"].as_str().unwrap().contains("--replace"),
        "{body}"
    );

    // A second process (a fresh data dir: another identity) does not get the name...
    first.kill();
    let mut second = worker("second", &[]);
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(address_of(name.clone()).await.0, first.base);
    second.kill();
    // ... until it is started with --replace.
    let third = worker("second", &["--replace"]);
    let deadline = Instant::now() + SETTLE;
    loop {
        let (address, status) = address_of(name.clone()).await;
        if address == third.base && status == "Ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never replaced: {address} {status}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `cube tls init` output, a manager and a worker process on HTTPS: the worker enrolls over
/// TLS, the manager calls it over TLS, the CLI runs a task over TLS. A certificate of a foreign
/// CA, or of this CA for another name, is refused by the manager (for a worker) and by the CLI
/// (for a manager).
#[actix_rt::test]
async fn tls_end_to_end_and_foreign_or_misnamed_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let foreign = dir.path().join("foreign");
    let init = |dir: &Path, certs: &[&str]| {
        let mut cmd = support::cube_command();
        cmd.args(["tls", "init", "--dir", dir.to_str().unwrap()]);
        for c in certs {
            cmd.args(["--cert", c]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    init(
        &tls,
        &[
            "manager=127.0.0.1,localhost",
            "w1=127.0.0.1",
            "misnamed=10.9.9.9",
        ],
    );
    init(&foreign, &["w2=127.0.0.1", "manager=127.0.0.1"]);
    let file = |dir: &Path, name: &str| dir.join(name).to_str().unwrap().to_string();

    let manager = CubeProcess::spawn(
        &[
            "manager",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--tls-cert",
            &file(&tls, "manager.pem"),
            "--tls-key",
            &file(&tls, "manager.key"),
            "--tls-ca",
            &file(&tls, "ca.pem"),
        ],
        &[],
    );
    assert!(
        manager.base.starts_with("https://127.0.0.1:"),
        "{}",
        manager.base
    );
    let _worker = CubeProcess::spawn(
        &[
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "tls-w1",
            "--runtime",
            "sim",
            "--store",
            "memory",
            "--tls-cert",
            &file(&tls, "w1.pem"),
            "--tls-key",
            &file(&tls, "w1.key"),
            "--tls-ca",
            &file(&tls, "ca.pem"),
            "--manager",
            &manager.base,
        ],
        &[],
    );
    let cli = |ca: &str, args: &[&str]| -> Output {
        support::cube_command()
            .args(args)
            .args(["--manager", &manager.base, "--ca", ca])
            .output()
            .unwrap()
    };
    let ca = file(&tls, "ca.pem");
    let deadline = Instant::now() + SETTLE;
    loop {
        let out = cli(&ca, &["node", "-o", "json"]);
        let nodes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if nodes[0]["Status"] == "Ready" {
            assert!(
                nodes[0]["Address"]
                    .as_str()
                    .unwrap()
                    .starts_with("https://")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the TLS worker never became Ready: {nodes}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = cli(
        &ca,
        &[
            "run",
            "--image",
            "sim/echo:latest",
            "--name",
            "over-tls",
            "--wait",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("is running on node tls-w1"));

    // The CLI refuses a manager whose certificate comes from another CA.
    let out = cli(&file(&foreign, "ca.pem"), &["status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");

    // The manager refuses workers with a foreign certificate or one for another name: it
    // cannot reach them at the address they enroll with.
    for (what, cert) in [
        ("foreign", file(&foreign, "w2")),
        ("misnamed", file(&tls, "misnamed")),
    ] {
        let mut settings = worker_settings(RuntimeChoice::Sim, StoreChoice::Memory, dir.path());
        settings.tls_cert = format!("{cert}.pem").into();
        settings.tls_key = format!("{cert}.key").into();
        let bad = cube::serve::start_worker(&settings).await.unwrap();
        actix_rt::spawn(bad.server);
        let claim = json!({
            "Name": settings.name,
            "Address": bad.url,
            "NodeKey": "cube-node-0123456789abcdef",
            "Protocol": 2,
        });
        let out = enroll_over_tls(&manager.base, &ca, &claim).await;
        assert_eq!(out.0, 502, "{what}: {}", out.1);
        assert!(
            out.1["Message"].as_str().unwrap().contains("cannot reach"),
            "{what}: {}",
            out.1
        );
    }

    // And the CLI refuses a manager whose certificate is for another name.
    let other = CubeProcess::spawn(
        &[
            "manager",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
            "--tls-cert",
            &file(&tls, "misnamed.pem"),
            "--tls-key",
            &file(&tls, "misnamed.key"),
        ],
        &[],
    );
    let out = support::cube_command()
        .args(["status", "--manager", &other.base, "--ca", &ca])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
}

/// `POST /nodes` to an HTTPS manager (the CA given), as a worker enrolling would.
async fn enroll_over_tls(manager: &str, ca: &str, claim: &Value) -> (u16, Value) {
    let tls = cube_actors::tls::ClientTls::from_ca_file(Path::new(ca)).unwrap();
    let client = cube_actors::tls::http_client(Some(&tls), Some(Duration::from_secs(20)));
    let mut response = client
        .post(format!("{manager}/nodes"))
        .insert_header(("Authorization", format!("Bearer {TEST_JOIN_TOKEN}")))
        .send_json(claim)
        .await
        .unwrap();
    let body = response.json().await.unwrap_or(Value::Null);
    (response.status().as_u16(), body)
}

/// The manager follows no redirect when it checks an enrolling worker, and never passes on the
/// body of an answer that is not a Cube worker's: a fake worker that redirects to a real one is
/// refused, and one answering a page of its own does not get it echoed.
#[actix_rt::test]
async fn the_manager_follows_no_redirect_and_echoes_no_remote_body() {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let dir = tempfile::tempdir().unwrap();
    let node = manager(dir.path(), |_| {}).await;
    actix_rt::spawn(node.server);
    let base = format!("http://{}", node.addr);
    let real = TestWorker::start(RuntimeChoice::Sim).await;
    let real_health = format!("{}/health", real.base);
    let fake = HttpServer::new(move || {
        let target = real_health.clone();
        App::new()
            .route(
                "/redirect/health",
                web::get().to(move || {
                    let target = target.clone();
                    async move {
                        HttpResponse::TemporaryRedirect()
                            .insert_header(("Location", target))
                            .finish()
                    }
                }),
            )
            .route(
                "/page/health",
                web::get()
                    .to(|| async { HttpResponse::Ok().body("<html>SECRET-INTERNAL-PAGE</html>") }),
            )
    })
    .bind("127.0.0.1:0")
    .unwrap();
    let fake_addr = fake.addrs()[0];
    actix_rt::spawn(fake.workers(1).run());
    for path in ["redirect", "page"] {
        let claim = json!({
            "Name": real.name,
            "Address": format!("http://{fake_addr}/{path}"),
            "NodeKey": "cube-node-0123456789abcdef",
            "Protocol": 2,
        });
        let (status, body) = post(&format!("{base}/nodes"), &claim).await;
        assert_eq!(status, 502, "{path}: {body}");
        assert!(!body.to_string().contains("SECRET"), "{path}: {body}");
    }
    assert_eq!(get(&format!("{base}/nodes")).await.1, json!([]));
}

/// A worker refuses to enroll with a manager on another machine over plain HTTP (the join token
/// and its identity would cross the network in the clear), unless forced.
#[actix_rt::test]
async fn a_worker_does_not_enroll_over_plain_http_across_machines() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = worker_settings(RuntimeChoice::Sim, StoreChoice::Memory, dir.path());
    settings.manager = "http://10.9.9.9:5555".into();
    let refused = cube::serve::start_worker(&settings).await.err().unwrap();
    assert!(format!("{refused:#}").contains("plain HTTP"), "{refused:#}");
    settings.allow_insecure_bind = true;
    assert!(cube::serve::start_worker(&settings).await.is_ok());
}

/// A drained node that enrolls again (its worker restarted) stays drained: a worker does not
/// undo what the admin decided.
#[actix_rt::test]
async fn a_drained_node_stays_drained_when_it_enrolls_again() {
    let dir = tempfile::tempdir().unwrap();
    let node = manager(dir.path(), |_| {}).await;
    actix_rt::spawn(node.server);
    let base = format!("http://{}", node.addr);
    let data = dir.path().join("w");
    let args = [
        "worker",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "drained",
        "--runtime",
        "sim",
        "--data-dir",
        data.to_str().unwrap(),
        "--manager",
        &base,
    ];
    let mut first = CubeProcess::spawn(&args, &[]);
    wait_ready_nodes(&base, 1, SETTLE).await;
    let (status, body) = post(&format!("{base}/nodes/drained/drain"), &Value::Null).await;
    assert_eq!(status, 200, "{body}");
    first.kill();
    let second = CubeProcess::spawn(&args, &[]);
    let deadline = Instant::now() + SETTLE;
    loop {
        let (_, node) = get(&format!("{base}/nodes/drained")).await;
        if node["Address"] == second.base.as_str() && node["Status"] == "Ready" {
            assert_eq!(node["Eligible"], false, "{node}");
            break;
        }
        assert!(Instant::now() < deadline, "never enrolled again: {node}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}
