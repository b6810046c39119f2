//! In-memory object store for `kafscale dev` with `KAFSCALE_DEV_STORAGE=memory`.
//!
//! Guarantees: the trait's contract within one process (a conditional
//! create never overwrites, an object is either absent or complete), and
//! nothing more: every object is gone when the process exits. For test
//! pipelines and benchmarks that want a broker without disk I/O.

use super::{Body, ObjectError, ObjectMeta, ObjectStore};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

/// Objects in a sorted map (listings by prefix are range scans).
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Objects as they were created, in parts (a WAL object's chunks are
    /// kept as they were buffered, not copied into one buffer).
    objects: Mutex<BTreeMap<String, Body>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// `f` of the object at `key`, under the lock.
    fn read<T>(
        &self,
        key: &str,
        f: impl FnOnce(&Body) -> Result<T, ObjectError>,
    ) -> Result<T, ObjectError> {
        match self.lock().get(key) {
            Some(object) => f(object),
            None => Err(ObjectError::NotFound(key.to_string())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Body>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn check_key(key: &str) -> Result<(), ObjectError> {
    if key.is_empty() {
        return Err(ObjectError::InvalidKey(key.to_string()));
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put_body_if_absent(&self, key: &str, body: Body) -> Result<(), ObjectError> {
        check_key(key)?;
        match self.lock().entry(key.to_string()) {
            std::collections::btree_map::Entry::Occupied(_) => {
                Err(ObjectError::AlreadyExists(key.to_string()))
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(body);
                Ok(())
            }
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        self.read(key, |object| Ok(object.to_bytes()))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        let (start, end) = (range.start as usize, range.end as usize);
        self.read(key, |object| {
            object
                .slice(start..end)
                .ok_or_else(|| ObjectError::Permanent {
                    key: key.to_string(),
                    reason: format!(
                        "range {start}..{end} is outside the object's {} bytes",
                        object.len()
                    ),
                })
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.lock().remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conditional_create_never_overwrites_and_listing_is_by_prefix() {
        let s = MemoryStore::new();
        s.put_if_absent("ns/wal/a/1", Bytes::from_static(b"abc"))
            .await
            .unwrap();
        let again = s
            .put_if_absent("ns/wal/a/1", Bytes::from_static(b"xyz"))
            .await;
        assert_eq!(again, Err(ObjectError::AlreadyExists("ns/wal/a/1".into())));
        assert_eq!(
            s.get("ns/wal/a/1").await.unwrap(),
            Bytes::from_static(b"abc")
        );
        s.put_if_absent("ns/wal/b/1", Bytes::from_static(b"de"))
            .await
            .unwrap();
        s.put_if_absent("ns/seg/x", Bytes::from_static(b"f"))
            .await
            .unwrap();
        let listed: Vec<_> = s
            .list("ns/wal/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        assert_eq!(
            listed,
            vec![("ns/wal/a/1".into(), 3), ("ns/wal/b/1".into(), 2)]
        );
        assert_eq!(
            s.get_range("ns/wal/a/1", 1..3).await.unwrap(),
            Bytes::from_static(b"bc")
        );
        assert!(matches!(
            s.get_range("ns/wal/a/1", 1..4).await,
            Err(ObjectError::Permanent { .. })
        ));
        s.delete("ns/wal/a/1").await.unwrap();
        assert_eq!(
            s.get("ns/wal/a/1").await,
            Err(ObjectError::NotFound("ns/wal/a/1".into()))
        );
    }
}
