//! DeleteRecords: advances partitions' log start offsets on their owners.

use crate::dispatch::Ctx;
use crate::router::{partition_ref, Retry};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafscale_controlplane::acl;
use kafscale_proto::data::v1 as pb;

/// Answers a DeleteRecords request.
pub async fn handle(ctx: &Ctx<'_>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let snap = ctx.view.snapshot();
    let mut resp = DeleteRecordsResponse::default();
    let mut parts = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = snap.topics.get(t.name.as_str());
        let authorized = ctx.allowed_on_topic(acl::op::DELETE, &t.name);
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            match topic {
                _ if !authorized => {
                    pr.error_code = ResponseError::TopicAuthorizationFailed.code();
                }
                Some(tp) if p.partition_index >= 0 && p.partition_index < tp.partitions => {
                    parts.push((
                        (ti, pi),
                        pb::DeleteRecordsPartition {
                            partition: Some(partition_ref(tp, p.partition_index)),
                            offset: p.offset,
                        },
                    ));
                }
                _ => pr.error_code = ResponseError::UnknownTopicOrPartition.code(),
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    let results = ctx
        .router
        .fan_out(
            parts,
            // Advancing the log start again to the same offset is harmless.
            Retry::MovesAndFailures,
            crate::unary_parts!(delete_records, DeleteRecordsRequest {}),
        )
        .await;
    for ((ti, pi), r) in results {
        let pr = &mut resp.topics[ti].partitions[pi];
        match r {
            Ok(r) => {
                pr.error_code = r.error_code as i16;
                pr.low_watermark = r.low_watermark;
            }
            Err(e) => pr.error_code = e.kafka_code(),
        }
    }
    resp
}
