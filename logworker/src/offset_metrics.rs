//! Consumer progress and the compaction backlog as Prometheus series, read
//! from the worker's state at each scrape:
//! - `kafscale_consumer_group_committed_offset{group,topic,partition}`: the
//!   committed offsets of the groups this worker coordinates;
//! - `kafscale_partition_high_watermark{topic,partition}`: the high
//!   watermarks of the partitions it owns;
//! - `kafscale_consumer_group_lag{group,topic,partition}`: high watermark
//!   minus committed offset, for the committed partitions this worker also
//!   owns (all of them in `kafscale dev`);
//! - `kafscale_partition_uncompacted_bytes{topic,partition}`: the bytes of
//!   the partitions it owns still in WAL objects, waiting for compaction (a
//!   backlog that keeps growing means compaction falls behind the produce,
//!   and WAL objects pile up until it catches up).
//!
//! A group's coordinator and its partitions' owners are often different
//! workers, so lag across a cluster is the join of the first two series
//! (`docs/architecture.md`, metrics; the Grafana dashboard does it); the
//! third is that join done here where both halves are local.

use crate::worker::Worker;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};
use std::collections::HashMap;
use std::sync::Weak;

/// The internal topic of the coordinator log (not a consumer's partition).
const INTERNAL_TOPIC: &str = "__consumer_offsets";

/// Collects the offset series from a worker (nothing once it is gone).
pub struct OffsetMetrics {
    worker: Weak<Worker>,
    descs: Vec<Desc>,
}

fn committed_vec() -> IntGaugeVec {
    gauge(
        "kafscale_consumer_group_committed_offset",
        "Committed offset per group and partition (on the group's coordinator)",
        &["group", "topic", "partition"],
    )
}

fn high_watermark_vec() -> IntGaugeVec {
    gauge(
        "kafscale_partition_high_watermark",
        "High watermark per partition (on the partition's owner)",
        &["topic", "partition"],
    )
}

fn uncompacted_vec() -> IntGaugeVec {
    gauge(
        "kafscale_partition_uncompacted_bytes",
        "Bytes per partition in WAL objects waiting for compaction (on the partition's owner)",
        &["topic", "partition"],
    )
}

fn lag_vec() -> IntGaugeVec {
    gauge(
        "kafscale_consumer_group_lag",
        "High watermark minus committed offset, where coordinator and partition owner are this worker",
        &["group", "topic", "partition"],
    )
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    // The names and labels are constants: construction cannot fail.
    IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl OffsetMetrics {
    /// A collector reading `worker`'s state.
    pub fn new(worker: Weak<Worker>) -> Self {
        let descs = [
            committed_vec(),
            high_watermark_vec(),
            lag_vec(),
            uncompacted_vec(),
        ]
        .iter()
        .flat_map(|v| v.desc().into_iter().cloned())
        .collect();
        Self { worker, descs }
    }
}

impl Collector for OffsetMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (committed, hwm, lag, uncompacted) = (
            committed_vec(),
            high_watermark_vec(),
            lag_vec(),
            uncompacted_vec(),
        );
        if let Some(w) = self.worker.upgrade() {
            let mut watermarks: HashMap<(&str, i32), i64> = HashMap::new();
            let logs: Vec<_> = w.partitions.iter().map(|p| p.value().clone()).collect();
            for log in &logs {
                if log.topic == INTERNAL_TOPIC {
                    continue;
                }
                let h = log.high_watermark();
                let labels = [log.topic.as_str(), &log.id.partition.to_string()];
                hwm.with_label_values(&labels).set(h);
                let waiting = i64::try_from(log.uncompacted().bytes).unwrap_or(i64::MAX);
                uncompacted.with_label_values(&labels).set(waiting);
                watermarks.insert((log.topic.as_str(), log.id.partition), h);
            }
            for c in w.groups.committed_offsets() {
                let partition = c.partition.to_string();
                let labels = [c.group.as_str(), c.topic.as_str(), partition.as_str()];
                committed.with_label_values(&labels).set(c.offset);
                if let Some(h) = watermarks.get(&(c.topic.as_str(), c.partition)) {
                    lag.with_label_values(&labels).set((h - c.offset).max(0));
                }
            }
        }
        [committed, hwm, lag, uncompacted]
            .iter()
            .flat_map(Collector::collect)
            .collect()
    }
}
