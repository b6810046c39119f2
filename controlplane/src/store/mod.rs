//! The `MetadataStore` trait: a small, etcd-shaped key-value contract.
//!
//! Keys are strings, values are opaque bytes (protobuf messages). Every key
//! carries a `mod_revision`, a store-wide counter that increases on every
//! write; compare-and-swap compares against it (0 means "key absent").

pub mod embedded;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// Errors of a metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata backend error: {0}")]
    Backend(String),
    #[error("metadata store closed")]
    Closed,
}

/// A key with its value and the revision of its last modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub mod_revision: i64,
}

/// One change observed by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, mod_revision: i64 },
}

impl WatchEvent {
    /// The key this event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// A condition of a transaction: the key's `mod_revision` equals the given
/// value (0 = the key does not exist).
#[derive(Debug, Clone)]
pub struct Compare {
    pub key: String,
    pub mod_revision: i64,
}

/// A write of a transaction.
#[derive(Debug, Clone)]
pub enum TxnOp {
    Put(String, Bytes),
    Delete(String),
}

/// Stream of watch events, in revision order.
pub type WatchStream = BoxStream<'static, WatchEvent>;

/// The metadata store contract shared by the embedded store and etcd.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Writes one key unconditionally; returns the new revision.
    async fn put(&self, key: &str, value: Bytes) -> Result<i64, StoreError>;
    /// Deletes one key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// All keys starting with `prefix`, in key order.
    async fn range(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError>;
    /// Applies `ops` atomically if every compare holds; returns whether it did.
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<bool, StoreError>;
    /// Changes under `prefix` from now on.
    async fn watch(&self, prefix: &str) -> Result<WatchStream, StoreError>;
}
