//! Campaigns, templates and costs over HTTP: a scenario computed by hand, and the same
//! facts told through the events API alone or through Meta's webhook giving one answer.

use crate::common;
use crate::helpers::*;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use whatstat::engine::EngineConfig;
use whatstat::engine::rates::RateCard;
use whatstat::engine::webhook::sign;

const NOW: &str = "2026-03-12T12:00:00Z";
const RANGE: &str = "start_date=2026-02-01&end_date=2026-03-12";
/// Germany's marketing price changes on 1 March.
const CARD: &str = "category,country,price,effective_from\n\
    marketing,*,0.05,\n\
    marketing,DE,0.10,\n\
    marketing,DE,0.20,2026-03-01\n\
    utility,*,0.01,\n";
const PHONE: &str = "106540352242922";
const SECRET: &str = "meta-app-secret-0123456789abcdef";

const DE: &str = "4915112345678";
const US: &str = "14155550123";
const IN: &str = "919876543210";
const GB: &str = "447400123456";

async fn server() -> (TestServer, String) {
    let config = EngineConfig {
        rate_card: RateCard::parse(CARD, "EUR").expect("card"),
        ..EngineConfig::default()
    };
    let server = TestServer::start_with(config).await;
    server.set_now(at(NOW));
    let key = server.create_org("Shop", "UTC").await;
    (server, key)
}

/// An outbound message with its campaign, template and (when `to` is given) recipient.
fn sent(
    id: &str,
    t: &str,
    campaign: Option<&str>,
    template: Option<(&str, &str)>,
    to: Option<&str>,
) -> Value {
    let mut m = outbound(
        "acc1",
        id,
        if template.is_some() {
            "template"
        } else {
            "text"
        },
        at(t),
    );
    if let Some(c) = campaign {
        m["campaign_id"] = json!(c);
    }
    if let Some((name, category)) = template {
        m["template_name"] = json!(name);
        m["template_language"] = json!("en");
        m["template_category"] = json!(category);
    }
    if let Some(r) = to {
        m["recipient"] = json!(r);
    }
    m
}

/// The outbound side of the scenario; `recipients` puts each recipient on its message.
fn outbound_side(recipients: bool) -> Value {
    let to = |r| recipients.then_some(r);
    json!([
        sent(
            "m1",
            "2026-03-10T10:00:00Z",
            Some("c1"),
            Some(("spring_sale", "marketing")),
            to(DE)
        ),
        sent(
            "m2",
            "2026-03-10T10:05:00Z",
            Some("c1"),
            Some(("spring_sale", "marketing")),
            to(US)
        ),
        sent(
            "m3",
            "2026-03-10T10:10:00Z",
            Some("c1"),
            Some(("spring_sale", "marketing")),
            to(IN)
        ),
        sent(
            "m4",
            "2026-03-11T09:00:00Z",
            None,
            Some(("order_update", "utility")),
            to(US)
        ),
        sent("m5", "2026-02-20T10:00:00Z", Some("c2"), None, to(DE)),
        sent(
            "m6",
            "2026-03-11T10:00:00Z",
            None,
            Some(("otp", "authentication")),
            to(GB)
        ),
        campaign("acc1", "c1", "created", at("2026-03-01T08:00:00Z")),
        campaign("acc1", "c1", "running", at("2026-03-10T09:00:00Z")),
        campaign("acc1", "c2", "completed", at("2026-02-21T00:00:00Z")),
        ai("acc1", "ai1", 1000, Some(0.5), at("2026-03-10T12:00:00Z")),
    ])
}

/// (message, status, pricing category and type, recipient, time)
type Said = (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    &'static str,
    &'static str,
);

const STATUSES: &[Said] = &[
    (
        "m1",
        "sent",
        Some(("marketing", "regular")),
        DE,
        "2026-03-10T10:00:01Z",
    ),
    (
        "m1",
        "delivered",
        Some(("marketing", "regular")),
        DE,
        "2026-03-10T10:00:02Z",
    ),
    ("m1", "read", None, DE, "2026-03-10T10:01:00Z"),
    (
        "m2",
        "delivered",
        Some(("marketing", "regular")),
        US,
        "2026-03-10T10:05:02Z",
    ),
    ("m3", "failed", None, IN, "2026-03-10T10:10:02Z"),
    (
        "m4",
        "delivered",
        Some(("utility", "free_customer_service")),
        US,
        "2026-03-11T09:00:02Z",
    ),
    (
        "m4",
        "read",
        Some(("utility", "free_customer_service")),
        US,
        "2026-03-11T09:03:00Z",
    ),
    (
        "m5",
        "delivered",
        Some(("marketing", "regular")),
        DE,
        "2026-02-20T10:00:02Z",
    ),
    (
        "m6",
        "delivered",
        Some(("authentication", "regular")),
        GB,
        "2026-03-11T10:00:02Z",
    ),
];

