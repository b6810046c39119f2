//! Distributed mode end to end: `kafscale gateway` and `kafscale logworker`
//! processes on a real etcd and a real S3-compatible server (moto), driven
//! by librdkafka. Every test checks the one invariant that matters: each
//! acknowledged record is read back, through a gateway, at the offset it was
//! acknowledged with, and no offset is ever handed out twice.

mod common;
mod common_cluster;
mod common_etcd;
mod common_s3;

use common::{consume_all, create_topic, ctl, eventually, http_get, producer, unique_name};
use common_cluster::{Cluster, ClusterOptions, LEASE_TTL_MS};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Acknowledged records: (partition, offset) → record id, plus failures.
#[derive(Default)]
struct Acks {
    acked: BTreeMap<(i32, i64), u64>,
    failed: Vec<String>,
}

/// How a producer of a [`Load`] sends.
#[derive(Clone, Copy)]
struct Shape {
    /// Records in flight at once.
    in_flight: usize,
    /// Each value is the record's id left-padded with zeros to this many
    /// bytes (it still parses as the id).
    value_bytes: usize,
}

/// Small records, 64 in flight.
const LIGHT: Shape = Shape {
    in_flight: 64,
    value_bytes: 0,
};

/// Produces records with unique ids (acks=all, shaped by `shape`) until
/// `stop`, recording every acknowledgement.
fn spawn_producer(
    bootstrap: String,
    topic: String,
    first_id: u64,
    shape: Shape,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Acks>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let p: FutureProducer = producer(
            &bootstrap,
            &[
                ("acks", "all"),
                ("message.timeout.ms", "60000"),
                ("linger.ms", "5"),
                ("reconnect.backoff.max.ms", "500"),
            ],
        );
        let mut inflight = FuturesUnordered::new();
        let mut id = first_id;
        loop {
            while inflight.len() < shape.in_flight && !stop.load(Ordering::SeqCst) {
                let key = id.to_string();
                let value = format!("{id:0>width$}", width = shape.value_bytes);
                let p2 = p.clone();
                let t = topic.clone();
                let this = id;
                inflight.push(async move {
                    let r = p2
                        .send(
                            FutureRecord::to(&t).key(&key).payload(&value),
                            Duration::from_secs(60),
                        )
                        .await;
                    (this, r)
                });
                id += 1;
            }
            match inflight.next().await {
                Some((id, Ok(d))) => {
                    let mut a = acks.lock().unwrap();
                    let prev = a.acked.insert((d.partition, d.offset), id);
                    assert!(
                        prev.is_none(),
                        "offset {}/{} acknowledged twice (ids {prev:?} and {id})",
                        d.partition,
                        d.offset
                    );
                }
                Some((id, Err((e, _)))) => acks.lock().unwrap().failed.push(format!("{id}: {e}")),
                None => return,
            }
        }
    })
}

/// Continuous acks=all load from `producers` producers on one gateway.
struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Acks>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(bootstrap: String, topic: &str, producers: u64) -> Load {
        Self::start_shaped(bootstrap, topic, producers, LIGHT)
    }

    fn start_shaped(bootstrap: String, topic: &str, producers: u64, shape: Shape) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Acks::default()));
        let tasks = (0..producers)
            .map(|i| {
                spawn_producer(
                    bootstrap.clone(),
                    topic.to_string(),
                    i * 1_000_000_000,
                    shape,
                    stop.clone(),
                    acks.clone(),
                )
            })
            .collect();
        Load { stop, acks, tasks }
    }

    /// Records acknowledged so far.
    fn acked(&self) -> usize {
        self.acks.lock().unwrap().acked.len()
    }

    /// Stops producing, waits for outstanding sends, returns what was acked.
    async fn finish(self) -> Acks {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("producer task");
        }
        std::mem::take(&mut *self.acks.lock().unwrap())
    }
}

