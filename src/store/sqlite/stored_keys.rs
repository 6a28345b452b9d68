//! Which entity keys the `entities` table may hold: a Bloom filter over every key written
//! into it, kept by the writer thread, so that looking up a key the table never held (the
//! first event of every new message) skips the table's B-tree.
//!
//! A "no" is exact: keys enter the table only through the writer (merging the entity log)
//! or before the store opened (read when it opens), and each is added here as it is
//! written. A "maybe" is checked against the table as before. Removed states (pruning,
//! removing an account) stay in the filter, which only costs a lookup.

use std::hash::{Hash, Hasher};

use rusqlite::Connection;
use rustc_hash::FxHasher;

use crate::store::{EntityKey, EntityKind, StoreResult};

/// Probes per key: with `BITS_PER_KEY` bits a key, about 0.1 % false "maybe"s.
const PROBES: u64 = 7;
/// Bits per key the filter is sized for when it is built.
const BITS_PER_KEY: usize = 16;
/// The filter is built again, four times larger, once it holds this many keys per bit
/// below `BITS_PER_KEY` (about 3 % false "maybe"s at 8 bits a key).
const REBUILD_BELOW_BITS_PER_KEY: usize = 8;
/// The smallest filter: 2 MiB, a million keys at `BITS_PER_KEY`.
const MIN_BITS: usize = 1 << 24;

pub(super) struct StoredKeys {
    words: Vec<u64>,
    /// Bits minus one (a power of two).
    mask: u64,
    keys: usize,
}

impl StoredKeys {
    fn with_capacity(keys: usize) -> StoredKeys {
        let bits = keys
            .saturating_mul(BITS_PER_KEY)
            .max(MIN_BITS)
            .next_power_of_two();
        StoredKeys {
            words: vec![0; bits / 64],
            mask: bits as u64 - 1,
            keys: 0,
        }
    }

    /// Every key the table holds, read once (when the store opens, or to grow).
    pub fn load(conn: &Connection) -> StoreResult<StoredKeys> {
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM entities", [], |r| r.get(0))?;
        // Room for the table to double before the filter crowds (at a fourfold table).
        let mut known = StoredKeys::with_capacity(usize::try_from(count).unwrap_or(0) * 2);
        let mut stmt = conn.prepare(
            "SELECT s.org, e.kind, s.account, e.id FROM entities AS e
             JOIN counter_scopes AS s ON s.id = e.scope",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let code: i64 = r.get(1)?;
            // A kind this build does not know is never asked for.
            let Some(kind) = EntityKind::from_code(code) else {
                continue;
            };
            let (org, account, id): (String, String, String) = (r.get(0)?, r.get(2)?, r.get(3)?);
            known.add_parts(&org, kind, &account, &id);
        }
        Ok(known)
    }

    /// Whether the filter holds too many keys to stay sharp, so that it should be built
    /// again from the table (with [`StoredKeys::load`]).
    pub fn crowded(&self) -> bool {
        self.keys.saturating_mul(REBUILD_BELOW_BITS_PER_KEY) > self.words.len() * 64
    }

    pub fn add(&mut self, org: &str, key: &EntityKey) {
        self.add_parts(org, key.kind, &key.account, &key.id);
    }

    fn add_parts(&mut self, org: &str, kind: EntityKind, account: &str, id: &str) {
        let mut new = false;
        for bit in probes(org, kind, account, id, self.mask) {
            let (word, mask) = ((bit / 64) as usize, 1 << (bit % 64));
            new |= self.words[word] & mask == 0;
            self.words[word] |= mask;
        }
        // Keys are counted once: every merge adds its keys again, states rewritten since
        // the last merge included, and only new ones crowd the filter.
        if new {
            self.keys += 1;
        }
    }

