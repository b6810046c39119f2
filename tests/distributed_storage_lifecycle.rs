//! The storage lifecycle in distributed mode (issue 11): workers on etcd and
//! a real S3-compatible server (moto). Retention and garbage collection keep
//! the bucket from growing, the earliest offset advances and a consumer from
//! it gets exactly the retained records; a compacted topic keeps the latest
//! value per key across a failover; an empty group's offsets expire; and a
//! zombie owner's compaction is refused while its successor's log stays
//! whole.

mod common;
mod common_cluster;
mod common_etcd;
mod common_s3;

use common::{
    commit_offset, committed_offset, consume_ranges, consumer, create_topic, eventually, producer,
    read_to_end, unique_name, watermarks,
};
use common_cluster::{Cluster, ClusterOptions};
use kafscale_logworker::metrics::S3Metrics;
use kafscale_logworker::objstore::ObjectStore;
use rdkafka::producer::FutureRecord;
use std::time::Duration;

/// One cluster at a time on a small machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The lifecycle settings every process of these tests runs with.
fn lifecycle_env() -> Vec<(String, String)> {
    vec![
        ("KAFSCALE_COMPACTION_INTERVAL_MS".into(), "300".into()),
        ("KAFSCALE_OFFSETS_RETENTION_MINUTES".into(), "0.05".into()),
    ]
}

/// Objects in the cluster's bucket under its namespace.
async fn bucket_objects(c: &Cluster) -> usize {
    let metrics = S3Metrics::new(&prometheus::Registry::new()).expect("metrics");
    let store = c.s3.connect(c.s3.config(&c.bucket), metrics).await;
    store
        .list(&format!("{}/", c.namespace))
        .await
        .expect("list bucket")
        .len()
}

/// Sends `records` (key, value) to partition 0 in order, in rounds of 50;
/// returns their offsets.
async fn produce_keyed(bootstrap: &str, topic: &str, records: &[(String, String)]) -> Vec<i64> {
    let p = producer(bootstrap, &[("linger.ms", "2")]);
    let mut offsets = Vec::new();
    for round in records.chunks(50) {
        let sends: Vec<_> = round
            .iter()
            .map(|(k, v)| {
                let p = p.clone();
                async move {
                    p.send(
                        FutureRecord::to(topic).partition(0).key(k).payload(v),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|d| d.offset)
                }
            })
            .collect();
        for r in futures::future::join_all(sends).await {
            offsets.push(r.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}")));
        }
    }
    offsets
}

