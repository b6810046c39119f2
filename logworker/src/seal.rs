//! Sealing a WAL stream whose writer may still be running (DESIGN.md §4).
//!
//! A stream's objects are created with conditional PUTs at consecutive
//! sequence numbers, and its writer acknowledges an object only after every
//! lower sequence number is durable. The sealer writes, with the same
//! conditional PUT, a hole seal at every missing sequence number below the
//! highest object and an end seal just above it. Afterwards the writer can
//! complete no PUT below the end seal, so it can acknowledge nothing more
//! (its next PUT in sequence finds a seal and fences it), and the objects
//! below the end seal are exactly the stream's data; objects after the end
//! seal (PUTs that were in flight beyond it) are never part of the stream.
//!
//! Holes are sealed only within [`HOLE_WINDOW`] sequence numbers below the
//! highest object: the writer starts a PUT only once the PUT that many
//! sequence numbers below it has finished (its in-flight limit is far
//! smaller), so an older hole can never be written again. Garbage
//! collection deletes nothing within the window of a stream that has no end
//! seal, so a sealer writes hole seals only for PUTs that never landed.

use crate::objstore::{ObjectError, ObjectStore};
use crate::wal::format::{decode_seal, encode_seal, SealKind};
use crate::wal::{object_key, stream_prefix};
use futures::{StreamExt, TryStreamExt};
use kafscale_proto::metadata::v1::StreamRef;
use std::collections::BTreeSet;

/// Objects this small may be seals; larger ones are WAL data.
const SEAL_MAX_SIZE: u64 = 512;

/// How far below the highest object holes are sealed: more than the
/// writer's largest in-flight window, `KAFSCALE_WAL_MAX_INFLIGHT` + 2 with
/// the setting's maximum of [`MAX_INFLIGHT_PUTS`]. Garbage collection
/// keeps every object of a stream without an end seal within this window of
/// its highest object, so a sealer finds holes only where PUTs never landed.
pub const HOLE_WINDOW: u64 = 24;

/// The largest `KAFSCALE_WAL_MAX_INFLIGHT` a writer accepts.
pub const MAX_INFLIGHT_PUTS: usize = 16;

/// How many hole seals are written at once.
const HOLE_SEAL_PUTS: usize = 8;

/// Seals `stream`; returns the sequence number of its end seal (an existing
/// end seal if the stream was sealed before).
pub async fn seal_stream(
    store: &dyn ObjectStore,
    namespace: &str,
    stream: &StreamRef,
    sealer: &str,
) -> Result<u64, ObjectError> {
    let prefix = stream_prefix(namespace, &stream.worker_id, stream.stream_epoch);
    let key = |seq| object_key(namespace, &stream.worker_id, stream.stream_epoch, seq);
    loop {
        let mut seqs = BTreeSet::new();
        for o in store.list(&prefix).await? {
            let Some(seq) = o
                .key
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if o.size <= SEAL_MAX_SIZE
                && decode_seal(&store.get(&o.key).await?) == Some(SealKind::End)
            {
                return Ok(seq);
            }
            seqs.insert(seq);
        }
        let end = seqs.last().map_or(1, |m| m + 1);
        let lowest = end.saturating_sub(HOLE_WINDOW).max(1);
        futures::stream::iter((lowest..end).filter(|s| !seqs.contains(s)))
            .map(|hole| async move {
                match store
                    .put_if_absent(&key(hole), encode_seal(SealKind::Hole, sealer))
                    .await
                {
                    // Either sealed, or the writer's PUT landed first: its data counts.
                    Ok(()) | Err(ObjectError::AlreadyExists(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(HOLE_SEAL_PUTS)
            .try_collect::<()>()
            .await?;
        match store
            .put_if_absent(&key(end), encode_seal(SealKind::End, sealer))
            .await
        {
            Ok(()) => {
                tracing::info!(
                    worker = %stream.worker_id,
                    stream_epoch = stream.stream_epoch,
                    end,
                    "sealed WAL stream"
                );
                return Ok(end);
            }
            // The writer created `end` first: list again and seal above it.
            Err(ObjectError::AlreadyExists(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objstore::local::LocalDirStore;
    use crate::partition::PartitionId;
    use crate::recovery::{recover_chunks, StreamCatalog};
    use crate::wal::format::{self, ChunkInput};
    use bytes::Bytes;
    use uuid::Uuid;

    #[tokio::test]
    async fn sealed_stream_fences_the_writer_and_bounds_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDirStore::open(dir.path()).unwrap();
        let stream = StreamRef {
            worker_id: "w".into(),
            stream_epoch: 3,
            closed: false,
            first_sequence: 0,
        };
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
                data: Bytes::from(vec![1u8; 32]),
                crc: None,
            }])
            .0
        };
        // Objects 1 and 3 exist; 2 is a PUT still in flight.
        let key = |seq| object_key("ns", "w", 3, seq);
        store.put_if_absent(&key(1), object(0)).await.unwrap();
        store.put_if_absent(&key(3), object(20)).await.unwrap();
        assert_eq!(seal_stream(&store, "ns", &stream, "b").await.unwrap(), 4);
        // Sealing again finds the same end.
        assert_eq!(seal_stream(&store, "ns", &stream, "c").await.unwrap(), 4);
        // The writer's in-flight PUT of 2 and its next PUT of 4 both fail.
        for seq in [2, 4] {
            assert!(matches!(
                store.put_if_absent(&key(seq), object(10)).await,
                Err(ObjectError::AlreadyExists(_))
            ));
        }
        // A PUT beyond the end seal may land, but is not part of the stream.
        store.put_if_absent(&key(5), object(30)).await.unwrap();
        let chunks = recover_chunks(
            &store,
            &StreamCatalog::default(),
            "ns",
            id,
            std::slice::from_ref(&stream),
            0,
            std::time::Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(
            chunks
                .iter()
                .map(|c| c.entry.base_offset)
                .collect::<Vec<_>>(),
            vec![0, 20]
        );
    }
}
