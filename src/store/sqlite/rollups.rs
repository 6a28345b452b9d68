//! Entity states and counters in SQLite: writes go through the writer thread (see the
//! module above); counter queries are short reads on the calling thread.

use std::sync::mpsc;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use tokio::sync::oneshot;

use super::{SqliteStore, Task};
use crate::store::{
    CompactionGuard, CounterQuery, CounterRow, RollupStore, StoreError, StoreResult, Tier,
    TierRows, WriteJob,
};
use crate::telemetry;

#[async_trait]
impl RollupStore for SqliteStore {
    async fn apply(&self, job: WriteJob) -> StoreResult<()> {
        let (tx, rx) = oneshot::channel();
        telemetry::write_queued();
        self.writer.try_send(Task::Apply(job, tx)).map_err(|e| {
            telemetry::write_unqueued(1);
            match e {
                mpsc::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::TrySendError::Disconnected(_) => StoreError::Closed,
            }
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn counters(&self, q: CounterQuery) -> StoreResult<Vec<CounterRow>> {
        // The planner bounds a query to a few hundred buckets: a short read.
        self.read_now(move |conn| {
            // One account's rows are unique per series, bucket and dimension, so no sum is
            // needed; and with the series before the bucket in the key, each series asked
            // for is one key range, and the rows of the others are never read.
            let mut stmt = conn.prepare_cached(
                "SELECT bucket, dim, value FROM counters
                 WHERE org = ?1 AND account = ?2 AND tier = ?3 AND series = ?4 AND bucket BETWEEN ?5 AND ?6",
            )?;
            let mut out = Vec::new();
            for &series in &q.series {
                let mut rows =
                    stmt.query(params![
                    q.org,
                    q.account,
                    q.tier.code(),
                    series.as_str(),
                    q.from,
                    q.to
                ])?;
                while let Some(r) = rows.next()? {
                    out.push(CounterRow {
                        bucket: r.get(0)?,
                        series,
                        dim: r.get(1)?,
                        value: r.get(2)?,
                    });
                }
            }
            Ok(out)
        })
    }

    async fn account_exists(&self, org: &str, account: &str) -> StoreResult<bool> {
        self.read_now(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM accounts WHERE org = ?1 AND account_id = ?2")?
                .query_row(params![org, account], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }

    async fn expire_counters(
        &self,
        org: &str,
        tier: Tier,
        before: i64,
        limit: usize,
    ) -> StoreResult<u64> {
        let org = org.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.maintain(Box::new(move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM counters WHERE (org, account, tier, series, bucket, dim) IN (
                        SELECT org, account, tier, series, bucket, dim FROM counters
                        WHERE org = ?1 AND tier = ?2 AND bucket < ?3 LIMIT ?4)",
                )?
                .execute(params![org, tier.code(), before, limit])?;
            Ok(n as u64)
        }))
        .await
    }

    async fn prune_states(&self, before: i64, limit: usize) -> StoreResult<u64> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.maintain(Box::new(move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM entities WHERE (org, kind, account, id) IN (
                        SELECT org, kind, account, id FROM entities
                        WHERE keep_until IS NOT NULL AND keep_until < ?1 LIMIT ?2)",
                )?
                .execute(params![before, limit])?;
            Ok(n as u64)
        }))
        .await
    }

    async fn progress(&self, name: &str) -> StoreResult<Option<i64>> {
        let name = name.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT position FROM progress WHERE name = ?1")?
                .query_row(params![name], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn tier_rows(&self, org: Option<&str>) -> StoreResult<TierRows> {
        let org = org.map(str::to_string);
        self.read(move |conn| {
            let mut rows = TierRows::default();
            let mut stmt = conn.prepare_cached(
                "SELECT tier, COUNT(*) FROM counters WHERE ?1 IS NULL OR org = ?1 GROUP BY tier",
            )?;
            let counts = stmt.query_map(params![org], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })?;
            for c in counts {
                let (tier, n) = c?;
                rows.count(tier, n as u64);
            }
            // States still in the entity log count once, whether or not the table has
            // an older version of them.
            rows.states = conn.query_row(
                "SELECT COUNT(*) FROM (
                    SELECT org, kind, account, id FROM entities WHERE ?1 IS NULL OR org = ?1
                    UNION SELECT org, kind, account, id FROM entity_log WHERE ?1 IS NULL OR org = ?1)",
                params![org],
                |r| r.get::<_, i64>(0),
            )? as u64;
            Ok(rows)
        })
        .await
    }

    /// One process needs no lock: its single writer serializes compaction with ingestion.
    async fn compaction_lock(&self) -> StoreResult<Option<CompactionGuard>> {
        Ok(Some(CompactionGuard::granted()))
    }
}
