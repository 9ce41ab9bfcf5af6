//! The manager's HTTP API (the book's, plus task details, logs, node joins and health).
//!
//! | route | answer |
//! |---|---|
//! | `POST /tasks` | a TaskEvent; 201 with the task as stored (Pending, placed right after); `State: 3` stops it |
//! | `GET /tasks?state=&node=&name=&limit=&after=` | tasks in arrival order, always a JSON array; filtered, and a page at a time with `limit` (header `Cube-Next-Cursor`: pass it as `after` for the next page) |
//! | `POST /tasks/prune` | removes every finished task now; `{"Removed": n}` |
//! | `GET /tasks/{id}` | one task, with its node, restart count and last reason |
//! | `DELETE /tasks/{id}` | stops the task on its node; 200 with the task, now Completed |
//! | `DELETE /tasks/{id}?purge=true` | removes a finished task (409 if it is not finished) |
//! | `GET /tasks/{id}/logs?tail=N` | the last N lines of the task's output, from its node |
//! | `GET /tasks/{id}/history` | the task's last state changes (since the manager started), oldest first |
//! | `GET /nodes` | every node: address, status, capacity, reserved, live metrics, task count |
//! | `GET /nodes/{name}` | one node |
//! | `POST /nodes` | a worker enrolls (join token): `{"Name", "Address", "NodeKey", "Replace", "Protocol"}`; 201 with its credential |
//! | `POST /nodes/{name}/drain` | no new tasks there; its tasks are placed elsewhere, its copies stopped |
//! | `DELETE /nodes/{name}` | drains the node, then removes it from the cluster |
//! | `GET /events?since=&nodes=` | the event stream (Server-Sent Events): task transitions and node status changes, resumable (see `events.rs`) |
//! | `GET /metrics` | the manager's metrics, OpenMetrics text (the admin or the metrics token) |
//! | `GET /health` | 200 while the manager runs |
//! | `GET /`, `GET /ui/{file}` | the dashboard (no token: the page asks for one and holds no data) |
//!
//! Submissions beyond [`ManagerState::max_in_flight`] at once get 429 with `Retry-After`, rather
//! than queueing without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use actix::Addr;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpResponse, web};
use cube_actors::manager::{
    Enroll, GetOne, History, ListNodes, ListTasks, Logs, Manager, ManagerError, Observe, Prune,
    Purge, RetireNode, Stop, Submit, TaskFilter,
};
use cube_actors::task::TaskEvent;
use serde::Deserialize;

use super::admission::{self, Admission};
use super::{
    ApiError, DeleteParams, ErrorBody, LogsParams, NEXT_CURSOR, RouteEntry, log_text,
    parse_task_id, register, route,
};

/// What the manager's handlers talk to.
#[derive(Clone)]
pub struct ManagerState {
    /// The manager actor.
    pub manager: Addr<Manager>,
    /// Submissions being handled right now.
    pub in_flight: Arc<AtomicUsize>,
    /// The most submissions handled at once; more get 429.
    pub max_in_flight: usize,
    /// Tasks waiting to start, as the manager last counted them (see `ManagerConfig::waiting`).
    pub waiting: Arc<AtomicUsize>,
    /// Submissions are refused here while this many tasks wait (the manager checks it too).
    pub max_waiting: usize,
    /// Submissions are refused here while the manager is behind (see [`Admission`]).
    pub admission: Arc<Admission>,
}

/// Every route of the manager: method, path, handler. The router is built from this list, and
/// the tests enumerate it (see [`route_list`]).
fn routes() -> Vec<RouteEntry> {
    vec![
        route(Method::POST, "/tasks/prune", prune),
        route(Method::POST, "/tasks", submit),
        route(Method::GET, "/tasks", list),
        route(Method::GET, "/tasks/{id}", get),
        route(Method::DELETE, "/tasks/{id}", stop),
        route(Method::GET, "/tasks/{id}/logs", logs),
        route(Method::GET, "/tasks/{id}/history", history),
        route(Method::GET, "/nodes", nodes),
        route(Method::POST, "/nodes", enroll),
        route(Method::GET, "/nodes/{name}", node),
        route(Method::DELETE, "/nodes/{name}", remove_node),
        route(Method::POST, "/nodes/{name}/drain", drain_node),
        route(Method::GET, "/events", super::events::events),
        route(Method::GET, "/metrics", metrics),
        route(Method::GET, "/health", health),
        route(Method::GET, "/", super::dashboard::page),
        route(Method::GET, "/ui/{file}", super::dashboard::asset),
    ]
}

/// Registers the manager routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    register(cfg, routes());
}

/// The method and path of every manager route.
pub fn route_list() -> Vec<(Method, &'static str)> {
    routes().into_iter().map(|(m, p, _)| (m, p)).collect()
}

async fn retire(
    state: web::Data<ManagerState>,
    name: String,
    remove: bool,
) -> Result<HttpResponse, ApiError> {
    let retire = RetireNode {
        name: name.clone(),
        remove,
    };
    let moved = state.manager.send(retire).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "Name": name, "Moved": moved })))
}