/// Reads the whole topic through `bootstrap` and checks every acked record.
fn verify_acked(bootstrap: &str, topic: &str, partitions: i32, acks: &Acks) {
    let (_, records) = consume_all(bootstrap, topic, partitions, Duration::from_secs(60));
    let mut stored: BTreeMap<(i32, i64), u64> = BTreeMap::new();
    for (p, recs) in &records {
        common::assert_strictly_increasing(topic, *p, recs);
        for r in recs {
            let id = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                .parse()
                .unwrap_or(u64::MAX);
            stored.insert((*p, r.offset), id);
        }
    }
    let mut missing = Vec::new();
    for (at, id) in &acks.acked {
        if stored.get(at) != Some(id) {
            missing.push(format!(
                "{at:?}: acked id {id}, stored {:?}",
                stored.get(at)
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged records are not at their acknowledged offsets, e.g. {:?}",
        missing.len(),
        acks.acked.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Ends a run in which worker 0 handed its partitions over by plan (a
/// drain): no produce error reached a client, no other worker had to seal
/// one of its streams, and every acknowledged record of the 6-partition
/// `topic` is read back at its offset.
async fn finish_planned_handover(c: &Cluster, topic: &str, load: Load) {
    let acks = load.finish().await;
    assert!(
        acks.failed.is_empty(),
        "produce errors reached the client: {:?}",
        &acks.failed[..acks.failed.len().min(5)]
    );
    for w in &c.workers[1..] {
        assert!(
            !w.log().contains("sealed WAL stream"),
            "{} had to seal a stream of the drained worker",
            w.name
        );
    }
    verify_acked(&c.bootstrap(0), topic, 6, &acks);
}

/// The cluster tests each run etcd, moto and several server processes: on a
/// small machine they are run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster of `workers` and `gateways` with a topic of `partitions`
/// partitions (named after `prefix`) and `producers` producers loading it
/// through the first gateway.
async fn loaded_cluster(
    workers: usize,
    gateways: usize,
    prefix: &str,
    partitions: i32,
    producers: u64,
) -> (Cluster, String, Load) {
    let c = Cluster::start(ClusterOptions {
        workers,
        gateways,
        ..Default::default()
    })
    .await;
    let topic = unique_name(prefix);
    create_topic(&c.bootstrap(0), &topic, partitions, &[]).await;
    let load = Load::start(c.bootstrap(0), &topic, producers);
    (c, topic, load)
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_records_survive_kill9_of_workers_and_gateways() {
    let _serial = SERIAL.lock().await;
    let (mut c, topic, load) = loaded_cluster(3, 2, "chaos", 6, 2).await;
    sleep_ms(2000).await;
    // Kill -9 a worker per cycle (restarting it at once with a new stream
    // epoch, or only after its lease lapsed so its partitions move), and a
    // gateway every other cycle.
    let cycles = 6;
    for cycle in 0..cycles {
        let w = cycle % c.workers.len();
        c.workers[w].kill9();
        if cycle % 2 == 1 {
            sleep_ms(LEASE_TTL_MS + 1500).await;
        }
        c.workers[w].start().await;
        if cycle % 2 == 0 {
            c.gateways[1].kill9();
            c.gateways[1].start().await;
        }
        sleep_ms(2500).await;
        eprintln!(
            "cycle {cycle}: {} records acknowledged so far",
            load.acked()
        );
    }
    let acks = load.finish().await;
    assert!(
        acks.acked.len() > 1000,
        "too few records acknowledged ({}) to mean anything; failures: {:?}",
        acks.acked.len(),
        &acks.failed[..acks.failed.len().min(5)]
    );
    c.wait_all_assigned(Duration::from_secs(30)).await;
    verify_acked(&c.bootstrap(1), &topic, 6, &acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_worker_is_fenced_after_its_partitions_move_and_exits() {
    let _serial = SERIAL.lock().await;
    let (mut c, topic, load) = loaded_cluster(2, 1, "zombie", 4, 1).await;
    sleep_ms(2000).await;
    let z = c.owner(&topic, 0).await.expect("partition 0 has an owner");
    c.workers[z].signal("STOP");
    // Its lease lapses and its partitions move to the other worker.
    eventually(
        "the stopped worker's partitions moved",
        Duration::from_secs(30),
        async || c.owner(&topic, 0).await.is_some_and(|o| o != z),
    )
    .await;
    sleep_ms(2000).await;
    c.workers[z].signal("CONT");
    // It notices the lost lease and stops serving.
    let exit = c.workers[z].wait_exit(Duration::from_secs(20)).await;
    assert!(
        exit.is_some(),
        "the zombie worker kept running after SIGCONT"
    );
    sleep_ms(2000).await;
    let acks = load.finish().await;
    assert!(!acks.acked.is_empty());
    verify_acked(&c.bootstrap(0), &topic, 4, &acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_hands_partitions_over_without_client_errors() {
    let _serial = SERIAL.lock().await;
    let (mut c, topic, load) = loaded_cluster(3, 1, "planned", 6, 1).await;
    sleep_ms(2000).await;
    c.workers[0].signal("TERM");
    let status = c.workers[0]
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "worker exit status {status}");
    assert!(
        c.workers[0].log().contains("drained"),
        "worker did not drain before exiting"
    );
    sleep_ms(3000).await;
    finish_planned_handover(&c, &topic, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_api_drains_a_worker_and_a_gateway_under_load_without_client_errors() {
    let _serial = SERIAL.lock().await;
    let (c, topic, load) = loaded_cluster(3, 2, "ctl", 6, 1).await;
    sleep_ms(2000).await;
    let (w0, g1) = (c.workers[0].http_addr(), c.gateways[1].http_addr());
    let owned = |s: &serde_json::Value| s["partitions"].as_array().map_or(0, Vec::len);

    // Status reports what the metadata says.
    let status = ctl(w0, &["status", "--json"]).await.json();
    assert_eq!(status["role"], "logworker");
    assert_eq!(status["id"], "w0");
    assert_eq!(status["lease"]["state"], "held");
    assert_eq!(owned(&status), c.owned_by(0).await);
    assert!(owned(&status) > 0, "worker 0 owns nothing: {status}");

    // Drain worker 0 under load: every partition and slot moves, no
    // produce fails, no stream of it needs a seal.
    let drained = ctl(w0, &["drain", "--json"]).await.json();
    assert!(
        drained["handed_over"].as_u64().unwrap_or(0) > 0,
        "{drained}"
    );
    let status = ctl(w0, &["status", "--json"]).await.json();
    assert_eq!(owned(&status), 0, "still owned after a drain: {status}");
    assert_eq!(
        status["coordinator_slots"].as_array().map_or(0, Vec::len),
        0
    );
    assert_eq!(status["draining"], true);
    assert_eq!(c.owned_by(0).await, 0);
    sleep_ms(1500).await;
    // While drained it takes nothing; undrained, the assigner gives it work.
    assert_eq!(c.owned_by(0).await, 0);
    assert!(ctl(w0, &["undrain"]).await.success);
    eventually(
        "the undrained worker is assigned partitions again",
        Duration::from_secs(30),
        async || c.owned_by(0).await > 0,
    )
    .await;

    // Flush on a worker answers once durable; a gateway has nothing to flush.
    let flushed = ctl(c.workers[1].http_addr(), &["flush", "--json"])
        .await
        .json();
    assert!(
        flushed["durable_sequence"].as_u64().unwrap_or(0) > 0,
        "{flushed}"
    );
    let refused = ctl(g1, &["flush"]).await;
    assert!(
        !refused.success && refused.stderr.contains("gateway"),
        "{}",
        refused.stderr
    );

    // Drain gateway 1 (the load runs through gateway 0): it refuses new
    // connections and leaves readiness; undrained, it serves again.
    let gw = ctl(g1, &["status", "--json"]).await.json();
    assert_eq!(gw["role"], "gateway");
    assert_eq!(gw["gateway"]["accepting"], true);
    assert_eq!(gw["gateway"]["workers"], 3);
    assert!(ctl(g1, &["drain"]).await.success);
    assert_eq!(http_get(g1, "/readyz").await.expect("readyz").0, 503);
    let gw = ctl(g1, &["status", "--json"]).await.json();
    assert_eq!(gw["gateway"]["accepting"], false);
    assert_eq!(gw["draining"], true);
    let closed = async {
        let mut s = tokio::net::TcpStream::connect(c.kafka_addr(1)).await?;
        let mut buf = [0u8; 1];
        tokio::io::AsyncReadExt::read(&mut s, &mut buf).await
    };
    let read = tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("a drained gateway left a new connection open");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a drained gateway served a connection"
    );
    assert!(ctl(g1, &["undrain"]).await.success);
    assert_eq!(http_get(g1, "/readyz").await.expect("readyz").0, 200);
    let (_, records) = consume_all(&c.bootstrap(1), &topic, 6, Duration::from_secs(30));
    assert!(records.values().map(Vec::len).sum::<usize>() > 0);

    sleep_ms(1000).await;
    finish_planned_handover(&c, &topic, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn added_gateway_and_worker_take_part_while_clients_run() {
    let _serial = SERIAL.lock().await;
    let (mut c, topic, load) = loaded_cluster(1, 1, "grow", 6, 1).await;
    sleep_ms(1500).await;
    let g = c.add_gateway().await;
    let w = c.add_worker().await;
    eventually(
        "the added worker was assigned partitions",
        Duration::from_secs(30),
        async || c.owned_by(w).await > 0,
    )
    .await;
    sleep_ms(3000).await;
    let acks = load.finish().await;
    assert!(
        acks.failed.is_empty(),
        "produce errors reached the client: {:?}",
        &acks.failed[..acks.failed.len().min(5)]
    );
    // Read everything back through the gateway that was added.
    verify_acked(&c.bootstrap(g), &topic, 6, &acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_fall_back_from_an_empty_replica_to_the_primary() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(ClusterOptions {
        workers: 1,
        gateways: 1,
        read_replica: true,
        // No tail cache: every fetch reads the object store.
        env: vec![("KAFSCALE_CACHE_BYTES".into(), "0".into())],
        ..Default::default()
    })
    .await;
    let topic = unique_name("replica");
    create_topic(&c.bootstrap(0), &topic, 1, &[]).await;
    let load = Load::start(c.bootstrap(0), &topic, 1);
    sleep_ms(1000).await;
    let acks = load.finish().await;
    verify_acked(&c.bootstrap(0), &topic, 1, &acks);
    let metrics = c.workers[0].metrics().await;
    let fallbacks = metrics
        .lines()
        .find(|l| l.starts_with("kafscale_s3_replica_reads_total{outcome=\"fallback\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        fallbacks >= 1.0,
        "reads missing from the replica were not counted as fallbacks:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("replica"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Consumes from `consumer` until `want` records arrived (bounded), committing
/// nothing; returns the count.
fn poll_records(
    consumer: &rdkafka::consumer::BaseConsumer,
    want: usize,
    timeout: Duration,
) -> usize {
    use rdkafka::consumer::Consumer as _;
    let deadline = std::time::Instant::now() + timeout;
    let mut n = 0;
    while n < want && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => n += 1,
            Some(Err(e)) => eprintln!("consumer error (retried by the client): {e}"),
            None => {}
        }
    }
    let _ = consumer.assignment();
    n
}

/// Commits the consumer's position synchronously, retrying while the
/// coordinator moves.
fn commit_with_retry(consumer: &rdkafka::consumer::BaseConsumer, timeout: Duration) {
    use rdkafka::consumer::{CommitMode, Consumer as _};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("commit failed, retrying: {e}");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => panic!("commit did not succeed within {timeout:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consumer_group_keeps_working_across_a_coordinator_move() {
    let _serial = SERIAL.lock().await;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let mut c = Cluster::start(ClusterOptions {
        workers: 2,
        gateways: 1,
        ..Default::default()
    })
    .await;
    let topic = unique_name("grp");
    create_topic(&c.bootstrap(0), &topic, 4, &[]).await;
    let p: FutureProducer = producer(&c.bootstrap(0), &[("acks", "all")]);
    let sends = (0..400).map(|i| {
        let (p, t) = (p.clone(), topic.clone());
        async move {
            let k = i.to_string();
            p.send(
                FutureRecord::to(&t).key(&k).payload(&k),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
        }
    });
    for r in futures::future::join_all(sends).await {
        r.expect("produce");
    }
    let group = unique_name("g");
    let slot = kafscale_controlplane::offsets_topic::slot_of(&group, 8);
    let coordinator = c
        .owner("__consumer_offsets", slot)
        .await
        .expect("the group's slot has an owner");
    let (bootstrap, t, g) = (c.bootstrap(0), topic.clone(), group.clone());
    let member = std::thread::spawn(move || {
        let consumer: BaseConsumer = common::group_member_config(&bootstrap, &g, "m1", &[])
            .create()
            .expect("consumer");
        consumer.subscribe(&[&t]).expect("subscribe");
        let first = poll_records(&consumer, 200, Duration::from_secs(60));
        assert_eq!(first, 200, "consumed before the move");
        commit_with_retry(&consumer, Duration::from_secs(30));
        consumer
    });
    let consumer = tokio::task::spawn_blocking(move || member.join().expect("member thread"))
        .await
        .expect("join");
    // The coordinator dies: its slot (and its data partitions) move.
    c.workers[coordinator].kill9();
    let consumer = tokio::task::spawn_blocking(move || {
        let rest = poll_records(&consumer, 200, Duration::from_secs(60));
        assert_eq!(rest, 200, "consumed after the coordinator moved");
        commit_with_retry(&consumer, Duration::from_secs(60));
        consumer
    })
    .await
    .expect("consume after move");
    drop(consumer);
    let committed = common::fetch_committed(&c.bootstrap(0), &group, &topic, 4)
        .expect("committed offsets after the move");
    let total: i64 = committed
        .values()
        .map(|o| match o.offset {
            rdkafka::Offset::Offset(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(
        total, 400,
        "committed offsets cover every record: {committed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fetch_spanning_workers_answers_once_one_has_data() {
    use common::RawConn;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    let _serial = SERIAL.lock().await;
    let c = Cluster::start(ClusterOptions {
        workers: 2,
        gateways: 1,
        ..Default::default()
    })
    .await;
    let topic = unique_name("spread");
    create_topic(&c.bootstrap(0), &topic, 8, &[]).await;
    c.wait_all_assigned(Duration::from_secs(30)).await;
    let mut on = [None, None];
    for p in 0..8 {
        if let Some(w) = c.owner(&topic, p).await {
            on[w].get_or_insert(p);
        }
    }
    let [Some(with_data), Some(empty)] = on else {
        panic!("the 8 partitions are not spread over both workers: {on:?}");
    };
    let p: FutureProducer = producer(&c.bootstrap(0), &[("acks", "all")]);
    p.send(
        FutureRecord::to(&topic)
            .partition(with_data)
            .payload("x")
            .key("k"),
        Duration::from_secs(30),
    )
    .await
    .expect("produce");

    // One fetch of both partitions with a long wait: the empty partition's
    // worker long-polls, the other has data at once.
    let partition = |i| {
        FetchPartition::default()
            .with_partition(i)
            .with_fetch_offset(0)
            .with_partition_max_bytes(1 << 20)
    };
    let request = FetchRequest::default()
        .with_max_wait_ms(20_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.clone())))
            .with_partitions(vec![partition(with_data), partition(empty)])]);
    let mut conn = RawConn::connect(c.kafka_addr(0)).await;
    let started = std::time::Instant::now();
    let resp = conn.request(12, &request).await;
    let took = started.elapsed();
    let parts = &resp.responses[0].partitions;
    let data = parts
        .iter()
        .find(|x| x.partition_index == with_data)
        .expect("partition with data");
    let idle = parts
        .iter()
        .find(|x| x.partition_index == empty)
        .expect("empty partition");
    assert_eq!((data.error_code, data.high_watermark), (0, 1), "{data:?}");
    assert!(
        data.records.as_ref().is_some_and(|r| !r.is_empty()),
        "records of {with_data}"
    );
    assert_eq!((idle.error_code, idle.high_watermark), (0, 0), "{idle:?}");
    // Far below the 20 s wait (not a timing benchmark: it only tells
    // "answered with the data" from "waited for the idle worker").
    assert!(took < Duration::from_secs(10), "fetch took {took:?}");
}

/// How many workers own `topic`'s `partitions`, per etcd.
async fn topic_owners(c: &Cluster, topic: &str, partitions: i32) -> usize {
    let mut owners = std::collections::BTreeSet::new();
    for p in 0..partitions {
        owners.extend(c.owner(topic, p).await);
    }
    owners.len()
}

/// How many workers own partitions (of any topic), per etcd.
async fn owning_workers(c: &Cluster) -> usize {
    let mut n = 0;
    for i in 0..c.workers.len() {
        if c.owned_by(i).await > 0 {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pack_placement_follows_the_ingest_rate_without_losing_an_acked_record() {
    let _serial = SERIAL.lock().await;
    // Objects reach their 256 KiB target from 1.3 MB/s per worker (256 KiB
    // per 200 ms ceiling): the rate `pack` gives one worker.
    let c = Cluster::start(ClusterOptions {
        workers: 3,
        gateways: 1,
        worker_env: vec![
            ("KAFSCALE_PLACEMENT".into(), "pack".into()),
            ("KAFSCALE_WAL_TARGET_OBJECT_BYTES".into(), "262144".into()),
        ],
        ..Default::default()
    })
    .await;
    let topic = unique_name("pack");
    create_topic(&c.bootstrap(0), &topic, 6, &[]).await;
    c.wait_all_assigned(Duration::from_secs(30)).await;
    assert_eq!(
        owning_workers(&c).await,
        1,
        "an idle cluster is packed: the topic's 6 partitions and the coordinator topic's 8"
    );

    // Several MB/s: more than one worker's share.
    let heavy = Shape {
        in_flight: 256,
        value_bytes: 4096,
    };
    let load = Load::start_shaped(c.bootstrap(0), &topic, 2, heavy);
    eventually(
        "the load spread the topic's partitions over every worker",
        Duration::from_secs(60),
        async || topic_owners(&c, &topic, 6).await == 3,
    )
    .await;
    sleep_ms(2000).await;
    let acks = load.finish().await;
    assert!(
        acks.failed.is_empty(),
        "produce errors reached the client: {:?}",
        &acks.failed[..acks.failed.len().min(5)]
    );
    verify_acked(&c.bootstrap(0), &topic, 6, &acks);

    // Idle again: packed back onto one worker, and every record still reads.
    eventually(
        "the idle cluster was packed again",
        Duration::from_secs(120),
        async || owning_workers(&c).await == 1,
    )
    .await;
    verify_acked(&c.bootstrap(0), &topic, 6, &acks);
}

/// Every partition's assignment epoch (topics and consumer-offsets slots).
async fn assignment_epochs(c: &Cluster) -> BTreeMap<(uuid::Uuid, i32), u64> {
    c.meta()
        .await
        .list_assignments()
        .await
        .expect("list assignments")
        .into_iter()
        .map(|(p, a)| (p, a.epoch))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_every_worker_at_once_moves_each_partition_at_most_once() {
    let _serial = SERIAL.lock().await;
    let (mut c, topic, load) = loaded_cluster(3, 1, "restart-all", 12, 1).await;
    sleep_ms(2000).await;
    // SIGTERM to every worker at once (each drains), then all started
    // together, as `cluster.sh restart` or a rollout of every pod does.
    for w in &c.workers {
        w.signal("TERM");
    }
    for w in c.workers.iter_mut() {
        let status = w.wait_exit(Duration::from_secs(30)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not drain and exit: {status:?}",
            w.name
        );
    }
    // The drains moved partitions among the workers still assignable; what
    // matters is what the restart does.
    let before = assignment_epochs(&c).await;
    for w in c.workers.iter_mut() {
        w.spawn();
    }
    for w in c.workers.iter_mut() {
        w.wait_ready().await;
    }
    c.wait_all_assigned(Duration::from_secs(30)).await;
    let per_worker = before.len() / c.workers.len();
    eventually(
        "the partitions are spread over the restarted workers",
        Duration::from_secs(30),
        async || {
            let mut owned = Vec::new();
            for i in 0..c.workers.len() {
                owned.push(c.owned_by(i).await);
            }
            owned.iter().all(|&n| n >= per_worker)
        },
    )
    .await;
    sleep_ms(3000).await;
    // The assigner waited for the workers to register: a partition moved
    // at most once (to balance), not to the first worker back and then on
    // to the others, mid-open.
    let after = assignment_epochs(&c).await;
    let moved_twice: Vec<_> = after
        .iter()
        .filter(|(p, e)| **e > before.get(p).copied().unwrap_or(0) + 1)
        .collect();
    assert!(
        moved_twice.is_empty(),
        "{} of {} partitions moved more than once: {:?}",
        moved_twice.len(),
        after.len(),
        &moved_twice[..moved_twice.len().min(5)]
    );
    for w in c.workers.iter_mut() {
        assert!(
            w.try_exit().is_none(),
            "{} exited after the restart",
            w.name
        );
        assert!(
            !w.log().contains("sealed WAL stream"),
            "{} had to seal a stream",
            w.name
        );
    }
    let acks = load.finish().await;
    assert!(!acks.acked.is_empty(), "nothing was acknowledged");
    verify_acked(&c.bootstrap(0), &topic, 12, &acks);
}
