//! The HTTP edge: actix-web routes that turn requests into actor messages.
//!
//! Architecture invariant: only this module knows HTTP. Every error leaves as a status code and a
//! JSON body ([`ErrorBody`]); bodies over [`MAX_BODY`] are refused with 413.

pub mod admission;
pub mod dashboard;
mod error;
pub mod events;
pub mod guard;
pub mod manager;
pub mod worker;

use actix_web::error::JsonPayloadError;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use cube_actors::runtime::LogQuery;
use cube_actors::telemetry::HttpMetrics;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use uuid::Uuid;

pub use error::{ApiError, ErrorBody};

/// The largest request body accepted, in bytes.
pub const MAX_BODY: usize = 1 << 20;

/// Whether a media type is JSON: `application/json`, or `application/...+json`.
pub fn is_json(m: &actix_web::mime::Mime) -> bool {
    m.type_() == actix_web::mime::APPLICATION
        && (m.subtype() == actix_web::mime::JSON || m.suffix() == Some(actix_web::mime::JSON))
}

/// The refusal of a body that is not JSON (415).
pub fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "request bodies must be JSON, sent with `Content-Type: application/json` (curl: --json)",
    )
}

/// JSON extraction with a size limit and errors in the API's format.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY)
        // The guard already refuses other bodies; this also covers an HTTP/2 body that has no
        // length to tell the guard it is there.
        .content_type_required(true)
        .content_type(|m| is_json(&m))
        .error_handler(|err, _req| {
            let api = match &err {
                JsonPayloadError::Overflow { limit }
                | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {limit} bytes"),
                ),
                JsonPayloadError::Deserialize(e) => {
                    ApiError::bad_request(format!("invalid JSON body: {e}"))
                }
                JsonPayloadError::ContentType => not_json(),
                other => ApiError::bad_request(format!("cannot read the request body: {other}")),
            };
            api.into()
        })
}

/// Query-string extraction with errors in the API's format.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::bad_request(format!("invalid query string: {err}")).into()
    })
}

/// Query of `GET /tasks/{id}/logs`: `tail` (default 100), `since` (Unix seconds),
/// `timestamps` (prefix each line with its time).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    tail: Option<usize>,
    since: Option<i64>,
    timestamps: Option<bool>,
    /// The previous attempt's container.
    pub previous: Option<bool>,
}

impl LogsParams {
    /// The runtime's query, with defaults and bounds applied.
    pub fn into_query(&self) -> LogQuery {
        LogQuery {
            tail: self.tail.unwrap_or(100).min(100_000),
            since: self.since,
            timestamps: self.timestamps.unwrap_or(false),
        }
    }
}

/// Reads a task id from a path segment.
/// The header of a listing's answer that holds the cursor of its next page.
pub const NEXT_CURSOR: &str = "Cube-Next-Cursor";

/// The options of `DELETE /tasks/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Remove the finished task instead of stopping it.
    pub purge: Option<bool>,
    /// (Worker) act only on a copy of this placement or older.
    pub placement: Option<u64>,
    /// (Worker) the copy is stale: the task was placed again.
    pub stale: Option<bool>,
}

pub fn parse_task_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{raw}` is not a task ID (a UUID such as 21b23589-5d2d-4731-b5c9-a97e9832d021)"
        ))
    })
}

/// The most bytes of output a logs answer carries: the last ones, when there are more.
pub const MAX_LOG_BYTES: usize = 4 << 20;

/// The header set on a logs answer cut to [`MAX_LOG_BYTES`].
pub const LOGS_TRUNCATED: &str = "Cube-Logs-Truncated";

/// A logs answer: the text, cut to its last [`MAX_LOG_BYTES`] bytes (at a line start when there
/// is one, else at a character boundary), with [`LOGS_TRUNCATED`] set when cut.
pub fn log_text(text: String) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response.content_type("text/plain; charset=utf-8");
    if text.len() <= MAX_LOG_BYTES {
        return response.body(text);
    }
    let mut start = text.len() - MAX_LOG_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    if let Some(newline) = text[start..].find('\n') {
        start += newline + 1;
    }
    response.insert_header((LOGS_TRUNCATED, "true"));
    response.body(text[start..].to_string())
}

/// One route: its method, its path, and the handler behind them.
pub type RouteEntry = (Method, &'static str, actix_web::Route);

/// The route `method path` to `handler`.
pub fn route<F, Args>(method: Method, path: &'static str, handler: F) -> RouteEntry
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    (method.clone(), path, web::method(method).to(handler))
}

/// Builds the router from a list of routes (method, path, handler): one resource per path, in
/// the order first seen, answering 405 for the other methods.
pub fn register(
    cfg: &mut web::ServiceConfig,
    routes: Vec<(Method, &'static str, actix_web::Route)>,
) {
    let mut paths: Vec<(&'static str, Vec<actix_web::Route>)> = Vec::new();
    for (_, path, route) in routes {
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, list)) => list.push(route),
            None => paths.push((path, vec![route])),
        }
    }
    for (path, list) in paths {
        let mut resource = web::resource(path);
        for route in list {
            resource = resource.route(route);
        }
        cfg.service(resource.default_service(web::to(method_not_allowed)));
    }
}

/// The answer for a method a route does not have (`PUT /tasks`).
pub async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.path()),
    ))
}

/// The answer for a route that does not exist.
pub async fn no_route(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// The middleware that counts every request by method, route pattern and status (in
/// [`HttpMetrics`]), refused ones included.
pub async fn count_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let began = std::time::Instant::now();
    let http = req.app_data::<HttpMetrics>().cloned();
    let method = method_label(req.method());
    let res = next.call(req).await?;
    if let Some(http) = http {
        // The pattern of the route that answered (after a trailing slash was trimmed).
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        let seconds = began.elapsed().as_secs_f64();
        http.answered(method, route, res.status().as_u16(), seconds);
    }
    Ok(res)
}

/// A method as a label value: the standard ones by name, any other as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// `GET /metrics`: the node's metrics in the OpenMetrics text format.
pub fn metrics_answer(registry: &Registry) -> HttpResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(e) => actix_web::ResponseError::error_response(&ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log answer over the cap keeps its last bytes, from a line start, and says it was cut.
    #[actix_rt::test]
    async fn log_answers_are_capped_to_their_last_bytes() {
        let line = "0123456789abcdef\n";
        let text = line.repeat(MAX_LOG_BYTES / line.len() + 1000);
        let resp = log_text(text.clone());
        assert_eq!(resp.headers().get(LOGS_TRUNCATED).unwrap(), "true");
        let body = actix_web::body::to_bytes(resp.into_body()).await.unwrap();
        assert!(body.len() <= MAX_LOG_BYTES);
        assert!(
            body.starts_with(line.as_bytes())
                && text.ends_with(std::str::from_utf8(&body).unwrap())
        );
        let small = log_text("short\n".into());
        assert!(small.headers().get(LOGS_TRUNCATED).is_none());
    }
}
