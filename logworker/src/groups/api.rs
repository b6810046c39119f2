//! The group APIs on the worker: decode the Kafka request a gateway
//! forwarded, run it against the slot's groups, encode the Kafka response.
//! Answers that depend on a write (SyncGroup of the leader, OffsetCommit,
//! DeleteGroups, OffsetDelete) are sent only once the write is durable.

use super::group::{codes::*, Committed, GroupState, JoinArgs, JoinOutcome, JoinResult};
use super::group::{SyncOutcome, SyncResult};
use super::records::{self, KeyValue};
use super::{GroupCoordinator, GroupLogError, Slot};
use crate::completion::{wait_durable, Completion};
use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafscale_controlplane::metadata::now_ms;
use kafscale_proto::data::v1 as pb;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// `offset.metadata.max.bytes`.
const MAX_OFFSET_METADATA: usize = 4096;
/// Kafka's ACL operation bits a group allows: READ, DELETE, DESCRIBE.
const GROUP_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// Per topic, per partition: the committed offset if any.
type TopicOffsets = Vec<(String, Vec<(i32, Option<Committed>)>)>;

/// Reports that a request's place in the order of its connection is fixed
/// (for OffsetCommit: its records are appended), so the gateway may send the
/// connection's next request.
pub use kafscale_proto::sequencing::Sequenced;

/// Who sent a request.
pub struct Client {
    pub id: String,
    pub host: String,
}

/// Whether a topic partition exists (commits to unknown ones are refused).
pub type PartitionExists<'a> = &'a (dyn Fn(&str, i32) -> bool + Sync);

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

fn decode<R: Decodable>(body: &mut Bytes, v: i16) -> Option<R> {
    R::decode(body, v).ok()
}

fn encode<R: Encodable>(r: &R, v: i16) -> Bytes {
    let mut out = BytesMut::new();
    match r.encode(&mut out, v) {
        Ok(()) => out.freeze(),
        Err(e) => {
            tracing::error!(error = %e, version = v, "group response encoding failed");
            Bytes::new()
        }
    }
}

async fn durable(p: Result<(i64, Completion), GroupLogError>) -> Result<i64, i16> {
    let (base, c) = p.map_err(|e| e.kafka_code())?;
    wait_durable(c)
        .await
        .map_err(|e| GroupLogError::Wal(e).kafka_code())?;
    Ok(base)
}

impl GroupCoordinator {
    /// Serves one forwarded group request. An empty body means the request
    /// could not be decoded (the gateway closes the client connection).
    pub async fn handle(
        &self,
        req: pb::GroupRequest,
        exists: PartitionExists<'_>,
        sequenced: Sequenced,
    ) -> pb::GroupResponse {
        let v = req.api_version as i16;
        let mut body = req.body.clone();
        let client = Client {
            id: req.client_id.clone(),
            host: req.client_host.clone(),
        };
        let not_coordinator = pb::GroupResponse {
            not_coordinator: true,
            body: Bytes::new(),
            sequenced: false,
        };
        let Ok(key) = ApiKey::try_from(req.api_key as i16) else {
            return pb::GroupResponse::default();
        };
        tracing::debug!(api = ?key, v, client = %client.id, "group request");
        // Only commits depend on their order; everything else is sequenced now.
        if key != ApiKey::OffsetCommit {
            sequenced.fire();
        }
        if key == ApiKey::ListGroups {
            let body = match decode::<ListGroupsRequest>(&mut body, v) {
                Some(r) => encode(&self.list_groups(r, v), v),
                None => Bytes::new(),
            };
            return pb::GroupResponse {
                not_coordinator: false,
                body,
                sequenced: false,
            };
        }
        let slot = req.slot.as_ref().and_then(|r| {
            let slot = self.slot(r.partition)?;
            (slot.log.id.topic_id.as_bytes()[..] == r.topic_id[..]).then_some(slot)
        });
        let Some(slot) = slot else {
            return not_coordinator;
        };
        let body = match key {
            ApiKey::JoinGroup => match decode::<JoinGroupRequest>(&mut body, v) {
                Some(r) => encode(&self.join(&slot, r, v, &client).await, v),
                None => Bytes::new(),
            },
            ApiKey::SyncGroup => match decode::<SyncGroupRequest>(&mut body, v) {
                Some(r) => encode(&self.sync(&slot, r, v).await, v),
                None => Bytes::new(),
            },
            ApiKey::Heartbeat => match decode::<HeartbeatRequest>(&mut body, v) {
                Some(r) => encode(&self.heartbeat(&slot, r), v),
                None => Bytes::new(),
            },
            ApiKey::LeaveGroup => match decode::<LeaveGroupRequest>(&mut body, v) {
                Some(r) => encode(&self.leave(&slot, r, v), v),
                None => Bytes::new(),
            },
            ApiKey::OffsetCommit => match decode::<OffsetCommitRequest>(&mut body, v) {
                Some(r) => encode(
                    &self.offset_commit(&slot, r, v, exists, &sequenced).await,
                    v,
                ),
                None => Bytes::new(),
            },
            ApiKey::OffsetFetch => match decode::<OffsetFetchRequest>(&mut body, v) {
                Some(r) => encode(&self.offset_fetch(&slot, r, v), v),
                None => Bytes::new(),
            },
            ApiKey::DescribeGroups => match decode::<DescribeGroupsRequest>(&mut body, v) {
                Some(r) => encode(&self.describe_groups(&slot, r, v), v),
                None => Bytes::new(),
            },
            ApiKey::DeleteGroups => match decode::<DeleteGroupsRequest>(&mut body, v) {
                Some(r) => encode(&self.delete_groups(&slot, r).await, v),
                None => Bytes::new(),
            },
            ApiKey::OffsetDelete => match decode::<OffsetDeleteRequest>(&mut body, v) {
                Some(r) => encode(&self.offset_delete(&slot, r, exists).await, v),
                None => Bytes::new(),
            },
            _ => Bytes::new(),
        };
        tracing::debug!(api = ?key, client = %client.id, "group request answered");
        pb::GroupResponse {
            not_coordinator: false,
            body,
            sequenced: false,
        }
    }

