//! The remote-worker actor: the worker messages, carried to a worker's HTTP API.
//!
//! The manager talks to every node through a [`WorkerHandle`]: a local [`Worker`] actor in the
//! same process, or a [`RemoteWorker`] that turns the same messages into HTTP calls. Calls have a
//! timeout; calls that did not reach the worker (connection refused, timeout) are retried with
//! exponential back-off, and all our calls are idempotent, so a retry never runs a task twice.
//! What the worker answers with an error status comes back as the same [`WorkerError`] variant a
//! local worker would have returned (see `answer_error`), so the manager treats a refusal alike
//! whichever node made it.
//!
//! Architecture invariant: besides the HTTP edge of the binary, this is the only module that
//! speaks HTTP.

use std::time::Duration;

use actix::prelude::*;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::backoff::Backoff;
use crate::metrics::Stats;
use crate::runtime::RuntimeError;
use crate::secret::Token;
use crate::store::StoreError;
use crate::task::{InvalidTask, Task, TaskEvent, TaskId};
use crate::tls::ClientTls;
use crate::worker::{
    ForgetTask, GetNodeInfo, ListTasks, NodeInfo, RunTask, StopTask, Sync, SyncReply, TaskLogs,
    Worker, WorkerError, WorkerStats,
};

/// How a remote worker is called.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    /// Time allowed for one call (a stop gets this plus the worker's stop timeout).
    pub timeout: Duration,
    /// Extra attempts after a call that did not reach the worker.
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one.
    pub backoff: Duration,
    /// The CA that `https://` workers' certificates must come from.
    pub tls: Option<ClientTls>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            timeout: Duration::from_secs(10),
            retries: 2,
            backoff: Duration::from_millis(200),
            tls: None,
        }
    }
}

/// A worker on another machine, reached at `base` (`http://host:port` or `https://...`).
pub struct RemoteWorker {
    base: String,
    config: RemoteConfig,
    client: awc::Client,
    /// What the manager presents to this worker (the credential it got when it enrolled).
    credential: Option<Token>,
}

impl RemoteWorker {
    /// A proxy for the worker at `base`, called with `credential`.
    pub fn new(
        base: impl Into<String>,
        config: RemoteConfig,
        credential: Option<Token>,
    ) -> RemoteWorker {
        let client = crate::tls::http_client(config.tls.as_ref(), None);
        RemoteWorker {
            base: http_base(&base.into()),
            config,
            client,
            credential,
        }
    }

    fn call<T: DeserializeOwned + 'static>(
        &self,
        method: awc::http::Method,
        path: String,
        body: Option<serde_json::Value>,
        timeout: Duration,
        task: Option<TaskId>,
    ) -> ResponseFuture<Result<T, WorkerError>> {
        let url = format!("{}{}", self.base, path);
        let raw = self.call_raw(method, path, body, timeout, task);
        Box::pin(async move {
            let bytes = raw.await?;
            serde_json::from_slice(&bytes).map_err(|e| {
                WorkerError::Unreachable(format!(
                    "worker at {url} answered something unexpected: {e}"
                ))
            })
        })
    }

    /// Makes the call, retrying what did not reach the worker; the body of a 2xx answer.
    fn call_raw(
        &self,
        method: awc::http::Method,
        path: String,
        body: Option<serde_json::Value>,
        timeout: Duration,
        task: Option<TaskId>,
    ) -> ResponseFuture<Result<Vec<u8>, WorkerError>> {
        let client = self.client.clone();
        let url = format!("{}{}", self.base, path);
        let config = self.config.clone();
        let bearer = self.credential.as_ref().map(Token::bearer);
        Box::pin(async move {
            let mut attempt = 0;
            let mut backoff = Backoff::new(config.backoff, config.backoff * 16);
            loop {
                let mut request = client.request(method.clone(), &url).timeout(timeout);
                if let Some(bearer) = &bearer {
                    request =
                        request.insert_header((awc::http::header::AUTHORIZATION, bearer.as_str()));
                }
                let sent = match &body {
                    Some(body) => request.send_json(body).await,
                    None => request.send().await,
                };
                let mut response = match sent {
                    Ok(response) => response,
                    Err(e) if attempt < config.retries => {
                        attempt += 1;
                        log::debug!("{method} {url}: {e}; retrying");
                        actix::clock::sleep(backoff.next_wait()).await;
                        continue;
                    }
                    Err(e) => {
                        return Err(WorkerError::Unreachable(format!(
                            "worker at {url} did not answer after {} attempts: {e}",
                            attempt + 1
                        )));
                    }
                };
                let status = response.status().as_u16();
                // The whole answer, not only its headers, must come within the timeout: a peer
                // that stalls mid-body must not wedge the caller.
                let body = response.body().limit(64 << 20);
                let bytes = match actix::clock::timeout(timeout, body).await {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(e)) => {
                        let e = format!("worker at {url}: reading the answer: {e}");
                        return Err(WorkerError::Unreachable(e));
                    }
                    Err(_) => {
                        let e =
                            format!("worker at {url}: the answer did not arrive in {timeout:?}");
                        return Err(WorkerError::Unreachable(e));
                    }
                };
                if (200..300).contains(&status) {
                    return Ok(bytes.to_vec());
                }
                // Only the worker API's own error messages are passed on: an answer of another
                // shape (a proxy, a redirect, something else at that address) is not echoed.
                let message = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|b| b.message)
                    .unwrap_or_else(|_| {
                        format!(
                            "an answer that is not the worker API's ({} bytes)",
                            bytes.len()
                        )
                    });
                return Err(answer_error(&url, status, message, task));
            }
        })
    }
}

