//! Group commit: the batches of every partition a worker owns are buffered
//! together and written as one WAL object per flush.
//!
//! Guarantees:
//! - A flush happens when the flush policy says so (`super::policy`: the
//!   size trigger, the target size, or an interval adapted to the ingest
//!   rate, never more than `max_interval` after the oldest byte arrived),
//!   when asked ([`WalWriter::flush_now`], the control API's Flush) and on
//!   shutdown.
//! - Offsets are assigned under the buffer lock, so buffer order is offset order.
//! - An append's completion resolves `Ok` only after the object holding it was
//!   created in the object store; objects commit (advance high watermarks) in
//!   sequence order even with several PUTs in flight.
//! - A flush that cannot be made durable resolves its appends with an error;
//!   its offsets become a gap and are never reissued. A conditional-create
//!   conflict means another owner sealed this stream: the writer is fenced
//!   and accepts nothing more.
//! - An object is acknowledged only if every lower sequence number holds
//!   this writer's own object: nothing commits above a slot whose PUT failed
//!   until the writer has settled that slot (a new owner's end seal may be
//!   there), and nothing commits at all once the stream is fenced. A failed
//!   PUT that turns out to have landed commits after all.
//! - Retrying a failed PUT is the object store's job (its retry wrapper, the
//!   one retry policy of the worker); the writer only bounds how long one
//!   flush may take (`put_deadline`) before its appends fail.
//!
//! A partition's stream is registered in its partition state when the
//! partition is opened (before its first append), never here: the write
//! path touches no metadata.

use super::format::{self, ChunkInput};
use super::policy::{FlushPolicy, FlushSettings};
use crate::batch::{append_patched, extend_crc, BatchInfo};
use crate::cache::TailCache;
use crate::completion::{self, wait_durable, Completion, CompletionSender, WalError};
use crate::crc::Crc32c;
use crate::metrics::Metrics;
use crate::objstore::{Body, ObjectError, ObjectStore};
use crate::partition::{ChunkRef, PartitionId, PartitionLog};
use bytes::Bytes;
use indexmap::IndexMap;
use kafscale_proto::trace_context::{add_links, current_link, TraceLink, TRACE_TARGET};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::Instrument;

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WalConfig {
    pub namespace: String,
    pub worker_id: String,
    pub stream_epoch: u64,
    /// When a buffer is flushed.
    pub flush: FlushSettings,
    pub max_inflight: usize,
    /// How long one flush's PUT (with the store's retries) may take before
    /// the flush fails.
    pub put_deadline: Duration,
    /// How long the oldest unfinished flush may wait for the store before
    /// appends are refused ([`WalError::Stalled`]) until it finishes: a
    /// store that does not answer fails new produces at once instead of
    /// holding them, and every request that shares a client connection
    /// with them, for the whole outage.
    pub stall_limit: Duration,
}

struct Pending {
    log: Arc<PartitionLog>,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    batch_count: u32,
    data: Vec<u8>,
    /// CRC32C of `data`, derived batch by batch from their validated CRCs.
    crc: Crc32c,
}

struct Buffer {
    chunks: IndexMap<PartitionId, Pending>,
    bytes: usize,
    first_at: Option<Instant>,
    done: CompletionSender,
    /// The traced produces this buffer carries (at most [`MAX_FLUSH_LINKS`]).
    links: Vec<TraceLink>,
}

/// Most produce spans one flush span links to (OpenTelemetry's default
/// link limit per span).
const MAX_FLUSH_LINKS: usize = 128;

impl Buffer {
    fn new() -> Self {
        Self {
            chunks: IndexMap::new(),
            bytes: 0,
            first_at: None,
            done: completion::pending().0,
            links: Vec::new(),
        }
    }
}

/// A flush whose PUT is in flight, waiting to commit in order.
struct InFlight {
    seq: u64,
    key: Arc<str>,
    body: Body,
    entries: Vec<format::ChunkEntry>,
    logs: Vec<Arc<PartitionLog>>,
    done: CompletionSender,
    put: tokio::task::JoinHandle<Result<(), ObjectError>>,
    started: Instant,
}

