//! The server backend: PostgreSQL, shared by any number of stateless instances.
//!
//! Write jobs are committed in groups (group commit): whatever jobs are queued share one
//! transaction. Placeholder rows are inserted for the entity keys that do not exist yet,
//! then every key of the group is locked (`FOR UPDATE`, in one sorted order), the pure
//! transitions run in arrival order on what was found, and their merged changes are
//! written with set-based statements (`UNNEST` arrays: one statement per table, never one
//! per event). Counters are upserted as increments, so two instances writing the same
//! bucket both count. A group that loses a deadlock or a serialization check is run again
//! from the start (the transitions are pure, so that is safe).
//!
//! Every table keyed by organization has the organization first in its key, and no query
//! reads two organizations at once, so the tables can be distributed by organization
//! (Citus): see `docs/scaling.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

mod accounts;
pub mod notify;
mod outbox;
mod rollups;
mod tenants;
mod unrouted;

use super::{
    EntityKey, EntityKind, OrgRecord, OrgWrites, Pruned, StoreError, StoreResult, WriteJob,
    pruned_digest,
};
use crate::telemetry;

/// Connections per instance.
const POOL_SIZE: usize = 16;
/// How long a job waits for a free connection before it is refused as overload.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How many times a job is tried when it loses a deadlock or a serialization check.
const ATTEMPTS: u32 = 8;
/// Group writers per instance: each commits whatever jobs are queued as one transaction.
const WRITERS: usize = 2;
/// At most this many jobs share one commit.
const MAX_GROUP: usize = 256;
/// Jobs waiting beyond this are refused as overload.
const QUEUE_DEPTH: usize = 4096;
/// How long a placeholder row outlives its job if no state is ever written into it.
const PLACEHOLDER_SECS: i64 = 3_600;

/// Versioned schema changes, applied in order at start; `schema_migrations` records them.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE orgs (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    timezone TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
    org TEXT COLLATE "C" NOT NULL,
    key_hash TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org, key_hash)
);
CREATE UNIQUE INDEX api_keys_key_hash ON api_keys (key_hash);
CREATE TABLE accounts (
    org TEXT COLLATE "C" NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (org, account_id)
);
CREATE TABLE entities (
    org TEXT COLLATE "C" NOT NULL,
    kind SMALLINT NOT NULL,
    account TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    state BYTEA NOT NULL,
    keep_until BIGINT,
    PRIMARY KEY (org, kind, account, id)
);
CREATE INDEX entities_keep_until ON entities (keep_until) WHERE keep_until IS NOT NULL;
CREATE TABLE counters (
    org TEXT COLLATE "C" NOT NULL,
    tier SMALLINT NOT NULL,
    bucket BIGINT NOT NULL,
    account TEXT COLLATE "C" NOT NULL,
    series TEXT COLLATE "C" NOT NULL,
    dim TEXT COLLATE "C" NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (org, account, tier, bucket, series, dim)
);
CREATE INDEX counters_expiry ON counters (org, tier, bucket);
CREATE TABLE progress (
    org TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (org, name)
);
CREATE INDEX progress_name ON progress (name);
"#,
    r#"
ALTER TABLE accounts
    ADD COLUMN name TEXT,
    ADD COLUMN phone_number_id TEXT COLLATE "C",
    ADD COLUMN verify_token_hash TEXT COLLATE "C",
    ADD COLUMN app_secret BYTEA,
    ADD COLUMN registered_at BIGINT,
    ADD COLUMN updated_at BIGINT;
