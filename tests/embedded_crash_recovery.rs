//! Durability of acknowledged produces across `kill -9` of `kafscale dev`.
//!
//! A producer (acks=all) writes keyed records continuously; the server is
//! SIGKILLed while produce requests are in flight and restarted on the same
//! data dir. Every acknowledged record must then be readable at its
//! acknowledged offset with identical key and payload, no offset may appear
//! twice, and offsets handed out after the restart must be higher than every
//! offset acknowledged before it.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    assert_strictly_increasing, consume_all, create_topic, poll_until, producer,
    raw_fetch_partition, unique_name, Consumed, DevOptions, DevServer,
};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::FutureRecord;
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 4;
const KILL_CYCLES: usize = 3;
/// Acknowledgements to wait for (plus random jitter) before each kill.
const ACKS_BEFORE_KILL: usize = 1500;
const MAX_IN_FLIGHT: usize = 400;

/// (key, payload, delivery report) of a record that was in flight.
type InFlightOutcome = (
    Vec<u8>,
    Vec<u8>,
    Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
);

/// An acknowledged record.
#[derive(Clone, Debug)]
struct Ack {
    cycle: usize,
    partition: i32,
    offset: i64,
    key: Vec<u8>,
    payload: Vec<u8>,
}

/// Outcome of one producer run.
struct RunResult {
    acks: Vec<Ack>,
    failures: Vec<String>,
    sent: usize,
}

/// A producer task writing continuously until `stop` is set, then draining.
struct ContinuousProducer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    handle: JoinHandle<RunResult>,
}

impl ContinuousProducer {
    fn start(bootstrap: String, topic: String, cycle: usize) -> ContinuousProducer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let (stop2, acked2, sent2) = (stop.clone(), acked.clone(), sent.clone());
        let handle = tokio::spawn(async move {
            let producer = producer(
                &bootstrap,
                &[("linger.ms", "2"), ("message.timeout.ms", "90000")],
            );
            let mut in_flight = FuturesUnordered::new();
            let mut result = RunResult {
                acks: Vec::new(),
                failures: Vec::new(),
                sent: 0,
            };
            let mut seq = 0usize;
            loop {
                let stopping = stop2.load(Ordering::SeqCst);
                if stopping && in_flight.is_empty() {
                    break;
                }
                if stopping || in_flight.len() >= MAX_IN_FLIGHT {
                    let (key, payload, outcome): InFlightOutcome =
                        in_flight.next().await.expect("non-empty");
                    match outcome {
                        Ok(Ok(delivery)) => {
                            result.acks.push(Ack {
                                cycle,
                                partition: delivery.partition,
                                offset: delivery.offset,
                                key,
                                payload,
                            });
                            acked2.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Err((e, _))) => result.failures.push(e.to_string()),
                        Err(_) => result.failures.push("delivery future cancelled".into()),
                    }
                    continue;
                }
                let key = format!("key-{}", seq % 97).into_bytes();
                let payload = payload_for(cycle, seq);
                match producer.send_result(FutureRecord::to(&topic).key(&key).payload(&payload)) {
                    Ok(delivery) => {
                        in_flight.push(async move { (key, payload, delivery.await) });
                        seq += 1;
                        sent2.store(seq, Ordering::SeqCst);
                    }
                    // Local queue full: back off briefly and retry the same record.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
                if seq.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            result.sent = seq;
            result
        });
        ContinuousProducer {
            stop,
            acked,
            sent,
            handle,
        }
    }

    async fn stop_and_drain(self) -> RunResult {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(180), self.handle)
            .await
            .expect("producer did not drain within 180 s")
            .expect("producer task panicked")
    }
}

/// Unique, self-describing payload of 100–400 bytes.
fn payload_for(cycle: usize, seq: usize) -> Vec<u8> {
    let mut payload = format!("cycle{cycle}-seq{seq:07}-").into_bytes();
    let filler = 100 + (seq * 37) % 300;
    payload.extend((0..filler).map(|i| b'a' + ((i + seq) % 26) as u8));
    payload
}

fn max_offsets(acks: &[Ack]) -> BTreeMap<i32, i64> {
    let mut max = BTreeMap::new();
    for a in acks {
        let m = max.entry(a.partition).or_insert(a.offset);
        *m = (*m).max(a.offset);
    }
    max
}

fn preview(bytes: &Option<Vec<u8>>) -> String {
    match bytes {
        None => "null".into(),
        Some(b) => String::from_utf8_lossy(&b[..b.len().min(24)]).into_owned(),
    }
}

