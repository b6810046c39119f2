//! One partition's in-memory log: offset counter, durable index, tail cache
//! slots and the high-watermark notification.
//!
//! Guarantees: offsets are handed out by `reserve` only, so they are unique and
//! contiguous per owner; the high watermark only moves forward and only over
//! chunks that are durable (or over a failed flush's offsets, which are then a
//! permanent gap and are never reissued); a fetch waiting on `subscribe` is
//! woken by every advance.

use crate::wal::format::ChunkEntry;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use uuid::Uuid;

/// (topic id, partition index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic_id: Uuid,
    pub partition: i32,
}

/// A durable chunk of this partition inside a WAL object (or a block of a
/// segment).
#[derive(Debug, Clone)]
pub struct ChunkRef {
    pub object: Arc<str>,
    pub entry: ChunkEntry,
    /// The chunk's bytes while it is in the tail cache.
    pub cached: Option<Cached>,
}

/// A chunk's bytes in the tail cache.
#[derive(Debug, Clone)]
pub enum Cached {
    /// A WAL chunk's buffer, cached when the tail cache's
    /// [`inserted_bytes`](crate::cache::TailCache::inserted_bytes) was `at`.
    Chunk { data: Bytes, at: u64 },
    /// A segment block cut from cached WAL chunks: their buffers, in order
    /// (each whole batches), kept until the tail cache evicts one of them.
    Block(Arc<[Bytes]>),
}

impl Cached {
    /// The bytes in order, in pieces of whole batches.
    pub fn pieces(&self) -> &[Bytes] {
        match self {
            Cached::Chunk { data, .. } => std::slice::from_ref(data),
            Cached::Block(pieces) => pieces,
        }
    }
}

#[derive(Debug)]
struct Inner {
    next_offset: i64,
    high_watermark: i64,
    log_start_offset: i64,
    /// Offsets below it are in segments (their blocks are the chunks there).
    compacted_offset: i64,
    /// Offsets below it are in cleaned segments (key compaction).
    cleaned_offset: i64,
    clean_generation: u64,
    /// Since when the oldest uncompacted chunk has been waiting (by this
    /// process's clock, not by record timestamps: a retried batch carries
    /// its old timestamp and must not force a tiny segment).
    uncompacted_since: Option<std::time::Instant>,
    /// Bytes of the chunks from `compacted_offset` on (kept with `chunks`).
    uncompacted_bytes: u64,
    chunks: BTreeMap<i64, ChunkRef>,
    closed: bool,
}

impl Inner {
    /// Sums the bytes waiting for compaction again (after the index or the
    /// compacted offset changed other than by a commit).
    fn recount_uncompacted(&mut self) {
        self.uncompacted_bytes = self
            .chunks
            .range(self.compacted_offset..)
            .map(|(_, c)| u64::from(c.entry.length))
            .sum();
    }

    /// Drops the index entries starting in `range` and indexes `blocks`
    /// instead (those still above the log start).
    fn replace_blocks(&mut self, range: impl std::ops::RangeBounds<i64>, blocks: Vec<ChunkRef>) {
        let stale: Vec<i64> = self.chunks.range(range).map(|(b, _)| *b).collect();
        for b in stale {
            self.chunks.remove(&b);
        }
        let floor = self.log_start_offset;
        for b in blocks.into_iter().filter(|b| b.entry.last_offset >= floor) {
            self.chunks.insert(b.entry.base_offset, b);
        }
    }
}

/// What of a partition waits to be compacted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uncompacted {
    /// Bytes of the WAL chunks not yet in a segment.
    pub bytes: u64,
    /// When the oldest of them entered the tail cache, if it is still there
    /// (a segment cut now reads it from memory rather than from storage).
    pub oldest_cached_at: Option<u64>,
}

