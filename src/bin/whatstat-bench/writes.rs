//! The peers' write path, for comparison with whatstat's ingest: what whatomate and
//! Chatwoot do when they record messages and statuses. Each NDJSON body is parsed and
//! applied in one transaction: one row INSERTed per message, and one
//! `UPDATE messages SET status = ... WHERE id = ...` per status. An UPDATE that finds no
//! row (a status before its message, as in a shuffled import) changes nothing, as in
//! those products; the harness counts such statuses and the messages whose stored status
//! ends up other than the last of their ladder.
//!
//! SQLite: one connection (SQLite has one writer), WAL, `synchronous=FULL` and a 128 MiB
//! page cache, as whatstat's own writer; events applied as they come. PostgreSQL: 4
//! connections, one per concurrent body, `synchronous_commit` at its default (on), as
//! whatstat's; each body's events applied in message-id order (stable), which changes
//! no outcome and keeps shuffled bodies from deadlocking each other. Prepared statements
//! on both.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;

/// The messages table: the message id as primary key, and the account/time index the
/// peers' dashboards read by.
const SCHEMA: &str = "CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    message_type TEXT NOT NULL,
    status TEXT NOT NULL,
    contact_id TEXT,
    recipient TEXT,
    template_name TEXT,
    campaign_id TEXT,
    error_code TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX messages_account_time ON messages (account_id, created_at);";

/// Concurrent transactions on PostgreSQL, as whatstat's ingest gets 4 concurrent bodies.
const PG_CONNECTIONS: usize = 4;

/// The fields the peers' tables keep.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    account_id: &'a str,
    timestamp: i64,
    id: Option<&'a str>,
    message_id: Option<&'a str>,
    direction: Option<&'a str>,
    message_type: Option<&'a str>,
    status: Option<&'a str>,
    contact_id: Option<&'a str>,
    recipient: Option<&'a str>,
    template_name: Option<&'a str>,
    campaign_id: Option<&'a str>,
    error_code: Option<&'a str>,
}

impl Event<'_> {
    /// The id of the message the event is about.
    fn key(&self) -> &str {
        self.id.or(self.message_id).unwrap_or_default()
    }
}

/// A message row's initial status.
fn initial_status(direction: Option<&str>) -> &'static str {
    if direction == Some("inbound") {
        "received"
    } else {
        "pending"
    }
}

fn lines(body: &[u8]) -> impl Iterator<Item = Result<Event<'_>, String>> {
    body.split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Event>(l).map_err(|e| format!("an event: {e}")))
}

fn missing(field: &str) -> String {
    format!("an event without `{field}`")
}

/// What one run of the peers' write path did.
pub struct Outcome {
    pub events: u64,
    pub events_per_second: f64,
    /// Statuses whose UPDATE found no row.
    pub lost_statuses: u64,
    /// Messages whose stored status is not the last of their ladder (or that are missing).
    pub wrong_status: u64,
    /// Transactions run again after a deadlock (PostgreSQL's concurrent connections).
    pub retried_transactions: u64,
}

/// Compares the stored (id, status) rows with what the stream says.
fn wrong_statuses(
    rows: impl Iterator<Item = (String, String)>,
    expected: &HashMap<String, &str>,
) -> u64 {
    let mut seen = 0u64;
    let mut wrong = 0u64;
    for (id, status) in rows {
        match expected.get(&id) {
            Some(want) => {
                seen += 1;
                if *want != status {
                    wrong += 1;
                }
            }
            None => wrong += 1,
        }
    }
    wrong + (expected.len() as u64).saturating_sub(seen)
}

