//! Old versions of the offset APIs: OffsetCommit v0–1, OffsetFetch v0 and
//! ListOffsets v0.
//!
//! Kafka stored v0 commits in ZooKeeper; here there is one store, so v0
//! commits and fetches use the group coordinator like every later version.

use super::wire::{Reader, WireError, Writer};
use super::{at, respond};
use crate::dispatch::{decode, encode, Ctx, Outcome};
use crate::handlers::{groups, list_offsets};
use bytes::{BufMut, Bytes};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;

/// Reads an OffsetCommit v0 or v1 request as v2: v0 commits outside any
/// generation (generation -1, no member); v1's per-partition commit
/// timestamps are read and dropped (they only set an expiry, which v2
/// replaced by the retention time; -1 = the broker's default).
pub fn read_offset_commit(body: &mut Bytes, v: i16) -> Result<OffsetCommitRequest, WireError> {
    let mut r = Reader::new(body);
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(r.string()?);
    req.generation_id_or_member_epoch = -1;
    if v >= 1 {
        req.generation_id_or_member_epoch = r.i32()?;
        req.member_id = r.string()?;
    }
    req.retention_time_ms = -1;
    req.topics = r.array(6, |r| {
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(r.string()?);
        t.partitions = r.array(14, |r| {
            let mut p = OffsetCommitRequestPartition::default();
            p.partition_index = r.i32()?;
            p.committed_offset = r.i64()?;
            if v >= 1 {
                r.i64()?; // commit timestamp
            }
            p.committed_leader_epoch = -1;
            p.committed_metadata = r.nullable_string()?;
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok(req)
}

/// OffsetCommit v0–1; the answer's format is v2's.
pub async fn offset_commit(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let req = match read_offset_commit(body, ctx.version) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, version = ctx.version, "malformed OffsetCommit");
            return Outcome::Close;
        }
    };
    match groups::offset_commit(&at(ctx, 2), req).await {
        Ok(r) => encode(cid, 2, &r),
        Err(_) => Outcome::Close,
    }
}

/// OffsetFetch v0: the same format as v1.
pub async fn offset_fetch(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let Some(req) = decode::<OffsetFetchRequest>(body, 1) else {
        return Outcome::Close;
    };
    match groups::offset_fetch(&at(ctx, 1), req).await {
        Ok(r) => encode(cid, 1, &r),
        Err(_) => Outcome::Close,
    }
}

/// Reads a ListOffsets v0 request as v1, with each partition's
/// `max_num_offsets` in request order.
pub fn read_list_offsets(body: &mut Bytes) -> Result<(ListOffsetsRequest, Vec<i32>), WireError> {
    let mut r = Reader::new(body);
    let mut req = ListOffsetsRequest::default();
    let mut max_offsets = Vec::new();
    req.replica_id = BrokerId(r.i32()?);
    req.topics = r.array(6, |r| {
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(r.string()?);
        t.partitions = r.array(16, |r| {
            let mut p = ListOffsetsPartition::default();
            p.partition_index = r.i32()?;
            p.current_leader_epoch = -1;
            p.timestamp = r.i64()?;
            max_offsets.push(r.i32()?);
            Ok(p)
        })?;
        Ok(t)
    })?;
    Ok((req, max_offsets))
}

/// ListOffsets v0: the offsets "before" a timestamp, as a list. The answer
/// holds at most one offset: for -1 the high watermark, for -2 the log
/// start, for a timestamp the first offset at or after it (v1's lookup);
/// none when `max_num_offsets` is 0 or there is no such offset.
pub async fn list_offsets(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let (req, max_offsets) = match read_list_offsets(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "malformed ListOffsets v0");
            return Outcome::Close;
        }
    };
    let resp = list_offsets::handle(&at(ctx, 1), req).await;
    let mut wanted = max_offsets.into_iter();
    respond(cid, |out| {
        out.put_count(resp.topics.len());
        for t in &resp.topics {
            out.put_str(Some(&*t.name.0));
            out.put_count(t.partitions.len());
            for p in &t.partitions {
                let max = wanted.next().unwrap_or(0);
                out.put_i32(p.partition_index);
                out.put_i16(p.error_code);
                if p.error_code == 0 && max > 0 && p.offset >= 0 {
                    out.put_count(1);
                    out.put_i64(p.offset);
                } else {
                    out.put_count(0);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn offset_commit_v1_reads_generation_member_and_skips_timestamps() {
        let mut b = BytesMut::new();
        b.put_str(Some("g"));
        b.put_i32(7);
        b.put_str(Some("m-1"));
        b.put_count(1);
        b.put_str(Some("t"));
        b.put_count(1);
        b.put_i32(3);
        b.put_i64(42);
        b.put_i64(1_700_000_000_000);
        b.put_str(Some("meta"));
        let req = read_offset_commit(&mut b.freeze(), 1).expect("v1 request");
        assert_eq!(&*req.group_id.0, "g");
        assert_eq!(req.generation_id_or_member_epoch, 7);
        assert_eq!(&*req.member_id, "m-1");
        let p = &req.topics[0].partitions[0];
        assert_eq!((p.partition_index, p.committed_offset), (3, 42));
        assert_eq!(p.committed_metadata.as_deref(), Some("meta"));
    }

    #[test]
    fn offset_commit_v0_has_no_generation_and_truncation_is_an_error() {
        let mut b = BytesMut::new();
        b.put_str(Some("g"));
        b.put_count(1);
        b.put_str(Some("t"));
        b.put_count(1);
        b.put_i32(0);
        b.put_i64(5);
        b.put_str(None);
        let full = b.freeze();
        let req = read_offset_commit(&mut full.clone(), 0).expect("v0 request");
        assert_eq!(req.generation_id_or_member_epoch, -1);
        assert_eq!(req.topics[0].partitions[0].committed_offset, 5);
        for cut in 0..full.len() {
            assert!(read_offset_commit(&mut full.slice(..cut), 0).is_err());
        }
    }
}