/// One published segment of the partition, as the log's index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpan {
    pub key: Arc<str>,
    /// First offset the segment covers (its key's base offset).
    pub base_offset: i64,
    /// One past the last offset it covers (the next segment's base).
    pub end_offset: i64,
    pub bytes: u64,
    pub max_timestamp: i64,
}

/// The log of one owned partition.
#[derive(Debug)]
pub struct PartitionLog {
    pub id: PartitionId,
    pub topic: String,
    /// Assignment epoch of this ownership, stamped into batches.
    pub leader_epoch: i32,
    inner: Mutex<Inner>,
    hwm: watch::Sender<i64>,
    /// Idempotent producers' recent batches (held across their append, so
    /// a check and its append are one step).
    producers: Mutex<crate::producers::ProducerStates>,
}

impl PartitionLog {
    /// A log recovered from durable chunks (sorted by base offset, disjoint):
    /// segment blocks below `compacted_offset`, WAL chunks from there on.
    pub fn recovered(
        id: PartitionId,
        topic: String,
        leader_epoch: i32,
        published: crate::segment::Published,
        chunks: Vec<ChunkRef>,
    ) -> Self {
        let crate::segment::Published {
            log_start_offset,
            cleaned_offset,
            clean_generation,
            compacted_offset,
        } = published;
        let end = chunks
            .last()
            .map(|c| c.entry.last_offset + 1)
            .unwrap_or(0)
            .max(log_start_offset)
            .max(compacted_offset);
        let waiting = chunks
            .iter()
            .any(|c| c.entry.base_offset >= compacted_offset);
        let chunks = chunks
            .into_iter()
            .map(|c| (c.entry.base_offset, c))
            .collect();
        let (hwm, _) = watch::channel(end);
        let mut inner = Inner {
            next_offset: end,
            high_watermark: end,
            log_start_offset,
            compacted_offset,
            cleaned_offset,
            clean_generation,
            uncompacted_since: waiting.then(std::time::Instant::now),
            uncompacted_bytes: 0,
            chunks,
            closed: false,
        };
        inner.recount_uncompacted();
        Self {
            id,
            topic,
            leader_epoch,
            inner: Mutex::new(inner),
            hwm,
            producers: Mutex::default(),
        }
    }

    /// The idempotent-producer state, locked.
    pub fn producers(&self) -> MutexGuard<'_, crate::producers::ProducerStates> {
        self.producers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain counters; the data is still consistent enough to serve.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands out `count` consecutive offsets; returns the first, or None
    /// once the log is closed for handover.
    pub fn reserve(&self, count: i64) -> Option<i64> {
        let mut g = self.lock();
        if g.closed {
            return None;
        }
        let base = g.next_offset;
        g.next_offset += count;
        Some(base)
    }

    /// Refuses every further append (the partition is being handed over);
    /// returns the end of what was appended: once the high watermark
    /// reaches it, everything this owner accepted is durable or failed.
    pub fn close(&self) -> i64 {
        let mut g = self.lock();
        g.closed = true;
        g.next_offset
    }

    /// Makes a durable chunk visible and advances the high watermark.
    pub fn commit(&self, chunk: ChunkRef) {
        let end = chunk.entry.last_offset + 1;
        {
            let mut g = self.lock();
            g.uncompacted_since
                .get_or_insert_with(std::time::Instant::now);
            if chunk.entry.base_offset >= g.compacted_offset {
                g.uncompacted_bytes += u64::from(chunk.entry.length);
            }
            g.chunks.insert(chunk.entry.base_offset, chunk);
            g.high_watermark = g.high_watermark.max(end);
        }
        self.hwm.send_if_modified(|v| {
            let advanced = end > *v;
            *v = (*v).max(end);
            advanced
        });
    }

    /// Advances the high watermark over offsets whose flush failed: they
    /// become a gap and are never handed out again.
    pub fn skip_failed(&self, end: i64) {
        {
            let mut g = self.lock();
            g.high_watermark = g.high_watermark.max(end);
        }
        self.hwm.send_if_modified(|v| {
            let advanced = end > *v;
            *v = (*v).max(end);
            advanced
        });
    }