/// (reply id, answered message, from, time): m1 is answered twice; m5's answer is told
/// before m5 itself in the scenario.
const REPLIES: &[(&str, &str, &str, &str)] = &[
    ("i1", "m1", DE, "2026-03-10T11:00:00Z"),
    ("i2", "m1", DE, "2026-03-10T11:30:00Z"),
    ("i3", "m5", DE, "2026-02-20T12:00:00Z"),
];

fn status_event(s: &Said) -> Value {
    let (msg, st, pricing, to, t) = *s;
    let mut e = status("acc1", msg, st, at(t));
    e["recipient"] = json!(to);
    if st == "failed" {
        e["error_code"] = json!(131026);
    }
    if let Some((category, kind)) = pricing {
        e["pricing_category"] = json!(category);
        e["pricing_type"] = json!(kind);
    }
    e
}

fn reply_event(r: &(&str, &str, &str, &str)) -> Value {
    let mut e = inbound("acc1", r.0, "text", at(r.3));
    e["reply_to"] = json!(r.1);
    e
}

async fn answers(server: &TestServer, key: &str) -> [Value; 3] {
    [
        data(server, key, &format!("/api/analytics/campaigns?{RANGE}")).await,
        data(server, key, &format!("/api/analytics/templates?{RANGE}")).await,
        data(
            server,
            key,
            &format!("/api/analytics/costs?{RANGE}&granularity=month"),
        )
        .await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_templates_and_costs_of_a_scenario_computed_by_hand() {
    let (server, key) = server().await;
    // The reply to m5 first, on its own: it marks a message not yet known.
    assert_eq!(
        ingest(&server, &key, &json!([reply_event(&REPLIES[2])])).await,
        (1, 0)
    );
    assert_eq!(ingest(&server, &key, &outbound_side(true)).await, (10, 0));
    let mut rest: Vec<Value> = STATUSES.iter().map(status_event).collect();
    rest.extend(REPLIES[..2].iter().map(reply_event));
    assert_eq!(
        ingest(&server, &key, &Value::Array(rest.clone())).await,
        (11, 0)
    );
    // A retry of everything changes nothing.
    assert_eq!(ingest(&server, &key, &Value::Array(rest)).await, (0, 11));

    let [campaigns, templates, costs] = answers(&server, &key).await;
    assert_eq!(
        campaigns["campaigns"],
        json!([
            {"campaign_id": "c1", "status": "running", "sent": 3, "delivered": 2, "read": 1,
             "failed": 1, "replied": 1, "delivery_rate": 66.7, "read_rate": 50.0,
             "reply_rate": 50.0, "estimated_cost": 0.25,
             "by_error": [{"error_code": 131026, "title": "Message undeliverable", "count": 1}]},
            {"campaign_id": "c2", "status": "completed", "sent": 1, "delivered": 1, "read": 0,
             "failed": 0, "replied": 1, "delivery_rate": 100.0, "read_rate": 0.0,
             "reply_rate": 100.0, "estimated_cost": 0.1, "by_error": []},
        ])
    );
    assert_eq!(campaigns["currency"], "EUR");
    assert_eq!(
        templates["templates"],
        json!([
            {"template_name": "spring_sale", "template_language": "en", "category": "marketing",
             "sent": 3, "delivered": 2, "read": 1, "failed": 1, "replied": 1,
             "delivery_rate": 66.7, "read_rate": 50.0, "reply_rate": 50.0, "estimated_cost": 0.25},
            {"template_name": "order_update", "template_language": "en", "category": "utility",
             "sent": 1, "delivered": 1, "read": 1, "failed": 0, "replied": 0,
             "delivery_rate": 100.0, "read_rate": 100.0, "reply_rate": 0.0, "estimated_cost": 0.0},
            {"template_name": "otp", "template_language": "en", "category": "authentication",
             "sent": 1, "delivered": 1, "read": 0, "failed": 0, "replied": 0,
             "delivery_rate": 100.0, "read_rate": 0.0, "reply_rate": 0.0, "estimated_cost": 0.0},
        ])
    );
    assert!(templates.get("timeline").is_none());
    assert_eq!(
        costs["summary"],
        json!({"billable_messages": 4, "free_messages": 1, "unpriced_messages": 1,
               "estimated_cost": 0.35, "currency": "EUR", "ai_cost": 0.5, "total_cost": 0.85,
               "cost_per_delivered": 0.07, "cost_per_read": 0.175})
    );
    assert_eq!(
        costs["by_category"],
        json!([
            {"category": "marketing", "pricing_type": "regular", "messages": 3, "estimated_cost": 0.35},
            {"category": "authentication", "pricing_type": "regular", "messages": 1, "estimated_cost": 0.0},
            {"category": "utility", "pricing_type": "free_customer_service", "messages": 1, "estimated_cost": 0.0},
        ])
    );
    assert_eq!(
        costs["by_country"],
        json!([
            {"country": "DE", "billable_messages": 2, "free_messages": 0, "estimated_cost": 0.3},
            {"country": "US", "billable_messages": 1, "free_messages": 1, "estimated_cost": 0.05},
            {"country": "GB", "billable_messages": 1, "free_messages": 0, "estimated_cost": 0.0},
        ])
    );
    let timeline: Vec<(i64, i64, f64, f64)> = costs["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|r| {
            (
                r["billable_messages"].as_i64().unwrap_or(-1),
                r["free_messages"].as_i64().unwrap_or(-1),
                r["estimated_cost"].as_f64().unwrap_or(-1.0),
                r["total_cost"].as_f64().unwrap_or(-1.0),
            )
        })
        .collect();
    assert_eq!(timeline, vec![(1, 0, 0.1, 0.1), (3, 1, 0.25, 0.75)]);

    // One template's timeline, by day.
    let one = data(
        &server,
        &key,
        "/api/analytics/templates?start_date=2026-03-10&end_date=2026-03-11&template=spring_sale",
    )
    .await;
    assert_eq!(one["templates"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        one["timeline"],
        json!([
            {"date": "2026-03-10", "sent": 3, "delivered": 2, "read": 1, "failed": 1, "replied": 1, "estimated_cost": 0.25},
            {"date": "2026-03-11", "sent": 0, "delivered": 0, "read": 0, "failed": 0, "replied": 0, "estimated_cost": 0.0},
        ])
    );

    // CSV of each table, with the JSON's numbers.
    let csv = |path: String| {
        let server = &server;
        let key = key.clone();
        async move {
            let r = server
                .client
                .get(format!("{}{path}", server.base))
                .bearer_auth(&key)
                .send()
                .await
                .expect("csv");
            assert_eq!(r.status(), StatusCode::OK);
            r.text().await.expect("text")
        }
    };
    assert_eq!(
        csv(format!("/api/analytics/campaigns?{RANGE}&format=csv")).await,
        "campaign_id,status,sent,delivered,read,failed,replied,delivery_rate,read_rate,reply_rate,estimated_cost\r\n\
         c1,running,3,2,1,1,1,66.7,50.0,50.0,0.25\r\n\
         c2,completed,1,1,0,0,1,100.0,0.0,100.0,0.1\r\n"
    );
    assert_eq!(
        csv(format!(
            "/api/analytics/costs?{RANGE}&format=csv&table=by_country"
        ))
        .await,
        "country,billable_messages,free_messages,estimated_cost\r\nDE,2,0,0.3\r\nUS,1,1,0.05\r\nGB,1,0,0.0\r\n"
    );
    assert!(
        csv(format!("/api/analytics/templates?{RANGE}&format=csv"))
            .await
            .starts_with("template_name,template_language,category,sent")
    );

    // An account filter sees the same (one account), another account nothing.
    let only = data(
        &server,
        &key,
        &format!("/api/analytics/campaigns?{RANGE}&account_id=acc1"),
    )
    .await;
    assert_eq!(only["campaigns"], campaigns["campaigns"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_are_refused_naming_what_is_allowed() {
    let (server, key) = server().await;
    let t = at("2026-03-10T10:00:00Z");
    let cases = [
        (
            json!({"type": "message", "account_id": "a", "timestamp": t, "id": "x", "direction": "outbound",
                "message_type": "template", "template_name": "n", "template_category": "promo"}),
            "field `template_category` is `promo`; allowed: marketing, utility, authentication, service",
        ),
        (
            json!({"type": "message", "account_id": "a", "timestamp": t, "id": "x", "direction": "outbound",
                "message_type": "text", "recipient": "+49 151"}),
            "field `recipient` is `+49 151`",
        ),
        (
            json!({"type": "message_status", "account_id": "a", "timestamp": t, "message_id": "x",
                "status": "sent", "pricing_category": "marketing", "pricing_type": "paid"}),
            "field `pricing_type` is `paid`; allowed: regular, free_customer_service, free_entry_point",
        ),
        (
            json!({"type": "message_status", "account_id": "a", "timestamp": t, "message_id": "x",
                "status": "sent", "pricing_type": "regular"}),
            "field `pricing_type` needs `pricing_category`",
        ),
        (
            json!({"type": "message", "account_id": "a", "timestamp": t, "id": "x", "direction": "outbound",
                "message_type": "text", "template_language": "en"}),
            "needs `template_name`",
        ),
    ];
    for (event, needle) in cases {
        let (status, body) = server.post_events(&key, &json!([event])).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains(needle), "{needle}: {body}");
    }
    // A field that needs another needs it named, `null` included; a `null` category
    // prices nothing.
    let (status, body) = server
        .post_events(
            &key,
            &json!([{"type": "message_status", "account_id": "a", "timestamp": t,
            "message_id": "x", "status": "sent", "pricing_type": null}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        ingest(&server, &key, &json!([{"type": "message_status", "account_id": "a", "timestamp": t,
            "message_id": "x", "status": "sent", "pricing_category": null, "pricing_type": "regular"}]))
        .await,
        (1, 0)
    );
    let d = data(&server, &key, &format!("/api/analytics/costs?{RANGE}")).await;
    assert_eq!(d["summary"]["billable_messages"], 0);
    let (status, body) = server
        .get(
            &key,
            &format!("/api/analytics/costs?{RANGE}&table=by_region&format=csv"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("timeline, by_category, by_country"),
        "{body}"
    );
}

fn webhook_body(messages: Vec<Value>, statuses: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": "1",
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE},
            "messages": messages, "statuses": statuses}}]}]}),
    )
    .expect("json")
}

