//! Kept webhook payloads in PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::Object;

use super::{LOCK_KEY_SQL, PostgresStore, backend};
use crate::store::{StoreResult, UnroutedPayload, UnroutedStore};

#[async_trait]
impl UnroutedStore for PostgresStore {
    async fn keep_unrouted(
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

    async fn unrouted(&self, phone: Option<&str>) -> StoreResult<Vec<UnroutedPayload>> {
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

    async fn release_unrouted(&self, id: i64, phone: &str) -> StoreResult<()> {
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

    async fn delete_unrouted(&self, id: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM unrouted WHERE id = $1", &[&id])
            .await
            .map_err(backend)?
            > 0)
    }

    async fn unrouted_count(&self) -> StoreResult<u64> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one("SELECT COUNT(*) FROM unrouted", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(backend)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
