//! DeleteTopics and CreatePartitions: topic lifecycle changes applied to
//! metadata; workers and the assigner follow through their watches.

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_controlplane::offsets_topic::is_internal;
use kafscale_controlplane::MetaError;

/// Answers DeleteTopics (by name, or by topic id from v6).
pub async fn delete_topics(ctx: &Ctx<'_>, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let snap = ctx.view.snapshot();
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = req
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    for t in &req.topics {
        let name = t
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .or_else(|| snap.topic_names.get(&t.topic_id).cloned());
        targets.push((name, t.topic_id));
    }
    let mut resp = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let mut r = DeletableTopicResult::default();
        r.name = name.clone().map(|n| TopicName(StrBytes::from_string(n)));
        if ctx.version >= 6 {
            r.topic_id = id;
        }
        if name
            .as_ref()
            .is_some_and(|n| !ctx.allowed_on_topic(acl::op::DELETE, n))
        {
            r.error_code = ResponseError::TopicAuthorizationFailed.code();
            resp.responses.push(r);
            continue;
        }
        let result = match &name {
            Some(n) if is_internal(n) => Err(MetaError::Invalid(format!("{n} is internal"))),
            Some(n) => ctx
                .view
                .meta()
                .delete_topic(n)
                .await
                .map(|t| topic_uuid(&t)),
            None => Err(MetaError::UnknownTopic(id.to_string())),
        };
        match result {
            Ok(deleted) => {
                if ctx.version >= 6 {
                    r.topic_id = deleted;
                }
            }
            Err(MetaError::UnknownTopic(_)) => {
                r.error_code = if name.is_none() {
                    ResponseError::UnknownTopicId.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
            }
            Err(e) => {
                r.error_code = match e {
                    MetaError::Invalid(_) => ResponseError::InvalidTopicException.code(),
                    _ => e.kafka_code(),
                };
                if ctx.version >= 5 {
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            }
        }
        resp.responses.push(r);
    }
    resp
}

/// Answers CreatePartitions: the count may only grow.
pub async fn create_partitions(
    ctx: &Ctx<'_>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        if !ctx.allowed_on_topic(acl::op::ALTER, &name) {
            r.error_code = ResponseError::TopicAuthorizationFailed.code();
            resp.results.push(r);
            continue;
        }
        let count = t.count;
        let result = if t.assignments.as_ref().is_some_and(|a| {
            a.iter()
                .any(|p| !super::replicas::is_single_replica(ctx, &p.broker_ids))
        }) {
            Err(MetaError::Invalid(
                "every partition has exactly one replica, the gateway's node".into(),
            ))
        } else if req.validate_only {
            match ctx.view.meta().get_topic(&name).await {
                Ok(Some(topic)) if count > topic.partitions => Ok(()),
                Ok(Some(topic)) => Err(MetaError::Invalid(format!(
                    "topic has {} partitions; the count can only grow",
                    topic.partitions
                ))),
                Ok(None) => Err(MetaError::UnknownTopic(name.clone())),
                Err(e) => Err(e),
            }
        } else {
            ctx.view
                .meta()
                .update_topic(&name, |topic| {
                    if count <= topic.partitions {
                        return Err(MetaError::Invalid(format!(
                            "topic has {} partitions; the count can only grow",
                            topic.partitions
                        )));
                    }
                    topic.partitions = count;
                    Ok(())
                })
                .await
                .map(|_| ())
        };
        if let Err(e) = result {
            r.error_code = match e {
                MetaError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition.code(),
                MetaError::Invalid(_) => ResponseError::InvalidPartitions.code(),
                _ => e.kafka_code(),
            };
            r.error_message = Some(StrBytes::from_string(e.to_string()));
        } else if !req.validate_only {
            super::topics::wait_assigned(ctx, &name, count).await;
        }
        resp.results.push(r);
    }
    resp
}
