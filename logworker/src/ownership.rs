//! Partition ownership of a log worker: follows the assignments, opens
//! newly assigned partitions and hands over the ones that moved away.
//!
//! Guarantees:
//! - Before a partition takes its first append here, every other stream that
//!   may hold its uncompacted data is final (closed by its live writer at
//!   handover, or sealed), this worker's stream is registered in the
//!   partition state, and the durable log is recovered; so offsets continue
//!   after the last durable one and are never reissued.
//! - A partition that moved away takes no new appends; once everything it
//!   accepted is durable, its stream is marked closed for the partition so
//!   the new owner need not seal it (if the mark fails, the new owner seals).
//! - Idempotent producers' recent batches are rebuilt from the newest
//!   chunks of the partition's log (see [`producer_scan`]).

use crate::partition::{ChunkRef, PartitionId, PartitionLog};
use crate::reader;
use crate::recovery::recover_chunks;
use crate::seal::seal_stream;
use crate::worker::{Worker, WorkerError};
use futures::StreamExt;
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_controlplane::offsets_topic::OFFSETS_TOPIC;
use kafscale_controlplane::MetaError;
use kafscale_proto::metadata::v1::StreamRef;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How many of the partition's newest chunks a new owner reads to rebuild
/// its idempotent producers, as a multiple of the writes in flight: a batch
/// that was durable but not yet acknowledged when its writer died is in the
/// writer's last `max_inflight_puts` objects, which hold the log's newest
/// chunks (one chunk per object and partition), so its retry finds it.
const PRODUCER_SCAN_INFLIGHT_MULTIPLE: usize = 2;

/// Chunks read beyond the multiple above, so that a log whose newest data
/// was just compacted still shows its last batches (segment blocks count as
/// chunks).
const PRODUCER_SCAN_EXTRA: usize = 2;

/// The chunks in which a new owner looks for idempotent producers' recent
/// batches: the partition's newest `n` chunks (`chunks` in offset order,
/// segment blocks and WAL chunks alike). They are a contiguous end of the
/// log, so every batch newer than one that is read is read too, and each
/// producer's rebuilt state ends at its newest batch; a producer seen in none
/// of them is unknown to the new owner and may continue at any sequence.
/// (A window per WAL stream plus the newest segment blocks, as before, could
/// skip the chunks between them: a producer idle there was rebuilt at an
/// older batch and its next one refused as out of sequence, which
/// librdkafka treats as fatal; long nemesis.)
fn producer_scan(chunks: &[ChunkRef], n: usize) -> &[ChunkRef] {
    &chunks[chunks.len().saturating_sub(n)..]
}

/// This worker's stream as it is listed in a partition's state when the
/// partition opens here: `listed` is its entry already there (the same
/// incarnation owned the partition before and its data may be anywhere in
/// the stream since that entry's `first_sequence`), and `next_sequence` the
/// writer's [`crate::wal::writer::WalWriter::next_sequence`] read before the
/// partition can take an append. A new entry starts there: the partition has
/// no data in the objects this worker wrote before, so whoever opens it
/// next never reads their footers (a long-lived writer's stream may hold
/// thousands of objects for other partitions).
fn registered_stream(listed: Option<&StreamRef>, own: &StreamRef, next_sequence: u64) -> StreamRef {
    StreamRef {
        first_sequence: listed.map_or(next_sequence, |x| x.first_sequence),
        closed: false,
        ..own.clone()
    }
}

/// Longest a worker's readiness waits for the partitions assigned to it at
/// start to open (an open waits up to [`HANDOVER_WAIT`] for a live previous
/// owner, then seals and reads storage, which may be failing).
const READY_OPEN_WAIT: Duration = Duration::from_secs(30);

/// How long a new owner waits for a live previous owner to close its stream
/// before sealing it.
const HANDOVER_WAIT: Duration = Duration::from_secs(10);

