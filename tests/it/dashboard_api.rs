//! What a dashboard needs over HTTP: previous-period comparison, the covered range, failure
//! reasons, the chatbot timeline, CSV export and the live stream.

use std::sync::Arc;
use std::time::Duration;

use crate::common;
use crate::helpers;

use common::TestServer;
use common::backend::{Backend, TestDatabase, backend};
use helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use whatstat::api::{self, ApiLimits};
use whatstat::engine::{EngineConfig, Services};

const NOW: &str = "2026-03-12T12:00:00Z";

async fn utc_server() -> (TestServer, String) {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let key = server.create_org("Acme", "UTC").await;
    (server, key)
}

fn failed(acc: &str, id: &str, code: Option<i64>, t: i64) -> Value {
    let mut v = status(acc, id, "failed", t);
    if let Some(c) = code {
        v["error_code"] = json!(c);
    }
    v
}

/// Two weeks of traffic: Monday 2 .. Sunday 8 March and Monday 9 .. 12 March 2026.
fn two_weeks() -> Value {
    let a = "acc1";
    json!([
        outbound(a, "p1", "text", at("2026-03-02T10:00:00Z")),
        failed(a, "p1", Some(131026), at("2026-03-02T10:01:00Z")),
        outbound(a, "p2", "text", at("2026-03-04T10:00:00Z")),
        status(a, "p2", "read", at("2026-03-04T10:05:00Z")),
        inbound(a, "pi", "image", at("2026-03-05T09:00:00Z")),
        conversation(a, "pc1", "started", at("2026-03-03T08:00:00Z")),
        conversation(a, "pc1", "auto_resolved", at("2026-03-03T08:10:00Z")),
        flow(a, "pf1", "Welcome", "started", at("2026-03-03T08:00:00Z")),
        outbound(a, "m1", "text", at("2026-03-09T10:00:00Z")),
        failed(a, "m1", Some(131026), at("2026-03-09T10:01:00Z")),
        outbound(a, "m2", "template", at("2026-03-09T11:00:00Z")),
        failed(a, "m2", Some(131026), at("2026-03-09T11:01:00Z")),
        outbound(a, "m3", "template", at("2026-03-10T11:00:00Z")),
        failed(a, "m3", Some(131047), at("2026-03-10T11:01:00Z")),
        outbound(a, "m4", "text", at("2026-03-10T12:00:00Z")),
        failed(a, "m4", None, at("2026-03-10T12:01:00Z")),
        // Failed, then delivered: not a failure, so no reason either.
        outbound(a, "m5", "text", at("2026-03-11T12:00:00Z")),
        failed(a, "m5", Some(131049), at("2026-03-11T12:01:00Z")),
        status(a, "m5", "delivered", at("2026-03-11T12:02:00Z")),
        inbound(a, "i1", "text", at("2026-03-12T09:00:00Z")),
        conversation(a, "c1", "started", at("2026-03-09T08:00:00Z")),
        conversation(a, "c1", "transferred", at("2026-03-09T08:10:00Z")),
        conversation(a, "c2", "started", at("2026-03-11T08:00:00Z")),
        conversation(a, "c2", "auto_resolved", at("2026-03-11T08:30:00Z")),
        flow(
            a,
            "f1",
            "=HYPERLINK(\"http://x\")",
            "started",
            at("2026-03-09T08:00:00Z")
        ),
        flow(
            a,
            "f1",
            "=HYPERLINK(\"http://x\")",
            "completed",
            at("2026-03-09T08:05:00Z")
        ),
        flow(
            a,
            "f2",
            "Orders, returns",
            "started",
            at("2026-03-11T08:00:00Z")
        ),
        keyword(a, "+cmd", at("2026-03-09T08:00:00Z")),
        keyword(a, "price", at("2026-03-11T08:00:00Z")),
        keyword(a, "price", at("2026-03-11T09:00:00Z")),
        ai(a, "ai1", 1000, Some(0.25), at("2026-03-10T08:00:00Z")),
        ai(a, "ai2", 500, None, at("2026-03-11T08:00:00Z")),
        contact(a, "k1", at("2026-03-11T08:00:00Z")),
        contact(a, "k2", at("2026-03-12T08:00:00Z")),
    ])
}

