//! The outbox of webhook deliveries in SQLite. Deliveries are inserted by the writer in
//! the commit of their payload's figures; every other change also runs on the writer,
//! between write groups, so that it never contends with ingestion for the write lock.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use crate::store::{
    DeliveryState, ForwardingCounts, OutboxDelivery, OutboxStore, OutboxTotals, StoreError,
    StoreResult,
};

const COLUMNS: &str = "id, org, account, forward_url, body, signature, content_type, created_at, next_attempt_at, expires_at, attempts, last_error, state";

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<OutboxDelivery> {
    let state: String = r.get(12)?;
    Ok(OutboxDelivery {
        id: r.get(0)?,
        org: r.get(1)?,
        account: r.get(2)?,
        forward_url: r.get(3)?,
        body: r.get(4)?,
        signature: r.get(5)?,
        content_type: r.get(6)?,
        created_at: r.get(7)?,
        next_attempt_at: r.get(8)?,
        expires_at: r.get(9)?,
        attempts: r.get(10)?,
        last_error: r.get(11)?,
        // Only the store writes this column, with one of the two names.
        state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Failed),
    })
}

/// Inserts deliveries, within the writer's transaction (see `write_pending`).
pub(super) fn insert(conn: &Connection, deliveries: &[OutboxDelivery]) -> StoreResult<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO outbox (id, org, account, forward_url, body, bytes, signature, content_type,
           created_at, next_attempt_at, expires_at, attempts, last_error, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO NOTHING",
    )?;
    for d in deliveries {
        stmt.execute(params![
            d.id,
            d.org,
            d.account,
            d.forward_url,
            d.body,
            i64::try_from(d.body.len()).unwrap_or(i64::MAX),
            d.signature,
            d.content_type,
            d.created_at,
            d.next_attempt_at,
            d.expires_at,
            d.attempts,
            d.last_error,
            d.state.as_str(),
        ])?;
    }
    Ok(())
}

fn note_error(conn: &Connection, d: &OutboxDelivery, error: &str) -> StoreResult<()> {
    conn.execute(
        "INSERT INTO outbox_stats (org, account, last_error) VALUES (?1, ?2, ?3)
         ON CONFLICT (org, account) DO UPDATE SET last_error = excluded.last_error",
        params![d.org, d.account, error],
    )?;
    Ok(())
}

