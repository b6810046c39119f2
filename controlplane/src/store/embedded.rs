//! Embedded single-node metadata store persisted in the data directory.
//!
//! Backed by `redb` (a crash-safe embedded B-tree with ACID transactions):
//! a write returns only after its transaction is durable on disk. Watches are
//! served from an in-process broadcast channel; a watcher that falls too far
//! behind loses events, so consumers re-read with `range` after a lag.

use super::{Compare, KeyValue, MetadataStore, StoreError, TxnOp, WatchEvent, WatchStream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// key → (mod_revision as 8 big-endian bytes) ++ value
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// "revision" → last store revision
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// The embedded metadata store.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    events: broadcast::Sender<WatchEvent>,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
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

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir/metadata.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let db = Database::create(dir.join("metadata.redb")).map_err(backend)?;
        let w = db.begin_write().map_err(backend)?;
        {
            w.open_table(KV).map_err(backend)?;
            w.open_table(META).map_err(backend)?;
        }
        w.commit().map_err(backend)?;
        let (events, _) = broadcast::channel(4096);
        Ok(Self {
            db: Arc::new(db),
            events,
        })
    }

    /// Runs one write transaction on a blocking thread: checks `compares`,
    /// applies `ops`, commits durably and publishes the events.
    async fn write(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<Option<i64>, StoreError> {
        let db = self.db.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || -> Result<Option<i64>, StoreError> {
            let w = db.begin_write().map_err(backend)?;
            let mut published = Vec::new();
            let rev;
            {
                let mut kv = w.open_table(KV).map_err(backend)?;
                for c in &compares {
                    let current = match kv.get(c.key.as_str()).map_err(backend)? {
                        Some(v) => decode(&c.key, v.value())?.mod_revision,
                        None => 0,
                    };
                    if current != c.mod_revision {
                        return Ok(None);
                    }
                }
                let mut meta = w.open_table(META).map_err(backend)?;
                let last = meta
                    .get("revision")
                    .map_err(backend)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                rev = last + 1;
                meta.insert("revision", rev).map_err(backend)?;
                for op in ops {
                    match op {
                        TxnOp::Put(key, value) => {
                            kv.insert(key.as_str(), encode(rev, &value).as_slice())
                                .map_err(backend)?;
                            published.push(WatchEvent::Put(KeyValue {
                                key,
                                value,
                                mod_revision: rev,
                            }));
                        }
                        TxnOp::Delete(key) => {
                            if kv.remove(key.as_str()).map_err(backend)?.is_some() {
                                published.push(WatchEvent::Delete {
                                    key,
                                    mod_revision: rev,
                                });
                            }
                        }
                    }
                }
            }
            w.commit().map_err(backend)?;
            for e in published {
                // No receivers is fine: nobody watches.
                let _ = events.send(e);
            }
            Ok(Some(rev))
        })
        .await
        .map_err(backend)?
    }
}

#[async_trait]
impl MetadataStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let db = self.db.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let r = db.begin_read().map_err(backend)?;
            let kv = r.open_table(KV).map_err(backend)?;
            match kv.get(key.as_str()).map_err(backend)? {
                Some(v) => Ok(Some(decode(&key, v.value())?)),
                None => Ok(None),
            }
        })
        .await
        .map_err(backend)?
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<i64, StoreError> {
        let rev = self
            .write(vec![], vec![TxnOp::Put(key.to_string(), value)])
            .await?;
        rev.ok_or_else(|| StoreError::Backend("unconditional put rejected".into()))
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let existed = self.get(key).await?.is_some();
        self.write(vec![], vec![TxnOp::Delete(key.to_string())])
            .await?;
        Ok(existed)
    }

    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let db = self.db.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let r = db.begin_read().map_err(backend)?;
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
        .map_err(backend)?
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<bool, StoreError> {
        Ok(self.write(compares, ops).await?.is_some())
    }

    async fn watch(&self, prefix: &str) -> Result<WatchStream, StoreError> {
        let prefix = prefix.to_string();
        let rx = self.events.subscribe();
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
}
