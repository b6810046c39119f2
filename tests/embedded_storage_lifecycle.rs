//! The storage lifecycle in `kafscale dev` (issue 11): WAL chunks are cut
//! into per-partition segments, reads below the tail come from segments
//! byte for byte, the log survives a kill -9 from its segments, and
//! retention deletes whole segments and advances the earliest offset,
//! compacted topics keep the latest value per key, and the coordinator log
//! is cleaned the same way.

mod common;

use common::{
    commit_offset, committed_offset, consume_ranges, consumer, create_topic, eventually, http_get,
    producer, read_to_end, unique_name, watermarks, DevOptions, DevServer,
};
use rdkafka::producer::FutureRecord;
use std::path::Path;
use std::time::Duration;

/// Segment objects of every partition under the data directory.
fn segment_objects(data_dir: &Path) -> Vec<std::path::PathBuf> {
    objects_under(data_dir, "seg")
}

/// WAL objects (data and seals) under the data directory.
fn wal_objects(data_dir: &Path) -> Vec<std::path::PathBuf> {
    objects_under(data_dir, "wal")
}

fn objects_under(data_dir: &Path, kind: &str) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for ns in std::fs::read_dir(data_dir.join("objects"))
        .into_iter()
        .flatten()
        .flatten()
    {
        walk(&ns.path().join(kind), &mut out);
    }
    out.sort();
    out
}

/// Sends `n` records (key `k<i>`, value `v<i>` padded to `size` bytes) to
/// partition 0 in rounds of 50 (so they span many WAL flushes) and waits
/// for every ack.
async fn produce(server: &DevServer, topic: &str, from: usize, n: usize, size: usize) {
    for start in (from..from + n).step_by(50) {
        produce_round(server, topic, start, (from + n - start).min(50), size).await;
    }
}

async fn produce_round(server: &DevServer, topic: &str, from: usize, n: usize, size: usize) {
    let p = producer(&server.bootstrap(), &[("linger.ms", "2")]);
    let sends: Vec<_> = (from..from + n)
        .map(|i| {
            let value = format!("v{i:08}-{}", "x".repeat(size));
            let key = format!("k{i}");
            let p = p.clone();
            async move {
                p.send(
                    FutureRecord::to(topic)
                        .partition(0)
                        .key(&key)
                        .payload(&value),
                    Duration::from_secs(30),
                )
                .await
                .map(|d| d.offset)
            }
        })
        .collect();
    for r in futures::future::join_all(sends).await {
        r.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}

/// Offsets `[0, end)` of partition 0, fetched at most 4 KiB at a time.
fn read_in_small_fetches(bootstrap: &str, topic: &str, end: i64) -> Vec<common::Consumed> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let c = consumer(bootstrap, &[("max.partition.fetch.bytes", "4096")]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(0))
        .expect("add partition");
    c.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while (out.len() as i64) < end {
        assert!(
            std::time::Instant::now() < deadline,
            "small fetches timed out at {}",
            out.len()
        );
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap_or_else(|e| panic!("consumer error: {e}"));
        out.push(common::Consumed {
            partition: 0,
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: Vec::new(),
        });
    }
    out
}

fn expected_value(i: i64, size: usize) -> Vec<u8> {
    format!("v{i:08}-{}", "x".repeat(size)).into_bytes()
}

/// Asserts that `records` are the first `count` records `produce` wrote
/// (values of `size` bytes), byte for byte, at their offsets.
fn assert_read_back(records: &[common::Consumed], count: usize, size: usize) {
    assert_eq!(records.len(), count, "every record read back");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(
            r.value.as_deref(),
            Some(&expected_value(i as i64, size)[..])
        );
    }
}

