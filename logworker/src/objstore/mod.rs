//! The `ObjectStore` trait: the only way log data reaches durable storage.
//!
//! Implementations: a local directory (embedded mode), memory (embedded mode
//! without disk, gone at exit) and S3 (distributed mode). Cross-cutting concerns (retry, metrics, read replica) are wrappers
//! implementing the same trait.
//!
//! Guarantee every implementation must give: `put_body_if_absent` (and
//! `put_if_absent`, which calls it) either creates
//! the object with exactly the given bytes, durably, or fails; it never
//! overwrites an existing object (this is what fences zombie writers).

pub mod local;
pub mod memory;
pub mod replica;
pub mod retry;
pub mod s3;

use crate::crc::Crc32c;
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

/// The bytes of an object to create, in one or more parts written back to
/// back. A WAL object is its header, each partition's chunk as it was
/// buffered and its footer: no store has to copy them into one buffer
/// unless its protocol needs one.
#[derive(Debug, Clone, Default)]
pub struct Body {
    parts: Vec<Bytes>,
    len: usize,
    /// The CRC32C of the parts, when the writer derived it.
    crc32c: Option<u32>,
}

impl Body {
    /// The object made of `parts`, in order.
    pub fn from_parts(parts: Vec<Bytes>) -> Self {
        let len = parts.iter().map(Bytes::len).sum();
        Self {
            parts,
            len,
            crc32c: None,
        }
    }

    /// The object made of `parts`, whose CRC32C is `crc32c` (derived from
    /// checksums the writer already had, so [`Self::crc32c`] reads no
    /// bytes). Debug builds check it against the parts.
    pub fn with_crc32c(parts: Vec<Bytes>, crc32c: u32) -> Self {
        let mut body = Self::from_parts(parts);
        debug_assert_eq!(body.crc32c(), crc32c, "derived CRC32C of an object");
        body.crc32c = Some(crc32c);
        body
    }

    /// Length of the object in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty object.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The object in one buffer: free for a body of one part, a copy
    /// otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        }
    }

    /// Bytes `range` of the object: a slice of one part, without a copy,
    /// when the range lies within one, else a copy of the range alone.
    /// `None` if the range is not wholly inside the object.
    pub fn slice(&self, range: Range<usize>) -> Option<Bytes> {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        let mut joined = Vec::new();
        let mut start = 0;
        for p in &self.parts {
            let end = start + p.len();
            if range.start >= start && range.end <= end {
                return Some(p.slice(range.start - start..range.end - start));
            }
            let (from, to) = (range.start.max(start), range.end.min(end));
            if from < to {
                joined.extend_from_slice(&p[from - start..to - start]);
            }
            start = end;
        }
        Some(Bytes::from(joined))
    }

    /// CRC32C (Castagnoli) of the object's bytes: as derived by the
    /// writer, or computed over the parts.
    pub fn crc32c(&self) -> u32 {
        if let Some(crc) = self.crc32c {
            return crc;
        }
        let mut crc = Crc32c::default();
        for p in &self.parts {
            crc.update(p);
        }
        crc.value()
    }

    /// True if `bytes` are exactly this object's bytes.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        if bytes.len() != self.len {
            return false;
        }
        let mut rest = bytes;
        self.parts.iter().all(|p| {
            let (head, tail) = rest.split_at(p.len());
            rest = tail;
            head == &p[..]
        })
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Self::from_parts(vec![b])
    }
}

/// Durable object storage keyed by `/`-separated strings.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Creates `key` with `body` iff it does not exist; durable on success.
    async fn put_body_if_absent(&self, key: &str, body: Body) -> Result<(), ObjectError>;
    /// [`Self::put_body_if_absent`] of a body in one buffer.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), ObjectError> {
        self.put_body_if_absent(key, body.into()).await
    }
    /// The whole object.
    async fn get(&self, key: &str) -> Result<Bytes, ObjectError>;
    /// A byte range of the object.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError>;
    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError>;
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), ObjectError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_in_parts_reads_as_one_object() {
        let parts = [&b"ab"[..], b"cde", b"", b"f"]
            .map(Bytes::from_static)
            .to_vec();
        let body = Body::from_parts(parts);
        assert_eq!(body.len(), 6);
        assert_eq!(body.to_bytes(), Bytes::from_static(b"abcdef"));
        assert!(body.matches(b"abcdef"));
        assert!(!body.matches(b"abcdeX"));
        assert!(!body.matches(b"abcde"));
        let within = body.slice(2..5).expect("in range");
        assert_eq!(within, Bytes::from_static(b"cde"));
        assert_eq!(within.as_ptr(), body.parts()[1].as_ptr(), "no copy");
        assert_eq!(body.slice(1..4), Some(Bytes::from_static(b"bcd")));
        assert_eq!(body.slice(0..6), Some(Bytes::from_static(b"abcdef")));
        assert_eq!(body.slice(4..7), None);
        assert!(Body::default().matches(b""));
        assert_eq!(body.crc32c(), crc32c::crc32c(b"abcdef"));
    }
}
