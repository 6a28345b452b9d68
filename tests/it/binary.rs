//! The real `whatstat serve` binary: starts on a free port over a temporary SQLite
//! file, answers /health and the API, keeps acknowledged events across a kill -9, and
//! logs as text or JSON.

use crate::common;
use crate::helpers;

use common::process::{Served, call, serve_binary};
use helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const MASTER: &str = "binary-test-master-key";

fn serve(database_url: &str) -> Served {
    serve_binary("whatstat", database_url, MASTER, &[], &[], None)
}

/// Creates an organization in UTC with the master key; returns its API key.
async fn create_org(client: &reqwest::Client, server: &Served, name: &str) -> String {
    let (status, body) = call(
        client
            .post(format!("{}/api/admin/orgs", server.base))
            .bearer_auth(MASTER)
            .json(&json!({"name": name, "timezone": "UTC"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["data"]["api_key"]
        .as_str()
        .expect("api_key")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_health_and_keeps_data_across_a_kill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!(
        "sqlite://{}",
        dir.path().join("nested").join("whatstat.db").display()
    );
    let client = reqwest::Client::new();

    let server = serve(&database_url);
    let (status, body) = call(client.get(format!("{}/health", server.base))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"status": "success", "data": {"status": "ok"}}));

    // Administration with the master key given on the command line.
    let key = create_org(&client, &server, "Binary").await;
    let (status, body) = call(
        client
            .post(format!("{}/api/admin/orgs", server.base))
            .bearer_auth("wrong")
            .json(&json!({"name": "X"})),
    )
    .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &[]);

    // The binary runs on the real clock: events from a minute ago.
    let t = jiff::Timestamp::now().as_second() - 60;
    let events = json!([
        outbound("acc", "m1", "text", t),
        helpers::status("acc", "m1", "read", t + 1),
        inbound("acc", "m2", "text", t)
    ]);
    let (status, body) = call(
        client
            .post(format!("{}/api/events", server.base))
            .bearer_auth(&key)
            .json(&events),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(counts(&body), (3, 0));
    let messages = format!("{}/api/analytics/messages?account_id=acc", server.base);
    let (status, before) = call(client.get(&messages).bearer_auth(&key)).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(summary(&before["data"]), (1, 1, 1, 1, 0, 100.0, 100.0));
    let (status, body) = call(client.get(&messages)).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &[]);

    // kill -9, then start again over the same file: the acknowledged events are there.
    drop(server);
    let server = serve(&database_url);
    let messages = format!("{}/api/analytics/messages?account_id=acc", server.base);
    let (status, after) = call(client.get(&messages).bearer_auth(&key)).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after, before);
    // And dedup state survived too.
    let (status, body) = call(
        client
            .post(format!("{}/api/events", server.base))
            .bearer_auth(&key)
            .json(&events),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(counts(&body), (0, 3));
}

/// The lines a served binary logged so far.
fn logged(server: &Served) -> Vec<String> {
    server.log.lock().expect("log").clone()
}

/// `--log-format json`: every line is one JSON object, the listening line with its address
/// as a field of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}", dir.path().join("whatstat.db").display());
    let server = serve_binary(
        "whatstat-json",
        &database_url,
        MASTER,
        &["--log-format", "json"],
        &[],
        None,
    );
    let lines = logged(&server);
    assert!(lines.len() >= 2, "{lines:?}");
    let mut listening = None;
    for line in &lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(v["message"].is_string(), "{line}");
        if v["message"] == "whatstat listening" {
            listening = Some(v);
        }
    }
    let listening = listening.expect("the listening line");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(
        listening["addr"].as_str(),
        server.base.strip_prefix("http://")
    );
    assert_eq!(listening["database"], database_url.as_str());
}

/// The config file's `log_format` and `metrics_open`, and the variables that win over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_and_open_metrics_come_from_the_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}", dir.path().join("whatstat.db").display());
    let config = dir.path().join("whatstat.toml");
    std::fs::write(&config, "log_format = \"json\"\nmetrics_open = true\n").expect("config");
    let config = config.display().to_string();
    let client = reqwest::Client::new();

    let server = serve_binary(
        "whatstat-config",
        &database_url,
        MASTER,
        &["--config", &config],
        &[],
        None,
    );
    let lines = logged(&server);
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{lines:?}"
    );
    let resp = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.expect("text");
    assert!(
        text.contains("whatstat_events_total{outcome=\"accepted\"} 0"),
        "{text}"
    );
    drop(server);

    let server = serve_binary(
        "whatstat-config-env",
        &database_url,
        MASTER,
        &["--config", &config],
        &[
            ("WHATSTAT_LOG_FORMAT", "text"),
            ("WHATSTAT_METRICS_OPEN", "false"),
        ],
        None,
    );
    let lines = logged(&server);
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("whatstat listening") && l.contains(" INFO ")),
        "{lines:?}"
    );
    let (status, body) = call(client.get(format!("{}/metrics", server.base))).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, &["master key"]);
}