/// The `kafscale_chunk_reads_total` of `source` in a /metrics text.
fn chunk_reads(metrics: &str, source: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "kafscale_chunk_reads_total{{source=\"{source}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_cut_from_cached_chunks_are_read_from_memory() {
    const SIZE: usize = 200;
    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_COMPACTION_INTERVAL_MS", 300)).await;
    let topic = unique_name("cached-segments");
    create_topic(
        &server.bootstrap(),
        &topic,
        1,
        &[("segment.bytes", "16384"), ("retention.ms", "-1")],
    )
    .await;
    produce(&server, &topic, 0, 600, SIZE).await;
    let dir = server.data_dir().to_path_buf();
    eventually(
        "segments are written",
        Duration::from_secs(30),
        async || segment_objects(&dir).len() >= 4,
    )
    .await;
    let storage_reads = async || {
        let (_, metrics) = http_get(server.http_addr(), "/metrics")
            .await
            .expect("metrics");
        chunk_reads(&metrics, "storage")
    };
    let before = storage_reads().await;
    let records = {
        let s = &server;
        let t = topic.clone();
        tokio::task::block_in_place(|| read(s, &t, 0, 600))
    };
    assert_read_back(&records, 600, SIZE);
    assert_eq!(
        storage_reads().await,
        before,
        "compacted records were read from storage, not from the tail cache"
    );
}

