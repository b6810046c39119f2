//! Produce v0–2: v3's request without a transactional id, carrying message
//! sets of magic 0 and 1. Each partition's set is up-converted to a v2
//! batch ([`message_set::up_convert`]); a partition whose set is refused is
//! answered with Kafka's error and never routed, so nothing of it is
//! stored. The answer is v2's format (= v3's), v1's without the log append
//! time, or v0's without the throttle time either.

use super::message_set::{self, MessageSetError};
use super::wire::Writer;
use super::{at, respond};
use crate::dispatch::{decode, encode, Ctx, Outcome};
use crate::handlers::produce;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

/// Reads a Produce v0–2 request as v3 (a null transactional id put in
/// front).
pub fn read(body: &mut Bytes) -> Option<ProduceRequest> {
    let mut b = BytesMut::with_capacity(body.len() + 2);
    b.put_i16(-1);
    b.extend_from_slice(body);
    *body = Bytes::new();
    decode::<ProduceRequest>(&mut b.freeze(), 3)
}

/// Up-converts every partition's records in place; returns the refused
/// ones as (topic index, partition index in the request, error), removed
/// from the request.
fn up_convert(req: &mut ProduceRequest, cap: usize) -> Vec<(usize, usize, i32, MessageSetError)> {
    let mut refused = Vec::new();
    for (ti, t) in req.topic_data.iter_mut().enumerate() {
        let mut kept = Vec::with_capacity(t.partition_data.len());
        for (pi, mut p) in std::mem::take(&mut t.partition_data)
            .into_iter()
            .enumerate()
        {
            let set = p.records.take().unwrap_or_default();
            match message_set::up_convert(&set, cap) {
                Ok(batch) => {
                    p.records = Some(batch);
                    kept.push(p);
                }
                Err(e) => {
                    tracing::debug!(error = %e, partition = p.index, "refused message set");
                    refused.push((ti, pi, p.index, e));
                }
            }
        }
        t.partition_data = kept;
    }
    refused
}

/// Puts the refused partitions back into the answer, in request order.
fn merge(resp: &mut ProduceResponse, refused: Vec<(usize, usize, i32, MessageSetError)>) {
    for (ti, pi, index, e) in refused {
        let Some(t) = resp.responses.get_mut(ti) else {
            continue;
        };
        let mut pr = PartitionProduceResponse::default();
        pr.index = index;
        pr.error_code = e.code();
        pr.base_offset = -1;
        pr.log_append_time_ms = -1;
        pr.log_start_offset = -1;
        let at = pi.min(t.partition_responses.len());
        t.partition_responses.insert(at, pr);
    }
}

/// Serves Produce v0–2.
pub async fn handle(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let v = ctx.version;
    let Some(mut req) = read(body) else {
        return Outcome::Close;
    };
    let acks = req.acks;
    // Decompressed bytes per partition stay within what a request may hold.
    let refused = up_convert(&mut req, ctx.cfg.max_frame_bytes);
    let mut resp = produce::handle(&at(ctx, 3), req).await;
    merge(&mut resp, refused);
    if acks == 0 {
        return Outcome::Silent;
    }
    if v == 2 {
        return encode(cid, 3, &resp);
    }
    respond(cid, |out| {
        out.put_count(resp.responses.len());
        for t in &resp.responses {
            out.put_str(Some(&*t.name.0));
            out.put_count(t.partition_responses.len());
            for p in &t.partition_responses {
                out.put_i32(p.index);
                out.put_i16(p.error_code);
                out.put_i64(p.base_offset);
            }
        }
        if v == 1 {
            out.put_i32(resp.throttle_time_ms);
        }
    })
}