CREATE INDEX accounts_verify_token_hash ON accounts (verify_token_hash) WHERE verify_token_hash IS NOT NULL;
-- Which account claims a Meta phone_number_id: unique across organizations, looked up
-- before the organization is known (a reference table on Citus).
CREATE TABLE phone_numbers (
    phone_number_id TEXT COLLATE "C" PRIMARY KEY,
    org TEXT COLLATE "C" NOT NULL,
    account_id TEXT COLLATE "C" NOT NULL
);
CREATE INDEX phone_numbers_account ON phone_numbers (org, account_id);
CREATE TABLE unrouted (
    id BIGSERIAL PRIMARY KEY,
    received_at BIGINT NOT NULL,
    signature TEXT,
    body BYTEA NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE TABLE unrouted_phones (
    phone_number_id TEXT COLLATE "C" NOT NULL,
    payload BIGINT NOT NULL REFERENCES unrouted (id) ON DELETE CASCADE,
    PRIMARY KEY (phone_number_id, payload)
);
CREATE INDEX unrouted_phones_payload ON unrouted_phones (payload);
"#,
    // Counters keyed by series before bucket: a query's `series = ANY(...)` becomes one
    // index range per series instead of a filter over every series of every bucket.
    r#"
ALTER TABLE counters DROP CONSTRAINT counters_pkey;
ALTER TABLE counters ADD PRIMARY KEY (org, account, tier, series, bucket, dim);
"#,
    // Several credentials per organization, each with a scope: the keys made before are
    // the organization's one key and can do everything, so they become `admin`.
    r#"
ALTER TABLE api_keys
    ADD COLUMN id TEXT COLLATE "C",
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'key',
    ADD COLUMN name TEXT NOT NULL DEFAULT 'Organization key',
    ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin',
    ADD COLUMN accounts TEXT,
    ADD COLUMN expires_at BIGINT,
    ADD COLUMN last_used_at BIGINT;
UPDATE api_keys SET id = 'key_' || substr(key_hash, 1, 16) WHERE id IS NULL;
ALTER TABLE api_keys ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX api_keys_id ON api_keys (id);
CREATE INDEX api_keys_org_kind ON api_keys (org, kind);
"#,
    // The webhook tee: an account's forward URL, the outbox of deliveries to it, and
    // per-account delivery counts (delivered ones leave the outbox).
    r#"
ALTER TABLE accounts ADD COLUMN forward_url TEXT;
CREATE TABLE outbox (
    org TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    account TEXT COLLATE "C" NOT NULL,
    forward_url TEXT NOT NULL,
    body BYTEA NOT NULL,
    bytes BIGINT NOT NULL,
    signature TEXT,
    content_type TEXT,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    lease_until BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    state TEXT NOT NULL,
    PRIMARY KEY (org, id)
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_account ON outbox (org, account, state, created_at);
CREATE TABLE outbox_stats (
    org TEXT COLLATE "C" NOT NULL,
    account TEXT COLLATE "C" NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    dropped_over_bound BIGINT NOT NULL DEFAULT 0,
    last_success_at BIGINT,
    last_error TEXT,
    PRIMARY KEY (org, account)
);
"#,
    // The trace of pruned ids (a digest per pruned state, so that a later event for it is
    // told from one never seen), holds that keep an organization's states from pruning
    // while an import runs, and state expiry per organization.
    r#"
CREATE INDEX entities_expiry ON entities (org, keep_until) WHERE keep_until IS NOT NULL;
DROP INDEX entities_keep_until;
CREATE TABLE pruned (
    org TEXT COLLATE "C" NOT NULL,
    account TEXT COLLATE "C" NOT NULL,
    digest BIGINT NOT NULL,
    keep_until BIGINT,
    PRIMARY KEY (org, account, digest)
);
CREATE INDEX pruned_expiry ON pruned (org, keep_until) WHERE keep_until IS NOT NULL;
CREATE TABLE state_holds (
    org TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    until BIGINT NOT NULL,
    PRIMARY KEY (org, name)
);
"#,
];

pub struct PostgresStore {
    pool: Pool,
    jobs: mpsc::Sender<Pending>,
    /// The session holding the compaction lock, once this instance has won it.
    compactor: tokio::sync::Mutex<Option<Object>>,
}

/// Why one attempt at a job failed: worth another try, or final.
enum Failure {
    Retry(String),
    Fatal(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        if is_retryable(&e) {
            Failure::Retry(e.to_string())
        } else {
            Failure::Fatal(backend(e))
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Fatal(e)
    }
}

fn is_retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    let unavailable = is_unavailable(&e);
    let text = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    };
    if unavailable {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

/// Whether `e` says that the database cannot serve now but may later: it cannot be
/// reached or the connection broke (refused, reset, closed, timed out; SQLSTATE class
/// 08), it is shutting down or starting (57P01 admin_shutdown, 57P02 crash_shutdown,
/// 57P03 cannot_connect_now), it lacks resources (class 53: 53100 disk_full, out of
/// memory, too many connections), it is read-only (25006 read_only_sql_transaction, as on
/// a standby), or its files failed (58030 io_error).
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08")
            || code.starts_with("53")
            || matches!(code, "57P01" | "57P02" | "57P03" | "25006" | "58030");
    }
    if e.is_closed() {
        return true;
    }
    // No SQLSTATE: a connection that could not be made or broke, or a timeout.
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | UnexpectedEof
                    | TimedOut
                    | AddrNotAvailable
                    | HostUnreachable
                    | NetworkUnreachable
                    | NetworkDown
                    | NotFound
            );
        }
        cause = c.source();
    }
    e.to_string() == "timeout waiting for server"
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        // No connection within the wait (every one busy or stuck), or none could be made
        // in time: the database is not answering.
        PoolError::Timeout(kind) => StoreError::Unavailable(format!(
            "no database connection in time ({})",
            match kind {
                deadpool_postgres::TimeoutType::Wait => "waiting for a free one",
                deadpool_postgres::TimeoutType::Create => "connecting",
                deadpool_postgres::TimeoutType::Recycle => "checking an idle one",
            }
        )),
        PoolError::Closed => StoreError::Closed,
        PoolError::Backend(e) => backend(e),
        other => StoreError::Backend(other.to_string()),
    }
}

