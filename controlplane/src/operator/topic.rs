//! Reconciles a `KafscaleTopic` into the metadata store of its cluster: the
//! topic is created with the spec's partitions and configs, grows when the
//! partition count grows (a shrink is refused, as Kafka refuses it), and
//! takes the spec's configs as its full set of overrides. Invalid configs
//! are refused with the same check CreateTopics uses, and nothing changes.
//!
//! A finalizer (`kafscale.io/topic`) makes deletion explicit: with
//! `deletionPolicy: Delete` the topic is deleted with the resource; with
//! `Retain` (the default) the topic and its data stay.

use super::crd::{DeletionPolicy, KafscaleCluster, KafscaleTopic, KafscaleTopicStatus};
use super::{Context, OperatorError};
use crate::metadata::topic_uuid;
use crate::MetaError;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::ResourceExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The finalizer the operator puts on every KafscaleTopic.
pub const TOPIC_FINALIZER: &str = "kafscale.io/topic";

/// What reconciling a topic came to.
struct Outcome {
    ready: bool,
    reason: &'static str,
    message: String,
    /// The topic's id and partition count.
    topic: Option<(String, i32)>,
}

impl Outcome {
    fn not_ready(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
            topic: None,
        }
    }
}

async fn cluster_of(
    t: &KafscaleTopic,
    ctx: &Context,
) -> Result<Option<KafscaleCluster>, OperatorError> {
    let ns = t.namespace().ok_or(OperatorError::Unnamespaced)?;
    let clusters: Api<KafscaleCluster> = Api::namespaced(ctx.client.clone(), &ns);
    Ok(clusters.get_opt(&t.spec.cluster_ref).await?)
}

async fn converge(t: &KafscaleTopic, ctx: &Context) -> Result<Outcome, OperatorError> {
    let Some(cluster) = cluster_of(t, ctx).await? else {
        return Ok(Outcome::not_ready(
            "ClusterNotFound",
            format!(
                "no KafscaleCluster {:?} in this namespace",
                t.spec.cluster_ref
            ),
        ));
    };
    for (k, v) in &t.spec.configs {
        if let Err(e) = crate::topic_config::validate(k, v) {
            return Ok(Outcome::not_ready("InvalidConfig", e));
        }
    }
    if t.spec.partitions < 1 {
        return Ok(Outcome::not_ready(
            "InvalidPartitions",
            "spec.partitions must be at least 1".into(),
        ));
    }
    let meta = match ctx.metadata(&cluster).await {
        Ok(m) => m,
        Err(e) => return Ok(Outcome::not_ready("MetadataUnreachable", e.to_string())),
    };
    let name = t.topic_name();
    let configs: HashMap<String, String> = t.spec.configs.clone().into_iter().collect();
    let topic = match meta.get_topic(&name).await? {
        None => match meta
            .create_topic(&name, t.spec.partitions, configs.clone())
            .await
        {
            Ok(created) => created,
            // Created meanwhile (by a client or a concurrent reconcile).
            Err(MetaError::TopicExists(_)) => meta
                .get_topic(&name)
                .await?
                .ok_or(MetaError::UnknownTopic(name.clone()))?,
            Err(e) => return Err(e.into()),
        },
        Some(existing) => existing,
    };
    if t.spec.partitions < topic.partitions {
        return Ok(Outcome {
            ready: false,
            reason: "CannotShrink",
            message: format!(
                "the topic has {} partitions; the count can only grow",
                topic.partitions
            ),
            topic: Some((topic_uuid(&topic).to_string(), topic.partitions)),
        });
    }
    let topic = if t.spec.partitions > topic.partitions || topic.configs != configs {
        meta.update_topic(&name, |cur| {
            cur.partitions = cur.partitions.max(t.spec.partitions);
            cur.configs = configs.clone();
            Ok(())
        })
        .await?
    } else {
        topic
    };
    Ok(Outcome {
        ready: true,
        reason: "TopicReady",
        message: format!("{name}: {} partitions", topic.partitions),
        topic: Some((topic_uuid(&topic).to_string(), topic.partitions)),
    })
}

async fn write_status(t: &KafscaleTopic, ctx: &Context, o: &Outcome) -> Result<(), OperatorError> {
    let status_str = if o.ready { "True" } else { "False" };
    let previous = t
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let last_transition_time = match previous {
        Some(p) if p.status == status_str => p.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    let status = KafscaleTopicStatus {
        observed_generation: t.metadata.generation,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status_str.into(),
            reason: o.reason.into(),
            message: o.message.clone(),
            observed_generation: t.metadata.generation,
            last_transition_time,
        }],
        topic_id: o.topic.as_ref().map(|(id, _)| id.clone()),
        partitions: o.topic.as_ref().map(|(_, n)| *n),
    };
    if t.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let ns = t.namespace().ok_or(OperatorError::Unnamespaced)?;
    let api: Api<KafscaleTopic> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &t.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}

async fn apply_topic(t: Arc<KafscaleTopic>, ctx: &Context) -> Result<Action, OperatorError> {
    let outcome = converge(&t, ctx).await?;
    write_status(&t, ctx, &outcome).await?;
    Ok(if outcome.ready {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(15))
    })
}

async fn cleanup_topic(t: Arc<KafscaleTopic>, ctx: &Context) -> Result<Action, OperatorError> {
    if t.spec.deletion_policy.unwrap_or_default() == DeletionPolicy::Delete {
        // A cluster that is gone has nothing left to delete.
        if let Some(cluster) = cluster_of(&t, ctx).await? {
            let meta = ctx.metadata(&cluster).await?;
            match meta.delete_topic(&t.topic_name()).await {
                Ok(_) | Err(MetaError::UnknownTopic(_)) => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(topic = %t.topic_name(), "topic deleted with its KafscaleTopic");
        }
    }
    Ok(Action::await_change())
}

/// One reconcile of a topic (finalizer first, then apply or cleanup).
pub async fn reconcile(t: Arc<KafscaleTopic>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    let ns = t.namespace().ok_or(OperatorError::Unnamespaced)?;
    let api: Api<KafscaleTopic> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, TOPIC_FINALIZER, t, |event| async {
        match event {
            Event::Apply(t) => apply_topic(t, &ctx).await,
            Event::Cleanup(t) => cleanup_topic(t, &ctx).await,
        }
    })
    .await
    .map_err(|e| OperatorError::Finalizer(Box::new(e)))
}
