//! Meta's WhatsApp webhook over the real server: accounts, the handshake, signatures,
//! every message type and status of Meta's reference payloads (tests/fixtures/webhook),
//! duplicates and shuffled orders, contacts from wa_id, and unrouted payloads.

use crate::common;

use common::{MASTER_KEY, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use whatstat::engine::EngineConfig;
use whatstat::engine::webhook::{SecretSource, WebhookConfig, sign};

/// Where the fixtures' `metadata.phone_number_id` points.
const PHONE: &str = "106540352242922";
const SECRET: &str = "meta-app-secret-0123456789abcdef";
const TOKEN: &str = "my-verify-token";
/// 2024-05-29T17:26:40Z: an hour after the fixtures' updates.
const NOW: i64 = 1_717_003_600;
const DAY: &str = "start_date=2024-05-29&end_date=2024-05-29";

const MESSAGE_TYPES: &[&str] = &[
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "unsupported",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/webhook/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

async fn server() -> TestServer {
    let s = TestServer::start().await;
    s.set_now(NOW);
    s
}

async fn register(s: &TestServer, key: &str, account: &str, phone: &str, secret: &str) -> Value {
    let (status, body) = s
        .send(
            s.client
                .post(format!("{}/api/accounts", s.base))
                .bearer_auth(key)
                .json(
                    &json!({"account_id": account, "name": "Main number", "phone_number_id": phone,
                              "verify_token": TOKEN, "app_secret": secret}),
                ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "register: {body}");
    body["data"].clone()
}

/// An organization with one account on the fixtures' number; returns its key.
async fn org_with_account(s: &TestServer) -> String {
    let key = s.create_org("Shop", "UTC").await;
    register(s, &key, "main", PHONE, SECRET).await;
    key
}

async fn post_signed(s: &TestServer, body: &[u8], secret: &str) -> (StatusCode, Value) {
    post_raw(s, body, Some(&sign(secret.as_bytes(), body))).await
}

async fn post_raw(s: &TestServer, body: &[u8], signature: Option<&str>) -> (StatusCode, Value) {
    let mut req = s
        .client
        .post(format!("{}/webhooks/whatsapp", s.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    s.send(req).await
}

async fn post_ok(s: &TestServer, body: &[u8]) -> Value {
    let (status, answer) = post_signed(s, body, SECRET).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["data"].clone()
}

async fn messages(s: &TestServer, key: &str) -> Value {
    let (status, body) = s.get(key, &format!("/api/analytics/messages?{DAY}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

async fn summary(s: &TestServer, key: &str) -> [i64; 5] {
    let m = messages(s, key).await;
    let v = &m["summary"];
    let n = |f: &str| v[f].as_i64().unwrap_or(-1);
    [
        n("total_sent"),
        n("total_received"),
        n("total_delivered"),
        n("total_read"),
        n("total_failed"),
    ]
}

async fn contacts_total(s: &TestServer, key: &str) -> i64 {
    let (status, body) = s.get(key, "/api/analytics/dashboard").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["contacts"]["total"].as_i64().unwrap_or(-1)
}

async fn unrouted(s: &TestServer) -> Vec<Value> {
    let (status, body) = s.get(MASTER_KEY, "/api/admin/unrouted").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]["payloads"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn payload(changes: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": changes}]}))
    .expect("json")
}

fn value(phone: &str, messages: Vec<Value>, statuses: Vec<Value>) -> Value {
    json!({"field": "messages", "value": {"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone},
        "messages": messages, "statuses": statuses}})
}

fn inbound(id: &str, from: &str, at: i64) -> Value {
    json!({"from": from, "id": id, "timestamp": at.to_string(), "type": "text", "text": {"body": "hi"}})
}

fn status(id: &str, st: &str, at: i64) -> Value {
    json!({"id": id, "status": st, "timestamp": at.to_string(), "recipient_id": "15550001"})
}

#[tokio::test]
async fn handshake_answers_the_challenge_only_for_a_known_token() {
    let s = server().await;
    let handshake = |query: &str| {
        s.client
            .get(format!("{}/webhooks/whatsapp?{query}", s.base))
            .send()
    };
    let before =
        handshake("hub.mode=subscribe&hub.verify_token=my-verify-token&hub.challenge=1158201444")
            .await
            .expect("request");
    assert_eq!(
        before.status(),
        StatusCode::FORBIDDEN,
        "no account has the token yet"
    );
    org_with_account(&s).await;
    let good =
        handshake("hub.mode=subscribe&hub.verify_token=my-verify-token&hub.challenge=1158201444")
            .await
            .expect("request");
    assert_eq!(good.status(), StatusCode::OK);
    let ct = good
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(good.text().await.expect("body"), "1158201444");
    for bad in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=my-verify-token&hub.challenge=1",
        "hub.verify_token=my-verify-token&hub.challenge=1",
        "hub.mode=subscribe&hub.verify_token=my-verify-token",
        "hub.mode=subscribe&hub.verify_token=&hub.challenge=1",
    ] {
        let r = handshake(bad).await.expect("request");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{bad}");
    }
}

#[tokio::test]
async fn accounts_api_never_returns_secrets_and_guards_its_rules() {
    let s = server().await;
    let key = s.create_org("Shop", "UTC").await;
    let created = register(&s, &key, "main", PHONE, SECRET).await;
    assert_eq!(created["account_id"], "main");
    assert_eq!(created["phone_number_id"], PHONE);
    assert_eq!(created["has_app_secret"], true);
    assert_eq!(created["has_verify_token"], true);
    assert_eq!(created["registered"], true);
    let (_, list) = s.get(&key, "/api/accounts").await;
    let (_, one) = s.get(&key, "/api/accounts/main").await;
    for shown in [created.to_string(), list.to_string(), one.to_string()] {
        assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
    }
    assert_eq!(list["data"]["accounts"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["data"]["name"], "Main number");

    // Registered twice, or a number claimed twice (even by another organization): 409.
    let again = s
        .client
        .post(format!("{}/api/accounts", s.base))
        .bearer_auth(&key)
        .json(&json!({"account_id": "main", "name": "x", "phone_number_id": "999", "app_secret": "s"}));
    assert_eq!(s.send(again).await.0, StatusCode::CONFLICT);
    let other = s.create_org("Other", "UTC").await;
    let steal = s
        .client
        .post(format!("{}/api/accounts", s.base))
        .bearer_auth(&other)
        .json(&json!({"account_id": "mine", "name": "x", "phone_number_id": PHONE, "app_secret": "s"}));
    assert_eq!(s.send(steal).await.0, StatusCode::CONFLICT);
    // Another organization does not see it; no key is refused.
    assert_eq!(
        s.get(&other, "/api/accounts/main").await.0,
        StatusCode::NOT_FOUND
    );
    let anonymous = s.client.get(format!("{}/api/accounts", s.base));
    assert_eq!(s.send(anonymous).await.0, StatusCode::UNAUTHORIZED);
    // Bad bodies name the field.
    for (body, word) in [
        (json!({"name": "x"}), "account_id"),
        (
            json!({"account_id": "b", "name": "x", "phone_number_id": "123"}),
            "app_secret",
        ),
        (
            json!({"account_id": "b", "name": "x", "secret": "s"}),
            "secret",
        ),
        (
            json!({"account_id": "b", "name": "x", "phone_number_id": "12 3", "app_secret": "s"}),
            "phone_number_id",
        ),
    ] {
        let req = s
            .client
            .post(format!("{}/api/accounts", s.base))
            .bearer_auth(&key)
            .json(&body);
        let (status, answer) = s.send(req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            answer["message"].as_str().unwrap_or("").contains(word),
            "{answer}"
        );
    }

    // PATCH changes the name and the secret; the old secret then no longer signs.
    let patch = s
        .client
        .patch(format!("{}/api/accounts/main", s.base))
        .bearer_auth(&key)
        .json(&json!({"name": "Renamed", "app_secret": "new-secret"}));
    let (status, patched) = s.send(patch).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["name"], "Renamed");
    let body = fixture("message_text");
    assert_eq!(
        post_signed(&s, &body, SECRET).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(post_signed(&s, &body, "new-secret").await.0, StatusCode::OK);
    assert_eq!(summary(&s, &key).await[1], 1);

    // An account seen only in events is listed, and can be registered through PATCH.
    let (status, _) = s
        .post_events(
            &key,
            &json!([{"type": "message", "account_id": "api-only", "timestamp": NOW - 60,
            "id": "m1", "direction": "outbound", "message_type": "template"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, implicit) = s.get(&key, "/api/accounts/api-only").await;
    assert_eq!(implicit["data"]["registered"], false);
    let patch = s
        .client
        .patch(format!("{}/api/accounts/api-only", s.base))
        .bearer_auth(&key)
        .json(&json!({"phone_number_id": "555", "app_secret": "x", "verify_token": "t2"}));
    let (status, patched) = s.send(patch).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["registered"], true);
    assert_eq!(patched["data"]["name"], "api-only");

    // DELETE removes the account with its figures; its number's payloads become unrouted.
    let del = s
        .client
        .delete(format!("{}/api/accounts/main", s.base))
        .bearer_auth(&key);
    assert_eq!(s.send(del).await.0, StatusCode::OK);
    assert_eq!(
        s.get(&key, "/api/accounts/main").await.0,
        StatusCode::NOT_FOUND
    );
    let del = s
        .client
        .delete(format!("{}/api/accounts/main", s.base))
        .bearer_auth(&key);
    assert_eq!(s.send(del).await.0, StatusCode::NOT_FOUND);
    assert_eq!(summary(&s, &key).await[1], 0);
    let (status, answer) = post_signed(&s, &body, "new-secret").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["data"]["unrouted_phone_number_ids"], json!([PHONE]));
}

#[tokio::test]
async fn every_message_type_of_metas_reference_is_counted_as_inbound() {
    let s = server().await;
    let key = org_with_account(&s).await;
    for t in MESSAGE_TYPES {
        let receipt = post_ok(&s, &fixture(&format!("message_{t}"))).await;
        // The message, and its sender's contact the first time.
        let expected = if *t == "text" { 2 } else { 1 };
        assert_eq!(receipt["accepted"], expected, "{t}: {receipt}");
    }
    // A changed number is a notice, not a message: counted nowhere, reported as ignored.
    let receipt = post_ok(&s, &fixture("message_system")).await;
    assert_eq!(
        (receipt["accepted"].as_u64(), receipt["ignored"].as_u64()),
        (Some(0), Some(1)),
        "{receipt}"
    );
    let m = messages(&s, &key).await;
    assert_eq!(summary(&s, &key).await, [0, 13, 0, 0, 0]);
    for t in MESSAGE_TYPES {
        assert_eq!(m["by_type"][t], 1, "{t}: {}", m["by_type"]);
    }
    assert_eq!(m["by_type"].as_object().map(|o| o.len()), Some(13));
    // Every fixture comes from the same wa_id: one contact.
    assert_eq!(contacts_total(&s, &key).await, 1);
}

#[tokio::test]
async fn notices_count_nothing_and_the_sender_is_the_contact() {
    let s = server().await;
    let key = org_with_account(&s).await;
    let t = NOW - 3000;
    let notice = |id: &str, kind: &str| json!({"from": "491511", "id": id, "timestamp": t.to_string(), "type": kind});
    let body = payload(vec![value(
        PHONE,
        vec![
            notice("n1", "request_welcome"),
            notice("n2", "edit"),
            notice("n3", "revoke"),
            notice("n4", "system"),
        ],
        vec![],
    )]);
    let receipt = post_ok(&s, &body).await;
    assert_eq!(
        (receipt["accepted"].as_u64(), receipt["ignored"].as_u64()),
        (Some(0), Some(4)),
        "{receipt}"
    );
    assert_eq!(summary(&s, &key).await[1], 0);
    assert_eq!(contacts_total(&s, &key).await, 0);
    // Profiles that disagree with the sender name no second contact; a sender known only
    // by its business-scoped user id is that id.
    let mut v = value(PHONE, vec![inbound("m1", "444", t)], vec![]);
    v["value"]["contacts"] = json!([{"profile": {"name": "D"}, "wa_id": "555"}]);
    v["value"]["messages"].as_array_mut().expect("messages").push(
        json!({"from_user_id": "US.13491208655302741918", "id": "m2", "timestamp": t.to_string(), "type": "text", "text": {"body": "hi"}}),
    );
    let receipt = post_ok(&s, &payload(vec![v])).await;
    assert_eq!(
        receipt["accepted"], 4,
        "two messages and their two senders: {receipt}"
    );
    assert_eq!(contacts_total(&s, &key).await, 2);
    assert_eq!(summary(&s, &key).await[1], 2);
}

#[tokio::test]
async fn statuses_of_metas_reference_follow_the_ladder() {
    let s = server().await;
    let key = org_with_account(&s).await;
    for name in [
        "status_sent",
        "status_delivered",
        "status_read",
        "status_failed",
        "status_pricing",
    ] {
        let receipt = post_ok(&s, &fixture(name)).await;
        assert_eq!(receipt["accepted"], 1, "{name}: {receipt}");
    }
    // Three outbound messages: one read, one failed, one delivered (with pricing).
    assert_eq!(summary(&s, &key).await, [3, 0, 2, 1, 1]);
    // A status of another kind is ignored and changes nothing.
    let deleted = payload(vec![value(
        PHONE,
        vec![],
        vec![status("wamid.X", "deleted", NOW - 60)],
    )]);
    let receipt = post_ok(&s, &deleted).await;
    assert_eq!(receipt["accepted"], 0);
    assert_eq!(receipt["ignored"], 1);
    assert_eq!(summary(&s, &key).await, [3, 0, 2, 1, 1]);
}

#[tokio::test]
async fn a_batch_of_many_changes_and_other_fields() {
    let s = server().await;
    let key = org_with_account(&s).await;
    let receipt = post_ok(&s, &fixture("batch")).await;
    // 8 inbound messages and 4 contacts; 3 messages' sent/delivered/read and one failure.
    assert_eq!(receipt["accepted"], 8 + 4 + 9 + 1, "{receipt}");
    assert_eq!(summary(&s, &key).await, [4, 8, 3, 3, 1]);
    assert_eq!(contacts_total(&s, &key).await, 4);
    let m = messages(&s, &key).await;
    assert_eq!(m["by_type"]["text"], 4);
    assert_eq!(m["by_type"]["image"], 4);
    // Template updates are accepted and change no figure.
    let receipt = post_ok(&s, &fixture("template_status_update")).await;
    assert_eq!(receipt["accepted"], 0);
    assert_eq!(summary(&s, &key).await, [4, 8, 3, 3, 1]);
    assert!(unrouted(&s).await.is_empty());
}

#[tokio::test]
async fn missing_or_wrong_signatures_are_refused_and_change_nothing() {
    let s = server().await;
    let key = org_with_account(&s).await;
    let body = fixture("message_text");
    let good = sign(SECRET.as_bytes(), &body);
    let (status, answer) = post_raw(&s, &body, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["status"], "error");
    let mut tampered = body.clone();
    if let Some(b) = tampered.iter_mut().find(|b| **b == b'?') {
        *b = b'!';
    }
    for (bytes, sig) in [
        (&body, sign(b"not-the-secret", &body)),
        (&body, good.trim_start_matches("sha256=").to_string()),
        (&body, "sha256=".to_string()),
        (&body, "sha1=abcdef".to_string()),
        (&tampered, good.clone()),
    ] {
        let (status, answer) = post_raw(&s, bytes, Some(&sig)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{sig}: {answer}");
    }
    // An unrouted payload without a signature is not kept either.
    let elsewhere = payload(vec![value(
        "777",
        vec![inbound("w1", "1", NOW - 60)],
        vec![],
    )]);
    assert_eq!(
        post_raw(&s, &elsewhere, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(summary(&s, &key).await, [0, 0, 0, 0, 0]);
    assert_eq!(contacts_total(&s, &key).await, 0);
    assert!(unrouted(&s).await.is_empty());
    let (status, _) = post_raw(&s, &body, Some(&good)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary(&s, &key).await, [0, 1, 0, 0, 0]);
}

#[tokio::test]
async fn retries_and_shuffled_orders_count_once() {
    let t = NOW - 3000;
    // One customer writes twice; three outbound messages go through their statuses.
    let updates = vec![
        (
            vec![inbound("in1", "4911", t), inbound("in2", "4911", t + 5)],
            vec![],
        ),
        (
            vec![],
            vec![
                status("out1", "sent", t + 10),
                status("out2", "sent", t + 10),
                status("out3", "sent", t + 10),
            ],
        ),
        (
            vec![],
            vec![
                status("out1", "delivered", t + 20),
                status("out2", "delivered", t + 21),
            ],
        ),
        (vec![], vec![status("out1", "read", t + 30)]),
        (vec![], vec![status("out3", "failed", t + 40)]),
        // A read whose delivered never comes.
        (vec![], vec![status("out4", "read", t + 50)]),
    ];
    let bodies: Vec<Vec<u8>> = updates
        .into_iter()
        .map(|(m, st)| payload(vec![value(PHONE, m, st)]))
        .collect();
    let expected = [4, 2, 3, 2, 1];

    let s = server().await;
    let key = org_with_account(&s).await;
    for b in &bodies {
        post_ok(&s, b).await;
    }
    assert_eq!(summary(&s, &key).await, expected);
    let in_order = messages(&s, &key).await;
    // Meta's retries: everything again, twice, in reverse.
    for b in bodies.iter().rev().chain(bodies.iter()) {
        let receipt = post_ok(&s, b).await;
        assert_eq!(receipt["accepted"], 0, "{receipt}");
    }
    assert_eq!(messages(&s, &key).await, in_order);
    assert_eq!(contacts_total(&s, &key).await, 1);

    // Shuffled: reads before delivered, statuses before their messages.
    let s = server().await;
    let key = org_with_account(&s).await;
    for i in [5, 3, 4, 2, 1, 0, 3, 2] {
        post_ok(&s, &bodies[i]).await;
    }
    assert_eq!(summary(&s, &key).await, expected);
    assert_eq!(messages(&s, &key).await, in_order);
    assert_eq!(contacts_total(&s, &key).await, 1);

    // A status that arrives before its outbound message; the message's type comes later
    // through the events API and nothing is counted twice.
    let (status, _) = s
        .post_events(
            &key,
            &json!([{"type": "message", "account_id": "main", "timestamp": t + 10,
            "id": "out1", "direction": "outbound", "message_type": "template"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary(&s, &key).await, expected);
}

#[tokio::test]
async fn contacts_come_from_wa_ids_once_at_their_earliest_message() {
    let s = server().await;
    let key = org_with_account(&s).await;
    let t = NOW - 3000;
    // The later message first, then the earlier one, then a third customer via contacts[].
    post_ok(
        &s,
        &payload(vec![value(
            PHONE,
            vec![inbound("a2", "111", t + 100)],
            vec![],
        )]),
    )
    .await;
    post_ok(
        &s,
        &payload(vec![value(
            PHONE,
            vec![inbound("a1", "111", t), inbound("b1", "222", t + 1)],
            vec![],
        )]),
    )
    .await;
    let mut with_profiles = value(PHONE, vec![inbound("c1", "333", t + 2)], vec![]);
    with_profiles["value"]["contacts"] = json!([{"profile": {"name": "C"}, "wa_id": "333"}, {"profile": {"name": "A"}, "wa_id": "111"}]);
    post_ok(&s, &payload(vec![with_profiles])).await;
    assert_eq!(contacts_total(&s, &key).await, 3);
    assert_eq!(summary(&s, &key).await[1], 4);
}

#[tokio::test]
async fn unrouted_payloads_are_kept_listed_and_replayed_on_registration() {
    let s = server().await;
    let key = s.create_org("Shop", "UTC").await;
    let body = fixture("batch");
    let (status, answer) = post_signed(&s, &body, SECRET).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["unrouted_phone_number_ids"], json!([PHONE]));
    assert_eq!(answer["data"]["accepted"], 0);
    // A payload signed with another secret is kept too (it cannot be checked yet).
    let forged = fixture("message_text");
    assert_eq!(
        post_signed(&s, &forged, "someone-else").await.0,
        StatusCode::OK
    );

    // Listed for the master key only, as received.
    assert_eq!(
        s.get(&key, "/api/admin/unrouted").await.0,
        StatusCode::UNAUTHORIZED
    );
    let kept = unrouted(&s).await;
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0]["phone_number_ids"], json!([PHONE]));
    assert_eq!(
        kept[0]["body"].as_str().map(str::as_bytes),
        Some(body.as_slice())
    );
    assert_eq!(kept[0]["signature"], sign(SECRET.as_bytes(), &body));
    assert_eq!(kept[0]["bytes"], body.len());
    assert_eq!(kept[0]["received_at"], "2024-05-29T17:26:40Z");
    let (_, filtered) = s
        .get(MASTER_KEY, "/api/admin/unrouted?phone_number_id=1")
        .await;
    assert_eq!(filtered["data"]["payloads"], json!([]));

    // Registering the number replays what verifies with its app secret.
    let created = register(&s, &key, "main", PHONE, SECRET).await;
    let replayed = &created["replayed"];
    assert_eq!(replayed["payloads"], 1, "{created}");
    assert_eq!(replayed["accepted"], 22);
    assert_eq!(replayed["bad_signature"], json!([kept[1]["id"]]));
    assert_eq!(summary(&s, &key).await, [4, 8, 3, 3, 1]);
    assert_eq!(contacts_total(&s, &key).await, 4);
    // The forged one stays, reported; the replayed one is gone.
    let left = unrouted(&s).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], kept[1]["id"]);
    // Replaying again (any change to the account) does not count anything twice.
    let patch = s
        .client
        .patch(format!("{}/api/accounts/main", s.base))
        .bearer_auth(&key)
        .json(&json!({"name": "Still main"}));
    let (status, patched) = s.send(patch).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["data"]["replayed"]["payloads"], 0);
    assert_eq!(summary(&s, &key).await, [4, 8, 3, 3, 1]);
    // The admin can drop what is left.
    let id = left[0]["id"].as_i64().unwrap_or(0);
    let del = s
        .client
        .delete(format!("{}/api/admin/unrouted/{id}", s.base))
        .bearer_auth(MASTER_KEY);
    assert_eq!(s.send(del).await.0, StatusCode::OK);
    assert!(unrouted(&s).await.is_empty());
}

#[tokio::test]
async fn a_payload_for_two_numbers_routes_one_and_keeps_the_other() {
    let s = server().await;
    let key = org_with_account(&s).await;
    let t = NOW - 600;
    let body = payload(vec![
        value(PHONE, vec![inbound("p1", "1", t)], vec![]),
        value("200000000000001", vec![inbound("q1", "2", t)], vec![]),
    ]);
    let receipt = post_ok(&s, &body).await;
    assert_eq!(receipt["accepted"], 2);
    assert_eq!(
        receipt["unrouted_phone_number_ids"],
        json!(["200000000000001"])
    );
    assert_eq!(summary(&s, &key).await[1], 1);
    // The second number registered later, in the same organization: only its part is added.
    let created = register(&s, &key, "second", "200000000000001", SECRET).await;
    assert_eq!(created["replayed"]["payloads"], 1);
    assert_eq!(created["replayed"]["accepted"], 2);
    assert_eq!(summary(&s, &key).await[1], 2);
    let (_, second) = s
        .get(
            &key,
            &format!("/api/analytics/messages?{DAY}&account_id=second"),
        )
        .await;
    assert_eq!(second["data"]["summary"]["total_received"], 1);
    assert!(unrouted(&s).await.is_empty());
}

#[tokio::test]
async fn unrouted_space_is_bounded_oldest_dropped_first() {
    let config = EngineConfig {
        webhook: WebhookConfig::new(SecretSource::Ephemeral, 2, 1024 * 1024),
        ..EngineConfig::default()
    };
    let s = TestServer::start_with(config).await;
    s.set_now(NOW);
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = payload(vec![value(
            "900",
            vec![inbound(&format!("u{i}"), "1", NOW - 60)],
            vec![],
        )]);
        let (status, answer) = post_signed(&s, &body, SECRET).await;
        assert_eq!(status, StatusCode::OK);
        ids.push(answer["data"]["kept_payload"].clone());
    }
    let kept: Vec<Value> = unrouted(&s).await.iter().map(|p| p["id"].clone()).collect();
    assert_eq!(kept, ids[1..].to_vec());
}

#[tokio::test]
async fn a_thousand_updates_in_three_megabytes_pass_in_one_post() {
    let s = server().await;
    let key = org_with_account(&s).await;
    let t = NOW - 3000;
    let text = "x".repeat(5_800);
    let msgs: Vec<Value> = (0..500)
        .map(|i| json!({"from": format!("49{}", i % 50), "id": format!("big{i}"), "timestamp": (t + i).to_string(),
            "type": "text", "text": {"body": text}}))
        .collect();
    let sts: Vec<Value> = (0..500)
        .map(|i| {
            status(
                &format!("o{}", i / 2),
                if i % 2 == 0 { "sent" } else { "delivered" },
                t + i,
            )
        })
        .collect();
    let body = payload(vec![value(PHONE, msgs, sts)]);
    assert!(
        body.len() > 1_500_000 && body.len() <= 3 * 1024 * 1024,
        "{}",
        body.len()
    );
    let receipt = post_ok(&s, &body).await;
    assert_eq!(receipt["accepted"], 500 + 500 + 50, "{receipt}");
    assert_eq!(summary(&s, &key).await, [250, 500, 250, 0, 0]);
    assert_eq!(contacts_total(&s, &key).await, 50);
}

#[tokio::test]
async fn bodies_that_are_not_json_are_refused() {
    let s = server().await;
    org_with_account(&s).await;
    let (status, answer) = post_signed(&s, b"not json", SECRET).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(unrouted(&s).await.is_empty());
}
