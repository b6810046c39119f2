//! One `MetadataStore` conformance suite, run against the embedded store and
//! against a real etcd (started by `common_etcd`): key-value basics and
//! range order (across etcd's page size), transactions, watch order, leases
//! (expiry, keep-alive, revoke) and leader election with `campaign`. Plus the
//! typed `Metadata` layer on both stores, and etcd-only checks that watches
//! survive an etcd restart and a compaction, and that an unreachable etcd
//! fails fast.
//!
//! Needs the `etcd` binary: run `scripts/test.sh` (installs it) first.

mod common_etcd;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common_etcd::Etcd;
use futures::StreamExt;
use kafscale_controlplane::{
    Compare, EmbeddedStore, EtcdStore, MetaError, Metadata, MetadataStore, StoreError, TxnOp,
    WatchEvent, WatchStream,
};

type Store = Arc<dyn MetadataStore>;
type Case = fn(Store, String) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Upper bound for anything the suite waits for (events, lease expiry).
const WAIT: Duration = Duration::from_secs(15);

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(w: &mut WatchStream, what: &str) -> WatchEvent {
    tokio::time::timeout(WAIT, w.next())
        .await
        .unwrap_or_else(|_| panic!("no watch event within {WAIT:?} while waiting for {what}"))
        .unwrap_or_else(|| panic!("watch stream ended while waiting for {what}"))
}

fn expect_put(e: WatchEvent, key: &str, value: &str) -> i64 {
    match e {
        WatchEvent::Put(kv) if kv.key == key && kv.value == value.as_bytes() => kv.mod_revision,
        other => panic!("expected Put {key}={value}, got {other:?}"),
    }
}

fn expect_delete(e: WatchEvent, key: &str) -> i64 {
    match e {
        WatchEvent::Delete {
            key: k,
            mod_revision,
        } if k == key => mod_revision,
        other => panic!("expected Delete {key}, got {other:?}"),
    }
}

async fn keys(s: &Store, prefix: &str) -> Vec<String> {
    s.range(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect()
}

// ---------------------------------------------------------------------------
// Conformance cases. Each gets its own key prefix `p` (ending in '/').

async fn kv_basics(s: Store, p: String) {
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c/x"));
    assert!(s.get(&a).await.unwrap().is_none());
    let rb = s.put(&b, val("2")).await.unwrap();
    let ra = s.put(&a, val("1")).await.unwrap();
    let rc = s.put(&c, val("3")).await.unwrap();
    assert!(rb < ra && ra < rc, "revisions increase: {rb} {ra} {rc}");
    // Neighbours of the prefix stay out of the range.
    let outside = format!("{}0", p.trim_end_matches('/'));
    s.put(&outside, val("x")).await.unwrap();
    s.put(p.trim_end_matches('/'), val("x")).await.unwrap();

    let got = s.get(&a).await.unwrap().expect("a exists");
    assert_eq!((got.value, got.mod_revision), (val("1"), ra));
    let all = s.range(&p).await.unwrap();
    let listed: Vec<(&str, &[u8], i64)> = all
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_ref(), kv.mod_revision))
        .collect();
    assert_eq!(
        listed,
        vec![
            (a.as_str(), b"1".as_slice(), ra),
            (b.as_str(), b"2".as_slice(), rb),
            (c.as_str(), b"3".as_slice(), rc)
        ]
    );

    let ra2 = s.put(&a, val("1b")).await.unwrap();
    assert!(ra2 > rc);
    let got = s.get(&a).await.unwrap().unwrap();
    assert_eq!((got.value, got.mod_revision), (val("1b"), ra2));

    assert!(s.delete(&a).await.unwrap(), "deleting an existing key");
    assert!(!s.delete(&a).await.unwrap(), "deleting a missing key");
    assert!(s.get(&a).await.unwrap().is_none());
    assert_eq!(keys(&s, &p).await, vec![b.clone(), c.clone()]);
}

