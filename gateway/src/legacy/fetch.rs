//! Fetch v0–3: v4's request without the isolation level (and, before v3,
//! without the response size limit, which Kafka then takes as unbounded).
//! The stored v2 batches are down-converted to magic 0 (v0–1) or magic 1
//! (v2–3) messages ([`down_convert`]), counted in
//! `kafscale_gateway_down_converted_bytes_total`.

use super::down_convert::down_convert;
use super::wire::Writer;
use super::{at, respond};
use crate::dispatch::{decode, Ctx, Outcome};
use crate::handlers::fetch;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchRequest;

/// Bytes before `max_bytes` (v3) or the topics (v0–2): replica id, max wait,
/// min bytes.
const FIXED_PREFIX: usize = 12;

/// Reads the request as v4: `max_bytes` (i32::MAX before v3) and
/// `isolation_level` = read uncommitted are put where v4 has them.
pub fn read(body: &mut Bytes, v: i16) -> Option<FetchRequest> {
    let prefix = FIXED_PREFIX + if v >= 3 { 4 } else { 0 };
    if body.len() < prefix {
        return None;
    }
    let mut b = BytesMut::with_capacity(body.len() + 5);
    b.extend_from_slice(&body[..FIXED_PREFIX]);
    if v < 3 {
        b.put_i32(i32::MAX);
    } else {
        b.extend_from_slice(&body[FIXED_PREFIX..prefix]);
    }
    b.put_i8(0);
    b.extend_from_slice(&body[prefix..]);
    *body = Bytes::new();
    decode::<FetchRequest>(&mut b.freeze(), 4)
}

/// Serves Fetch v0–3.
pub async fn handle(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let v = ctx.version;
    let Some(req) = read(body, v) else {
        return Outcome::Close;
    };
    let magic = if v >= 2 { 1 } else { 0 };
    // Per partition, in request order: (fetch offset, partition max bytes).
    let asked: Vec<(i64, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.fetch_offset, p.partition_max_bytes))
        })
        .collect();
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0);
    let resp = fetch::handle(&at(ctx, 4), req).await;
    // The whole answer stays within the request's limit and the broker's
    // fetch.max.bytes, whatever down-conversion adds.
    let mut room = max_bytes.min(ctx.cfg.limits.fetch_max_bytes);
    let mut asked = asked.into_iter();
    let mut converted = 0usize;
    let out = respond(cid, |out| {
        if v >= 1 {
            out.put_i32(resp.throttle_time_ms);
        }
        out.put_count(resp.responses.len());
        for t in &resp.responses {
            out.put_str(Some(&*t.topic.0));
            out.put_count(t.partitions.len());
            for p in &t.partitions {
                let (fetch_offset, partition_max) = asked.next().unwrap_or((0, 0));
                let limit = usize::try_from(partition_max).unwrap_or(0).min(room);
                let records = p
                    .records
                    .as_ref()
                    .filter(|r| !r.is_empty())
                    .map(|r| down_convert(r, magic, fetch_offset, limit, room));
                let messages = records.map(|c| {
                    converted += c.source_bytes;
                    c.messages
                });
                let messages = messages.unwrap_or_default();
                room = room.saturating_sub(messages.len());
                out.put_i32(p.partition_index);
                out.put_i16(p.error_code);
                out.put_i64(p.high_watermark);
                out.put_nullable_bytes(Some(&messages));
            }
        }
    });
    if converted > 0 {
        ctx.metrics.down_converted(converted);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3_body() -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(-1); // replica
        b.put_i32(500); // max wait
        b.put_i32(1); // min bytes
        b.put_i32(1 << 20); // max bytes (v3)
        b.put_count(1);
        b.put_str(Some("t"));
        b.put_count(1);
        b.put_i32(2);
        b.put_i64(40);
        b.put_i32(4096);
        b
    }

    #[test]
    fn v3_and_v0_requests_read_as_v4() {
        let req = read(&mut v3_body().freeze(), 3).expect("v3");
        assert_eq!(
            (req.max_wait_ms, req.min_bytes, req.max_bytes),
            (500, 1, 1 << 20)
        );
        let p = &req.topics[0].partitions[0];
        assert_eq!(
            (p.partition, p.fetch_offset, p.partition_max_bytes),
            (2, 40, 4096)
        );
        let mut v0 = v3_body();
        let tail = v0.split_off(16);
        v0.truncate(12);
        v0.extend_from_slice(&tail);
        let req = read(&mut v0.freeze(), 0).expect("v0");
        assert_eq!(req.max_bytes, i32::MAX);
        assert_eq!(req.topics[0].partitions[0].fetch_offset, 40);
        assert!(read(&mut Bytes::from_static(&[0; 11]), 0).is_none());
    }
}
