//! Bad input over HTTP: every parameter, every field of every event type, bodies,
//! content types, methods and routes. Each answer is the error envelope with the right
//! status, and a refused request applies nothing.

use crate::common;
use crate::helpers;

use common::TestServer;
use helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use whatstat::api::ApiLimits;
use whatstat::engine::EngineConfig;

/// Thursday 2026-03-12 12:00 UTC.
const NOW: &str = "2026-03-12T12:00:00Z";

async fn utc_server() -> (TestServer, String) {
    let server = TestServer::start().await;
    server.set_now(at(NOW));
    let key = server.create_org("Acme", "UTC").await;
    (server, key)
}

/// A valid event of every type, all in account `acc`.
fn valid_events() -> Vec<Value> {
    let t = at(NOW) - 3600;
    vec![
        contact("acc", "c1", t),
        outbound("acc", "m1", "text", t),
        status("acc", "m1", "read", t + 1),
        campaign("acc", "cp", "running", t),
        conversation("acc", "cv", "started", t),
        flow("acc", "f", "Menu", "started", t),
        keyword("acc", "hi", t),
        ai("acc", "ai", 1000, Some(0.5), t),
    ]
}

/// Bad events, each with a fragment its error message must hold.
fn bad_events() -> Vec<(Value, &'static str)> {
    let now = at(NOW);
    let t = now - 3600;
    let with = |base: Value, field: &str, value: Value| {
        let mut v = base;
        v[field] = value;
        v
    };
    let without = |base: Value, field: &str| {
        let mut v = base;
        v.as_object_mut().expect("object").remove(field);
        v
    };
    let msg = outbound("acc", "mx", "text", t);
    let st = status("acc", "mx", "delivered", t);
    let cp = campaign("acc", "cpx", "running", t);
    let cv = conversation("acc", "cvx", "started", t);
    let fl = flow("acc", "fx", "Menu", "started", t);
    let kw = keyword("acc", "hello", t);
    let a = ai("acc", "aix", 10, None, t);
    vec![
        // Any event.
        (json!(42), "JSON object"),
        (json!("contact"), "JSON object"),
        (json!([contact("acc", "x", t)]), "JSON object"),
        (
            without(contact("acc", "x", t), "type"),
            "missing field `type`",
        ),
        (
            with(contact("acc", "x", t), "type", json!("purchase")),
            "unknown event type `purchase`",
        ),
        (
            with(contact("acc", "x", t), "type", json!(7)),
            "field `type` must be a string",
        ),
        (
            without(contact("acc", "x", t), "account_id"),
            "missing field `account_id`",
        ),
        (
            with(contact("acc", "x", t), "account_id", json!("")),
            "field `account_id` must be a non-empty string",
        ),
        (
            with(contact("acc", "x", t), "account_id", json!(12)),
            "field `account_id` must be a string",
        ),
        (
            with(contact("acc", "x", t), "account_id", json!("x".repeat(257))),
            "field `account_id`",
        ),
        (
            without(contact("acc", "x", t), "timestamp"),
            "missing field `timestamp`",
        ),
        (
            with(contact("acc", "x", t), "timestamp", json!("yesterday")),
            "field `timestamp` is `yesterday`",
        ),
        (
            with(
                contact("acc", "x", t),
                "timestamp",
                json!("2026-03-12T10:00:00"),
            ),
            "field `timestamp`",
        ),
        (
            with(contact("acc", "x", t), "timestamp", json!(true)),
            "field `timestamp` must be a string or a number",
        ),
        (
            with(contact("acc", "x", t), "timestamp", json!(now + 301)),
            "in the future",
        ),
        (
            with(
                contact("acc", "x", t),
                "timestamp",
                json!("2026-03-13T00:00:00Z"),
            ),
            "in the future",
        ),
        (
            with(
                contact("acc", "x", t),
                "timestamp",
                json!(now - 36 * 86_400),
            ),
            "backfill=true",
        ),
        (
            with(contact("acc", "x", t), "timestamp", json!(0)),
            "before 2000-01-01",
        ),
        // contact
        (without(contact("acc", "x", t), "id"), "missing field `id`"),
        (
            with(contact("acc", "x", t), "id", json!(5)),
            "field `id` must be a string",
        ),
        // message
        (without(msg.clone(), "id"), "missing field `id`"),
        (
            without(msg.clone(), "direction"),
            "missing field `direction`",
        ),
        (
            with(msg.clone(), "direction", json!("sideways")),
            "allowed: inbound, outbound",
        ),
        (
            without(msg.clone(), "message_type"),
            "missing field `message_type`",
        ),
        (
            with(msg.clone(), "message_type", json!("Text")),
            "field `message_type` is `Text`",
        ),
        (
            with(msg.clone(), "message_type", json!(3)),
            "field `message_type` must be a string",
        ),
        (
            with(msg.clone(), "conversation_id", json!(9)),
            "field `conversation_id` must be a string",
        ),
        (
            with(msg.clone(), "contact_id", json!("")),
            "field `contact_id`",
        ),
        (
            with(msg.clone(), "campaign_id", json!({"id": 1})),
            "field `campaign_id` must be a string",
        ),
        // message_status
        (
            without(st.clone(), "message_id"),
            "missing field `message_id`",
        ),
        (without(st.clone(), "status"), "missing field `status`"),
        (
            with(st.clone(), "status", json!(2)),
            "field `status` must be a string",
        ),
        (
            with(st.clone(), "error_code", json!({"code": 1})),
            "field `error_code`",
        ),
        (
            without(status("acc", "mx", "played", t), "message_id"),
            "missing field `message_id`",
        ),
        // campaign
        (without(cp.clone(), "id"), "missing field `id`"),
        (without(cp.clone(), "status"), "missing field `status`"),
        (
            with(cp.clone(), "status", json!("paused")),
            "allowed: created, scheduled, running, completed, cancelled, failed",
        ),
        // conversation
        (without(cv.clone(), "id"), "missing field `id`"),
        (without(cv.clone(), "status"), "missing field `status`"),
        (
            with(cv.clone(), "status", json!("closed")),
            "allowed: started, auto_resolved, transferred, abandoned",
        ),
        // flow
        (without(fl.clone(), "id"), "missing field `id`"),
        (
            without(fl.clone(), "flow_name"),
            "missing field `flow_name`",
        ),
        (without(fl.clone(), "status"), "missing field `status`"),
        (
            with(fl.clone(), "status", json!("aborted")),
            "allowed: started, completed",
        ),
        (
            with(fl.clone(), "conversation_id", json!(1)),
            "field `conversation_id` must be a string",
        ),
        // keyword
        (without(kw.clone(), "keyword"), "missing field `keyword`"),
        (
            with(kw.clone(), "keyword", json!("")),
            "field `keyword` must be a non-empty string",
        ),
        (
            with(kw.clone(), "id", json!(4)),
            "field `id` must be a string",
        ),
        (
            with(kw.clone(), "conversation_id", json!(false)),
            "field `conversation_id` must be a string",
        ),
        // ai_request
        (without(a.clone(), "tokens"), "missing field `tokens`"),
        (with(a.clone(), "tokens", json!(-5)), "field `tokens` is -5"),
        (
            with(a.clone(), "tokens", json!("100")),
            "field `tokens` must be a whole number",
        ),
        (
            with(a.clone(), "tokens", json!(1.5)),
            "field `tokens` is 1.5",
        ),
        (
            with(without(a.clone(), "tokens"), "prompt_tokens", json!(-1)),
            "field `prompt_tokens` is -1",
        ),
        (
            with(without(a.clone(), "tokens"), "completion_tokens", json!(-1)),
            "field `completion_tokens` is -1",
        ),
        (with(a.clone(), "cost", json!(-0.1)), "field `cost` is -0.1"),
        (
            with(a.clone(), "cost", json!("0.10")),
            "field `cost` must be a number",
        ),
        (
            with(a.clone(), "model", json!(5)),
            "field `model` must be a string",
        ),
        (
            with(a.clone(), "id", json!("")),
            "field `id` must be a non-empty string",
        ),
    ]
}

