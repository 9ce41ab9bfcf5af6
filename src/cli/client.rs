//! The CLI's HTTP client for the manager API, with errors a person can act on.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use cube_actors::node::NodeReport;
use cube_actors::remote_worker::http_base;
use cube_actors::task::{Task, TaskEvent};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The header of a listing's answer that holds the cursor of its next page.
pub const NEXT_CURSOR: &str = "Cube-Next-Cursor";

/// How many tasks the CLI asks for at once.
const PAGE: usize = 1000;

/// The manager a command talks to when none is named.
pub const DEFAULT_MANAGER: &str = "localhost:5555";

/// An answer of the manager, its body still to read.
type Response = awc::ClientResponse<actix_web::dev::Decompress<actix_web::dev::Payload>>;

/// One Server-Sent Event of `GET /events`: its type (`open`, `task`, `node`, `reset`,
/// `nodes`) and its JSON.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// Its type.
    pub kind: String,
    /// Its data.
    pub data: Value,
}

/// The event stream of a manager (`GET /events`), an event at a time.
pub struct EventStream {
    response: Response,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the manager closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<StreamEvent>> {
        use futures_util::StreamExt as _;
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let frame = String::from_utf8_lossy(&frame);
                let (mut kind, mut data) = ("message".to_string(), String::new());
                for line in frame.lines() {
                    if let Some(k) = line.strip_prefix("event: ") {
                        kind = k.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if data.is_empty() {
                    // A comment (keepalive).
                    continue;
                }
                let data = serde_json::from_str(&data).with_context(|| {
                    format!("the manager sent an event that is not JSON: {data}")
                })?;
                return Ok(Some(StreamEvent { kind, data }));
            }
            match self.response.next().await {
                Some(chunk) => self
                    .buffer
                    .extend_from_slice(&chunk.context("reading the event stream")?),
                None => return Ok(None),
            }
        }
    }
}

/// Talks to one manager.
pub struct ManagerClient {
    base: String,
    client: awc::Client,
    /// The `Authorization` header, when there is a token.
    bearer: Option<String>,
}

/// How a command reaches its manager: the address, token and CA it was given; what it was not
/// given comes from the entry this machine's manager left for this user (see [`crate::access`]).
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// `host:port`, `http://host:port` or `https://host:port`.
    pub address: Option<String>,
    /// The admin token.
    pub token: Option<String>,
    /// The CA certificate the manager's certificate must come from.
    pub ca: Option<std::path::PathBuf>,
}

impl ManagerClient {
    /// A client for the manager at `address` (`host:port` or `http://host:port`), with no
    /// token and no TLS settings.
    pub fn new(address: &str) -> ManagerClient {
        ManagerClient {
            base: http_base(address),
            client: cube_actors::tls::http_client(None, Some(Duration::from_secs(60))),
            bearer: None,
        }
    }

