//! DeleteRecords: advances partitions' log start offsets on their owners.

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_proto::data::v1 as pb;

/// Answers a DeleteRecords request.
pub async fn handle(ctx: &Ctx<'_>, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let snap = ctx.view.snapshot();
    let mut resp = DeleteRecordsResponse::default();
    let mut parts = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = snap.topics.get(t.name.as_str());
        let mut tr = DeleteRecordsTopicResult::default();
        tr.name = t.name.clone();
        for (pi, p) in t.partitions.iter().enumerate() {
            let mut pr = DeleteRecordsPartitionResult::default();
            pr.partition_index = p.partition_index;
            pr.low_watermark = -1;
            match topic {
                Some(tp) if p.partition_index >= 0 && p.partition_index < tp.partitions => {
                    parts.push((
                        (ti, pi),
                        pb::DeleteRecordsPartition {
                            partition: Some(pb::PartitionRef {
                                topic_id: topic_uuid(tp).as_bytes().to_vec().into(),
                                topic: t.name.to_string(),
                                partition: p.partition_index,
                            }),
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
    let (routed, unroutable) = ctx
        .router
        .split(parts, |(_, p)| crate::router::key_of(&p.partition))
        .await;
    for ((ti, pi), _) in unroutable {
        resp.topics[ti].partitions[pi].error_code = ResponseError::NotLeaderOrFollower.code();
    }
    for (addr, parts) in routed {
        let (slots, partitions): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let result = match ctx.router.client(&addr) {
            Ok(mut c) => c
                .delete_records(pb::DeleteRecordsRequest { partitions })
                .await
                .map(|r| r.into_inner())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(r) => {
                for (slot, res) in slots.into_iter().zip(r.partitions) {
                    let pr = &mut resp.topics[slot.0].partitions[slot.1];
                    pr.error_code = res.error_code as i16;
                    pr.low_watermark = res.low_watermark;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "delete records forward failed");
                for slot in slots {
                    resp.topics[slot.0].partitions[slot.1].error_code =
                        ResponseError::NotLeaderOrFollower.code();
                }
            }
        }
    }
    resp
}
