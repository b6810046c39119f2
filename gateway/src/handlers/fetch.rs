//! Fetch: resolves topics (by name, or by topic id from v13), forwards to the
//! owning workers, which long-poll on their high watermarks; answers once
//! the workers' data together reaches `min_bytes` (see [`fan_out`]).

use crate::dispatch::Ctx;
use crate::router::{partition_ref, RouteError, Routed};
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;
use kafscale_proto::data::v1 as pb;
use std::collections::HashMap;

type Slot = (usize, usize);
type WorkerAnswer = (Vec<Slot>, Result<Vec<pb::FetchPartitionResult>, RouteError>);

/// What a fetch may answer: the request's `max_bytes` within the broker's
/// `fetch.max.bytes` and what the memory budgets grant, shared out evenly
/// between the workers asked (each still answers at least one batch).
fn worker_max_bytes(ctx: &Ctx<'_>, req: &FetchRequest, workers: usize) -> i32 {
    let cap = ctx.cfg.limits.fetch_max_bytes;
    let want = usize::try_from(req.max_bytes)
        .ok()
        .filter(|b| *b > 0)
        .map_or(cap, |b| b.min(cap));
    let granted = ctx.budget.response_bytes(want);
    i32::try_from((granted / workers.max(1)).max(1)).unwrap_or(i32::MAX)
}

/// One worker's part of a fetch, waiting up to `max_wait_ms` for `min_bytes`.
async fn fetch_from(
    ctx: &Ctx<'_>,
    req: &FetchRequest,
    max_bytes: i32,
    addr: String,
    slots: Vec<Slot>,
    partitions: Vec<pb::FetchPartition>,
    max_wait_ms: i32,
) -> (String, WorkerAnswer) {
    let min_bytes = req.min_bytes;
    let isolation_level = i32::from(req.isolation_level);
    let result = ctx
        .router
        .call_parts(&addr, partitions, |mut c, partitions| async move {
            let r = pb::FetchRequest {
                max_wait_ms,
                min_bytes,
                max_bytes,
                isolation_level,
                partitions,
            };
            Ok(c.fetch(r).await?.into_inner().partitions)
        })
        .await;
    (addr, (slots, result))
}

/// Asks every worker involved, each long-polling on its own partitions. As
/// soon as the answers so far hold `min_bytes`, the workers still waiting
/// are cancelled and asked again without waiting (for their current data and
/// high watermarks): a consumer whose partitions span several workers gets
/// its data as soon as one of them has some, as from a single Kafka broker.
async fn fan_out(
    ctx: &Ctx<'_>,
    req: &FetchRequest,
    routed: HashMap<String, Vec<(Slot, pb::FetchPartition)>>,
) -> Vec<WorkerAnswer> {
    let max_bytes = worker_max_bytes(ctx, req, routed.len());
    if routed.len() == 1 {
        // One worker: its own long poll is the whole wait.
        let Some((addr, parts)) = routed.into_iter().next() else {
            return Vec::new();
        };
        let (slots, parts) = parts.into_iter().unzip();
        let (_, answer) =
            fetch_from(ctx, req, max_bytes, addr, slots, parts, req.max_wait_ms).await;
        return vec![answer];
    }
    let mut waiting: HashMap<String, (Vec<Slot>, Vec<pb::FetchPartition>)> = routed
        .into_iter()
        .map(|(addr, parts)| (addr, parts.into_iter().unzip()))
        .collect();
    let mut polls: FuturesUnordered<_> = waiting
        .iter()
        .map(|(addr, (slots, parts))| {
            fetch_from(
                ctx,
                req,
                max_bytes,
                addr.clone(),
                slots.clone(),
                parts.clone(),
                req.max_wait_ms,
            )
        })
        .collect();
    let enough = i64::from(req.min_bytes.max(1));
    let mut bytes = 0i64;
    let mut answers = Vec::with_capacity(waiting.len());
    while let Some((addr, answer)) = polls.next().await {
        waiting.remove(&addr);
        if let Ok(r) = &answer.1 {
            bytes += r.iter().map(|p| p.records.len() as i64).sum::<i64>();
        }
        answers.push(answer);
        if bytes >= enough {
            break;
        }
    }
    drop(polls);
    let now = waiting
        .into_iter()
        .map(|(addr, (slots, parts))| fetch_from(ctx, req, max_bytes, addr, slots, parts, 0));
    answers.extend(join_all(now).await.into_iter().map(|(_, a)| a));
    answers
}

