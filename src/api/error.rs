//! Errors at the HTTP edge: a status code and the book's JSON error body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use cube_actors::manager::ManagerError;
use cube_actors::runtime::RuntimeError;
use cube_actors::store::StoreError;
use cube_actors::worker::WorkerError;
use serde::{Deserialize, Serialize};

/// The JSON body of every error response (the book's `ErrResponse`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The HTTP status code, repeated in the body.
    #[serde(rename = "HTTPStatusCode")]
    pub status: u16,
    /// What is wrong, in words.
    #[serde(rename = "Message")]
    pub message: String,
}

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer realm=\"cube\""));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.insert_header(("Retry-After", "1"));
        }
        response.json(ErrorBody {
            status: self.status.as_u16(),
            message: self.message.clone(),
        })
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let status = match e {
            RuntimeError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RuntimeError::ImageUnavailable { .. } | RuntimeError::Failed { .. } => {
                StatusCode::BAD_GATEWAY
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<WorkerError> for ApiError {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::NotFound(_) => ApiError::not_found(e.to_string()),
            WorkerError::Invalid(_) => ApiError::bad_request(e.to_string()),
            WorkerError::Conflict(_) | WorkerError::Transition(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            WorkerError::Runtime(e) => e.into(),
            WorkerError::Store(e) => e.into(),
            WorkerError::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            WorkerError::Unreachable(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::NotFound(_) | ManagerError::NodeNotFound(_) => {
                ApiError::not_found(e.to_string())
            }
            ManagerError::Invalid(_) => ApiError::bad_request(e.to_string()),
            ManagerError::Conflict(_) | ManagerError::Transition(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            ManagerError::Worker {
                ref node,
                ref error,
            } => {
                let inner = ApiError::from(error.clone());
                ApiError::new(inner.status, format!("node {node}: {}", inner.message))
            }
            ManagerError::Store(e) => e.into(),
            ManagerError::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            ManagerError::Busy(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        }
    }
}

impl From<cube_actors::task::InvalidTask> for ApiError {
    fn from(e: cube_actors::task::InvalidTask) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service shutting down: {e}"),
        )
    }
}
