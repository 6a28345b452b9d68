//! The outbox of webhook deliveries in PostgreSQL, shared by every instance. Deliveries
//! are inserted by the group writer in the commit of their payload's figures. An instance
//! claims due ones with `FOR UPDATE SKIP LOCKED` and holds each by a lease (a time in the
//! row), so that no other instance takes it while the attempt may still be running; a
//! crashed instance's leases simply run out.

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::{Object, Transaction};
use tokio_postgres::Row;

use super::{Failure, LOCK_KEY_SQL, PostgresStore, backend};
use crate::store::{
    DeliveryState, ForwardingCounts, OutboxDelivery, OutboxStore, OutboxTotals, StoreError,
    StoreResult,
};

const COLUMNS: &str = "id, org, account, forward_url, body, signature, content_type, created_at, next_attempt_at, expires_at, attempts, last_error, state";

fn delivery_row(r: &Row) -> StoreResult<OutboxDelivery> {
    let state: String = r.try_get(12).map_err(backend)?;
    Ok(OutboxDelivery {
        id: r.try_get(0).map_err(backend)?,
        org: r.try_get(1).map_err(backend)?,
        account: r.try_get(2).map_err(backend)?,
        forward_url: r.try_get(3).map_err(backend)?,
        body: r.try_get(4).map_err(backend)?,
        signature: r.try_get(5).map_err(backend)?,
        content_type: r.try_get(6).map_err(backend)?,
        created_at: r.try_get(7).map_err(backend)?,
        next_attempt_at: r.try_get(8).map_err(backend)?,
        expires_at: r.try_get(9).map_err(backend)?,
        attempts: r.try_get(10).map_err(backend)?,
        last_error: r.try_get(11).map_err(backend)?,
        state: DeliveryState::parse(&state).ok_or_else(|| {
            StoreError::Backend(format!("stored delivery state `{state}` is unknown"))
        })?,
    })
}

/// Inserts one organization's deliveries within the group's transaction.
pub(super) async fn insert(
    tx: &Transaction<'_>,
    org: &str,
    deliveries: &[OutboxDelivery],
) -> Result<(), Failure> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO outbox (org, id, account, forward_url, body, bytes, signature, content_type,
               created_at, next_attempt_at, expires_at, attempts, last_error, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (org, id) DO NOTHING",
        )
        .await?;
    for d in deliveries {
        let bytes = i64::try_from(d.body.len()).unwrap_or(i64::MAX);
        tx.execute(
            &stmt,
            &[
                &org,
                &d.id,
                &d.account,
                &d.forward_url,
                &d.body,
                &bytes,
                &d.signature,
                &d.content_type,
                &d.created_at,
                &d.next_attempt_at,
                &d.expires_at,
                &d.attempts,
                &d.last_error,
                &d.state.as_str(),
            ],
        )
        .await?;
    }
    Ok(())
}

