//! Workers on separate hosts: each `cube worker` runs in a network namespace of its own, joined
//! to this host by a veth link, and reaches the manager (on this host) over it. Cutting one
//! host's link makes its node Down and its tasks run elsewhere; restoring it makes that host stop
//! the copies that were replaced.
//!
//! The namespaces and links are made by the test, with unique names, and removed by a guard even
//! when the test fails. Where namespaces cannot be made the test skips loudly, unless
//! `CUBE_REQUIRE_NETNS=1` (set by `.ci/run`): then it fails; it never falls back to the host's
//! network.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cube::config::{ManagerSettings, StoreChoice};
use serde_json::{Value, json};
use support::*;

const SETTLE: Duration = Duration::from_secs(40);

/// A network namespace linked to this host: this host is `gateway` on `link`, the namespace is
/// `address`.
struct Host {
    ns: String,
    link: String,
    gateway: String,
    address: String,
}

/// The test's hosts; dropping them deletes the namespaces (and with them the links).
struct Hosts(Vec<Host>);

impl Drop for Hosts {
    fn drop(&mut self) {
        for host in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", &host.ns]).status();
            let _ = Command::new("ip")
                .args(["link", "del", &host.link])
                .status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes `n` hosts, each its own namespace with a /30 on a veth link to this host.
fn make_hosts(n: usize) -> Result<Hosts, String> {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let subnet = 1 + (uuid::Uuid::new_v4().as_u128() % 200) as usize;
    let mut hosts = Hosts(Vec::new());
    for i in 0..n {
        let host = Host {
            ns: format!("cube-{tag}-{i}"),
            link: format!("cv{tag}{i}"),
            gateway: format!("10.213.{}.1", subnet + i),
            address: format!("10.213.{}.2", subnet + i),
        };
        let peer = format!("{}p", host.link);
        ip(&["netns", "add", &host.ns])?;
        hosts.0.push(host);
        let host = hosts.0.last().unwrap();
        ip(&[
            "link", "add", &host.link, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &host.ns])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", host.gateway),
            "dev",
            &host.link,
        ])?;
        ip(&["link", "set", &host.link, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &host.ns, "ip"];
            all.extend(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{}/30", host.address), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
    }
    Ok(hosts)
}

/// A `cube worker` in `host`'s namespace, joined to the manager at `manager`; killed on drop.
struct RemoteWorker {
    child: Child,
    base: String,
}

impl RemoteWorker {
    fn start(host: &Host, name: &str, manager: &str) -> RemoteWorker {
        let listen = format!("{}:0", host.address);
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.ns,
                env!("CARGO_BIN_EXE_cube"),
                "worker",
            ])
            .args([
                "--listen",
                &listen,
                "--name",
                name,
                "--runtime",
                "sim",
                "--store",
                "memory",
            ])
            .args(["--manager", manager])
            // Plain HTTP between namespaces: what this test checks is the network, not TLS.
            .arg("--allow-insecure-bind")
            .env("CUBE_WORKER_TOKEN", support::TEST_TOKEN)
            .env("CUBE_JOIN_TOKEN", support::TEST_JOIN_TOKEN)
            .env("CUBE_CONFIG_DIR", support::test_config_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting a worker in a namespace");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("the worker said nothing").unwrap();
            if let Some(at) = line.find("http://") {
                break line[at..].split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        RemoteWorker { child, base }
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET that tolerates a peer that does not answer (yet).
async fn try_get(url: &str) -> Option<Value> {
    let client = awc::Client::builder()
        .bearer_auth(support::TEST_TOKEN)
        .timeout(Duration::from_secs(2))
        .finish();
    let mut response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// One host's link is cut: its tasks run on the other host within the grace; restored, the host
/// runs none of the replaced copies.
#[actix_rt::test]
async fn a_host_cut_off_gives_its_tasks_up_and_stops_them_when_back() {
    let hosts = match make_hosts(2) {
        Ok(hosts) => hosts,
        Err(e) if std::env::var("CUBE_REQUIRE_NETNS").as_deref() == Ok("1") => {
            panic!("CUBE_REQUIRE_NETNS=1 but network namespaces cannot be made here: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: network namespaces cannot be made here ({e})");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = ManagerSettings {
        // Reached from both namespaces, through their links' gateways.
        listen: "0.0.0.0:0".into(),
        store: StoreChoice::Lmdb,
        data_dir: dir.path().join("manager"),
        scheduler: "roundrobin".parse().unwrap(),
        poll_interval_ms: 200,
        node_down_after_ms: 2000,
        worker_timeout_ms: 1000,
        token: support::TEST_TOKEN.into(),
        join_token: support::TEST_JOIN_TOKEN.into(),
        allow_insecure_bind: true,
        ..ManagerSettings::default()
    };
    let manager = cube::serve::start_manager(&settings).await.unwrap();
    let port = manager.addr.port();
    actix_rt::spawn(manager.server);
    let base = format!("http://127.0.0.1:{port}");
    let tag = &hosts.0[0].ns[5..11];
    let names: Vec<String> = (0..2).map(|i| format!("h{i}-{tag}")).collect();
    let workers: Vec<RemoteWorker> = hosts
        .0
        .iter()
        .zip(&names)
        .map(|(host, name)| {
            RemoteWorker::start(host, name, &format!("http://{}:{port}", host.gateway))
        })
        .collect();
    wait_ready_nodes(&base, 2, SETTLE).await;
    for _ in 0..4 {
        let ev = event("sim/echo:latest", json!({}));
        assert_eq!(post(&format!("{base}/tasks"), &ev).await.0, 201);
    }
    let deadline = Instant::now() + SETTLE;
    let running = loop {
        let now = manager_tasks(&base).await;
        if now.len() == 4 && now.values().all(|t| t["State"] == "Running") {
            break now;
        }
        assert!(Instant::now() < deadline, "never all Running: {now:#?}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    let victim = running.values().next().unwrap()["Node"]
        .as_str()
        .unwrap()
        .to_string();
    let v = names.iter().position(|n| *n == victim).unwrap();
    let cut: Vec<String> = running
        .values()
        .filter(|t| t["Node"] == victim.as_str())
        .map(|t| t["ID"].as_str().unwrap().to_string())
        .collect();

    // Cut: the host's tasks run on the other host.
    ip(&["link", "set", &hosts.0[v].link, "down"]).unwrap();
    let cut_at = Instant::now();
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = manager_tasks(&base).await;
        let moved = cut
            .iter()
            .all(|id| now[id]["State"] == "Running" && now[id]["Node"] != victim.as_str());
        if moved {
            break;
        }
        assert!(Instant::now() < deadline, "never moved: {now:#?}");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "tasks of the cut-off host running elsewhere after {:?}",
        cut_at.elapsed()
    );

    // Restored: it stops the replaced copies.
    ip(&["link", "set", &hosts.0[v].link, "up"]).unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let its_tasks = try_get(&format!("{}/tasks", workers[v].base)).await;
        if let Some(its) = its_tasks.as_ref().and_then(Value::as_array) {
            let still_running = its
                .iter()
                .filter(|t| cut.iter().any(|id| t["ID"] == id.as_str()))
                .filter(|t| t["State"] == "Running")
                .count();
            if still_running == 0 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the host kept its copies: {its_tasks:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    drop(workers);
    drop(hosts);
}
