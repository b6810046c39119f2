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
//!
//! Key compaction ([`cleaner`]) rewrites the log below some offset into
//! cleaned segments `<base-offset:020>.<generation:020>`; the partition
//! state names the generation in use and where it ends (`cleaned_offset`).
//! The log is then the cleaned chain up to `cleaned_offset` and the plain
//! segments from there to the compacted offset.

pub mod blocks;
pub mod cleaner;
pub mod compactor;
pub mod format;

use crate::objstore::{ObjectError, ObjectStore};
use crate::partition::{ChunkRef, PartitionId};
use crate::wal::format::FormatError;
use futures::{StreamExt, TryStreamExt};
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

/// The key of the partition's cleaned segment of `generation` starting at
/// `base_offset`.
pub fn cleaned_key(namespace: &str, id: PartitionId, base_offset: i64, generation: u64) -> String {
    format!(
        "{}.{generation:020}",
        segment_key(namespace, id, base_offset)
    )
}

/// The base offset and (for a cleaned segment) generation a segment key's
/// last part names.
fn name_parts(name: &str) -> Option<(i64, Option<u64>)> {
    match name.split_once('.') {
        Some((base, generation)) => Some((base.parse().ok()?, Some(generation.parse().ok()?))),
        None => Some((name.parse().ok()?, None)),
    }
}

/// The base offset a segment key names.
pub fn base_of_key(key: &str) -> Option<i64> {
    name_parts(key.rsplit('/').next()?).map(|(base, _)| base)
}

/// A segment key under `<ns>/seg/`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentName {
    pub id: PartitionId,
    pub base_offset: i64,
    /// The cleaning generation of a cleaned segment; `None` for a segment
    /// compaction cut from the WAL.
    pub generation: Option<u64>,
}

/// Parses a segment key under `<ns>/seg/`.
pub fn parse_key(namespace: &str, key: &str) -> Option<SegmentName> {
    let rest = key.strip_prefix(namespace)?.strip_prefix("/seg/")?;
    let mut parts = rest.split('/');
    let topic_id = Uuid::parse_str(parts.next()?).ok()?;
    let partition = parts.next()?.parse().ok()?;
    let (base_offset, generation) = name_parts(parts.next()?)?;
    parts.next().is_none().then_some(SegmentName {
        id: PartitionId {
            topic_id,
            partition,
        },
        base_offset,
        generation,
    })
}

/// Where a partition's published segments end, from its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    pub log_start_offset: i64,
    /// Below it: the cleaned segments of `clean_generation`.
    pub cleaned_offset: i64,
    pub clean_generation: u64,
    /// Below it (from `cleaned_offset`): plain segments.
    pub compacted_offset: i64,
}