async fn drain_node(
    state: web::Data<ManagerState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    retire(state, name.into_inner(), false).await
}

async fn remove_node(
    state: web::Data<ManagerState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    retire(state, name.into_inner(), true).await
}

/// Counts a submission in flight for as long as it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn submit(
    state: web::Data<ManagerState>,
    event: web::Json<TaskEvent>,
) -> Result<HttpResponse, ApiError> {
    let busy = state.in_flight.fetch_add(1, Ordering::SeqCst);
    let _slot = Slot(Arc::clone(&state.in_flight));
    if busy >= state.max_in_flight {
        let body = ErrorBody {
            status: 429,
            message: format!("the manager is handling {busy} submissions; retry in a second"),
        };
        return Ok(HttpResponse::build(StatusCode::TOO_MANY_REQUESTS)
            .insert_header(("Retry-After", "1"))
            .json(body));
    }
    let stop = event.state == cube_actors::task::TaskState::Completed;
    // Refused before it queues for the manager: under overload, a refusal stays cheap.
    let arrived = Instant::now();
    let waiting = state.waiting.load(Ordering::Relaxed);
    if !stop && waiting >= state.max_waiting {
        return Err(ManagerError::Busy(format!(
            "{waiting} tasks are waiting to start (the most is {}); retry in a second",
            state.max_waiting
        ))
        .into());
    }
    if !stop && let Some(least) = state.admission.behind(arrived) {
        return Err(ManagerError::Busy(format!(
            "the manager is behind (the quickest submission of the last {} ms took {} ms); retry in a second",
            admission::INTERVAL.as_millis(),
            least.as_millis()
        ))
        .into());
    }
    let task = state.manager.send(Submit(event.into_inner())).await??;
    if !stop {
        state.admission.answered(Instant::now(), arrived.elapsed());
    }
    Ok(if stop {
        HttpResponse::Ok().json(task)
    } else {
        HttpResponse::Created().json(task)
    })
}

/// The filters of `GET /tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    node: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

async fn list(
    state: web::Data<ManagerState>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let task_state = match &params.state {
        Some(s) => Some(s.parse().map_err(ApiError::bad_request)?),
        None => None,
    };
    let filter = TaskFilter {
        state: task_state,
        node: params.node,
        name: params.name,
        limit: params.limit,
        after: params.after,
    };
    let page = state.manager.send(ListTasks(filter)).await??;
    let mut response = HttpResponse::Ok();
    if let Some(next) = &page.next {
        response.insert_header((NEXT_CURSOR, next.as_str()));
    }
    Ok(response.json(page.tasks))
}

async fn prune(state: web::Data<ManagerState>) -> Result<HttpResponse, ApiError> {
    let removed = state.manager.send(Prune).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "Removed": removed })))
}

async fn get(
    state: web::Data<ManagerState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&id)?;
    Ok(HttpResponse::Ok().json(state.manager.send(GetOne(id)).await??))
}

async fn stop(
    state: web::Data<ManagerState>,
    id: web::Path<String>,
    params: web::Query<DeleteParams>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&id)?;
    if params.purge.unwrap_or(false) {
        return Ok(HttpResponse::Ok().json(state.manager.send(Purge(id)).await??));
    }
    Ok(HttpResponse::Ok().json(state.manager.send(Stop(id)).await??))
}

async fn logs(
    state: web::Data<ManagerState>,
    id: web::Path<String>,
    query: web::Query<LogsParams>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&id)?;
    let previous = query.previous.unwrap_or(false);
    let query = query.into_inner().into_query();
    let text = state
        .manager
        .send(Logs {
            id,
            query,
            previous,
        })
        .await??;
    Ok(log_text(text))
}

async fn history(
    state: web::Data<ManagerState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&id)?;
    Ok(HttpResponse::Ok().json(state.manager.send(History(id)).await??))
}

async fn nodes(state: web::Data<ManagerState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.manager.send(ListNodes).await?))
}

async fn node(
    state: web::Data<ManagerState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    let node = state
        .manager
        .send(ListNodes)
        .await?
        .into_iter()
        .find(|n| n.name == name)
        .ok_or(cube_actors::manager::ManagerError::NodeNotFound(name))?;
    Ok(HttpResponse::Ok().json(node))
}

/// Body of `POST /nodes`: a worker enrolling itself (`cube worker --manager`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enrolling {
    /// The worker's name.
    #[serde(rename = "Name")]
    name: String,
    /// The worker's API address.
    #[serde(rename = "Address")]
    address: String,
    /// Its identity key, made at its first start.
    #[serde(rename = "NodeKey")]
    node_key: String,
    /// Take the name over from a node with another identity.
    #[serde(rename = "Replace", default)]
    replace: bool,
    /// The worker protocol version it speaks.
    #[serde(rename = "Protocol")]
    protocol: u32,
}

