//! Entity states and counters in PostgreSQL: writes are queued for the group writer
//! (see the module above); queries and expiry run on pooled connections.

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{Failure, LOCK_KEY_SQL, Pending, PostgresStore, backend};
use crate::store::{
    CompactionGuard, CounterQuery, CounterRow, EntityKind, RollupStore, Series, StoreError,
    StoreResult, Tier, TierRows, WriteJob, pruned_digest,
};
use crate::telemetry;

#[async_trait]
impl RollupStore for PostgresStore {
    async fn apply(&self, mut job: WriteJob) -> StoreResult<()> {
        job.keys.sort();
        job.keys.dedup();
        let (reply, answer) = oneshot::channel();
        telemetry::write_queued();
        self.jobs.try_send(Pending { job, reply }).map_err(|e| {
            telemetry::write_unqueued(1);
            match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            }
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn counters(&self, q: CounterQuery) -> StoreResult<Vec<CounterRow>> {
        let client = self.client().await?;
        let tier = q.tier.code();
        let series: Vec<&str> = q.series.iter().map(|s| s.as_str()).collect();
        let stmt = client
            .prepare_cached(
                "SELECT bucket, series, dim, SUM(value)::bigint FROM counters
                 WHERE org = $1 AND tier = $2 AND bucket BETWEEN $3 AND $4
                   AND account = $5 AND series = ANY($6::text[])
                 GROUP BY bucket, series, dim",
            )
            .await
            .map_err(backend)?;
        let rows = client
            .query(&stmt, &[&q.org, &tier, &q.from, &q.to, &q.account, &series])
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let stored: &str = r.try_get(1).map_err(backend)?;
                let series = Series::from_name(stored).filter(|s| q.series.contains(s));
                let series = series.ok_or_else(|| {
                    StoreError::Backend(format!("series `{stored}` was not asked for"))
                })?;
                Ok(CounterRow {
                    bucket: r.try_get(0).map_err(backend)?,
                    series,
                    dim: r.try_get(2).map_err(backend)?,
                    value: r.try_get(3).map_err(backend)?,
                })
            })
            .collect()
    }

