//! The internal topic `__consumer_offsets`: one partition per group
//! coordinator slot. Its partitions are assigned to workers like any other,
//! so the owner of a slot's partition is the coordinator of the slot's groups.

use crate::metadata::{MetaError, Metadata};
use kafscale_proto::metadata::v1::Topic;
use std::collections::HashMap;

/// Name of the coordinator log topic (Kafka's name, so tools recognise it).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The coordinator slot of `group` among `slots`: Kafka's
/// `abs(groupId.hashCode) % partitions`, with Java's UTF-16 string hash.
pub fn slot_of(group: &str, slots: i32) -> i32 {
    let h = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % slots.max(1)
}

/// True for topics clients may not produce to or delete.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC
}

impl Metadata {
    /// Creates the coordinator log topic with `slots` partitions unless it
    /// exists (an existing topic keeps its partition count: changing it
    /// would move every group).
    pub async fn ensure_offsets_topic(&self, slots: i32) -> Result<Topic, MetaError> {
        if let Some(t) = self.get_topic(OFFSETS_TOPIC).await? {
            return Ok(t);
        }
        let configs = HashMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        match self
            .create_topic(OFFSETS_TOPIC, slots.max(1), configs)
            .await
        {
            Ok(t) => Ok(t),
            Err(MetaError::TopicExists(_)) => self
                .get_topic(OFFSETS_TOPIC)
                .await?
                .ok_or_else(|| MetaError::UnknownTopic(OFFSETS_TOPIC.into())),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_kafka() {
        // Java: "my-group".hashCode() == -1_906_497_762 → abs % 50 == 12.
        assert_eq!(slot_of("my-group", 50), 12);
        assert_eq!(slot_of("", 50), 0);
        for g in ["a", "consumer-group-1", "ünïcode"] {
            assert!((0..50).contains(&slot_of(g, 50)));
        }
    }
}
