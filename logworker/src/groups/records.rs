//! The coordinator log's records: Kafka's own `__consumer_offsets` schemas,
//! in the versions Kafka 3.9 writes, so tools that read the topic (Burrow,
//! lag exporters) understand it:
//!
//! - `OffsetCommitKey` v1 (`i16 1, group, topic, i32 partition`) with
//!   `OffsetCommitValue` v3 (`i16 3, i64 offset, i32 leader epoch,
//!   metadata, i64 commit timestamp`): a committed offset;
//! - `GroupMetadataKey` v2 (`i16 2, group`) with `GroupMetadataValue` v3:
//!   a group's membership and assignment after a rebalance;
//! - a null value: a tombstone (offset or group deleted).
//!
//! Replaying a slot's log in offset order, last record per key winning,
//! rebuilds the slot's groups. Logs written before this format hold
//! `kafscale.groups.v1` protobuf records ([`protobuf`]); they are still read
//! (a Kafka key starts with a zero byte, a protobuf key never does) and a
//! slot that holds any is rewritten in Kafka's format when it is loaded
//! (`GroupCoordinator::load`).

use super::group::{Committed, Group};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use kafscale_proto::groups::v1 as pb;
use std::collections::HashMap;

/// A record's key and value (None = tombstone).
pub type KeyValue = (Bytes, Option<Bytes>);

/// Errors decoding the coordinator log.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record batch: {0}")]
    Batch(String),
}

/// Key version of `OffsetCommitKey` Kafka writes (0 is read too).
const OFFSET_KEY_VERSION: i16 = 1;
/// Key version of `GroupMetadataKey`.
const GROUP_KEY_VERSION: i16 = 2;
/// Value version of `OffsetCommitValue` Kafka 3.9 writes without an expiry.
const OFFSET_VALUE_VERSION: i16 = 3;
/// Value version of `GroupMetadataValue` Kafka 3.9 writes.
const GROUP_VALUE_VERSION: i16 = 3;

fn put_str(out: &mut BytesMut, s: &str) {
    // Group ids, topics and member ids come from Kafka STRINGs (< 32 KiB).
    let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    out.put_i16(s.len() as i16);
    out.put_slice(s);
}

fn put_nullable_str(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
    out.put_slice(b);
}

fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut k = BytesMut::with_capacity(8 + group.len() + topic.len());
    k.put_i16(OFFSET_KEY_VERSION);
    put_str(&mut k, group);
    put_str(&mut k, topic);
    k.put_i32(partition);
    k.freeze()
}

fn group_key(group: &str) -> Bytes {
    let mut k = BytesMut::with_capacity(4 + group.len());
    k.put_i16(GROUP_KEY_VERSION);
    put_str(&mut k, group);
    k.freeze()
}

/// The record of a committed offset (`None`: its tombstone).
pub fn offset(group: &str, topic: &str, partition: i32, c: Option<&Committed>) -> KeyValue {
    let value = c.map(|c| {
        let metadata = c.metadata.as_deref().unwrap_or("");
        let mut v = BytesMut::with_capacity(24 + metadata.len());
        v.put_i16(OFFSET_VALUE_VERSION);
        v.put_i64(c.offset);
        v.put_i32(c.leader_epoch);
        put_str(&mut v, metadata);
        v.put_i64(c.commit_timestamp_ms);
        v.freeze()
    });
    (offset_key(group, topic, partition), value)
}

/// The snapshot record of a group's membership, with `assignments`
/// (member id → assignment) replacing the members' current ones if given.
pub fn group(g: &Group, assignments: Option<&HashMap<String, Bytes>>, now_ms: i64) -> KeyValue {
    let protocol = g.protocol_name.clone().unwrap_or_default();
    let mut v = BytesMut::with_capacity(128);
    v.put_i16(GROUP_VALUE_VERSION);
    put_str(&mut v, g.protocol_type.as_deref().unwrap_or(""));
    v.put_i32(g.generation);
    put_nullable_str(&mut v, g.protocol_name.as_deref());
    put_nullable_str(&mut v, g.leader.as_deref());
    v.put_i64(now_ms);
    v.put_i32(i32::try_from(g.members.len()).unwrap_or(i32::MAX));
    for m in g.members.values() {
        put_str(&mut v, &m.id);
        put_nullable_str(&mut v, m.instance_id.as_deref());
        put_str(&mut v, &m.client_id);
        put_str(&mut v, &m.client_host);
        v.put_i32(m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32);
        v.put_i32(m.session_timeout.as_millis().min(i32::MAX as u128) as i32);
        put_bytes(&mut v, &m.metadata(&protocol));
        let assignment = assignments
            .and_then(|a| a.get(&m.id))
            .unwrap_or(&m.assignment);
        put_bytes(&mut v, assignment);
    }
    (group_key(&g.id), Some(v.freeze()))
}

