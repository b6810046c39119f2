//! CreateTopics: validates names, partition counts and configs; keeps the
//! configs with the topic; honours validate_only.

use super::topics;
use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::MetaError;
use std::collections::HashMap;

/// Answers a CreateTopics request.
pub async fn handle(ctx: &Ctx<'_>, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        r.num_partitions = -1;
        r.replication_factor = -1;
        let partitions = if !t.assignments.is_empty() {
            t.assignments.len() as i32
        } else if t.num_partitions == -1 {
            ctx.cfg.auto_create_partitions
        } else {
            t.num_partitions
        };
        let mut configs = HashMap::new();
        let mut error: Option<(i16, String)> = None;
        if !ctx.may_create_topic(&name) {
            error = Some((
                ResponseError::TopicAuthorizationFailed.code(),
                "not authorized to create the topic".into(),
            ));
        } else if !topics::valid_name(&name) {
            error = Some((
                ResponseError::InvalidTopicException.code(),
                format!("invalid topic name '{name}'"),
            ));
        } else if partitions <= 0 {
            error = Some((
                ResponseError::InvalidPartitions.code(),
                "number of partitions must be positive".into(),
            ));
        } else if t.replication_factor == 0 || t.replication_factor < -1 {
            error = Some((
                ResponseError::InvalidReplicationFactor.code(),
                "replication factor must be positive".into(),
            ));
        } else if !t.assignments.is_empty()
            && (t.num_partitions != -1 || t.replication_factor != -1)
        {
            error = Some((
                ResponseError::InvalidRequest.code(),
                "with replica assignments, partitions and replication factor must be -1".into(),
            ));
        } else if t
            .assignments
            .iter()
            .any(|a| !super::replicas::is_single_replica(ctx, &a.broker_ids))
        {
            error = Some((
                ResponseError::InvalidReplicaAssignment.code(),
                "every partition has exactly one replica, the gateway's node".into(),
            ));
        }
        for c in &t.configs {
            let key = c.name.to_string();
            let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            if let Err(msg) = super::configs::validate(&key, &value) {
                error.get_or_insert((ResponseError::InvalidConfig.code(), msg));
            }
            configs.insert(key, value);
        }
        if error.is_none() && ctx.view.snapshot().topics.contains_key(&name) {
            error = Some((
                ResponseError::TopicAlreadyExists.code(),
                format!("topic '{name}' already exists"),
            ));
        }
        if error.is_none() && !req.validate_only {
            match ctx
                .view
                .meta()
                .create_topic(&name, partitions, configs)
                .await
            {
                Ok(topic) => {
                    if ctx.version >= 7 {
                        r.topic_id = kafscale_controlplane::metadata::topic_uuid(&topic);
                    }
                    topics::wait_assigned(ctx, &name, partitions).await;
                }
                Err(MetaError::TopicExists(_)) => {
                    error = Some((
                        ResponseError::TopicAlreadyExists.code(),
                        format!("topic '{name}' already exists"),
                    ));
                }
                Err(e) => error = Some((e.kafka_code(), e.to_string())),
            }
        }
        match error {
            Some((code, msg)) => {
                r.error_code = code;
                if ctx.version >= 1 {
                    r.error_message = Some(StrBytes::from_string(msg));
                }
            }
            None if ctx.version >= 5 => {
                r.num_partitions = partitions;
                r.replication_factor = if t.replication_factor == -1 {
                    1
                } else {
                    t.replication_factor
                };
            }
            None => {}
        }
        resp.topics.push(r);
    }
    resp
}
