//! etcd is not on the write path: with etcd down, owned partitions keep
//! accepting produces and serving fetches, group members keep heartbeating
//! and committing; what needs metadata (creating a topic) answers with an
//! error in bounded time; no process exits; everything works again once etcd
//! is back, and the history checker finds no violation.
//!
//! The outage lasts several lease TTLs, so a process that treated an
//! unreachable etcd as a lost lease would exit during it.
//!
//! One worker cut off from etcd alone (a network partition: S3 and the
//! gateways still reach it) loses its partitions to the others, which seal
//! its WAL streams; nothing it acknowledged is lost, and it leaves once it
//! hears from etcd again.

mod common;
mod common_cluster;
mod common_etcd;
mod common_history;
mod common_s3;
mod common_torture;

use common::{create_topic, unique_name};
use common_cluster::{Cluster, ClusterOptions, LEASE_TTL_MS};
use common_history::History;
use common_torture::{check_run, spawn_group_consumer, ProducerSpec, Producers, SMALL_SEGMENTS};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 4;

/// Tries to create a topic; returns whether it was created and how long the
/// answer took.
async fn try_create_topic(bootstrap: &str, name: &str) -> (Result<(), String>, Duration) {
    let admin: AdminClient<DefaultClientContext> = common::client_config(bootstrap, &[])
        .create()
        .expect("admin client");
    let started = Instant::now();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(20)));
    let r = admin
        .create_topics(&[NewTopic::new(name, 2, TopicReplication::Fixed(1))], &opts)
        .await;
    let outcome = match r {
        Ok(results) => match results.into_iter().next() {
            Some(Ok(_)) => Ok(()),
            Some(Err((_, code))) => Err(format!("{code:?}")),
            None => Err("no result".into()),
        },
        Err(e) => Err(e.to_string()),
    };
    (outcome, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn produce_fetch_and_groups_continue_while_etcd_is_down() {
    let mut c = Cluster::start(ClusterOptions {
        workers: 2,
        gateways: 2,
        ..Default::default()
    })
    .await;
    let topic = unique_name("etcd-outage");
    create_topic(&c.bootstrap(0), &topic, PARTITIONS, &[]).await;
    let history = History::new();
    let specs = ProducerSpec::mixed(2, |i| c.bootstrap(i), 300, 32);
    let producers = Producers::start(&specs, &topic, PARTITIONS, &history);
    let group = spawn_group_consumer(&c.bootstrap(1), &topic, "outage-group", &history);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let before = (history.acked(), group.stats());
    eprintln!(
        "[outage] {} acked, group {:?}; stopping etcd",
        before.0, before.1
    );
    c.etcd.kill();
    let outage = Duration::from_millis(4 * LEASE_TTL_MS);
    let outage_started = Instant::now();

    // Metadata changes cannot be made: a bounded, clear failure.
    let (created, took) = try_create_topic(&c.bootstrap(0), &unique_name("during")).await;
    eprintln!("[outage] CreateTopics during the outage: {created:?} after {took:?}");
    assert!(
        created.as_ref().is_err_and(|e| e.contains("RequestTimedOut")),
        "CreateTopics while etcd was down must fail with the retriable REQUEST_TIMED_OUT: {created:?}"
    );
    assert!(
        took < Duration::from_secs(25),
        "CreateTopics took {took:?} to fail while etcd was down"
    );

    tokio::time::sleep(outage.saturating_sub(outage_started.elapsed())).await;
    let during = (history.acked(), group.stats());
    eprintln!(
        "[outage] after {:?} without etcd: {} acked, group {:?}",
        outage_started.elapsed(),
        during.0,
        during.1
    );
    c.assert_all_running("while etcd was down");
    assert!(
        during.0 > before.0 + 500,
        "produces stalled while etcd was down: {} acked before, {} after",
        before.0,
        during.0
    );
    assert!(
        during.1.records > before.1.records && during.1.commits_ok > before.1.commits_ok + 2,
        "the group member stopped reading or committing while etcd was down: {:?} -> {:?}",
        before.1,
        during.1
    );

    c.etcd.restart().await;
    eprintln!("[outage] etcd is back");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_topic = unique_name("after");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (created, _) = try_create_topic(&c.bootstrap(1), &after_topic).await;
        match created {
            Ok(()) => break,
            Err(e) if e.contains("TopicAlreadyExists") => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "CreateTopics after etcd returned: {e}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let enqueued = producers.finish().await;
    c.assert_all_running("after etcd returned");
    let (report, group_stats) =
        check_run(&c, &[c.bootstrap(1)], &topic, PARTITIONS, &history, group).await;
    eprintln!("{report}\n{enqueued} enqueued; group {group_stats:?}");
    report.assert_ok();
}

/// A worker partitioned from etcd alone (it still reaches S3, and the
/// gateways still reach it) is the zombie the S3 fence exists for: its
/// lease runs out, its partitions move, and their new owners seal its WAL
/// streams while it may still be taking produces. Nothing it acknowledged
/// may be lost, and once it hears from etcd again it must leave (its lease
/// is gone) or have been fenced already.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_cut_off_from_etcd_alone_is_fenced_and_loses_no_acked_record() {
    let mut c = Cluster::start(ClusterOptions {
        workers: 3,
        gateways: 2,
        etcd_links: true,
        // Compaction and garbage collection run during the partition too.
        env: vec![("KAFSCALE_COMPACTION_INTERVAL_MS".into(), "1000".into())],
        ..Default::default()
    })
    .await;
    let topic = unique_name("etcd-partition");
    create_topic(&c.bootstrap(0), &topic, PARTITIONS, SMALL_SEGMENTS).await;
    let history = History::new();
    let specs = ProducerSpec::mixed(2, |i| c.bootstrap(i), 300, 32);
    let producers = Producers::start(&specs, &topic, PARTITIONS, &history);
    let group = spawn_group_consumer(&c.bootstrap(1), &topic, "partition-group", &history);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The worker that owns the most partitions.
    let mut owned = Vec::new();
    for i in 0..c.workers.len() {
        owned.push(c.owned_by(i).await);
    }
    let w = (0..owned.len()).max_by_key(|&i| owned[i]).unwrap_or(0);
    let acked_before = history.acked();
    eprintln!(
        "[partition] {acked_before} acked; cutting worker {w} (owns {}) off from etcd",
        owned[w]
    );
    c.etcd_links[w].cut();
    let cut_at = Instant::now();
    let deadline = cut_at + Duration::from_millis(10 * LEASE_TTL_MS);
    while c.owned_by(w).await > 0 {
        assert!(
            Instant::now() < deadline,
            "worker {w}'s partitions did not move within {:?} of the partition",
            cut_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "[partition] worker {w}'s partitions moved after {:?}",
        cut_at.elapsed()
    );
    // The new owners serve; the cut-off worker still believes it owns them.
    tokio::time::sleep(Duration::from_millis(2 * LEASE_TTL_MS)).await;
    let acked_during = history.acked();
    assert!(
        acked_during > acked_before + 500,
        "produces stalled while worker {w} was cut off: {acked_before} acked before, {acked_during} after"
    );
    c.etcd_links[w].heal();
    eprintln!("[partition] healed after {:?}", cut_at.elapsed());
    // Its lease is gone (exit 3), or a write of its was refused by a seal
    // first (exit 4).
    let exit = c.workers[w].wait_exit(Duration::from_secs(60)).await;
    let code = exit.and_then(|e| e.code());
    assert!(
        matches!(code, Some(3 | 4)),
        "worker {w} did not leave after the partition healed ({exit:?}):\n{}",
        c.workers[w].log_tail(40)
    );
    c.workers[w].start().await;
    c.wait_all_assigned(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let enqueued = producers.finish().await;
    c.assert_all_running("after the partition");
    let (report, group_stats) =
        check_run(&c, &[c.bootstrap(1)], &topic, PARTITIONS, &history, group).await;
    eprintln!(
        "{report}\n{enqueued} enqueued; group {group_stats:?}; worker {w} left with {code:?}"
    );
    report.assert_ok();
}
