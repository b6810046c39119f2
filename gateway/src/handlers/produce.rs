//! Produce: resolves topics, splits partitions by owning worker, forwards
//! the client's record bytes untouched, merges the answers in request order.
//! NOT_LEADER_OR_FOLLOWER from a worker (ownership just moved) is retried
//! internally for a short while; nothing was appended in that case.

use super::topics;
use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_controlplane::offsets_topic::is_internal;
use kafscale_proto::data::v1 as pb;
use std::time::Duration;

/// Answers a Produce request (the caller drops the answer for acks=0).
pub async fn handle(ctx: &Ctx<'_>, req: ProduceRequest) -> ProduceResponse {
    let mut resp = ProduceResponse::default();
    // (topic index, partition index, request part)
    let mut pending: Vec<((usize, usize), pb::ProducePartition)> = Vec::new();
    for (ti, td) in req.topic_data.into_iter().enumerate() {
        let name = td.name.0.to_string();
        let mut known = ctx.view.snapshot().topics.get(&name).cloned();
        let mut topic_error = 0;
        let authorized = ctx.allowed_on_topic(acl::op::WRITE, &name);
        if !authorized {
            known = None;
            topic_error = ResponseError::TopicAuthorizationFailed.code();
        } else if known.is_none() {
            topic_error = topics::auto_create(ctx, &name).await;
            known = ctx.view.snapshot().topics.get(&name).cloned();
        }
        let mut tr = TopicProduceResponse::default();
        tr.name = td.name.clone();
        for (pi, pd) in td.partition_data.into_iter().enumerate() {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            pr.log_start_offset = -1;
            match &known {
                // Kafka refuses client writes to its internal topics.
                Some(_) if is_internal(&name) => {
                    pr.error_code = ResponseError::InvalidTopicException.code();
                }
                Some(t) if pd.index >= 0 && pd.index < t.partitions => {
                    pending.push((
                        (ti, pi),
                        pb::ProducePartition {
                            partition: Some(pb::PartitionRef {
                                topic_id: topic_uuid(t).as_bytes().to_vec().into(),
                                topic: name.clone(),
                                partition: pd.index,
                            }),
                            records: pd.records.unwrap_or_default(),
                        },
                    ));
                }
                _ => {
                    pr.error_code = if topic_error != 0 {
                        topic_error
                    } else {
                        ResponseError::UnknownTopicOrPartition.code()
                    };
                }
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    let deadline = tokio::time::Instant::now() + crate::router::RETRY_FOR;
    loop {
        let retry = send(
            ctx,
            req.acks,
            req.timeout_ms,
            ctx.version,
            pending,
            &mut resp,
        )
        .await;
        if retry.is_empty() || tokio::time::Instant::now() >= deadline {
            for ((ti, pi), _) in retry {
                resp.responses[ti].partition_responses[pi].error_code =
                    ResponseError::NotLeaderOrFollower.code();
            }
            break;
        }
        pending = retry;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    resp
}

/// Sends one round; returns the parts to retry.
async fn send(
    ctx: &Ctx<'_>,
    acks: i16,
    timeout_ms: i32,
    version: i16,
    pending: Vec<((usize, usize), pb::ProducePartition)>,
    resp: &mut ProduceResponse,
) -> Vec<((usize, usize), pb::ProducePartition)> {
    let (routed, unroutable) = ctx
        .router
        .split(pending, |(_, p)| crate::router::key_of(&p.partition))
        .await;
    let mut retry = unroutable;
    // The request is sequenced once every worker has assigned offsets.
    let unsequenced = std::sync::atomic::AtomicUsize::new(routed.len());
    let sequenced_one = || {
        if unsequenced.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            ctx.sequenced.fire();
        }
    };
    if routed.is_empty() {
        ctx.sequenced.fire();
    }
    let calls = routed.into_iter().map(|(addr, parts)| async move {
        let (slots, partitions): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let req = pb::ProduceRequest {
            acks: i32::from(acks),
            timeout_ms,
            partitions: partitions.clone(),
        };
        let result = produce_on(ctx, &addr, req, &sequenced_one).await;
        (slots, partitions, result)
    });
    for (slots, partitions, result) in futures::future::join_all(calls).await {
        match result {
            Ok(r) => {
                for ((slot, part), res) in slots.into_iter().zip(partitions).zip(r.partitions) {
                    if res.error_code == i32::from(ResponseError::NotLeaderOrFollower.code()) {
                        retry.push((slot, part));
                        continue;
                    }
                    let pr = &mut resp.responses[slot.0].partition_responses[slot.1];
                    pr.error_code = res.error_code as i16;
                    pr.base_offset = res.base_offset;
                    pr.log_append_time_ms = res.log_append_time_ms;
                    if version >= 5 {
                        pr.log_start_offset = res.log_start_offset;
                    }
                    if version >= 8 && !res.error_message.is_empty() {
                        pr.error_message = Some(StrBytes::from_string(res.error_message));
                    }
                }
            }
            Err(e) => {
                // The worker may or may not have appended: report a retriable
                // error, never success.
                tracing::warn!(error = %e, "produce forward failed");
                for slot in slots {
                    resp.responses[slot.0].partition_responses[slot.1].error_code =
                        ResponseError::RequestTimedOut.code();
                }
            }
        }
    }
    retry
}

/// One worker call: reports the sequencing message through `sequenced`
/// (also when the call fails), then returns the results.
async fn produce_on(
    ctx: &Ctx<'_>,
    addr: &str,
    req: pb::ProduceRequest,
    sequenced: &impl Fn(),
) -> Result<pb::ProduceResponse, String> {
    let mut fired = false;
    let result = async {
        let mut stream = ctx
            .router
            .client(addr)
            .map_err(|e| e.to_string())?
            .produce(req)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        loop {
            match stream.message().await.map_err(|e| e.to_string())? {
                Some(m) if m.sequenced => {
                    fired = true;
                    sequenced();
                }
                Some(m) => return Ok(m),
                None => return Err("worker closed the produce stream".to_string()),
            }
        }
    }
    .await;
    if !fired {
        sequenced();
    }
    result
}
