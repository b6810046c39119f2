//! Rebuilding a partition's durable index from metadata and WAL objects.
//!
//! The partition state lists every stream that may hold its data; each
//! stream's objects are listed and their footers read (each footer once per
//! worker start, shared by all partitions). An object whose footer does not
//! verify was torn mid-write, so it was never acknowledged: it is skipped.
//!
//! A listing is shared between partitions only if it is recent enough: a
//! stream whose writer is still alive keeps writing objects for its other
//! partitions, and a partition's data is complete in a listing only if the
//! listing started after the stream became final for that partition (its
//! writer closed it, or it was sealed). So every recovery says since when
//! the stream is final for it (`not_before`), and older listings are
//! refreshed (reading only the footers of new objects). A stream that ends
//! in an end seal can never change, so its listing is always reused.
//!
//! Footers are read only from the stream's `first_sequence` on, which the
//! partition's compactor moves past objects holding none of its
//! uncompacted data: opening a partition reads the objects of its
//! uncompacted tail, not every object a long-lived writer ever wrote.

use crate::objstore::{ObjectMeta, ObjectStore};
use crate::partition::{ChunkRef, PartitionId};
use crate::wal::format::SealKind;
use crate::wal::{format, stream_prefix};
use futures::{StreamExt, TryStreamExt};
use kafscale_proto::metadata::v1::StreamRef;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;

/// Errors while recovering.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Object(#[from] crate::objstore::ObjectError),
}

/// The data objects of one stream with their verified footer entries.
type StreamObjects = Vec<(Arc<str>, Arc<Vec<format::ChunkEntry>>)>;

/// What a stream object holds.
pub enum ObjectIndex {
    /// A WAL object with its verified footer.
    Data(Vec<format::ChunkEntry>),
    /// A seal written by a new owner.
    Seal(SealKind),
    /// Not a complete object: never acknowledged.
    Torn(format::FormatError),
}

/// How many trailing bytes are read first: the whole footer of objects with
/// up to ~960 chunks, and all of any seal object.
const TAIL_READ: u64 = 64 << 10;

/// Reads an object's footer with ranged reads (one, or two for very large
/// footers), or recognises a seal.
pub async fn read_object_index(
    store: &dyn ObjectStore,
    obj: &ObjectMeta,
) -> Result<ObjectIndex, RecoveryError> {
    let size = obj.size;
    if size == 0 {
        return Ok(ObjectIndex::Torn(format::FormatError::TooShort(0)));
    }
    let from = size.saturating_sub(TAIL_READ);
    let tail = store.get_range(&obj.key, from..size).await?;
    if from == 0 {
        if let Some(kind) = format::decode_seal(&tail) {
            return Ok(ObjectIndex::Seal(kind));
        }
    }
    if tail.len() < format::TRAILER_LEN {
        return Ok(ObjectIndex::Torn(format::FormatError::TooShort(tail.len())));
    }
    let (pos, crc) = match format::decode_trailer(&tail[tail.len() - format::TRAILER_LEN..], size) {
        Ok(t) => t,
        Err(e) => return Ok(ObjectIndex::Torn(e)),
    };
    let footer_end = size - format::TRAILER_LEN as u64;
    let footer = if pos >= from {
        tail.slice((pos - from) as usize..(footer_end - from) as usize)
    } else {
        store.get_range(&obj.key, pos..footer_end).await?
    };
    Ok(match format::decode_footer_bytes(&footer, pos, crc) {
        Ok(entries) => ObjectIndex::Data(entries),
        Err(e) => ObjectIndex::Torn(e),
    })
}

/// What one stream object holds, as far as recovery cares.
#[derive(Clone)]
enum Footer {
    /// A WAL object's verified chunk entries.
    Data(Arc<Vec<format::ChunkEntry>>),
    /// A hole seal, a torn object, or one deleted since it was listed.
    Nothing,
    /// An end seal: nothing at or after it belongs to the stream.
    End,
}

/// A listed stream object: sequence number, key, size.
type Listed = (u64, Arc<str>, u64);

/// A stream: worker id and stream epoch.
type StreamKey = (String, u64);

/// What is known of one stream: its last listing and the footers read.
#[derive(Default)]
struct StreamEntry {
    /// When the last listing started, and its objects (sequence, key,
    /// size) in sequence order.
    listing: Option<(Instant, Vec<Listed>)>,
    /// An end seal was read: the stream can never change.
    ended: bool,
    /// Footers never change once written: each is read once.
    footers: HashMap<u64, Footer>,
}

/// How many footers of one stream are read at once.
const FOOTER_READS: usize = 8;

/// Footers of the stream objects read so far. Each stream has its own lock,
/// so partitions opening at once read different streams in parallel.
#[derive(Default)]
pub struct StreamCatalog {
    streams: Mutex<HashMap<StreamKey, Arc<Mutex<StreamEntry>>>>,
}

