//! `--mode commit`: OffsetCommit throughput and latency.
//!
//! `--committers` consumers share one group; each is assigned (with
//! `assign()`, no subscription, so the group stays without members and
//! commits use generation -1 as Kafka allows) a disjoint share of the
//! topic's partitions and commits increasing offsets for all of them in a
//! loop: one synchronous commit at a time, or with `--commit-mode async` up
//! to `--commit-window` outstanding commits whose results are counted in the
//! commit callback. After an unmeasured warm-up commit (coordinator lookup)
//! all committers start together and run for `--duration-secs` (or
//! `--commits` commits each). Finally a separate client reads the group's
//! offsets back with OffsetFetch and compares them with each committer's last
//! successful commit.

mod async_commit;
mod committer;
mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use self::committer::{Committer, CommitterOutcome, CommitterSettings, SharedResults, StopAt};
pub use self::report::CommitReport;
use self::report::{CommitConfig, CommitResults, CommitterReport, OffsetCheck, OffsetMismatch};
use crate::cli::{Cli, CommitKind};
use crate::clock::Clock;
use crate::report::{duration_ms, LatencySummary};
use crate::run::new_run_id;
use crate::stats::{error_kind, new_latency_histogram, ErrorTally};
use crate::topic;

/// Lead time so that every committer thread is waiting when the clock starts.
const START_DELAY: Duration = Duration::from_millis(100);
/// Bound of the final OffsetFetch.
const OFFSET_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Mismatches listed individually in the report.
const MAX_LISTED_MISMATCHES: usize = 20;
/// Interval between progress lines on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long after the deadline the run still waits for committer threads.
const GRACE: Duration = Duration::from_secs(2);

/// Runs the commit benchmark described by `cli`.
pub fn run(cli: &Cli) -> anyhow::Result<CommitReport> {
    let clock = Clock::new();
    let deadline = Instant::now() + Duration::from_secs(cli.timeout_secs);
    let run_id = new_run_id(&clock);
    let group_id = cli.group_id_for(run_id);

    let partitions = topic::ensure_topic(&cli.topic_spec(), deadline)?;
    let count = usize::try_from(cli.committers).unwrap_or(usize::MAX);
    if count > partitions.len() {
        bail!(
            "topic {} has {} partitions, fewer than --committers ({count})",
            cli.topic,
            partitions.len()
        );
    }
    let shares = split(&partitions, count);

    let settings = CommitterSettings {
        bootstrap: cli.bootstrap.clone(),
        topic: cli.topic.clone(),
        group_id: group_id.clone(),
        props: cli.consumer_props.clone(),
        kind: cli.commit_mode,
        window: usize::try_from(cli.commit_window).unwrap_or(usize::MAX),
    };
    let errors = Arc::new(ErrorTally::default());
    let total_ok = Arc::new(AtomicU64::new(0));
    let committers = shares
        .iter()
        .enumerate()
        .map(|(i, share)| Committer::create(&settings, i, share, &errors, &total_ok))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let workers = spawn(committers, deadline)?;
    let start = Instant::now() + START_DELAY;
    let stop = if cli.commits > 0 {
        StopAt::Count(cli.commits)
    } else {
        StopAt::Time(start + Duration::from_secs(cli.duration_secs))
    };
    let outcomes = finish(workers, Go { start, stop }, deadline, &total_ok, cli.quiet)?;

    let offset_check = verify(&settings, &outcomes, deadline);
    let results = results(&outcomes, start, errors.snapshot());
    Ok(CommitReport::new(
        run_id,
        config(cli, &group_id, partitions.len(), &shares),
        results,
        offset_check,
    ))
}

/// Start signal for the committer threads.
#[derive(Debug, Clone, Copy)]
struct Go {
    start: Instant,
    stop: StopAt,
}

/// A committer thread, seen from the orchestrator.
struct Worker {
    partitions: Vec<i32>,
    results: SharedResults,
    go: mpsc::Sender<Go>,
    handle: thread::JoinHandle<()>,
}

/// Starts one thread per committer: each runs its warm-up commit, reports
/// it and waits for the start signal. Returns once every warm-up succeeded;
/// fails if one failed or they did not finish before `deadline` (threads
/// still blocked are abandoned).
fn spawn(committers: Vec<Committer>, deadline: Instant) -> anyhow::Result<Vec<Worker>> {
    let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let mut workers = Vec::with_capacity(committers.len());
    for (i, mut c) in committers.into_iter().enumerate() {
        let (go, go_rx) = mpsc::channel::<Go>();
        let ready = ready_tx.clone();
        let partitions = c.partitions().to_vec();
        let results = c.results();
        let handle = thread::Builder::new()
            .name(format!("committer-{i}"))
            .spawn(move || {
                let warm = c.warm_up().map_err(|e| format!("{e:#}"));
                let warmed = warm.is_ok();
                let _ = ready.send((i, warm));
                if let (true, Ok(go)) = (warmed, go_rx.recv()) {
                    c.run(go.start, go.stop, deadline);
                }
            })
            .context("spawning committer thread")?;
        workers.push(Worker {
            partitions,
            results,
            go,
            handle,
        });
    }
    let mut problems = Vec::new();
    for _ in 0..workers.len() {
        match ready_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((_, Ok(()))) => {}
            Ok((i, Err(e))) => problems.push(format!("committer {i}: {e}")),
            Err(_) => {
                problems.push("not every warm-up commit returned before the timeout".into());
                break;
            }
        }
    }
    if !problems.is_empty() {
        // Dropping the start channels releases the waiting threads.
        bail!(
            "warm-up commit failed (does the broker support FindCoordinator and \
             OffsetCommit?): {}",
            problems.join("; ")
        );
    }
    Ok(workers)
}

