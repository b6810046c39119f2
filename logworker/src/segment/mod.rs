//! Per-partition segments (DESIGN.md §4): where compaction puts a
//! partition's data once it leaves the WAL, and where reads below the WAL
//! tail come from.
//!
//! A segment's key names the first offset it covers,
//! `<ns>/seg/<topic-id>/<partition>/<base-offset:020>`; published segments
//! are contiguous (each ends where the next begins) up to the partition's
//! compacted offset in its metadata. A segment at or above the compacted
//! offset is not published (a compaction whose compare-and-swap has not
//! happened, or failed) and is never read as part of the log.

pub mod blocks;
pub mod compactor;
pub mod format;

use crate::objstore::{ObjectError, ObjectStore};
use crate::partition::{ChunkRef, PartitionId};
use crate::wal::format::FormatError;
use std::sync::Arc;
use uuid::Uuid;

/// Errors reading segments.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Object(#[from] ObjectError),
    #[error("segment {key}: {error}")]
    Format { key: String, error: FormatError },
    /// The published segments do not form one contiguous log.
    #[error("segments of {topic_id}/{partition} are not contiguous at offset {offset}")]
    Gap {
        topic_id: Uuid,
        partition: i32,
        offset: i64,
    },
}

/// Prefix of every segment of a topic.
pub fn topic_prefix(namespace: &str, topic_id: Uuid) -> String {
    format!("{namespace}/seg/{topic_id}/")
}

/// Prefix of every segment of a partition.
pub fn partition_prefix(namespace: &str, id: PartitionId) -> String {
    format!("{}{}/", topic_prefix(namespace, id.topic_id), id.partition)
}

/// The key of the partition's segment starting at `base_offset`.
pub fn segment_key(namespace: &str, id: PartitionId, base_offset: i64) -> String {
    format!("{}{base_offset:020}", partition_prefix(namespace, id))
}

/// The base offset a segment key names.
pub fn base_of_key(key: &str) -> Option<i64> {
    key.rsplit('/').next()?.parse().ok()
}

/// (topic id, partition, base offset) of a segment key under `<ns>/seg/`.
pub fn parse_key(namespace: &str, key: &str) -> Option<(PartitionId, i64)> {
    let rest = key.strip_prefix(namespace)?.strip_prefix("/seg/")?;
    let mut parts = rest.split('/');
    let topic_id = Uuid::parse_str(parts.next()?).ok()?;
    let partition = parts.next()?.parse().ok()?;
    let base = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((
        PartitionId {
            topic_id,
            partition,
        },
        base,
    ))
}

/// How many trailing bytes are read first: the whole footer of segments
/// with up to ~1,400 blocks.
const TAIL_READ: u64 = 64 << 10;

/// Reads and verifies a segment's footer with ranged reads.
pub async fn read_index(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
) -> Result<format::SegmentIndex, SegmentError> {
    let bad = |error| SegmentError::Format {
        key: key.to_string(),
        error,
    };
    if size < format::TRAILER_LEN as u64 {
        return Err(bad(FormatError::TooShort(size as usize)));
    }
    let from = size.saturating_sub(TAIL_READ);
    let tail = store.get_range(key, from..size).await?;
    if tail.len() as u64 != size - from {
        return Err(bad(FormatError::TooShort(tail.len())));
    }
    let (pos, crc) =
        format::decode_trailer(&tail[tail.len() - format::TRAILER_LEN..], size).map_err(bad)?;
    let footer_end = size - format::TRAILER_LEN as u64;
    let footer = if pos >= from {
        tail.slice((pos - from) as usize..(footer_end - from) as usize)
    } else {
        store.get_range(key, pos..footer_end).await?
    };
    format::decode_footer(&footer, pos, crc).map_err(bad)
}

