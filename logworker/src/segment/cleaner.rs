//! Key compaction ("log cleaning") of `cleanup.policy=compact` topics and of
//! the coordinator log: the latest record per key stays, older ones go,
//! tombstones go after `delete.retention.ms`, offsets never change (the log
//! has gaps, as Kafka's does).
//!
//! One pass, run by the partition's owner after compaction cut its segments:
//! 1. The dirty range is the plain segments from the cleaned offset on whose
//!    records are all older than `min.compaction.lag.ms`. A pass runs once
//!    they hold at least `min.cleanable.dirty.ratio` of the log's bytes.
//! 2. An offset map (128-bit key hash → last offset) is built over the dirty
//!    range, bounded to [`MAX_KEYS`] keys: a pass that fills it ends its
//!    dirty range at that segment, and the next pass goes on from there.
//! 3. Every segment from the log start to the end of the dirty range is
//!    rewritten: a record stays unless a later record of its key is in the
//!    map or it has no key; a tombstone also goes once it has been through
//!    one pass and its batch is older than `delete.retention.ms`. A batch
//!    whose records all stay is copied as it is; others are re-encoded with
//!    their codec, keeping every record's offset.
//! 4. The new segments are created with the conditional create under a
//!    generation no other pass uses (the owner epoch in its high 32 bits),
//!    then published with one compare-and-swap on the partition state that
//!    requires this owner's epoch and the cleaned offset and generation the
//!    pass started from. The segments they replace are garbage collection's.
//!
//! Memory: the offset map and one output segment. Produce acks never wait.

use crate::batch;
use crate::partition::{ChunkRef, PartitionLog, SegmentSpan};
use crate::reader;
use crate::segment::compactor::{owner_epoch, still_owner, CompactionError, BLOCK_BYTES};
use crate::segment::{cleaned_key, format, parse_key, partition_prefix};
use crate::worker::Worker;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};
use kafscale_controlplane::log_policy::LogPolicy;
use kafscale_controlplane::metadata::now_ms;
use kafscale_controlplane::MetaError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// Most distinct keys one pass maps (about 50 bytes each in memory).
pub const MAX_KEYS: usize = 1 << 20;

/// A key's identity in the offset map: the first 16 bytes of its SHA-256.
type KeyHash = [u8; 16];

fn key_hash(key: &[u8]) -> KeyHash {
    let digest = Sha256::digest(key);
    let mut h = [0u8; 16];
    h.copy_from_slice(&digest[..16]);
    h
}

/// Which records one pass keeps.
pub struct Rules<'a> {
    /// The last offset of every key of the dirty range.
    pub latest: &'a HashMap<KeyHash, i64>,
    /// Records below it have been through a pass already.
    pub cleaned_before: i64,
    /// Tombstones in batches whose newest timestamp is older go.
    pub tombstone_horizon: i64,
}

impl Rules<'_> {
    fn keeps(&self, r: &Record, batch_max_timestamp: i64) -> bool {
        let Some(key) = &r.key else {
            return false;
        };
        if self
            .latest
            .get(&key_hash(key))
            .is_some_and(|&last| r.offset < last)
        {
            return false;
        }
        !(r.value.is_none()
            && r.offset < self.cleaned_before
            && batch_max_timestamp < self.tombstone_horizon)
    }
}

/// Decodes a stored batch's records (control batches are left alone).
fn records_of(
    stored: &Bytes,
) -> Result<Option<kafka_protocol::records::RecordSet>, CompactionError> {
    if stored.len() > 22 && stored[22] & 0x20 != 0 {
        return Ok(None);
    }
    let mut b = stored.clone();
    RecordBatchDecoder::decode(&mut b)
        .map(Some)
        .map_err(|e| CompactionError::Corrupt(format!("stored batch does not decode: {e}")))
}

/// One stored batch after cleaning: `None` if no record stays, the same
/// bytes if every record does, else the kept records re-encoded with the
/// batch's codec (offsets, timestamps and producer fields unchanged).
pub fn clean_batch(stored: Bytes, rules: &Rules<'_>) -> Result<Option<Bytes>, CompactionError> {
    let Some(set) = records_of(&stored)? else {
        return Ok(Some(stored));
    };
    let max_ts = batch::max_timestamp(&stored);
    let kept: Vec<&Record> = set
        .records
        .iter()
        .filter(|r| rules.keeps(r, max_ts))
        .collect();
    if kept.len() == set.records.len() {
        return Ok(Some(stored));
    }
    if kept.is_empty() {
        return Ok(None);
    }
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        kept,
        &RecordEncodeOptions {
            version: 2,
            compression: set.compression,
        },
    )
    .map_err(|e| CompactionError::Corrupt(format!("cleaned batch does not encode: {e}")))?;
    Ok(Some(out.freeze()))
}

/// Output blocks of whole batches, cut at about [`BLOCK_BYTES`].
#[derive(Default)]
struct BlockWriter {
    blocks: Vec<format::BlockInput>,
    bytes: usize,
}

