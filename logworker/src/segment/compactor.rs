//! Compaction and retention, run in the background by each partition's
//! owner, one partition at a time (memory: one segment).
//!
//! Compaction cuts the oldest WAL chunks of a partition into a segment once
//! `segment.bytes` of them wait or the oldest is `segment.ms` old, creates
//! the segment with the conditional create, then publishes it with one
//! compare-and-swap on the partition state that requires this owner's epoch
//! and the compacted offset it started from: a fenced or zombie owner can
//! never publish a segment or move the compacted offset. The same swap
//! drops from the partition's stream list every stream that holds none of
//! its uncompacted data. Produce acknowledgements never wait for any of it.
//!
//! A pass rests after each cut as long as the cut took (see
//! [`rest_after_cut`]), so segments that fall due together do not take the
//! worker's CPU and the store's at once.
//!
//! Between those passes a partition is also cut early, just before the tail
//! cache would evict the chunks waiting for it (see [`early_cut_due`]): a
//! pass every 10 s at a sustained rate would find most of them evicted and
//! read them back from storage, a GET per chunk.
//!
//! Key compaction (`cleanup.policy` with `compact`) then cleans the
//! segments (see [`super::cleaner`]).
//!
//! Retention (`cleanup.policy` with `delete`) deletes whole segments, oldest
//! first, whose newest record is older than `retention.ms` or while the log
//! is larger than `retention.bytes`: it moves the log start offset with the
//! same epoch-checked swap first, then deletes the segments below it.

use crate::crc::Crc32c;
use crate::objstore::{Body, ObjectError};
use crate::partition::{Cached, ChunkRef, PartitionLog, Uncompacted};
use crate::reader;
use crate::segment::{format, read_index, segment_key, SegmentError};
use crate::wal::{split_object_key, stream_prefix};
use crate::worker::Worker;
use futures::StreamExt;
use kafscale_controlplane::log_policy::LogPolicy;
use kafscale_controlplane::metadata::now_ms;
use kafscale_controlplane::MetaError;
use kafscale_proto::metadata::v1::PartitionState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Blocks (the unit of the offset index and of a cold read) hold whole
/// batches up to about this many bytes.
pub const BLOCK_BYTES: usize = 1 << 20;

/// Errors of a compaction or retention step (the step is retried next round).
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Read(#[from] reader::ReadError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("segment {0} exists and does not start the uncompacted log")]
    Conflict(String),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// How often the compaction loop looks for partitions to cut early (see
/// [`early_cut_due`]); the full pass runs every
/// `KAFSCALE_COMPACTION_INTERVAL_MS`.
pub const EARLY_CUT_POLL: Duration = Duration::from_millis(250);

/// The longest the compaction pass rests after one cut (see
/// [`rest_after_cut`]).
pub const MAX_CUT_REST: Duration = Duration::from_secs(1);

/// Rests as long as a cut took (at most [`MAX_CUT_REST`]), or until
/// shutdown. A topic's partitions fill at the same rate, so the pass finds
/// them due together; cut back to back, their segments took the worker's
/// CPU and the store's for a second or more, and the produce acks of that
/// second waited behind them (3 workers at 5 MB/s each: produce p99
/// 266–380 ms, against 249–262 rested). Early cuts do not rest: their chunks
/// are about to leave the cache.
async fn rest_after_cut(took: Duration, shutdown: &watch::Receiver<bool>) {
    let mut shutdown = shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(took.min(MAX_CUT_REST)) => {}
        _ = shutdown.changed() => {}
    }
}

