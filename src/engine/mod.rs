//! The domain: events, their validation, entity states, bucketing, the planner and the
//! metrics. It knows nothing of HTTP; it talks to storage only through the store's
//! concern traits. Its work is split into services with one job each ([`Ingest`],
//! [`Analytics`], [`Tenants`], [`accounts::Accounts`], [`webhook::Webhook`], [`forwarding::Forwarding`],
//! [`retention::Compaction`]), built together once as [`Services`].

pub mod accounts;
pub mod compare;
pub mod costs;
pub mod country;
pub mod event;
pub mod forwarding;
pub mod ingest;
pub mod keys;
pub mod meta_errors;
pub mod metrics;
pub mod plan;
pub mod rates;
pub mod retention;
pub mod state;
pub mod time;
pub mod updates;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rand::RngCore;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::store::credentials::{CredentialKind, CredentialRecord};
use crate::store::{Pruned, RollupStore, States, Store, StoreError, TenantStore, WriteJob};
use event::{Admission, Parsed};
use ingest::{Batch, Ignored, IngestReport};
use plan::TierBounds;
use time::Calendar;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    BadRequest(String),
    /// Events that fail validation: each one's error, and how many events the request
    /// held (none of them was applied).
    #[error("{} invalid event(s); nothing was applied", .errors.len())]
    InvalidEvents {
        errors: Vec<EventError>,
        events: usize,
    },
    /// A range query the planner refuses; the edge names the parameters.
    #[error(transparent)]
    Range(#[from] metrics::RangeError),
    #[error("{0}")]
    NotFound(String),
    /// An account id the organization has not registered or used.
    #[error("{0}")]
    UnknownAccount(String),
    /// A webhook update without its signature.
    #[error("{0}")]
    MissingSignature(String),
    /// A webhook signature that is malformed or does not match.
    #[error("{0}")]
    BadSignature(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// A credential limited to some accounts sent events of others.
    #[error("this key may only post events of its own accounts; the request holds events of {}, so nothing was applied", .0.join(", "))]
    AccountsNotAllowed(Vec<String>),
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    /// The storage cannot serve now (full, read-only, unreachable); the detail is for the
    /// log, not the client.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded => EngineError::Overloaded,
            StoreError::Unavailable(m) => EngineError::Unavailable(m),
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
    /// The webhook tee: which forward URLs are allowed and how deliveries are retried.
    pub forward: forwarding::ForwardConfig,
    /// What billable messages cost, for the estimated spend.
    pub rate_card: rates::RateCard,
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
            forward: forwarding::ForwardConfig::default(),
            rate_card: rates::RateCard::default(),
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
    /// The accounts the caller's credential is limited to; `None` for all of them. Every
    /// figure read or written through this value stays within them.
    pub account_limit: Option<Arc<[String]>>,
}

impl Org {
    /// Whether the caller may see or write this account's figures.
    pub fn may_use(&self, account: &str) -> bool {
        self.account_limit
            .as_ref()
            .is_none_or(|l| l.iter().any(|a| a == account))
    }
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

/// Every service of the engine, over one store, sharing one configuration and clock.
/// Built once where the program starts.
#[derive(Clone)]
pub struct Services {
    pub ingest: Arc<Ingest>,
    pub analytics: Arc<Analytics>,
    pub tenants: Arc<Tenants>,
    pub accounts: Arc<accounts::Accounts>,
    pub webhook: Arc<webhook::Webhook>,
    pub forwarding: Arc<forwarding::Forwarding>,
    pub compaction: Arc<retention::Compaction>,
    pub config: Arc<EngineConfig>,
    /// "Now" for every service; tests fix it.
    pub clock: Arc<Clock>,
    /// Where committed changes of figures are announced (the live stream listens).
    pub updates: Arc<updates::Updates>,
}

impl Services {
    /// Hands each service the concerns of `store` it needs.
    pub fn new(store: Arc<dyn Store>, config: EngineConfig) -> Services {
        let config = Arc::new(config);
        let clock = Arc::new(Clock::default());
        let updates = Arc::new(updates::Updates::new());
        let ingest = Arc::new(Ingest {
            store: store.clone(),
            config: config.clone(),
            clock: clock.clone(),
            updates: updates.clone(),
        });
        let tenants = Arc::new(Tenants {
            store: store.clone(),
            clock: clock.clone(),
            rollups: store.clone(),
            credentials: keys::CredentialCache::default(),
        });
        let forwarding = Arc::new(forwarding::Forwarding::new(
            store.clone(),
            store.clone(),
            config.clone(),
        ));
        let webhook = Arc::new(webhook::Webhook {
            forwarding: forwarding.clone(),
            accounts: store.clone(),
            unrouted: store.clone(),
            tenants: tenants.clone(),
            ingest: ingest.clone(),
            config: config.clone(),
            clock: clock.clone(),
        });
        Services {
            analytics: Arc::new(Analytics {
                store: store.clone(),
                config: config.clone(),
                clock: clock.clone(),
            }),
            accounts: Arc::new(accounts::Accounts {
                store: store.clone(),
                webhook: webhook.clone(),
                config: config.clone(),
                clock: clock.clone(),
            }),
            compaction: Arc::new(retention::Compaction {
                rollups: store.clone(),
                tenants: store,
                config: config.clone(),
                clock: clock.clone(),
            }),
            ingest,
            tenants,
            webhook,
            forwarding,
            config,
            clock,
            updates,
        }
    }
}

/// Validates events and writes them, all or nothing, into entity states and rollups.
pub struct Ingest {
    store: Arc<dyn RollupStore>,
    config: Arc<EngineConfig>,
    clock: Arc<Clock>,
    updates: Arc<updates::Updates>,
}

/// Answers the analytics questions from rollups (the methods are in `metrics`).
pub struct Analytics {
    store: Arc<dyn RollupStore>,
    config: Arc<EngineConfig>,
    clock: Arc<Clock>,
}

/// Organizations and their API keys.
pub struct Tenants {
    store: Arc<dyn TenantStore>,
    clock: Arc<Clock>,
    /// Whether an account a new key names exists.
    rollups: Arc<dyn RollupStore>,
    credentials: keys::CredentialCache,
}

/// The body of an ingestion request, before parsing.
pub enum EventsBody<'a> {
    Json(&'a [u8]),
    Ndjson(&'a [u8]),
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Clock {
    /// "Now" as a timestamp.
    pub fn now_ts(&self) -> Timestamp {
        Timestamp::from_second(self.now()).unwrap_or_else(|_| Timestamp::now())
    }
}

impl Analytics {
    fn now_ts(&self) -> Timestamp {
        self.clock.now_ts()
    }

    fn tier_bounds(&self, org: &Org) -> TierBounds {
        tier_bounds(&self.config, self.clock.now(), org)
    }
}

impl Tenants {
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
        let key = keys::new_key_secret();
        let mut id_bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut id_bytes);
        let now = self.clock.now();
        let record = crate::store::OrgRecord {
            id: format!("org_{}", hex::encode(id_bytes)),
            name: name.to_string(),
            timezone: timezone.to_string(),
            created_at: now,
        };
        // The organization's first key can do everything, as its only key always could.
        let first_key = CredentialRecord {
            id: keys::new_credential_id(CredentialKind::Key),
            org: record.id.clone(),
            kind: CredentialKind::Key,
            name: "Organization key".into(),
            scope: keys::Scope::Admin.as_str().into(),
            accounts: None,
            created_at: now,
            expires_at: None,
            last_used_at: None,
        };
        self.store
            .create_org(&record, &first_key, &hash_key(&key))
            .await?;
        let org = Org {
            id: record.id,
            name: record.name,
            timezone: record.timezone,
            calendar: Calendar::new(tz),
            account_limit: None,
        };
        tracing::info!(org = %org.id, name = %org.name, timezone = %org.timezone, "organization created");
        Ok((org, key))
    }

    /// The organization of an id, if it exists.
    pub async fn by_id(&self, id: &str) -> Result<Option<Org>, EngineError> {
        self.store
            .org_by_id(id)
            .await?
            .map(webhook::org_from_record)
            .transpose()
    }

    pub async fn count(&self) -> Result<u64, EngineError> {
        Ok(self.store.org_count().await?)
    }
}

/// Where each tier's retention starts at `now`, aligned to the organization's buckets.
pub fn tier_bounds(config: &EngineConfig, now: i64, org: &Org) -> TierBounds {
    let cal = &org.calendar;
    let hour = config.hourly_retention_days.map_or(i64::MIN, |d| {
        let t = now - d * 86_400;
        Timestamp::from_second(t).map_or(t, |ts| cal.buckets(ts)[0].key)
    });
    let day = config.daily_retention_days.map_or(i64::MIN, |d| {
        Timestamp::from_second(now - d * 86_400)
            .ok()
            .and_then(|ts| cal.start_of(cal.zoned(ts).date()))
            .map_or(i64::MIN, |z| z.timestamp().as_second())
    });
    TierBounds { hour, day }
}

impl Ingest {
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
        self.write(org, events, report, progress, Vec::new()).await
    }

    /// Applies events already validated (the Meta webhook builds them itself), all or
    /// nothing, durably.
    pub async fn ingest_events(
        &self,
        org: &Org,
        events: Vec<event::Event>,
    ) -> Result<IngestReport, EngineError> {
        self.ingest_events_forwarded(org, events, Vec::new()).await
    }

    /// As `ingest_events`, also putting webhook deliveries into the outbox in the same
    /// commit, so that a payload's figures and its forwarding are stored together.
    pub async fn ingest_events_forwarded(
        &self,
        org: &Org,
        events: Vec<event::Event>,
        outbox: Vec<crate::store::OutboxDelivery>,
    ) -> Result<IngestReport, EngineError> {
        let events = events.into_iter().enumerate().collect();
        self.write(org, events, IngestReport::default(), None, outbox)
            .await
    }

    /// The position last stored under `name` with a batch (see `ingest_tracked`).
    pub async fn progress(&self, name: &str) -> Result<Option<i64>, EngineError> {
        Ok(self.store.progress(name).await?)
    }

    /// Keeps compaction from pruning any entity state of `org` for `secs` seconds from now,
    /// under `name` (taking it again restarts its time): an import holds the states it
    /// writes while it runs, so that a status in a later batch still finds its message.
    pub async fn hold_states(&self, org: &Org, name: &str, secs: i64) -> Result<(), EngineError> {
        let until = self.clock.now().saturating_add(secs);
        Ok(self.store.hold_states(&org.id, name, until).await?)
    }

    /// Ends a hold taken with `hold_states`.
    pub async fn release_states(&self, org: &Org, name: &str) -> Result<(), EngineError> {
        Ok(self.store.release_states(&org.id, name).await?)
    }

    /// Writes valid events (with their index in the request) in one atomic job.
    async fn write(
        &self,
        org: &Org,
        events: Vec<(usize, event::Event)>,
        report: IngestReport,
        progress: Option<(String, i64)>,
        outbox: Vec<crate::store::OutboxDelivery>,
    ) -> Result<IngestReport, EngineError> {
        if org.account_limit.is_some() {
            let outside: std::collections::BTreeSet<&str> = events
                .iter()
                .map(|(_, e)| e.account_id.as_str())
                .filter(|a| !org.may_use(a))
                .collect();
            if !outside.is_empty() {
                return Err(EngineError::AccountsNotAllowed(
                    outside.into_iter().map(str::to_string).collect(),
                ));
            }
        }
        let keys = ingest::keys_of(&events);
        let calendar = org.calendar.clone();
        let state_window_secs = self.config.state_window_secs;
        let tier_cutoffs = tier_bounds(&self.config, self.clock.now(), org).as_cutoffs();
        let count = events.len();
        // The last run's report: a backend may run the transition more than once, and
        // only the last run's changes are stored.
        let outcome: Arc<Mutex<Option<IngestReport>>> = Arc::default();
        let last = outcome.clone();
        let transition = Box::new(move |stored: &States, pruned: &Pruned| {
            let (changes, report) = Batch {
                calendar: &calendar,
                state_window_secs,
                tier_cutoffs,
            }
            // Borrowed, not consumed: a backend may run the transition again after a deadlock.
            .apply(stored, pruned, &events, report.clone())?;
            *last
                .lock()
                .map_err(|_| "a previous run panicked".to_string())? = Some(report);
            Ok(changes)
        });
        self.store
            .apply(WriteJob {
                org: org.id.clone(),
                events: count,
                keys,
                transition,
                progress,
                outbox,
            })
            .await?;
        let report = outcome
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .ok_or_else(|| EngineError::Internal("the write stored no report".into()))?;
        if !report.changed_accounts.is_empty() {
            self.updates.publish(updates::Update {
                org: org.id.clone(),
                accounts: Some(report.changed_accounts.clone()),
            });
        }
        tracing::debug!(org = %org.id, events = count, accepted = report.accepted, duplicates = report.duplicates, "ingested");
        Ok(report)
    }
}

/// Bodies from this size on are parsed outside the async workers.
const LARGE_BODY_BYTES: usize = 64 * 1024;

/// Validates every event of a body: the valid ones with their index in the request and
/// the ignored ones in the report, or every error at once.
pub(crate) fn parse_events(
    body: EventsBody<'_>,
    admission: &Admission,
) -> Result<(Vec<(usize, event::Event)>, IngestReport), EngineError> {
    let values = split_body(body)?;
    if values.is_empty() {
        return Err(EngineError::BadRequest("the body holds no events".into()));
    }
    let total = values.len();
    let mut errors = Vec::new();
    let mut events = Vec::with_capacity(total);
    let mut report = IngestReport::default();
    for (index, value) in values.into_iter().enumerate() {
        match value.and_then(|v| event::parse_event(v, admission)) {
            Ok(Parsed::Event(e)) => events.push((index, e)),
            Ok(Parsed::Ignored(reason)) => report.ignored.push(Ignored { index, reason }),
            Err(message) => errors.push(EventError { index, message }),
        }
    }
    if !errors.is_empty() {
        return Err(EngineError::InvalidEvents {
            errors,
            events: total,
        });
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
