//! The HTTP edge's contract: the generated description against the router and its
//! committed copy, its examples against the server, and the stable error codes.

use crate::common;
use crate::helpers;

use common::{MASTER_KEY, TestServer};
use helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const NOW: &str = "2026-03-12T12:00:00Z";
const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

fn description() -> Value {
    serde_json::to_value(whatstat::api::doc::document()).expect("description")
}

/// `WHATSTAT_WRITE_OPENAPI=1 cargo test --test it edge::` rewrites the committed copy.
#[test]
fn the_committed_description_is_the_generated_one() {
    let generated = whatstat::api::doc::document_json();
    if std::env::var_os("WHATSTAT_WRITE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(COMMITTED).expect("docs/openapi.json");
    assert!(
        committed == generated,
        "docs/openapi.json differs from the generated description; regenerate it with WHATSTAT_WRITE_OPENAPI=1 cargo test --test it edge::"
    );
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every route of the router is in the description with exactly its methods: the router's
/// `Allow` for a path is compared with the description's methods for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_has_every_route_with_its_methods() {
    let server = TestServer::start().await;
    let (status, served) = server.get("", "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, description());
    assert_eq!(served["openapi"], "3.1.0");
    let paths = served["paths"].as_object().expect("paths");
    let routes = [
        "/health",
        "/metrics",
        "/api/openapi.json",
        "/api/admin/orgs",
        "/api/admin/compact",
        "/api/events",
        "/api/accounts",
        "/api/accounts/{id}",
        "/api/accounts/{id}/forwarding",
        "/api/accounts/{id}/forwarding/failed",
        "/api/accounts/{id}/forwarding/failed/retry",
        "/api/accounts/{id}/forwarding/failed/{delivery_id}/retry",
        "/api/accounts/{id}/forwarding/failed/{delivery_id}",
        "/api/admin/unrouted",
        "/api/admin/unrouted/{id}",
        "/webhooks/whatsapp",
        "/api/analytics/messages",
        "/api/analytics/chatbot",
        "/api/analytics/dashboard",
        "/api/analytics/campaigns",
        "/api/analytics/templates",
        "/api/analytics/costs",
        "/api/keys",
        "/api/org",
        "/api/stream",
        "/api/keys/{id}",
        "/api/share-links",
        "/api/share-links/{id}",
    ];
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort_unstable();
    let mut expected = routes.to_vec();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    for (path, item) in paths {
        let described: Vec<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_uppercase())
            .collect();
        let Some(unused) = METHODS
            .iter()
            .map(|m| m.to_uppercase())
            .find(|m| !described.contains(m))
        else {
            continue;
        };
        let url = format!("{}{}", server.base, path.replace("{id}", "1"));
        let method = Method::from_bytes(unused.as_bytes()).expect("method");
        let resp = server
            .client
            .request(method, url)
            .send()
            .await
            .expect("request");
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{unused} {path}"
        );
        let allow = resp
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut allowed: Vec<String> = allow
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| m != "HEAD")
            .collect();
        allowed.sort();
        let mut described = described;
        described.sort();
        assert_eq!(allowed, described, "Allow of {path}");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["code"], "method_not_allowed", "{body}");
    }
}

/// Every request body example in the description is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_is_accepted() {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let key = server.create_org("Acme", "UTC").await;
    let doc = description();
    let example = |path: &str, method: &str| -> Value {
        let op = &doc["paths"][path][method]["requestBody"]["content"]["application/json"];
        let schema = &op["schema"];
        let reference = schema["$ref"].as_str().expect("a named body schema");
        let name = reference.rsplit('/').next().expect("name");
        doc["components"]["schemas"][name]["example"].clone()
    };
    let org = example("/api/admin/orgs", "post");
    let (status, body) = server
        .send(
            server
                .client
                .post(format!("{}/api/admin/orgs", server.base))
                .bearer_auth(MASTER_KEY)
                .json(&org),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["timezone"], org["timezone"]);

    let account = example("/api/accounts", "post");
    let (status, body) = server
        .send(
            server
                .client
                .post(format!("{}/api/accounts", server.base))
                .bearer_auth(&key)
                .json(&account),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = account["account_id"].as_str().expect("id");
    assert_eq!(body["data"]["account_id"], id);

    let change = example("/api/accounts/{id}", "patch");
    let (status, body) = server
        .send(
            server
                .client
                .patch(format!("{}/api/accounts/{id}", server.base))
                .bearer_auth(&key)
                .json(&change),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["name"], change["name"]);
}

