//! Storage: five traits by concern, one module per backend implementing each of them.
//! A store keeps opaque entity states and counters per bucket and series; what a state
//! or a counter means is the engine's business.
//!
//! - [`RollupStore`]: the atomic write of entity states and counters, counter queries,
//!   expiry (with the trace of pruned ids and holds on pruning), progress positions and
//!   the compaction lock;
//! - [`TenantStore`]: organizations and their credentials (API keys and share links,
//!   kept as digests);
//! - [`AccountStore`]: accounts and their Meta webhook settings;
//! - [`UnroutedStore`]: kept webhook payloads no account claims yet;
//! - [`OutboxStore`]: webhook payloads waiting to be forwarded to an account's
//!   `forward_url` (written with the payload's figures, through [`WriteJob::outbox`]).

pub mod credentials;
mod keys;
pub mod postgres;
pub mod sqlite;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use rustc_hash::FxHashMap;

pub use keys::{EntityKind, Series, Tier};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Backend(String),
    #[error("the write queue is full")]
    Overloaded,
    #[error("the store is shut down")]
    Closed,
    #[error("{0}")]
    Transition(String),
    #[error(
        "unsupported database URL `{0}` (use sqlite://PATH, postgres://... or postgresql://...)"
    )]
    UnsupportedUrl(String),
    /// A uniqueness rule was broken (an account registered twice, a phone number claimed twice).
    #[error("{0}")]
    Conflict(String),
    /// The storage cannot serve the request now, though it may soon: a full disk, a
    /// read-only or failing file system, a database that is unreachable, restarting or
    /// out of room. Nothing of the failed write was stored (on PostgreSQL, a connection
    /// lost during its commit leaves that commit's outcome unknown; posting the same
    /// events again is safe, as ids already counted come back as duplicates).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// The same error for each job of a group that failed as a whole: its kind kept
    /// (overload and unavailability stay what they are), any other reduced to its text.
    pub(crate) fn for_each_job(&self) -> StoreError {
        match self {
            StoreError::Overloaded => StoreError::Overloaded,
            StoreError::Closed => StoreError::Closed,
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if sqlite::faults::is_unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Backend(e.to_string())
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An organization as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub id: String,
    pub name: String,
    pub timezone: String,
    pub created_at: i64,
}

/// An account as stored. Accounts seen only in events have just `org` and `account_id`;
/// registering one through the accounts API fills the rest. The secrets are opaque here:
/// `verify_token_hash` is a digest and `app_secret` is sealed by the engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountRecord {
    pub org: String,
    pub account_id: String,
    pub name: Option<String>,
    pub phone_number_id: Option<String>,
    pub verify_token_hash: Option<String>,
    pub app_secret: Option<Vec<u8>>,
    /// When it was registered through the API; `None` for an account only seen in events.
    pub registered_at: Option<i64>,
    pub updated_at: Option<i64>,
    /// Where verified Meta webhook POSTs naming this account are forwarded (not a secret).
    pub forward_url: Option<String>,
}

/// Where a delivery of the outbox stands. Delivered ones leave the outbox (their count
/// is kept per account), so only these two are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

/// One webhook POST to forward to one URL, byte for byte. Times are Unix milliseconds
/// of the server's wall clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxDelivery {
    /// Sent as `X-Whatstat-Delivery`; the same on every attempt.
    pub id: String,
    pub org: String,
    /// The account whose `forward_url` this is (the first the payload names, if several share it).
    pub account: String,
    pub forward_url: String,
    pub body: Vec<u8>,
    /// `X-Hub-Signature-256` as Meta sent it.
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub created_at: i64,
    pub next_attempt_at: i64,
    /// After this, a failed attempt moves the delivery to the failed list.
    pub expires_at: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub state: DeliveryState,
}

/// The forwarding status of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardingCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Deliveries moved to the failed list because the organization's outbox was full.
    pub dropped_over_bound: u64,
    pub oldest_pending_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_success_at: Option<i64>,
}

/// How many deliveries the whole outbox holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxTotals {
    pub pending: u64,
    pub failed: u64,
}

/// A webhook payload no account claimed yet, kept as received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnroutedPayload {
    /// Assigned by the store; increasing in order of arrival.
    pub id: i64,
    pub received_at: i64,
    /// The `phone_number_id`s it names that no account claimed when it arrived (or since).
    pub phone_number_ids: Vec<String>,
    /// The `X-Hub-Signature-256` header as received.
    pub signature: Option<String>,
    pub body: Vec<u8>,
}

