//! `--mode rebalance`: how long a consumer group takes to rebalance when a
//! member joins, and when it leaves again.
//!
//! 1. A background trickle producer writes to every partition of the topic.
//! 2. `--members` N consumers subscribe in group `--group-id`; the run waits
//!    until they share the partitions and each has consumed a record
//!    (the *initial* round, reported but not part of the statistics).
//! 3. Each of `--repeat` K repetitions adds a fresh member N+1 (new client,
//!    new member id) and measures, from just before its `subscribe()`:
//!    * `assigned`: all N+1 members hold their new, complete, disjoint and
//!      balanced assignment;
//!    * `settled`: in addition, every member has consumed a record since the
//!      round started and since its last assignment change.
//!
//!    Then the extra member is closed (revoke, LeaveGroup) and the same two
//!    times are measured for the N remaining members, from the moment its
//!    thread starts closing. The next repetition starts from that settled
//!    N-member group: repetitions share one group (add then remove), they do
//!    not use a fresh group each.
//!
//! See [`tracker`] for the exact conditions.

mod member;
mod report;
mod tracker;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use self::member::{Member, MemberSettings};
pub use self::report::RebalanceReport;
use self::report::{RebalanceConfig, Repetition, RoundReport, TrickleReport};
use self::tracker::{RoundTimes, Tracker};
use crate::cli::Cli;
use crate::clock::Clock;
use crate::produce::ProducerSettings;
use crate::report::{duration_ms, format_ms};
use crate::run::new_run_id;
use crate::stats::ErrorTally;
use crate::topic;
use crate::trickle::{Trickle, TrickleSpec};

/// How long past the deadline closing members are waited for.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How the repetitions are arranged (also printed in the report).
pub const REPETITION_METHOD: &str = "add then remove: every repetition subscribes a fresh extra \
     consumer to the settled group, then closes it and waits for the remaining members to \
     settle again; all repetitions use the same group";

/// Runs the rebalance benchmark described by `cli`.
pub fn run(cli: &Cli) -> anyhow::Result<RebalanceReport> {
    let clock = Clock::new();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(cli.timeout_secs);
    let run_id = new_run_id(&clock);
    let group_id = cli.group_id_for(run_id);
    let members = usize::try_from(cli.members).unwrap_or(usize::MAX);

    let partitions = topic::ensure_topic(&cli.topic_spec(), deadline)?;
    if partitions.len() <= members {
        bail!(
            "topic {} has {} partitions; --mode rebalance needs more than --members ({members})",
            cli.topic,
            partitions.len()
        );
    }

    let trickle = Trickle::start(
        TrickleSpec {
            settings: ProducerSettings {
                bootstrap: cli.bootstrap.clone(),
                acks: cli.acks.as_str().to_string(),
                compression: cli.compression.as_str().to_string(),
                linger_ms: cli.linger_ms,
                message_timeout: Duration::from_secs(cli.timeout_secs),
                props: cli.producer_props.clone(),
            },
            topic: cli.topic.clone(),
            partitions: partitions.clone(),
            rate_per_partition: cli.trickle_rate,
            // Bounded by the CLI parser to 64 MiB.
            record_size: usize::try_from(cli.record_size).unwrap_or(usize::MAX),
            run_id,
        },
        clock,
    )?;

    let tracker = Arc::new(Tracker::new(&partitions));
    let errors = Arc::new(ErrorTally::default());
    let settings = MemberSettings {
        bootstrap: cli.bootstrap.clone(),
        topic: cli.topic.clone(),
        group_id: group_id.clone(),
        assignor: cli.assignor.as_str().to_string(),
        props: cli.consumer_props.clone(),
    };
    let log = |msg: String| {
        if !cli.quiet {
            eprintln!("[{:7.1}s] {msg}", started.elapsed().as_secs_f64());
        }
    };

    // Initial group; its clock starts at the first subscribe().
    let mut failures = Vec::new();
    tracker.begin_round((0..members).collect(), None);
    let mut group = Vec::with_capacity(members);
    for id in 0..members {
        group.push(Member::start(id, &settings, &tracker, &errors, |at| {
            tracker.start_clock(at);
        })?);
    }
    let initial = match tracker.wait_settled(deadline) {
        Ok(t) => {
            log(format!("initial group of {members} settled: {}", line(&t)));
            Some(t)
        }
        Err(state) => {
            failures.push(format!(
                "initial group of {members} did not settle before the timeout: {state}"
            ));
            None
        }
    };

    let mut repetitions = Vec::new();
    if initial.is_some() {
        for rep in 1..=cli.repeat {
            let id = members + usize::try_from(rep).unwrap_or(usize::MAX);
            let outcome = repetition(id, &settings, &tracker, &errors, deadline)?;
            log(format!(
                "repetition {rep}/{}: join {}; leave {}",
                cli.repeat,
                outcome.join.as_ref().map_or("-".to_string(), line),
                outcome.leave.as_ref().map_or("-".to_string(), line)
            ));
            let complete = outcome.failure.is_none();
            if let Some(f) = outcome.failure {
                failures.push(format!("repetition {rep}: {f}"));
            }
            repetitions.push(Repetition {
                repetition: rep,
                member_id: id,
                join: outcome.join.as_ref().map(RoundReport::from),
                leave: outcome.leave.as_ref().map(RoundReport::from),
            });
            if !complete {
                break;
            }
        }
    }

    // Close all members at once (their rebalances are not measured).
    for m in &group {
        m.stop();
    }
    let give_up = deadline.max(Instant::now()) + CLOSE_GRACE;
    let mut unclosed = 0;
    for m in group {
        if !m.join_until(give_up)? {
            unclosed += 1;
        }
    }
    if unclosed > 0 {
        failures.push(format!("{unclosed} members did not finish closing"));
    }
    let trickle = trickle.stop();
    Ok(RebalanceReport::new(
        run_id,
        RebalanceConfig {
            bootstrap: cli.bootstrap.clone(),
            topic: cli.topic.clone(),
            partitions: partitions.len(),
            group_id,
            members: cli.members,
            repeat: cli.repeat,
            assignor: cli.assignor.as_str().to_string(),
            protocol: cli.assignor.protocol().to_string(),
            trickle_rate_per_partition: cli.trickle_rate,
            record_size: cli.record_size,
            repetition_method: REPETITION_METHOD,
            consumer_props: cli.consumer_props.iter().cloned().collect(),
            timeout_secs: cli.timeout_secs,
        },
        initial.as_ref().map(RoundReport::from),
        repetitions,
        TrickleReport::from(trickle),
        errors.snapshot(),
        failures,
    ))
}

