//! Group APIs: forwarded to the worker that coordinates the group's slot
//! (a partition of `__consumer_offsets`), as the Kafka-encoded request.
//! Requests naming several groups are split per group and merged; ListGroups
//! asks every coordinator worker. While a slot moves (no owner, not loaded
//! yet, owner unreachable) the gateway retries internally; only after
//! `FORWARD_WAIT` does the client see NOT_COORDINATOR, which makes it look up
//! the coordinator again.

use crate::dispatch::Ctx;
use crate::router::{partition_ref, streamed_answer, RouteError, Routed};
use bytes::{Bytes, BytesMut};
use futures::future::join_all;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafscale_controlplane::acl;
use kafscale_controlplane::offsets_topic::{slot_of, OFFSETS_TOPIC};
use kafscale_proto::data::v1 as pb;
use std::time::Duration;
use tokio::time::Instant;

/// How long a group request is retried while its slot has no serving owner.
const FORWARD_WAIT: Duration = Duration::from_secs(10);

/// Why a forwarded request got no response.
#[derive(Debug)]
pub enum ForwardError {
    /// Answer the client with this error code.
    Code(i16),
    /// The worker could not decode what we sent: close the connection.
    Malformed,
}

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// The slot partition reference of `group`, if the coordinator topic exists.
fn slot_ref(ctx: &Ctx<'_>, group: &str) -> Option<pb::PartitionRef> {
    let snap = ctx.view.snapshot();
    let t = snap.topics.get(OFFSETS_TOPIC)?;
    Some(partition_ref(t, slot_of(group, t.partitions)))
}

/// Calls the coordinator worker at `addr`.
async fn call(
    ctx: &Ctx<'_>,
    addr: &str,
    req: pb::GroupRequest,
) -> Result<pb::GroupResponse, RouteError> {
    ctx.router
        .call(addr, |mut c| async move {
            streamed_answer(c.group(req).await, || ctx.sequenced.fire()).await
        })
        .await
}

fn decode_body<Resp: Decodable>(body: Bytes, v: i16) -> Result<Resp, ForwardError> {
    let mut b = body;
    if b.is_empty() {
        return Err(ForwardError::Malformed);
    }
    Resp::decode(&mut b, v).map_err(|_| ForwardError::Malformed)
}

fn request(
    ctx: &Ctx<'_>,
    key: ApiKey,
    body: Bytes,
    slot: Option<pb::PartitionRef>,
) -> pb::GroupRequest {
    pb::GroupRequest {
        slot,
        api_key: i32::from(key as i16),
        api_version: i32::from(ctx.version),
        body,
        client_id: ctx.client_id.to_string(),
        client_host: ctx.client_host.to_string(),
    }
}

fn encode_req<R: Encodable>(req: &R, v: i16) -> Result<Bytes, ForwardError> {
    let mut out = BytesMut::new();
    req.encode(&mut out, v)
        .map_err(|_| ForwardError::Malformed)?;
    Ok(out.freeze())
}

/// The ACL operation a group API needs on its group, as in Kafka.
fn group_operation(key: ApiKey) -> i32 {
    match key {
        ApiKey::OffsetFetch | ApiKey::DescribeGroups => acl::op::DESCRIBE,
        ApiKey::DeleteGroups | ApiKey::OffsetDelete => acl::op::DELETE,
        _ => acl::op::READ,
    }
}

/// An answer to the client: the coordinator's encoded response, passed on
/// as it came, or one the gateway built or changed.
pub enum Reply<R> {
    /// The coordinator's response body, encoded at the request's version.
    Raw(Bytes),
    Typed(R),
}

/// Forwards a request about `group` to its coordinator and decodes the
/// answer; GROUP_AUTHORIZATION_FAILED when the principal may not use the group.
pub async fn forward<Req: Encodable, Resp: Decodable>(
    ctx: &Ctx<'_>,
    key: ApiKey,
    group: &str,
    req: &Req,
) -> Result<Resp, ForwardError> {
    let body = encode_req(req, ctx.version)?;
    decode_body(forward_body(ctx, key, group, body).await?, ctx.version)
}