/// Identifies one entity's state: its kind, the account and the entity's own id, all
/// within one organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    pub kind: EntityKind,
    pub account: String,
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct EntityWrite {
    pub key: EntityKey,
    pub state: Vec<u8>,
    /// Unix second after which compaction may forget the state; `None` keeps it.
    pub keep_until: Option<i64>,
}

/// The account under which the organization-wide sum of every counter is kept, so that
/// a query over all accounts reads one row per bucket and series, however many accounts
/// there are. Account ids are never empty, so it cannot clash with a real one. A backend
/// that removes an account's counters subtracts them here too.
pub const ALL_ACCOUNTS: &str = "";

/// A change to one counter in one bucket of one tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDelta {
    pub account: String,
    pub tier: Tier,
    pub bucket: i64,
    pub series: Series,
    pub dim: String,
    pub delta: i64,
}

/// What a write's transition hands back to be stored atomically.
#[derive(Debug, Default)]
pub struct Changes {
    pub accounts: Vec<String>,
    pub entities: Vec<EntityWrite>,
    pub counters: Vec<CounterDelta>,
}

/// The stored states of a write's keys (absent keys have none).
pub type States = HashMap<EntityKey, Vec<u8>>;

/// The requested keys that have no state because compaction pruned it (see
/// [`RollupStore::prune_states`]), as told by the trace of pruned ids; a key never seen is
/// in neither this nor [`States`].
pub type Pruned = HashSet<EntityKey>;

/// What the trace of pruned ids keeps of a pruned state's key, within its organization and
/// account: the first 8 bytes of SHA-256 over the kind's code and the id. Two ids of one
/// account collide with odds of 2^-64 per pair (see docs/retention.md).
pub fn pruned_digest(kind: EntityKind, id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(kind.code().to_be_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}

/// The pure step of a write: the stored states of the requested keys in, changes out.
/// A backend may call it more than once (a job that lost a deadlock is run again), each
/// time on freshly loaded states; only the last call's changes are stored. What the
/// caller wants to learn from it (e.g. how many events were new) it keeps in state the
/// closure captures, and reads once `apply` succeeded.
pub type Transition = Box<dyn FnMut(&States, &Pruned) -> Result<Changes, String> + Send>;

/// One atomic write: load `keys` (their states, and which absent ones were pruned), run
/// `transition` on what was found, store its changes.
/// Backends make the load-transition-store sequence atomic against every other writer.
pub struct WriteJob {
    pub org: String,
    /// How many events the job writes (reported per group commit in `GET /metrics`).
    pub events: usize,
    pub keys: Vec<EntityKey>,
    pub transition: Transition,
    /// A named position (e.g. how far an import has read) stored in the same
    /// transaction, so that resuming never skips or repeats a committed batch.
    pub progress: Option<(String, i64)>,
    /// Webhook deliveries to insert into the outbox in the same transaction, if the
    /// transition succeeds: a forwarded payload is in the outbox exactly when its
    /// figures are stored.
    pub outbox: Vec<OutboxDelivery>,
}

/// A counter's key within one organization: account, tier, series, bucket, dimension.
pub(crate) type CounterKey = (String, Tier, Series, i64, String);

/// What one commit writes for one organization, merged over the jobs of its group: the
/// last state of each entity and the sum of each counter's deltas, in one sorted order
/// (so that writes walk the indexes in order and concurrent writers lock in one order).
#[derive(Default)]
pub(crate) struct OrgWrites {
    pub entities: BTreeMap<EntityKey, EntityWrite>,
    /// Hashed, not ordered: a group sums hundreds of thousands of deltas into far fewer
    /// keys, and ordering each delta on its text keys cost more than the writes (the keys
    /// are sorted once, by the backend that writes them).
    pub counters: FxHashMap<CounterKey, i64>,
    pub accounts: BTreeSet<String>,
    pub progress: BTreeMap<String, i64>,
    pub outbox: Vec<OutboxDelivery>,
}

impl OrgWrites {
    /// Adds one job's changes.
    pub fn absorb(
        &mut self,
        changes: Changes,
        progress: Option<&(String, i64)>,
        outbox: &[OutboxDelivery],
    ) {
        self.outbox.extend_from_slice(outbox);
        for e in changes.entities {
            self.entities.insert(e.key.clone(), e);
        }
        for c in changes.counters {
            *self
                .counters
                .entry((c.account, c.tier, c.series, c.bucket, c.dim))
                .or_insert(0) += c.delta;
        }
        self.accounts.extend(changes.accounts);
        if let Some((name, position)) = progress {
            self.progress.insert(name.clone(), *position);
        }
    }

    /// The counters that change, without those whose deltas cancelled out, in no order: a
    /// backend writes them in the order of its own keys.
    pub fn changed_counters(&self) -> impl Iterator<Item = (&CounterKey, i64)> {
        self.counters
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (k, *v))
    }
}

