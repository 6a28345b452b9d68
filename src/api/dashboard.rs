//! The web dashboard: its page at `/` and `/share/{token}`, its embedded assets, and
//! `GET /api/org`, the organization the page is signed in to.
//!
//! The files live in `dashboard/` and are embedded in the binary, debug builds included.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;
use serde_json::json;
use tower_http::compression::CompressionLayer;

use super::auth::OrgKey;
use super::error::ApiError;
use super::{AppState, success};

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

/// The same page, read-only; the token in the path is checked by the API calls it makes.
async fn shared(Path(_token): Path<String>, headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

async fn org(OrgKey(org): OrgKey) -> Response {
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
        return ApiError::NotFound(format!("no dashboard asset `{path}`")).into_response();
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
