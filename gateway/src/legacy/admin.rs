//! Old versions of the admin APIs: CreateTopics v0–1, DeleteTopics v0,
//! DescribeConfigs v0, DescribeLogDirs v0 and AlterReplicaLogDirs v0.

use super::wire::Writer;
use super::{at, respond, with_suffix};
use crate::dispatch::{decode, encode, Ctx, Outcome};
use crate::handlers::{admin_topics, configs, create_topics, log_dirs};
use bytes::{BufMut, Bytes};
use kafka_protocol::messages::*;

/// DescribeConfigs' config source of a value nobody set.
const DEFAULT_CONFIG: i8 = 5;

/// CreateTopics v0 (v2 with `validate_only=false`) and v1 (v2's request
/// format); the answer drops the throttle time (v0–1) and the error message
/// (v0).
pub async fn create_topics(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let v = ctx.version;
    let Some(req) = read_create_topics(body, v) else {
        return Outcome::Close;
    };
    let resp = create_topics::handle(&at(ctx, 2), req).await;
    respond(cid, |out| {
        out.put_count(resp.topics.len());
        for t in &resp.topics {
            out.put_str(Some(&*t.name.0));
            out.put_i16(t.error_code);
            if v >= 1 {
                out.put_str(t.error_message.as_deref());
            }
        }
    })
}

/// Reads a CreateTopics v0–1 request as v2.
pub fn read_create_topics(body: &mut Bytes, v: i16) -> Option<CreateTopicsRequest> {
    let mut b = if v == 0 {
        with_suffix(body, &[0])
    } else {
        std::mem::take(body)
    };
    decode::<CreateTopicsRequest>(&mut b, 2)
}

/// Reads a DescribeConfigs v0 request as v1.
pub fn read_describe_configs(body: &mut Bytes) -> Option<DescribeConfigsRequest> {
    decode::<DescribeConfigsRequest>(&mut with_suffix(body, &[0]), 1)
}

/// DeleteTopics v0 (v1's request format); the answer has no throttle time.
pub async fn delete_topics(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let Some(req) = decode::<DeleteTopicsRequest>(body, 1) else {
        return Outcome::Close;
    };
    let resp = admin_topics::delete_topics(&at(ctx, 1), req).await;
    respond(cid, |out| {
        out.put_count(resp.responses.len());
        for r in &resp.responses {
            out.put_str(Some(r.name.as_ref().map_or("", |n| &*n.0)));
            out.put_i16(r.error_code);
        }
    })
}

/// DescribeConfigs v0 (v1 without `include_synonyms`): each config says
/// whether it is a default instead of naming its source.
pub async fn describe_configs(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    let Some(req) = read_describe_configs(body) else {
        return Outcome::Close;
    };
    let resp = configs::describe(&at(ctx, 1), req).await;
    respond(cid, |out| {
        out.put_i32(resp.throttle_time_ms);
        out.put_count(resp.results.len());
        for r in &resp.results {
            out.put_i16(r.error_code);
            out.put_str(r.error_message.as_deref());
            out.put_i8(r.resource_type);
            out.put_str(Some(&*r.resource_name));
            out.put_count(r.configs.len());
            for c in &r.configs {
                out.put_str(Some(&*c.name));
                out.put_str(c.value.as_deref());
                out.put_u8(u8::from(c.read_only));
                out.put_u8(u8::from(c.config_source == DEFAULT_CONFIG));
                out.put_u8(u8::from(c.is_sensitive));
            }
        }
    })
}

/// DescribeLogDirs v0: the same format as v1.
pub async fn describe_log_dirs(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    match decode::<DescribeLogDirsRequest>(body, 1) {
        Some(r) => encode(cid, 1, &log_dirs::describe(&at(ctx, 1), r).await),
        None => Outcome::Close,
    }
}

/// AlterReplicaLogDirs v0: the same format as v1.
pub fn alter_replica_log_dirs(ctx: &Ctx<'_>, cid: i32, body: &mut Bytes) -> Outcome {
    match decode::<AlterReplicaLogDirsRequest>(body, 1) {
        Some(r) => encode(cid, 1, &log_dirs::alter(&at(ctx, 1), r)),
        None => Outcome::Close,
    }
}
