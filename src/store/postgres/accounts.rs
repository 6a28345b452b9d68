//! Accounts and kept webhook payloads in PostgreSQL: the `Store` methods of the Meta
//! webhook. A `phone_number_id` is claimed through `phone_numbers` (keyed by the number,
//! unique across organizations), inside the same transaction that changes the account.

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::Row;

use super::{Failure, LOCK_KEY_SQL, PostgresStore, backend, org_row};
use crate::store::{AccountRecord, OrgRecord, StoreError, StoreResult, UnroutedPayload};

const ACCOUNT_COLUMNS: &str = "org, account_id, name, phone_number_id, verify_token_hash, app_secret, registered_at, updated_at";

fn account_row(r: &Row) -> StoreResult<AccountRecord> {
    Ok(AccountRecord {
        org: r.try_get(0).map_err(backend)?,
        account_id: r.try_get(1).map_err(backend)?,
        name: r.try_get(2).map_err(backend)?,
        phone_number_id: r.try_get(3).map_err(backend)?,
        verify_token_hash: r.try_get(4).map_err(backend)?,
        app_secret: r.try_get(5).map_err(backend)?,
        registered_at: r.try_get(6).map_err(backend)?,
        updated_at: r.try_get(7).map_err(backend)?,
    })
}

fn phone_taken(phone: &str) -> StoreError {
    StoreError::Conflict(format!(
        "phone_number_id `{phone}` is already claimed by another account"
    ))
}

/// The account that claims `phone`, if any.
async fn phone_owner(
    tx: &Transaction<'_>,
    phone: &str,
) -> Result<Option<(String, String)>, Failure> {
    let row = tx
        .query_opt(
            "SELECT org, account_id FROM phone_numbers WHERE phone_number_id = $1",
            &[&phone],
        )
        .await?;
    Ok(match row {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
        None => None,
    })
}

/// Claims the account's `phone_number_id` (if it has one) and releases any other number
/// it held; `Conflict` if another account holds it.
async fn claim_phone(tx: &Transaction<'_>, a: &AccountRecord) -> Result<(), Failure> {
    if let Some(phone) = &a.phone_number_id {
        tx.execute(
            "INSERT INTO phone_numbers (phone_number_id, org, account_id) VALUES ($1, $2, $3)
             ON CONFLICT (phone_number_id) DO NOTHING",
            &[phone, &a.org, &a.account_id],
        )
        .await?;
        match phone_owner(tx, phone).await? {
            Some((org, account)) if org == a.org && account == a.account_id => {}
            _ => return Err(Failure::Fatal(phone_taken(phone))),
        }
    }
    tx.execute(
        "DELETE FROM phone_numbers WHERE org = $1 AND account_id = $2
           AND ($3::text IS NULL OR phone_number_id <> $3)",
        &[&a.org, &a.account_id, &a.phone_number_id],
    )
    .await?;
    Ok(())
}

