//! Nemesis: the durability promise under random process, metadata and
//! storage faults.
//!
//! A distributed cluster (etcd, moto behind the fault-injecting S3 proxy, 3
//! workers, 2 gateways) takes continuous acks=all load from idempotent and
//! plain librdkafka producers through both gateways and a consumer group that
//! commits as it reads, while a seeded nemesis injects one fault at a time,
//! each followed by recovery:
//!
//! - `kill9`: SIGKILL a worker, restart it (before or after its lease ran
//!   out);
//! - `pause`: SIGSTOP a worker past its lease TTL, SIGCONT it: it must notice
//!   it lost its lease (or was fenced) and exit; then it is restarted;
//! - `partition`: cut a worker off from etcd alone past its lease TTL (it
//!   keeps running and reaching S3, the gateways keep reaching it), heal the
//!   link: it must leave (lease lost, or fenced by a new owner's seal); then
//!   it is restarted;
//! - `drain`: SIGTERM a worker (planned handover), restart it;
//! - `gateway`: SIGKILL a gateway, restart it;
//! - `etcd`: kill etcd for a while, restart it (data kept);
//! - `s3`: a burst of S3 faults on WAL objects (500, 503 SlowDown, resets,
//!   lost responses of PUTs that succeeded, slow answers).
//!
//! Compaction into segments (256 KiB or 4 s) and garbage collection run the
//! whole time, so faults hit them mid-way and the final reads come mostly
//! from segments.
//!
//! The first seven steps cover every kind once (in seeded order); later steps
//! are drawn at random. Afterwards everything is read back through both
//! gateways and the history checker must find no violation.
//!
//! `KAFSCALE_NEMESIS_STEPS` (default 8) and `KAFSCALE_NEMESIS_SEED` set the
//! run; `KAFSCALE_NEMESIS_PLACEMENT` the workers' `KAFSCALE_PLACEMENT`
//! (default `spread`; `pack` keeps this light load on one worker, so every
//! failover of it moves all partitions);
//! `KAFSCALE_NEMESIS_REPORT=<file>` appends the summary to a file. The
//! short default run is part of the test suite; `scripts/nemesis.sh` is the
//! long one (≥ 100 worker failovers) whose result is in docs/reliability.md.

mod common;
mod common_cluster;
mod common_etcd;
mod common_faults;
mod common_history;
mod common_s3;
mod common_torture;

use common::create_topic;
use common_cluster::{Cluster, ClusterOptions, S3Proxy, LEASE_TTL_MS};
use common_faults::FaultProxy;
use common_history::History;
use common_torture::{check_run, spawn_group_consumer, ProducerSpec, Producers, SMALL_SEGMENTS};
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 6;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill9,
    Pause,
    Partition,
    Drain,
    Gateway,
    Etcd,
    S3,
}

const KINDS: [Kind; 7] = [
    Kind::Kill9,
    Kind::Pause,
    Kind::Partition,
    Kind::Drain,
    Kind::Gateway,
    Kind::Etcd,
    Kind::S3,
];

/// Random draws after the first round: worker failovers dominate.
const WEIGHTS: [(Kind, u32); 7] = [
    (Kind::Kill9, 4),
    (Kind::Pause, 2),
    (Kind::Partition, 2),
    (Kind::Drain, 2),
    (Kind::Gateway, 1),
    (Kind::Etcd, 1),
    (Kind::S3, 2),
];

fn draw(rng: &mut StdRng) -> Kind {
    let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for (k, w) in WEIGHTS {
        if x < w {
            return k;
        }
        x -= w;
    }
    Kind::Kill9
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        }
    })
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

