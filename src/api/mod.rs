//! The HTTP edge: routing, authentication, parameter parsing and the error envelope.
//! Handlers only translate between HTTP and the engine.

pub mod accounts;
pub mod auth;
pub mod csv;
pub mod dashboard;
pub mod doc;
pub mod error;
pub mod extract;
pub mod forwarding;
pub mod keys;
pub mod limit;
pub mod monitoring;
pub mod spend;
pub mod stream;
pub mod webhook;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::engine::compare::Compare;
use crate::engine::ingest::IngestReport;
use crate::engine::metrics::{ChatbotAnswer, DashboardAnswer, MessagesAnswer};
use crate::engine::metrics::{Granularity, Period, RangeParams};
use crate::engine::retention::CompactionReport;
use crate::engine::{EngineError, EventsBody, Services};
use crate::telemetry::{self, Outcome};
use auth::{IngestKey, MasterKey, ReadKey};
use csv::CsvTable;
use error::{ApiError, ErrorCode};
use extract::{Body, BodyShape, Params, QueryShape, body_bytes};
use limit::RateLimiter;
pub use monitoring::MetricsAccess;

#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub master_key: Option<Arc<str>>,
    pub limiter: Arc<RateLimiter>,
    pub streams: Arc<stream::Connections>,
    /// Who may read `GET /metrics`.
    pub metrics: MetricsAccess,
}

/// Limits of the HTTP edge.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub max_body_bytes: usize,
    pub rate_per_second: u32,
}

/// The API, with `GET /metrics` behind the master key.
pub fn router(services: Services, master_key: Option<String>, limits: &ApiLimits) -> Router {
    router_with(services, master_key, limits, MetricsAccess::MasterKey)
}

/// The API, with `GET /metrics` open to whom `metrics` says. Installs the process's
/// metrics recorder if it is not yet (see `crate::telemetry`).
pub fn router_with(
    services: Services,
    master_key: Option<String>,
    limits: &ApiLimits,
    metrics: MetricsAccess,
) -> Router {
    if let Err(e) = crate::telemetry::recorder() {
        tracing::error!(error = %e, "metrics are off: GET /metrics answers 500");
    }
    let state = AppState {
        services,
        master_key: master_key.filter(|k| !k.is_empty()).map(Arc::from),
        limiter: Arc::new(RateLimiter::new(limits.rate_per_second)),
        streams: Arc::new(stream::Connections::default()),
        metrics,
    };
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(monitoring::metrics))
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
        .route("/api/accounts/{id}/forwarding", get(forwarding::status))
        .route(
            "/api/accounts/{id}/forwarding/failed",
            get(forwarding::failed),
        )
        .route(
            "/api/accounts/{id}/forwarding/failed/retry",
            post(forwarding::retry_all),
        )
        .route(
            "/api/accounts/{id}/forwarding/failed/{delivery_id}/retry",
            post(forwarding::retry_one),
        )
        .route(
            "/api/accounts/{id}/forwarding/failed/{delivery_id}",
            axum::routing::delete(forwarding::delete_failed),
        )
        .route("/api/keys", get(keys::list_keys).post(keys::create_key))
        .route("/api/keys/{id}", axum::routing::delete(keys::revoke_key))
        .route(
            "/api/share-links",
            get(keys::list_share_links).post(keys::create_share_link),
        )
        .route(
            "/api/share-links/{id}",
            axum::routing::delete(keys::delete_share_link),
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
        .route("/api/analytics/campaigns", get(spend::campaigns))
        .route("/api/analytics/templates", get(spend::templates))
        .route("/api/analytics/costs", get(spend::costs))
        .route("/api/stream", get(stream::stream))
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(axum::middleware::from_fn(monitoring::track))
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

#[utoipa::path(get, path = "/health", tag = "meta",
    responses((status = 200, description = "The server is up", body = doc::Success<doc::Health>)))]
async fn health() -> Response {
    success(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "This description", content_type = "application/json")))]
