//! The error envelope of SPEC section 6: `{"status":"error","code":...,"message":...}` with
//! the code's status. Internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::engine::metrics::{Bound, Granularity, RangeError};
use crate::engine::{EngineError, EventError};

/// The stable, machine-readable kind of an error answer. Clients branch on these; the
/// message beside them is for people and may be reworded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidParameter,
    InvalidBody,
    InvalidEvents,
    RangeNotServable,
    UnknownAccount,
    InvalidApiKey,
    ExpiredApiKey,
    InsufficientScope,
    AccountNotAllowed,
    AdminDisabled,
    MissingSignature,
    BadSignature,
    VerificationFailed,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedContentType,
    RateLimited,
    Overloaded,
    StorageUnavailable,
    Internal,
}

impl ErrorCode {
    /// Every code with its one status and when it is answered: the table docs/api.md repeats.
    pub const TABLE: &'static [(ErrorCode, u16, &'static str)] = &[
        (
            ErrorCode::InvalidParameter,
            400,
            "a query parameter that is unknown, repeated or has a value that is not allowed",
        ),
        (
            ErrorCode::InvalidBody,
            400,
            "a body that is not JSON, not of the expected shape, or has a field that is not allowed",
        ),
        (
            ErrorCode::InvalidEvents,
            400,
            "events that fail validation (`errors: [{index, message}]`), history without `?backfill=true` among them; nothing is applied",
        ),
        (
            ErrorCode::RangeNotServable,
            400,
            "a range that cannot be served as asked: the kept tiers cannot serve it exactly (the message says what they can), its start is not before its end, an hourly timeline starts off the hour, it holds more than 10000 timeline buckets, or it (or its timeline's last bucket) reaches beyond the years -9999 to 9999",
        ),
        (
            ErrorCode::InvalidApiKey,
            401,
            "no organization or master key, or a key that is not known",
        ),
        (
            ErrorCode::ExpiredApiKey,
            401,
            "a key or share link whose `expires_at` has passed",
        ),
        (
            ErrorCode::InsufficientScope,
            403,
            "a key of a scope that does not cover the route (or a share link on a route that is not a read); the message names the scope needed",
        ),
        (
            ErrorCode::AccountNotAllowed,
            403,
            "events of accounts outside an account-limited ingest key's list (named); nothing of the request is applied",
        ),
        (
            ErrorCode::AdminDisabled,
            401,
            "an admin route (or `GET /metrics` without `--metrics-open`) on a server started without a master key",
        ),
        (
            ErrorCode::MissingSignature,
            401,
            "a webhook update without `X-Hub-Signature-256`",
        ),
        (
            ErrorCode::BadSignature,
            403,
            "a malformed webhook signature, or one that does not match the account's app secret",
        ),
        (
            ErrorCode::VerificationFailed,
            403,
            "a webhook handshake with a wrong mode or verify token",
        ),
        (
            ErrorCode::UnknownAccount,
            404,
            "an account id the organization has not registered or used",
        ),
        (
            ErrorCode::NotFound,
            404,
            "an unknown route, or a kept webhook payload that does not exist",
        ),
        (
            ErrorCode::MethodNotAllowed,
            405,
            "a known route with a method it does not have; `Allow` lists those it has",
        ),
        (
            ErrorCode::Conflict,
            409,
            "an account id or `phone_number_id` already registered",
        ),
        (
            ErrorCode::PayloadTooLarge,
            413,
            "a body larger than `--max-body-bytes`",
        ),
        (
            ErrorCode::UnsupportedContentType,
            415,
            "`POST /api/events` with a content type other than JSON or NDJSON",
        ),
        (
            ErrorCode::RateLimited,
            429,
            "a key or share link over `--rate-limit`; `Retry-After` says how many seconds to wait",
        ),
        (
            ErrorCode::Internal,
            500,
            "an internal error, logged on the server; the message is only `internal error`",
        ),
        (
            ErrorCode::Overloaded,
            503,
            "the write queue is full; `Retry-After: 1`",
        ),
        (
            ErrorCode::StorageUnavailable,
            503,
            "the store cannot serve now: its disk is full, its file system is read-only or failing, or its database is unreachable or restarting; `Retry-After` says when to try again, and events posted again are counted once",
        ),
    ];

    pub fn status(self) -> StatusCode {
        Self::TABLE
            .iter()
            .find(|(c, _, _)| *c == self)
            .and_then(|(_, s, _)| StatusCode::from_u16(*s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidEvents => "invalid_events",
            ErrorCode::RangeNotServable => "range_not_servable",
            ErrorCode::UnknownAccount => "unknown_account",
            ErrorCode::InvalidApiKey => "invalid_api_key",
            ErrorCode::ExpiredApiKey => "expired_api_key",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::AccountNotAllowed => "account_not_allowed",
            ErrorCode::AdminDisabled => "admin_disabled",
            ErrorCode::MissingSignature => "missing_signature",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::VerificationFailed => "verification_failed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedContentType => "unsupported_content_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// The `Retry-After` of a `storage_unavailable` answer, in seconds: about the time a
/// restarting database takes to accept connections again.
pub const STORAGE_RETRY_AFTER_SECS: u64 = 5;

/// An error answer: its code, the message for people and, for invalid events, each one's.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub errors: Vec<EventError>,
    retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParameter, message)
    }

    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidBody, message)
    }

    pub fn rate_limited(wait_secs: u64) -> Self {
        ApiError {
            retry_after: Some(wait_secs),
            ..Self::new(
                ErrorCode::RateLimited,
                format!("too many requests; retry after {wait_secs} s"),
            )
        }
    }

    /// The store cannot serve now: logged in full; the client learns to retry after
    /// [`STORAGE_RETRY_AFTER_SECS`].
    pub fn storage_unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(%detail, "storage unavailable");
        ApiError {
            retry_after: Some(STORAGE_RETRY_AFTER_SECS),
            ..Self::new(
                ErrorCode::StorageUnavailable,
                format!(
                    "the store cannot serve requests now (its disk is full or read-only, or its database is unreachable); retry after {STORAGE_RETRY_AFTER_SECS} s"
                ),
            )
        }
    }

    /// Logged in full; the client only learns that it happened.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