async fn note_error(tx: &Transaction<'_>, d: &OutboxDelivery, error: &str) -> Result<(), Failure> {
    tx.execute(
        "INSERT INTO outbox_stats (org, account, last_error) VALUES ($1, $2, $3)
         ON CONFLICT (org, account) DO UPDATE SET last_error = excluded.last_error",
        &[&d.org, &d.account, &error],
    )
    .await?;
    Ok(())
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn claim_due(
        &self,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> StoreResult<Vec<OutboxDelivery>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        // Rows another instance is claiming are skipped, not waited for; the lease keeps
        // them from being claimed again once that claim has committed.
        let rows = client
            .query(
                &format!(
                    "UPDATE outbox SET lease_until = $2 WHERE (org, id) IN (
                       SELECT org, id FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1
                         AND (lease_until IS NULL OR lease_until <= $1)
                       ORDER BY next_attempt_at LIMIT $3
                       FOR UPDATE SKIP LOCKED)
                     RETURNING {COLUMNS}"
                ),
                &[&now, &lease_until, &limit],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(delivery_row).collect()
    }

    async fn mark_delivered(&self, d: &OutboxDelivery, at: i64) -> StoreResult<()> {
        self.retrying(|mut client: Object| async move {
            let tx = client.transaction().await?;
            tx.execute(
                "DELETE FROM outbox WHERE org = $1 AND id = $2",
                &[&d.org, &d.id],
            )
            .await?;
            tx.execute(
                "INSERT INTO outbox_stats (org, account, delivered, last_success_at) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (org, account) DO UPDATE SET delivered = outbox_stats.delivered + 1,
                   last_success_at = GREATEST(outbox_stats.last_success_at, excluded.last_success_at)",
                &[&d.org, &d.account, &at],
            )
            .await?;
            tx.commit().await?;
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
        self.retrying(|mut client: Object| async move {
            let tx = client.transaction().await?;
            tx.execute(
                "UPDATE outbox SET next_attempt_at = $3, attempts = attempts + 1, last_error = $4,
                   lease_until = NULL
                 WHERE org = $1 AND id = $2 AND state = 'pending'",
                &[&d.org, &d.id, &next_attempt_at, &error],
            )
            .await?;
            note_error(&tx, d, error).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn mark_failed(&self, d: &OutboxDelivery, error: &str) -> StoreResult<()> {
        self.retrying(|mut client: Object| async move {
            let tx = client.transaction().await?;
            tx.execute(
                "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = $3,
                   lease_until = NULL
                 WHERE org = $1 AND id = $2 AND state = 'pending'",
                &[&d.org, &d.id, &error],
            )
            .await?;
            note_error(&tx, d, error).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn resume_pending(&self, now: i64) -> StoreResult<u64> {
        // Leases stand: they may be another running instance's.
        let client = self.client().await?;
        client
            .execute(
                "UPDATE outbox SET next_attempt_at = $1 WHERE state = 'pending' AND next_attempt_at > $1",
                &[&now],
            )
            .await
            .map_err(backend)
    }

    async fn bound_pending(
        &self,
        max_bytes: u64,
        error: &str,
    ) -> StoreResult<Vec<(String, String, u64)>> {
        let max = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let over = client
            .query_opt(
                "SELECT 1 FROM outbox WHERE state = 'pending' GROUP BY org HAVING SUM(bytes)::bigint > $1::bigint LIMIT 1",
                &[&max],
            )
            .await
            .map_err(backend)?
            .is_some();
        drop(client);
        if !over {
            return Ok(Vec::new());
        }
        self.retrying(|mut client: Object| async move {
            let tx = client.transaction().await?;
            // One instance at a time moves deliveries, so each is counted once.
            tx.execute(
                &format!("SELECT pg_advisory_xact_lock({LOCK_KEY_SQL})"),
                &[&"outbox_bound"],
            )
            .await?;
            // Newest first, the running total per organization: whatever lies beyond the
            // bound is the oldest.
            let moved = tx
                .query(
                    "UPDATE outbox SET state = 'failed', last_error = $2, lease_until = NULL
                     WHERE state = 'pending' AND (org, id) IN (
                       SELECT org, id FROM (
                         SELECT org, id, (SUM(bytes) OVER (PARTITION BY org ORDER BY created_at DESC, id DESC))::bigint AS total
                         FROM outbox WHERE state = 'pending') t
                       WHERE total > $1)
                     RETURNING org, account",
                    &[&max, &error],
                )
                .await?;
            let mut per: BTreeMap<(String, String), i64> = BTreeMap::new();
            for r in &moved {
                *per.entry((r.try_get(0)?, r.try_get(1)?)).or_default() += 1;
            }
            for ((org, account), n) in &per {
                tx.execute(
                    "INSERT INTO outbox_stats (org, account, dropped_over_bound, last_error) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (org, account) DO UPDATE SET
                       dropped_over_bound = outbox_stats.dropped_over_bound + excluded.dropped_over_bound,
                       last_error = excluded.last_error",
                    &[org, account, n, &error],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(per
                .into_iter()
                .map(|((o, a), n)| (o, a, count(n)))
                .collect())
        })
        .await
    }

    async fn forwarding_counts(&self, org: &str, account: &str) -> StoreResult<ForwardingCounts> {
        let client = self.client().await?;
        let mut c = ForwardingCounts::default();
        let rows = client
            .query(
                "SELECT state, COUNT(*), MIN(created_at) FROM outbox WHERE org = $1 AND account = $2 GROUP BY state",
                &[&org, &account],
            )
            .await
            .map_err(backend)?;
        for r in rows {
            let state: String = r.try_get(0).map_err(backend)?;
            let n = count(r.try_get(1).map_err(backend)?);
            match DeliveryState::parse(&state) {
                Some(DeliveryState::Pending) => {
                    c.pending = n;
                    c.oldest_pending_at = r.try_get(2).map_err(backend)?;
                }
                _ => c.failed += n,
            }
        }
        if let Some(r) = client
            .query_opt(
                "SELECT delivered, dropped_over_bound, last_success_at, last_error FROM outbox_stats
                 WHERE org = $1 AND account = $2",
                &[&org, &account],
            )
            .await
            .map_err(backend)?
        {
            c.delivered = count(r.try_get(0).map_err(backend)?);
            c.dropped_over_bound = count(r.try_get(1).map_err(backend)?);
            c.last_success_at = r.try_get(2).map_err(backend)?;
            c.last_error = r.try_get(3).map_err(backend)?;
        }
        Ok(c)
    }

    async fn failed_deliveries(
        &self,
        org: &str,
        account: &str,
    ) -> StoreResult<Vec<OutboxDelivery>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM outbox WHERE org = $1 AND account = $2 AND state = 'failed'
                     ORDER BY created_at, id"
                ),
                &[&org, &account],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(delivery_row).collect()
    }

    async fn retry_failed(
        &self,
        org: &str,
        account: &str,
        id: Option<&str>,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = $4, expires_at = $5,
                   attempts = 0, lease_until = NULL
                 WHERE org = $1 AND account = $2 AND state = 'failed' AND ($3::text IS NULL OR id = $3)",
                &[&org, &account, &id, &now, &expires_at],
            )
            .await
            .map_err(backend)
    }

    async fn delete_failed(&self, org: &str, account: &str, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM outbox WHERE org = $1 AND account = $2 AND id = $3 AND state = 'failed'",
                &[&org, &account, &id],
            )
            .await
            .map_err(backend)?;
        Ok(n > 0)
    }

    async fn outbox_totals(&self) -> StoreResult<OutboxTotals> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT state, COUNT(*) FROM outbox GROUP BY state", &[])
            .await
            .map_err(backend)?;
        let mut totals = OutboxTotals::default();
        for r in rows {
            let state: String = r.try_get(0).map_err(backend)?;
            let n = count(r.try_get(1).map_err(backend)?);
            match DeliveryState::parse(&state) {
                Some(DeliveryState::Pending) => totals.pending += n,
                _ => totals.failed += n,
            }
        }
        Ok(totals)
    }
}
