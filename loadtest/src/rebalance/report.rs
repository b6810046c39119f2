//! Report of `--mode rebalance`: text and JSON, in the style of the
//! produce/consume report (same envelope: tool, version, run id, config,
//! results, failures, ok).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::tracker::RoundTimes;
use crate::report::{duration_ms, errors_line, format_ms, DurationSummary, Envelope, Verdict};
use crate::trickle::TrickleOutcome;

/// What the rebalance figures mean.
pub const REBALANCE_DEFINITION: &str = "join = from the extra member's subscribe() call; \
     leave = from the moment the extra member starts closing; assigned = until every member \
     holds its new assignment (complete, disjoint, balanced); settled = until, in addition, \
     every member has consumed a record since the round started and since its last assignment \
     change; times are taken in the members' rebalance callbacks and poll loops";

/// Effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct RebalanceConfig {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic name.
    pub topic: String,
    /// Partitions of the topic as seen in metadata.
    pub partitions: usize,
    /// Consumer group.
    pub group_id: String,
    /// Members of the settled group before the extra member joins.
    pub members: u32,
    /// Repetitions requested.
    pub repeat: u32,
    /// `partition.assignment.strategy`.
    pub assignor: String,
    /// `eager` or `cooperative`.
    pub protocol: String,
    /// Background records/s per partition.
    pub trickle_rate_per_partition: f64,
    /// Record value size of the background records.
    pub record_size: u64,
    /// How repetitions are arranged.
    pub repetition_method: &'static str,
    /// `--consumer-prop` settings (e.g. session and heartbeat timing).
    pub consumer_props: BTreeMap<String, String>,
    /// Safety timeout in seconds.
    pub timeout_secs: u64,
}

/// Times of one round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundReport {
    /// Until every member held its new assignment.
    pub assigned_ms: f64,
    /// Until, in addition, every member consumed a record.
    pub settled_ms: f64,
    /// Partitions per member when the round settled, by member id.
    pub assignment_sizes: Vec<usize>,
}

impl From<&RoundTimes> for RoundReport {
    fn from(t: &RoundTimes) -> Self {
        Self {
            assigned_ms: duration_ms(t.assigned),
            settled_ms: duration_ms(t.settled),
            assignment_sizes: t.assignment_sizes.values().copied().collect(),
        }
    }
}

/// One join + leave repetition.
#[derive(Debug, Clone, Serialize)]
pub struct Repetition {
    /// 1-based repetition number.
    pub repetition: u32,
    /// Id of the extra member (client id `kafscale-loadtest-m<id>`).
    pub member_id: usize,
    /// Join round; `None` when it did not settle.
    pub join: Option<RoundReport>,
    /// Leave round; `None` when it did not settle (or the join did not).
    pub leave: Option<RoundReport>,
}

/// Background producer counts.
#[derive(Debug, Clone, Serialize)]
pub struct TrickleReport {
    /// Records handed to the client.
    pub sent: u64,
    /// Records acknowledged.
    pub acked: u64,
    /// Records whose delivery failed.
    pub failed: u64,
    /// Records skipped (client queue full or sender behind schedule).
    pub skipped: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
}

impl From<TrickleOutcome> for TrickleReport {
    fn from(t: TrickleOutcome) -> Self {
        Self {
            sent: t.sent,
            acked: t.acked,
            failed: t.failed,
            skipped: t.skipped,
            errors: t.errors,
        }
    }
}

