//! Report of `--mode commit`: text and JSON, in the style of the
//! produce/consume report (same envelope: tool, version, run id, config,
//! results, failures, ok).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::{errors_line, format_ms, Envelope, LatencySummary, Verdict};

/// What the commit figures mean.
pub const COMMIT_DEFINITION: &str = "a commit = one OffsetCommit of all of a committer's \
     partitions (offset k for commit k); sync latency = time in commit(CommitMode::Sync); async \
     latency = submission to commit callback; throughput = successful commits from the common \
     start to the last successful commit; offset fetch compares OffsetFetch with each \
     committer's last successful commit";

/// Effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct CommitConfig {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic name.
    pub topic: String,
    /// Partitions of the topic as seen in metadata.
    pub partitions: usize,
    /// Consumer group.
    pub group_id: String,
    /// Committers.
    pub committers: usize,
    /// Partitions in each committer's commits.
    pub partitions_per_commit: Vec<usize>,
    /// `sync` or `async`.
    pub commit_mode: String,
    /// Async window; `None` for sync.
    pub commit_window: Option<u32>,
    /// Duration-bound run; `None` when count-bound.
    pub duration_secs: Option<u64>,
    /// Count-bound run; `None` when duration-bound.
    pub commits_per_committer: Option<u64>,
    /// `--consumer-prop` settings.
    pub consumer_props: BTreeMap<String, String>,
    /// Safety timeout in seconds.
    pub timeout_secs: u64,
}

/// Per-committer counts.
#[derive(Debug, Clone, Serialize)]
pub struct CommitterReport {
    /// Partitions per commit.
    pub partitions: usize,
    /// Commits issued.
    pub commits_issued: u64,
    /// Successful commits.
    pub commits_ok: u64,
    /// Failed commits.
    pub commits_failed: u64,
    /// Commits without a result at the end.
    pub commits_unanswered: u64,
    /// Still blocked in a commit call when the run gave up on it.
    pub stuck: bool,
    /// Offset of the last successful commit (0 = warm-up only).
    pub last_committed_offset: Option<i64>,
}

/// Measured commit results.
#[derive(Debug, Clone, Serialize)]
pub struct CommitResults {
    /// Commits issued.
    pub commits_issued: u64,
    /// Successful commits.
    pub commits_ok: u64,
    /// Failed commits (request or partition errors).
    pub commits_failed: u64,
    /// Commits without a result at the end (async results pending, or a
    /// sync commit call that had not returned).
    pub commits_unanswered: u64,
    /// Committers still blocked in a commit call when the run gave up.
    pub committers_stuck: usize,
    /// Seconds from the common start to the last successful commit.
    pub elapsed_secs: f64,
    /// Successful commits per second, all committers.
    pub commits_per_sec: f64,
    /// Successful commits times their partitions, per second.
    pub partition_offsets_per_sec: f64,
    /// Latency of successful commits; `None` without samples.
    pub latency_ms: Option<LatencySummary>,
    /// Per-committer counts.
    pub per_committer: Vec<CommitterReport>,
    /// Errors by kind (commit failures prefixed `commit:`).
    pub errors: BTreeMap<String, u64>,
}

/// A partition whose fetched offset differs from the last commit.
#[derive(Debug, Clone, Serialize)]
pub struct OffsetMismatch {
    /// Partition id.
    pub partition: i32,
    /// Last successfully committed offset.
    pub expected: Option<i64>,
    /// Offset returned by OffsetFetch (`None`: no committed offset).
    pub committed: Option<i64>,
    /// Partition-level error, if any.
    pub error: Option<String>,
}

/// Result of the final OffsetFetch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OffsetCheck {
    /// Partitions compared.
    pub partitions_checked: u64,
    /// Partitions whose committed offset is the last successful commit.
    pub matching: u64,
    /// Partitions that differ.
    pub mismatched: u64,
    /// First mismatches.
    pub mismatches: Vec<OffsetMismatch>,
    /// Duration of the OffsetFetch call (including coordinator lookup).
    pub latency_ms: Option<f64>,
    /// Why the check could not run.
    pub error: Option<String>,
}

