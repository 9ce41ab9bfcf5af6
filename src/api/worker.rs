//! The worker's HTTP API (the book's, plus logs and health).
//!
//! | route | answer |
//! |---|---|
//! | `POST /tasks` | a TaskEvent; 201 with the task as stored (Scheduled); `State: 3` stops it |
//! | `GET /tasks` | every task, always a JSON array |
//! | `GET /tasks/{id}` | the task and its container's live state |
//! | `DELETE /tasks/{id}[?placement=N]` | stops the task (of that placement or older); 200 with the task, now Completed |
//! | `DELETE /tasks/{id}?purge=true[&placement=N]` | forgets a finished task and removes its container; 204 |
//! | `GET /sync?epoch=E&revision=R&wait_ms=W` | the task changes after that cursor, as a long poll (the manager's feed) |
//! | `GET /tasks/{id}/logs?tail=N` | the container's last N lines of output (text) |
//! | `GET /stats` | the latest metrics sample |
//! | `GET /node` | the worker's name, capacity and runtime (what a manager asks on connecting) |
//! | `GET /health` | 200 while the worker runs |

use actix::Addr;
use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use cube_actors::task::{Desired, TaskEvent};
use cube_actors::telemetry::MachineMetrics;
use std::time::Duration;

use cube_actors::worker::feed::Cursor;
use cube_actors::worker::{
    ForgetTask, GetNodeInfo, GetTask, ListTasks, RunTask, Sample, StopTask, Sync, TaskLogs, Worker,
    WorkerStats,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    ApiError, DeleteParams, LogsParams, RouteEntry, log_text, parse_task_id, register, route,
};

/// The longest a sync may wait for a change.
const MAX_SYNC_WAIT: Duration = Duration::from_secs(60);

/// What the worker's handlers talk to.
#[derive(Clone)]
pub struct WorkerState {
    /// The worker actor.
    pub worker: Addr<Worker>,
    /// The worker's name (for `/health`).
    pub name: String,
    /// Its machine's gauges, set from its latest sample when `GET /metrics` is read.
    pub machine: MachineMetrics,
}

/// Every route of the worker: method, path, handler. The router is built from this list, and
/// the tests enumerate it (see [`route_list`]).
fn routes() -> Vec<RouteEntry> {
    vec![
        route(Method::POST, "/tasks", submit),
        route(Method::GET, "/tasks", list),
        route(Method::GET, "/tasks/{id}", get),
        route(Method::DELETE, "/tasks/{id}", stop),
        route(Method::GET, "/tasks/{id}/logs", logs),
        route(Method::GET, "/sync", sync),
        route(Method::GET, "/stats", stats),
        route(Method::GET, "/node", node),
        route(Method::GET, "/metrics", metrics),
        route(Method::GET, "/health", health),
    ]
}

/// Registers the worker routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    register(cfg, routes());
}

/// The method and path of every worker route.
pub fn route_list() -> Vec<(Method, &'static str)> {
    routes().into_iter().map(|(m, p, _)| (m, p)).collect()
}

async fn submit(
    state: web::Data<WorkerState>,
    event: web::Json<TaskEvent>,
) -> Result<HttpResponse, ApiError> {
    let event = event.into_inner();
    match event.desired()? {
        Desired::Run => {
            let task = state.worker.send(RunTask(event.task)).await??;
            Ok(HttpResponse::Created().json(task))
        }
        Desired::Stop => {
            let task = state.worker.send(StopTask::any(event.task.id)).await??;
            Ok(HttpResponse::Ok().json(task))
        }
    }
}

async fn list(state: web::Data<WorkerState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.worker.send(ListTasks).await??))
}

async fn get(
    state: web::Data<WorkerState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&id)?;
    Ok(HttpResponse::Ok().json(state.worker.send(GetTask(id)).await??))
}

async fn stop(
    state: web::Data<WorkerState>,
    id: web::Path<String>,
    params: web::Query<DeleteParams>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&id)?;
    let placement = params.placement;
    if params.purge.unwrap_or(false) {
        state.worker.send(ForgetTask { id, placement }).await??;
        return Ok(HttpResponse::NoContent().finish());
    }
    let stale = params.stale.unwrap_or(false);
    let stop = StopTask {
        id,
        placement,
        stale,
    };
    Ok(HttpResponse::Ok().json(state.worker.send(stop).await??))
}

/// The cursor and wait of `GET /sync`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncParams {
    epoch: Option<Uuid>,
    revision: Option<u64>,
    wait_ms: Option<u64>,
}

async fn sync(
    state: web::Data<WorkerState>,
    params: web::Query<SyncParams>,
) -> Result<HttpResponse, ApiError> {
    let params = params.into_inner();
    let cursor = match (params.epoch, params.revision) {
        (Some(epoch), Some(revision)) => Some(Cursor { epoch, revision }),
        (None, None) => None,
        _ => {
            return Err(ApiError::bad_request(
                "a sync cursor needs both `epoch` and `revision`, or neither",
            ));
        }
    };
    let wait = Duration::from_millis(params.wait_ms.unwrap_or(0)).min(MAX_SYNC_WAIT);
    let reply = state.worker.send(Sync { cursor, wait }).await??;
    Ok(HttpResponse::Ok().json(reply))
}

async fn logs(
    state: web::Data<WorkerState>,
    id: web::Path<String>,
    query: web::Query<LogsParams>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&id)?;
    let previous = query.previous.unwrap_or(false);
    let query = query.into_inner().into_query();
    let text = state
        .worker
        .send(TaskLogs {
            id,
            query,
            previous,
        })
        .await??;
    Ok(log_text(text))
}

async fn stats(state: web::Data<WorkerState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.worker.send(WorkerStats).await??))
}

async fn node(state: web::Data<WorkerState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.worker.send(GetNodeInfo).await??))
}

async fn metrics(
    state: web::Data<WorkerState>,
    registry: web::Data<prometheus_client::registry::Registry>,
) -> Result<HttpResponse, ApiError> {
    // A worker with no collector has no machine figures: its other metrics stand.
    if let Ok(sample) = state.worker.send(Sample).await? {
        state.machine.observe(&sample);
    }
    Ok(super::metrics_answer(&registry))
}

async fn health(state: web::Data<WorkerState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "Status": "ok", "Name": state.name }))
}
