//! Entity states and counters in SQLite: writes go through the writer thread (see the
//! module above); counter queries are short reads on the calling thread.

use std::collections::HashMap;
use std::sync::mpsc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{SqliteStore, Task};
use crate::store::{
    CompactionGuard, CounterQuery, CounterRow, EntityKey, EntityKind, Pruned, RollupStore, Series,
    StoreError, StoreResult, Tier, TierRows, WriteJob, pruned_digest,
};
use crate::telemetry;

/// The entity kind a stored number names.
fn stored_kind(code: i64) -> StoreResult<EntityKind> {
    EntityKind::from_code(code)
        .ok_or_else(|| StoreError::Backend(format!("stored kind {code} is not an entity kind")))
}

/// Which of `keys` (keys of `org` that have no state) the trace of pruned ids holds.
pub(super) fn pruned_among(
    conn: &rusqlite::Connection,
    org: &str,
    keys: Vec<EntityKey>,
) -> StoreResult<Pruned> {
    let mut pruned = Pruned::default();
    if keys.is_empty() {
        return Ok(pruned);
    }
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM pruned WHERE org = ?1 AND account = ?2 AND digest = ?3")?;
    for key in keys {
        if stmt.exists(params![org, key.account, pruned_digest(key.kind, &key.id)])? {
            pruned.insert(key);
        }
    }
    Ok(pruned)
}

/// The number counter rows store for an account of an organization (its scope), if it
/// has any. The organization-wide sums have a scope of their own (`ALL_ACCOUNTS`).
pub(super) fn find_scope(conn: &Connection, org: &str, account: &str) -> StoreResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM counter_scopes WHERE org = ?1 AND account = ?2")?
        .query_row(params![org, account], |r| r.get(0))
        .optional()?)
}