    /// Moves the log start offset forward to `offset` (never back) and
    /// forgets chunks that end below it; returns the log start offset.
    pub fn advance_log_start(&self, offset: i64) -> i64 {
        let mut g = self.lock();
        if offset > g.log_start_offset {
            g.log_start_offset = offset;
            g.chunks.retain(|_, c| c.entry.last_offset >= offset);
            g.recount_uncompacted();
        }
        g.log_start_offset
    }

    /// Bytes of the durable chunks from the log start offset on.
    pub fn stored_bytes(&self) -> i64 {
        self.lock()
            .chunks
            .values()
            .map(|c| i64::from(c.entry.length))
            .sum()
    }

    /// Offset of the next record to be produced, durable or not.
    pub fn next_offset(&self) -> i64 {
        self.lock().next_offset
    }

    /// The high watermark: one past the last durable offset.
    pub fn high_watermark(&self) -> i64 {
        self.lock().high_watermark
    }

    /// First offset still retained.
    pub fn log_start_offset(&self) -> i64 {
        self.lock().log_start_offset
    }

    /// Notifications of high-watermark advances.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.hwm.subscribe()
    }

    /// Up to `limit` chunks holding offsets ≥ `offset`, below the high watermark, in order.
    pub fn chunks_from(&self, offset: i64, limit: usize) -> Vec<ChunkRef> {
        let g = self.lock();
        let start = g
            .chunks
            .range(..=offset)
            .next_back()
            .filter(|(_, c)| c.entry.last_offset >= offset)
            .map(|(b, _)| *b)
            .unwrap_or(offset);
        g.chunks
            .range(start..)
            .filter(|(_, c)| {
                c.entry.last_offset >= offset && c.entry.base_offset < g.high_watermark
            })
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Offsets below it are in published segments.
    pub fn compacted_offset(&self) -> i64 {
        self.lock().compacted_offset
    }

    /// The WAL chunks not yet in a segment, in offset order.
    pub fn uncompacted_chunks(&self) -> Vec<ChunkRef> {
        let g = self.lock();
        g.chunks
            .range(g.compacted_offset..)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Replaces the WAL chunks of `[start, end)` by the blocks of the
    /// segment just published and moves the compacted offset to `end`.
    /// Readers holding the old chunks keep reading the WAL objects, which
    /// garbage collection deletes only later. A block stays cached only if
    /// every chunk it replaces still is: the tail cache evicts it with the
    /// first of them it evicts.
    pub fn install_segment(&self, start: i64, end: i64, mut blocks: Vec<ChunkRef>) {
        let mut g = self.lock();
        if start != g.compacted_offset || end <= start {
            return;
        }
        for b in blocks.iter_mut().filter(|b| b.cached.is_some()) {
            let replaced = b.entry.base_offset..=b.entry.last_offset;
            if g.chunks.range(replaced).any(|(_, c)| c.cached.is_none()) {
                b.cached = None;
            }
        }
        g.replace_blocks(start..end, blocks);
        g.compacted_offset = end;
        g.recount_uncompacted();
        // What is left waits from now on (an upper bound on its age).
        g.uncompacted_since = g
            .chunks
            .range(end..)
            .next()
            .map(|_| std::time::Instant::now());
    }

    /// Where the cleaned segments end, and their generation.
    pub fn cleaned(&self) -> (i64, u64) {
        let g = self.lock();
        (g.cleaned_offset, g.clean_generation)
    }

    /// Replaces every segment block below `end` by the blocks of the
    /// cleaned segments of `generation` just published, if the log was
    /// still cleaned up to `from` (of generation `from_generation`) and
    /// compacted to at least `end`.
    pub fn install_cleaned(
        &self,
        from: (i64, u64),
        end: i64,
        generation: u64,
        blocks: Vec<ChunkRef>,
    ) {
        let mut g = self.lock();
        if (g.cleaned_offset, g.clean_generation) != from || g.compacted_offset < end {
            return;
        }
        g.replace_blocks(..end, blocks);
        g.cleaned_offset = end;
        g.clean_generation = generation;
    }

    /// What waits to be compacted (without copying the index).
    pub fn uncompacted(&self) -> Uncompacted {
        let g = self.lock();
        Uncompacted {
            bytes: g.uncompacted_bytes,
            oldest_cached_at: g.chunks.range(g.compacted_offset..).next().and_then(
                |(_, c)| match c.cached {
                    Some(Cached::Chunk { at, .. }) => Some(at),
                    _ => None,
                },
            ),
        }
    }

    /// How long the oldest uncompacted chunk has been waiting.
    pub fn uncompacted_age(&self) -> Option<std::time::Duration> {
        self.lock().uncompacted_since.map(|t| t.elapsed())
    }

    /// The published segments that still hold retained offsets, oldest
    /// first (from the blocks in the index).
    pub fn segments(&self) -> Vec<SegmentSpan> {
        let g = self.lock();
        let mut out: Vec<SegmentSpan> = Vec::new();
        for c in g.chunks.range(..g.compacted_offset).map(|(_, c)| c) {
            match out.last_mut() {
                Some(s) if s.key == c.object => {
                    s.bytes += u64::from(c.entry.length);
                    s.max_timestamp = s.max_timestamp.max(c.entry.max_timestamp);
                }
                _ => out.push(SegmentSpan {
                    key: c.object.clone(),
                    base_offset: crate::segment::base_of_key(&c.object)
                        .unwrap_or(c.entry.base_offset),
                    end_offset: g.compacted_offset,
                    bytes: u64::from(c.entry.length),
                    max_timestamp: c.entry.max_timestamp,
                }),
            }
        }
        for i in 1..out.len() {
            out[i - 1].end_offset = out[i].base_offset;
        }
        out
    }

    /// The blocks of the published segments, in offset order.
    pub fn segment_blocks(&self) -> Vec<ChunkRef> {
        let g = self.lock();
        g.chunks
            .range(..g.compacted_offset)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Every chunk, in offset order (for timestamp lookups).
    pub fn all_chunks(&self) -> Vec<ChunkRef> {
        self.lock().chunks.values().cloned().collect()
    }
}

impl crate::cache::Evict for PartitionLog {
    /// Drops the cached bytes of the chunk that starts at `base_offset`, or
    /// of the segment block it was compacted into (tail-cache eviction).
    fn evict(&self, base_offset: i64) {
        let mut g = self.lock();
        if let Some((_, c)) = g.chunks.range_mut(..=base_offset).next_back() {
            if c.entry.last_offset >= base_offset {
                c.cached = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(base: i64, last: i64) -> ChunkRef {
        ChunkRef {
            object: Arc::from("o"),
            entry: ChunkEntry {
                topic_id: Uuid::nil(),
                partition: 0,
                base_offset: base,
                last_offset: last,
                max_timestamp: 0,
                position: 8,
                length: 0,
                batch_count: 1,
                crc: 0,
            },
            cached: None,
        }
    }

    fn sized(base: i64, last: i64, length: u32, cached: bool) -> ChunkRef {
        let mut c = chunk(base, last);
        c.entry.length = length;
        c.cached = cached.then(|| Cached::Chunk {
            data: Bytes::from(vec![0u8; length as usize]),
            at: base as u64,
        });
        c
    }

    #[test]
    fn what_waits_for_compaction_is_counted_through_commits_segments_and_retention() {
        let id = PartitionId {
            topic_id: Uuid::nil(),
            partition: 0,
        };
        let published = crate::segment::Published {
            compacted_offset: 5,
            ..Default::default()
        };
        // Recovered: a segment block below the compacted offset, an evicted chunk above.
        let log = PartitionLog::recovered(
            id,
            "t".into(),
            1,
            published,
            vec![sized(0, 4, 1_000, false), sized(5, 9, 100, false)],
        );
        let none_cached = Uncompacted {
            bytes: 100,
            oldest_cached_at: None,
        };
        assert_eq!(log.uncompacted(), none_cached);
        log.commit(sized(10, 14, 200, true));
        assert_eq!(log.uncompacted().bytes, 300);
        assert_eq!(log.uncompacted().oldest_cached_at, None);
        // A segment of [5, 10): what is left is the cached chunk.
        log.install_segment(5, 10, vec![sized(5, 9, 100, false)]);
        let cached = Uncompacted {
            bytes: 200,
            oldest_cached_at: Some(10),
        };
        assert_eq!(log.uncompacted(), cached);
        // Tail-cache eviction.
        crate::cache::Evict::evict(&log, 10);
        assert_eq!(log.uncompacted().oldest_cached_at, None);
        // Retention (DeleteRecords) past the compacted offset.
        log.advance_log_start(15);
        assert_eq!(log.uncompacted(), Uncompacted::default());
    }

    #[test]
    fn a_block_cut_from_cached_chunks_stays_cached_until_one_of_them_is_evicted() {
        let id = PartitionId {
            topic_id: Uuid::nil(),
            partition: 0,
        };
        let log = PartitionLog::recovered(id, "t".into(), 1, Default::default(), Vec::new());
        for base in [0, 5, 10, 15] {
            log.commit(sized(base, base + 4, 10, true));
        }
        crate::cache::Evict::evict(&log, 15);
        let block = |base: i64, last: i64| {
            let mut b = sized(base, last, 20, false);
            b.object = Arc::from("segment");
            b.cached = Some(Cached::Block(Arc::from(vec![
                Bytes::from(vec![0u8; 10]),
                Bytes::from(vec![0u8; 10]),
            ])));
            b
        };
        // [0, 10) replaces two cached chunks; [10, 20) one cached, one evicted.
        log.install_segment(0, 20, vec![block(0, 9), block(10, 19)]);
        let cached: Vec<bool> = log
            .segment_blocks()
            .iter()
            .map(|b| b.cached.is_some())
            .collect();
        assert_eq!(cached, [true, false]);
        let first = &log.chunks_from(3, 1)[0];
        assert_eq!(first.cached.as_ref().map(|c| c.pieces().len()), Some(2));
        let len = |c: &Cached| c.pieces().iter().map(Bytes::len).sum::<usize>();
        assert_eq!(first.cached.as_ref().map(len), Some(20));
        // The tail cache evicts the second chunk the block was cut from.
        crate::cache::Evict::evict(&log, 5);
        assert!(log.segment_blocks()[0].cached.is_none());
    }

    #[test]
    fn offsets_continue_after_recovery_and_gaps_are_skipped() {
        let id = PartitionId {
            topic_id: Uuid::nil(),
            partition: 0,
        };
        let log = PartitionLog::recovered(
            id,
            "t".into(),
            1,
            crate::segment::Published::default(),
            vec![chunk(0, 4), chunk(5, 9)],
        );
        assert_eq!(log.high_watermark(), 10);
        assert_eq!(log.reserve(3), Some(10));
        assert_eq!(log.reserve(2), Some(13));
        assert_eq!(log.close(), 15);
        assert_eq!(log.reserve(1), None);
        log.skip_failed(13);
        log.commit(chunk(13, 14));
        assert_eq!(log.high_watermark(), 15);
        let from = log.chunks_from(7, 10);
        assert_eq!(
            from.iter().map(|c| c.entry.base_offset).collect::<Vec<_>>(),
            vec![5, 13]
        );
        let from_gap = log.chunks_from(11, 10);
        assert_eq!(from_gap[0].entry.base_offset, 13);
    }
}