fn value(i: usize) -> String {
    format!("value-{i:06}-{}", "r".repeat(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_gc_compaction_and_offset_expiry_on_etcd_and_s3() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(ClusterOptions {
        workers: 2,
        gateways: 1,
        env: lifecycle_env(),
        ..Default::default()
    })
    .await;
    let b = c.bootstrap(0);

    // Retention: everything older than 6 s goes, whole segments at a time.
    let timed = unique_name("aged");
    create_topic(
        &b,
        &timed,
        1,
        &[
            ("segment.bytes", "16384"),
            ("segment.ms", "500"),
            ("retention.ms", "6000"),
        ],
    )
    .await;
    let first: Vec<(String, String)> = (0..1500).map(|i| (format!("k{i}"), value(i))).collect();
    produce_keyed(&b, &timed, &first).await;
    let peak = bucket_objects(&c).await;
    let (bb, t) = (b.clone(), timed.clone());
    eventually(
        "retention moves the earliest offset past the first 1,500 records",
        Duration::from_secs(60),
        async || {
            let (bb, t) = (bb.clone(), t.clone());
            tokio::task::spawn_blocking(move || watermarks(&consumer(&bb, &[]), &t, 0).0 >= 1500)
                .await
                .unwrap_or(false)
        },
    )
    .await;
    let mut after = peak;
    for _ in 0..100 {
        after = bucket_objects(&c).await;
        if after * 2 < peak {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("[lifecycle] bucket objects: {peak} after producing, {after} after retention and GC");
    assert!(
        after * 2 < peak,
        "the bucket did not shrink: {peak} objects, then {after}"
    );
    // Fresh records are retained and read back exactly, byte for byte.
    let second: Vec<(String, String)> = (1500..1600).map(|i| (format!("k{i}"), value(i))).collect();
    let offsets = produce_keyed(&b, &timed, &second).await;
    let (bb, t) = (b.clone(), timed.clone());
    let (low, high) = tokio::task::spawn_blocking(move || watermarks(&consumer(&bb, &[]), &t, 0))
        .await
        .expect("watermarks");
    assert_eq!((low, high), (1500, 1600));
    let (bb, t) = (b.clone(), timed.clone());
    let got = tokio::task::spawn_blocking(move || {
        consume_ranges(&bb, &t, &[(0, low, high)], Duration::from_secs(60))
    })
    .await
    .expect("consume")
    .remove(&0)
    .unwrap_or_default();
    assert_eq!(got.len(), 100);
    for ((r, o), (k, v)) in got.iter().zip(&offsets).zip(&second) {
        assert_eq!(r.offset, *o);
        assert_eq!(r.key.as_deref(), Some(k.as_bytes()));
        assert_eq!(r.value.as_deref(), Some(v.as_bytes()));
    }

    // Key compaction, then a kill -9 of the owner: the new owner serves the
    // cleaned log.
    let compacted = unique_name("compacted");
    create_topic(
        &b,
        &compacted,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "4096"),
            ("segment.ms", "300"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    )
    .await;
    let versions: Vec<(String, String)> = (0..400)
        .map(|i| (format!("key-{}", i % 20), format!("{}-v{i}", i % 20)))
        .collect();
    let offsets = produce_keyed(&b, &compacted, &versions).await;
    let mut latest = std::collections::BTreeMap::new();
    for ((k, v), o) in versions.iter().zip(&offsets) {
        latest.insert(k.clone(), (*o, v.clone()));
    }
    let mut want: Vec<(i64, String, Option<String>)> = latest
        .into_iter()
        .map(|(k, (o, v))| (o, k, Some(v)))
        .collect();
    want.sort();
    let read = |b: String, t: String| async move {
        tokio::task::spawn_blocking(move || read_to_end(&b, &t))
            .await
            .expect("read")
    };
    let mut last = Vec::new();
    for _ in 0..200 {
        last = read(b.clone(), compacted.clone()).await;
        if last == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(last, want, "not cleaned to the latest value per key");
    let owner = c.owner(&compacted, 0).await.expect("owner");
    c.workers[owner].kill9();
    eventually(
        "the compacted partition moves to the other worker",
        Duration::from_secs(30),
        async || c.owner(&compacted, 0).await.is_some_and(|o| o != owner),
    )
    .await;
    let mut after_failover = Vec::new();
    for _ in 0..100 {
        after_failover = read(b.clone(), compacted.clone()).await;
        if after_failover == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(after_failover, want, "after a kill -9 of the owner");
    c.workers[owner].start().await;

    // An empty group's committed offset expires (0.05 minutes).
    let group = unique_name("expiring");
    let (bb, t, g) = (b.clone(), timed.clone(), group.clone());
    tokio::task::spawn_blocking(move || commit_offset(&bb, &g, &t, 1550))
        .await
        .expect("commit");
    eventually(
        "an empty group's offset expires",
        Duration::from_secs(60),
        async || {
            let (bb, t, g) = (b.clone(), timed.clone(), group.clone());
            tokio::task::spawn_blocking(move || committed_offset(&bb, &g, &t).is_none())
                .await
                .unwrap_or(false)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zombie_owners_compaction_is_refused_and_the_log_stays_whole() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(ClusterOptions {
        workers: 1,
        gateways: 1,
        env: lifecycle_env(),
        ..Default::default()
    })
    .await;
    // The only worker stops itself once it has written its first segment,
    // before publishing it.
    c.workers[0].set_env(
        "KAFSCALE_FAILPOINT",
        Some("compaction-segment-written:stop"),
    );
    c.workers[0].kill9();
    c.workers[0].start().await;
    let b = c.bootstrap(0);
    let topic = unique_name("zombie");
    // Cut by age, after every record below is acknowledged.
    create_topic(&b, &topic, 1, &[("segment.ms", "2000")]).await;
    let records: Vec<(String, String)> = (0..100).map(|i| (format!("k{i}"), value(i))).collect();
    let acked = produce_keyed(&b, &topic, &records).await;
    eventually(
        "the owner stops in the middle of compaction",
        Duration::from_secs(30),
        async || c.workers[0].is_stopped(),
    )
    .await;
    // A new worker takes the partition over (the stopped one's lease
    // expires) and compacts it.
    let w1 = c.add_worker().await;
    eventually(
        "the partition moves to the new worker",
        Duration::from_secs(30),
        async || c.owner(&topic, 0).await == Some(w1),
    )
    .await;
    eventually(
        "the new owner publishes segments",
        Duration::from_secs(30),
        async || c.workers[w1].log().contains("segment published"),
    )
    .await;
    // The zombie goes on: its swap fails (or it notices its lost lease and
    // exits first, whichever comes first); it publishes nothing.
    c.workers[0].signal("CONT");
    let mut exited = false;
    eventually(
        "the zombie's compaction is refused or the zombie exits",
        Duration::from_secs(30),
        async || {
            exited = exited || c.workers[0].try_exit().is_some();
            exited || c.workers[0].log().contains("compaction failed")
        },
    )
    .await;
    let zombie = c.workers[0].log();
    eprintln!(
        "[zombie] {}",
        if zombie.contains("compaction failed") {
            "its compaction swap was refused"
        } else {
            "it exited on its lost lease before its swap"
        }
    );
    let tail = zombie
        .rsplit("failpoint: continued")
        .next()
        .unwrap_or_default();
    assert!(
        !tail.contains("segment published"),
        "the zombie published a segment after its partition moved:\n{tail}"
    );
    // More records through the new owner; the whole log reads back once,
    // in order, at the acknowledged offsets.
    let more: Vec<(String, String)> = (100..150).map(|i| (format!("k{i}"), value(i))).collect();
    let acked_more = produce_keyed(&b, &topic, &more).await;
    let all: Vec<i64> = acked.iter().chain(&acked_more).copied().collect();
    let got = tokio::task::block_in_place(|| read_to_end(&b, &topic));
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        all,
        "offsets of the log after the zombie"
    );
    for (r, (_, v)) in got.iter().zip(records.iter().chain(&more)) {
        assert_eq!(r.2.as_deref(), Some(v.as_str()));
    }
}
