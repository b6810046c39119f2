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

use crate::objstore::{ObjectMeta, ObjectStore};
use crate::partition::{ChunkRef, PartitionId};
use crate::wal::format::SealKind;
use crate::wal::{format, stream_prefix};
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

/// The objects of one stream with their verified footer entries.
type StreamObjects = Arc<Vec<(Arc<str>, Vec<format::ChunkEntry>)>>;

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

/// One listing of a stream.
struct Listing {
    /// When the listing started.
    at: Instant,
    /// The stream ends in an end seal: it can never change.
    ended: bool,
    objects: StreamObjects,
}

/// Footers of every object of the streams read so far.
#[derive(Default)]
pub struct StreamCatalog {
    streams: Mutex<HashMap<(String, u64), Listing>>,
}

impl StreamCatalog {
    /// The objects of `stream` with their verified footers, in sequence
    /// order, from a listing that started at or after `not_before` (or of a
    /// stream that ended in an end seal).
    async fn objects(
        &self,
        store: &dyn ObjectStore,
        namespace: &str,
        stream: &StreamRef,
        not_before: Instant,
    ) -> Result<StreamObjects, RecoveryError> {
        let k = (stream.worker_id.clone(), stream.stream_epoch);
        let mut streams = self.streams.lock().await;
        let mut known: HashMap<Arc<str>, Vec<format::ChunkEntry>> = HashMap::new();
        if let Some(l) = streams.get(&k) {
            if l.ended || l.at >= not_before {
                return Ok(l.objects.clone());
            }
            // Footers never change: only new objects are read.
            known = l.objects.iter().cloned().collect();
        }
        let at = Instant::now();
        let prefix = stream_prefix(namespace, &stream.worker_id, stream.stream_epoch);
        let mut out = Vec::new();
        let mut ended = false;
        for obj in store.list(&prefix).await? {
            if let Some((key, entries)) = known.remove_entry(obj.key.as_str()) {
                out.push((key, entries));
                continue;
            }
            let index = match read_object_index(store, &obj).await {
                // Listed, then deleted by garbage collection: every chunk in
                // it was below its partition's compacted offset or log
                // start, which cannot move while a partition is being opened
                // (only its owner moves them), so none of it is needed.
                Err(RecoveryError::Object(crate::objstore::ObjectError::NotFound(_))) => continue,
                other => other?,
            };
            match index {
                ObjectIndex::Data(entries) => out.push((Arc::from(obj.key.as_str()), entries)),
                ObjectIndex::Seal(SealKind::Hole) => {}
                // Nothing at or after the end seal belongs to the stream.
                ObjectIndex::Seal(SealKind::End) => {
                    ended = true;
                    break;
                }
                ObjectIndex::Torn(e) => {
                    tracing::warn!(key = %obj.key, error = %e, "skipping unreadable (torn) WAL object")
                }
            }
        }
        let objects = Arc::new(out);
        streams.insert(
            k,
            Listing {
                at,
                ended,
                objects: objects.clone(),
            },
        );
        Ok(objects)
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
        let objects = catalog.objects(store, namespace, s, not_before).await?;
        for (key, entries) in objects.iter() {
            for e in entries {
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
            }])
            .0
        };
        let stream = StreamRef {
            worker_id: "w".into(),
            stream_epoch: 1,
            closed: false,
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
