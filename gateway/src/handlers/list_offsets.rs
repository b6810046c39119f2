//! ListOffsets: earliest, latest, max timestamp and by-timestamp lookups,
//! answered by the owning worker.

use crate::dispatch::Ctx;
use crate::router::{partition_ref, Retry};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafscale_controlplane::acl;
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_proto::data::v1 as pb;

/// Answers a ListOffsets request.
pub async fn handle(ctx: &Ctx<'_>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let snap = ctx.view.snapshot();
    let mut resp = ListOffsetsResponse::default();
    let mut parts = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.to_string();
        let topic = snap.topics.get(&name);
        let authorized = ctx.allowed_on_topic(acl::op::DESCRIBE, &name);
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            pr.leader_epoch = -1;
            match topic {
                _ if !authorized => {
                    pr.error_code = ResponseError::TopicAuthorizationFailed.code();
                }
                Some(tp) if p.partition_index >= 0 && p.partition_index < tp.partitions => {
                    let id = topic_uuid(tp);
                    let epoch = snap
                        .assignments
                        .get(&(id, p.partition_index))
                        .filter(|_| ctx.version >= 4);
                    if let Some(a) = epoch {
                        pr.leader_epoch = a.epoch as i32;
                    }
                    parts.push((
                        (ti, pi),
                        pb::ListOffsetsPartition {
                            partition: Some(partition_ref(tp, p.partition_index)),
                            timestamp: p.timestamp,
                        },
                    ));
                }
                _ => pr.error_code = ResponseError::UnknownTopicOrPartition.code(),
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    let isolation_level = i32::from(req.isolation_level);
    let results = ctx
        .router
        .fan_out(
            parts,
            Retry::MovesAndFailures,
            crate::unary_parts!(
                list_offsets,
                ListOffsetsRequest {
                    isolation_level: isolation_level
                }
            ),
        )
        .await;
    for ((ti, pi), r) in results {
        let pr = &mut resp.topics[ti].partitions[pi];
        match r {
            Ok(r) => {
                pr.error_code = r.error_code as i16;
                pr.offset = r.offset;
                pr.timestamp = r.timestamp;
            }
            Err(e) => pr.error_code = e.kafka_code(),
        }
    }
    resp
}
