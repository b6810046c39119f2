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
use common_history::History;
use common_torture::{check_run, spawn_group_consumer, ProducerSpec, Producers};
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
