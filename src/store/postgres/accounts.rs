//! Accounts in PostgreSQL. A `phone_number_id` is claimed through `phone_numbers` (keyed by the number,
//! unique across organizations), inside the same transaction that changes the account.

use async_trait::async_trait;
use deadpool_postgres::{Object, Transaction};
use tokio_postgres::Row;

use super::{Failure, PostgresStore, backend};
use crate::store::{AccountRecord, AccountStore, StoreError, StoreResult};

const ACCOUNT_COLUMNS: &str = "org, account_id, name, phone_number_id, verify_token_hash, app_secret, registered_at, updated_at, forward_url";

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
        forward_url: r.try_get(8).map_err(backend)?,
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

#[async_trait]
impl AccountStore for PostgresStore {
    async fn register_account(&self, a: &AccountRecord) -> StoreResult<()> {
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
                   app_secret = $6, registered_at = $7, updated_at = $8, forward_url = $9
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
                    &a.forward_url,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn update_account(&self, a: &AccountRecord) -> StoreResult<bool> {
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
                   app_secret = $6, updated_at = $7, forward_url = $8
                 WHERE org = $1 AND account_id = $2",
                &[
                    &a.org,
                    &a.account_id,
                    &a.name,
                    &a.phone_number_id,
                    &a.verify_token_hash,
                    &a.app_secret,
                    &a.updated_at,
                    &a.forward_url,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn accounts(&self, org: &str) -> StoreResult<Vec<AccountRecord>> {
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

    async fn account(&self, org: &str, account_id: &str) -> StoreResult<Option<AccountRecord>> {
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

    async fn account_by_phone(&self, phone: &str) -> StoreResult<Option<AccountRecord>> {
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
        self.account(&org, &account).await
    }

    async fn verify_token_known(&self, hash: &str) -> StoreResult<bool> {
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

    async fn delete_account(&self, org: &str, account: &str) -> StoreResult<bool> {
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
                "DELETE FROM pruned WHERE org = $1 AND account = $2",
                &[&org, &account],
            )
            .await?;
            tx.execute(
                "DELETE FROM phone_numbers WHERE org = $1 AND account_id = $2",
                &[&org, &account],
            )
            .await?;
            tx.execute(
                "DELETE FROM outbox WHERE org = $1 AND account = $2",
                &[&org, &account],
            )
            .await?;
            tx.execute(
                "DELETE FROM outbox_stats WHERE org = $1 AND account = $2",
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
}