/// Each situation answers its one code, with the code's status, beside the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_carries_its_code() {
    let server = TestServer::start_full(
        whatstat::engine::EngineConfig {
            hourly_retention_days: Some(7),
            ..Default::default()
        },
        whatstat::api::ApiLimits {
            max_body_bytes: 4096,
            rate_per_second: 0,
        },
    )
    .await;
    server.set_now(at(NOW));
    let key = server.create_org("Acme", "UTC").await;
    let t = at(NOW) - 3600;
    let url = |p: &str| format!("{}{p}", server.base);
    let c = &server.client;
    let history = json!([outbound("acc", "old", "text", at(NOW) - 60 * 86_400)]);
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        ("unknown parameter", c.get(url("/api/analytics/messages?x=1")).bearer_auth(&key), StatusCode::BAD_REQUEST, "invalid_parameter"),
        ("bad granularity", c.get(url("/api/analytics/messages?granularity=minute")).bearer_auth(&key), StatusCode::BAD_REQUEST, "invalid_parameter"),
        ("bad period", c.get(url("/api/analytics/dashboard?period=decade")).bearer_auth(&key), StatusCode::BAD_REQUEST, "invalid_parameter"),
        ("bad flag", c.post(url("/api/events?backfill=maybe")).bearer_auth(&key).json(&json!([])), StatusCode::BAD_REQUEST, "invalid_parameter"),
        ("not json", c.post(url("/api/accounts")).bearer_auth(&key).body("{"), StatusCode::BAD_REQUEST, "invalid_body"),
        ("unknown field", c.post(url("/api/accounts")).bearer_auth(&key).json(&json!({"account_id": "a", "name": "n", "x": 1})), StatusCode::BAD_REQUEST, "invalid_body"),
        ("invalid event", c.post(url("/api/events")).bearer_auth(&key).json(&json!([{"type": "purchase", "account_id": "acc", "timestamp": t}])), StatusCode::BAD_REQUEST, "invalid_events"),
        ("history", c.post(url("/api/events")).bearer_auth(&key).json(&history), StatusCode::BAD_REQUEST, "invalid_events"),
        ("unservable", c.get(url("/api/analytics/messages?start_date=2026-01-01T05:00:00Z&end_date=2026-01-02&granularity=hour")).bearer_auth(&key), StatusCode::BAD_REQUEST, "range_not_servable"),
        ("unservable and long", c.get(url("/api/analytics/messages?start_date=2020-01-01&end_date=2026-03-10&granularity=hour")).bearer_auth(&key), StatusCode::BAD_REQUEST, "range_not_servable"),
        ("unknown account", c.get(url("/api/analytics/messages?account_id=nobody")).bearer_auth(&key), StatusCode::NOT_FOUND, "unknown_account"),
        ("unknown account by id", c.get(url("/api/accounts/nobody")).bearer_auth(&key), StatusCode::NOT_FOUND, "unknown_account"),
        ("no key", c.get(url("/api/analytics/messages")), StatusCode::UNAUTHORIZED, "invalid_api_key"),
        ("wrong key", c.get(url("/api/analytics/messages")).bearer_auth("ws_nope"), StatusCode::UNAUTHORIZED, "invalid_api_key"),
        ("wrong master key", c.post(url("/api/admin/compact")).bearer_auth(&key), StatusCode::UNAUTHORIZED, "invalid_api_key"),
        ("no signature", c.post(url("/webhooks/whatsapp")).body("{}"), StatusCode::UNAUTHORIZED, "missing_signature"),
        ("malformed signature", c.post(url("/webhooks/whatsapp")).header("x-hub-signature-256", "md5=1").body("{}"), StatusCode::FORBIDDEN, "bad_signature"),
        ("webhook string body", c.post(url("/webhooks/whatsapp")).header("x-hub-signature-256", format!("sha256={}", "0".repeat(64))).body("\"text\""), StatusCode::BAD_REQUEST, "invalid_body"),
        ("handshake", c.get(url("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=no&hub.challenge=1")), StatusCode::FORBIDDEN, "verification_failed"),
        ("no route", c.get(url("/api/nope")).bearer_auth(&key), StatusCode::NOT_FOUND, "not_found"),
        ("no kept payload", c.delete(url("/api/admin/unrouted/999")).bearer_auth(MASTER_KEY), StatusCode::NOT_FOUND, "not_found"),
        ("wrong method", c.put(url("/api/events")).bearer_auth(&key), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ("too large", c.post(url("/api/events")).bearer_auth(&key).body("x".repeat(5000)), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        ("content type", c.post(url("/api/events")).bearer_auth(&key).header("content-type", "text/plain").body("[]"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_content_type"),
    ];
    for (what, request, status, code) in cases {
        let (got, body) = server.send(request).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["status"], "error", "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    // A taken account id: the second registration conflicts.
    for expected in [StatusCode::CREATED, StatusCode::CONFLICT] {
        let (got, body) = server
            .send(
                c.post(url("/api/accounts"))
                    .bearer_auth(&key)
                    .json(&json!({"account_id": "dup", "name": "n"})),
            )
            .await;
        assert_eq!(got, expected, "{body}");
        if expected == StatusCode::CONFLICT {
            assert_eq!(body["code"], "conflict", "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_is_rate_limited_with_retry_after() {
    let server = TestServer::start_full(
        whatstat::engine::EngineConfig::default(),
        whatstat::api::ApiLimits {
            max_body_bytes: 1 << 20,
            rate_per_second: 1,
        },
    )
    .await;
    let key = server.create_org("Acme", "UTC").await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        let resp = server
            .client
            .get(format!("{}/api/accounts", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .expect("request");
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = resp.status();
        let body: Value = resp.json().await.expect("json");
        answers.push((status, retry, body["code"].clone()));
    }
    // A burst of two, then a refusal saying when to come back.
    assert_eq!(answers[0].0, StatusCode::OK);
    assert_eq!(answers[1].0, StatusCode::OK);
    assert_eq!(
        answers[2],
        (
            StatusCode::TOO_MANY_REQUESTS,
            Some("1".to_string()),
            json!("rate_limited")
        )
    );
}

/// The number-and-secret rule is one of the body alone, as the description states it:
/// a change that sets the number carries the secret, one that clears the secret clears
/// the number, and `name` cannot be `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_the_number_carries_the_secret() {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let key = server.create_org("Acme", "UTC").await;
    let send = |method: Method, path: &str, body: Value| {
        server
            .client
            .request(method, format!("{}{path}", server.base))
            .bearer_auth(&key)
            .json(&body)
    };
    let (status, body) = server
        .send(send(
            Method::POST,
            "/api/accounts",
            json!({"account_id": "main", "name": "Main", "phone_number_id": "111", "app_secret": "s1"}),
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let refused = [
        (json!({"phone_number_id": "222"}), "app_secret"),
        (
            json!({"phone_number_id": "222", "app_secret": null}),
            "app_secret",
        ),
        (json!({"app_secret": null}), "phone_number_id"),
        (json!({"name": null}), "name"),
    ];
    for (change, field) in refused {
        let (status, body) = server
            .send(send(Method::PATCH, "/api/accounts/main", change.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{change}: {body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(message.contains(field), "{change}: {message}");
    }
    // Nothing of the refused changes was applied.
    let (_, shown) = server.get(&key, "/api/accounts/main").await;
    assert_eq!(shown["data"]["phone_number_id"], "111");
    assert_eq!(shown["data"]["has_app_secret"], true);
    let (status, body) = server
        .send(send(
            Method::PATCH,
            "/api/accounts/main",
            json!({"phone_number_id": "222", "app_secret": "s2"}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["phone_number_id"], "222");
    let (status, body) = server
        .send(send(
            Method::PATCH,
            "/api/accounts/main",
            json!({"app_secret": "s3"}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["phone_number_id"], "222");
    let (status, body) = server
        .send(send(
            Method::PATCH,
            "/api/accounts/main",
            json!({"phone_number_id": null, "app_secret": null}),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["phone_number_id"], Value::Null);
    assert_eq!(body["data"]["has_app_secret"], false);
}
