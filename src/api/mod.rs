//! The HTTP edge: routing, authentication, parameter parsing and the error envelope.
//! Handlers only translate between HTTP and the engine.

pub mod accounts;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod limit;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::metrics::{Granularity, Period, RangeParams};
use crate::engine::{Engine, EventsBody};
use auth::{MasterKey, OrgKey};
use error::ApiError;
use limit::RateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub master_key: Option<Arc<str>>,
    pub limiter: Arc<RateLimiter>,
}

/// Limits of the HTTP edge.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub max_body_bytes: usize,
    pub rate_per_second: u32,
}

pub const OPENAPI: &str = include_str!("openapi.json");

pub fn router(engine: Arc<Engine>, master_key: Option<String>, limits: &ApiLimits) -> Router {
    let state = AppState {
        engine,
        master_key: master_key.filter(|k| !k.is_empty()).map(Arc::from),
        limiter: Arc::new(RateLimiter::new(limits.rate_per_second)),
    };
    Router::new()
        .route("/health", get(health))
        .route("/api/openapi.json", get(openapi))
        .route("/api/admin/orgs", post(create_org))
        .route("/api/admin/compact", post(compact))
        .route("/api/events", post(post_events))
        .route("/api/accounts", get(accounts::list).post(accounts::create))
        .route(
            "/api/accounts/{id}",
            get(accounts::get_one)
                .patch(accounts::patch)
                .delete(accounts::delete),
        )
        .route("/api/admin/unrouted", get(accounts::unrouted))
        .route(
            "/api/admin/unrouted/{id}",
            axum::routing::delete(accounts::delete_unrouted),
        )
        .route(
            "/webhooks/whatsapp",
            get(webhook::handshake).post(webhook::receive),
        )
        .route("/api/analytics/messages", get(messages))
        .route("/api/analytics/chatbot", get(chatbot))
        .route("/api/analytics/dashboard", get(dashboard))
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn(server_timing))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// Tells the client how long the server spent on its request (`Server-Timing: app;dur=MS`),
/// so that a slow answer can be told apart from a slow network or client.
async fn server_timing(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = header::HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

fn success<T: Serialize>(data: T) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

async fn health() -> Response {
    success(json!({"status": "ok"}))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    tracing::debug!(%method, path = uri.path(), "method not allowed");
    ApiError::MethodNotAllowed
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(
                "the request body is larger than the server accepts (see --max-body-bytes)".into(),
            )
        } else {
            ApiError::BadRequest(format!("the request body could not be read: {e}"))
        }
    })
}

/// Query parameters, checked against the names an endpoint allows.
fn params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let Query(pairs) =
        query.map_err(|e| ApiError::BadRequest(format!("the query string is malformed: {e}")))?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter `{k}`; allowed: {}",
                allowed.join(", ")
            )));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::BadRequest(format!(
                "parameter `{k}` is given more than once"
            )));
        }
    }
    Ok(out)
}

fn flag(p: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match p.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "parameter `{name}` is `{other}`; allowed: true, false"
        ))),
    }
}

async fn create_org(
    State(state): State<AppState>,
    _: MasterKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be a JSON object {{\"name\", \"timezone\"}}: {e}"
        ))
    })?;
    let name = v.get("name").and_then(Value::as_str).ok_or_else(|| {
        ApiError::BadRequest("field `name` is required and must be a string".into())
    })?;
    let timezone = match v.get("timezone") {
        None | Some(Value::Null) => "UTC",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "field `timezone` must be a string such as Asia/Kolkata".into(),
            ));
        }
    };
    let (org, key) = state.engine.create_org(name, timezone).await?;
    let mut response =
        success(json!({"id": org.id, "name": org.name, "timezone": org.timezone, "api_key": key}));
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

async fn compact(State(state): State<AppState>, _: MasterKey) -> Result<Response, ApiError> {
    Ok(success(state.engine.compact().await?))
}

async fn post_events(
    State(state): State<AppState>,
    OrgKey(org): OrgKey,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let p = params(query, &["backfill"])?;
    let backfill = flag(&p, "backfill")?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let body = body_bytes(body)?;
    let events = match mime.as_str() {
        "application/json" => EventsBody::Json(&body),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
            EventsBody::Ndjson(&body)
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type `{content_type}` is not accepted; allowed: application/json (an array of events) or application/x-ndjson"
            )));
        }
    };
    let report = state.engine.ingest(&org, events, backfill).await?;
    Ok(success(report))
}

fn range(p: &HashMap<String, String>) -> RangeParams {
    RangeParams {
        account_id: p.get("account_id").cloned(),
        start_date: p.get("start_date").cloned(),
        end_date: p.get("end_date").cloned(),
        tz: p.get("tz").cloned(),
    }
}

async fn messages(
    State(state): State<AppState>,
    OrgKey(org): OrgKey,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(
        query,
        &["account_id", "start_date", "end_date", "granularity", "tz"],
    )?;
    let granularity = Granularity::parse(p.get("granularity").map_or("day", String::as_str))?;
    Ok(success(
        state.engine.messages(&org, &range(&p), granularity).await?,
    ))
}

async fn chatbot(
    State(state): State<AppState>,
    OrgKey(org): OrgKey,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(
        query,
        &["account_id", "start_date", "end_date", "limit", "tz"],
    )?;
    let limit = match p.get("limit") {
        None => 10,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "parameter `limit` is `{l}`; allowed: a whole number from 1 to 1000"
                ))
            })?,
    };
    Ok(success(
        state.engine.chatbot(&org, &range(&p), limit).await?,
    ))
}

async fn dashboard(
    State(state): State<AppState>,
    OrgKey(org): OrgKey,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query, &["account_id", "period"])?;
    let period = Period::parse(p.get("period").map_or("month", String::as_str))?;
    Ok(success(
        state
            .engine
            .dashboard(&org, p.get("account_id").map(String::as_str), period)
            .await?,
    ))
}