/// Answers a Fetch request. Fetch sessions are not used (session id 0), so
/// every request is a full fetch.
pub async fn handle(ctx: &Ctx<'_>, req: FetchRequest) -> FetchResponse {
    let snap = ctx.view.snapshot();
    let mut resp = FetchResponse::default();
    let mut parts: Vec<((usize, usize), pb::FetchPartition)> = Vec::new();
    // Topic names by request index (v13+ names topics by id only).
    let mut names: Vec<String> = Vec::with_capacity(req.topics.len());
    for (ti, ft) in req.topics.iter().enumerate() {
        let name = if ctx.version >= 13 {
            snap.topic_names
                .get(&ft.topic_id)
                .cloned()
                .unwrap_or_default()
        } else {
            ft.topic.0.to_string()
        };
        let topic = snap.topics.get(&name);
        let authorized = topic.is_none() || ctx.allowed_on_topic(acl::op::READ, &name);
        let mut tr = FetchableTopicResponse::default();
        if ctx.version >= 13 {
            tr.topic_id = ft.topic_id;
        } else {
            tr.topic = TopicName(StrBytes::from_string(name.clone()));
        }
        for (pi, fp) in ft.partitions.iter().enumerate() {
            let mut pd = PartitionData::default();
            pd.partition_index = fp.partition;
            pd.high_watermark = -1;
            pd.last_stable_offset = -1;
            pd.log_start_offset = -1;
            pd.records = Some(Default::default());
            match topic {
                Some(_) if !authorized => {
                    pd.error_code = ResponseError::TopicAuthorizationFailed.code();
                }
                Some(t) if fp.partition >= 0 && fp.partition < t.partitions => parts.push((
                    (ti, pi),
                    pb::FetchPartition {
                        partition: Some(partition_ref(t, fp.partition)),
                        fetch_offset: fp.fetch_offset,
                        max_bytes: fp.partition_max_bytes,
                    },
                )),
                _ => {
                    pd.error_code = if ctx.version >= 13 && topic.is_none() {
                        ResponseError::UnknownTopicId.code()
                    } else {
                        ResponseError::UnknownTopicOrPartition.code()
                    };
                }
            }
            tr.partitions.push(pd);
        }
        resp.responses.push(tr);
        names.push(name);
    }
    crate::dispatch::record_topics(names.iter().map(String::as_str));
    let (routed, unroutable) = ctx.router.split(parts, |(_, p)| p.key()).await;
    for ((ti, pi), _) in unroutable {
        resp.responses[ti].partitions[pi].error_code = RouteError::NoOwner.kafka_code();
    }
    let results = fan_out(ctx, &req, routed).await;
    // Until it is written, the response holds only the room it uses.
    let answered: usize = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flatten()
        .map(|p| p.records.len())
        .sum();
    ctx.budget.response_bytes(answered.max(1));
    // Record bytes by topic index, counted once per topic below.
    let mut fetched = vec![0usize; names.len()];
    for (slots, result) in results {
        match result {
            Ok(r) => {
                for (slot, res) in slots.into_iter().zip(r) {
                    let pd = &mut resp.responses[slot.0].partitions[slot.1];
                    pd.error_code = res.error_code as i16;
                    pd.high_watermark = res.high_watermark;
                    pd.last_stable_offset = res.last_stable_offset;
                    if ctx.version >= 5 {
                        pd.log_start_offset = res.log_start_offset;
                    }
                    if let Some(n) = fetched.get_mut(slot.0) {
                        *n += res.records.len();
                    }
                    pd.records = Some(res.records);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "fetch forward failed");
                for slot in slots {
                    resp.responses[slot.0].partitions[slot.1].error_code = e.kafka_code();
                }
            }
        }
    }
    for (name, bytes) in names.iter().zip(fetched) {
        if bytes > 0 {
            ctx.metrics.fetched(name, bytes);
        }
    }
    resp.throttle_time_ms = ctx.quota.fetched(answered);
    resp
}
