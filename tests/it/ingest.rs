//! `POST /api/events` over HTTP: JSON and NDJSON bodies, idempotency, order
//! independence, ignored statuses, history and backfill; plus health, the admin API,
//! authentication and tenant isolation.

use crate::common;
use crate::helpers;

use common::{MASTER_KEY, TestServer};
use helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Thursday 2026-03-12 12:00 UTC.
const NOW: &str = "2026-03-12T12:00:00Z";

async fn utc_server() -> (TestServer, String) {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let key = server.create_org("Acme", "UTC").await;
    (server, key)
}

const PATHS: [&str; 8] = [
    "/api/analytics/messages?start_date=2026-03-01&end_date=2026-03-12",
    "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-11&granularity=hour",
    "/api/analytics/chatbot?start_date=2026-03-01&end_date=2026-03-12&limit=50",
    "/api/analytics/chatbot?start_date=2026-03-10&end_date=2026-03-10",
    "/api/analytics/dashboard?period=today",
    "/api/analytics/dashboard?period=week",
    "/api/analytics/dashboard?period=month",
    "/api/analytics/dashboard?period=year",
];

/// Every answer of the three endpoints that the order tests compare.
async fn snapshot(server: &TestServer, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for p in PATHS {
        out.push(data(server, key, p).await);
    }
    out
}

/// A mixed set of events with every kind of out-of-order pair the SPEC names.
fn mixed_events() -> Vec<Value> {
    let a = "acc";
    let t = |s: &str| at(s);
    vec![
        contact(a, "c1", t("2026-03-10T09:00:00Z")),
        contact(a, "c1", t("2026-03-09T09:00:00Z")),
        contact(a, "c2", t("2026-03-12T09:00:00Z")),
        outbound(a, "m1", "template", t("2026-03-09T10:00:00Z")),
        status(a, "m1", "sent", t("2026-03-09T10:00:01Z")),
        status(a, "m1", "delivered", t("2026-03-09T10:00:02Z")),
        status(a, "m1", "read", t("2026-03-10T10:00:00Z")),
        outbound(a, "m2", "image", t("2026-03-10T23:30:00Z")),
        status(a, "m2", "failed", t("2026-03-11T00:30:00Z")),
        status(a, "m2", "delivered", t("2026-03-11T00:40:00Z")),
        outbound(a, "m3", "text", t("2026-03-11T08:00:00Z")),
        status(a, "m3", "failed", t("2026-03-11T08:00:05Z")),
        inbound(a, "m4", "text", t("2026-03-11T09:00:00Z")),
        conv_message(a, "m5", "inbound", "cv1", t("2026-03-10T11:00:00Z")),
        conv_message(a, "m6", "outbound", "cv1", t("2026-03-10T11:00:30Z")),
        status(a, "m6", "read", t("2026-03-10T11:01:00Z")),
        conversation(a, "cv1", "started", t("2026-03-10T11:00:00Z")),
        conversation(a, "cv1", "auto_resolved", t("2026-03-10T11:03:00Z")),
        conversation(a, "cv1", "transferred", t("2026-03-10T11:04:00Z")),
        conversation(a, "cv2", "started", t("2026-03-12T10:00:00Z")),
        conversation(a, "cv2", "transferred", t("2026-03-12T10:05:00Z")),
        conversation(a, "cv3", "abandoned", t("2026-03-11T12:10:00Z")),
        conversation(a, "cv3", "started", t("2026-03-11T12:00:00Z")),
        flow(a, "f1", "Order", "started", t("2026-03-10T11:00:00Z")),
        flow(a, "f1", "Order", "completed", t("2026-03-10T11:02:00Z")),
        flow(a, "f2", "Order", "started", t("2026-03-11T11:00:00Z")),
        flow(a, "f3", "FAQ", "completed", t("2026-03-11T11:05:00Z")),
        flow(a, "f3", "FAQ", "started", t("2026-03-11T11:00:00Z")),
        keyword_id(a, "k1", "order", t("2026-03-10T11:00:00Z")),
        keyword_id(a, "k2", "order", t("2026-03-11T11:00:00Z")),
        keyword_id(a, "k3", "refund", t("2026-03-11T11:00:00Z")),
        ai(a, "ai1", 1200, Some(0.01), t("2026-03-10T11:00:10Z")),
        ai(a, "ai2", 5000, None, t("2026-03-11T11:00:10Z")),
        campaign(a, "cp1", "created", t("2026-03-02T10:00:00Z")),
        campaign(a, "cp1", "running", t("2026-03-03T10:00:00Z")),
        campaign(a, "cp1", "completed", t("2026-03-10T10:00:00Z")),
        campaign(a, "cp2", "scheduled", t("2026-03-11T10:00:00Z")),
        campaign(a, "cp2", "running", t("2026-03-12T10:00:00Z")),
    ]
}

