//! The three analytics endpoints over HTTP: every metric of SPEC section 3 with exact
//! figures, the account filter, local-day edges and time zones.

use crate::common;
use crate::helpers;

use common::TestServer;
use helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use whatstat::engine::EngineConfig;

/// Thursday 2026-03-12 12:00 UTC: the fixed "now" of most tests here.
const NOW: &str = "2026-03-12T12:00:00Z";

async fn utc_server() -> (TestServer, String) {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let key = server.create_org("Acme", "UTC").await;
    (server, key)
}

/// Messages of account `acc1` around Monday 2026-03-09 .. Wednesday 2026-03-11.
fn message_events() -> Value {
    let a = "acc1";
    json!([
        // Monday 9th
        outbound(a, "m1", "text", at("2026-03-09T10:00:00Z")),
        status(a, "m1", "sent", at("2026-03-09T10:00:01Z")),
        status(a, "m1", "delivered", at("2026-03-09T10:00:02Z")),
        status(a, "m1", "read", at("2026-03-09T10:05:00Z")),
        outbound(a, "m2", "template", at("2026-03-09T11:00:00Z")),
        status(a, "m2", "delivered", at("2026-03-09T11:00:05Z")),
        outbound(a, "m3", "template", at("2026-03-09T12:00:00Z")),
        {"type": "message_status", "account_id": a, "timestamp": at("2026-03-09T12:00:03Z"),
         "message_id": "m3", "status": "failed", "error_code": 131026},
        inbound(a, "i1", "text", at("2026-03-09T13:00:00Z")),
        // Tuesday 10th: nothing.
        // Wednesday 11th
        inbound(a, "i2", "image", at("2026-03-11T00:00:00Z")),
        outbound(a, "m4", "image", at("2026-03-11T09:00:00Z")),
        status(a, "m4", "failed", at("2026-03-11T09:01:00Z")),
        status(a, "m4", "delivered", at("2026-03-11T09:02:00Z")),
        inbound(a, "i3", "sticker", at("2026-03-11T15:00:00Z")),
        outbound(a, "m5", "text", at("2026-03-11T23:59:59Z")),
        // Read after midnight: still counted on the send day.
        status(a, "m5", "read", at("2026-03-12T00:10:00Z")),
        // Outside 9th..11th.
        outbound(a, "m6", "text", at("2026-03-08T23:59:59Z")),
        status(a, "m6", "delivered", at("2026-03-09T00:00:30Z")),
        inbound(a, "i4", "text", at("2026-03-12T00:00:00Z")),
        inbound(a, "i5", "audio", at("2026-02-10T08:00:00Z")),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_summary_by_type_and_day_timeline() {
    let (server, key) = utc_server().await;
    assert_eq!(ingest(&server, &key, &message_events()).await, (20, 0));

    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-11",
    )
    .await;
    assert_eq!(summary(&d), (5, 3, 4, 2, 1, 80.0, 50.0));
    assert_eq!(
        d["by_type"],
        json!({"text": 3, "template": 2, "image": 2, "sticker": 1})
    );
    assert_eq!(
        timeline(&d),
        vec![
            row("2026-03-09", 3, 1, 2, 1, 1),
            zero("2026-03-10"),
            row("2026-03-11", 2, 2, 2, 1, 0)
        ]
    );
    // granularity=day is the default and may be given explicitly.
    let explicit = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-11&granularity=day",
    )
    .await;
    assert_eq!(explicit, d);

    // A single day: end_date is inclusive.
    let one = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-08&end_date=2026-03-08",
    )
    .await;
    assert_eq!(summary(&one), (1, 0, 1, 0, 0, 100.0, 0.0));
    assert_eq!(one["by_type"], json!({"text": 1}));
    assert_eq!(timeline(&one), vec![row("2026-03-08", 1, 0, 1, 0, 0)]);

    // Nothing at all: zeros and 0.0 rates, an empty by_type.
    let none = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-01&end_date=2026-03-02",
    )
    .await;
    assert_eq!(summary(&none), (0, 0, 0, 0, 0, 0.0, 0.0));
    assert_eq!(none["by_type"], json!({}));
    assert_eq!(
        timeline(&none),
        vec![zero("2026-03-01"), zero("2026-03-02")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_rates_round_to_one_decimal() {
    let (server, key) = utc_server().await;
    let t = at("2026-03-10T10:00:00Z");
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(outbound("a", &format!("m{i}"), "template", t + i));
    }
    events.push(status("a", "m0", "delivered", t + 10));
    events.push(status("a", "m1", "read", t + 10));
    events.push(status("a", "m2", "delivered", t + 10));
    assert_eq!(ingest(&server, &key, &Value::Array(events)).await, (6, 0));
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-10&end_date=2026-03-10",
    )
    .await;
    // 3 of 3 delivered, 1 of 3 read.
    assert_eq!(summary(&d), (3, 0, 3, 1, 0, 100.0, 33.3));
    let more = json!([
        outbound("a", "m3", "template", t + 5),
        status("a", "m3", "failed", t + 20)
    ]);
    assert_eq!(ingest(&server, &key, &more).await, (2, 0));
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-10&end_date=2026-03-10",
    )
    .await;
    // 3 of 4 delivered.
    assert_eq!(summary(&d), (4, 0, 3, 1, 1, 75.0, 33.3));
    let more = json!([
        outbound("a", "m4", "text", t + 6),
        outbound("a", "m5", "text", t + 7)
    ]);
    ingest(&server, &key, &more).await;
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-10&end_date=2026-03-10",
    )
    .await;
    // 3 of 6 delivered, 1 of 3 read; two of three read after one more read.
    assert_eq!(summary(&d), (6, 0, 3, 1, 1, 50.0, 33.3));
    ingest(&server, &key, &json!([status("a", "m2", "read", t + 30)])).await;
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-10&end_date=2026-03-10",
    )
    .await;
    assert_eq!(summary(&d), (6, 0, 3, 2, 1, 50.0, 66.7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_hour_timeline_has_every_hour_of_the_day() {
    let (server, key) = utc_server().await;
    ingest(&server, &key, &message_events()).await;
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-09&granularity=hour",
    )
    .await;
    let mut expected: Vec<_> = (0..24)
        .map(|h| zero(&format!("2026-03-09T{h:02}:00:00+00:00")))
        .collect();
    expected[10] = row("2026-03-09T10:00:00+00:00", 1, 0, 1, 1, 0);
    expected[11] = row("2026-03-09T11:00:00+00:00", 1, 0, 1, 0, 0);
    expected[12] = row("2026-03-09T12:00:00+00:00", 1, 0, 0, 0, 1);
    expected[13] = row("2026-03-09T13:00:00+00:00", 0, 1, 0, 0, 0);
    assert_eq!(timeline(&d), expected);
    assert_eq!(summary(&d), (3, 1, 2, 1, 1, 66.7, 50.0));

    // RFC 3339 instants bound the range exactly: [10:00, 13:00).
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09T10:00:00Z&end_date=2026-03-09T13:00:00Z&granularity=hour",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![
            row("2026-03-09T10:00:00+00:00", 1, 0, 1, 1, 0),
            row("2026-03-09T11:00:00+00:00", 1, 0, 1, 0, 0),
            row("2026-03-09T12:00:00+00:00", 1, 0, 0, 0, 1),
        ]
    );
    assert_eq!(summary(&d), (3, 0, 2, 1, 1, 66.7, 50.0));
    assert_eq!(d["by_type"], json!({"text": 1, "template": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_week_and_month_timelines() {
    let (server, key) = utc_server().await;
    ingest(&server, &key, &message_events()).await;
    // A January message (history, so backfilled).
    backfill(
        &server,
        &key,
        &json!([outbound("acc1", "old", "text", at("2026-01-20T10:00:00Z"))]),
    )
    .await;

    // ISO weeks, labelled by their Monday; 2026-03-09 is a Monday.
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-02-23&end_date=2026-03-15&granularity=week",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![
            zero("2026-02-23"),
            row("2026-03-02", 1, 0, 1, 0, 0), // m6 on Sunday the 8th
            row("2026-03-09", 5, 4, 4, 2, 1), // i4 on Thursday the 12th
        ]
    );
    // A range starting mid-week: the first week is labelled by its Monday, clipped to the range.
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-04&end_date=2026-03-10&granularity=week",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![
            row("2026-03-02", 1, 0, 1, 0, 0),
            row("2026-03-09", 3, 1, 2, 1, 1)
        ]
    );

    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2025-12-01&end_date=2026-03-31&granularity=month",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![
            zero("2025-12"),
            row("2026-01", 1, 0, 0, 0, 0),
            row("2026-02", 0, 1, 0, 0, 0),
            row("2026-03", 6, 4, 5, 2, 1),
        ]
    );
    assert_eq!(summary(&d), (7, 5, 5, 2, 1, 71.4, 40.0));
    assert_eq!(
        d["by_type"],
        json!({"text": 6, "template": 2, "image": 2, "sticker": 1, "audio": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_default_range_is_the_last_30_days() {
    let (server, key) = utc_server().await;
    ingest(&server, &key, &message_events()).await;
    let d = data(&server, &key, "/api/analytics/messages").await;
    let tl = timeline(&d);
    assert_eq!(tl.len(), 30);
    assert_eq!(tl[0].0, "2026-02-11");
    assert_eq!(tl[29], row("2026-03-12", 0, 1, 0, 0, 0));
    // Everything but i5 (2026-02-10), which lies one day before the range.
    assert_eq!(summary(&d), (6, 4, 5, 2, 1, 83.3, 40.0));
    assert_eq!(tl.iter().filter(|e| e != &&zero(&e.0)).count(), 4);
}

/// Conversations, flows, keywords and AI calls of account `bot` around 2026-03-09..11.
fn chatbot_events() -> Value {
    let a = "bot";
    let t = |s: &str| at(s);
    let mut ev = vec![
        // c1: auto-resolved after 120 s, 3 messages.
        conversation(a, "c1", "started", t("2026-03-09T10:00:00Z")),
        conversation(a, "c1", "auto_resolved", t("2026-03-09T10:02:00Z")),
        conv_message(a, "c1m1", "inbound", "c1", t("2026-03-09T10:00:00Z")),
        conv_message(a, "c1m2", "outbound", "c1", t("2026-03-09T10:00:10Z")),
        conv_message(a, "c1m3", "inbound", "c1", t("2026-03-09T10:01:00Z")),
        // c2: transferred, 2 messages.
        conversation(a, "c2", "started", t("2026-03-09T11:00:00Z")),
        conversation(a, "c2", "transferred", t("2026-03-09T11:05:00Z")),
        conv_message(a, "c2m1", "inbound", "c2", t("2026-03-09T11:00:00Z")),
        conv_message(a, "c2m2", "outbound", "c2", t("2026-03-09T11:01:00Z")),
        // c3: auto-resolved after 300 s; a later transfer does not change the outcome.
        conversation(a, "c3", "started", t("2026-03-10T08:00:00Z")),
        conversation(a, "c3", "transferred", t("2026-03-10T08:10:00Z")),
        conversation(a, "c3", "auto_resolved", t("2026-03-10T08:05:00Z")),
        conv_message(a, "c3m1", "inbound", "c3", t("2026-03-10T08:00:00Z")),
        // c4: abandoned.
        conversation(a, "c4", "started", t("2026-03-11T09:00:00Z")),
        conversation(a, "c4", "abandoned", t("2026-03-11T09:30:00Z")),
        // c5: still open, 1 message.
        conversation(a, "c5", "started", t("2026-03-11T10:00:00Z")),
        conv_message(a, "c5m1", "inbound", "c5", t("2026-03-11T10:00:00Z")),
        // c6: an outcome whose start never came: not counted, nor its message.
        conversation(a, "c6", "auto_resolved", t("2026-03-10T12:00:00Z")),
        conv_message(a, "c6m1", "inbound", "c6", t("2026-03-10T11:59:00Z")),
        // c7: before the range.
        conversation(a, "c7", "started", t("2026-03-08T23:00:00Z")),
        conversation(a, "c7", "auto_resolved", t("2026-03-09T00:30:00Z")),
        conv_message(a, "c7m1", "inbound", "c7", t("2026-03-09T00:10:00Z")),
        // Flows.
        flow(
            a,
            "r1",
            "Order Status",
            "started",
            t("2026-03-09T10:00:00Z"),
        ),
        flow(
            a,
            "r1",
            "Order Status",
            "completed",
            t("2026-03-09T10:01:00Z"),
        ),
        flow(
            a,
            "r2",
            "Order Status",
            "started",
            t("2026-03-10T10:00:00Z"),
        ),
        flow(
            a,
            "r2",
            "Order Status",
            "completed",
            t("2026-03-10T10:01:00Z"),
        ),
        flow(
            a,
            "r3",
            "Order Status",
            "started",
            t("2026-03-11T10:00:00Z"),
        ),
        flow(a, "r4", "FAQ", "started", t("2026-03-09T12:00:00Z")),
        flow(a, "r4", "FAQ", "completed", t("2026-03-09T12:03:00Z")),
        flow(a, "r5", "Returns", "completed", t("2026-03-10T12:00:00Z")),
        flow(a, "r6", "Greeting", "started", t("2026-03-10T13:00:00Z")),
        flow(a, "r7", "Greeting", "started", t("2026-03-11T13:00:00Z")),
        // A run started before the range, completed inside it: counts at its start.
        flow(a, "r8", "FAQ", "started", t("2026-03-08T23:59:00Z")),
        flow(a, "r8", "FAQ", "completed", t("2026-03-09T00:01:00Z")),
    ];
    // Keywords: order x5, shipping x3, return x2, and ten singletons.
    for i in 0..5 {
        ev.push(keyword(a, "order", t("2026-03-09T09:00:00Z") + i));
    }
    for i in 0..3 {
        ev.push(keyword(a, "shipping", t("2026-03-10T09:00:00Z") + i));
    }
    ev.push(keyword_id(a, "kw-r1", "return", t("2026-03-11T09:00:00Z")));
    ev.push(keyword_id(a, "kw-r2", "return", t("2026-03-11T09:00:01Z")));
    for i in 0..10 {
        ev.push(keyword(a, &format!("k{i:02}"), t("2026-03-11T10:00:00Z")));
    }
    // Outside the range.
    ev.push(keyword(a, "zebra", t("2026-03-12T09:00:00Z")));
    ev.push(keyword(a, "zebra", t("2026-03-12T09:00:01Z")));
    // AI calls: two with a cost, two priced at the default 0.002 USD per 1,000 tokens.
    ev.push(ai(a, "ai1", 1000, Some(0.5), t("2026-03-09T10:00:30Z")));
    ev.push(
        json!({"type": "ai_request", "account_id": a, "timestamp": t("2026-03-10T10:00:30Z"),
                   "id": "ai2", "prompt_tokens": 300, "completion_tokens": 200, "cost": 0.25}),
    );
    ev.push(
        json!({"type": "ai_request", "account_id": a, "timestamp": t("2026-03-10T11:00:00Z"),
                   "id": "ai3", "tokens": 250_000, "model": "gpt-x"}),
    );
    ev.push(ai(a, "ai4", 250_000, None, t("2026-03-11T11:00:00Z")));
    ev.push(ai(a, "ai5", 999, Some(9.0), t("2026-03-12T11:00:00Z")));
    Value::Array(ev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatbot_summary_flows_keywords_and_ai_usage() {
    let (server, key) = utc_server().await;
    let events = chatbot_events();
    let n = events.as_array().map_or(0, Vec::len) as u64;
    assert_eq!(ingest(&server, &key, &events).await, (n, 0));

    let d = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-09&end_date=2026-03-11",
    )
    .await;
    assert_eq!(
        d["summary"],
        json!({
            "total_conversations": 5,
            "auto_resolved": 2,
            "transferred_to_agent": 1,
            "abandoned": 1,
            "resolution_rate": 40.0,
            "avg_messages_per_conversation": 1.4,
            "avg_resolution_time_seconds": 210,
        })
    );
    let flows: Vec<(String, i64, f64)> = d["by_flow"]
        .as_array()
        .expect("by_flow")
        .iter()
        .map(|f| {
            (
                f["flow_name"].as_str().expect("flow_name").to_string(),
                f["conversations"].as_i64().expect("conversations"),
                f["completion_rate"].as_f64().expect("completion_rate"),
            )
        })
        .collect();
    assert_eq!(
        flows,
        vec![
            ("Order Status".to_string(), 3, 66.7),
            ("Greeting".to_string(), 2, 0.0),
            ("FAQ".to_string(), 1, 100.0)
        ]
    );
    let kws = d["top_keywords"].as_array().expect("top_keywords");
    assert_eq!(kws.len(), 10);
    assert_eq!(kws[0], json!({"keyword": "order", "count": 5}));
    assert_eq!(kws[1], json!({"keyword": "shipping", "count": 3}));
    assert_eq!(kws[2], json!({"keyword": "return", "count": 2}));
    for k in &kws[3..] {
        assert_eq!(k["count"], 1, "{k}");
        assert!(
            k["keyword"].as_str().is_some_and(|s| s.starts_with('k')),
            "{k}"
        );
    }
    assert_eq!(
        d["ai_usage"],
        json!({"total_requests": 4, "total_tokens": 501_500, "avg_tokens_per_request": 125_375, "estimated_cost": 1.75})
    );

    // `limit` asks for more or fewer keywords.
    let d20 = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-09&end_date=2026-03-11&limit=20",
    )
    .await;
    let kws = d20["top_keywords"].as_array().expect("top_keywords");
    assert_eq!(kws.len(), 13);
    assert_eq!(
        kws.iter()
            .map(|k| k["count"].as_i64().unwrap_or(-1))
            .sum::<i64>(),
        20
    );
    let d2 = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-09&end_date=2026-03-11&limit=2",
    )
    .await;
    assert_eq!(
        d2["top_keywords"],
        json!([{"keyword": "order", "count": 5}, {"keyword": "shipping", "count": 3}])
    );
    assert_eq!(d2["summary"], d["summary"]);

    // One day only: the 10th.
    let day = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-10&end_date=2026-03-10",
    )
    .await;
    assert_eq!(
        day["summary"],
        json!({"total_conversations": 1, "auto_resolved": 1, "transferred_to_agent": 0, "abandoned": 0,
               "resolution_rate": 100.0, "avg_messages_per_conversation": 1.0, "avg_resolution_time_seconds": 300})
    );
    assert_eq!(
        day["ai_usage"],
        json!({"total_requests": 2, "total_tokens": 250_500, "avg_tokens_per_request": 125_250, "estimated_cost": 0.75})
    );
    assert_eq!(
        day["top_keywords"],
        json!([{"keyword": "shipping", "count": 3}])
    );

    // The 8th: c7 and r8 count at their start, though their ends fell on the 9th.
    let d8 = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-08&end_date=2026-03-08",
    )
    .await;
    assert_eq!(d8["summary"]["total_conversations"], 1);
    assert_eq!(d8["summary"]["auto_resolved"], 1);
    assert_eq!(d8["summary"]["avg_resolution_time_seconds"], 5400);
    assert_eq!(d8["summary"]["avg_messages_per_conversation"], 1.0);
    assert_eq!(d8["by_flow"][0]["flow_name"], "FAQ");
    assert_eq!(d8["by_flow"][0]["conversations"], 1);
    assert_eq!(d8["by_flow"][0]["completion_rate"], 100.0);

    // An empty range: zeros everywhere.
    let empty = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-01&end_date=2026-03-01",
    )
    .await;
    assert_eq!(
        empty,
        json!({
            "summary": {"total_conversations": 0, "auto_resolved": 0, "transferred_to_agent": 0, "abandoned": 0,
                        "resolution_rate": 0.0, "avg_messages_per_conversation": 0.0, "avg_resolution_time_seconds": 0},
            "by_flow": [],
            "top_keywords": [],
            "ai_usage": {"total_requests": 0, "total_tokens": 0, "avg_tokens_per_request": 0, "estimated_cost": 0.0},
            "range": {"start": "2026-03-01T00:00:00+00:00", "end": "2026-03-02T00:00:00+00:00", "timezone": "UTC"},
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ai_cost_uses_per_model_prices_when_configured() {
    let mut config = EngineConfig::default();
    config.ai_prices.insert("gpt-4o".to_string(), 0.005);
    let server = TestServer::start_with(config).await;
    server.set_now(at(NOW));
    let key = server.create_org("Priced", "UTC").await;
    let t = at("2026-03-10T10:00:00Z");
    let events = json!([
        {"type": "ai_request", "account_id": "a", "timestamp": t, "model": "gpt-4o", "tokens": 100_000},
        {"type": "ai_request", "account_id": "a", "timestamp": t, "model": "other", "tokens": 100_000},
        {"type": "ai_request", "account_id": "a", "timestamp": t, "model": "gpt-4o", "tokens": 1_000, "cost": 3.0},
    ]);
    assert_eq!(ingest(&server, &key, &events).await, (3, 0));
    let d = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-10&end_date=2026-03-10",
    )
    .await;
    // 100k x 0.005/1k = 0.50, 100k x 0.002/1k = 0.20, plus 3.00 given.
    assert_eq!(
        d["ai_usage"],
        json!({"total_requests": 3, "total_tokens": 201_000, "avg_tokens_per_request": 67_000, "estimated_cost": 3.7})
    );
}

/// Contacts, messages, campaigns and conversations spread over this year and the last,
/// seen on Thursday 2026-03-12 (week since Monday the 9th, month since the 1st).
async fn dashboard_fixture(server: &TestServer, key: &str) {
    let a = "shop";
    let t = |s: &str| at(s);
    // History (older than the 35-day state window): backfilled.
    let history = json!([
        contact(a, "d1", t("2025-12-05T10:00:00Z")),
        contact(a, "d2", t("2025-12-20T10:00:00Z")),
        contact(a, "j1", t("2026-01-20T10:00:00Z")),
        outbound(a, "dec-m", "template", t("2025-12-20T10:00:00Z")),
        campaign(a, "cp3", "running", t("2025-12-01T10:00:00Z")),
        conversation(a, "k7", "started", t("2026-01-15T10:00:00Z")),
        conversation(a, "k7", "auto_resolved", t("2026-01-15T10:01:00Z")),
    ]);
    assert_eq!(backfill(server, key, &history).await, (7, 0));
    let recent = json!([
        contact(a, "f1", t("2026-02-10T10:00:00Z")),
        contact(a, "m1", t("2026-03-03T10:00:00Z")),
        contact(a, "w1", t("2026-03-10T10:00:00Z")),
        contact(a, "t1", t("2026-03-12T08:00:00Z")),
        // First seen today, then learnt to be older: counts once, on the 11th.
        contact(a, "x1", t("2026-03-12T09:00:00Z")),
        contact(a, "x1", t("2026-03-11T09:00:00Z")),
        // Messages.
        outbound(a, "feb-1", "text", t("2026-02-10T10:00:00Z")),
        outbound(a, "feb-2", "text", t("2026-02-10T11:00:00Z")),
        inbound(a, "feb-3", "text", t("2026-02-10T12:00:00Z")),
        outbound(a, "mar-1", "text", t("2026-03-03T10:00:00Z")),
        inbound(a, "mar-2", "text", t("2026-03-03T11:00:00Z")),
        inbound(a, "mar-3", "text", t("2026-03-03T12:00:00Z")),
        inbound(a, "wk-1", "text", t("2026-03-10T12:00:00Z")),
        outbound(a, "td-1", "text", t("2026-03-12T00:00:00Z")),
        outbound(a, "td-2", "image", t("2026-03-12T11:00:00Z")),
        inbound(a, "td-3", "text", t("2026-03-12T11:30:00Z")),
        // Campaigns.
        campaign(a, "cp1", "created", t("2026-02-10T10:00:00Z")),
        campaign(a, "cp1", "running", t("2026-02-11T10:00:00Z")),
        campaign(a, "cp1", "completed", t("2026-03-03T10:00:00Z")),
        campaign(a, "cp2", "created", t("2026-03-10T10:00:00Z")),
        campaign(a, "cp2", "scheduled", t("2026-03-10T11:00:00Z")),
        campaign(a, "cp2", "running", t("2026-03-11T10:00:00Z")),
        campaign(a, "cp3", "completed", t("2026-02-20T10:00:00Z")),
        // cp4: running now; a late `scheduled` with an older timestamp changes nothing.
        campaign(a, "cp4", "running", t("2026-03-12T09:00:00Z")),
        campaign(a, "cp4", "scheduled", t("2026-03-11T09:00:00Z")),
        campaign(a, "cp5", "running", t("2026-03-04T10:00:00Z")),
        campaign(a, "cp5", "cancelled", t("2026-03-06T10:00:00Z")),
        // Conversations.
        conversation(a, "k1", "started", t("2026-03-12T08:00:00Z")),
        conversation(a, "k1", "auto_resolved", t("2026-03-12T08:01:00Z")),
        conversation(a, "k2", "started", t("2026-03-12T09:00:00Z")),
        conversation(a, "k2", "transferred", t("2026-03-12T09:01:00Z")),
        conversation(a, "k3", "started", t("2026-03-12T10:00:00Z")),
        conversation(a, "k4", "started", t("2026-03-10T10:00:00Z")),
        conversation(a, "k4", "auto_resolved", t("2026-03-10T10:01:00Z")),
        conversation(a, "k5", "started", t("2026-03-02T10:00:00Z")),
        conversation(a, "k5", "transferred", t("2026-03-02T10:01:00Z")),
        conversation(a, "k6", "started", t("2026-02-10T10:00:00Z")),
        conversation(a, "k6", "auto_resolved", t("2026-02-10T10:01:00Z")),
    ]);
    assert_eq!(ingest(server, key, &recent).await, (37, 1));
}

fn dashboard(
    contacts: (i64, i64, i64, f64),
    messages: (i64, i64, i64, i64),
    chatbot: (i64, i64, i64, f64),
    range: (&str, &str),
) -> Value {
    json!({
        "range": {"start": format!("{}T00:00:00+00:00", range.0), "end": format!("{}T00:00:00+00:00", range.1), "timezone": "UTC"},
        "contacts": {"total": contacts.0, "new_today": contacts.1, "new_this_week": contacts.2, "growth_percent": contacts.3},
        "messages": {"total": messages.0, "sent": messages.1, "received": messages.2, "today": messages.3},
        "campaigns": {"total": 5, "active": 2, "completed_this_month": 1},
        "chatbot": {"conversations_today": chatbot.0, "auto_resolved": chatbot.1, "transferred_to_agent": chatbot.2,
                    "resolution_rate": chatbot.3},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_all_four_periods() {
    let (server, key) = utc_server().await;
    dashboard_fixture(&server, &key).await;
    // 8 contacts: 1 today, 3 this week, 4 this month, 6 this year.
    let today = data(&server, &key, "/api/analytics/dashboard?period=today").await;
    assert_eq!(
        today,
        dashboard(
            (8, 1, 3, 14.3),
            (3, 2, 1, 3),
            (3, 1, 1, 33.3),
            ("2026-03-12", "2026-03-13")
        )
    );
    let week = data(&server, &key, "/api/analytics/dashboard?period=week").await;
    assert_eq!(
        week,
        dashboard(
            (8, 1, 3, 60.0),
            (4, 2, 2, 3),
            (3, 2, 1, 50.0),
            ("2026-03-09", "2026-03-13")
        )
    );
    let month = data(&server, &key, "/api/analytics/dashboard?period=month").await;
    assert_eq!(
        month,
        dashboard(
            (8, 1, 3, 100.0),
            (7, 3, 4, 3),
            (3, 2, 2, 40.0),
            ("2026-03-01", "2026-03-13")
        )
    );
    let year = data(&server, &key, "/api/analytics/dashboard?period=year").await;
    assert_eq!(
        year,
        dashboard(
            (8, 1, 3, 300.0),
            (10, 5, 5, 3),
            (3, 4, 2, 57.1),
            ("2026-01-01", "2026-03-13")
        )
    );
    // `month` is the default period.
    assert_eq!(data(&server, &key, "/api/analytics/dashboard").await, month);
    // The account filter gives the same for the only account.
    assert_eq!(
        data(
            &server,
            &key,
            "/api/analytics/dashboard?account_id=shop&period=year"
        )
        .await,
        year
    );

    // The next Monday, a new week and day begin: only the all-time figures remain.
    server.set_now(at("2026-03-16T00:30:00Z"));
    let monday = data(&server, &key, "/api/analytics/dashboard?period=week").await;
    assert_eq!(
        monday,
        dashboard(
            (8, 0, 0, 0.0),
            (0, 0, 0, 0),
            (0, 0, 0, 0.0),
            ("2026-03-16", "2026-03-17")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_growth_is_zero_without_earlier_contacts() {
    let (server, key) = utc_server().await;
    ingest(
        &server,
        &key,
        &json!([contact("a", "c1", at("2026-03-12T10:00:00Z"))]),
    )
    .await;
    let d = data(&server, &key, "/api/analytics/dashboard?period=today").await;
    assert_eq!(
        d["contacts"],
        json!({"total": 1, "new_today": 1, "new_this_week": 1, "growth_percent": 0.0})
    );
    assert_eq!(
        d["campaigns"],
        json!({"total": 0, "active": 0, "completed_this_month": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_filter_and_unknown_account() {
    let (server, key) = utc_server().await;
    let t = at("2026-03-10T10:00:00Z");
    let events = json!([
        outbound("east", "e1", "text", t),
        status("east", "e1", "read", t + 60),
        outbound("east", "e2", "template", t + 1),
        inbound("west", "w1", "image", t),
        // Ids are per account: the same id in another account is another message.
        outbound("west", "e1", "text", t),
        conversation("west", "cv", "started", t),
        conversation("west", "cv", "auto_resolved", t + 30),
        keyword("east", "hello", t),
        contact("east", "c1", t),
        contact("west", "c1", t),
    ]);
    assert_eq!(ingest(&server, &key, &events).await, (10, 0));
    let q = "start_date=2026-03-10&end_date=2026-03-10";
    let all = data(&server, &key, &format!("/api/analytics/messages?{q}")).await;
    assert_eq!(summary(&all), (3, 1, 1, 1, 0, 33.3, 100.0));
    let east = data(
        &server,
        &key,
        &format!("/api/analytics/messages?{q}&account_id=east"),
    )
    .await;
    assert_eq!(summary(&east), (2, 0, 1, 1, 0, 50.0, 100.0));
    assert_eq!(east["by_type"], json!({"text": 1, "template": 1}));
    let west = data(
        &server,
        &key,
        &format!("/api/analytics/messages?{q}&account_id=west"),
    )
    .await;
    assert_eq!(summary(&west), (1, 1, 0, 0, 0, 0.0, 0.0));
    assert_eq!(west["by_type"], json!({"text": 1, "image": 1}));

    let cb_east = data(
        &server,
        &key,
        &format!("/api/analytics/chatbot?{q}&account_id=east"),
    )
    .await;
    assert_eq!(cb_east["summary"]["total_conversations"], 0);
    assert_eq!(
        cb_east["top_keywords"],
        json!([{"keyword": "hello", "count": 1}])
    );
    let cb_west = data(
        &server,
        &key,
        &format!("/api/analytics/chatbot?{q}&account_id=west"),
    )
    .await;
    assert_eq!(cb_west["summary"]["total_conversations"], 1);
    assert_eq!(cb_west["summary"]["avg_resolution_time_seconds"], 30);
    assert_eq!(cb_west["top_keywords"], json!([]));

    let dash_all = data(&server, &key, "/api/analytics/dashboard").await;
    assert_eq!(dash_all["contacts"]["total"], 2);
    assert_eq!(dash_all["messages"]["total"], 4);
    let dash_west = data(&server, &key, "/api/analytics/dashboard?account_id=west").await;
    assert_eq!(dash_west["contacts"]["total"], 1);
    assert_eq!(
        dash_west["messages"],
        json!({"total": 2, "sent": 1, "received": 1, "today": 0})
    );
    assert_eq!(dash_west["chatbot"]["auto_resolved"], 1);

    for path in [
        "/api/analytics/messages?account_id=north",
        "/api/analytics/chatbot?account_id=north",
        "/api/analytics/dashboard?account_id=north",
    ] {
        let (status, body) = server.get(&key, path).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, &["north"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kolkata_days_split_at_local_midnight() {
    let server = TestServer::start().await;
    // 2026-03-13 00:30 IST.
    server.set_now(at("2026-03-12T19:00:00Z"));
    let key = server.create_org("Mumbai", "Asia/Kolkata").await;
    let events = json!([
        // 23:50 IST on the 12th and 00:10 IST on the 13th.
        outbound("in", "late", "text", at("2026-03-12T23:50:00+05:30")),
        outbound("in", "early", "image", at("2026-03-13T00:10:00+05:30")),
        contact("in", "c-late", at("2026-03-12T18:20:00Z")),
        contact("in", "c-early", at("2026-03-12T18:40:00Z")),
    ]);
    assert_eq!(ingest(&server, &key, &events).await, (4, 0));
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-12&end_date=2026-03-13",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![
            row("2026-03-12", 1, 0, 0, 0, 0),
            row("2026-03-13", 1, 0, 0, 0, 0)
        ]
    );
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-12&end_date=2026-03-12&granularity=hour",
    )
    .await;
    let tl = timeline(&d);
    assert_eq!(tl.len(), 24);
    assert_eq!(tl[0].0, "2026-03-12T00:00:00+05:30");
    assert_eq!(tl[23], row("2026-03-12T23:00:00+05:30", 1, 0, 0, 0, 0));
    // Today (the 13th in Kolkata) holds only what happened after local midnight.
    let dash = data(&server, &key, "/api/analytics/dashboard?period=today").await;
    assert_eq!(
        dash["contacts"],
        json!({"total": 2, "new_today": 1, "new_this_week": 2, "growth_percent": 100.0})
    );
    assert_eq!(
        dash["messages"],
        json!({"total": 1, "sent": 1, "received": 0, "today": 1})
    );
    // Instants with an offset are exact; a month timeline is labelled in local months.
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-12T18:30:00Z&end_date=2026-03-12T19:30:00Z&granularity=hour",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![row("2026-03-13T00:00:00+05:30", 1, 0, 0, 0, 0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kathmandu_quarter_hour_offset() {
    let server = TestServer::start().await;
    server.set_now(at("2026-03-14T00:00:00Z"));
    let key = server.create_org("Kathmandu", "Asia/Kathmandu").await;
    // Local midnight of the 13th is 2026-03-12T18:15Z.
    let events = json!([
        inbound("np", "a", "text", at("2026-03-12T18:14:59Z")),
        inbound("np", "b", "text", at("2026-03-12T18:15:00Z")),
        inbound("np", "c", "text", at("2026-03-12T19:14:59Z")),
        inbound("np", "d", "text", at("2026-03-12T19:15:00Z")),
    ]);
    assert_eq!(ingest(&server, &key, &events).await, (4, 0));
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-12&end_date=2026-03-13",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![
            row("2026-03-12", 0, 1, 0, 0, 0),
            row("2026-03-13", 0, 3, 0, 0, 0)
        ]
    );
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-13&end_date=2026-03-13&granularity=hour",
    )
    .await;
    let tl = timeline(&d);
    assert_eq!(tl.len(), 24);
    assert_eq!(tl[0], row("2026-03-13T00:00:00+05:45", 0, 2, 0, 0, 0));
    assert_eq!(tl[1], row("2026-03-13T01:00:00+05:45", 0, 1, 0, 0, 0));
    assert_eq!(tl[23].0, "2026-03-13T23:00:00+05:45");
    assert!(tl[2..].iter().all(|e| e == &zero(&e.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_york_spring_forward_day_has_23_hours() {
    let server = TestServer::start().await;
    server.set_now(at("2026-03-20T12:00:00Z"));
    let key = server.create_org("NYC", "America/New_York").await;
    // 2026-03-08: clocks jump from 02:00 EST to 03:00 EDT.
    let events = json!([
        outbound("ny", "before", "text", at("2026-03-08T01:30:00-05:00")),
        outbound("ny", "after", "text", at("2026-03-08T03:30:00-04:00")),
        outbound("ny", "last", "text", at("2026-03-08T23:59:59-04:00")),
        outbound("ny", "next", "text", at("2026-03-09T00:00:00-04:00")),
        outbound("ny", "prev", "text", at("2026-03-07T23:59:59-05:00")),
    ]);
    assert_eq!(ingest(&server, &key, &events).await, (5, 0));
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-08&end_date=2026-03-08&granularity=hour",
    )
    .await;
    let tl = timeline(&d);
    let labels: Vec<&str> = tl.iter().map(|e| e.0.as_str()).collect();
    let mut expected = vec![
        "2026-03-08T00:00:00-05:00".to_string(),
        "2026-03-08T01:00:00-05:00".to_string(),
    ];
    expected.extend((3..24).map(|h| format!("2026-03-08T{h:02}:00:00-04:00")));
    assert_eq!(labels, expected);
    assert_eq!(tl.len(), 23);
    assert_eq!(tl[1].1, 1);
    assert_eq!(tl[2].1, 1);
    assert_eq!(tl[22].1, 1);
    assert_eq!(summary(&d).0, 3);
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-07&end_date=2026-03-09",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![
            row("2026-03-07", 1, 0, 0, 0, 0),
            row("2026-03-08", 3, 0, 0, 0, 0),
            row("2026-03-09", 1, 0, 0, 0, 0)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_york_fall_back_day_has_25_hours() {
    let server = TestServer::start().await;
    server.set_now(at("2026-11-10T12:00:00Z"));
    let key = server.create_org("NYC", "America/New_York").await;
    // 2026-11-01: 01:00-02:00 happens twice, first EDT then EST.
    let events = json!([
        outbound("ny", "edt", "text", at("2026-11-01T01:30:00-04:00")),
        inbound("ny", "est", "text", at("2026-11-01T01:30:00-05:00")),
        outbound("ny", "late", "text", at("2026-11-01T23:30:00-05:00")),
    ]);
    assert_eq!(ingest(&server, &key, &events).await, (3, 0));
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-11-01&end_date=2026-11-01&granularity=hour",
    )
    .await;
    let tl = timeline(&d);
    let mut expected = vec![
        zero("2026-11-01T00:00:00-04:00"),
        row("2026-11-01T01:00:00-04:00", 1, 0, 0, 0, 0),
        row("2026-11-01T01:00:00-05:00", 0, 1, 0, 0, 0),
    ];
    expected.extend((2..24).map(|h| zero(&format!("2026-11-01T{h:02}:00:00-05:00"))));
    expected[24] = row("2026-11-01T23:00:00-05:00", 1, 0, 0, 0, 0);
    assert_eq!(tl, expected);
    assert_eq!(tl.len(), 25);
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-11-01&end_date=2026-11-01",
    )
    .await;
    assert_eq!(timeline(&d), vec![row("2026-11-01", 2, 1, 0, 0, 0)]);
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-10-26&end_date=2026-11-08&granularity=week",
    )
    .await;
    assert_eq!(
        timeline(&d),
        vec![row("2026-10-26", 2, 1, 0, 0, 0), zero("2026-11-02")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tz_parameter_overrides_the_zone_where_hours_allow() {
    let (server, key) = utc_server().await;
    let events = json!([
        outbound("a", "m1", "text", at("2026-03-10T03:30:00Z")), // 23:30 EDT on the 9th
        outbound("a", "m2", "text", at("2026-03-10T04:30:00Z")), // 00:30 EDT on the 10th
    ]);
    ingest(&server, &key, &events).await;
    let utc = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-10",
    )
    .await;
    assert_eq!(
        timeline(&utc),
        vec![zero("2026-03-09"), row("2026-03-10", 2, 0, 0, 0, 0)]
    );
    let ny = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-10&tz=America/New_York",
    )
    .await;
    assert_eq!(
        timeline(&ny),
        vec![
            row("2026-03-09", 1, 0, 0, 0, 0),
            row("2026-03-10", 1, 0, 0, 0, 0)
        ]
    );
    // Kolkata days start on the half hour of a UTC organization's hours: refused, not approximated.
    let (status, body) = server
        .get(
            &key,
            "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-10&tz=Asia/Kolkata",
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["cannot be served exactly"],
    );
}

/// Every answer says how long the server spent on it, for telling server time from the
/// network's and the client's.
#[tokio::test]
async fn answers_carry_the_server_time() {
    let (server, key) = utc_server().await;
    for path in [
        "/api/analytics/dashboard",
        "/api/analytics/messages",
        "/api/nowhere",
    ] {
        let resp = server
            .client
            .get(format!("{}{path}", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .expect("request");
        let header = resp
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ms: f64 = header
            .as_deref()
            .and_then(|v| v.strip_prefix("app;dur="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{path}: Server-Timing is {header:?}"));
        assert!((0.0..60_000.0).contains(&ms), "{path}: {ms} ms");
    }
}