impl Worker {
    /// Every `KAFSCALE_COMPACTION_INTERVAL_MS`: compacts and applies
    /// retention to each owned partition in turn; in between, every
    /// [`EARLY_CUT_POLL`], cuts the partitions whose waiting chunks should
    /// be compacted before the tail cache evicts them.
    pub(crate) async fn compaction_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let interval = self.cfg.compaction_interval;
        let mut last_pass = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval.min(EARLY_CUT_POLL)) => {}
                _ = shutdown.changed() => return,
            }
            if last_pass.elapsed() >= interval {
                self.compaction_pass(&shutdown).await;
                last_pass = Instant::now();
            } else {
                self.cut_early(&shutdown).await;
            }
        }
    }

    /// Cuts, one segment each, the partitions [`early_cut_due`] picks.
    async fn cut_early(&self, shutdown: &watch::Receiver<bool>) {
        let cache = self.wal.tail_cache();
        let (inserted, budget) = (cache.inserted_bytes(), cache.budget());
        let logs: Vec<Arc<PartitionLog>> = self
            .partitions
            .iter()
            .filter(|p| early_cut_due(p.value().uncompacted(), inserted, budget))
            .map(|p| p.value().clone())
            .collect();
        for log in logs {
            if *shutdown.borrow() {
                return;
            }
            let policy = self.log_policy(&log);
            if let Err(e) = self.cut_segment(&log, &policy, false).await {
                tracing::warn!(topic = %log.topic, partition = log.id.partition, error = %e, "compaction failed; retrying next round");
            }
        }
    }

    /// Compacts (segments due by size, age or count), cleans and applies
    /// retention to each owned partition in turn.
    async fn compaction_pass(&self, shutdown: &watch::Receiver<bool>) {
        let logs: Vec<Arc<PartitionLog>> =
            self.partitions.iter().map(|p| p.value().clone()).collect();
        for log in logs {
            if *shutdown.borrow() {
                return;
            }
            let policy = self.log_policy(&log);
            // Cut every segment that is due, resting after each, then
            // apply retention.
            loop {
                let started = Instant::now();
                match self.cut_segment(&log, &policy, true).await {
                    Ok(true) => {
                        rest_after_cut(started.elapsed(), shutdown).await;
                        if *shutdown.borrow() {
                            return;
                        }
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(topic = %log.topic, partition = log.id.partition, error = %e, "compaction failed; retrying next round")
                    }
                }
                break;
            }
            if policy.compact {
                if let Err(e) = self.clean_once(&log, &policy).await {
                    tracing::warn!(topic = %log.topic, partition = log.id.partition, error = %e, "log cleaning failed; retrying next round");
                }
            }
            if policy.delete {
                if let Err(e) = self.apply_retention(&log, &policy).await {
                    tracing::warn!(topic = %log.topic, partition = log.id.partition, error = %e, "retention failed; retrying next round");
                }
            }
        }
    }

    /// The partition's topic settings over the broker defaults.
    pub(crate) fn log_policy(&self, log: &PartitionLog) -> LogPolicy {
        let empty = std::collections::HashMap::new();
        let topic = self.topics.get(&log.id.topic_id);
        let configs = topic.as_ref().map(|t| &t.configs).unwrap_or(&empty);
        LogPolicy::of(configs, &self.cfg.log_defaults)
    }

    /// Cuts one segment of the oldest waiting chunks, at most `segment.bytes`
    /// of them (at least one), if one is due or `only_if_due` is false, and
    /// publishes it; returns whether it did.
    async fn cut_segment(
        &self,
        log: &PartitionLog,
        policy: &LogPolicy,
        only_if_due: bool,
    ) -> Result<bool, CompactionError> {
        let mut waiting = log.uncompacted_chunks();
        if waiting.is_empty() {
            return Ok(false);
        }
        let total: u64 = waiting.iter().map(|c| u64::from(c.entry.length)).sum();
        if only_if_due && !segment_due(waiting.len(), total, log.uncompacted_age(), policy) {
            return Ok(false);
        }
        // The oldest chunks, at most segment.bytes of them (at least one).
        let (mut taken, mut bytes) = (0usize, 0u64);
        for c in &waiting {
            let len = u64::from(c.entry.length);
            if taken > 0 && bytes + len > policy.segment_bytes {
                break;
            }
            bytes += len;
            taken += 1;
        }
        waiting.truncate(taken);
        let start = log.compacted_offset();
        let end = waiting.last().map_or(start, |c| c.entry.last_offset + 1);
        let (blocks, in_cache) = self.blocks_of(waiting).await?;
        let (encoded, index) =
            format::encode_parts(log.id.topic_id, log.id.partition, start, end, &blocks);
        let key = segment_key(&self.cfg.namespace, log.id, start);
        let body = Body::with_crc32c(encoded.parts, encoded.crc);
        // The blocks made of cached chunks only stay in the tail cache.
        let mut cached: Vec<Option<Cached>> = blocks
            .into_iter()
            .zip(in_cache)
            .map(|(b, in_cache)| in_cache.then(|| Cached::Block(Arc::from(b.data))))
            .collect();
        let index = match self.store.put_body_if_absent(&key, body).await {
            Ok(()) => index,
            // An earlier owner cut this segment and could not publish it:
            // its data is the log's (only durable chunks are compacted), so
            // it is published as it is.
            Err(ObjectError::AlreadyExists(_)) => {
                let size = self
                    .store
                    .list(&key)
                    .await?
                    .into_iter()
                    .find(|o| o.key == key)
                    .map(|o| o.size)
                    .ok_or_else(|| CompactionError::Conflict(key.clone()))?;
                let existing = read_index(self.store.as_ref(), &key, size).await?;
                if existing.base_offset != start || existing.end_offset <= start {
                    return Err(CompactionError::Conflict(key));
                }
                tracing::info!(%key, "adopting a segment an earlier owner did not publish");
                cached.clear();
                existing
            }
            Err(e) => return Err(e.into()),
        };
        crate::failpoint::hit("compaction-segment-written");
        let end = index.end_offset;
        self.publish(log, start, end).await?;
        crate::failpoint::hit("compaction-published");
        let key: Arc<str> = Arc::from(key.as_str());
        log.install_segment(
            start,
            end,
            index
                .blocks
                .into_iter()
                .zip(cached.into_iter().chain(std::iter::repeat(None)))
                .map(|(entry, cached)| ChunkRef {
                    object: key.clone(),
                    entry,
                    cached,
                })
                .collect(),
        );
        tracing::info!(topic = %log.topic, partition = log.id.partition, start, end, bytes, "segment published");
        Ok(true)
    }

    /// The chunks' bytes regrouped into blocks of whole batches, and per
    /// block whether all its chunks came from the tail cache.
    async fn blocks_of(
        &self,
        chunks: Vec<ChunkRef>,
    ) -> Result<(Vec<format::BlockInput>, Vec<bool>), CompactionError> {
        let mut blocks: Vec<format::BlockInput> = Vec::new();
        let mut in_cache: Vec<bool> = Vec::new();
        let mut reads = std::pin::pin!(reader::chunks_in_order(&self.source, chunks));
        while let Some(read) = reads.next().await {
            let (c, data) = read?;
            let cached = c.cached.is_some();
            // The chunk's bytes are those its entry's CRC covers: written
            // by this worker, or verified against it when read back. (Bytes
            // of another length are checksummed by the encoder instead.)
            let length = u64::from(c.entry.length);
            let crc = (data.len() as u64 == length).then(|| Crc32c::known(c.entry.crc, length));
            match blocks.last_mut() {
                Some(b) if b.len() + data.len() <= BLOCK_BYTES => {
                    if let Some(all) = in_cache.last_mut() {
                        *all &= cached;
                    }
                    b.crc = b.crc.zip(crc).map(|(so_far, next)| {
                        let mut block = Crc32c::known(so_far, b.len() as u64);
                        block.append(next);
                        block.value()
                    });
                    b.data.push(data);
                    b.last_offset = c.entry.last_offset;
                    b.max_timestamp = b.max_timestamp.max(c.entry.max_timestamp);
                    b.batch_count += c.entry.batch_count;
                }
                _ => {
                    in_cache.push(cached);
                    blocks.push(format::BlockInput {
                        base_offset: c.entry.base_offset,
                        last_offset: c.entry.last_offset,
                        max_timestamp: c.entry.max_timestamp,
                        batch_count: c.entry.batch_count,
                        data: vec![data],
                        crc: crc.map(Crc32c::value),
                    });
                }
            }
        }
        Ok((blocks, in_cache))
    }

    /// Moves the compacted offset from `start` to `end` if this owner still
    /// owns the partition, and drops the streams that hold none of its
    /// uncompacted data any more.
    async fn publish(
        &self,
        log: &PartitionLog,
        start: i64,
        end: i64,
    ) -> Result<(), CompactionError> {
        let ns = &self.cfg.namespace;
        let mine = stream_prefix(ns, &self.cfg.worker_id, self.wal.stream_epoch());
        // Per stream, the first object still holding uncompacted data.
        let mut still_needed: HashMap<String, u64> = HashMap::new();
        // Per stream, the last object just compacted.
        let mut compacted: HashMap<String, u64> = HashMap::new();
        for c in log.uncompacted_chunks() {
            let Some((stream, seq)) = split_object_key(&c.object) else {
                continue;
            };
            if c.entry.base_offset >= end {
                let first = still_needed.entry(stream.to_string()).or_insert(seq);
                *first = (*first).min(seq);
            } else {
                let last = compacted.entry(stream.to_string()).or_insert(seq);
                *last = (*last).max(seq);
            }
        }
        let epoch = owner_epoch(log);
        self.meta
            .try_update_partition_state(log.id.topic_id, log.id.partition, |st| {
                still_owner(st, epoch)?;
                if st.compacted_offset != start {
                    return Err(MetaError::Fenced(format!(
                        "compacted offset is {}, not {start}",
                        st.compacted_offset
                    )));
                }
                st.compacted_offset = end;
                st.streams.retain(|s| {
                    let prefix = stream_prefix(ns, &s.worker_id, s.stream_epoch);
                    prefix == mine || still_needed.contains_key(&prefix)
                });
                // Recovery reads a stream from its first object with
                // uncompacted data; this owner's own stream, when it holds
                // none, from its last compacted object (sequences only grow,
                // so later data is in later objects).
                for s in st.streams.iter_mut() {
                    let prefix = stream_prefix(ns, &s.worker_id, s.stream_epoch);
                    let first = still_needed
                        .get(&prefix)
                        .or_else(|| compacted.get(&prefix).filter(|_| prefix == mine));
                    if let Some(&first) = first {
                        s.first_sequence = s.first_sequence.max(first);
                    }
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Deletes the oldest segments that retention no longer keeps.
    pub(crate) async fn apply_retention(
        &self,
        log: &PartitionLog,
        policy: &LogPolicy,
    ) -> Result<(), CompactionError> {
        let segments = log.segments();
        let now = now_ms();
        let mut size = u64::try_from(log.stored_bytes()).unwrap_or(0);
        let mut new_start = None;
        for s in &segments {
            let expired = policy
                .retention_ms
                .is_some_and(|ms| s.max_timestamp < now.saturating_sub(ms));
            // Kafka's rule: delete while the log without it is still at
            // least retention.bytes.
            let too_big = policy
                .retention_bytes
                .is_some_and(|max| size.saturating_sub(s.bytes) >= max);
            if !(expired || too_big) {
                break;
            }
            size = size.saturating_sub(s.bytes);
            new_start = Some(s.end_offset);
        }
        let Some(new_start) = new_start.filter(|s| *s > log.log_start_offset()) else {
            return Ok(());
        };
        let epoch = owner_epoch(log);
        let st = self
            .meta
            .try_update_partition_state(log.id.topic_id, log.id.partition, |st| {
                still_owner(st, epoch)?;
                st.log_start_offset = st.log_start_offset.max(new_start);
                Ok(())
            })
            .await?;
        crate::failpoint::hit("retention-log-start-moved");
        log.advance_log_start(st.log_start_offset);
        for s in segments
            .iter()
            .filter(|s| s.end_offset <= st.log_start_offset)
        {
            // What is left behind (a crash here) is collected later.
            if let Err(e) = self.store.delete(&s.key).await {
                tracing::warn!(key = %s.key, error = %e, "segment below the log start not deleted");
            }
        }
        tracing::info!(topic = %log.topic, partition = log.id.partition, log_start_offset = st.log_start_offset, "retention advanced the log start");
        Ok(())
    }
}

/// A partition is compacted once this many WAL chunks of it wait, whatever
/// `segment.bytes` and `segment.ms` say. Each waiting chunk keeps its whole
/// WAL object (every partition of one flush) from garbage collection and
/// costs every open of the partition a footer read and a chunk read; a
/// coordinator slot whose group committed twice a second kept 1,198 objects
/// of its owner's stream under the 10-minute `segment.ms` (long nemesis).
pub const MAX_UNCOMPACTED_CHUNKS: usize = 256;

/// From this many waiting chunks on, a partition is compacted as soon as
/// they hold [`SMALL_SEGMENT_BYTES`]: fewer chunks per open, without the
/// segment PUTs that cutting every 64 chunks cost at moderate rates (at
/// 5 MB/s over 12 partitions and five flushes a second, a segment of 64
/// chunks holds ~5 MB: ~200 segment PUTs per GiB on top of the WAL's).
pub const MIN_COMPACTION_CHUNKS: usize = 64;

/// See [`MIN_COMPACTION_CHUNKS`].
pub const SMALL_SEGMENT_BYTES: u64 = 16 << 20;

/// The least a partition is cut early at (see [`early_cut_due`]): at 30 MB/s
/// per worker over 24 partitions a partition's oldest chunk is about to be
/// evicted from a 256 MiB cache when ~8 MiB of it wait; a segment that small
/// costs 128 PUTs per GiB, reading the chunks back ~6,000 GETs per GiB
/// (~170 KB each).
pub const EARLY_CUT_MIN_BYTES: u64 = 8 << 20;

/// Whether a partition should be cut now, before its segment is due: the
/// oldest chunk `waiting` for it is still in the tail cache but three
/// quarters of the cache `budget` have been inserted after it (the cache
/// had `inserted` bytes inserted in all), so it is about to be evicted, and at
/// least [`EARLY_CUT_MIN_BYTES`] wait. A short burst that the cache holds
/// whole is compacted by the regular pass, from memory, with no early cut.
pub fn early_cut_due(waiting: Uncompacted, inserted: u64, budget: u64) -> bool {
    let Some(at) = waiting.oldest_cached_at else {
        return false;
    };
    waiting.bytes >= EARLY_CUT_MIN_BYTES && inserted.saturating_sub(at) >= budget / 4 * 3
}

/// Whether a segment is due: `chunks` WAL chunks of `bytes` wait, the oldest
/// for `age`.
fn segment_due(
    chunks: usize,
    bytes: u64,
    age: Option<std::time::Duration>,
    policy: &LogPolicy,
) -> bool {
    let old = age.is_some_and(|age| {
        age.as_millis() >= u128::try_from(policy.segment_ms).unwrap_or(u128::MAX)
    });
    let many = chunks >= MAX_UNCOMPACTED_CHUNKS
        || (chunks >= MIN_COMPACTION_CHUNKS && bytes >= SMALL_SEGMENT_BYTES);
    chunks > 0 && (bytes >= policy.segment_bytes || old || many)
}

/// Refuses a change unless the partition was last opened at `epoch` (a
/// newer owner records its own epoch before its first append).
pub(crate) fn still_owner(st: &PartitionState, epoch: u64) -> Result<(), MetaError> {
    if st.owner_epoch == epoch {
        return Ok(());
    }
    Err(MetaError::Fenced(format!(
        "partition owned at epoch {}, not {epoch}",
        st.owner_epoch
    )))
}

/// The epoch recorded in the partition state by the owner that opened it.
pub fn owner_epoch(log: &PartitionLog) -> u64 {
    u64::try_from(log.leader_epoch).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafscale_controlplane::log_policy::LogDefaults;
    use std::time::Duration;

    #[test]
    fn many_small_chunks_are_compacted_before_size_or_age_is_reached() {
        let policy = LogPolicy::of(&HashMap::new(), &LogDefaults::default());
        let young = Some(Duration::from_secs(1));
        assert!(!segment_due(0, 0, None, &policy));
        assert!(!segment_due(10, 2_000, young, &policy));
        assert!(segment_due(10, policy.segment_bytes, young, &policy));
        assert!(segment_due(
            10,
            2_000,
            Some(Duration::from_millis(policy.segment_ms as u64)),
            &policy
        ));
        // Regression (long nemesis): a group's commits, 150 bytes twice a
        // second, waited for the 10-minute segment.ms.
        assert!(!segment_due(
            MAX_UNCOMPACTED_CHUNKS - 1,
            9_450,
            young,
            &policy
        ));
        assert!(segment_due(MAX_UNCOMPACTED_CHUNKS, 9_600, young, &policy));
        // Moderate rates: 64 chunks are cut once they hold 16 MiB.
        let small = SMALL_SEGMENT_BYTES;
        assert!(!segment_due(
            MIN_COMPACTION_CHUNKS,
            small - 1,
            young,
            &policy
        ));
        assert!(!segment_due(
            MIN_COMPACTION_CHUNKS - 1,
            small,
            young,
            &policy
        ));
        assert!(segment_due(MIN_COMPACTION_CHUNKS, small, young, &policy));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pass_rests_as_long_as_a_cut_took_at_most_a_second_and_not_past_shutdown() {
        let (stop, shutdown) = watch::channel(false);
        let started = tokio::time::Instant::now();
        rest_after_cut(Duration::from_millis(300), &shutdown).await;
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        let started = tokio::time::Instant::now();
        rest_after_cut(Duration::from_secs(30), &shutdown).await;
        assert_eq!(started.elapsed(), MAX_CUT_REST);
        let started = tokio::time::Instant::now();
        let resting =
            tokio::spawn(async move { rest_after_cut(Duration::from_secs(1), &shutdown).await });
        stop.send(true).expect("the resting task holds a receiver");
        resting.await.expect("rest");
        assert!(started.elapsed() < MAX_CUT_REST);
    }

    #[test]
    fn a_partition_is_cut_early_only_when_its_oldest_chunk_is_about_to_be_evicted() {
        let budget = 256 << 20;
        let waiting = |bytes: u64, at: Option<u64>| Uncompacted {
            bytes,
            oldest_cached_at: at,
        };
        let enough = EARLY_CUT_MIN_BYTES;
        let soon = 1_000 + budget / 4 * 3;
        assert!(early_cut_due(waiting(enough, Some(1_000)), soon, budget));
        // Not yet: a quarter of the cache still arrives before its eviction.
        assert!(!early_cut_due(
            waiting(enough, Some(1_000)),
            soon - 1,
            budget
        ));
        // Too little waits: a tiny segment would cost more than the GETs.
        assert!(!early_cut_due(
            waiting(enough - 1, Some(1_000)),
            soon,
            budget
        ));
        // Evicted already: the regular pass reads it from storage anyway.
        assert!(!early_cut_due(waiting(enough, None), soon, budget));
        assert!(!early_cut_due(waiting(0, None), 0, 0));
    }
}
