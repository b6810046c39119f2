//! One module per Kafka API.

pub mod acls;
pub mod admin_topics;
pub mod api_versions;
pub mod client_quotas;
pub mod configs;
pub mod create_topics;
pub mod delete_records;
pub mod describe_cluster;
pub mod describe_topic_partitions;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod log_dirs;
pub mod metadata;
pub mod produce;
pub mod replicas;
pub mod scram_credentials;
pub mod topics;

use crate::dispatch::{decode, encode, encode_raw, Ctx, Outcome};
use bytes::Bytes;
use kafka_protocol::messages::*;

/// Decodes the body for `key`, runs its handler and encodes the response.
pub async fn handle(ctx: &Ctx<'_>, key: ApiKey, cid: i32, body: &mut Bytes) -> Outcome {
    if let Some(outcome) = crate::legacy::handle(ctx, key, cid, body).await {
        return outcome;
    }
    let v = ctx.version;
    // A membership request passed through to its group's coordinator; its
    // error answer is the default response with the error code set.
    macro_rules! membership {
        ($req:ty, $resp:ty) => {{
            let raw = body.clone();
            match decode::<$req>(body, v) {
                Some(r) => {
                    let group = &r.group_id;
                    let error = <$resp>::with_error_code;
                    passed_on(
                        cid,
                        v,
                        groups::membership(ctx, key, group, raw, error).await,
                    )
                }
                None => Outcome::Close,
            }
        }};
    }
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
        ApiKey::AlterConfigs => match decode::<AlterConfigsRequest>(body, v) {
            Some(r) => encode(cid, v, &configs::alter(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::IncrementalAlterConfigs => {
            match decode::<IncrementalAlterConfigsRequest>(body, v) {
                Some(r) => encode(cid, v, &configs::incremental_alter(ctx, r).await),
                None => Outcome::Close,
            }
        }
        ApiKey::DescribeLogDirs => match decode::<DescribeLogDirsRequest>(body, v) {
            Some(r) => encode(cid, v, &log_dirs::describe(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::AlterReplicaLogDirs => match decode::<AlterReplicaLogDirsRequest>(body, v) {
            Some(r) => encode(cid, v, &log_dirs::alter(ctx, r)),
            None => Outcome::Close,
        },
        ApiKey::DeleteRecords => match decode::<DeleteRecordsRequest>(body, v) {
            Some(r) => encode(cid, v, &delete_records::handle(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::ElectLeaders => match decode::<ElectLeadersRequest>(body, v) {
            Some(r) => encode(cid, v, &replicas::elect_leaders(ctx, r)),
            None => Outcome::Close,
        },
        ApiKey::ListPartitionReassignments => {
            match decode::<ListPartitionReassignmentsRequest>(body, v) {
                Some(r) => encode(cid, v, &replicas::list_reassignments(ctx, r)),
                None => Outcome::Close,
            }
        }
        ApiKey::AlterPartitionReassignments => {
            match decode::<AlterPartitionReassignmentsRequest>(body, v) {
                Some(r) => encode(cid, v, &replicas::alter_reassignments(ctx, r)),
                None => Outcome::Close,
            }
        }
        ApiKey::DescribeTopicPartitions => {
            match decode::<DescribeTopicPartitionsRequest>(body, v) {
                Some(r) => encode(cid, v, &describe_topic_partitions::handle(ctx, r)),
                None => Outcome::Close,
            }
        }
        ApiKey::DescribeAcls => match decode::<DescribeAclsRequest>(body, v) {
            Some(r) => encode(cid, v, &acls::describe(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::CreateAcls => match decode::<CreateAclsRequest>(body, v) {
            Some(r) => encode(cid, v, &acls::create(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::DeleteAcls => match decode::<DeleteAclsRequest>(body, v) {
            Some(r) => encode(cid, v, &acls::delete(ctx, r).await),
            None => Outcome::Close,
        },
        // A SASL exchange happens before dispatch (crate::auth::phase); here
        // it is out of place: on a listener without SASL, or after
        // authentication (re-authentication is not supported).
        ApiKey::SaslHandshake => match decode::<SaslHandshakeRequest>(body, v) {
            Some(_) => {
                let mut r = SaslHandshakeResponse::default();
                r.error_code = kafka_protocol::error::ResponseError::IllegalSaslState.code();
                encode(cid, v, &r)
            }
            None => Outcome::Close,
        },
        ApiKey::SaslAuthenticate => match decode::<SaslAuthenticateRequest>(body, v) {
            Some(_) => {
                let mut r = SaslAuthenticateResponse::default();
                r.error_code = kafka_protocol::error::ResponseError::IllegalSaslState.code();
                encode(cid, v, &r)
            }
            None => Outcome::Close,
        },
        ApiKey::DescribeUserScramCredentials => {
            match decode::<DescribeUserScramCredentialsRequest>(body, v) {
                Some(r) => encode(cid, v, &scram_credentials::describe(ctx, r).await),
                None => Outcome::Close,
            }
        }
        ApiKey::AlterUserScramCredentials => {
            match decode::<AlterUserScramCredentialsRequest>(body, v) {
                Some(r) => encode(cid, v, &scram_credentials::alter(ctx, r).await),
                None => Outcome::Close,
            }
        }
        ApiKey::DescribeClientQuotas => match decode::<DescribeClientQuotasRequest>(body, v) {
            Some(r) => encode(cid, v, &client_quotas::describe(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::AlterClientQuotas => match decode::<AlterClientQuotasRequest>(body, v) {
            Some(r) => encode(cid, v, &client_quotas::alter(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::InitProducerId => match decode::<InitProducerIdRequest>(body, v) {
            Some(r) => encode(cid, v, &init_producer_id::handle(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::FindCoordinator => match decode::<FindCoordinatorRequest>(body, v) {
            Some(r) => encode(cid, v, &find_coordinator::handle(ctx, r)),
            None => Outcome::Close,
        },
        // Membership APIs pass the client's bytes through (see `groups::Reply`).
        ApiKey::JoinGroup => {
            let raw = body.clone();
            match decode::<JoinGroupRequest>(body, v) {
                Some(r) => passed_on(cid, v, groups::join_group(ctx, r, raw).await),
                None => Outcome::Close,
            }
        }
        ApiKey::SyncGroup => membership!(SyncGroupRequest, SyncGroupResponse),
        ApiKey::Heartbeat => membership!(HeartbeatRequest, HeartbeatResponse),
        ApiKey::LeaveGroup => membership!(LeaveGroupRequest, LeaveGroupResponse),
        ApiKey::OffsetCommit => match decode::<OffsetCommitRequest>(body, v) {
            Some(r) => forwarded(cid, v, groups::offset_commit(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::OffsetFetch => match decode::<OffsetFetchRequest>(body, v) {
            Some(r) => forwarded(cid, v, groups::offset_fetch(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::DescribeGroups => match decode::<DescribeGroupsRequest>(body, v) {
            Some(r) => forwarded(cid, v, groups::describe_groups(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::ListGroups => match decode::<ListGroupsRequest>(body, v) {
            Some(r) => forwarded(cid, v, groups::list_groups(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::DeleteGroups => match decode::<DeleteGroupsRequest>(body, v) {
            Some(r) => forwarded(cid, v, groups::delete_groups(ctx, r).await),
            None => Outcome::Close,
        },
        ApiKey::OffsetDelete => match decode::<OffsetDeleteRequest>(body, v) {
            Some(r) => forwarded(cid, v, groups::offset_delete(ctx, r).await),
            None => Outcome::Close,
        },
        _ => Outcome::Close,
    }
}

/// Answers with a coordinator's response as it came, or an encoded one;
/// closes if there is none.
fn passed_on<R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion>(
    cid: i32,
    v: i16,
    resp: Result<groups::Reply<R>, groups::ForwardError>,
) -> Outcome {
    match resp {
        Ok(groups::Reply::Raw(body)) => encode_raw(cid, R::header_version(v), &body),
        Ok(groups::Reply::Typed(r)) => encode(cid, v, &r),
        Err(_) => Outcome::Close,
    }
}

/// Encodes a forwarded group response, or closes if it could not be had.
fn forwarded<R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion>(
    cid: i32,
    v: i16,
    resp: Result<R, groups::ForwardError>,
) -> Outcome {
    match resp {
        Ok(r) => encode(cid, v, &r),
        Err(_) => Outcome::Close,
    }
}
