//! The web dashboard: its page at `/` and `/share/{token}`, its embedded assets, and
//! `GET /api/org`, the organization the page is signed in to.
//!
//! The files live in `dashboard/` and are embedded in the binary, debug builds included.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;
use serde_json::json;
use tower_http::compression::CompressionLayer;

use super::auth::ReadKey;
use super::error::{ApiError, ErrorCode};
use super::keys::share_token_valid;
use super::{AppState, doc, success};

#[derive(RustEmbed)]
#[folder = "dashboard/"]
struct Assets;

/// Nothing outside this server may be loaded by the page: scripts, styles, images and
/// requests all stay on its own origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

pub fn routes() -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(index))
        .route("/share/{token}", get(shared))
        .route("/assets/{*path}", get(asset))
        .layer(CompressionLayer::new());
    pages.route("/api/org", get(org))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// The same page, read-only, signed in by the link's token; an unknown, deleted or expired
/// link is a page saying so, with 404.
async fn shared(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !share_token_valid(&state, &token).await? {
        return Ok((
            StatusCode::NOT_FOUND,
            [(header::CONTENT_SECURITY_POLICY, CSP)],
            Html(
                "<!doctype html><meta charset=utf-8><title>whatstat</title><p>This share link does not exist, was deleted or has expired. Ask whoever shared it for a new one.</p>",
            ),
        )
            .into_response());
    }
    Ok(serve("index.html", &headers))
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

#[utoipa::path(get, path = "/api/org", tag = "accounts",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The organization the credential belongs to: id, name and time zone", body = doc::Success<doc::OrgView>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn org(ReadKey(caller): ReadKey) -> Response {
    let org = caller.org;
    success(json!({"id": org.id, "name": org.name, "timezone": org.timezone}))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::new(ErrorCode::NotFound, format!("no dashboard asset `{path}`"))
            .into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..12]));
    // Revalidated on every load: the files change with the binary, and a 304 is cheap.
    let mut common = vec![
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if let Ok(v) = HeaderValue::from_str(&etag) {
        common.push((header::ETAG, v));
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(path)),
            )],
            file.data.into_owned(),
        )
            .into_response()
    };
    for (name, value) in common {
        response.headers_mut().insert(name, value);
    }
    response
}