/// Complete report of a rebalance run.
#[derive(Debug, Clone, Serialize)]
pub struct RebalanceReport {
    /// Tool, version and run id.
    #[serde(flatten)]
    pub run: Envelope,
    /// Always `rebalance`.
    pub mode: &'static str,
    /// What the figures mean.
    pub definition: &'static str,
    /// Effective configuration.
    pub config: RebalanceConfig,
    /// Formation of the initial group (from the first subscribe; includes
    /// the broker's initial rebalance delay). Not part of the statistics.
    pub initial: Option<RoundReport>,
    /// Every repetition.
    pub repetitions: Vec<Repetition>,
    /// Join, until all assigned.
    pub join_assigned_ms: Option<DurationSummary>,
    /// Join, until all assigned and consuming.
    pub join_settled_ms: Option<DurationSummary>,
    /// Leave, until all assigned.
    pub leave_assigned_ms: Option<DurationSummary>,
    /// Leave, until all assigned and consuming.
    pub leave_settled_ms: Option<DurationSummary>,
    /// Background producer.
    pub trickle: TrickleReport,
    /// Member client and rebalance errors by kind (informational).
    pub errors: BTreeMap<String, u64>,
    /// Whether the run passed, and why not.
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl RebalanceReport {
    /// Assembles the report; summaries and `ok` are derived.
    pub fn new(
        run_id: u64,
        config: RebalanceConfig,
        initial: Option<RoundReport>,
        repetitions: Vec<Repetition>,
        trickle: TrickleReport,
        errors: BTreeMap<String, u64>,
        mut failures: Vec<String>,
    ) -> Self {
        let summary = |f: &dyn Fn(&Repetition) -> Option<f64>| {
            DurationSummary::from_ms(&repetitions.iter().filter_map(f).collect::<Vec<_>>())
        };
        let join_assigned_ms = summary(&|r| r.join.as_ref().map(|j| j.assigned_ms));
        let join_settled_ms = summary(&|r| r.join.as_ref().map(|j| j.settled_ms));
        let leave_assigned_ms = summary(&|r| r.leave.as_ref().map(|l| l.assigned_ms));
        let leave_settled_ms = summary(&|r| r.leave.as_ref().map(|l| l.settled_ms));
        let done = repetitions.iter().filter(|r| r.leave.is_some()).count();
        if failures.is_empty() && done < config.repeat as usize {
            failures.push(format!("{done} of {} repetitions completed", config.repeat));
        }
        if trickle.failed > 0 {
            failures.push(format!("{} background deliveries failed", trickle.failed));
        }
        Self {
            run: Envelope::new(run_id),
            mode: "rebalance",
            definition: REBALANCE_DEFINITION,
            config,
            initial,
            repetitions,
            join_assigned_ms,
            join_settled_ms,
            leave_assigned_ms,
            leave_settled_ms,
            trickle,
            errors,
            verdict: Verdict::new(failures),
        }
    }

    /// Human-readable multi-line report.
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let n = c.members;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "kafscale-loadtest {} run {} mode=rebalance",
            self.run.version, self.run.run_id
        );
        let _ = writeln!(
            out,
            "  bootstrap={} topic={} partitions={} group={}",
            c.bootstrap, c.topic, c.partitions, c.group_id
        );
        let _ = writeln!(
            out,
            "  members={n}+1 repeat={} assignor={} protocol={} trickle={} records/s per partition \
             record_size={} B",
            c.repeat, c.assignor, c.protocol, c.trickle_rate_per_partition, c.record_size
        );
        let props: Vec<String> = c
            .consumer_props
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "  consumer props: {}",
            if props.is_empty() {
                "(librdkafka defaults)".to_string()
            } else {
                props.join(" ")
            }
        );
        let _ = writeln!(out, "  repetitions: {}", c.repetition_method);
        match &self.initial {
            Some(i) => {
                let _ = writeln!(
                    out,
                    "initial group of {n}: assigned {}  settled {}",
                    format_ms(i.assigned_ms),
                    format_ms(i.settled_ms)
                );
            }
            None => {
                let _ = writeln!(out, "initial group of {n}: did not settle");
            }
        }
        let _ = writeln!(
            out,
            "  rep  join assigned    join settled     leave assigned   leave settled    sizes after join"
        );
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), format_ms);
        for r in &self.repetitions {
            let sizes = r.join.as_ref().map_or_else(String::new, |j| {
                j.assignment_sizes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("/")
            });
            let _ = writeln!(
                out,
                "  {:>3}  {:<16} {:<16} {:<16} {:<16} {sizes}",
                r.repetition,
                cell(r.join.as_ref().map(|j| j.assigned_ms)),
                cell(r.join.as_ref().map(|j| j.settled_ms)),
                cell(r.leave.as_ref().map(|l| l.assigned_ms)),
                cell(r.leave.as_ref().map(|l| l.settled_ms)),
            );
        }
        let rows = [
            ("join  assigned", &self.join_assigned_ms),
            ("join  settled ", &self.join_settled_ms),
            ("leave assigned", &self.leave_assigned_ms),
            ("leave settled ", &self.leave_settled_ms),
        ];
        for (name, s) in rows {
            let _ = writeln!(
                out,
                "{name}  {}",
                s.as_ref()
                    .map_or_else(|| "n/a (no samples)".to_string(), DurationSummary::to_line)
            );
        }
        let t = &self.trickle;
        let _ = writeln!(
            out,
            "trickle: sent {}  acked {}  failed {}  skipped {}  errors {}",
            t.sent,
            t.acked,
            t.failed,
            t.skipped,
            errors_line(&t.errors)
        );
        let _ = writeln!(out, "errors: {}", errors_line(&self.errors));
        let _ = writeln!(out, "notes: {REBALANCE_DEFINITION}");
        crate::report::write_result(&mut out, &self.verdict);
        out
    }
}

