//! Orchestrates one run: topic, consumers, producers, report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{Cli, Mode};
use crate::clock::Clock;
use crate::consume::{ConsumeOutcome, ConsumeShared, ConsumerPool, ConsumerSettings};
use crate::monitor::{Monitor, Watched};
use crate::produce::{self, DeliveryStats, ProduceJob, ProduceOutcome, ProducerSettings, SendPlan};
use crate::report::{
    ConfigReport, ConsumeReport, LatencySummary, ProduceReport, Report, Throughput,
};
use crate::scenario::{Scenario, ScenarioSummary, Schedule};
use crate::topic;

/// The scenario of a run and its schedule, loaded once.
struct Staging {
    scenario: Scenario,
    schedule: Arc<Schedule>,
}

impl Staging {
    fn load(cli: &Cli) -> anyhow::Result<Option<Self>> {
        Ok(cli.load_scenario()?.map(|scenario| Self {
            schedule: Arc::new(Schedule::new(&scenario)),
            scenario,
        }))
    }
}

/// Executes the run described by `cli` and returns its report. Errors mean
/// the run could not be carried out at all (bad config or scenario, broker
/// unreachable); a run that completed with failures returns a report with
/// `ok == false`.
pub fn run(cli: &Cli) -> anyhow::Result<Report> {
    let staging = Staging::load(cli)?;
    let clock = Clock::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(cli.timeout_secs);
    let run_id = new_run_id(&clock);
    let shape = Shape::of(cli, staging.as_ref());

    let partitions = topic::ensure_topic(&cli.topic_spec(), deadline)?;

    let pool = if shape.consumes(cli) {
        let filter_run = (cli.mode == Mode::Both).then_some(run_id);
        let shared = Arc::new(ConsumeShared::new(shape.records, filter_run));
        let settings = ConsumerSettings {
            bootstrap: cli.bootstrap.clone(),
            topic: cli.topic.clone(),
            group: cli.group,
            from_beginning: cli.from_beginning && cli.mode == Mode::Consume,
            group_id: format!("kafscale-loadtest-{run_id:016x}"),
            props: cli.consumer_props.clone(),
        };
        let pool = ConsumerPool::start(
            &settings,
            &partitions,
            shape.consumers,
            shared,
            clock,
            deadline,
        )?;
        if let Err(e) = pool.wait_ready(deadline) {
            pool.stop();
            return Err(e);
        }
        if cli.mode == Mode::Consume {
            pool.set_target(cli.records);
        }
        Some(pool)
    } else {
        None
    };

    let stats = Arc::new(DeliveryStats::new(clock));
    let monitor = Monitor::spawn(Watched {
        produce: cli.produces().then(|| Arc::clone(&stats)),
        consume: pool.as_ref().map(|p| Arc::clone(p.shared())),
        rate: cli.target_rate(),
        scenario: staging
            .as_ref()
            .map(|s| (s.scenario.clone(), Arc::clone(&s.schedule))),
        goal: shape.records,
        quiet: cli.quiet,
    });

    let produced = if cli.produces() {
        let job = produce_job(cli, &shape, staging.as_ref(), run_id, deadline);
        match produce::produce(&job, &stats, &clock) {
            Ok(outcome) => Some(outcome),
            Err(e) => {
                if let Some(pool) = &pool {
                    pool.stop();
                }
                return Err(e);
            }
        }
    } else {
        None
    };

    if let (Some(pool), Some(p)) = (&pool, &produced) {
        pool.set_target(p.acked);
    }
    let consumed = pool.map(ConsumerPool::finish).transpose()?;
    let timeline = monitor.finish();

    let window_start = produced.as_ref().map(|p| p.start_ns);
    let summary = staging
        .as_ref()
        .map(|s| ScenarioSummary::new(&s.scenario, &s.schedule));
    Ok(Report::new(
        run_id,
        config_report(cli, &shape, partitions.len()),
        produced.as_ref().map(produce_report),
        consumed.as_ref().map(|c| consume_report(c, window_start)),
    )
    .with_scenario(summary)
    .with_timeline(timeline))
}

/// Records and clients of a run: from the scenario when there is one, else
/// from `--records`, `--producers` and `--consumers`.
struct Shape {
    records: u64,
    producers: u32,
    consumers: u32,
}

impl Shape {
    /// Whether the run consumes: `--mode consume`, or `both` with consumers.
    fn consumes(&self, cli: &Cli) -> bool {
        match cli.mode {
            Mode::Both => self.consumers > 0,
            _ => cli.consumes(),
        }
    }

    fn of(cli: &Cli, staging: Option<&Staging>) -> Self {
        match staging {
            Some(s) => Self {
                records: s.schedule.total_records(),
                producers: s.scenario.max_producers(),
                consumers: s.scenario.max_consumers(),
            },
            None => Self {
                records: cli.records,
                producers: cli.producers,
                consumers: cli.consumers,
            },
        }
    }
}

/// Run id: wall clock mixed with the process id, unique enough per host.
pub fn new_run_id(clock: &Clock) -> u64 {
    clock.now_ns() ^ (u64::from(std::process::id()) << 40)
}