async fn range_beyond_one_page(s: Store, p: String) {
    // More keys than one etcd page (1000), written in batched transactions
    // (etcd allows 128 ops per transaction by default).
    let n = 2100;
    let mut ops = Vec::new();
    for i in 0..n {
        ops.push(TxnOp::Put(format!("{p}{i:05}"), val(&i.to_string())));
        if ops.len() == 100 {
            assert!(s.txn(vec![], std::mem::take(&mut ops)).await.unwrap());
        }
    }
    assert!(s.txn(vec![], ops).await.unwrap());
    let all = s.range(&p).await.unwrap();
    assert_eq!(all.len(), n, "every key is listed once");
    for (i, kv) in all.iter().enumerate() {
        assert_eq!(kv.key, format!("{p}{i:05}"), "key order");
        assert_eq!(kv.value, val(&i.to_string()));
    }
}

async fn txn_compare(s: Store, p: String) {
    let (k, k2, k3) = (format!("{p}k"), format!("{p}k2"), format!("{p}k3"));
    let absent = |key: &str| Compare {
        key: key.to_string(),
        mod_revision: 0,
    };
    // Create-if-absent succeeds once.
    assert!(s
        .txn(vec![absent(&k)], vec![TxnOp::Put(k.clone(), val("v1"))])
        .await
        .unwrap());
    assert!(!s
        .txn(vec![absent(&k)], vec![TxnOp::Put(k.clone(), val("v2"))])
        .await
        .unwrap());
    let cur = s.get(&k).await.unwrap().unwrap();
    assert_eq!(cur.value, val("v1"), "a failed txn applies nothing");

    // A stale revision fails and applies none of its ops.
    let stale = Compare {
        key: k.clone(),
        mod_revision: cur.mod_revision - 1,
    };
    assert!(!s
        .txn(
            vec![stale],
            vec![TxnOp::Put(k2.clone(), val("x")), TxnOp::Delete(k.clone())]
        )
        .await
        .unwrap());
    assert!(s.get(&k2).await.unwrap().is_none());
    assert!(s.get(&k).await.unwrap().is_some());

    // One failing compare among several fails the whole txn.
    let good = Compare {
        key: k.clone(),
        mod_revision: cur.mod_revision,
    };
    assert!(!s
        .txn(
            vec![good.clone(), absent(&k)],
            vec![TxnOp::Put(k3.clone(), val("x"))]
        )
        .await
        .unwrap());
    assert!(s.get(&k3).await.unwrap().is_none());

    // The current revision succeeds; all ops land in one revision.
    assert!(s
        .txn(
            vec![good, absent(&k2)],
            vec![
                TxnOp::Put(k2.clone(), val("y")),
                TxnOp::Put(k3.clone(), val("z")),
                TxnOp::Delete(k.clone())
            ]
        )
        .await
        .unwrap());
    assert!(s.get(&k).await.unwrap().is_none());
    let r2 = s.get(&k2).await.unwrap().unwrap().mod_revision;
    let r3 = s.get(&k3).await.unwrap().unwrap().mod_revision;
    assert_eq!(r2, r3, "one transaction, one revision");
    assert!(r2 > cur.mod_revision);
}

async fn watch_order(s: Store, p: String) {
    let mut w = s.watch(&p).await.unwrap();
    let (a, b, c, z) = (
        format!("{p}a"),
        format!("{p}b"),
        format!("{p}c"),
        format!("{p}z"),
    );
    s.put(&a, val("1")).await.unwrap();
    s.put(&format!("{}-other/a", p.trim_end_matches('/')), val("no"))
        .await
        .unwrap();
    s.put(&b, val("2")).await.unwrap();
    s.delete(&a).await.unwrap();
    assert!(s
        .txn(
            vec![],
            vec![TxnOp::Put(c.clone(), val("3")), TxnOp::Delete(b.clone())]
        )
        .await
        .unwrap());
    s.put(&z, val("end")).await.unwrap();

    let r1 = expect_put(next_event(&mut w, "put a").await, &a, "1");
    let r2 = expect_put(next_event(&mut w, "put b").await, &b, "2");
    let r3 = expect_delete(next_event(&mut w, "delete a").await, &a);
    let r4 = expect_put(next_event(&mut w, "txn put c").await, &c, "3");
    let r5 = expect_delete(next_event(&mut w, "txn delete b").await, &b);
    let r6 = expect_put(next_event(&mut w, "put z").await, &z, "end");
    assert!(r1 < r2 && r2 < r3 && r3 < r4 && r4 == r5 && r5 < r6);
    // Nothing else (the key outside the prefix never shows up).
    let extra = tokio::time::timeout(Duration::from_millis(300), w.next()).await;
    assert!(extra.is_err(), "unexpected extra event {extra:?}");
}

