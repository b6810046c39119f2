//! API versions older than the protocol crate encodes (it is generated from
//! Kafka 4 schemas, which dropped what KIP-896 removed), served as Kafka 3.9
//! serves them.
//!
//! How: each old request is read into the crate's request type of the
//! nearest version the crate knows (its *bridge* version), the usual handler
//! runs at that version, and its answer is written in the old version's
//! format. Where an old format equals the bridge format with a field less,
//! the bytes are completed with that field's old-version meaning and
//! decoded by the crate (e.g. CreateTopics v0 is v2 with
//! `validate_only=false`); the rest is read and written here, field by field
//! ([`wire`]). Produce v0–2 carry message sets of magic 0 and 1, up-converted
//! to v2 record batches before they are routed ([`message_set`]); Fetch v0–3
//! answer with stored v2 batches down-converted to magic 0 or 1
//! ([`down_convert`]).

pub mod acls;
pub mod admin;
pub mod compression;
pub mod down_convert;
pub mod fetch;
pub mod message_set;
pub mod offsets;
pub mod produce;
pub mod wire;

use crate::dispatch::{decode, Ctx, Outcome};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

/// The lowest version served per API, where it is below what the protocol
/// crate encodes: the versions Kafka 3.9 accepts and Kafka 4.0 removed.
const OLDEST: &[(ApiKey, i16)] = &[
    (ApiKey::Produce, 0),
    (ApiKey::Fetch, 0),
    (ApiKey::ListOffsets, 0),
    (ApiKey::OffsetCommit, 0),
    (ApiKey::OffsetFetch, 0),
    (ApiKey::CreateTopics, 0),
    (ApiKey::DeleteTopics, 0),
    (ApiKey::DescribeConfigs, 0),
    (ApiKey::DescribeLogDirs, 0),
    (ApiKey::AlterReplicaLogDirs, 0),
    (ApiKey::DescribeAcls, 0),
    (ApiKey::CreateAcls, 0),
    (ApiKey::DeleteAcls, 0),
];

/// The lowest version of `key` served here, if it has old versions.
pub fn oldest_version(key: ApiKey) -> Option<i16> {
    OLDEST.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Whether `body` reads as a request of `key` at the old `version`, as its
/// handler reads it before anything else (for fuzzing the readers).
pub fn reads(key: ApiKey, version: i16, body: &mut Bytes) -> bool {
    use kafka_protocol::messages::*;
    match key {
        ApiKey::Produce => produce::read(body).is_some(),
        ApiKey::Fetch => fetch::read(body, version).is_some(),
        ApiKey::ListOffsets => offsets::read_list_offsets(body).is_ok(),
        ApiKey::OffsetCommit => offsets::read_offset_commit(body, version).is_ok(),
        ApiKey::OffsetFetch => decode::<OffsetFetchRequest>(body, 1).is_some(),
        ApiKey::CreateTopics => admin::read_create_topics(body, version).is_some(),
        ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(body, 1).is_some(),
        ApiKey::DescribeConfigs => admin::read_describe_configs(body).is_some(),
        ApiKey::DescribeLogDirs => decode::<DescribeLogDirsRequest>(body, 1).is_some(),
        ApiKey::AlterReplicaLogDirs => decode::<AlterReplicaLogDirsRequest>(body, 1).is_some(),
        ApiKey::DescribeAcls => acls::read_describe(body).is_ok(),
        ApiKey::CreateAcls => acls::read_create(body).is_ok(),
        ApiKey::DeleteAcls => acls::read_delete(body).is_ok(),
        _ => false,
    }
}

/// The context of a handler run at the bridge version `version`.
fn at<'a>(ctx: &Ctx<'a>, version: i16) -> Ctx<'a> {
    Ctx { version, ..*ctx }
}

/// `body` followed by `suffix`: an old request completed with the fields a
/// later version appends (their old-version meaning).
fn with_suffix(body: &mut Bytes, suffix: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(body.len() + suffix.len());
    b.extend_from_slice(body);
    b.extend_from_slice(suffix);
    *body = Bytes::new();
    b.freeze()
}

/// A response body written here, behind the v0 response header every old
/// version uses.
fn respond(cid: i32, write: impl FnOnce(&mut BytesMut)) -> Outcome {
    let mut out = BytesMut::with_capacity(64);
    out.extend_from_slice(&cid.to_be_bytes());
    write(&mut out);
    Outcome::Respond(out.freeze())
}

/// Serves `key` at an old version (`ctx.version` below what the crate
/// encodes); `None` for versions the crate handles itself.
pub async fn handle(ctx: &Ctx<'_>, key: ApiKey, cid: i32, body: &mut Bytes) -> Option<Outcome> {
    if ctx.version >= key.valid_versions().min {
        return None;
    }
    Some(match key {
        ApiKey::Produce => produce::handle(ctx, cid, body).await,
        ApiKey::Fetch => fetch::handle(ctx, cid, body).await,
        ApiKey::ListOffsets => offsets::list_offsets(ctx, cid, body).await,
        ApiKey::OffsetCommit => offsets::offset_commit(ctx, cid, body).await,
        ApiKey::OffsetFetch => offsets::offset_fetch(ctx, cid, body).await,
        ApiKey::CreateTopics => admin::create_topics(ctx, cid, body).await,
        ApiKey::DeleteTopics => admin::delete_topics(ctx, cid, body).await,
        ApiKey::DescribeConfigs => admin::describe_configs(ctx, cid, body).await,
        ApiKey::DescribeLogDirs => admin::describe_log_dirs(ctx, cid, body).await,
        ApiKey::AlterReplicaLogDirs => admin::alter_replica_log_dirs(ctx, cid, body),
        ApiKey::DescribeAcls => acls::describe(ctx, cid, body).await,
        ApiKey::CreateAcls => acls::create(ctx, cid, body).await,
        ApiKey::DeleteAcls => acls::delete(ctx, cid, body).await,
        _ => Outcome::Close,
    })
}
