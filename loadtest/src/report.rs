//! Run report: percentile summaries, throughput, human-readable text and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::scenario::ScenarioSummary;
use crate::timeline::Sample;

/// What "MB" means in every report.
pub const MB_DEFINITION: &str =
    "1 MB = 1,000,000 bytes of record values (keys and protocol overhead excluded)";

/// How latencies are measured.
pub const LATENCY_DEFINITION: &str = "produce latency = ack time - scheduled send time; \
     end-to-end latency = consume time - scheduled send time; scheduled send time = start + i/rate \
     when --rate is set (with --scenario: when the scenario's rate curve reaches record i), else \
     the moment the record was handed to send()";

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl LatencySummary {
    /// Summarises a histogram of microsecond samples; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(Self {
            count: h.len(),
            p50_ms: us_to_ms(h.value_at_quantile(0.50)),
            p99_ms: us_to_ms(h.value_at_quantile(0.99)),
            p999_ms: us_to_ms(h.value_at_quantile(0.999)),
            max_ms: us_to_ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        })
    }

    /// One-line rendering, e.g. `p50 1.234 ms  p99 ...  (n=10)`.
    pub fn to_line(&self) -> String {
        format!(
            "p50 {}  p99 {}  p99.9 {}  max {}  mean {}  (n={})",
            format_ms(self.p50_ms),
            format_ms(self.p99_ms),
            format_ms(self.p999_ms),
            format_ms(self.max_ms),
            format_ms(self.mean_ms),
            self.count
        )
    }
}

/// Microseconds to milliseconds.
pub fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A duration in milliseconds with microsecond resolution.
pub fn duration_ms(d: Duration) -> f64 {
    us_to_ms(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Minimum, median, maximum and mean of a few durations (e.g. one per
/// repetition), in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurationSummary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min_ms: f64,
    /// Median (mean of the two middle samples for an even count).
    pub median_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl DurationSummary {
    /// Summarises millisecond samples; `None` when there are none.
    pub fn from_ms(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Self {
            count: n,
            min_ms: sorted[0],
            median_ms: median,
            max_ms: sorted[n - 1],
            mean_ms: sorted.iter().sum::<f64>() / n as f64,
        })
    }

    /// One-line rendering, e.g. `min 1.000 ms  median ...  (n=5)`.
    pub fn to_line(&self) -> String {
        format!(
            "min {}  median {}  max {}  mean {}  (n={})",
            format_ms(self.min_ms),
            format_ms(self.median_ms),
            format_ms(self.max_ms),
            format_ms(self.mean_ms),
            self.count
        )
    }
}

/// Appends the closing `result: OK` / `result: FAILED: ...` line.
pub fn write_result(out: &mut String, verdict: &Verdict) {
    use std::fmt::Write as _;
    if verdict.ok {
        let _ = writeln!(out, "result: OK");
    } else {
        let _ = writeln!(out, "result: FAILED: {}", verdict.failures.join("; "));
    }
}

/// The head every mode's report starts with (flattened into its JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Envelope {
    /// Tool name.
    pub tool: &'static str,
    /// Tool version.
    pub version: &'static str,
    /// Run identifier embedded in every payload (hex).
    pub run_id: String,
}

impl Envelope {
    /// The head of run `run_id`.
    pub fn new(run_id: u64) -> Self {
        Self {
            tool: "kafscale-loadtest",
            version: env!("CARGO_PKG_VERSION"),
            run_id: format!("{run_id:016x}"),
        }
    }
}

/// The tail every mode's report ends with (flattened into its JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Reasons the run counts as failed; empty on success.
    pub failures: Vec<String>,
    /// `true` when `failures` is empty.
    pub ok: bool,
}

impl Verdict {
    /// Passed iff there are no failures.
    pub fn new(failures: Vec<String>) -> Self {
        Self {
            ok: failures.is_empty(),
            failures,
        }
    }
}

/// Implements [`RunReport`] for a report with `to_text` and a `verdict`.
#[macro_export]
macro_rules! run_report {
    ($t:ty) => {
        impl $crate::report::RunReport for $t {
            fn text(&self) -> String {
                self.to_text()
            }

            fn verdict(&self) -> &$crate::report::Verdict {
                &self.verdict
            }
        }
    };
}