/// The peers' write path on a fresh SQLite file in `dir`.
pub fn sqlite(
    dir: &Path,
    bodies: &[Bytes],
    expected: &HashMap<String, &'static str>,
) -> Result<Outcome, String> {
    let path = dir.join("peer-writes.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let e = |e: rusqlite::Error| e.to_string();
    let mut conn = rusqlite::Connection::open(&path).map_err(e)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-131072;",
    )
    .map_err(e)?;
    conn.execute_batch(&SCHEMA.replace("BIGINT", "INTEGER"))
        .map_err(e)?;
    let mut events = 0u64;
    let mut lost = 0u64;
    let started = Instant::now();
    for body in bodies {
        let tx = conn.transaction().map_err(e)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (id, account_id, direction, message_type, status, contact_id,
                     recipient, template_name, campaign_id, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                )
                .map_err(e)?;
            let mut update = tx
                .prepare_cached(
                    "UPDATE messages SET status = ?1, error_code = coalesce(?2, error_code), updated_at = ?3 WHERE id = ?4",
                )
                .map_err(e)?;
            for event in lines(body) {
                let v = event?;
                events += 1;
                match v.kind {
                    "message" => {
                        insert
                            .execute(rusqlite::params![
                                v.id.ok_or_else(|| missing("id"))?,
                                v.account_id,
                                v.direction.ok_or_else(|| missing("direction"))?,
                                v.message_type.ok_or_else(|| missing("message_type"))?,
                                initial_status(v.direction),
                                v.contact_id,
                                v.recipient,
                                v.template_name,
                                v.campaign_id,
                                v.timestamp,
                            ])
                            .map_err(e)?;
                    }
                    "message_status" => {
                        let n = update
                            .execute(rusqlite::params![
                                v.status.ok_or_else(|| missing("status"))?,
                                v.error_code,
                                v.timestamp,
                                v.message_id.ok_or_else(|| missing("message_id"))?,
                            ])
                            .map_err(e)?;
                        if n == 0 {
                            lost += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        tx.commit().map_err(e)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut stmt = conn.prepare("SELECT id, status FROM messages").map_err(e)?;
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    drop(stmt);
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(Outcome {
        events,
        events_per_second: events as f64 / secs,
        lost_statuses: lost,
        wrong_status: wrong_statuses(rows.into_iter(), expected),
        retried_transactions: 0,
    })
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A PostgreSQL error with the server's code and message when it has them.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    }
}

enum Failure {
    Db(tokio_postgres::Error),
    Input(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Input(e)
    }
}

/// One body in one transaction: the events, and the statuses whose UPDATE found no row.
/// The events are applied in the order of their message's id (a stable sort, so each
/// message's own events keep their order, and so does every outcome): concurrent
/// transactions then lock rows in one order and cannot deadlock.
async fn pg_body(
    client: &mut tokio_postgres::Client,
    insert: &tokio_postgres::Statement,
    update: &tokio_postgres::Statement,
    body: &[u8],
) -> Result<(u64, u64), Failure> {
    let (mut events, mut lost) = (0u64, 0u64);
    let mut parsed = lines(body).collect::<Result<Vec<_>, _>>()?;
    parsed.sort_by(|a, b| a.key().cmp(b.key()));
    let tx = client.transaction().await?;
    for v in parsed {
        events += 1;
        match v.kind {
            "message" => {
                tx.execute(
                    insert,
                    &[
                        &v.id.ok_or_else(|| missing("id"))?,
                        &v.account_id,
                        &v.direction.ok_or_else(|| missing("direction"))?,
                        &v.message_type.ok_or_else(|| missing("message_type"))?,
                        &initial_status(v.direction),
                        &v.contact_id,
                        &v.recipient,
                        &v.template_name,
                        &v.campaign_id,
                        &v.timestamp,
                    ],
                )
                .await?;
            }
            "message_status" => {
                let n = tx
                    .execute(
                        update,
                        &[
                            &v.status.ok_or_else(|| missing("status"))?,
                            &v.error_code,
                            &v.timestamp,
                            &v.message_id.ok_or_else(|| missing("message_id"))?,
                        ],
                    )
                    .await?;
                if n == 0 {
                    lost += 1;
                }
            }
            _ => {}
        }
    }
    tx.commit().await?;
    Ok((events, lost))
}

/// Transactions of one body retried at most this often after a deadlock.
const RETRIES: u32 = 20;

/// Applies the bodies taken from `next` in one transaction each, retrying one that a
/// deadlock or a serialization failure aborted, as a peer's job queue would (with rows
/// locked in id order neither is expected); returns the events, the statuses whose
/// UPDATE found no row, and the retries.
async fn pg_worker(
    mut client: tokio_postgres::Client,
    bodies: Arc<Vec<Bytes>>,
    next: Arc<AtomicUsize>,
) -> Result<(u64, u64, u64), String> {
    let e = |e: tokio_postgres::Error| pg_error(&e);
    let insert = client
        .prepare(
            "INSERT INTO messages (id, account_id, direction, message_type, status, contact_id,
             recipient, template_name, campaign_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .await
        .map_err(e)?;
    let update = client
        .prepare(
            "UPDATE messages SET status = $1, error_code = coalesce($2, error_code), updated_at = $3 WHERE id = $4",
        )
        .await
        .map_err(e)?;
    let (mut events, mut lost, mut retries) = (0u64, 0u64, 0u64);
    while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
        let mut attempt = 0;
        loop {
            match pg_body(&mut client, &insert, &update, body).await {
                Ok((n, l)) => {
                    events += n;
                    lost += l;
                    break;
                }
                Err(Failure::Db(err))
                    if attempt < RETRIES
                        && [
                            tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED,
                            tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE,
                        ]
                        .iter()
                        .any(|c| err.code() == Some(c)) =>
                {
                    attempt += 1;
                    retries += 1;
                }
                Err(Failure::Db(err)) => return Err(pg_error(&err)),
                Err(Failure::Input(err)) => return Err(err),
            }
        }
    }
    Ok((events, lost, retries))
}

/// The peers' write path on a fresh PostgreSQL database `db` (`admin` is a URL of a
/// database to create it from, `base` the server's URL without a database).
pub async fn postgres(
    base: &str,
    db: &str,
    bodies: &[Bytes],
    expected: &HashMap<String, &'static str>,
) -> Result<Outcome, String> {
    let admin = pg_connect(&format!("{base}/postgres")).await?;
    let e = |e: tokio_postgres::Error| pg_error(&e);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .map_err(e)?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .map_err(e)?;
    let url = format!("{base}/{db}");
    let setup = pg_connect(&url).await?;
    setup.batch_execute(SCHEMA).await.map_err(e)?;
    let mut clients = Vec::with_capacity(PG_CONNECTIONS);
    for _ in 0..PG_CONNECTIONS {
        clients.push(pg_connect(&url).await?);
    }
    let shared = Arc::new(bodies.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(pg_worker(c, shared.clone(), next.clone())))
        .collect();
    let (mut events, mut lost, mut retries) = (0u64, 0u64, 0u64);
    for t in tasks {
        let (n, l, r) = t.await.map_err(|e| e.to_string())??;
        events += n;
        lost += l;
        retries += r;
    }
    let secs = started.elapsed().as_secs_f64();
    let rows = setup
        .query("SELECT id, status FROM messages", &[])
        .await
        .map_err(e)?;
    let wrong = wrong_statuses(
        rows.iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1))),
        expected,
    );
    drop(rows);
    drop(setup);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await;
    Ok(Outcome {
        events,
        events_per_second: events as f64 / secs,
        lost_statuses: lost,
        wrong_status: wrong,
        retried_transactions: retries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Fields, Order, Stream};

    #[test]
    fn the_sqlite_write_path_applies_every_event_and_counts_what_it_loses() {
        let dir = tempfile::tempdir().unwrap();
        let stream = Stream::generate(12_000, 1_750_000_000, 3, Fields::Full).unwrap();
        let time = sqlite(
            dir.path(),
            &stream.bodies(Order::Time, 4),
            &stream.final_status,
        )
        .unwrap();
        assert_eq!(time.events, stream.events());
        assert_eq!((time.lost_statuses, time.wrong_status), (0, 0));
        assert!(time.events_per_second > 0.0);
        // Shuffled, a status often comes before its message: its UPDATE finds no row.
        let random = sqlite(
            dir.path(),
            &stream.bodies(Order::Random, 4),
            &stream.final_status,
        )
        .unwrap();
        assert_eq!(random.events, stream.events());
        assert!(random.lost_statuses > 100, "{}", random.lost_statuses);
        assert!(random.wrong_status > 100 && random.wrong_status < stream.messages());
    }

    #[test]
    fn wrong_statuses_counts_differences_and_missing_rows() {
        let expected: HashMap<String, &str> = [
            ("a".into(), "read"),
            ("b".into(), "received"),
            ("c".into(), "sent"),
        ]
        .into();
        let rows =
            [("a", "delivered"), ("b", "received")].map(|(i, s)| (i.to_string(), s.to_string()));
        assert_eq!(wrong_statuses(rows.into_iter(), &expected), 2);
    }
}
