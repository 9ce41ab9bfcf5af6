//! The guard in front of every route: a token on every request but `GET /health`, no use from
//! another origin (a web page the user happens to open), JSON bodies only, and no oversize body.
//!
//! The checks, in order, each with its own status: another origin (403), a declared body over
//! [`MAX_BODY`] (413), no token or a wrong one (401, with `WWW-Authenticate`), a token that may
//! not do this (403: a join token only enrolls workers, a metrics token only reads metrics), a
//! body that is not `application/json` (415).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, ResponseError as _};
use cube_actors::secret::{Access, Keys};

use super::{ApiError, MAX_BODY, is_json, not_json};

/// The middleware: refuses what [`check`] refuses, passes the rest on.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match check(&req) {
        Ok(()) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(refused) => {
            let response = refused.error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// Whether a request may go through.
fn check(req: &ServiceRequest) -> Result<(), ApiError> {
    if req.method() == Method::GET && is_open(req.path()) {
        return Ok(());
    }
    same_origin(req)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY} bytes"),
        ));
    }
    let Some(keys) = req.app_data::<Keys>() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the server has no keys to check tokens with",
        ));
    };
    let access = match bearer(req) {
        None => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this API needs a token: send `Authorization: Bearer TOKEN` (`cube token` prints the cluster's)",
            ));
        }
        Some(token) => keys.check(token).ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "the token is not valid here")
        })?,
    };
    let allowed = match access {
        Access::Full | Access::Manager => true,
        Access::Join => req.method() == Method::POST && req.path() == "/nodes",
        Access::Metrics => req.method() == Method::GET && req.path() == "/metrics",
    };
    // The handlers may ask what the caller may do (enrollment: `replace` of a live node).
    req.extensions_mut().insert(access);
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            match access {
                Access::Join => "a join token only enrolls workers (POST /nodes)",
                _ => "a metrics token only reads metrics (GET /metrics)",
            },
        ));
    }
    json_only(req)
}

/// The paths anyone may GET: the health check, and the dashboard's page and files (which hold
/// no data: the page asks for a token and sends it with each request of its own).
fn is_open(path: &str) -> bool {
    path == "/health" || path == "/" || path.starts_with("/ui/")
}

/// The token of an `Authorization: Bearer` header.
fn bearer(req: &ServiceRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Refuses a request a browser sends on behalf of a page of another origin: an `Origin` that is
/// not this server's own, or `Sec-Fetch-Site` saying so.
fn same_origin(req: &ServiceRequest) -> Result<(), ApiError> {
    let refuse = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-origin requests are refused: call this API from a command line or the manager's own page",
        )
    };
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refuse());
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().map_err(|_| refuse())?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    if host.is_empty() || !authority.eq_ignore_ascii_case(host) {
        return Err(refuse());
    }
    Ok(())
}

/// A request with a body must say it is JSON (`application/json`, or `application/...+json`);
/// one without a body (`curl -X POST`, a DELETE) needs no content type.
fn json_only(req: &ServiceRequest) -> Result<(), ApiError> {
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let content_type = headers.contains_key(header::CONTENT_TYPE);
    if !has_body && !content_type {
        return Ok(());
    }
    match req.mime_type() {
        Ok(Some(m)) if is_json(&m) => Ok(()),
        _ => Err(not_json()),
    }
}
