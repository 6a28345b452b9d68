//! The same store-level checks on every backend: SQLite and PostgreSQL (a fresh schema
//! each; an unreachable PostgreSQL fails these tests).

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::backend::{Backend, TestDatabase};
use whatstat::store::credentials::{CredentialKind, CredentialRecord};
use whatstat::store::{
    AccountRecord, Changes, CounterDelta, CounterQuery, DeliveryState, EntityKey, EntityKind,
    EntityWrite, OrgRecord, OutboxDelivery, Pruned, Series, Store, StoreError, Tier,
    UnroutedPayload, WriteJob,
};

async fn open(backend: Backend) -> (TestDatabase, Arc<dyn Store>) {
    let db = TestDatabase::fresh_on(backend).await;
    let store = whatstat::store::open(&db.url).await.expect("open store");
    for org in ["o1", "o2"] {
        store
            .create_org(
                &OrgRecord {
                    id: org.into(),
                    name: org.into(),
                    timezone: "UTC".into(),
                    created_at: 1,
                },
                &CredentialRecord {
                    id: format!("key-{org}"),
                    org: org.into(),
                    kind: CredentialKind::Key,
                    name: "first".into(),
                    scope: "admin".into(),
                    accounts: None,
                    created_at: 1,
                    expires_at: None,
                    last_used_at: None,
                },
                &format!("hash-{org}"),
            )
            .await
            .expect("create org");
    }
    (db, store)
}

fn key(id: &str) -> EntityKey {
    EntityKey {
        kind: EntityKind::Message,
        account: "acc".into(),
        id: id.into(),
    }
}

fn delta(tier: Tier, bucket: i64, delta: i64) -> CounterDelta {
    CounterDelta {
        account: "acc".into(),
        tier,
        bucket,
        series: Series::Sent,
        dim: String::new(),
        delta,
    }
}

/// A job that adds one to the number stored in each key's state and to one counter.
fn increment(org: &str, ids: &[&str], keep_until: Option<i64>) -> WriteJob {
    increment_seen(org, ids, keep_until).0
}

/// As `increment`, with the sum of the numbers its last run found.
fn increment_seen(
    org: &str,
    ids: &[&str],
    keep_until: Option<i64>,
) -> (WriteJob, Arc<Mutex<Option<i64>>>) {
    let keys: Vec<EntityKey> = ids.iter().map(|i| key(i)).collect();
    let wanted = keys.clone();
    let report: Arc<Mutex<Option<i64>>> = Arc::default();
    let last = report.clone();
    let job = WriteJob {
        org: org.into(),
        events: 0,
        keys,
        transition: Box::new(move |stored: &HashMap<EntityKey, Vec<u8>>, _: &Pruned| {
            let mut entities = Vec::new();
            let mut seen = 0i64;
            for k in &wanted {
                let n = stored
                    .get(k)
                    .map(|s| String::from_utf8_lossy(s).parse::<i64>().unwrap_or(-1000))
                    .unwrap_or(0);
                seen += n;
                entities.push(EntityWrite {
                    key: k.clone(),
                    state: (n + 1).to_string().into_bytes(),
                    keep_until,
                });
            }
            *last.lock().expect("report") = Some(seen);
            Ok(Changes {
                accounts: vec!["acc".into()],
                entities,
                // Two deltas of one counter in one job: both count.
                counters: vec![
                    delta(Tier::Hour, 100, 1),
                    delta(Tier::Hour, 100, 1),
                    delta(Tier::Day, 7, 1),
                ],
            })
        }),
        progress: Some((format!("{org}-import"), 42)),
        outbox: Vec::new(),
    };
    (job, report)
}

/// The keys a write of `keys` finds with a state, and those it is told were pruned, as
/// sorted `account/id`s.
async fn loaded(
    store: &Arc<dyn Store>,
    org: &str,
    keys: &[EntityKey],
) -> (Vec<String>, Vec<String>) {
    let seen: Arc<Mutex<(Vec<String>, Vec<String>)>> = Arc::default();
    let into = seen.clone();
    let job = WriteJob {
        org: org.into(),
        events: 0,
        keys: keys.to_vec(),
        transition: Box::new(
            move |stored: &HashMap<EntityKey, Vec<u8>>, pruned: &Pruned| {
                let name = |k: &EntityKey| format!("{}/{}", k.account, k.id);
                let mut found: Vec<String> = stored.keys().map(name).collect();
                let mut gone: Vec<String> = pruned.iter().map(name).collect();
                found.sort();
                gone.sort();
                *into.lock().expect("seen") = (found, gone);
                Ok(Changes::default())
            },
        ),
        progress: None,
        outbox: Vec::new(),
    };
    store.apply(job).await.expect("apply");
    seen.lock().expect("seen").clone()
}

