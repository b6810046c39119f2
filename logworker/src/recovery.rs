//! Rebuilding a partition's durable index from metadata and WAL objects.
//!
//! The partition state lists every stream that may hold its data; each
//! stream's objects are listed and their footers read (each footer once per
//! worker start, shared by all partitions). An object whose footer does not
//! verify was torn mid-write, so it was never acknowledged: it is skipped.

use crate::objstore::{ObjectMeta, ObjectStore};
use crate::partition::{ChunkRef, PartitionId};
use crate::wal::format::SealKind;
use crate::wal::{format, stream_prefix};
use kafscale_proto::metadata::v1::StreamRef;
use std::collections::HashMap;
use std::sync::Arc;
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

/// Footers of every object of the streams read so far.
#[derive(Default)]
pub struct StreamCatalog {
    streams: Mutex<HashMap<(String, u64), StreamObjects>>,
}

impl StreamCatalog {
    /// The objects of `stream` with their verified footers, in sequence order.
    async fn objects(
        &self,
        store: &dyn ObjectStore,
        namespace: &str,
        stream: &StreamRef,
    ) -> Result<StreamObjects, RecoveryError> {
        let k = (stream.worker_id.clone(), stream.stream_epoch);
        let mut streams = self.streams.lock().await;
        if let Some(v) = streams.get(&k) {
            return Ok(v.clone());
        }
        let prefix = stream_prefix(namespace, &stream.worker_id, stream.stream_epoch);
        let mut out = Vec::new();
        for obj in store.list(&prefix).await? {
            match read_object_index(store, &obj).await? {
                ObjectIndex::Data(entries) => out.push((Arc::from(obj.key.as_str()), entries)),
                ObjectIndex::Seal(SealKind::Hole) => {}
                // Nothing at or after the end seal belongs to the stream.
                ObjectIndex::Seal(SealKind::End) => break,
                ObjectIndex::Torn(e) => {
                    tracing::warn!(key = %obj.key, error = %e, "skipping unreadable (torn) WAL object")
                }
            }
        }
        let v = Arc::new(out);
        streams.insert(k, v.clone());
        Ok(v)
    }

    /// Forgets cached footers (after recovery finished).
    pub async fn clear(&self) {
        self.streams.lock().await.clear();
    }
}

/// The durable chunks of one partition at or above `log_start_offset`, in
/// offset order, without overlaps.
pub async fn recover_chunks(
    store: &dyn ObjectStore,
    catalog: &StreamCatalog,
    namespace: &str,
    id: PartitionId,
    streams: &[StreamRef],
    log_start_offset: i64,
) -> Result<Vec<ChunkRef>, RecoveryError> {
    let mut chunks = Vec::new();
    for s in streams {
        for (key, entries) in catalog.objects(store, namespace, s).await?.iter() {
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
        let got = recover_chunks(&store, &StreamCatalog::default(), "ns", id, &streams, 0)
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|c| c.entry.base_offset).collect::<Vec<_>>(),
            vec![0, 10]
        );
        let other = PartitionId { partition: 3, ..id };
        assert!(
            recover_chunks(&store, &StreamCatalog::default(), "ns", other, &streams, 0)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