/// Injects `kind` and recovers from it; returns a line describing it.
async fn inject(kind: Kind, c: &mut Cluster, proxy: &FaultProxy, rng: &mut StdRng) -> String {
    let w = rng.random_range(0..c.workers.len());
    match kind {
        Kind::Kill9 => {
            c.workers[w].kill9();
            // Sometimes back before its lease ran out (the same worker id
            // takes its partitions back with a new stream), sometimes after.
            let down = ms(rng, 200, LEASE_TTL_MS + 2000);
            tokio::time::sleep(down).await;
            c.workers[w].start().await;
            format!("kill -9 worker {w}, restarted after {down:?}")
        }
        Kind::Pause => {
            c.workers[w].signal("STOP");
            let paused = Duration::from_millis(LEASE_TTL_MS + 1500) + ms(rng, 0, 2000);
            tokio::time::sleep(paused).await;
            c.workers[w].signal("CONT");
            let exit = c.workers[w].wait_exit(Duration::from_secs(30)).await;
            assert!(
                exit.is_some(),
                "worker {w} kept running after SIGSTOP for {paused:?} and SIGCONT:\n{}",
                c.workers[w].log_tail(40)
            );
            c.workers[w].start().await;
            format!("SIGSTOP worker {w} for {paused:?}, SIGCONT (exited {exit:?}), restarted")
        }
        Kind::Partition => {
            c.etcd_links[w].cut();
            let cut = Duration::from_millis(LEASE_TTL_MS + 1500) + ms(rng, 0, 3000);
            tokio::time::sleep(cut).await;
            c.etcd_links[w].heal();
            // Lease lost (exit 3) or fenced by a seal (exit 4).
            let exit = c.workers[w].wait_exit(Duration::from_secs(60)).await;
            let code = exit.and_then(|e| e.code());
            assert!(
                matches!(code, Some(3 | 4)),
                "worker {w} did not leave after {cut:?} cut off from etcd ({exit:?}):\n{}",
                c.workers[w].log_tail(40)
            );
            c.workers[w].start().await;
            format!("worker {w} cut off from etcd for {cut:?}, healed (exit {code:?}), restarted")
        }
        Kind::Drain => {
            c.workers[w].signal("TERM");
            let exit = c.workers[w].wait_exit(Duration::from_secs(60)).await;
            let exit = exit.unwrap_or_else(|| {
                panic!(
                    "worker {w} did not exit within 60 s of SIGTERM:\n{}",
                    c.workers[w].log_tail(40)
                )
            });
            // A new owner may have fenced it just before (exit 4): that is
            // the worker's documented reaction, not a failed drain.
            let log = c.workers[w].log();
            let this_run = log
                .rsplit("starting `kafscale logworker` run")
                .next()
                .unwrap_or("");
            let fenced = exit.code() == Some(4) && this_run.contains("WAL stream fenced");
            assert!(
                exit.success() || fenced,
                "worker {w} drained with {exit}:\n{}",
                c.workers[w].log_tail(40)
            );
            c.workers[w].start().await;
            if fenced {
                format!("SIGTERM worker {w} (already fenced, exit 4), restarted")
            } else {
                format!("SIGTERM worker {w} (drained), restarted")
            }
        }
        Kind::Gateway => {
            let g = rng.random_range(0..c.gateways.len());
            c.gateways[g].kill9();
            let down = ms(rng, 200, 3000);
            tokio::time::sleep(down).await;
            c.gateways[g].start().await;
            format!("kill -9 gateway {g}, restarted after {down:?}")
        }
        Kind::Etcd => {
            c.etcd.kill();
            let down = ms(rng, 1000, 2 * LEASE_TTL_MS);
            tokio::time::sleep(down).await;
            c.etcd.restart().await;
            format!("etcd down for {down:?}")
        }
        Kind::S3 => {
            common_faults::arm_wal_faults(proxy, 0.05);
            let burst = ms(rng, 3000, 8000);
            tokio::time::sleep(burst).await;
            proxy.clear_all();
            format!("S3 fault burst for {burst:?}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acked_record_is_lost_under_a_random_nemesis() {
    let started = Instant::now();
    let steps = env_u64("KAFSCALE_NEMESIS_STEPS").unwrap_or(8) as usize;
    let seed = env_u64("KAFSCALE_NEMESIS_SEED").unwrap_or(0x4e4e_0016);
    let mut rng = StdRng::seed_from_u64(seed);
    let proxy = FaultProxy::start(seed);
    let hook = proxy.clone();
    let mut c = Cluster::start_with_s3_proxy(
        ClusterOptions {
            workers: 3,
            gateways: 2,
            etcd_links: true,
            // Compaction and garbage collection run all along (they delete
            // data, so they must face the same faults).
            env: vec![("KAFSCALE_COMPACTION_INTERVAL_MS".into(), "1000".into())],
            worker_env: vec![(
                "KAFSCALE_PLACEMENT".into(),
                std::env::var("KAFSCALE_NEMESIS_PLACEMENT").unwrap_or_else(|_| "spread".into()),
            )],
            ..Default::default()
        },
        S3Proxy::new(move |moto| {
            hook.set_upstream(moto);
            hook.endpoint()
        }),
    )
    .await;
    let topic = common::unique_name("nemesis");
    create_topic(&c.bootstrap(0), &topic, PARTITIONS, SMALL_SEGMENTS).await;
    let history = History::new();
    let specs = ProducerSpec::mixed(4, |i| c.bootstrap(i / 2), 200, 64);
    let producers = Producers::start(&specs, &topic, PARTITIONS, &history);
    let group = spawn_group_consumer(&c.bootstrap(1), &topic, "nemesis-group", &history);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut first_round = KINDS.to_vec();
    first_round.shuffle(&mut rng);
    let mut counts: BTreeMap<Kind, u32> = BTreeMap::new();
    for step in 0..steps {
        let kind = first_round
            .get(step)
            .copied()
            .unwrap_or_else(|| draw(&mut rng));
        let what = inject(kind, &mut c, &proxy, &mut rng).await;
        *counts.entry(kind).or_default() += 1;
        eprintln!(
            "[nemesis] step {}/{steps} at {:?}: {what}; {} acked",
            step + 1,
            started.elapsed(),
            history.acked()
        );
        c.wait_all_assigned(Duration::from_secs(60)).await;
        tokio::time::sleep(ms(&mut rng, 1000, 3000)).await;
    }

    let enqueued = producers.finish().await;
    proxy.clear_all();
    let bootstraps = [c.bootstrap(0), c.bootstrap(1)];
    let (report, group_stats) =
        check_run(&c, &bootstraps, &topic, PARTITIONS, &history, group).await;
    let s3 = proxy.stats();
    let failovers: u32 = [Kind::Kill9, Kind::Pause, Kind::Partition, Kind::Drain]
        .iter()
        .map(|k| counts.get(k).copied().unwrap_or(0))
        .sum();
    let summary = format!(
        "nemesis seed {seed:#x}: {steps} faults in {:?} ({failovers} worker failovers) {counts:?}; \
         S3 faults injected {}, lost PUT responses {}; records sent {}, acknowledged {}, \
         failed {}, lost {}, wrong offset {}, idempotent duplicates {}, phantoms {}, \
         violations {}; sends failed as out of sequence {}; group commits ok {} / failed {}",
        started.elapsed(),
        s3.total_faults(),
        s3.lost.len(),
        report.sent,
        report.acked,
        report.errors,
        report.lost,
        report.wrong_offset,
        report.idempotent_duplicates,
        report.phantoms,
        report.violations.len(),
        report
            .error_kinds
            .iter()
            .filter(|(e, _)| e.contains("OutOfOrderSequence") || e.contains("Fatal"))
            .map(|(_, n)| n)
            .sum::<u64>(),
        group_stats.commits_ok,
        group_stats.commits_failed,
    );
    eprintln!("{report}\n{s3}\n{enqueued} enqueued\n[nemesis] {summary}");
    if let Ok(path) = std::env::var("KAFSCALE_NEMESIS_REPORT") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = writeln!(f, "{summary}\n{report}\n{s3}");
        }
    }
    report.assert_ok();
    assert!(
        report.acked > 1000,
        "too few records acknowledged ({}) for the run to mean anything:\n{report}",
        report.acked
    );
    assert!(
        group_stats.commits_ok > 0,
        "the group member never committed: {group_stats:?}"
    );
}