impl StreamCatalog {
    /// The data objects of `stream` from sequence `from` on, with their
    /// verified footers, in sequence order, from a listing that started at
    /// or after `not_before` (or of a stream that ended in an end seal).
    async fn objects(
        &self,
        store: &dyn ObjectStore,
        namespace: &str,
        stream: &StreamRef,
        not_before: Instant,
        from: u64,
    ) -> Result<StreamObjects, RecoveryError> {
        let entry = self
            .streams
            .lock()
            .await
            .entry((stream.worker_id.clone(), stream.stream_epoch))
            .or_default()
            .clone();
        let mut entry = entry.lock().await;
        let fresh = |e: &StreamEntry| {
            e.ended || e.listing.as_ref().is_some_and(|(at, _)| *at >= not_before)
        };
        if !fresh(&entry) {
            let at = Instant::now();
            let prefix = stream_prefix(namespace, &stream.worker_id, stream.stream_epoch);
            let keys = store
                .list(&prefix)
                .await?
                .into_iter()
                .filter_map(|o| {
                    let (_, seq) = crate::wal::split_object_key(&o.key)?;
                    Some((seq, Arc::from(o.key.as_str()), o.size))
                })
                .collect();
            entry.listing = Some((at, keys));
        }
        let wanted: Vec<Listed> = entry
            .listing
            .iter()
            .flat_map(|(_, keys)| keys.iter())
            .filter(|(seq, _, _)| *seq >= from && !entry.footers.contains_key(seq))
            .cloned()
            .collect();
        let read: Vec<(u64, Footer)> = futures::stream::iter(wanted)
            .map(|(seq, key, size)| async move {
                let meta = ObjectMeta {
                    key: key.to_string(),
                    size,
                };
                let footer = match read_object_index(store, &meta).await {
                    Ok(ObjectIndex::Data(entries)) => Footer::Data(Arc::new(entries)),
                    Ok(ObjectIndex::Seal(SealKind::Hole)) => Footer::Nothing,
                    Ok(ObjectIndex::Seal(SealKind::End)) => Footer::End,
                    Ok(ObjectIndex::Torn(e)) => {
                        tracing::warn!(%key, error = %e, "skipping unreadable (torn) WAL object");
                        Footer::Nothing
                    }
                    // Listed, then deleted by garbage collection: every
                    // chunk in it was below its partition's compacted offset
                    // or log start, which cannot move while a partition is
                    // being opened (only its owner moves them), so none of
                    // it is needed.
                    Err(RecoveryError::Object(crate::objstore::ObjectError::NotFound(_))) => {
                        Footer::Nothing
                    }
                    Err(e) => return Err(e),
                };
                Ok((seq, footer))
            })
            // Out of order: one slow read does not hold the others back.
            .buffer_unordered(FOOTER_READS)
            .try_collect()
            .await?;
        entry.footers.extend(read);
        let mut out = Vec::new();
        let mut ended = false;
        for (seq, key, _) in entry.listing.iter().flat_map(|(_, keys)| keys.iter()) {
            if *seq < from {
                continue;
            }
            match entry.footers.get(seq) {
                Some(Footer::Data(entries)) => out.push((key.clone(), entries.clone())),
                Some(Footer::End) => {
                    ended = true;
                    break;
                }
                Some(Footer::Nothing) | None => {}
            }
        }
        entry.ended |= ended;
        Ok(out)
    }

    /// Forgets cached footers (after recovery finished).
    pub async fn clear(&self) {
        self.streams.lock().await.clear();
    }
}