/// The [`WorkerError`] a worker meant by answering `status` with `message`: the variant a local
/// worker returns for the same refusal.
fn answer_error(url: &str, status: u16, message: String, task: Option<TaskId>) -> WorkerError {
    match (status, task) {
        (401, _) => WorkerError::Unreachable(format!(
            "worker at {url} refused the manager's credential (401): it enrolled again, or with another manager"
        )),
        (400, _) => WorkerError::Invalid(InvalidTask::from_message(&message)),
        (404, Some(id)) => WorkerError::NotFound(id),
        (409, _) => WorkerError::Conflict(message),
        (503, _) => WorkerError::Runtime(RuntimeError::Unavailable { reason: message }),
        (502, _) => WorkerError::Runtime(RuntimeError::Failed {
            operation: "run the task",
            reason: message,
        }),
        (500, _) => WorkerError::Store(StoreError::Backend {
            operation: "write on the worker",
            reason: message,
        }),
        _ => WorkerError::Unreachable(format!("worker at {url} answered {status}: {message}")),
    }
}

/// The JSON error body of the worker API.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Message")]
    message: String,
}

impl Actor for RemoteWorker {
    type Context = Context<Self>;
}

/// Handler for [`RunTask`]: `POST /tasks`.
impl Handler<RunTask> for RemoteWorker {
    type Result = ResponseFuture<Result<Task, WorkerError>>;

    fn handle(&mut self, RunTask(task): RunTask, _: &mut Context<Self>) -> Self::Result {
        let id = task.id;
        let body = serde_json::to_value(TaskEvent::run(task)).expect("a task always encodes");
        self.call(
            awc::http::Method::POST,
            "/tasks".into(),
            Some(body),
            self.config.timeout,
            Some(id),
        )
    }
}

/// Handler for [`StopTask`]: `DELETE /tasks/{id}`.
impl Handler<StopTask> for RemoteWorker {
    type Result = ResponseFuture<Result<Task, WorkerError>>;

    fn handle(&mut self, msg: StopTask, _: &mut Context<Self>) -> Self::Result {
        // A stop waits for the container's graceful exit on the worker.
        let timeout = self.config.timeout + Duration::from_secs(30);
        let mut path = format!("/tasks/{}?stale={}", msg.id, msg.stale);
        if let Some(placement) = msg.placement {
            path.push_str(&format!("&placement={placement}"));
        }
        self.call(awc::http::Method::DELETE, path, None, timeout, Some(msg.id))
    }
}

/// Handler for [`ForgetTask`]: `DELETE /tasks/{id}?purge=true`.
impl Handler<ForgetTask> for RemoteWorker {
    type Result = ResponseFuture<Result<(), WorkerError>>;

    fn handle(&mut self, msg: ForgetTask, _: &mut Context<Self>) -> Self::Result {
        let mut path = format!("/tasks/{}?purge=true", msg.id);
        if let Some(placement) = msg.placement {
            path.push_str(&format!("&placement={placement}"));
        }
        let raw = self.call_raw(
            awc::http::Method::DELETE,
            path,
            None,
            self.config.timeout,
            Some(msg.id),
        );
        Box::pin(async move { raw.await.map(drop) })
    }
}