/// Result of one join + leave repetition.
struct RepetitionOutcome {
    join: Option<RoundTimes>,
    leave: Option<RoundTimes>,
    failure: Option<String>,
}

/// Adds member `id`, waits for the join round, removes it again and waits
/// for the leave round.
fn repetition(
    id: usize,
    settings: &MemberSettings,
    tracker: &Arc<Tracker>,
    errors: &Arc<ErrorTally>,
    deadline: Instant,
) -> anyhow::Result<RepetitionOutcome> {
    let remaining: BTreeSet<usize> = tracker.member_ids();
    let mut with_extra = remaining.clone();
    with_extra.insert(id);
    tracker.begin_round(with_extra, None);
    let extra = Member::start(id, settings, tracker, errors, |at| tracker.start_clock(at))?;
    let join = match tracker.wait_settled(deadline) {
        Ok(t) => t,
        Err(state) => {
            extra.stop();
            extra.join_until(deadline + CLOSE_GRACE)?;
            return Ok(RepetitionOutcome {
                join: None,
                leave: None,
                failure: Some(format!(
                    "member {id} join did not settle before the timeout: {state}"
                )),
            });
        }
    };
    tracker.begin_round(remaining, None);
    extra.leave();
    let leave = tracker.wait_settled(deadline);
    if !extra.join_until(deadline + CLOSE_GRACE)? {
        return Ok(RepetitionOutcome {
            join: Some(join),
            leave: leave.ok(),
            failure: Some(format!("member {id} did not finish closing")),
        });
    }
    Ok(match leave {
        Ok(t) => RepetitionOutcome {
            join: Some(join),
            leave: Some(t),
            failure: None,
        },
        Err(state) => RepetitionOutcome {
            join: Some(join),
            leave: None,
            failure: Some(format!(
                "member {id} leave did not settle before the timeout: {state}"
            )),
        },
    })
}

/// Progress rendering of a round.
fn line(t: &RoundTimes) -> String {
    format!(
        "assigned {}, settled {}",
        format_ms(duration_ms(t.assigned)),
        format_ms(duration_ms(t.settled))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use rdkafka::mocking::MockCluster;

    fn run_mock(assignor: &str, repeat: &str) -> RebalanceReport {
        let mock = MockCluster::new(1).expect("mock cluster");
        mock.create_topic("lt", 6, 1).expect("mock topic");
        let bootstrap = mock.bootstrap_servers();
        let cli = Cli::try_parse_from([
            "kafscale-loadtest",
            "--mode",
            "rebalance",
            "--bootstrap",
            &bootstrap,
            "--topic",
            "lt",
            "--partitions",
            "6",
            "--members",
            "2",
            "--repeat",
            repeat,
            "--assignor",
            assignor,
            "--record-size",
            "64",
            "--trickle-rate",
            "50",
            "--consumer-prop",
            "heartbeat.interval.ms=100",
            // The mock coordinator waits session.timeout.ms - 1 s for every
            // membership change (Kafka finishes once all members rejoined),
            // and 3 s before forming a new group: keep it short but above 3 s.
            "--consumer-prop",
            "session.timeout.ms=4500",
            "--timeout-secs",
            "90",
            "--quiet",
        ])
        .expect("valid args");
        cli.validate().expect("valid");
        run(&cli).expect("run")
    }

    fn check(report: &RebalanceReport, repeat: usize) {
        eprintln!("{}", report.to_text());
        assert!(report.verdict.ok, "{}", report.to_text());
        assert!(report.initial.is_some());
        assert_eq!(report.repetitions.len(), repeat);
        for r in &report.repetitions {
            let join = r.join.as_ref().expect("join");
            assert!(join.assigned_ms <= join.settled_ms);
            assert_eq!(join.assignment_sizes, vec![2, 2, 2]);
            let leave = r.leave.as_ref().expect("leave");
            assert_eq!(leave.assignment_sizes, vec![3, 3]);
        }
        assert_eq!(
            report.join_settled_ms.as_ref().map(|s| s.count),
            Some(repeat)
        );
        assert!(report.trickle.acked > 0);
    }

    /// Eager protocol against librdkafka's mock cluster.
    #[test]
    fn eager_rebalance_against_mock_cluster() {
        check(&run_mock("range", "2"), 2);
    }

    /// Incremental cooperative protocol against the mock cluster.
    #[test]
    fn cooperative_rebalance_against_mock_cluster() {
        check(&run_mock("cooperative-sticky", "1"), 1);
    }
}