async fn openapi() -> Response {
    Json(doc::document()).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

/// The router adds `Allow` with the route's methods to this answer.
async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    tracing::debug!(%method, path = uri.path(), "method not allowed");
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

/// `POST /api/admin/orgs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme", "timezone": "Asia/Kolkata"}))]
pub struct NewOrg {
    /// 1 to 200 bytes.
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: String,
    /// An IANA time zone name; UTC when absent.
    #[schema(example = "Asia/Kolkata")]
    timezone: Option<String>,
}

impl BodyShape for NewOrg {
    const NAMES: &'static [&'static str] = &["name", "timezone"];
    const REQUIRED: &'static [&'static str] = &["name"];
    fn allowed(name: &str) -> &'static str {
        match name {
            "timezone" => "a string such as Asia/Kolkata",
            _ => "a string",
        }
    }
}

#[utoipa::path(post, path = "/api/admin/orgs", tag = "admin", request_body = NewOrg,
    security(("master_key" = [])),
    responses((status = 201, description = "The organization and its API key, shown once", body = doc::Success<doc::OrgCreated>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
async fn create_org(
    State(state): State<AppState>,
    _: MasterKey,
    Body(new): Body<NewOrg>,
) -> Result<Response, ApiError> {
    let timezone = new.timezone.as_deref().unwrap_or("UTC");
    let (org, key) = state
        .services
        .tenants
        .create_org(&new.name, timezone)
        .await?;
    let mut response =
        success(json!({"id": org.id, "name": org.name, "timezone": org.timezone, "api_key": key}));
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

#[utoipa::path(post, path = "/api/admin/compact", tag = "admin", security(("master_key" = [])),
    responses((status = 200, description = "What compaction did", body = doc::Success<CompactionReport>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
async fn compact(State(state): State<AppState>, _: MasterKey) -> Result<Response, ApiError> {
    Ok(success(state.services.compaction.compact().await?))
}

/// `POST /api/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IngestQuery {
    /// Admit events older than the state window (history).
    #[serde(default, deserialize_with = "extract::flag")]
    #[param(value_type = Option<bool>)]
    backfill: bool,
}

impl QueryShape for IngestQuery {
    const NAMES: &'static [&'static str] = &["backfill"];
    fn allowed(_: &str) -> &'static str {
        "true, false"
    }
}

#[utoipa::path(post, path = "/api/events", tag = "events", params(IngestQuery),
    request_body(description = "A JSON array of events or one event object; or NDJSON, one event a line",
        content((doc::Events = "application/json"), (String = "application/x-ndjson"))),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The events were applied", body = doc::Success<IngestReport>),
        (status = "4XX", description = "Refused; nothing was applied", body = doc::Failure)))]
async fn post_events(
    State(state): State<AppState>,
    IngestKey(org): IngestKey,
    Params(query): Params<IngestQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
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
            return Err(ApiError::new(
                ErrorCode::UnsupportedContentType,
                format!(
                    "Content-Type `{content_type}` is not accepted; allowed: application/json (an array of events) or application/x-ndjson"
                ),
            ));
        }
    };
    let report = match state
        .services
        .ingest
        .ingest(&org, events, query.backfill)
        .await
    {
        Ok(report) => report,
        Err(e) => {
            if let EngineError::InvalidEvents { events, .. } = &e {
                telemetry::events(Outcome::Refused, *events as u64);
            }
            return Err(e.into());
        }
    };
    telemetry::event_outcomes(
        report.accepted,
        report.duplicates,
        report.ignored.len() as u64,
    );
    Ok(success(report))
}

const POINT: &str = "a date YYYY-MM-DD or an RFC 3339 instant such as 2024-01-01T00:00:00Z";
const ZONE: &str = "an IANA time zone name such as Asia/Kolkata or UTC";
const COMPARE: &str = "previous, none";
const FORMAT: &str = "json, csv";
const MESSAGES_TABLES: &str = "timeline, by_type, by_error";
const CHATBOT_TABLES: &str = "timeline, by_flow, top_keywords";

/// `compare=previous` adds the period of equal length before the asked one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompareParam {
    Previous,
    None,
}

impl From<Option<CompareParam>> for Compare {
    fn from(c: Option<CompareParam>) -> Self {
        match c {
            Some(CompareParam::Previous) => Compare::Previous,
            Some(CompareParam::None) | None => Compare::None,
        }
    }
}

/// `format=csv` answers one table of the answer as a CSV download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Csv,
}

/// The tables of `GET /api/analytics/messages` that `format=csv` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessagesTable {
    Timeline,
    ByType,
    ByError,
}

