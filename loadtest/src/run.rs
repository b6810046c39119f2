//! Orchestrates one run: topic, consumers, producers, report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cli::{Cli, Mode};
use crate::clock::Clock;
use crate::consume::{ConsumeOutcome, ConsumeShared, ConsumerPool, ConsumerSettings};
use crate::produce::{self, DeliveryStats, ProduceJob, ProduceOutcome, ProducerSettings, SendPlan};
use crate::report::{
    ConfigReport, ConsumeReport, LatencySummary, ProduceReport, Report, Throughput,
};
use crate::topic;

/// Interval between progress lines on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Executes the run described by `cli` and returns its report. Errors mean
/// the run could not be carried out at all (bad config, broker unreachable);
/// a run that completed with failures returns a report with `ok == false`.
pub fn run(cli: &Cli) -> anyhow::Result<Report> {
    let clock = Clock::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(cli.timeout_secs);
    let run_id = new_run_id(&clock);

    let partitions = topic::ensure_topic(&cli.topic_spec(), deadline)?;

    let pool = if cli.consumes() {
        let filter_run = (cli.mode == Mode::Both).then_some(run_id);
        let shared = Arc::new(ConsumeShared::new(cli.records, filter_run));
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
            cli.consumers,
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
    let _progress = (!cli.quiet).then(|| {
        Progress::spawn(
            cli.produces().then(|| Arc::clone(&stats)),
            pool.as_ref().map(|p| Arc::clone(p.shared())),
            cli.records,
            started,
        )
    });

    let produced = if cli.produces() {
        let job = produce_job(cli, run_id, deadline);
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

    let window_start = produced.as_ref().map(|p| p.start_ns);
    Ok(Report::new(
        run_id,
        config_report(cli, partitions.len()),
        produced.as_ref().map(produce_report),
        consumed.as_ref().map(|c| consume_report(c, window_start)),
    ))
}

/// Run id: wall clock mixed with the process id, unique enough per host.
pub fn new_run_id(clock: &Clock) -> u64 {
    clock.now_ns() ^ (u64::from(std::process::id()) << 40)
}

fn produce_job(cli: &Cli, run_id: u64, deadline: Instant) -> ProduceJob {
    ProduceJob {
        settings: ProducerSettings {
            bootstrap: cli.bootstrap.clone(),
            acks: cli.acks.as_str().to_string(),
            compression: cli.compression.as_str().to_string(),
            linger_ms: cli.linger_ms,
            message_timeout: Duration::from_secs(cli.timeout_secs),
            props: cli.producer_props.clone(),
        },
        producers: cli.producers,
        warmup_records: cli.warmup_records,
        plan: SendPlan {
            topic: cli.topic.clone(),
            // Bounded by the CLI parser to 64 MiB.
            record_size: usize::try_from(cli.record_size).unwrap_or(usize::MAX),
            keys: cli.keys,
            records: cli.records,
            rate: cli.target_rate(),
            warmup: false,
            run_id,
            deadline,
        },
    }
}

fn config_report(cli: &Cli, partitions: usize) -> ConfigReport {
    ConfigReport {
        mode: cli.mode.as_str().to_string(),
        bootstrap: cli.bootstrap.clone(),
        topic: cli.topic.clone(),
        partitions,
        records: cli.records,
        record_size: cli.record_size,
        rate: cli.target_rate(),
        producers: if cli.produces() { cli.producers } else { 0 },
        consumers: if cli.consumes() { cli.consumers } else { 0 },
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

/// Background thread printing progress to stderr; stops when dropped.
struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    fn spawn(
        produce: Option<Arc<DeliveryStats>>,
        consume: Option<Arc<ConsumeShared>>,
        records: u64,
        started: Instant,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("progress".to_string())
            .spawn(move || {
                let mut next = started + PROGRESS_EVERY;
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(100));
                    if Instant::now() < next {
                        continue;
                    }
                    next += PROGRESS_EVERY;
                    let mut line = format!("[{:7.1}s]", started.elapsed().as_secs_f64());
                    if let Some(p) = &produce {
                        line.push_str(&format!(" acked {}/{records}", p.acked()));
                    }
                    if let Some(c) = &consume {
                        line.push_str(&format!(" consumed {}", c.unique()));
                    }
                    eprintln!("{line}");
                }
            })
            .ok();
        Self { stop, handle }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