async fn post_webhook(server: &TestServer, body: &[u8]) {
    let (status, answer) = server
        .send(
            server
                .client
                .post(format!("{}/webhooks/whatsapp", server.base))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", sign(SECRET.as_bytes(), body))
                .body(body.to_vec()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_and_the_events_api_give_the_same_figures() {
    let (by_api, api_key) = server().await;
    let mut all: Vec<Value> = vec![reply_event(&REPLIES[2])];
    all.extend(outbound_side(true).as_array().cloned().unwrap_or_default());
    all.extend(STATUSES.iter().map(status_event));
    all.extend(REPLIES[..2].iter().map(reply_event));
    assert_eq!(ingest(&by_api, &api_key, &Value::Array(all)).await, (22, 0));

    // The other: outbound messages without recipients through the API; statuses (with
    // Meta's pricing object and recipient ids) and the replies through the webhook.
    let (by_hook, hook_key) = server().await;
    let (status, body) = by_hook
        .send(by_hook.client.post(format!("{}/api/accounts", by_hook.base)).bearer_auth(&hook_key).json(
            &json!({"account_id": "acc1", "name": "Shop", "phone_number_id": PHONE, "verify_token": "t", "app_secret": SECRET}),
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let replies: Vec<Value> = REPLIES
        .iter()
        .map(|(id, answered, from, t)| {
            json!({"from": from, "id": id, "timestamp": at(t).to_string(), "type": "text",
                   "text": {"body": "yes"}, "context": {"from": "15550783881", "id": answered}})
        })
        .collect();
    post_webhook(&by_hook, &webhook_body(vec![replies[2].clone()], vec![])).await;
    assert_eq!(
        ingest(&by_hook, &hook_key, &outbound_side(false)).await,
        (10, 0)
    );
    let statuses: Vec<Value> = STATUSES
        .iter()
        .map(|(msg, st, pricing, to, t)| {
            let mut s = json!({"id": msg, "status": st, "timestamp": at(t).to_string(), "recipient_id": to});
            if let Some((category, kind)) = pricing {
                s["pricing"] = json!({"billable": *kind == "regular", "pricing_model": "PMP",
                                      "category": category, "type": kind});
            }
            if *st == "failed" {
                s["errors"] = json!([{"code": 131026, "title": "Message undeliverable"}]);
            }
            s
        })
        .collect();
    post_webhook(&by_hook, &webhook_body(replies[..2].to_vec(), statuses)).await;

    let api = answers(&by_api, &api_key).await;
    let hook = answers(&by_hook, &hook_key).await;
    assert_eq!(api, hook);
    assert_eq!(hook[2]["summary"]["billable_messages"], 4);
    assert_eq!(hook[0]["campaigns"][0]["replied"], 1);
}
