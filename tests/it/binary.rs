//! The real `whatstat serve` binary: starts on a free port over a temporary SQLite
//! file, answers /health and the API, keeps acknowledged events across a kill -9.

use crate::common;
use crate::helpers;

use common::process::{Served, call, serve_binary};
use helpers::*;
use reqwest::StatusCode;
use serde_json::json;

const MASTER: &str = "binary-test-master-key";

fn serve(database_url: &str) -> Served {
    serve_binary("whatstat", database_url, MASTER, &[], &[], None)
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