/// A log format that is not one is refused with the ones there are, from a flag or a file.
#[test]
fn an_unknown_log_format_names_the_allowed_ones() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_whatstat"))
            .args(args)
            .env_remove("WHATSTAT_LOG_FORMAT")
            .output()
            .expect("run whatstat");
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["compact", "--log-format", "xml"]);
    assert!(
        err.contains("xml") && err.contains("text") && err.contains("json"),
        "{err}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "log_format = \"xml\"\n").expect("config");
    let database_url = format!("sqlite://{}", dir.path().join("whatstat.db").display());
    let err = run(&[
        "compact",
        "--config",
        &config.display().to_string(),
        "--database-url",
        &database_url,
    ]);
    assert!(
        err.contains("xml") && err.contains("`text`") && err.contains("`json`"),
        "{err}"
    );
}

/// A page cache out of bounds is refused with the bounds, from a flag or a file.
#[test]
fn a_sqlite_cache_out_of_bounds_names_the_allowed_sizes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}", dir.path().join("whatstat.db").display());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_whatstat"))
            .args(["compact", "--database-url", &database_url])
            .args(args)
            .env_remove("WHATSTAT_SQLITE_CACHE_MIB")
            .output()
            .expect("run whatstat");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["--sqlite-cache-mib", "4"]);
    assert!(!ok, "a 4 MiB cache was taken");
    assert!(
        err.contains("--sqlite-cache-mib is 4; allowed: 8 to 65536 (MiB)"),
        "{err}"
    );
    let config = dir.path().join("cache.toml");
    std::fs::write(&config, "sqlite_cache_mib = 100000\n").expect("config");
    let (ok, err) = run(&["--config", &config.display().to_string()]);
    assert!(!ok, "a 100000 MiB cache was taken");
    assert!(err.contains("--sqlite-cache-mib is 100000"), "{err}");
    // In bounds, the same store opens and compacts.
    let (ok, err) = run(&["--sqlite-cache-mib", "16"]);
    assert!(ok, "{err}");
}

/// One loader's batch: `n` outbound messages of its own ids, each with a `delivered`.
fn loader_batch(loader: usize, batch: usize, n: usize, t: i64) -> Value {
    let mut events = Vec::with_capacity(2 * n);
    for i in 0..n {
        let id = format!("kill-{loader}-{batch}-{i}");
        events.push(outbound("acc", &id, "text", t));
        events.push(helpers::status("acc", &id, "delivered", t + 1));
    }
    Value::Array(events)
}

/// kill -9 in the middle of steady ingestion by four clients, with states logged but not
/// merged into their table yet: after the restart every acknowledged batch is counted
/// and known (posting it again finds only duplicates), and the figures equal every
/// batch's messages once the unanswered ones are posted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_under_load_loses_nothing_acknowledged() {
    const PER_BATCH: usize = 250;
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}", dir.path().join("whatstat.db").display());
    let client = reqwest::Client::new();
    let server = serve(&database_url);
    let key = create_org(&client, &server, "Killed").await;
    let t = jiff::Timestamp::now().as_second() - 60;

    // Four loaders post until the server dies; each keeps what it posted and what was
    // acknowledged.
    let mut loaders = Vec::new();
    for loader in 0..4 {
        let (client, base, key) = (client.clone(), server.base.clone(), key.clone());
        loaders.push(tokio::spawn(async move {
            let (mut posted, mut acked) = (Vec::new(), Vec::new());
            for batch in 0.. {
                let events = loader_batch(loader, batch, PER_BATCH, t);
                posted.push(events.clone());
                let sent = client
                    .post(format!("{base}/api/events"))
                    .bearer_auth(&key)
                    .json(&events)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => acked.push(events),
                    _ => break,
                }
            }
            (posted, acked)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    drop(server);
    let (mut posted, mut acked) = (Vec::new(), Vec::new());
    for l in loaders {
        let (p, a) = l.await.expect("loader");
        posted.extend(p);
        acked.extend(a);
    }
    assert!(
        acked.len() >= 8,
        "only {} batches were acknowledged before the kill",
        acked.len()
    );

    let server = serve(&database_url);
    let messages = format!("{}/api/analytics/messages?account_id=acc", server.base);
    let (status, body) = call(client.get(&messages).bearer_auth(&key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (sent, _, delivered, ..) = summary(&body["data"]);
    let acknowledged = (acked.len() * PER_BATCH) as i64;
    eprintln!(
        "killed after {} batches acknowledged of {} posted; {sent} messages counted",
        acked.len(),
        posted.len()
    );
    // Batches in flight at the kill may have committed unanswered: never fewer, and at
    // most what was posted.
    assert!(
        sent >= acknowledged && sent <= (posted.len() * PER_BATCH) as i64 && delivered == sent,
        "sent {sent}, delivered {delivered}, acknowledged {acknowledged}, posted {}",
        posted.len() * PER_BATCH
    );
    let post = |events: &Value| {
        call(
            client
                .post(format!("{}/api/events", server.base))
                .bearer_auth(&key)
                .json(events),
        )
    };
    for events in &acked {
        let (status, body) = post(events).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(counts(&body), (0, (2 * PER_BATCH) as u64));
    }
    for events in &posted {
        let (status, body) = post(events).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = call(client.get(&messages).bearer_auth(&key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let all = (posted.len() * PER_BATCH) as i64;
    assert_eq!(summary(&body["data"]), (all, 0, all, 0, 0, 100.0, 0.0));
}
