//! Topic configs this system accepts, with Kafka's names and value rules:
//! the one check used by CreateTopics, IncrementalAlterConfigs and the
//! operator's `KafscaleTopic`. An invalid config is refused with
//! INVALID_CONFIG and changes nothing.

/// Checks one topic config; returns the reason it is rejected.
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    match key {
        "cleanup.policy" => {
            let mut policies = value.split(',').map(str::trim);
            if policies.all(|p| p == "delete" || p == "compact") && !value.trim().is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "cleanup.policy must be delete, compact or both, not '{value}'"
                ))
            }
        }
        "delete.retention.ms" | "min.compaction.lag.ms" => match value.parse::<i64>() {
            Ok(v) if v >= 0 => Ok(()),
            _ => Err(format!("config '{key}' must be a non-negative long")),
        },
        "min.cleanable.dirty.ratio" => match value.parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(format!("config '{key}' must be a double in [0, 1]")),
        },
        "message.timestamp.type" if value == "CreateTime" => Ok(()),
        "message.timestamp.type" => {
            Err("only message.timestamp.type=CreateTime is supported".into())
        }
        "max.message.bytes" | "min.insync.replicas" | "segment.bytes" => match value.parse::<i32>()
        {
            Ok(v) if v >= 0 => Ok(()),
            _ => Err(format!("config '{key}' must be a non-negative int")),
        },
        "retention.bytes" | "retention.ms" | "segment.ms" => match value.parse::<i64>() {
            Ok(v) if v >= -1 => Ok(()),
            _ => Err(format!("config '{key}' must be a long ≥ -1")),
        },
        _ => Err(format!("unknown topic config '{key}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn storage_configs_follow_kafkas_rules() {
        for (k, v) in [
            ("segment.bytes", "1048576"),
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
            ("cleanup.policy", "compact,delete"),
            ("delete.retention.ms", "0"),
        ] {
            assert_eq!(validate(k, v), Ok(()), "{k}={v}");
        }
        for (k, v) in [
            ("segment.bytes", "-5"),
            ("retention.ms", "-2"),
            ("segment.ms", "soon"),
            ("cleanup.policy", "shred"),
            ("cleanup.policy", ""),
            ("min.compaction.lag.ms", "-1"),
            ("no.such.config", "1"),
        ] {
            assert!(validate(k, v).is_err(), "{k}={v} accepted");
        }
    }
}
