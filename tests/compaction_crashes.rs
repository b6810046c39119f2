//! Crash tests of the storage lifecycle (issue 11): `kafscale dev` aborts at
//! each step of compaction, key compaction, retention and garbage collection (failpoints,
//! built only with `--features failpoints`, which scripts/test.sh uses), and
//! after a restart every acknowledged record is still read back exactly
//! once, at its offset, and compaction carries on.
#![cfg(feature = "failpoints")]

mod common;

use common::{
    consume_ranges, consumer, create_topic, eventually, producer, unique_name, watermarks,
    DevOptions, DevServer,
};
use rdkafka::producer::FutureRecord;
use std::time::Duration;

/// Produces `n` records in rounds (many WAL flushes); returns their offsets.
async fn produce(server: &DevServer, topic: &str, n: usize) -> Vec<i64> {
    // Short timeouts: once the failpoint fires, sends in flight fail fast.
    let p = producer(
        &server.bootstrap(),
        &[
            ("linger.ms", "1"),
            ("message.timeout.ms", "5000"),
            ("request.timeout.ms", "3000"),
        ],
    );
    let mut offsets = Vec::with_capacity(n);
    for round in 0..n / 25 {
        let sends: Vec<_> = (0..25)
            .map(|i| {
                let value = format!("value-{:06}-{}", round * 25 + i, "y".repeat(300));
                // Every record its own key: key compaction keeps them all.
                let key = format!("key-{}-{:06}", std::process::id(), round * 25 + i);
                let p = p.clone();
                let topic = topic.to_string();
                async move {
                    p.send(
                        FutureRecord::to(&topic)
                            .partition(0)
                            .key(&key)
                            .payload(&value),
                        Duration::from_secs(30),
                    )
                    .await
                }
            })
            .collect();
        for r in futures::future::join_all(sends).await {
            match r {
                Ok(d) => offsets.push(d.offset),
                // The failpoint may fire while records are in flight:
                // unacknowledged ones prove nothing either way.
                Err(_) => return offsets,
            }
        }
    }
    offsets
}

/// Starts with the failpoint armed, produces until it fires, restarts
/// without it and checks the log.
async fn crash_at(point: &str, configs: &[(&str, &str)]) {
    let mut server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_COMPACTION_INTERVAL_MS", 200)
            .env("KAFSCALE_FAILPOINT", point),
    )
    .await;
    let topic = unique_name("crash");
    create_topic(&server.bootstrap(), &topic, 1, configs).await;
    // Garbage collection leaves a live stream's newest objects (24) alone:
    // its failpoint needs more WAL objects than that.
    let records = if point.starts_with("gc-") { 1000 } else { 400 };
    let acked = produce(&server, &topic, records).await;
    let exit = server.wait_exit(Duration::from_secs(60)).await;
    assert!(
        exit.is_some_and(|s| !s.success()),
        "the failpoint {point} never fired (exit {exit:?}):\n{}",
        server.log_tail(40)
    );
    server.set_env("KAFSCALE_FAILPOINT", None);
    server.restart().await;
    let probe = consumer(&server.bootstrap(), &[]);
    let (low, high) = tokio::task::block_in_place(|| watermarks(&probe, &topic, 0));
    let max_acked = acked.iter().copied().max().unwrap_or(-1);
    assert!(
        high > max_acked,
        "{point}: high watermark {high} below the acknowledged offset {max_acked}"
    );
    let (b, t) = (server.bootstrap(), topic.clone());
    let records = tokio::task::spawn_blocking(move || {
        consume_ranges(&b, &t, &[(0, low, high)], Duration::from_secs(60))
    })
    .await
    .expect("consumer")
    .remove(&0)
    .unwrap_or_default();
    // Offsets dense and unique from the log start; every acknowledged
    // record still there (unless retention removed it) with its value.
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        (low..high).collect::<Vec<_>>(),
        "{point}: offsets not dense and unique"
    );
    for o in acked.iter().filter(|o| **o >= low) {
        let r = &records[(*o - low) as usize];
        let value = r.value.as_deref().unwrap_or_default();
        assert!(
            value.starts_with(b"value-"),
            "{point}: offset {o} holds {:?}",
            String::from_utf8_lossy(&value[..value.len().min(20)])
        );
    }
    // Compaction carries on after the crash (adopting a segment it had cut
    // and not published).
    produce(&server, &topic, 50).await;
    let this_run = |log: String| {
        log.rsplit("starting `kafscale dev` run")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    eventually(
        &format!("{point}: compaction carries on"),
        Duration::from_secs(30),
        async || this_run(server.log()).contains("segment published"),
    )
    .await;
    if point.starts_with("cleaner") {
        eventually(
            &format!("{point}: cleaning carries on"),
            Duration::from_secs(30),
            async || this_run(server.log()).contains("log cleaned"),
        )
        .await;
    }
    if point == "compaction-segment-written" {
        assert!(
            this_run(server.log()).contains("adopting a segment"),
            "the segment cut before the crash was not adopted"
        );
    }
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_segment_is_written_but_not_published() {
    crash_at(
        "compaction-segment-written",
        &[("segment.bytes", "8192"), ("retention.ms", "-1")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_segment_is_published() {
    crash_at(
        "compaction-published",
        &[("segment.bytes", "8192"), ("retention.ms", "-1")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_retention_moved_the_log_start() {
    crash_at(
        "retention-log-start-moved",
        &[("segment.bytes", "8192"), ("retention.bytes", "16384")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_garbage_collection() {
    crash_at(
        "gc-deleted-one",
        &[
            ("segment.bytes", "8192"),
            ("segment.ms", "500"),
            ("retention.ms", "-1"),
        ],
    )
    .await;
}

/// Key compaction's two steps: its segments written but not published, and
/// published (the records all have distinct keys, so every one stays).
const COMPACTED: &[(&str, &str)] = &[
    ("cleanup.policy", "compact"),
    ("segment.bytes", "8192"),
    ("min.cleanable.dirty.ratio", "0.01"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_cleaned_segments_are_written_but_not_published() {
    crash_at("cleaner-segments-written", COMPACTED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_cleaned_segments_are_published() {
    crash_at("cleaner-published", COMPACTED).await;
}