/// Rows kept per tier, for reporting and for checking that storage stays bounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TierRows {
    pub hour: u64,
    pub day: u64,
    pub month: u64,
    pub states: u64,
    /// Ids kept in the trace of pruned states.
    pub pruned_ids: u64,
}

impl TierRows {
    /// Counts `n` rows of a stored tier number; a number no tier has counts as monthly,
    /// as monthly rows are the ones kept forever.
    pub(crate) fn count(&mut self, tier: i64, n: u64) {
        match Tier::from_code(tier) {
            Some(Tier::Hour) => self.hour += n,
            Some(Tier::Day) => self.day += n,
            Some(Tier::Month) | None => self.month += n,
        }
    }
}

/// Sums of counters per bucket, series and dimension over a bucket range of one tier.
#[derive(Debug, Clone)]
pub struct CounterQuery {
    pub org: String,
    /// One account, or `ALL_ACCOUNTS` for the organization-wide sums.
    pub account: String,
    pub tier: Tier,
    /// Inclusive bucket range.
    pub from: i64,
    pub to: i64,
    pub series: Vec<Series>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    pub bucket: i64,
    pub series: Series,
    pub dim: String,
    pub value: i64,
}

/// The right to compact, for as long as this lives. One process needs no lock (SQLite's
/// writer serializes); on PostgreSQL the instance that wins keeps an advisory lock on a
/// session of its own until it stops, so the guard holds nothing either.
#[derive(Debug)]
pub struct CompactionGuard {
    _granted: (),
}

impl CompactionGuard {
    pub(crate) fn granted() -> Self {
        CompactionGuard { _granted: () }
    }
}

/// Entity states and counters: the write path, the queries and their upkeep.
#[async_trait]
pub trait RollupStore: Send + Sync + 'static {
    /// Applies one write job atomically and durably.
    async fn apply(&self, job: WriteJob) -> StoreResult<()>;
    async fn counters(&self, query: CounterQuery) -> StoreResult<Vec<CounterRow>>;
    /// Whether events (or a registration) made an account known to the organization.
    async fn account_exists(&self, org: &str, account: &str) -> StoreResult<bool>;
    /// Deletes at most `limit` counters of `tier` in buckets before `before`; returns how many.
    async fn expire_counters(
        &self,
        org: &str,
        tier: Tier,
        before: i64,
        limit: usize,
    ) -> StoreResult<u64>;
    /// Deletes at most `limit` entity states of `org` whose `keep_until` is before `before`,
    /// and keeps each one's id in the organization's trace of pruned ids until
    /// `forget_after` (`None`: for good), so that a later write learns it was pruned
    /// ([`Pruned`]). Deletes nothing while a hold on the organization's states
    /// ([`RollupStore::hold_states`]) lasts until `before` or later.
    async fn prune_states(
        &self,
        org: &str,
        before: i64,
        limit: usize,
        forget_after: Option<i64>,
    ) -> StoreResult<u64>;
    /// Deletes at most `limit` ids of `org`'s trace of pruned ids kept until before `before`.
    async fn expire_pruned(&self, org: &str, before: i64, limit: usize) -> StoreResult<u64>;
    /// Keeps every entity state of `org` from being pruned until `until` (a time compared
    /// with the `before` of [`RollupStore::prune_states`]), under `name`: taking a hold of
    /// the same name again moves its end. Held states are pruned once the hold is
    /// released or has ended, so that a holder that stops without releasing it blocks
    /// pruning for a bounded time only.
    async fn hold_states(&self, org: &str, name: &str, until: i64) -> StoreResult<()>;
    /// Ends a hold taken with [`RollupStore::hold_states`] (nothing if there is none).
    async fn release_states(&self, org: &str, name: &str) -> StoreResult<()>;
    /// The position last stored under `name` with a write job.
    async fn progress(&self, name: &str) -> StoreResult<Option<i64>>;
    /// Row counts per tier for one organization (all when `None`), and stored states.
    async fn tier_rows(&self, org: Option<&str>) -> StoreResult<TierRows>;
    /// The right to compact, for as long as the returned guard lives; `None` when another
    /// instance is the compactor.
    async fn compaction_lock(&self) -> StoreResult<Option<CompactionGuard>>;
}

