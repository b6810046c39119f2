//! Topic name rules and auto-creation shared by Metadata and Produce.

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafscale_controlplane::MetaError;
use std::collections::HashMap;
use std::time::Duration;

/// Kafka's topic name rule: 1–249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Creates `name` with the default partition count if auto-creation is on
/// and the principal may create it;
/// waits briefly until its partitions are assigned. Returns the error code.
pub async fn auto_create(ctx: &Ctx<'_>, name: &str) -> i16 {
    if !ctx.cfg.auto_create_topics || !ctx.may_create_topic(name) {
        return ResponseError::UnknownTopicOrPartition.code();
    }
    if !valid_name(name) {
        return ResponseError::InvalidTopicException.code();
    }
    match ctx
        .view
        .meta()
        .create_topic(name, ctx.cfg.auto_create_partitions.max(1), HashMap::new())
        .await
    {
        Ok(_) | Err(MetaError::TopicExists(_)) => {}
        Err(e) => {
            tracing::warn!(topic = name, error = %e, "auto-create failed");
            return e.kafka_code();
        }
    }
    wait_assigned(ctx, name, 1).await;
    0
}

/// Waits (bounded) until the view shows `name` with at least `min_partitions`
/// partitions, every one of them with an owner.
pub async fn wait_assigned(ctx: &Ctx<'_>, name: &str, min_partitions: i32) {
    ctx.view
        .wait_for(Duration::from_secs(3), |s| match s.topics.get(name) {
            Some(t) if t.partitions >= min_partitions => {
                let id = kafscale_controlplane::metadata::topic_uuid(t);
                (0..t.partitions).all(|p| s.assignments.contains_key(&(id, p)))
            }
            _ => false,
        })
        .await;
}
