//! Reads from a regional read replica (S3 cross-region replication) with
//! fallback to the primary bucket.
//!
//! Guarantees:
//! - `get` and `get_range` ask the replica first; when the replica answers
//!   with any error (the object is missing because replication lags, or the
//!   replica is unreachable) the same read goes to the primary, and its answer
//!   is returned. So a read fails only if the primary fails.
//! - `put_if_absent`, `list` and `delete` go to the primary only: writes and
//!   the view of which objects exist never depend on replication lag.
//! - Objects are immutable once created (`put_if_absent`), so a replica hit
//!   returns the same bytes the primary would.
//! - Every replica read is counted in `kafscale_s3_replica_reads_total`:
//!   `outcome="hit"` when the replica served it, `"fallback"` when the primary
//!   was asked.

use super::{Body, ObjectError, ObjectMeta, ObjectStore};
use crate::metrics::S3Metrics;
use async_trait::async_trait;
use bytes::Bytes;
use prometheus::IntCounter;
use std::ops::Range;
use std::sync::Arc;

/// A primary store with a read replica in front of its reads.
pub struct ReplicaReadStore {
    primary: Arc<dyn ObjectStore>,
    replica: Arc<dyn ObjectStore>,
    hits: IntCounter,
    fallbacks: IntCounter,
}

impl ReplicaReadStore {
    /// Reads go to `replica` first, then `primary`; everything else goes to
    /// `primary`. Outcomes are counted in `metrics.replica_reads`.
    pub fn new(
        primary: Arc<dyn ObjectStore>,
        replica: Arc<dyn ObjectStore>,
        metrics: &S3Metrics,
    ) -> Self {
        Self {
            primary,
            replica,
            hits: metrics.replica_reads.with_label_values(&["hit"]),
            fallbacks: metrics.replica_reads.with_label_values(&["fallback"]),
        }
    }

    /// The store that takes writes, lists and deletes.
    pub fn primary(&self) -> &Arc<dyn ObjectStore> {
        &self.primary
    }

    fn fell_back(&self, key: &str, replica_error: &ObjectError) {
        self.fallbacks.inc();
        if !matches!(replica_error, ObjectError::NotFound(_)) {
            tracing::debug!(key, error = %replica_error, "read replica failed; reading the primary");
        }
    }
}

#[async_trait]
impl ObjectStore for ReplicaReadStore {
    async fn put_body_if_absent(&self, key: &str, body: Body) -> Result<(), ObjectError> {
        self.primary.put_body_if_absent(key, body).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        match self.replica.get(key).await {
            Ok(b) => {
                self.hits.inc();
                Ok(b)
            }
            Err(e) => {
                self.fell_back(key, &e);
                self.primary.get(key).await
            }
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        match self.replica.get_range(key, range.clone()).await {
            Ok(b) => {
                self.hits.inc();
                Ok(b)
            }
            Err(e) => {
                self.fell_back(key, &e);
                self.primary.get_range(key, range).await
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        self.primary.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.primary.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objstore::local::LocalDirStore;

    /// A replica that is down.
    struct Down;

    #[async_trait]
    impl ObjectStore for Down {
        async fn put_body_if_absent(&self, key: &str, _: Body) -> Result<(), ObjectError> {
            Err(ObjectError::Transient {
                key: key.into(),
                reason: "down".into(),
            })
        }
        async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
            self.put_if_absent(key, Bytes::new())
                .await
                .map(|_| Bytes::new())
        }
        async fn get_range(&self, key: &str, _: Range<u64>) -> Result<Bytes, ObjectError> {
            self.get(key).await
        }
        async fn list(&self, p: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
            self.get(p).await.map(|_| Vec::new())
        }
        async fn delete(&self, key: &str) -> Result<(), ObjectError> {
            self.get(key).await.map(|_| ())
        }
    }

    #[tokio::test]
    async fn falls_back_to_the_primary_and_counts() {
        let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let primary = Arc::new(LocalDirStore::open(pd.path()).unwrap());
        let replica = Arc::new(LocalDirStore::open(rd.path()).unwrap());
        let metrics = S3Metrics::unregistered().unwrap();
        let s = ReplicaReadStore::new(primary.clone(), replica.clone(), &metrics);
        let count = |o: &str| metrics.replica_reads.with_label_values(&[o]).get();

        s.put_if_absent("ns/a", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert!(
            replica.get("ns/a").await.is_err(),
            "writes skip the replica"
        );
        assert_eq!(&s.get("ns/a").await.unwrap()[..], b"hello");
        assert_eq!((count("hit"), count("fallback")), (0, 1));

        replica
            .put_if_absent("ns/a", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(&s.get_range("ns/a", 1..4).await.unwrap()[..], b"ell");
        assert_eq!((count("hit"), count("fallback")), (1, 1));

        assert!(matches!(
            s.get("ns/missing").await,
            Err(ObjectError::NotFound(_))
        ));
        assert_eq!(count("fallback"), 2);
        assert_eq!(s.list("ns/").await.unwrap().len(), 1);
        s.delete("ns/a").await.unwrap();
        assert!(primary.get("ns/a").await.is_err());
        assert!(
            replica.get("ns/a").await.is_ok(),
            "deletes skip the replica"
        );

        let down = ReplicaReadStore::new(primary.clone(), Arc::new(Down), &metrics);
        primary
            .put_if_absent("ns/b", Bytes::from_static(b"b"))
            .await
            .unwrap();
        assert_eq!(&down.get("ns/b").await.unwrap()[..], b"b");
        assert_eq!(count("fallback"), 3);
    }
}
