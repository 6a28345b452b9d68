//! Retention tiers, compaction, the state window and imports (SPEC section 4).

use crate::common;

use common::TestServer;
use jiff::{Timestamp, tz::TimeZone};
use reqwest::StatusCode;
use serde_json::{Value, json};
use whatstat::engine::EngineConfig;

fn secs(s: &str) -> i64 {
    s.parse::<Timestamp>().expect("timestamp").as_second()
}

fn tiered() -> EngineConfig {
    EngineConfig {
        hourly_retention_days: Some(30),
        daily_retention_days: Some(365),
        ..EngineConfig::default()
    }
}

fn inbound(id: &str, at: i64) -> Value {
    json!({"type":"message","account_id":"a1","timestamp":at,"id":id,"direction":"inbound","message_type":"text"})
}

async fn post_all(s: &TestServer, key: &str, events: &[Value]) {
    for chunk in events.chunks(5000) {
        let (status, body) = s.post_backfill(key, &Value::Array(chunk.to_vec())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn received(s: &TestServer, key: &str, query: &str) -> Value {
    let (status, body) = s
        .get(key, &format!("/api/analytics/messages?{query}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body["data"].clone()
}

fn timeline_received(data: &Value) -> Vec<i64> {
    data["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["received"].as_i64().expect("received"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_years_of_traffic_keep_rows_per_bucket_not_per_event() {
    let s = TestServer::start_with(tiered()).await;
    let key = s.create_org("Tiers", "UTC").await;
    let t0 = secs("2026-06-15T12:00:00Z");
    s.set_now(t0);
    // One inbound text message every 6 hours for two years up to t0.
    let first = secs("2024-06-16T00:00:00Z");
    let events: Vec<Value> = (0..)
        .map(|i| first + i * 6 * 3600)
        .take_while(|t| *t <= t0)
        .map(|t| inbound(&format!("m{t}"), t))
        .collect();
    let n = events.len() as i64;
    post_all(&s, &key, &events).await;

    // Forty days later everything older than 30 days in hours and 365 in days has aged out.
    let now = t0 + 40 * 86_400;
    s.set_now(now);
    let report = s.services.compaction.compact().await.expect("compact");
    assert!(
        report.hourly_rows_expired > 0 && report.daily_rows_expired > 0,
        "{report:?}"
    );
    let rows = s.rollups.tier_rows(None).await.expect("rows");

    // Two series (received, by_type/text) per bucket that holds events, kept for the
    // account and again in the organization-wide sums.
    let hour_bound = now - 30 * 86_400; // on the hour already: now is 12:00 UTC
    let hours_with_events = events
        .iter()
        .filter(|e| e["timestamp"].as_i64().is_some_and(|t| t >= hour_bound))
        .count();
    let day_bound = secs("2025-07-25T00:00:00Z"); // local day of now - 365 days
    assert_eq!(
        Timestamp::from_second(now - 365 * 86_400)
            .expect("ts")
            .to_string()
            .get(..10),
        Some("2025-07-25")
    );
    let last_event_day = secs("2026-06-15T00:00:00Z");
    let days_with_events = (last_event_day - day_bound) / 86_400 + 1;
    let months = 25; // 2024-06 .. 2026-06
    assert_eq!(rows.hour, 4 * hours_with_events as u64);
    assert_eq!(rows.day, 4 * days_with_events as u64);
    assert_eq!(rows.month, 4 * months as u64);

    // Every event is still counted, exactly, from the tiers that remain.
    let all = received(
        &s,
        &key,
        "granularity=month&start_date=2024-06-01&end_date=2026-07-31",
    )
    .await;
    assert_eq!(all["summary"]["total_received"], json!(n));
    let first_month = timeline_received(&all)[0];
    assert_eq!(first_month, 15 * 4); // 16..30 June 2024, four a day

    // Compaction run twice changes nothing.
    let again = s.services.compaction.compact().await.expect("compact");
    assert_eq!(
        (
            again.hourly_rows_expired,
            again.daily_rows_expired,
            again.states_pruned
        ),
        (0, 0, 0)
    );
    assert_eq!(s.rollups.tier_rows(None).await.expect("rows"), rows);
    let all2 = received(
        &s,
        &key,
        "granularity=month&start_date=2024-06-01&end_date=2026-07-31",
    )
    .await;
    assert_eq!(all, all2);

    // Storage is bounded: the message states are gone with the state window.
    assert_eq!(rows.states, 0);
    assert!(report.states_pruned >= n as u64 - 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_past_a_tier_are_refused_with_what_can_be_served() {
    let s = TestServer::start_with(tiered()).await;
    let key = s.create_org("Refusals", "Asia/Kolkata").await;
    s.set_now(secs("2026-06-15T12:00:00Z"));
    let (status, body) = s
        .get(
            &key,
            "/api/analytics/messages?granularity=hour&start_date=2026-05-01&end_date=2026-05-02",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = body["message"].as_str().expect("message");
    assert!(msg.contains("hourly from 2026-05-16T"), "{msg}");
    assert!(
        msg.contains("daily from 2025-06-15T00:00:00+05:30"),
        "{msg}"
    );
    assert_eq!(body["status"], "error");

    let (status, body) = s
        .get(
            &key,
            "/api/analytics/messages?granularity=day&start_date=2025-01-01&end_date=2025-01-31",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The same old days as a whole month are served from the monthly tier.
    let ok = received(
        &s,
        &key,
        "granularity=month&start_date=2025-01-01&end_date=2025-01-31",
    )
    .await;
    assert_eq!(ok["timeline"].as_array().map(Vec::len), Some(1));
    // Fourteen months: months for the old part, days and hours for the recent part.
    let ok = received(
        &s,
        &key,
        "granularity=month&start_date=2025-04-01&end_date=2026-05-31",
    )
    .await;
    assert_eq!(ok["timeline"].as_array().map(Vec::len), Some(14));
    // An old range that does not start on a month boundary cannot be served.
    let (status, body) = s
        .get(
            &key,
            "/api/analytics/messages?granularity=month&start_date=2025-01-10&end_date=2025-03-31",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("2025-01-10T00:00:00+05:30")),
        "{body}"
    );
    // Chatbot and instants on the hour inside the hourly window are served.
    let (status, _) = s
        .get(
            &key,
            "/api/analytics/chatbot?start_date=2026-06-10T10:30:00Z&end_date=2026-06-11T10:30:00Z",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s
        .get(
            &key,
            "/api/analytics/chatbot?start_date=2026-06-10T10:00:00Z&end_date=2026-06-11T10:30:00Z",
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "Kolkata hours start at :30 UTC: {body}"
    );
}

/// Events at the edges of local days, counted per day and month after the hours expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_and_months_stay_exact_after_compaction_in_odd_zones() {
    for zone in ["Asia/Kolkata", "Asia/Kathmandu", "America/New_York"] {
        let s = TestServer::start_with(tiered()).await;
        let key = s.create_org(zone, zone).await;
        let tz = TimeZone::get(zone).expect("zone");
        let now = secs("2025-12-20T12:00:00Z");
        s.set_now(now);
        // 2025-03-09 and 2025-11-02 are New York's 23- and 25-hour days.
        let days = [
            jiff::civil::date(2025, 3, 9),
            jiff::civil::date(2025, 11, 2),
            jiff::civil::date(2025, 11, 30),
        ];
        let mut events = Vec::new();
        for (i, d) in days.iter().enumerate() {
            let start = d
                .to_zoned(tz.clone())
                .expect("zoned")
                .start_of_day()
                .expect("sod")
                .timestamp()
                .as_second();
            let next = d
                .tomorrow()
                .expect("tomorrow")
                .to_zoned(tz.clone())
                .expect("z")
                .timestamp()
                .as_second();
            // First second of the day, the last one, and the first of the next day.
            for (j, t) in [start, next - 1, next].into_iter().enumerate() {
                events.push(inbound(&format!("{zone}-{i}-{j}"), t));
            }
            // One per local hour of the day: 23, 24 or 25 of them.
            let mut t = start + 1800;
            while t < next {
                events.push(inbound(&format!("{zone}-{i}-h{t}"), t));
                t += 3600;
            }
        }
        post_all(&s, &key, &events).await;
        s.set_now(now + 40 * 86_400);
        s.services.compaction.compact().await.expect("compact");
        let hours_in = |d: jiff::civil::Date| {
            let a = d.to_zoned(tz.clone()).expect("z").timestamp().as_second();
            let b = d
                .tomorrow()
                .expect("t")
                .to_zoned(tz.clone())
                .expect("z")
                .timestamp()
                .as_second();
            (b - a) / 3600
        };
        for d in days {
            let data = received(
                &s,
                &key,
                &format!("granularity=day&start_date={d}&end_date={d}"),
            )
            .await;
            assert_eq!(
                timeline_received(&data),
                vec![2 + hours_in(d)],
                "{zone} {d}"
            );
        }
        let data = received(
            &s,
            &key,
            "granularity=month&start_date=2025-03-01&end_date=2025-12-31",
        )
        .await;
        let months = timeline_received(&data);
        assert_eq!(months.len(), 10);
        assert_eq!(months[0], 2 + hours_in(days[0]) + 1, "{zone} March");
        assert_eq!(
            months[8],
            3 + hours_in(days[1]) + 2 + hours_in(days[2]),
            "{zone} November"
        );
        assert_eq!(
            months[9], 1,
            "{zone} December gets the first second of 1 December"
        );
        if zone == "America/New_York" {
            assert_eq!(hours_in(days[0]), 23);
            assert_eq!(hours_in(days[1]), 25);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_read_reaches_every_tier_still_kept() {
    let s = TestServer::start_with(tiered()).await;
    let key = s.create_org("Late", "UTC").await;
    let sent = secs("2026-06-01T09:15:00Z");
    s.set_now(sent + 60);
    let msg = json!([{"type":"message","account_id":"a1","timestamp":sent,"id":"m1","direction":"outbound","message_type":"template"}]);
    assert_eq!(s.post_events(&key, &msg).await.0, StatusCode::OK);
    s.set_now(sent + 20 * 86_400);
    let read = json!([{"type":"message_status","account_id":"a1","timestamp":sent + 20 * 86_400 - 5,"message_id":"m1","status":"read"}]);
    let (status, body) = s.post_events(&key, &read).await;
    assert_eq!(
        (status, body["data"]["accepted"].clone()),
        (StatusCode::OK, json!(1))
    );
    for q in [
        "granularity=hour&start_date=2026-06-01T09:00:00Z&end_date=2026-06-01T10:00:00Z",
        "granularity=day&start_date=2026-06-01&end_date=2026-06-01",
        "granularity=month&start_date=2026-06-01&end_date=2026-06-30",
    ] {
        let data = received(&s, &key, q).await;
        let e = &data["timeline"][0];
        assert_eq!(
            (
                e["sent"].as_i64(),
                e["delivered"].as_i64(),
                e["read"].as_i64()
            ),
            (Some(1), Some(1), Some(1)),
            "{q}"
        );
    }
    // Past the state window the message is forgotten: its status is reported, not counted.
    s.set_now(sent + 40 * 86_400);
    s.services.compaction.compact().await.expect("compact");
    let late = json!([{"type":"message_status","account_id":"a1","timestamp":sent + 3600,"message_id":"m1","status":"failed"}]);
    let (status, body) = s.post_events(&key, &late).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["accepted"], json!(0));
    assert_eq!(body["data"]["ignored"][0]["index"], json!(0));
    // Any other history needs backfill, and the refusal names the window.
    let (status, body) = s.post_events(&key, &json!([inbound("old", sent)])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("35 days") && m.contains("backfill=true")),
        "{body}"
    );
    let data = received(
        &s,
        &key,
        "granularity=month&start_date=2026-06-01&end_date=2026-06-30",
    )
    .await;
    assert_eq!(data["summary"]["total_failed"], json!(0));
    assert_eq!(data["summary"]["total_received"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_during_compaction_loses_nothing() {
    let s = TestServer::start_with(tiered()).await;
    let key = s.create_org("Busy", "UTC").await;
    let t0 = secs("2026-03-01T00:00:00Z");
    s.set_now(t0);
    let old: Vec<Value> = (0..20_000)
        .map(|i| inbound(&format!("old{i}"), t0 - 86_400 * 60 + i * 60))
        .collect();
    post_all(&s, &key, &old).await;
    let now = t0 + 10 * 86_400;
    s.set_now(now);
    let compaction = {
        let compaction = s.services.compaction.clone();
        tokio::spawn(async move {
            let mut total = 0;
            for _ in 0..5 {
                let r = compaction.compact().await.expect("compact");
                total += r.hourly_rows_expired + r.states_pruned;
            }
            total
        })
    };
    let fresh: Vec<Value> = (0..3_000)
        .map(|i| inbound(&format!("new{i}"), now - 3600 * 24 + i * 20))
        .collect();
    for chunk in fresh.chunks(100) {
        let (status, body) = s.post_events(&key, &Value::Array(chunk.to_vec())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert!(compaction.await.expect("join") > 0);
    let data = received(
        &s,
        &key,
        "granularity=month&start_date=2025-12-01&end_date=2026-03-31",
    )
    .await;
    assert_eq!(data["summary"]["total_received"], json!(23_000));
    let recent = received(
        &s,
        &key,
        &format!("granularity=hour&start_date={}", "2026-03-10"),
    )
    .await;
    assert_eq!(recent["summary"]["total_received"], json!(3_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_resumes_after_a_refused_batch_and_counts_once() {
    let s = TestServer::start_with(tiered()).await;
    let key = s.create_org("Import", "UTC").await;
    let now = secs("2026-06-15T12:00:00Z");
    s.set_now(now);
    let org = match s.services.tenants.authenticate(&key).await.expect("auth") {
        whatstat::engine::keys::Authentication::Valid(c) => c.org,
        other => panic!("the organization's key does not authenticate: {other:?}"),
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("history.ndjson");
    // Keyword hits without ids cannot be deduplicated: only an exact resume counts them once.
    let line = |i: i64| {
        json!({"type":"keyword","account_id":"a1","timestamp":now - 200 * 86_400 + i * 60,"keyword":"order"}).to_string()
    };
    let mut lines: Vec<String> = (0..12_000).map(line).collect();
    lines[7_000] =
        r#"{"type":"keyword","account_id":"a1","timestamp":"not a time","keyword":"order"}"#.into();
    std::fs::write(&path, lines.join("\n")).expect("write");
    let err = whatstat::import::import(&s.services.ingest, &org, &path)
        .await
        .expect_err("line 7001 is bad");
    let text = err.to_string();
    assert!(
        text.contains("line 7001") && text.contains("timestamp"),
        "{text}"
    );
    lines[7_000] = line(7_000);
    std::fs::write(&path, lines.join("\n")).expect("write");
    let report = whatstat::import::import(&s.services.ingest, &org, &path)
        .await
        .expect("resume");
    assert!(report.resumed_at_byte > 0);
    assert_eq!(report.events, 7_000);
    let again = whatstat::import::import(&s.services.ingest, &org, &path)
        .await
        .expect("nothing left");
    assert_eq!(again.events, 0);
    let (status, body) = s
        .get(
            &key,
            "/api/analytics/chatbot?start_date=2025-11-01&end_date=2026-06-30&limit=5",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["top_keywords"],
        json!([{"keyword":"order","count":12_000}])
    );
}

fn outbound(id: &str, at: i64) -> Value {
    json!({"type":"message","account_id":"a1","timestamp":at,"id":id,"direction":"outbound","message_type":"template"})
}

fn status(id: &str, status: &str, at: i64) -> Value {
    json!({"type":"message_status","account_id":"a1","timestamp":at,"message_id":id,"status":status})
}

/// The summary of the messages endpoint over local days `from..=to`, by `granularity`.
async fn summary(s: &TestServer, key: &str, granularity: &str, from: &str, to: &str) -> Value {
    received(
        s,
        key,
        &format!("granularity={granularity}&start_date={from}&end_date={to}"),
    )
    .await["summary"]
        .clone()
}

fn sent_delivered_read(summary: &Value) -> (i64, i64, i64, f64) {
    (
        summary["total_sent"].as_i64().expect("sent"),
        summary["total_delivered"].as_i64().expect("delivered"),
        summary["total_read"].as_i64().expect("read"),
        summary["delivery_rate"].as_f64().expect("rate"),
    )
}

/// Issue: a message sent 400 days ago, backfilled, then pruned by compaction; a backfilled
/// `read` for it then made a second, `unknown` message. It is reported in `ignored` now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_status_after_compaction_is_ignored() {
    let s = TestServer::start_with(tiered()).await;
    let key = s.create_org("Backfill", "UTC").await;
    let now = secs("2026-06-15T12:00:00Z");
    s.set_now(now);
    let sent = secs("2025-05-11T09:00:00Z"); // 400 days before now
    let (status_code, body) = s
        .post_backfill(
            &key,
            &json!([
                outbound("m400", sent),
                status("m400", "delivered", sent + 60)
            ]),
        )
        .await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["accepted"], json!(2));
    let report = s.services.compaction.compact().await.expect("compact");
    assert_eq!(report.states_pruned, 1, "{report:?}");
    assert_eq!(s.rollups.tier_rows(None).await.expect("rows").pruned_ids, 1);

    let (status_code, body) = s
        .post_backfill(
            &key,
            &json!([status("m400", "read", sent + 120), outbound("m400", sent)]),
        )
        .await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["data"]["accepted"], &body["data"]["duplicates"]),
        (&json!(0), &json!(1)),
        "{body}"
    );
    assert_eq!(
        body["data"]["ignored"],
        json!([{"index": 0, "reason": "message m400 is older than the state window (35 days) and its state was pruned; statuses for it change no figure"}])
    );
    let month = summary(&s, &key, "month", "2025-05-01", "2025-05-31").await;
    assert_eq!(sent_delivered_read(&month), (1, 1, 0, 100.0), "{month}");
    // Nothing was counted anywhere else either.
    let all = summary(&s, &key, "month", "2025-05-01", "2026-06-30").await;
    assert_eq!(sent_delivered_read(&all), (1, 1, 0, 100.0), "{all}");
    // The trace holds no state: compaction finds nothing more to do.
    let again = s.services.compaction.compact().await.expect("compact");
    assert_eq!((again.states_pruned, again.pruned_ids_expired), (0, 0));
}

/// Issue: a message sent 40 days ago has its state pruned; a `read` for it dated today made
/// an `unknown` message today. It is reported in `ignored` now, and today counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_status_after_the_state_window_is_ignored() {
    let s = TestServer::start_with(tiered()).await;
    let key = s.create_org("Late status", "UTC").await;
    let sent = secs("2026-05-06T10:00:00Z");
    s.set_now(sent + 60);
    let (status_code, body) = s
        .post_events(
            &key,
            &json!([outbound("m40", sent), status("m40", "sent", sent + 30)]),
        )
        .await;
    assert_eq!(
        (status_code, &body["data"]["accepted"]),
        (StatusCode::OK, &json!(2))
    );
    let now = sent + 40 * 86_400; // 2026-06-15T10:00:00Z
    s.set_now(now);
    let report = s.services.compaction.compact().await.expect("compact");
    assert_eq!(report.states_pruned, 1, "{report:?}");

    let (status_code, body) = s
        .post_events(
            &key,
            &json!([
                inbound("in-today", now - 120),
                status("m40", "read", now - 60)
            ]),
        )
        .await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["accepted"], json!(1), "{body}");
    assert_eq!(body["data"]["ignored"][0]["index"], json!(1), "{body}");
    let reason = body["data"]["ignored"][0]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("message m40 is older than the state window (35 days)")
            && reason.contains("pruned"),
        "{reason}"
    );
    let today = summary(&s, &key, "day", "2026-06-15", "2026-06-15").await;
    assert_eq!(sent_delivered_read(&today), (0, 0, 0, 0.0), "{today}");
    assert_eq!(today["total_received"], json!(1));
    let that_day = summary(&s, &key, "day", "2026-05-06", "2026-05-06").await;
    assert_eq!(sent_delivered_read(&that_day), (1, 0, 0, 0.0), "{that_day}");
    let (status_code, body) = s.get(&key, "/api/analytics/dashboard?period=today").await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    let messages = &body["data"]["messages"];
    assert_eq!(
        (&messages["sent"], &messages["today"]),
        (&json!(0), &json!(1)),
        "{body}"
    );
}

/// Conversations, flow runs and markers of pruned ids: their events change no figure, and a
/// message in a pruned conversation counts without counting in the conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_pruned_entities_change_no_figure() {
    let s = TestServer::start_with(tiered()).await;
    let key = s.create_org("Pruned", "UTC").await;
    let t = secs("2026-05-01T10:00:00Z");
    s.set_now(t + 60);
    let first = json!([
        {"type":"conversation","account_id":"a1","timestamp":t,"id":"c1","status":"started"},
        {"type":"message","account_id":"a1","timestamp":t,"id":"q1","direction":"inbound","message_type":"text","conversation_id":"c1"},
        {"type":"flow","account_id":"a1","timestamp":t,"id":"run1","flow_name":"FAQ","status":"started"},
        {"type":"keyword","account_id":"a1","timestamp":t,"id":"kw1","keyword":"price"},
        {"type":"ai_request","account_id":"a1","timestamp":t,"id":"ai1","tokens":10,"cost":0.01},
        {"type":"message","account_id":"a1","timestamp":t,"id":"out1","direction":"outbound","message_type":"text"}
    ]);
    assert_eq!(
        s.post_events(&key, &first).await.1["data"]["accepted"],
        json!(6)
    );
    let before = s
        .get(
            &key,
            "/api/analytics/chatbot?start_date=2026-05-01&end_date=2026-05-01",
        )
        .await
        .1;
    let now = t + 40 * 86_400;
    s.set_now(now);
    assert_eq!(
        s.services
            .compaction
            .compact()
            .await
            .expect("compact")
            .states_pruned,
        6
    );
    let late = json!([
        {"type":"conversation","account_id":"a1","timestamp":now,"id":"c1","status":"transferred"},
        {"type":"flow","account_id":"a1","timestamp":now,"id":"run1","flow_name":"FAQ","status":"completed"},
        {"type":"keyword","account_id":"a1","timestamp":now,"id":"kw1","keyword":"price"},
        {"type":"ai_request","account_id":"a1","timestamp":now,"id":"ai1","tokens":10,"cost":0.01},
        {"type":"message","account_id":"a1","timestamp":now,"id":"q2","direction":"inbound","message_type":"text","conversation_id":"c1","reply_to":"out1"}
    ]);
    let (status_code, body) = s.post_events(&key, &late).await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["data"]["accepted"], &body["data"]["duplicates"]),
        (&json!(1), &json!(2)),
        "{body}"
    );
    let reasons: Vec<(i64, String)> = body["data"]["ignored"]
        .as_array()
        .expect("ignored")
        .iter()
        .map(|i| {
            (
                i["index"].as_i64().unwrap_or(-1),
                i["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (0, "conversation c1 is older than the state window (35 days) and its state was pruned; its events change no figure".to_string()),
            (1, "flow run run1 is older than the state window (35 days) and its state was pruned; its events change no figure".to_string()),
        ]
    );
    // The old day is as it was; the new message counts today, in no conversation.
    let after = s
        .get(
            &key,
            "/api/analytics/chatbot?start_date=2026-05-01&end_date=2026-05-01",
        )
        .await
        .1;
    assert_eq!(before["data"], after["data"]);
    let may = summary(&s, &key, "day", "2026-05-01", "2026-05-01").await;
    assert_eq!(may["total_received"], json!(1));
    let (_, old_day) = s
        .get(
            &key,
            "/api/analytics/messages?granularity=day&start_date=2026-05-01&end_date=2026-05-01",
        )
        .await;
    assert_eq!(old_day["data"]["timeline"][0]["sent"], json!(1));
    let today = summary(&s, &key, "day", "2026-06-10", "2026-06-10").await;
    assert_eq!(today["total_received"], json!(1));
    let (_, chat_today) = s
        .get(
            &key,
            "/api/analytics/chatbot?start_date=2026-06-10&end_date=2026-06-10",
        )
        .await;
    assert_eq!(
        chat_today["data"]["summary"]["total_conversations"],
        json!(0),
        "{chat_today}"
    );
}

/// A long import keeps the states it writes: a status in its last batch finds the message
/// of its first, however often compaction runs in between (and prunes once it is done).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_holds_its_states_until_it_finishes() {
    let s = TestServer::start_with(tiered()).await;
    let key = s.create_org("Import hold", "UTC").await;
    let now = secs("2026-06-15T12:00:00Z");
    s.set_now(now);
    let org = match s.services.tenants.authenticate(&key).await.expect("auth") {
        whatstat::engine::keys::Authentication::Valid(c) => c.org,
        other => panic!("the organization's key does not authenticate: {other:?}"),
    };
    let sent = secs("2025-05-11T09:00:00Z");
    let mut lines = vec![outbound("m-old", sent).to_string()];
    lines.extend((0..14_998).map(|i| {
        json!({"type":"keyword","account_id":"a1","timestamp":sent + i,"keyword":"order"})
            .to_string()
    }));
    lines.push(status("m-old", "read", sent + 600).to_string());
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("history.ndjson");
    std::fs::write(&path, lines.join("\n")).expect("write");

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactor = {
        let (compaction, done) = (s.services.compaction.clone(), done.clone());
        tokio::spawn(async move {
            let (mut runs, mut pruned) = (0u64, 0u64);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                pruned += compaction.compact().await.expect("compact").states_pruned;
                runs += 1;
                tokio::task::yield_now().await;
            }
            (runs, pruned)
        })
    };
    let report = whatstat::import::import(&s.services.ingest, &org, &path)
        .await
        .expect("import");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, pruned) = compactor.await.expect("compactor");
    assert_eq!(
        (report.events, report.accepted, report.ignored),
        (15_000, 15_000, 0)
    );
    assert!(runs >= 3, "compaction ran {runs} times during the import");
    let month = summary(&s, &key, "month", "2025-05-01", "2025-05-31").await;
    assert_eq!(sent_delivered_read(&month), (1, 1, 1, 100.0), "{month}");
    // Finished, it holds nothing: its message is pruned, and what comes later for it is ignored.
    // (A compaction still running when the import ended may have pruned it already.)
    let after = s.services.compaction.compact().await.expect("compact");
    assert_eq!(pruned + after.states_pruned, 1, "{after:?}");
    let (_, body) = s
        .post_backfill(&key, &json!([status("m-old", "failed", sent + 700)]))
        .await;
    assert_eq!(
        body["data"]["ignored"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    let month = summary(&s, &key, "month", "2025-05-01", "2025-05-31").await;
    assert_eq!(sent_delivered_read(&month), (1, 1, 1, 100.0), "{month}");
}