    async fn account_exists(&self, org: &str, account: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM accounts WHERE org = $1 AND account_id = $2",
                &[&org, &account],
            )
            .await
            .map_err(backend)?
            .is_some())
    }

    async fn expire_counters(
        &self,
        org: &str,
        tier: Tier,
        before: i64,
        limit: usize,
    ) -> StoreResult<u64> {
        let tier = tier.code();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // SKIP LOCKED: compaction never waits on (or deadlocks with) a write job; a row a
        // job holds right now is left for the next run.
        self.retrying(|client| async move {
            let n = client
                .execute(
                    "DELETE FROM counters WHERE (org, account, tier, bucket, series, dim) IN (
                        SELECT org, account, tier, bucket, series, dim FROM counters
                        WHERE org = $1 AND tier = $2 AND bucket < $3
                        LIMIT $4 FOR UPDATE SKIP LOCKED)",
                    &[&org, &tier, &before, &limit],
                )
                .await?;
            Ok(n)
        })
        .await
    }

    async fn prune_states(
        &self,
        org: &str,
        before: i64,
        limit: usize,
        forget_after: Option<i64>,
    ) -> StoreResult<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.retrying(|mut client| async move {
            let tx = client.transaction().await?;
            tx.execute(
                "DELETE FROM state_holds WHERE org = $1 AND until < $2",
                &[&org, &before],
            )
            .await?;
            // A hold committed before a write's states is seen by this statement whenever
            // it can see those states; SKIP LOCKED leaves states a write job holds.
            let gone = tx
                .query(
                    "DELETE FROM entities WHERE org = $1 AND (kind, account, id) IN (
                        SELECT kind, account, id FROM entities
                        WHERE org = $1 AND keep_until IS NOT NULL AND keep_until < $2
                          AND NOT EXISTS (SELECT 1 FROM state_holds WHERE org = $1 AND until >= $2)
                        LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING kind, account, id, octet_length(state) > 0",
                    &[&org, &before, &limit],
                )
                .await?;
            // Placeholders (empty states) were never states: nothing to remember of them.
            let mut traced = std::collections::BTreeSet::new();
            for row in &gone {
                let has_state: bool = row.try_get(3)?;
                if !has_state {
                    continue;
                }
                let code: i16 = row.try_get(0)?;
                let kind = EntityKind::from_code(i64::from(code)).ok_or_else(|| {
                    Failure::Fatal(StoreError::Backend(format!(
                        "stored kind {code} is not an entity kind"
                    )))
                })?;
                let account: String = row.try_get(1)?;
                let id: &str = row.try_get(2)?;
                traced.insert((account, pruned_digest(kind, id)));
            }
            if !traced.is_empty() {
                let (accounts, digests): (Vec<String>, Vec<i64>) = traced.into_iter().unzip();
                tx.execute(
                    "INSERT INTO pruned (org, account, digest, keep_until)
                     SELECT $1, u.a, u.d, $4 FROM UNNEST($2::text[], $3::bigint[]) AS u(a, d)
                     ON CONFLICT (org, account, digest) DO UPDATE SET keep_until = excluded.keep_until",
                    &[&org, &accounts, &digests, &forget_after],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(gone.len() as u64)
        })
        .await
    }

    async fn expire_pruned(&self, org: &str, before: i64, limit: usize) -> StoreResult<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.retrying(|client| async move {
            let n = client
                .execute(
                    "DELETE FROM pruned WHERE (org, account, digest) IN (
                        SELECT org, account, digest FROM pruned
                        WHERE org = $1 AND keep_until IS NOT NULL AND keep_until < $2
                        LIMIT $3 FOR UPDATE SKIP LOCKED)",
                    &[&org, &before, &limit],
                )
                .await?;
            Ok(n)
        })
        .await
    }

    async fn hold_states(&self, org: &str, name: &str, until: i64) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO state_holds (org, name, until) VALUES ($1, $2, $3)
                 ON CONFLICT (org, name) DO UPDATE SET until = excluded.until",
                &[&org, &name, &until],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn release_states(&self, org: &str, name: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM state_holds WHERE org = $1 AND name = $2",
                &[&org, &name],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn progress(&self, name: &str) -> StoreResult<Option<i64>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT position FROM progress WHERE name = $1 LIMIT 1",
                &[&name],
            )
            .await
            .map_err(backend)?;
        row.map(|r| r.try_get(0).map_err(backend)).transpose()
    }

    async fn tier_rows(&self, org: Option<&str>) -> StoreResult<TierRows> {
        let client = self.client().await?;
        let mut rows = TierRows::default();
        for r in client
            .query(
                "SELECT tier, COUNT(*) FROM counters WHERE $1::text IS NULL OR org = $1 GROUP BY tier",
                &[&org],
            )
            .await
            .map_err(backend)?
        {
            let tier: i16 = r.try_get(0).map_err(backend)?;
            let n = u64::try_from(r.try_get::<_, i64>(1).map_err(backend)?).unwrap_or(0);
            rows.count(i64::from(tier), n);
        }
        // Placeholders (empty states) are not states.
        let states: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM entities
                 WHERE ($1::text IS NULL OR org = $1) AND octet_length(state) > 0",
                &[&org],
            )
            .await
            .map_err(backend)?
            .get(0);
        rows.states = u64::try_from(states).unwrap_or(0);
        let pruned: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM pruned WHERE $1::text IS NULL OR org = $1",
                &[&org],
            )
            .await
            .map_err(backend)?
            .get(0);
        rows.pruned_ids = u64::try_from(pruned).unwrap_or(0);
        Ok(rows)
    }

    async fn compaction_lock(&self) -> StoreResult<Option<CompactionGuard>> {
        let mut held = self.compactor.lock().await;
        if held.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(Some(CompactionGuard::granted()));
        }
        let client = self.client().await?;
        let locked: bool = client
            .query_one(
                &format!("SELECT pg_try_advisory_lock({LOCK_KEY_SQL})"),
                &[&"compaction"],
            )
            .await
            .map_err(backend)?
            .get(0);
        if !locked {
            return Ok(None);
        }
        // The winner keeps the session, and with it the lock, for as long as it runs:
        // it stays the compactor, and another instance takes over when it stops.
        *held = Some(client);
        Ok(Some(CompactionGuard::granted()))
    }
}
