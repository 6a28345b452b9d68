//! The embedded backend: one SQLite file in WAL mode. A single writer thread owns the
//! write connection and commits whatever jobs are queued in one transaction (group
//! commit); readers use their own connections and never wait for the writer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

mod accounts;
mod entity_log;
pub(crate) mod faults;
mod outbox;
mod rollups;
mod stored_keys;
mod tenants;
mod unrouted;

use super::{EntityWrite, OrgWrites, Series, StoreError, StoreOptions, StoreResult, WriteJob};
use crate::telemetry;
use entity_log::RecentStates;

/// Jobs waiting for the writer beyond this are refused as overload.
const QUEUE_DEPTH: usize = 4096;
/// At most this many jobs, and jobs of at most about this many entity keys, share one
/// commit, to bound a commit's latency.
const MAX_GROUP: usize = 512;
const MAX_GROUP_KEYS: usize = 32_768;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    timezone TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY,
    org TEXT NOT NULL REFERENCES orgs(id),
    created_at INTEGER NOT NULL
);
CREATE TABLE accounts (
    org TEXT NOT NULL,
    account_id TEXT NOT NULL,
    PRIMARY KEY (org, account_id)
) WITHOUT ROWID;
CREATE TABLE entities (
    org TEXT NOT NULL,
    kind INTEGER NOT NULL,
    account TEXT NOT NULL,
    id TEXT NOT NULL,
    state BLOB NOT NULL,
    keep_until INTEGER,
    PRIMARY KEY (org, kind, account, id)
) WITHOUT ROWID;
CREATE INDEX entities_keep_until ON entities (keep_until) WHERE keep_until IS NOT NULL;
CREATE TABLE counters (
    org TEXT NOT NULL,
    tier INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    account TEXT NOT NULL,
    series TEXT NOT NULL,
    dim TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (org, account, tier, bucket, series, dim)
) WITHOUT ROWID;
CREATE INDEX counters_expiry ON counters (org, tier, bucket);
CREATE TABLE progress (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE accounts ADD COLUMN name TEXT;
ALTER TABLE accounts ADD COLUMN phone_number_id TEXT;
ALTER TABLE accounts ADD COLUMN verify_token_hash TEXT;
ALTER TABLE accounts ADD COLUMN app_secret BLOB;
ALTER TABLE accounts ADD COLUMN registered_at INTEGER;
ALTER TABLE accounts ADD COLUMN updated_at INTEGER;
CREATE UNIQUE INDEX accounts_phone_number_id ON accounts (phone_number_id) WHERE phone_number_id IS NOT NULL;
CREATE INDEX accounts_verify_token_hash ON accounts (verify_token_hash) WHERE verify_token_hash IS NOT NULL;
CREATE TABLE unrouted (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    signature TEXT,
    body BLOB NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE unrouted_phones (
    payload INTEGER NOT NULL REFERENCES unrouted(id) ON DELETE CASCADE,
    phone_number_id TEXT NOT NULL,
    PRIMARY KEY (phone_number_id, payload)
) WITHOUT ROWID;
CREATE INDEX unrouted_phones_payload ON unrouted_phones (payload);
"#,
    // Counters keyed by series before bucket: a query reads the series it asks for as
    // one key range each, not every series of every bucket in its range.
    r#"
CREATE TABLE counters_by_series (
    org TEXT NOT NULL,
    tier INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    account TEXT NOT NULL,
    series TEXT NOT NULL,
    dim TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (org, account, tier, series, bucket, dim)
) WITHOUT ROWID;
INSERT INTO counters_by_series (org, tier, bucket, account, series, dim, value)
    SELECT org, tier, bucket, account, series, dim, value FROM counters;
DROP TABLE counters;
ALTER TABLE counters_by_series RENAME TO counters;
CREATE INDEX counters_expiry ON counters (org, tier, bucket);
"#,
    // Several credentials per organization, each with a scope: the keys made before are
    // the organization's one key and can do everything, so they become `admin`.
    r#"
ALTER TABLE api_keys ADD COLUMN id TEXT;
ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'key';
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT 'Organization key';
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_keys ADD COLUMN accounts TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
UPDATE api_keys SET id = 'key_' || substr(key_hash, 1, 16) WHERE id IS NULL;
CREATE UNIQUE INDEX api_keys_id ON api_keys (id);
CREATE INDEX api_keys_org_kind ON api_keys (org, kind);
"#,
    // The webhook tee: an account's forward URL, the outbox of deliveries to it, and
    // per-account delivery counts (delivered ones leave the outbox).
    r#"
ALTER TABLE accounts ADD COLUMN forward_url TEXT;
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL,
    account TEXT NOT NULL,
    forward_url TEXT NOT NULL,
    body BLOB NOT NULL,
    bytes INTEGER NOT NULL,
    signature TEXT,
    content_type TEXT,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    lease_until INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_account ON outbox (org, account, state, created_at);
CREATE TABLE outbox_stats (
    org TEXT NOT NULL,
    account TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    dropped_over_bound INTEGER NOT NULL DEFAULT 0,
    last_success_at INTEGER,
    last_error TEXT,
    PRIMARY KEY (org, account)
) WITHOUT ROWID;
"#,
    // Entity states committed but not merged into `entities` yet (see entity_log.rs).
    r#"
CREATE TABLE entity_log (
    seq INTEGER PRIMARY KEY,
    org TEXT NOT NULL,
    kind INTEGER NOT NULL,
    account TEXT NOT NULL,
    id TEXT NOT NULL,
    state BLOB NOT NULL,
    keep_until INTEGER
);
"#,
    // The trace of pruned ids (a digest per pruned state, so that a later event for it is
    // told from one never seen), holds that keep an organization's states from pruning
    // while an import runs, and state expiry per organization.
    r#"
CREATE INDEX entities_expiry ON entities (org, keep_until) WHERE keep_until IS NOT NULL;
DROP INDEX entities_keep_until;
CREATE TABLE pruned (
    org TEXT NOT NULL,
    account TEXT NOT NULL,
    digest INTEGER NOT NULL,
    keep_until INTEGER,
    PRIMARY KEY (org, account, digest)
) WITHOUT ROWID;
CREATE INDEX pruned_expiry ON pruned (org, keep_until) WHERE keep_until IS NOT NULL;
CREATE TABLE state_holds (
    org TEXT NOT NULL,
    name TEXT NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (org, name)
) WITHOUT ROWID;
"#,
    // Counters under integer keys: an account of an organization (its scope) and a series
    // become small numbers, so that the key of each of the millions of counter rows is a
    // few bytes compared as integers instead of repeated text compared byte by byte. The
    // expiry index, as large as the table, goes: expiry deletes key ranges per scope and
    // series instead.
    r#"
CREATE TABLE counter_scopes (
    id INTEGER PRIMARY KEY,
    org TEXT NOT NULL,
    account TEXT NOT NULL,
    UNIQUE (org, account)
);
CREATE TABLE counter_series (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO counter_scopes (org, account) SELECT DISTINCT org, account FROM counters ORDER BY org, account;
INSERT INTO counter_series (name) SELECT DISTINCT series FROM counters ORDER BY series;
CREATE TABLE counters_by_id (
    scope INTEGER NOT NULL,
    tier INTEGER NOT NULL,
    series INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    dim TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (scope, tier, series, bucket, dim)
) WITHOUT ROWID;
INSERT INTO counters_by_id (scope, tier, series, bucket, dim, value)
    SELECT s.id, c.tier, n.id, c.bucket, c.dim, c.value
    FROM counters AS c
    JOIN counter_scopes AS s ON s.org = c.org AND s.account = c.account
    JOIN counter_series AS n ON n.name = c.series;
DROP INDEX counters_expiry;
DROP TABLE counters;
ALTER TABLE counters_by_id RENAME TO counters;
-- The counters by name, for reading a store by hand.
CREATE VIEW counter_rows AS
    SELECT s.org, s.account, c.tier, n.name AS series, c.bucket, c.dim, c.value
    FROM counters AS c
    JOIN counter_scopes AS s ON s.id = c.scope
    JOIN counter_series AS n ON n.id = c.series;
"#,
    // Entity states under their account's scope number (as counters are): the key of each
    // of the millions of states loses the organization's and the account's names, which
    // every key repeated, so lookups and merges compare integers before the id, and a
    // third fewer pages hold the same states. Scopes are made for accounts that had only
    // states; the entity log keeps names (it is read once, at open).
    r#"
INSERT OR IGNORE INTO counter_scopes (org, account)
    SELECT DISTINCT org, account FROM entities ORDER BY org, account;
CREATE TABLE entities_by_scope (
    scope INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    id TEXT NOT NULL,
    state BLOB NOT NULL,
    keep_until INTEGER,
    PRIMARY KEY (scope, kind, id)
) WITHOUT ROWID;
INSERT INTO entities_by_scope (scope, kind, id, state, keep_until)
    SELECT s.id, e.kind, e.id, e.state, e.keep_until
    FROM entities AS e
    JOIN counter_scopes AS s ON s.org = e.org AND s.account = e.account
    ORDER BY s.id, e.kind, e.id;
DROP INDEX entities_expiry;
DROP TABLE entities;
ALTER TABLE entities_by_scope RENAME TO entities;
CREATE INDEX entities_expiry ON entities (scope, keep_until) WHERE keep_until IS NOT NULL;
-- The states by name, for reading a store by hand.
CREATE VIEW entity_rows AS
    SELECT s.org, e.kind, s.account, e.id, e.state, e.keep_until
    FROM entities AS e
    JOIN counter_scopes AS s ON s.id = e.scope;
"#,
];

type Reply = oneshot::Sender<StoreResult<()>>;
type Maintenance = Box<dyn FnOnce(&Connection) -> StoreResult<u64> + Send>;

/// What the writer thread does: apply a write job, or a bounded piece of maintenance.
/// Both go through the one queue, so maintenance never races ingestion.
enum Task {
    Apply(WriteJob, Reply),
    Maintain(Maintenance, oneshot::Sender<StoreResult<u64>>, Reach),
}

/// What a piece of maintenance touches, which decides where it runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Rows other than entity states (counters, the outbox, holds): it runs inside a
    /// write group, in a savepoint of its own.
    Rows,
    /// Entity states (pruning, removing an account): it runs alone, after the entity log
    /// is merged into the table, so that it sees and removes every state.
    States,
}

pub struct SqliteStore {
    path: String,
    writer: mpsc::SyncSender<Task>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// The database file, locked for this process while the store is open: the writer's
    /// memory copy of the entity log is only coherent with one writing process.
    _one_writer: std::fs::File,
}

impl SqliteStore {
    pub fn open(path: &str) -> StoreResult<Self> {
        Self::open_with(path, StoreOptions::default())
    }

    pub fn open_with(path: &str, options: StoreOptions) -> StoreResult<Self> {
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Backend(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut conn = connect(path, options.sqlite_cache_kib())?;
        let one_writer = lock_for_this_process(path)?;
        migrate(&mut conn)?;
        // Checkpoints are the checkpointer's job, so that commits do not wait for them.
        conn.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
        // States the last run logged and did not merge go into the table before anything
        // else reads it.
        // If that cannot be written now (a full disk), the writer keeps them in memory
        // from the log and merges them later.
        let mut recent = RecentStates::load(&conn)?;
        match recent.merge(&mut conn) {
            Ok(0) => {}
            Ok(merged) => {
                tracing::info!(
                    states = merged,
                    "merged the entity log left by the last run"
                )
            }
            Err(e) => tracing::warn!(
                error = %e,
                states = recent.len(),
                "could not merge the entity log left by the last run; will retry"
            ),
        }
        let checkpointer = Checkpointer::start(connect(path, READER_CACHE_KIB)?)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, checkpointer, recent))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            path: path.to_string(),
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            _one_writer: one_writer,
        })
    }

    /// Runs a piece of maintenance on the writer thread, between write groups.
    async fn maintain(&self, work: Maintenance) -> StoreResult<u64> {
        self.maintain_reaching(work, Reach::Rows).await
    }

    /// Maintenance that reads or deletes entity states.
    async fn maintain_states(&self, work: Maintenance) -> StoreResult<u64> {
        self.maintain_reaching(work, Reach::States).await
    }

    async fn maintain_reaching(&self, work: Maintenance, reach: Reach) -> StoreResult<u64> {
        let (tx, rx) = oneshot::channel();
        // Maintenance waits for room in the queue rather than failing: it is never urgent.
        let writer = self.writer.clone();
        telemetry::write_queued();
        tokio::task::spawn_blocking(move || {
            writer.send(Task::Maintain(work, tx, reach)).map_err(|_| {
                telemetry::write_unqueued(1);
                StoreError::Closed
            })
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a short read (a bounded number of rollup rows or one key) on the calling
    /// thread. Handing a read this small to another thread costs more than the read: two
    /// thread wake-ups, each tens of microseconds on an idle machine.
    fn read_now<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        with_reader(&self.readers, &self.path, f)
    }

    /// Runs `f` on a pooled read connection off the async runtime.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || with_reader(&pool, &path, f))
            .await
            .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

/// Takes an advisory lock on the database file (flock, apart from the byte-range locks
/// SQLite itself takes), so that a second process (`whatstat import` or `compact` while
/// `serve` runs) is refused instead of working from a stale copy of the entity log.
fn lock_for_this_process(path: &str) -> StoreResult<std::fs::File> {
    let file = std::fs::File::open(path)
        .map_err(|e| StoreError::Backend(format!("cannot open {path}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Backend(format!(
            "the SQLite store {path} is open in another process (a running `whatstat serve`?): \
             stop it first, or do this through its HTTP API"
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Backend(format!("cannot lock {path}: {e}")))
        }
    }
}

/// Runs `f` on a read connection from the pool (opening one if none is free), then
/// puts the connection back.
fn with_reader<T>(
    pool: &Mutex<Vec<Connection>>,
    path: &str,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    let pooled = pool.lock().map_err(|_| StoreError::Closed)?.pop();
    let conn = match pooled {
        Some(c) => c,
        None => connect(path, READER_CACHE_KIB)?,
    };
    let result = f(&conn);
    if let Ok(mut p) = pool.lock() {
        p.push(conn);
    }
    result
}

/// Readers only read rollups, a few pages per query.
const READER_CACHE_KIB: i64 = 8 * 1024;

fn connect(path: &str, cache_kib: i64) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    // FULL makes every commit reach the disk before it is acknowledged, power loss included.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;
         PRAGMA cache_size=-{cache_kib}; PRAGMA temp_store=MEMORY;"
    ))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied sqlite migration");
    }
    Ok(())
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Task>,
    checkpointer: Checkpointer,
    mut recent: RecentStates,
) {
    let mut last_group = 0;
    let mut carried: Option<Task> = None;
    loop {
        let first = match carried.take() {
            Some(task) => task,
            None => match rx.recv_timeout(MERGE_WHEN_IDLE) {
                Ok(task) => task,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    merge_log(&mut conn, &mut recent);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let (size, next) = match first {
            Task::Maintain(work, reply, Reach::States) => {
                maintain_alone(&mut conn, &mut recent, work, reply);
                (1, None)
            }
            first => {
                // Many writers at once: the ones just answered are about to send again, so
                // a commit that waits a moment for them saves a commit of their own.
                let linger = (last_group >= LINGER_AFTER_GROUP).then(|| Instant::now() + LINGER);
                commit_group(&mut conn, &mut recent, first, &rx, linger)
            }
        };
        last_group = size;
        telemetry::write_unqueued(size);
        carried = next;
        if recent.len() >= entity_log::MERGE_AFTER_ENTRIES
            || recent.appended() >= entity_log::MERGE_AFTER_ROWS
        {
            merge_log(&mut conn, &mut recent);
        }
        checkpointer.after_commit(&conn);
    }
    // What is still logged is merged when the store next opens.
}

/// The writer merges the entity log when no job came for this long.
const MERGE_WHEN_IDLE: Duration = Duration::from_secs(2);

fn merge_log(conn: &mut Connection, recent: &mut RecentStates) {
    let started = Instant::now();
    match recent.merge(conn) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(
            states = n,
            ms = started.elapsed().as_millis() as u64,
            "merged the entity log into the table"
        ),
        Err(e) => tracing::warn!(error = %e, "merging the entity log failed; will retry"),
    }
}

/// Runs maintenance in a transaction of its own, after merging the entity log into the
/// table in the same transaction, so that the work sees every state and whatever it
/// removes is gone from the memory copy too.
fn maintain_alone(
    conn: &mut Connection,
    recent: &mut RecentStates,
    work: Maintenance,
    reply: oneshot::Sender<StoreResult<u64>>,
) {
    let outcome = (|| -> StoreResult<StoreResult<u64>> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        recent.merge_within(&tx)?;
        let result = in_savepoint(&tx, work)?;
        tx.commit()?;
        Ok(result)
    })();
    match outcome {
        Ok(result) => {
            recent.forget();
            let _ = reply.send(result);
        }
        Err(e) => {
            tracing::error!(error = %e, "maintenance failed; nothing of it was stored");
            let _ = reply.send(Err(e.for_each_job()));
        }
    }
}

