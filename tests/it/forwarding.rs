//! The webhook tee over the real server: a local upstream (axum on loopback) verifies
//! each forwarded POST's signature with the app secret and records it. Byte-identical
//! bodies, one delivery per distinct URL, Meta's 200 whatever the upstream does, every
//! delivery landing once it recovers (also across a kill -9 of the binary), nothing
//! forwarded that is badly signed or unrouted, the failed list, the bounded outbox, the
//! rules of `forward_url`, and two PostgreSQL instances sharing one outbox.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use common::backend::{Backend, TestDatabase};
use common::process::{Served, call, serve_binary};
use common::{MASTER_KEY, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use whatstat::engine::EngineConfig;
use whatstat::engine::forwarding::ForwardConfig;
use whatstat::engine::webhook::{sign, signature_matches};

const SECRET: &str = "tee-app-secret-0123456789abcdef";
const P1: &str = "1065400001";
const P2: &str = "1065400002";
const P3: &str = "1065400003";

/// How the upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Fail,
    /// Answers 200 after 5 s.
    Slow,
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    delivery: String,
    body: Vec<u8>,
    signature_valid: bool,
    content_type: String,
    user_agent: String,
    answered: u16,
}

#[derive(Default)]
struct UpState {
    mode: Option<Mode>,
    received: Vec<Received>,
    in_flight: HashMap<String, u32>,
    /// Times a delivery arrived while the same one was still being answered.
    overlaps: u32,
    delay: Duration,
}

#[derive(Clone)]
struct Upstream {
    state: Arc<Mutex<UpState>>,
    addr: SocketAddr,
}

async fn hook(
    State(state): State<Arc<Mutex<UpState>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let delivery = header("x-whatstat-delivery");
    let (mode, delay) = {
        let mut s = state.lock().unwrap();
        let n = s.in_flight.entry(delivery.clone()).or_default();
        *n += 1;
        if *n > 1 {
            s.overlaps += 1;
        }
        (s.mode.unwrap_or(Mode::Ok), s.delay)
    };
    tokio::time::sleep(delay).await;
    let answer = match mode {
        Mode::Ok => AxumStatus::OK,
        Mode::Fail => AxumStatus::INTERNAL_SERVER_ERROR,
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            AxumStatus::OK
        }
    };
    let mut s = state.lock().unwrap();
    if let Some(n) = s.in_flight.get_mut(&delivery) {
        *n -= 1;
    }
    s.received.push(Received {
        path: uri.path().to_string(),
        delivery,
        signature_valid: signature_matches(
            SECRET.as_bytes(),
            &body,
            &header("x-hub-signature-256"),
        ),
        body: body.to_vec(),
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        answered: answer.as_u16(),
    });
    answer
}

impl Upstream {
    /// A port nothing listens on yet: the upstream is down until `start` is called.
    fn reserve() -> Upstream {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        Upstream {
            state: Arc::default(),
            addr,
        }
    }

    async fn start(&self, mode: Mode) {
        self.set_mode(mode);
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind upstream");
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(hook))
            .with_state(self.state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("upstream");
        });
    }

    async fn up(mode: Mode) -> Upstream {
        let u = Upstream::reserve();
        u.start(mode).await;
        u
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The bodies answered 200, by delivery id.
    fn delivered(&self) -> HashMap<String, Vec<u8>> {
        self.received()
            .into_iter()
            .filter(|r| r.answered == 200)
            .map(|r| (r.delivery, r.body))
            .collect()
    }
}

/// Short timings, so that retries, ages and the bound show within seconds.
fn fast(change: impl FnOnce(&mut ForwardConfig)) -> EngineConfig {
    let mut forward = ForwardConfig {
        allow_http: true,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        attempt_timeout: Duration::from_secs(1),
        poll_interval: Duration::from_millis(50),
        ..ForwardConfig::default()
    };
    change(&mut forward);
    EngineConfig {
        forward,
        ..EngineConfig::default()
    }
}

async fn register(
    s: &TestServer,
    key: &str,
    account: &str,
    phone: &str,
    url: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({"account_id": account, "name": account, "phone_number_id": phone,
        "app_secret": SECRET});
    if let Some(u) = url {
        body["forward_url"] = json!(u);
    }
    s.send(
        s.client
            .post(format!("{}/api/accounts", s.base))
            .bearer_auth(key)
            .json(&body),
    )
    .await
}

