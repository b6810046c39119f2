//! Reading record batches back: from the tail cache when the chunk is
//! cached, from the block cache, otherwise by ranged GET from the WAL object
//! or segment (checksum verified). Reading from storage loads the
//! partition's next chunks ahead.

use crate::batch;
use crate::metrics::Metrics;
use crate::objstore::{ObjectError, ObjectStore};
use crate::partition::{ChunkRef, PartitionLog};
use crate::segment::blocks::BlockCache;
use crate::wal::format;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// Where log bytes are read from (cheap to clone).
#[derive(Clone)]
pub struct Source {
    pub store: Arc<dyn ObjectStore>,
    pub metrics: Metrics,
    pub blocks: Arc<BlockCache>,
}

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

/// The bytes of a chunk, from a cache or storage. Chunks read from storage
/// (segment blocks and WAL chunks below the tail cache alike) go into the
/// block cache: a consumer reading a chunk across several fetches GETs it
/// once.
pub async fn chunk_bytes(src: &Source, c: &ChunkRef) -> Result<Bytes, ReadError> {
    match tail_cached(src, c) {
        Some(pieces) => Ok(join(pieces)),
        None => stored_chunk_bytes(src, c).await,
    }
}

/// The chunk's bytes if it is in the tail cache, in the pieces of whole
/// batches the cache holds them in (several for a segment block).
fn tail_cached<'a>(src: &Source, c: &'a ChunkRef) -> Option<&'a [Bytes]> {
    let cached = c.cached.as_ref()?;
    src.metrics.cache_reads.with_label_values(&["cache"]).inc();
    Some(cached.pieces())
}

/// Storage reads a bulk reader ([`chunks_in_order`]) keeps in flight: with
/// one GET at a time, a compaction of a few hundred chunks from S3 (tens of
/// ms to first byte each) would take seconds per segment.
pub const BULK_READS_IN_FLIGHT: usize = 8;

/// Each chunk with its bytes, in the order given, from caches or storage,
/// with up to [`BULK_READS_IN_FLIGHT`] storage reads in flight (for
/// compaction, log cleaning and producer-state recovery, which read many
/// chunks in a row). Memory stays bounded: at most that many chunks are read
/// ahead of the stream's consumer.
pub fn chunks_in_order(
    src: &Source,
    chunks: Vec<ChunkRef>,
) -> impl futures::Stream<Item = Result<(ChunkRef, Bytes), ReadError>> {
    use futures::StreamExt;
    let src = src.clone();
    futures::stream::iter(chunks)
        .map(move |c| {
            let src = src.clone();
            async move {
                let data = chunk_bytes(&src, &c).await?;
                Ok((c, data))
            }
        })
        .buffered(BULK_READS_IN_FLIGHT)
}

/// The bytes of a chunk outside the tail cache: from the block cache or storage.
async fn stored_chunk_bytes(src: &Source, c: &ChunkRef) -> Result<Bytes, ReadError> {
    if let Some(b) = src.blocks.get_or_wait(&c.object, c.entry.position).await {
        src.metrics
            .cache_reads
            .with_label_values(&["block_cache"])
            .inc();
        return Ok(b);
    }
    src.metrics
        .cache_reads
        .with_label_values(&["storage"])
        .inc();
    let data = fetch(src.store.as_ref(), c).await?;
    src.blocks.insert(&c.object, c.entry.position, data.clone());
    Ok(data)
}

/// A chunk's bytes from storage, verified.
async fn fetch(store: &dyn ObjectStore, c: &ChunkRef) -> Result<Bytes, ReadError> {
    let start = c.entry.position;
    let data = store
        .get_range(&c.object, start..start + u64::from(c.entry.length))
        .await?;
    format::verify_chunk(&c.entry, &data)?;
    Ok(data)
}

/// Chunks (segment blocks or WAL chunks) a sequential reader keeps loading
/// ahead of itself: enough that a consumer catching up from storage waits
/// for one GET's latency per `READ_AHEAD_BLOCKS` chunks rather than per chunk.
pub const READ_AHEAD_BLOCKS: usize = 4;