fn without(mut v: Value, fields: &[&str]) -> Value {
    if let Some(o) = v.as_object_mut() {
        for f in fields {
            o.remove(*f);
        }
    }
    v
}

const COMPARISON: &[&str] = &["previous", "change", "previous_unavailable"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_reasons_per_error_code_most_first() {
    let (server, key) = utc_server().await;
    ingest(&server, &key, &two_weeks()).await;
    let d = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-12",
    )
    .await;
    assert_eq!(
        d["by_error"],
        json!([
            {"error_code": 131026, "title": "Message undeliverable", "count": 2},
            {"error_code": 131047, "title": "Re-engagement message", "count": 1},
            {"error_code": null, "title": "No error code given", "count": 1},
        ])
    );
    assert_eq!(d["summary"]["total_failed"], 4);
    // Counted at the send time: the 9th alone holds the two 131026 failures.
    let day = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-09",
    )
    .await;
    assert_eq!(
        day["by_error"],
        json!([{"error_code": 131026, "title": "Message undeliverable", "count": 2}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_names_the_range_it_covers() {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let key = server.create_org("Kathmandu", "Asia/Kathmandu").await;
    let m = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-11",
    )
    .await;
    assert_eq!(
        m["range"],
        json!({"start": "2026-03-09T00:00:00+05:45", "end": "2026-03-12T00:00:00+05:45", "timezone": "Asia/Kathmandu"})
    );
    let c = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-09T00:15:00Z&end_date=2026-03-09T06:15:00Z&tz=UTC",
    )
    .await;
    assert_eq!(
        c["range"],
        json!({"start": "2026-03-09T00:15:00+00:00", "end": "2026-03-09T06:15:00+00:00", "timezone": "UTC"})
    );
    let d = data(&server, &key, "/api/analytics/dashboard?period=week").await;
    assert_eq!(
        d["range"],
        json!({"start": "2026-03-09T00:00:00+05:45", "end": "2026-03-13T00:00:00+05:45", "timezone": "Asia/Kathmandu"})
    );
    // Without `compare`, no comparison fields.
    for a in [&m, &c, &d] {
        for f in COMPARISON {
            assert!(a.get(*f).is_none(), "{f} in {a}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chatbot_timeline_counts_each_thing_at_its_start_or_own_time() {
    let (server, key) = utc_server().await;
    ingest(&server, &key, &two_weeks()).await;
    let d = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-09&end_date=2026-03-11&granularity=day",
    )
    .await;
    let zero = |date: &str| {
        json!({"date": date, "conversations": 0, "auto_resolved": 0, "transferred": 0, "abandoned": 0,
        "flows_started": 0, "flows_completed": 0, "keyword_hits": 0, "ai_requests": 0, "ai_tokens": 0, "ai_cost": 0.0})
    };
    let mut d9 = zero("2026-03-09");
    d9["conversations"] = json!(1);
    d9["transferred"] = json!(1);
    d9["flows_started"] = json!(1);
    d9["flows_completed"] = json!(1);
    d9["keyword_hits"] = json!(1);
    let mut d10 = zero("2026-03-10");
    d10["ai_requests"] = json!(1);
    d10["ai_tokens"] = json!(1000);
    d10["ai_cost"] = json!(0.25);
    let mut d11 = zero("2026-03-11");
    d11["conversations"] = json!(1);
    d11["auto_resolved"] = json!(1);
    d11["flows_started"] = json!(1);
    d11["keyword_hits"] = json!(2);
    d11["ai_requests"] = json!(1);
    d11["ai_tokens"] = json!(500);
    // 500 tokens at the default 0.002 USD per 1,000.
    d11["ai_cost"] = json!(0.0);
    assert_eq!(d["timeline"], json!([d9, d10, d11]));
    // The summary is the same with and without a timeline.
    let plain = data(
        &server,
        &key,
        "/api/analytics/chatbot?start_date=2026-03-09&end_date=2026-03-11",
    )
    .await;
    assert!(plain.get("timeline").is_none());
    assert_eq!(without(d, &["timeline"]), plain);
    let (status, body) = server
        .get(&key, "/api/analytics/chatbot?granularity=fortnight")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["granularity", "hour, day, week, month"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparison_equals_a_direct_query_of_the_previous_range() {
    let (server, key) = utc_server().await;
    ingest(&server, &key, &two_weeks()).await;
    for (endpoint, extra) in [
        ("messages", "&granularity=day"),
        ("chatbot", "&granularity=day"),
        ("messages", ""),
    ] {
        let asked =
            format!("/api/analytics/{endpoint}?start_date=2026-03-09&end_date=2026-03-15{extra}");
        let cmp = data(&server, &key, &format!("{asked}&compare=previous")).await;
        let direct = data(
            &server,
            &key,
            &format!("/api/analytics/{endpoint}?start_date=2026-03-02&end_date=2026-03-08{extra}"),
        )
        .await;
        assert_eq!(cmp["previous"], direct, "{endpoint}");
        assert_eq!(
            cmp["previous"]["range"]["start"], "2026-03-02T00:00:00+00:00",
            "{endpoint}"
        );
        assert!(cmp.get("previous_unavailable").is_none());
        // The asked figures stay as they are.
        assert_eq!(
            without(cmp.clone(), COMPARISON),
            data(&server, &key, &asked).await
        );
        // The change of every summary figure, in percent; null where the previous was 0.
        let (cur, prev) = (&cmp["summary"], &direct["summary"]);
        for (k, v) in cmp["change"].as_object().expect("change object") {
            let (c, p) = (
                cur[k].as_f64().expect("num"),
                prev[k].as_f64().expect("num"),
            );
            if p == 0.0 {
                assert!(v.is_null(), "{endpoint} {k}: {v}");
            } else {
                let want = ((c - p) * 1000.0 / p.abs()).round() / 10.0;
                assert_eq!(v.as_f64(), Some(want), "{endpoint} {k}");
            }
        }
    }
    let m = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09&end_date=2026-03-15&compare=previous",
    )
    .await;
    // Sent 5 against 2: +150 %; failed 4 against 1: +300 %; received 1 against 1: 0 %.
    assert_eq!(m["change"]["total_sent"], 150.0);
    assert_eq!(m["change"]["total_failed"], 300.0);
    assert_eq!(m["change"]["total_received"], 0.0);

    // The dashboard's today against yesterday up to the end of this hour.
    let d = data(
        &server,
        &key,
        "/api/analytics/dashboard?period=today&compare=previous",
    )
    .await;
    assert_eq!(d["previous"]["range"]["start"], "2026-03-11T00:00:00+00:00");
    assert_eq!(d["previous"]["range"]["end"], "2026-03-11T13:00:00+00:00");
    // Yesterday up to 13:00: one contact (k1), messages m5 (12:00), conversation c2.
    assert_eq!(d["previous"]["contacts"]["new_today"], 1);
    assert_eq!(d["previous"]["contacts"]["total"], 1);
    assert_eq!(d["previous"]["messages"]["today"], 1);
    assert_eq!(d["previous"]["chatbot"]["conversations_today"], 1);
    assert_eq!(d["contacts"]["total"], 2);
    assert_eq!(d["change"]["contacts"]["total"], 100.0);
    assert_eq!(d["change"]["messages"]["today"], 0.0);
    let (status, body) = server
        .get(&key, "/api/analytics/messages?compare=last_year")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["compare", "previous"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_period_the_tiers_cannot_serve_is_null_with_the_reason() {
    let server = TestServer::start_with(EngineConfig {
        hourly_retention_days: Some(30),
        daily_retention_days: Some(365),
        ..EngineConfig::default()
    })
    .await;
    server.set_now(at(NOW));
    let key = server.create_org("Acme", "UTC").await;
    ingest(&server, &key, &two_weeks()).await;
    // A year back, up to this hour: hourly figures are gone.
    let d = data(
        &server,
        &key,
        "/api/analytics/dashboard?period=year&compare=previous",
    )
    .await;
    assert!(d["previous"].is_null(), "{d}");
    assert!(d["change"].is_null(), "{d}");
    let why = d["previous_unavailable"].as_str().expect("a reason");
    assert!(why.contains("hourly from"), "{why}");
    // The asked figures stand.
    assert_eq!(
        without(d, COMPARISON),
        data(&server, &key, "/api/analytics/dashboard?period=year").await
    );
    // Hours now, and the same hours before them still kept: served.
    let h = data(
        &server,
        &key,
        "/api/analytics/messages?start_date=2026-03-09T10:00:00Z&end_date=2026-03-09T12:00:00Z&granularity=hour&compare=previous",
    )
    .await;
    assert_eq!(h["previous"]["range"]["start"], "2026-03-09T08:00:00+00:00");
}

async fn get_text(
    server: &TestServer,
    key: &str,
    path: &str,
) -> (StatusCode, String, String, String) {
    let r = server
        .client
        .get(format!("{}{path}", server.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    let header = |h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (ct, cd) = (header("content-type"), header("content-disposition"));
    (r.status(), ct, cd, r.text().await.expect("body"))
}

/// Parses simple CSV (quoted cells with doubled quotes) into rows of cells.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in text.split_terminator("\r\n") {
        let mut cells = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => cells.push(std::mem::take(&mut cur)),
                (c, _) => cur.push(c),
            }
        }
        cells.push(cur);
        rows.push(cells);
    }
    rows
}

fn json_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) if s.starts_with(['=', '+', '-', '@']) => format!("'{s}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_csv_table_names_the_routes_own() {
    let (server, key) = utc_server().await;
    for (route, allowed) in [
        ("messages", "timeline, by_type, by_error"),
        ("chatbot", "timeline, by_flow, top_keywords"),
        ("dashboard", "figures"),
    ] {
        let (status, body) = server
            .get(
                &key,
                &format!("/api/analytics/{route}?format=csv&table=by_nothing"),
            )
            .await;
        assert_error(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            &["`table`", allowed],
        );
        assert_eq!(body["code"], "invalid_parameter", "{body}");
    }
}

#[tokio::test]
async fn csv_equals_json_for_every_table() {
    let (server, key) = utc_server().await;
    ingest(&server, &key, &two_weeks()).await;
    let range = "start_date=2026-03-02&end_date=2026-03-12";
    let tables: &[(&str, &str, &str, &[&str])] = &[
        (
            "messages",
            "",
            "timeline",
            &["date", "sent", "received", "delivered", "read", "failed"],
        ),
        ("messages", "by_type", "by_type", &["message_type", "count"]),
        (
            "messages",
            "by_error",
            "by_error",
            &["error_code", "title", "count"],
        ),
        (
            "chatbot",
            "",
            "timeline",
            &[
                "date",
                "conversations",
                "auto_resolved",
                "transferred",
                "abandoned",
                "flows_started",
                "flows_completed",
                "keyword_hits",
                "ai_requests",
                "ai_tokens",
                "ai_cost",
            ],
        ),
        (
            "chatbot",
            "by_flow",
            "by_flow",
            &["flow_name", "conversations", "completed", "completion_rate"],
        ),
        (
            "chatbot",
            "top_keywords",
            "top_keywords",
            &["keyword", "count"],
        ),
    ];
    for (endpoint, table, field, columns) in tables {
        let t = if table.is_empty() {
            String::new()
        } else {
            format!("&table={table}")
        };
        let extra = if *endpoint == "chatbot" && field == &"timeline" {
            "&granularity=day"
        } else {
            ""
        };
        let json = data(
            &server,
            &key,
            &format!("/api/analytics/{endpoint}?{range}{extra}"),
        )
        .await;
        let (status, ct, cd, text) = get_text(
            &server,
            &key,
            &format!("/api/analytics/{endpoint}?{range}&format=csv{t}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{endpoint} {table}: {text}");
        assert_eq!(ct, "text/csv; charset=utf-8");
        assert!(cd.starts_with("attachment; filename="), "{cd}");
        let rows = parse_csv(&text);
        assert_eq!(
            rows[0],
            columns.iter().map(|c| c.to_string()).collect::<Vec<_>>()
        );
        let entries: Vec<Value> = match &json[*field] {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| json!({"message_type": k, "count": v}))
                .collect(),
            Value::Array(a) => a.clone(),
            other => panic!("{field}: {other}"),
        };
        assert!(
            !entries.is_empty(),
            "{endpoint} {field} has rows to compare"
        );
        assert_eq!(rows.len() - 1, entries.len(), "{endpoint} {field}");
        for (row, entry) in rows[1..].iter().zip(&entries) {
            let want: Vec<String> = columns.iter().map(|c| json_cell(&entry[*c])).collect();
            assert_eq!(row, &want, "{endpoint} {field}");
        }
    }
    // The injection rule on the user-made names, and the quoting of a comma.
    let (_, _, _, flows) = get_text(
        &server,
        &key,
        &format!("/api/analytics/chatbot?{range}&format=csv&table=by_flow"),
    )
    .await;
    assert!(
        flows.contains("\"'=HYPERLINK(\"\"http://x\"\")\",1,1,100.0\r\n"),
        "{flows}"
    );
    assert!(flows.contains("\"Orders, returns\",1,0,0.0\r\n"), "{flows}");
    let (_, _, _, kws) = get_text(
        &server,
        &key,
        &format!("/api/analytics/chatbot?{range}&format=csv&table=top_keywords"),
    )
    .await;
    assert!(kws.contains("'+cmd,1\r\n"), "{kws}");
    // The dashboard's figures: one row.
    let dash = data(&server, &key, "/api/analytics/dashboard?period=month").await;
    let (_, _, _, text) = get_text(
        &server,
        &key,
        "/api/analytics/dashboard?period=month&format=csv",
    )
    .await;
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 2);
    for (col, cell) in rows[0].iter().zip(&rows[1]) {
        let (group, name) = col.split_once('.').expect("dotted");
        assert_eq!(cell, &json_cell(&dash[group][name]), "{col}");
    }
    let (status, body) = server
        .get(&key, "/api/analytics/messages?format=csv&table=by_flow")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["table", "timeline, by_type, by_error"],
    );
    let (status, body) = server.get(&key, "/api/analytics/messages?format=xml").await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        &["format", "json, csv"],
    );
}