/// Forwards the client's own request body about `group` to its coordinator
/// and returns the coordinator's response body: for the membership APIs the
/// gateway neither changes nor reads, so nothing is decoded or encoded again
/// on the way. An empty answer (the worker could not decode it) is
/// [`ForwardError::Malformed`].
async fn forward_body(
    ctx: &Ctx<'_>,
    key: ApiKey,
    group: &str,
    body: Bytes,
) -> Result<Bytes, ForwardError> {
    if !ctx.allowed_on_group(group_operation(key), group) {
        return Err(ForwardError::Code(E::GroupAuthorizationFailed.code()));
    }
    let deadline = Instant::now() + FORWARD_WAIT;
    loop {
        let Some(slot) = slot_ref(ctx, group) else {
            return Err(ForwardError::Code(E::CoordinatorNotAvailable.code()));
        };
        if let Ok(addr) = ctx.router.owner_of(&slot).await {
            match call(ctx, &addr, request(ctx, key, body.clone(), Some(slot))).await {
                Ok(r) if r.body.is_empty() && !r.not_coordinator => {
                    return Err(ForwardError::Malformed)
                }
                Ok(r) if !r.not_coordinator => return Ok(r.body),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "coordinator call failed; retrying"),
            }
        }
        if Instant::now() >= deadline {
            return Err(ForwardError::Code(E::NotCoordinator.code()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// JoinGroup (`raw`: the client's request body).
pub async fn join_group(
    ctx: &Ctx<'_>,
    req: JoinGroupRequest,
    raw: Bytes,
) -> Result<Reply<JoinGroupResponse>, ForwardError> {
    match forward_body(ctx, ApiKey::JoinGroup, &req.group_id, raw).await {
        Ok(body) => Ok(Reply::Raw(body)),
        Err(ForwardError::Code(code)) => {
            let mut r = JoinGroupResponse::default();
            r.error_code = code;
            r.generation_id = -1;
            r.member_id = req.member_id.clone();
            if ctx.version < 7 {
                r.protocol_name = Some(s(""));
            }
            Ok(Reply::Typed(r))
        }
        Err(e) => Err(e),
    }
}

/// Forwards a membership request (SyncGroup, Heartbeat, LeaveGroup) as the
/// client's bytes (`raw`); its error answer is the default response with
/// only its error code set (`with_error`).
pub async fn membership<R: Default>(
    ctx: &Ctx<'_>,
    key: ApiKey,
    group: &str,
    raw: Bytes,
    with_error: impl FnOnce(R, i16) -> R,
) -> Result<Reply<R>, ForwardError> {
    match forward_body(ctx, key, group, raw).await {
        Ok(body) => Ok(Reply::Raw(body)),
        Err(ForwardError::Code(code)) => Ok(Reply::Typed(with_error(R::default(), code))),
        Err(e) => Err(e),
    }
}

/// OffsetCommit. Topics the principal may not READ are not committed and
/// get TOPIC_AUTHORIZATION_FAILED, as in Kafka.
pub async fn offset_commit(
    ctx: &Ctx<'_>,
    mut req: OffsetCommitRequest,
) -> Result<OffsetCommitResponse, ForwardError> {
    let errors = |topics: &[offset_commit_request::OffsetCommitRequestTopic], code: i16| {
        topics
            .iter()
            .map(|t| {
                let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
                tr.name = t.name.clone();
                for p in &t.partitions {
                    let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = code;
                    tr.partitions.push(pr);
                }
                tr
            })
            .collect::<Vec<_>>()
    };
    let mut denied = Vec::new();
    if ctx.allowed_on_group(acl::op::READ, &req.group_id) {
        let (ok, no): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topics)
            .into_iter()
            .partition(|t| ctx.allowed_on_topic(acl::op::READ, &t.name));
        req.topics = ok;
        denied = no;
    }
    let mut resp = if req.topics.is_empty() && !denied.is_empty() {
        OffsetCommitResponse::default()
    } else {
        match forward(ctx, ApiKey::OffsetCommit, &req.group_id, &req).await {
            Err(ForwardError::Code(code)) => {
                let mut r = OffsetCommitResponse::default();
                r.topics = errors(&req.topics, code);
                r
            }
            other => other?,
        }
    };
    resp.topics
        .extend(errors(&denied, E::TopicAuthorizationFailed.code()));
    Ok(resp)
}

/// What [`filter_fetched`] does to a listed topic the principal may not
/// DESCRIBE (the v1–7 and v8 answer types have the same fields).
macro_rules! denied_topic {
    () => {
        |t| {
            for p in &mut t.partitions {
                p.committed_offset = -1;
                p.metadata = None;
                p.error_code = E::TopicAuthorizationFailed.code();
            }
        }
    };
}

/// Hides from an OffsetFetch answer the topics the principal may not
/// DESCRIBE: listed on request, they get TOPIC_AUTHORIZATION_FAILED;
/// otherwise (all topics) they are left out, as in Kafka.
fn filter_fetched<T>(
    ctx: &Ctx<'_>,
    topics: &mut Vec<T>,
    explicit: bool,
    name: impl Fn(&T) -> &str,
    deny: impl Fn(&mut T),
) {
    if explicit {
        for t in topics.iter_mut() {
            if !ctx.allowed_on_topic(acl::op::DESCRIBE, name(t)) {
                deny(t);
            }
        }
    } else {
        topics.retain(|t| ctx.allowed_on_topic(acl::op::DESCRIBE, name(t)));
    }
}

/// OffsetFetch; from v8 one request may name several groups.
pub async fn offset_fetch(
    ctx: &Ctx<'_>,
    req: OffsetFetchRequest,
) -> Result<OffsetFetchResponse, ForwardError> {
    if ctx.version < 8 {
        let res: Result<OffsetFetchResponse, ForwardError> =
            forward(ctx, ApiKey::OffsetFetch, &req.group_id, &req).await;
        return match res {
            Ok(mut r) => {
                filter_fetched(
                    ctx,
                    &mut r.topics,
                    req.topics.is_some(),
                    |t| t.name.as_str(),
                    denied_topic!(),
                );
                Ok(r)
            }
            Err(ForwardError::Code(code)) => {
                let mut r = OffsetFetchResponse::default();
                if ctx.version >= 2 {
                    r.error_code = code;
                } else {
                    for t in req.topics.iter().flatten() {
                        let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                        tr.name = t.name.clone();
                        for p in &t.partition_indexes {
                            let mut pr =
                                offset_fetch_response::OffsetFetchResponsePartition::default();
                            pr.partition_index = *p;
                            pr.committed_offset = -1;
                            pr.error_code = code;
                            tr.partitions.push(pr);
                        }
                        r.topics.push(tr);
                    }
                }
                Ok(r)
            }
            other => other,
        };
    }
    let calls = req.groups.iter().map(|g| {
        let mut one = req.clone();
        one.groups = vec![g.clone()];
        async move {
            let res: Result<OffsetFetchResponse, ForwardError> =
                forward(ctx, ApiKey::OffsetFetch, &g.group_id, &one).await;
            (g.group_id.clone(), res)
        }
    });
    let mut resp = OffsetFetchResponse::default();
    for (group_id, res) in join_all(calls).await {
        match res {
            Ok(r) => {
                for mut g in r.groups {
                    let explicit = req
                        .groups
                        .iter()
                        .any(|q| q.group_id == g.group_id && q.topics.is_some());
                    filter_fetched(
                        ctx,
                        &mut g.topics,
                        explicit,
                        |t| t.name.as_str(),
                        denied_topic!(),
                    );
                    resp.groups.push(g);
                }
            }
            Err(ForwardError::Code(code)) => {
                let mut gr = offset_fetch_response::OffsetFetchResponseGroup::default();
                gr.group_id = group_id;
                gr.error_code = code;
                resp.groups.push(gr);
            }
            Err(ForwardError::Malformed) => return Err(ForwardError::Malformed),
        }
    }
    Ok(resp)
}

/// DescribeGroups, split per group.
pub async fn describe_groups(
    ctx: &Ctx<'_>,
    req: DescribeGroupsRequest,
) -> Result<DescribeGroupsResponse, ForwardError> {
    let calls = req.groups.iter().map(|g| {
        let mut one = req.clone();
        one.groups = vec![g.clone()];
        async move {
            let res: Result<DescribeGroupsResponse, ForwardError> =
                forward(ctx, ApiKey::DescribeGroups, g, &one).await;
            (g.clone(), res)
        }
    });
    let mut resp = DescribeGroupsResponse::default();
    let with_operations = req.include_authorized_operations && ctx.version >= 3;
    for (group_id, res) in join_all(calls).await {
        match res {
            Ok(r) => resp.groups.extend(r.groups.into_iter().map(|mut g| {
                if with_operations && g.error_code == 0 {
                    g.authorized_operations =
                        ctx.authorized_operations(acl::resource::GROUP, &g.group_id);
                }
                g
            })),
            Err(ForwardError::Code(code)) => {
                let mut d = describe_groups_response::DescribedGroup::default();
                d.group_id = group_id;
                d.error_code = code;
                resp.groups.push(d);
            }
            Err(ForwardError::Malformed) => return Err(ForwardError::Malformed),
        }
    }
    Ok(resp)
}

/// DeleteGroups, split per group.
pub async fn delete_groups(
    ctx: &Ctx<'_>,
    req: DeleteGroupsRequest,
) -> Result<DeleteGroupsResponse, ForwardError> {
    let calls = req.groups_names.iter().map(|g| {
        let mut one = req.clone();
        one.groups_names = vec![g.clone()];
        async move {
            let res: Result<DeleteGroupsResponse, ForwardError> =
                forward(ctx, ApiKey::DeleteGroups, g, &one).await;
            (g.clone(), res)
        }
    });
    let mut resp = DeleteGroupsResponse::default();
    for (group_id, res) in join_all(calls).await {
        match res {
            Ok(r) => resp.results.extend(r.results),
            Err(ForwardError::Code(code)) => {
                let mut d = delete_groups_response::DeletableGroupResult::default();
                d.group_id = group_id;
                d.error_code = code;
                resp.results.push(d);
            }
            Err(ForwardError::Malformed) => return Err(ForwardError::Malformed),
        }
    }
    Ok(resp)
}

/// OffsetDelete. Topics the principal may not READ keep their offsets and
/// get TOPIC_AUTHORIZATION_FAILED, as in Kafka.
pub async fn offset_delete(
    ctx: &Ctx<'_>,
    mut req: OffsetDeleteRequest,
) -> Result<OffsetDeleteResponse, ForwardError> {
    let (ok, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut req.topics)
        .into_iter()
        .partition(|t| ctx.allowed_on_topic(acl::op::READ, &t.name));
    req.topics = ok;
    let mut resp: OffsetDeleteResponse =
        match forward(ctx, ApiKey::OffsetDelete, &req.group_id, &req).await {
            Err(ForwardError::Code(code)) => {
                return Ok(OffsetDeleteResponse::default().with_error_code(code))
            }
            other => other?,
        };
    for t in denied {
        let mut tr = offset_delete_response::OffsetDeleteResponseTopic::default();
        tr.name = t.name;
        for p in t.partitions {
            let mut pr = offset_delete_response::OffsetDeleteResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = E::TopicAuthorizationFailed.code();
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    Ok(resp)
}

/// ListGroups: asks every worker that owns a slot and merges the answers;
/// without DESCRIBE on the cluster only the groups the principal may
/// DESCRIBE are listed, as in Kafka.
/// If some slot has no serving owner the list would be incomplete, so the
/// answer is COORDINATOR_NOT_AVAILABLE (retriable) instead.
pub async fn list_groups(
    ctx: &Ctx<'_>,
    req: ListGroupsRequest,
) -> Result<ListGroupsResponse, ForwardError> {
    let mut resp = ListGroupsResponse::default();
    let body = encode_req(&req, ctx.version)?;
    let slots: Vec<pb::PartitionRef> = {
        let snap = ctx.view.snapshot();
        match snap.topics.get(OFFSETS_TOPIC) {
            Some(t) => (0..t.partitions).map(|p| partition_ref(t, p)).collect(),
            None => Vec::new(),
        }
    };
    let (routed, unroutable) = ctx.router.split(slots, Routed::key).await;
    if !unroutable.is_empty() {
        resp.error_code = E::CoordinatorNotAvailable.code();
        return Ok(resp);
    }
    let calls = routed.into_keys().map(|addr| {
        let req = request(ctx, ApiKey::ListGroups, body.clone(), None);
        async move { call(ctx, &addr, req).await }
    });
    let all = ctx.allowed_on_cluster(acl::op::DESCRIBE);
    for r in join_all(calls).await {
        match r {
            Ok(r) => {
                let part: ListGroupsResponse = decode_body(r.body, ctx.version)?;
                if part.error_code != 0 {
                    resp.error_code = part.error_code;
                }
                resp.groups.extend(
                    part.groups
                        .into_iter()
                        .filter(|g| all || ctx.allowed_on_group(acl::op::DESCRIBE, &g.group_id)),
                );
            }
            Err(e) => {
                tracing::debug!(error = %e, "ListGroups call failed");
                resp.error_code = E::CoordinatorNotAvailable.code();
            }
        }
    }
    Ok(resp)
}
