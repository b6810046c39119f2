//! DescribeTopicPartitions (KIP-966's paginated topic description, used by
//! admin clients instead of Metadata): topics in name order, at most
//! `response_partition_limit` partitions per answer, and a cursor naming the
//! next partition when more remain. Like Metadata, this gateway is the single
//! replica and leader of every partition.

use crate::dispatch::Ctx;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;
use kafscale_controlplane::metadata::topic_uuid;
use kafscale_controlplane::offsets_topic::is_internal;

/// Answers DescribeTopicPartitions.
pub fn handle(
    ctx: &Ctx<'_>,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let snap = ctx.view.snapshot();
    let node = BrokerId(ctx.cfg.node_id);
    let explicit = !req.topics.is_empty();
    let mut names: Vec<String> = if explicit {
        req.topics.iter().map(|t| t.name.to_string()).collect()
    } else {
        snap.topics
            .keys()
            .filter(|n| ctx.allowed_on_topic(acl::op::DESCRIBE, n))
            .cloned()
            .collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &req.cursor {
        Some(c) => (c.topic_name.to_string(), c.partition_index.max(0)),
        None => (String::new(), 0),
    };
    let mut budget = req.response_partition_limit.max(1);
    let mut resp = DescribeTopicPartitionsResponse::default();
    for name in names.into_iter().filter(|n| *n >= start_topic) {
        let first = if name == start_topic {
            start_partition
        } else {
            0
        };
        if budget == 0 {
            resp.next_cursor = Some(cursor(&name, first));
            break;
        }
        let mut t = DescribeTopicPartitionsResponseTopic::default();
        t.name = Some(StrBytes::from_string(name.clone()).into());
        let topic = snap.topics.get(&name);
        let topic = match topic {
            // All-topic listings hold only describable topics already.
            _ if explicit && !ctx.allowed_on_topic(acl::op::DESCRIBE, &name) => {
                t.error_code = ResponseError::TopicAuthorizationFailed.code();
                None
            }
            None => {
                t.error_code = ResponseError::UnknownTopicOrPartition.code();
                None
            }
            Some(topic) => Some(topic),
        };
        let Some(topic) = topic else {
            resp.topics.push(t);
            continue;
        };
        let id = topic_uuid(topic);
        t.topic_id = id;
        t.is_internal = is_internal(&name);
        t.topic_authorized_operations = ctx.authorized_operations(acl::resource::TOPIC, &name);
        for p in first..topic.partitions {
            if budget == 0 {
                resp.next_cursor = Some(cursor(&name, p));
                break;
            }
            budget -= 1;
            let mut dp = DescribeTopicPartitionsResponsePartition::default();
            dp.partition_index = p;
            match snap.assignments.get(&(id, p)) {
                Some(a) => {
                    dp.leader_id = node;
                    dp.leader_epoch = a.epoch as i32;
                }
                None => {
                    dp.error_code = ResponseError::LeaderNotAvailable.code();
                    dp.leader_id = BrokerId(-1);
                    dp.leader_epoch = -1;
                }
            }
            dp.replica_nodes = vec![node];
            dp.isr_nodes = vec![node];
            dp.eligible_leader_replicas = Some(Vec::new());
            dp.last_known_elr = Some(Vec::new());
            t.partitions.push(dp);
        }
        resp.topics.push(t);
        if resp.next_cursor.is_some() {
            break;
        }
    }
    resp
}

fn cursor(topic: &str, partition: i32) -> Cursor {
    let mut c = Cursor::default();
    c.topic_name = StrBytes::from_string(topic.to_string()).into();
    c.partition_index = partition;
    c
}
