//! Load for torture tests: librdkafka producers and consumers that record
//! everything they do into a [`History`] for the checker.
//!
//! - [`spawn_producer`]: acks=all, idempotent or not, a paced stream of
//!   unique values (`<producer>-<n>`) to partitions chosen round-robin, each
//!   send recorded before it is enqueued (in enqueue order), then its ack or
//!   error.
//! - [`spawn_group_consumer`]: a consumer-group member that reads the topic,
//!   records its reads, commits the offsets it reached (recorded when the
//!   commit succeeded) and regularly fetches the group's committed offsets
//!   back (recorded too): committed offsets must never go backwards.
//! - [`read_all`]: reads every partition from offset 0 up to its current
//!   high watermark, recording every record.
//!
//! Every wait is bounded. Test crates using it declare `mod common_history;
//! mod common_torture;`.

#![allow(dead_code)]

use crate::common::client_config;
use crate::common_history::{History, ProducerLog};
use futures::stream::{FuturesUnordered, StreamExt as _};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Prints a torture producer's librdkafka log lines to stderr under its id
/// (shown when a test fails).
struct ProducerLogContext(String);

impl ClientContext for ProducerLogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, line: &str) {
        eprintln!("[rdkafka {} {level:?} {fac}] {line}", self.0);
    }
}

/// One producer of a torture run.
#[derive(Clone, Debug)]
pub struct ProducerSpec {
    /// Producer id (prefix of its values).
    pub id: String,
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// `enable.idempotence`.
    pub idempotent: bool,
    /// Records enqueued per second (paced in 10 ms steps).
    pub rate: u32,
    /// Most records awaiting their delivery report.
    pub max_inflight: usize,
}

impl ProducerSpec {
    /// `n` producers, idempotent and plain in turn (ids `p0i`, `p1n`, ...),
    /// producer `i` through `bootstrap(i)`, each at `rate` records/s with up
    /// to `max_inflight` awaiting their report.
    pub fn mixed(
        n: usize,
        bootstrap: impl Fn(usize) -> String,
        rate: u32,
        max_inflight: usize,
    ) -> Vec<ProducerSpec> {
        (0..n)
            .map(|i| ProducerSpec {
                id: format!("p{i}{}", if i % 2 == 0 { "i" } else { "n" }),
                bootstrap: bootstrap(i),
                idempotent: i % 2 == 0,
                rate,
                max_inflight,
            })
            .collect()
    }
}

/// Topic settings that keep compaction busy in a torture run: segments of
/// 256 KiB, cut at least every 4 s (with `KAFSCALE_COMPACTION_INTERVAL_MS`
/// at 1 s), so faults hit compaction and garbage collection mid-way.
pub const SMALL_SEGMENTS: &[(&str, &str)] = &[("segment.bytes", "262144"), ("segment.ms", "4000")];

/// Runs one producer until `stop`, then waits for every outstanding
/// delivery report (bounded by `message.timeout.ms`). Returns how many
/// records it enqueued.
pub fn spawn_producer(
    spec: ProducerSpec,
    topic: String,
    partitions: i32,
    history: &History,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let mut log: ProducerLog = history.producer(&spec.id, spec.idempotent);
    let history = history.clone();
    tokio::spawn(async move {
        let mut generation = 0u32;
        let idempotence = if spec.idempotent { "true" } else { "false" };
        let mut cfg = client_config(
            &spec.bootstrap,
            &[
                ("acks", "all"),
                ("enable.idempotence", idempotence),
                // librdkafka's default. After a local message timeout its
                // idempotent producer bumps its epoch and re-sends what was
                // in flight under new sequence numbers, so a batch that was
                // durable is stored twice (librdkafka#4953, as against any
                // Kafka broker): 45 s made the long nemesis count such
                // duplicates after its longest stalls.
                ("message.timeout.ms", "300000"),
                ("request.timeout.ms", "15000"),
                ("linger.ms", "5"),
                ("max.in.flight.requests.per.connection", "5"),
            ],
        );
        // `KAFSCALE_TORTURE_CLIENT_DEBUG=eos,msg` shows why a producer
        // retried or bumped its epoch (librdkafka's `debug` contexts).
        if let Ok(debug) = std::env::var("KAFSCALE_TORTURE_CLIENT_DEBUG") {
            cfg.set("debug", debug);
            cfg.set_log_level(RDKafkaLogLevel::Debug);
        }
        let context = || ProducerLogContext(spec.id.clone());
        let mut p: FutureProducer<ProducerLogContext> = cfg
            .create_with_context(context())
            .expect("create the torture producer");
        let per_tick = (spec.rate / 100).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inflight = FuturesUnordered::new();
        let mut n: u64 = 0;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if stopping && inflight.is_empty() {
                break;
            }
            tokio::select! {
                _ = tick.tick(), if !stopping => {
                    for _ in 0..per_tick {
                        if inflight.len() >= spec.max_inflight {
                            break;
                        }
                        let value = format!("{}-{n:09}", spec.id);
                        let partition = (n % partitions as u64) as i32;
                        n += 1;
                        log.send(Some(partition), &value);
                        let record = FutureRecord::to(&topic)
                            .partition(partition)
                            .key(&value)
                            .payload(&value);
                        match p.send_result(record) {
                            Ok(delivery) => {
                                let l = log.clone();
                                inflight.push(async move { (value, l, delivery.await) })
                            }
                            Err((e, _)) => log.error(&value, format!("not enqueued: {e}")),
                        }
                    }
                }
                Some((value, l, outcome)) = inflight.next(), if !inflight.is_empty() => {
                    match outcome {
                        Ok(Ok(d)) => l.ack(&value, d.partition, d.offset),
                        Ok(Err((e, _))) => l.error(&value, e),
                        Err(_) => l.error(&value, "delivery report dropped"),
                    }
                }
            }
            // An idempotent producer that hit a fatal error sends nothing
            // more; an application would replace it, and so do we (its
            // outstanding records fail and are recorded as failed).
            if let Some((code, reason)) = p.client().fatal_error() {
                eprintln!(
                    "[torture] producer {}: fatal error {code:?}: {reason}; replacing it",
                    spec.id
                );
                // A new instance is a new producer (new id, own send order).
                generation += 1;
                log = history.producer(&format!("{}#{generation}", spec.id), spec.idempotent);
                p = cfg
                    .create_with_context(context())
                    .expect("re-create the torture producer");
            }
        }
        let _ = p.flush(Duration::from_secs(5));
        n
    })
}