/// Complete report of a commit run.
#[derive(Debug, Clone, Serialize)]
pub struct CommitReport {
    /// Tool, version and run id.
    #[serde(flatten)]
    pub run: Envelope,
    /// Always `commit`.
    pub mode: &'static str,
    /// What the figures mean.
    pub definition: &'static str,
    /// Effective configuration.
    pub config: CommitConfig,
    /// Measured results.
    pub commit: CommitResults,
    /// Final OffsetFetch check.
    pub offset_fetch: OffsetCheck,
    /// Whether the run passed, and why not.
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl CommitReport {
    /// Assembles the report and derives `failures` / `ok`.
    pub fn new(
        run_id: u64,
        config: CommitConfig,
        commit: CommitResults,
        offset_fetch: OffsetCheck,
    ) -> Self {
        let mut failures = Vec::new();
        if commit.commits_ok == 0 {
            failures.push("no successful commits".to_string());
        }
        if commit.commits_failed > 0 {
            failures.push(format!("{} commits failed", commit.commits_failed));
        }
        if commit.commits_unanswered > 0 {
            failures.push(format!(
                "{} commits unanswered at the timeout",
                commit.commits_unanswered
            ));
        }
        if commit.committers_stuck > 0 {
            failures.push(format!(
                "{} committers still blocked in a commit call after the timeout",
                commit.committers_stuck
            ));
        }
        if let Some(n) = config.commits_per_committer {
            let short = commit
                .per_committer
                .iter()
                .filter(|c| c.commits_issued < n)
                .count();
            if short > 0 {
                failures.push(format!(
                    "{short} committers issued fewer than {n} commits before the timeout"
                ));
            }
        }
        if let Some(e) = &offset_fetch.error {
            failures.push(format!("offset fetch: {e}"));
        } else if offset_fetch.mismatched > 0 {
            failures.push(format!(
                "offset fetch: {} of {} partitions differ from the last commit",
                offset_fetch.mismatched, offset_fetch.partitions_checked
            ));
        }
        Self {
            run: Envelope::new(run_id),
            mode: "commit",
            definition: COMMIT_DEFINITION,
            config,
            commit,
            offset_fetch,
            verdict: Verdict::new(failures),
        }
    }

    /// Human-readable multi-line report.
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let r = &self.commit;
        let f = &self.offset_fetch;
        let mut out = String::new();
        let bound = match (c.duration_secs, c.commits_per_committer) {
            (_, Some(n)) => format!("commits={n} per committer"),
            (Some(d), None) => format!("duration={d} s"),
            (None, None) => String::new(),
        };
        let window = c
            .commit_window
            .map_or_else(String::new, |w| format!(" window={w}"));
        let per_commit = match (
            c.partitions_per_commit.iter().min(),
            c.partitions_per_commit.iter().max(),
        ) {
            (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
            (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
            _ => "0".to_string(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "kafscale-loadtest {} run {} mode=commit",
            self.run.version, self.run.run_id
        );
        let _ = writeln!(
            out,
            "  bootstrap={} topic={} partitions={} group={}",
            c.bootstrap, c.topic, c.partitions, c.group_id
        );
        let _ = writeln!(
            out,
            "  committers={} partitions_per_commit={per_commit} commit_mode={}{window} {bound}",
            c.committers, c.commit_mode
        );
        let _ = writeln!(out, "commit:");
        let _ = writeln!(
            out,
            "  commits     issued {}  ok {}  failed {}  unanswered {}  stuck committers {}",
            r.commits_issued,
            r.commits_ok,
            r.commits_failed,
            r.commits_unanswered,
            r.committers_stuck
        );
        let _ = writeln!(out, "  elapsed     {:.3} s", r.elapsed_secs);
        let _ = writeln!(
            out,
            "  throughput  {:.1} commits/s  {:.1} partition offsets/s",
            r.commits_per_sec, r.partition_offsets_per_sec
        );
        let _ = writeln!(
            out,
            "  latency     {}",
            r.latency_ms
                .as_ref()
                .map_or_else(|| "n/a (no samples)".to_string(), LatencySummary::to_line)
        );
        let per: Vec<String> = r
            .per_committer
            .iter()
            .map(|p| p.commits_ok.to_string())
            .collect();
        let _ = writeln!(out, "  per committer ok {}", per.join(" / "));
        let _ = writeln!(out, "  errors      {}", errors_line(&r.errors));
        let _ = writeln!(out, "offset fetch:");
        match &f.error {
            Some(e) => {
                let _ = writeln!(out, "  error       {e}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "  partitions  checked {}  matching {}  mismatched {}  latency {}",
                    f.partitions_checked,
                    f.matching,
                    f.mismatched,
                    f.latency_ms.map_or_else(|| "n/a".to_string(), format_ms)
                );
                for m in &f.mismatches {
                    let _ = writeln!(
                        out,
                        "  partition {}: expected {:?} committed {:?}{}",
                        m.partition,
                        m.expected,
                        m.committed,
                        m.error
                            .as_deref()
                            .map_or_else(String::new, |e| format!(" error {e}"))
                    );
                }
            }
        }
        let _ = writeln!(out, "notes: {COMMIT_DEFINITION}");
        crate::report::write_result(&mut out, &self.verdict);
        out
    }
}

crate::run_report!(CommitReport);
