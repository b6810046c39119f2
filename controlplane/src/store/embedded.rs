//! Embedded single-node metadata store persisted in the data directory.
//!
//! Backed by `redb` (a crash-safe embedded B-tree with ACID transactions):
//! a write returns only after its transaction is durable on disk. Watches are
//! served from an in-process broadcast channel, published in revision order;
//! a watcher that falls more than 4096 events behind skips the events it
//! missed, so consumers re-read with `range` periodically.
//!
//! Leases live in memory only, with deadlines. Which key belongs to which
//! lease is recorded durably (table `leased`), so that opening the store
//! deletes every key written under a lease: no lease survives a restart.
//! Expired leases are reaped by a background task (every 100 ms, when the
//! store is opened inside a Tokio runtime) and, lazily, before every read and
//! write, so no call ever observes a key of an expired lease.

use super::{
    lease_ttl_secs, Compare, KeyValue, MetadataStore, StoreError, TxnOp, WatchEvent, WatchStream,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// key → (mod_revision as 8 big-endian bytes) ++ value
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// "revision" → last store revision; "lease_seq" → last lease id handed out
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// key → id of the lease the key is attached to
const LEASED: TableDefinition<&str, i64> = TableDefinition::new("leased");

/// How often the background task looks for expired leases.
const EXPIRY_TICK: Duration = Duration::from_millis(100);
/// Capacity of the watch broadcast channel (events a watcher may lag).
const WATCH_BUFFER: usize = 4096;

/// One live lease.
#[derive(Debug, Clone, Copy)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

type Leases = Arc<Mutex<HashMap<i64, Lease>>>;

struct Inner {
    db: Database,
    events: broadcast::Sender<WatchEvent>,
    leases: Leases,
    /// Held from before a commit until its events are sent, so watchers see
    /// events in revision order even when writers race.
    publish: Mutex<()>,
}

/// The embedded metadata store. Cloning shares the same database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// What a successful write did.
struct Written {
    revision: i64,
    deleted: usize,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode(rev: i64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&rev.to_be_bytes());
    v.extend_from_slice(value);
    v
}

fn decode(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < 8 {
        return Err(StoreError::Backend(format!("corrupt value for key {key}")));
    }
    let mut rev = [0u8; 8];
    rev.copy_from_slice(&raw[..8]);
    Ok(KeyValue {
        key: key.to_string(),
        value: Bytes::copy_from_slice(&raw[8..]),
        mod_revision: i64::from_be_bytes(rev),
    })
}

fn meta_get(meta: &Table<&str, i64>, name: &str) -> Result<i64, StoreError> {
    Ok(meta
        .get(name)
        .map_err(backend)?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// Deletes every key attached to one of `leases` inside `w`, as one new
/// revision; returns the Delete events to publish after commit.
fn delete_leased_keys(w: &WriteTransaction, leases: &[i64]) -> Result<Vec<WatchEvent>, StoreError> {
    let mut leased = w.open_table(LEASED).map_err(backend)?;
    let mut doomed = Vec::new();
    for item in leased.iter().map_err(backend)? {
        let (k, l) = item.map_err(backend)?;
        if leases.contains(&l.value()) {
            doomed.push(k.value().to_string());
        }
    }
    if doomed.is_empty() {
        return Ok(Vec::new());
    }
    let mut kv = w.open_table(KV).map_err(backend)?;
    let mut meta = w.open_table(META).map_err(backend)?;
    let rev = meta_get(&meta, "revision")? + 1;
    meta.insert("revision", rev).map_err(backend)?;
    let mut events = Vec::new();
    for key in doomed {
        leased.remove(key.as_str()).map_err(backend)?;
        if kv.remove(key.as_str()).map_err(backend)?.is_some() {
            events.push(WatchEvent::Delete {
                key,
                mod_revision: rev,
            });
        }
    }
    Ok(events)
}

impl Inner {
    /// Commits `w` and publishes `events` in commit order.
    fn commit(&self, w: WriteTransaction, events: Vec<WatchEvent>) -> Result<(), StoreError> {
        let _order = lock(&self.publish);
        w.commit().map_err(backend)?;
        for e in events {
            // No receivers is fine: nobody watches.
            let _ = self.events.send(e);
        }
        Ok(())
    }

    /// Whether some lease has passed its deadline.
    fn any_expired(&self) -> bool {
        let now = Instant::now();
        lock(&self.leases).values().any(|l| l.deadline <= now)
    }

    /// Deletes the keys of every expired lease (blocking).
    fn expire_due(&self) -> Result<(), StoreError> {
        if !self.any_expired() {
            return Ok(());
        }
        let w = self.db.begin_write().map_err(backend)?;
        // Leases leave the map only under a write transaction, so the set
        // computed here is stable until commit.
        let now = Instant::now();
        let expired: Vec<(i64, Lease)> = {
            let mut leases = lock(&self.leases);
            let ids: Vec<i64> = leases
                .iter()
                .filter(|(_, l)| l.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| leases.remove(&id).map(|l| (id, l)))
                .collect()
        };
        let ids: Vec<i64> = expired.iter().map(|(id, _)| *id).collect();
        let result = delete_leased_keys(&w, &ids).and_then(|events| self.commit(w, events));
        if result.is_err() {
            // Keep them (still expired) so the next attempt retries.
            lock(&self.leases).extend(expired);
        }
        result
    }

    /// Runs one write transaction (blocking): reaps expired leases, checks
    /// `compares`, applies `ops`, commits durably and publishes the events.
    fn write(&self, compares: &[Compare], ops: Vec<TxnOp>) -> Result<Option<Written>, StoreError> {
        self.expire_due()?;
        let w = self.db.begin_write().map_err(backend)?;
        let mut published = Vec::new();
        let mut written = Written {
            revision: 0,
            deleted: 0,
        };
        {
            let mut kv = w.open_table(KV).map_err(backend)?;
            for c in compares {
                let current = match kv.get(c.key.as_str()).map_err(backend)? {
                    Some(v) => decode(&c.key, v.value())?.mod_revision,
                    None => 0,
                };
                if current != c.mod_revision {
                    return Ok(None);
                }
            }
            {
                let now = Instant::now();
                let leases = lock(&self.leases);
                for op in &ops {
                    if let TxnOp::PutLeased(_, _, lease) = op {
                        if leases.get(lease).is_none_or(|l| l.deadline <= now) {
                            return Err(StoreError::LeaseNotFound);
                        }
                    }
                }
            }
            let mut meta = w.open_table(META).map_err(backend)?;
            let mut leased = w.open_table(LEASED).map_err(backend)?;
            let last = meta_get(&meta, "revision")?;
            let rev = last + 1;
            for op in ops {
                match op {
                    TxnOp::Put(key, value) => {
                        kv.insert(key.as_str(), encode(rev, &value).as_slice())
                            .map_err(backend)?;
                        leased.remove(key.as_str()).map_err(backend)?;
                        published.push(WatchEvent::Put(KeyValue {
                            key,
                            value,
                            mod_revision: rev,
                        }));
                    }
                    TxnOp::PutLeased(key, value, lease) => {
                        kv.insert(key.as_str(), encode(rev, &value).as_slice())
                            .map_err(backend)?;
                        leased.insert(key.as_str(), lease).map_err(backend)?;
                        published.push(WatchEvent::Put(KeyValue {
                            key,
                            value,
                            mod_revision: rev,
                        }));
                    }
                    TxnOp::Delete(key) => {
                        leased.remove(key.as_str()).map_err(backend)?;
                        if kv.remove(key.as_str()).map_err(backend)?.is_some() {
                            written.deleted += 1;
                            published.push(WatchEvent::Delete {
                                key,
                                mod_revision: rev,
                            });
                        }
                    }
                }
            }
            // Like etcd, a transaction that changes nothing keeps the revision.
            written.revision = if published.is_empty() { last } else { rev };
            meta.insert("revision", written.revision).map_err(backend)?;
        }
        self.commit(w, published)?;
        Ok(Some(written))
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir/metadata.redb`. Every key that
    /// was written under a lease before is deleted now (leases do not survive
    /// a restart). When called inside a Tokio runtime, starts the background
    /// task that reaps expired leases; it stops when the last clone of the
    /// store is dropped.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let db = Database::create(dir.join("metadata.redb")).map_err(backend)?;
        let w = db.begin_write().map_err(backend)?;
        {
            w.open_table(KV).map_err(backend)?;
            w.open_table(META).map_err(backend)?;
        }
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let inner = Arc::new(Inner {
            db,
            events,
            leases: Arc::new(Mutex::new(HashMap::new())),
            publish: Mutex::new(()),
        });
        // Leases died with the previous process: drop their keys. Every
        // lease id ever handed out is ≤ lease_seq.
        let all: Vec<i64> = {
            let leased = w.open_table(LEASED).map_err(backend)?;
            let mut ids = Vec::new();
            for item in leased.iter().map_err(backend)? {
                let l = item.map_err(backend)?.1.value();
                if !ids.contains(&l) {
                    ids.push(l);
                }
            }
            ids
        };
        let events = delete_leased_keys(&w, &all)?;
        inner.commit(w, events)?;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap_expired(Arc::downgrade(&inner), inner.leases.clone()));
        }
        Ok(Self { inner })
    }

    /// Runs `f` on a blocking thread with the store.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(backend)?
    }

    async fn write(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<Option<Written>, StoreError> {
        self.blocking(move |inner| inner.write(&compares, ops))
            .await
    }
}

/// Background task: deletes the keys of expired leases so watchers see the
/// Delete events promptly. Ends once the store is dropped.
async fn reap_expired(store: Weak<Inner>, leases: Leases) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if !lock(&leases).values().any(|l| l.deadline <= now) {
            if store.strong_count() == 0 {
                return;
            }
            continue;
        }
        let Some(inner) = store.upgrade() else {
            return;
        };
        match tokio::task::spawn_blocking(move || inner.expire_due()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "expiring metadata leases failed"),
            Err(e) => tracing::warn!(error = %e, "lease reaper task failed"),
        }
    }
}

#[async_trait]
impl MetadataStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |inner| {
            inner.expire_due()?;
            let r = inner.db.begin_read().map_err(backend)?;
            let kv = r.open_table(KV).map_err(backend)?;
            match kv.get(key.as_str()).map_err(backend)? {
                Some(v) => Ok(Some(decode(&key, v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<i64, StoreError> {
        let done = self
            .write(vec![], vec![TxnOp::Put(key.to_string(), value)])
            .await?;
        done.map(|w| w.revision)
            .ok_or_else(|| StoreError::Backend("unconditional put rejected".into()))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let done = self
            .write(vec![], vec![TxnOp::Delete(key.to_string())])
            .await?;
        Ok(done.is_some_and(|w| w.deleted > 0))
    }

    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| {
            inner.expire_due()?;
            let r = inner.db.begin_read().map_err(backend)?;
            let kv = r.open_table(KV).map_err(backend)?;
            let mut out = Vec::new();
            for item in kv.range(prefix.as_str()..).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let k = k.value();
                if !k.starts_with(prefix.as_str()) {
                    break;
                }
                out.push(decode(k, v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<bool, StoreError> {
        Ok(self.write(compares, ops).await?.is_some())
    }

    async fn watch(&self, prefix: &str) -> Result<WatchStream, StoreError> {
        let prefix = prefix.to_string();
        let rx = self.inner.events.subscribe();
        Ok(BroadcastStream::new(rx)
            .filter_map(move |e| {
                let keep = match e {
                    Ok(ev) if ev.key().starts_with(prefix.as_str()) => Some(ev),
                    _ => None,
                };
                futures::future::ready(keep)
            })
            .boxed())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError> {
        let ttl = Duration::from_secs(lease_ttl_secs(ttl) as u64);
        self.blocking(move |inner| {
            let w = inner.db.begin_write().map_err(backend)?;
            let id = {
                let mut meta = w.open_table(META).map_err(backend)?;
                let id = meta_get(&meta, "lease_seq")? + 1;
                meta.insert("lease_seq", id).map_err(backend)?;
                id
            };
            w.commit().map_err(backend)?;
            let lease = Lease {
                ttl,
                deadline: Instant::now() + ttl,
            };
            lock(&inner.leases).insert(id, lease);
            Ok(id)
        })
        .await
    }

    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut leases = lock(&self.inner.leases);
        match leases.get_mut(&lease) {
            Some(l) if l.deadline > now => {
                l.deadline = now + l.ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            let w = inner.db.begin_write().map_err(backend)?;
            let removed = lock(&inner.leases).remove(&lease);
            let result =
                delete_leased_keys(&w, &[lease]).and_then(|events| inner.commit(w, events));
            if let (Err(_), Some(l)) = (&result, removed) {
                lock(&inner.leases).insert(lease, l);
            }
            result
        })
        .await
    }

    async fn put_leased(&self, key: &str, value: Bytes, lease: i64) -> Result<i64, StoreError> {
        let done = self
            .write(
                vec![],
                vec![TxnOp::PutLeased(key.to_string(), value, lease)],
            )
            .await?;
        done.map(|w| w.revision)
            .ok_or_else(|| StoreError::Backend("unconditional put rejected".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_range_cas_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut watch = store.watch("/a/").await.unwrap();
        let r1 = store.put("/a/1", Bytes::from_static(b"x")).await.unwrap();
        store.put("/b/1", Bytes::from_static(b"y")).await.unwrap();
        let got = store.get("/a/1").await.unwrap().unwrap();
        assert_eq!(got.mod_revision, r1);
        assert_eq!(store.range("/a/").await.unwrap().len(), 1);
        // CAS on a stale revision fails, on the current one succeeds.
        let stale = Compare {
            key: "/a/1".into(),
            mod_revision: r1 - 1,
        };
        assert!(!store
            .txn(vec![stale], vec![TxnOp::Delete("/a/1".into())])
            .await
            .unwrap());
        let fresh = Compare {
            key: "/a/1".into(),
            mod_revision: r1,
        };
        assert!(store
            .txn(vec![fresh], vec![TxnOp::Put("/a/2".into(), Bytes::new())])
            .await
            .unwrap());
        match watch.next().await.unwrap() {
            WatchEvent::Put(kv) => assert_eq!(kv.key, "/a/1"),
            other => panic!("unexpected {other:?}"),
        }
        match watch.next().await.unwrap() {
            WatchEvent::Put(kv) => assert_eq!(kv.key, "/a/2"),
            other => panic!("unexpected {other:?}"),
        }
        drop(store);
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(reopened.range("/a/").await.unwrap().len(), 2);
        assert!(reopened.get("/b/1").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn leased_keys_do_not_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        store
            .put_leased("/l/leased", Bytes::from_static(b"1"), lease)
            .await
            .unwrap();
        store
            .put_leased("/l/detached", Bytes::from_static(b"2"), lease)
            .await
            .unwrap();
        // A plain put detaches the key from its lease.
        store
            .put("/l/detached", Bytes::from_static(b"3"))
            .await
            .unwrap();
        store
            .put("/l/plain", Bytes::from_static(b"4"))
            .await
            .unwrap();
        assert!(matches!(
            store
                .put_leased("/l/x", Bytes::new(), lease + 1000)
                .await
                .unwrap_err(),
            StoreError::LeaseNotFound
        ));
        // A failed compare wins over a missing lease, like etcd.
        let cmp = Compare {
            key: "/l/plain".into(),
            mod_revision: 0,
        };
        assert!(!store
            .txn(
                vec![cmp],
                vec![TxnOp::PutLeased("/l/x".into(), Bytes::new(), 0)]
            )
            .await
            .unwrap());
        drop(store);
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        let keys: Vec<String> = reopened
            .range("/l/")
            .await
            .unwrap()
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(keys, vec!["/l/detached", "/l/plain"]);
        assert!(!reopened.keep_alive(lease).await.unwrap());
        // Lease ids are never reused.
        assert!(reopened.grant_lease(Duration::from_secs(1)).await.unwrap() > lease);
    }
}
