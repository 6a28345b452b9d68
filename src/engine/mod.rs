//! The domain: events, their validation, entity states, bucketing, the planner and the
//! metrics. It knows nothing of HTTP; it talks to storage only through `store::Store`.

pub mod accounts;
pub mod compare;
pub mod event;
pub mod ingest;
pub mod meta_errors;
pub mod metrics;
pub mod plan;
pub mod retention;
pub mod state;
pub mod time;
pub mod updates;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rand::RngCore;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, WriteJob};
use event::{Admission, Parsed};
use ingest::{Batch, Ignored, IngestReport};
use plan::TierBounds;
use time::Calendar;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{} invalid event(s); nothing was applied", .0.len())]
    InvalidEvents(Vec<EventError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded => EngineError::Overloaded,
            other => EngineError::Internal(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventError {
    pub index: usize,
    pub message: String,
}

/// Settings of the domain, independent of how they were given.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long per-message, per-conversation and per-flow-run state is kept.
    pub state_window_secs: i64,
    /// How long hourly and daily figures are kept; `None` keeps them forever.
    pub hourly_retention_days: Option<i64>,
    pub daily_retention_days: Option<i64>,
    /// USD per 1,000 tokens per model, for AI calls that came without a cost.
    pub ai_prices: HashMap<String, f64>,
    pub default_ai_price_per_1k: f64,
    /// Meta webhook: the key sealing app secrets, and the bounds of kept payloads.
    pub webhook: webhook::WebhookConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            state_window_secs: 35 * 86_400,
            hourly_retention_days: None,
            daily_retention_days: None,
            ai_prices: HashMap::new(),
            default_ai_price_per_1k: 0.002,
            webhook: webhook::WebhookConfig::default(),
        }
    }
}

impl EngineConfig {
    pub fn ai_price_per_1k(&self, model: &str) -> f64 {
        self.ai_prices
            .get(model)
            .copied()
            .unwrap_or(self.default_ai_price_per_1k)
    }
}

/// An organization, ready to bucket and query in its own time zone.
#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub timezone: String,
    pub calendar: Calendar,
}

/// Where "now" comes from: the system clock, or a fixed instant that tests move.
#[derive(Debug, Default)]
pub struct Clock {
    fixed: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> i64 {
        match self.fixed.load(Ordering::Relaxed) {
            0 => Timestamp::now().as_second(),
            t => t,
        }
    }

    pub fn set(&self, unix_seconds: i64) {
        self.fixed.store(unix_seconds, Ordering::Relaxed);
    }
}

pub struct Engine {
    store: Arc<dyn Store>,
    pub config: EngineConfig,
    pub clock: Clock,
    orgs_by_key: RwLock<HashMap<String, Org>>,
    updates: Arc<updates::Updates>,
}