/// What `main` needs from the report of any mode.
pub trait RunReport: Serialize {
    /// Human-readable multi-line report.
    fn text(&self) -> String;
    /// Whether the run passed, and why not.
    fn verdict(&self) -> &Verdict;
    /// Pretty-printed JSON.
    fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

crate::run_report!(Report);

/// Formats milliseconds with microsecond resolution, e.g. `1.234 ms`.
pub fn format_ms(ms: f64) -> String {
    format!("{ms:.3} ms")
}

fn latency_line(s: Option<&LatencySummary>) -> String {
    s.map_or_else(|| "n/a (no samples)".to_string(), LatencySummary::to_line)
}

/// Records and megabytes (1e6 bytes) per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    /// Records per second.
    pub records_per_sec: f64,
    /// Megabytes (1,000,000 bytes) per second.
    pub mb_per_sec: f64,
}

impl Throughput {
    /// Throughput of `records` records totalling `bytes` over `secs` seconds
    /// (zero when no time elapsed).
    pub fn new(records: u64, bytes: u64, secs: f64) -> Self {
        if secs <= 0.0 || !secs.is_finite() {
            return Self {
                records_per_sec: 0.0,
                mb_per_sec: 0.0,
            };
        }
        Self {
            records_per_sec: records as f64 / secs,
            mb_per_sec: bytes as f64 / 1e6 / secs,
        }
    }

    fn to_line(self) -> String {
        format!(
            "{:.1} records/s  {:.3} MB/s",
            self.records_per_sec, self.mb_per_sec
        )
    }
}

/// Effective configuration of the run.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    /// `produce`, `consume` or `both`.
    pub mode: String,
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic name.
    pub topic: String,
    /// Partitions of the topic as seen in metadata.
    pub partitions: usize,
    /// Measured records requested.
    pub records: u64,
    /// Record value size in bytes.
    pub record_size: u64,
    /// Target rate in records/s; `None` = unthrottled.
    pub rate: Option<f64>,
    /// Producer clients.
    pub producers: u32,
    /// Consumer clients.
    pub consumers: u32,
    /// `acks` setting.
    pub acks: String,
    /// Compression codec.
    pub compression: String,
    /// `linger.ms`.
    pub linger_ms: u64,
    /// Keyed records.
    pub keys: bool,
    /// Consumer-group mode (otherwise manual assignment).
    pub group: bool,
    /// Warm-up records excluded from statistics.
    pub warmup_records: u64,
    /// Safety timeout in seconds.
    pub timeout_secs: u64,
}

/// Producer-side results (measured phase only).
#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    /// Records handed to the client.
    pub records_sent: u64,
    /// Records acknowledged by the broker.
    pub records_acked: u64,
    /// Records whose delivery failed (including enqueue failures).
    pub records_failed: u64,
    /// Warm-up records whose delivery failed.
    pub warmup_failed: u64,
    /// Records never handed to the client (timeout).
    pub records_not_sent: u64,
    /// Records still in flight when the run ended.
    pub records_unacked: u64,
    /// Value bytes acknowledged.
    pub bytes_acked: u64,
    /// Seconds from measured start to the last acknowledgement.
    pub elapsed_secs: f64,
    /// Acknowledged throughput.
    pub throughput: Throughput,
    /// Produce latency; `None` without samples.
    pub latency_ms: Option<LatencySummary>,
    /// Delivery failures by error kind (warm-up included).
    pub errors: BTreeMap<String, u64>,
    /// Client-level errors by kind, e.g. broker connection failures (informational).
    pub client_errors: BTreeMap<String, u64>,
}