/// The tables of `GET /api/analytics/chatbot` that `format=csv` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatbotTable {
    Timeline,
    ByFlow,
    TopKeywords,
}

/// The table of `GET /api/analytics/dashboard` that `format=csv` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DashboardTable {
    Figures,
}

impl From<MessagesTable> for CsvTable {
    fn from(t: MessagesTable) -> Self {
        match t {
            MessagesTable::Timeline => CsvTable::Timeline,
            MessagesTable::ByType => CsvTable::ByType,
            MessagesTable::ByError => CsvTable::ByError,
        }
    }
}

impl From<ChatbotTable> for CsvTable {
    fn from(t: ChatbotTable) -> Self {
        match t {
            ChatbotTable::Timeline => CsvTable::ChatbotTimeline,
            ChatbotTable::ByFlow => CsvTable::ByFlow,
            ChatbotTable::TopKeywords => CsvTable::TopKeywords,
        }
    }
}

impl From<DashboardTable> for CsvTable {
    fn from(_: DashboardTable) -> Self {
        CsvTable::Figures
    }
}

/// The CSV table asked for, if any: with `format=csv`, `table` (the first of the route's
/// tables when absent). A JSON answer holds every table, so `table` picks nothing there.
fn csv_table<T: Into<CsvTable>>(
    format: Option<Format>,
    table: Option<T>,
    default: CsvTable,
) -> Option<CsvTable> {
    match format {
        None | Some(Format::Json) => None,
        Some(Format::Csv) => Some(table.map_or(default, Into::into)),
    }
}

/// The answer as JSON, or the asked table of it as CSV.
fn analytics_answer<T: Serialize>(
    data: T,
    csv: Option<CsvTable>,
    endpoint: &str,
) -> Result<Response, ApiError> {
    match csv {
        None => Ok(success(data)),
        Some(table) => {
            let value = serde_json::to_value(&data)
                .map_err(|e| ApiError::internal(format!("answer to JSON: {e}")))?;
            Ok(csv::download(&value, table, endpoint))
        }
    }
}

/// `GET /api/analytics/messages`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// One account; all of the organization's when absent.
    account_id: Option<String>,
    /// A date (the start of that local day) or an RFC 3339 instant.
    #[param(example = "2026-03-01")]
    start_date: Option<String>,
    /// A date (inclusive: to the end of that local day) or an RFC 3339 instant (exclusive).
    #[param(example = "2026-03-12")]
    end_date: Option<String>,
    /// `day` when absent.
    #[param(inline)]
    granularity: Option<Granularity>,
    /// The time zone the range and the timeline are read in; the organization's when absent.
    #[param(example = "UTC")]
    tz: Option<String>,
    /// `previous` adds `previous` and `change` (see docs/api.md).
    #[param(inline)]
    compare: Option<CompareParam>,
    /// `csv` answers one table as a download.
    #[param(inline)]
    format: Option<Format>,
    /// With `format=csv`: `timeline` (default), `by_type` or `by_error`.
    #[param(inline)]
    table: Option<MessagesTable>,
}

impl QueryShape for MessagesQuery {
    const NAMES: &'static [&'static str] = &[
        "account_id",
        "start_date",
        "end_date",
        "granularity",
        "tz",
        "compare",
        "format",
        "table",
    ];
    fn allowed(name: &str) -> &'static str {
        match name {
            "granularity" => Granularity::NAMES,
            "tz" => ZONE,
            "compare" => COMPARE,
            "format" => FORMAT,
            "table" => MESSAGES_TABLES,
            _ => POINT,
        }
    }
}

/// `GET /api/analytics/chatbot`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChatbotQuery {
    account_id: Option<String>,
    #[param(example = "2026-03-01")]
    start_date: Option<String>,
    #[param(example = "2026-03-12")]
    end_date: Option<String>,
    /// How many top keywords; 10 when absent.
    #[serde(default, deserialize_with = "keyword_limit")]
    #[param(value_type = Option<u16>, minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    #[param(example = "UTC")]
    tz: Option<String>,
    /// Adds a `timeline` in these buckets (by day for the timeline's CSV when absent).
    #[param(inline)]
    granularity: Option<Granularity>,
    #[param(inline)]
    compare: Option<CompareParam>,
    #[param(inline)]
    format: Option<Format>,
    /// With `format=csv`: `timeline` (default), `by_flow` or `top_keywords`.
    #[param(inline)]
    table: Option<ChatbotTable>,
}

