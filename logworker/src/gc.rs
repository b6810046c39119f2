//! Garbage collection of WAL objects and segments. One process runs it at a
//! time: the elected assigner leader in distributed mode, the only worker in
//! `kafscale dev`.
//!
//! Each round lists the objects first and reads the metadata afterwards, so
//! every chunk it judges belongs to a topic that existed when it was listed.
//! An object is deleted only if it was garbage in two consecutive rounds
//! ([`interval`] apart, a minute by default): a reader or
//! a recovering owner that picked it up before it became garbage has long
//! finished with it.
//!
//! Garbage:
//! - a WAL object whose every chunk is below its partition's compacted
//!   offset or log start offset, or belongs to a deleted topic, unless its
//!   stream has no end seal and it is among the stream's newest
//!   [`HOLE_WINDOW`] objects: a new owner sealing the stream must find the
//!   stream's end (or it would seal below a live writer), and every missing
//!   sequence number in that window costs it a hole seal;
//! - every object of a stream that ends in an end seal and that no partition
//!   lists and no live worker writes (seals, torn objects, PUTs that landed
//!   after the seal); such a stream without an end seal (its writer died
//!   after handing everything over) is sealed first, which is always safe;
//! - a segment of a deleted topic, or wholly below its partition's log start
//!   offset;
//! - a segment the log no longer uses: a plain segment below the cleaned
//!   offset, a cleaned segment of an older generation than the published
//!   one or written by an earlier owner (see [`crate::segment::cleaner`]).

use crate::objstore::{ObjectError, ObjectMeta, ObjectStore};
use crate::recovery::{read_object_index, ObjectIndex, RecoveryError};
use crate::seal::{seal_stream, HOLE_WINDOW};
use crate::segment;
use crate::wal::format::{ChunkEntry, SealKind};
use crate::wal::split_object_key;
use kafscale_controlplane::{MetaError, Metadata};
use kafscale_proto::metadata::v1::{PartitionState, StreamRef};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// Time between rounds: six compaction intervals.
pub fn interval(compaction_interval: Duration) -> Duration {
    compaction_interval * 6
}

/// Errors of a collection round (the round is retried later).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// What one round found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub wal_objects: usize,
    pub segments: usize,
    /// Garbage seen this round (deleted if it was garbage last round too).
    pub garbage: usize,
    pub deleted: usize,
    pub sealed_streams: usize,
}

/// What a listed WAL object holds (footers never change, so this is kept).
#[derive(Clone)]
enum Known {
    Data(Vec<ChunkEntry>),
    Seal(SealKind),
    Torn,
}

/// The collector's memory between rounds.
pub struct Collector {
    store: Arc<dyn ObjectStore>,
    meta: Metadata,
    namespace: String,
    name: String,
    known: HashMap<String, Known>,
    garbage_last_round: HashSet<String>,
}

impl Collector {
    /// A collector for `namespace`; `name` identifies it in seals it writes.
    pub fn new(store: Arc<dyn ObjectStore>, meta: Metadata, namespace: &str, name: &str) -> Self {
        Self {
            store,
            meta,
            namespace: namespace.to_string(),
            name: name.to_string(),
            known: HashMap::new(),
            garbage_last_round: HashSet::new(),
        }
    }

