//! `GET /metrics`, the Prometheus text an operator scrapes, and the middleware that counts
//! and times every request by its route template. The series are in `crate::telemetry`.

use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::MasterKey;
use super::error::ApiError;
use crate::telemetry::{self, Gauges};

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsAccess {
    /// The master key, as the admin routes (the default).
    #[default]
    MasterKey,
    /// Anyone who can reach the server (`--metrics-open`).
    Open,
}

/// The caller may read the metrics: they are open, or the master key was presented.
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.metrics == MetricsAccess::Open {
            return Ok(MetricsReader);
        }
        MasterKey::from_request_parts(parts, state).await?;
        Ok(MetricsReader)
    }
}

/// Prometheus' text exposition format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[utoipa::path(get, path = "/metrics", tag = "meta",
    security(("master_key" = [])),
    responses((status = 200, description = "The server's series in Prometheus' text format (see docs/api.md); needs the master key unless the server runs with --metrics-open", content_type = "text/plain", body = String),
        (status = "4XX", description = "Refused", body = super::doc::Failure)))]
pub(super) async fn metrics(
    State(state): State<AppState>,
    _: MetricsReader,
) -> Result<Response, ApiError> {
    let handle = telemetry::recorder().map_err(ApiError::internal)?;
    // The gauges of what is stored are read now; a store that cannot answer leaves them
    // at their last value, so that the rest of the scrape still arrives.
    let services = &state.services;
    let (unrouted, outbox) = tokio::join!(
        services.webhook.unrouted_count(),
        services.forwarding.totals()
    );
    let mut gauges = Gauges {
        stream_connections: state.streams.open() as u64,
        ..Gauges::default()
    };
    match unrouted {
        Ok(n) => gauges.unrouted_payloads = n,
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count kept webhook payloads"),
    }
    match outbox {
        Ok(t) => (gauges.forwarding_pending, gauges.forwarding_failed) = (t.pending, t.failed),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count the outbox's deliveries"),
    }
    telemetry::gauges(&gauges);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()).into_response())
}

/// Counts and times a request under its route's template (`/api/accounts/{id}`, never the
/// path asked for, so the series stay few); a request no route matched is `unmatched`.
pub(super) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    telemetry::http_request(
        method,
        route.as_deref(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The method as a label: the standard ones by name, any other as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
