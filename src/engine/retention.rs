//! Retention and compaction (SPEC section 4).
//!
//! Every event is written to its hour, its day and its month at ingestion, so each tier
//! is complete on its own and folding is done as the data arrives. Compaction is then
//! only expiry: it deletes hours and days past their retention and entity states past
//! the state window, in small chunks that interleave with ingestion. Run twice, the
//! second run finds nothing to do.
//!
//! A pruned state leaves a digest of its id behind, kept as long as the daily tier keeps
//! a day, so that a later event for it is told from one never seen and changes no figure
//! (see `ingest`); compaction deletes those digests once that time is up.

use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;

use std::sync::Arc;

use super::time::{Tier, day_key};
use super::{Clock, EngineConfig, EngineError, Org, tier_bounds};
use crate::store::{RollupStore, TenantStore};

/// Rows deleted per chunk: small enough that ingestion waits at most a few milliseconds.
const CHUNK: usize = 2_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CompactionReport {
    pub organizations: u64,
    pub hourly_rows_expired: u64,
    pub daily_rows_expired: u64,
    pub states_pruned: u64,
    /// Ids of pruned states forgotten, as long after their pruning as the daily tier
    /// keeps a day.
    pub pruned_ids_expired: u64,
    pub took_ms: u64,
}

/// Expires what has aged out of the tiers and the state window, in the background or
/// on demand.
pub struct Compaction {
    pub(super) rollups: Arc<dyn RollupStore>,
    pub(super) tenants: Arc<dyn TenantStore>,
    pub(super) config: Arc<EngineConfig>,
    pub(super) clock: Arc<Clock>,
}

impl Compaction {
    /// Expires what has aged out of every tier, for every organization.
    pub async fn compact(&self) -> Result<CompactionReport, EngineError> {
        let started = Instant::now();
        let mut report = CompactionReport::default();
        // Several instances may share one database: only one compacts at a time.
        let Some(_lock) = self.rollups.compaction_lock().await? else {
            tracing::debug!("another instance is compacting; skipped");
            return Ok(report);
        };
        let now = self.clock.now();
        // A pruned state's id is kept as long as the daily tier keeps a day.
        let forget_after = self
            .config
            .daily_retention_days
            .map(|d| now.saturating_add(d.saturating_mul(86_400)));
        for rec in self.tenants.orgs().await? {
            report.states_pruned += self
                .chunked(|| self.rollups.prune_states(&rec.id, now, CHUNK, forget_after))
                .await?;
            report.pruned_ids_expired += self
                .chunked(|| self.rollups.expire_pruned(&rec.id, now, CHUNK))
                .await?;
            let Ok(tz) = jiff::tz::TimeZone::get(&rec.timezone) else {
                tracing::warn!(org = %rec.id, timezone = %rec.timezone, "unknown stored time zone; skipped");
                continue;
            };
            let org = Org {
                id: rec.id,
                name: rec.name,
                timezone: rec.timezone,
                calendar: super::time::Calendar::new(tz),
                account_limit: None,
            };
            let bounds = tier_bounds(&self.config, self.clock.now(), &org);
            report.organizations += 1;
            if bounds.hour > i64::MIN {
                report.hourly_rows_expired += self.expire(&org, Tier::Hour, bounds.hour).await?;
            }
            if bounds.day > i64::MIN {
                let first_kept = Timestamp::from_second(bounds.day)
                    .map(|t| day_key(org.calendar.zoned(t).date()))
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                report.daily_rows_expired += self.expire(&org, Tier::Day, first_kept).await?;
            }
        }
        report.took_ms = started.elapsed().as_millis() as u64;
        crate::telemetry::compacted(
            report.hourly_rows_expired,
            report.daily_rows_expired,
            report.states_pruned,
            report.pruned_ids_expired,
        );
        if report.hourly_rows_expired
            + report.daily_rows_expired
            + report.states_pruned
            + report.pruned_ids_expired
            > 0
        {
            tracing::info!(?report, "compaction expired old data");
        } else {
            tracing::debug!(?report, "compaction found nothing to expire");
        }
        Ok(report)
    }

    async fn expire(&self, org: &Org, tier: Tier, before: i64) -> Result<u64, EngineError> {
        self.chunked(|| self.rollups.expire_counters(&org.id, tier, before, CHUNK))
            .await
    }

    /// Runs a chunked delete until a chunk finds less than a full one; returns the total.
    async fn chunked<F, Fut>(&self, mut chunk: F) -> Result<u64, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::store::StoreResult<u64>>,
    {
        let mut total = 0;
        loop {
            let n = chunk().await?;
            total += n;
            if n < CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}