async fn registered(s: &TestServer, key: &str, account: &str, phone: &str, url: Option<&str>) {
    let (status, body) = register(s, key, account, phone, url).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Meta's payload for messages to the given numbers, written with odd spacing so that
/// only a byte-for-byte copy keeps its signature.
fn payload(tag: &str, phones: &[&str]) -> Vec<u8> {
    let changes: Vec<String> = phones
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                r#"{{ "field":"messages",  "value": {{"messaging_product":"whatsapp","metadata":{{"phone_number_id":"{p}"}},
  "messages":[{{"from":"1555000{i}","id":"wamid.{tag}.{i}","timestamp":"{}","type":"text","text":{{"body":"héllo {tag}"}}}}]}} }}"#,
                jiff::Timestamp::now().as_second() - 60
            )
        })
        .collect();
    format!(
        "{{\"object\":\"whatsapp_business_account\",\n \"entry\":[{{\"id\":\"1\",\"changes\":[{}]}}]}}\n",
        changes.join(",")
    )
    .into_bytes()
}

async fn post_webhook(
    base: &str,
    client: &reqwest::Client,
    body: &[u8],
    secret: &str,
) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let (status, answer) = call(
        client
            .post(format!("{base}/webhooks/whatsapp"))
            .header("content-type", "application/json; charset=utf-8")
            .header("x-hub-signature-256", sign(secret.as_bytes(), body))
            .body(body.to_vec()),
    )
    .await;
    (status, answer, started.elapsed())
}

async fn post_ok(s: &TestServer, body: &[u8]) -> Value {
    let (status, answer, took) = post_webhook(&s.base, &s.client, body, SECRET).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Meta's answer never waits for an upstream (an attempt may take a second here).
    assert!(
        took < Duration::from_millis(900),
        "the webhook answered in {took:?}"
    );
    answer["data"].clone()
}