impl SqliteStore {
    /// Runs `f` on the writer thread, between write groups, and hands back its result.
    async fn on_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let out: Arc<Mutex<Option<T>>> = Arc::default();
        let slot = out.clone();
        self.maintain(Box::new(move |conn| {
            let v = f(conn)?;
            *slot.lock().map_err(|_| StoreError::Closed)? = Some(v);
            Ok(0)
        }))
        .await?;
        let v = out.lock().map_err(|_| StoreError::Closed)?.take();
        v.ok_or_else(|| StoreError::Backend("the writer returned no result".into()))
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn claim_due(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> StoreResult<Vec<OutboxDelivery>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Most polls find nothing due: a read answers them without a trip to the writer.
        let any_due = self.read_now(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1
                       AND (lease_until IS NULL OR lease_until <= ?1) LIMIT 1",
                )?
                .query_row(params![now], |_| Ok(()))
                .optional()?
                .is_some())
        })?;
        if !any_due {
            return Ok(Vec::new());
        }
        self.on_writer(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "UPDATE outbox SET lease_until = ?2 WHERE id IN (
                   SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_at <= ?1
                     AND (lease_until IS NULL OR lease_until <= ?1)
                   ORDER BY next_attempt_at, created_at, id LIMIT ?3)
                 RETURNING {COLUMNS}"
            ))?;
            let rows = stmt
                .query_map(params![now, lease_until, limit], delivery_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn mark_delivered(&self, d: &OutboxDelivery, at: i64) -> StoreResult<()> {
        let d = d.clone();
        self.on_writer(move |conn| {
            conn.execute("DELETE FROM outbox WHERE id = ?1", params![d.id])?;
            conn.execute(
                "INSERT INTO outbox_stats (org, account, delivered, last_success_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (org, account) DO UPDATE SET delivered = delivered + 1,
                   last_success_at = MAX(COALESCE(last_success_at, 0), excluded.last_success_at)",
                params![d.org, d.account, at],
            )?;
            Ok(())
        })
        .await
    }

    async fn reschedule(
        &self,
        d: &OutboxDelivery,
        next_attempt_at: i64,
        error: &str,
    ) -> StoreResult<()> {
        let (d, error) = (d.clone(), error.to_string());
        self.on_writer(move |conn| {
            conn.execute(
                "UPDATE outbox SET next_attempt_at = ?2, attempts = attempts + 1, last_error = ?3,
                   lease_until = NULL
                 WHERE id = ?1 AND state = 'pending'",
                params![d.id, next_attempt_at, error],
            )?;
            note_error(conn, &d, &error)
        })
        .await
    }

    async fn mark_failed(&self, d: &OutboxDelivery, error: &str) -> StoreResult<()> {
        let (d, error) = (d.clone(), error.to_string());
        self.on_writer(move |conn| {
            conn.execute(
                "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?2,
                   lease_until = NULL
                 WHERE id = ?1 AND state = 'pending'",
                params![d.id, error],
            )?;
            note_error(conn, &d, &error)
        })
        .await
    }

    async fn resume_pending(&self, now: i64) -> StoreResult<u64> {
        // One process writes this file: no lease can belong to anyone still running.
        self.on_writer(move |conn| {
            let n = conn.execute(
                "UPDATE outbox SET next_attempt_at = MIN(next_attempt_at, ?1), lease_until = NULL
                 WHERE state = 'pending'",
                params![now],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn bound_pending(
        &self,
        max_bytes: u64,
        error: &str,
    ) -> StoreResult<Vec<(String, String, u64)>> {
        let max = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let over = self.read_now(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM outbox WHERE state = 'pending' GROUP BY org HAVING SUM(bytes) > ?1 LIMIT 1",
                )?
                .query_row(params![max], |_| Ok(()))
                .optional()?
                .is_some())
        })?;
        if !over {
            return Ok(Vec::new());
        }
        let error = error.to_string();
        self.on_writer(move |conn| {
            // Newest first, the running total per organization: whatever lies beyond the
            // bound is the oldest.
            let mut stmt = conn.prepare_cached(
                "UPDATE outbox SET state = 'failed', last_error = ?2, lease_until = NULL WHERE id IN (
                   SELECT id FROM (
                     SELECT id, SUM(bytes) OVER (PARTITION BY org ORDER BY created_at DESC, id DESC) AS total
                     FROM outbox WHERE state = 'pending')
                   WHERE total > ?1)
                 RETURNING org, account",
            )?;
            let moved = stmt
                .query_map(params![max, error], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut per: std::collections::BTreeMap<(String, String), u64> = Default::default();
            for key in moved {
                *per.entry(key).or_default() += 1;
            }
            let mut stats = conn.prepare_cached(
                "INSERT INTO outbox_stats (org, account, dropped_over_bound, last_error) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org, account) DO UPDATE SET
                   dropped_over_bound = dropped_over_bound + excluded.dropped_over_bound,
                   last_error = excluded.last_error",
            )?;
            for ((org, account), n) in &per {
                stats.execute(params![org, account, i64::try_from(*n).unwrap_or(i64::MAX), error])?;
            }
            Ok(per.into_iter().map(|((o, a), n)| (o, a, n)).collect())
        })
        .await
    }

    async fn forwarding_counts(&self, org: &str, account: &str) -> StoreResult<ForwardingCounts> {
        let (org, account) = (org.to_string(), account.to_string());
        self.read(move |conn| {
            let mut c = ForwardingCounts::default();
            let mut stmt = conn.prepare_cached(
                "SELECT state, COUNT(*), MIN(created_at) FROM outbox WHERE org = ?1 AND account = ?2 GROUP BY state",
            )?;
            let mut rows = stmt.query(params![org, account])?;
            while let Some(r) = rows.next()? {
                let state: String = r.get(0)?;
                let n: i64 = r.get(1)?;
                let n = u64::try_from(n).unwrap_or(0);
                match DeliveryState::parse(&state) {
                    Some(DeliveryState::Pending) => {
                        c.pending = n;
                        c.oldest_pending_at = r.get(2)?;
                    }
                    _ => c.failed += n,
                }
            }
            let stats: Option<(i64, i64, Option<i64>, Option<String>)> = conn
                .prepare_cached(
                    "SELECT delivered, dropped_over_bound, last_success_at, last_error FROM outbox_stats
                     WHERE org = ?1 AND account = ?2",
                )?
                .query_row(params![org, account], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            if let Some((delivered, dropped, success, error)) = stats {
                c.delivered = u64::try_from(delivered).unwrap_or(0);
                c.dropped_over_bound = u64::try_from(dropped).unwrap_or(0);
                c.last_success_at = success;
                c.last_error = error;
            }
            Ok(c)
        })
        .await
    }

    async fn failed_deliveries(
        &self,
        org: &str,
        account: &str,
    ) -> StoreResult<Vec<OutboxDelivery>> {
        let (org, account) = (org.to_string(), account.to_string());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE org = ?1 AND account = ?2 AND state = 'failed'
                 ORDER BY created_at, id"
            ))?;
            let rows = stmt
                .query_map(params![org, account], delivery_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn retry_failed(
        &self,
        org: &str,
        account: &str,
        id: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<u64> {
        let (org, account, id) = (org.to_string(), account.to_string(), id.map(str::to_string));
        self.on_writer(move |conn| {
            let n = conn.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?4, expires_at = ?5,
                   attempts = 0, lease_until = NULL
                 WHERE org = ?1 AND account = ?2 AND state = 'failed' AND (?3 IS NULL OR id = ?3)",
                params![org, account, id, now, expires_at],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_failed(&self, org: &str, account: &str, id: &str) -> StoreResult<bool> {
        let (org, account, id) = (org.to_string(), account.to_string(), id.to_string());
        self.on_writer(move |conn| {
            let n = conn.execute(
                "DELETE FROM outbox WHERE org = ?1 AND account = ?2 AND id = ?3 AND state = 'failed'",
                params![org, account, id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn outbox_totals(&self) -> StoreResult<OutboxTotals> {
        self.read(|conn| {
            let mut totals = OutboxTotals::default();
            let mut stmt =
                conn.prepare_cached("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let state: String = r.get(0)?;
                let n = u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
                match DeliveryState::parse(&state) {
                    Some(DeliveryState::Pending) => totals.pending += n,
                    _ => totals.failed += n,
                }
            }
            Ok(totals)
        })
        .await
    }
}