fn produce_job(
    cli: &Cli,
    shape: &Shape,
    staging: Option<&Staging>,
    run_id: u64,
    deadline: Instant,
) -> ProduceJob {
    ProduceJob {
        settings: ProducerSettings {
            bootstrap: cli.bootstrap.clone(),
            acks: cli.acks.as_str().to_string(),
            compression: cli.compression.as_str().to_string(),
            linger_ms: cli.linger_ms,
            message_timeout: Duration::from_secs(cli.timeout_secs),
            props: cli.producer_props.clone(),
        },
        producers: shape.producers,
        warmup_records: cli.warmup_records,
        plan: SendPlan {
            topic: cli.topic.clone(),
            // Bounded by the CLI parser to 64 MiB.
            record_size: usize::try_from(cli.record_size).unwrap_or(usize::MAX),
            keys: cli.keys,
            records: shape.records,
            rate: cli.target_rate(),
            schedule: staging.map(|s| Arc::clone(&s.schedule)),
            warmup: false,
            run_id,
            deadline,
        },
    }
}

fn config_report(cli: &Cli, shape: &Shape, partitions: usize) -> ConfigReport {
    ConfigReport {
        mode: cli.mode.as_str().to_string(),
        bootstrap: cli.bootstrap.clone(),
        topic: cli.topic.clone(),
        partitions,
        records: shape.records,
        record_size: cli.record_size,
        rate: cli.target_rate(),
        producers: if cli.produces() { shape.producers } else { 0 },
        consumers: if shape.consumes(cli) {
            shape.consumers
        } else {
            0
        },
        acks: cli.acks.as_str().to_string(),
        compression: cli.compression.as_str().to_string(),
        linger_ms: cli.linger_ms,
        keys: cli.keys,
        group: cli.group,
        warmup_records: cli.warmup_records,
        timeout_secs: cli.timeout_secs,
    }
}

fn produce_report(p: &ProduceOutcome) -> ProduceReport {
    ProduceReport {
        records_sent: p.totals.sent,
        records_acked: p.acked,
        records_failed: p.failed,
        warmup_failed: p.warmup_failed,
        records_not_sent: p.totals.not_sent,
        records_unacked: p.totals.unacked,
        bytes_acked: p.acked_bytes,
        elapsed_secs: p.elapsed_secs,
        throughput: Throughput::new(p.acked, p.acked_bytes, p.elapsed_secs),
        latency_ms: LatencySummary::from_histogram(&p.latency_us),
        errors: p.errors.clone(),
        client_errors: p.client_errors.clone(),
    }
}