/// Starts the measured phase and waits for the committers, but not beyond
/// `deadline` + [`GRACE`]: a committer still blocked then is reported as
/// stuck with the results it had so far.
fn finish(
    workers: Vec<Worker>,
    go: Go,
    deadline: Instant,
    total_ok: &AtomicU64,
    quiet: bool,
) -> anyhow::Result<Vec<CommitterOutcome>> {
    for w in &workers {
        let _ = w.go.send(go);
    }
    let give_up = deadline + GRACE;
    let mut next = go.start + PROGRESS_EVERY;
    while workers.iter().any(|w| !w.handle.is_finished()) && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        if now >= next {
            next += PROGRESS_EVERY;
            if !quiet {
                eprintln!(
                    "[{:7.1}s] commits ok {}",
                    now.saturating_duration_since(go.start).as_secs_f64(),
                    total_ok.load(Ordering::Relaxed)
                );
            }
        }
    }
    workers
        .into_iter()
        .map(|w| {
            let stuck = !w.handle.is_finished();
            if !stuck {
                w.handle
                    .join()
                    .map_err(|_| anyhow!("a committer thread panicked"))?;
            }
            // A stuck thread is left behind (detached); it ends with the process.
            Ok(w.results.outcome(&w.partitions, stuck))
        })
        .collect()
}

/// Splits `partitions` round-robin into `count` disjoint, non-empty shares.
fn split(partitions: &[i32], count: usize) -> Vec<Vec<i32>> {
    let mut shares = vec![Vec::new(); count];
    for (i, &p) in partitions.iter().enumerate() {
        shares[i % count].push(p);
    }
    shares
}

/// Merges the committers' outcomes. The throughput window runs from the
/// common start to the last successful commit.
fn results(
    outcomes: &[CommitterOutcome],
    start: Instant,
    errors: std::collections::BTreeMap<String, u64>,
) -> CommitResults {
    let mut latency_us = new_latency_histogram();
    for o in outcomes {
        // Same bounds everywhere: adding cannot fail.
        let _ = latency_us.add(&o.latency_us);
    }
    let ok: u64 = outcomes.iter().map(|o| o.ok).sum();
    let offsets: u64 = outcomes
        .iter()
        .map(|o| o.ok * o.partitions.len() as u64)
        .sum();
    let end = outcomes.iter().filter_map(|o| o.last_ok_at).max();
    let elapsed_secs = end.map_or(0.0, |e| e.saturating_duration_since(start).as_secs_f64());
    let per_sec = |n: u64| {
        if elapsed_secs > 0.0 {
            n as f64 / elapsed_secs
        } else {
            0.0
        }
    };
    CommitResults {
        commits_issued: outcomes.iter().map(|o| o.issued).sum(),
        commits_ok: ok,
        commits_failed: outcomes.iter().map(|o| o.failed).sum(),
        commits_unanswered: outcomes.iter().map(|o| o.unanswered).sum(),
        committers_stuck: outcomes.iter().filter(|o| o.stuck).count(),
        elapsed_secs,
        commits_per_sec: per_sec(ok),
        partition_offsets_per_sec: per_sec(offsets),
        latency_ms: LatencySummary::from_histogram(&latency_us),
        per_committer: outcomes
            .iter()
            .map(|o| CommitterReport {
                partitions: o.partitions.len(),
                commits_issued: o.issued,
                commits_ok: o.ok,
                commits_failed: o.failed,
                commits_unanswered: o.unanswered,
                stuck: o.stuck,
                last_committed_offset: o.last_ok_offset,
            })
            .collect(),
        errors,
    }
}