impl BlockWriter {
    fn push(&mut self, b: Bytes) {
        let (base, last, ts) = (
            batch::base_offset(&b),
            batch::last_offset(&b),
            batch::max_timestamp(&b),
        );
        self.bytes += b.len();
        match self.blocks.last_mut() {
            Some(block) if block.len() + b.len() <= BLOCK_BYTES => {
                block.last_offset = last;
                block.max_timestamp = block.max_timestamp.max(ts);
                block.batch_count += 1;
                block.data.push(b);
            }
            _ => self.blocks.push(format::BlockInput {
                base_offset: base,
                last_offset: last,
                max_timestamp: ts,
                batch_count: 1,
                data: vec![b],
                // Read once by the encoder: cleaning is not on the
                // produce path.
                crc: None,
            }),
        }
    }
}

impl Worker {
    /// Runs one cleaning pass if one is due; returns whether it did.
    pub(crate) async fn clean_once(
        &self,
        log: &PartitionLog,
        policy: &LogPolicy,
    ) -> Result<bool, CompactionError> {
        let segments = log.segments();
        let from = log.cleaned();
        let (cleaned, _) = from;
        let now = now_ms();
        let lag_limit = now.saturating_sub(policy.min_compaction_lag_ms);
        let dirty: Vec<&SegmentSpan> = segments
            .iter()
            .filter(|s| s.base_offset >= cleaned)
            .take_while(|s| s.max_timestamp <= lag_limit)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.bytes).sum();
        let total: u64 = segments.iter().map(|s| s.bytes).sum();
        if dirty.is_empty()
            || (dirty_bytes as f64) < policy.min_cleanable_dirty_ratio * total as f64
        {
            return Ok(false);
        }
        let blocks = log.segment_blocks();
        let blocks_of = |s: &SegmentSpan| -> Vec<&ChunkRef> {
            blocks
                .iter()
                .filter(|c| {
                    c.entry.base_offset >= s.base_offset && c.entry.base_offset < s.end_offset
                })
                .collect()
        };
        // The offset map of the dirty range.
        let mut latest: HashMap<KeyHash, i64> = HashMap::new();
        let mut end = cleaned;
        for s in &dirty {
            let mut reads = std::pin::pin!(reader::chunks_in_order(
                &self.source,
                blocks_of(s).into_iter().cloned().collect()
            ));
            while let Some(read) = reads.next().await {
                let (_, data) = read?;
                for b in batch::iter_batches(data) {
                    let Some(set) = records_of(&b)? else { continue };
                    for r in &set.records {
                        if let Some(k) = &r.key {
                            latest.insert(key_hash(k), r.offset);
                        }
                    }
                }
            }
            end = s.end_offset;
            if latest.len() >= MAX_KEYS {
                break;
            }
        }
        let rules = Rules {
            latest: &latest,
            cleaned_before: cleaned,
            tombstone_horizon: now.saturating_sub(policy.delete_retention_ms),
        };
        let epoch = owner_epoch(log);
        let generation = self.next_generation(log, from.1, epoch).await?;
        // Rewrite everything below `end` into segments of about
        // segment.bytes, cut at input segment boundaries.
        let mut written: Vec<(Arc<str>, format::SegmentIndex)> = Vec::new();
        let mut out = BlockWriter::default();
        let mut out_base: Option<i64> = None;
        let inputs: Vec<&SegmentSpan> = segments.iter().filter(|s| s.end_offset <= end).collect();
        for (i, s) in inputs.iter().enumerate() {
            out_base.get_or_insert(s.base_offset);
            let mut reads = std::pin::pin!(reader::chunks_in_order(
                &self.source,
                blocks_of(s).into_iter().cloned().collect()
            ));
            while let Some(read) = reads.next().await {
                let (_, data) = read?;
                for b in batch::iter_batches(data) {
                    if b.len() < batch::HEADER_LEN {
                        continue;
                    }
                    if let Some(kept) = clean_batch(b, &rules)? {
                        out.push(kept);
                    }
                }
            }
            let last = i + 1 == inputs.len();
            if last || out.bytes as u64 >= policy.segment_bytes {
                let base = out_base.take().unwrap_or(s.base_offset);
                let blocks = std::mem::take(&mut out).blocks;
                let (body, index) = format::encode(
                    log.id.topic_id,
                    log.id.partition,
                    base,
                    s.end_offset,
                    &blocks,
                );
                let key = cleaned_key(&self.cfg.namespace, log.id, base, generation);
                self.store.put_if_absent(&key, body).await?;
                written.push((Arc::from(key.as_str()), index));
            }
        }
        crate::failpoint::hit("cleaner-segments-written");
        self.meta
            .try_update_partition_state(log.id.topic_id, log.id.partition, |st| {
                still_owner(st, epoch)?;
                if (st.cleaned_offset, st.clean_generation) != from || st.compacted_offset < end {
                    return Err(MetaError::Fenced(format!(
                        "cleaned to {} (generation {}), not {:?}",
                        st.cleaned_offset, st.clean_generation, from
                    )));
                }
                st.cleaned_offset = end;
                st.clean_generation = generation;
                Ok(())
            })
            .await?;
        crate::failpoint::hit("cleaner-published");
        let before: u64 = inputs.iter().map(|s| s.bytes).sum();
        let after: u64 = written
            .iter()
            .flat_map(|(_, index)| index.blocks.iter())
            .map(|b| u64::from(b.length))
            .sum();
        let new_blocks = written
            .into_iter()
            .flat_map(|(key, index)| {
                index.blocks.into_iter().map(move |entry| ChunkRef {
                    object: key.clone(),
                    entry,
                    cached: None,
                })
            })
            .collect();
        log.install_cleaned(from, end, generation, new_blocks);
        tracing::info!(topic = %log.topic, partition = log.id.partition, cleaned_offset = end, generation, keys = latest.len(), bytes_before = before, bytes_after = after, "log cleaned");
        Ok(true)
    }

    /// A generation no other pass of this partition used: above every one
    /// in the object store, with this owner's epoch in its high bits.
    async fn next_generation(
        &self,
        log: &PartitionLog,
        published: u64,
        epoch: u64,
    ) -> Result<u64, CompactionError> {
        let ns = &self.cfg.namespace;
        let listed = self
            .store
            .list(&partition_prefix(ns, log.id))
            .await?
            .iter()
            .filter_map(|o| parse_key(ns, &o.key)?.generation)
            .max()
            .unwrap_or(0);
        Ok((epoch << 32).max(published).max(listed) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;
    use kafka_protocol::records::{Compression, TimestampType};

    fn record(offset: i64, key: Option<&str>, value: Option<&str>) -> Record {
        Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 3,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32,
            timestamp: 1_000 + offset,
            key: key.map(|k| Bytes::from(k.to_string())),
            value: value.map(|v| Bytes::from(v.to_string())),
            headers: IndexMap::new(),
            delete_horizon: false,
        }
    }

    fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    fn decoded(b: &Bytes) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
        let mut b = b.clone();
        RecordBatchDecoder::decode(&mut b)
            .expect("decode")
            .records
            .into_iter()
            .map(|r| (r.offset, r.key, r.value))
            .collect()
    }

    #[test]
    fn only_the_latest_record_per_key_stays_at_its_offset() {
        for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let stored = encode(
                &[
                    record(10, Some("a"), Some("1")),
                    record(11, Some("b"), Some("1")),
                    record(12, Some("a"), Some("2")),
                    record(13, None, Some("keyless")),
                    record(14, Some("c"), None),
                ],
                compression,
            );
            let latest = HashMap::from([(key_hash(b"a"), 12), (key_hash(b"b"), 11)]);
            let rules = Rules {
                latest: &latest,
                cleaned_before: 0,
                tombstone_horizon: i64::MAX,
            };
            let out = clean_batch(stored, &rules)
                .expect("clean")
                .expect("some stay");
            let got: Vec<i64> = decoded(&out).iter().map(|r| r.0).collect();
            // The tombstone of c stays: it has not been through a pass yet.
            assert_eq!(got, vec![11, 12, 14], "{compression:?}");
            assert_eq!(batch::base_offset(&out), 11);
        }
    }

    #[test]
    fn batches_wholly_kept_are_copied_and_wholly_dropped_vanish() {
        let stored = encode(&[record(0, Some("x"), Some("1"))], Compression::None);
        let none = HashMap::new();
        let keep_all = Rules {
            latest: &none,
            cleaned_before: 0,
            tombstone_horizon: 0,
        };
        assert_eq!(
            clean_batch(stored.clone(), &keep_all).expect("clean"),
            Some(stored.clone())
        );
        let newer = HashMap::from([(key_hash(b"x"), 5)]);
        let superseded = Rules {
            latest: &newer,
            ..keep_all
        };
        assert_eq!(clean_batch(stored, &superseded).expect("clean"), None);
    }

    #[test]
    fn tombstones_go_after_a_pass_and_the_retention_delay() {
        let stored = encode(&[record(4, Some("k"), None)], Compression::None);
        let none = HashMap::new();
        let young = Rules {
            latest: &none,
            cleaned_before: 10,
            tombstone_horizon: 0,
        };
        assert!(clean_batch(stored.clone(), &young)
            .expect("clean")
            .is_some());
        let old = Rules {
            tombstone_horizon: i64::MAX,
            ..young
        };
        assert!(clean_batch(stored.clone(), &old).expect("clean").is_none());
        let first_pass = Rules {
            cleaned_before: 0,
            ..old
        };
        assert!(clean_batch(stored, &first_pass).expect("clean").is_some());
    }
}