/// How long a commit waits for more jobs, and after how large a group it does.
const LINGER: Duration = Duration::from_micros(500);
const LINGER_AFTER_GROUP: usize = 8;

/// WAL frames beyond which the writer finishes a checkpoint itself: under steady load the
/// checkpointer rarely catches the log's end, and only a fully copied log starts over.
const WAL_FRAMES_BEFORE_WRITER_CHECKPOINT: i64 = 16_384;

const CHECKPOINT_PAUSE: Duration = Duration::from_millis(50);

/// Copies committed pages from the WAL into the database on a thread of its own, woken
/// after commits, so that the writer's commits never include a checkpoint.
struct Checkpointer {
    wake: mpsc::SyncSender<()>,
    /// Set when the log has grown past `WAL_FRAMES_BEFORE_WRITER_CHECKPOINT`.
    log_is_long: Arc<AtomicBool>,
}

impl Checkpointer {
    fn start(conn: Connection) -> StoreResult<Checkpointer> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let log_is_long = Arc::new(AtomicBool::new(false));
        let flag = log_is_long.clone();
        thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn(move || {
                // Ends when the writer, which holds `wake`, ends.
                while woken.recv().is_ok() {
                    // Small commits come by the thousand a second: let a few gather, as
                    // a checkpoint costs a sync of the database file however little it copies.
                    thread::sleep(CHECKPOINT_PAUSE);
                    match passive_checkpoint(&conn) {
                        Ok(frames) => flag.store(
                            frames >= WAL_FRAMES_BEFORE_WRITER_CHECKPOINT,
                            Ordering::Relaxed,
                        ),
                        Err(e) => tracing::warn!(error = %e, "checkpoint failed; will retry"),
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpointer: {e}")))?;
        Ok(Checkpointer { wake, log_is_long })
    }

    fn after_commit(&self, writer: &Connection) {
        if self.log_is_long.swap(false, Ordering::Relaxed) {
            // The checkpointer copied most of the log: finishing it is short, and the next
            // commit then writes the log from its start again.
            if let Err(e) = passive_checkpoint(writer) {
                tracing::warn!(error = %e, "checkpoint by the writer failed");
            }
        }
        // A wake-up already pending covers this commit too.
        let _ = self.wake.try_send(());
    }
}

/// Runs a checkpoint that waits for no one; returns the frames in the log.
fn passive_checkpoint(conn: &Connection) -> StoreResult<i64> {
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?)
}

/// Runs maintenance in a savepoint: if it fails, what it did is undone and the
/// transaction around it goes on. The outer error is the savepoint's own.
fn in_savepoint(conn: &Connection, work: Maintenance) -> StoreResult<StoreResult<u64>> {
    conn.execute_batch("SAVEPOINT maintenance")?;
    let result = work(conn);
    if result.is_ok() {
        conn.execute_batch("RELEASE maintenance")?;
    } else {
        conn.execute_batch("ROLLBACK TO maintenance; RELEASE maintenance")?;
    }
    Ok(result)
}

/// Applies a group of tasks in one transaction and replies only after the commit. The
/// group is `first` and whatever queues up while it runs, up to a bound, so that tasks
/// arriving during the work share its commit rather than wait for one of their own. Write
/// jobs run their transitions in arrival order, each seeing the states the earlier ones
/// left, and their changes are merged: each entity is logged once and each counter written
/// once with the sum of its deltas. A job whose transition fails is left out alone.
/// Maintenance of rows runs between the merged writes, in a savepoint of its own;
/// maintenance of states ends the group and is handed back, to run alone next.
fn commit_group(
    conn: &mut Connection,
    recent: &mut RecentStates,
    first: Task,
    queue: &mpsc::Receiver<Task>,
    linger: Option<Instant>,
) -> (usize, Option<Task>) {
    let mut results: Vec<Outcome> = Vec::new();
    let mut logged: Vec<(String, EntityWrite)> = Vec::new();
    let mut carried = None;
    let started = Instant::now();
    // Events of the group's write jobs; `None` for a group of maintenance only.
    let mut events = None;
    let mut counter_rows = 0;
    let outcome = (|| -> StoreResult<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut pending: HashMap<String, OrgWrites> = HashMap::new();
        let mut keys = 0;
        let mut next = Some(first);
        while let Some(task) = next.take() {
            match task {
                Task::Apply(job, reply) => {
                    keys += job.keys.len();
                    *events.get_or_insert(0) += job.events;
                    let result = run_job(&tx, recent, &mut pending, job);
                    // Some errors (out of memory, some I/O) make SQLite roll the whole
                    // transaction back itself: then nothing of the group may go on.
                    let rolled_back = result.is_err() && tx.is_autocommit();
                    results.push(Outcome::Applied(reply, result));
                    if rolled_back {
                        return Err(StoreError::Backend(
                            "SQLite rolled the write group back".into(),
                        ));
                    }
                }
                Task::Maintain(work, reply, _) => {
                    // The rows written so far first, so that the work sees them; states
                    // stay pending, for the lookups of the jobs still to come.
                    counter_rows += write_rows(&tx, &mut pending)?;
                    let result = in_savepoint(&tx, work)?;
                    results.push(Outcome::Maintained(reply, result));
                }
            }
            if results.len() >= MAX_GROUP || keys >= MAX_GROUP_KEYS {
                break;
            }
            let task = match queue.try_recv() {
                Ok(task) => Some(task),
                Err(_) => linger.and_then(|until| {
                    let left = until.saturating_duration_since(Instant::now());
                    queue.recv_timeout(left).ok()
                }),
            };
            match task {
                Some(Task::Maintain(work, reply, Reach::States)) => {
                    carried = Some(Task::Maintain(work, reply, Reach::States));
                }
                other => next = other,
            }
        }
        counter_rows += write_rows(&tx, &mut pending)?;
        log_states(&tx, pending, &mut logged)?;
        tx.commit()?;
        Ok(())
    })();
    let size = results.len();
    match outcome {
        Ok(()) => {
            telemetry::rows_written(counter_rows, logged.len());
            recent.committed(logged);
            tracing::trace!(tasks = size, "committed write group");
            if let Some(events) = events {
                telemetry::group_committed(started.elapsed(), events);
            }
            for r in results {
                r.send();
            }
        }
        Err(e) => {
            tracing::error!(error = %e, tasks = size, "write group failed; nothing of it was stored");
            for r in results {
                r.fail(&e);
            }
        }
    }
    (size, carried)
}

enum Outcome {
    Applied(Reply, StoreResult<()>),
    Maintained(oneshot::Sender<StoreResult<u64>>, StoreResult<u64>),
}

impl Outcome {
    fn send(self) {
        match self {
            Outcome::Applied(reply, r) => drop(reply.send(r)),
            Outcome::Maintained(reply, r) => drop(reply.send(r)),
        }
    }

