//! `GET /metrics` over the real binary, one process per test so that every counter starts
//! at zero: known events, requests, commits, webhook signatures, kept payloads, the tee's
//! deliveries, live streams and compaction, read back from the scraped text.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common;
use crate::helpers;

use common::backend::TestDatabase;
use common::process::{Served, call, serve_binary};
use helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use whatstat::engine::webhook::sign;

const MASTER: &str = "metrics-test-master-key";
const SECRET_KEY: &str = "metrics-test-secret-key";
const PHONE: &str = "15550001111";
const OTHER_PHONE: &str = "15550002222";
const APP_SECRET: &str = "meta-app-secret-for-metrics";

fn serve(name: &'static str, db: &TestDatabase, extra: &[&str]) -> Served {
    let mut args = vec!["--compact-interval-secs", "0"];
    args.extend_from_slice(extra);
    serve_binary(
        name,
        &db.url,
        MASTER,
        &args,
        &[("WHATSTAT_SECRET_KEY", SECRET_KEY)],
        Some(db.dir.path()),
    )
}

/// One scraped sample: its name, its labels and its value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text answer (comments skipped).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("sample without a value: {line}"));
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            // key="value" pairs; a value may hold `{`, `}`, `,` and escaped quotes.
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let end = loop {
                let (i, c) = chars
                    .next()
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                match c {
                    '}' => break i,
                    ',' | ' ' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            let (_, c) = chars.next().unwrap_or_else(|| panic!("{line}"));
                            match c {
                                '\\' => {
                                    if let Some((_, e)) = chars.next() {
                                        value.push(if e == 'n' { '\n' } else { e });
                                    }
                                }
                                '"' => break,
                                c => value.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            };
            rest = &inner[end + 1..];
        }
        let value = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("sample without a value: {line}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The samples of `name` whose labels include `labels`.
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one sample of `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .matching(name, labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one sample {name}{labels:?} expected, found {found:?} in\n{}",
            self.text
        );
        found[0].value
    }

    /// The sum of the samples of `name` whose labels include `labels` (0 when none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).iter().map(|s| s.value).sum()
    }

    fn events(&self, outcome: &str) -> f64 {
        self.value("whatstat_events_total", &[("outcome", outcome)])
    }
}

async fn scrape(client: &reqwest::Client, base: &str, key: Option<&str>) -> Scrape {
    let mut req = client.get(format!("{base}/metrics"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("scrape");
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await.expect("body");
    let samples = parse(&text);
    Scrape { text, samples }
}

async fn post_events(client: &reqwest::Client, base: &str, key: &str, events: &Value) -> Value {
    let (status, body) = call(
        client
            .post(format!("{base}/api/events"))
            .bearer_auth(key)
            .json(events),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

fn webhook_body(phone: &str, id: &str, from: &str, at: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone},
            "messages": [{"from": from, "id": id, "timestamp": at.to_string(), "type": "text",
                "text": {"body": "hi"}}]}}]}]}))
    .expect("json")
}

async fn post_webhook(
    client: &reqwest::Client,
    base: &str,
    body: &[u8],
    signature: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = client
        .post(format!("{base}/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    call(req).await
}

async fn create_org(client: &reqwest::Client, base: &str) -> String {
    let (status, body) = call(
        client
            .post(format!("{base}/api/admin/orgs"))
            .bearer_auth(MASTER)
            .json(&json!({"name": "Shop", "timezone": "UTC"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"]["api_key"]
        .as_str()
        .expect("api_key")
        .to_string()
}

/// Scrapes until `done` holds (the tee and the streams settle in the background).
async fn scrape_until(
    client: &reqwest::Client,
    base: &str,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = scrape(client, base, Some(MASTER)).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} within 30 s:\n{}", s.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_count_exactly_what_was_posted() {
    let db = TestDatabase::fresh().await;
    let server = serve(
        "metrics",
        &db,
        &["--forward-allow-http", "--forward-max-age-secs", "1"],
    );
    let (base, client) = (server.base.as_str(), reqwest::Client::new());

    // Every outcome is there from the start, at zero.
    let s = scrape(&client, base, Some(MASTER)).await;
    for outcome in ["accepted", "duplicate", "ignored", "refused"] {
        assert_eq!(s.events(outcome), 0.0, "{outcome}");
    }
    for code in ["missing_signature", "bad_signature"] {
        let labels = [("code", code)];
        assert_eq!(
            s.value("whatstat_webhook_signature_failures_total", &labels),
            0.0
        );
    }
    assert!(s.text.contains("# TYPE whatstat_events_total counter"));
    assert!(s.text.contains("# HELP whatstat_events_total "));

    let key = create_org(&client, base).await;
    // The binary runs on the real clock: events from a minute ago.
    let t = jiff::Timestamp::now().as_second() - 60;
    let events = json!([
        outbound("acc", "m1", "text", t),
        helpers::status("acc", "m1", "read", t + 1),
        inbound("acc", "m2", "text", t)
    ]);
    let first = post_events(&client, base, &key, &events).await;
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(3), Some(0))
    );
    let again = post_events(&client, base, &key, &events).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(3))
    );
    let odd = post_events(
        &client,
        base,
        &key,
        &json!([helpers::status("acc", "m1", "deleted", t + 2)]),
    )
    .await;
    assert_eq!(odd["ignored"].as_array().map(Vec::len), Some(1), "{odd}");
    // One invalid event refuses the request: both of its events are refused.
    let (status, body) = call(
        client
            .post(format!("{base}/api/events"))
            .bearer_auth(&key)
            .json(&json!([
                outbound("acc", "m3", "text", t),
                {"type": "message", "account_id": "acc", "timestamp": t}
            ])),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, &[]);
    assert_eq!(body["code"], "invalid_events");

    // The webhook: an account on PHONE whose deliveries go to a closed port, so that
    // with --forward-max-age-secs 1 the delivery ends on the failed list.
    let (status, body) = call(
        client
            .post(format!("{base}/api/accounts"))
            .bearer_auth(&key)
            .json(
                &json!({"account_id": "main", "name": "Main", "phone_number_id": PHONE,
                "app_secret": APP_SECRET, "forward_url": "http://127.0.0.1:9/hook"}),
            ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let routed = webhook_body(PHONE, "wamid.metrics.1", "15557770000", t);
    let (status, body) = post_webhook(&client, base, &routed, None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &[]);
    let (status, body) = post_webhook(&client, base, &routed, Some("sha256=zz")).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, &[]);
    let wrong = sign(b"not-the-app-secret", &routed);
    let (status, body) = post_webhook(&client, base, &routed, Some(&wrong)).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, &[]);
    assert_eq!(body["code"], "bad_signature");
    let good = sign(APP_SECRET.as_bytes(), &routed);
    let (status, receipt) = post_webhook(&client, base, &routed, Some(&good)).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    let webhook_accepted = receipt["data"]["accepted"].as_u64().expect("accepted");
    assert!(webhook_accepted >= 1, "{receipt}");
    assert_eq!(receipt["data"]["duplicates"], 0, "{receipt}");
    assert_eq!(receipt["data"]["ignored"], 0, "{receipt}");
    // A number no account claims: the payload is kept, nothing is counted.
    let kept = webhook_body(OTHER_PHONE, "wamid.metrics.2", "15557770000", t);
    let (status, receipt) = post_webhook(&client, base, &kept, Some(&sign(b"any", &kept))).await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert!(receipt["data"]["kept_payload"].is_i64(), "{receipt}");
    assert_eq!(receipt["data"]["accepted"], 0, "{receipt}");

    // A route with a parameter, and a path no route matches.
    let (status, _) = call(
        client
            .get(format!("{base}/api/accounts/main"))
            .bearer_auth(&key),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(client.get(format!("{base}/no/such/route"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A live stream is counted while it is open.
    let stream = client
        .get(format!("{base}/api/stream"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), StatusCode::OK);

    let s = scrape_until(&client, base, "the delivery on the failed list", |s| {
        s.value("whatstat_forwarding_deliveries", &[("state", "failed")]) == 1.0
    })
    .await;
    assert_eq!(s.events("accepted"), (3 + webhook_accepted) as f64);
    assert_eq!(s.events("duplicate"), 3.0);
    assert_eq!(s.events("ignored"), 1.0);
    assert_eq!(s.events("refused"), 2.0);
    let failures = "whatstat_webhook_signature_failures_total";
    assert_eq!(s.value(failures, &[("code", "missing_signature")]), 1.0);
    assert_eq!(s.value(failures, &[("code", "bad_signature")]), 2.0);
    assert_eq!(s.value("whatstat_unrouted_payloads", &[]), 1.0);
    let deliveries = "whatstat_forwarding_deliveries";
    assert_eq!(s.value(deliveries, &[("state", "pending")]), 0.0);
    assert_eq!(s.value("whatstat_stream_connections", &[]), 1.0);
    assert_eq!(s.value("whatstat_write_queue_depth", &[]), 0.0);

    // Requests by route template and status.
    let requests = "whatstat_http_requests_total";
    let events_route = [("method", "POST"), ("route", "/api/events")];
    let hits = |status: &str| {
        let mut labels = events_route.to_vec();
        labels.push(("status", status));
        s.value(requests, &labels)
    };
    assert_eq!(hits("200"), 3.0);
    assert_eq!(hits("400"), 1.0);
    let webhook = |status: &str| {
        s.value(
            requests,
            &[
                ("method", "POST"),
                ("route", "/webhooks/whatsapp"),
                ("status", status),
            ],
        )
    };
    assert_eq!(webhook("200"), 2.0);
    assert_eq!(webhook("401"), 1.0);
    assert_eq!(webhook("403"), 2.0);
    let account = [
        ("method", "GET"),
        ("route", "/api/accounts/{id}"),
        ("status", "200"),
    ];
    assert_eq!(s.value(requests, &account), 1.0);
    let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
    assert_eq!(s.value(requests, &unmatched), 1.0);
    assert!(
        s.samples.iter().all(|x| x
            .labels
            .get("route")
            .is_none_or(|r| r.starts_with('/') || r == "unmatched")),
        "{}",
        s.text
    );
    assert!(!s.text.contains("/api/accounts/main"), "{}", s.text);
    assert!(!s.text.contains("/no/such/route"), "{}", s.text);

    // The request histogram moved: 4 event posts, all in the +Inf bucket and some time.
    let duration = "whatstat_http_request_duration_seconds";
    assert_eq!(s.value(&format!("{duration}_count"), &events_route), 4.0);
    let mut inf = events_route.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(s.value(&format!("{duration}_bucket"), &inf), 4.0);
    assert!(s.value(&format!("{duration}_sum"), &events_route) > 0.0);

    // Group commits: the events of every write job (the ignored-only request wrote none),
    // one commit per request (each waited for its own), as many durations as sizes.
    let batch = "whatstat_commit_batch_events";
    assert_eq!(
        s.value(&format!("{batch}_sum"), &[]),
        (3 + 3 + webhook_accepted) as f64
    );
    let commits = s.value(&format!("{batch}_count"), &[]);
    assert_eq!(commits, 4.0);
    let commit = "whatstat_commit_duration_seconds";
    assert_eq!(s.value(&format!("{commit}_count"), &[]), commits);
    assert!(s.value(&format!("{commit}_sum"), &[]) > 0.0);
    assert_eq!(
        s.value(&format!("{commit}_bucket"), &[("le", "+Inf")]),
        commits
    );

    // The stream's end is seen too.
    drop(stream);
    scrape_until(&client, base, "the stream's end", |s| {
        s.value("whatstat_stream_connections", &[]) == 0.0
    })
    .await;
    // Scrapes are requests too, under their route.
    let s = scrape(&client, base, Some(MASTER)).await;
    assert!(s.sum(requests, &[("route", "/metrics"), ("status", "200")]) >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_master_key_unless_open() {
    let db = TestDatabase::fresh().await;
    let server = serve("metrics-closed", &db, &[]);
    let (base, client) = (server.base.as_str(), reqwest::Client::new());
    let key = create_org(&client, base).await;
    let url = format!("{base}/metrics");
    let (status, body) = call(client.get(&url)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &["master key"]);
    assert_eq!(body["code"], "invalid_api_key");
    let (status, body) = call(client.get(&url).bearer_auth("wrong")).await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        &["invalid master key"],
    );
    assert_eq!(body["code"], "invalid_api_key");
    // An organization's admin key is not the master key.
    let (status, body) = call(client.get(&url).bearer_auth(&key)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &[]);
    assert_eq!(body["code"], "invalid_api_key");
    // The refusals are counted like any request.
    let s = scrape(&client, base, Some(MASTER)).await;
    let refused = [("method", "GET"), ("route", "/metrics"), ("status", "401")];
    assert_eq!(s.value("whatstat_http_requests_total", &refused), 3.0);
    drop(server);

    let db = TestDatabase::fresh().await;
    let open = serve("metrics-open", &db, &["--metrics-open"]);
    let s = scrape(&client, &open.base, None).await;
    assert_eq!(s.events("accepted"), 0.0);
    assert!(s.text.contains("# TYPE whatstat_write_queue_depth gauge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_counts_the_rows_it_expired() {
    let db = TestDatabase::fresh().await;
    let server = serve("metrics-compaction", &db, &["--state-window-days", "1"]);
    let (base, client) = (server.base.as_str(), reqwest::Client::new());
    let key = create_org(&client, base).await;
    // Its state is kept until a day after it happened: two seconds from now.
    let t = jiff::Timestamp::now().as_second() - 86_400 + 2;
    let (status, body) = call(
        client
            .post(format!("{base}/api/events?backfill=true"))
            .bearer_auth(&key)
            .json(&json!([outbound("acc", "old", "text", t)])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(counts(&body), (1, 0));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, report) = call(
        client
            .post(format!("{base}/api/admin/compact"))
            .bearer_auth(MASTER),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let pruned = report["data"]["states_pruned"]
        .as_u64()
        .expect("states_pruned");
    assert!(pruned >= 1, "{report}");
    let s = scrape(&client, base, Some(MASTER)).await;
    let expired = "whatstat_compaction_rows_expired_total";
    assert_eq!(s.value(expired, &[("kind", "states")]), pruned as f64);
    assert_eq!(s.value(expired, &[("kind", "hourly")]), 0.0);
    assert_eq!(s.value(expired, &[("kind", "daily")]), 0.0);
    assert_eq!(s.value(expired, &[("kind", "pruned_ids")]), 0.0);
    // A second run finds nothing more.
    let (status, _) = call(
        client
            .post(format!("{base}/api/admin/compact"))
            .bearer_auth(MASTER),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let s = scrape(&client, base, Some(MASTER)).await;
    assert_eq!(s.value(expired, &[("kind", "states")]), pruned as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_count_each_commit_s_counters_and_states() {
    let db = TestDatabase::fresh().await;
    let server = serve("metrics-rows", &db, &[]);
    let (base, client) = (server.base.as_str(), reqwest::Client::new());
    let key = create_org(&client, base).await;
    let rows = |s: &Scrape| {
        let get = |t| s.value("whatstat_store_rows_written_total", &[("table", t)]);
        (get("counters"), get("states"))
    };
    assert_eq!(rows(&scrape(&client, base, Some(MASTER)).await), (0.0, 0.0));
    let t = jiff::Timestamp::now().as_second() - 60;
    // One message (one state) adds to by_type, sent and delivered: 3 series in 3 tiers,
    // for its account and for the organization.
    let post = async |events: &Value| {
        let d = post_events(&client, base, &key, events).await;
        (d["accepted"].as_u64(), d["duplicates"].as_u64())
    };
    let sent = json!([
        outbound("acc", "m1", "text", t),
        status("acc", "m1", "delivered", t)
    ]);
    assert_eq!(post(&sent).await, (Some(2), Some(0)));
    assert_eq!(
        rows(&scrape(&client, base, Some(MASTER)).await),
        (18.0, 1.0)
    );
    // Duplicates change no state and write nothing.
    assert_eq!(post(&sent).await, (Some(0), Some(2)));
    assert_eq!(
        rows(&scrape(&client, base, Some(MASTER)).await),
        (18.0, 1.0)
    );
    // An inbound message: by_type again (the same rows, upserted) and received.
    let received = json!([inbound("acc", "m2", "text", t)]);
    assert_eq!(post(&received).await, (Some(1), Some(0)));
    assert_eq!(
        rows(&scrape(&client, base, Some(MASTER)).await),
        (30.0, 2.0)
    );
}

#[test]
fn the_parser_reads_labels_with_braces_and_escapes() {
    let samples = parse(
        "# HELP x help\n# TYPE x counter\nx{route=\"/a/{id}\",q=\"say \\\"hi\\\", ok\"} 3\ny 1.5\nz_bucket{le=\"+Inf\"} 2\n",
    );
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].name, "x");
    assert_eq!(samples[0].labels["route"], "/a/{id}");
    assert_eq!(samples[0].labels["q"], "say \"hi\", ok");
    assert_eq!(samples[0].value, 3.0);
    assert_eq!((samples[1].name.as_str(), samples[1].value), ("y", 1.5));
    assert_eq!(samples[2].labels["le"], "+Inf");
}