    async fn join(
        &self,
        slot: &Slot,
        r: JoinGroupRequest,
        v: i16,
        client: &Client,
    ) -> JoinGroupResponse {
        let group_id = r.group_id.to_string();
        let millis = |ms: i32| Duration::from_millis(ms.max(0) as u64);
        let args = JoinArgs {
            member_id: r.member_id.to_string(),
            instance_id: r.group_instance_id.as_ref().map(|i| i.to_string()),
            client_id: client.id.clone(),
            client_host: client.host.clone(),
            session_timeout: millis(r.session_timeout_ms),
            rebalance_timeout: millis(if v == 0 || r.rebalance_timeout_ms < 0 {
                r.session_timeout_ms
            } else {
                r.rebalance_timeout_ms
            }),
            protocol_type: r.protocol_type.to_string(),
            protocols: r
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            require_known_member_id: v >= 4,
        };
        let result = if group_id.is_empty() {
            JoinResult::error(E::InvalidGroupId.code(), &args.member_id)
        } else {
            let now = Instant::now();
            let mint = |prefix: &str| format!("{prefix}-{}", Uuid::new_v4());
            let outcome = self.with_group(slot, &group_id, true, |g| {
                let o = g.join(&self.cfg, args.clone(), mint, now);
                let write = matches!(o, JoinOutcome::PersistThenAnswer(_))
                    .then(|| self.persist(slot, &[records::group(g, None, now_ms())]));
                (o, write)
            });
            match outcome {
                None => JoinResult::error(NOT_COORDINATOR, &args.member_id),
                Some((JoinOutcome::Now(r), _)) => r,
                Some((JoinOutcome::Wait(rx), _)) => rx
                    .await
                    .unwrap_or_else(|_| JoinResult::error(NOT_COORDINATOR, &args.member_id)),
                Some((JoinOutcome::PersistThenAnswer(r), write)) => match write {
                    Some(w) => match durable(w).await {
                        Ok(_) => r,
                        Err(code) => JoinResult::error(code, &args.member_id),
                    },
                    None => r,
                },
            }
        };
        let mut resp = JoinGroupResponse::default();
        resp.error_code = result.error;
        resp.generation_id = result.generation;
        if v >= 7 {
            resp.protocol_type = result.protocol_type.map(s);
        }
        resp.protocol_name = match result.protocol_name {
            Some(n) => Some(s(n)),
            None if v < 7 => Some(s("")),
            None => None,
        };
        resp.leader = s(result.leader);
        resp.member_id = s(result.member_id);
        resp.skip_assignment = v >= 9 && result.skip_assignment;
        resp.members = result
            .members
            .into_iter()
            .map(|(id, instance, metadata)| {
                let mut m = join_group_response::JoinGroupResponseMember::default();
                m.member_id = s(id);
                if v >= 5 {
                    m.group_instance_id = instance.map(s);
                }
                m.metadata = metadata;
                m
            })
            .collect();
        resp
    }