/// A running set of producers.
pub struct Producers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Producers {
    /// Starts every producer of `specs` on `topic`.
    pub fn start(specs: &[ProducerSpec], topic: &str, partitions: i32, history: &History) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = specs
            .iter()
            .map(|s| {
                spawn_producer(
                    s.clone(),
                    topic.to_string(),
                    partitions,
                    history,
                    stop.clone(),
                )
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops enqueueing, waits (bounded) for every delivery report; returns
    /// the records enqueued.
    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = 0;
        for t in self.tasks {
            total += tokio::time::timeout(Duration::from_secs(90), t)
                .await
                .expect("producers finish within 90 s of being stopped")
                .expect("producer task");
        }
        total
    }
}

/// A consumer-group member recording reads and commits (see the module docs).
pub struct GroupConsumer {
    stop: Arc<AtomicBool>,
    live: Arc<std::sync::Mutex<GroupStats>>,
    thread: std::thread::JoinHandle<GroupStats>,
}

/// What a group consumer did.
#[derive(Clone, Debug, Default)]
pub struct GroupStats {
    pub records: u64,
    pub commits_ok: u64,
    pub commits_failed: u64,
    pub fetches_ok: u64,
    pub errors: u64,
}

/// Starts a member of `group` reading `topic` through `bootstrap`.
pub fn spawn_group_consumer(
    bootstrap: &str,
    topic: &str,
    group: &str,
    history: &History,
) -> GroupConsumer {
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = client_config(
        bootstrap,
        &[
            ("group.id", group),
            ("client.id", "torture-group"),
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            ("fetch.wait.max.ms", "100"),
            ("check.crcs", "true"),
        ],
    );
    let live = Arc::new(std::sync::Mutex::new(GroupStats::default()));
    let (topic, group, history, stop2, live2) = (
        topic.to_string(),
        group.to_string(),
        history.clone(),
        stop.clone(),
        live.clone(),
    );
    let thread = std::thread::spawn(move || {
        let c: BaseConsumer = cfg.create().expect("create the group consumer");
        c.subscribe(&[&topic]).expect("subscribe");
        let mut stats = GroupStats::default();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        let mut last_commit = Instant::now();
        let mut last_fetch = Instant::now();
        let consumer_id = format!("group:{group}");
        while !stop2.load(Ordering::SeqCst) {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                    history.read(&consumer_id, m.partition(), m.offset(), &value);
                    stats.records += 1;
                    let e = next.entry(m.partition()).or_default();
                    *e = (*e).max(m.offset() + 1);
                }
                Some(Err(_)) => stats.errors += 1,
                None => {}
            }
            if last_commit.elapsed() >= Duration::from_millis(500) && !next.is_empty() {
                last_commit = Instant::now();
                let mut tpl = TopicPartitionList::new();
                for (&p, &o) in &next {
                    tpl.add_partition_offset(&topic, p, Offset::Offset(o))
                        .expect("add partition offset");
                }
                match c.commit(&tpl, CommitMode::Sync) {
                    Ok(()) => {
                        stats.commits_ok += 1;
                        for (&p, &o) in &next {
                            history.commit(&group, p, o);
                        }
                    }
                    Err(_) => stats.commits_failed += 1,
                }
            }
            if last_fetch.elapsed() >= Duration::from_secs(2) {
                last_fetch = Instant::now();
                if let Ok(tpl) = c.committed(Duration::from_secs(5)) {
                    stats.fetches_ok += 1;
                    for e in tpl.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            history.commit(&group, e.partition(), o);
                        }
                    }
                }
            }
            *live2.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
        }
        stats
    });
    GroupConsumer { stop, live, thread }
}

