//! Accounts and kept webhook payloads in SQLite: the `Store` methods of the Meta webhook.
//! These are administrative and rare, so they run on a connection of their own (as
//! `create_org` does), except deleting an account's figures, which goes through the
//! writer so that it never races ingestion.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::SqliteStore;
use crate::store::{AccountRecord, OrgRecord, StoreError, StoreResult, UnroutedPayload};

const ACCOUNT_COLUMNS: &str = "org, account_id, name, phone_number_id, verify_token_hash, app_secret, registered_at, updated_at";

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
fn write_tx(conn: &Connection) -> rusqlite::Result<Transaction<'_>> {
    Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}

fn payload_phones(conn: &Connection, id: i64) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT phone_number_id FROM unrouted_phones WHERE payload = ?1 ORDER BY phone_number_id",
    )?;
    let rows = stmt
        .query_map(params![id], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}

impl SqliteStore {
    pub(super) async fn sql_org_by_id(&self, id: &str) -> StoreResult<Option<OrgRecord>> {
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

    pub(super) async fn sql_register_account(&self, a: &AccountRecord) -> StoreResult<()> {
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
                "INSERT INTO accounts (org, account_id, name, phone_number_id, verify_token_hash, app_secret, registered_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (org, account_id) DO UPDATE SET name = excluded.name,
                   phone_number_id = excluded.phone_number_id, verify_token_hash = excluded.verify_token_hash,
                   app_secret = excluded.app_secret, registered_at = excluded.registered_at,
                   updated_at = excluded.updated_at",
                params![
                    a.org,
                    a.account_id,
                    a.name,
                    a.phone_number_id,
                    a.verify_token_hash,
                    a.app_secret,
                    a.registered_at,
                    a.updated_at
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(super) async fn sql_update_account(&self, a: &AccountRecord) -> StoreResult<bool> {
        let a = a.clone();
        self.read(move |conn| {
            let tx = write_tx(conn)?;
            check_phone_free(&tx, &a)?;
            let n = tx.execute(
                "UPDATE accounts SET name = ?3, phone_number_id = ?4, verify_token_hash = ?5,
                   app_secret = ?6, updated_at = ?7
                 WHERE org = ?1 AND account_id = ?2 AND registered_at IS NOT NULL",
                params![
                    a.org,
                    a.account_id,
                    a.name,
                    a.phone_number_id,
                    a.verify_token_hash,
                    a.app_secret,
                    a.updated_at
                ],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    pub(super) async fn sql_accounts(&self, org: &str) -> StoreResult<Vec<AccountRecord>> {
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

    pub(super) async fn sql_account(
        &self,
        org: &str,
        account_id: &str,
    ) -> StoreResult<Option<AccountRecord>> {
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

    pub(super) async fn sql_account_by_phone(
        &self,
        phone: &str,
    ) -> StoreResult<Option<AccountRecord>> {
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

    pub(super) async fn sql_verify_token_known(&self, hash: &str) -> StoreResult<bool> {
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

    pub(super) async fn sql_delete_account(&self, org: &str, account: &str) -> StoreResult<bool> {
        let (org, account) = (org.to_string(), account.to_string());
        let n = self
            .maintain(Box::new(move |conn| {
                // The organization-wide sums lose what this account added to them.
                conn.execute(
                    "UPDATE counters AS total SET value = total.value - own.value
                     FROM (SELECT tier, bucket, series, dim, value FROM counters WHERE org = ?1 AND account = ?2) AS own
                     WHERE total.org = ?1 AND total.account = ?3 AND total.tier = own.tier AND total.bucket = own.bucket
                       AND total.series = own.series AND total.dim = own.dim",
                    params![org, account, crate::store::ALL_ACCOUNTS],
                )?;
                conn.execute(
                    "DELETE FROM counters WHERE org = ?1 AND account = ?2",
                    params![org, account],
                )?;
                conn.execute(
                    "DELETE FROM entities WHERE org = ?1 AND account = ?2",
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

    pub(super) async fn sql_keep_unrouted(
        &self,
        p: &UnroutedPayload,
        max_payloads: usize,
        max_bytes: usize,
    ) -> StoreResult<i64> {
        let p = p.clone();
        let max_payloads = i64::try_from(max_payloads).unwrap_or(i64::MAX);
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let tx = write_tx(conn)?;
            let bytes = i64::try_from(p.body.len()).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO unrouted (received_at, signature, body, bytes) VALUES (?1, ?2, ?3, ?4)",
                params![p.received_at, p.signature, p.body, bytes],
            )?;
            let id = tx.last_insert_rowid();
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO unrouted_phones (payload, phone_number_id) VALUES (?1, ?2)",
                )?;
                for phone in &p.phone_number_ids {
                    stmt.execute(params![id, phone])?;
                }
            }
            // Drop the oldest until the bounds hold again.
            loop {
                let (count, total): (i64, i64) = tx.query_row(
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM unrouted",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if count == 0 || (count <= max_payloads && total <= max_bytes) {
                    break;
                }
                let dropped: i64 = tx.query_row(
                    "DELETE FROM unrouted WHERE id = (SELECT MIN(id) FROM unrouted) RETURNING id",
                    [],
                    |r| r.get(0),
                )?;
                tracing::warn!(payload = dropped, "unrouted payload space is full; dropped the oldest payload");
            }
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    pub(super) async fn sql_unrouted(
        &self,
        phone: Option<&str>,
    ) -> StoreResult<Vec<UnroutedPayload>> {
        let phone = phone.map(str::to_string);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, received_at, signature, body FROM unrouted
                 WHERE ?1 IS NULL OR id IN (SELECT payload FROM unrouted_phones WHERE phone_number_id = ?1)
                 ORDER BY id",
            )?;
            let mut rows = stmt
                .query_map(params![phone], |r| {
                    Ok(UnroutedPayload {
                        id: r.get(0)?,
                        received_at: r.get(1)?,
                        signature: r.get(2)?,
                        body: r.get(3)?,
                        phone_number_ids: Vec::new(),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            for p in &mut rows {
                p.phone_number_ids = payload_phones(conn, p.id)?;
            }
            Ok(rows)
        })
        .await
    }

    pub(super) async fn sql_release_unrouted(&self, id: i64, phone: &str) -> StoreResult<()> {
        let phone = phone.to_string();
        self.read(move |conn| {
            let tx = write_tx(conn)?;
            tx.execute(
                "DELETE FROM unrouted_phones WHERE payload = ?1 AND phone_number_id = ?2",
                params![id, phone],
            )?;
            if payload_phones(&tx, id)?.is_empty() {
                tx.execute("DELETE FROM unrouted WHERE id = ?1", params![id])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(super) async fn sql_delete_unrouted(&self, id: i64) -> StoreResult<bool> {
        self.read(move |conn| {
            Ok(conn.execute("DELETE FROM unrouted WHERE id = ?1", params![id])? > 0)
        })
        .await
    }
}