/// Organizations and their API keys (kept as digests).
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    /// Creates an organization with its first credential, in one transaction.
    async fn create_org(
        &self,
        org: &OrgRecord,
        first_key: &credentials::CredentialRecord,
        key_hash: &str,
    ) -> StoreResult<()>;
    async fn org_by_id(&self, id: &str) -> StoreResult<Option<OrgRecord>>;
    async fn org_count(&self) -> StoreResult<u64>;
    async fn orgs(&self) -> StoreResult<Vec<OrgRecord>>;
    /// Stores a new credential under the digest of its secret.
    async fn create_credential(
        &self,
        record: &credentials::CredentialRecord,
        secret_hash: &str,
    ) -> StoreResult<()>;
    /// The credential with this digest, with its organization.
    async fn credential_by_hash(
        &self,
        secret_hash: &str,
    ) -> StoreResult<Option<(OrgRecord, credentials::CredentialRecord)>>;
    /// The organization's credentials of one kind, oldest first.
    async fn credentials(
        &self,
        org: &str,
        kind: credentials::CredentialKind,
    ) -> StoreResult<Vec<credentials::CredentialRecord>>;
    /// Deletes one credential (`false`: the organization has no such one of that kind).
    async fn delete_credential(
        &self,
        org: &str,
        kind: credentials::CredentialKind,
        id: &str,
    ) -> StoreResult<bool>;
    /// Records when a credential was last used.
    async fn touch_credential(&self, id: &str, at: i64) -> StoreResult<()>;
}

/// Accounts (WhatsApp numbers) and the settings of their Meta webhook.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Registers an account: inserts it, or fills in one so far only seen in events.
    /// `Conflict` if it is registered already or its `phone_number_id` is another's.
    async fn register_account(&self, account: &AccountRecord) -> StoreResult<()>;
    /// Replaces the registration fields of a registered account (`false`: no such one).
    /// `Conflict` if its `phone_number_id` is another's.
    async fn update_account(&self, account: &AccountRecord) -> StoreResult<bool>;
    /// Every account of an organization, registered or seen in events, by `account_id`.
    async fn accounts(&self, org: &str) -> StoreResult<Vec<AccountRecord>>;
    async fn account(&self, org: &str, account_id: &str) -> StoreResult<Option<AccountRecord>>;
    /// The account (of any organization) that claims a Meta `phone_number_id`.
    async fn account_by_phone(&self, phone_number_id: &str) -> StoreResult<Option<AccountRecord>>;
    /// Whether any account's verify token has this digest.
    async fn verify_token_known(&self, token_hash: &str) -> StoreResult<bool>;
    /// Deletes an account with its figures and entity states (`false`: no such account).
    async fn delete_account(&self, org: &str, account_id: &str) -> StoreResult<bool>;
}

/// Meta webhook payloads kept for numbers no account claims yet.
#[async_trait]
pub trait UnroutedStore: Send + Sync + 'static {
    /// Keeps an unrouted payload (its `id` is ignored), then drops the oldest ones until at
    /// most `max_payloads` totalling at most `max_bytes` of bodies remain; returns its id.
    async fn keep_unrouted(
        &self,
        payload: &UnroutedPayload,
        max_payloads: usize,
        max_bytes: usize,
    ) -> StoreResult<i64>;
    /// Kept payloads, oldest first; only those naming `phone_number_id` when given.
    async fn unrouted(&self, phone_number_id: Option<&str>) -> StoreResult<Vec<UnroutedPayload>>;
    /// Marks a payload as routed for one `phone_number_id`; a payload left naming none is
    /// deleted.
    async fn release_unrouted(&self, id: i64, phone_number_id: &str) -> StoreResult<()>;
    /// Deletes a kept payload (`false`: no such payload).
    async fn delete_unrouted(&self, id: i64) -> StoreResult<bool>;
    /// How many payloads are kept.
    async fn unrouted_count(&self) -> StoreResult<u64>;
}

