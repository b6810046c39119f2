//! Produce: resolves topics, splits partitions by owning worker, forwards
//! the client's record bytes untouched, merges the answers in request order.
//! NOT_LEADER_OR_FOLLOWER from a worker (ownership just moved) is retried
//! internally for a short while (nothing was appended in that case); a call
//! that failed or answered something other than what was sent is answered
//! with a retriable error, never with success.

use super::topics;
use crate::dispatch::Ctx;
use crate::router::{partition_ref, streamed_answer, Retry, RouteError};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;
use kafscale_controlplane::offsets_topic::is_internal;
use kafscale_proto::data::v1 as pb;
use std::sync::atomic::{AtomicUsize, Ordering};

/// (topic index, partition index) of a part in the request.
type Slot = (usize, usize);

/// Answers a Produce request (the caller drops the answer for acks=0).
pub async fn handle(ctx: &Ctx<'_>, req: ProduceRequest) -> ProduceResponse {
    let mut resp = ProduceResponse::default();
    let mut pending: Vec<(Slot, pb::ProducePartition)> = Vec::new();
    crate::dispatch::record_topics(req.topic_data.iter().map(|t| t.name.0.as_str()));
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
        let mut routed_bytes = 0;
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
                    routed_bytes += pd.records.as_ref().map_or(0, |r| r.len());
                    pending.push((
                        (ti, pi),
                        pb::ProducePartition {
                            partition: Some(partition_ref(t, pd.index)),
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
        if routed_bytes > 0 {
            ctx.metrics.produced(&name, routed_bytes);
        }
        resp.responses.push(tr);
    }
    let results = send(ctx, req.acks, req.timeout_ms, pending).await;
    for ((ti, pi), result) in results {
        let pr = &mut resp.responses[ti].partition_responses[pi];
        match result {
            Ok(res) => {
                pr.error_code = res.error_code as i16;
                pr.base_offset = res.base_offset;
                pr.log_append_time_ms = res.log_append_time_ms;
                if ctx.version >= 5 {
                    pr.log_start_offset = res.log_start_offset;
                }
                if ctx.version >= 8 && !res.error_message.is_empty() {
                    pr.error_message = Some(StrBytes::from_string(res.error_message));
                }
            }
            // The worker may or may not have appended: a retriable error,
            // never success.
            Err(e) => pr.error_code = e.write_code(),
        }
    }
    resp.throttle_time_ms = ctx.quota.produce_throttle_ms();
    resp
}

/// Sends every part to its owner (moves retried, failed calls not: they may
/// have appended). The connection's next request may start once every
/// worker of the first round has assigned offsets.
async fn send(
    ctx: &Ctx<'_>,
    acks: i16,
    timeout_ms: i32,
    pending: Vec<(Slot, pb::ProducePartition)>,
) -> Vec<(Slot, Result<pb::ProducePartitionResult, RouteError>)> {
    if pending.is_empty() {
        ctx.sequenced.fire();
        return Vec::new();
    }
    // Calls started but not yet sequenced. `fan_out` starts every call of a
    // round before awaiting any, so this reaches zero only once all of the
    // round's workers have sequenced.
    let unsequenced = AtomicUsize::new(0);
    let sequenced_one = || {
        if unsequenced.fetch_sub(1, Ordering::SeqCst) == 1 {
            ctx.sequenced.fire();
        }
    };
    ctx.router
        .fan_out(pending, Retry::Moves, |mut c, partitions| {
            unsequenced.fetch_add(1, Ordering::SeqCst);
            let req = pb::ProduceRequest {
                acks: i32::from(acks),
                timeout_ms,
                partitions,
            };
            let sequenced = &sequenced_one;
            async move {
                let answer = streamed_answer(c.produce(req).await, sequenced).await?;
                Ok(answer.partitions)
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use crate::budget::RequestBudget;
    use crate::config::GatewayConfig;
    use crate::dispatch::{Dispatcher, Outcome, Sequenced};
    use crate::testing::{FakeCluster, ShortAnswers};
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::error::ResponseError;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    const VERSION: i16 = 9;

    fn produce_frame(partitions: i32) -> Bytes {
        let mut topic = TopicProduceData::default();
        topic.name = TopicName(StrBytes::from_static_str("t"));
        for p in 0..partitions {
            let mut pd = PartitionProduceData::default();
            pd.index = p;
            pd.records = Some(Bytes::from_static(b"forwarded untouched"));
            topic.partition_data.push(pd);
        }
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = 5_000;
        req.topic_data.push(topic);
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::Produce as i16;
        header.request_api_version = VERSION;
        header.correlation_id = 1;
        let mut out = BytesMut::new();
        header
            .encode(&mut out, ApiKey::Produce.request_header_version(VERSION))
            .expect("header");
        req.encode(&mut out, VERSION).expect("body");
        out.freeze()
    }

    /// Regression: a worker answer holding fewer partitions than were sent
    /// used to leave the missing ones at error 0 (success) with offset -1.
    #[tokio::test]
    async fn a_short_worker_answer_is_a_retriable_error_for_every_partition() {
        let c = FakeCluster::start(ShortAnswers, 2).await;
        let cfg = GatewayConfig {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            auto_create_topics: false,
            auto_create_partitions: 1,
            default_max_message_bytes: 1 << 20,
            max_frame_bytes: 1 << 20,
            max_pipelined: 4,
            limits: crate::config::Limits::unbounded_for_tests(1 << 20),
            authorizer: None,
        };
        let metrics = crate::metrics::GatewayMetrics::new(&prometheus::Registry::new(), true)
            .expect("metrics");
        let d = Dispatcher::new(cfg, c.router.clone(), metrics);
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let Outcome::Respond(mut bytes) = d
            .dispatch(
                produce_frame(2),
                "127.0.0.1",
                crate::auth::ANONYMOUS,
                Sequenced::new(tx),
                &RequestBudget::unlimited(),
                &Default::default(),
            )
            .await
        else {
            panic!("produce with acks=all must be answered");
        };
        ResponseHeader::decode(&mut bytes, ApiKey::Produce.response_header_version(VERSION))
            .expect("response header");
        let resp = ProduceResponse::decode(&mut bytes, VERSION).expect("produce response");
        let parts = &resp.responses[0].partition_responses;
        assert_eq!(parts.len(), 2);
        for p in parts {
            assert_eq!(
                p.error_code,
                ResponseError::RequestTimedOut.code(),
                "partition {} must get a retriable error, not success",
                p.index
            );
            assert_eq!(p.base_offset, -1);
        }
    }
}