fn wall_clock() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A short, growing, jittered pause before trying a job again.
async fn backoff(attempt: u32) {
    let base = 5u64 << attempt.min(6);
    let jitter = rand::random_range(0..=base);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

/// An advisory-lock key private to this database and schema, so that test schemas
/// sharing one database never wait on each other.
const LOCK_KEY_SQL: &str =
    "hashtext(current_database() || '/' || current_schema() || '/whatstat/' || $1::text)";

impl PostgresStore {
    /// Connects, and brings the schema up to date (under an advisory lock, so instances
    /// starting together migrate once).
    pub async fn open(url: &str) -> StoreResult<Self> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Backend(format!("bad PostgreSQL URL: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..WRITERS {
            tokio::spawn(group_writer(pool.clone(), queue.clone()));
        }
        let store = PostgresStore {
            pool,
            jobs,
            compactor: tokio::sync::Mutex::new(None),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute(
            &format!("SELECT pg_advisory_xact_lock({LOCK_KEY_SQL})"),
            &[&"migrations"],
        )
        .await
        .map_err(backend)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(backend)?;
        let current: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(backend)?
            .get(0);
        let current = usize::try_from(current).unwrap_or(0);
        if current > MIGRATIONS.len() {
            return Err(StoreError::Backend(format!(
                "the database schema is at version {current}, newer than this build knows ({}); upgrade whatstat",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.batch_execute(sql).await.map_err(backend)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(backend)?;
            tracing::info!(version, "applied postgres migration");
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    /// Runs a re-runnable piece of work, again when it loses a deadlock.
    async fn retrying<T, F, Fut>(&self, mut work: F) -> StoreResult<T>
    where
        F: FnMut(Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let client = self.client().await?;
            match work(client).await {
                Ok(v) => return Ok(v),
                Err(Failure::Retry(why)) if attempt < ATTEMPTS => {
                    tracing::debug!(attempt, reason = %why, "transaction lost a race; trying again");
                    backoff(attempt).await;
                }
                Err(Failure::Retry(why)) => {
                    return Err(StoreError::Backend(format!(
                        "gave up after {attempt} attempts: {why}"
                    )));
                }
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
    }
}

/// A write job waiting for its group's commit.
struct Pending {
    job: WriteJob,
    reply: oneshot::Sender<StoreResult<()>>,
}

/// Takes whatever jobs are queued (up to a limit) and commits them together.
async fn group_writer(pool: Pool, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = queue.lock().await;
            match rx.recv().await {
                Some(p) => group.push(p),
                None => return,
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
        }
        let jobs = group.len();
        commit_group(&pool, group).await;
        telemetry::write_unqueued(jobs);
    }
}

/// Commits a group, again from the start when it loses a deadlock (transitions are pure).
async fn commit_group(pool: &Pool, mut group: Vec<Pending>) {
    let started = std::time::Instant::now();
    let events = group.iter().map(|p| p.job.events).sum();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = match pool.get().await {
            Ok(mut client) => write_group(&mut client, &mut group).await,
            Err(e) => Err(Failure::Fatal(pool_error(e))),
        };
        match outcome {
            Ok(results) => {
                telemetry::group_committed(started.elapsed(), events);
                for (p, r) in group.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
                return;
            }
            Err(Failure::Retry(why)) if attempt < ATTEMPTS => {
                tracing::debug!(attempt, reason = %why, "write group lost a race; running it again");
                backoff(attempt).await;
            }
            Err(failure) => {
                let error = match failure {
                    Failure::Retry(why) => StoreError::Backend(format!(
                        "write group gave up after {attempt} attempts: {why}"
                    )),
                    Failure::Fatal(e) => e,
                };
                tracing::error!(%error, jobs = group.len(), "write group failed; nothing of it was stored");
                for p in group {
                    let _ = p.reply.send(Err(error.for_each_job()));
                }
                return;
            }
        }
    }
}

/// One attempt at a group of jobs, in one transaction: lock every key of the group in one
/// sorted order, run the transitions in arrival order (each sees the states the previous
/// ones left), and write everything with one set-based statement per table.
async fn write_group(
    client: &mut Object,
    group: &mut [Pending],
) -> Result<Vec<StoreResult<()>>, Failure> {
    let tx = client.transaction().await?;
    let mut keys_by_org: BTreeMap<String, BTreeSet<EntityKey>> = BTreeMap::new();
    for p in group.iter() {
        keys_by_org
            .entry(p.job.org.clone())
            .or_default()
            .extend(p.job.keys.iter().cloned());
    }
    let mut states: HashMap<String, HashMap<EntityKey, Vec<u8>>> = HashMap::new();
    let mut pruned: HashMap<String, Pruned> = HashMap::new();
    for (org, keys) in &keys_by_org {
        let keys: Vec<&EntityKey> = keys.iter().collect();
        let found = lock_states(&tx, org, &keys).await?;
        let missing: Vec<&EntityKey> = keys
            .into_iter()
            .filter(|k| !found.contains_key(*k))
            .collect();
        pruned.insert(org.clone(), pruned_among(&tx, org, &missing).await?);
        states.insert(org.clone(), found);
    }
    let mut writes: BTreeMap<String, OrgWrites> = BTreeMap::new();
    let mut results = Vec::with_capacity(group.len());
    for p in group.iter_mut() {
        let org_states = states.entry(p.job.org.clone()).or_default();
        let view: HashMap<EntityKey, Vec<u8>> = p
            .job
            .keys
            .iter()
            .filter_map(|k| org_states.get(k).map(|s| (k.clone(), s.clone())))
            .collect();
        let org_pruned = pruned.get(&p.job.org);
        let pruned_view: Pruned = p
            .job
            .keys
            .iter()
            .filter(|k| !view.contains_key(*k) && org_pruned.is_some_and(|p| p.contains(*k)))
            .cloned()
            .collect();
        match (p.job.transition)(&view, &pruned_view) {
            Ok(changes) => {
                for e in &changes.entities {
                    org_states.insert(e.key.clone(), e.state.clone());
                }
                let w = writes.entry(p.job.org.clone()).or_default();
                w.absorb(changes, p.job.progress.as_ref(), &p.job.outbox);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(StoreError::Transition(e))),
        }
    }
    let (mut counter_rows, mut state_rows) = (0, 0);
    for (org, w) in &writes {
        counter_rows += write_org(&tx, org, w).await?;
        state_rows += w.entities.len();
    }
    tx.commit().await?;
    telemetry::rows_written(counter_rows, state_rows);
    Ok(results)
}

/// Locks the rows of `keys` (sorted), creating empty placeholders for missing ones so that
/// they can be locked too; returns the states found (placeholders read as absent).
async fn lock_states(
    tx: &deadpool_postgres::Transaction<'_>,
    org: &str,
    keys: &[&EntityKey],
) -> Result<HashMap<EntityKey, Vec<u8>>, Failure> {
    let mut found = HashMap::with_capacity(keys.len());
    if keys.is_empty() {
        return Ok(found);
    }
    let kinds: Vec<i16> = keys.iter().map(|k| k.kind.code()).collect();
    let accounts: Vec<&str> = keys.iter().map(|k| k.account.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    let insert = tx
        .prepare_cached(
            "INSERT INTO entities (org, kind, account, id, state, keep_until)
             SELECT $1, u.k, u.a, u.i, ''::bytea, $5
             FROM UNNEST($2::smallint[], $3::text[], $4::text[]) AS u(k, a, i)
             ON CONFLICT DO NOTHING",
        )
        .await?;
    tx.execute(
        &insert,
        &[
            &org,
            &kinds,
            &accounts,
            &ids,
            &(wall_clock() + PLACEHOLDER_SECS),
        ],
    )
    .await?;
    // Locked in key order (byte order, as the keys are sorted), so two groups never
    // wait on each other in a cycle.
    let select = tx
        .prepare_cached(
            "SELECT kind, account, id, state FROM entities
             WHERE org = $1 AND (kind, account, id) IN (
                 SELECT u.k, u.a, u.i FROM UNNEST($2::smallint[], $3::text[], $4::text[]) AS u(k, a, i))
             ORDER BY kind, account, id
             FOR UPDATE",
        )
        .await?;
    let rows = tx.query(&select, &[&org, &kinds, &accounts, &ids]).await?;
    if rows.len() != keys.len() {
        // A row vanished between insert and lock (compaction pruned it): start over.
        return Err(Failure::Retry(format!(
            "{} of {} entity rows vanished before they were locked",
            keys.len() - rows.len(),
            keys.len()
        )));
    }
    for row in rows {
        let state: Vec<u8> = row.try_get(3)?;
        if state.is_empty() {
            continue;
        }
        let kind: i16 = row.try_get(0)?;
        let key = EntityKey {
            kind: EntityKind::from_code(i64::from(kind)).ok_or_else(|| {
                Failure::Fatal(StoreError::Backend(format!(
                    "stored kind {kind} is not an entity kind"
                )))
            })?,
            account: row.try_get(1)?,
            id: row.try_get(2)?,
        };
        found.insert(key, state);
    }
    Ok(found)
}

/// Which of `keys` (keys of `org` that have no state) the trace of pruned ids holds.
async fn pruned_among(
    tx: &deadpool_postgres::Transaction<'_>,
    org: &str,
    keys: &[&EntityKey],
) -> Result<Pruned, Failure> {
    let mut pruned = Pruned::default();
    if keys.is_empty() {
        return Ok(pruned);
    }
    let mut by_digest: HashMap<(&str, i64), Vec<&EntityKey>> = HashMap::new();
    for k in keys {
        by_digest
            .entry((k.account.as_str(), pruned_digest(k.kind, &k.id)))
            .or_default()
            .push(k);
    }
    let accounts: Vec<&str> = by_digest.keys().map(|k| k.0).collect();
    let digests: Vec<i64> = by_digest.keys().map(|k| k.1).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT account, digest FROM pruned
             WHERE org = $1 AND (account, digest) IN (
                 SELECT u.a, u.d FROM UNNEST($2::text[], $3::bigint[]) AS u(a, d))",
        )
        .await?;
    for row in tx.query(&stmt, &[&org, &accounts, &digests]).await? {
        let account: &str = row.try_get(0)?;
        let digest: i64 = row.try_get(1)?;
        if let Some(found) = by_digest.get(&(account, digest)) {
            pruned.extend(found.iter().map(|k| (*k).clone()));
        }
    }
    Ok(pruned)
}

/// Writes one organization's share of a group, one statement per table, rows in one
/// sorted order; returns how many counters it wrote.
async fn write_org(
    tx: &deadpool_postgres::Transaction<'_>,
    org: &str,
    w: &OrgWrites,
) -> Result<usize, Failure> {
    if !w.accounts.is_empty() {
        let accounts: Vec<&str> = w.accounts.iter().map(String::as_str).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO accounts (org, account_id)
                 SELECT $1, a FROM UNNEST($2::text[]) AS u(a)
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&stmt, &[&org, &accounts]).await?;
    }
    if !w.entities.is_empty() {
        let n = w.entities.len();
        let (mut kinds, mut accounts, mut ids, mut states, mut until) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (key, e) in &w.entities {
            kinds.push(key.kind.code());
            accounts.push(key.account.as_str());
            ids.push(key.id.as_str());
            states.push(e.state.as_slice());
            until.push(e.keep_until);
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO entities (org, kind, account, id, state, keep_until)
                 SELECT $1, u.k, u.a, u.i, u.s, u.t
                 FROM UNNEST($2::smallint[], $3::text[], $4::text[], $5::bytea[], $6::bigint[]) AS u(k, a, i, s, t)
                 ON CONFLICT (org, kind, account, id)
                 DO UPDATE SET state = excluded.state, keep_until = excluded.keep_until",
            )
            .await?;
        tx.execute(&stmt, &[&org, &kinds, &accounts, &ids, &states, &until])
            .await?;
    }
    // In key order, so that concurrent writers lock rows in one order.
    let mut counters: Vec<_> = w.changed_counters().collect();
    counters.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let written = counters.len();
    if !counters.is_empty() {
        let n = counters.len();
        let (mut tiers, mut buckets, mut accounts, mut series, mut dims, mut values) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((account, tier, s, bucket, dim), value) in counters {
            tiers.push(tier.code());
            buckets.push(*bucket);
            accounts.push(account.as_str());
            series.push(s.as_str());
            dims.push(dim.as_str());
            values.push(value);
        }
        let stmt = tx
            .prepare_cached(
                "INSERT INTO counters (org, tier, bucket, account, series, dim, value)
                 SELECT $1, u.t, u.b, u.a, u.s, u.d, u.v
                 FROM UNNEST($2::smallint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[])
                     AS u(t, b, a, s, d, v)
                 ON CONFLICT (org, account, tier, series, bucket, dim)
                 DO UPDATE SET value = counters.value + excluded.value",
            )
            .await?;
        tx.execute(
            &stmt,
            &[&org, &tiers, &buckets, &accounts, &series, &dims, &values],
        )
        .await?;
    }
    for (name, position) in &w.progress {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO progress (org, name, position) VALUES ($1, $2, $3)
                 ON CONFLICT (org, name) DO UPDATE SET position = excluded.position",
            )
            .await?;
        tx.execute(&stmt, &[&org, name, position]).await?;
    }
    outbox::insert(tx, org, &w.outbox).await?;
    Ok(written)
}

fn org_row(r: &tokio_postgres::Row) -> StoreResult<OrgRecord> {
    Ok(OrgRecord {
        id: r.try_get(0).map_err(backend)?,
        name: r.try_get(1).map_err(backend)?,
        timezone: r.try_get(2).map_err(backend)?,
        created_at: r.try_get(3).map_err(backend)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_database_that_refuses_connections_is_unavailable() {
        // Port 1 on the loopback: nothing listens there.
        let e = tokio_postgres::connect("postgres://postgres@127.0.0.1:1/postgres", NoTls)
            .await
            .err()
            .expect("nothing listens on port 1");
        assert!(is_unavailable(&e), "{e}");
        match backend(e) {
            StoreError::Unavailable(m) => assert!(m.contains("refused"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pool_timeout_is_unavailable_and_a_closed_pool_is_closed() {
        for kind in [
            deadpool_postgres::TimeoutType::Wait,
            deadpool_postgres::TimeoutType::Create,
        ] {
            assert!(matches!(
                pool_error(PoolError::Timeout(kind)),
                StoreError::Unavailable(m) if m.starts_with("no database connection in time")
            ));
        }
        assert!(matches!(pool_error(PoolError::Closed), StoreError::Closed));
    }

    #[test]
    fn a_failed_group_keeps_its_kind_for_each_job() {
        let e = StoreError::Unavailable("disk full".into());
        assert!(matches!(e.for_each_job(), StoreError::Unavailable(m) if m == "disk full"));
        assert!(matches!(
            StoreError::Overloaded.for_each_job(),
            StoreError::Overloaded
        ));
        assert!(matches!(
            StoreError::Conflict("taken".into()).for_each_job(),
            StoreError::Backend(m) if m == "taken"
        ));
    }
}
