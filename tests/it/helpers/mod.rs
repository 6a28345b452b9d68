//! Small helpers shared by the HTTP integration tests: event builders, instants and
//! assertions on the answer envelope.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::TestServer;

/// The Unix second of an RFC 3339 instant.
pub fn at(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>()
        .expect("valid RFC 3339 instant")
        .as_second()
}

pub fn contact(acc: &str, id: &str, t: i64) -> Value {
    json!({"type": "contact", "account_id": acc, "timestamp": t, "id": id})
}

pub fn message(acc: &str, id: &str, direction: &str, message_type: &str, t: i64) -> Value {
    json!({"type": "message", "account_id": acc, "timestamp": t, "id": id, "direction": direction, "message_type": message_type})
}

pub fn outbound(acc: &str, id: &str, message_type: &str, t: i64) -> Value {
    message(acc, id, "outbound", message_type, t)
}

pub fn inbound(acc: &str, id: &str, message_type: &str, t: i64) -> Value {
    message(acc, id, "inbound", message_type, t)
}

/// A message that belongs to a chatbot conversation.
pub fn conv_message(acc: &str, id: &str, direction: &str, conversation: &str, t: i64) -> Value {
    json!({"type": "message", "account_id": acc, "timestamp": t, "id": id, "direction": direction,
           "message_type": "text", "conversation_id": conversation})
}

pub fn status(acc: &str, message_id: &str, status: &str, t: i64) -> Value {
    json!({"type": "message_status", "account_id": acc, "timestamp": t, "message_id": message_id, "status": status})
}

pub fn campaign(acc: &str, id: &str, status: &str, t: i64) -> Value {
    json!({"type": "campaign", "account_id": acc, "timestamp": t, "id": id, "status": status})
}

pub fn conversation(acc: &str, id: &str, status: &str, t: i64) -> Value {
    json!({"type": "conversation", "account_id": acc, "timestamp": t, "id": id, "status": status})
}

pub fn flow(acc: &str, id: &str, name: &str, status: &str, t: i64) -> Value {
    json!({"type": "flow", "account_id": acc, "timestamp": t, "id": id, "flow_name": name, "status": status})
}

pub fn keyword(acc: &str, kw: &str, t: i64) -> Value {
    json!({"type": "keyword", "account_id": acc, "timestamp": t, "keyword": kw})
}

pub fn keyword_id(acc: &str, id: &str, kw: &str, t: i64) -> Value {
    json!({"type": "keyword", "account_id": acc, "timestamp": t, "keyword": kw, "id": id})
}

pub fn ai(acc: &str, id: &str, tokens: u64, cost: Option<f64>, t: i64) -> Value {
    let mut v = json!({"type": "ai_request", "account_id": acc, "timestamp": t, "id": id, "tokens": tokens});
    if let Some(c) = cost {
        v["cost"] = json!(c);
    }
    v
}

/// Posts events that must all be valid; returns `(accepted, duplicates)`.
pub async fn ingest(server: &TestServer, key: &str, events: &Value) -> (u64, u64) {
    let (status, body) = server.post_events(key, events).await;
    assert_eq!(status, StatusCode::OK, "ingest: {body}");
    counts(&body)
}

/// Posts events with `?backfill=true`; returns `(accepted, duplicates)`.
pub async fn backfill(server: &TestServer, key: &str, events: &Value) -> (u64, u64) {
    let (status, body) = server.post_backfill(key, events).await;
    assert_eq!(status, StatusCode::OK, "backfill: {body}");
    counts(&body)
}

pub fn counts(body: &Value) -> (u64, u64) {
    assert_eq!(body["status"], "success", "{body}");
    (
        body["data"]["accepted"].as_u64().expect("accepted"),
        body["data"]["duplicates"].as_u64().expect("duplicates"),
    )
}

/// GETs an analytics path that must succeed; returns its `data`.
pub async fn data(server: &TestServer, key: &str, path: &str) -> Value {
    let (status, body) = server.get(key, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    assert_eq!(body["status"], "success", "GET {path}: {body}");
    body["data"].clone()
}

/// Asserts the error envelope: the status, `"status":"error"`, and a message holding
/// every one of `needles`. Returns the message.
pub fn assert_error(
    status: StatusCode,
    body: &Value,
    expected: StatusCode,
    needles: &[&str],
) -> String {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error without a message: {body}"))
        .to_string();
    for n in needles {
        assert!(message.contains(n), "message `{message}` lacks `{n}`");
    }
    for leak in ["sqlite", "SQL", "panicked", "/tmp/", ".rs:"] {
        assert!(
            !message.contains(leak),
            "message `{message}` leaks internals (`{leak}`)"
        );
    }
    message
}

/// A timeline as `(date, sent, received, delivered, read, failed)` tuples.
pub fn timeline(data: &Value) -> Vec<(String, i64, i64, i64, i64, i64)> {
    data["timeline"]
        .as_array()
        .expect("timeline array")
        .iter()
        .map(|e| {
            let n = |k: &str| {
                e[k].as_i64()
                    .unwrap_or_else(|| panic!("timeline field {k}: {e}"))
            };
            (
                e["date"].as_str().expect("date").to_string(),
                n("sent"),
                n("received"),
                n("delivered"),
                n("read"),
                n("failed"),
            )
        })
        .collect()
}

/// A timeline entry with all figures zero.
pub fn zero(date: &str) -> (String, i64, i64, i64, i64, i64) {
    (date.to_string(), 0, 0, 0, 0, 0)
}

pub fn row(
    date: &str,
    sent: i64,
    received: i64,
    delivered: i64,
    read: i64,
    failed: i64,
) -> (String, i64, i64, i64, i64, i64) {
    (date.to_string(), sent, received, delivered, read, failed)
}

/// The messages summary as `(sent, received, delivered, read, failed, delivery_rate, read_rate)`.
pub fn summary(data: &Value) -> (i64, i64, i64, i64, i64, f64, f64) {
    let s = &data["summary"];
    let n = |k: &str| {
        s[k].as_i64()
            .unwrap_or_else(|| panic!("summary field {k}: {s}"))
    };
    let f = |k: &str| {
        s[k].as_f64()
            .unwrap_or_else(|| panic!("summary field {k}: {s}"))
    };
    (
        n("total_sent"),
        n("total_received"),
        n("total_delivered"),
        n("total_read"),
        n("total_failed"),
        f("delivery_rate"),
        f("read_rate"),
    )
}
