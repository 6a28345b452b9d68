//! The dashboard's routes: the page at `/` and `/share/{token}`, its embedded assets with
//! their types, policy, ETag and compression, and `GET /api/org`.

use crate::common;

use common::TestServer;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use serde_json::json;

#[tokio::test]
async fn org_names_the_signed_in_organization() {
    let server = TestServer::start().await;
    let key = server.create_org("Acme", "Asia/Kolkata").await;
    server.create_org("Other", "UTC").await;
    let (status, body) = server.get(&key, "/api/org").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["name"], "Acme");
    assert_eq!(body["data"]["timezone"], "Asia/Kolkata");
    assert!(
        body["data"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("org_")),
        "{body}"
    );
    let (status, body) = server.get("not-a-key", "/api/org").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"status": "error", "code": "invalid_api_key", "message": "invalid API key"})
    );
}

#[tokio::test]
async fn the_page_is_served_at_the_root_and_at_share_links() {
    let server = TestServer::start().await;
    let admin = server.create_org("Acme", "UTC").await;
    let (status, link) = server
        .send(
            server
                .client
                .post(format!("{}/api/share-links", server.base))
                .bearer_auth(&admin)
                .json(&json!({"name": "manager"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let url = link["data"]["url"].as_str().expect("url").to_string();
    // An unknown link is a page saying so, never the dashboard.
    let missing = server
        .client
        .get(format!("{}/share/wss_not-a-link", server.base))
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(
        missing
            .text()
            .await
            .expect("body")
            .contains("does not exist")
    );
    for path in ["/", url.as_str()] {
        let resp = server
            .client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        let html = resp.text().await.expect("body");
        assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing external"
        );
    }
}

#[tokio::test]
async fn assets_have_their_types_an_etag_and_compression() {
    let server = TestServer::start().await;
    let url = format!("{}/assets/vendor/uPlot.iife.min.js", server.base);
    let resp = server.client.get(&url).send().await.expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let etag = resp.headers()[ETAG].clone();
    let plain = resp.bytes().await.expect("body").len();
    assert!(plain > 40_000, "uPlot is {plain} bytes");

    let again = server
        .client
        .get(&url)
        .header(IF_NONE_MATCH, etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    let gz = server
        .client
        .get(&url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert_eq!(gz.headers()[CONTENT_ENCODING], "gzip");
    let compressed = gz.bytes().await.expect("body").len();
    assert!(compressed * 2 < plain, "{compressed} of {plain} bytes");

    let css = server
        .client
        .get(format!("{}/assets/app.css", server.base))
        .send()
        .await
        .expect("request");
    assert_eq!(css.headers()[CONTENT_TYPE], "text/css; charset=utf-8");

    let (status, body) = server.get("", "/assets/nothing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "no dashboard asset `nothing.js`");
}
