//! DescribeLogDirs and AlterReplicaLogDirs. Every partition lives in one
//! "log dir": the object store, named [`LOG_DIR`]. Sizes come from the
//! partitions' owners; moving a replica to the directory it is in is a
//! no-op, any other directory does not exist.

use crate::dispatch::Ctx;
use crate::router::{partition_ref, Retry};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafscale_controlplane::acl;

/// The name of the single log directory.
pub const LOG_DIR: &str = "object-store";

/// Answers DescribeLogDirs with the stored bytes of every requested (or
/// every) partition.
pub async fn describe(ctx: &Ctx<'_>, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    if !ctx.allowed_on_cluster(acl::op::DESCRIBE) {
        // Kafka answers an unauthorized caller with no log dirs.
        let mut resp = DescribeLogDirsResponse::default();
        if ctx.version >= 3 {
            resp.error_code = ResponseError::ClusterAuthorizationFailed.code();
        }
        return resp;
    }
    let snap = ctx.view.snapshot();
    let wanted: Vec<(String, Vec<i32>)> = match req.topics {
        Some(ts) => ts
            .into_iter()
            .map(|t| (t.topic.to_string(), t.partitions))
            .collect(),
        None => {
            let mut all: Vec<_> = snap
                .topics
                .values()
                .map(|t| (t.name.clone(), (0..t.partitions).collect()))
                .collect();
            all.sort();
            all
        }
    };
    let mut parts = Vec::new();
    for (name, ps) in &wanted {
        let Some(t) = snap.topics.get(name) else {
            continue;
        };
        for &p in ps.iter().filter(|&&p| p >= 0 && p < t.partitions) {
            parts.push(((name.clone(), p), partition_ref(t, p)));
        }
    }
    let sizes = ctx
        .router
        .fan_out(
            parts,
            Retry::MovesAndFailures,
            crate::unary_parts!(partition_sizes, PartitionSizesRequest {}),
        )
        .await;
    let mut dir = DescribeLogDirsResult::default();
    dir.log_dir = StrBytes::from_static_str(LOG_DIR);
    if ctx.version >= 4 {
        // Object storage has no volume size.
        dir.total_bytes = -1;
        dir.usable_bytes = -1;
    }
    for ((name, p), size) in sizes {
        let Some(size) = size.ok().filter(|s| s.error_code == 0) else {
            continue;
        };
        if dir.topics.last().map(|t| t.name.as_str()) != Some(name.as_str()) {
            let mut t = DescribeLogDirsTopic::default();
            t.name = TopicName(StrBytes::from_string(name.clone()));
            dir.topics.push(t);
        }
        let mut dp = DescribeLogDirsPartition::default();
        dp.partition_index = p;
        dp.partition_size = size.size_bytes;
        if let Some(t) = dir.topics.last_mut() {
            t.partitions.push(dp);
        }
    }
    let mut resp = DescribeLogDirsResponse::default();
    resp.results = vec![dir];
    resp
}

/// Answers AlterReplicaLogDirs: [`LOG_DIR`] is where every replica already is.
pub fn alter(ctx: &Ctx<'_>, req: AlterReplicaLogDirsRequest) -> AlterReplicaLogDirsResponse {
    let snap = ctx.view.snapshot();
    let authorized = ctx.allowed_on_cluster(acl::op::ALTER);
    let mut resp = AlterReplicaLogDirsResponse::default();
    for d in req.dirs {
        for t in d.topics {
            let mut tr = AlterReplicaLogDirTopicResult::default();
            tr.topic_name = t.name.clone();
            let topic = snap.topics.get(t.name.as_str());
            for p in t.partitions {
                let mut pr = AlterReplicaLogDirPartitionResult::default();
                pr.partition_index = p;
                pr.error_code = match topic {
                    _ if !authorized => ResponseError::ClusterAuthorizationFailed.code(),
                    Some(tp) if p >= 0 && p < tp.partitions => {
                        if d.path.as_str() == LOG_DIR {
                            0
                        } else {
                            ResponseError::LogDirNotFound.code()
                        }
                    }
                    _ => ResponseError::UnknownTopicOrPartition.code(),
                };
                tr.partitions.push(pr);
            }
            resp.results.push(tr);
        }
    }
    resp
}
