//! Accounts in SQLite. Registration is administrative and rare, so it runs on a
//! connection of its own, except deleting an account's figures, which goes through the
//! writer so that it never races ingestion.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::{AccountRecord, AccountStore, StoreError, StoreResult};

const ACCOUNT_COLUMNS: &str = "org, account_id, name, phone_number_id, verify_token_hash, app_secret, registered_at, updated_at, forward_url";

fn account_row(r: &Row<'_>) -> rusqlite::Result<AccountRecord> {
    Ok(AccountRecord {
        org: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        phone_number_id: r.get(3)?,
        verify_token_hash: r.get(4)?,
        app_secret: r.get(5)?,
        registered_at: r.get(6)?,
        updated_at: r.get(7)?,
        forward_url: r.get(8)?,
    })
}

/// Refuses a `phone_number_id` that another account claims.
fn check_phone_free(conn: &Connection, a: &AccountRecord) -> StoreResult<()> {
    let Some(phone) = &a.phone_number_id else {
        return Ok(());
    };
    let owner: Option<(String, String)> = conn
        .prepare_cached("SELECT org, account_id FROM accounts WHERE phone_number_id = ?1")?
        .query_row(params![phone], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match owner {
        Some((org, account)) if org != a.org || account != a.account_id => {
            Err(StoreError::Conflict(format!(
                "phone_number_id `{phone}` is already claimed by another account"
            )))
        }
        _ => Ok(()),
    }
}

/// A write transaction on a read connection, taking the write lock at once so that a
/// read-then-write sequence never fails on a snapshot the writer moved past.
pub(super) fn write_tx(conn: &Connection) -> rusqlite::Result<Transaction<'_>> {
    Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn register_account(&self, a: &AccountRecord) -> StoreResult<()> {
        let a = a.clone();
        self.read(move |conn| {
            let tx = write_tx(conn)?;
            let registered: Option<Option<i64>> = tx
                .prepare_cached(
                    "SELECT registered_at FROM accounts WHERE org = ?1 AND account_id = ?2",
                )?
                .query_row(params![a.org, a.account_id], |r| r.get(0))
                .optional()?;
            if let Some(Some(_)) = registered {
                return Err(StoreError::Conflict(format!(
                    "account `{}` is already registered; change it with PATCH /api/accounts/{}",
                    a.account_id, a.account_id
                )));
            }
            check_phone_free(&tx, &a)?;
            tx.execute(
                "INSERT INTO accounts (org, account_id, name, phone_number_id, verify_token_hash, app_secret, registered_at, updated_at, forward_url)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (org, account_id) DO UPDATE SET name = excluded.name,
                   phone_number_id = excluded.phone_number_id, verify_token_hash = excluded.verify_token_hash,
                   app_secret = excluded.app_secret, registered_at = excluded.registered_at,
                   updated_at = excluded.updated_at, forward_url = excluded.forward_url",
                params![
                    a.org,
                    a.account_id,
                    a.name,
                    a.phone_number_id,
                    a.verify_token_hash,
                    a.app_secret,
                    a.registered_at,
                    a.updated_at,
                    a.forward_url
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn update_account(&self, a: &AccountRecord) -> StoreResult<bool> {
        let a = a.clone();
        self.read(move |conn| {
            let tx = write_tx(conn)?;
            check_phone_free(&tx, &a)?;
            let n = tx.execute(
                "UPDATE accounts SET name = ?3, phone_number_id = ?4, verify_token_hash = ?5,
                   app_secret = ?6, updated_at = ?7, forward_url = ?8
                 WHERE org = ?1 AND account_id = ?2 AND registered_at IS NOT NULL",
                params![
                    a.org,
                    a.account_id,
                    a.name,
                    a.phone_number_id,
                    a.verify_token_hash,
                    a.app_secret,
                    a.updated_at,
                    a.forward_url
                ],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn accounts(&self, org: &str) -> StoreResult<Vec<AccountRecord>> {
        let org = org.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE org = ?1 ORDER BY account_id"
            ))?;
            let rows = stmt
                .query_map(params![org], account_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn account(&self, org: &str, account_id: &str) -> StoreResult<Option<AccountRecord>> {
        let (org, account_id) = (org.to_string(), account_id.to_string());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE org = ?1 AND account_id = ?2"
                ))?
                .query_row(params![org, account_id], account_row)
                .optional()?)
        })
        .await
    }

    async fn account_by_phone(&self, phone: &str) -> StoreResult<Option<AccountRecord>> {
        let phone = phone.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE phone_number_id = ?1"
                ))?
                .query_row(params![phone], account_row)
                .optional()?)
        })
        .await
    }

    async fn verify_token_known(&self, hash: &str) -> StoreResult<bool> {
        let hash = hash.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM accounts WHERE verify_token_hash = ?1 LIMIT 1")?
                .query_row(params![hash], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await
    }

    async fn delete_account(&self, org: &str, account: &str) -> StoreResult<bool> {
        let (org, account) = (org.to_string(), account.to_string());
        let n = self
            .maintain_states(Box::new(move |conn| {
                // The organization-wide sums lose what this account added to them.
                let scope = |account: &str| super::rollups::find_scope(conn, &org, account);
                if let Some(own) = scope(&account)? {
                    if let Some(total) = scope(crate::store::ALL_ACCOUNTS)? {
                        conn.execute(
                            "UPDATE counters AS total SET value = total.value - own.value
                             FROM (SELECT tier, series, bucket, dim, value FROM counters WHERE scope = ?1) AS own
                             WHERE total.scope = ?2 AND total.tier = own.tier AND total.series = own.series
                               AND total.bucket = own.bucket AND total.dim = own.dim",
                            params![own, total],
                        )?;
                    }
                    conn.execute("DELETE FROM counters WHERE scope = ?1", params![own])?;
                    // States are kept under the scope too: an account without one has none.
                    conn.execute("DELETE FROM entities WHERE scope = ?1", params![own])?;
                    conn.execute("DELETE FROM counter_scopes WHERE id = ?1", params![own])?;
                }
                conn.execute(
                    "DELETE FROM pruned WHERE org = ?1 AND account = ?2",
                    params![org, account],
                )?;
                conn.execute(
                    "DELETE FROM outbox WHERE org = ?1 AND account = ?2",
                    params![org, account],
                )?;
                conn.execute(
                    "DELETE FROM outbox_stats WHERE org = ?1 AND account = ?2",
                    params![org, account],
                )?;
                let n = conn.execute(
                    "DELETE FROM accounts WHERE org = ?1 AND account_id = ?2",
                    params![org, account],
                )?;
                Ok(n as u64)
            }))
            .await?;
        Ok(n > 0)
    }
}