crate::run_report!(RebalanceReport);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RunReport;

    fn config() -> RebalanceConfig {
        RebalanceConfig {
            bootstrap: "b".into(),
            topic: "t".into(),
            partitions: 48,
            group_id: "g".into(),
            members: 4,
            repeat: 2,
            assignor: "range".into(),
            protocol: "eager".into(),
            trickle_rate_per_partition: 10.0,
            record_size: 1024,
            repetition_method: "x",
            consumer_props: BTreeMap::new(),
            timeout_secs: 60,
        }
    }

    fn round(a: f64, s: f64) -> Option<RoundReport> {
        Some(RoundReport {
            assigned_ms: a,
            settled_ms: s,
            assignment_sizes: vec![10, 10, 10, 9, 9],
        })
    }

    fn trickle(failed: u64) -> TrickleReport {
        TrickleReport {
            sent: 10,
            acked: 10 - failed,
            failed,
            skipped: 0,
            errors: BTreeMap::new(),
        }
    }

    #[test]
    fn summaries_text_and_json() {
        let reps = vec![
            Repetition {
                repetition: 1,
                member_id: 5,
                join: round(100.0, 120.0),
                leave: round(50.0, 60.0),
            },
            Repetition {
                repetition: 2,
                member_id: 6,
                join: round(300.0, 330.0),
                leave: round(70.0, 80.0),
            },
        ];
        let r = RebalanceReport::new(
            1,
            config(),
            round(3000.0, 3010.0),
            reps,
            trickle(0),
            BTreeMap::new(),
            Vec::new(),
        );
        assert!(r.verdict.ok, "{:?}", r.verdict.failures);
        let j = r.join_settled_ms.as_ref().expect("summary");
        assert_eq!((j.min_ms, j.median_ms, j.max_ms), (120.0, 225.0, 330.0));
        let text = r.to_text();
        assert!(text.contains("members=4+1"), "{text}");
        assert!(text.contains("10/10/10/9/9"), "{text}");
        assert!(text.contains("join  settled   min 120.000 ms"), "{text}");
        assert!(text.ends_with("result: OK\n"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&r.json().expect("json")).expect("valid");
        assert_eq!(json["mode"], "rebalance");
        assert_eq!(json["repetitions"][1]["join"]["settled_ms"], 330.0);
        assert_eq!(json["leave_assigned_ms"]["max_ms"], 70.0);
    }

    #[test]
    fn incomplete_runs_fail() {
        let reps = vec![Repetition {
            repetition: 1,
            member_id: 5,
            join: round(1.0, 2.0),
            leave: None,
        }];
        let r = RebalanceReport::new(
            1,
            config(),
            round(1.0, 1.0),
            reps,
            trickle(1),
            BTreeMap::new(),
            Vec::new(),
        );
        assert!(!r.verdict.ok);
        assert_eq!(
            r.verdict.failures,
            vec![
                "0 of 2 repetitions completed".to_string(),
                "1 background deliveries failed".to_string()
            ]
        );
    }
}
