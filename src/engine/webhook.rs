//! Meta's WhatsApp Cloud API webhook (SPEC section 5): signature checks, the pure
//! translation of a payload into SPEC events, and the engine's receiving, keeping and
//! replaying of payloads.
//!
//! A payload names accounts by `entry[].changes[].value.metadata.phone_number_id`. Its
//! `X-Hub-Signature-256` must verify with the app secret of every account it names;
//! then the changes of each account are translated and ingested (with backfill, since
//! Meta retries for up to 7 days), one `Ingest::ingest_events` write per organization. Changes
//! for a `phone_number_id` no account claims are kept as received (raw body and
//! signature header, in a bounded space) and replayed, their signature checked with the
//! new account's app secret, once an account claims that number.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use jiff::tz::TimeZone;
use sha2::Sha256;

use super::event::{
    DeliveryStatus, Direction, EARLIEST_SECS, Event, EventBody, FUTURE_TOLERANCE_SECS,
};
use super::time::Calendar;
use super::{Clock, EngineConfig, EngineError, Ingest, Org, Tenants};
use crate::secrets::{SecretError, SecretKey};
use crate::store::{AccountRecord, AccountStore, UnroutedPayload, UnroutedStore};

/// Longest identifier the event model accepts.
const MAX_ID_LEN: usize = 256;
/// Longest message type the event model accepts.
const MAX_TYPE_LEN: usize = 64;

/// Where the key that seals app secrets comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Given at start-up (`--secret-key`).
    Key(SecretKey),
    /// Read from (or created as) a file of random bytes.
    KeyFile(PathBuf),
    /// A random key for this process only: sealed secrets do not survive a restart.
    Ephemeral,
}

/// Settings of the Meta webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub secret: SecretSource,
    /// Kept unrouted payloads: at most this many...
    pub unrouted_max_payloads: usize,
    /// ...totalling at most this many bytes of bodies; the oldest are dropped first.
    pub unrouted_max_bytes: usize,
    resolved: Arc<OnceLock<SecretKey>>,
}

pub const DEFAULT_UNROUTED_MAX_PAYLOADS: usize = 1_000;
pub const DEFAULT_UNROUTED_MAX_BYTES: usize = 64 * 1024 * 1024;

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig::new(
            SecretSource::Ephemeral,
            DEFAULT_UNROUTED_MAX_PAYLOADS,
            DEFAULT_UNROUTED_MAX_BYTES,
        )
    }
}

impl WebhookConfig {
    pub fn new(secret: SecretSource, max_payloads: usize, max_bytes: usize) -> Self {
        WebhookConfig {
            secret,
            unrouted_max_payloads: max_payloads,
            unrouted_max_bytes: max_bytes,
            resolved: Arc::new(OnceLock::new()),
        }
    }

    /// The sealing key; a key file is read (or created) on first use.
    pub fn secret_key(&self) -> Result<SecretKey, SecretError> {
        match &self.secret {
            SecretSource::Key(k) => Ok(k.clone()),
            SecretSource::Ephemeral => Ok(SecretKey::ephemeral().clone()),
            SecretSource::KeyFile(path) => {
                if let Some(k) = self.resolved.get() {
                    return Ok(k.clone());
                }
                let k = SecretKey::load_or_create(path)?;
                Ok(self.resolved.get_or_init(|| k).clone())
            }
        }
    }
}

