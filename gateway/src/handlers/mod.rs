//! One module per Kafka API.

pub mod admin_topics;
pub mod api_versions;
pub mod configs;
pub mod create_topics;
pub mod describe_cluster;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod produce;
pub mod topics;

use crate::dispatch::{decode, encode, Ctx, Outcome};
use bytes::Bytes;
use kafka_protocol::messages::*;

/// Decodes the body for `key`, runs its handler and encodes the response.
pub async fn handle(ctx: &Ctx<'_>, key: ApiKey, cid: i32, body: &mut Bytes) -> Outcome {
    let v = ctx.version;
    match key {
        ApiKey::ApiVersions => match decode::<ApiVersionsRequest>(body, v) {
            Some(_) => encode(cid, v, &api_versions::response()),
            None => Outcome::Close,
        },
        ApiKey::Metadata => match decode::<MetadataRequest>(body, v) {
            Some(r) => encode(cid, v, &metadata::handle(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::Produce => match decode::<ProduceRequest>(body, v) {
            Some(r) => {
                let acks = r.acks;
                let resp = produce::handle(ctx, r).await;
                if acks == 0 {
                    Outcome::Silent
                } else {
                    encode(cid, v, &resp)
                }
            }
            None => Outcome::Close,
        },
        ApiKey::Fetch => match decode::<FetchRequest>(body, v) {
            Some(r) => encode(cid, v, &fetch::handle(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::ListOffsets => match decode::<ListOffsetsRequest>(body, v) {
            Some(r) => encode(cid, v, &list_offsets::handle(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::CreateTopics => match decode::<CreateTopicsRequest>(body, v) {
            Some(r) => encode(cid, v, &create_topics::handle(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::DeleteTopics => match decode::<DeleteTopicsRequest>(body, v) {
            Some(r) => encode(cid, v, &admin_topics::delete_topics(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::CreatePartitions => match decode::<CreatePartitionsRequest>(body, v) {
            Some(r) => encode(cid, v, &admin_topics::create_partitions(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::DescribeCluster => match decode::<DescribeClusterRequest>(body, v) {
            Some(r) => encode(cid, v, &describe_cluster::handle(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::DescribeConfigs => match decode::<DescribeConfigsRequest>(body, v) {
            Some(r) => encode(cid, v, &configs::describe(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::IncrementalAlterConfigs => {
            match decode::<IncrementalAlterConfigsRequest>(body, v) {
                Some(r) => encode(cid, v, &configs::incremental_alter(ctx, r).await),
                None => Outcome::Close,
            }
        }
        _ => Outcome::Close,
    }
}