/// As [`find_scope`], made on first use.
pub(super) fn scope_id(conn: &Connection, org: &str, account: &str) -> StoreResult<i64> {
    if let Some(id) = find_scope(conn, org, account)? {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO counter_scopes (org, account) VALUES (?1, ?2)")?
        .execute(params![org, account])?;
    Ok(conn.last_insert_rowid())
}

/// The number counter rows store for a series, made on first use.
pub(super) fn series_id(conn: &Connection, series: Series) -> StoreResult<i64> {
    let found = conn
        .prepare_cached("SELECT id FROM counter_series WHERE name = ?1")?
        .query_row(params![series.as_str()], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO counter_series (name) VALUES (?1)")?
        .execute(params![series.as_str()])?;
    Ok(conn.last_insert_rowid())
}

/// Deletes up to `limit` rows of `tier` older than `before` of one organization, walking
/// its scopes and the series as key ranges (there is no index by bucket alone).
fn expire_rows(
    conn: &Connection,
    org: &str,
    tier: Tier,
    before: i64,
    limit: usize,
) -> StoreResult<u64> {
    let scopes = conn
        .prepare_cached("SELECT id FROM counter_scopes WHERE org = ?1 ORDER BY id")?
        .query_map(params![org], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let series = conn
        .prepare_cached("SELECT id FROM counter_series ORDER BY id")?
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut delete = conn.prepare_cached(
        "DELETE FROM counters WHERE (scope, tier, series, bucket, dim) IN (
            SELECT scope, tier, series, bucket, dim FROM counters
            WHERE scope = ?1 AND tier = ?2 AND series = ?3 AND bucket < ?4 LIMIT ?5)",
    )?;
    let mut deleted = 0u64;
    for scope in scopes {
        for &s in &series {
            let left = (limit as u64).saturating_sub(deleted);
            if left == 0 {
                return Ok(deleted);
            }
            let left = i64::try_from(left).unwrap_or(i64::MAX);
            deleted += delete.execute(params![scope, tier.code(), s, before, left])? as u64;
        }
    }
    Ok(deleted)
}

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
                 WHERE scope = (SELECT id FROM counter_scopes WHERE org = ?1 AND account = ?2)
                   AND tier = ?3 AND series = (SELECT id FROM counter_series WHERE name = ?4)
                   AND bucket BETWEEN ?5 AND ?6",
            )?;
            let mut out = Vec::new();
            for &series in &q.series {
                let mut rows = stmt.query(params![
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
        self.maintain(Box::new(move |conn| {
            expire_rows(conn, &org, tier, before, limit)
        }))
        .await
    }

    async fn prune_states(
        &self,
        org: &str,
        before: i64,
        limit: usize,
        forget_after: Option<i64>,
    ) -> StoreResult<u64> {
        let org = org.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.maintain_states(Box::new(move |conn| {
            // On the writer thread: no write can come between the check and the delete.
            if conn
                .prepare_cached("SELECT 1 FROM state_holds WHERE org = ?1 AND until >= ?2")?
                .exists(params![org, before])?
            {
                return Ok(0);
            }
            conn.prepare_cached("DELETE FROM state_holds WHERE org = ?1")?
                .execute(params![org])?;
            let accounts: HashMap<i64, String> = conn
                .prepare_cached("SELECT id, account FROM counter_scopes WHERE org = ?1")?
                .query_map(params![org], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let expired: Vec<(i64, i64, String, bool)> = conn
                .prepare_cached(
                    "DELETE FROM entities WHERE (scope, kind, id) IN (
                        SELECT scope, kind, id FROM entities
                        WHERE scope IN (SELECT id FROM counter_scopes WHERE org = ?1)
                          AND keep_until IS NOT NULL AND keep_until < ?2 LIMIT ?3)
                     RETURNING kind, scope, id, length(state) > 0",
                )?
                .query_map(params![org, before, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?;
            let mut trace = conn.prepare_cached(
                "INSERT INTO pruned (org, account, digest, keep_until) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org, account, digest) DO UPDATE SET keep_until = excluded.keep_until",
            )?;
            // In key order: each page of the trace is visited once per chunk.
            let mut traced = Vec::with_capacity(expired.len());
            for (kind, scope, id, _) in expired.iter().filter(|e| e.3) {
                let account = accounts.get(scope).ok_or_else(|| {
                    StoreError::Backend(format!("a state of {org} has an unknown scope {scope}"))
                })?;
                traced.push((account.as_str(), pruned_digest(stored_kind(*kind)?, id)));
            }
            traced.sort_unstable();
            for (account, digest) in traced {
                trace.execute(params![org, account, digest, forget_after])?;
            }
            Ok(expired.len() as u64)
        }))
        .await
    }

    async fn expire_pruned(&self, org: &str, before: i64, limit: usize) -> StoreResult<u64> {
        let org = org.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.maintain(Box::new(move |conn| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM pruned WHERE (org, account, digest) IN (
                        SELECT org, account, digest FROM pruned
                        WHERE org = ?1 AND keep_until IS NOT NULL AND keep_until < ?2 LIMIT ?3)",
                )?
                .execute(params![org, before, limit])?;
            Ok(n as u64)
        }))
        .await
    }

    async fn hold_states(&self, org: &str, name: &str, until: i64) -> StoreResult<()> {
        let (org, name) = (org.to_string(), name.to_string());
        self.maintain(Box::new(move |conn| {
            conn.prepare_cached(
                "INSERT INTO state_holds (org, name, until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (org, name) DO UPDATE SET until = excluded.until",
            )?
            .execute(params![org, name, until])?;
            Ok(0)
        }))
        .await
        .map(|_| ())
    }

    async fn release_states(&self, org: &str, name: &str) -> StoreResult<()> {
        let (org, name) = (org.to_string(), name.to_string());
        self.maintain(Box::new(move |conn| {
            conn.prepare_cached("DELETE FROM state_holds WHERE org = ?1 AND name = ?2")?
                .execute(params![org, name])?;
            Ok(0)
        }))
        .await
        .map(|_| ())
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
                "SELECT tier, COUNT(*) FROM counters
                 WHERE ?1 IS NULL OR scope IN (SELECT id FROM counter_scopes WHERE org = ?1)
                 GROUP BY tier",
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
                    SELECT org, kind, account, id FROM entity_rows WHERE ?1 IS NULL OR org = ?1
                    UNION SELECT org, kind, account, id FROM entity_log WHERE ?1 IS NULL OR org = ?1)",
                params![org],
                |r| r.get::<_, i64>(0),
            )? as u64;
            rows.pruned_ids = conn.query_row(
                "SELECT COUNT(*) FROM pruned WHERE ?1 IS NULL OR org = ?1",
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
