//! Replica placement APIs. Clients see one broker (this gateway, node
//! `node_id`) as the single replica and leader of every partition; the data's
//! redundancy comes from the object store. So the only valid placement is
//! `[node_id]`: asking for it succeeds (there is nothing to move or elect),
//! anything else is INVALID_REPLICA_ASSIGNMENT.

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;

/// True if `replicas` is the one placement this cluster has: `[node_id]`.
pub fn is_single_replica(ctx: &Ctx<'_>, replicas: &[BrokerId]) -> bool {
    replicas.len() == 1 && replicas[0].0 == ctx.cfg.node_id
}

fn partition_exists(ctx: &Ctx<'_>, topic: &str, p: i32) -> bool {
    ctx.view
        .snapshot()
        .topics
        .get(topic)
        .is_some_and(|t| p >= 0 && p < t.partitions)
}

/// ElectLeaders: every partition already has its preferred (only) leader.
pub fn elect_leaders(ctx: &Ctx<'_>, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let mut resp = ElectLeadersResponse::default();
    let authorized = ctx.allowed_on_cluster(acl::op::ALTER);
    if !authorized && ctx.version >= 1 {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
    }
    // Null means "all partitions": none needs an election, so none is listed.
    for t in req.topic_partitions.into_iter().flatten() {
        let mut r = ReplicaElectionResult::default();
        r.topic = t.topic.clone();
        for p in t.partitions {
            let mut pr = PartitionResult::default();
            pr.partition_id = p;
            if !authorized {
                pr.error_code = ResponseError::ClusterAuthorizationFailed.code();
            } else if partition_exists(ctx, &t.topic, p) {
                pr.error_code = ResponseError::ElectionNotNeeded.code();
                pr.error_message = Some(StrBytes::from_static_str(
                    "the partition's only replica is already its leader",
                ));
            } else {
                pr.error_code = ResponseError::UnknownTopicOrPartition.code();
            }
            r.partition_result.push(pr);
        }
        resp.replica_election_results.push(r);
    }
    resp
}

/// ListPartitionReassignments: nothing is ever being reassigned.
pub fn list_reassignments(
    ctx: &Ctx<'_>,
    _req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let mut resp = ListPartitionReassignmentsResponse::default();
    if !ctx.allowed_on_cluster(acl::op::DESCRIBE) {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
    }
    resp
}

/// AlterPartitionReassignments: `[node_id]` is accepted (already in place),
/// a cancellation finds nothing in progress, anything else is invalid.
pub fn alter_reassignments(
    ctx: &Ctx<'_>,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let mut resp = AlterPartitionReassignmentsResponse::default();
    if !ctx.allowed_on_cluster(acl::op::ALTER) {
        resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
        return resp;
    }
    for t in req.topics {
        let mut tr = ReassignableTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ReassignablePartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.error_code = if !partition_exists(ctx, &t.name, p.partition_index) {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                match &p.replicas {
                    None => ResponseError::NoReassignmentInProgress.code(),
                    Some(r) if is_single_replica(ctx, r) => 0,
                    Some(_) => {
                        pr.error_message = Some(StrBytes::from_static_str(
                            "every partition has exactly one replica, the gateway's node",
                        ));
                        ResponseError::InvalidReplicaAssignment.code()
                    }
                }
            };
            tr.partitions.push(pr);
        }
        resp.responses.push(tr);
    }
    resp
}