/// Checks every acknowledged record against the log as read by librdkafka
/// and, independently, by raw Fetch requests (which also catch repeated
/// offsets that librdkafka would silently skip).
async fn verify_log(server: &DevServer, topic: &str, acks: &[Ack], context: &str) {
    let (bootstrap, topic_owned) = (server.bootstrap(), topic.to_string());
    let (highs, consumed) = tokio::task::spawn_blocking(move || {
        consume_all(
            &bootstrap,
            &topic_owned,
            PARTITIONS,
            Duration::from_secs(120),
        )
    })
    .await
    .expect("consumer thread");

    let mut by_offset: BTreeMap<(i32, i64), &Consumed> = BTreeMap::new();
    for (partition, records) in &consumed {
        assert_strictly_increasing(topic, *partition, records);
        for c in records {
            by_offset.insert((*partition, c.offset), c);
        }
    }
    for (partition, max) in max_offsets(acks) {
        assert!(
            highs[&partition] > max,
            "{context}: partition {partition} high watermark {} but offset {max} was acknowledged",
            highs[&partition]
        );
    }
    let mut lost = Vec::new();
    for ack in acks {
        match by_offset.get(&(ack.partition, ack.offset)) {
            Some(c)
                if c.key.as_deref() == Some(&ack.key[..])
                    && c.value.as_deref() == Some(&ack.payload[..]) => {}
            found => lost.push(format!(
                "acked in cycle {} at {}/{} payload {:?} -> found {}",
                ack.cycle,
                ack.partition,
                ack.offset,
                String::from_utf8_lossy(&ack.payload[..24]),
                found.map_or("nothing".to_string(), |c| format!(
                    "key {} value {}",
                    preview(&c.key),
                    preview(&c.value)
                ))
            )),
        }
    }
    assert!(
        lost.is_empty(),
        "{context}: {} of {} acknowledged records are missing or different, first ones:\n{}",
        lost.len(),
        acks.len(),
        lost[..lost.len().min(20)].join("\n")
    );

    for partition in 0..PARTITIONS {
        let raw =
            raw_fetch_partition(server.kafka_addr(), topic, partition, highs[&partition]).await;
        let raw_offsets: Vec<i64> = raw.iter().map(|r| r.offset).collect();
        let client_offsets: Vec<i64> = consumed[&partition].iter().map(|c| c.offset).collect();
        assert_eq!(
            raw_offsets, client_offsets,
            "{context}: partition {partition}: offsets seen by raw Fetch differ from librdkafka's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_repeated_kill_9() {
    let mut server =
        DevServer::start(DevOptions::default().env("KAFSCALE_WAL_FLUSH_INTERVAL_MS", 5)).await;
    let topic = unique_name("crash");
    create_topic(&server.bootstrap(), &topic, PARTITIONS, &[]).await;

    let mut all_acks: Vec<Ack> = Vec::new();
    for cycle in 0..=KILL_CYCLES {
        let previous_max = max_offsets(&all_acks);
        let run = ContinuousProducer::start(server.bootstrap(), topic.clone(), cycle);
        let is_kill_cycle = cycle < KILL_CYCLES;
        let target = if is_kill_cycle {
            ACKS_BEFORE_KILL + rand::random_range(0..500)
        } else {
            200 // final run: just check offsets keep growing after the last restart
        };
        poll_until(
            &format!("{target} acks in cycle {cycle}"),
            Duration::from_secs(90),
            || (run.acked.load(Ordering::SeqCst) >= target).then_some(()),
        )
        .await;
        if is_kill_cycle {
            let (sent, acked) = (
                run.sent.load(Ordering::SeqCst),
                run.acked.load(Ordering::SeqCst),
            );
            server.kill9();
            assert!(
                sent > acked,
                "cycle {cycle}: nothing was in flight at the kill ({sent} sent, {acked} acked)"
            );
            eprintln!("cycle {cycle}: kill -9 with {acked} acked of {sent} sent");
            server.restart().await;
        }
        let result = run.stop_and_drain().await;
        eprintln!(
            "cycle {cycle}: {} sent, {} acked, {} failed (first failure: {:?})",
            result.sent,
            result.acks.len(),
            result.failures.len(),
            result.failures.first()
        );
        assert!(
            result.acks.len() >= target,
            "cycle {cycle}: acks went missing from the run result"
        );

        for ack in &result.acks {
            if let Some(&max) = previous_max.get(&ack.partition) {
                assert!(
                    ack.offset > max,
                    "cycle {cycle}: new record acknowledged at {}/{} but offset {max} was already acknowledged before the restart",
                    ack.partition,
                    ack.offset
                );
            }
        }
        all_acks.extend(result.acks);
        let context = format!("after cycle {cycle}");
        verify_log(&server, &topic, &all_acks, &context).await;
        server.assert_running();
    }
}