/// Consumer-side results (measured records only).
#[derive(Debug, Clone, Serialize)]
pub struct ConsumeReport {
    /// Distinct measured records the consumers were waiting for.
    pub records_expected: u64,
    /// Distinct measured records consumed.
    pub records_consumed: u64,
    /// Measured records received more than once.
    pub duplicates: u64,
    /// Records ignored because they belong to another run or are not load-test records.
    pub foreign_records: u64,
    /// Warm-up records received (ignored).
    pub warmup_records_seen: u64,
    /// Value bytes of distinct measured records consumed.
    pub bytes_consumed: u64,
    /// Seconds of the consume window (see README).
    pub elapsed_secs: f64,
    /// Consume throughput.
    pub throughput: Throughput,
    /// End-to-end latency; `None` without samples.
    pub e2e_latency_ms: Option<LatencySummary>,
    /// Consumer errors by kind (informational).
    pub errors: BTreeMap<String, u64>,
    /// Whether every expected record was consumed.
    pub complete: bool,
}

/// Complete report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Tool, version and run id.
    #[serde(flatten)]
    pub run: Envelope,
    /// Unit definition for MB.
    pub mb_definition: &'static str,
    /// How latencies are measured.
    pub latency_definition: &'static str,
    /// Effective configuration.
    pub config: ConfigReport,
    /// Producer results, when producing.
    pub produce: Option<ProduceReport>,
    /// Consumer results, when consuming.
    pub consume: Option<ConsumeReport>,
    /// The staged scenario, when the run followed one (`--scenario`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<ScenarioSummary>,
    /// Whether the run passed, and why not.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Per-second samples (for the HTML report; not part of the JSON).
    #[serde(skip)]
    pub timeline: Vec<Sample>,
}

impl Report {
    /// Assembles a report and derives `failures` / `ok` from the results.
    pub fn new(
        run_id: u64,
        config: ConfigReport,
        produce: Option<ProduceReport>,
        consume: Option<ConsumeReport>,
    ) -> Self {
        let failures = failures(produce.as_ref(), consume.as_ref());
        Self {
            run: Envelope::new(run_id),
            mb_definition: MB_DEFINITION,
            latency_definition: LATENCY_DEFINITION,
            config,
            produce,
            consume,
            scenario: None,
            verdict: Verdict::new(failures),
            timeline: Vec::new(),
        }
    }

    /// The same report with the scenario the run followed.
    pub fn with_scenario(self, scenario: Option<ScenarioSummary>) -> Self {
        Self { scenario, ..self }
    }

    /// The same report with the run's per-second samples.
    pub fn with_timeline(self, timeline: Vec<Sample>) -> Self {
        Self { timeline, ..self }
    }

    /// The target rate in words: `scenario`, `N records/s` or `unthrottled`.
    pub fn rate_label(&self) -> String {
        match (&self.scenario, self.config.rate) {
            (Some(_), _) => "scenario".to_string(),
            (None, Some(r)) => format!("{r} records/s"),
            (None, None) => "unthrottled".to_string(),
        }
    }

    /// Human-readable multi-line report.
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let rate = self.rate_label();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "kafscale-loadtest {} run {} mode={}",
            self.run.version, self.run.run_id, c.mode
        );
        let _ = writeln!(
            out,
            "  bootstrap={} topic={} partitions={} records={} record_size={} B warmup={}",
            c.bootstrap, c.topic, c.partitions, c.records, c.record_size, c.warmup_records
        );
        let _ = writeln!(
            out,
            "  producers={} consumers={} acks={} compression={} linger_ms={} rate={} keys={} group={}",
            c.producers, c.consumers, c.acks, c.compression, c.linger_ms, rate, c.keys, c.group
        );
        if let Some(sc) = &self.scenario {
            let _ = writeln!(
                out,
                "  scenario={} stages={} duration={} s records={}",
                sc.name,
                sc.stages.len(),
                sc.total_secs,
                sc.total_records
            );
        }
        if let Some(p) = &self.produce {
            let _ = writeln!(out, "produce:");
            let _ = writeln!(
                out,
                "  records     sent {}  acked {}  failed {}  warm-up failed {}  not sent {}  unacked {}",
                p.records_sent,
                p.records_acked,
                p.records_failed,
                p.warmup_failed,
                p.records_not_sent,
                p.records_unacked
            );
            let _ = writeln!(out, "  elapsed     {:.3} s", p.elapsed_secs);
            let _ = writeln!(out, "  throughput  {}", p.throughput.to_line());
            let _ = writeln!(out, "  latency     {}", latency_line(p.latency_ms.as_ref()));
            let _ = writeln!(out, "  errors      {}", errors_line(&p.errors));
            if !p.client_errors.is_empty() {
                let _ = writeln!(out, "  client errs {}", errors_line(&p.client_errors));
            }
        }
        if let Some(k) = &self.consume {
            let _ = writeln!(out, "consume:");
            let _ = writeln!(
                out,
                "  records     consumed {} of {}  duplicates {}  foreign {}  warmup {}",
                k.records_consumed,
                k.records_expected,
                k.duplicates,
                k.foreign_records,
                k.warmup_records_seen
            );
            let _ = writeln!(out, "  elapsed     {:.3} s", k.elapsed_secs);
            let _ = writeln!(out, "  throughput  {}", k.throughput.to_line());
            let _ = writeln!(
                out,
                "  e2e latency {}",
                latency_line(k.e2e_latency_ms.as_ref())
            );
            let _ = writeln!(out, "  errors      {}", errors_line(&k.errors));
        }
        let _ = writeln!(out, "notes: {}; {}", MB_DEFINITION, LATENCY_DEFINITION);
        write_result(&mut out, &self.verdict);
        out
    }
}

