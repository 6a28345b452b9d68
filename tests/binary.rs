//! The real `whatstat serve` binary: starts on a free port over a temporary SQLite
//! file, answers /health and the API, keeps acknowledged events across a kill -9.

mod common;
mod helpers;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const MASTER: &str = "binary-test-master-key";

/// A running `whatstat serve`, killed on drop.
struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Starts the binary on port 0 and reads the bound address from its log line.
fn serve(database_url: &str) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_whatstat"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--master-key",
            MASTER,
        ])
        .env("NO_COLOR", "1")
        .env("WHATSTAT_LOG", "info")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the whatstat binary");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            eprintln!("whatstat: {line}");
            if !sent && line.contains("whatstat listening") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(str::to_string);
                let _ = tx.send(addr);
                sent = true;
            }
            // Keep draining so the child never blocks on a full pipe.
        }
    });
    let mut served = Served {
        child,
        base: String::new(),
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the binary logs `whatstat listening` within 60 s")
        .expect("the listening line names addr=");
    served.base = format!("http://{addr}");
    served
}

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
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
    let (status, body) = call(
        client
            .post(format!("{}/api/admin/orgs", server.base))
            .bearer_auth(MASTER)
            .json(&json!({"name": "Binary", "timezone": "UTC"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = body["data"]["api_key"]
        .as_str()
        .expect("api_key")
        .to_string();
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
