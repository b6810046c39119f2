//! Torture: the durability promise under injected S3 faults.
//!
//! A distributed cluster (etcd, moto behind the fault-injecting proxy, 3
//! workers, 2 gateways) takes acks=all load from idempotent and plain
//! librdkafka producers through both gateways and a consumer group
//! committing as it reads, while the proxy fails the workers' WAL PUTs
//! (500 InternalError, 503 SlowDown, connection resets, lost responses of
//! PUTs that succeeded, slow answers) and some of their reads and listings;
//! midway a worker is killed with SIGKILL and restarted after its
//! partitions moved (its stream is sealed, under the same faults). Then
//! everything is read back from offset 0 through both gateways and the
//! history checker must find no violation: every acknowledged record at its
//! acked offset, no offset with two values, no phantom, no duplicate from an
//! idempotent producer, no committed offset going back. The test also
//! requires that each kind of PUT fault was really injected.
//!
//! A second test cuts one worker off from S3 alone, at the TCP level, for
//! longer than a WAL write may take: that worker must acknowledge nothing
//! while its store is unreachable, the others must go on (also for a client
//! whose requests carry partitions of both), and once the link heals it
//! must resume on its own, with nothing lost.

mod common;
mod common_cluster;
mod common_etcd;
mod common_faults;
mod common_history;
mod common_s3;
mod common_torture;