async fn forwarding(base: &str, client: &reqwest::Client, key: &str, account: &str) -> Value {
    let (status, body) = call(
        client
            .get(format!("{base}/api/accounts/{account}/forwarding"))
            .bearer_auth(key),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

/// Polls `check` every 50 ms until it holds, failing after `secs` seconds.
async fn wait_for<F: FnMut() -> bool>(secs: u64, what: &str, mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the forwarding status until `check` holds on it.
async fn wait_status(
    s: &TestServer,
    key: &str,
    account: &str,
    secs: u64,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = forwarding(&s.base, &s.client, key, account).await;
        if check(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "forwarding status stayed {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn received_total(s: &TestServer, key: &str) -> i64 {
    let (status, body) = s.get(key, "/api/analytics/messages").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["summary"]["total_received"]
        .as_i64()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_posts_are_forwarded_byte_for_byte_once_per_url() {
    let up = Upstream::up(Mode::Ok).await;
    let s = TestServer::start_with(fast(|_| {})).await;
    let key = s.create_org("Shop", "UTC").await;
    let (a, b) = (up.url("/hook/a"), up.url("/hook/b"));
    registered(&s, &key, "main", P1, Some(&a)).await;
    registered(&s, &key, "second", P2, Some(&a)).await;
    registered(&s, &key, "third", P3, Some(&b)).await;
    let (_, shown) = s.get(&key, "/api/accounts/main").await;
    assert_eq!(shown["data"]["forward_url"], json!(a));

    // Two accounts with one URL: one delivery. Then two URLs: one each.
    let first = payload("one", &[P1, P2]);
    let second = payload("two", &[P1, P3]);
    // Each message counts with its sender's contact (the second's first sender is known).
    assert_eq!(post_ok(&s, &first).await["accepted"], 4);
    assert_eq!(post_ok(&s, &second).await["accepted"], 3);
    wait_for(10, "three deliveries", || up.delivered().len() == 3).await;
    // Nothing more arrives: no second delivery of any of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = up.received();
    assert_eq!(got.len(), 3, "{got:?}");
    let to = |path: &str| -> Vec<Vec<u8>> {
        got.iter()
            .filter(|r| r.path == path)
            .map(|r| r.body.clone())
            .collect()
    };
    assert_eq!(to("/hook/a"), vec![first.clone(), second.clone()]);
    assert_eq!(to("/hook/b"), vec![second.clone()]);
    for r in &got {
        assert!(r.signature_valid, "Meta's signature still verifies: {r:?}");
        assert_eq!(r.content_type, "application/json; charset=utf-8");
        assert_eq!(
            r.user_agent,
            format!("whatstat/{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(r.delivery.starts_with("dlv_"), "{}", r.delivery);
    }
    let ids: HashSet<&str> = got.iter().map(|r| r.delivery.as_str()).collect();
    assert_eq!(ids.len(), 3);
    // The figures are whatstat's own, as without forwarding.
    assert_eq!(received_total(&s, &key).await, 4);

    let st = wait_status(&s, &key, "main", 5, |v| v["delivered"] == 2).await;
    assert_eq!(st["pending"], 0);
    assert_eq!(st["failed"], 0);
    assert_eq!(st["forward_url"], json!(a));
    assert!(st["last_success_at"].is_string(), "{st}");
    assert_eq!(st["last_error"], Value::Null);
    let third = forwarding(&s.base, &s.client, &key, "third").await;
    assert_eq!(third["delivered"], 1);

    // Clearing the URL takes effect at once.
    let (status, body) = s
        .send(
            s.client
                .patch(format!("{}/api/accounts/third", s.base))
                .bearer_auth(&key)
                .json(&json!({"forward_url": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["forward_url"], Value::Null);
    post_ok(&s, &payload("three", &[P3])).await;
    post_ok(&s, &payload("four", &[P1])).await;
    wait_for(10, "the fourth delivery", || up.delivered().len() == 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = up.received();
    assert_eq!(last.len(), 4);
    assert_eq!(last[3].path, "/hook/a");
    assert_eq!(last[3].body, payload_tag_check(&last[3].body, "four"));
}

/// The body, after checking it is the payload tagged `tag`.
fn payload_tag_check(body: &[u8], tag: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    assert!(text.contains(&format!("wamid.{tag}.")), "{text}");
    body.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn badly_signed_and_unrouted_payloads_are_never_forwarded() {
    let up = Upstream::up(Mode::Ok).await;
    let s = TestServer::start_with(fast(|_| {})).await;
    let key = s.create_org("Shop", "UTC").await;
    registered(&s, &key, "main", P1, Some(&up.url("/hook"))).await;

    let body = payload("bad", &[P1]);
    let (status, answer, _) = post_webhook(&s.base, &s.client, &body, "another-secret").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["code"], "bad_signature");
    // For a number no account claims: kept, not forwarded, also once it is claimed.
    let unrouted = payload("unrouted", &[P2]);
    let answer = post_ok(&s, &unrouted).await;
    assert_eq!(answer["unrouted_phone_number_ids"], json!([P2]));
    registered(&s, &key, "second", P2, Some(&up.url("/hook"))).await;
    assert_eq!(received_total(&s, &key).await, 1, "the replay counted it");

    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(up.received().is_empty(), "{:?}", up.received());
    // The worker runs: a good POST arrives, and only it.
    let good = payload("good", &[P1]);
    post_ok(&s, &good).await;
    wait_for(10, "the good delivery", || !up.delivered().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = up.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, good);
    let st = forwarding(&s.base, &s.client, &key, "second").await;
    assert_eq!(
        (st["pending"].clone(), st["delivered"].clone()),
        (json!(0), json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metas_200_waits_for_no_upstream_down_failing_or_slow_and_every_delivery_lands() {
    let up = Upstream::reserve();
    let s = TestServer::start_with(fast(|_| {})).await;
    let key = s.create_org("Shop", "UTC").await;
    registered(&s, &key, "main", P1, Some(&up.url("/hook"))).await;

    let mut sent = Vec::new();
    // Down: nothing listens.
    for i in 0..3 {
        let body = payload(&format!("down{i}"), &[P1]);
        post_ok(&s, &body).await;
        sent.push(body);
    }
    let st = wait_status(&s, &key, "main", 10, |v| v["last_error"].is_string()).await;
    assert_eq!(st["pending"], 3, "{st}");
    assert!(st["oldest_pending_at"].is_string(), "{st}");
    // Answering 500.
    up.start(Mode::Fail).await;
    for i in 0..2 {
        let body = payload(&format!("fail{i}"), &[P1]);
        post_ok(&s, &body).await;
        sent.push(body);
    }
    wait_for(10, "a 500", || {
        up.received().iter().any(|r| r.answered == 500)
    })
    .await;
    let st = wait_status(&s, &key, "main", 10, |v| {
        v["last_error"].as_str().is_some_and(|e| e.contains("500"))
    })
    .await;
    assert_eq!(st["pending"], 5, "{st}");
    assert_eq!(st["delivered"], 0);
    // Slow: 5 s per answer, past the attempt timeout.
    up.set_mode(Mode::Slow);
    let body = payload("slow", &[P1]);
    post_ok(&s, &body).await;
    sent.push(body);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        forwarding(&s.base, &s.client, &key, "main").await["delivered"],
        0
    );
    // Recovered: every one lands.
    up.set_mode(Mode::Ok);
    let st = wait_status(&s, &key, "main", 20, |v| v["pending"] == 0).await;
    assert_eq!(st["delivered"], 6, "{st}");
    assert_eq!(st["failed"], 0);
    let delivered: HashSet<Vec<u8>> = up.delivered().into_values().collect();
    assert_eq!(delivered, sent.iter().cloned().collect::<HashSet<_>>());
    assert!(up.received().iter().all(|r| r.signature_valid));
    assert_eq!(received_total(&s, &key).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_past_their_age_are_failed_listed_retried_and_deleted() {
    let up = Upstream::up(Mode::Fail).await;
    let s = TestServer::start_with(fast(|f| f.max_age = Duration::from_millis(700))).await;
    let key = s.create_org("Shop", "UTC").await;
    registered(&s, &key, "main", P1, Some(&up.url("/hook"))).await;
    let (one, two) = (payload("one", &[P1]), payload("two", &[P1]));
    post_ok(&s, &one).await;
    post_ok(&s, &two).await;
    let st = wait_status(&s, &key, "main", 10, |v| v["failed"] == 2).await;
    assert_eq!(st["pending"], 0);
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("500"),
        "{st}"
    );

    let list = |s: &TestServer| {
        let (base, client, key) = (s.base.clone(), s.client.clone(), key.clone());
        async move {
            let (status, body) = call(
                client
                    .get(format!("{base}/api/accounts/main/forwarding/failed"))
                    .bearer_auth(&key),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["data"]["deliveries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        }
    };
    let failed = list(&s).await;
    assert_eq!(failed.len(), 2);
    assert_eq!(
        failed[0]["body"],
        json!(String::from_utf8(one.clone()).unwrap())
    );
    assert!(
        failed[0]["attempts"].as_i64().unwrap_or(0) >= 1,
        "{failed:?}"
    );
    let (first_id, second_id) = (
        failed[0]["id"].as_str().unwrap().to_string(),
        failed[1]["id"].as_str().unwrap().to_string(),
    );

    // Unknown ids are named; a read key may not touch the list.
    let (status, body) = s
        .send(
            s.client
                .post(format!(
                    "{}/api/accounts/main/forwarding/failed/dlv_nope/retry",
                    s.base
                ))
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["message"].as_str().unwrap().contains("dlv_nope"));
    let (status, body) = s.get(&key, "/api/accounts/nobody/forwarding").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "unknown_account");

    // Retried after the upstream recovered: delivered, with the same delivery id.
    up.set_mode(Mode::Ok);
    let (status, body) = s
        .send(
            s.client
                .post(format!(
                    "{}/api/accounts/main/forwarding/failed/{first_id}/retry",
                    s.base
                ))
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["retried"], 1);
    wait_for(10, "the retried delivery", || {
        up.delivered().contains_key(&first_id)
    })
    .await;
    assert_eq!(up.delivered()[&first_id], one);
    let st = wait_status(&s, &key, "main", 5, |v| v["delivered"] == 1).await;
    assert_eq!(st["failed"], 1);

    // Deleted: gone from the list, and never delivered.
    let (status, body) = s
        .send(
            s.client
                .delete(format!(
                    "{}/api/accounts/main/forwarding/failed/{second_id}",
                    s.base
                ))
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(list(&s).await.is_empty());
    let (status, _) = s
        .send(
            s.client
                .delete(format!(
                    "{}/api/accounts/main/forwarding/failed/{second_id}",
                    s.base
                ))
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!up.delivered().contains_key(&second_id));

    // Retry all: every failed one of the account.
    up.set_mode(Mode::Fail);
    post_ok(&s, &payload("three", &[P1])).await;
    post_ok(&s, &payload("four", &[P1])).await;
    wait_status(&s, &key, "main", 10, |v| v["failed"] == 2).await;
    up.set_mode(Mode::Ok);
    let (status, body) = s
        .send(
            s.client
                .post(format!(
                    "{}/api/accounts/main/forwarding/failed/retry",
                    s.base
                ))
                .bearer_auth(&key),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["retried"], 2);
    let st = wait_status(&s, &key, "main", 10, |v| v["delivered"] == 3).await;
    assert_eq!(
        (st["failed"].clone(), st["pending"].clone()),
        (json!(0), json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_bounded_per_organization_oldest_failed_first() {
    let up = Upstream::reserve();
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| payload(&format!("b{i}"), &[P1])).collect();
    let size = bodies[0].len() as u64;
    // Room for two and a half bodies.
    let s = TestServer::start_with(fast(|f| f.max_pending_bytes = size * 5 / 2)).await;
    let key = s.create_org("Shop", "UTC").await;
    registered(&s, &key, "main", P1, Some(&up.url("/hook"))).await;
    for b in &bodies {
        post_ok(&s, b).await;
    }
    // Meta's 200 and the figures never pay for the bound.
    assert_eq!(received_total(&s, &key).await, 5);
    let st = wait_status(&s, &key, "main", 10, |v| v["pending"] == 2).await;
    assert_eq!(st["failed"], 3, "{st}");
    assert_eq!(st["dropped_over_bound"], 3, "{st}");
    let (_, failed) = s.get(&key, "/api/accounts/main/forwarding/failed").await;
    let failed = failed["data"]["deliveries"].as_array().unwrap().clone();
    let failed_bodies: Vec<Vec<u8>> = failed
        .iter()
        .map(|d| d["body"].as_str().unwrap().as_bytes().to_vec())
        .collect();
    assert_eq!(failed_bodies, bodies[..3].to_vec(), "the oldest moved");
    for d in &failed {
        assert!(
            d["last_error"]
                .as_str()
                .unwrap_or_default()
                .contains("forward-max-pending-bytes"),
            "{d}"
        );
    }
    up.start(Mode::Ok).await;
    let st = wait_status(&s, &key, "main", 20, |v| v["delivered"] == 2).await;
    assert_eq!(st["pending"], 0);
    let delivered: HashSet<Vec<u8>> = up.delivered().into_values().collect();
    assert_eq!(
        delivered,
        bodies[3..].iter().cloned().collect::<HashSet<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_urls_follow_the_scheme_and_address_rules() {
    let strict = TestServer::start_with(EngineConfig {
        forward: ForwardConfig {
            deny_private: true,
            ..ForwardConfig::default()
        },
        ..EngineConfig::default()
    })
    .await;
    let key = strict.create_org("Shop", "UTC").await;
    for (url, says) in [
        ("http://203.0.113.7/hook", "--forward-allow-http"),
        ("ftp://203.0.113.7/hook", "not an http(s) URL"),
        ("https://user:pw@203.0.113.7/hook", "credentials"),
        ("not a url", "forward_url"),
        ("https://127.0.0.1/hook", "--forward-deny-private"),
        ("https://10.0.0.8/hook", "--forward-deny-private"),
        ("https://[::1]/hook", "IPv6 literal"),
        ("https://Shop.example/hook", "lowercase DNS name"),
        ("https://169.254.169.254/latest", "--forward-deny-private"),
        ("https://localhost/hook", "--forward-deny-private"),
    ] {
        let (status, body) = register(&strict, &key, "main", P1, Some(url)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains("forward_url"), "{url}: {message}");
        assert!(message.contains(says), "{url}: {message}");
    }
    // Nothing was saved by the refusals.
    let (_, list) = strict.get(&key, "/api/accounts").await;
    assert_eq!(list["data"]["accounts"], json!([]));
    let ok = "https://203.0.113.7/hook";
    registered(&strict, &key, "main", P1, Some(ok)).await;
    let (status, body) = strict
        .send(
            strict
                .client
                .patch(format!("{}/api/accounts/main", strict.base))
                .bearer_auth(&key)
                .json(&json!({"forward_url": "https://192.168.0.2/"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, shown) = strict.get(&key, "/api/accounts/main").await;
    assert_eq!(shown["data"]["forward_url"], ok);

    // Loopback over http is for a server that allows both.
    let open = TestServer::start_with(fast(|_| {})).await;
    let key = open.create_org("Shop", "UTC").await;
    registered(&open, &key, "main", P1, Some("http://127.0.0.1:9/hook")).await;
    let (status, body) = open.get(MASTER_KEY, "/api/accounts/main/forwarding").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

const BINARY_SECRET_KEY: &str = "tee-binary-secret-key";

fn serve_tee(name: &'static str, db: &TestDatabase) -> Served {
    serve_binary(
        name,
        &db.url,
        MASTER_KEY,
        &["--forward-allow-http", "--compact-interval-secs", "0"],
        &[("WHATSTAT_SECRET_KEY", BINARY_SECRET_KEY)],
        Some(db.dir.path()),
    )
}

async fn binary_setup(client: &reqwest::Client, base: &str, url: &str) -> String {
    let (status, body) = call(
        client
            .post(format!("{base}/api/admin/orgs"))
            .bearer_auth(MASTER_KEY)
            .json(&json!({"name": "Shop", "timezone": "UTC"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = body["data"]["api_key"].as_str().unwrap().to_string();
    let (status, body) = call(
        client
            .post(format!("{base}/api/accounts"))
            .bearer_auth(&key)
            .json(
                &json!({"account_id": "main", "name": "Main", "phone_number_id": P1,
                "app_secret": SECRET, "forward_url": url}),
            ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_a_kill_9_and_land_after_the_restart() {
    let db = TestDatabase::fresh().await;
    let up = Upstream::reserve();
    let client = reqwest::Client::new();
    let mut first = serve_tee("tee-before-kill", &db);
    let key = binary_setup(&client, &first.base, &up.url("/hook")).await;
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| payload(&format!("k{i}"), &[P1])).collect();
    for b in &bodies {
        let (status, answer, _) = post_webhook(&first.base, &client, b, SECRET).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let st = forwarding(&first.base, &client, &key, "main").await;
    assert_eq!(st["pending"], 4, "{st}");
    // SIGKILL: no shutdown of any kind.
    first.child.kill().expect("kill -9");
    first.child.wait().expect("reaped");
    drop(first);

    up.start(Mode::Ok).await;
    let second = serve_tee("tee-after-kill", &db);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = forwarding(&second.base, &client, &key, "main").await;
        if st["pending"] == 0 {
            assert_eq!(st["delivered"], 4, "{st}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still pending after the restart: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delivered: HashSet<Vec<u8>> = up.delivered().into_values().collect();
    assert_eq!(delivered, bodies.iter().cloned().collect::<HashSet<_>>());
    assert!(up.received().iter().all(|r| r.signature_valid));
}

/// Always on PostgreSQL, whatever `WHATSTAT_TEST_BACKEND` says: two instances share the
/// outbox while both run, and each payload is delivered once, never by both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_instances_share_one_outbox_and_deliver_each_payload_once() {
    let db = TestDatabase::fresh_on(Backend::Postgres).await;
    let up = Upstream::up(Mode::Ok).await;
    // Slow enough answers that both instances have claims in flight at once.
    up.state.lock().unwrap().delay = Duration::from_millis(150);
    let client = reqwest::Client::new();
    let a = serve_tee("tee-pg-a", &db);
    let b = serve_tee("tee-pg-b", &db);
    let key = binary_setup(&client, &a.base, &up.url("/hook")).await;
    let bodies: Vec<Vec<u8>> = (0..40).map(|i| payload(&format!("pg{i}"), &[P1])).collect();
    let mut posts = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (client, body) = (client.clone(), body.clone());
        posts.push(tokio::spawn(async move {
            let (status, answer, _) = post_webhook(&base, &client, &body, SECRET).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }));
    }
    for p in posts {
        p.await.expect("post");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = forwarding(&b.base, &client, &key, "main").await;
        if st["delivered"] == 40 {
            assert_eq!(st["pending"], 0, "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = up.received();
    assert_eq!(got.len(), 40, "each payload exactly once while both run");
    let ids: HashSet<&str> = got.iter().map(|r| r.delivery.as_str()).collect();
    assert_eq!(ids.len(), 40);
    let delivered: HashSet<Vec<u8>> = got.iter().map(|r| r.body.clone()).collect();
    assert_eq!(delivered, bodies.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(up.state.lock().unwrap().overlaps, 0);
    drop((a, b));
}