    /// `false`: the table has never held the key.
    pub fn may_hold(&self, org: &str, key: &EntityKey) -> bool {
        probes(org, key.kind, &key.account, &key.id, self.mask)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

/// The key's bit positions: double hashing of one 64-bit hash, finished by splitmix64 so
/// that both halves are well mixed.
fn probes(
    org: &str,
    kind: EntityKind,
    account: &str,
    id: &str,
    mask: u64,
) -> impl Iterator<Item = u64> {
    let mut h = FxHasher::default();
    (org, kind.code(), account, id).hash(&mut h);
    let first = mix(h.finish());
    let step = mix(first ^ 0x9e37_79b9_7f4a_7c15) | 1;
    (0..PROBES).map(move |i| first.wrapping_add(i.wrapping_mul(step)) & mask)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::super::entity_log::tests::key;
    use super::*;

    /// Every key added is a "maybe"; of keys never added, few are.
    #[test]
    fn added_keys_are_always_held_and_others_rarely() {
        let mut known = StoredKeys::with_capacity(200_000);
        for n in 0..200_000 {
            known.add("o", &key(&format!("wamid.{n}")));
        }
        assert!((0..200_000).all(|n| known.may_hold("o", &key(&format!("wamid.{n}")))));
        let false_maybes = (200_000..400_000)
            .filter(|n| known.may_hold("o", &key(&format!("wamid.{n}"))))
            .count();
        assert!(false_maybes < 1_000, "{false_maybes} of 200000");
        // The same id of another organization, account or kind is another key.
        let others = |k: &dyn Fn(u32) -> (String, EntityKey)| {
            (0..10_000)
                .filter(|n| {
                    let (org, key) = k(*n);
                    known.may_hold(&org, &key)
                })
                .count()
        };
        let id = |n: u32| format!("wamid.{n}");
        assert!(others(&|n| ("p".into(), key(&id(n)))) < 100);
        let account = |n: u32| EntityKey {
            account: "b".into(),
            ..key(&id(n))
        };
        assert!(others(&|n| ("o".into(), account(n))) < 100);
        let contact = |n: u32| EntityKey {
            kind: EntityKind::Contact,
            ..key(&id(n))
        };
        assert!(others(&|n| ("o".into(), contact(n))) < 100);
        assert!(!known.crowded());
    }

    /// Adding a key again does not count it again.
    #[test]
    fn keys_added_again_are_counted_once() {
        let mut known = StoredKeys::with_capacity(0);
        for _ in 0..3 {
            for n in 0..1_000 {
                known.add("o", &key(&n.to_string()));
            }
        }
        assert!((990..=1_000).contains(&known.keys), "{}", known.keys);
    }

    #[test]
    fn a_filter_past_its_size_asks_to_be_built_again() {
        let mut known = StoredKeys::with_capacity(0);
        let limit = known.words.len() * 64 / REBUILD_BELOW_BITS_PER_KEY;
        let mut added = 0;
        while !known.crowded() {
            known.add("o", &key(&added.to_string()));
            added += 1;
        }
        // A key per 8 bits, give or take the few that were already "maybe"s.
        assert!(
            added > limit && added < limit + limit / 20,
            "{added} for {limit}"
        );
    }

    /// Loading reads every key the table holds, whatever organization and account.
    #[test]
    fn loading_holds_every_stored_key() {
        let mut conn = Connection::open_in_memory().expect("open");
        super::super::migrate(&mut conn).expect("migrate");
        conn.execute_batch(
            "INSERT INTO counter_scopes (id, org, account) VALUES (1, 'o', 'a'), (2, 'p', 'b');
             INSERT INTO entities (scope, kind, id, state) VALUES (1, 1, 'm1', x'01'), (2, 1, 'm2', x'01');",
        )
        .expect("rows");
        let known = StoredKeys::load(&conn).expect("load");
        assert!(known.may_hold("o", &key("m1")));
        let b = EntityKey {
            account: "b".into(),
            ..key("m2")
        };
        assert!(known.may_hold("p", &b));
        assert_eq!(known.keys, 2);
    }
}
