//! What the targets share: a fixed clock, and the SPEC event an `Event` reads back from.

#![allow(dead_code)] // Each target uses part of it.

use serde_json::{Map, Value, json};
use whatstat::engine::event::{
    Admission, CampaignStatus, ConversationStatus, Direction, EARLIEST_SECS, Event, EventBody,
    FUTURE_TOLERANCE_SECS, FlowStatus, MAX_ID_LEN, MAX_TOKENS, Parsed, parse_event,
};

/// "Now" for every target: 2026-01-01T00:00:00Z, so that a finding replays the same way.
pub const NOW: i64 = 1_767_225_600;
/// The default state window (35 days).
pub const STATE_WINDOW_SECS: i64 = 35 * 86_400;

pub fn admission(backfill: bool) -> Admission {
    Admission {
        now: NOW,
        state_window_secs: STATE_WINDOW_SECS,
        backfill,
    }
}

/// The event as a client would post it (SPEC section 2), with its time in Unix seconds.
/// The recipient's country cannot be written back (it comes from the recipient's number),
/// so compare with `without_country`.
pub fn render(e: &Event) -> Value {
    let mut m = Map::new();
    m.insert("account_id".into(), json!(e.account_id));
    m.insert("timestamp".into(), json!(e.at));
    let mut put = |k: &str, v: Value| {
        m.insert(k.into(), v);
    };
    match &e.body {
        EventBody::Contact { id } => {
            put("type", json!("contact"));
            put("id", json!(id));
        }
        EventBody::Message {
            id,
            direction,
            message_type,
            conversation_id,
            outbound,
            reply_to,
        } => {
            put("type", json!("message"));
            put("id", json!(id));
            let d = match direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            };
            put("direction", json!(d));
            put("message_type", json!(message_type));
            if let Some(c) = conversation_id {
                put("conversation_id", json!(c));
            }
            if let Some(c) = &outbound.campaign_id {
                put("campaign_id", json!(c));
            }
            if let Some(t) = &outbound.template {
                put("template_name", json!(t.name));
                if !t.language.is_empty() {
                    put("template_language", json!(t.language));
                }
                if !t.category.is_empty() {
                    put("template_category", json!(t.category));
                }
            }
            if let Some(r) = reply_to {
                put("reply_to", json!(r));
            }
        }
        EventBody::MessageStatus {
            message_id,
            status,
            error_code,
            pricing,
            country: _,
        } => {
            put("type", json!("message_status"));
            put("message_id", json!(message_id));
            let s = match status {
                whatstat::engine::event::DeliveryStatus::Sent => "sent",
                whatstat::engine::event::DeliveryStatus::Delivered => "delivered",
                whatstat::engine::event::DeliveryStatus::Read => "read",
                whatstat::engine::event::DeliveryStatus::Failed => "failed",
            };
            put("status", json!(s));
            if let Some(c) = error_code {
                put("error_code", json!(c));
            }
            if let Some(p) = pricing {
                put("pricing_category", json!(p.category));
                put("pricing_type", json!(p.kind.as_str()));
            }
        }
        EventBody::Campaign { id, status } => {
            put("type", json!("campaign"));
            put("id", json!(id));
            put("status", json!(campaign_status(*status)));
        }
        EventBody::Conversation { id, status } => {
            put("type", json!("conversation"));
            put("id", json!(id));
            let s = match status {
                ConversationStatus::Started => "started",
                ConversationStatus::AutoResolved => "auto_resolved",
                ConversationStatus::Transferred => "transferred",
                ConversationStatus::Abandoned => "abandoned",
            };
            put("status", json!(s));
        }
        EventBody::Flow {
            id,
            flow_name,
            status,
        } => {
            put("type", json!("flow"));
            put("id", json!(id));
            put("flow_name", json!(flow_name));
            let s = match status {
                FlowStatus::Started => "started",
                FlowStatus::Completed => "completed",
            };
            put("status", json!(s));
        }
        EventBody::Keyword { keyword, id } => {
            put("type", json!("keyword"));
            put("keyword", json!(keyword));
            if let Some(i) = id {
                put("id", json!(i));
            }
        }
        EventBody::AiRequest {
            id,
            tokens,
            model,
            cost_micros,
        } => {
            put("type", json!("ai_request"));
            if let Some(i) = id {
                put("id", json!(i));
            }
            // `prompt_tokens` and `completion_tokens` may each be at most MAX_TOKENS, so
            // their sum may exceed what `tokens` alone allows.
            if *tokens <= MAX_TOKENS {
                put("tokens", json!(tokens));
            } else {
                put("prompt_tokens", json!(MAX_TOKENS));
                put("completion_tokens", json!(tokens - MAX_TOKENS));
            }
            if !model.is_empty() {
                put("model", json!(model));
            }
            if let Some(c) = cost_micros {
                put("cost", json!(*c as f64 / 1_000_000.0));
            }
        }
    }
    Value::Object(m)
}

fn campaign_status(s: CampaignStatus) -> &'static str {
    s.as_str()
}

/// The event with the recipient's country left out.
pub fn without_country(e: &Event) -> Event {
    let mut e = e.clone();
    match &mut e.body {
        EventBody::Message { outbound, .. } => outbound.country = None,
        EventBody::MessageStatus { country, .. } => *country = None,
        _ => {}
    }
    e
}

/// An identifier as the event model allows it.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_ID_LEN && !s.chars().any(char::is_control)
}

/// Asserts what every accepted event satisfies, and that it reads back as itself when
/// posted as the SPEC's JSON (with `backfill` as given).
pub fn assert_valid_event(e: &Event, backfill: bool) {
    assert!(valid_id(&e.account_id), "account_id {:?}", e.account_id);
    assert!(
        e.at >= EARLIEST_SECS && e.at <= NOW + FUTURE_TOLERANCE_SECS,
        "timestamp {} out of bounds",
        e.at
    );
    match &e.body {
        EventBody::Contact { id } => assert!(valid_id(id)),
        EventBody::Message {
            id,
            message_type,
            conversation_id,
            outbound,
            reply_to,
            ..
        } => {
            assert!(valid_id(id));
            assert!(
                !message_type.is_empty()
                    && message_type.len() <= 64
                    && message_type
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "message_type {message_type:?}"
            );
            for s in [conversation_id, &outbound.campaign_id, reply_to]
                .into_iter()
                .flatten()
            {
                assert!(valid_id(s), "{s:?}");
            }
        }
        EventBody::MessageStatus {
            message_id,
            error_code,
            pricing,
            ..
        } => {
            assert!(valid_id(message_id));
            if let Some(c) = error_code {
                assert!(valid_id(c), "error_code {c:?}");
            }
            if let Some(p) = pricing {
                assert!(valid_id(&p.category), "pricing_category {:?}", p.category);
            }
        }
        EventBody::AiRequest {
            tokens,
            cost_micros,
            ..
        } => {
            assert!(*tokens <= 2 * MAX_TOKENS, "tokens {tokens}");
            if let Some(c) = cost_micros {
                assert!((0..=1_000_000_000_000).contains(c), "cost {c}");
            }
        }
        _ => {}
    }
    let text = render(e).to_string();
    let raw = serde_json::value::RawValue::from_string(text.clone()).expect("rendered JSON");
    match parse_event(&raw, &admission(backfill)) {
        Ok(Parsed::Event(back)) => assert_eq!(
            without_country(&back),
            without_country(e),
            "the event does not read back as itself from {text}"
        ),
        other => panic!("the event {e:?} does not read back from {text}: {other:?}"),
    }
}