use common::create_topic;
use common_cluster::{Cluster, ClusterOptions, S3Proxy, LEASE_TTL_MS};
use common_faults::{FaultKind, FaultProxy, Op};
use common_history::{Event, History};
use common_torture::{
    check_run, spawn_group_consumer, spawn_producer, ProducerSpec, Producers, SMALL_SEGMENTS,
};
use rdkafka::producer::FutureRecord;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_records_survive_s3_faults_and_a_worker_kill() {
    let started = Instant::now();
    let seed: u64 = std::env::var("KAFSCALE_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0016);
    let proxy = FaultProxy::start(seed);
    let hook = proxy.clone();
    let mut c = Cluster::start_with_s3_proxy(
        ClusterOptions {
            workers: 3,
            gateways: 2,
            ..Default::default()
        },
        S3Proxy::new(move |moto| {
            hook.set_upstream(moto);
            hook.endpoint()
        }),
    )
    .await;
    let topic = common::unique_name("torture-s3");
    create_topic(&c.bootstrap(0), &topic, PARTITIONS, &[]).await;
    let history = History::new();
    let producers = Producers::start(
        &ProducerSpec::mixed(4, |i| c.bootstrap(i / 2), 300, 64),
        &topic,
        PARTITIONS,
        &history,
    );
    let group = spawn_group_consumer(&c.bootstrap(1), &topic, "torture-group", &history);
    tokio::time::sleep(Duration::from_secs(2)).await;

    common_faults::arm_wal_faults(&proxy, 0.03);
    eprintln!("[torture] faults armed (seed {seed:#x})");
    tokio::time::sleep(Duration::from_secs(12)).await;
    eprintln!("[torture] {} acked; kill -9 worker 1", history.acked());
    c.workers[1].kill9();
    tokio::time::sleep(Duration::from_millis(LEASE_TTL_MS + 1500)).await;
    c.workers[1].start().await;
    eprintln!("[torture] worker 1 restarted; {} acked", history.acked());
    tokio::time::sleep(Duration::from_secs(12)).await;

    let enqueued = producers.finish().await;
    proxy.clear_all();
    eprintln!("[torture] producers done ({enqueued} enqueued); faults cleared");
    let bootstraps = [c.bootstrap(0), c.bootstrap(1)];
    let (report, group_stats) =
        check_run(&c, &bootstraps, &topic, PARTITIONS, &history, group).await;
    let stats = proxy.stats();
    eprintln!("{report}\n{stats}\ngroup consumer: {group_stats:?}");
    eprintln!("[torture] total {:?}", started.elapsed());
    report.assert_ok();
    assert!(
        report.acked > 3000,
        "too few records acknowledged ({}) for the run to mean anything:\n{report}",
        report.acked
    );
    for kind in [
        FaultKind::InternalError,
        FaultKind::SlowDown,
        FaultKind::Reset,
        FaultKind::LostResponse,
        FaultKind::Slow,
    ] {
        assert!(
            stats.faults(Op::Put, kind) > 0,
            "no {kind} was injected into a PUT:\n{stats}"
        );
    }
    assert!(
        stats.lost.iter().any(|l| l.status == 200),
        "no PUT succeeded behind a lost response:\n{stats}"
    );
    assert!(
        group_stats.commits_ok > 0 && group_stats.fetches_ok > 0,
        "the group consumer never committed or fetched its offsets: {group_stats:?}"
    );
}

/// Records acknowledged for which `counted(producer, partition)` holds.
fn acked_where(history: &History, counted: impl Fn(&str, i32) -> bool) -> usize {
    history
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Ack { producer, partition, .. } if counted(producer, *partition)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_cut_off_from_s3_alone_acknowledges_nothing_then_resumes_losing_nothing() {
    // Longer than a WAL write may take (the writer's 30 s deadline, and the
    // S3 client's 30 s attempt timeout): the cut fails writes, not only
    // delays them.
    const CUT: Duration = Duration::from_secs(36);
    let mut c = Cluster::start(ClusterOptions {
        workers: 3,
        gateways: 2,
        s3_links: true,
        // Compaction and garbage collection run during the partition too.
        env: vec![("KAFSCALE_COMPACTION_INTERVAL_MS".into(), "1000".into())],
        ..Default::default()
    })
    .await;
    let topic = common::unique_name("s3-partition");
    create_topic(&c.bootstrap(0), &topic, PARTITIONS, SMALL_SEGMENTS).await;
    let history = History::new();
    let producers = Producers::start(
        &ProducerSpec::mixed(2, |i| c.bootstrap(i), 300, 32),
        &topic,
        PARTITIONS,
        &history,
    );
    let group = spawn_group_consumer(&c.bootstrap(1), &topic, "s3-partition-group", &history);
    // A producer writing to every partition in turn with no cap on the
    // records awaiting their report (unlike the torture producers): while
    // one owner cannot write, it goes on sending to the others over the
    // same connection.
    let stop_steady = Arc::new(AtomicBool::new(false));
    let steady = spawn_producer(
        ProducerSpec {
            id: "steady".into(),
            bootstrap: c.bootstrap(0),
            idempotent: false,
            rate: 100,
            max_inflight: usize::MAX,
        },
        topic.clone(),
        PARTITIONS,
        &history,
        stop_steady.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The worker that owns the most of the topic's partitions.
    let mut owners = Vec::new();
    for p in 0..PARTITIONS {
        owners.push(c.owner(&topic, p).await);
    }
    let w = (0..c.workers.len())
        .max_by_key(|&i| owners.iter().filter(|o| **o == Some(i)).count())
        .unwrap_or(0);
    let cut_off: Vec<i32> = (0..PARTITIONS)
        .filter(|&p| owners[p as usize] == Some(w))
        .collect();
    assert!(
        !cut_off.is_empty(),
        "no worker owns a partition: {owners:?}"
    );
    eprintln!(
        "[s3-partition] {} acked; cutting worker {w} (partitions {cut_off:?}) off from S3",
        history.acked()
    );
    c.s3_links[w].cut();
    let cut_at = Instant::now();
    // What was on its way back when the link was cut may still arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut_off_acked = acked_where(&history, |_, p| cut_off.contains(&p));
    // A client that writes only to the other workers' partitions is served
    // through either gateway meanwhile. (The torture producers write to
    // every partition: their records for the cut-off worker wait, and with
    // them, in order, each request they share a connection with.)
    let healthy = (0..PARTITIONS)
        .find(|p| !cut_off.contains(p))
        .expect("a partition of another worker");
    let probes = history.producer("probe", false);
    for g in 0..c.gateways.len() {
        let probe = common::producer(&c.bootstrap(g), &[("message.timeout.ms", "10000")]);
        let value = format!("probe-{g}");
        probes.send(Some(healthy), &value);
        let sent = probe
            .send(
                FutureRecord::to(&topic)
                    .partition(healthy)
                    .key(&value)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await;
        match sent {
            Ok(d) => probes.ack(&value, d.partition, d.offset),
            Err((e, _)) => {
                panic!("a produce to partition {healthy} through gateway {g} failed while worker {w} was cut off from S3: {e}")
            }
        }
    }
    // The steady producer's connection carries the cut-off worker's
    // partitions too. Once that worker refuses new produces (its oldest WAL
    // write waited 10 s) and the requests it held timed out (15 s), the
    // connection flows again for the other partitions.
    tokio::time::sleep(Duration::from_secs(22).saturating_sub(cut_at.elapsed())).await;
    let steady_at_22s = acked_where(&history, |by, p| by == "steady" && !cut_off.contains(&p));
    tokio::time::sleep(CUT.saturating_sub(cut_at.elapsed())).await;
    let steady_at_heal = acked_where(&history, |by, p| by == "steady" && !cut_off.contains(&p));
    let cut_off_during = acked_where(&history, |_, p| cut_off.contains(&p));
    assert!(
        steady_at_heal >= steady_at_22s + 200,
        "a client writing to every partition stalled on the other workers' too: {steady_at_22s} acked elsewhere 22 s into the cut, {steady_at_heal} at the heal"
    );
    for p in &cut_off {
        assert_eq!(
            c.owner(&topic, *p).await,
            Some(w),
            "partition {p} moved although worker {w} still holds its lease"
        );
    }
    assert_eq!(
        cut_off_during, cut_off_acked,
        "worker {w} acknowledged records while S3 was unreachable"
    );
    c.s3_links[w].heal();
    eprintln!(
        "[s3-partition] healed after {:?}; {} acked",
        cut_at.elapsed(),
        history.acked()
    );
    let resumed_by = Instant::now() + Duration::from_secs(60);
    while acked_where(&history, |_, p| cut_off.contains(&p)) < cut_off_during + 100 {
        assert!(
            Instant::now() < resumed_by,
            "worker {w} did not resume acknowledging within 60 s of the heal:\n{}",
            c.workers[w].log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "[s3-partition] worker {w} acknowledges again; the steady producer had {steady_at_22s} acked elsewhere 22 s into the cut, {steady_at_heal} at the heal"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let enqueued = producers.finish().await;
    stop_steady.store(true, Ordering::SeqCst);
    steady.await.expect("steady producer");
    c.assert_all_running("during or after the partition");
    let (report, group_stats) =
        check_run(&c, &[c.bootstrap(1)], &topic, PARTITIONS, &history, group).await;
    eprintln!("{report}\n{enqueued} enqueued; group {group_stats:?}");
    report.assert_ok();
}
