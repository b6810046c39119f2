//! The `ObjectStore` trait: the only way log data reaches durable storage.
//!
//! Implementations: a local directory (embedded mode), memory (embedded mode
//! without disk, gone at exit) and S3 (distributed mode). Cross-cutting concerns (retry, metrics, read replica) are wrappers
//! implementing the same trait.
//!
//! Guarantee every implementation must give: `put_if_absent` either creates
//! the object with exactly the given bytes, durably, or fails; it never
//! overwrites an existing object (this is what fences zombie writers).

pub mod local;
pub mod memory;
pub mod replica;
pub mod retry;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;

/// Wraps a store in the worker's one retry policy (transient failures
/// retried with jittered backoff for up to 30 s, every failed attempt
/// counted). Every process composes its stores through this, whatever the
/// backend: `kafscale dev`'s local directory as much as S3.
pub fn with_retries(
    inner: Arc<dyn ObjectStore>,
    metrics: crate::metrics::RetryMetrics,
) -> Arc<dyn ObjectStore> {
    Arc::new(retry::RetryingStore::new(
        inner,
        retry::RetryPolicy::default(),
        metrics,
    ))
}

/// Errors of object stores.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The key already exists (conditional create lost: HTTP 412).
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    #[error("object not found: {0}")]
    NotFound(String),
    /// A transient failure worth retrying.
    #[error("object store error on {key}: {reason}")]
    Transient { key: String, reason: String },
    #[error("invalid object key: {0}")]
    InvalidKey(String),
    /// A failure that retrying will not fix (access denied, missing bucket,
    /// bad request, a store that lacks a required feature).
    #[error("object store rejected the request on {key}: {reason}")]
    Permanent { key: String, reason: String },
}

impl ObjectError {
    /// Whether retrying the same call may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ObjectError::Transient { .. })
    }

    /// The Kafka error a client sees when a request fails on this error:
    /// KAFKA_STORAGE_ERROR (retriable) for every kind, since none of them is
    /// the client's fault.
    pub fn kafka_code(&self) -> i16 {
        kafka_protocol::error::ResponseError::KafkaStorageError.code()
    }

    /// A short, stable name of the error kind, used as a metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectError::AlreadyExists(_) => "already_exists",
            ObjectError::NotFound(_) => "not_found",
            ObjectError::Transient { .. } => "transient",
            ObjectError::InvalidKey(_) => "invalid_key",
            ObjectError::Permanent { .. } => "permanent",
        }
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// Durable object storage keyed by `/`-separated strings.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Creates `key` with `body` iff it does not exist; durable on success.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), ObjectError>;
    /// The whole object.
    async fn get(&self, key: &str) -> Result<Bytes, ObjectError>;
    /// A byte range of the object.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError>;
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;
}