/// The tombstone of a group.
pub fn group_tombstone(group: &str) -> KeyValue {
    (group_key(group), None)
}

/// One uncompressed record batch holding `records` (offsets from 0; the log
/// patches the base offset on append).
pub fn batch(records: &[KeyValue], now_ms: i64) -> Result<Bytes, RecordError> {
    let recs: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: now_ms,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| RecordError::Batch(e.to_string()))?;
    Ok(out.freeze())
}

/// A decoded coordinator-log record. Values are held in the
/// `kafscale.groups.v1` message types whatever format they were read from.
#[derive(Debug)]
pub enum Replayed {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<pb::OffsetValue>,
    },
    Group {
        group: String,
        value: Option<pb::GroupValue>,
    },
}

impl Replayed {
    /// Whether the record deletes its key.
    pub fn is_tombstone(&self) -> bool {
        match self {
            Replayed::Offset { value, .. } => value.is_none(),
            Replayed::Group { value, .. } => value.is_none(),
        }
    }
}

/// One record of the log, decoded.
#[derive(Debug)]
pub struct Decoded {
    /// Its offset in the log.
    pub offset: i64,
    /// What it says.
    pub record: Replayed,
    /// The key, if the record is in the pre-Kafka-schema protobuf format.
    pub legacy_key: Option<Bytes>,
}

/// Decodes the records of `batches` (whole batches), with their offsets.
/// Records that do not decode are skipped with a warning.
pub fn decode(mut batches: Bytes) -> Result<Vec<Decoded>, RecordError> {
    let sets = RecordBatchDecoder::decode_all(&mut batches)
        .map_err(|e| RecordError::Batch(e.to_string()))?;
    let mut out = Vec::new();
    for set in sets {
        for r in set.records {
            let Some(key) = r.key else { continue };
            let (record, legacy_key) = if key.first() == Some(&0) {
                (kafka::decode(key, r.value), None)
            } else {
                (protobuf::decode(key.clone(), r.value), Some(key))
            };
            match record {
                Some(record) => out.push(Decoded {
                    offset: r.offset,
                    record,
                    legacy_key,
                }),
                None => tracing::warn!(offset = r.offset, "undecodable group record"),
            }
        }
    }
    Ok(out)
}

/// Reading Kafka's schemas (key versions 0–2, value versions 0–3).
mod kafka {
    use super::*;

    /// A bounds-checked reader of Kafka's classic primitives.
    struct Rd(Bytes);

    impl Rd {
        fn i16(&mut self) -> Option<i16> {
            (self.0.remaining() >= 2).then(|| self.0.get_i16())
        }
        fn i32(&mut self) -> Option<i32> {
            (self.0.remaining() >= 4).then(|| self.0.get_i32())
        }
        fn i64(&mut self) -> Option<i64> {
            (self.0.remaining() >= 8).then(|| self.0.get_i64())
        }
        fn take(&mut self, n: usize) -> Option<Bytes> {
            (self.0.remaining() >= n).then(|| self.0.split_to(n))
        }
        fn nullable_str(&mut self) -> Option<Option<String>> {
            let n = self.i16()?;
            if n < 0 {
                return Some(None);
            }
            let b = self.take(n as usize)?;
            String::from_utf8(b.to_vec()).ok().map(Some)
        }
        fn str(&mut self) -> Option<String> {
            self.nullable_str()?
        }
        fn bytes(&mut self) -> Option<Bytes> {
            let n = usize::try_from(self.i32()?).ok()?;
            self.take(n)
        }
    }

