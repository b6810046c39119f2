//! Command-line interface: flags, their environment twins and validation.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::payload::HEADER_LEN;

/// Largest accepted record size (64 MiB); brokers usually cap far lower.
const MAX_RECORD_SIZE: u64 = 64 * 1024 * 1024;

/// Kafka load generator for KafScale: produces records at an optional target
/// rate, consumes them back and reports throughput plus produce and
/// end-to-end latency percentiles measured from each record's scheduled send
/// time (coordinated-omission safe).
#[derive(Debug, Clone, Parser)]
#[command(name = "kafscale-loadtest", version)]
pub struct Cli {
    /// Kafka bootstrap servers (host:port[,host:port...]).
    #[arg(
        long,
        env = "KAFSCALE_LOADTEST_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,

    /// Topic to produce to / consume from.
    #[arg(long, env = "KAFSCALE_LOADTEST_TOPIC", default_value = "loadtest")]
    pub topic: String,

    /// Number of measured records to produce (or to expect, in consume mode).
    #[arg(long, env = "KAFSCALE_LOADTEST_RECORDS", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,

    /// Size of each record value in bytes (minimum 32: the latency header).
    #[arg(long, env = "KAFSCALE_LOADTEST_RECORD_SIZE", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(HEADER_LEN as u64..=MAX_RECORD_SIZE))]
    pub record_size: u64,

    /// Target total produce rate in records/s across all producers; 0 = unthrottled.
    #[arg(long, env = "KAFSCALE_LOADTEST_RATE", default_value_t = 0.0)]
    pub rate: f64,

    /// Number of producer clients (each with its own sender thread).
    #[arg(long, env = "KAFSCALE_LOADTEST_PRODUCERS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub producers: u32,