    /// A client for `target`, completed from this user's entry for that address.
    pub fn connect(target: &Target) -> anyhow::Result<ManagerClient> {
        let address = target.address.as_deref().unwrap_or(DEFAULT_MANAGER);
        let entry = crate::access::user_dir().and_then(|dir| crate::access::load(&dir, address));
        let base = match &entry {
            Some(entry) if !address.contains("://") => entry.address.clone(),
            _ => http_base(address),
        };
        let token = match (&target.token, &entry) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(entry)) => Some(entry.token.clone()),
            (None, None) => None,
        };
        let ca = target
            .ca
            .clone()
            .or_else(|| entry.as_ref().and_then(|e| e.ca_cert.clone()));
        let tls = match &ca {
            Some(ca) => Some(cube_actors::tls::ClientTls::from_ca_file(ca)?),
            None => None,
        };
        Ok(ManagerClient {
            base,
            client: cube_actors::tls::http_client(tls.as_ref(), Some(Duration::from_secs(60))),
            bearer: token.map(|t| format!("Bearer {}", t.trim())),
        })
    }

    /// The manager's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Vec<u8>> {
        Ok(self.call_paged(method, path, body).await?.0)
    }

    /// Makes a call; the body of a 2xx answer and its next-page cursor, if any.
    async fn call_paged(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(Vec<u8>, Option<String>)> {
        let url = format!("{}{path}", self.base);
        let mut response = self.send(method, path, body).await?;
        let bytes = response
            .body()
            .limit(64 << 20)
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        let next = response
            .headers()
            .get(NEXT_CURSOR)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        Ok((bytes.to_vec(), next))
    }

    /// Makes a call; a 2xx answer, whose body is still to read, or the error it means.
    async fn send(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Response> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(bearer) = &self.bearer {
            request = request.insert_header((awc::http::header::AUTHORIZATION, bearer.as_str()));
        }
        let sent = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| {
            if e.to_string().contains("certificate") {
                return anyhow!(
                    "the manager at {} did not prove who it is ({e})\n\
                     Give the cluster's CA certificate with --ca (or CUBE_CA), and call the manager \
                     by a name or address its certificate names",
                    self.base
                );
            }
            anyhow!(
                "cannot reach the manager at {} ({e})\n\
                 Start one with `cube up` (all-in-one) or `cube manager`, or point to a running one \
                 with --manager URL or the CUBE_MANAGER environment variable",
                self.base
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let bytes = response
            .body()
            .limit(64 << 20)
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["Message"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        if response.status() == awc::http::StatusCode::UNAUTHORIZED {
            let hint = if self.bearer.is_none() {
                "no token for this manager here: run this as the user who started it on this machine, \
                 or pass --token (or CUBE_TOKEN); `cube token` prints it where the manager runs"
            } else {
                "the token given is not this manager's (--token, CUBE_TOKEN)"
            };
            bail!(
                "the manager at {} refused the call: {message}\n{hint}",
                self.base
            );
        }
        bail!("{message}")
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: awc::http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("the manager at {} answered something unexpected", self.base))
    }

    /// `GET /events`: the event stream, after `since` (a cursor) or from now; with `nodes`,
    /// every node's report every few seconds too.
    pub async fn events(&self, since: Option<&str>, nodes: bool) -> anyhow::Result<EventStream> {
        let mut path = format!("/events?nodes={nodes}");
        if let Some(since) = since {
            anyhow::ensure!(
                since.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "{since:?} is not an event cursor: cursors look like 8582b189-42 (the `Cursor` of an event)"
            );
            path.push_str("&since=");
            path.push_str(since);
        }
        let response = self.send(awc::http::Method::GET, &path, None).await?;
        Ok(EventStream {
            response,
            buffer: Vec::new(),
        })
    }

    /// `POST /tasks`.
    pub async fn submit(&self, event: &TaskEvent) -> anyhow::Result<Task> {
        let body = serde_json::to_value(event)?;
        self.json(awc::http::Method::POST, "/tasks", Some(&body))
            .await
            .map_err(|e| anyhow!("the manager refused the task: {e}"))
    }

    /// `GET /tasks?...`: every task matching `filter` (a query string such as
    /// `state=Running&node=node-1`, or empty), fetched a page at a time.
    pub async fn tasks(&self, filter: &str) -> anyhow::Result<Vec<Task>> {
        let mut tasks = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/tasks?limit={PAGE}");
            if !filter.is_empty() {
                path.push_str(&format!("&{filter}"));
            }
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let (bytes, next) = self.call_paged(awc::http::Method::GET, &path, None).await?;
            let page: Vec<Task> = serde_json::from_slice(&bytes).with_context(|| {
                format!("the manager at {} answered something unexpected", self.base)
            })?;
            tasks.extend(page);
            match next {
                Some(next) => after = Some(next),
                None => return Ok(tasks),
            }
        }
    }

    /// `DELETE /tasks/{id}?purge=true`: removes a finished task.
    pub async fn purge(&self, id: &str) -> anyhow::Result<Task> {
        let path = format!("/tasks/{id}?purge=true");
        self.json(awc::http::Method::DELETE, &path, None).await
    }

    /// `POST /tasks/prune`: removes every finished task; how many were removed.
    pub async fn prune(&self) -> anyhow::Result<u64> {
        let answer: Value = self
            .json(awc::http::Method::POST, "/tasks/prune", Some(&Value::Null))
            .await?;
        answer["Removed"]
            .as_u64()
            .ok_or_else(|| anyhow!("the manager answered something unexpected: {answer}"))
    }

    /// `GET /tasks/{id}`.
    pub async fn task(&self, id: &str) -> anyhow::Result<Task> {
        self.json(awc::http::Method::GET, &format!("/tasks/{id}"), None)
            .await
    }

    /// `GET /tasks/{id}/history`.
    pub async fn history(&self, id: &str) -> anyhow::Result<Vec<Value>> {
        self.json(
            awc::http::Method::GET,
            &format!("/tasks/{id}/history"),
            None,
        )
        .await
    }

    /// `DELETE /tasks/{id}`.
    pub async fn stop(&self, id: &str) -> anyhow::Result<Task> {
        self.json(awc::http::Method::DELETE, &format!("/tasks/{id}"), None)
            .await
    }

    /// `GET /tasks/{id}/logs`.
    pub async fn logs(
        &self,
        id: &str,
        tail: usize,
        since: Option<i64>,
        timestamps: bool,
        previous: bool,
    ) -> anyhow::Result<String> {
        let mut path =
            format!("/tasks/{id}/logs?tail={tail}&timestamps={timestamps}&previous={previous}");
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        let bytes = self.call(awc::http::Method::GET, &path, None).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `POST /nodes/{name}/drain` (`remove` false) or `DELETE /nodes/{name}`: the IDs of the
    /// tasks moved away.
    pub async fn retire_node(&self, name: &str, remove: bool) -> anyhow::Result<Vec<String>> {
        let answer: Value = if remove {
            self.json(awc::http::Method::DELETE, &format!("/nodes/{name}"), None)
                .await?
        } else {
            let path = format!("/nodes/{name}/drain");
            self.json(awc::http::Method::POST, &path, Some(&Value::Null))
                .await?
        };
        let moved = answer["Moved"].as_array().cloned().unwrap_or_default();
        Ok(moved
            .iter()
            .filter_map(|id| id.as_str().map(String::from))
            .collect())
    }

    /// `GET /nodes`.
    pub async fn nodes(&self) -> anyhow::Result<Vec<NodeReport>> {
        self.json(awc::http::Method::GET, "/nodes", None).await
    }

    /// Finds the one task `reference` names: its full ID, a unique prefix of its ID, or its name
    /// (when several tasks share a name, the one not yet ended).
    pub async fn resolve(&self, reference: &str) -> anyhow::Result<Task> {
        if reference.parse::<uuid::Uuid>().is_ok()
            && let Ok(task) = self.task(reference).await
        {
            return Ok(task);
        }
        let valid_name = !reference.is_empty()
            && reference
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let named = if valid_name {
            self.tasks(&format!("name={reference}")).await?
        } else {
            Vec::new()
        };
        let tasks = if named.is_empty() {
            self.tasks("").await?
        } else {
            named
        };
        if let Some(task) = tasks.iter().find(|t| t.id.to_string() == reference) {
            return Ok(task.clone());
        }
        let by_prefix: Vec<&Task> = tasks
            .iter()
            .filter(|t| t.id.to_string().starts_with(reference))
            .collect();
        let by_name: Vec<&Task> = tasks.iter().filter(|t| t.name == reference).collect();
        let candidates = if !by_prefix.is_empty() {
            by_prefix
        } else {
            by_name
        };
        let candidates: Vec<&Task> = if candidates.len() > 1 {
            let live: Vec<&Task> = candidates
                .iter()
                .copied()
                .filter(|t| !t.is_finished())
                .collect();
            if live.is_empty() { candidates } else { live }
        } else {
            candidates
        };
        match candidates.as_slice() {
            [] => bail!(
                "no task matches `{reference}` (give an ID, a unique ID prefix, or a name; `cube status` lists them)"
            ),
            [one] => Ok((*one).clone()),
            many => bail!(
                "`{reference}` matches {} tasks: {}; give more of the ID",
                many.len(),
                many.iter()
                    .map(|t| format!("{} ({})", t.id, t.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}