/// The outbox of webhook deliveries to forward. Deliveries are inserted by write jobs
/// ([`WriteJob::outbox`]); this is the rest of their life. Times are Unix milliseconds.
#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    /// Takes up to `limit` pending deliveries due at `now` that no one holds, holding each
    /// until `lease_until` (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so that instances
    /// sharing the outbox never take the same one while its lease lasts).
    async fn claim_due(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> StoreResult<Vec<OutboxDelivery>>;
    /// A delivery the upstream accepted: it leaves the outbox and counts as delivered.
    async fn mark_delivered(&self, delivery: &OutboxDelivery, at: i64) -> StoreResult<()>;
    /// A failed attempt: the delivery is due again at `next_attempt_at` (and no longer held).
    async fn reschedule(
        &self,
        delivery: &OutboxDelivery,
        next_attempt_at: i64,
        error: &str,
    ) -> StoreResult<()>;
    /// A failed attempt past the delivery's age: it moves to the failed list.
    async fn mark_failed(&self, delivery: &OutboxDelivery, error: &str) -> StoreResult<()>;
    /// Makes every pending delivery due at `now` (after a restart). A backend only one
    /// process writes (SQLite) also frees held ones; on a shared one (PostgreSQL) the
    /// leases of other instances stand, and those of a crashed one run out.
    async fn resume_pending(&self, now: i64) -> StoreResult<u64>;
    /// Moves the oldest pending deliveries of each organization to the failed list until
    /// its pending bodies total at most `max_bytes`; returns (org, account, moved) per account.
    async fn bound_pending(
        &self,
        max_bytes: u64,
        error: &str,
    ) -> StoreResult<Vec<(String, String, u64)>>;
    async fn forwarding_counts(&self, org: &str, account: &str) -> StoreResult<ForwardingCounts>;
    /// The account's failed deliveries, oldest first.
    async fn failed_deliveries(&self, org: &str, account: &str)
    -> StoreResult<Vec<OutboxDelivery>>;
    /// Makes failed deliveries pending again, due at `now` and expiring at `expires_at`:
    /// one (`id`) or all of the account's; returns how many.
    async fn retry_failed(
        &self,
        org: &str,
        account: &str,
        id: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<u64>;
    /// Deletes one failed delivery (`false`: the account has no such failed delivery).
    async fn delete_failed(&self, org: &str, account: &str, id: &str) -> StoreResult<bool>;
    /// The outbox's deliveries of every organization, pending and failed.
    async fn outbox_totals(&self) -> StoreResult<OutboxTotals>;
}

/// A whole store: every concern, implemented by each backend.
pub trait Store: RollupStore + TenantStore + AccountStore + UnroutedStore + OutboxStore {}

impl<T: RollupStore + TenantStore + AccountStore + UnroutedStore + OutboxStore> Store for T {}

/// How a store is opened, beyond its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The SQLite writer's page cache, in KiB (PostgreSQL keeps its own).
    sqlite_cache_kib: i64,
}

impl StoreOptions {
    /// Above SQLite's 2 MiB default, which rereads the B-trees' upper pages for every
    /// statement. More did not pay: at 10M events ingest was the same with 32, 64 and 128
    /// MiB, the pages missed being read from the operating system's cache, while the
    /// server's peak memory grew by the whole difference (docs/benchmarks.md, run K).
    pub const DEFAULT_SQLITE_CACHE_MIB: u64 = 32;
    /// Below this the writer reads the B-trees' upper pages back for every statement.
    pub const MIN_SQLITE_CACHE_MIB: u64 = 8;
    /// A bound well above what helps, so that a typo cannot ask for terabytes.
    pub const MAX_SQLITE_CACHE_MIB: u64 = 65_536;

    pub fn with_sqlite_cache_mib(mib: u64) -> Result<StoreOptions, String> {
        let allowed = Self::MIN_SQLITE_CACHE_MIB..=Self::MAX_SQLITE_CACHE_MIB;
        match i64::try_from(mib) {
            Ok(m) if allowed.contains(&mib) => Ok(StoreOptions {
                sqlite_cache_kib: m * 1024,
            }),
            _ => Err(format!(
                "--sqlite-cache-mib is {mib}; allowed: {} to {} (MiB)",
                allowed.start(),
                allowed.end()
            )),
        }
    }

    pub fn sqlite_cache_kib(&self) -> i64 {
        self.sqlite_cache_kib
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sqlite_cache_kib: Self::DEFAULT_SQLITE_CACHE_MIB as i64 * 1024,
        }
    }
}

/// Opens the backend a database URL names (`sqlite://PATH`, `postgres://...`), with the
/// default options.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, StoreOptions::default()).await
}

/// Opens the backend a database URL names. Called once, where the program starts; the
/// engine's services then hold the concerns they need.
pub async fn open_with(url: &str, options: StoreOptions) -> StoreResult<Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(sqlite::SqliteStore::open_with(path, options)?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}
