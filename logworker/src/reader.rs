//! Reading record batches back: from the tail cache when the chunk is
//! cached, otherwise by ranged GET from the WAL object (checksum verified).

use crate::batch;
use crate::metrics::Metrics;
use crate::objstore::{ObjectError, ObjectStore};
use crate::partition::{ChunkRef, PartitionLog};
use crate::wal::format;
use bytes::{Bytes, BytesMut};

/// Errors while reading.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Format(#[from] format::FormatError),
}

impl ReadError {
    /// The Kafka error a client sees when a read fails: KAFKA_STORAGE_ERROR,
    /// also for data that fails its checks (corrupt data is never served).
    pub fn kafka_code(&self) -> i16 {
        match self {
            ReadError::Object(e) => e.kafka_code(),
            ReadError::Format(_) => kafka_protocol::error::ResponseError::KafkaStorageError.code(),
        }
    }
}

/// The bytes of a chunk, from cache or storage.
pub async fn chunk_bytes(
    store: &dyn ObjectStore,
    metrics: &Metrics,
    c: &ChunkRef,
) -> Result<Bytes, ReadError> {
    if let Some(b) = &c.cached {
        metrics.cache_reads.with_label_values(&["cache"]).inc();
        return Ok(b.clone());
    }
    metrics.cache_reads.with_label_values(&["storage"]).inc();
    let start = c.entry.position;
    let data = store
        .get_range(&c.object, start..start + u64::from(c.entry.length))
        .await?;
    format::verify_chunk(&c.entry, &data)?;
    Ok(data)
}

/// Whole batches holding offsets ≥ `offset` (and below the high watermark),
/// at most `max_bytes` unless the very first batch alone is larger and
/// `allow_oversized_first` is set (KIP-74).
pub async fn read(
    store: &dyn ObjectStore,
    metrics: &Metrics,
    log: &PartitionLog,
    offset: i64,
    max_bytes: usize,
    allow_oversized_first: bool,
) -> Result<Bytes, ReadError> {
    let hwm = log.high_watermark();
    // Whole batches are contiguous inside a chunk, so each chunk contributes
    // one zero-copy slice; bytes are copied only when a read spans chunks.
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    'chunks: for c in log.chunks_from(offset, 64) {
        let data = chunk_bytes(store, metrics, &c).await?;
        let (mut start, mut end, mut pos) = (None, 0usize, 0usize);
        let mut full = false;
        for b in batch::iter_batches(data.clone()) {
            let here = pos;
            pos += b.len();
            if batch::last_offset(&b) < offset {
                continue;
            }
            if batch::base_offset(&b) >= hwm {
                full = true;
                break;
            }
            let fits = total + b.len() <= max_bytes;
            let oversized_first = total == 0 && allow_oversized_first;
            if !(fits || oversized_first) {
                full = true;
                break;
            }
            start.get_or_insert(here);
            end = pos;
            total += b.len();
            if total >= max_bytes {
                full = true;
                break;
            }
        }
        if let Some(start) = start {
            pieces.push(data.slice(start..end));
        }
        if full {
            break 'chunks;
        }
    }
    Ok(match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.swap_remove(0),
        _ => {
            let mut out = BytesMut::with_capacity(total);
            for p in &pieces {
                out.extend_from_slice(p);
            }
            out.freeze()
        }
    })
}

/// First (offset, timestamp) whose timestamp is ≥ `target`, scanning in offset order.
pub async fn offset_for_timestamp(
    store: &dyn ObjectStore,
    metrics: &Metrics,
    log: &PartitionLog,
    target: i64,
) -> Result<Option<(i64, i64)>, ReadError> {
    let start = log.log_start_offset();
    for c in log.all_chunks() {
        if c.entry.max_timestamp < target || c.entry.last_offset < start {
            continue;
        }
        let data = chunk_bytes(store, metrics, &c).await?;
        for b in batch::iter_batches(data) {
            if batch::max_timestamp(&b) < target || batch::last_offset(&b) < start {
                continue;
            }
            if let Some((o, ts)) = batch::find_timestamp(&b, target) {
                if o >= start {
                    return Ok(Some((o, ts)));
                }
            }
        }
    }
    Ok(None)
}

/// (offset, timestamp) of the record with the largest timestamp.
pub async fn max_timestamp_offset(
    store: &dyn ObjectStore,
    metrics: &Metrics,
    log: &PartitionLog,
) -> Result<Option<(i64, i64)>, ReadError> {
    let Some(best) = log.all_chunks().into_iter().max_by_key(|c| {
        (
            c.entry.max_timestamp,
            std::cmp::Reverse(c.entry.base_offset),
        )
    }) else {
        return Ok(None);
    };
    let data = chunk_bytes(store, metrics, &best).await?;
    let target = best.entry.max_timestamp;
    for b in batch::iter_batches(data) {
        if batch::max_timestamp(&b) == target {
            return Ok(batch::find_max_timestamp(&b));
        }
    }
    Ok(None)
}