/// The blocks of the partition's published segments holding offsets at or
/// above `log_start_offset`, as chunks in offset order: one LIST and one
/// footer read per retained segment. Fails unless the segments below
/// `compacted_offset` are contiguous and end exactly there (a log with a
/// hole is never served).
pub async fn recover_blocks(
    store: &dyn ObjectStore,
    namespace: &str,
    id: PartitionId,
    log_start_offset: i64,
    compacted_offset: i64,
) -> Result<Vec<ChunkRef>, SegmentError> {
    if compacted_offset <= 0 {
        return Ok(Vec::new());
    }
    let mut published: Vec<(i64, crate::objstore::ObjectMeta)> = store
        .list(&partition_prefix(namespace, id))
        .await?
        .into_iter()
        .filter_map(|o| base_of_key(&o.key).map(|b| (b, o)))
        .filter(|(b, _)| *b < compacted_offset)
        .collect();
    published.sort_by_key(|(b, _)| *b);
    let gap = |offset| SegmentError::Gap {
        topic_id: id.topic_id,
        partition: id.partition,
        offset,
    };
    let mut out = Vec::new();
    let mut expected: Option<i64> = None;
    for (i, (base, meta)) in published.iter().enumerate() {
        let next_base = published.get(i + 1).map(|(b, _)| *b);
        // Wholly below the log start (retention deleted it, or will): skip.
        if next_base.is_some_and(|n| n <= log_start_offset) {
            continue;
        }
        if let Some(e) = expected {
            if e != *base {
                return Err(gap(e));
            }
        }
        let index = read_index(store, &meta.key, meta.size).await?;
        if index.base_offset != *base
            || index.topic_id != id.topic_id
            || index.partition != id.partition
        {
            return Err(gap(*base));
        }
        expected = Some(index.end_offset);
        let key: Arc<str> = Arc::from(meta.key.as_str());
        out.extend(
            index
                .blocks
                .into_iter()
                .filter(|b| b.last_offset >= log_start_offset)
                .map(|entry| ChunkRef {
                    object: key.clone(),
                    entry,
                    cached: None,
                }),
        );
    }
    match expected {
        Some(e) if e == compacted_offset => Ok(out),
        // Everything compacted lies below the log start.
        None if log_start_offset >= compacted_offset => Ok(out),
        Some(e) => Err(gap(e)),
        None => Err(gap(log_start_offset)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objstore::local::LocalDirStore;
    use bytes::Bytes;

    fn id() -> PartitionId {
        PartitionId {
            topic_id: Uuid::from_u128(0xabc),
            partition: 4,
        }
    }

    async fn put_segment(store: &LocalDirStore, base: i64, end: i64) {
        let blocks = [format::BlockInput {
            base_offset: base,
            last_offset: end - 1,
            max_timestamp: 0,
            batch_count: 1,
            data: vec![Bytes::from(vec![1u8; 32])],
        }];
        let (obj, _) = format::encode(id().topic_id, id().partition, base, end, &blocks);
        store
            .put_if_absent(&segment_key("ns", id(), base), obj)
            .await
            .expect("put segment");
    }

    #[test]
    fn keys_round_trip() {
        let key = segment_key("ns", id(), 42);
        assert_eq!(key, format!("ns/seg/{}/4/{:020}", id().topic_id, 42));
        assert_eq!(parse_key("ns", &key), Some((id(), 42)));
        assert_eq!(base_of_key(&key), Some(42));
        assert_eq!(parse_key("other", &key), None);
    }

    #[tokio::test]
    async fn recovery_reads_the_published_chain_and_ignores_the_rest() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LocalDirStore::open(dir.path()).expect("store");
        put_segment(&store, 0, 10).await;
        put_segment(&store, 10, 25).await;
        // Not published: at the compacted offset.
        put_segment(&store, 25, 30).await;
        let blocks = recover_blocks(&store, "ns", id(), 0, 25)
            .await
            .expect("chain");
        assert_eq!(
            blocks
                .iter()
                .map(|b| b.entry.base_offset)
                .collect::<Vec<_>>(),
            vec![0, 10]
        );
        // Retention moved the log start past the first segment.
        let blocks = recover_blocks(&store, "ns", id(), 12, 25)
            .await
            .expect("chain");
        assert_eq!(
            blocks
                .iter()
                .map(|b| b.entry.base_offset)
                .collect::<Vec<_>>(),
            vec![10]
        );
        // A compacted offset beyond the published chain is a hole.
        assert!(matches!(
            recover_blocks(&store, "ns", id(), 0, 40).await,
            Err(SegmentError::Gap { offset: 30, .. })
        ));
    }
}