/// The body of an ingestion request, before parsing.
pub enum EventsBody<'a> {
    Json(&'a [u8]),
    Ndjson(&'a [u8]),
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, config: EngineConfig) -> Self {
        Engine {
            store,
            config,
            clock: Clock::default(),
            orgs_by_key: RwLock::new(HashMap::new()),
            updates: Arc::new(updates::Updates::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Where committed changes of figures are announced (the live stream listens).
    pub fn updates(&self) -> &Arc<updates::Updates> {
        &self.updates
    }

    fn now_ts(&self) -> Timestamp {
        Timestamp::from_second(self.clock.now()).unwrap_or_else(|_| Timestamp::now())
    }

    /// Creates an organization and its first API key; the plain key is returned once.
    pub async fn create_org(
        &self,
        name: &str,
        timezone: &str,
    ) -> Result<(Org, String), EngineError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(EngineError::BadRequest(
                "field `name` must be a non-empty string of at most 200 bytes".into(),
            ));
        }
        let tz = TimeZone::get(timezone).map_err(|_| {
            EngineError::BadRequest(format!(
                "field `timezone` is `{timezone}`; allowed: an IANA time zone name such as UTC, Asia/Kolkata or America/New_York"
            ))
        })?;
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let key = format!("ws_{}", hex::encode(bytes));
        let mut id_bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut id_bytes);
        let record = crate::store::OrgRecord {
            id: format!("org_{}", hex::encode(id_bytes)),
            name: name.to_string(),
            timezone: timezone.to_string(),
            created_at: self.clock.now(),
        };
        self.store.create_org(&record, &hash_key(&key)).await?;
        let org = Org {
            id: record.id,
            name: record.name,
            timezone: record.timezone,
            calendar: Calendar::new(tz),
        };
        tracing::info!(org = %org.id, name = %org.name, timezone = %org.timezone, "organization created");
        Ok((org, key))
    }

    /// The organization an API key belongs to, if any.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Org>, EngineError> {
        let hash = hash_key(key);
        if let Some(org) = self
            .orgs_by_key
            .read()
            .ok()
            .and_then(|m| m.get(&hash).cloned())
        {
            return Ok(Some(org));
        }
        let Some(rec) = self.store.org_by_key_hash(&hash).await? else {
            return Ok(None);
        };
        let tz = TimeZone::get(&rec.timezone).map_err(|e| {
            EngineError::Internal(format!("stored time zone {}: {e}", rec.timezone))
        })?;
        let org = Org {
            id: rec.id,
            name: rec.name,
            timezone: rec.timezone,
            calendar: Calendar::new(tz),
        };
        if let Ok(mut m) = self.orgs_by_key.write() {
            m.insert(hash, org.clone());
        }
        Ok(Some(org))
    }

    /// Where each tier's retention starts now, aligned to the organization's buckets.
    pub fn tier_bounds(&self, org: &Org) -> TierBounds {
        let now = self.clock.now();
        let cal = &org.calendar;
        let hour = self.config.hourly_retention_days.map_or(i64::MIN, |d| {
            let t = now - d * 86_400;
            Timestamp::from_second(t).map_or(t, |ts| cal.buckets(ts)[0].key)
        });
        let day = self.config.daily_retention_days.map_or(i64::MIN, |d| {
            Timestamp::from_second(now - d * 86_400)
                .ok()
                .and_then(|ts| cal.start_of(cal.zoned(ts).date()))
                .map_or(i64::MIN, |z| z.timestamp().as_second())
        });
        TierBounds { hour, day }
    }

    /// Validates and applies one request's events, all or nothing, durably.
    pub async fn ingest(
        &self,
        org: &Org,
        body: EventsBody<'_>,
        backfill: bool,
    ) -> Result<IngestReport, EngineError> {
        self.ingest_tracked(org, body, backfill, None).await
    }

    /// As `ingest`, also storing a named position in the same commit (for resumable imports).
    pub async fn ingest_tracked(
        &self,
        org: &Org,
        body: EventsBody<'_>,
        backfill: bool,
        progress: Option<(String, i64)>,
    ) -> Result<IngestReport, EngineError> {
        let admission = Admission {
            now: self.clock.now(),
            state_window_secs: self.config.state_window_secs,
            backfill,
        };
        let large = match &body {
            EventsBody::Json(b) | EventsBody::Ndjson(b) => b.len() >= LARGE_BODY_BYTES,
        };
        let parse = || parse_events(body, &admission);
        // Parsing a large batch takes milliseconds: off the async workers, so that the
        // queries they serve meanwhile do not wait behind it.
        let off_workers = large
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let (events, report) = if off_workers {
            tokio::task::block_in_place(parse)
        } else {
            parse()
        }?;
        let keys = ingest::keys_of(&events);
        let calendar = org.calendar.clone();
        let state_window_secs = self.config.state_window_secs;
        let tier_cutoffs = self.tier_bounds(org).as_cutoffs();
        let count = events.len();
        let transition = Box::new(move |stored: &HashMap<_, _>| {
            Batch {
                calendar: &calendar,
                state_window_secs,
                tier_cutoffs,
            }
            // Borrowed, not consumed: a backend may run the transition again after a deadlock.
            .apply(stored, &events, report.clone())
        });
        let out = self
            .store
            .apply(WriteJob {
                org: org.id.clone(),
                keys,
                transition,
                progress,
            })
            .await?;
        let report = out
            .downcast::<IngestReport>()
            .map_err(|_| EngineError::Internal("unexpected write report".into()))?;
        if !report.changed_accounts.is_empty() {
            self.updates.publish(updates::Update {
                org: org.id.clone(),
                accounts: Some(report.changed_accounts.clone()),
            });
        }
        tracing::debug!(org = %org.id, events = count, accepted = report.accepted, duplicates = report.duplicates, "ingested");
        Ok(*report)
    }
}

/// Bodies from this size on are parsed outside the async workers.
const LARGE_BODY_BYTES: usize = 64 * 1024;

/// Validates every event of a body: the valid ones with their index in the request and
/// the ignored ones in the report, or every error at once.
fn parse_events(
    body: EventsBody<'_>,
    admission: &Admission,
) -> Result<(Vec<(usize, event::Event)>, IngestReport), EngineError> {
    let values = split_body(body)?;
    if values.is_empty() {
        return Err(EngineError::BadRequest("the body holds no events".into()));
    }
    let mut errors = Vec::new();
    let mut events = Vec::with_capacity(values.len());
    let mut report = IngestReport::default();
    for (index, value) in values.into_iter().enumerate() {
        match value.and_then(|v| event::parse_event(v, admission)) {
            Ok(Parsed::Event(e)) => events.push((index, e)),
            Ok(Parsed::Ignored(reason)) => report.ignored.push(Ignored { index, reason }),
            Err(message) => errors.push(EventError { index, message }),
        }
    }
    if !errors.is_empty() {
        return Err(EngineError::InvalidEvents(errors));
    }
    Ok((events, report))
}

/// Splits a body into one unparsed JSON value (or a per-event parse error) per event,
/// borrowed from the body.
fn split_body(body: EventsBody<'_>) -> Result<Vec<Result<&RawValue, String>>, EngineError> {
    match body {
        EventsBody::Json(bytes) => {
            let whole: &RawValue = serde_json::from_slice(bytes)
                .map_err(|e| EngineError::BadRequest(format!("the body is not valid JSON: {e}")))?;
            let text = whole.get().trim_start();
            if text.starts_with('[') {
                let items: Vec<&RawValue> = serde_json::from_str(whole.get()).map_err(|e| {
                    EngineError::BadRequest(format!("the body is not valid JSON: {e}"))
                })?;
                Ok(items.into_iter().map(Ok).collect())
            } else if text.starts_with('{') {
                Ok(vec![Ok(whole)])
            } else {
                Err(EngineError::BadRequest(
                    "the body must be a JSON array of events (or NDJSON with Content-Type: application/x-ndjson)".into(),
                ))
            }
        }
        EventsBody::Ndjson(bytes) => Ok(bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(n, line)| {
                serde_json::from_slice::<&RawValue>(line)
                    .map_err(|e| format!("line {} is not valid JSON: {e}", n + 1))
            })
            .collect()),
    }
}
