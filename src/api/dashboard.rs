//! The dashboard: one page and its script and style, embedded in the binary and served by the
//! manager at `/` (no build step: plain HTML, CSS and JavaScript in `dashboard/`).
//!
//! The files hold no data and need no token. The page asks for the token, keeps it for the
//! browser session (`sessionStorage`) and sends it in the `Authorization` header of its own
//! requests: it loads the nodes and tasks once, then follows `GET /events?nodes=true` with
//! `fetch()` streaming (a browser's `EventSource` cannot send a header) and changes its tables
//! from the events alone. Its actions (run a task, stop one) send JSON.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::ApiError;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// What the dashboard's files may do: only this server's own scripts, styles and requests.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `GET /`: the page.
pub async fn page() -> HttpResponse {
    file("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/{file}`: its script and style.
pub async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    match name.as_str() {
        "app.js" => Ok(file("text/javascript; charset=utf-8", SCRIPT)),
        "style.css" => Ok(file("text/css; charset=utf-8", STYLE)),
        other => Err(ApiError::not_found(format!(
            "the dashboard has no file {other:?}"
        ))),
    }
}