    /// Partition count used when creating the topic (an existing topic keeps its own).
    #[arg(long, env = "KAFSCALE_LOADTEST_PARTITIONS", default_value_t = 12,
          value_parser = clap::value_parser!(i32).range(1..=100_000))]
    pub partitions: i32,

    /// Replication factor used when creating the topic.
    #[arg(long, env = "KAFSCALE_LOADTEST_REPLICATION_FACTOR", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=32))]
    pub replication_factor: i32,

    /// Producer acknowledgements.
    #[arg(long, env = "KAFSCALE_LOADTEST_ACKS", value_enum, default_value_t = Acks::All)]
    pub acks: Acks,

    /// Producer compression codec.
    #[arg(long, env = "KAFSCALE_LOADTEST_COMPRESSION", value_enum, default_value_t = Compression::None)]
    pub compression: Compression,

    /// Producer linger.ms (batching delay).
    #[arg(long, env = "KAFSCALE_LOADTEST_LINGER_MS", default_value_t = 5)]
    pub linger_ms: u64,

    /// Number of consumer clients; 0 = produce only.
    #[arg(long, env = "KAFSCALE_LOADTEST_CONSUMERS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub consumers: u32,

    /// What to run.
    #[arg(long, env = "KAFSCALE_LOADTEST_MODE", value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,

    /// Consume through a consumer group (subscribe + rebalance) instead of
    /// assigning partitions manually; needs group support on the broker.
    #[arg(long, env = "KAFSCALE_LOADTEST_GROUP")]
    pub group: bool,

    /// In consume mode, start from the earliest offset instead of the end.
    #[arg(long, env = "KAFSCALE_LOADTEST_FROM_BEGINNING")]
    pub from_beginning: bool,

    /// Attach a distinct key to every record (keyed partitioning) instead of
    /// null keys (librdkafka's sticky partitioner).
    #[arg(long, env = "KAFSCALE_LOADTEST_KEYS")]
    pub keys: bool,

    /// Write the JSON report to this path; `-` prints JSON to stdout (the
    /// human-readable report then goes to stderr).
    #[arg(long, env = "KAFSCALE_LOADTEST_JSON")]
    pub json: Option<PathBuf>,

    /// Staged scenario file (YAML): ramp, steady and spike stages, each with
    /// a rate, a duration and producer/consumer counts. Replaces --rate and
    /// --records; the most producers/consumers any stage uses are created.
    #[arg(long, env = "KAFSCALE_LOADTEST_SCENARIO", conflicts_with_all = ["rate", "records"])]
    pub scenario: Option<PathBuf>,

    /// Print the resolved --scenario (stages with start and end times and
    /// record counts) as JSON to stdout and exit without connecting.
    #[arg(long, requires = "scenario")]
    pub print_scenario: bool,

    /// Also write a self-contained HTML report (plots of throughput and
    /// latency over time, summary, parameters and stages) to this path.
    #[arg(long, env = "KAFSCALE_LOADTEST_HTML")]
    pub html: Option<PathBuf>,

    /// Records produced (and consumed) before measuring starts; excluded from all statistics.
    #[arg(long, env = "KAFSCALE_LOADTEST_WARMUP_RECORDS", default_value_t = 0)]
    pub warmup_records: u64,

    /// Hard bound on the whole run in seconds; unfinished work counts as failure.
    #[arg(long, env = "KAFSCALE_LOADTEST_TIMEOUT_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,

    /// Extra librdkafka producer property `key=value` (repeatable).
    #[arg(long = "producer-prop", env = "KAFSCALE_LOADTEST_PRODUCER_PROPS",
          value_delimiter = ',', value_parser = parse_prop)]
    pub producer_props: Vec<(String, String)>,

    /// Extra librdkafka consumer property `key=value` (repeatable).
    #[arg(long = "consumer-prop", env = "KAFSCALE_LOADTEST_CONSUMER_PROPS",
          value_delimiter = ',', value_parser = parse_prop)]
    pub consumer_props: Vec<(String, String)>,

    /// Do not print progress lines to stderr while running.
    #[arg(long, short, env = "KAFSCALE_LOADTEST_QUIET")]
    pub quiet: bool,

    /// Consumer group of `--mode rebalance` and `--mode commit`; default: a
    /// fresh name per run (`kafscale-loadtest-<mode>-<run id>`).
    #[arg(long, env = "KAFSCALE_LOADTEST_GROUP_ID")]
    pub group_id: Option<String>,

    /// Rebalance mode: members of the settled group before the measured
    /// member joins (the topic needs at least members + 1 partitions).
    #[arg(long, env = "KAFSCALE_LOADTEST_MEMBERS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub members: u32,

    /// Rebalance mode: measured join/leave repetitions.
    #[arg(long, env = "KAFSCALE_LOADTEST_REPEAT", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub repeat: u32,

    /// Rebalance mode: `partition.assignment.strategy` of the members.
    #[arg(long, env = "KAFSCALE_LOADTEST_ASSIGNOR", value_enum, default_value_t = Assignor::Range)]
    pub assignor: Assignor,

    /// Rebalance mode: background records/s produced to every partition.
    #[arg(long, env = "KAFSCALE_LOADTEST_TRICKLE_RATE", default_value_t = 10.0)]
    pub trickle_rate: f64,

    /// Commit mode: consumers committing in parallel, each assigned a
    /// disjoint share of the partitions (at most one per partition).
    #[arg(long, env = "KAFSCALE_LOADTEST_COMMITTERS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub committers: u32,

    /// Commit mode: seconds of committing (bounded by --timeout-secs).
    #[arg(long, env = "KAFSCALE_LOADTEST_DURATION_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration_secs: u64,

    /// Commit mode: stop each committer after this many commits instead of
    /// after --duration-secs (--timeout-secs still bounds the run); 0 = by
    /// duration.
    #[arg(long, env = "KAFSCALE_LOADTEST_COMMITS", default_value_t = 0)]
    pub commits: u64,

    /// Commit mode: wait for every commit (`sync`) or pipeline them and
    /// count the commit callbacks (`async`).
    #[arg(long, env = "KAFSCALE_LOADTEST_COMMIT_MODE", value_enum, default_value_t = CommitKind::Sync)]
    pub commit_mode: CommitKind,

    /// Commit mode, async: most commits awaiting their callback per committer.
    #[arg(long, env = "KAFSCALE_LOADTEST_COMMIT_WINDOW", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub commit_window: u32,
}

/// Producer acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    /// Wait for all in-sync replicas (`acks=all`).
    #[value(name = "all", alias = "-1")]
    All,
    /// Wait for the partition leader only (`acks=1`).
    #[value(name = "1")]
    Leader,
    /// Do not wait for any acknowledgement (`acks=0`).
    #[value(name = "0")]
    Zero,
}

impl Acks {
    /// Value for librdkafka's `acks` property.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Leader => "1",
            Self::Zero => "0",
        }
    }
}

/// Producer compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Value for librdkafka's `compression.type` property.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Produce only.
    Produce,
    /// Consume only (records produced by another loadtest process).
    Consume,
    /// Start consumers, then produce, and consume everything back.
    Both,
    /// Consumer-group rebalance time when a member joins and leaves.
    Rebalance,
    /// OffsetCommit throughput and latency, checked with OffsetFetch.
    Commit,
}

impl Mode {
    /// Lower-case name as accepted on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
            Self::Both => "both",
            Self::Rebalance => "rebalance",
            Self::Commit => "commit",
        }
    }
}

/// Partition assignment strategy of the rebalance-mode members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Assignor {
    /// `range` (eager protocol).
    Range,
    /// `roundrobin` (eager protocol).
    #[value(name = "roundrobin")]
    RoundRobin,
    /// `cooperative-sticky` (incremental cooperative protocol).
    CooperativeSticky,
}