/// The consume window runs from the measured produce start (or, when only
/// consuming, from the first record consumed) to the last record consumed.
fn consume_report(c: &ConsumeOutcome, window_start_ns: Option<u64>) -> ConsumeReport {
    let elapsed_secs = match (window_start_ns.or(c.first_ns), c.last_ns) {
        (Some(start), Some(end)) => end.saturating_sub(start) as f64 / 1e9,
        _ => 0.0,
    };
    ConsumeReport {
        records_expected: c.expected,
        records_consumed: c.unique,
        duplicates: c.duplicates,
        foreign_records: c.foreign,
        warmup_records_seen: c.warmup,
        bytes_consumed: c.bytes,
        elapsed_secs,
        throughput: Throughput::new(c.unique, c.bytes, elapsed_secs),
        e2e_latency_ms: LatencySummary::from_histogram(&c.latency_us),
        errors: c.errors.clone(),
        complete: c.unique >= c.expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RunReport as _;
    use clap::Parser;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    fn cli(bootstrap: &str, extra: &[&str]) -> Cli {
        let mut args = vec![
            "kafscale-loadtest",
            "--bootstrap",
            bootstrap,
            "--topic",
            "lt",
            "--record-size",
            "100",
            "--timeout-secs",
            "60",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).expect("valid args")
    }

    /// Full produce + consume cycle against librdkafka's in-process mock
    /// cluster (manual assignment, keys, warm-up, two of each client).
    #[test]
    fn both_mode_against_mock_cluster() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("lt", 4, 1).expect("mock topic");
        let cli = cli(
            &mock.bootstrap_servers(),
            &[
                "--records",
                "3000",
                "--producers",
                "2",
                "--consumers",
                "2",
                "--warmup-records",
                "100",
                "--keys",
            ],
        );
        let report = run(&cli).expect("run");
        // Visible with `cargo test -- --nocapture`.
        eprintln!("{}", report.to_text());
        assert!(report.verdict.ok, "{}", report.to_text());
        let p = report.produce.as_ref().expect("produce");
        assert_eq!(p.records_acked, 3000);
        assert_eq!(p.bytes_acked, 300_000);
        assert_eq!(p.latency_ms.as_ref().map(|l| l.count), Some(3000));
        let c = report.consume.as_ref().expect("consume");
        assert_eq!(c.records_consumed, 3000);
        assert_eq!(c.e2e_latency_ms.as_ref().map(|l| l.count), Some(3000));
        assert_eq!(report.config.partitions, 4);
    }

    /// Rate limiting spreads the sends over records/rate seconds, and group
    /// mode gets its assignment before producing starts.
    #[test]
    fn rate_limited_group_mode_against_mock_cluster() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("lt", 2, 1).expect("mock topic");
        let cli = cli(
            &mock.bootstrap_servers(),
            &["--records", "500", "--rate", "1000", "--group"],
        );
        let report = run(&cli).expect("run");
        assert!(report.verdict.ok, "{}", report.to_text());
        let p = report.produce.as_ref().expect("produce");
        assert!(p.elapsed_secs >= 0.45, "elapsed {}", p.elapsed_secs);
        assert!(p.throughput.records_per_sec <= 1150.0, "{:?}", p.throughput);
        assert_eq!(
            report.consume.as_ref().map(|c| c.records_consumed),
            Some(500)
        );
    }

    /// A producer-only run and a separate consume-only run (as two processes
    /// would do) see the same records.
    #[test]
    fn produce_then_consume_from_beginning() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("lt", 3, 1).expect("mock topic");
        let bootstrap = mock.bootstrap_servers();
        let produced =
            run(&cli(&bootstrap, &["--records", "800", "--mode", "produce"])).expect("produce run");
        assert!(produced.verdict.ok, "{}", produced.to_text());
        assert!(produced.consume.is_none());
        let consumed = run(&cli(
            &bootstrap,
            &["--records", "800", "--mode", "consume", "--from-beginning"],
        ))
        .expect("consume run");
        assert!(consumed.verdict.ok, "{}", consumed.to_text());
        assert!(consumed.produce.is_none());
        let c = consumed.consume.as_ref().expect("consume");
        assert_eq!(c.records_consumed, 800);
        assert_eq!(c.records_expected, 800);
    }

    /// A staged scenario sends exactly its records, with per-stage producer
    /// and consumer counts, and the timeline follows it.
    #[test]
    fn scenario_against_mock_cluster() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("lt", 4, 1).expect("mock topic");
        let path = std::env::temp_dir().join(format!("lt-scenario-{}.yaml", std::process::id()));
        std::fs::write(
            &path,
            "name: mock
stages:
             - {kind: ramp, rate: 400, duration_secs: 1, producers: 2, consumers: 2}
             - {kind: steady, duration_secs: 1, consumers: 1}
             - {kind: spike, rate: 1000, duration_secs: 0.5, producers: 3, consumers: 0}
",
        )
        .expect("write scenario");
        let scenario = path.to_string_lossy().into_owned();
        let report = run(&cli(&mock.bootstrap_servers(), &["--scenario", &scenario]));
        let _ = std::fs::remove_file(&path);
        let report = report.expect("run");
        assert!(report.verdict.ok, "{}", report.to_text());
        assert_eq!(report.config.records, 200 + 400 + 500);
        assert_eq!((report.config.producers, report.config.consumers), (3, 2));
        let p = report.produce.as_ref().expect("produce");
        assert_eq!(p.records_acked, 1100);
        // Sends follow the schedule: the last record is due at ~2.5 s.
        assert!(p.elapsed_secs >= 2.4, "elapsed {}", p.elapsed_secs);
        let c = report.consume.as_ref().expect("consume");
        assert_eq!(c.records_consumed, 1100);
        let sc = report.scenario.as_ref().expect("scenario summary");
        assert_eq!(sc.stages.len(), 3);
        assert!(report.timeline.len() >= 2, "{:?}", report.timeline);
        // The first second is the ramp: its mean target is ~200/s.
        let first = &report.timeline[0];
        assert!(
            first.target_rate.is_some_and(|r| r > 150.0 && r < 250.0),
            "{first:?}"
        );
        let stages: Vec<Option<usize>> = report.timeline.iter().map(|s| s.stage).collect();
        assert!(stages.contains(&Some(1)), "{stages:?}");
        let json: serde_json::Value =
            serde_json::from_str(&report.json().expect("json")).expect("valid json");
        assert_eq!(json["scenario"]["total_records"], 1100);
        assert!(json.get("timeline").is_none());
    }

    /// Plain runs keep the JSON schema: no scenario key.
    #[test]
    fn plain_run_json_has_no_scenario() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("lt", 1, 1).expect("mock topic");
        let report = run(&cli(&mock.bootstrap_servers(), &["--records", "10"])).expect("run");
        let json: serde_json::Value =
            serde_json::from_str(&report.json().expect("json")).expect("valid json");
        assert!(json.get("scenario").is_none());
        assert_eq!(json["config"]["records"], 10);
    }

    /// Non-retriable produce errors fail the run and are reported by kind.
    #[test]
    fn delivery_failures_fail_the_run() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("lt", 1, 1).expect("mock topic");
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 50],
        );
        let cli = cli(
            &mock.bootstrap_servers(),
            &["--records", "20", "--mode", "produce"],
        );
        let report = run(&cli).expect("run");
        assert!(!report.verdict.ok, "{}", report.to_text());
        let p = report.produce.as_ref().expect("produce");
        assert!(p.records_failed > 0, "{}", report.to_text());
        assert!(
            p.errors.contains_key("MessageSizeTooLarge"),
            "{:?}",
            p.errors
        );
    }
}