/// `kind=count, ...`, or `none`.
pub fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".to_string();
    }
    errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn failures(produce: Option<&ProduceReport>, consume: Option<&ConsumeReport>) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(p) = produce {
        if p.records_failed > 0 {
            f.push(format!("{} deliveries failed", p.records_failed));
        }
        if p.records_not_sent > 0 {
            f.push(format!(
                "{} records not sent before the timeout",
                p.records_not_sent
            ));
        }
        if p.records_unacked > 0 {
            f.push(format!(
                "{} records unacknowledged at the end",
                p.records_unacked
            ));
        }
        if p.warmup_failed > 0 {
            f.push(format!("{} warm-up deliveries failed", p.warmup_failed));
        }
    }
    if let Some(c) = consume {
        if !c.complete {
            f.push(format!(
                "consumed {} of {} records",
                c.records_consumed, c.records_expected
            ));
        }
    }
    f
}

/// Report parts for tests of this and other modules.
#[cfg(test)]
pub mod fixtures {
    use super::*;

    /// A `both` run of 1000 records.
    pub fn config() -> ConfigReport {
        ConfigReport {
            mode: "both".into(),
            bootstrap: "127.0.0.1:9092".into(),
            topic: "t".into(),
            partitions: 12,
            records: 1000,
            record_size: 1024,
            rate: None,
            producers: 1,
            consumers: 1,
            acks: "all".into(),
            compression: "none".into(),
            linger_ms: 5,
            keys: false,
            group: false,
            warmup_records: 0,
            timeout_secs: 60,
        }
    }

    /// A produce side of 1000 records, `failed` of them failed.
    pub fn produce(failed: u64) -> ProduceReport {
        let mut errors = BTreeMap::new();
        if failed > 0 {
            errors.insert("MessageTimedOut".to_string(), failed);
        }
        ProduceReport {
            records_sent: 1000,
            records_acked: 1000 - failed,
            records_failed: failed,
            warmup_failed: 0,
            records_not_sent: 0,
            records_unacked: 0,
            bytes_acked: (1000 - failed) * 1024,
            elapsed_secs: 2.0,
            throughput: Throughput::new(1000 - failed, (1000 - failed) * 1024, 2.0),
            latency_ms: None,
            errors,
            client_errors: BTreeMap::new(),
        }
    }