    /// Runs a round every `every` until `stop`.
    pub async fn run(mut self, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            match self.round().await {
                Ok(r) if r.deleted > 0 || r.sealed_streams > 0 => {
                    tracing::info!(?r, "garbage collected")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "garbage collection round failed"),
            }
        }
    }

    /// One round: finds the garbage, deletes what was garbage last round too.
    pub async fn round(&mut self) -> Result<GcReport, GcError> {
        let ns = self.namespace.clone();
        let wal = self.store.list(&format!("{ns}/wal/")).await?;
        let segments = self.store.list(&format!("{ns}/seg/")).await?;
        self.known.retain(|k, _| wal.iter().any(|o| &o.key == k));
        for o in &wal {
            if !self.known.contains_key(&o.key) {
                let known = match read_object_index(self.store.as_ref(), o).await? {
                    ObjectIndex::Data(entries) => Known::Data(entries),
                    ObjectIndex::Seal(kind) => Known::Seal(kind),
                    ObjectIndex::Torn(_) => Known::Torn,
                };
                self.known.insert(o.key.clone(), known);
            }
        }
        // Metadata after the listing (see the module doc).
        let view = MetaView::read(&self.meta, &ns).await?;
        let mut report = GcReport {
            wal_objects: wal.len(),
            segments: segments.len(),
            ..Default::default()
        };
        let mut garbage: HashSet<String> = HashSet::new();
        let streams = by_stream(&wal);
        for (stream, objects) in &streams {
            let retired = !view.live.contains(*stream) && !view.listed.contains(*stream);
            let ended = objects
                .values()
                .any(|o| matches!(self.known.get(&o.key), Some(Known::Seal(SealKind::End))));
            if retired && !ended {
                if let Some(s) = stream_ref(stream) {
                    seal_stream(self.store.as_ref(), &ns, &s, &self.name).await?;
                    report.sealed_streams += 1;
                }
                continue;
            }
            let newest = objects.keys().next_back().copied().unwrap_or(0);
            for (seq, o) in objects {
                // A hole seal (a sealer's, or a writer's own over a flush
                // that failed) below the window holds nothing anyone reads.
                let collectable = retired
                    || (!in_sealing_window(*seq, newest, ended)
                        && match self.known.get(&o.key) {
                            Some(Known::Data(e)) => e.iter().all(|c| view.chunk_is_garbage(c)),
                            Some(Known::Seal(SealKind::Hole)) => true,
                            _ => false,
                        });
                if collectable {
                    garbage.insert(o.key.clone());
                }
            }
        }
        for key in view.garbage_segments(&ns, &segments) {
            garbage.insert(key);
        }
        report.garbage = garbage.len();
        for key in garbage.intersection(&self.garbage_last_round) {
            self.store.delete(key).await?;
            crate::failpoint::hit("gc-deleted-one");
            self.known.remove(key);
            report.deleted += 1;
        }
        garbage.retain(|k| !self.garbage_last_round.contains(k));
        self.garbage_last_round = garbage;
        Ok(report)
    }
}

/// Whether object `seq` of a stream whose highest object is `newest` must
/// stay so that a sealer finds only genuine holes: a stream without an end
/// seal keeps its newest [`HOLE_WINDOW`] objects, the newest among them
/// telling a sealer where the stream ends. An ended stream is never sealed
/// again.
fn in_sealing_window(seq: u64, newest: u64, ended: bool) -> bool {
    !ended && seq + HOLE_WINDOW > newest
}

/// The metadata a round judges by.
struct MetaView {
    /// Partition count of every existing topic.
    topics: HashMap<Uuid, i32>,
    states: HashMap<(Uuid, i32), PartitionState>,
    /// Stream prefixes of the live workers' current streams.
    live: HashSet<String>,
    /// Stream prefixes some partition lists.
    listed: HashSet<String>,
}

impl MetaView {
    async fn read(meta: &Metadata, ns: &str) -> Result<Self, MetaError> {
        let mut topics = HashMap::new();
        let mut states = HashMap::new();
        let mut listed = HashSet::new();
        for t in meta.list_topics().await? {
            let id = kafscale_controlplane::metadata::topic_uuid(&t);
            topics.insert(id, t.partitions);
            for p in 0..t.partitions {
                let st = meta.partition_state(id, p).await?;
                for s in &st.streams {
                    listed.insert(crate::wal::stream_prefix(ns, &s.worker_id, s.stream_epoch));
                }
                states.insert((id, p), st);
            }
        }
        let live = meta
            .list_workers()
            .await?
            .into_iter()
            .map(|w| crate::wal::stream_prefix(ns, &w.worker_id, w.stream_epoch))
            .collect();
        Ok(Self {
            topics,
            states,
            live,
            listed,
        })
    }

    /// Whether a WAL chunk is no longer part of any log.
    fn chunk_is_garbage(&self, c: &ChunkEntry) -> bool {
        if !self.topics.contains_key(&c.topic_id) {
            return true;
        }
        self.states
            .get(&(c.topic_id, c.partition))
            .is_some_and(|st| c.last_offset < st.compacted_offset.max(st.log_start_offset))
    }

    /// Segments of deleted topics; segments the partition's log no longer
    /// uses (plain segments below its cleaned offset, cleaned segments of
    /// other generations than the published one, except those the current
    /// owner may still be writing); and published segments wholly below
    /// the log start offset (the next one starts at or below it).
    fn garbage_segments(&self, ns: &str, segments: &[ObjectMeta]) -> Vec<String> {
        let mut by_partition: BTreeMap<(Uuid, i32), Vec<(i64, &str)>> = BTreeMap::new();
        let mut out = Vec::new();
        for o in segments {
            let Some(name) = segment::parse_key(ns, &o.key) else {
                continue;
            };
            let id = name.id;
            if !self.topics.contains_key(&id.topic_id) {
                out.push(o.key.clone());
                continue;
            }
            let st = self.states.get(&(id.topic_id, id.partition));
            let published = st.map(published).unwrap_or_default();
            if published.holds(&name) {
                by_partition
                    .entry((id.topic_id, id.partition))
                    .or_default()
                    .push((name.base_offset, o.key.as_str()));
                continue;
            }
            let unused = match name.generation {
                // Below the cleaned chain, or not yet published (at or
                // above the compacted offset: the next compaction adopts it).
                None => name.base_offset < published.cleaned_offset,
                Some(g) => {
                    // An older generation, or a pass of an earlier owner
                    // (whose swap can never succeed now). The current
                    // owner's own unpublished passes are its to remove.
                    let writer_epoch = g >> 32;
                    g < published.clean_generation
                        || st.is_some_and(|st| writer_epoch < st.owner_epoch)
                }
            };
            if unused {
                out.push(o.key.clone());
            }
        }
        for (p, mut segs) in by_partition {
            let start = self.states.get(&p).map_or(0, |s| s.log_start_offset);
            segs.sort();
            for pair in segs.windows(2) {
                if pair[1].0 <= start {
                    out.push(pair[0].1.to_string());
                }
            }
        }
        out
    }
}

