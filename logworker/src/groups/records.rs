//! The coordinator log's records (`kafscale.groups.v1`): encoding of commits,
//! group snapshots and tombstones into Kafka record batches, and decoding on
//! replay. Replaying a slot's log in offset order, last record per key
//! winning, rebuilds the slot's groups.

use super::group::{Committed, Group};
use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use kafscale_proto::groups::v1 as pb;
use prost::Message;
use std::collections::HashMap;

/// A record's key and value (None = tombstone).
pub type KeyValue = (Bytes, Option<Bytes>);

/// Errors decoding the coordinator log.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record batch: {0}")]
    Batch(String),
}

/// The record of a committed offset.
pub fn offset(group: &str, topic: &str, partition: i32, c: Option<&Committed>) -> KeyValue {
    let key = pb::RecordKey {
        kind: Some(pb::record_key::Kind::Offset(pb::OffsetKey {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
        })),
    };
    let value = c.map(|c| {
        pb::OffsetValue {
            offset: c.offset,
            leader_epoch: c.leader_epoch,
            metadata: c.metadata.clone(),
            commit_timestamp_ms: c.commit_timestamp_ms,
        }
        .encode_to_vec()
        .into()
    });
    (key.encode_to_vec().into(), value)
}

fn group_key(group: &str) -> Bytes {
    pb::RecordKey {
        kind: Some(pb::record_key::Kind::Group(group.to_string())),
    }
    .encode_to_vec()
    .into()
}

/// The snapshot record of a group's membership, with `assignments`
/// (member id → assignment) replacing the members' current ones if given.
pub fn group(g: &Group, assignments: Option<&HashMap<String, Bytes>>, now_ms: i64) -> KeyValue {
    let protocol = g.protocol_name.clone().unwrap_or_default();
    let members = g
        .members
        .values()
        .map(|m| pb::GroupMember {
            member_id: m.id.clone(),
            group_instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
            session_timeout_ms: m.session_timeout.as_millis() as i32,
            subscription: m.metadata(&protocol),
            assignment: assignments
                .and_then(|a| a.get(&m.id).cloned())
                .unwrap_or_else(|| m.assignment.clone()),
        })
        .collect();
    let value = pb::GroupValue {
        protocol_type: g.protocol_type.clone().unwrap_or_default(),
        generation: g.generation,
        protocol_name: protocol,
        leader: g.leader.clone().unwrap_or_default(),
        state_timestamp_ms: now_ms,
        members,
    };
    (group_key(&g.id), Some(value.encode_to_vec().into()))
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

/// A decoded coordinator-log record.
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

/// Decodes the records of `batches` (whole batches), with their offsets.
/// Records that do not decode are skipped with a warning.
pub fn decode(mut batches: Bytes) -> Result<Vec<(i64, Replayed)>, RecordError> {
    let sets = RecordBatchDecoder::decode_all(&mut batches)
        .map_err(|e| RecordError::Batch(e.to_string()))?;
    let mut out = Vec::new();
    for set in sets {
        for r in set.records {
            let Some(key) = r.key.as_ref() else { continue };
            let Ok(key) = pb::RecordKey::decode(key.clone()) else {
                tracing::warn!(offset = r.offset, "undecodable group record key");
                continue;
            };
            let item = match key.kind {
                Some(pb::record_key::Kind::Offset(k)) => Replayed::Offset {
                    group: k.group,
                    topic: k.topic,
                    partition: k.partition,
                    value: r
                        .value
                        .as_ref()
                        .and_then(|v| pb::OffsetValue::decode(v.clone()).ok()),
                },
                Some(pb::record_key::Kind::Group(group)) => Replayed::Group {
                    group,
                    value: r
                        .value
                        .as_ref()
                        .and_then(|v| pb::GroupValue::decode(v.clone()).ok()),
                },
                None => continue,
            };
            out.push((r.offset, item));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let c = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: Some("m".into()),
            commit_timestamp_ms: 7,
            log_offset: 0,
        };
        let g = Group::new("g1");
        let recs = vec![
            offset("g1", "t", 2, Some(&c)),
            offset("g1", "t", 3, None),
            group(&g, None, 9),
            group_tombstone("g1"),
        ];
        let b = batch(&recs, 1).unwrap();
        let out = decode(b).unwrap();
        assert_eq!(out.len(), 4);
        match &out[0].1 {
            Replayed::Offset {
                group,
                topic,
                partition,
                value: Some(v),
            } => {
                assert_eq!((group.as_str(), topic.as_str(), *partition), ("g1", "t", 2));
                assert_eq!((v.offset, v.leader_epoch), (42, 3));
                assert_eq!(v.metadata.as_deref(), Some("m"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&out[1].1, Replayed::Offset { value: None, .. }));
        assert!(matches!(&out[2].1, Replayed::Group { value: Some(_), .. }));
        assert!(matches!(&out[3].1, Replayed::Group { value: None, .. }));
        assert_eq!(out[3].0, 3);
    }
}