    pub(super) fn decode(key: Bytes, value: Option<Bytes>) -> Option<Replayed> {
        let mut k = Rd(key);
        match k.i16()? {
            0 | 1 => {
                let (group, topic, partition) = (k.str()?, k.str()?, k.i32()?);
                let value = match value {
                    Some(v) => Some(offset_value(Rd(v))?),
                    None => None,
                };
                Some(Replayed::Offset {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            2 => {
                let group = k.str()?;
                let value = match value {
                    Some(v) => Some(group_value(Rd(v))?),
                    None => None,
                };
                Some(Replayed::Group { group, value })
            }
            _ => None,
        }
    }

    fn offset_value(mut r: Rd) -> Option<pb::OffsetValue> {
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return None;
        }
        let offset = r.i64()?;
        let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
        let metadata = r.str()?;
        let commit_timestamp_ms = r.i64()?;
        Some(pb::OffsetValue {
            offset,
            leader_epoch,
            metadata: Some(metadata),
            commit_timestamp_ms,
        })
    }

    fn group_value(mut r: Rd) -> Option<pb::GroupValue> {
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return None;
        }
        let protocol_type = r.str()?;
        let generation = r.i32()?;
        let protocol_name = r.nullable_str()?.unwrap_or_default();
        let leader = r.nullable_str()?.unwrap_or_default();
        let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
        let count = usize::try_from(r.i32()?).ok()?;
        // The smallest member takes 22 bytes: never allocate beyond the value.
        let mut members = Vec::with_capacity(count.min(r.0.remaining() / 22));
        for _ in 0..count {
            let member_id = r.str()?;
            let group_instance_id = if version >= 3 {
                r.nullable_str()?
            } else {
                None
            };
            let client_id = r.str()?;
            let client_host = r.str()?;
            let session_or_rebalance = r.i32()?;
            let (rebalance_timeout_ms, session_timeout_ms) = if version >= 1 {
                (session_or_rebalance, r.i32()?)
            } else {
                (session_or_rebalance, session_or_rebalance)
            };
            members.push(pb::GroupMember {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription: r.bytes()?,
                assignment: r.bytes()?,
            });
        }
        Some(pb::GroupValue {
            protocol_type,
            generation,
            protocol_name,
            leader,
            state_timestamp_ms,
            members,
        })
    }
}

/// The format coordinator logs had before Kafka's schemas: `kafscale.groups.v1`
/// protobufs (proto/kafscale/groups/v1/groups.proto). Read on replay; written
/// only to test the upgrade.
pub mod protobuf {
    use super::*;
    use prost::Message;

    pub(super) fn decode(key: Bytes, value: Option<Bytes>) -> Option<Replayed> {
        let key = pb::RecordKey::decode(key).ok()?;
        Some(match key.kind? {
            pb::record_key::Kind::Offset(k) => Replayed::Offset {
                group: k.group,
                topic: k.topic,
                partition: k.partition,
                value: value.and_then(|v| pb::OffsetValue::decode(v).ok()),
            },
            pb::record_key::Kind::Group(group) => Replayed::Group {
                group,
                value: value.and_then(|v| pb::GroupValue::decode(v).ok()),
            },
        })
    }

    /// `r` as a record in the old format.
    pub fn encode(r: &Replayed) -> KeyValue {
        let (kind, value) = match r {
            Replayed::Offset {
                group,
                topic,
                partition,
                value,
            } => (
                pb::record_key::Kind::Offset(pb::OffsetKey {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                }),
                value.as_ref().map(|v| v.encode_to_vec()),
            ),
            Replayed::Group { group, value } => (
                pb::record_key::Kind::Group(group.clone()),
                value.as_ref().map(|v| v.encode_to_vec()),
            ),
        };
        let key = pb::RecordKey { kind: Some(kind) };
        (key.encode_to_vec().into(), value.map(Bytes::from))
    }