/// The reference figures of `mixed_events`, so that agreeing orders must also be right.
fn assert_mixed_figures(snap: &[Value]) {
    let m = &snap[0];
    assert_eq!(summary(m), (4, 2, 3, 2, 1, 75.0, 66.7));
    assert_eq!(m["by_type"], json!({"template": 1, "image": 1, "text": 4}));
    let c = &snap[2];
    assert_eq!(
        c["summary"],
        json!({"total_conversations": 3, "auto_resolved": 1, "transferred_to_agent": 1, "abandoned": 1,
               "resolution_rate": 33.3, "avg_messages_per_conversation": 0.7, "avg_resolution_time_seconds": 180})
    );
    assert_eq!(
        c["by_flow"],
        json!([
            {"flow_name": "Order", "conversations": 2, "completed": 1, "completion_rate": 50.0},
            {"flow_name": "FAQ", "conversations": 1, "completed": 1, "completion_rate": 100.0},
        ])
    );
    assert_eq!(
        c["top_keywords"],
        json!([{"keyword": "order", "count": 2}, {"keyword": "refund", "count": 1}])
    );
    assert_eq!(
        c["ai_usage"],
        json!({"total_requests": 2, "total_tokens": 6200, "avg_tokens_per_request": 3100, "estimated_cost": 0.02})
    );
    let month = &snap[6];
    assert_eq!(
        month["contacts"],
        json!({"total": 2, "new_today": 1, "new_this_week": 2, "growth_percent": 0.0})
    );
    assert_eq!(
        month["campaigns"],
        json!({"total": 2, "active": 1, "completed_this_month": 1})
    );
    assert_eq!(
        month["messages"],
        json!({"total": 6, "sent": 4, "received": 2, "today": 0})
    );
    assert_eq!(
        month["chatbot"],
        json!({"conversations_today": 1, "auto_resolved": 1, "transferred_to_agent": 1, "resolution_rate": 33.3})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_arrival_order_gives_the_same_answers() {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let events = mixed_events();
    let n = events.len();

    // 1. As listed, in one request.
    let k1 = server.create_org("in order", "UTC").await;
    assert_eq!(
        ingest(&server, &k1, &Value::Array(events.clone())).await,
        (n as u64 - 1, 1)
    );
    let reference = snapshot(&server, &k1).await;
    assert_mixed_figures(&reference);

    // 2. Reversed, in one request.
    let k2 = server.create_org("reversed", "UTC").await;
    let reversed: Vec<Value> = events.iter().rev().cloned().collect();
    ingest(&server, &k2, &Value::Array(reversed.clone())).await;
    assert_eq!(snapshot(&server, &k2).await, reference, "reversed batch");

    // 3. Reversed, one event per request.
    let k3 = server.create_org("one by one", "UTC").await;
    for e in &reversed {
        ingest(&server, &k3, &json!([e])).await;
    }
    assert_eq!(
        snapshot(&server, &k3).await,
        reference,
        "one request per event"
    );

    // 4. A fixed shuffle, in requests of three.
    let k4 = server.create_org("shuffled", "UTC").await;
    let mut shuffled = events.clone();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..shuffled.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        shuffled.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    assert_ne!(shuffled, events);
    for chunk in shuffled.chunks(3) {
        ingest(&server, &k4, &Value::Array(chunk.to_vec())).await;
    }
    assert_eq!(snapshot(&server, &k4).await, reference, "shuffled chunks");

    // 5. Interleaved odd/even halves, the later half first, over NDJSON.
    let k5 = server.create_org("ndjson halves", "UTC").await;
    for parity in [1, 0] {
        let body: String = events
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .map(|(_, e)| format!("{e}\n"))
            .collect();
        let (status, resp) = server
            .send(
                server
                    .client
                    .post(format!("{}/api/events", server.base))
                    .bearer_auth(&k5)
                    .header("Content-Type", "application/x-ndjson")
                    .body(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{resp}");
    }
    assert_eq!(snapshot(&server, &k5).await, reference, "ndjson halves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_counted_and_change_no_figure() {
    let (server, key) = utc_server().await;
    let events = Value::Array(mixed_events());
    let n = mixed_events().len() as u64;
    // One duplicate inside the set itself (contact c1 twice).
    assert_eq!(ingest(&server, &key, &events).await, (n - 1, 1));
    let before = snapshot(&server, &key).await;
    assert_mixed_figures(&before);
    // A retry of everything: all duplicates.
    assert_eq!(ingest(&server, &key, &events).await, (0, n));
    assert_eq!(snapshot(&server, &key).await, before);
    // Duplicates within one request, and in NDJSON.
    let t = at("2026-03-11T15:00:00Z");
    let dup = json!([
        outbound("acc", "m9", "text", t),
        outbound("acc", "m9", "text", t),
        status("acc", "m9", "read", t + 1),
        status("acc", "m9", "read", t + 1)
    ]);
    assert_eq!(ingest(&server, &key, &dup).await, (2, 2));
    assert_eq!(ingest(&server, &key, &dup).await, (0, 4));
    let m = data(&server, &key, PATHS[0]).await;
    assert_eq!(summary(&m), (5, 2, 4, 3, 1, 80.0, 75.0));
    // A retried message with different content is still the same message (first wins).
    assert_eq!(
        ingest(
            &server,
            &key,
            &json!([inbound("acc", "m9", "image", t + 50)])
        )
        .await,
        (0, 1)
    );
    assert_eq!(data(&server, &key, PATHS[0]).await, m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_before_its_message_moves_to_the_real_send_time_and_type() {
    let (server, key) = utc_server().await;
    let q = "/api/analytics/messages?start_date=2026-03-10&end_date=2026-03-11";
    // `read` arrives first, on the 11th: an outbound message of type `unknown`.
    assert_eq!(
        ingest(
            &server,
            &key,
            &json!([status("a", "x", "read", at("2026-03-11T10:00:00Z"))])
        )
        .await,
        (1, 0)
    );
    let d = data(&server, &key, q).await;
    assert_eq!(d["by_type"], json!({"unknown": 1}));
    assert_eq!(
        timeline(&d),
        vec![zero("2026-03-10"), row("2026-03-11", 1, 0, 1, 1, 0)]
    );
    // Then `delivered` (read before delivered): nothing moves.
    assert_eq!(
        ingest(
            &server,
            &key,
            &json!([status("a", "x", "delivered", at("2026-03-11T09:00:00Z"))])
        )
        .await,
        (1, 0)
    );
    assert_eq!(data(&server, &key, q).await, d);
    // The message itself: sent on the 10th as a template.
    assert_eq!(
        ingest(
            &server,
            &key,
            &json!([outbound("a", "x", "template", at("2026-03-10T22:00:00Z"))])
        )
        .await,
        (1, 0)
    );
    let d = data(&server, &key, q).await;
    assert_eq!(d["by_type"], json!({"template": 1}));
    assert_eq!(
        timeline(&d),
        vec![row("2026-03-10", 1, 0, 1, 1, 0), zero("2026-03-11")]
    );
    assert_eq!(summary(&d), (1, 0, 1, 1, 0, 100.0, 100.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_outcome_and_flow_completion_wait_for_their_start() {
    let (server, key) = utc_server().await;
    let q = "/api/analytics/chatbot?start_date=2026-03-10&end_date=2026-03-10";
    let t = at("2026-03-10T10:00:00Z");
    let early = json!([
        conversation("a", "cv", "auto_resolved", t + 90),
        flow("a", "fr", "Menu", "completed", t + 30)
    ]);
    assert_eq!(ingest(&server, &key, &early).await, (2, 0));
    let d = data(&server, &key, q).await;
    assert_eq!(d["summary"]["total_conversations"], 0);
    assert_eq!(d["summary"]["auto_resolved"], 0);
    assert_eq!(d["by_flow"], json!([]));
    let dash = data(&server, &key, "/api/analytics/dashboard?period=week").await;
    assert_eq!(dash["chatbot"]["auto_resolved"], 0);

    let late = json!([
        conversation("a", "cv", "started", t),
        flow("a", "fr", "Menu", "started", t)
    ]);
    assert_eq!(ingest(&server, &key, &late).await, (2, 0));
    let d = data(&server, &key, q).await;
    assert_eq!(
        d["summary"],
        json!({"total_conversations": 1, "auto_resolved": 1, "transferred_to_agent": 0, "abandoned": 0,
               "resolution_rate": 100.0, "avg_messages_per_conversation": 0.0, "avg_resolution_time_seconds": 90})
    );
    assert_eq!(
        d["by_flow"],
        json!([{"flow_name": "Menu", "conversations": 1, "completed": 1, "completion_rate": 100.0}])
    );
    let dash = data(&server, &key, "/api/analytics/dashboard?period=week").await;
    assert_eq!(
        dash["chatbot"],
        json!({"conversations_today": 0, "auto_resolved": 1, "transferred_to_agent": 0, "resolution_rate": 100.0})
    );
    // A later, different outcome is not the first one: nothing changes.
    assert_eq!(
        ingest(
            &server,
            &key,
            &json!([conversation("a", "cv", "abandoned", t + 500)])
        )
        .await,
        (1, 0)
    );
    assert_eq!(data(&server, &key, q).await, d);
    // An earlier one is: the transfer at +60 s came first.
    assert_eq!(
        ingest(
            &server,
            &key,
            &json!([conversation("a", "cv", "transferred", t + 60)])
        )
        .await,
        (1, 0)
    );
    let d = data(&server, &key, q).await;
    assert_eq!(d["summary"]["auto_resolved"], 0);
    assert_eq!(d["summary"]["transferred_to_agent"], 1);
    assert_eq!(d["summary"]["avg_resolution_time_seconds"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_statuses_are_ignored_and_change_nothing() {
    let (server, key) = utc_server().await;
    let t = at("2026-03-11T10:00:00Z");
    let events = json!([
        outbound("a", "m1", "audio", t),
        status("a", "m1", "played", t + 5),
        status("a", "m1", "delivered", t + 6),
        status("a", "m1", "deleted", t + 7),
        status("a", "ghost", "played", t + 8),
    ]);
    let (status_code, body) = server.post_events(&key, &events).await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["accepted"], 2);
    assert_eq!(body["data"]["duplicates"], 0);
    let ignored = body["data"]["ignored"].as_array().expect("ignored list");
    let indexes: Vec<u64> = ignored
        .iter()
        .map(|i| i["index"].as_u64().expect("index"))
        .collect();
    assert_eq!(indexes, vec![1, 3, 4]);
    assert!(
        ignored[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("played")),
        "{body}"
    );
    assert!(
        ignored[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("deleted")),
        "{body}"
    );
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-11&end_date=2026-03-11",
    )
    .await;
    assert_eq!(summary(&d), (1, 0, 1, 0, 0, 100.0, 0.0));
    // The unknown message of a `played` status was not created.
    assert_eq!(d["by_type"], json!({"audio": 1}));
    // A request of ignored statuses only is still a success.
    let (status_code, body) = server
        .post_events(&key, &json!([status("a", "m1", "played", t)]))
        .await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["accepted"], 0);
    assert_eq!(body["data"]["ignored"][0]["index"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_body_is_accepted() {
    let (server, key) = utc_server().await;
    let t = at("2026-03-11T10:00:00Z");
    let body = format!(
        "{}\n\n{}\r\n{}\n",
        outbound("a", "n1", "text", t),
        status("a", "n1", "read", t + 1),
        inbound("a", "n2", "video", t + 2)
    );
    for content_type in [
        "application/x-ndjson",
        "application/x-ndjson; charset=utf-8",
    ] {
        let (status, resp) = server
            .send(
                server
                    .client
                    .post(format!("{}/api/events", server.base))
                    .bearer_auth(&key)
                    .header("Content-Type", content_type)
                    .body(body.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        if content_type == "application/x-ndjson" {
            assert_eq!(counts(&resp), (3, 0));
        } else {
            assert_eq!(counts(&resp), (0, 3));
        }
    }
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-11&end_date=2026-03-11",
    )
    .await;
    assert_eq!(summary(&d), (1, 1, 1, 1, 0, 100.0, 100.0));
    assert_eq!(d["by_type"], json!({"text": 1, "video": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_as_rfc3339_with_offsets_or_unix_seconds() {
    let (server, key) = utc_server().await;
    let events = json!([
        {"type": "message", "account_id": "a", "timestamp": "2026-03-11T05:29:59+05:30", "id": "r1",
         "direction": "inbound", "message_type": "text"},
        {"type": "message", "account_id": "a", "timestamp": "2026-03-11T00:00:00Z", "id": "r2",
         "direction": "inbound", "message_type": "text"},
        {"type": "message", "account_id": "a", "timestamp": at("2026-03-11T23:59:59Z"), "id": "r3",
         "direction": "inbound", "message_type": "text"},
    ]);
    assert_eq!(ingest(&server, &key, &events).await, (3, 0));
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-10&end_date=2026-03-11",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![
            row("2026-03-10", 0, 1, 0, 0, 0),
            row("2026-03-11", 0, 2, 0, 0, 0)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_needs_backfill_and_future_is_refused() {
    let (server, key) = utc_server().await;
    let old = at("2026-01-10T10:00:00Z");
    let (status, body) = server
        .post_events(&key, &json!([contact("a", "old", old)]))
        .await;
    let msg = assert_error(status, &body, StatusCode::BAD_REQUEST, &["invalid event"]);
    assert!(!msg.is_empty());
    let err = body["errors"][0]["message"]
        .as_str()
        .expect("error message");
    assert!(
        err.contains("35 days") && err.contains("backfill=true"),
        "{err}"
    );
    // Just inside the window is fine without backfill.
    let inside = at(NOW) - 35 * 86_400 + 60;
    assert_eq!(
        ingest(&server, &key, &json!([contact("a", "inside", inside)])).await,
        (1, 0)
    );
    // With backfill, history is accepted and counted in its month; dedup still holds.
    let hist = json!([
        contact("a", "old", old),
        outbound("a", "old-m", "text", old),
        outbound("a", "old-m", "text", old)
    ]);
    assert_eq!(backfill(&server, &key, &hist).await, (2, 1));
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-01-01&end_date=2026-01-31&granularity=month",
    )
    .await;
    assert_eq!(timeline(&d), vec![row("2026-01", 1, 0, 0, 0, 0)]);
    let dash = data(&server, &key, "/api/analytics/dashboard?period=year").await;
    assert_eq!(dash["contacts"]["total"], 2);
    // A status for a message older than the window is reported back as ignored.
    let (status, body) = server
        .post_events(
            &key,
            &json!([helpers::status("a", "old-m", "read", old + 60)]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["accepted"], 0);
    assert!(
        body["data"]["ignored"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("state window")),
        "{body}"
    );
    // Up to 5 minutes ahead is clock skew; more is refused.
    let now = at(NOW);
    assert_eq!(
        ingest(&server, &key, &json!([contact("a", "soon", now + 300)])).await,
        (1, 0)
    );
    let (status, body) = server
        .post_events(&key, &json!([contact("a", "later", now + 301)]))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, &[]);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("future")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_without_a_key() {
    let server = TestServer::start().await;
    let (status, body) = server
        .send(server.client.get(format!("{}/health", server.base)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "success", "data": {"status": "ok"}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_organizations_with_the_master_key_only() {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let url = format!("{}/api/admin/orgs", server.base);
    let (status, body) = server
        .send(
            server
                .client
                .post(&url)
                .bearer_auth(MASTER_KEY)
                .json(&json!({"name": "Delhi", "timezone": "Asia/Kolkata"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["timezone"], "Asia/Kolkata");
    let id = body["data"]["id"].as_str().expect("id");
    let key = body["data"]["api_key"]
        .as_str()
        .expect("api_key")
        .to_string();
    assert!(!id.is_empty() && key.len() >= 32, "{body}");
    // The key works at once.
    let d = data(&server, &key, "/api/analytics/dashboard").await;
    assert_eq!(d["contacts"]["total"], 0);

    // Time zone defaults to UTC.
    let (status, body) = server
        .send(
            server
                .client
                .post(&url)
                .bearer_auth(MASTER_KEY)
                .json(&json!({"name": "Plain"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["timezone"], "UTC");
    assert_ne!(body["data"]["api_key"].as_str(), Some(key.as_str()));

    // No master key, a wrong one, or an organization's key: 401, nothing created.
    let org = json!({"name": "Intruder"});
    let (status, body) = server.send(server.client.post(&url).json(&org)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &["master key"]);
    let (status, body) = server
        .send(
            server
                .client
                .post(&url)
                .bearer_auth("not-the-master-key")
                .json(&org),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &["master key"]);
    let (status, body) = server
        .send(server.client.post(&url).bearer_auth(&key).json(&org))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &["master key"]);

    // Bad bodies.
    let (status, body) = server
        .send(
            server
                .client
                .post(&url)
                .bearer_auth(MASTER_KEY)
                .json(&json!({"name": "X", "timezone": "Mars/Olympus"})),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["timezone", "Mars/Olympus"],
    );
    let (status, body) = server
        .send(
            server
                .client
                .post(&url)
                .bearer_auth(MASTER_KEY)
                .json(&json!({"timezone": "UTC"})),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, &["name"]);
    let (status, body) = server
        .send(
            server
                .client
                .post(&url)
                .bearer_auth(MASTER_KEY)
                .json(&json!({"name": "  "})),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, &["name"]);
    let (status, body) = server
        .send(
            server
                .client
                .post(&url)
                .bearer_auth(MASTER_KEY)
                .json(&json!({"name": "X", "timezone": 5})),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, &["timezone"]);
    let (status, body) = server
        .send(
            server
                .client
                .post(&url)
                .bearer_auth(MASTER_KEY)
                .body("not json"),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, &[]);
    // GET is not a method of this route.
    let (status, body) = server
        .send(server.client.get(&url).bearer_auth(MASTER_KEY))
        .await;
    assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_by_bearer_or_x_api_key_and_401_otherwise() {
    let (server, key) = utc_server().await;
    let t = at("2026-03-11T10:00:00Z");
    let events = json!([outbound("a", "m1", "text", t)]);
    let events_url = format!("{}/api/events", server.base);
    // X-API-Key writes and reads.
    let (status, body) = server
        .send(
            server
                .client
                .post(&events_url)
                .header("X-API-Key", &key)
                .json(&events),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(counts(&body), (1, 0));
    let q = "/api/analytics/messages?start_date=2026-03-11&end_date=2026-03-11";
    let (status, via_header) = server
        .send(
            server
                .client
                .get(format!("{}{q}", server.base))
                .header("X-API-Key", &key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{via_header}");
    assert_eq!(summary(&via_header["data"]), (1, 0, 0, 0, 0, 0.0, 0.0));
    assert_eq!(data(&server, &key, q).await, via_header["data"]);

    let paths = [
        "/api/analytics/messages",
        "/api/analytics/chatbot",
        "/api/analytics/dashboard",
    ];
    for p in paths {
        let url = format!("{}{p}", server.base);
        let (status, body) = server.send(server.client.get(&url)).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, &["API key"]);
        let (status, body) = server
            .send(server.client.get(&url).bearer_auth("ws_wrong"))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            &["invalid API key"],
        );
        let (status, body) = server
            .send(server.client.get(&url).header("X-API-Key", "ws_wrong"))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            &["invalid API key"],
        );
        let (status, body) = server
            .send(server.client.get(&url).basic_auth("user", Some(&key)))
            .await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, &[]);
        // The master key is not an organization's key.
        let (status, body) = server
            .send(server.client.get(&url).bearer_auth(MASTER_KEY))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            &["invalid API key"],
        );
    }
    // Writing without or with a bad key: 401, and nothing recorded.
    let more = json!([outbound("a", "m2", "text", t)]);
    let (status, body) = server
        .send(server.client.post(&events_url).json(&more))
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &[]);
    let (status, body) = server
        .send(
            server
                .client
                .post(&events_url)
                .bearer_auth("ws_wrong")
                .json(&more),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &[]);
    assert_eq!(data(&server, &key, q).await, via_header["data"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_organization_never_sees_another() {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let alpha = server.create_org("Alpha", "UTC").await;
    let beta = server.create_org("Beta", "UTC").await;
    let t = at("2026-03-11T10:00:00Z");
    let events = json!([
        outbound("shared", "m1", "text", t),
        status("shared", "m1", "read", t + 1),
        contact("shared", "c1", t),
        conversation("shared", "cv", "started", t),
        keyword_id("shared", "k", "hi", t),
        campaign("shared", "cp", "running", t),
    ]);
    assert_eq!(ingest(&server, &alpha, &events).await, (6, 0));
    // Beta sees nothing of Alpha's, and Alpha's account is unknown to it.
    let q = "start_date=2026-03-11&end_date=2026-03-11";
    let m = data(&server, &beta, &format!("/api/analytics/messages?{q}")).await;
    assert_eq!(summary(&m), (0, 0, 0, 0, 0, 0.0, 0.0));
    let c = data(&server, &beta, &format!("/api/analytics/chatbot?{q}")).await;
    assert_eq!(c["summary"]["total_conversations"], 0);
    assert_eq!(c["top_keywords"], json!([]));
    let d = data(&server, &beta, "/api/analytics/dashboard?period=year").await;
    assert_eq!(d["contacts"]["total"], 0);
    assert_eq!(d["campaigns"]["total"], 0);
    for p in [
        "/api/analytics/messages",
        "/api/analytics/chatbot",
        "/api/analytics/dashboard",
    ] {
        let (status, body) = server.get(&beta, &format!("{p}?account_id=shared")).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, &["shared"]);
    }
    // The same ids posted by Beta are Beta's own, new events, not Alpha's duplicates.
    assert_eq!(ingest(&server, &beta, &events).await, (6, 0));
    assert_eq!(
        ingest(
            &server,
            &beta,
            &json!([inbound("shared", "only-beta", "text", t)])
        )
        .await,
        (1, 0)
    );
    let a = data(
        &server,
        &alpha,
        &format!("/api/analytics/messages?{q}&account_id=shared"),
    )
    .await;
    assert_eq!(summary(&a), (1, 0, 1, 1, 0, 100.0, 100.0));
    let b = data(
        &server,
        &beta,
        &format!("/api/analytics/messages?{q}&account_id=shared"),
    )
    .await;
    assert_eq!(summary(&b), (1, 1, 1, 1, 0, 100.0, 100.0));
    let da = data(&server, &alpha, "/api/analytics/dashboard?period=year").await;
    assert_eq!(da["contacts"]["total"], 1);
    assert_eq!(da["campaigns"]["active"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_count_each_event_once() {
    let (server, key) = utc_server().await;
    let events = Value::Array(mixed_events());
    let n = mixed_events().len() as u64;
    let server = std::sync::Arc::new(server);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (server, key, events) = (server.clone(), key.clone(), events.clone());
        tasks.push(tokio::spawn(
            async move { ingest(&server, &key, &events).await },
        ));
    }
    let (mut accepted, mut duplicates) = (0, 0);
    for t in tasks {
        let (a, d) = t.await.expect("task");
        accepted += a;
        duplicates += d;
    }
    // Exactly one request's worth is new (contact c1 repeats within the set).
    assert_eq!(accepted, n - 1);
    assert_eq!(duplicates, 6 * n - accepted);
    assert_mixed_figures(&snapshot(&server, &key).await);
}