    async fn sync(&self, slot: &Slot, r: SyncGroupRequest, v: i16) -> SyncGroupResponse {
        let member = r.member_id.to_string();
        let instance = r.group_instance_id.as_ref().map(|i| i.to_string());
        let ptype = r.protocol_type.as_ref().map(|p| p.to_string());
        let pname = r.protocol_name.as_ref().map(|p| p.to_string());
        let assignments: HashMap<String, Bytes> = r
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect();
        let group_id = r.group_id.to_string();
        let now = Instant::now();
        let outcome = self.with_group(slot, &group_id, false, |g| {
            let o = g.sync(
                r.generation_id,
                &member,
                &instance,
                (&ptype, &pname),
                assignments.clone(),
                now,
            );
            let write = match &o {
                SyncOutcome::Persist { assignments, .. } => {
                    Some(self.persist(slot, &[records::group(g, Some(assignments), now_ms())]))
                }
                _ => None,
            };
            (o, write)
        });
        let result = match outcome {
            None => SyncResult::error(UNKNOWN_MEMBER_ID),
            Some((SyncOutcome::Now(r), _)) => r,
            Some((SyncOutcome::Wait(rx), _)) => rx
                .await
                .unwrap_or_else(|_| SyncResult::error(NOT_COORDINATOR)),
            Some((
                SyncOutcome::Persist {
                    generation,
                    assignments,
                    answer,
                },
                write,
            )) => {
                let code = match write {
                    Some(w) => durable(w).await.err().unwrap_or(NONE),
                    None => COORDINATOR_NOT_AVAILABLE,
                };
                self.with_group(slot, &group_id, false, |g| {
                    g.complete_sync(
                        &self.cfg,
                        generation,
                        assignments.clone(),
                        code,
                        Instant::now(),
                    )
                });
                answer
                    .await
                    .unwrap_or_else(|_| SyncResult::error(NOT_COORDINATOR))
            }
        };
        let mut resp = SyncGroupResponse::default();
        resp.error_code = result.error;
        if v >= 5 {
            resp.protocol_type = result.protocol_type.map(s);
            resp.protocol_name = result.protocol_name.map(s);
        }
        resp.assignment = result.assignment;
        resp
    }

    fn heartbeat(&self, slot: &Slot, r: HeartbeatRequest) -> HeartbeatResponse {
        let instance = r.group_instance_id.as_ref().map(|i| i.to_string());
        let code = self
            .with_group(slot, &r.group_id, false, |g| {
                g.heartbeat(r.generation_id, &r.member_id, &instance, Instant::now())
            })
            .unwrap_or(UNKNOWN_MEMBER_ID);
        let mut resp = HeartbeatResponse::default();
        resp.error_code = code;
        resp
    }

