//! Meta's WhatsApp Cloud API webhook (SPEC section 5): signature checks, the pure
//! translation of a payload into SPEC events, and the engine's receiving, keeping and
//! replaying of payloads.
//!
//! A payload names accounts by `entry[].changes[].value.metadata.phone_number_id`. Its
//! `X-Hub-Signature-256` must verify with the app secret of every account it names;
//! then the changes of each account are translated and ingested (with backfill, since
//! Meta retries for up to 7 days), one `Engine::ingest` call per organization. Changes
//! for a `phone_number_id` no account claims are kept as received (raw body and
//! signature header, in a bounded space) and replayed, their signature checked with the
//! new account's app secret, once an account claims that number.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use sha2::Sha256;

use super::event::{EARLIEST_SECS, FUTURE_TOLERANCE_SECS};
use super::time::Calendar;
use super::{Engine, EngineError, EventsBody, Org};
use crate::secrets::{SecretError, SecretKey};
use crate::store::{AccountRecord, UnroutedPayload};

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

fn changes(payload: &Value) -> impl Iterator<Item = &Value> {
    payload
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("changes").and_then(Value::as_array))
        .flatten()
}

fn phone_of(change: &Value) -> Option<&str> {
    change
        .get("value")?
        .get("metadata")?
        .get("phone_number_id")?
        .as_str()
        .filter(|p| !p.is_empty())
}

/// Every `phone_number_id` a payload names, in order of first appearance.
pub fn phone_number_ids(payload: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for change in changes(payload) {
        if let Some(p) = phone_of(change)
            && !out.iter().any(|o| o == p)
        {
            out.push(p.to_string());
        }
    }
    out
}

/// The SPEC events of one account's changes, and what could not be translated.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Translation {
    pub events: Vec<Value>,
    /// Items left out, with the reason (unknown statuses, missing ids, bad timestamps).
    pub skipped: Vec<String>,
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control)
}

/// Meta's message types become the event model's lowercase words, whatever new word
/// Meta sends: other characters turn into `_`.
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
fn timestamp(v: Option<&Value>, now: i64) -> Result<i64, String> {
    let secs = match v {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
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

fn str_of<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

/// Translates the `messages` changes of one `phone_number_id` into SPEC events of
/// `account_id`. Pure: `now` only bounds timestamps. Contacts come once per `wa_id`, at
/// the earliest of its messages here (the engine keeps the earliest across requests).
pub fn translate(
    payload: &Value,
    phone_number_id: &str,
    account_id: &str,
    now: i64,
) -> Translation {
    let mut out = Translation::default();
    let mut contacts: BTreeMap<String, i64> = BTreeMap::new();
    for change in changes(payload) {
        if phone_of(change) != Some(phone_number_id)
            || change.get("field").and_then(Value::as_str) != Some("messages")
        {
            continue;
        }
        let Some(value) = change.get("value") else {
            continue;
        };
        let mut earliest: Option<i64> = None;
        for m in value
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(id) = str_of(m, "id").filter(|id| valid_id(id)) else {
                out.skipped.push("a message without a valid `id`".into());
                continue;
            };
            let at = match timestamp(m.get("timestamp"), now) {
                Ok(at) => at,
                Err(e) => {
                    out.skipped.push(format!("message {id}: {e}"));
                    continue;
                }
            };
            earliest = Some(earliest.map_or(at, |e: i64| e.min(at)));
            let mut event = json!({
                "type": "message",
                "account_id": account_id,
                "timestamp": at,
                "id": id,
                "direction": "inbound",
                "message_type": message_type(str_of(m, "type")),
            });
            if let Some(from) = str_of(m, "from").filter(|f| valid_id(f)) {
                event["contact_id"] = json!(from);
                let first = contacts.entry(from.to_string()).or_insert(at);
                *first = (*first).min(at);
            }
            out.events.push(event);
        }
        // Profiles Meta sends beside the messages: counted from the earliest message here.
        if let Some(at) = earliest {
            for c in value
                .get("contacts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(wa_id) = str_of(c, "wa_id").filter(|w| valid_id(w)) {
                    contacts.entry(wa_id.to_string()).or_insert(at);
                }
            }
        }
        for s in value
            .get("statuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(id) = str_of(s, "id").filter(|id| valid_id(id)) else {
                out.skipped.push("a status without a valid `id`".into());
                continue;
            };
            let status = str_of(s, "status").unwrap_or("");
            if !matches!(status, "sent" | "delivered" | "read" | "failed") {
                out.skipped.push(format!(
                    "status `{status}` of message {id} is not counted (counted: sent, delivered, read, failed)"
                ));
                continue;
            }
            let at = match timestamp(s.get("timestamp"), now) {
                Ok(at) => at,
                Err(e) => {
                    out.skipped.push(format!("status of message {id}: {e}"));
                    continue;
                }
            };
            let mut event = json!({
                "type": "message_status",
                "account_id": account_id,
                "timestamp": at,
                "message_id": id,
                "status": status,
            });
            if status == "failed" {
                let code = s
                    .get("errors")
                    .and_then(Value::as_array)
                    .and_then(|e| e.first())
                    .and_then(|e| e.get("code"));
                match code {
                    Some(Value::Number(n)) => event["error_code"] = json!(n),
                    Some(Value::String(c)) if valid_id(c) => event["error_code"] = json!(c),
                    _ => {}
                }
            }
            if let Some(category) = s
                .get("pricing")
                .and_then(|p| str_of(p, "category"))
                .filter(|c| valid_id(c))
            {
                event["pricing_category"] = json!(category);
            }
            out.events.push(event);
        }
    }
    for (wa_id, at) in contacts {
        out.events.push(json!({
            "type": "contact",
            "account_id": account_id,
            "timestamp": at,
            "id": wa_id,
        }));
    }
    out
}