impl From<SecretError> for EngineError {
    fn from(e: SecretError) -> Self {
        EngineError::Internal(e.to_string())
    }
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` over the raw body, in constant time.
pub fn signature_matches(app_secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(app_secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The header value Meta would send for `body` signed with `app_secret`.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(app_secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Meta's payload, as far as whatstat reads it. Meta adds fields over time: unknown ones
/// are ignored, and a known one of an unexpected type reads as absent, so that one odd
/// item never costs the rest of the payload.
mod meta {
    use std::borrow::Cow;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserialize;
    use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer, StrDeserializer};
    use serde::de::{
        self, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor,
    };

    /// A value that is absent when it is missing or not of the expected type.
    #[derive(Debug)]
    pub struct Lenient<T>(pub Option<T>);

    impl<T> Default for Lenient<T> {
        fn default() -> Self {
            Lenient(None)
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(LenientVisitor(PhantomData))
        }
    }

    struct LenientVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for LenientVisitor<T> {
        type Value = Lenient<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }

        // A `T` that takes no object refuses it before reading any of it: the
        // rest is skipped and the value reads as absent.
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            match T::deserialize(MapAccessDeserializer::new(&mut map)) {
                Ok(v) => Ok(Lenient(Some(v))),
                Err(e) => {
                    while map
                        .next_entry::<IgnoredAny, IgnoredAny>()
                        .map_err(|_| e.clone_message())?
                        .is_some()
                    {}
                    Ok(Lenient(None))
                }
            }
        }

        // Lists are read by `List`: here one reads as absent.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Lenient(None))
        }

        fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok(Lenient(
                T::deserialize(BorrowedStrDeserializer::<E>::new(s)).ok(),
            ))
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Lenient(T::deserialize(StrDeserializer::<E>::new(s)).ok()))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            Ok(Lenient(
                T::deserialize(IntoDeserializer::<E>::into_deserializer(n)).ok(),
            ))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Lenient(
                T::deserialize(IntoDeserializer::<E>::into_deserializer(n)).ok(),
            ))
        }

        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
            Ok(Lenient(
                T::deserialize(IntoDeserializer::<E>::into_deserializer(n)).ok(),
            ))
        }

        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
            Ok(Lenient(
                T::deserialize(IntoDeserializer::<E>::into_deserializer(b)).ok(),
            ))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Lenient(None))
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Lenient(None))
        }
    }

    /// The first error, kept when skipping the rest of its value fails too.
    trait CloneMessage {
        fn clone_message(&self) -> Self;
    }

    impl<E: de::Error> CloneMessage for E {
        fn clone_message(&self) -> Self {
            E::custom(self)
        }
    }

    impl<T> Lenient<T> {
        pub fn get(&self) -> Option<&T> {
            self.0.as_ref()
        }
    }

    /// A list that is empty when it is missing or not a list; each item is `None` when it
    /// is not of the expected type.
    #[derive(Debug)]
    pub struct List<T>(Vec<Lenient<T>>);

    impl<T> Default for List<T> {
        fn default() -> Self {
            List(Vec::new())
        }
    }

    impl<T> List<T> {
        pub fn items(&self) -> impl Iterator<Item = Option<&T>> {
            self.0.iter().map(Lenient::get)
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = List<T>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                    let mut items = Vec::new();
                    while let Some(item) = seq.next_element::<Lenient<T>>()? {
                        items.push(item);
                    }
                    Ok(List(items))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<List<T>, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(List::default())
                }
                fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<List<T>, E> {
                    Ok(List::default())
                }
                fn visit_str<E: de::Error>(self, _: &str) -> Result<List<T>, E> {
                    Ok(List::default())
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<List<T>, E> {
                    Ok(List::default())
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<List<T>, E> {
                    Ok(List::default())
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<List<T>, E> {
                    Ok(List::default())
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<List<T>, E> {
                    Ok(List::default())
                }
                fn visit_unit<E: de::Error>(self) -> Result<List<T>, E> {
                    Ok(List::default())
                }
                fn visit_none<E: de::Error>(self) -> Result<List<T>, E> {
                    Ok(List::default())
                }
            }
            d.deserialize_any(V(PhantomData))
        }
    }

    pub type Text<'a> = Lenient<Cow<'a, str>>;

    pub fn text<'s>(t: &'s Text<'_>) -> Option<&'s str> {
        t.get().map(|c| c.as_ref())
    }

    /// A string or a number, kept as Meta sent it (timestamps and error codes come as both).
    #[derive(Debug)]
    pub enum Scalar<'a> {
        Text(Cow<'a, str>),
        Number(serde_json::Number),
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Scalar<'a>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string or a number")
                }
                fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Text(Cow::Borrowed(s)))
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Text(Cow::Owned(s.to_string())))
                }
                fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Number(n.into()))
                }
                fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Number(n.into()))
                }
                fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar<'a>, E> {
                    serde_json::Number::from_f64(n)
                        .map(Scalar::Number)
                        .ok_or_else(|| E::custom("not a finite number"))
                }
            }
            d.deserialize_any(V(PhantomData))
        }
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Payload<'a> {
        #[serde(borrow, default)]
        pub entry: List<Entry<'a>>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Entry<'a> {
        #[serde(borrow, default)]
        pub changes: List<Change<'a>>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Change<'a> {
        #[serde(borrow, default)]
        pub field: Text<'a>,
        #[serde(borrow, default)]
        pub value: Lenient<ChangeValue<'a>>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct ChangeValue<'a> {
        #[serde(borrow, default)]
        pub metadata: Lenient<Metadata<'a>>,
        #[serde(borrow, default)]
        pub messages: List<Message<'a>>,
        #[serde(borrow, default)]
        pub contacts: List<Contact<'a>>,
        #[serde(borrow, default)]
        pub statuses: List<Status<'a>>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Metadata<'a> {
        #[serde(borrow, default)]
        pub phone_number_id: Text<'a>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Message<'a> {
        #[serde(borrow, default)]
        pub id: Text<'a>,
        #[serde(borrow, default)]
        pub from: Text<'a>,
        /// The sender's business-scoped user id, which replaces `from` for a customer
        /// who hides their number behind a username.
        #[serde(borrow, default)]
        pub from_user_id: Text<'a>,
        #[serde(borrow, default)]
        pub timestamp: Lenient<Scalar<'a>>,
        #[serde(borrow, default, rename = "type")]
        pub kind: Text<'a>,
        /// What the customer answered (a reply quotes the message it answers).
        #[serde(borrow, default)]
        pub context: Lenient<Context<'a>>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Context<'a> {
        #[serde(borrow, default)]
        pub id: Text<'a>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Contact<'a> {
        #[serde(borrow, default)]
        pub wa_id: Text<'a>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Status<'a> {
        #[serde(borrow, default)]
        pub id: Text<'a>,
        #[serde(borrow, default)]
        pub status: Text<'a>,
        #[serde(borrow, default)]
        pub timestamp: Lenient<Scalar<'a>>,
        #[serde(borrow, default)]
        pub errors: List<StatusError<'a>>,
        #[serde(borrow, default)]
        pub pricing: Lenient<Pricing<'a>>,
        #[serde(borrow, default)]
        pub recipient_id: Text<'a>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct StatusError<'a> {
        #[serde(borrow, default)]
        pub code: Lenient<Scalar<'a>>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct Pricing<'a> {
        #[serde(borrow, default)]
        pub category: Text<'a>,
        /// `regular`, `free_customer_service` or `free_entry_point` (per-message pricing).
        #[serde(borrow, default, rename = "type")]
        pub kind: Text<'a>,
        /// Deprecated by Meta; read only when `type` is absent.
        #[serde(default)]
        pub billable: Lenient<bool>,
    }
}

pub use meta::Payload;

impl<'a> Payload<'a> {
    /// Reads a webhook body; a payload of an unexpected shape reads as naming nothing.
    pub fn parse(body: &'a [u8]) -> Result<Payload<'a>, serde_json::Error> {
        let whole: meta::Lenient<Payload<'a>> = serde_json::from_slice(body)?;
        Ok(whole.0.unwrap_or_default())
    }

    fn changes(&self) -> impl Iterator<Item = &meta::Change<'a>> {
        self.entry
            .items()
            .flatten()
            .flat_map(|e| e.changes.items().flatten())
    }
}

fn phone_of<'c>(change: &'c meta::Change<'_>) -> Option<&'c str> {
    change
        .value
        .get()?
        .metadata
        .get()
        .and_then(|m| meta::text(&m.phone_number_id))
        .filter(|p| !p.is_empty())
}

/// Every `phone_number_id` a payload names, in order of first appearance.
pub fn phone_number_ids(payload: &Payload<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for change in payload.changes() {
        if let Some(p) = phone_of(change)
            && !out.iter().any(|o| o == p)
        {
            out.push(p.to_string());
        }
    }
    out
}

/// The events of one account's changes, and what could not be translated.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Translation {
    pub events: Vec<Event>,
    /// Items left out, with the reason (unknown statuses, missing ids, bad timestamps).
    pub skipped: Vec<String>,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control)
}

/// Meta's message types become the event model's lowercase words, whatever new word
/// Meta sends: other characters turn into `_`.
/// Meta's message types that announce something about the chat instead of carrying a
/// customer's message; they count in no figure.
pub const NOT_RECEIVED: [&str; 4] = ["system", "request_welcome", "edit", "revoke"];

fn message_type(t: Option<&str>) -> String {
    let t: String = t
        .unwrap_or("")
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TYPE_LEN)
        .collect();
    if t.is_empty() { "unknown".into() } else { t }
}

/// A Meta timestamp: Unix seconds as a string (or a number), within what is accepted.
fn timestamp(v: Option<&meta::Scalar<'_>>, now: i64) -> Result<i64, String> {
    let secs = match v {
        Some(meta::Scalar::Text(s)) => s.trim().parse::<i64>().ok(),
        Some(meta::Scalar::Number(n)) => n.as_i64(),
        None => None,
    }
    .ok_or_else(|| "no Unix-seconds `timestamp`".to_string())?;
    if secs < EARLIEST_SECS {
        return Err(format!("timestamp {secs} is before 2000"));
    }
    if secs > now + FUTURE_TOLERANCE_SECS {
        return Err(format!("timestamp {secs} is in the future"));
    }
    Ok(secs)
}

fn delivery_status(s: &str) -> Option<DeliveryStatus> {
    Some(match s {
        "sent" => DeliveryStatus::Sent,
        "delivered" => DeliveryStatus::Delivered,
        "read" => DeliveryStatus::Read,
        "failed" => DeliveryStatus::Failed,
        _ => return None,
    })
}

/// Translates the `messages` changes of one `phone_number_id` into events of
/// `account_id`, valid as the event model requires. Pure: `now` only bounds timestamps.
/// Contacts come once per sender (`from`, else `from_user_id`), at the earliest of its
/// messages here (the engine keeps the earliest across requests).
pub fn translate(
    payload: &Payload<'_>,
    phone_number_id: &str,
    account_id: &str,
    now: i64,
) -> Translation {
    let mut out = Translation::default();
    let mut contacts: BTreeMap<String, i64> = BTreeMap::new();
    let event = |at: i64, body: EventBody| Event {
        account_id: account_id.to_string(),
        at,
        body,
    };
    for change in payload.changes() {
        if phone_of(change) != Some(phone_number_id)
            || meta::text(&change.field) != Some("messages")
        {
            continue;
        }
        let Some(value) = change.value.get() else {
            continue;
        };
        for m in value.messages.items() {
            let none = meta::Message::default();
            let m = m.unwrap_or(&none);
            let Some(id) = meta::text(&m.id).filter(|id| valid_id(id)) else {
                out.skipped.push("a message without a valid `id`".into());
                continue;
            };
            let at = match timestamp(m.timestamp.get(), now) {
                Ok(at) => at,
                Err(e) => {
                    out.skipped.push(format!("message {id}: {e}"));
                    continue;
                }
            };
            let kind = meta::text(&m.kind);
            // Notices about the chat rather than messages from the customer: a changed
            // number, a chat opened without a message, an edit or a deletion of an earlier
            // message. None is a received message, nor says who a new contact is.
            if let Some(notice) = kind.filter(|k| NOT_RECEIVED.contains(k)) {
                out.skipped.push(format!(
                    "message {id} of type `{notice}` is a notice, not a received message"
                ));
                continue;
            }
            // The contact is the message's sender: its number, else its business-scoped
            // user id. The `contacts[]` profiles beside it name the same people.
            let sender = meta::text(&m.from)
                .filter(|f| valid_id(f))
                .or_else(|| meta::text(&m.from_user_id).filter(|f| valid_id(f)));
            if let Some(from) = sender {
                let first = contacts.entry(from.to_string()).or_insert(at);
                *first = (*first).min(at);
            }
            out.events.push(event(
                at,
                EventBody::Message {
                    id: id.to_string(),
                    direction: Direction::Inbound,
                    message_type: message_type(kind),
                    conversation_id: None,
                    outbound: Default::default(),
                    reply_to: m
                        .context
                        .get()
                        .and_then(|c| meta::text(&c.id))
                        .filter(|id| valid_id(id))
                        .map(str::to_string),
                },
            ));
        }
        for s in value.statuses.items() {
            let none = meta::Status::default();
            let s = s.unwrap_or(&none);
            let Some(id) = meta::text(&s.id).filter(|id| valid_id(id)) else {
                out.skipped.push("a status without a valid `id`".into());
                continue;
            };
            let word = meta::text(&s.status).unwrap_or("");
            let Some(status) = delivery_status(word) else {
                out.skipped.push(format!(
                    "status `{word}` of message {id} is not counted (counted: sent, delivered, read, failed)"
                ));
                continue;
            };
            let at = match timestamp(s.timestamp.get(), now) {
                Ok(at) => at,
                Err(e) => {
                    out.skipped.push(format!("status of message {id}: {e}"));
                    continue;
                }
            };
            let error_code = if status == DeliveryStatus::Failed {
                let first = s.errors.items().next().flatten();
                match first.and_then(|e| e.code.get()) {
                    Some(meta::Scalar::Number(n)) => Some(n.to_string()),
                    Some(meta::Scalar::Text(c)) if valid_id(c) => Some(c.to_string()),
                    _ => None,
                }
            } else {
                None
            };
            let pricing = s.pricing.get().and_then(pricing);
            let country = meta::text(&s.recipient_id)
                .and_then(super::country::of_recipient)
                .map(str::to_string);
            out.events.push(event(
                at,
                EventBody::MessageStatus {
                    message_id: id.to_string(),
                    status,
                    error_code,
                    pricing,
                    country,
                },
            ));
        }
    }
    for (wa_id, at) in contacts {
        out.events.push(event(at, EventBody::Contact { id: wa_id }));
    }
    out
}

/// A status's `pricing`: its `type` when Meta gives one; before per-message pricing, the
/// deprecated `billable: false` meant free (as customer service) and anything else regular.
fn pricing(p: &meta::Pricing) -> Option<super::event::Pricing> {
    use super::event::PricingType;
    let category = meta::text(&p.category).filter(|c| valid_id(c))?;
    let kind = match meta::text(&p.kind) {
        Some(t) => PricingType::parse(t).unwrap_or(PricingType::Regular),
        None if p.billable.get() == Some(&false) => PricingType::FreeCustomerService,
        None => PricingType::Regular,
    };
    Some(super::event::Pricing {
        category: category.to_string(),
        kind,
    })
}

/// What a webhook POST did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    pub accepted: u64,
    pub duplicates: u64,
    /// Items not counted: other statuses, items Meta sent without an id or a usable time.
    pub ignored: u64,
    /// Numbers no account claims; the payload was kept for them.
    pub unrouted_phone_number_ids: Vec<String>,
    /// The id of the kept payload, if it was kept.
    pub kept_payload: Option<i64>,
}

/// What replaying kept payloads for a newly registered number did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    /// Payloads applied (and released) for this number.
    pub payloads: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub ignored: u64,
    /// Payloads whose signature does not verify with this account's app secret: they are
    /// kept (and listed by the admin API), and tried again when the account changes.
    pub bad_signature: Vec<i64>,
    /// Payloads that could not be applied now (e.g. overload); kept, tried again later.
    pub failed: Vec<i64>,
}

/// An unrouted payload as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UnroutedView {
    pub id: i64,
    pub received_at: String,
    pub phone_number_ids: Vec<String>,
    pub signature: Option<String>,
    pub bytes: usize,
    /// The body as received (UTF-8, as Meta sends JSON).
    pub body: String,
}

pub(super) fn org_from_record(rec: crate::store::OrgRecord) -> Result<Org, EngineError> {
    let tz = TimeZone::get(&rec.timezone)
        .map_err(|e| EngineError::Internal(format!("stored time zone {}: {e}", rec.timezone)))?;
    Ok(Org {
        id: rec.id,
        name: rec.name,
        timezone: rec.timezone,
        calendar: Calendar::new(tz),
        account_limit: None,
    })
}

fn show_time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// Meta's webhook: the verification handshake, receiving payloads, and keeping and
/// replaying those no account claims yet.
pub struct Webhook {
    pub(super) forwarding: Arc<super::forwarding::Forwarding>,
    pub(super) accounts: Arc<dyn AccountStore>,
    pub(super) unrouted: Arc<dyn UnroutedStore>,
    pub(super) tenants: Arc<Tenants>,
    pub(super) ingest: Arc<Ingest>,
    pub(super) config: Arc<EngineConfig>,
    pub(super) clock: Arc<Clock>,
}

impl Webhook {
    /// The verification handshake: the challenge when the token is an account's.
    pub async fn handshake(
        &self,
        mode: Option<&str>,
        token: Option<&str>,
        challenge: Option<&str>,
    ) -> Result<String, EngineError> {
        let refuse = || EngineError::Forbidden("webhook verification failed".into());
        let (Some("subscribe"), Some(token), Some(challenge)) = (mode, token, challenge) else {
            return Err(refuse());
        };
        if token.is_empty()
            || !self
                .accounts
                .verify_token_known(&crate::secrets::hash_token(token))
                .await?
        {
            return Err(refuse());
        }
        Ok(challenge.to_string())
    }

    fn open_app_secret(&self, account: &AccountRecord) -> Result<Option<Vec<u8>>, EngineError> {
        match &account.app_secret {
            None => Ok(None),
            Some(sealed) => Ok(Some(self.config.webhook.secret_key()?.open(sealed)?)),
        }
    }

    /// Receives one POST: checks, translates and applies it, keeping what no account
    /// claims, and puts it into the outbox for the forward URLs of the accounts it names.
    pub async fn receive(
        &self,
        body: &[u8],
        signature: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<WebhookReceipt, EngineError> {
        let Some(signature) = signature else {
            return Err(EngineError::MissingSignature(
                "missing X-Hub-Signature-256 header".into(),
            ));
        };
        let well_formed = signature
            .trim()
            .strip_prefix("sha256=")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !well_formed {
            return Err(EngineError::BadSignature(
                "X-Hub-Signature-256 must be sha256=<64 hex digits>".into(),
            ));
        }
        let payload = Payload::parse(body).map_err(|e| {
            EngineError::BadRequest(format!("the webhook body is not valid JSON: {e}"))
        })?;
        // Valid JSON that is not an object (a string, a list) is no update of Meta's.
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(EngineError::BadRequest(
                "the webhook body must be a JSON object (Meta's update with `object` and `entry`)"
                    .into(),
            ));
        }
        let mut routed: Vec<(String, AccountRecord)> = Vec::new();
        let mut unrouted: Vec<String> = Vec::new();
        for phone in phone_number_ids(&payload) {
            match self.accounts.account_by_phone(&phone).await? {
                Some(a) => routed.push((phone, a)),
                None => unrouted.push(phone),
            }
        }
        // Every account the payload names must vouch for it before anything is recorded.
        for (_, account) in &routed {
            let ok = self
                .open_app_secret(account)?
                .is_some_and(|secret| signature_matches(&secret, body, signature));
            if !ok {
                return Err(EngineError::BadSignature(
                    "X-Hub-Signature-256 does not match the app secret of the account".into(),
                ));
            }
        }
        let now = self.clock.now();
        let mut receipt = WebhookReceipt::default();
        let mut by_org: HashMap<String, Vec<Event>> = HashMap::new();
        for (phone, account) in &routed {
            let t = translate(&payload, phone, &account.account_id, now);
            receipt.ignored += t.skipped.len() as u64;
            by_org
                .entry(account.org.clone())
                .or_default()
                .extend(t.events);
        }
        // Forwarded in the commit of each organization's figures (see `forwarding`).
        let mut deliveries = self.forwarding.deliveries_for(
            routed.iter().map(|(_, a)| a),
            body,
            signature,
            content_type,
        );
        let forwarded = !deliveries.is_empty();
        for org in deliveries.keys() {
            by_org.entry(org.clone()).or_default();
        }
        for (org, events) in by_org {
            let outbox = deliveries.remove(&org).unwrap_or_default();
            let (accepted, duplicates, ignored) =
                self.ingest_translated(&org, events, outbox).await?;
            receipt.accepted += accepted;
            receipt.duplicates += duplicates;
            receipt.ignored += ignored;
        }
        if forwarded {
            self.forwarding.wake();
        }
        if !unrouted.is_empty() {
            let kept = UnroutedPayload {
                id: 0,
                received_at: now,
                phone_number_ids: unrouted.clone(),
                signature: Some(signature.to_string()),
                body: body.to_vec(),
            };
            let id = self
                .unrouted
                .keep_unrouted(
                    &kept,
                    self.config.webhook.unrouted_max_payloads,
                    self.config.webhook.unrouted_max_bytes,
                )
                .await?;
            tracing::info!(payload = id, phone_number_ids = ?unrouted, "kept a webhook payload no account claims");
            receipt.kept_payload = Some(id);
            receipt.unrouted_phone_number_ids = unrouted;
        }
        Ok(receipt)
    }

    /// Applies translated events of one organization in one write. Meta retries for up
    /// to 7 days, so there is no state-window check: translation bounded the times.
    async fn ingest_translated(
        &self,
        org: &str,
        events: Vec<Event>,
        outbox: Vec<crate::store::OutboxDelivery>,
    ) -> Result<(u64, u64, u64), EngineError> {
        if events.is_empty() && outbox.is_empty() {
            return Ok((0, 0, 0));
        }
        let org = self
            .tenants
            .by_id(org)
            .await?
            .ok_or_else(|| EngineError::Internal(format!("organization {org} is gone")))?;
        let report = self
            .ingest
            .ingest_events_forwarded(&org, events, outbox)
            .await?;
        Ok((
            report.accepted,
            report.duplicates,
            report.ignored.len() as u64,
        ))
    }

    /// Replays the kept payloads naming this account's number, checking each signature
    /// with its app secret.
    pub async fn replay_unrouted(
        &self,
        account: &AccountRecord,
    ) -> Result<ReplayReport, EngineError> {
        let mut report = ReplayReport::default();
        let Some(phone) = &account.phone_number_id else {
            return Ok(report);
        };
        let secret = self.open_app_secret(account)?;
        let now = self.clock.now();
        for p in self.unrouted.unrouted(Some(phone)).await? {
            let ok = match (&secret, &p.signature) {
                (Some(secret), Some(sig)) => signature_matches(secret, &p.body, sig),
                _ => false,
            };
            if !ok {
                tracing::warn!(payload = p.id, phone_number_id = %phone, account = %account.account_id,
                    "kept webhook payload does not verify with the account's app secret; left unrouted");
                report.bad_signature.push(p.id);
                continue;
            }
            let Ok(payload) = Payload::parse(&p.body) else {
                report.bad_signature.push(p.id);
                continue;
            };
            let t = translate(&payload, phone, &account.account_id, now);
            // Kept payloads are counted when replayed, never forwarded: no account
            // vouched for them when Meta sent them.
            match self
                .ingest_translated(&account.org, t.events, Vec::new())
                .await
            {
                Ok((accepted, duplicates, ignored)) => {
                    report.payloads += 1;
                    report.accepted += accepted;
                    report.duplicates += duplicates;
                    report.ignored += ignored + t.skipped.len() as u64;
                    self.unrouted.release_unrouted(p.id, phone).await?;
                }
                Err(e) => {
                    tracing::warn!(payload = p.id, error = %e, "kept webhook payload could not be replayed; left unrouted");
                    report.failed.push(p.id);
                }
            }
        }
        if report.payloads > 0 || !report.bad_signature.is_empty() {
            tracing::info!(account = %account.account_id, phone_number_id = %phone, ?report, "replayed kept webhook payloads");
        }
        Ok(report)
    }

    /// Kept payloads, oldest first, for the admin API.
    pub async fn unrouted_payloads(
        &self,
        phone_number_id: Option<&str>,
    ) -> Result<Vec<UnroutedView>, EngineError> {
        Ok(self
            .unrouted
            .unrouted(phone_number_id)
            .await?
            .into_iter()
            .map(|p| UnroutedView {
                id: p.id,
                received_at: show_time(p.received_at),
                phone_number_ids: p.phone_number_ids,
                signature: p.signature,
                bytes: p.body.len(),
                body: String::from_utf8_lossy(&p.body).into_owned(),
            })
            .collect())
    }

    /// How many payloads are kept for numbers no account claims.
    pub async fn unrouted_count(&self) -> Result<u64, EngineError> {
        Ok(self.unrouted.unrouted_count().await?)
    }

    pub async fn delete_unrouted(&self, id: i64) -> Result<(), EngineError> {
        if self.unrouted.delete_unrouted(id).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!(
                "no kept webhook payload with id {id}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const NOW: i64 = 1_717_000_000;

    fn payload(value: Value) -> Vec<u8> {
        body(
            json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]}),
        )
    }

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("json")
    }

    fn meta(phone: &str) -> Value {
        json!({"display_phone_number": "15550001111", "phone_number_id": phone})
    }

    fn run(bytes: &[u8], phone: &str) -> Translation {
        translate(&Payload::parse(bytes).expect("payload"), phone, "acc", NOW)
    }

    #[test]
    fn signatures_verify_in_both_directions() {
        let sig = sign(b"secret", b"{}");
        assert!(signature_matches(b"secret", b"{}", &sig));
        assert!(!signature_matches(b"other", b"{}", &sig));
        assert!(!signature_matches(b"secret", b"{ }", &sig));
        assert!(!signature_matches(
            b"secret",
            b"{}",
            sig.trim_start_matches("sha256=")
        ));
        assert!(!signature_matches(b"secret", b"{}", "sha256=zz"));
    }

    #[test]
    fn messages_become_inbound_messages_and_one_contact_per_wa_id() {
        let p = payload(json!({
            "messaging_product": "whatsapp", "metadata": meta("111"),
            "contacts": [{"profile": {"name": "A"}, "wa_id": "9190"}],
            "messages": [
                {"from": "9190", "id": "wamid.2", "timestamp": "1716999900", "type": "image", "image": {}},
                {"from": "9190", "id": "wamid.1", "timestamp": "1716999800", "type": "text", "text": {"body": "hi"}},
                {"from": "9190", "id": "wamid.3", "timestamp": "1716999950", "type": "Some-New Type"}
            ]
        }));
        let t = run(&p, "111");
        assert!(t.skipped.is_empty());
        let types: Vec<&str> = t
            .events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::Message { message_type, .. } => Some(message_type.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(types, ["image", "text", "some_new_type"]);
        assert!(matches!(
            &t.events[0].body,
            EventBody::Message { id, direction: Direction::Inbound, conversation_id: None, .. } if id == "wamid.2"
        ));
        assert_eq!(t.events[0].account_id, "acc");
        assert_eq!(t.events[0].at, 1_716_999_900);
        let contacts: Vec<&Event> = t
            .events
            .iter()
            .filter(|e| matches!(e.body, EventBody::Contact { .. }))
            .collect();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].body, EventBody::Contact { id: "9190".into() });
        assert_eq!(contacts[0].at, 1_716_999_800);
        // Another number's changes are not this account's.
        assert!(run(&p, "222").events.is_empty());
    }

    #[test]
    fn pricing_reads_the_type_and_else_the_deprecated_billable() {
        use crate::engine::event::PricingType::*;
        let read = |v: Value| -> Option<(String, crate::engine::event::PricingType)> {
            let text = v.to_string();
            let p: meta::Pricing = serde_json::from_str(&text).ok()?;
            pricing(&p).map(|p| (p.category, p.kind))
        };
        let pmp = json!({"billable": false, "pricing_model": "PMP", "category": "utility", "type": "free_entry_point"});
        assert_eq!(read(pmp), Some(("utility".into(), FreeEntryPoint)));
        let old_free = json!({"billable": false, "pricing_model": "CBP", "category": "service"});
        assert_eq!(
            read(old_free),
            Some(("service".into(), FreeCustomerService))
        );
        let old_paid = json!({"billable": true, "pricing_model": "CBP", "category": "marketing"});
        assert_eq!(read(old_paid), Some(("marketing".into(), Regular)));
        assert_eq!(
            read(json!({"type": "regular"})),
            None,
            "no category, no pricing"
        );
    }

    #[test]
    fn statuses_keep_error_code_and_pricing_and_skip_others() {
        let p = payload(json!({
            "metadata": meta("111"),
            "statuses": [
                {"id": "m1", "status": "failed", "timestamp": "1716999000", "recipient_id": "1",
                 "errors": [{"code": 131026, "title": "Message undeliverable"}, {"code": 1}]},
                {"id": "m2", "status": "delivered", "timestamp": "1716999000", "recipient_id": "1",
                 "pricing": {"billable": true, "pricing_model": "CBP", "category": "marketing"}},
                {"id": "m3", "status": "deleted", "timestamp": "1716999000"},
                {"id": "m4", "status": "read", "timestamp": "soon"},
                {"id": "m5", "status": "read", "timestamp": (NOW + 3600).to_string()}
            ]
        }));
        let t = run(&p, "111");
        assert_eq!(t.events.len(), 2);
        assert_eq!(
            t.events[0].body,
            EventBody::MessageStatus {
                message_id: "m1".into(),
                status: DeliveryStatus::Failed,
                error_code: Some("131026".into()),
                pricing: None,
                country: Some("unknown".into()),
            }
        );
        assert_eq!(
            t.events[1].body,
            EventBody::MessageStatus {
                message_id: "m2".into(),
                status: DeliveryStatus::Delivered,
                error_code: None,
                pricing: Some(crate::engine::event::Pricing {
                    category: "marketing".into(),
                    kind: crate::engine::event::PricingType::Regular,
                }),
                country: Some("unknown".into()),
            }
        );
        assert_eq!(t.skipped.len(), 3, "{:?}", t.skipped);
    }

    #[test]
    fn other_fields_translate_to_nothing_and_phones_are_listed_once() {
        let p = body(json!({"object": "whatsapp_business_account", "entry": [
        {"id": "W", "changes": [
            {"field": "message_template_status_update", "value": {"event": "APPROVED", "metadata": meta("111")}},
            {"field": "messages", "value": {"metadata": meta("222"), "messages": []}},
            {"field": "messages", "value": {"metadata": meta("111")}}
        ]}]}));
        assert!(run(&p, "111").events.is_empty());
        let parsed = Payload::parse(&p).expect("payload");
        assert_eq!(phone_number_ids(&parsed), ["111", "222"]);
        let odd = body(json!({"entry": 3}));
        assert!(phone_number_ids(&Payload::parse(&odd).expect("payload")).is_empty());
    }

    #[test]
    fn items_of_unexpected_types_read_as_absent_not_as_errors() {
        let p = payload(json!({
            "metadata": meta("111"),
            "messages": [7, {"id": "wamid.1", "timestamp": 1716999800, "type": 3, "from": ["x"]}],
            "statuses": "none",
            "contacts": [null]
        }));
        let t = run(&p, "111");
        assert_eq!(t.skipped, ["a message without a valid `id`"]);
        assert_eq!(t.events.len(), 1);
        assert!(matches!(
            &t.events[0].body,
            EventBody::Message { message_type, .. } if message_type == "unknown"
        ));
        assert!(Payload::parse(b"[1, 2]").is_ok());
        assert!(Payload::parse(b"{").is_err());
    }

    #[test]
    fn message_types_are_made_valid_words() {
        assert_eq!(message_type(Some("interactive")), "interactive");
        assert_eq!(message_type(Some("")), "unknown");
        assert_eq!(message_type(None), "unknown");
        assert_eq!(message_type(Some(&"x".repeat(100))).len(), MAX_TYPE_LEN);
    }
}