/// Loads the partition's next [`READ_AHEAD_BLOCKS`] chunks after `offset`
/// (segment blocks or WAL chunks) into the block cache in the background
/// (read-ahead for sequential readers); chunks cached or already loading are
/// skipped, and it stops at the tail cache.
fn read_ahead(src: &Source, log: &PartitionLog, offset: i64) {
    for next in log.chunks_from(offset, READ_AHEAD_BLOCKS) {
        if next.cached.is_some() {
            return;
        }
        if !src.blocks.begin_load(&next.object, next.entry.position) {
            continue;
        }
        let src = src.clone();
        tokio::spawn(async move {
            match fetch(src.store.as_ref(), &next).await {
                Ok(data) => {
                    src.metrics
                        .cache_reads
                        .with_label_values(&["read_ahead"])
                        .inc();
                    src.blocks.insert(&next.object, next.entry.position, data);
                }
                Err(_) => src.blocks.end_load(&next.object, next.entry.position),
            }
        });
    }
}

/// Whole batches holding offsets ≥ `offset` (and below the high watermark),
/// at most `max_bytes` unless the very first batch alone is larger and
/// `allow_oversized_first` is set (KIP-74).
pub async fn read(
    src: &Source,
    log: &PartitionLog,
    offset: i64,
    max_bytes: usize,
    allow_oversized_first: bool,
) -> Result<Bytes, ReadError> {
    let hwm = log.high_watermark();
    // Whole batches are contiguous inside a chunk (or a piece of a cached
    // block), so each contributes one zero-copy slice; bytes are copied only
    // when a read spans several.
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut last_stored_end = None;
    'chunks: for c in log.chunks_from(offset, 64) {
        let stored;
        let chunk = match tail_cached(src, &c) {
            Some(pieces) => pieces,
            None => {
                stored = stored_chunk_bytes(src, &c).await?;
                std::slice::from_ref(&stored)
            }
        };
        last_stored_end = c.cached.is_none().then_some(c.entry.last_offset + 1);
        for data in chunk {
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
    }
    if let Some(end) = last_stored_end {
        read_ahead(src, log, end);
    }
    Ok(join(&pieces))
}

/// The pieces as one buffer: the piece itself when there is one, else a copy.
fn join(pieces: &[Bytes]) -> Bytes {
    if let [one] = pieces {
        return one.clone();
    }
    let mut out = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
    for p in pieces {
        out.extend_from_slice(p);
    }
    out.freeze()
}

/// How many of the next partitions of a fetch to read at once: at most
/// `max`, and only as many as whose `limits` together fit in `room` bytes
/// (always at least one while any is left), so concurrent reads never hold
/// much more than the fetch may answer.
pub fn read_window(limits: impl Iterator<Item = usize>, room: usize, max: usize) -> usize {
    let mut n = 0usize;
    let mut planned = 0usize;
    for limit in limits.take(max) {
        let want = limit.min(room);
        if n > 0 && planned.saturating_add(want) > room {
            break;
        }
        planned = planned.saturating_add(want);
        n += 1;
    }
    n
}

/// The longest prefix of `records` (whole batches) that fits in `budget`
/// bytes.
pub fn whole_batches_within(records: Bytes, budget: usize) -> Bytes {
    if records.len() <= budget {
        return records;
    }
    let mut end = 0usize;
    for b in batch::iter_batches(records.clone()) {
        if end + b.len() > budget {
            break;
        }
        end += b.len();
    }
    records.slice(..end)
}