/// Names the query parameter a range refusal is about, as the client wrote it.
fn range_error(e: RangeError) -> ApiError {
    const POINT: &str = "a date YYYY-MM-DD or an RFC 3339 instant such as 2024-01-01T00:00:00Z";
    match e {
        RangeError::UnknownTimeZone(name) => ApiError::invalid_parameter(format!(
            "parameter `tz` is `{name}`; allowed: an IANA time zone name such as Asia/Kolkata or UTC"
        )),
        RangeError::InvalidBound { bound, value } => {
            let name = match bound {
                Bound::Start => "start_date",
                Bound::End => "end_date",
            };
            ApiError::invalid_parameter(format!(
                "parameter `{name}` is `{value}`; allowed: {POINT}"
            ))
        }
        // The refusals of a range as a whole (not of one parameter's value) share the code of
        // the tiers' refusal: what is asked cannot be served, and the message says why.
        RangeError::Empty => ApiError::new(
            ErrorCode::RangeNotServable,
            "parameter `start_date` must be before `end_date` (end_date as a date is inclusive)",
        ),
        RangeError::NotServable(message) => ApiError::new(ErrorCode::RangeNotServable, message),
        RangeError::BeyondCalendar => ApiError::new(
            ErrorCode::RangeNotServable,
            "the range reaches beyond the years -9999 to 9999 that dates can hold (with no `start_date`, it starts 30 days before `end_date`; a timeline's last week or month must end within them too); narrow it",
        ),
        RangeError::TooManyBuckets { limit, granularity } => ApiError::new(
            ErrorCode::RangeNotServable,
            format!(
                "the range holds more than {limit} {} buckets; narrow it or choose a coarser granularity",
                granularity.as_str()
            ),
        ),
        RangeError::NotOnTheHour(start) => ApiError::new(
            ErrorCode::RangeNotServable,
            format!(
                "granularity={} needs a range that starts on the hour; `start_date` is {start}",
                Granularity::Hour.as_str()
            ),
        ),
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::BadRequest(m) => ApiError::invalid_body(m),
            EngineError::InvalidEvents { errors, .. } => {
                let message = format!("{} invalid event(s); nothing was applied", errors.len());
                ApiError {
                    errors,
                    ..ApiError::new(ErrorCode::InvalidEvents, message)
                }
            }
            EngineError::Range(r) => range_error(r),
            EngineError::NotFound(m) => ApiError::new(ErrorCode::NotFound, m),
            EngineError::UnknownAccount(m) => ApiError::new(ErrorCode::UnknownAccount, m),
            EngineError::Unauthorized(m) => ApiError::new(ErrorCode::InvalidApiKey, m),
            EngineError::MissingSignature(m) => ApiError::new(ErrorCode::MissingSignature, m),
            EngineError::BadSignature(m) => ApiError::new(ErrorCode::BadSignature, m),
            EngineError::Forbidden(m) => ApiError::new(ErrorCode::VerificationFailed, m),
            EngineError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            e @ EngineError::AccountsNotAllowed(_) => {
                ApiError::new(ErrorCode::AccountNotAllowed, e.to_string())
            }
            EngineError::Overloaded => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    ErrorCode::Overloaded,
                    "the server is overloaded; retry shortly",
                )
            },
            EngineError::Unavailable(m) => ApiError::storage_unavailable(m),
            EngineError::Internal(m) => ApiError::internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = if self.code == ErrorCode::InvalidEvents {
            json!({"status": "error", "code": self.code, "message": self.message, "errors": self.errors})
        } else {
            json!({"status": "error", "code": self.code, "message": self.message})
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_row_with_a_client_error_or_server_error_status() {
        for (code, status, when) in ErrorCode::TABLE {
            assert_eq!(
                ErrorCode::TABLE
                    .iter()
                    .filter(|(c, _, _)| c == code)
                    .count(),
                1,
                "{code:?}"
            );
            assert!((400..600).contains(status), "{code:?}");
            assert!(!when.is_empty());
            assert_eq!(code.status().as_u16(), *status);
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::Value::String(code.as_str().into()))
            );
        }
        assert_eq!(ErrorCode::TABLE.len(), 22);
    }

    #[test]
    fn the_docs_table_lists_every_code_with_its_status() {
        let docs = include_str!("../../docs/api.md");
        for (code, status, _) in ErrorCode::TABLE {
            let row = format!("| `{}` | {status} |", code.as_str());
            assert!(docs.contains(&row), "docs/api.md lacks the row {row}");
        }
    }
}
