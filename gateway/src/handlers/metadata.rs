//! Metadata: the gateway presents itself as the only broker and the leader
//! of every partition; clients never need to know about workers.

use super::topics;
use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_controlplane::offsets_topic::is_internal;

/// Answers a Metadata request, auto-creating requested topics when allowed.
pub async fn handle(ctx: &Ctx<'_>, req: MetadataRequest) -> MetadataResponse {
    let node = BrokerId(ctx.cfg.node_id);
    // v0: an empty list means all topics; v1+: null means all.
    let requested: Option<Vec<String>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && ctx.version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|t| match (t.name, t.topic_id.is_nil()) {
                    (Some(n), _) => n.0.to_string(),
                    (None, false) => ctx
                        .view
                        .snapshot()
                        .topic_names
                        .get(&t.topic_id)
                        .cloned()
                        .unwrap_or_default(),
                    (None, true) => String::new(),
                })
                .collect(),
        ),
    };
    let allow_create = ctx.version < 4 || req.allow_auto_topic_creation;
    let mut create_errors = std::collections::HashMap::new();
    if let Some(names) = &requested {
        let snap = ctx.view.snapshot();
        for n in names {
            if !ctx.allowed_on_topic(acl::op::DESCRIBE, n) {
                create_errors.insert(n.clone(), ResponseError::TopicAuthorizationFailed.code());
            } else if !snap.topics.contains_key(n) {
                let code = if allow_create {
                    topics::auto_create(ctx, n).await
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
                create_errors.insert(n.clone(), code);
            }
        }
    }
    let snap = ctx.view.snapshot();
    // All topics: only those the principal may describe, as in Kafka.
    let names: Vec<String> = requested.unwrap_or_else(|| {
        let mut all: Vec<String> = snap
            .topics
            .keys()
            .filter(|n| ctx.allowed_on_topic(acl::op::DESCRIBE, n))
            .cloned()
            .collect();
        all.sort();
        all
    });
    let mut resp = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = node;
    broker.host = StrBytes::from_string(ctx.cfg.advertised_host.clone());
    broker.port = ctx.cfg.advertised_port;
    resp.brokers = vec![broker];
    resp.controller_id = node;
    if req.include_cluster_authorized_operations && (8..=10).contains(&ctx.version) {
        resp.cluster_authorized_operations =
            ctx.authorized_operations(acl::resource::CLUSTER, acl::CLUSTER_NAME);
    }
    if ctx.version >= 2 {
        resp.cluster_id = ctx
            .view
            .meta()
            .cluster_info()
            .await
            .ok()
            .map(|c| StrBytes::from_string(c.cluster_id));
    }
    for name in names {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(name.clone())));
        let denied =
            create_errors.get(&name) == Some(&ResponseError::TopicAuthorizationFailed.code());
        match snap.topics.get(&name).filter(|_| !denied) {
            Some(topic) => {
                let id = topic_uuid(topic);
                if ctx.version >= 1 {
                    t.is_internal = is_internal(&name);
                }
                if ctx.version >= 10 {
                    t.topic_id = id;
                }
                if req.include_topic_authorized_operations && ctx.version >= 8 {
                    t.topic_authorized_operations =
                        ctx.authorized_operations(acl::resource::TOPIC, &name);
                }
                t.partitions = (0..topic.partitions)
                    .map(|p| {
                        let mut mp = MetadataResponsePartition::default();
                        mp.partition_index = p;
                        mp.leader_id = node;
                        match snap.assignments.get(&(id, p)) {
                            Some(a) if ctx.version >= 7 => mp.leader_epoch = a.epoch as i32,
                            Some(_) => {}
                            None => {
                                mp.error_code = ResponseError::LeaderNotAvailable.code();
                                mp.leader_id = BrokerId(-1);
                            }
                        }
                        mp.replica_nodes = vec![node];
                        mp.isr_nodes = vec![node];
                        mp
                    })
                    .collect();
            }
            None => {
                t.error_code = match create_errors.get(&name) {
                    Some(0) => ResponseError::LeaderNotAvailable.code(),
                    Some(c) => *c,
                    None => ResponseError::UnknownTopicOrPartition.code(),
                };
            }
        }
        resp.topics.push(t);
    }
    resp
}
