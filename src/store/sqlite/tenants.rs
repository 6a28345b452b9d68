//! Organizations and their credentials (API keys and share links, as digests) in SQLite. Administration is rare: it runs
//! on pooled read connections, off the ingest queue.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use crate::store::credentials::{CredentialKind, CredentialRecord, join_accounts, split_accounts};
use crate::store::{OrgRecord, StoreError, StoreResult, TenantStore};

const COLUMNS: &str =
    "k.id, k.org, k.kind, k.name, k.scope, k.accounts, k.created_at, k.expires_at, k.last_used_at";

fn credential_row(r: &Row<'_>) -> rusqlite::Result<(CredentialRecord, String)> {
    let kind: String = r.get(2)?;
    Ok((
        CredentialRecord {
            id: r.get(0)?,
            org: r.get(1)?,
            kind: CredentialKind::from_stored(&kind).unwrap_or(CredentialKind::Key),
            name: r.get(3)?,
            scope: r.get(4)?,
            accounts: split_accounts(r.get(5)?),
            created_at: r.get(6)?,
            expires_at: r.get(7)?,
            last_used_at: r.get(8)?,
        },
        kind,
    ))
}

/// A stored kind this build does not know is a damaged store, never a silent admin key.
fn known(kind: &str) -> StoreResult<()> {
    CredentialKind::from_stored(kind)
        .map(|_| ())
        .ok_or_else(|| StoreError::Backend(format!("unknown credential kind `{kind}`")))
}

#[async_trait]
impl TenantStore for SqliteStore {
    async fn create_org(
        &self,
        org: &OrgRecord,
        first_key: &CredentialRecord,
        key_hash: &str,
    ) -> StoreResult<()> {
        let org = org.clone();
        let k = first_key.clone();
        let key_hash = key_hash.to_string();
        // Administration is rare: a connection of its own keeps it off the ingest queue.
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO orgs (id, name, timezone, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![org.id, org.name, org.timezone, org.created_at],
            )?;
            tx.execute(
                "INSERT INTO api_keys (key_hash, org, created_at, id, kind, name, scope)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key_hash,
                    org.id,
                    k.created_at,
                    k.id,
                    k.kind.as_str(),
                    k.name,
                    k.scope
                ],
            )?;
            tx.commit()?;
            Ok(())
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

    async fn create_credential(
        &self,
        record: &CredentialRecord,
        secret_hash: &str,
    ) -> StoreResult<()> {
        let r = record.clone();
        let hash = secret_hash.to_string();
        self.read(move |conn| {
            conn.execute(
                "INSERT INTO api_keys (key_hash, org, created_at, id, kind, name, scope, accounts, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    hash,
                    r.org,
                    r.created_at,
                    r.id,
                    r.kind.as_str(),
                    r.name,
                    r.scope,
                    join_accounts(&r.accounts),
                    r.expires_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn credential_by_hash(
        &self,
        secret_hash: &str,
    ) -> StoreResult<Option<(OrgRecord, CredentialRecord)>> {
        let hash = secret_hash.to_string();
        self.read(move |conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS}, o.name, o.timezone, o.created_at
                     FROM api_keys k JOIN orgs o ON o.id = k.org WHERE k.key_hash = ?1"
                ))?
                .query_row(params![hash], |r| {
                    let (credential, kind) = credential_row(r)?;
                    let org = OrgRecord {
                        id: credential.org.clone(),
                        name: r.get(9)?,
                        timezone: r.get(10)?,
                        created_at: r.get(11)?,
                    };
                    Ok((org, credential, kind))
                })
                .optional()?;
            match found {
                Some((org, credential, kind)) => {
                    known(&kind)?;
                    Ok(Some((org, credential)))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn credentials(
        &self,
        org: &str,
        kind: CredentialKind,
    ) -> StoreResult<Vec<CredentialRecord>> {
        let org = org.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM api_keys k WHERE k.org = ?1 AND k.kind = ?2
                 ORDER BY k.created_at, k.id"
            ))?;
            let rows = stmt
                .query_map(params![org, kind.as_str()], |r| {
                    credential_row(r).map(|(c, _)| c)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_credential(
        &self,
        org: &str,
        kind: CredentialKind,
        id: &str,
    ) -> StoreResult<bool> {
        let (org, id) = (org.to_string(), id.to_string());
        self.read(move |conn| {
            Ok(conn.execute(
                "DELETE FROM api_keys WHERE org = ?1 AND kind = ?2 AND id = ?3",
                params![org, kind.as_str(), id],
            )? > 0)
        })
        .await
    }

    async fn touch_credential(&self, id: &str, at: i64) -> StoreResult<()> {
        let id = id.to_string();
        self.read(move |conn| {
            conn.execute(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
                params![id, at],
            )?;
            Ok(())
        })
        .await
    }
}