    /// A consume side that got `consumed` of `expected` records.
    pub fn consume(expected: u64, consumed: u64) -> ConsumeReport {
        ConsumeReport {
            records_expected: expected,
            records_consumed: consumed,
            duplicates: 0,
            foreign_records: 0,
            warmup_records_seen: 0,
            bytes_consumed: consumed,
            elapsed_secs: 1.0,
            throughput: Throughput::new(consumed, consumed, 1.0),
            e2e_latency_ms: None,
            errors: BTreeMap::new(),
            complete: consumed >= expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{config, consume, produce};
    use super::*;
    use crate::stats::new_latency_histogram;

    #[test]
    fn formats_milliseconds_with_microsecond_resolution() {
        assert_eq!(format_ms(us_to_ms(1234)), "1.234 ms");
        assert_eq!(format_ms(us_to_ms(0)), "0.000 ms");
        assert_eq!(format_ms(us_to_ms(5_000_000)), "5000.000 ms");
    }

    #[test]
    fn percentiles_from_histogram() {
        let mut h = new_latency_histogram();
        assert_eq!(LatencySummary::from_histogram(&h), None);
        for us in 1..=1000u64 {
            h.saturating_record(us * 1000); // 1 ms .. 1000 ms
        }
        let s = LatencySummary::from_histogram(&h).expect("summary");
        assert_eq!(s.count, 1000);
        // 3 significant digits: allow 0.1% relative error.
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 1e-9;
        assert!(close(s.p50_ms, 500.0), "p50 {}", s.p50_ms);
        assert!(close(s.p99_ms, 990.0), "p99 {}", s.p99_ms);
        assert!(close(s.p999_ms, 999.0), "p999 {}", s.p999_ms);
        assert!(close(s.max_ms, 1000.0), "max {}", s.max_ms);
        assert!(close(s.mean_ms, 500.5), "mean {}", s.mean_ms);
        let line = s.to_line();
        assert!(line.starts_with("p50 500."), "{line}");
        assert!(line.contains("p99.9 99"), "{line}");
        assert!(line.ends_with("(n=1000)"), "{line}");
    }

    #[test]
    fn duration_summary_min_median_max() {
        assert_eq!(DurationSummary::from_ms(&[]), None);
        let s = DurationSummary::from_ms(&[30.0, 10.0, 20.0]).expect("summary");
        assert_eq!(
            (s.min_ms, s.median_ms, s.max_ms, s.mean_ms),
            (10.0, 20.0, 30.0, 20.0)
        );
        let s = DurationSummary::from_ms(&[4.0, 1.0, 2.0, 3.0]).expect("summary");
        assert_eq!((s.count, s.median_ms), (4, 2.5));
        assert!(
            s.to_line().starts_with("min 1.000 ms  median 2.500 ms"),
            "{}",
            s.to_line()
        );
        assert_eq!(duration_ms(Duration::from_micros(1_234_567)), 1234.567);
    }

    #[test]
    fn throughput_uses_decimal_megabytes() {
        let t = Throughput::new(1000, 2_000_000, 2.0);
        assert_eq!(t.records_per_sec, 500.0);
        assert_eq!(t.mb_per_sec, 1.0);
        assert_eq!(Throughput::new(5, 5, 0.0).records_per_sec, 0.0);
    }

    #[test]
    fn ok_and_failed_reports() {
        let ok = Report::new(1, config(), Some(produce(0)), None);
        assert!(ok.verdict.ok);
        assert!(ok.to_text().contains("result: OK"));
        assert!(ok.to_text().contains("errors      none"));

        let bad = Report::new(1, config(), Some(produce(3)), None);
        assert!(!bad.verdict.ok);
        let text = bad.to_text();
        assert!(text.contains("3 deliveries failed"), "{text}");
        assert!(text.contains("MessageTimedOut=3"), "{text}");
        assert!(text.contains("MB/s"));

        let json: serde_json::Value =
            serde_json::from_str(&bad.json().expect("json")).expect("valid json");
        assert_eq!(json["ok"], false);
        assert_eq!(json["produce"]["records_failed"], 3);
        assert_eq!(json["produce"]["errors"]["MessageTimedOut"], 3);
        assert_eq!(json["produce"]["latency_ms"], serde_json::Value::Null);
        assert_eq!(json["run_id"], "0000000000000001");
    }

    #[test]
    fn incomplete_consume_fails() {
        let r = Report::new(2, config(), Some(produce(0)), Some(consume(10, 9)));
        assert!(!r.verdict.ok);
        assert_eq!(
            r.verdict.failures,
            vec!["consumed 9 of 10 records".to_string()]
        );
    }
}
