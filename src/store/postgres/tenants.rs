//! Organizations and their credentials (API keys and share links, as digests) in
//! PostgreSQL, shared by every instance on the database, so a revocation reaches them all
//! (the engine's cache holds an entry for under a second).

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PostgresStore, backend, org_row};
use crate::store::credentials::{CredentialKind, CredentialRecord, join_accounts, split_accounts};
use crate::store::{OrgRecord, StoreError, StoreResult, TenantStore};

const COLUMNS: &str =
    "k.id, k.org, k.kind, k.name, k.scope, k.accounts, k.created_at, k.expires_at, k.last_used_at";

fn credential_row(r: &Row) -> StoreResult<CredentialRecord> {
    let kind: String = r.try_get(2).map_err(backend)?;
    Ok(CredentialRecord {
        id: r.try_get(0).map_err(backend)?,
        org: r.try_get(1).map_err(backend)?,
        // A stored kind this build does not know is a damaged store, never an admin key.
        kind: CredentialKind::from_stored(&kind)
            .ok_or_else(|| StoreError::Backend(format!("unknown credential kind `{kind}`")))?,
        name: r.try_get(3).map_err(backend)?,
        scope: r.try_get(4).map_err(backend)?,
        accounts: split_accounts(r.try_get(5).map_err(backend)?),
        created_at: r.try_get(6).map_err(backend)?,
        expires_at: r.try_get(7).map_err(backend)?,
        last_used_at: r.try_get(8).map_err(backend)?,
    })
}

#[async_trait]
impl TenantStore for PostgresStore {
    async fn create_org(
        &self,
        org: &OrgRecord,
        k: &CredentialRecord,
        key_hash: &str,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute(
            "INSERT INTO orgs (id, name, timezone, created_at) VALUES ($1, $2, $3, $4)",
            &[&org.id, &org.name, &org.timezone, &org.created_at],
        )
        .await
        .map_err(backend)?;
        tx.execute(
            "INSERT INTO api_keys (org, key_hash, created_at, id, kind, name, scope)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &org.id,
                &key_hash,
                &k.created_at,
                &k.id,
                &k.kind.as_str(),
                &k.name,
                &k.scope,
            ],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
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

    async fn create_credential(&self, r: &CredentialRecord, secret_hash: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_keys (key_hash, org, created_at, id, kind, name, scope, accounts, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &secret_hash,
                    &r.org,
                    &r.created_at,
                    &r.id,
                    &r.kind.as_str(),
                    &r.name,
                    &r.scope,
                    &join_accounts(&r.accounts),
                    &r.expires_at,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn credential_by_hash(
        &self,
        secret_hash: &str,
    ) -> StoreResult<Option<(OrgRecord, CredentialRecord)>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS}, o.name, o.timezone, o.created_at
                     FROM api_keys k JOIN orgs o ON o.id = k.org WHERE k.key_hash = $1"
                ),
                &[&secret_hash],
            )
            .await
            .map_err(backend)?;
        let Some(r) = row else { return Ok(None) };
        let credential = credential_row(&r)?;
        let org = OrgRecord {
            id: credential.org.clone(),
            name: r.try_get(9).map_err(backend)?,
            timezone: r.try_get(10).map_err(backend)?,
            created_at: r.try_get(11).map_err(backend)?,
        };
        Ok(Some((org, credential)))
    }

    async fn credentials(
        &self,
        org: &str,
        kind: CredentialKind,
    ) -> StoreResult<Vec<CredentialRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM api_keys k WHERE k.org = $1 AND k.kind = $2
                     ORDER BY k.created_at, k.id"
                ),
                &[&org, &kind.as_str()],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(credential_row).collect()
    }

    async fn delete_credential(
        &self,
        org: &str,
        kind: CredentialKind,
        id: &str,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM api_keys WHERE org = $1 AND kind = $2 AND id = $3",
                &[&org, &kind.as_str(), &id],
            )
            .await
            .map_err(backend)?;
        Ok(n > 0)
    }

    async fn touch_credential(&self, id: &str, at: i64) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE api_keys SET last_used_at = $2 WHERE id = $1",
                &[&id, &at],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}