/// A day of every figure, to compare before and after refused requests.
async fn figures(server: &TestServer, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for p in [
        "/api/analytics/messages?start_date=2026-03-12&end_date=2026-03-12",
        "/api/analytics/chatbot?start_date=2026-03-12&end_date=2026-03-12",
        "/api/analytics/dashboard?period=year",
    ] {
        out.push(data(server, key, p).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_event_is_listed_and_nothing_is_applied() {
    let (server, key) = utc_server().await;
    let empty = figures(&server, &key).await;
    // Valid and bad events interleaved: valid ones at even indexes where they last.
    let valid = valid_events();
    let bad = bad_events();
    let mut body = Vec::new();
    let mut expected = Vec::new();
    let mut valid_iter = valid.iter().cycle();
    for (event, needle) in &bad {
        body.push(valid_iter.next().expect("cycle").clone());
        expected.push((body.len(), *needle));
        body.push(event.clone());
    }
    let (status, resp) = server.post_events(&key, &Value::Array(body)).await;
    assert_error(
        status,
        &resp,
        StatusCode::BAD_REQUEST,
        &[
            &format!("{} invalid event", bad.len()),
            "nothing was applied",
        ],
    );
    let errors = resp["errors"].as_array().expect("errors list");
    assert_eq!(errors.len(), expected.len(), "{resp:#}");
    for (e, (index, needle)) in errors.iter().zip(&expected) {
        assert_eq!(e["index"].as_u64(), Some(*index as u64), "{e}");
        let m = e["message"].as_str().expect("message");
        assert!(m.contains(needle), "event {index}: `{m}` lacks `{needle}`");
    }
    // Nothing applied: no figure, no account, no dedup state.
    assert_eq!(figures(&server, &key).await, empty);
    let (status, resp) = server
        .get(&key, "/api/analytics/messages?account_id=acc")
        .await;
    assert_error(status, &resp, StatusCode::NOT_FOUND, &["acc"]);
    assert_eq!(
        ingest(&server, &key, &Value::Array(valid.clone())).await,
        (valid.len() as u64, 0)
    );
    let applied = figures(&server, &key).await;
    assert_eq!(summary(&applied[0]), (1, 0, 1, 1, 0, 100.0, 100.0));
    assert_eq!(applied[1]["summary"]["total_conversations"], 1);
    assert_eq!(applied[1]["ai_usage"]["estimated_cost"], 0.5);
    assert_eq!(applied[2]["contacts"]["total"], 1);
    assert_eq!(applied[2]["campaigns"]["active"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_event_alone_is_refused() {
    let (server, key) = utc_server().await;
    for (event, needle) in bad_events() {
        let (status, resp) = server.post_events(&key, &json!([event.clone()])).await;
        assert_error(status, &resp, StatusCode::BAD_REQUEST, &["1 invalid event"]);
        assert_eq!(resp["errors"].as_array().map(Vec::len), Some(1), "{resp}");
        assert_eq!(resp["errors"][0]["index"], 0, "{resp}");
        let m = resp["errors"][0]["message"].as_str().expect("message");
        assert!(m.contains(needle), "{event}: `{m}` lacks `{needle}`");
    }
    let d = data(&server, &key, "/api/analytics/dashboard?period=year").await;
    assert_eq!(d["contacts"]["total"], 0);
    assert_eq!(d["messages"]["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_event_lists_all_its_bad_fields() {
    let (server, key) = utc_server().await;
    let event = json!({"type": "message", "account_id": "", "timestamp": "yesterday", "direction": "sideways", "message_type": "Text"});
    let (status, resp) = server.post_events(&key, &json!([event])).await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, &[]);
    let m = resp["errors"][0]["message"].as_str().expect("message");
    for needle in [
        "`account_id`",
        "`timestamp` is `yesterday`",
        "missing field `id`",
        "inbound, outbound",
        "`message_type` is `Text`",
    ] {
        assert!(m.contains(needle), "`{m}` lacks `{needle}`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ndjson_lines_are_listed_by_index() {
    let (server, key) = utc_server().await;
    let t = at(NOW) - 60;
    let body = format!(
        "{}\n{{not json\n{}\n{}\n",
        outbound("acc", "n1", "text", t),
        json!({"type": "message", "account_id": "acc", "timestamp": t}),
        inbound("acc", "n2", "text", t)
    );
    let (status, resp) = server
        .send(
            server
                .client
                .post(format!("{}/api/events", server.base))
                .bearer_auth(&key)
                .header("Content-Type", "application/x-ndjson")
                .body(body),
        )
        .await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, &["2 invalid event"]);
    assert_eq!(resp["errors"][0]["index"], 1);
    assert!(
        resp["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 2 is not valid JSON")),
        "{resp}"
    );
    assert_eq!(resp["errors"][1]["index"], 2);
    let d = data(&server, &key, "/api/analytics/dashboard").await;
    assert_eq!(d["messages"]["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_content_types_and_sizes() {
    let server = TestServer::start_full(
        EngineConfig::default(),
        ApiLimits {
            max_body_bytes: 2048,
            rate_per_second: 0,
        },
    )
    .await;
    server.set_now(at(NOW));
    let key = server.create_org("Small", "UTC").await;
    let url = format!("{}/api/events", server.base);
    let post = |body: String, content_type: &str| {
        server
            .client
            .post(&url)
            .bearer_auth(&key)
            .header("Content-Type", content_type)
            .body(body)
    };
    let t = at(NOW) - 60;
    let one = json!([outbound("acc", "m1", "text", t)]).to_string();

    for (body, needle) in [
        ("not json".to_string(), "not valid JSON"),
        ("[".to_string(), "not valid JSON"),
        ("\"hello\"".to_string(), "JSON array"),
        ("17".to_string(), "JSON array"),
        ("[]".to_string(), "no events"),
        (String::new(), ""),
    ] {
        let (status, resp) = server.send(post(body.clone(), "application/json")).await;
        assert_error(status, &resp, StatusCode::BAD_REQUEST, &[needle]);
    }
    let (status, resp) = server
        .send(post("\n\n".into(), "application/x-ndjson"))
        .await;
    assert_error(status, &resp, StatusCode::BAD_REQUEST, &["no events"]);

    for content_type in ["text/plain", "application/xml", "multipart/form-data"] {
        let (status, resp) = server.send(post(one.clone(), content_type)).await;
        assert_error(
            status,
            &resp,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &["Content-Type", "application/x-ndjson"],
        );
    }
    // Too large: 413, nothing applied.
    let big: Vec<Value> = (0..40)
        .map(|i| outbound("acc", &format!("big{i}"), "text", t))
        .collect();
    let big = Value::Array(big).to_string();
    assert!(big.len() > 2048);
    let (status, resp) = server.send(post(big, "application/json")).await;
    assert_error(status, &resp, StatusCode::PAYLOAD_TOO_LARGE, &["larger"]);

    let d = data(&server, &key, "/api/analytics/dashboard").await;
    assert_eq!(d["messages"]["total"], 0);
    // The small valid body still goes through.
    let (status, resp) = server.send(post(one, "application/json")).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(counts(&resp), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_of_every_endpoint() {
    let (server, key) = utc_server().await;
    ingest(&server, &key, &Value::Array(valid_events())).await;
    let cases: &[(&str, &[&str])] = &[
        // messages
        (
            "/api/analytics/messages?granularity=minute",
            &["`granularity`", "hour, day, week, month"],
        ),
        ("/api/analytics/messages?granularity=", &["`granularity`"]),
        (
            "/api/analytics/messages?granularity=DAY",
            &["`granularity`"],
        ),
        (
            "/api/analytics/messages?start_date=2026-13-01",
            &["`start_date`", "YYYY-MM-DD"],
        ),
        (
            "/api/analytics/messages?start_date=yesterday",
            &["`start_date`"],
        ),
        (
            "/api/analytics/messages?start_date=2026-3-1",
            &["`start_date`"],
        ),
        (
            "/api/analytics/messages?end_date=2026-02-30",
            &["`end_date`"],
        ),
        (
            "/api/analytics/messages?end_date=2026-03-10T10:00:00",
            &["`end_date`"],
        ),
        (
            "/api/analytics/messages?start_date=2026-03-10&end_date=2026-03-09",
            &["`start_date`", "`end_date`"],
        ),
        (
            "/api/analytics/messages?start_date=2026-03-10T10:00:00Z&end_date=2026-03-10T10:00:00Z",
            &["`start_date`", "before"],
        ),
        ("/api/analytics/messages?tz=Mars/Olympus", &["`tz`", "IANA"]),
        (
            "/api/analytics/messages?period=week",
            &["unknown parameter `period`"],
        ),
        (
            "/api/analytics/messages?limit=5",
            &["unknown parameter `limit`"],
        ),
        (
            "/api/analytics/messages?foo=bar",
            &["unknown parameter `foo`", "account_id"],
        ),
        (
            "/api/analytics/messages?granularity=day&granularity=hour",
            &["`granularity`", "more than once"],
        ),
        (
            "/api/analytics/messages?start_date=2026-03-10T10:30:00Z&end_date=2026-03-10T12:00:00Z&granularity=hour",
            &["hour"],
        ),
        (
            "/api/analytics/messages?start_date=2000-01-01&end_date=2026-03-12&granularity=hour",
            &["10000"],
        ),
        // Ranges reaching past the years dates can hold (these answered 500 before).
        (
            "/api/analytics/messages?end_date=-009999-01-20T00:00:00Z",
            &["-9999 to 9999", "`start_date`"],
        ),
        (
            "/api/analytics/messages?start_date=9999-12-01&end_date=9999-12-02&granularity=month",
            &["-9999 to 9999"],
        ),
        (
            "/api/analytics/costs?end_date=9999-12-30T22:00:00Z&granularity=week",
            &["-9999 to 9999"],
        ),
        // chatbot
        ("/api/analytics/chatbot?limit=0", &["`limit`", "1 to 1000"]),
        ("/api/analytics/chatbot?limit=-1", &["`limit`"]),
        ("/api/analytics/chatbot?limit=abc", &["`limit`"]),
        ("/api/analytics/chatbot?limit=1001", &["`limit`"]),
        ("/api/analytics/chatbot?limit=2.5", &["`limit`"]),
        (
            "/api/analytics/chatbot?start_date=03/01/2026",
            &["`start_date`"],
        ),
        ("/api/analytics/chatbot?end_date=tomorrow", &["`end_date`"]),
        (
            "/api/analytics/chatbot?start_date=2026-03-12&end_date=2026-03-01",
            &["`start_date`"],
        ),
        ("/api/analytics/chatbot?tz=Nowhere", &["`tz`"]),
        (
            "/api/analytics/chatbot?granularity=fortnight",
            &["`granularity`", "hour, day, week, month"],
        ),
        // dashboard
        (
            "/api/analytics/dashboard?period=decade",
            &["`period`", "today, week, month, year"],
        ),
        ("/api/analytics/dashboard?period=", &["`period`"]),
        (
            "/api/analytics/dashboard?start_date=2026-03-01",
            &["unknown parameter `start_date`"],
        ),
        (
            "/api/analytics/dashboard?granularity=day",
            &["unknown parameter `granularity`"],
        ),
    ];
    for (path, needles) in cases {
        let (status, body) = server.get(&key, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_error(status, &body, StatusCode::BAD_REQUEST, needles);
    }
    // Unknown accounts are 404 whatever else is asked.
    for path in [
        "/api/analytics/messages?account_id=nope&granularity=week",
        "/api/analytics/chatbot?account_id=nope&limit=3",
        "/api/analytics/dashboard?account_id=nope&period=today",
    ] {
        let (status, body) = server.get(&key, path).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, &["`nope`"]);
    }
    // The event endpoint knows only `backfill`.
    let events = json!([contact("acc", "zz", at(NOW) - 5)]);
    for query in ["?backfill=maybe", "?foo=1"] {
        let (status, body) = server
            .send(
                server
                    .client
                    .post(format!("{}/api/events{query}", server.base))
                    .bearer_auth(&key)
                    .json(&events),
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, &[]);
    }
    let d = data(&server, &key, "/api/analytics/dashboard").await;
    assert_eq!(d["contacts"]["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods() {
    let (server, key) = utc_server().await;
    for path in [
        "/api/nope",
        "/api/analytics",
        "/api/analytics/flows",
        "/nope",
    ] {
        let (status, body) = server.get(&key, path).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, &[]);
    }
    let cases = [
        (reqwest::Method::GET, "/api/events"),
        (reqwest::Method::PUT, "/api/events"),
        (reqwest::Method::DELETE, "/api/analytics/messages"),
        (reqwest::Method::POST, "/api/analytics/chatbot"),
        (reqwest::Method::PATCH, "/api/analytics/dashboard"),
        (reqwest::Method::POST, "/health"),
        (reqwest::Method::DELETE, "/api/admin/orgs"),
    ];
    for (method, path) in cases {
        let (status, body) = server
            .send(
                server
                    .client
                    .request(method.clone(), format!("{}{path}", server.base))
                    .bearer_auth(&key),
            )
            .await;
        assert_error(status, &body, StatusCode::METHOD_NOT_ALLOWED, &[]);
    }
}