impl GroupConsumer {
    /// What the member has done so far.
    pub fn stats(&self) -> GroupStats {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stops the member and returns what it did.
    pub fn finish(self) -> GroupStats {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("group consumer thread")
    }
}

/// Reads every partition of `topic` from offset 0 to its high watermark as
/// of the call, recording each record as read by `consumer_id`. Stops when
/// every partition reached its high watermark or after `idle` without a
/// record (a log may end in a gap); panics after `timeout`. Returns the high
/// watermarks and the partitions that did not reach them.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    consumer_id: &str,
    history: &History,
    idle: Duration,
    timeout: Duration,
) -> (BTreeMap<i32, i64>, Vec<i32>) {
    let c: BaseConsumer = client_config(
        bootstrap,
        &[
            ("group.id", "torture-reader"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "error"),
            ("check.crcs", "true"),
            ("fetch.wait.max.ms", "100"),
        ],
    )
    .create()
    .expect("create the reader");
    let mut highs = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
        highs.insert(p, high);
    }
    let mut tpl = TopicPartitionList::new();
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
    for (&p, &h) in &highs {
        if h > 0 {
            tpl.add_partition_offset(topic, p, Offset::Offset(0))
                .expect("add partition");
            pending.insert(p, h);
        }
    }
    if pending.is_empty() {
        return (highs, Vec::new());
    }
    c.assign(&tpl).expect("assign");
    let started = Instant::now();
    let mut last_record = Instant::now();
    while !pending.is_empty() && last_record.elapsed() < idle {
        assert!(
            started.elapsed() < timeout,
            "reading {topic} through {bootstrap} took over {timeout:?}; still pending \
             (partition -> high watermark): {pending:?}"
        );
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_record = Instant::now();
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                history.read(consumer_id, m.partition(), m.offset(), &value);
                if pending
                    .get(&m.partition())
                    .is_some_and(|h| m.offset() + 1 >= *h)
                {
                    pending.remove(&m.partition());
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reader error on {topic} through {bootstrap}: {e}"),
            None => {}
        }
    }
    (highs, pending.into_keys().collect())
}

/// Sends one record to every partition with a plain producer (recorded as
/// producer `id`), so that no partition's log ends in a gap; panics unless
/// all are acknowledged within `timeout`.
pub async fn send_sentinels(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    id: &str,
    history: &History,
    timeout: Duration,
) {
    let log = history.producer(id, false);
    let p: FutureProducer = client_config(
        bootstrap,
        &[
            ("acks", "all"),
            ("enable.idempotence", "false"),
            ("message.timeout.ms", "30000"),
        ],
    )
    .create()
    .expect("create the sentinel producer");
    for partition in 0..partitions {
        let value = format!("{id}-{partition}");
        log.send(Some(partition), &value);
        let r = p
            .send(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(&value)
                    .payload(&value),
                timeout,
            )
            .await;
        match r {
            Ok(d) => log.ack(&value, d.partition, d.offset),
            Err((e, _)) => panic!("sentinel to {topic}/{partition} failed: {e}"),
        }
    }
}

/// Ends a torture run once the load has stopped and the faults are cleared:
/// waits until every partition has an owner, sends a sentinel to each, lets
/// the group member catch up and stops it, reads every partition back from
/// offset 0 through each of `bootstraps`, and checks the history. Panics if
/// a reader could not reach a high watermark.
pub async fn check_run(
    cluster: &crate::common_cluster::Cluster,
    bootstraps: &[String],
    topic: &str,
    partitions: i32,
    history: &History,
    group: GroupConsumer,
) -> (crate::common_history::Report, GroupStats) {
    cluster.wait_all_assigned(Duration::from_secs(60)).await;
    send_sentinels(
        &bootstraps[0],
        topic,
        partitions,
        "sentinel",
        history,
        Duration::from_secs(30),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let group_stats = group.finish();
    let mut unfinished = Vec::new();
    for (g, bootstrap) in bootstraps.iter().enumerate() {
        let (highs, stuck) = read_all(
            bootstrap,
            topic,
            partitions,
            &format!("reader-{g}"),
            history,
            Duration::from_secs(10),
            Duration::from_secs(120),
        );
        eprintln!("[torture] read through {bootstrap}: high watermarks {highs:?}");
        unfinished.extend(stuck.into_iter().map(|p| (bootstrap.clone(), p)));
    }
    assert!(
        unfinished.is_empty(),
        "readers did not reach the high watermark of (gateway, partition) {unfinished:?}"
    );
    (history.check(), group_stats)
}
