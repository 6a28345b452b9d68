//! Recent entity states, kept in an append-only log and in the writer's memory until they
//! are merged into the `entities` table in one large, key-ordered transaction.
//!
//! Why: entity ids (Meta's message ids) are random, so writing each commit's states
//! straight into the keyed table dirties one B-tree page per state, and every dirty page
//! is written to the WAL and copied again by the checkpoint. Appending to a rowid table
//! fills pages in order instead; a merge of many thousands of states then dirties each
//! table page once. The log is written in the same transaction as the counters it goes
//! with, so a commit is as durable and as atomic as before; the memory copy is only a
//! faster way to read what the log holds, and is rebuilt from the log when the store opens.
//!
//! Only the writer thread reads or changes entity states on SQLite, so the memory copy is
//! coherent. Maintenance that reads or deletes states (pruning, removing an account)
//! merges first and so sees every state in the table.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::stored_keys::StoredKeys;
use crate::store::{EntityKey, EntityKind, EntityWrite, StoreError, StoreResult};

/// States logged beyond this are merged into the table after the commit that logged them:
/// enough that a merge rewrites each table page for many states, few enough that the
/// memory copy stays small (a state and its key take about 200 bytes here).
pub(super) const MERGE_AFTER_ENTRIES: usize = 100_000;
/// Rows appended beyond this are merged too: states rewritten commit after commit (a
/// contact, a long conversation) add a row each time but one entry.
pub(super) const MERGE_AFTER_ROWS: usize = 400_000;

#[derive(Clone)]
pub(super) struct Logged {
    pub state: Vec<u8>,
    pub keep_until: Option<i64>,
}

/// The latest logged state of each entity not merged yet, per organization.
pub(super) struct RecentStates {
    /// SipHash, randomly keyed, although it takes about 3 % of the writer's time: the ids
    /// are the senders' own, and colliding ones chosen against a fixed hash would slow the
    /// one writer every organization shares.
    by_org: HashMap<String, HashMap<EntityKey, Logged>>,
    entries: usize,
    /// Rows in the log, versions of one entity included.
    rows: usize,
    /// Which keys the table may hold, so that a key it never held is not looked up there.
    stored: StoredKeys,
}

impl RecentStates {
    /// Reads the log left by the last run (states committed, not merged yet).
    pub fn load(conn: &Connection) -> StoreResult<RecentStates> {
        let mut recent = RecentStates {
            by_org: HashMap::new(),
            entries: 0,
            rows: 0,
            stored: StoredKeys::load(conn)?,
        };
        let mut stmt = conn.prepare(
            "SELECT org, kind, account, id, state, keep_until FROM entity_log ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let code: i64 = r.get(1)?;
            let kind = EntityKind::from_code(code).ok_or_else(|| {
                StoreError::Backend(format!("entity log holds an unknown kind {code}"))
            })?;
            let key = EntityKey {
                kind,
                account: r.get(2)?,
                id: r.get(3)?,
            };
            recent.insert(
                r.get::<_, String>(0)?,
                key,
                Logged {
                    state: r.get(4)?,
                    keep_until: r.get(5)?,
                },
            );
        }
        Ok(recent)
    }

    pub fn get(&self, org: &str, key: &EntityKey) -> Option<&Logged> {
        self.by_org.get(org)?.get(key)
    }

    /// `false`: the `entities` table has never held this key, so looking it up there
    /// would find nothing.
    pub fn table_may_hold(&self, org: &str, key: &EntityKey) -> bool {
        self.stored.may_hold(org, key)
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn appended(&self) -> usize {
        self.rows
    }

    fn insert(&mut self, org: String, key: EntityKey, logged: Logged) {
        self.rows += 1;
        if self
            .by_org
            .entry(org)
            .or_default()
            .insert(key, logged)
            .is_none()
        {
            self.entries += 1;
        }
    }

    /// Appends a commit's states to the log, inside the commit's transaction.
    pub fn append<'a>(
        conn: &Connection,
        org: &str,
        writes: impl Iterator<Item = &'a EntityWrite>,
    ) -> StoreResult<()> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO entity_log (org, kind, account, id, state, keep_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for e in writes {
            stmt.execute(params![
                org,
                e.key.kind.code(),
                e.key.account,
                e.key.id,
                e.state,
                e.keep_until
            ])?;
        }
        Ok(())
    }

    /// Takes in what a commit logged, once it is durable.
    pub fn committed(&mut self, logged: Vec<(String, EntityWrite)>) {
        for (org, e) in logged {
            self.insert(
                org,
                e.key,
                Logged {
                    state: e.state,
                    keep_until: e.keep_until,
                },
            );
        }
    }