async fn counter(store: &Arc<dyn Store>, org: &str, tier: Tier, bucket: i64) -> i64 {
    store
        .counters(CounterQuery {
            org: org.into(),
            account: "acc".into(),
            tier,
            from: bucket,
            to: bucket,
            series: vec![Series::Sent],
        })
        .await
        .expect("counters")
        .iter()
        .map(|r| r.value)
        .sum()
}

async fn write_jobs_are_atomic_and_race_free(backend: Backend) {
    let (_db, store) = open(backend).await;
    let (job, seen) = increment_seen("o1", &["a", "b"], Some(1_000));
    store.apply(job).await.expect("apply");
    assert_eq!(*seen.lock().expect("report"), Some(0));
    assert!(store.account_exists("o1", "acc").await.expect("exists"));
    assert!(!store.account_exists("o2", "acc").await.expect("exists"));
    assert_eq!(
        store.progress("o1-import").await.expect("progress"),
        Some(42)
    );
    assert_eq!(counter(&store, "o1", Tier::Hour, 100).await, 2);
    assert_eq!(counter(&store, "o2", Tier::Hour, 100).await, 0);

    // A failing transition stores nothing.
    let failing = WriteJob {
        org: "o1".into(),
        events: 0,
        keys: vec![key("a"), key("new")],
        transition: Box::new(|_: &HashMap<EntityKey, Vec<u8>>, _: &Pruned| {
            Err("refused".to_string())
        }),
        progress: Some(("o1-import".into(), 99)),
        outbox: Vec::new(),
    };
    assert!(matches!(
        store.apply(failing).await,
        Err(StoreError::Transition(_))
    ));
    assert_eq!(
        store.progress("o1-import").await.expect("progress"),
        Some(42)
    );
    assert_eq!(store.tier_rows(Some("o1")).await.expect("rows").states, 2);

    // Many concurrent read-modify-writes of the same states and counters, with failing
    // jobs on the same keys among them: those fail alone, whichever jobs share their commit.
    let jobs: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            let ids: &[&str] = if i % 2 == 0 {
                &["a", "b", "c"]
            } else {
                &["c", "b"]
            };
            let job = if i % 4 == 3 {
                WriteJob {
                    org: "o1".into(),
                    events: 0,
                    keys: ids.iter().map(|i| key(i)).collect(),
                    transition: Box::new(|_: &HashMap<EntityKey, Vec<u8>>, _: &Pruned| {
                        Err("refused".to_string())
                    }),
                    progress: Some(("o1-import".into(), 99)),
                    outbox: Vec::new(),
                }
            } else {
                increment("o1", ids, Some(1_000))
            };
            tokio::spawn(async move { (i % 4 == 3, store.apply(job).await.map(|_| ())) })
        })
        .collect();
    for j in jobs {
        let (fails, result) = j.await.expect("task");
        assert_eq!(result.is_err(), fails, "{result:?}");
    }
    assert_eq!(
        store.progress("o1-import").await.expect("progress"),
        Some(42)
    );
    let found: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let into = found.clone();
    let check = WriteJob {
        org: "o1".into(),
        events: 0,
        keys: vec![key("a"), key("b"), key("c")],
        transition: Box::new(move |stored: &HashMap<EntityKey, Vec<u8>>, _: &Pruned| {
            let mut got: Vec<(String, String)> = stored
                .iter()
                .map(|(k, v)| (k.id.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            got.sort();
            *into.lock().expect("found") = got;
            Ok(Changes::default())
        }),
        progress: None,
        outbox: Vec::new(),
    };
    store.apply(check).await.expect("apply");
    assert_eq!(
        *found.lock().expect("found"),
        vec![
            ("a".to_string(), "17".to_string()),
            ("b".to_string(), "25".to_string()),
            ("c".to_string(), "24".to_string()),
        ]
    );
    assert_eq!(counter(&store, "o1", Tier::Hour, 100).await, 2 * 25);
    assert_eq!(counter(&store, "o1", Tier::Day, 7).await, 25);

    // Compaction: expiry by tier and bucket, state pruning by keep_until.
    store
        .apply(increment("o2", &["z"], None))
        .await
        .expect("apply");
    let rows = store.tier_rows(None).await.expect("rows");
    assert_eq!((rows.hour, rows.day, rows.states), (2, 2, 4), "{rows:?}");
    assert_eq!(
        store
            .expire_counters("o1", Tier::Hour, 101, 10)
            .await
            .expect("expire"),
        1
    );
    assert_eq!(
        store
            .expire_counters("o1", Tier::Hour, 101, 10)
            .await
            .expect("expire"),
        0
    );
    assert_eq!(counter(&store, "o2", Tier::Hour, 100).await, 2);
    // An expired state of another organization, and one of another account.
    store
        .apply(increment("o2", &["y"], Some(1_000)))
        .await
        .expect("apply");
    assert_eq!(
        store
            .prune_states("o1", 999, 10, Some(5_000))
            .await
            .expect("prune"),
        0
    );
    // A hold keeps an organization's states while it lasts, and only that organization's.
    store
        .hold_states("o1", "import", 1_001)
        .await
        .expect("hold");
    assert_eq!(
        store
            .prune_states("o1", 1_001, 10, Some(5_000))
            .await
            .expect("prune"),
        0
    );
    assert_eq!(
        store
            .prune_states("o2", 1_001, 10, Some(5_000))
            .await
            .expect("prune"),
        1
    );
    // Once it has ended, pruning goes on, in chunks.
    assert_eq!(
        store
            .prune_states("o1", 1_002, 2, Some(5_000))
            .await
            .expect("prune"),
        2
    );
    assert_eq!(
        store
            .prune_states("o1", 1_002, 2, Some(5_000))
            .await
            .expect("prune"),
        1
    );
    let rows = store.tier_rows(Some("o1")).await.expect("rows");
    assert_eq!(
        (rows.hour, rows.day, rows.states, rows.pruned_ids),
        (0, 1, 0, 3),
        "{rows:?}"
    );
    assert_eq!(store.tier_rows(Some("o2")).await.expect("rows").states, 1);

    // A write learns which of its keys were pruned: only those of this organization and
    // account; a key never seen is neither found nor pruned.
    let other_account = EntityKey {
        account: "acc2".into(),
        ..key("a")
    };
    let wanted = vec![
        key("a"),
        key("b"),
        key("c"),
        key("never"),
        other_account.clone(),
    ];
    assert_eq!(
        loaded(&store, "o1", &wanted).await,
        (vec![], vec!["acc/a".into(), "acc/b".into(), "acc/c".into()])
    );
    assert_eq!(
        loaded(&store, "o2", &[key("y"), key("a")]).await,
        (vec![], vec!["acc/y".into()])
    );
    // A state written again wins over its trace.
    store
        .apply(increment("o1", &["c"], None))
        .await
        .expect("apply");
    assert_eq!(
        loaded(&store, "o1", &[key("b"), key("c")]).await,
        (vec!["acc/c".into()], vec!["acc/b".into()])
    );
    // A released hold holds nothing.
    store
        .apply(increment("o1", &["d"], Some(2_000)))
        .await
        .expect("apply");
    store
        .hold_states("o1", "import", 9_999)
        .await
        .expect("hold");
    assert_eq!(
        store
            .prune_states("o1", 9_000, 100, Some(5_000))
            .await
            .expect("prune"),
        0
    );
    store.release_states("o1", "import").await.expect("release");
    assert_eq!(
        store
            .prune_states("o1", 9_000, 100, Some(5_000))
            .await
            .expect("prune"),
        1
    );
    assert_eq!(
        loaded(
            &store,
            "o1",
            &[key("d"), key("never"), other_account.clone()]
        )
        .await,
        (vec![], vec!["acc/d".into()])
    );
    assert_eq!(
        store.tier_rows(Some("o1")).await.expect("rows").pruned_ids,
        4
    );
    // Rows that never held a state leave no trace: PostgreSQL keeps an empty row for each
    // key a job locked (`never`, acc2's `a`, ...), expiring an hour later.
    let far = jiff::Timestamp::now().as_second() + 7_200;
    let placeholders = store
        .prune_states("o1", far, 100, Some(5_000))
        .await
        .expect("prune");
    assert_eq!(
        placeholders > 0,
        backend == Backend::Postgres,
        "{placeholders}"
    );
    assert_eq!(
        store.tier_rows(Some("o1")).await.expect("rows").pruned_ids,
        4
    );
    assert_eq!(
        loaded(&store, "o1", &[key("never"), other_account]).await,
        (vec![], vec![])
    );
    // The trace is kept until its own end, then forgotten, in chunks.
    assert_eq!(
        store.expire_pruned("o1", 5_000, 10).await.expect("expire"),
        0
    );
    assert_eq!(
        store.expire_pruned("o2", 5_001, 10).await.expect("expire"),
        1
    );
    assert_eq!(
        store.expire_pruned("o1", 5_001, 3).await.expect("expire"),
        3
    );
    assert_eq!(
        store.expire_pruned("o1", 5_001, 3).await.expect("expire"),
        1
    );
    assert_eq!(
        loaded(&store, "o1", &[key("a"), key("d")]).await,
        (vec![], vec![])
    );
    // Traces kept for good are not expired; deleting the account deletes them.
    store
        .apply(increment("o1", &["e"], Some(3_000)))
        .await
        .expect("apply");
    assert_eq!(
        store
            .prune_states("o1", 3_001, 10, None)
            .await
            .expect("prune"),
        1
    );
    assert_eq!(
        store
            .expire_pruned("o1", i64::MAX, 10)
            .await
            .expect("expire"),
        0
    );
    assert_eq!(
        store.tier_rows(Some("o1")).await.expect("rows").pruned_ids,
        1
    );
    assert!(store.delete_account("o1", "acc").await.expect("delete"));
    assert_eq!(
        store.tier_rows(Some("o1")).await.expect("rows").pruned_ids,
        0
    );
    assert_eq!(loaded(&store, "o1", &[key("e")]).await, (vec![], vec![]));

    // One compactor at a time (on PostgreSQL, across instances).
    let first = store.compaction_lock().await.expect("lock");
    assert!(first.is_some());
    if backend == Backend::Postgres {
        let other = whatstat::store::open(&_db.url)
            .await
            .expect("second instance");
        assert!(other.compaction_lock().await.expect("lock").is_none());
        // The winner stays the compactor while it runs; when it stops, its session
        // ends and another instance takes over (once the server has noticed).
        assert!(store.compaction_lock().await.expect("lock").is_some());
        drop(store);
        let mut released = None;
        for _ in 0..100 {
            released = other.compaction_lock().await.expect("lock");
            if released.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(
            released.is_some(),
            "the lock is free once its holder is dropped"
        );
    }
}

async fn accounts_and_unrouted_payloads(backend: Backend) {
    let (_db, store) = open(backend).await;
    let reg = |org: &str, acc: &str, phone: Option<&str>| AccountRecord {
        org: org.into(),
        account_id: acc.into(),
        name: Some(format!("{acc} name")),
        phone_number_id: phone.map(str::to_string),
        verify_token_hash: Some(format!("vt-{acc}")),
        app_secret: Some(vec![1, 2, 3]),
        registered_at: Some(10),
        updated_at: Some(10),
        forward_url: Some(format!("https://{acc}.example/hook")),
    };
    store
        .register_account(&reg("o1", "a1", Some("p1")))
        .await
        .expect("register");
    assert!(matches!(
        store.register_account(&reg("o1", "a1", Some("p9"))).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.register_account(&reg("o2", "b1", Some("p1"))).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .register_account(&reg("o2", "b1", Some("p2")))
        .await
        .expect("register");
    let found = store.account_by_phone("p1").await.expect("by phone");
    assert_eq!(found, Some(reg("o1", "a1", Some("p1"))));
    assert!(store.verify_token_known("vt-b1").await.expect("token"));
    assert!(!store.verify_token_known("vt-zz").await.expect("token"));

    // Moving a number frees the old one.
    let mut moved = reg("o1", "a1", Some("p3"));
    moved.updated_at = Some(20);
    assert!(store.update_account(&moved).await.expect("update"));
    assert_eq!(store.account_by_phone("p1").await.expect("by phone"), None);
    assert!(matches!(
        store.update_account(&reg("o1", "a1", Some("p2"))).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        !store
            .update_account(&reg("o1", "nobody", None))
            .await
            .expect("update")
    );
    store
        .apply(increment("o1", &["x"], None))
        .await
        .expect("apply");
    let accounts: Vec<String> = store
        .accounts("o1")
        .await
        .expect("accounts")
        .into_iter()
        .map(|a| a.account_id)
        .collect();
    assert_eq!(accounts, vec!["a1".to_string(), "acc".to_string()]);
    assert!(store.delete_account("o1", "acc").await.expect("delete"));
    assert!(!store.delete_account("o1", "acc").await.expect("delete"));
    assert_eq!(counter(&store, "o1", Tier::Hour, 100).await, 0);
    assert_eq!(store.tier_rows(Some("o1")).await.expect("rows").states, 0);

    // Unrouted payloads: kept in order, bounded, released per number.
    let payload = |phones: &[&str], body: &str| UnroutedPayload {
        id: 0,
        received_at: 5,
        phone_number_ids: phones.iter().map(|p| p.to_string()).collect(),
        signature: Some("sha256=00".into()),
        body: body.as_bytes().to_vec(),
    };
    let first = store
        .keep_unrouted(&payload(&["q1", "q2"], "one"), 3, 100)
        .await
        .expect("keep");
    let second = store
        .keep_unrouted(&payload(&["q2"], "two"), 3, 100)
        .await
        .expect("keep");
    assert!(second > first);
    let kept = store.unrouted(Some("q2")).await.expect("unrouted");
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].phone_number_ids, vec!["q1", "q2"]);
    assert_eq!(kept[1].body, b"two");
    store.release_unrouted(first, "q1").await.expect("release");
    assert_eq!(store.unrouted(Some("q1")).await.expect("unrouted").len(), 0);
    store.release_unrouted(first, "q2").await.expect("release");
    assert_eq!(store.unrouted(None).await.expect("unrouted").len(), 1);
    for i in 0..4 {
        store
            .keep_unrouted(&payload(&["q3"], &format!("body{i}")), 3, 100)
            .await
            .expect("keep");
    }
    let bodies: Vec<Vec<u8>> = store
        .unrouted(None)
        .await
        .expect("unrouted")
        .into_iter()
        .map(|p| p.body)
        .collect();
    assert_eq!(
        bodies,
        vec![b"body1".to_vec(), b"body2".to_vec(), b"body3".to_vec()]
    );
    store
        .keep_unrouted(&payload(&["q4"], "a-much-longer-body"), 3, 20)
        .await
        .expect("keep");
    let bodies: Vec<Vec<u8>> = store
        .unrouted(None)
        .await
        .expect("unrouted")
        .into_iter()
        .map(|p| p.body)
        .collect();
    assert_eq!(bodies, vec![b"a-much-longer-body".to_vec()]);
    let id = store.unrouted(None).await.expect("unrouted")[0].id;
    assert!(store.delete_unrouted(id).await.expect("delete"));
    assert!(!store.delete_unrouted(id).await.expect("delete"));
}

/// Expiry in chunks removes exactly the old rows of one tier of one organization, over
/// every account and series, and never more than a chunk at a time.
async fn expiry_walks_every_account_and_series(backend: Backend) {
    let (_db, store) = open(backend).await;
    let mut counters = Vec::new();
    for (org_delta, account) in [(1, "acc"), (1, "other"), (1, "")] {
        for series in [Series::Sent, Series::ByType, Series::Keyword] {
            for bucket in [10, 20, 30] {
                for tier in [Tier::Hour, Tier::Day] {
                    counters.push(CounterDelta {
                        account: account.into(),
                        tier,
                        bucket,
                        series,
                        dim: if series == Series::Sent {
                            String::new()
                        } else {
                            "x".into()
                        },
                        delta: org_delta,
                    });
                }
            }
        }
    }
    for org in ["o1", "o2"] {
        let counters = counters.clone();
        let job = WriteJob {
            org: org.into(),
            events: 0,
            keys: Vec::new(),
            transition: Box::new(move |_: &HashMap<EntityKey, Vec<u8>>, _: &Pruned| {
                Ok(Changes {
                    accounts: vec!["acc".into(), "other".into()],
                    entities: Vec::new(),
                    counters: counters.clone(),
                })
            }),
            progress: None,
            outbox: Vec::new(),
        };
        store.apply(job).await.expect("apply");
    }
    let before = store.tier_rows(Some("o1")).await.expect("rows");
    assert_eq!((before.hour, before.day), (27, 27));
    // Buckets 10 and 20 of 3 accounts and 3 series: 18 rows, in chunks of 5.
    let mut chunks = Vec::new();
    loop {
        let n = store
            .expire_counters("o1", Tier::Hour, 30, 5)
            .await
            .expect("expire");
        chunks.push(n);
        if n < 5 {
            break;
        }
    }
    assert_eq!(chunks, vec![5, 5, 5, 3]);
    let after = store.tier_rows(Some("o1")).await.expect("rows");
    assert_eq!((after.hour, after.day), (9, 27));
    let other = store.tier_rows(Some("o2")).await.expect("rows");
    assert_eq!((other.hour, other.day), (27, 27));
    assert_eq!(counter(&store, "o1", Tier::Hour, 30).await, 1);
    assert_eq!(counter(&store, "o1", Tier::Hour, 20).await, 0);
    assert_eq!(counter(&store, "o2", Tier::Hour, 20).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_expiry() {
    expiry_walks_every_account_and_series(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_expiry() {
    expiry_walks_every_account_and_series(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_jobs() {
    write_jobs_are_atomic_and_race_free(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_write_jobs() {
    write_jobs_are_atomic_and_race_free(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_accounts() {
    accounts_and_unrouted_payloads(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_accounts() {
    accounts_and_unrouted_payloads(Backend::Postgres).await;
}

/// Credentials: created with an organization or alone, found by digest with their
/// organization, listed per kind, deleted only within their organization.
async fn credentials(backend: Backend) {
    let (_db, store) = open(backend).await;
    let (org, first) = store
        .credential_by_hash("hash-o1")
        .await
        .expect("lookup")
        .expect("the first key is found");
    assert_eq!((org.id.as_str(), first.id.as_str()), ("o1", "key-o1"));
    assert_eq!(
        (first.scope.as_str(), first.accounts.clone()),
        ("admin", None)
    );
    let link = CredentialRecord {
        id: "share-1".into(),
        org: "o1".into(),
        kind: CredentialKind::ShareLink,
        name: "for the manager".into(),
        scope: "read".into(),
        accounts: Some(vec!["a".into(), "b".into()]),
        created_at: 5,
        expires_at: Some(99),
        last_used_at: None,
    };
    store
        .create_credential(&link, "hash-share")
        .await
        .expect("create");
    let (_, found) = store
        .credential_by_hash("hash-share")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found, link);
    let keys = store
        .credentials("o1", CredentialKind::Key)
        .await
        .expect("list");
    assert_eq!(
        keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["key-o1"]
    );
    let links = store
        .credentials("o1", CredentialKind::ShareLink)
        .await
        .expect("list");
    assert_eq!(links, vec![link.clone()]);
    store.touch_credential("share-1", 42).await.expect("touch");
    let (_, touched) = store
        .credential_by_hash("hash-share")
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(touched.last_used_at, Some(42));
    // Another organization, or the wrong kind, cannot delete it.
    assert!(
        !store
            .delete_credential("o2", CredentialKind::ShareLink, "share-1")
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_credential("o1", CredentialKind::Key, "share-1")
            .await
            .expect("delete")
    );
    assert!(
        store
            .delete_credential("o1", CredentialKind::ShareLink, "share-1")
            .await
            .expect("delete")
    );
    assert!(
        store
            .credential_by_hash("hash-share")
            .await
            .expect("lookup")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_credentials() {
    credentials(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_credentials() {
    credentials(Backend::Postgres).await;
}

fn delivery(id: &str, org: &str, at: i64, bytes: usize) -> OutboxDelivery {
    OutboxDelivery {
        id: id.into(),
        org: org.into(),
        account: "acc".into(),
        forward_url: "https://upstream.example/hook".into(),
        body: vec![b'x'; bytes],
        signature: Some("sha256=00".into()),
        content_type: Some("application/json".into()),
        created_at: at,
        next_attempt_at: at,
        expires_at: at + 1_000_000,
        attempts: 0,
        last_error: None,
        state: DeliveryState::Pending,
    }
}

/// Deliveries enter the outbox with their job's commit (never without it), are claimed
/// once per lease, and move through retries, delivery, the failed list and the bound.
async fn outbox(backend: Backend) {
    let (_db, store) = open(backend).await;
    let mut job = increment("o1", &["a"], None);
    job.outbox = vec![delivery("d1", "o1", 1_000, 10)];
    store.apply(job).await.expect("apply");
    let failing = WriteJob {
        org: "o1".into(),
        events: 0,
        keys: vec![key("b")],
        transition: Box::new(|_: &HashMap<EntityKey, Vec<u8>>, _: &Pruned| {
            Err("refused".to_string())
        }),
        progress: None,
        outbox: vec![delivery("d2", "o1", 1_000, 10)],
    };
    assert!(store.apply(failing).await.is_err());

    let claimed = store.claim_due(2_000, 5_000, 10).await.expect("claim");
    assert_eq!(claimed, vec![delivery("d1", "o1", 1_000, 10)]);
    // Held by its lease: no one else takes it meanwhile.
    assert!(
        store
            .claim_due(3_000, 9_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    store
        .reschedule(&claimed[0], 4_000, "the upstream answered 500")
        .await
        .expect("reschedule");
    assert!(
        store
            .claim_due(3_500, 9_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let again = store.claim_due(4_000, 9_000, 10).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(
        again[0].last_error.as_deref(),
        Some("the upstream answered 500")
    );
    let counts = store.forwarding_counts("o1", "acc").await.expect("counts");
    assert_eq!((counts.pending, counts.delivered, counts.failed), (1, 0, 0));
    assert_eq!(counts.oldest_pending_at, Some(1_000));
    store
        .mark_delivered(&again[0], 4_500)
        .await
        .expect("delivered");
    let counts = store.forwarding_counts("o1", "acc").await.expect("counts");
    assert_eq!((counts.pending, counts.delivered, counts.failed), (0, 1, 0));
    assert_eq!(counts.last_success_at, Some(4_500));
    assert_eq!(
        counts.last_error.as_deref(),
        Some("the upstream answered 500")
    );

    // Failed, listed, retried, deleted.
    let mut job = increment("o1", &["c"], None);
    job.outbox = vec![
        delivery("d3", "o1", 5_000, 10),
        delivery("d4", "o1", 5_001, 10),
    ];
    store.apply(job).await.expect("apply");
    for d in store.claim_due(6_000, 7_000, 10).await.expect("claim") {
        store.mark_failed(&d, "too old").await.expect("fail");
    }
    let failed = store.failed_deliveries("o1", "acc").await.expect("failed");
    assert_eq!(
        failed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d3", "d4"]
    );
    assert!(failed.iter().all(|d| d.state == DeliveryState::Failed));
    assert!(
        store
            .failed_deliveries("o2", "acc")
            .await
            .expect("o2")
            .is_empty()
    );
    assert_eq!(
        store
            .retry_failed("o1", "acc", Some("d3"), 8_000, 99_000)
            .await
            .expect("retry"),
        1
    );
    assert_eq!(
        store
            .retry_failed("o2", "acc", Some("d4"), 8_000, 99_000)
            .await
            .expect("retry elsewhere"),
        0
    );
    let due = store.claim_due(8_000, 9_000, 10).await.expect("claim");
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].id.as_str(), due[0].expires_at, due[0].attempts),
        ("d3", 99_000, 0)
    );
    assert!(
        store
            .delete_failed("o1", "acc", "d4")
            .await
            .expect("delete")
    );
    assert!(!store.delete_failed("o1", "acc", "d4").await.expect("again"));

    // The bound: per organization, the oldest pending move to the failed list.
    let mut job = increment("o2", &["e"], None);
    job.outbox = (0..4)
        .map(|i| delivery(&format!("e{i}"), "o2", 10_000 + i, 100))
        .collect();
    store.apply(job).await.expect("apply");
    let moved = store.bound_pending(250, "full").await.expect("bound");
    assert_eq!(moved, vec![("o2".to_string(), "acc".to_string(), 2)]);
    let failed = store.failed_deliveries("o2", "acc").await.expect("failed");
    assert_eq!(
        failed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["e0", "e1"]
    );
    let counts = store.forwarding_counts("o2", "acc").await.expect("counts");
    assert_eq!(
        (counts.pending, counts.failed, counts.dropped_over_bound),
        (2, 2, 2)
    );
    // o1's one pending delivery (d3, held) was not touched.
    assert!(
        store
            .bound_pending(250, "full")
            .await
            .expect("bound")
            .is_empty()
    );
    assert_eq!(
        store
            .forwarding_counts("o1", "acc")
            .await
            .expect("o1")
            .pending,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_outbox() {
    outbox(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outbox() {
    outbox(Backend::Postgres).await;
}
