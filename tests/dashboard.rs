//! The dashboard in a real browser: headless Chromium driven through WebDriver (chromedriver)
//! by the small client below. Skips loudly when Chromium or chromedriver is missing, unless
//! `CUBE_REQUIRE_BROWSER=1` (as `.ci/run` sets, after installing Debian's `chromium` and
//! `chromium-driver`).

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cube::config::{ClusterSettings, ManagerSettings, RuntimeChoice, Size, StoreChoice};
use serde_json::{Value, json};
use support::*;

/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: awc::Client,
}

/// Finds a program on the PATH.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (with a loud message) when
    /// they are not installed and the browser is not required.
    async fn start() -> Option<Browser> {
        let (Some(driver), Some(chromium)) = (which("chromedriver"), which("chromium")) else {
            if std::env::var("CUBE_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                panic!("CUBE_REQUIRE_BROWSER=1 but chromium or chromedriver is not installed");
            }
            eprintln!(
                "!!! SKIPPED the dashboard browser test: install chromium and chromium-driver (Debian) to run it"
            );
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
        };
        // As root (in CI containers) Chromium needs --no-sandbox.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        }}});
        let session = browser.call("POST", "/session", Some(capabilities)).await;
        browser.session = session["sessionId"].as_str().unwrap().to_string();
        Some(browser)
    }

    /// A WebDriver command; its `value`.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        };
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .expect("chromedriver answers");
        let answer: Value = response.json().limit(64 << 20).await.unwrap();
        assert!(
            response.status().is_success(),
            "WebDriver {method} {path}: {answer}"
        );
        answer["value"].clone()
    }

    async fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    async fn open(&self, url: &str) {
        self.session("POST", "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .session(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.session(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.session(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Runs `script` (a function body) in the page; its result.
    async fn eval(&self, script: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Waits until `script` returns `true` in the page.
    async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.eval(script).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let page = self.eval("return document.body.innerText").await;
                panic!(
                    "the page never showed {what}; it shows:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, path: &Path) {
        let png = self.session("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The page's requests so far, by `METHOD route`, from the manager's own counts (the test's
/// scrapes of `/metrics` left out).
async fn page_requests(base: &str) -> std::collections::BTreeMap<String, u64> {
    let (_, text) = get(&format!("{base}/metrics")).await;
    let mut counts = std::collections::BTreeMap::new();
    for line in text.as_str().unwrap().lines() {
        let Some(rest) = line.strip_prefix("cube_http_requests_total{method=\"") else {
            continue;
        };
        let (method, rest) = rest.split_once("\",route=\"").unwrap();
        let (route, rest) = rest.split_once("\",status=").unwrap();
        let n: u64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        if route != "/metrics" {
            *counts.entry(format!("{method} {route}")).or_default() += n;
        }
    }
    counts
}

/// The script that is true once the row of the task named `name` shows `state`.
fn row_in(name: &str, state: &str) -> String {
    format!(
        "return [...document.querySelectorAll('#tasks tbody tr')].some(r => \
         r.cells[0].textContent === '{name}' && r.dataset.state === '{state}')"
    )
}

/// In headless Chromium: the token is entered, a task run from the form appears Running through
/// the event stream, is stopped with its button and shows Completed, and tasks submitted
/// elsewhere appear too; after its first load the page sends only the event stream and the
/// user's own actions. Saves a screenshot to `target/tmp/dashboard.png`.
#[actix_rt::test]
async fn the_dashboard_runs_and_stops_a_task_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let settings = ClusterSettings {
        manager: ManagerSettings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().join("manager"),
            poll_interval_ms: 200,
            token: TEST_TOKEN.into(),
            join_token: TEST_JOIN_TOKEN.into(),
            ..ManagerSettings::default()
        },
        workers: 2,
        store: StoreChoice::Lmdb,
        data_dir: dir.path().to_path_buf(),
        runtime: RuntimeChoice::Sim,
        node_cpu: 2.0,
        node_memory: Size(4 << 30),
        node_disk: Size(20 << 30),
        ..ClusterSettings::default()
    };
    let cluster = cube::serve::start_cluster(&settings).await.unwrap();
    actix_rt::spawn(cluster.manager.server);
    let base = format!("http://{}", cluster.manager.addr);
    wait_ready_nodes(&base, 2, Duration::from_secs(10)).await;

    browser.open(&format!("{base}/")).await;
    browser.type_into("#token", TEST_TOKEN).await;
    browser.click("#login button").await;
    browser
        .until(
            "the live stream",
            "return document.querySelector('#status').textContent === 'live'",
        )
        .await;
    browser
        .until(
            "both nodes",
            "return document.querySelectorAll('#nodes tbody tr').length === 2",
        )
        .await;
    let loaded = page_requests(&base).await;
    for request in [
        "GET /",
        "GET /ui/{file}",
        "GET /nodes",
        "GET /tasks",
        "GET /events",
    ] {
        assert!(
            loaded.contains_key(request),
            "{request} not made: {loaded:?}"
        );
    }
    assert_eq!(loaded["GET /events"], 1, "{loaded:?}");

    // Run a task from the form: it shows Running, from the stream.
    browser
        .type_into("#run input[name=name]", "browser-web")
        .await;
    browser
        .type_into("#run input[name=image]", "cube/echo:latest")
        .await;
    browser.type_into("#run input[name=port]", "7777").await;
    browser.click("#run button").await;
    browser
        .until("the task Running", &row_in("browser-web", "Running"))
        .await;
    let tasks = manager_tasks(&base).await;
    let (id, task) = tasks
        .iter()
        .find(|(_, t)| t["Name"] == "browser-web")
        .expect("the task is stored");
    assert_eq!(task["ExposedPorts"], json!({"7777/tcp": {}}));
    let ports = browser
        .eval("return [...document.querySelectorAll('#tasks tbody tr')].find(r => r.cells[0].textContent === 'browser-web').cells[4].textContent")
        .await;
    assert!(ports.as_str().unwrap().contains("7777/tcp"), "{ports}");

    // Stop it with its button: it shows Completed.
    browser
        .click(&format!("#tasks tr[data-task='{id}'] button.stop"))
        .await;
    browser
        .until("the task Completed", &row_in("browser-web", "Completed"))
        .await;
    let (_, stopped) = get(&format!("{base}/tasks/{id}")).await;
    assert_eq!(stopped["State"], "Completed");

    // Tasks submitted by someone else appear through the stream alone.
    for name in ["api-1", "api-2", "api-3"] {
        let ev = event(
            "cube/echo:latest",
            json!({"Name": name, "Cpu": 0.5, "Memory": 268435456, "ExposedPorts": {"7777/tcp": {}}}),
        );
        let (status, body) = post(&format!("{base}/tasks"), &ev).await;
        assert_eq!(status, 201, "{body}");
    }
    for name in ["api-1", "api-2", "api-3"] {
        browser.until(name, &row_in(name, "Running")).await;
    }
    // The nodes' reserved CPU follows (the stream's node reports, every 2 s).
    browser
        .until(
            "the reserved CPU",
            "return [...document.querySelectorAll('#nodes tbody tr')].some(r => r.cells[2].textContent.startsWith('1 /'))",
        )
        .await;

    // The page's requests since its first load: its run, its stop, and nothing else (the test
    // made one listing, one read and three submissions of its own).
    let after = page_requests(&base).await;
    let mut expected = loaded.clone();
    for (request, n) in [
        ("POST /tasks", 1 + 3),
        ("DELETE /tasks/{id}", 1),
        ("GET /tasks", 1),
        ("GET /tasks/{id}", 1),
    ] {
        *expected.entry(request.into()).or_default() += n;
    }
    assert_eq!(
        after, expected,
        "the page sent more than its actions and the stream"
    );

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browser.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    println!("screenshot: {}", shot.display());
    browser.session("DELETE", "", None).await;
}