/// Reads a stream until an `update` event arrives; its data.
async fn next_update(r: &mut reqwest::Response, within: Duration) -> Option<Value> {
    let mut buf = String::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(i) = buf.find("event: update\ndata: ") {
            let rest = &buf[i + "event: update\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                return serde_json::from_str(&rest[..end]).ok();
            }
        }
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(c))) => buf.push_str(&String::from_utf8_lossy(&c)),
            _ => return None,
        }
    }
}

async fn open_stream(base: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/api/stream"))
        .bearer_auth(key)
        .send()
        .await
        .expect("stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_hears_of_a_commit_within_a_second() {
    let server = TestServer::start().await;
    let key = server.create_org("Acme", "UTC").await;
    let other = server.create_org("Other", "UTC").await;
    let mut r = open_stream(&server.base, &key).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let now = jiff::Timestamp::now().as_second();
    // Another organization's commit is not announced here.
    ingest(&server, &other, &json!([inbound("x", "o1", "text", now)])).await;
    let started = std::time::Instant::now();
    ingest(
        &server,
        &key,
        &json!([
            inbound("shop", "i1", "text", now),
            inbound("web", "i2", "text", now)
        ]),
    )
    .await;
    let u = next_update(&mut r, Duration::from_secs(1))
        .await
        .expect("an update within a second");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(u, json!({"accounts": ["shop", "web"]}));
    // A retry changes no figure: no event.
    ingest(&server, &key, &json!([inbound("shop", "i1", "text", now)])).await;
    assert_eq!(next_update(&mut r, Duration::from_millis(1500)).await, None);
    // Commits close together come as one event, at most one a second.
    ingest(&server, &key, &json!([inbound("shop", "i3", "text", now)])).await;
    let first = next_update(&mut r, Duration::from_secs(2))
        .await
        .expect("update");
    let t = std::time::Instant::now();
    ingest(&server, &key, &json!([inbound("web", "i4", "text", now)])).await;
    ingest(&server, &key, &json!([inbound("shop", "i5", "text", now)])).await;
    let second = next_update(&mut r, Duration::from_secs(2))
        .await
        .expect("update");
    assert_eq!(first, json!({"accounts": ["shop"]}));
    assert_eq!(second, json!({"accounts": ["shop", "web"]}));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    // Shutdown ends the stream cleanly.
    server.services.updates.close();
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(_)) = r.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the stream did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_bound_per_key_are_refused_and_freed_on_disconnect() {
    let server = TestServer::start().await;
    let key = server.create_org("Acme", "UTC").await;
    let mut open = Vec::new();
    for _ in 0..api::stream::MAX_STREAMS_PER_KEY {
        let r = open_stream(&server.base, &key).await;
        assert_eq!(r.status(), StatusCode::OK);
        open.push(r);
    }
    let (status, body) = server
        .send(
            server
                .client
                .get(format!("{}/api/stream", server.base))
                .bearer_auth(&key),
        )
        .await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, &["retry"]);
    // Another key of its own bound is not affected.
    let other = server.create_org("Other", "UTC").await;
    assert_eq!(
        open_stream(&server.base, &other).await.status(),
        StatusCode::OK
    );
    // A client going away frees its place.
    drop(open.pop());
    let mut ok = false;
    for _ in 0..50 {
        let r = open_stream(&server.base, &key).await;
        if r.status() == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the place of a closed stream was not freed");
    // Without a key: 401.
    let (status, _) = server
        .send(server.client.get(format!("{}/api/stream", server.base)))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// One more instance of the server over the same database.
async fn instance(url: &str) -> (String, Services) {
    let store = whatstat::store::open(url).await.expect("open store");
    let engine = Services::new(store, EngineConfig::default());
    let (announce, incoming) = whatstat::store::postgres::notify::connect(url)
        .await
        .expect("listen");
    engine.updates.attach_relay(
        format!("{:p}", Arc::as_ptr(&engine.updates)),
        announce,
        incoming,
    );
    let limits = ApiLimits {
        max_body_bytes: 1 << 20,
        rate_per_second: 0,
    };
    let app = api::router(engine.clone(), Some(common::MASTER_KEY.into()), &limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_commit_through_one_instance_reaches_a_stream_on_another() {
    if backend() != Backend::Postgres {
        return;
    }
    let db = TestDatabase::fresh_on(Backend::Postgres).await;
    let (a, _ea) = instance(&db.url).await;
    let (b, _eb) = instance(&db.url).await;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{a}/api/admin/orgs"))
        .bearer_auth(common::MASTER_KEY)
        .json(&json!({"name": "Acme"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let key = created["data"]["api_key"]
        .as_str()
        .expect("key")
        .to_string();
    let mut r = open_stream(&b, &key).await;
    assert_eq!(r.status(), StatusCode::OK);
    let now = jiff::Timestamp::now().as_second();
    let posted = client
        .post(format!("{a}/api/events"))
        .bearer_auth(&key)
        .json(&json!([inbound("shop", "i1", "text", now)]))
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), StatusCode::OK);
    let u = next_update(&mut r, Duration::from_secs(1))
        .await
        .expect("relayed within a second");
    assert_eq!(u, json!({"accounts": ["shop"]}));
}