impl Assignor {
    /// Value for librdkafka's `partition.assignment.strategy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Range => "range",
            Self::RoundRobin => "roundrobin",
            Self::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Rebalance protocol the strategy implies: `eager` or `cooperative`.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::Range | Self::RoundRobin => "eager",
            Self::CooperativeSticky => "cooperative",
        }
    }
}

/// How commit mode commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CommitKind {
    /// `commit(.., CommitMode::Sync)`: one commit at a time per committer.
    Sync,
    /// Asynchronous commits, up to `--commit-window` outstanding per committer.
    Async,
}

impl CommitKind {
    /// Lower-case name as accepted on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
        }
    }
}

impl Cli {
    /// Cross-field checks that clap's per-flag parsers cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(format!(
                "--rate must be a finite number >= 0, got {}",
                self.rate
            ));
        }
        if self.mode == Mode::Consume && self.consumers == 0 {
            return Err("--mode consume needs --consumers >= 1".to_string());
        }
        if self.topic.is_empty() || self.topic.contains('\0') {
            return Err("--topic must be a non-empty name without NUL bytes".to_string());
        }
        if self
            .group_id
            .as_deref()
            .is_some_and(|g| g.is_empty() || g.contains('\0'))
        {
            return Err("--group-id must be a non-empty name without NUL bytes".to_string());
        }
        match self.mode {
            Mode::Rebalance => {
                if !self.trickle_rate.is_finite() || self.trickle_rate <= 0.0 {
                    return Err(format!(
                        "--trickle-rate must be a finite number > 0, got {}",
                        self.trickle_rate
                    ));
                }
                if i64::from(self.partitions) <= i64::from(self.members) {
                    return Err(format!(
                        "--mode rebalance needs --partitions > --members (got {} and {}) so \
                         that the extra member gets partitions",
                        self.partitions, self.members
                    ));
                }
            }
            Mode::Commit => {
                if i64::from(self.committers) > i64::from(self.partitions) {
                    return Err(format!(
                        "--committers ({}) must not exceed --partitions ({})",
                        self.committers, self.partitions
                    ));
                }
                if self.commits == 0 && self.duration_secs >= self.timeout_secs {
                    return Err(format!(
                        "--duration-secs ({}) must be below --timeout-secs ({})",
                        self.duration_secs, self.timeout_secs
                    ));
                }
            }
            Mode::Produce | Mode::Consume | Mode::Both => {}
        }
        let staged_modes = matches!(self.mode, Mode::Produce | Mode::Both);
        if self.scenario.is_some() && !staged_modes {
            return Err(format!(
                "--scenario works with --mode produce or both, not {}",
                self.mode.as_str()
            ));
        }
        if self.html.is_some() && !(staged_modes || self.mode == Mode::Consume) {
            return Err(format!(
                "--html works with --mode produce, consume or both, not {}",
                self.mode.as_str()
            ));
        }
        Ok(())
    }

    /// The topic every mode works on, as `--topic`/`--partitions` describe it.
    pub fn topic_spec(&self) -> crate::topic::TopicSpec {
        crate::topic::TopicSpec {
            bootstrap: self.bootstrap.clone(),
            topic: self.topic.clone(),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            props: self.producer_props.clone(),
        }
    }

    /// Group id for the group modes: `--group-id`, or a fresh name for `run_id`.
    pub fn group_id_for(&self, run_id: u64) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("kafscale-loadtest-{}-{run_id:016x}", self.mode.as_str()))
    }

    /// Reads and checks `--scenario`, if given; stages inherit the producer
    /// and consumer counts from the command line.
    pub fn load_scenario(
        &self,
    ) -> Result<Option<crate::scenario::Scenario>, crate::scenario::ScenarioError> {
        let defaults = crate::scenario::Defaults {
            producers: self.producers,
            consumers: if self.mode == Mode::Both {
                self.consumers
            } else {
                0
            },
        };
        self.scenario
            .as_deref()
            .map(|p| crate::scenario::Scenario::load(p, defaults))
            .transpose()
    }

    /// Target rate, or `None` when unthrottled.
    pub fn target_rate(&self) -> Option<f64> {
        (self.rate > 0.0).then_some(self.rate)
    }

    /// Whether this run produces records (produce/consume modes only).
    pub fn produces(&self) -> bool {
        matches!(self.mode, Mode::Produce | Mode::Both)
    }

    /// Whether this run consumes records (produce/consume modes only).
    pub fn consumes(&self) -> bool {
        match self.mode {
            Mode::Produce | Mode::Rebalance | Mode::Commit => false,
            Mode::Consume => true,
            Mode::Both => self.consumers > 0,
        }
    }
}

