//! Two real `whatstat serve` processes on one PostgreSQL database (a fresh schema):
//! the same events (messages, statuses in shuffled order, duplicates, conversations,
//! flows) split at random between them and sent concurrently, then the exact figures
//! read back through both instances, checked against a model of the events and against
//! a third process on SQLite that got every event through one door.
//!
//! Always on PostgreSQL, whatever `WHATSTAT_TEST_BACKEND` says: an unreachable server
//! fails this test.

use crate::common;
use crate::helpers;

use std::collections::{BTreeMap, HashSet};

use common::backend::{Backend, TestDatabase};
use common::process::{Served, call, serve_binary};
use helpers::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MASTER: &str = "instances-test-master-key";

/// Starts the binary on a free port, compacting every second so that instances contend
/// for the compaction lock.
fn serve(name: &'static str, database_url: &str, workdir: &std::path::Path) -> Served {
    serve_binary(
        name,
        database_url,
        MASTER,
        &["--compact-interval-secs", "1"],
        &[("WHATSTAT_SECRET_KEY", "instances-test-secret")],
        Some(workdir),
    )
}

async fn create_org(client: &reqwest::Client, base: &str) -> String {
    let (status, body) = call(
        client
            .post(format!("{base}/api/admin/orgs"))
            .bearer_auth(MASTER)
            .json(&json!({"name": "Shared", "timezone": "Asia/Kolkata"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"]["api_key"]
        .as_str()
        .expect("api_key")
        .to_string()
}

async fn get(client: &reqwest::Client, base: &str, key: &str, path: &str) -> Value {
    let (status, body) = call(client.get(format!("{base}{path}")).bearer_auth(key)).await;
    assert_eq!(status, StatusCode::OK, "GET {path} on {base}: {body}");
    body["data"].clone()
}

/// Posts batches one after another; returns the summed (accepted, duplicates).
async fn post_all(base: String, key: String, batches: Vec<Vec<Value>>) -> (u64, u64) {
    let client = reqwest::Client::new();
    let (mut accepted, mut duplicates) = (0, 0);
    for batch in batches {
        let (status, body) = call(
            client
                .post(format!("{base}/api/events"))
                .bearer_auth(&key)
                .json(&Value::Array(batch)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "POST /api/events on {base}: {body}");
        let (a, d) = counts(&body);
        accepted += a;
        duplicates += d;
    }
    (accepted, duplicates)
}

/// What the events add up to, computed here from their definition.
#[derive(Debug, Default)]
struct Model {
    sent: i64,
    received: i64,
    delivered: i64,
    read: i64,
    failed: i64,
    by_type: BTreeMap<String, i64>,
    conversations: i64,
    auto_resolved: i64,
    transferred: i64,
    abandoned: i64,
    conversation_messages: i64,
    flows: BTreeMap<String, (i64, i64)>,
}

/// The events of one day: unique ones, and the model of what they add up to.
fn make_events(rng: &mut StdRng, day_start: i64) -> (Vec<Value>, Model) {
    let acc = |rng: &mut StdRng| if rng.random_bool(0.7) { "acc1" } else { "acc2" };
    let mut events = Vec::new();
    let mut m = Model::default();
    let types = ["text", "template", "image", "interactive"];
    let conversations = 40;
    for c in 0..conversations {
        let a = if c % 3 == 0 { "acc2" } else { "acc1" };
        let t0 = day_start + 3_600 + c * 300;
        events.push(conversation(a, &format!("c{c}"), "started", t0));
        let outcome = ["auto_resolved", "transferred", "abandoned"][rng.random_range(0..3)];
        match outcome {
            "auto_resolved" => m.auto_resolved += 1,
            "transferred" => m.transferred += 1,
            _ => m.abandoned += 1,
        }
        events.push(conversation(
            a,
            &format!("c{c}"),
            outcome,
            t0 + rng.random_range(10..600),
        ));
        m.conversations += 1;
        for k in 0..rng.random_range(0..4) {
            let dir = if k % 2 == 0 { "inbound" } else { "outbound" };
            events.push(conv_message(
                a,
                &format!("c{c}-m{k}"),
                dir,
                &format!("c{c}"),
                t0 + 1 + k,
            ));
            m.conversation_messages += 1;
            *m.by_type.entry("text".into()).or_default() += 1;
            if dir == "inbound" {
                m.received += 1;
            } else {
                m.sent += 1;
            }
        }
    }
    for i in 0..300i64 {
        let a = acc(rng);
        let t = day_start + 7_200 + i * 97;
        let ty = types[rng.random_range(0..types.len())];
        *m.by_type.entry(ty.into()).or_default() += 1;
        if rng.random_bool(0.25) {
            events.push(inbound(a, &format!("in{i}"), ty, t));
            m.received += 1;
            continue;
        }
        let id = format!("out{i}");
        events.push(outbound(a, &id, ty, t));
        m.sent += 1;
        let (mut delivered, mut read, mut failed) = (false, false, false);
        for (s, p) in [
            ("sent", 0.8),
            ("delivered", 0.6),
            ("read", 0.35),
            ("failed", 0.15),
        ] {
            if rng.random_bool(p) {
                events.push(status(a, &id, s, t + rng.random_range(1..7_200)));
                match s {
                    "delivered" => delivered = true,
                    "read" => read = true,
                    "failed" => failed = true,
                    _ => {}
                }
            }
        }
        if read {
            m.read += 1;
        }
        if delivered || read {
            m.delivered += 1;
        } else if failed {
            m.failed += 1;
        }
    }
    for r in 0..60i64 {
        let name = ["welcome", "order_status", "support"][rng.random_range(0..3)];
        let t = day_start + 10_000 + r * 400;
        let a = acc(rng);
        events.push(flow(a, &format!("run{r}"), name, "started", t));
        let entry = m.flows.entry(name.into()).or_default();
        entry.0 += 1;
        if rng.random_bool(0.6) {
            events.push(flow(a, &format!("run{r}"), name, "completed", t + 120));
            entry.1 += 1;
        }
    }
    (events, m)
}

fn rate(num: i64, den: i64) -> f64 {
    if den == 0 {
        0.0
    } else {
        (num as f64 * 1000.0 / den as f64).round() / 10.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_count_exactly() {
    let seed: u64 = std::env::var("WHATSTAT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (set WHATSTAT_TEST_SEED to repeat)");
    let mut rng = StdRng::seed_from_u64(seed);

    let pg = TestDatabase::fresh_on(Backend::Postgres).await;
    let oracle_db = TestDatabase::fresh_on(Backend::Sqlite).await;
    // Both instances start together: the migration runs once, under its advisory lock.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| serve("instance-a", &pg.url, pg.dir.path()));
        let b = s.spawn(|| serve("instance-b", &pg.url, pg.dir.path()));
        (
            a.join().expect("start instance a"),
            b.join().expect("start instance b"),
        )
    });
    let oracle = serve("oracle-sqlite", &oracle_db.url, oracle_db.dir.path());
    let client = reqwest::Client::new();
    let key = create_org(&client, &a.base).await;
    let oracle_key = create_org(&client, &oracle.base).await;

    // Three days ago, at midnight in Kolkata (UTC+05:30): well inside the state window.
    let now = jiff::Timestamp::now();
    let day = now
        .to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").expect("tz"))
        .date()
        .checked_sub(jiff::Span::new().days(3))
        .expect("date");
    let day_start = day
        .to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").expect("tz"))
        .expect("zoned")
        .timestamp()
        .as_second();
    let (unique, model) = make_events(&mut rng, day_start);

    // Every event once, a fifth of them twice more; shuffled; split at random.
    let mut all = Vec::new();
    for e in &unique {
        all.push(e.clone());
        if rng.random_bool(0.2) {
            all.push(e.clone());
            all.push(e.clone());
        }
    }
    all.shuffle(&mut rng);
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    for e in &all {
        if rng.random_bool(0.5) {
            to_a.push(e.clone());
        } else {
            to_b.push(e.clone());
        }
    }
    // Two concurrent senders per instance, batches of random size.
    let mut senders = Vec::new();
    for (base, events) in [(&a.base, to_a), (&b.base, to_b)] {
        let mut lanes = vec![Vec::new(), Vec::new()];
        let mut rest = events.as_slice();
        let mut lane = 0;
        while !rest.is_empty() {
            let n = rng.random_range(1..=40).min(rest.len());
            lanes[lane].push(rest[..n].to_vec());
            rest = &rest[n..];
            lane = 1 - lane;
        }
        for batches in lanes {
            senders.push(tokio::spawn(post_all(base.clone(), key.clone(), batches)));
        }
    }
    let mut shared = (0, 0);
    for s in senders {
        let (acc, dup) = s.await.expect("sender");
        shared.0 += acc;
        shared.1 += dup;
    }
    // The oracle: every event (with the same duplicates) through one SQLite instance.
    let oracle_counts = post_all(
        oracle.base.clone(),
        oracle_key.clone(),
        all.chunks(100).map(<[Value]>::to_vec).collect(),
    )
    .await;
    assert_eq!(
        shared, oracle_counts,
        "accepted/duplicates summed over both instances"
    );
    assert_eq!(shared.0 + shared.1, all.len() as u64);
    eprintln!(
        "{} events ({} unique) sent; accepted {}, duplicates {}",
        all.len(),
        unique.len(),
        shared.0,
        shared.1
    );

    let end = now
        .to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").expect("tz"))
        .date();
    let range = format!("start_date={}&end_date={end}", day);
    let paths = [
        format!("/api/analytics/messages?{range}&granularity=hour"),
        format!("/api/analytics/messages?{range}&granularity=day&account_id=acc2"),
        format!("/api/analytics/chatbot?{range}"),
        format!("/api/analytics/chatbot?{range}&account_id=acc1"),
    ];
    for path in &paths {
        let want = get(&client, &oracle.base, &oracle_key, path).await;
        for inst in [&a, &b] {
            let got = get(&client, &inst.base, &key, path).await;
            assert_eq!(
                got, want,
                "{path} through {} vs the SQLite oracle",
                inst.base
            );
        }
    }

    // And the exact figures, from the events' definition.
    for inst in [&a, &b] {
        let msgs = get(
            &client,
            &inst.base,
            &key,
            &format!("/api/analytics/messages?{range}"),
        )
        .await;
        let s = &msgs["summary"];
        assert_eq!(s["total_sent"], json!(model.sent), "{s}");
        assert_eq!(s["total_received"], json!(model.received), "{s}");
        assert_eq!(s["total_delivered"], json!(model.delivered), "{s}");
        assert_eq!(s["total_read"], json!(model.read), "{s}");
        assert_eq!(s["total_failed"], json!(model.failed), "{s}");
        assert_eq!(
            s["delivery_rate"].as_f64(),
            Some(rate(model.delivered, model.sent))
        );
        let by_type: BTreeMap<String, i64> = msgs["by_type"]
            .as_object()
            .expect("by_type")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or_default()))
            .collect();
        assert_eq!(by_type, model.by_type, "by_type: {}", msgs["by_type"]);

        let bot = get(
            &client,
            &inst.base,
            &key,
            &format!("/api/analytics/chatbot?{range}"),
        )
        .await;
        let s = &bot["summary"];
        assert_eq!(s["total_conversations"], json!(model.conversations), "{s}");
        assert_eq!(s["auto_resolved"], json!(model.auto_resolved), "{s}");
        assert_eq!(s["transferred_to_agent"], json!(model.transferred), "{s}");
        assert_eq!(s["abandoned"], json!(model.abandoned), "{s}");
        let avg =
            (model.conversation_messages as f64 * 10.0 / model.conversations as f64).round() / 10.0;
        assert_eq!(
            s["avg_messages_per_conversation"].as_f64(),
            Some(avg),
            "{s}"
        );
        let flows: HashSet<(String, i64)> = bot["by_flow"]
            .as_array()
            .expect("by_flow")
            .iter()
            .map(|f| {
                (
                    f["flow_name"].as_str().unwrap_or_default().to_string(),
                    f["conversations"].as_i64().unwrap_or_default(),
                )
            })
            .collect();
        let want: HashSet<(String, i64)> = model
            .flows
            .iter()
            .map(|(name, (started, _))| (name.clone(), *started))
            .collect();
        assert_eq!(flows, want, "by_flow: {}", bot["by_flow"]);
        for f in bot["by_flow"].as_array().expect("by_flow") {
            let name = f["flow_name"].as_str().unwrap_or_default();
            let (started, completed) = model.flows[name];
            assert_eq!(
                f["completion_rate"].as_f64(),
                Some(rate(completed, started)),
                "{f}"
            );
        }
    }
    drop((a, b, oracle));
}

/// A key revoked on one instance is refused by the other within a second, though the
/// other had just checked (and cached) it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_instance_is_refused_by_the_other_within_a_second() {
    let pg = TestDatabase::fresh_on(Backend::Postgres).await;
    let a = serve("keys-a", &pg.url, pg.dir.path());
    let b = serve("keys-b", &pg.url, pg.dir.path());
    let client = reqwest::Client::new();
    let admin = create_org(&client, &a.base).await;
    let (status, made) = call(
        client
            .post(format!("{}/api/keys", a.base))
            .bearer_auth(&admin)
            .json(&json!({"name": "reader", "scope": "read"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let id = made["data"]["id"].as_str().expect("id").to_string();
    let key = made["data"]["key"].as_str().expect("key").to_string();
    let summary = get(&client, &b.base, &key, "/api/analytics/messages").await;
    assert_eq!(summary["summary"]["total_sent"], 0);

    let (status, body) = call(
        client
            .delete(format!("{}/api/keys/{id}", a.base))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revoked_at = std::time::Instant::now();
    loop {
        let (status, _) = call(
            client
                .get(format!("{}/api/analytics/messages", b.base))
                .bearer_auth(&key),
        )
        .await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < std::time::Duration::from_secs(1),
            "instance b still accepts a key revoked on instance a a second ago"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // And the instance that revoked it refuses it at once.
    let (status, _) = call(
        client
            .get(format!("{}/api/analytics/messages", a.base))
            .bearer_auth(&key),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
