//! The analytics routes' query strings, through the real router, engine and a SQLite
//! store holding a few weeks of traffic. Each input is sent as the query string of every
//! analytics route and of the webhook's handshake. Beyond not panicking:
//! - no answer is a server error: a bad parameter is a 4XX naming it;
//! - an error answer is the envelope with a stable code and a message;
//! - a JSON answer's range runs forwards and its timeline is bounded; a CSV answer parses,
//!   every row as long as the header.

#![no_main]

mod common;

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower::ServiceExt;
use whatstat::api::{self, ApiLimits};
use whatstat::engine::{EngineConfig, EventsBody, Services};

const ROUTES: [&str; 6] = [
    "messages",
    "chatbot",
    "dashboard",
    "campaigns",
    "templates",
    "costs",
];

/// The codes a query string may earn.
const CODES: [&str; 3] = ["invalid_parameter", "range_not_servable", "unknown_account"];

struct Server {
    runtime: tokio::runtime::Runtime,
    router: Router,
    key: String,
}

fuzz_target!(|data: &[u8]| {
    let server = server();
    let query = as_query(data);
    for route in ROUTES {
        let path = format!("/api/analytics/{route}?{query}");
        server.runtime.block_on(ask(server, &path, true));
    }
    let path = format!("/webhooks/whatsapp?{query}");
    server.runtime.block_on(ask(server, &path, false));
});

/// The input as a query string a client could send: bytes a URI cannot hold are
/// percent-encoded (they decode to themselves).
fn as_query(data: &[u8]) -> String {
    let mut q = String::with_capacity(data.len());
    for &b in data {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b) {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    q
}

async fn ask(server: &Server, path: &str, analytics: bool) {
    let Ok(request) = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", server.key))
        .body(Body::empty())
    else {
        return;
    };
    let response = server
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body reads");
    let text = String::from_utf8_lossy(&body);
    assert!(
        !status.is_server_error(),
        "{path} answered {status}: {text}"
    );
    if !analytics {
        // The handshake answers its challenge as text, or refuses.
        if !status.is_success() {
            envelope(path, status, &body);
        }
        return;
    }
    if status != StatusCode::OK {
        envelope(path, status, &body);
    } else if content_type.starts_with("text/csv") {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&body[..]);
        let records: Vec<csv::StringRecord> = reader
            .records()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{path}: the CSV does not parse ({e}): {text}"));
        assert!(!records.is_empty(), "{path}: a CSV without a header");
    } else {
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path}: the answer is not JSON ({e}): {text}"));
        assert_eq!(v["status"], "success", "{path}: {text}");
        let data = &v["data"];
        if let Some(range) = data.get("range") {
            let at = |k: &str| {
                range[k]
                    .as_str()
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    .unwrap_or_else(|| panic!("{path}: range.{k} is not an instant: {text}"))
            };
            assert!(
                at("start") < at("end"),
                "{path}: the range runs backwards: {text}"
            );
        }
        if let Some(timeline) = data.get("timeline").and_then(Value::as_array) {
            assert!(
                timeline.len() <= 10_000,
                "{path}: {} buckets",
                timeline.len()
            );
        }
    }
}

/// An error answer: `{"status":"error","code":...,"message":...}` with a code a query
/// may earn.
fn envelope(path: &str, status: StatusCode, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{path}: {status} is not JSON ({e}): {text}"));
    assert_eq!(v["status"], "error", "{path}: {text}");
    let code = v["code"].as_str().unwrap_or_default();
    let allowed = CODES.contains(&code) || (code == "verification_failed" && status == 403);
    assert!(allowed, "{path}: {status} with code {code:?}: {text}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{path}: no message: {text}"
    );
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(start)
}

/// A server over a fresh store in the temporary directory, with the clock at `NOW`, an
/// organization in a zone with daylight saving time, and traffic of the weeks before.
fn start() -> Server {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = store_dir();
    let (router, key) = runtime.block_on(async {
        let url = format!("sqlite://{}/whatstat.db", dir.display());
        let store = whatstat::store::open(&url).await.expect("store");
        let config = EngineConfig {
            hourly_retention_days: Some(30),
            daily_retention_days: Some(365),
            ..EngineConfig::default()
        };
        let services = Services::new(store, config);
        services.clock.set(common::NOW);
        let (org, key) = services
            .tenants
            .create_org("fuzz", "America/New_York")
            .await
            .expect("organization");
        let events = traffic().to_string();
        services
            .ingest
            .ingest(&org, EventsBody::Json(events.as_bytes()), true)
            .await
            .expect("traffic");
        let limits = ApiLimits {
            max_body_bytes: 1 << 20,
            rate_per_second: 0,
        };
        (api::router(services, None, &limits), key)
    });
    Server {
        runtime,
        router,
        key,
    }
}

/// `whatstat-fuzz-query-<pid>` in the temporary directory, after removing those of
/// processes that are gone.
fn store_dir() -> std::path::PathBuf {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("whatstat-fuzz-query-")
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = tmp.join(format!("whatstat-fuzz-query-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("store directory");
    dir
}

/// Two accounts' messages, statuses, campaigns, templates, conversations, flows,
/// keywords and AI calls, a few a day over the 60 days before `NOW`.
fn traffic() -> Value {
    let mut events = Vec::new();
    for day in 0..60i64 {
        let t = common::NOW - day * 86_400 - 3_600 * (day % 24) - 7;
        let account = if day % 3 == 0 { "b" } else { "acc" };
        let id = format!("m{day}");
        events.push(
            json!({"type": "message", "account_id": account, "timestamp": t,
            "id": id, "direction": "outbound", "message_type": "template",
            "campaign_id": format!("c{}", day % 4), "template_name": format!("t{}", day % 3),
            "template_language": "en", "template_category": "marketing",
            "recipient": "919876543210"}),
        );
        events.push(
            json!({"type": "message_status", "account_id": account, "timestamp": t + 5,
            "message_id": id, "status": if day % 5 == 0 { "failed" } else { "read" },
            "error_code": if day % 5 == 0 { json!(131026) } else { json!(null) },
            "pricing_category": "marketing", "pricing_type": "regular"}),
        );
        events.push(
            json!({"type": "message", "account_id": account, "timestamp": t + 60,
            "id": format!("r{day}"), "direction": "inbound", "message_type": "text",
            "reply_to": id}),
        );
        events.push(
            json!({"type": "contact", "account_id": account, "timestamp": t,
            "id": format!("c{}", day % 7)}),
        );
        events.push(
            json!({"type": "campaign", "account_id": account, "timestamp": t,
            "id": format!("c{}", day % 4), "status": "running"}),
        );
        events.push(json!({"type": "conversation", "account_id": account, "timestamp": t,
            "id": format!("v{day}"), "status": if day % 2 == 0 { "auto_resolved" } else { "transferred" }}));
        events.push(
            json!({"type": "flow", "account_id": account, "timestamp": t,
            "id": format!("f{day}"), "flow_name": "=order", "status": "completed"}),
        );
        events.push(
            json!({"type": "keyword", "account_id": account, "timestamp": t,
            "keyword": if day % 2 == 0 { "price" } else { "-stop, now" }}),
        );
        events.push(
            json!({"type": "ai_request", "account_id": account, "timestamp": t,
            "tokens": 100 + day, "model": "gpt-4o", "cost": 0.0125}),
        );
    }
    Value::Array(events)
}
