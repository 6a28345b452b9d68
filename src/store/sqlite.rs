//! The embedded backend: one SQLite file in WAL mode. A single writer thread owns the
//! write connection and commits whatever jobs are queued in one transaction (group
//! commit); readers use their own connections and never wait for the writer.

use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    Changes, CounterQuery, CounterRow, OrgRecord, Store, StoreError, StoreResult,
    WriteJob,
};

/// Jobs waiting for the writer beyond this are refused as overload.
const QUEUE_DEPTH: usize = 4096;
/// At most this many jobs share one commit, to bound a commit's latency.
const MAX_GROUP: usize = 512;

const MIGRATIONS: &[&str] = &[r#"
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
    PRIMARY KEY (org, tier, bucket, account, series, dim)
) WITHOUT ROWID;
"#];

type Reply = oneshot::Sender<StoreResult<Box<dyn Any + Send>>>;

pub struct SqliteStore {
    path: String,
    writer: mpsc::SyncSender<(WriteJob, Reply)>,
    readers: Arc<Mutex<Vec<Connection>>>,
}

impl SqliteStore {
    pub fn open(path: &str) -> StoreResult<Self> {
        if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = connect(path)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore { path: path.to_string(), writer: tx, readers: Arc::new(Mutex::new(Vec::new())) })
    }

    /// Runs `f` on a pooled read connection off the async runtime.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = pool.lock().map_err(|_| StoreError::Closed)?.pop();
            let conn = match pooled {
                Some(c) => c,
                None => connect(&path)?,
            };
            let result = f(&conn);
            if let Ok(mut p) = pool.lock() {
                p.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task failed: {e}")))?
    }
}

fn connect(path: &str) -> StoreResult<Connection> {
    let conn = Connection::open(path)?;
    // FULL makes every commit reach the disk before it is acknowledged, power loss included.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;",
    )?;
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

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<(WriteJob, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, group);
    }
}

/// Applies every job of a group in one transaction, each inside its own savepoint so
/// that one failing job leaves the others intact; replies only after the commit.
fn commit_group(conn: &mut Connection, group: Vec<(WriteJob, Reply)>) {
    let size = group.len();
    let mut results: Vec<(Reply, StoreResult<Box<dyn Any + Send>>)> = Vec::with_capacity(size);
    let outcome = (|| -> StoreResult<()> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (job, reply) in group {
            tx.execute_batch("SAVEPOINT job")?;
            let result = apply_job(&tx, job);
            if result.is_ok() {
                tx.execute_batch("RELEASE job")?;
            } else {
                tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
            }
            results.push((reply, result));
        }
        tx.commit()?;
        Ok(())
    })();
    match outcome {
        Ok(()) => {
            tracing::debug!(jobs = size, "committed write group");
            for (reply, result) in results {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, jobs = size, "write group failed; nothing of it was stored");
            for (reply, _) in results {
                let _ = reply.send(Err(StoreError::Backend(e.to_string())));
            }
        }
    }
}

fn apply_job(conn: &Connection, job: WriteJob) -> StoreResult<Box<dyn Any + Send>> {
    let mut found = HashMap::with_capacity(job.keys.len());
    {
        let mut stmt = conn.prepare_cached(
            "SELECT state FROM entities WHERE org = ?1 AND kind = ?2 AND account = ?3 AND id = ?4",
        )?;
        for key in job.keys {
            let state: Option<Vec<u8>> = stmt
                .query_row(params![job.org, key.kind, key.account, key.id], |r| r.get(0))
                .optional()?;
            if let Some(state) = state {
                found.insert(key, state);
            }
        }
    }
    let changes = (job.transition)(&found).map_err(StoreError::Transition)?;
    write_changes(conn, &job.org, &changes)?;
    Ok(changes.report)
}

fn write_changes(conn: &Connection, org: &str, changes: &Changes) -> StoreResult<()> {
    let mut stmt =
        conn.prepare_cached("INSERT OR IGNORE INTO accounts (org, account_id) VALUES (?1, ?2)")?;
    for account in &changes.accounts {
        stmt.execute(params![org, account])?;
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO entities (org, kind, account, id, state, keep_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (org, kind, account, id) DO UPDATE SET state = excluded.state, keep_until = excluded.keep_until",
    )?;
    for e in &changes.entities {
        stmt.execute(params![org, e.key.kind, e.key.account, e.key.id, e.state, e.keep_until])?;
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO counters (org, tier, bucket, account, series, dim, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (org, tier, bucket, account, series, dim) DO UPDATE SET value = value + excluded.value",
    )?;
    for c in &changes.counters {
        stmt.execute(params![org, c.tier, c.bucket, c.account, c.series, c.dim, c.delta])?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_org(&self, org: &OrgRecord, key_hash: &str) -> StoreResult<()> {
        let org = org.clone();
        let key_hash = key_hash.to_string();
        // Administration is rare: a connection of its own keeps it off the ingest queue.
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO orgs (id, name, timezone, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![org.id, org.name, org.timezone, org.created_at],
            )?;
            tx.execute(
                "INSERT INTO api_keys (key_hash, org, created_at) VALUES (?1, ?2, ?3)",
                params![key_hash, org.id, org.created_at],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn org_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<OrgRecord>> {
        let key_hash = key_hash.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT o.id, o.name, o.timezone, o.created_at FROM api_keys k JOIN orgs o ON o.id = k.org WHERE k.key_hash = ?1",
                )?
                .query_row(params![key_hash], |r| {
                    Ok(OrgRecord { id: r.get(0)?, name: r.get(1)?, timezone: r.get(2)?, created_at: r.get(3)? })
                })
                .optional()?)
        })
        .await
    }

    async fn org_count(&self) -> StoreResult<u64> {
        self.read(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM orgs", [], |r| r.get::<_, i64>(0))? as u64)).await
    }

    async fn account_exists(&self, org: &str, account: &str) -> StoreResult<bool> {
        let (org, account) = (org.to_string(), account.to_string());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM accounts WHERE org = ?1 AND account_id = ?2")?
                .query_row(params![org, account], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn apply(&self, job: WriteJob) -> StoreResult<Box<dyn Any + Send>> {
        let (tx, rx) = oneshot::channel();
        self.writer.try_send((job, tx)).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::TrySendError::Disconnected(_) => StoreError::Closed,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn counters(&self, q: CounterQuery) -> StoreResult<Vec<CounterRow>> {
        self.read(move |conn| {
            let series = q.series.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(",");
            // Series names are the engine's static identifiers, never user input.
            let sql = format!(
                "SELECT bucket, series, dim, SUM(value) FROM counters
                 WHERE org = ?1 AND tier = ?2 AND bucket BETWEEN ?3 AND ?4 AND (?5 IS NULL OR account = ?5)
                   AND series IN ({series})
                 GROUP BY bucket, series, dim"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt
                .query_map(params![q.org, q.tier, q.from, q.to, q.account], |r| {
                    Ok(CounterRow { bucket: r.get(0)?, series: r.get(1)?, dim: r.get(2)?, value: r.get(3)? })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}