/// Handler for [`Sync`]: `GET /sync?epoch=E&revision=R&wait_ms=W`, a long poll; the call may
/// take the wait plus the usual timeout.
impl Handler<Sync> for RemoteWorker {
    type Result = ResponseFuture<Result<SyncReply, WorkerError>>;

    fn handle(&mut self, msg: Sync, _: &mut Context<Self>) -> Self::Result {
        let mut path = format!("/sync?wait_ms={}", msg.wait.as_millis());
        if let Some(cursor) = msg.cursor {
            path.push_str(&format!(
                "&epoch={}&revision={}",
                cursor.epoch, cursor.revision
            ));
        }
        let timeout = self.config.timeout + msg.wait;
        self.call(awc::http::Method::GET, path, None, timeout, None)
    }
}

/// Handler for [`ListTasks`]: `GET /tasks`.
impl Handler<ListTasks> for RemoteWorker {
    type Result = ResponseFuture<Result<Vec<Task>, WorkerError>>;

    fn handle(&mut self, _: ListTasks, _: &mut Context<Self>) -> Self::Result {
        self.call(
            awc::http::Method::GET,
            "/tasks".into(),
            None,
            self.config.timeout,
            None,
        )
    }
}

/// Handler for [`WorkerStats`]: `GET /stats`.
impl Handler<WorkerStats> for RemoteWorker {
    type Result = ResponseFuture<Result<Stats, WorkerError>>;

    fn handle(&mut self, _: WorkerStats, _: &mut Context<Self>) -> Self::Result {
        self.call(
            awc::http::Method::GET,
            "/stats".into(),
            None,
            self.config.timeout,
            None,
        )
    }
}

/// Handler for [`GetNodeInfo`]: `GET /node`.
impl Handler<GetNodeInfo> for RemoteWorker {
    type Result = ResponseFuture<Result<NodeInfo, WorkerError>>;

    fn handle(&mut self, _: GetNodeInfo, _: &mut Context<Self>) -> Self::Result {
        self.call(
            awc::http::Method::GET,
            "/node".into(),
            None,
            self.config.timeout,
            None,
        )
    }
}

/// Handler for [`TaskLogs`]: `GET /tasks/{id}/logs`.
impl Handler<TaskLogs> for RemoteWorker {
    type Result = ResponseFuture<Result<String, WorkerError>>;

    fn handle(&mut self, msg: TaskLogs, _: &mut Context<Self>) -> Self::Result {
        let q = msg.query;
        let mut path = format!(
            "/tasks/{}/logs?tail={}&timestamps={}&previous={}",
            msg.id, q.tail, q.timestamps, msg.previous
        );
        if let Some(since) = q.since {
            path.push_str(&format!("&since={since}"));
        }
        let raw = self.call_raw(
            awc::http::Method::GET,
            path,
            None,
            self.config.timeout,
            Some(msg.id),
        );
        Box::pin(async move { Ok(String::from_utf8_lossy(&raw.await?).into_owned()) })
    }
}

/// The base URL for an address given as `host:port` or `http://host:port[/]`.
pub fn http_base(address: &str) -> String {
    let base = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    base.trim_end_matches('/').to_string()
}

/// What a worker sends to enroll with a manager (`POST /nodes`).
pub struct JoinRequest {
    /// The manager's address.
    pub manager: String,
    /// The worker's name, unique in the cluster.
    pub name: String,
    /// Where the manager reaches the worker.
    pub advertise: String,
    /// The worker's identity, made at its first start.
    pub node_key: Token,
    /// The cluster's join token.
    pub join_token: Token,
    /// Take over the name from a node with another identity (one whose data dir was lost).
    pub replace: bool,
    /// The CA the manager's certificate must come from (for an `https://` manager).
    pub tls: Option<ClientTls>,
}

/// The manager's answer to an enrollment.
#[derive(Deserialize)]
struct Enrolled {
    #[serde(rename = "Credential")]
    credential: Token,
}

/// The host and port of an address (`http://host:port/...`, `host:port`, `host`); an IPv6
/// host keeps its brackets.
pub fn host_and_port(address: &str) -> (&str, Option<&str>) {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => (host, Some(port)),
        _ => (authority, None),
    }
}