impl PostgresStore {
    pub(super) async fn pg_org_by_id(&self, id: &str) -> StoreResult<Option<OrgRecord>> {
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

    pub(super) async fn pg_register_account(&self, a: &AccountRecord) -> StoreResult<()> {
        self.retrying(|mut client: Object| async move {
            let tx = client.transaction().await?;
            // A row to lock first, so two registrations of one account are serialized.
            tx.execute(
                "INSERT INTO accounts (org, account_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&a.org, &a.account_id],
            )
            .await?;
            let registered: Option<i64> = tx
                .query_one(
                    "SELECT registered_at FROM accounts WHERE org = $1 AND account_id = $2 FOR UPDATE",
                    &[&a.org, &a.account_id],
                )
                .await?
                .try_get(0)?;
            if registered.is_some() {
                return Err(Failure::Fatal(StoreError::Conflict(format!(
                    "account `{}` is already registered; change it with PATCH /api/accounts/{}",
                    a.account_id, a.account_id
                ))));
            }
            claim_phone(&tx, a).await?;
            tx.execute(
                "UPDATE accounts SET name = $3, phone_number_id = $4, verify_token_hash = $5,
                   app_secret = $6, registered_at = $7, updated_at = $8
                 WHERE org = $1 AND account_id = $2",
                &[
                    &a.org,
                    &a.account_id,
                    &a.name,
                    &a.phone_number_id,
                    &a.verify_token_hash,
                    &a.app_secret,
                    &a.registered_at,
                    &a.updated_at,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn pg_update_account(&self, a: &AccountRecord) -> StoreResult<bool> {
        self.retrying(|mut client: Object| async move {
            let tx = client.transaction().await?;
            if let Some(phone) = &a.phone_number_id {
                match phone_owner(&tx, phone).await? {
                    Some((org, account)) if org != a.org || account != a.account_id => {
                        return Err(Failure::Fatal(phone_taken(phone)));
                    }
                    _ => {}
                }
            }
            let registered = tx
                .query_opt(
                    "SELECT 1 FROM accounts WHERE org = $1 AND account_id = $2
                       AND registered_at IS NOT NULL FOR UPDATE",
                    &[&a.org, &a.account_id],
                )
                .await?
                .is_some();
            if !registered {
                return Ok(false);
            }
            claim_phone(&tx, a).await?;
            tx.execute(
                "UPDATE accounts SET name = $3, phone_number_id = $4, verify_token_hash = $5,
                   app_secret = $6, updated_at = $7
                 WHERE org = $1 AND account_id = $2",
                &[
                    &a.org,
                    &a.account_id,
                    &a.name,
                    &a.phone_number_id,
                    &a.verify_token_hash,
                    &a.app_secret,
                    &a.updated_at,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    pub(super) async fn pg_accounts(&self, org: &str) -> StoreResult<Vec<AccountRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE org = $1 ORDER BY account_id"
                ),
                &[&org],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(account_row).collect()
    }

    pub(super) async fn pg_account(
        &self,
        org: &str,
        account_id: &str,
    ) -> StoreResult<Option<AccountRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE org = $1 AND account_id = $2"
                ),
                &[&org, &account_id],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(account_row).transpose()
    }

    pub(super) async fn pg_account_by_phone(
        &self,
        phone: &str,
    ) -> StoreResult<Option<AccountRecord>> {
        // Two lookups, not a join: the second reads one organization only.
        let client = self.client().await?;
        let owner = client
            .query_opt(
                "SELECT org, account_id FROM phone_numbers WHERE phone_number_id = $1",
                &[&phone],
            )
            .await
            .map_err(backend)?;
        let Some(owner) = owner else {
            return Ok(None);
        };
        let org: String = owner.try_get(0).map_err(backend)?;
        let account: String = owner.try_get(1).map_err(backend)?;
        drop(client);
        self.pg_account(&org, &account).await
    }

    pub(super) async fn pg_verify_token_known(&self, hash: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM accounts WHERE verify_token_hash = $1 LIMIT 1",
                &[&hash],
            )
            .await
            .map_err(backend)?
            .is_some())
    }

    pub(super) async fn pg_delete_account(&self, org: &str, account: &str) -> StoreResult<bool> {
        self.retrying(|mut client: Object| async move {
            let tx = client.transaction().await?;
            // The organization-wide sums lose what this account added to them.
            tx.execute(
                "UPDATE counters AS total SET value = total.value - own.value
                 FROM counters AS own
                 WHERE own.org = $1 AND own.account = $2
                   AND total.org = $1 AND total.account = $3 AND total.tier = own.tier
                   AND total.bucket = own.bucket AND total.series = own.series AND total.dim = own.dim",
                &[&org, &account, &crate::store::ALL_ACCOUNTS],
            )
            .await?;
            tx.execute(
                "DELETE FROM counters WHERE org = $1 AND account = $2",
                &[&org, &account],
            )
            .await?;
            tx.execute(
                "DELETE FROM entities WHERE org = $1 AND account = $2",
                &[&org, &account],
            )
            .await?;
            tx.execute(
                "DELETE FROM phone_numbers WHERE org = $1 AND account_id = $2",
                &[&org, &account],
            )
            .await?;
            let n = tx
                .execute(
                    "DELETE FROM accounts WHERE org = $1 AND account_id = $2",
                    &[&org, &account],
                )
                .await?;
            tx.commit().await?;
            Ok(n > 0)
        })
        .await
    }

    pub(super) async fn pg_keep_unrouted(
        &self,
        p: &UnroutedPayload,
        max_payloads: usize,
        max_bytes: usize,
    ) -> StoreResult<i64> {
        let max_payloads = i64::try_from(max_payloads).unwrap_or(i64::MAX);
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        let bytes = i64::try_from(p.body.len()).unwrap_or(i64::MAX);
        let mut phones = p.phone_number_ids.clone();
        phones.sort();
        phones.dedup();
        let phones = &phones;
        self.retrying(|mut client: Object| async move {
            let tx = client.transaction().await?;
            // One keeper at a time, so the bounds hold across instances.
            tx.execute(
                &format!("SELECT pg_advisory_xact_lock({LOCK_KEY_SQL})"),
                &[&"unrouted"],
            )
            .await?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO unrouted (received_at, signature, body, bytes) VALUES ($1, $2, $3, $4)
                     RETURNING id",
                    &[&p.received_at, &p.signature, &p.body, &bytes],
                )
                .await?
                .try_get(0)?;
            tx.execute(
                "INSERT INTO unrouted_phones (phone_number_id, payload)
                 SELECT ph, $1 FROM UNNEST($2::text[]) AS u(ph) ON CONFLICT DO NOTHING",
                &[&id, phones],
            )
            .await?;
            // Drop the oldest until the bounds hold again: keep the newest payloads whose
            // running count and size stay within them.
            let dropped = tx
                .query(
                    "DELETE FROM unrouted WHERE id IN (
                        SELECT id FROM (
                            SELECT id,
                                   ROW_NUMBER() OVER (ORDER BY id DESC) AS n,
                                   (SUM(bytes) OVER (ORDER BY id DESC))::bigint AS total
                            FROM unrouted) t
                        WHERE n > $1 OR total > $2)
                     RETURNING id",
                    &[&max_payloads, &max_bytes],
                )
                .await?;
            for row in &dropped {
                let payload: i64 = row.try_get(0)?;
                tracing::warn!(payload, "unrouted payload space is full; dropped the oldest payload");
            }
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    pub(super) async fn pg_unrouted(
        &self,
        phone: Option<&str>,
    ) -> StoreResult<Vec<UnroutedPayload>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT u.id, u.received_at, u.signature, u.body,
                        ARRAY(SELECT p.phone_number_id FROM unrouted_phones p
                              WHERE p.payload = u.id ORDER BY p.phone_number_id)
                 FROM unrouted u
                 WHERE $1::text IS NULL
                    OR u.id IN (SELECT payload FROM unrouted_phones WHERE phone_number_id = $1)
                 ORDER BY u.id",
                &[&phone],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(UnroutedPayload {
                    id: r.try_get(0).map_err(backend)?,
                    received_at: r.try_get(1).map_err(backend)?,
                    signature: r.try_get(2).map_err(backend)?,
                    body: r.try_get(3).map_err(backend)?,
                    phone_number_ids: r.try_get(4).map_err(backend)?,
                })
            })
            .collect()
    }

    pub(super) async fn pg_release_unrouted(&self, id: i64, phone: &str) -> StoreResult<()> {
        self.retrying(|mut client: Object| async move {
            let tx = client.transaction().await?;
            tx.execute(
                "DELETE FROM unrouted_phones WHERE payload = $1 AND phone_number_id = $2",
                &[&id, &phone],
            )
            .await?;
            tx.execute(
                "DELETE FROM unrouted WHERE id = $1
                   AND NOT EXISTS (SELECT 1 FROM unrouted_phones WHERE payload = $1)",
                &[&id],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn pg_delete_unrouted(&self, id: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM unrouted WHERE id = $1", &[&id])
            .await
            .map_err(backend)?
            > 0)
    }
}
