//! The worker's HTTP API (the book's, plus logs and health).
//!
//! | route | answer |
//! |---|---|
//! | `POST /tasks` | a TaskEvent; 201 with the task as stored (Scheduled); `State: 3` stops it |
//! | `GET /tasks` | every task, always a JSON array |
//! | `GET /tasks/{id}` | the task and its container's live state |
//! | `DELETE /tasks/{id}` | stops the task; 200 with the task, now Completed |
//! | `GET /tasks/{id}/logs?tail=N` | the container's last N lines of output (text) |
//! | `GET /stats` | the latest metrics sample |
//! | `GET /node` | the worker's name, capacity and runtime (what a manager asks on connecting) |
//! | `GET /health` | 200 while the worker runs |

use actix::Addr;
use actix_web::{HttpResponse, web};
use cube_actors::task::{Desired, TaskEvent};
use cube_actors::worker::{
    GetNodeInfo, GetTask, ListTasks, RunTask, StopTask, TaskLogs, Worker, WorkerStats,
};

use super::{ApiError, LogsParams, method_not_allowed, parse_task_id};

/// What the worker's handlers talk to.
#[derive(Clone)]
pub struct WorkerState {
    /// The worker actor.
    pub worker: Addr<Worker>,
    /// The worker's name (for `/health`).
    pub name: String,
}

/// Registers the worker routes.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/tasks")
            .route(web::post().to(submit))
            .route(web::get().to(list))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/tasks/{id}")
            .route(web::get().to(get))
            .route(web::delete().to(stop))
            .default_service(web::to(method_not_allowed)),
    )
    .route("/tasks/{id}/logs", web::get().to(logs))
    .route("/stats", web::get().to(stats))
    .route("/node", web::get().to(node))
    .route("/health", web::get().to(health));
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
            let task = state.worker.send(StopTask(event.task.id)).await??;
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
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&id)?;
    Ok(HttpResponse::Ok().json(state.worker.send(StopTask(id)).await??))
}

async fn logs(
    state: web::Data<WorkerState>,
    id: web::Path<String>,
    query: web::Query<LogsParams>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_task_id(&id)?;
    let query = query.into_inner().into_query();
    let text = state.worker.send(TaskLogs { id, query }).await??;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(text))
}

async fn stats(state: web::Data<WorkerState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.worker.send(WorkerStats).await??))
}

async fn node(state: web::Data<WorkerState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.worker.send(GetNodeInfo).await??))
}

async fn health(state: web::Data<WorkerState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "Status": "ok", "Name": state.name }))
}