async fn lease_expiry_deletes_keys(s: Store, p: String) {
    let k = format!("{p}leased");
    let plain = format!("{p}plain");
    let mut w = s.watch(&p).await.unwrap();
    let lease = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    assert_ne!(lease, 0);
    let granted = Instant::now();
    s.put_leased(&k, val("alive"), lease).await.unwrap();
    s.put(&plain, val("stays")).await.unwrap();
    expect_put(next_event(&mut w, "leased put").await, &k, "alive");
    expect_put(next_event(&mut w, "plain put").await, &plain, "stays");

    expect_delete(next_event(&mut w, "expiry delete").await, &k);
    let lived = granted.elapsed();
    assert!(
        lived >= Duration::from_millis(900),
        "lease of 1 s expired after {lived:?}"
    );
    assert!(s.get(&k).await.unwrap().is_none());
    assert!(s.get(&plain).await.unwrap().is_some());
    assert!(!s.keep_alive(lease).await.unwrap(), "expired lease");
    assert!(matches!(
        s.put_leased(&k, val("late"), lease).await,
        Err(StoreError::LeaseNotFound)
    ));
    assert!(s.get(&k).await.unwrap().is_none());
}

async fn keep_alive_keeps_key(s: Store, p: String) {
    let k = format!("{p}k");
    let lease = s.grant_lease(Duration::from_secs(2)).await.unwrap();
    s.put_leased(&k, val("v"), lease).await.unwrap();
    // Two and a half TTLs' worth of refreshes (slack for a loaded machine).
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(s.keep_alive(lease).await.unwrap(), "live lease refreshes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(s.get(&k).await.unwrap().is_some(), "kept-alive key stays");
    s.revoke_lease(lease).await.unwrap();
    assert!(s.get(&k).await.unwrap().is_none());
    assert!(!s.keep_alive(lease).await.unwrap());
}

async fn revoke_deletes_keys(s: Store, p: String) {
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let other = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert_ne!(lease, other);
    s.put_leased(&a, val("1"), lease).await.unwrap();
    assert!(s
        .txn(vec![], vec![TxnOp::PutLeased(b.clone(), val("2"), lease)])
        .await
        .unwrap());
    s.put_leased(&c, val("3"), other).await.unwrap();
    let mut w = s.watch(&p).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let mut deleted = BTreeSet::new();
    for _ in 0..2 {
        match next_event(&mut w, "revoke delete").await {
            WatchEvent::Delete { key, .. } => deleted.insert(key),
            other => panic!("expected a Delete, got {other:?}"),
        };
    }
    assert_eq!(deleted, BTreeSet::from([a.clone(), b.clone()]));
    assert_eq!(
        keys(&s, &p).await,
        vec![c.clone()],
        "other lease's key stays"
    );
    s.revoke_lease(lease).await.unwrap(); // revoking again is fine
    s.revoke_lease(other).await.unwrap();
    assert!(keys(&s, &p).await.is_empty());
}

async fn campaign_elects_one(s: Store, p: String) {
    let key = format!("{p}leader");
    let mut leases = Vec::new();
    for _ in 0..6 {
        leases.push(s.grant_lease(Duration::from_secs(60)).await.unwrap());
    }
    let mut contenders = Vec::new();
    for (i, lease) in leases.iter().copied().enumerate() {
        let (s, key) = (s.clone(), key.clone());
        contenders.push(tokio::spawn(async move {
            s.campaign(&key, val(&format!("c{i}")), lease)
                .await
                .unwrap()
        }));
    }
    let mut winners = Vec::new();
    for (i, c) in contenders.into_iter().enumerate() {
        if c.await.unwrap() {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
    let first = winners[0];
    let leader = s.get(&key).await.unwrap().unwrap();
    assert_eq!(leader.value, val(&format!("c{first}")));

    let next = (first + 1) % leases.len();
    assert!(!s
        .campaign(&key, val(&format!("c{next}")), leases[next])
        .await
        .unwrap());
    let mut w = s.watch(&key).await.unwrap();
    s.revoke_lease(leases[first]).await.unwrap();
    expect_delete(next_event(&mut w, "leader key delete").await, &key);
    assert!(s
        .campaign(&key, val(&format!("c{next}")), leases[next])
        .await
        .unwrap());
    assert_eq!(
        s.get(&key).await.unwrap().unwrap().value,
        val(&format!("c{next}"))
    );
    for lease in leases {
        s.revoke_lease(lease).await.unwrap();
    }
    assert!(s.get(&key).await.unwrap().is_none());
}

async fn leadership_passes_on_expiry(s: Store, p: String) {
    let key = format!("{p}leader");
    let short = s.grant_lease(Duration::from_secs(1)).await.unwrap();
    let long = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert!(s.campaign(&key, val("short"), short).await.unwrap());
    assert!(!s.campaign(&key, val("long"), long).await.unwrap());
    let mut w = s.watch(&key).await.unwrap();
    expect_delete(next_event(&mut w, "leader lease expiry").await, &key);
    assert!(s.campaign(&key, val("long"), long).await.unwrap());
    s.revoke_lease(long).await.unwrap();
}

fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("kv_basics", |s, p| Box::pin(kv_basics(s, p))),
        ("range_beyond_one_page", |s, p| {
            Box::pin(range_beyond_one_page(s, p))
        }),
        ("txn_compare", |s, p| Box::pin(txn_compare(s, p))),
        ("watch_order", |s, p| Box::pin(watch_order(s, p))),
        ("lease_expiry_deletes_keys", |s, p| {
            Box::pin(lease_expiry_deletes_keys(s, p))
        }),
        ("keep_alive_keeps_key", |s, p| {
            Box::pin(keep_alive_keeps_key(s, p))
        }),
        ("revoke_deletes_keys", |s, p| {
            Box::pin(revoke_deletes_keys(s, p))
        }),
        ("campaign_elects_one", |s, p| {
            Box::pin(campaign_elects_one(s, p))
        }),
        ("leadership_passes_on_expiry", |s, p| {
            Box::pin(leadership_passes_on_expiry(s, p))
        }),
    ]
}

/// Runs every case concurrently (distinct prefixes) and fails listing the
/// cases that failed.
async fn run_suite(store: Store, backend: &str) {
    let mut running = Vec::new();
    for (name, case) in cases() {
        let prefix = format!("/conformance/{backend}/{name}/");
        running.push((name, tokio::spawn(case(store.clone(), prefix))));
    }
    let mut failed = Vec::new();
    for (name, task) in running {
        if let Err(e) = task.await {
            let msg = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            failed.push(format!("{name}: {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{backend} store failed {} conformance case(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    run_suite(Arc::new(store), "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_store_conforms() {
    let etcd = Etcd::start().await;
    run_suite(Arc::new(etcd.store().await), "etcd").await;
}

// ---------------------------------------------------------------------------
// The typed metadata layer.

async fn typed_metadata(store: Store) {
    let m = Metadata::new(store, "typed");
    let info = m.cluster_info().await.unwrap();
    assert_eq!(m.cluster_info().await.unwrap().cluster_id, info.cluster_id);

    let t = m.create_topic("orders", 3, HashMap::new()).await.unwrap();
    assert_eq!(t.partitions, 3);
    assert!(matches!(
        m.create_topic("orders", 1, HashMap::new()).await,
        Err(MetaError::TopicExists(_))
    ));
    assert_eq!(m.list_topics().await.unwrap().len(), 1);

    // Concurrent read-modify-writes: the CAS loop loses no update.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                m.update_topic("orders", |t| {
                    t.partitions += 1;
                    Ok(())
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t = m.get_topic("orders").await.unwrap().unwrap();
    assert_eq!(t.partitions, 3 + 20);
    assert!(matches!(
        m.update_topic("missing", |_| Ok(())).await,
        Err(MetaError::UnknownTopic(_))
    ));
    // A rejected update changes nothing.
    assert!(m
        .update_topic("orders", |_| Err(MetaError::Invalid("no".into())))
        .await
        .is_err());
    assert_eq!(m.get_topic("orders").await.unwrap().unwrap().partitions, 23);

    // Stream epochs: strictly increasing, unique under concurrency.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            m.next_stream_epoch("w1").await.unwrap()
        }));
    }
    let mut epochs = BTreeSet::new();
    for t in tasks {
        assert!(epochs.insert(t.await.unwrap()), "epoch handed out twice");
    }
    assert_eq!(epochs, (1..=8).collect());
    assert_eq!(m.next_stream_epoch("w1").await.unwrap(), 9);
    assert_eq!(m.next_stream_epoch("w2").await.unwrap(), 1);

    m.delete_topic("orders").await.unwrap();
    assert!(m.get_topic("orders").await.unwrap().is_none());
    assert!(matches!(
        m.delete_topic("orders").await,
        Err(MetaError::UnknownTopic(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_metadata_on_etcd() {
    let etcd = Etcd::start().await;
    typed_metadata(Arc::new(etcd.store().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_metadata_on_embedded() {
    let dir = tempfile::tempdir().unwrap();
    typed_metadata(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

// ---------------------------------------------------------------------------
// etcd only: failures and recovery.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_resumes_after_restart_and_calls_fail_fast_while_down() {
    let mut etcd = Etcd::start().await;
    let s = etcd.store().await;
    let mut w = s.watch("/restart/").await.unwrap();
    s.put("/restart/a", val("1")).await.unwrap();
    expect_put(
        next_event(&mut w, "put before restart").await,
        "/restart/a",
        "1",
    );

    etcd.kill();
    let started = Instant::now();
    let err = s.get("/restart/a").await;
    assert!(err.is_err(), "read while etcd is down: {err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a call to a dead etcd took {:?}",
        started.elapsed()
    );

    etcd.restart().await;
    // The same store (and its watch) recover by themselves.
    let deadline = Instant::now() + WAIT;
    let rb = loop {
        match s.put("/restart/b", val("2")).await {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("store did not recover after restart: {e}\n{}", etcd.log()),
        }
    };
    let got = expect_put(
        next_event(&mut w, "put after restart").await,
        "/restart/b",
        "2",
    );
    assert_eq!(got, rb);
    // Nothing replayed twice.
    let extra = tokio::time::timeout(Duration::from_millis(300), w.next()).await;
    assert!(extra.is_err(), "unexpected extra event {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_from_compacted_revision_skips_ahead() {
    let etcd = Etcd::start().await;
    let s = etcd.store().await;
    let r1 = s.put("/compact/a", val("1")).await.unwrap();
    s.put("/compact/b", val("2")).await.unwrap();
    let r3 = s.put("/compact/c", val("3")).await.unwrap();
    s.compact(r3).await.unwrap();
    // History before r3 is gone: the watch resumes at r3 instead of failing.
    let mut w = s.watch_from("/compact/", r1).await.unwrap();
    expect_put(
        next_event(&mut w, "first retained event").await,
        "/compact/c",
        "3",
    );
    s.put("/compact/d", val("4")).await.unwrap();
    expect_put(next_event(&mut w, "live event").await, "/compact/d", "4");

    // Without compaction, watch_from replays history exactly.
    let r5 = s.put("/compact/e", val("5")).await.unwrap();
    let mut w = s.watch_from("/compact/", r3 + 1).await.unwrap();
    expect_put(next_event(&mut w, "replayed d").await, "/compact/d", "4");
    let got = expect_put(next_event(&mut w, "replayed e").await, "/compact/e", "5");
    assert_eq!(got, r5);
}

#[tokio::test]
async fn etcd_connect_to_nothing_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let r = EtcdStore::connect(vec![format!("http://127.0.0.1:{port}")], None).await;
    assert!(r.is_err(), "connect to a closed port succeeded");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "connect took {:?}",
        started.elapsed()
    );
}