/// The group-commit WAL writer of one worker stream.
pub struct WalWriter {
    cfg: WalConfig,
    store: Arc<dyn ObjectStore>,
    cache: Arc<TailCache>,
    metrics: Metrics,
    buffer: Mutex<Buffer>,
    policy: Mutex<FlushPolicy>,
    wake: Notify,
    fenced: AtomicBool,
    closed: AtomicBool,
    /// Set by [`WalWriter::flush_now`]: flush the buffer without waiting.
    force: AtomicBool,
    /// Sequence number of the newest object started.
    started: AtomicU64,
    /// Objects whose PUT has finished (committed or failed).
    finished: AtomicU64,
    /// Sequence number of the newest object committed (objects commit in
    /// sequence order).
    committed: AtomicU64,
    /// The completion of the newest buffer taken for a flush.
    last_taken: Mutex<Option<Completion>>,
    /// When each flush not finished yet (committed or failed) started,
    /// oldest first.
    unfinished: Mutex<VecDeque<Instant>>,
}

impl WalWriter {
    /// A writer for the stream described by `cfg`.
    pub fn new(
        cfg: WalConfig,
        store: Arc<dyn ObjectStore>,
        cache: Arc<TailCache>,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            policy: Mutex::new(FlushPolicy::new(cfg.flush)),
            cfg,
            store,
            cache,
            metrics,
            buffer: Mutex::new(Buffer::new()),
            wake: Notify::new(),
            fenced: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            force: AtomicBool::new(false),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            last_taken: Mutex::new(None),
            unfinished: Mutex::new(VecDeque::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn policy(&self) -> MutexGuard<'_, FlushPolicy> {
        self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unfinished(&self) -> MutexGuard<'_, VecDeque<Instant>> {
        self.unfinished.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The epoch of the stream this writer appends to.
    pub fn stream_epoch(&self) -> u64 {
        self.cfg.stream_epoch
    }

    /// A lower bound of the sequence number of every object that will hold
    /// data appended from now on: an object's sequence number is assigned
    /// after its buffer is taken, and sequence numbers only grow.
    pub fn next_sequence(&self) -> u64 {
        self.started.load(Ordering::SeqCst) + 1
    }

    /// True once a seal fenced this stream: nothing more will be acknowledged.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// The tail cache this writer fills.
    pub fn tail_cache(&self) -> &TailCache {
        &self.cache
    }

    /// The stream's state for the control API.
    pub fn status(&self) -> kafscale_proto::control::v1::WalStatus {
        let buffered = self.lock().bytes as u64;
        let started = self.started.load(Ordering::SeqCst);
        kafscale_proto::control::v1::WalStatus {
            stream_epoch: self.cfg.stream_epoch,
            buffered_bytes: buffered,
            inflight_flushes: started.saturating_sub(self.finished.load(Ordering::SeqCst)) as u32,
            next_sequence: started + 1,
            fenced: self.is_fenced(),
            durable_sequence: self.committed.load(Ordering::SeqCst),
        }
    }

    /// Flushes the buffer now, without waiting for the flush policy, and
    /// returns once everything appended before the call is durable (or its
    /// flush failed), with the newest committed object's sequence number.
    pub async fn flush_now(&self) -> Result<u64, WalError> {
        let waiting = {
            let buf = self.lock();
            if buf.chunks.is_empty() {
                // Nothing buffered: wait for the newest flush in flight
                // (objects commit in order, so it is the last to finish).
                self.last_taken
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            } else {
                self.force.store(true, Ordering::SeqCst);
                Some(buf.done.subscribe())
            }
        };
        self.wake.notify_one();
        if let Some(c) = waiting {
            wait_durable(c).await?;
        }
        Ok(self.committed.load(Ordering::SeqCst))
    }

    /// Assigns offsets to validated batches and buffers them. Returns the base
    /// offset and the completion that resolves once they are durable.
    pub fn append(
        &self,
        log: &Arc<PartitionLog>,
        records: &[u8],
        batches: &[BatchInfo],
    ) -> Result<(i64, Completion), WalError> {
        let link = current_link();
        let mut buf = self.lock();
        if let Some(l) = link.filter(|_| buf.links.len() < MAX_FLUSH_LINKS) {
            buf.links.push(l);
        }
        if self.is_fenced() {
            return Err(WalError::Fenced);
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(WalError::ShuttingDown);
        }
        if let Some(waited) = self.oldest_flush_waited() {
            if waited >= self.cfg.stall_limit {
                return Err(WalError::Stalled(waited));
            }
        }
        let total: i64 = batches.iter().map(|b| i64::from(b.record_count)).sum();
        let base = log.reserve(total).ok_or(WalError::NotOwner)?;
        let pending = buf.chunks.entry(log.id).or_insert_with(|| Pending {
            log: log.clone(),
            base_offset: base,
            last_offset: base - 1,
            max_timestamp: -1,
            batch_count: 0,
            data: Vec::new(),
            crc: Crc32c::default(),
        });
        let mut offset = base;
        let mut added = 0;
        for b in batches {
            let batch = &records[b.position..b.position + b.size];
            let at = pending.data.len();
            pending.last_offset =
                append_patched(&mut pending.data, batch, offset, log.leader_epoch);
            extend_crc(&mut pending.crc, &pending.data[at..]);
            pending.max_timestamp = pending.max_timestamp.max(b.max_timestamp);
            pending.batch_count += 1;
            offset += i64::from(b.record_count);
            added += b.size;
        }
        buf.bytes += added;
        let first = buf.first_at.is_none();
        buf.first_at.get_or_insert_with(Instant::now);
        let done = buf.done.subscribe();
        // A threshold crossed by this append brings the flush forward.
        let crossed = |limit: usize| buf.bytes >= limit && buf.bytes - added < limit;
        let (target, hard) = (self.cfg.flush.target_bytes, self.cfg.flush.flush_bytes);
        if first || crossed(target) || crossed(hard) {
            self.wake.notify_one();
        }
        Ok((base, done))
    }

    /// Runs the flush loop until `shutdown`; then flushes what is buffered and
    /// waits for every in-flight object to commit.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let (tx, rx) = mpsc::channel::<InFlight>(self.cfg.max_inflight.max(1));
        let committer = tokio::spawn(self.clone().commit_loop(rx, shutdown.clone()));
        let mut seq: u64 = 0;
        loop {
            let stopping = self.wait_for_flush(&mut shutdown).await;
            if stopping {
                self.closed.store(true, Ordering::SeqCst);
            }
            let taken = {
                let mut buf = self.lock();
                let taken = std::mem::replace(&mut *buf, Buffer::new());
                // Under the buffer lock: a flush_now that finds the buffer
                // empty must find this buffer's completion to wait for.
                if !taken.chunks.is_empty() {
                    *self.last_taken.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(taken.done.subscribe());
                }
                taken
            };
            if !taken.chunks.is_empty() {
                self.policy().observe_take(taken.bytes, Instant::now());
                seq += 1;
                self.started.store(seq, Ordering::SeqCst);
                if tx.send(self.start_flush(seq, taken)).await.is_err() {
                    break;
                }
            }
            if stopping {
                break;
            }
        }
        drop(tx);
        let _ = committer.await;
    }

    /// Waits until the buffer must be flushed; returns true on shutdown.
    async fn wait_for_flush(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        loop {
            if *shutdown.borrow() {
                return true;
            }
            let (bytes, first_at) = {
                let b = self.lock();
                (b.bytes, b.first_at)
            };
            if self.force.swap(false, Ordering::SeqCst) && bytes > 0 {
                return false;
            }
            let due = first_at.map(|t| self.policy().due(bytes, t));
            match due {
                Some(d) if Instant::now() >= d => return false,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {}
                        _ = self.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// How long the oldest flush not finished yet has been waiting for the
    /// store, if one is in flight.
    fn oldest_flush_waited(&self) -> Option<Duration> {
        self.unfinished().front().map(|started| started.elapsed())
    }

    /// Counts the oldest unfinished flush as finished (flushes finish in
    /// sequence order).
    fn flush_finished(&self) {
        self.finished.fetch_add(1, Ordering::SeqCst);
        self.unfinished().pop_front();
    }

    /// Encodes the buffer as one object and starts its PUT.
    fn start_flush(&self, seq: u64, taken: Buffer) -> InFlight {
        let mut inputs = Vec::with_capacity(taken.chunks.len());
        let mut logs = Vec::with_capacity(taken.chunks.len());
        for (id, p) in taken.chunks {
            inputs.push(ChunkInput {
                topic_id: id.topic_id,
                partition: id.partition,
                base_offset: p.base_offset,
                last_offset: p.last_offset,
                max_timestamp: p.max_timestamp,
                batch_count: p.batch_count,
                data: exact(p.data),
                crc: Some(p.crc.value()),
            });
            logs.push(p.log);
        }
        let (encoded, entries) = format::encode_parts(inputs);
        let body = Body::with_crc32c(encoded.parts, encoded.crc);
        let key: Arc<str> = Arc::from(super::object_key(
            &self.cfg.namespace,
            &self.cfg.worker_id,
            self.cfg.stream_epoch,
            seq,
        ));
        // Its own trace, linked to every traced produce it carries; the
        // PUT's spans are its children.
        let span = tracing::info_span!(
            target: TRACE_TARGET,
            parent: None,
            "wal.flush",
            wal.seq = seq,
            wal.bytes = body.len(),
            wal.chunks = entries.len(),
            wal.linked_produces = taken.links.len(),
        );
        add_links(&span, taken.links);
        let started = Instant::now();
        self.unfinished().push_back(started);
        let put = tokio::spawn(
            put_within(
                self.store.clone(),
                key.clone(),
                body.clone(),
                self.cfg.put_deadline,
            )
            .instrument(span),
        );
        InFlight {
            seq,
            key,
            body,
            entries,
            logs,
            done: taken.done,
            put,
            started,
        }
    }

    /// Commits in-flight objects strictly in sequence order.
    ///
    /// An object is acknowledged only if every lower sequence number holds
    /// this writer's own object: a slot whose PUT failed may hold a new
    /// owner's end seal, and an object above an end seal is not part of the
    /// stream (recovery stops at the seal). So the slot of a failed PUT is
    /// settled ([`Self::settle_failed_slot`]) before anything above it
    /// commits, and once the stream is fenced nothing above the seal
    /// commits, however its own PUT went.
    async fn commit_loop(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<InFlight>,
        shutdown: watch::Receiver<bool>,
    ) {
        while let Some(mut f) = rx.recv().await {
            let result = match (&mut f.put).await {
                Ok(r) => r,
                Err(e) => Err(ObjectError::Transient {
                    key: f.key.to_string(),
                    reason: e.to_string(),
                }),
            };
            let err = match result {
                Ok(()) if !self.is_fenced() => {
                    self.commit(f);
                    continue;
                }
                // Durable, but perhaps above an end seal: never acknowledged.
                Ok(()) => WalError::Fenced,
                Err(ObjectError::AlreadyExists(_)) => {
                    self.fence(&f.key, "WAL object exists");
                    WalError::Fenced
                }
                Err(_) if self.is_fenced() => WalError::Fenced,
                Err(e) => {
                    tracing::error!(key = %f.key, seq = f.seq, error = %e, "WAL flush failed");
                    match self.settle_failed_slot(&f, shutdown.clone()).await {
                        Slot::OwnObject => {
                            // The PUT landed after all: durable, in order.
                            self.commit(f);
                            continue;
                        }
                        Slot::OwnHole => WalError::Storage(e),
                        Slot::Lost => WalError::Fenced,
                    }
                }
            };
            for (entry, log) in f.entries.iter().zip(&f.logs) {
                log.skip_failed(entry.last_offset + 1);
            }
            self.flush_finished();
            f.done.send_replace(Some(Err(err)));
        }
    }

    /// Makes an object's chunks visible and resolves its appends as durable.
    fn commit(&self, f: InFlight) {
        self.metrics.wal_flush_bytes.observe(f.body.len() as f64);
        self.metrics
            .wal_flush_seconds
            .observe(f.started.elapsed().as_secs_f64());
        // Parts: the header, then each entry's chunk, then the footer.
        let chunks = f.body.parts().iter().skip(1);
        for ((entry, log), data) in f.entries.into_iter().zip(f.logs).zip(chunks) {
            let data = data.clone();
            let cache = self.cache.admits(data.len());
            let (base, len) = (entry.base_offset, data.len());
            let at = self.cache.inserted_bytes() + len as u64;
            log.commit(ChunkRef {
                object: f.key.clone(),
                entry,
                cached: cache.then_some(crate::partition::Cached::Chunk { data, at }),
            });
            if cache {
                self.cache.inserted(&log, base, len);
            }
        }
        self.committed.store(f.seq, Ordering::SeqCst);
        self.flush_finished();
        f.done.send_replace(Some(Ok(())));
    }

    /// Marks the stream fenced: nothing more is appended or acknowledged.
    fn fence(&self, key: &str, why: &str) {
        self.fenced.store(true, Ordering::SeqCst);
        tracing::error!(%key, why, "WAL stream fenced, no further acks");
    }

    /// Settles the slot of a flush whose PUT failed: writes this writer's
    /// own hole seal there, or finds there the flush's object (its PUT
    /// landed after all) or that seal from an earlier attempt. Anything else
    /// there was written by a new owner sealing the stream, which fences the
    /// writer. Retries while the store fails; on shutdown an unsettled slot
    /// fences the writer too, since it can no longer tell what is there.
    async fn settle_failed_slot(&self, f: &InFlight, mut shutdown: watch::Receiver<bool>) -> Slot {
        let own_hole = format::encode_seal(
            format::SealKind::Hole,
            &format!("{}@{}/writer", self.cfg.worker_id, self.cfg.stream_epoch),
        );
        loop {
            let found = match self.store.put_if_absent(&f.key, own_hole.clone()).await {
                Ok(()) => Some(Slot::OwnHole),
                Err(ObjectError::AlreadyExists(_)) => match self.store.get(&f.key).await {
                    Ok(there) if f.body.matches(&there) => Some(Slot::OwnObject),
                    Ok(there) if there == own_hole => Some(Slot::OwnHole),
                    Ok(_) => Some(Slot::Lost),
                    Err(_) => None,
                },
                Err(_) => None,
            };
            match found {
                Some(Slot::Lost) => {
                    self.fence(&f.key, "a new owner sealed the slot of a failed flush");
                    return Slot::Lost;
                }
                Some(slot) => {
                    tracing::warn!(key = %f.key, own_object = matches!(slot, Slot::OwnObject), "slot of a failed flush settled");
                    return slot;
                }
                None => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(SETTLE_RETRY) => {}
                _ = shutdown.wait_for(|s| *s) => {
                    self.fence(&f.key, "shutting down with the slot of a failed flush unsettled");
                    return Slot::Lost;
                }
            }
        }
    }
}

/// A chunk's buffer as `Bytes` that hold no more memory than its length: a
/// chunk is written as it was buffered and then kept in the tail cache,
/// which counts its length, while the buffer grew by doubling. Shrinking
/// in place does not copy.
fn exact(mut data: Vec<u8>) -> Bytes {
    data.shrink_to_fit();
    Bytes::from(data)
}

/// What the slot of a flush whose PUT failed turned out to hold.
enum Slot {
    /// The flush's own object: its PUT landed after all.
    OwnObject,
    /// This writer's own hole seal: the slot holds no data.
    OwnHole,
    /// A new owner's seal (or it could not be told): the writer is fenced.
    Lost,
}

/// Pause between attempts to settle a failed slot (each attempt already
/// retries within the store's deadline).
const SETTLE_RETRY: Duration = Duration::from_secs(1);

/// Creates `key` through the (retrying) store, giving up once `deadline`
/// has passed: the flush then fails and its appends are answered with a
/// retriable error, never acknowledged.
async fn put_within(
    store: Arc<dyn ObjectStore>,
    key: Arc<str>,
    body: Body,
    deadline: Duration,
) -> Result<(), ObjectError> {
    match tokio::time::timeout(deadline, store.put_body_if_absent(&key, body)).await {
        Ok(r) => r,
        Err(_) => Err(ObjectError::Transient {
            key: key.to_string(),
            reason: format!("no durable PUT within {deadline:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{tests::encode, validate};
    use crate::objstore::{local::LocalDirStore, ObjectMeta};
    use crate::segment::Published;
    use async_trait::async_trait;
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::records::Compression;
    use std::ops::Range;
    use uuid::Uuid;

    /// What the held PUT of slot 1 finds when the test releases it.
    #[derive(Clone, Copy)]
    enum SlotOne {
        /// The PUT lands.
        Lands,
        /// A new owner's end seal was there before the PUT: 412.
        SealedBefore,
        /// The PUT fails transiently and nothing lands.
        Failed,
        /// The PUT fails transiently, and a new owner's end seal is there.
        FailedThenSealed,
        /// The PUT lands but its answer is lost (a transient error).
        LandedAnswerLost,
    }

    /// A store whose first PUT of slot 1 is held until released, then ends
    /// as the test's [`SlotOne`] says; every other call goes through.
    struct SlotOneStore {
        inner: LocalDirStore,
        key: String,
        outcome: SlotOne,
        tripped: AtomicBool,
        held: Notify,
        release: tokio::sync::Semaphore,
    }

    #[async_trait]
    impl ObjectStore for SlotOneStore {
        async fn put_body_if_absent(&self, key: &str, body: Body) -> Result<(), ObjectError> {
            if key != self.key || self.tripped.swap(true, Ordering::SeqCst) {
                return self.inner.put_body_if_absent(key, body).await;
            }
            self.held.notify_one();
            drop(self.release.acquire().await);
            let seal = format::encode_seal(format::SealKind::End, "new-owner");
            let transient = Err(ObjectError::Transient {
                key: key.into(),
                reason: "injected".into(),
            });
            match self.outcome {
                SlotOne::Lands | SlotOne::SealedBefore => {
                    self.inner.put_body_if_absent(key, body).await
                }
                SlotOne::Failed => transient,
                SlotOne::FailedThenSealed => {
                    self.inner.put_if_absent(key, seal).await?;
                    transient
                }
                SlotOne::LandedAnswerLost => {
                    self.inner.put_body_if_absent(key, body).await?;
                    transient
                }
            }
        }
        async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
            self.inner.get_range(key, range).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), ObjectError> {
            self.inner.delete(key).await
        }
    }

    fn slot_one_store(dir: &std::path::Path, outcome: SlotOne) -> Arc<SlotOneStore> {
        Arc::new(SlotOneStore {
            inner: LocalDirStore::open(dir).expect("store"),
            key: crate::wal::object_key("ns", "w", 1, 1),
            outcome,
            tripped: AtomicBool::new(false),
            held: Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        })
    }

    /// A running writer that flushes every append at once, on a store
    /// that holds the PUT of slot 1 until the test releases it (and lets it
    /// land); the writer stops when the returned sender is dropped.
    fn held_slot_one(
        stall_limit: Duration,
    ) -> (
        tempfile::TempDir,
        Arc<SlotOneStore>,
        Arc<WalWriter>,
        watch::Sender<bool>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = slot_one_store(dir.path(), SlotOne::Lands);
        let w = writer_with(store.clone(), 1, stall_limit);
        let stop = start(&w);
        (dir, store, w, stop)
    }

    /// Runs `w` in the background until the returned sender is dropped.
    fn start(w: &Arc<WalWriter>) -> watch::Sender<bool> {
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(w.clone().run(shutdown));
        stop
    }

    fn log() -> Arc<PartitionLog> {
        let id = PartitionId {
            topic_id: Uuid::nil(),
            partition: 0,
        };
        Arc::new(PartitionLog::recovered(
            id,
            "t".into(),
            0,
            Published::default(),
            Vec::new(),
        ))
    }

    /// A writer whose interval is an hour: only a size threshold (or
    /// shutdown) flushes within a test.
    fn writer(store: Arc<dyn ObjectStore>, flush_bytes: usize) -> Arc<WalWriter> {
        writer_with(store, flush_bytes, Duration::from_secs(3600))
    }

    /// [`writer`] with its own [`WalConfig::stall_limit`].
    fn writer_with(
        store: Arc<dyn ObjectStore>,
        flush_bytes: usize,
        stall_limit: Duration,
    ) -> Arc<WalWriter> {
        let registry = prometheus::Registry::new();
        let cfg = WalConfig {
            namespace: "ns".into(),
            worker_id: "w".into(),
            stream_epoch: 1,
            flush: FlushSettings {
                flush_bytes,
                target_bytes: flush_bytes,
                min_interval: Duration::from_secs(3600),
                max_interval: Duration::from_secs(3600),
            },
            max_inflight: 4,
            put_deadline: Duration::from_secs(3600),
            stall_limit,
        };
        let metrics = Metrics::new(&registry).expect("metrics");
        WalWriter::new(cfg, store, Arc::new(TailCache::new(1 << 20)), metrics)
    }

    /// A running [`writer`] on a local directory; the writer stops when the
    /// returned sender is dropped.
    fn running(
        flush_bytes: usize,
    ) -> (
        tempfile::TempDir,
        Arc<LocalDirStore>,
        Arc<WalWriter>,
        watch::Sender<bool>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalDirStore::open(dir.path()).expect("store"));
        let w = writer(store.clone(), flush_bytes);
        let stop = start(&w);
        (dir, store, w, stop)
    }

    fn append(w: &WalWriter, log: &Arc<PartitionLog>, n: usize) -> Completion {
        let records = encode(n, Compression::None, 0);
        let batches = validate(&records, usize::MAX).expect("valid batch");
        w.append(log, &records, &batches).expect("append").1
    }

    const PATIENCE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn the_size_trigger_flushes_without_waiting_for_the_interval() {
        let (_dir, store, w, _stop) = running(4096);
        let log = log();
        // Below the trigger: nothing is flushed.
        let small = append(&w, &log, 1);
        tokio::task::yield_now().await;
        assert!(small.borrow().is_none());
        // Crossing it flushes both appends as one object, long before the
        // hour-long interval.
        let big = append(&w, &log, 60);
        let waited = tokio::time::timeout(PATIENCE, completion::wait_durable(big)).await;
        assert_eq!(waited.expect("flushed by size"), Ok(()));
        assert_eq!(small.borrow().clone(), Some(Ok(())));
        assert_eq!(store.list("ns/wal/").await.expect("list").len(), 1);
        assert_eq!(log.high_watermark(), 61);
    }

    #[tokio::test]
    async fn an_append_is_acknowledged_only_once_its_object_exists() {
        let (_dir, store, w, _stop) = held_slot_one(Duration::from_secs(3600));
        let log = log();
        let done = append(&w, &log, 3);
        tokio::time::timeout(PATIENCE, store.held.notified())
            .await
            .expect("the flush started its PUT");
        // The PUT is in flight, not done: no ack, no visible offsets.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(done.borrow().is_none());
        assert_eq!(log.high_watermark(), 0);
        assert!(store.inner.list("ns/wal/").await.expect("list").is_empty());
        store.release.add_permits(1);
        let waited = tokio::time::timeout(PATIENCE, completion::wait_durable(done)).await;
        assert_eq!(waited.expect("acknowledged"), Ok(()));
        assert_eq!(store.inner.list("ns/wal/").await.expect("list").len(), 1);
        assert_eq!(log.high_watermark(), 3);
    }

    #[tokio::test]
    async fn a_store_that_does_not_answer_gets_no_new_appends_until_it_does() {
        const LIMIT: Duration = Duration::from_millis(200);
        let (_dir, store, w, _stop) = held_slot_one(LIMIT);
        let log = log();
        let first = append(&w, &log, 3);
        tokio::time::timeout(PATIENCE, store.held.notified())
            .await
            .expect("the flush started its PUT");
        // The PUT has now waited at least the limit.
        tokio::time::sleep(LIMIT).await;
        let records = encode(2, Compression::None, 0);
        let batches = validate(&records, usize::MAX).expect("valid batch");
        match w.append(&log, &records, &batches) {
            Err(e @ WalError::Stalled(waited)) => {
                assert!(waited >= LIMIT, "{waited:?}");
                assert_eq!(e.kafka_code(), ResponseError::KafkaStorageError.code());
            }
            other => panic!("an append behind a stalled store was taken: {other:?}"),
        }
        // The store answers: the first append is durable, and appends are
        // taken again, from the next offset (the refused one reserved none).
        store.release.add_permits(1);
        let waited = tokio::time::timeout(PATIENCE, completion::wait_durable(first)).await;
        assert_eq!(waited.expect("acknowledged"), Ok(()));
        let (base, done) = w
            .append(&log, &records, &batches)
            .expect("taken once the store answered");
        assert_eq!(base, 3);
        let waited = tokio::time::timeout(PATIENCE, completion::wait_durable(done)).await;
        assert_eq!(waited.expect("acknowledged"), Ok(()));
        assert_eq!(log.high_watermark(), 5);
    }

    #[tokio::test]
    async fn flush_now_writes_the_buffer_and_answers_once_it_is_durable() {
        let (_dir, store, w, _stop) = running(1 << 20);
        let log = log();
        // Nothing written yet: a flush has nothing to wait for.
        let none = tokio::time::timeout(PATIENCE, w.flush_now()).await;
        assert_eq!(none.expect("answers at once"), Ok(0));
        let done = append(&w, &log, 5);
        assert!(w.status().buffered_bytes > 0);
        let flushed = tokio::time::timeout(PATIENCE, w.flush_now()).await;
        assert_eq!(flushed.expect("flushed long before the interval"), Ok(1));
        assert_eq!(done.borrow().clone(), Some(Ok(())));
        assert_eq!(log.high_watermark(), 5);
        let status = w.status();
        assert_eq!(
            (
                status.buffered_bytes,
                status.inflight_flushes,
                status.durable_sequence
            ),
            (0, 0, 1)
        );
        assert_eq!(store.list("ns/wal/").await.expect("list").len(), 1);
    }

    /// What a partition opening on a long-lived writer registers as its
    /// stream's first sequence (`next_sequence` before the partition's
    /// first append) is never above the object that holds its data.
    #[tokio::test]
    async fn data_appended_after_next_sequence_is_never_below_it() {
        let (_dir, store, w, _stop) = running(1 << 20);
        let other = log();
        assert_eq!(w.next_sequence(), 1);
        for _ in 0..5 {
            append(&w, &other, 2);
            tokio::time::timeout(PATIENCE, w.flush_now())
                .await
                .expect("flushed")
                .expect("durable");
        }
        // Buffered but not yet flushed data of another partition does not
        // move it: the buffer is not taken yet.
        append(&w, &other, 1);
        let from = w.next_sequence();
        assert_eq!(from, 6);
        let id = PartitionId {
            topic_id: Uuid::from_u128(7),
            partition: 1,
        };
        let opened = Arc::new(PartitionLog::recovered(
            id,
            "t2".into(),
            0,
            Published::default(),
            Vec::new(),
        ));
        append(&w, &opened, 3);
        tokio::time::timeout(PATIENCE, w.flush_now())
            .await
            .expect("flushed")
            .expect("durable");
        let holding: Vec<u64> = store
            .list("ns/wal/")
            .await
            .expect("list")
            .iter()
            .filter_map(|o| crate::wal::split_object_key(&o.key).map(|(_, seq)| seq))
            .filter(|seq| *seq >= from)
            .collect();
        assert_eq!(
            holding,
            vec![6],
            "the opened partition's data is at or above {from}"
        );
    }

    /// Appends `a` (object 1, its PUT held) and then `b` (object 2, created
    /// while object 1 is still in flight), releases object 1's PUT, and
    /// returns both appends' outcomes, the log's committed chunks' base
    /// offsets and what slot 1 holds at the end.
    async fn slot_one_then_two(
        outcome: SlotOne,
    ) -> (
        Option<Result<(), WalError>>,
        Option<Result<(), WalError>>,
        Vec<i64>,
        Bytes,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = slot_one_store(dir.path(), outcome);
        let key = store.key.clone();
        if matches!(outcome, SlotOne::SealedBefore) {
            let seal = format::encode_seal(format::SealKind::End, "new-owner");
            store.inner.put_if_absent(&key, seal).await.expect("seal");
        }
        let w = writer(store.clone(), 1 << 20);
        let _stop = start(&w);
        let log = log();
        let a = append(&w, &log, 2);
        let first = tokio::spawn({
            let w = w.clone();
            async move { w.flush_now().await }
        });
        tokio::time::timeout(PATIENCE, store.held.notified())
            .await
            .expect("object 1's PUT started");
        let b = append(&w, &log, 3);
        let second = tokio::spawn({
            let w = w.clone();
            async move { w.flush_now().await }
        });
        let two = crate::wal::object_key("ns", "w", 1, 2);
        tokio::time::timeout(PATIENCE, async {
            while store.inner.get(&two).await.is_err() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("object 2 was created");
        store.release.add_permits(1);
        for flush in [first, second] {
            let _ = tokio::time::timeout(PATIENCE, flush)
                .await
                .expect("flush answered");
        }
        let committed = log
            .all_chunks()
            .iter()
            .map(|c| c.entry.base_offset)
            .collect();
        let slot = store.inner.get(&key).await.expect("slot 1 holds an object");
        let (a, b) = (a.borrow().clone(), b.borrow().clone());
        (a, b, committed, slot)
    }

    /// Regression (torture run under S3 faults: one offset acked twice): a
    /// writer whose PUT found a new owner's end seal still acknowledged the
    /// object above it, which recovery ignores (it is beyond the seal), so
    /// the new owner reissued its offsets.
    #[tokio::test]
    async fn nothing_above_a_seal_is_acknowledged_even_if_its_put_succeeded() {
        let (a, b, committed, _) = slot_one_then_two(SlotOne::SealedBefore).await;
        assert_eq!(a, Some(Err(WalError::Fenced)));
        assert_eq!(b, Some(Err(WalError::Fenced)));
        assert!(committed.is_empty());
    }

    #[tokio::test]
    async fn a_failed_slot_is_settled_before_the_object_above_it_commits() {
        let (a, b, committed, slot) = slot_one_then_two(SlotOne::Failed).await;
        assert!(matches!(a, Some(Err(WalError::Storage(_)))), "{a:?}");
        assert_eq!(b, Some(Ok(())));
        assert_eq!(committed, vec![2]);
        assert_eq!(format::decode_seal(&slot), Some(format::SealKind::Hole));
    }

    #[tokio::test]
    async fn a_failed_slot_a_new_owner_sealed_fences_the_writer() {
        let (a, b, committed, slot) = slot_one_then_two(SlotOne::FailedThenSealed).await;
        assert_eq!(a, Some(Err(WalError::Fenced)));
        assert_eq!(b, Some(Err(WalError::Fenced)));
        assert!(committed.is_empty());
        assert_eq!(format::decode_seal(&slot), Some(format::SealKind::End));
    }

    #[tokio::test]
    async fn a_failed_put_that_landed_after_all_commits_in_order() {
        let (a, b, committed, slot) = slot_one_then_two(SlotOne::LandedAnswerLost).await;
        // Durable after all: acknowledged, and a retry of it is answered
        // as a duplicate rather than stored again.
        assert_eq!(a, Some(Ok(())));
        assert_eq!(b, Some(Ok(())));
        assert_eq!(committed, vec![0, 2]);
        assert_eq!(format::decode_seal(&slot), None);
    }
}