/// Where a partition's published log lies, from its state.
pub fn published(st: &PartitionState) -> segment::Published {
    segment::Published {
        log_start_offset: st.log_start_offset,
        cleaned_offset: st.cleaned_offset,
        clean_generation: st.clean_generation,
        compacted_offset: st.compacted_offset,
    }
}

/// A stream's objects by sequence number, per stream prefix.
fn by_stream(objects: &[ObjectMeta]) -> BTreeMap<&str, BTreeMap<u64, &ObjectMeta>> {
    let mut out: BTreeMap<&str, BTreeMap<u64, &ObjectMeta>> = BTreeMap::new();
    for o in objects {
        if let Some((stream, seq)) = split_object_key(&o.key) {
            out.entry(stream).or_default().insert(seq, o);
        }
    }
    out
}

/// The stream a prefix `<ns>/wal/<worker-id>/<epoch:020>/` names.
fn stream_ref(prefix: &str) -> Option<StreamRef> {
    let mut parts = prefix.trim_end_matches('/').rsplit('/');
    let stream_epoch = parts.next()?.parse().ok()?;
    let worker_id = parts.next()?.to_string();
    Some(StreamRef {
        worker_id,
        stream_epoch,
        closed: false,
        first_sequence: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_the_log_no_longer_uses_are_garbage() {
        let id = crate::partition::PartitionId {
            topic_id: Uuid::from_u128(3),
            partition: 0,
        };
        let epoch = 7u64;
        let published_gen = (epoch << 32) | 2;
        let view = MetaView {
            topics: HashMap::from([(id.topic_id, 1)]),
            states: HashMap::from([(
                (id.topic_id, 0),
                PartitionState {
                    log_start_offset: 0,
                    compacted_offset: 300,
                    cleaned_offset: 200,
                    clean_generation: published_gen,
                    owner_epoch: epoch,
                    ..Default::default()
                },
            )]),
            live: HashSet::new(),
            listed: HashSet::new(),
        };
        let plain = |base| segment::segment_key("ns", id, base);
        let cleaned = |base, g| segment::cleaned_key("ns", id, base, g);
        let objects: Vec<ObjectMeta> = [
            plain(0),                            // replaced by the cleaned chain
            plain(100),                          // replaced
            plain(200),                          // published
            plain(300),                          // cut, not yet published
            cleaned(0, published_gen),           // published
            cleaned(0, published_gen - 1),       // older generation
            cleaned(0, published_gen + 1),       // the owner's pass in progress
            cleaned(0, ((epoch - 1) << 32) | 9), // an earlier owner's pass
        ]
        .into_iter()
        .map(|key| ObjectMeta { key, size: 1 })
        .collect();
        let mut garbage = view.garbage_segments("ns", &objects);
        garbage.sort();
        let mut want = vec![
            plain(0),
            plain(100),
            cleaned(0, published_gen - 1),
            cleaned(0, ((epoch - 1) << 32) | 9),
        ];
        want.sort();
        assert_eq!(garbage, want);
    }

    #[test]
    fn a_live_stream_keeps_its_sealing_window() {
        let newest = 100;
        assert!(in_sealing_window(newest, newest, false));
        assert!(in_sealing_window(newest + 1 - HOLE_WINDOW, newest, false));
        assert!(!in_sealing_window(newest - HOLE_WINDOW, newest, false));
        // A stream that ended in an end seal keeps nothing for a sealer.
        assert!(!in_sealing_window(newest, newest, true));
        // Short streams keep everything.
        assert!(in_sealing_window(1, 3, false));
    }

    #[test]
    fn stream_prefixes_parse_back() {
        let prefix = crate::wal::stream_prefix("ns", "w-1", 12);
        let s = stream_ref(&prefix).expect("parses");
        assert_eq!((s.worker_id.as_str(), s.stream_epoch), ("w-1", 12));
    }
}