/// The durable chunks of one partition at or above `log_start_offset`, in
/// offset order, without overlaps. `not_before` is when every stream in
/// `streams` was known to be final for the partition (closed by its writer
/// or sealed): only listings started since then are used.
pub async fn recover_chunks(
    store: &dyn ObjectStore,
    catalog: &StreamCatalog,
    namespace: &str,
    id: PartitionId,
    streams: &[StreamRef],
    log_start_offset: i64,
    not_before: Instant,
) -> Result<Vec<ChunkRef>, RecoveryError> {
    let mut chunks = Vec::new();
    for s in streams {
        let objects = catalog
            .objects(store, namespace, s, not_before, s.first_sequence)
            .await?;
        for (key, entries) in objects.iter() {
            for e in entries.iter() {
                if e.topic_id == id.topic_id
                    && e.partition == id.partition
                    && e.last_offset >= log_start_offset
                {
                    chunks.push(ChunkRef {
                        object: key.clone(),
                        entry: e.clone(),
                        cached: None,
                    });
                }
            }
        }
    }
    chunks.sort_by_key(|c| c.entry.base_offset);
    let mut out: Vec<ChunkRef> = Vec::with_capacity(chunks.len());
    for c in chunks {
        if let Some(prev) = out.last() {
            if c.entry.base_offset <= prev.entry.last_offset {
                tracing::error!(object = %c.object, base = c.entry.base_offset, "overlapping WAL chunk ignored");
                continue;
            }
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objstore::local::LocalDirStore;
    use crate::wal::{format::ChunkInput, object_key};
    use bytes::Bytes;
    use uuid::Uuid;

    #[tokio::test]
    async fn torn_last_object_is_skipped_and_earlier_data_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let id = PartitionId {
            topic_id: Uuid::from_u128(9),
            partition: 2,
        };
        let chunk = |base: i64| ChunkInput {
            topic_id: id.topic_id,
            partition: id.partition,
            base_offset: base,
            last_offset: base + 9,
            max_timestamp: 0,
            batch_count: 1,
            data: Bytes::from(vec![7u8; 64]),
            crc: None,
        };
        for (seq, base) in [(1u64, 0i64), (2, 10)] {
            let (obj, _) = format::encode(&[chunk(base)]);
            store
                .put_if_absent(&object_key("ns", "w", 1, seq), obj)
                .await
                .unwrap();
        }
        // A torn third object: only the first half of its bytes made it.
        let (obj, _) = format::encode(&[chunk(20)]);
        let torn = obj.slice(..obj.len() / 2);
        std::fs::create_dir_all(dir.path().join("ns/wal/w/00000000000000000001")).unwrap();
        std::fs::write(dir.path().join(object_key("ns", "w", 1, 3)), &torn).unwrap();

        let streams = vec![StreamRef {
            worker_id: "w".into(),
            stream_epoch: 1,
            closed: false,
            first_sequence: 0,
        }];
        let now = Instant::now();
        let got = recover_chunks(
            &store,
            &StreamCatalog::default(),
            "ns",
            id,
            &streams,
            0,
            now,
        )
        .await
        .unwrap();
        assert_eq!(
            got.iter().map(|c| c.entry.base_offset).collect::<Vec<_>>(),
            vec![0, 10]
        );
        let other = PartitionId { partition: 3, ..id };
        assert!(recover_chunks(
            &store,
            &StreamCatalog::default(),
            "ns",
            other,
            &streams,
            0,
            now
        )
        .await
        .unwrap()
        .is_empty());
    }

    #[tokio::test]
    async fn objects_below_the_first_sequence_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let id = PartitionId {
            topic_id: Uuid::from_u128(5),
            partition: 0,
        };
        let object = |base: i64| {
            format::encode(&[ChunkInput {
                topic_id: id.topic_id,
                partition: 0,
                base_offset: base,
                last_offset: base + 9,
                max_timestamp: 0,
                batch_count: 1,
                data: Bytes::from(vec![3u8; 16]),
                crc: None,
            }])
            .0
        };
        for seq in 1..=3u64 {
            let key = object_key("ns", "w", 1, seq);
            store
                .put_if_absent(&key, object((seq as i64 - 1) * 10))
                .await
                .unwrap();
        }
        let stream = StreamRef {
            worker_id: "w".into(),
            stream_epoch: 1,
            closed: true,
            first_sequence: 2,
        };
        let catalog = StreamCatalog::default();
        let got = recover_chunks(
            &store,
            &catalog,
            "ns",
            id,
            std::slice::from_ref(&stream),
            0,
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(
            got.iter().map(|c| c.entry.base_offset).collect::<Vec<_>>(),
            vec![10, 20]
        );
        // Object 1 was not read: a partition that needs the stream from its
        // start reads it now.
        let from_start = StreamRef {
            first_sequence: 0,
            ..stream
        };
        let got = recover_chunks(&store, &catalog, "ns", id, &[from_start], 0, Instant::now())
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|c| c.entry.base_offset).collect::<Vec<_>>(),
            vec![0, 10, 20]
        );
    }

    /// Regression (found by the scale-out cluster test: one offset acked
    /// twice): a new worker opening several partitions shared one listing
    /// of a live writer's stream, taken before that writer's last objects
    /// for a partition it was still handing over, and so started that
    /// partition below offsets already acknowledged.
    #[tokio::test]
    async fn a_listing_older_than_the_handover_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let id = PartitionId {
            topic_id: Uuid::from_u128(4),
            partition: 0,
        };
        let object = |base: i64| {
            format::encode(&[ChunkInput {
                topic_id: id.topic_id,
                partition: 0,
                base_offset: base,
                last_offset: base + 9,
                max_timestamp: 0,
                batch_count: 1,
                data: Bytes::from(vec![1u8; 16]),
                crc: None,
            }])
            .0
        };
        let stream = StreamRef {
            worker_id: "w".into(),
            stream_epoch: 1,
            closed: false,
            first_sequence: 0,
        };
        let streams = std::slice::from_ref(&stream);
        let catalog = StreamCatalog::default();
        let key = |seq| object_key("ns", "w", 1, seq);
        store.put_if_absent(&key(1), object(0)).await.unwrap();
        // Another partition's open lists the stream while its writer lives.
        let early = Instant::now();
        let got = recover_chunks(&store, &catalog, "ns", id, streams, 0, early)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        // The writer makes its last chunk of the partition durable, then
        // closes the stream for it.
        store.put_if_absent(&key(2), object(10)).await.unwrap();
        let closed = Instant::now();
        let got = recover_chunks(&store, &catalog, "ns", id, streams, 0, closed)
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|c| c.entry.base_offset).collect::<Vec<_>>(),
            vec![0, 10],
            "the listing taken before the handover must not be reused"
        );
        // A listing since then is shared (no new list needed for it).
        store.put_if_absent(&key(3), object(20)).await.unwrap();
        let got = recover_chunks(&store, &catalog, "ns", id, streams, 0, closed)
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
    }
}
