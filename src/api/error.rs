//! The error envelope of SPEC section 6: `{"status":"error","message":...}` with a
//! fitting status. Internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::{EngineError, EventError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    InvalidEvents {
        message: String,
        errors: Vec<EventError>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests; retry after {0} s")]
    TooManyRequests(u64),
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    #[error("internal error")]
    Internal(String),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::BadRequest(m) => ApiError::BadRequest(m),
            EngineError::InvalidEvents(errors) => {
                let message = format!("{} invalid event(s); nothing was applied", errors.len());
                ApiError::InvalidEvents { message, errors }
            }
            EngineError::NotFound(m) => ApiError::NotFound(m),
            EngineError::Unauthorized(m) => ApiError::Unauthorized(m),
            EngineError::Forbidden(m) => ApiError::Forbidden(m),
            EngineError::Conflict(m) => ApiError::Conflict(m),
            e @ EngineError::AccountsNotAllowed(_) => ApiError::Forbidden(e.to_string()),
            EngineError::Overloaded => ApiError::Overloaded,
            EngineError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidEvents { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::InvalidEvents { message, errors } => {
                json!({"status": "error", "message": message, "errors": errors})
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                json!({"status": "error", "message": "internal error"})
            }
            other => json!({"status": "error", "message": other.to_string()}),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let retry = match &self {
            ApiError::TooManyRequests(s) => Some(*s),
            ApiError::Overloaded => Some(1),
            _ => None,
        };
        if let Some(s) = retry
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