impl Worker {
    /// Opens newly assigned partitions and drops ones that moved away or were deleted.
    pub(crate) async fn ownership_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let store = self.meta.store().clone();
        let (Ok(mut a_watch), Ok(mut t_watch)) = (
            store.watch(&self.meta.keys().assignments()).await,
            store.watch(&self.meta.keys().topics()).await,
        ) else {
            tracing::error!("cannot watch metadata; worker will not own partitions");
            return;
        };
        // The partitions assigned when the worker started: it is ready once
        // none of them is still opening, or [`READY_OPEN_WAIT`] after they
        // started to. Later moves do not hold readiness back (under constant
        // churn some open is always in progress), and neither does the
        // slowest open: the others are served meanwhile.
        let mut initial: Option<(HashSet<PartitionId>, tokio::time::Instant)> = None;
        loop {
            match self.sync_ownership().await {
                Ok(()) => {
                    let (pending, since) = initial.get_or_insert_with(|| {
                        let ids = self.opening.iter().map(|e| *e.key()).collect();
                        (ids, tokio::time::Instant::now())
                    });
                    pending.retain(|id| self.opening.contains_key(id));
                    let waited = since.elapsed() >= READY_OPEN_WAIT;
                    if !*self.ready.borrow() && (pending.is_empty() || waited) {
                        if !pending.is_empty() {
                            tracing::warn!(
                                still_opening = pending.len(),
                                "ready before every assigned partition is open"
                            );
                        }
                        self.ready.send_replace(true);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ownership sync failed; retrying"),
            }
            tokio::select! {
                _ = a_watch.next() => {}
                _ = t_watch.next() => {}
                _ = self.opened.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Hands over the partitions that moved away and starts opening the
    /// newly assigned ones, each in its own task: an open may wait for a
    /// previous owner's handover (up to [`HANDOVER_WAIT`]), and that owner
    /// may in turn wait for one of ours, so handovers must never queue
    /// behind opens.
    async fn sync_ownership(self: &Arc<Self>) -> Result<(), WorkerError> {
        let topics = self.meta.list_topics().await?;
        self.topics.clear();
        self.topic_partitions.clear();
        for t in &topics {
            self.topics.insert(topic_uuid(t), t.clone());
            self.topic_partitions.insert(t.name.clone(), t.partitions);
        }
        let mine: Vec<_> = self
            .meta
            .list_assignments()
            .await?
            .into_iter()
            .filter(|(_, a)| a.worker_id == self.cfg.worker_id)
            .collect();
        let wanted: HashSet<PartitionId> = mine
            .iter()
            .map(|((t, p), _)| PartitionId {
                topic_id: *t,
                partition: *p,
            })
            .collect();
        let offsets_topic = self
            .topics
            .iter()
            .find(|t| t.name == OFFSETS_TOPIC)
            .map(|t| *t.key());
        let lost: Vec<PartitionId> = self
            .partitions
            .iter()
            .map(|p| *p.key())
            .filter(|id| !wanted.contains(id))
            .collect();
        for id in lost {
            if Some(id.topic_id) == offsets_topic {
                self.groups.unload(id.partition);
            }
            if let Some((_, log)) = self.partitions.remove(&id) {
                tokio::spawn(self.clone().hand_over(log));
            }
        }
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let to_open: Vec<(PartitionId, String, i32)> = mine
            .into_iter()
            .filter_map(|((topic_id, partition), a)| {
                let id = PartitionId {
                    topic_id,
                    partition,
                };
                if self.partitions.contains_key(&id) || self.opening.contains_key(&id) {
                    return None;
                }
                let topic = self.topics.get(&topic_id).map(|t| t.name.clone())?;
                Some((id, topic, a.epoch as i32))
            })
            .collect();
        if to_open.is_empty() {
            return Ok(());
        }
        for (id, topic, epoch) in to_open {
            self.opening.insert(id, ());
            let me = self.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                if let Err(e) = me.open_partition(id, topic.clone(), epoch).await {
                    tracing::warn!(partition = id.partition, error = %e, "partition open failed; retrying");
                }
                if started.elapsed() > Duration::from_secs(5) {
                    tracing::info!(%topic, partition = id.partition, elapsed_ms = started.elapsed().as_millis() as u64, "slow partition open");
                }
                me.opening.remove(&id);
                if me.opening.is_empty() {
                    // Listings are shared only by opens running together.
                    me.catalog.clear().await;
                }
                me.opened.notify_one();
            });
        }
        Ok(())
    }

    /// Planned shutdown: stops taking appends on every partition, waits
    /// until everything accepted is durable and closes this worker's stream
    /// for each partition, so new owners take over without sealing.
    pub async fn drain(self: &Arc<Self>) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Opens still in progress when draining began may insert their
        // partition after a pass: pass again until none is left.
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT + Duration::from_secs(5);
        let mut n = 0;
        loop {
            let ids: Vec<PartitionId> = self.partitions.iter().map(|p| *p.key()).collect();
            let mut handovers = Vec::new();
            for id in ids {
                if let Some((_, log)) = self.partitions.remove(&id) {
                    if log.topic == OFFSETS_TOPIC {
                        self.groups.unload(id.partition);
                    }
                    handovers.push(self.clone().hand_over(log));
                }
            }
            n += handovers.len();
            futures::future::join_all(handovers).await;
            let settled = self.opening.is_empty() && self.partitions.is_empty();
            if settled || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while !self.handovers.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(partitions = n, "drained: every partition handed over");
    }

    /// Makes every other stream that may hold the partition's data final
    /// (closed by its writer at handover, or sealed), then recovers the
    /// partition's durable log and starts serving it.
    async fn open_partition(
        self: &Arc<Self>,
        id: PartitionId,
        topic: String,
        leader_epoch: i32,
    ) -> Result<(), WorkerError> {
        while self.handovers.contains_key(&id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let me = (&self.cfg.worker_id, self.wal.stream_epoch());
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        let mut state = self.meta.partition_state(id.topic_id, id.partition).await?;
        loop {
            // Read after the state: a writer registers before it lists its
            // stream for a partition, so every listed stream whose writer is
            // alive is seen alive here (an older snapshot would get a
            // just-restarted writer sealed).
            let live = self.live_streams().await?;
            let open: Vec<StreamRef> = state
                .streams
                .iter()
                .filter(|s| !s.closed && (&s.worker_id, s.stream_epoch) != me)
                .cloned()
                .collect();
            let mut waiting = false;
            for s in open {
                let writer_alive = live.get(&s.worker_id) == Some(&s.stream_epoch);
                if writer_alive && tokio::time::Instant::now() < deadline {
                    waiting = true;
                    continue;
                }
                self.seal(&s).await?;
                self.mark_closed(id, &s).await?;
            }
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            state = self.meta.partition_state(id.topic_id, id.partition).await?;
        }
        // Every other stream is final for this partition from now on (closed
        // by its writer after its data was durable, or sealed): recovery
        // must use listings started from here, not one cached earlier while
        // a live writer was still adding this partition's last objects.
        let final_since = std::time::Instant::now();
        // This incarnation's stream holds data of the partition only if it
        // was registered for it before (a stream is registered before its
        // first append): otherwise there is nothing to read back from it,
        // and listing it (every object this worker wrote) is skipped.
        let had_own = state
            .streams
            .iter()
            .any(|s| (&s.worker_id, s.stream_epoch) == me);
        // Register this worker's stream before the partition can take a
        // single append: a later owner then always finds it listed, and
        // waits for this worker to close it (or seals it).
        let own = StreamRef {
            worker_id: self.cfg.worker_id.clone(),
            stream_epoch: self.wal.stream_epoch(),
            closed: false,
            first_sequence: 0,
        };
        let epoch = u64::try_from(leader_epoch).unwrap_or(0);
        let state = self
            .meta
            .try_update_partition_state(id.topic_id, id.partition, |st| {
                // A newer owner opened it already: this assignment is stale.
                if st.owner_epoch > epoch {
                    return Err(MetaError::Fenced(format!(
                        "opened at epoch {} already, this assignment is {epoch}",
                        st.owner_epoch
                    )));
                }
                st.owner_epoch = epoch;
                let mine = |x: &StreamRef| {
                    x.worker_id == own.worker_id && x.stream_epoch == own.stream_epoch
                };
                let listed = st.streams.iter().find(|x| mine(x)).cloned();
                st.streams.retain(|x| !mine(x));
                st.streams.push(registered_stream(
                    listed.as_ref(),
                    &own,
                    self.wal.next_sequence(),
                ));
                Ok(())
            })
            .await?;
        let to_read: Vec<StreamRef> = state
            .streams
            .iter()
            .filter(|s| had_own || (&s.worker_id, s.stream_epoch) != me)
            .cloned()
            .collect();
        // Segments below the compacted offset, WAL chunks from there on.
        let published = crate::gc::published(&state);
        let mut chunks =
            crate::segment::recover_blocks(self.store.as_ref(), &self.cfg.namespace, id, published)
                .await?;
        chunks.extend(
            recover_chunks(
                self.store.as_ref(),
                &self.catalog,
                &self.cfg.namespace,
                id,
                &to_read,
                state.log_start_offset.max(state.compacted_offset),
                final_since,
            )
            .await?,
        );
        let is_slot = topic == OFFSETS_TOPIC;
        let log = Arc::new(PartitionLog::recovered(
            id,
            topic,
            leader_epoch,
            published,
            chunks,
        ));
        tracing::debug!(topic = %log.topic, partition = id.partition, hwm = log.high_watermark(), "partition opened");
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            // Drained while opening: nothing was appended; close our stream.
            self.clone().hand_over(log).await;
            return Ok(());
        }
        if is_slot {
            self.groups.load(log.clone()).await?;
        } else {
            self.restore_producers(&log).await?;
        }
        self.partitions.insert(id, log);
        Ok(())
    }

    /// The current stream epoch of every registered worker.
    async fn live_streams(&self) -> Result<HashMap<String, u64>, WorkerError> {
        Ok(self
            .meta
            .list_workers()
            .await?
            .into_iter()
            .map(|w| (w.worker_id, w.stream_epoch))
            .collect())
    }

    /// Rebuilds the idempotent producers' recent batches from the newest
    /// chunks of the partition's durable log (see [`producer_scan`]).
    async fn restore_producers(&self, log: &PartitionLog) -> Result<(), WorkerError> {
        let chunks = log.all_chunks();
        let n = PRODUCER_SCAN_INFLIGHT_MULTIPLE * self.cfg.max_inflight_puts.max(1)
            + PRODUCER_SCAN_EXTRA;
        let mut restored = 0usize;
        // Read several at a time, applied in offset order.
        let scanned = producer_scan(&chunks, n).to_vec();
        let mut reads = std::pin::pin!(reader::chunks_in_order(&self.source, scanned));
        while let Some(read) = reads.next().await {
            let (_, bytes) = read?;
            let mut states = log.producers();
            for (base_offset, b) in crate::batch::stored_batches(bytes) {
                if b.producer_id >= 0 {
                    states.restore(&b, base_offset);
                    restored += 1;
                }
            }
        }
        if restored > 0 {
            tracing::debug!(topic = %log.topic, partition = log.id.partition, batches = restored, "idempotent producer state restored");
        }
        Ok(())
    }

    /// Seals a stream (the store retries transient failures).
    async fn seal(&self, s: &StreamRef) -> Result<(), WorkerError> {
        seal_stream(
            self.store.as_ref(),
            &self.cfg.namespace,
            s,
            &self.cfg.worker_id,
        )
        .await
        .map_err(crate::recovery::RecoveryError::from)?;
        Ok(())
    }

    async fn mark_closed(&self, id: PartitionId, s: &StreamRef) -> Result<(), WorkerError> {
        self.meta
            .update_partition_state(id.topic_id, id.partition, |st| {
                for x in st.streams.iter_mut() {
                    if x.worker_id == s.worker_id && x.stream_epoch == s.stream_epoch {
                        x.closed = true;
                    }
                }
            })
            .await?;
        Ok(())
    }

    /// Hands a partition that moved away over: refuses new appends, waits
    /// until everything accepted is durable, then closes this worker's
    /// stream for the partition so the new owner need not seal it.
    async fn hand_over(self: Arc<Self>, log: Arc<PartitionLog>) {
        let id = log.id;
        self.handovers.insert(id, ());
        let end = log.close();
        let mut hwm = log.subscribe();
        let drained = tokio::time::timeout(Duration::from_secs(45), hwm.wait_for(|h| *h >= end))
            .await
            .is_ok_and(|r| r.is_ok());
        if drained && !self.wal.is_fenced() {
            let own = StreamRef {
                worker_id: self.cfg.worker_id.clone(),
                stream_epoch: self.wal.stream_epoch(),
                closed: false,
                first_sequence: 0,
            };
            match self.mark_closed(id, &own).await {
                Ok(()) => {
                    tracing::info!(topic = %log.topic, partition = id.partition, "partition handed over")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "handover not recorded; the new owner will seal")
                }
            }
        }
        self.handovers.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::format::ChunkEntry;

    fn chunk(object: &str, base: i64) -> ChunkRef {
        ChunkRef {
            object: Arc::from(object),
            entry: ChunkEntry {
                base_offset: base,
                last_offset: base,
                ..Default::default()
            },
            cached: None,
        }
    }

    /// A batch of producer 7 (epoch 0) starting at `seq` with one record.
    fn batch_of_7(seq: i32) -> crate::batch::BatchInfo {
        crate::batch::BatchInfo {
            position: 0,
            size: 0,
            record_count: 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: seq,
        }
    }

    #[test]
    fn a_producer_is_rebuilt_at_its_newest_batch_or_not_at_all() {
        use crate::producers::{ProducerStates, Verdict};
        // Offsets 0..=1: segment blocks; 2..=21: WAL objects 1..=20 of one
        // stream. Producer 7 wrote offsets 0 and 1 (sequences 0, 1) and 4
        // (sequence 2), then went quiet while others filled the rest.
        let mut chunks = vec![chunk("ns/seg/t/0/0", 0), chunk("ns/seg/t/0/0", 1)];
        for seq in 1..=20u64 {
            chunks.push(chunk(
                &format!("ns/wal/a/00000000000000000001/{seq:020}"),
                seq as i64 + 1,
            ));
        }
        let producer_7 = |offset: i64| match offset {
            0 => Some(0),
            1 => Some(1),
            4 => Some(2),
            _ => None,
        };
        for n in 1..=chunks.len() {
            let scanned = producer_scan(&chunks, n);
            // A contiguous end of the log, in offset order.
            let first = chunks.len() - scanned.len();
            assert_eq!(scanned.len(), n);
            assert!(scanned
                .iter()
                .zip(&chunks[first..])
                .all(|(a, b)| a.entry.base_offset == b.entry.base_offset));
            let mut states = ProducerStates::default();
            for c in scanned {
                if let Some(seq) = producer_7(c.entry.base_offset) {
                    states.restore(&batch_of_7(seq), c.entry.base_offset);
                }
            }
            // Whatever the window, the producer's next batch is taken.
            assert!(
                matches!(states.check(&batch_of_7(3)), Verdict::Append),
                "window of {n} chunks refused the next batch"
            );
        }
    }

    #[test]
    fn a_newly_registered_stream_is_read_from_the_writers_next_object() {
        let own = StreamRef {
            worker_id: "w".into(),
            stream_epoch: 3,
            closed: false,
            first_sequence: 0,
        };
        // Regression (long nemesis): registered at 0, a partition opened on
        // a writer with 1,198 objects made its next owner read all of their
        // footers.
        let fresh = registered_stream(None, &own, 1199);
        assert_eq!((fresh.first_sequence, fresh.closed), (1199, false));
        // Re-opened by the same incarnation: its earlier data stays readable.
        let listed = StreamRef {
            closed: true,
            first_sequence: 40,
            ..own.clone()
        };
        let again = registered_stream(Some(&listed), &own, 1199);
        assert_eq!((again.first_sequence, again.closed), (40, false));
    }
}