    fn fail(self, e: &StoreError) {
        let err = e.for_each_job();
        match self {
            Outcome::Applied(reply, _) => drop(reply.send(Err(err))),
            Outcome::Maintained(reply, _) => drop(reply.send(Err(err))),
        }
    }
}

/// Loads a job's states (the group's pending writes first, then the entity log, then the
/// table) and which of the absent ones were pruned, runs its transition and merges its
/// changes into the group's pending writes.
fn run_job(
    conn: &Connection,
    recent: &RecentStates,
    pending: &mut HashMap<String, OrgWrites>,
    mut job: WriteJob,
) -> StoreResult<()> {
    let writes = pending.entry(job.org.clone()).or_default();
    let mut found = HashMap::with_capacity(job.keys.len());
    let mut missing = Vec::new();
    let mut stmt = conn
        .prepare_cached("SELECT state FROM entities WHERE scope = ?1 AND kind = ?2 AND id = ?3")?;
    // An account without a scope has no stored states (merging a state makes its scope).
    let mut scopes: HashMap<String, Option<i64>> = HashMap::new();
    for key in job.keys.drain(..) {
        if let Some(w) = writes.entities.get(&key) {
            found.insert(key, w.state.clone());
            continue;
        }
        if let Some(l) = recent.get(&job.org, &key) {
            found.insert(key, l.state.clone());
            continue;
        }
        if !recent.table_may_hold(&job.org, &key) {
            missing.push(key);
            continue;
        }
        let scope = match scopes.get(&key.account) {
            Some(&scope) => scope,
            None => {
                let scope = rollups::find_scope(conn, &job.org, &key.account)?;
                scopes.insert(key.account.clone(), scope);
                scope
            }
        };
        let state: Option<Vec<u8>> = match scope {
            Some(scope) => stmt
                .query_row(params![scope, key.kind.code(), key.id], |r| r.get(0))
                .optional()?,
            None => None,
        };
        match state {
            Some(state) => {
                found.insert(key, state);
            }
            None => missing.push(key),
        }
    }
    let pruned = rollups::pruned_among(conn, &job.org, missing)?;
    let changes = (job.transition)(&found, &pruned).map_err(StoreError::Transition)?;
    writes.absorb(changes, job.progress.as_ref(), &job.outbox);
    Ok(())
}

/// Writes and forgets the pending changes other than entity states, in key order:
/// accounts, counters, progress positions and outbox deliveries; returns how many
/// counters it wrote.
fn write_rows(conn: &Connection, pending: &mut HashMap<String, OrgWrites>) -> StoreResult<usize> {
    let mut written = 0;
    // Ids are looked up (or made) inside the group's transaction: one made by a group that
    // fails is rolled back with it, so they are never kept across calls.
    let mut series_ids: HashMap<Series, i64> = HashMap::new();
    for (org, w) in pending.iter_mut() {
        let mut stmt = conn
            .prepare_cached("INSERT OR IGNORE INTO accounts (org, account_id) VALUES (?1, ?2)")?;
        for account in &w.accounts {
            stmt.execute(params![org, account])?;
        }
        let mut stmt = conn.prepare_cached(
            "INSERT INTO counters (scope, tier, series, bucket, dim, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (scope, tier, series, bucket, dim) DO UPDATE SET value = value + excluded.value",
        )?;
        // Under the table's own integer key, in its order: sorting on integers costs a
        // fraction of sorting on the text keys, and the writes walk the table in order.
        let mut scopes: HashMap<&str, i64> = HashMap::new();
        let mut rows: Vec<(i64, i64, i64, i64, &str, i64)> = Vec::with_capacity(w.counters.len());
        for ((account, tier, series, bucket, dim), delta) in w.changed_counters() {
            let scope = match scopes.get(account.as_str()) {
                Some(&id) => id,
                None => {
                    let id = rollups::scope_id(conn, org, account)?;
                    scopes.insert(account, id);
                    id
                }
            };
            let series = match series_ids.get(series) {
                Some(&id) => id,
                None => {
                    let id = rollups::series_id(conn, *series)?;
                    series_ids.insert(*series, id);
                    id
                }
            };
            rows.push((
                scope,
                i64::from(tier.code()),
                series,
                *bucket,
                dim.as_str(),
                delta,
            ));
        }
        rows.sort_unstable();
        written += rows.len();
        for (scope, tier, series, bucket, dim, delta) in rows {
            stmt.execute(params![scope, tier, series, bucket, dim, delta])?;
        }
        let mut stmt = conn.prepare_cached(
            "INSERT INTO progress (name, position) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )?;
        for (name, position) in &w.progress {
            stmt.execute(params![name, position])?;
        }
        outbox::insert(conn, &w.outbox)?;
        w.accounts.clear();
        w.counters.clear();
        w.progress.clear();
        w.outbox.clear();
    }
    Ok(written)
}

/// Appends the group's entity states to the entity log, in key order; `logged` gets them,
/// for the memory copy once the group is committed.
fn log_states(
    conn: &Connection,
    pending: HashMap<String, OrgWrites>,
    logged: &mut Vec<(String, EntityWrite)>,
) -> StoreResult<()> {
    for (org, w) in pending {
        RecentStates::append(conn, &org, w.entities.values())?;
        logged.extend(w.entities.into_values().map(|e| (org.clone(), e)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page cache asked for is the one each connection runs with.
    #[test]
    fn connections_take_the_page_cache_asked_for() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cache.db").display().to_string();
        let options = StoreOptions::with_sqlite_cache_mib(16).expect("in bounds");
        let conn = connect(&path, options.sqlite_cache_kib()).expect("connect");
        let size: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .expect("cache_size");
        // Negative: KiB rather than pages.
        assert_eq!(size, -16 * 1024);
        assert_eq!(StoreOptions::default().sqlite_cache_kib(), 32 * 1024);
        assert!(StoreOptions::with_sqlite_cache_mib(7).is_err());
        assert!(StoreOptions::with_sqlite_cache_mib(65_537).is_err());
    }

    /// A second process opening a store that one has open is refused, naming what to do;
    /// once the first closes it, it opens.
    #[test]
    fn one_process_at_a_time_writes_a_store() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let path = path.to_str().expect("path");
        let first = SqliteStore::open(path).expect("first");
        // Another open file description stands for another process here.
        let err = match SqliteStore::open(path) {
            Ok(_) => panic!("a second store opened the same file"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("is open in another process"), "{err}");
        drop(first);
        SqliteStore::open(path).expect("reopened once the first closed");
    }

    /// A store made when an organization had one key keeps it working, as an admin key.
    #[test]
    fn keys_made_before_scopes_become_admin_keys() {
        let mut conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.execute_batch(
            "PRAGMA user_version = 3;
             INSERT INTO orgs (id, name, timezone, created_at) VALUES ('o', 'Acme', 'UTC', 1);
             INSERT INTO api_keys (key_hash, org, created_at) VALUES ('abcdef0123456789ffff', 'o', 7);",
        )
        .expect("old rows");
        migrate(&mut conn).expect("migrate");
        let row: (String, String, String, String, Option<String>, i64) = conn
            .query_row(
                "SELECT id, kind, name, scope, accounts, created_at FROM api_keys WHERE key_hash = 'abcdef0123456789ffff'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .expect("migrated key");
        assert_eq!(
            row,
            (
                "key_abcdef0123456789".into(),
                "key".into(),
                "Organization key".into(),
                "admin".into(),
                None,
                7
            )
        );
    }

    /// A store made before entity states were keyed by scope keeps every state, makes
    /// scopes for accounts that had only states, and reuses the scopes counters have.
    #[test]
    fn entity_states_survive_the_rekeying_by_scope() {
        let mut conn = Connection::open_in_memory().expect("open");
        let last = MIGRATIONS.len() - 1;
        for sql in &MIGRATIONS[..last] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.execute_batch(&format!(
            "PRAGMA user_version = {last};
             INSERT INTO counter_scopes (org, account) VALUES ('o', ''), ('o', 'a');
             INSERT INTO entities (org, kind, account, id, state, keep_until) VALUES
                ('o', 0, 'a', 'wamid.1', x'01', 50), ('o', 0, 'b', 'wamid.1', x'02', NULL),
                ('p', 1, 'a', 'c7', x'0304', 60);"
        ))
        .expect("old rows");
        migrate(&mut conn).expect("migrate");
        type Row = (String, i64, String, String, Vec<u8>, Option<i64>);
        let rows: Vec<Row> = conn
            .prepare("SELECT org, kind, account, id, state, keep_until FROM entity_rows ORDER BY org, account, id")
            .expect("prepare")
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let row = |o: &str, k, a: &str, i: &str, s: &[u8], u| -> Row {
            (o.into(), k, a.into(), i.into(), s.to_vec(), u)
        };
        assert_eq!(
            rows,
            vec![
                row("o", 0, "a", "wamid.1", &[1], Some(50)),
                row("o", 0, "b", "wamid.1", &[2], None),
                row("p", 1, "a", "c7", &[3, 4], Some(60)),
            ]
        );
        // The account that had counters keeps its scope; the others got one each.
        let a = rollups::find_scope(&conn, "o", "a").expect("find");
        assert_eq!(a, Some(2));
        let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(one("SELECT COUNT(*) FROM counter_scopes"), 4);
        assert_eq!(
            one(
                "SELECT length(state) FROM entities WHERE scope = 2 AND kind = 0 AND id = 'wamid.1'"
            ),
            1
        );
        // Expiry reads the new index.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT id FROM entities WHERE scope IN (1, 2) AND keep_until IS NOT NULL AND keep_until < 99",
                [],
                |r| r.get(3),
            )
            .expect("plan");
        assert!(plan.contains("entities_expiry"), "{plan}");
    }

    /// A store made before counters were keyed by series, and then by integers, keeps every
    /// figure.
    #[test]
    fn counters_survive_the_rekeying_migrations() {
        let mut conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.execute_batch(
            "PRAGMA user_version = 2;
             INSERT INTO counters (org, tier, bucket, account, series, dim, value) VALUES
                ('o', 0, 100, 'a', 'sent', '', 3), ('o', 0, 100, 'a', 'by_type', 'text', 2),
                ('o', 1, 7, '', 'sent', '', 5), ('p', 2, 202611, 'b', 'keyword', 'hi', 1);",
        )
        .expect("old rows");
        migrate(&mut conn).expect("migrate");
        let rows: Vec<(String, i64, i64, String, String, String, i64)> = conn
            .prepare("SELECT org, tier, bucket, account, series, dim, value FROM counter_rows ORDER BY org, tier, bucket, series")
            .expect("prepare")
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let row = |o: &str, t, b, a: &str, s: &str, d: &str, v| {
            (o.into(), t, b, a.into(), s.into(), d.into(), v)
        };
        assert_eq!(
            rows,
            vec![
                row("o", 0, 100, "a", "by_type", "text", 2),
                row("o", 0, 100, "a", "sent", "", 3),
                row("o", 1, 7, "", "sent", "", 5),
                row("p", 2, 202611, "b", "keyword", "hi", 1),
            ]
        );
        // The new key takes increments, and the expiry index is gone.
        let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        let scope = rollups::scope_id(&conn, "o", "a").expect("scope");
        let sent = rollups::series_id(&conn, Series::Sent).expect("series");
        assert_eq!(one("SELECT COUNT(*) FROM counter_scopes"), 3);
        conn.execute(
            "INSERT INTO counters (scope, tier, series, bucket, dim, value) VALUES (?1, 0, ?2, 100, '', 4)
             ON CONFLICT (scope, tier, series, bucket, dim) DO UPDATE SET value = value + excluded.value",
            params![scope, sent],
        )
        .expect("upsert");
        assert_eq!(
            one(
                "SELECT value FROM counter_rows WHERE org = 'o' AND account = 'a' AND tier = 0 AND series = 'sent' AND bucket = 100"
            ),
            7
        );
        assert_eq!(
            one(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'counters_expiry'"
            ),
            0
        );
    }
}