/// Parses a `key=value` librdkafka property.
fn parse_prop(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_flags() {
        let cli = Cli::try_parse_from(["kafscale-loadtest"]).expect("defaults parse");
        assert_eq!(cli.bootstrap, "127.0.0.1:9092");
        assert_eq!(cli.topic, "loadtest");
        assert_eq!(cli.record_size, 1024);
        assert_eq!(cli.partitions, 12);
        assert_eq!(cli.acks, Acks::All);
        assert_eq!(cli.linger_ms, 5);
        assert_eq!(cli.mode, Mode::Both);
        assert_eq!(cli.target_rate(), None);

        let cli = Cli::try_parse_from([
            "kafscale-loadtest",
            "--records",
            "200000",
            "--acks",
            "1",
            "--compression",
            "zstd",
            "--rate",
            "5000",
            "--producer-prop",
            "batch.size=65536",
            "--json",
            "-",
        ])
        .expect("parse");
        assert_eq!(cli.records, 200_000);
        assert_eq!(cli.acks.as_str(), "1");
        assert_eq!(cli.compression.as_str(), "zstd");
        assert_eq!(cli.target_rate(), Some(5000.0));
        assert_eq!(
            cli.producer_props,
            vec![("batch.size".to_string(), "65536".to_string())]
        );
        assert!(cli.validate().is_ok());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Cli::try_parse_from(["x", "--record-size", "8"]).is_err());
        assert!(Cli::try_parse_from(["x", "--producers", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--producer-prop", "novalue"]).is_err());
        let cli = Cli::try_parse_from(["x", "--rate=-1"]).expect("parses");
        assert!(cli.validate().is_err());
        let cli =
            Cli::try_parse_from(["x", "--mode", "consume", "--consumers", "0"]).expect("parses");
        assert!(cli.validate().is_err());
    }

    #[test]
    fn scenario_and_html_flags() {
        let cli =
            Cli::try_parse_from(["x", "--scenario", "s.yaml", "--html", "r.html"]).expect("parse");
        assert!(cli.validate().is_ok());
        assert!(Cli::try_parse_from(["x", "--scenario", "s.yaml", "--rate", "5"]).is_err());
        assert!(Cli::try_parse_from(["x", "--scenario", "s.yaml", "--records", "5"]).is_err());
        assert!(Cli::try_parse_from(["x", "--print-scenario"]).is_err());
        let cli =
            Cli::try_parse_from(["x", "--mode", "consume", "--scenario", "s.yaml"]).expect("parse");
        assert!(cli.validate().is_err());
        let cli =
            Cli::try_parse_from(["x", "--mode", "commit", "--html", "r.html"]).expect("parse");
        assert!(cli.validate().is_err());
        let cli =
            Cli::try_parse_from(["x", "--mode", "consume", "--html", "r.html"]).expect("parse");
        assert!(cli.validate().is_ok());
    }

    #[test]
    fn group_mode_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "--mode",
            "rebalance",
            "--partitions",
            "48",
            "--members",
            "4",
            "--repeat",
            "3",
            "--assignor",
            "cooperative-sticky",
            "--consumer-prop",
            "heartbeat.interval.ms=500",
        ])
        .expect("parse");
        assert!(cli.validate().is_ok());
        assert_eq!(cli.assignor.as_str(), "cooperative-sticky");
        assert_eq!(cli.assignor.protocol(), "cooperative");
        assert_eq!(
            cli.group_id_for(0xab),
            "kafscale-loadtest-rebalance-00000000000000ab"
        );
        assert!(!cli.consumes() && !cli.produces());

        let cli = Cli::try_parse_from(["x", "--mode", "rebalance", "--assignor", "roundrobin"])
            .expect("parse");
        assert_eq!(cli.assignor, Assignor::RoundRobin);
        assert_eq!(cli.assignor.protocol(), "eager");
        // 12 partitions (default) cannot host 12 + 1 members.
        let cli =
            Cli::try_parse_from(["x", "--mode", "rebalance", "--members", "12"]).expect("parse");
        assert!(cli.validate().is_err());

        let cli = Cli::try_parse_from([
            "x",
            "--mode",
            "commit",
            "--commit-mode",
            "async",
            "--group-id",
            "g1",
        ])
        .expect("parse");
        assert!(cli.validate().is_ok());
        assert_eq!(cli.commit_mode, CommitKind::Async);
        assert_eq!(cli.group_id_for(1), "g1");
        let cli =
            Cli::try_parse_from(["x", "--mode", "commit", "--committers", "13"]).expect("parse");
        assert!(cli.validate().is_err());
        let cli = Cli::try_parse_from(["x", "--mode", "commit", "--duration-secs", "300"])
            .expect("parse");
        assert!(cli.validate().is_err());
    }
}