    /// A record of Kafka's format rewritten in the old one (`None` if it
    /// does not decode): how a test makes a log as earlier releases wrote it.
    pub fn from_kafka((key, value): &KeyValue) -> Option<KeyValue> {
        kafka::decode(key.clone(), value.clone()).map(|r| encode(&r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64, metadata: Option<&str>) -> Committed {
        Committed {
            offset,
            leader_epoch: 3,
            metadata: metadata.map(str::to_string),
            commit_timestamp_ms: 7,
            log_offset: 0,
        }
    }

    #[test]
    fn offset_records_are_kafkas_offset_commit_key_v1_and_value_v3() {
        let (k, v) = offset("g", "tp", 2, Some(&committed(42, Some("m"))));
        assert_eq!(
            &k[..],
            &[0, 1, 0, 1, b'g', 0, 2, b't', b'p', 0, 0, 0, 2][..]
        );
        let v = v.expect("value");
        let mut want = vec![0, 3];
        want.extend_from_slice(&42i64.to_be_bytes());
        want.extend_from_slice(&3i32.to_be_bytes());
        want.extend_from_slice(&[0, 1, b'm']);
        want.extend_from_slice(&7i64.to_be_bytes());
        assert_eq!(&v[..], &want[..]);
        // Kafka keeps no null metadata: "" is written.
        let (_, v) = offset("g", "tp", 2, Some(&committed(1, None)));
        assert_eq!(&v.expect("value")[14..16], &[0, 0]);
        assert_eq!(&group_tombstone("g").0[..], &[0, 2, 0, 1, b'g'][..]);
    }

    #[test]
    fn records_round_trip() {
        let g = Group::new("g1");
        let recs = vec![
            offset("g1", "t", 2, Some(&committed(42, Some("m")))),
            offset("g1", "t", 3, None),
            group(&g, None, 9),
            group_tombstone("g1"),
        ];
        let b = batch(&recs, 1).unwrap();
        let out = decode(b).unwrap();
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|d| d.legacy_key.is_none()));
        match &out[0].record {
            Replayed::Offset {
                group,
                topic,
                partition,
                value: Some(v),
            } => {
                assert_eq!((group.as_str(), topic.as_str(), *partition), ("g1", "t", 2));
                assert_eq!((v.offset, v.leader_epoch), (42, 3));
                assert_eq!(v.metadata.as_deref(), Some("m"));
                assert_eq!(v.commit_timestamp_ms, 7);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &out[1].record,
            Replayed::Offset { value: None, .. }
        ));
        match &out[2].record {
            Replayed::Group {
                group,
                value: Some(v),
            } => {
                assert_eq!(group, "g1");
                assert_eq!((v.generation, v.state_timestamp_ms), (g.generation, 9));
                assert!(v.members.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &out[3].record,
            Replayed::Group { value: None, .. }
        ));
        assert_eq!(out[3].offset, 3);
    }

    #[test]
    fn older_kafka_value_versions_read() {
        // OffsetCommitValue v1 (with an expiry) and GroupMetadataValue v0.
        let mut v = BytesMut::new();
        v.put_i16(1);
        v.put_i64(5);
        put_str(&mut v, "meta");
        v.put_i64(11);
        v.put_i64(99);
        let (k, _) = offset("g", "t", 0, None);
        let mut g = BytesMut::new();
        g.put_i16(0);
        put_str(&mut g, "consumer");
        g.put_i32(4);
        put_nullable_str(&mut g, Some("range"));
        put_nullable_str(&mut g, Some("m1"));
        g.put_i32(1);
        put_str(&mut g, "m1");
        put_str(&mut g, "client");
        put_str(&mut g, "/127.0.0.1");
        g.put_i32(10_000);
        put_bytes(&mut g, b"sub");
        put_bytes(&mut g, b"asg");
        let recs = vec![(k, Some(v.freeze())), (group_key("g"), Some(g.freeze()))];
        let out = decode(batch(&recs, 1).unwrap()).unwrap();
        match &out[0].record {
            Replayed::Offset { value: Some(v), .. } => {
                assert_eq!(
                    (v.offset, v.leader_epoch, v.commit_timestamp_ms),
                    (5, -1, 11)
                );
                assert_eq!(v.metadata.as_deref(), Some("meta"));
            }
            other => panic!("{other:?}"),
        }
        match &out[1].record {
            Replayed::Group { value: Some(v), .. } => {
                assert_eq!((v.generation, v.leader.as_str()), (4, "m1"));
                let m = &v.members[0];
                assert_eq!(
                    (m.session_timeout_ms, m.rebalance_timeout_ms),
                    (10_000, 10_000)
                );
                assert_eq!(
                    (&m.subscription[..], &m.assignment[..]),
                    (&b"sub"[..], &b"asg"[..])
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protobuf_records_of_earlier_releases_still_read_and_are_marked_legacy() {
        let g = Group::new("g1");
        let recs: Vec<KeyValue> = [
            offset("g1", "t", 2, Some(&committed(42, Some("m")))),
            group(&g, None, 9),
            offset("g1", "t", 2, None),
        ]
        .iter()
        .map(|kv| protobuf::from_kafka(kv).expect("converts"))
        .collect();
        let out = decode(batch(&recs, 1).unwrap()).unwrap();
        assert_eq!(out.len(), 3);
        for (d, (k, _)) in out.iter().zip(&recs) {
            assert_eq!(d.legacy_key.as_ref(), Some(k));
        }
        assert!(matches!(
            &out[0].record,
            Replayed::Offset { value: Some(v), .. } if v.offset == 42
        ));
        assert!(matches!(
            &out[1].record,
            Replayed::Group { value: Some(_), .. }
        ));
        assert!(matches!(
            &out[2].record,
            Replayed::Offset { value: None, .. }
        ));
    }

    #[test]
    fn damaged_kafka_values_are_skipped() {
        let (k, v) = offset("g", "t", 0, Some(&committed(1, None)));
        let v = v.unwrap();
        let mut recs = vec![(k.clone(), Some(v.slice(..v.len() - 1)))];
        let mut huge = BytesMut::new();
        huge.put_i16(3);
        put_str(&mut huge, "consumer");
        huge.put_i32(1);
        huge.put_i16(-1);
        huge.put_i16(-1);
        huge.put_i64(0);
        huge.put_i32(i32::MAX);
        recs.push((group_key("g"), Some(huge.freeze())));
        recs.push((Bytes::from_static(&[0, 9, 0, 0]), None));
        assert!(decode(batch(&recs, 1).unwrap()).unwrap().is_empty());
    }
}