fn read(server: &DevServer, topic: &str, from: i64, to: i64) -> Vec<common::Consumed> {
    consume_ranges(
        &server.bootstrap(),
        topic,
        &[(0, from, to)],
        Duration::from_secs(60),
    )
    .remove(&0)
    .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_data_is_cut_into_segments_and_read_back_byte_for_byte_after_a_kill_9() {
    const SIZE: usize = 200;
    // No tail cache: segment blocks cut from cached chunks would stay
    // cached, and this test reads them from storage.
    let mut server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_COMPACTION_INTERVAL_MS", 300)
            .env("KAFSCALE_CACHE_BYTES", 0),
    )
    .await;
    let topic = unique_name("segments");
    create_topic(
        &server.bootstrap(),
        &topic,
        1,
        &[
            ("segment.bytes", "16384"),
            ("segment.ms", "2000"),
            ("retention.ms", "-1"),
        ],
    )
    .await;
    produce(&server, &topic, 0, 600, SIZE).await;
    let dir = server.data_dir().to_path_buf();
    let wal_before = wal_objects(&dir).len();
    eventually(
        "segments are written",
        Duration::from_secs(30),
        async || segment_objects(&dir).len() >= 4,
    )
    .await;
    let check = |records: &[common::Consumed]| assert_read_back(records, 600, SIZE);
    // A consumer catching up in small fetches reads segment blocks that
    // were loaded ahead and cached.
    let (b, t) = (server.bootstrap(), topic.clone());
    let small = tokio::task::spawn_blocking(move || read_in_small_fetches(&b, &t, 600))
        .await
        .expect("consumer");
    check(&small);
    let (b, t) = (server.bootstrap(), topic.clone());
    let records = tokio::task::spawn_blocking(move || {
        consume_ranges(&b, &t, &[(0, 0, 600)], Duration::from_secs(60))
    })
    .await
    .expect("consumer")
    .remove(&0)
    .unwrap_or_default();
    check(&records);
    let (_, metrics) = http_get(server.http_addr(), "/metrics")
        .await
        .expect("metrics");
    let reads = |source: &str| chunk_reads(&metrics, source);
    eprintln!(
        "[lifecycle] chunk reads: storage {}, read-ahead {}, block cache {}",
        reads("storage"),
        reads("read_ahead"),
        reads("block_cache")
    );
    assert!(
        reads("read_ahead") > 0.0,
        "no block was read ahead:\n{metrics}"
    );

    // Recovery reads the segments (and what is left of the WAL).
    server.kill9();
    server.restart().await;
    let records = {
        let s = &server;
        let t = topic.clone();
        tokio::task::block_in_place(|| read(s, &t, 0, 600))
    };
    check(&records);
    // The stream of the killed process is sealed, and everything in it is
    // in segments (segment.ms): garbage collection deletes all of it. (A
    // live stream keeps its newest objects for a sealer.)
    eventually(
        "WAL objects are collected",
        Duration::from_secs(60),
        async || wal_objects(&dir).len() <= 2,
    )
    .await;
    eprintln!(
        "[lifecycle] WAL objects {wal_before} -> {}, {} segments",
        wal_objects(&dir).len(),
        segment_objects(&dir).len()
    );
    // The log continues after the recovered end.
    produce(&server, &topic, 600, 10, SIZE).await;
    let probe = consumer(&server.bootstrap(), &[]);
    assert_eq!(watermarks(&probe, &topic, 0), (0, 610));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_whole_segments_and_advances_the_earliest_offset() {
    const SIZE: usize = 200;
    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_COMPACTION_INTERVAL_MS", 300)).await;
    let topic = unique_name("retention");
    // Keep about 32 KiB: older segments go.
    create_topic(
        &server.bootstrap(),
        &topic,
        1,
        &[("segment.bytes", "8192"), ("retention.bytes", "32768")],
    )
    .await;
    produce(&server, &topic, 0, 1000, SIZE).await;
    let probe = consumer(&server.bootstrap(), &[]);
    let (b, t) = (server.bootstrap(), topic.clone());
    eventually(
        "the earliest offset advances",
        Duration::from_secs(30),
        async || {
            let (b, t) = (b.clone(), t.clone());
            tokio::task::spawn_blocking(move || {
                let c = consumer(&b, &[]);
                watermarks(&c, &t, 0).0 > 500
            })
            .await
            .unwrap_or(false)
        },
    )
    .await;
    // Compaction and retention go on after the first advance; read once the
    // log start has stayed put for several compaction intervals, or the
    // records at `low` may be deleted under the reader.
    let mut settled = (-1, -1);
    let mut unchanged = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while unchanged < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention did not settle: {settled:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = tokio::task::block_in_place(|| watermarks(&probe, &topic, 0));
        if now == settled {
            unchanged += 1;
        } else {
            (settled, unchanged) = (now, 0);
        }
    }
    let (low, high) = settled;
    assert_eq!(high, 1000);
    let dir = server.data_dir().to_path_buf();
    let segments = segment_objects(&dir);
    let bytes: u64 = segments
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    eprintln!(
        "[retention] earliest offset {low}, {} segments, {bytes} bytes",
        segments.len()
    );
    assert!(
        bytes < 4 * 32768,
        "{bytes} bytes of segments kept with retention.bytes=32768"
    );
    // A consumer from the beginning gets exactly the retained records.
    let records = tokio::task::block_in_place(|| read(&server, &topic, low, high));
    assert_eq!(records.len() as i64, high - low);
    for r in &records {
        assert_eq!(
            r.value.as_deref(),
            Some(&expected_value(r.offset, SIZE)[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_expire_after_offsets_retention() {
    use rdkafka::consumer::{CommitMode, Consumer};
    // 0.05 minutes = 3 s.
    let mut server =
        DevServer::start(DevOptions::default().env("KAFSCALE_OFFSETS_RETENTION_MINUTES", 0.05))
            .await;
    let topic = unique_name("expiry");
    create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    produce(&server, &topic, 0, 10, 10).await;
    let (standalone, active) = (unique_name("standalone"), unique_name("active"));
    let b = server.bootstrap();
    let t = topic.clone();
    let (s2, a2) = (standalone.clone(), active.clone());
    // A consumer that keeps its membership while others' offsets expire.
    let member = tokio::task::spawn_blocking(move || {
        commit_offset(&b, &s2, &t, 7);
        let m = consumer(
            &b,
            &[("group.id", a2.as_str()), ("session.timeout.ms", "30000")],
        );
        m.subscribe(&[t.as_str()]).expect("subscribe");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while m.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
            assert!(std::time::Instant::now() < deadline, "no assignment");
            let _ = m.poll(Duration::from_millis(100));
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&t, 0, rdkafka::Offset::Offset(5))
            .expect("offset");
        m.commit(&tpl, CommitMode::Sync).expect("commit");
        m
    })
    .await
    .expect("consumers");
    let (b, t) = (server.bootstrap(), topic.clone());
    let s3 = standalone.clone();
    eventually(
        "a standalone consumer's offset expires",
        Duration::from_secs(30),
        async || {
            let (b, t, g) = (b.clone(), t.clone(), s3.clone());
            tokio::task::spawn_blocking(move || committed_offset(&b, &g, &t).is_none())
                .await
                .unwrap_or(false)
        },
    )
    .await;
    // The group with a member keeps its offset however old.
    let (b, t, g) = (server.bootstrap(), topic.clone(), active.clone());
    let kept = tokio::task::spawn_blocking(move || committed_offset(&b, &g, &t))
        .await
        .expect("committed");
    assert_eq!(kept, Some(5), "a group with members keeps its offsets");
    // Once the group is empty, its offsets expire too.
    tokio::task::spawn_blocking(move || drop(member))
        .await
        .expect("close member");
    let (b, t, g) = (server.bootstrap(), topic.clone(), active.clone());
    eventually(
        "an empty group's offsets expire",
        Duration::from_secs(30),
        async || {
            let (b, t, g) = (b.clone(), t.clone(), g.clone());
            tokio::task::spawn_blocking(move || committed_offset(&b, &g, &t).is_none())
                .await
                .unwrap_or(false)
        },
    )
    .await;
    // Expiry is durable: tombstones, not just forgetting.
    server.kill9();
    server.restart().await;
    let (b, t) = (server.bootstrap(), topic.clone());
    let after = tokio::task::spawn_blocking(move || {
        (
            committed_offset(&b, &standalone, &t),
            committed_offset(&b, &active, &t),
        )
    })
    .await
    .expect("committed");
    assert_eq!(
        after,
        (None, None),
        "expired offsets came back after a restart"
    );
}

/// Sends `records` (key, value or tombstone) to partition 0 in order, in
/// rounds of 50, and returns their offsets.
async fn produce_keyed(
    server: &DevServer,
    topic: &str,
    records: &[(String, Option<String>)],
) -> Vec<i64> {
    let p = producer(&server.bootstrap(), &[("linger.ms", "2")]);
    let mut offsets = Vec::new();
    for round in records.chunks(50) {
        let sends: Vec<_> = round
            .iter()
            .map(|(k, v)| {
                let p = p.clone();
                async move {
                    let mut r = FutureRecord::to(topic).partition(0).key(k);
                    if let Some(v) = v {
                        r = r.payload(v);
                    }
                    p.send(r, Duration::from_secs(30)).await.map(|d| d.offset)
                }
            })
            .collect();
        for r in futures::future::join_all(sends).await {
            offsets.push(r.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}")));
        }
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_keeps_the_latest_value_per_key_across_a_restart() {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let mut server =
        DevServer::start(DevOptions::default().env("KAFSCALE_COMPACTION_INTERVAL_MS", 300)).await;
    let topic = unique_name("compacted");
    create_topic(
        &server.bootstrap(),
        &topic,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "4096"),
            ("segment.ms", "300"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    )
    .await;
    // 20 keys, 30 versions each, then tombstones for k0..k4.
    let mut records: Vec<(String, Option<String>)> = Vec::new();
    for round in 0..30 {
        for k in 0..20 {
            records.push((
                format!("k{k}"),
                Some(format!("k{k}-v{round}-{}", "x".repeat(60))),
            ));
        }
    }
    for k in 0..5 {
        records.push((format!("k{k}"), None));
    }
    let offsets = produce_keyed(&server, &topic, &records).await;
    // A record without a key has no place in a compacted topic.
    let p = producer(&server.bootstrap(), &[]);
    let keyless = p
        .send(
            FutureRecord::<(), _>::to(&topic)
                .partition(0)
                .payload("no key"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        matches!(
            keyless,
            Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord),
                _
            ))
        ),
        "keyless produce: {keyless:?}"
    );
    let latest = |records: &[(String, Option<String>)], offsets: &[i64]| {
        let mut by_key = std::collections::BTreeMap::new();
        for (r, o) in records.iter().zip(offsets) {
            by_key.insert(r.0.clone(), (*o, r.1.clone()));
        }
        let mut out: Vec<(i64, String, Option<String>)> =
            by_key.into_iter().map(|(k, (o, v))| (o, k, v)).collect();
        out.sort();
        out
    };
    let b = server.bootstrap();
    let t = topic.clone();
    let read = move || {
        let (b, t) = (b.clone(), t.clone());
        async move {
            tokio::task::spawn_blocking(move || read_to_end(&b, &t))
                .await
                .expect("read")
        }
    };
    // Cleaning leaves the latest value of every key at its offset (the
    // tombstones stay through their first pass; whether a later pass has
    // dropped some of them already depends on how the segments were cut).
    let live = |rs: &[(i64, String, Option<String>)]| -> Vec<(i64, String, Option<String>)> {
        rs.iter().filter(|r| r.2.is_some()).cloned().collect()
    };
    let want = live(&latest(&records, &offsets));
    let mut last = Vec::new();
    let cleaned = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            last = read().await;
            if live(&last) == want && last.len() <= want.len() + 5 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        cleaned.is_ok(),
        "not cleaned to the latest value per key; read {} records: {:?}",
        last.len(),
        &last[..last.len().min(30)]
    );
    // ... and go in a later one, once delete.retention.ms (0) has passed.
    let more = vec![("k19".to_string(), Some("k19-final".to_string()))];
    let more_offsets = produce_keyed(&server, &topic, &more).await;
    records.extend(more);
    let all_offsets: Vec<i64> = offsets.iter().chain(&more_offsets).copied().collect();
    let expected: Vec<_> = latest(&records, &all_offsets)
        .into_iter()
        .filter(|r| r.2.is_some())
        .collect();
    assert_eq!(expected.len(), 15);
    let cleaned = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            last = read().await;
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(
        cleaned.is_ok(),
        "tombstones not dropped; read {:?}",
        &last[..last.len().min(30)]
    );
    // Garbage collection deletes the segments the cleaned ones replaced.
    let dir = server.data_dir().to_path_buf();
    eventually(
        "replaced segments are deleted",
        Duration::from_secs(60),
        async || segment_objects(&dir).len() <= 2,
    )
    .await;
    // The cleaned log is what a restarted server serves.
    server.kill9();
    server.restart().await;
    assert_eq!(read().await, expected, "after a kill -9 and restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_slot_loads_only_its_live_offsets_once_cleaned() {
    use rdkafka::consumer::{CommitMode, Consumer};
    let mut server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_COMPACTION_INTERVAL_MS", 300)
            .env("KAFSCALE_LOG_SEGMENT_MS", 300),
    )
    .await;
    let topic = unique_name("slot");
    create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    produce(&server, &topic, 0, 10, 10).await;
    let group = unique_name("committer");
    let (b, t, g) = (server.bootstrap(), topic.clone(), group.clone());
    // 300 commits of the same partition: one live offset.
    tokio::task::spawn_blocking(move || {
        let c = consumer(&b, &[("group.id", g.as_str())]);
        for i in 0..300 {
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition_offset(&t, 0, rdkafka::Offset::Offset(i % 10))
                .expect("offset");
            c.commit(&tpl, CommitMode::Sync).expect("commit");
        }
    })
    .await
    .expect("commits");
    // The slot holds only this group's 300 commit records (offsets 0..300):
    // it is clean once a pass has reached offset 300. Waiting for any later
    // "log cleaned" line instead raced with passes that ran during the commits.
    eventually(
        "the coordinator slot is cleaned past the last commit",
        Duration::from_secs(60),
        async || max_cleaned_offset(&server.log(), "__consumer_offsets") >= 300,
    )
    .await;
    server.kill9();
    server.restart().await;
    let (b, t, g) = (server.bootstrap(), topic.clone(), group.clone());
    let got = tokio::task::spawn_blocking(move || committed_offset(&b, &g, &t))
        .await
        .expect("committed");
    assert_eq!(got, Some(299 % 10), "the last commit survives cleaning");
    // The restarted coordinator replayed a handful of records, not 300.
    let loaded: Vec<usize> = strip_ansi(&server.log())
        .lines()
        .filter(|l| l.contains("coordinator slot loaded"))
        .filter_map(|l| {
            let at = l.find("records")?;
            l[at..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .collect();
    let after_restart = *loaded.last().expect("a slot was loaded");
    assert!(
        after_restart < 20,
        "a cleaned slot replayed {after_restart} records (loads: {loaded:?})"
    );
}

/// The highest `cleaned_offset` of the "log cleaned" lines for `topic` in
/// the server log (-1 if none).
fn max_cleaned_offset(log: &str, topic: &str) -> i64 {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("log cleaned") && l.contains(&format!("topic={topic} ")))
        .filter_map(|l| {
            let at = l.find("cleaned_offset=")? + "cleaned_offset=".len();
            l[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(-1)
}

/// `log` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
