//! Organizations and their API key digests in PostgreSQL.

use async_trait::async_trait;

use super::{PostgresStore, backend, org_row};
use crate::store::{OrgRecord, StoreResult, TenantStore};

#[async_trait]
impl TenantStore for PostgresStore {
    async fn create_org(&self, org: &OrgRecord, key_hash: &str) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute(
            "INSERT INTO orgs (id, name, timezone, created_at) VALUES ($1, $2, $3, $4)",
            &[&org.id, &org.name, &org.timezone, &org.created_at],
        )
        .await
        .map_err(backend)?;
        tx.execute(
            "INSERT INTO api_keys (org, key_hash, created_at) VALUES ($1, $2, $3)",
            &[&org.id, &key_hash, &org.created_at],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn org_by_key_hash(&self, key_hash: &str) -> StoreResult<Option<OrgRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT o.id, o.name, o.timezone, o.created_at
                 FROM api_keys k JOIN orgs o ON o.id = k.org WHERE k.key_hash = $1",
                &[&key_hash],
            )
            .await
            .map_err(backend)?;
        row.map(|r| org_row(&r)).transpose()
    }

    async fn org_count(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM orgs", &[])
            .await
            .map_err(backend)?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn orgs(&self) -> StoreResult<Vec<OrgRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, name, timezone, created_at FROM orgs ORDER BY id",
                &[],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(org_row).collect()
    }

    async fn org_by_id(&self, id: &str) -> StoreResult<Option<OrgRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, name, timezone, created_at FROM orgs WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(backend)?;
        row.map(|r| org_row(&r)).transpose()
    }
}
