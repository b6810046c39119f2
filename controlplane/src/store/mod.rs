//! The `MetadataStore` trait: a small, etcd-shaped key-value contract.
//!
//! Keys are strings, values are opaque bytes (protobuf messages). Every key
//! carries a `mod_revision`, a store-wide counter that increases on every
//! write; compare-and-swap compares against it (0 means "key absent").
//!
//! Leases: a lease is granted with a time-to-live and must be refreshed with
//! [`MetadataStore::keep_alive`] before it runs out. Keys written with a lease
//! ([`TxnOp::PutLeased`], [`MetadataStore::put_leased`]) are deleted — with a
//! [`WatchEvent::Delete`] — when the lease expires or is revoked. Workers and
//! gateways register under leases, and the assigner's leadership is a leased
//! key won with [`MetadataStore::campaign`].

pub mod embedded;
pub mod etcd;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::time::Duration;

/// Errors of a metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, etcd unreachable or timed out, corrupt data);
    /// the message says why. The operation may or may not have been applied.
    #[error("metadata backend error: {0}")]
    Backend(String),
    /// The store has been shut down.
    #[error("metadata store closed")]
    Closed,
    /// A write referred to a lease that does not exist (never granted,
    /// expired or revoked). Nothing of the write was applied.
    #[error("lease not found (expired or revoked)")]
    LeaseNotFound,
}

/// A key with its value and the revision of its last modification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (opaque bytes, usually a protobuf message).
    pub value: Bytes,
    /// Store revision of the key's last write (always > 0).
    pub mod_revision: i64,
}

/// One change observed by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was written; carries the new value and revision.
    Put(KeyValue),
    /// The key was deleted (explicitly, or because its lease ended) at
    /// `mod_revision`.
    Delete {
        /// The deleted key.
        key: String,
        /// Revision of the deletion.
        mod_revision: i64,
    },
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
    /// The key to check.
    pub key: String,
    /// The expected `mod_revision` (0 = absent).
    pub mod_revision: i64,
}

/// A write of a transaction.
#[derive(Debug, Clone)]
pub enum TxnOp {
    /// Writes a key with no lease (detaching it from any lease it had).
    Put(String, Bytes),
    /// Writes a key attached to lease `.2`: the key is deleted, with a
    /// [`WatchEvent::Delete`], when that lease expires or is revoked. A
    /// transaction whose compares hold but that names a missing lease fails
    /// as a whole with [`StoreError::LeaseNotFound`].
    PutLeased(String, Bytes, i64),
    /// Deletes a key (no-op when absent).
    Delete(String),
}

/// Stream of watch events, in revision order.
///
/// The stream does not end while the store is alive. Both implementations
/// deliver every change made after `watch` returned, in order, with one
/// exception each where history is lost: a watcher of the embedded store that
/// falls more than 4096 events behind skips the events it missed, and an etcd
/// watcher whose resume revision was compacted away skips to the oldest
/// revision etcd still has. Consumers that must not miss state therefore
/// re-read with [`MetadataStore::range`] periodically (or after any event).
pub type WatchStream = BoxStream<'static, WatchEvent>;

/// Rounds a lease time-to-live up to whole seconds, at least one — the
/// granularity both stores use.
pub fn lease_ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs.clamp(1, i64::MAX as u64) as i64
}

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
    /// Applies `ops` atomically, as one revision, if every compare holds;
    /// returns whether it did. A key may appear in at most one op (etcd
    /// rejects duplicates), and etcd caps a transaction at 128 ops by default
    /// (server flag `--max-txn-ops`).
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<bool, StoreError>;
    /// Changes under `prefix` from now on: every change committed after this
    /// call returns is delivered, in revision order (see [`WatchStream`] for
    /// the one case where events can be skipped).
    async fn watch(&self, prefix: &str) -> Result<WatchStream, StoreError>;

    /// Grants a lease that lives `ttl` (rounded up to whole seconds; etcd may
    /// raise it to its minimum, 2 s with default server settings) unless
    /// refreshed with [`Self::keep_alive`]. Returns the lease id (never 0).
    /// No lease survives a restart of the embedded store.
    async fn grant_lease(&self, ttl: Duration) -> Result<i64, StoreError>;

    /// Refreshes a lease once, restarting its full time-to-live. Returns
    /// `false` when the lease no longer exists (expired, revoked, or never
    /// granted); its keys are then gone or about to be deleted.
    async fn keep_alive(&self, lease: i64) -> Result<bool, StoreError>;

    /// Revokes a lease now, deleting every key attached to it (with
    /// [`WatchEvent::Delete`] events). Revoking a lease that no longer exists
    /// succeeds.
    async fn revoke_lease(&self, lease: i64) -> Result<(), StoreError>;

    /// Writes one key attached to `lease` (see [`TxnOp::PutLeased`]); returns
    /// the new revision. Fails with [`StoreError::LeaseNotFound`] when the
    /// lease does not exist.
    async fn put_leased(&self, key: &str, value: Bytes, lease: i64) -> Result<i64, StoreError>;

    /// Leader election step: writes `key = value` under `lease` only if `key`
    /// does not exist. Returns whether this caller won. Exactly one of
    /// concurrent contenders wins; the key (and leadership) disappears when
    /// the winner's lease expires or is revoked, after which a new campaign
    /// can win. Watch the key for its `Delete` to campaign again.
    async fn campaign(&self, key: &str, value: Bytes, lease: i64) -> Result<bool, StoreError> {
        let absent = Compare {
            key: key.to_string(),
            mod_revision: 0,
        };
        self.txn(
            vec![absent],
            vec![TxnOp::PutLeased(key.to_string(), value, lease)],
        )
        .await
    }
}