fn keyword_limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let n = <String as Deserialize>::deserialize(d)?
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| serde::de::Error::custom("out of range"))?;
    Ok(Some(n))
}

impl QueryShape for ChatbotQuery {
    const NAMES: &'static [&'static str] = &[
        "account_id",
        "start_date",
        "end_date",
        "limit",
        "tz",
        "granularity",
        "compare",
        "format",
        "table",
    ];
    fn allowed(name: &str) -> &'static str {
        match name {
            "limit" => "a whole number from 1 to 1000",
            "tz" => ZONE,
            "granularity" => Granularity::NAMES,
            "compare" => COMPARE,
            "format" => FORMAT,
            "table" => CHATBOT_TABLES,
            _ => POINT,
        }
    }
}

/// `GET /api/analytics/dashboard`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DashboardQuery {
    account_id: Option<String>,
    /// `month` when absent.
    #[param(inline)]
    period: Option<Period>,
    #[param(inline)]
    compare: Option<CompareParam>,
    #[param(inline)]
    format: Option<Format>,
    /// With `format=csv`: `figures`, the one row of the answer's numbers.
    #[param(inline)]
    table: Option<DashboardTable>,
}

impl QueryShape for DashboardQuery {
    const NAMES: &'static [&'static str] = &["account_id", "period", "compare", "format", "table"];
    fn allowed(name: &str) -> &'static str {
        match name {
            "compare" => COMPARE,
            "format" => FORMAT,
            "table" => "figures",
            _ => Period::NAMES,
        }
    }
}

#[utoipa::path(get, path = "/api/analytics/messages", tag = "analytics", params(MessagesQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Summary, by_type and timeline", content((doc::Success<MessagesAnswer> = "application/json"), (String = "text/csv"))),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
async fn messages(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
    Params(q): Params<MessagesQuery>,
) -> Result<Response, ApiError> {
    let org = caller.org;
    let range = RangeParams {
        account_id: q.account_id,
        start_date: q.start_date,
        end_date: q.end_date,
        tz: q.tz,
    };
    let granularity = q.granularity.unwrap_or(Granularity::Day);
    let csv = csv_table(q.format, q.table, CsvTable::Timeline);
    let answer = state
        .services
        .analytics
        .messages_compared(&org, &range, granularity, q.compare.into())
        .await?;
    analytics_answer(answer, csv, "messages")
}

#[utoipa::path(get, path = "/api/analytics/chatbot", tag = "analytics", params(ChatbotQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Conversations, flows, keywords and AI usage", content((doc::Success<ChatbotAnswer> = "application/json"), (String = "text/csv"))),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
async fn chatbot(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
    Params(q): Params<ChatbotQuery>,
) -> Result<Response, ApiError> {
    let org = caller.org;
    let range = RangeParams {
        account_id: q.account_id,
        start_date: q.start_date,
        end_date: q.end_date,
        tz: q.tz,
    };
    let csv = csv_table(q.format, q.table, CsvTable::ChatbotTimeline);
    // The timeline comes when asked for, and with the CSV of it (by day unless asked).
    let granularity = match (q.granularity, csv) {
        (Some(g), _) => Some(g),
        (None, Some(CsvTable::ChatbotTimeline)) => Some(Granularity::Day),
        (None, _) => None,
    };
    let answer = state
        .services
        .analytics
        .chatbot_compared(
            &org,
            &range,
            q.limit.unwrap_or(10),
            granularity,
            q.compare.into(),
        )
        .await?;
    analytics_answer(answer, csv, "chatbot")
}

#[utoipa::path(get, path = "/api/analytics/dashboard", tag = "analytics", params(DashboardQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The period so far against the one before", content((doc::Success<DashboardAnswer> = "application/json"), (String = "text/csv"))),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
async fn dashboard(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
    Params(q): Params<DashboardQuery>,
) -> Result<Response, ApiError> {
    let org = caller.org;
    let period = q.period.unwrap_or(Period::Month);
    let csv = csv_table(q.format, q.table, CsvTable::Figures);
    let answer = state
        .services
        .analytics
        .dashboard_compared(&org, q.account_id.as_deref(), period, q.compare.into())
        .await?;
    analytics_answer(answer, csv, "dashboard")
}