    /// Moves every logged state into the table and empties the log, in one transaction
    /// of its own; on failure both stay as they were and the merge is tried again later.
    pub fn merge(&mut self, conn: &mut Connection) -> StoreResult<usize> {
        if self.entries == 0 {
            return Ok(0);
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        merge_into_table(&tx, self)?;
        tx.execute("DELETE FROM entity_log", [])?;
        tx.commit()?;
        let merged = self.entries;
        self.note_stored();
        self.forget();
        if self.stored.crowded() {
            // Rarely (each time the table has grown fourfold): one read of its keys. A
            // crowded filter is still exact, so failing to read them costs only lookups.
            match StoredKeys::load(conn) {
                Ok(stored) => self.stored = stored,
                Err(e) => {
                    tracing::warn!(error = %e, "could not rebuild the filter of stored entity keys; keeping the old one")
                }
            }
        }
        Ok(merged)
    }

    /// Like [`merge`](Self::merge), inside a transaction the caller commits (maintenance
    /// that must see every state). The memory copy is emptied only by [`forget`](Self::forget)
    /// once that transaction committed.
    pub fn merge_within(&mut self, conn: &Connection) -> StoreResult<()> {
        if self.entries == 0 {
            return Ok(());
        }
        merge_into_table(conn, self)?;
        conn.execute("DELETE FROM entity_log", [])?;
        // Before the commit: if it fails, the filter only holds keys it need not.
        self.note_stored();
        Ok(())
    }

    /// Adds every logged key to the keys the table may hold (it is about to hold them).
    fn note_stored(&mut self) {
        for (org, states) in &self.by_org {
            for key in states.keys() {
                self.stored.add(org, key);
            }
        }
    }

    pub fn forget(&mut self) {
        self.by_org.clear();
        self.entries = 0;
        self.rows = 0;
    }
}

/// Writes the latest state of every logged entity into `entities`, in the table's key
/// order (scope, kind, id) so that its pages are visited once each, in order.
fn merge_into_table(conn: &Connection, recent: &RecentStates) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO entities (scope, kind, id, state, keep_until) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (scope, kind, id) DO UPDATE SET state = excluded.state, keep_until = excluded.keep_until",
    )?;
    let mut rows: Vec<(i64, i64, &str, &Logged)> = Vec::with_capacity(recent.entries);
    for (org, states) in &recent.by_org {
        let mut scopes: HashMap<&str, i64> = HashMap::new();
        for (key, logged) in states {
            let scope = match scopes.get(key.account.as_str()) {
                Some(&id) => id,
                None => {
                    let id = super::rollups::scope_id(conn, org, &key.account)?;
                    scopes.insert(&key.account, id);
                    id
                }
            };
            rows.push((scope, key.kind.code().into(), &key.id, logged));
        }
    }
    rows.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    for (scope, kind, id, l) in rows {
        stmt.execute(params![scope, kind, id, l.state, l.keep_until])?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A message of account `a`.
    pub(in crate::store::sqlite) fn key(id: &str) -> EntityKey {
        EntityKey {
            kind: EntityKind::Message,
            account: "a".into(),
            id: id.into(),
        }
    }

    fn write(id: &str, state: &[u8]) -> EntityWrite {
        EntityWrite {
            key: key(id),
            state: state.to_vec(),
            keep_until: Some(9),
        }
    }

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().expect("open");
        super::super::migrate(&mut conn).expect("migrate");
        conn
    }

    fn table(conn: &Connection) -> Vec<(String, Vec<u8>)> {
        conn.prepare("SELECT id, state FROM entities ORDER BY id")
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    /// A state logged twice is read back as its latest version, from memory and from the
    /// log after a restart, and a merge leaves exactly that version in the table.
    #[test]
    fn the_latest_logged_state_wins_in_memory_after_a_restart_and_in_the_table() {
        let mut conn = store();
        let mut recent = RecentStates::load(&conn).expect("empty log");
        for round in [[1u8], [2u8]] {
            let writes = [
                write("m1", &round),
                write(&format!("m{}", round[0] + 1), &round),
            ];
            RecentStates::append(&conn, "o", writes.iter()).expect("append");
            recent.committed(writes.into_iter().map(|w| ("o".to_string(), w)).collect());
        }
        assert_eq!(recent.len(), 3);
        assert_eq!(
            recent.get("o", &key("m1")).map(|l| l.state.clone()),
            Some(vec![2])
        );
        assert!(recent.get("p", &key("m1")).is_none());

        let mut reloaded = RecentStates::load(&conn).expect("load");
        assert_eq!(reloaded.len(), 3);
        assert_eq!(
            reloaded.get("o", &key("m1")).map(|l| l.state.clone()),
            Some(vec![2])
        );

        assert!(!reloaded.table_may_hold("o", &key("m1")));
        assert_eq!(reloaded.merge(&mut conn).expect("merge"), 3);
        assert_eq!(reloaded.len(), 0);
        // What the table now holds is a "maybe"; what it never held, still a "no".
        assert!(
            ["m1", "m2", "m3"]
                .iter()
                .all(|m| reloaded.table_may_hold("o", &key(m)))
        );
        assert!(
            RecentStates::load(&conn)
                .expect("reload")
                .table_may_hold("o", &key("m2"))
        );
        assert!(!reloaded.table_may_hold("o", &key("m4")));
        assert_eq!(
            table(&conn),
            vec![
                ("m1".into(), vec![2]),
                ("m2".into(), vec![1]),
                ("m3".into(), vec![2])
            ]
        );
        let left: i64 = conn
            .query_row("SELECT COUNT(*) FROM entity_log", [], |r| r.get(0))
            .expect("count");
        assert_eq!(left, 0);
    }
}
