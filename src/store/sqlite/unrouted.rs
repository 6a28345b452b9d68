//! Kept webhook payloads in SQLite, on a connection of their own (they are rare).

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::SqliteStore;
use super::accounts::write_tx;
use crate::store::{StoreResult, UnroutedPayload, UnroutedStore};

fn payload_phones(conn: &Connection, id: i64) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT phone_number_id FROM unrouted_phones WHERE payload = ?1 ORDER BY phone_number_id",
    )?;
    let rows = stmt
        .query_map(params![id], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}

#[async_trait]
impl UnroutedStore for SqliteStore {
    async fn keep_unrouted(
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

    async fn unrouted(&self, phone: Option<&str>) -> StoreResult<Vec<UnroutedPayload>> {
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

    async fn release_unrouted(&self, id: i64, phone: &str) -> StoreResult<()> {
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

    async fn delete_unrouted(&self, id: i64) -> StoreResult<bool> {
        self.read(move |conn| {
            Ok(conn.execute("DELETE FROM unrouted WHERE id = ?1", params![id])? > 0)
        })
        .await
    }

    async fn unrouted_count(&self) -> StoreResult<u64> {
        self.read(|conn| {
            let n: i64 = conn.query_row("SELECT COUNT(*) FROM unrouted", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}