/// What a webhook POST did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
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

impl Engine {
    /// The verification handshake: the challenge when the token is an account's.
    pub async fn webhook_handshake(
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
                .store
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

    /// Receives one POST: checks, translates and applies it, keeping what no account claims.
    pub async fn webhook_receive(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<WebhookReceipt, EngineError> {
        let Some(signature) = signature else {
            return Err(EngineError::Unauthorized(
                "missing X-Hub-Signature-256 header".into(),
            ));
        };
        let well_formed = signature
            .trim()
            .strip_prefix("sha256=")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !well_formed {
            return Err(EngineError::Forbidden(
                "X-Hub-Signature-256 must be sha256=<64 hex digits>".into(),
            ));
        }
        let payload: Value = serde_json::from_slice(body).map_err(|e| {
            EngineError::BadRequest(format!("the webhook body is not valid JSON: {e}"))
        })?;
        let mut routed: Vec<(String, AccountRecord)> = Vec::new();
        let mut unrouted: Vec<String> = Vec::new();
        for phone in phone_number_ids(&payload) {
            match self.store.account_by_phone(&phone).await? {
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
                return Err(EngineError::Forbidden(
                    "X-Hub-Signature-256 does not match the app secret of the account".into(),
                ));
            }
        }
        let now = self.clock.now();
        let mut receipt = WebhookReceipt::default();
        let mut by_org: HashMap<String, Vec<Value>> = HashMap::new();
        for (phone, account) in &routed {
            let t = translate(&payload, phone, &account.account_id, now);
            receipt.ignored += t.skipped.len() as u64;
            by_org
                .entry(account.org.clone())
                .or_default()
                .extend(t.events);
        }
        for (org, events) in by_org {
            let (accepted, duplicates, ignored) = self.ingest_translated(&org, events).await?;
            receipt.accepted += accepted;
            receipt.duplicates += duplicates;
            receipt.ignored += ignored;
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
                .store
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

    /// Applies translated events of one organization in one request (backfill allowed).
    async fn ingest_translated(
        &self,
        org: &str,
        events: Vec<Value>,
    ) -> Result<(u64, u64, u64), EngineError> {
        if events.is_empty() {
            return Ok((0, 0, 0));
        }
        let rec = self
            .store
            .org_by_id(org)
            .await?
            .ok_or_else(|| EngineError::Internal(format!("organization {org} is gone")))?;
        let org = org_from_record(rec)?;
        let bytes = serde_json::to_vec(&events)
            .map_err(|e| EngineError::Internal(format!("serializing webhook events: {e}")))?;
        let report = self.ingest(&org, EventsBody::Json(&bytes), true).await?;
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
        for p in self.store.unrouted(Some(phone)).await? {
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
            let Ok(payload) = serde_json::from_slice::<Value>(&p.body) else {
                report.bad_signature.push(p.id);
                continue;
            };
            let t = translate(&payload, phone, &account.account_id, now);
            match self.ingest_translated(&account.org, t.events).await {
                Ok((accepted, duplicates, ignored)) => {
                    report.payloads += 1;
                    report.accepted += accepted;
                    report.duplicates += duplicates;
                    report.ignored += ignored + t.skipped.len() as u64;
                    self.store.release_unrouted(p.id, phone).await?;
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
            .store
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

    pub async fn delete_unrouted(&self, id: i64) -> Result<(), EngineError> {
        if self.store.delete_unrouted(id).await? {
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

    const NOW: i64 = 1_717_000_000;

    fn payload(value: Value) -> Value {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": value}]}]})
    }

    fn meta(phone: &str) -> Value {
        json!({"display_phone_number": "15550001111", "phone_number_id": phone})
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
        let t = translate(&p, "111", "acc", NOW);
        assert!(t.skipped.is_empty());
        let types: Vec<&str> = t
            .events
            .iter()
            .filter_map(|e| e["message_type"].as_str())
            .collect();
        assert_eq!(types, ["image", "text", "some_new_type"]);
        assert_eq!(t.events[0]["direction"], "inbound");
        assert_eq!(t.events[0]["contact_id"], "9190");
        assert_eq!(t.events[0]["timestamp"], 1_716_999_900);
        let contacts: Vec<&Value> = t.events.iter().filter(|e| e["type"] == "contact").collect();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0]["id"], "9190");
        assert_eq!(contacts[0]["timestamp"], 1_716_999_800);
        // Another number's changes are not this account's.
        assert!(translate(&p, "222", "acc", NOW).events.is_empty());
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
        let t = translate(&p, "111", "acc", NOW);
        assert_eq!(t.events.len(), 2);
        assert_eq!(t.events[0]["error_code"], 131026);
        assert_eq!(t.events[0]["type"], "message_status");
        assert!(t.events[1].get("error_code").is_none());
        assert_eq!(t.events[1]["pricing_category"], "marketing");
        assert_eq!(t.skipped.len(), 3, "{:?}", t.skipped);
    }

    #[test]
    fn other_fields_translate_to_nothing_and_phones_are_listed_once() {
        let p = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "W", "changes": [
            {"field": "message_template_status_update", "value": {"event": "APPROVED", "metadata": meta("111")}},
            {"field": "messages", "value": {"metadata": meta("222"), "messages": []}},
            {"field": "messages", "value": {"metadata": meta("111")}}
        ]}]});
        assert!(translate(&p, "111", "acc", NOW).events.is_empty());
        assert_eq!(phone_number_ids(&p), ["111", "222"]);
        assert!(phone_number_ids(&json!({"entry": 3})).is_empty());
    }

    #[test]
    fn message_types_are_made_valid_words() {
        assert_eq!(message_type(Some("interactive")), "interactive");
        assert_eq!(message_type(Some("")), "unknown");
        assert_eq!(message_type(None), "unknown");
        assert_eq!(message_type(Some(&"x".repeat(100))).len(), MAX_TYPE_LEN);
    }
}