async fn enroll(
    state: web::Data<ManagerState>,
    req: actix_web::HttpRequest,
    body: web::Json<Enrolling>,
) -> Result<HttpResponse, ApiError> {
    use actix_web::HttpMessage as _;
    let admin = req.extensions().get::<cube_actors::secret::Access>()
        == Some(&cube_actors::secret::Access::Full);
    let body = body.into_inner();
    let node_key = cube_actors::secret::Token::parse(&body.node_key)
        .map_err(|e| ApiError::bad_request(format!("invalid NodeKey: {e}")))?;
    let credential = state
        .manager
        .send(Enroll {
            name: body.name.clone(),
            address: body.address,
            node_key,
            replace: body.replace,
            protocol: body.protocol,
            admin,
        })
        .await??;
    Ok(HttpResponse::Created()
        .json(serde_json::json!({ "Name": body.name, "Credential": credential.expose() })))
}

async fn metrics(
    state: web::Data<ManagerState>,
    registry: web::Data<prometheus_client::registry::Registry>,
) -> Result<HttpResponse, ApiError> {
    state.manager.send(Observe).await?;
    Ok(super::metrics_answer(&registry))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "Status": "ok", "Role": "manager" }))
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test};
    use cube_actors::manager::ManagerConfig;
    use cube_actors::store::Store;

    use super::*;

    async fn state(in_flight: usize, max: usize) -> ManagerState {
        state_with(in_flight, max, ManagerConfig::default()).await
    }

    async fn state_with(in_flight: usize, max: usize, config: ManagerConfig) -> ManagerState {
        let (waiting, max_waiting) = (config.waiting.clone(), config.max_waiting);
        let manager = Manager::start(config, Store::memory()).await.unwrap();
        ManagerState {
            manager,
            in_flight: Arc::new(AtomicUsize::new(in_flight)),
            max_in_flight: max,
            waiting,
            max_waiting,
            admission: Default::default(),
        }
    }

    fn manager_app(
        state: ManagerState,
    ) -> App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        App::new()
            .app_data(web::Data::new(state))
            .app_data(crate::api::json_config())
            .configure(config)
    }

    fn submission() -> test::TestRequest {
        test::TestRequest::post()
            .uri("/tasks")
            .set_json(serde_json::json!({"State": 2, "Task": {"Image": "x"}}))
    }

    /// With as many submissions in flight as allowed, the next one is refused with 429 and a
    /// Retry-After, and nothing is stored; below the limit it is accepted.
    #[actix_rt::test]
    async fn a_busy_manager_answers_429_with_retry_after() {
        let app = test::init_service(manager_app(state(4, 4).await)).await;
        let resp = test::call_service(&app, submission().to_request()).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers().get("Retry-After").unwrap(), "1");
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert_eq!(body["HTTPStatusCode"], 429);
        let list =
            test::call_service(&app, test::TestRequest::get().uri("/tasks").to_request()).await;
        let tasks: serde_json::Value = test::read_body_json(list).await;
        assert_eq!(tasks, serde_json::json!([]));

        let app = test::init_service(manager_app(state(3, 4).await)).await;
        let resp = test::call_service(&app, submission().to_request()).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }

    /// A task binding a host port below 1024 is refused with 400 naming the setting, unless the
    /// cluster allows it.
    #[actix_rt::test]
    async fn privileged_host_ports_need_the_clusters_permission() {
        let low = serde_json::json!({"State": 2, "Task": {"Image": "x", "PortBindings": {"80/tcp": "80"}}});
        let app = test::init_service(manager_app(state(0, 4).await)).await;
        let request = test::TestRequest::post().uri("/tasks").set_json(&low);
        let resp = test::call_service(&app, request.to_request()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = test::read_body_json(resp).await;
        let message = body["Message"].as_str().unwrap();
        assert!(message.contains("allow_privileged_ports"), "{message}");

        let allowed = ManagerConfig {
            allow_privileged_ports: true,
            ..ManagerConfig::default()
        };
        let app = test::init_service(manager_app(state_with(0, 4, allowed).await)).await;
        let request = test::TestRequest::post().uri("/tasks").set_json(&low);
        let resp = test::call_service(&app, request.to_request()).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }

    /// With as many tasks waiting to start as the cluster allows (here: no node to run them),
    /// the next submission gets 429 with Retry-After and a message, and is not stored.
    #[actix_rt::test]
    async fn a_backlog_of_waiting_tasks_answers_429() {
        let config = ManagerConfig {
            max_waiting: 2,
            ..ManagerConfig::default()
        };
        let app = test::init_service(manager_app(state_with(0, 64, config).await)).await;
        for _ in 0..2 {
            let resp = test::call_service(&app, submission().to_request()).await;
            assert_eq!(resp.status(), StatusCode::CREATED);
        }
        let resp = test::call_service(&app, submission().to_request()).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers().get("Retry-After").unwrap(), "1");
        let body: serde_json::Value = test::read_body_json(resp).await;
        assert!(
            body["Message"]
                .as_str()
                .unwrap()
                .contains("waiting to start"),
            "{body}"
        );
        let list =
            test::call_service(&app, test::TestRequest::get().uri("/tasks").to_request()).await;
        let tasks: serde_json::Value = test::read_body_json(list).await;
        assert_eq!(tasks.as_array().unwrap().len(), 2);
    }
}