impl Published {
    /// Whether the segment `name` is part of the published log (possibly
    /// wholly below the log start).
    pub fn holds(&self, name: &SegmentName) -> bool {
        match name.generation {
            Some(g) => g == self.clean_generation && name.base_offset < self.cleaned_offset,
            None => {
                name.base_offset >= self.cleaned_offset && name.base_offset < self.compacted_offset
            }
        }
    }
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

/// How many segment footers a partition open reads at once.
const FOOTER_READS: usize = 16;

/// The blocks of the partition's published segments holding offsets at or
/// above the log start, as chunks in offset order: one LIST and one footer
/// read per retained segment. Fails unless the published segments are
/// contiguous and end exactly at the compacted offset (a log with a hole is
/// never served).
pub async fn recover_blocks(
    store: &dyn ObjectStore,
    namespace: &str,
    id: PartitionId,
    at: Published,
) -> Result<Vec<ChunkRef>, SegmentError> {
    let Published {
        log_start_offset,
        compacted_offset,
        ..
    } = at;
    if compacted_offset <= 0 {
        return Ok(Vec::new());
    }
    let mut published: Vec<(i64, crate::objstore::ObjectMeta)> = store
        .list(&partition_prefix(namespace, id))
        .await?
        .into_iter()
        .filter_map(|o| {
            let name = parse_key(namespace, &o.key)?;
            (name.id == id && at.holds(&name)).then_some((name.base_offset, o))
        })
        .collect();
    published.sort_by_key(|(b, _)| *b);
    let gap = |offset| SegmentError::Gap {
        topic_id: id.topic_id,
        partition: id.partition,
        offset,
    };
    // Wholly below the log start (retention deleted it, or will): skipped.
    let retained: Vec<&(i64, crate::objstore::ObjectMeta)> = published
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            published
                .get(i + 1)
                .is_none_or(|(n, _)| *n > log_start_offset)
        })
        .map(|(_, p)| p)
        .collect();
    // A long-lived partition has hundreds of segments: their footers are
    // read several at a time, not one round trip after another.
    let wanted: Vec<(usize, String, u64)> = retained
        .iter()
        .enumerate()
        .map(|(i, (_, meta))| (i, meta.key.clone(), meta.size))
        .collect();
    let mut indexes: Vec<(usize, format::SegmentIndex)> =
        futures::stream::iter(wanted)
            .map(|(i, key, size)| async move {
                read_index(store, &key, size).await.map(|index| (i, index))
            })
            .buffer_unordered(FOOTER_READS)
            .try_collect()
            .await?;
    indexes.sort_by_key(|(i, _)| *i);
    let mut out = Vec::new();
    let mut expected: Option<i64> = None;
    for ((base, meta), (_, index)) in retained.iter().zip(indexes) {
        if let Some(e) = expected {
            if e != *base {
                return Err(gap(e));
            }
        }
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
        put_named(store, &segment_key("ns", id(), base), base, end).await;
    }

    async fn put_named(store: &LocalDirStore, key: &str, base: i64, end: i64) {
        let blocks = [format::BlockInput {
            base_offset: base,
            last_offset: end - 1,
            max_timestamp: 0,
            batch_count: 1,
            data: vec![Bytes::from(vec![1u8; 32])],
            crc: None,
        }];
        let (obj, _) = format::encode(id().topic_id, id().partition, base, end, &blocks);
        store.put_if_absent(key, obj).await.expect("put segment");
    }

    #[tokio::test]
    async fn the_cleaned_chain_of_the_published_generation_comes_first() {
        let dir = tempfile::tempdir().expect("dir");
        let store = LocalDirStore::open(dir.path()).expect("store");
        // Plain segments, the first two replaced by cleaning.
        put_segment(&store, 0, 10).await;
        put_segment(&store, 10, 20).await;
        put_segment(&store, 20, 30).await;
        // Generation 5 is published; 4 is older, 6 an unfinished pass.
        for generation in [4, 5, 6] {
            put_named(&store, &cleaned_key("ns", id(), 0, generation), 0, 20).await;
        }
        let at = Published {
            log_start_offset: 0,
            cleaned_offset: 20,
            clean_generation: 5,
            compacted_offset: 30,
        };
        let blocks = recover_blocks(&store, "ns", id(), at).await.expect("chain");
        assert_eq!(
            blocks
                .iter()
                .map(|b| (b.entry.base_offset, b.object.to_string()))
                .collect::<Vec<_>>(),
            vec![
                (0, cleaned_key("ns", id(), 0, 5)),
                (20, segment_key("ns", id(), 20))
            ]
        );
    }

    #[test]
    fn keys_round_trip() {
        let key = segment_key("ns", id(), 42);
        assert_eq!(key, format!("ns/seg/{}/4/{:020}", id().topic_id, 42));
        assert_eq!(
            parse_key("ns", &key),
            Some(SegmentName {
                id: id(),
                base_offset: 42,
                generation: None
            })
        );
        assert_eq!(base_of_key(&key), Some(42));
        let cleaned = cleaned_key("ns", id(), 42, 7);
        assert_eq!(
            parse_key("ns", &cleaned).and_then(|n| n.generation),
            Some(7)
        );
        assert_eq!(base_of_key(&cleaned), Some(42));
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
        let at = |log_start_offset, compacted_offset| Published {
            log_start_offset,
            compacted_offset,
            ..Published::default()
        };
        let blocks = recover_blocks(&store, "ns", id(), at(0, 25))
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
        let blocks = recover_blocks(&store, "ns", id(), at(12, 25))
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
            recover_blocks(&store, "ns", id(), at(0, 40)).await,
            Err(SegmentError::Gap { offset: 30, .. })
        ));
    }
}
