//! How long and how much of a partition's log is kept, and how it is cut
//! into segments: the topic's `segment.bytes`, `segment.ms`, `retention.ms`,
//! `retention.bytes` and `cleanup.policy`, falling back to the broker-wide
//! defaults (`KAFSCALE_LOG_*`). One resolution, used by the workers that
//! enforce it and the gateways that describe it.

use std::collections::HashMap;

/// Broker-wide defaults of the log settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogDefaults {
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
}

impl LogDefaults {
    /// Segment size default: 64 MiB. Smaller than Kafka's 1 GiB on
    /// purpose: a segment here is what compaction writes in one PUT, and a
    /// WAL object can be deleted only once all of its partitions are
    /// compacted, so smaller segments keep WAL garbage and recovery short.
    pub const SEGMENT_BYTES: i64 = 64 << 20;
    /// Segment roll default: 10 minutes (see [`Self::SEGMENT_BYTES`]).
    pub const SEGMENT_MS: i64 = 10 * 60 * 1000;
    /// Kafka's: 7 days.
    pub const RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;
    /// Kafka's: unlimited.
    pub const RETENTION_BYTES: i64 = -1;
    /// Kafka's `delete.retention.ms`: tombstones stay a day.
    pub const DELETE_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
    /// Kafka's `min.compaction.lag.ms`: records may be cleaned at once.
    pub const MIN_COMPACTION_LAG_MS: i64 = 0;
    /// Kafka's `min.cleanable.dirty.ratio`.
    pub const MIN_CLEANABLE_DIRTY_RATIO: f64 = 0.5;
}

impl Default for LogDefaults {
    fn default() -> Self {
        Self {
            segment_bytes: Self::SEGMENT_BYTES,
            segment_ms: Self::SEGMENT_MS,
            retention_ms: Self::RETENTION_MS,
            retention_bytes: Self::RETENTION_BYTES,
        }
    }
}

/// The effective log settings of one topic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogPolicy {
    /// A segment is cut once this many bytes wait to be compacted.
    pub segment_bytes: u64,
    /// ... or once the oldest waiting record is this old.
    pub segment_ms: i64,
    /// Segments whose newest record is older are deleted; `None`: forever.
    pub retention_ms: Option<i64>,
    /// Oldest segments are deleted while the log is larger; `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// `cleanup.policy` includes `delete` (time and size retention apply).
    pub delete: bool,
    /// `cleanup.policy` includes `compact`.
    pub compact: bool,
    /// Key compaction keeps a tombstone this long (by its batch's newest
    /// timestamp) once it has been through one cleaning pass.
    pub delete_retention_ms: i64,
    /// Key compaction leaves records younger than this alone.
    pub min_compaction_lag_ms: i64,
    /// Key compaction runs once this share of the log is dirty (written
    /// since the last pass).
    pub min_cleanable_dirty_ratio: f64,
}

impl LogPolicy {
    /// Resolves a topic's configs against the broker defaults.
    pub fn of(configs: &HashMap<String, String>, d: &LogDefaults) -> Self {
        let num = |k: &str, default: i64| {
            configs
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(default)
        };
        let policy = configs
            .get("cleanup.policy")
            .map(String::as_str)
            .unwrap_or("delete");
        let has = |p: &str| policy.split(',').any(|x| x.trim() == p);
        let non_negative = |v: i64| u64::try_from(v).ok();
        Self {
            segment_bytes: non_negative(num("segment.bytes", d.segment_bytes))
                .unwrap_or(d.segment_bytes as u64)
                .max(1),
            segment_ms: num("segment.ms", d.segment_ms).max(1),
            retention_ms: Some(num("retention.ms", d.retention_ms)).filter(|v| *v >= 0),
            retention_bytes: non_negative(num("retention.bytes", d.retention_bytes)),
            delete: has("delete"),
            compact: has("compact"),
            delete_retention_ms: num("delete.retention.ms", LogDefaults::DELETE_RETENTION_MS)
                .max(0),
            min_compaction_lag_ms: num("min.compaction.lag.ms", LogDefaults::MIN_COMPACTION_LAG_MS)
                .max(0),
            min_cleanable_dirty_ratio: configs
                .get("min.cleanable.dirty.ratio")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|r| (0.0..=1.0).contains(r))
                .unwrap_or(LogDefaults::MIN_CLEANABLE_DIRTY_RATIO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_configs_override_the_broker_defaults() {
        let d = LogDefaults::default();
        let p = LogPolicy::of(&HashMap::new(), &d);
        assert_eq!(p.segment_bytes, 64 << 20);
        assert_eq!(p.retention_ms, Some(LogDefaults::RETENTION_MS));
        assert_eq!(p.retention_bytes, None);
        assert!(p.delete && !p.compact);
        let configs = HashMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("retention.bytes".to_string(), "1000".to_string()),
            ("segment.bytes".to_string(), "4096".to_string()),
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
        ]);
        let p = LogPolicy::of(&configs, &d);
        assert_eq!(p.retention_ms, None, "retention.ms=-1 keeps data forever");
        assert_eq!(p.retention_bytes, Some(1000));
        assert_eq!(p.segment_bytes, 4096);
        assert!(p.delete && p.compact);
        assert_eq!(p.delete_retention_ms, LogDefaults::DELETE_RETENTION_MS);
        assert_eq!(p.min_cleanable_dirty_ratio, 0.5);
    }
}
