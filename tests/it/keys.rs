//! Scoped keys and share links over HTTP: what each scope may reach, account limits on
//! reads and writes, expiry and revocation, and a sweep of every route with another
//! organization's ids.

use crate::common;
use crate::helpers;

use common::TestServer;
use helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Thursday 2026-03-12 12:00 UTC.
const NOW: &str = "2026-03-12T12:00:00Z";

async fn call(
    s: &TestServer,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = s
        .client
        .request(method, format!("{}{path}", s.base))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    s.send(req).await
}

/// Creates a key through the API; returns `(id, secret)`.
async fn make_key(s: &TestServer, admin: &str, body: Value) -> (String, String) {
    let (status, b) = call(s, admin, Method::POST, "/api/keys", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    (
        b["data"]["id"].as_str().expect("id").to_string(),
        b["data"]["key"].as_str().expect("key").to_string(),
    )
}

/// Creates a share link; returns `(id, token, url)`.
async fn make_link(s: &TestServer, admin: &str, body: Value) -> (String, String, String) {
    let (status, b) = call(s, admin, Method::POST, "/api/share-links", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let d = &b["data"];
    (
        d["id"].as_str().expect("id").to_string(),
        d["token"].as_str().expect("token").to_string(),
        d["url"].as_str().expect("url").to_string(),
    )
}

/// Three accounts with known traffic: a sends 3 (2 read), b sends 2, c sends 5.
async fn seeded() -> (TestServer, String) {
    let s = TestServer::start().await;
    s.set_now(at(NOW));
    let admin = s.create_org("Acme", "UTC").await;
    let t = at("2026-03-12T09:00:00Z");
    let mut events = Vec::new();
    for (acc, n) in [("a", 3), ("b", 2), ("c", 5)] {
        for i in 0..n {
            events.push(outbound(acc, &format!("{acc}-{i}"), "text", t));
        }
    }
    events.push(status("a", "a-0", "read", t + 5));
    events.push(status("a", "a-1", "read", t + 5));
    events.push(inbound("b", "b-in", "text", t));
    ingest(&s, &admin, &json!(events)).await;
    (s, admin)
}

/// The listed key or link of that name.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|k| k["name"] == name))
        .unwrap_or_else(|| panic!("no `{name}` in {list}"))
}

fn sent(d: &Value) -> i64 {
    d["summary"]["total_sent"].as_i64().expect("total_sent")
}

#[tokio::test]
async fn each_scope_reaches_only_its_routes() {
    let (s, admin) = seeded().await;
    let (_, ingest_key) = make_key(&s, &admin, json!({"name": "vendor", "scope": "ingest"})).await;
    let (_, read_key) = make_key(&s, &admin, json!({"name": "manager", "scope": "read"})).await;
    let (_, admin2) = make_key(
        &s,
        &admin,
        json!({"name": "second admin", "scope": "admin"}),
    )
    .await;
    let event = json!([outbound("a", "new-1", "text", at("2026-03-12T10:00:00Z"))]);

    // ingest: events only.
    let (st, b) = call(
        &s,
        &ingest_key,
        Method::POST,
        "/api/events",
        Some(event.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    for (method, path) in [
        (Method::GET, "/api/analytics/messages"),
        (Method::GET, "/api/analytics/chatbot"),
        (Method::GET, "/api/analytics/dashboard"),
        (Method::GET, "/api/accounts"),
        (Method::GET, "/api/accounts/a"),
        (Method::GET, "/api/keys"),
        (Method::GET, "/api/share-links"),
    ] {
        let (st, b) = call(&s, &ingest_key, method, path, None).await;
        assert_error(
            st,
            &b,
            StatusCode::FORBIDDEN,
            &["insufficient scope", "a key of scope `ingest`"],
        );
    }

    // read: the figures and the accounts, nothing that writes or manages.
    assert_eq!(
        sent(&data(&s, &read_key, "/api/analytics/messages").await),
        11
    );
    let (st, b) = call(&s, &read_key, Method::GET, "/api/accounts", None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["data"]["accounts"].as_array().map(Vec::len), Some(3));
    let writes = [
        (Method::POST, "/api/events", Some(event.clone()), "`ingest`"),
        (
            Method::POST,
            "/api/accounts",
            Some(json!({"account_id": "d", "name": "D"})),
            "`admin`",
        ),
        (
            Method::PATCH,
            "/api/accounts/a",
            Some(json!({"name": "A"})),
            "`admin`",
        ),
        (Method::DELETE, "/api/accounts/a", None, "`admin`"),
        (Method::GET, "/api/keys", None, "`admin`"),
        (
            Method::POST,
            "/api/keys",
            Some(json!({"name": "x", "scope": "admin"})),
            "`admin`",
        ),
        (Method::GET, "/api/share-links", None, "`admin`"),
        (
            Method::POST,
            "/api/share-links",
            Some(json!({"name": "x"})),
            "`admin`",
        ),
    ];
    for (method, path, body, needed) in writes {
        let (st, b) = call(&s, &read_key, method.clone(), path, body).await;
        assert_error(
            st,
            &b,
            StatusCode::FORBIDDEN,
            &["insufficient scope", needed],
        );
    }
    // Nothing of those refused writes happened.
    assert_eq!(sent(&data(&s, &admin, "/api/analytics/messages").await), 11);
    let (_, b) = call(&s, &admin, Method::GET, "/api/accounts/a", None).await;
    assert_eq!(b["data"]["name"], Value::Null, "{b}");

    // admin, old and new: everything.
    for key in [&admin, &admin2] {
        let (st, b) = call(&s, key, Method::GET, "/api/keys", None).await;
        assert_eq!(st, StatusCode::OK, "{b}");
        let mut names: Vec<&str> = b["data"]["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["name"].as_str().expect("name"))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["Organization key", "manager", "second admin", "vendor"]
        );
        // Listed keys never carry a secret.
        assert!(!b.to_string().contains("ws_"), "{b}");
        let first = named(&b["data"]["keys"], "Organization key");
        assert_eq!(first["scope"], "admin");
    }
    let (st, b) = call(
        &s,
        &admin2,
        Method::POST,
        "/api/events",
        Some(json!([outbound(
            "b",
            "new-2",
            "text",
            at("2026-03-12T10:00:00Z")
        )])),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        sent(&data(&s, &admin2, "/api/analytics/messages").await),
        12
    );
}

#[tokio::test]
async fn a_limited_read_key_sees_the_exact_sum_of_its_accounts_only() {
    let (s, admin) = seeded().await;
    let (_, ab) = make_key(
        &s,
        &admin,
        json!({"name": "a and b", "scope": "read", "accounts": ["a", "b"]}),
    )
    .await;
    for path in [
        "/api/analytics/messages",
        "/api/analytics/chatbot",
        "/api/analytics/dashboard?period=today",
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let a = data(&s, &admin, &format!("{path}{sep}account_id=a")).await;
        let b = data(&s, &admin, &format!("{path}{sep}account_id=b")).await;
        let limited = data(&s, &ab, path).await;
        let all = data(&s, &admin, path).await;
        if path.contains("messages") {
            assert_eq!(
                (sent(&a), sent(&b), sent(&limited), sent(&all)),
                (3, 2, 5, 10)
            );
            assert_eq!(limited["summary"]["total_received"], 1);
            assert_eq!(limited["summary"]["total_read"], 2);
            // 2 delivered (read) of 5 sent: the rates are of the sum, not an average of rates.
            assert_eq!(limited["summary"]["delivery_rate"], 40.0);
        }
        if path.contains("dashboard") {
            assert_eq!(limited["messages"]["sent"], 5);
            assert_eq!(limited["messages"]["received"], 1);
            assert_eq!(all["messages"]["sent"], 10);
        }
        // Its own accounts one by one answer as for the admin.
        assert_eq!(data(&s, &ab, &format!("{path}{sep}account_id=a")).await, a);
        let (st, body) = s.get(&ab, &format!("{path}{sep}account_id=c")).await;
        assert_error(
            st,
            &body,
            StatusCode::NOT_FOUND,
            &["account `c` is not known"],
        );
    }
    let (_, b) = call(&s, &ab, Method::GET, "/api/accounts", None).await;
    let ids: Vec<&str> = b["data"]["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| a["account_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let (st, body) = call(&s, &ab, Method::GET, "/api/accounts/c", None).await;
    assert_error(st, &body, StatusCode::NOT_FOUND, &["account `c` not found"]);
}

#[tokio::test]
async fn a_limited_ingest_key_refuses_a_request_with_other_accounts_whole() {
    let (s, admin) = seeded().await;
    let (_, only_a) = make_key(
        &s,
        &admin,
        json!({"name": "a only", "scope": "ingest", "accounts": ["a"]}),
    )
    .await;
    let t = at("2026-03-12T10:00:00Z");
    let mixed = json!([
        outbound("a", "x-1", "text", t),
        outbound("c", "x-2", "text", t),
        outbound("zz", "x-3", "text", t)
    ]);
    let (st, b) = s.post_events(&only_a, &mixed).await;
    assert_error(
        st,
        &b,
        StatusCode::FORBIDDEN,
        &["c, zz", "nothing was applied"],
    );
    assert_eq!(sent(&data(&s, &admin, "/api/analytics/messages").await), 10);
    let (st, b) = s
        .post_events(&only_a, &json!([outbound("a", "x-1", "text", t)]))
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        sent(&data(&s, &admin, "/api/analytics/messages?account_id=a").await),
        4
    );
}

#[tokio::test]
async fn bad_key_requests_name_what_is_wrong_and_create_nothing() {
    let (s, admin) = seeded().await;
    let cases = [
        (
            json!({"name": "x", "scope": "write"}),
            vec!["field `scope` is `write`", "ingest, read, admin"],
        ),
        (json!({"name": "x"}), vec!["field `scope` is required"]),
        (json!({"name": "", "scope": "read"}), vec!["field `name`"]),
        (
            json!({"name": "x", "scope": "read", "accounts": ["a", "nope"]}),
            vec!["`nope`", "not an account"],
        ),
        (
            json!({"name": "x", "scope": "read", "accounts": []}),
            vec!["field `accounts`"],
        ),
        (
            json!({"name": "x", "scope": "admin", "accounts": ["a"]}),
            vec!["admin key", "no `accounts`"],
        ),
        (
            json!({"name": "x", "scope": "read", "expires_at": "2026-03-12T11:00:00Z"}),
            vec!["field `expires_at`", "not in the future"],
        ),
        (
            json!({"name": "x", "scope": "read", "expires_at": "tomorrow"}),
            vec!["field `expires_at` is `tomorrow`", "RFC 3339"],
        ),
        (
            json!({"name": "x", "scope": "read", "colour": "red"}),
            vec!["unknown field `colour`"],
        ),
    ];
    for (body, needles) in cases {
        let (st, b) = call(&s, &admin, Method::POST, "/api/keys", Some(body.clone())).await;
        assert_error(st, &b, StatusCode::BAD_REQUEST, &needles);
    }
    let (st, b) = call(
        &s,
        &admin,
        Method::POST,
        "/api/share-links",
        Some(json!({"name": "x", "scope": "admin"})),
    )
    .await;
    assert_error(
        st,
        &b,
        StatusCode::BAD_REQUEST,
        &[
            "unknown field `scope`",
            "allowed: name, accounts, expires_at",
        ],
    );
    let (_, b) = call(&s, &admin, Method::GET, "/api/keys", None).await;
    assert_eq!(b["data"]["keys"].as_array().map(Vec::len), Some(1), "{b}");
    let (st, b) = call(&s, &admin, Method::DELETE, "/api/keys/key_nope", None).await;
    assert_error(
        st,
        &b,
        StatusCode::NOT_FOUND,
        &["API key `key_nope` not found"],
    );
}

#[tokio::test]
async fn expired_and_revoked_keys_are_refused_at_once() {
    let (s, admin) = seeded().await;
    let (_, soon) = make_key(
        &s,
        &admin,
        json!({"name": "soon", "scope": "read", "expires_at": "2026-03-12T13:00:00Z"}),
    )
    .await;
    let (id, revoked) = make_key(&s, &admin, json!({"name": "revoked", "scope": "read"})).await;
    assert_eq!(sent(&data(&s, &soon, "/api/analytics/messages").await), 10);
    assert_eq!(
        sent(&data(&s, &revoked, "/api/analytics/messages").await),
        10
    );
    let (_, listed) = call(&s, &admin, Method::GET, "/api/keys", None).await;
    assert_eq!(
        named(&listed["data"]["keys"], "soon")["expires_at"],
        "2026-03-12T13:00:00Z"
    );

    let (st, b) = call(&s, &admin, Method::DELETE, &format!("/api/keys/{id}"), None).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    // Refused on the very next request, though it was just checked and cached.
    let (st, b) = s.get(&revoked, "/api/analytics/messages").await;
    assert_error(st, &b, StatusCode::UNAUTHORIZED, &["invalid API key"]);

    s.set_now(at("2026-03-12T13:00:00Z"));
    let (st, b) = s.get(&soon, "/api/analytics/messages").await;
    assert_error(st, &b, StatusCode::UNAUTHORIZED, &["expired"]);
    // The organization's first key keeps working, and is listed as used.
    assert_eq!(sent(&data(&s, &admin, "/api/analytics/messages").await), 10);
    let (_, listed) = call(&s, &admin, Method::GET, "/api/keys", None).await;
    let ids: Vec<&str> = listed["data"]["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&id.as_str()));
    let mut used = named(&listed["data"]["keys"], "Organization key")["last_used_at"].clone();
    for _ in 0..50 {
        if !used.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (_, l) = call(&s, &admin, Method::GET, "/api/keys", None).await;
        used = named(&l["data"]["keys"], "Organization key")["last_used_at"].clone();
    }
    assert_eq!(used, "2026-03-12T12:00:00Z");
}

#[tokio::test]
async fn a_share_link_reads_its_accounts_and_nothing_else() {
    let (s, admin) = seeded().await;
    let (id, token, url) = make_link(
        &s,
        &admin,
        json!({"name": "for the manager", "accounts": ["a"]}),
    )
    .await;
    assert_eq!(url, format!("/share/{token}"));
    let page = s
        .client
        .get(format!("{}{url}", s.base))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    let missing = s
        .client
        .get(format!("{}/share/wss_nope", s.base))
        .send()
        .await
        .expect("page");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let d = data(&s, &token, "/api/analytics/messages").await;
    assert_eq!(sent(&d), 3);
    let (st, b) = s.get(&token, "/api/analytics/messages?account_id=b").await;
    assert_error(st, &b, StatusCode::NOT_FOUND, &["account `b`"]);
    // Accounts: ids and names only, never the webhook settings.
    let (st, b) = call(&s, &token, Method::GET, "/api/accounts", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        b["data"]["accounts"],
        json!([{"account_id": "a", "name": null}])
    );
    let (_, b) = call(&s, &token, Method::GET, "/api/accounts/a", None).await;
    assert_eq!(b["data"], json!({"account_id": "a", "name": null}));
    for (method, path, body) in [
        (
            Method::POST,
            "/api/events",
            Some(json!([outbound("a", "s-1", "text", at(NOW))])),
        ),
        (
            Method::POST,
            "/api/accounts",
            Some(json!({"account_id": "d", "name": "D"})),
        ),
        (Method::PATCH, "/api/accounts/a", Some(json!({"name": "A"}))),
        (Method::GET, "/api/keys", None),
        (Method::GET, "/api/share-links", None),
        (Method::DELETE, &format!("/api/share-links/{id}"), None),
    ] {
        let (st, b) = call(&s, &token, method, path, body).await;
        assert_error(
            st,
            &b,
            StatusCode::FORBIDDEN,
            &["insufficient scope", "share link"],
        );
    }
    let (_, links) = call(&s, &admin, Method::GET, "/api/share-links", None).await;
    assert_eq!(links["data"]["share_links"][0]["id"], id.as_str());
    assert!(
        !links.to_string().contains(&token),
        "a listed link shows its token: {links}"
    );

    let (st, _) = call(
        &s,
        &admin,
        Method::DELETE,
        &format!("/api/share-links/{id}"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = s.get(&token, "/api/analytics/messages").await;
    assert_error(st, &b, StatusCode::UNAUTHORIZED, &["invalid API key"]);
    let gone = s
        .client
        .get(format!("{}{url}", s.base))
        .send()
        .await
        .expect("page");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_rate_limit_is_per_key() {
    let s = TestServer::start_full(
        whatstat::engine::EngineConfig::default(),
        whatstat::api::ApiLimits {
            max_body_bytes: 1 << 20,
            rate_per_second: 1,
        },
    )
    .await;
    let admin = s.create_org("Acme", "UTC").await;
    let (_, other) = make_key(&s, &admin, json!({"name": "other", "scope": "read"})).await;
    // The admin key has used one request of its burst of two; two more exhaust it.
    let (st, _) = s.get(&admin, "/api/analytics/dashboard").await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = s.get(&admin, "/api/analytics/dashboard").await;
    assert_error(st, &b, StatusCode::TOO_MANY_REQUESTS, &[]);
    // Another key of the same organization has its own allowance.
    let (st, b) = s.get(&other, "/api/analytics/dashboard").await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

/// Every route, with the other organization's key ids, share-link ids, account ids and
/// webhook numbers: never a figure, an account, a key or a link of the other.
#[tokio::test]
async fn no_route_reaches_another_organization() {
    let s = TestServer::start().await;
    s.set_now(at(NOW));
    let alpha = s.create_org("Alpha", "UTC").await;
    let beta = s.create_org("Beta", "UTC").await;
    let t = at("2026-03-12T09:00:00Z");
    ingest(
        &s,
        &beta,
        &json!([
            outbound("beta-acct", "b-1", "text", t),
            outbound("beta-acct", "b-2", "text", t)
        ]),
    )
    .await;
    let (st, b) = call(
        &s,
        &beta,
        Method::POST,
        "/api/accounts",
        Some(json!({"account_id": "beta-line", "name": "Beta line", "phone_number_id": "555000", "verify_token": "beta-token", "app_secret": "beta-secret"})),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (beta_key_id, _) = make_key(&s, &beta, json!({"name": "beta read", "scope": "read"})).await;
    let (beta_link_id, _, _) = make_link(&s, &beta, json!({"name": "beta link"})).await;
    let (_, alpha_read) =
        make_key(&s, &alpha, json!({"name": "alpha read", "scope": "read"})).await;
    let (_, alpha_link, _) = make_link(&s, &alpha, json!({"name": "alpha link"})).await;

    for key in [&alpha, &alpha_read, &alpha_link] {
        for (method, path, body) in [
            (
                Method::GET,
                "/api/analytics/messages?account_id=beta-acct".to_string(),
                None,
            ),
            (
                Method::GET,
                "/api/analytics/chatbot?account_id=beta-acct".to_string(),
                None,
            ),
            (
                Method::GET,
                "/api/analytics/dashboard?account_id=beta-acct".to_string(),
                None,
            ),
            (Method::GET, "/api/accounts/beta-line".to_string(), None),
            (Method::GET, "/api/accounts/beta-acct".to_string(), None),
            (
                Method::PATCH,
                "/api/accounts/beta-line".to_string(),
                Some(json!({"name": "mine"})),
            ),
            (Method::DELETE, "/api/accounts/beta-line".to_string(), None),
            (Method::DELETE, format!("/api/keys/{beta_key_id}"), None),
            (
                Method::DELETE,
                format!("/api/share-links/{beta_link_id}"),
                None,
            ),
        ] {
            let (st, b) = call(&s, key, method.clone(), &path, body).await;
            assert!(
                st == StatusCode::NOT_FOUND || st == StatusCode::FORBIDDEN,
                "{method} {path} answered {st}: {b}"
            );
            assert!(
                !b.to_string().contains("Beta"),
                "{method} {path} leaked: {b}"
            );
        }
        // Lists hold only Alpha's own.
        for path in ["/api/accounts", "/api/keys", "/api/share-links"] {
            let (_, b) = call(&s, key, Method::GET, path, None).await;
            let text = b.to_string();
            for theirs in [
                "beta-line",
                "beta-acct",
                beta_key_id.as_str(),
                beta_link_id.as_str(),
                "beta read",
                "beta link",
            ] {
                assert!(!text.contains(theirs), "{path} shows `{theirs}`: {b}");
            }
        }
        // Alpha's figures hold none of Beta's traffic.
        assert_eq!(sent(&data(&s, key, "/api/analytics/messages").await), 0);
    }
    // Beta's number cannot be claimed by Alpha: refused without saying whose it is.
    let (st, b) = call(
        &s,
        &alpha,
        Method::POST,
        "/api/accounts",
        Some(json!({"account_id": "mine", "name": "Mine", "phone_number_id": "555000", "verify_token": "t", "app_secret": "s"})),
    )
    .await;
    assert_error(st, &b, StatusCode::CONFLICT, &["already claimed"]);
    assert!(
        !b.to_string().contains("Beta") && !b.to_string().contains("beta-line"),
        "{b}"
    );
    // Beta is untouched: its key and link still work, its account keeps its name.
    let (st, b) = call(&s, &beta, Method::GET, "/api/accounts/beta-line", None).await;
    assert_eq!(
        (st, b["data"]["name"].clone()),
        (StatusCode::OK, json!("Beta line"))
    );
    let (_, keys) = call(&s, &beta, Method::GET, "/api/keys", None).await;
    assert_eq!(keys["data"]["keys"].as_array().map(Vec::len), Some(2));
    let (_, links) = call(&s, &beta, Method::GET, "/api/share-links", None).await;
    assert_eq!(
        links["data"]["share_links"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(sent(&data(&s, &beta, "/api/analytics/messages").await), 2);
}