/// Reads every committed offset back through a separate client (OffsetFetch
/// via `committed_offsets`) and compares it with the committer's last
/// successful commit.
fn verify(
    settings: &CommitterSettings,
    outcomes: &[CommitterOutcome],
    deadline: Instant,
) -> OffsetCheck {
    let mut check = OffsetCheck::default();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap)
        .set("client.id", "kafscale-loadtest-verify")
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false");
    for (k, v) in &settings.props {
        config.set(k, v);
    }
    let consumer: BaseConsumer = match config.create() {
        Ok(c) => c,
        Err(e) => {
            check.error = Some(format!("creating client: {e}"));
            return check;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for o in outcomes {
        for &p in &o.partitions {
            if let Err(e) = tpl.add_partition_offset(&settings.topic, p, Offset::Invalid) {
                check.error = Some(format!("building request: {e}"));
                return check;
            }
        }
    }
    let timeout = OFFSET_FETCH_TIMEOUT.min(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1)),
    );
    let sent = Instant::now();
    let fetched = match consumer.committed_offsets(tpl, timeout) {
        Ok(t) => t,
        Err(e) => {
            check.error = Some(format!("OffsetFetch failed: {e}"));
            return check;
        }
    };
    check.latency_ms = Some(duration_ms(sent.elapsed()));
    for o in outcomes {
        for &p in &o.partitions {
            check.partitions_checked += 1;
            let expected = o.last_ok_offset;
            let (committed, error) = match fetched.find_partition(&settings.topic, p) {
                Some(e) => (
                    e.offset().to_raw().filter(|&c| c >= 0),
                    e.error().err().map(|e| error_kind(&e)),
                ),
                None => (None, Some("missing from response".to_string())),
            };
            if error.is_none() && committed == expected {
                check.matching += 1;
            } else {
                check.mismatched += 1;
                if check.mismatches.len() < MAX_LISTED_MISMATCHES {
                    check.mismatches.push(OffsetMismatch {
                        partition: p,
                        expected,
                        committed,
                        error,
                    });
                }
            }
        }
    }
    check
}

fn config(cli: &Cli, group_id: &str, partitions: usize, shares: &[Vec<i32>]) -> CommitConfig {
    CommitConfig {
        bootstrap: cli.bootstrap.clone(),
        topic: cli.topic.clone(),
        partitions,
        group_id: group_id.to_string(),
        committers: shares.len(),
        partitions_per_commit: shares.iter().map(Vec::len).collect(),
        commit_mode: cli.commit_mode.as_str().to_string(),
        commit_window: (cli.commit_mode == CommitKind::Async).then_some(cli.commit_window),
        duration_secs: (cli.commits == 0).then_some(cli.duration_secs),
        commits_per_committer: (cli.commits > 0).then_some(cli.commits),
        consumer_props: cli.consumer_props.iter().cloned().collect(),
        timeout_secs: cli.timeout_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use rdkafka::mocking::MockCluster;

    #[test]
    fn split_is_disjoint_and_complete() {
        let parts: Vec<i32> = (0..10).collect();
        let shares = split(&parts, 3);
        assert_eq!(shares, vec![vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
    }

    fn cli(bootstrap: &str, extra: &[&str]) -> Cli {
        let mut args = vec![
            "kafscale-loadtest",
            "--mode",
            "commit",
            "--bootstrap",
            bootstrap,
            "--topic",
            "lt",
            "--partitions",
            "6",
            "--committers",
            "3",
            "--timeout-secs",
            "60",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).expect("valid args");
        cli.validate().expect("valid");
        cli
    }

    fn check(report: &CommitReport, committers: usize) {
        assert!(report.verdict.ok, "{}", report.to_text());
        let c = &report.commit;
        assert!(c.commits_ok > 0, "{}", report.to_text());
        assert_eq!(c.commits_failed, 0);
        assert_eq!(c.commits_unanswered, 0);
        assert_eq!(c.per_committer.len(), committers);
        assert_eq!(c.latency_ms.as_ref().map(|l| l.count), Some(c.commits_ok));
        for p in &c.per_committer {
            assert_eq!(p.last_committed_offset, Some(p.commits_ok as i64));
        }
        assert_eq!(report.offset_fetch.partitions_checked, 6);
        assert_eq!(report.offset_fetch.matching, 6);
    }

    /// Sync commits for a fixed count against librdkafka's mock cluster.
    #[test]
    fn sync_commits_against_mock_cluster() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("lt", 6, 1).expect("mock topic");
        let report = run(&cli(&mock.bootstrap_servers(), &["--commits", "50"])).expect("run");
        eprintln!("{}", report.to_text());
        check(&report, 3);
        assert_eq!(report.commit.commits_ok, 150);
    }

    /// Async commits for one second: results arrive through the callback.
    #[test]
    fn async_commits_against_mock_cluster() {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("lt", 6, 1).expect("mock topic");
        let report = run(&cli(
            &mock.bootstrap_servers(),
            &[
                "--commit-mode",
                "async",
                "--commit-window",
                "8",
                "--duration-secs",
                "1",
            ],
        ))
        .expect("run");
        eprintln!("{}", report.to_text());
        check(&report, 3);
        assert!(report.commit.elapsed_secs >= 0.9, "{}", report.to_text());
    }
}