/// First (offset, timestamp) whose timestamp is ≥ `target`, scanning in offset order.
pub async fn offset_for_timestamp(
    src: &Source,
    log: &PartitionLog,
    target: i64,
) -> Result<Option<(i64, i64)>, ReadError> {
    let start = log.log_start_offset();
    for c in log.all_chunks() {
        if c.entry.max_timestamp < target || c.entry.last_offset < start {
            continue;
        }
        let data = chunk_bytes(src, &c).await?;
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
    src: &Source,
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
    let data = chunk_bytes(src, &best).await?;
    let target = best.entry.max_timestamp;
    for b in batch::iter_batches(data) {
        if batch::max_timestamp(&b) == target {
            return Ok(batch::find_max_timestamp(&b));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole fake batches of the given sizes (only the length field is real).
    fn batches(sizes: &[usize]) -> Bytes {
        let mut out = BytesMut::new();
        for &n in sizes {
            let mut b = vec![0u8; n];
            b[8..12].copy_from_slice(&((n - 12) as i32).to_be_bytes());
            out.extend_from_slice(&b);
        }
        out.freeze()
    }

    #[test]
    fn partitions_are_read_together_only_while_their_limits_fit_the_budget() {
        let mib = 1 << 20;
        // The usual fetch: 1 MiB per partition out of 50 MiB, 8 at once.
        assert_eq!(read_window([mib; 12].into_iter(), 50 * mib, 8), 8);
        assert_eq!(read_window([mib; 3].into_iter(), 50 * mib, 8), 3);
        // Partition limits as large as the budget: one at a time.
        assert_eq!(read_window([50 * mib; 4].into_iter(), 50 * mib, 8), 1);
        assert_eq!(
            read_window([mib, 49 * mib, mib].into_iter(), 50 * mib, 8),
            2
        );
        // Nothing left to read; a first partition is read whatever the room.
        assert_eq!(read_window(std::iter::empty(), 50 * mib, 8), 0);
        assert_eq!(read_window([mib].into_iter(), 10, 8), 1);
    }

    /// A store whose ranged GETs take longer the earlier the range starts
    /// (so they complete out of order) and that counts the GETs in flight.
    struct SlowStore {
        inner: crate::objstore::memory::MemoryStore,
        in_flight: std::sync::atomic::AtomicUsize,
        most_in_flight: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl ObjectStore for SlowStore {
        async fn put_body_if_absent(
            &self,
            key: &str,
            body: crate::objstore::Body,
        ) -> Result<(), ObjectError> {
            self.inner.put_body_if_absent(key, body).await
        }
        async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> Result<Bytes, ObjectError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most_in_flight.fetch_max(now, SeqCst);
            let wait = 40u64.saturating_sub(range.start / 100);
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            self.in_flight.fetch_sub(1, SeqCst);
            self.inner.get_range(key, range).await
        }
        async fn list(
            &self,
            prefix: &str,
        ) -> Result<Vec<crate::objstore::ObjectMeta>, ObjectError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), ObjectError> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test]
    async fn bulk_reads_come_back_in_order_with_a_bounded_number_in_flight() {
        use futures::StreamExt;
        use std::sync::atomic::Ordering::SeqCst;
        let topic_id = uuid::Uuid::new_v4();
        let inputs: Vec<format::ChunkInput> = (0..20i64)
            .map(|i| format::ChunkInput {
                topic_id,
                partition: 0,
                base_offset: i,
                last_offset: i,
                max_timestamp: 0,
                batch_count: 1,
                data: batches(&[100 + i as usize]),
                crc: None,
            })
            .collect();
        let (object, entries) = format::encode(&inputs);
        let store = Arc::new(SlowStore {
            inner: crate::objstore::memory::MemoryStore::new(),
            in_flight: 0.into(),
            most_in_flight: 0.into(),
        });
        store.put_if_absent("wal/1", object).await.expect("put");
        let src = Source {
            store: store.clone(),
            metrics: Metrics::new(&prometheus::Registry::new()).expect("metrics"),
            blocks: Arc::new(BlockCache::new(0)),
        };
        let key: Arc<str> = Arc::from("wal/1");
        let chunks = entries
            .into_iter()
            .map(|entry| ChunkRef {
                object: key.clone(),
                entry,
                cached: None,
            })
            .collect();
        let read: Vec<(ChunkRef, Bytes)> = chunks_in_order(&src, chunks)
            .map(|r| r.expect("read"))
            .collect()
            .await;
        assert_eq!(read.len(), inputs.len());
        for ((c, data), input) in read.iter().zip(&inputs) {
            assert_eq!(c.entry.base_offset, input.base_offset);
            assert_eq!(data, &input.data, "chunk {}", input.base_offset);
        }
        assert_eq!(store.most_in_flight.load(SeqCst), BULK_READS_IN_FLIGHT);
    }

    #[test]
    fn a_budget_keeps_only_whole_batches() {
        let all = batches(&[100, 200, 300]);
        assert_eq!(whole_batches_within(all.clone(), 600).len(), 600);
        assert_eq!(whole_batches_within(all.clone(), 599).len(), 300);
        assert_eq!(whole_batches_within(all.clone(), 300).len(), 300);
        assert_eq!(whole_batches_within(all.clone(), 99).len(), 0);
        assert_eq!(whole_batches_within(all, 0).len(), 0);
    }
}
