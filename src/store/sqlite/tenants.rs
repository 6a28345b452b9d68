//! Organizations and their API key digests in SQLite. Administration is rare: it runs
//! on pooled read connections, off the ingest queue.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::store::{OrgRecord, StoreResult, TenantStore};

#[async_trait]
impl TenantStore for SqliteStore {
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
        self.read(|conn| {
            Ok(conn.query_row("SELECT COUNT(*) FROM orgs", [], |r| r.get::<_, i64>(0))? as u64)
        })
        .await
    }

    async fn orgs(&self) -> StoreResult<Vec<OrgRecord>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, name, timezone, created_at FROM orgs ORDER BY id")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(OrgRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        timezone: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn org_by_id(&self, id: &str) -> StoreResult<Option<OrgRecord>> {
        let id = id.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT id, name, timezone, created_at FROM orgs WHERE id = ?1")?
                .query_row(params![id], |r| {
                    Ok(OrgRecord {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        timezone: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }
}