    fn leave(&self, slot: &Slot, r: LeaveGroupRequest, v: i16) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if v >= 3 {
            r.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|i| i.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(r.member_id.to_string(), None)]
        };
        let now = Instant::now();
        let codes = self
            .with_group(slot, &r.group_id, false, |g| {
                let mut empty = false;
                let codes: Vec<i16> = leaving
                    .iter()
                    .map(|(m, i)| {
                        let (code, e) = g.leave(&self.cfg, m, i, now);
                        empty |= e;
                        code
                    })
                    .collect();
                if empty {
                    self.persist_detached(slot, &[records::group(g, None, now_ms())]);
                }
                codes
            })
            .unwrap_or_else(|| vec![UNKNOWN_MEMBER_ID; leaving.len()]);
        let mut resp = LeaveGroupResponse::default();
        if v >= 3 {
            resp.members = leaving
                .into_iter()
                .zip(codes)
                .map(|((m, i), code)| {
                    let mut mr = leave_group_response::MemberResponse::default();
                    mr.member_id = s(m);
                    mr.group_instance_id = i.map(s);
                    mr.error_code = code;
                    mr
                })
                .collect();
        } else {
            resp.error_code = codes.first().copied().unwrap_or(NONE);
        }
        resp
    }

    async fn offset_commit(
        &self,
        slot: &Slot,
        r: OffsetCommitRequest,
        v: i16,
        exists: PartitionExists<'_>,
        sequenced: &Sequenced,
    ) -> OffsetCommitResponse {
        let group_id = r.group_id.to_string();
        let instance = r.group_instance_id.as_ref().map(|i| i.to_string());
        let generation = r.generation_id_or_member_epoch;
        let now = Instant::now();
        let ts = now_ms();
        // Per partition: (topic, partition, error or the commit to write).
        let mut plan: Vec<(String, i32, Result<Committed, i16>)> = Vec::new();
        for t in &r.topics {
            for p in &t.partitions {
                let c = if group_id.is_empty() {
                    Err(E::InvalidGroupId.code())
                } else if !exists(&t.name, p.partition_index) {
                    Err(E::UnknownTopicOrPartition.code())
                } else if p
                    .committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > MAX_OFFSET_METADATA)
                {
                    Err(E::OffsetMetadataTooLarge.code())
                } else {
                    Ok(Committed {
                        offset: p.committed_offset,
                        leader_epoch: if v >= 6 { p.committed_leader_epoch } else { -1 },
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_timestamp_ms: ts,
                        log_offset: 0,
                    })
                };
                plan.push((t.name.to_string(), p.partition_index, c));
            }
        }
        let to_write: Vec<KeyValue> = plan
            .iter()
            .filter_map(|(t, p, c)| {
                c.as_ref()
                    .ok()
                    .map(|c| records::offset(&group_id, t, *p, Some(c)))
            })
            .collect();
        if !to_write.is_empty() {
            let checked = self.with_group(slot, &group_id, generation < 0, |g| {
                match g.check_commit(generation, &r.member_id, &instance, now) {
                    NONE => Ok(self.persist(slot, &to_write)),
                    code => Err(code),
                }
            });
            sequenced.fire();
            let outcome = match checked {
                // No such group and a generation given: from v9 (KIP-848)
                // Kafka says so, before it answered ILLEGAL_GENERATION.
                None if v >= 9 => Err(E::GroupIdNotFound.code()),
                None => Err(ILLEGAL_GENERATION),
                Some(Err(code)) => Err(code),
                Some(Ok(write)) => durable(write).await,
            };
            match outcome {
                Ok(base) => {
                    let mut next = base;
                    self.with_group(slot, &group_id, true, |g| {
                        for (t, p, c) in plan.iter_mut() {
                            if let Ok(c) = c {
                                c.log_offset = next;
                                next += 1;
                                g.apply_commit(t, *p, c.clone());
                            }
                        }
                    });
                }
                Err(code) => {
                    for (_, _, c) in plan.iter_mut() {
                        if c.is_ok() {
                            *c = Err(code);
                        }
                    }
                }
            }
        }
        let mut resp = OffsetCommitResponse::default();
        let mut by_topic: Vec<offset_commit_response::OffsetCommitResponseTopic> = Vec::new();
        for (t, p, c) in plan {
            if by_topic.last().map(|x| x.name.as_str()) != Some(t.as_str()) {
                let mut tr = offset_commit_response::OffsetCommitResponseTopic::default();
                tr.name = TopicName(s(t));
                by_topic.push(tr);
            }
            let mut pr = offset_commit_response::OffsetCommitResponsePartition::default();
            pr.partition_index = p;
            pr.error_code = c.err().unwrap_or(NONE);
            if let Some(tr) = by_topic.last_mut() {
                tr.partitions.push(pr);
            }
        }
        resp.topics = by_topic;
        resp
    }

    /// Committed offsets of `group`: the requested partitions (−1 where
    /// never committed) or, with `None`, every committed partition.
    fn committed(
        &self,
        slot: &Slot,
        group: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> TopicOffsets {
        let offsets = self
            .with_group(slot, group, false, |g| g.offsets.clone())
            .unwrap_or_default();
        match topics {
            Some(ts) => ts
                .into_iter()
                .map(|(t, ps)| {
                    let parts = ps
                        .into_iter()
                        .map(|p| (p, offsets.get(&(t.clone(), p)).cloned()))
                        .collect();
                    (t, parts)
                })
                .collect(),
            None => {
                let mut out: BTreeMap<String, Vec<(i32, Option<Committed>)>> = BTreeMap::new();
                for ((t, p), c) in offsets {
                    out.entry(t).or_default().push((p, Some(c)));
                }
                out.into_iter().collect()
            }
        }
    }

    fn offset_fetch(&self, slot: &Slot, r: OffsetFetchRequest, v: i16) -> OffsetFetchResponse {
        let fill = |c: &Option<Committed>| -> (i64, i32, Option<StrBytes>) {
            match c {
                Some(c) => (
                    c.offset,
                    c.leader_epoch,
                    Some(s(c.metadata.clone().unwrap_or_default())),
                ),
                None => (-1, -1, Some(s(""))),
            }
        };
        let mut resp = OffsetFetchResponse::default();
        if v < 8 {
            let topics = r.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            for (t, parts) in self.committed(slot, &r.group_id, topics) {
                let mut tr = offset_fetch_response::OffsetFetchResponseTopic::default();
                tr.name = TopicName(s(t));
                for (p, c) in parts {
                    let (offset, epoch, metadata) = fill(&c);
                    let mut pr = offset_fetch_response::OffsetFetchResponsePartition::default();
                    pr.partition_index = p;
                    pr.committed_offset = offset;
                    pr.committed_leader_epoch = epoch;
                    pr.metadata = metadata;
                    tr.partitions.push(pr);
                }
                resp.topics.push(tr);
            }
            return resp;
        }
        for g in &r.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let mut gr = offset_fetch_response::OffsetFetchResponseGroup::default();
            gr.group_id = g.group_id.clone();
            for (t, parts) in self.committed(slot, &g.group_id, topics) {
                let mut tr = offset_fetch_response::OffsetFetchResponseTopics::default();
                tr.name = TopicName(s(t));
                for (p, c) in parts {
                    let (offset, epoch, metadata) = fill(&c);
                    let mut pr = offset_fetch_response::OffsetFetchResponsePartitions::default();
                    pr.partition_index = p;
                    pr.committed_offset = offset;
                    pr.committed_leader_epoch = epoch;
                    pr.metadata = metadata;
                    tr.partitions.push(pr);
                }
                gr.topics.push(tr);
            }
            resp.groups.push(gr);
        }
        resp
    }

    fn describe_groups(
        &self,
        slot: &Slot,
        r: DescribeGroupsRequest,
        v: i16,
    ) -> DescribeGroupsResponse {
        let mut resp = DescribeGroupsResponse::default();
        for id in &r.groups {
            let mut d = describe_groups_response::DescribedGroup::default();
            d.group_id = id.clone();
            d.group_state = s("Dead");
            if v >= 3 {
                d.authorized_operations = if r.include_authorized_operations {
                    GROUP_OPERATIONS
                } else {
                    i32::MIN
                };
            }
            if id.is_empty() {
                d.error_code = E::InvalidGroupId.code();
            }
            self.with_group(slot, id, false, |g| {
                let stable = g.state == GroupState::Stable;
                let protocol = g.protocol_name.clone().unwrap_or_default();
                d.group_state = s(g.state.name());
                d.protocol_type = s(g.protocol_type.clone().unwrap_or_default());
                d.protocol_data = s(if stable {
                    protocol.clone()
                } else {
                    String::new()
                });
                d.members = g
                    .members
                    .values()
                    .map(|m| {
                        let mut dm = describe_groups_response::DescribedGroupMember::default();
                        dm.member_id = s(m.id.clone());
                        if v >= 4 {
                            dm.group_instance_id = m.instance_id.clone().map(s);
                        }
                        dm.client_id = s(m.client_id.clone());
                        dm.client_host = s(m.client_host.clone());
                        if stable {
                            dm.member_metadata = m.metadata(&protocol);
                            dm.member_assignment = m.assignment.clone();
                        }
                        dm
                    })
                    .collect();
            });
            resp.groups.push(d);
        }
        resp
    }

    fn list_groups(&self, r: ListGroupsRequest, v: i16) -> ListGroupsResponse {
        let wanted: Vec<String> = r
            .states_filter
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        // v5's group types (KIP-848), case-insensitive as in Kafka: every
        // group here is a classic one.
        if !r.types_filter.is_empty()
            && !r
                .types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case("classic"))
        {
            return ListGroupsResponse::default();
        }
        let mut resp = ListGroupsResponse::default();
        for slot in self.slots.iter().map(|s| s.clone()).collect::<Vec<_>>() {
            let ids: Vec<String> = slot.groups.iter().map(|g| g.key().clone()).collect();
            for id in ids {
                self.with_group(&slot, &id, false, |g| {
                    let state = g.state.name();
                    if !wanted.is_empty() && !wanted.contains(&state.to_ascii_lowercase()) {
                        return;
                    }
                    let mut lg = list_groups_response::ListedGroup::default();
                    lg.group_id = GroupId(s(id.clone()));
                    lg.protocol_type = s(g.protocol_type.clone().unwrap_or_default());
                    if v >= 4 {
                        lg.group_state = s(state);
                    }
                    if v >= 5 {
                        lg.group_type = s("classic");
                    }
                    resp.groups.push(lg);
                });
            }
        }
        resp
    }

    async fn delete_groups(&self, slot: &Slot, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let mut resp = DeleteGroupsResponse::default();
        for id in &r.groups_names {
            let outcome = self.with_group(slot, id, false, |g| {
                if !g.members.is_empty() || g.state != GroupState::Empty {
                    return Err(E::NonEmptyGroup.code());
                }
                let mut recs: Vec<KeyValue> = g
                    .offsets
                    .keys()
                    .map(|(t, p)| records::offset(id, t, *p, None))
                    .collect();
                recs.push(records::group_tombstone(id));
                let write = self.persist(slot, &recs);
                Self::bury(slot, g);
                Ok(write)
            });
            let code = match outcome {
                None => E::GroupIdNotFound.code(),
                Some(Err(code)) => code,
                Some(Ok(write)) => durable(write).await.err().unwrap_or(NONE),
            };
            let mut dr = delete_groups_response::DeletableGroupResult::default();
            dr.group_id = id.clone();
            dr.error_code = code;
            resp.results.push(dr);
        }
        resp
    }

    async fn offset_delete(
        &self,
        slot: &Slot,
        r: OffsetDeleteRequest,
        exists: PartitionExists<'_>,
    ) -> OffsetDeleteResponse {
        let mut resp = OffsetDeleteResponse::default();
        let outcome = self.with_group(slot, &r.group_id, false, |g| {
            let subscribed = match g.state {
                GroupState::Empty => Some(Default::default()),
                _ => g.subscribed_topics(),
            };
            let Some(subscribed) = subscribed else {
                return Err(E::NonEmptyGroup.code());
            };
            let mut codes = Vec::new();
            let mut recs = Vec::new();
            for t in &r.topics {
                for p in &t.partitions {
                    let code = if !exists(&t.name, p.partition_index) {
                        E::UnknownTopicOrPartition.code()
                    } else if subscribed.contains(t.name.as_str()) {
                        E::GroupSubscribedToTopic.code()
                    } else {
                        let key = (t.name.to_string(), p.partition_index);
                        if g.offsets.remove(&key).is_some() {
                            recs.push(records::offset(&r.group_id, &key.0, key.1, None));
                        }
                        NONE
                    };
                    codes.push((t.name.clone(), p.partition_index, code));
                }
            }
            let write = (!recs.is_empty()).then(|| self.persist(slot, &recs));
            Ok((codes, write))
        });
        let (codes, failed) = match outcome {
            None => {
                resp.error_code = E::GroupIdNotFound.code();
                return resp;
            }
            Some(Err(code)) => {
                resp.error_code = code;
                return resp;
            }
            Some(Ok((codes, write))) => {
                let failed = match write {
                    Some(w) => durable(w).await.err(),
                    None => None,
                };
                (codes, failed)
            }
        };
        if let Some(code) = failed {
            resp.error_code = code;
            return resp;
        }
        for (name, p, code) in codes {
            if resp.topics.last().map(|t| &t.name) != Some(&name) {
                let mut tr = offset_delete_response::OffsetDeleteResponseTopic::default();
                tr.name = name.clone();
                resp.topics.push(tr);
            }
            let mut pr = offset_delete_response::OffsetDeleteResponsePartition::default();
            pr.partition_index = p;
            pr.error_code = code;
            if let Some(tr) = resp.topics.last_mut() {
                tr.partitions.push(pr);
            }
        }
        resp
    }
}