/// Whether an address's host (`http://host:port`, `host:port`) is this machine's loopback.
pub fn is_loopback(address: &str) -> bool {
    let host = host_and_port(address).0;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Enrolls this worker with the manager (`POST /nodes` with the join token), until it says yes;
/// waits double after each failure, up to 10 s. The credential the manager will call this
/// worker with is handed to `enrolled`, which installs it.
pub async fn join_manager(join: JoinRequest, enrolled: impl Fn(Token)) {
    let manager = http_base(&join.manager);
    let url = format!("{manager}/nodes");
    let client = crate::tls::http_client(join.tls.as_ref(), Some(Duration::from_secs(15)));
    let body = serde_json::json!({
        "Name": join.name,
        "Address": join.advertise,
        "NodeKey": join.node_key.expose(),
        "Replace": join.replace,
        "Protocol": crate::worker::PROTOCOL_VERSION,
    });
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        let sent = client
            .post(&url)
            .insert_header((awc::http::header::AUTHORIZATION, join.join_token.bearer()))
            .send_json(&body)
            .await;
        match sent {
            Ok(mut resp) if resp.status().is_success() => {
                match resp.json::<Enrolled>().limit(64 << 10).await {
                    Ok(answer) => {
                        enrolled(answer.credential);
                        log::info!(
                            "enrolled with the manager at {manager} as {} ({})",
                            join.name,
                            join.advertise
                        );
                        return;
                    }
                    Err(e) => log::warn!(
                        "the manager at {manager} answered the enrollment with something unexpected: {e}"
                    ),
                }
            }
            Ok(mut resp) => {
                let bytes = resp.body().limit(64 << 10).await.unwrap_or_default();
                let message = serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|b| b.message)
                    .unwrap_or_else(|_| {
                        format!("{} bytes that are not the manager API's", bytes.len())
                    });
                log::error!(
                    "the manager at {manager} refused to enroll {} ({}): {message}",
                    join.name,
                    resp.status()
                );
            }
            Err(e) => log::warn!("cannot reach the manager at {manager} to enroll: {e}"),
        }
        actix::clock::sleep(backoff.next_wait()).await;
    }
}

/// A node's worker, in this process or behind HTTP: the manager's one way to reach a node.
#[derive(Clone)]
pub enum WorkerHandle {
    /// A worker actor in this process (all-in-one mode).
    Local(Addr<Worker>),
    /// A worker on another machine.
    Remote(Addr<RemoteWorker>),
}

impl WorkerHandle {
    /// Sends `msg` to the worker and waits for its answer.
    pub async fn send<M, T>(&self, msg: M) -> Result<T, WorkerError>
    where
        M: Message<Result = Result<T, WorkerError>> + Send + 'static,
        T: Send + 'static,
        Worker: Handler<M>,
        RemoteWorker: Handler<M>,
    {
        match self {
            WorkerHandle::Local(addr) => addr.send(msg).await?,
            WorkerHandle::Remote(addr) => addr.send(msg).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_refusal_is_the_error_a_local_worker_returns() {
        let url = "http://w:5556/tasks";
        let id = TaskId::new_v4();
        let invalid = answer_error(
            url,
            400,
            "invalid task field `Image`: an image is required".into(),
            Some(id),
        );
        assert_eq!(
            invalid,
            WorkerError::Invalid(InvalidTask {
                field: "Image".into(),
                reason: "an image is required".into()
            })
        );
        assert_eq!(
            answer_error(url, 404, "gone".into(), Some(id)),
            WorkerError::NotFound(id)
        );
        assert_eq!(
            answer_error(url, 409, "busy".into(), None),
            WorkerError::Conflict("busy".into())
        );
        assert!(matches!(
            answer_error(url, 503, "engine down".into(), None),
            WorkerError::Runtime(RuntimeError::Unavailable { .. })
        ));
        assert!(matches!(
            answer_error(url, 418, "?".into(), None),
            WorkerError::Unreachable(_)
        ));
    }

    #[test]
    fn addresses_become_base_urls() {
        assert_eq!(http_base("10.0.0.7:5556"), "http://10.0.0.7:5556");
        assert_eq!(http_base("http://host:5556/"), "http://host:5556");
        assert_eq!(http_base("https://host"), "https://host");
    }
}
