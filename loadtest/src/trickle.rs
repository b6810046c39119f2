//! Background "trickle" producer: a steady, low rate of records to every
//! partition of a topic, so that whichever consumer owns a partition soon has
//! something new to read (used by `--mode rebalance`).
//!
//! Records go to the partitions in turn (explicit partition numbers, no
//! partitioner), so each partition receives `rate` records per second. A
//! sender that falls more than [`MAX_LAG`] behind its schedule skips ahead
//! instead of bursting: the point is a steady flow, not an exact count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::clock::Clock;
use crate::payload::{Header, PayloadBuilder};
use crate::produce::{create_producer, DeliveryStats, LoadProducer, ProducerSettings};
use crate::stats::error_kind;

/// Longest single sleep, bounding the reaction time to [`Trickle::stop`].
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// How far the sender may fall behind its schedule before skipping ahead.
const MAX_LAG: Duration = Duration::from_secs(1);
/// Time allowed for in-flight records when stopping.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What to trickle.
#[derive(Debug, Clone)]
pub struct TrickleSpec {
    /// Producer client settings.
    pub settings: ProducerSettings,
    /// Topic to produce to.
    pub topic: String,
    /// Partitions to feed, each at `rate_per_partition`.
    pub partitions: Vec<i32>,
    /// Records per second per partition (> 0).
    pub rate_per_partition: f64,
    /// Record value size in bytes (at least the payload header).
    pub record_size: usize,
    /// Run id written into each payload.
    pub run_id: u64,
}

/// Counts of a finished trickle.
#[derive(Debug, Clone, Default)]
pub struct TrickleOutcome {
    /// Records handed to the client.
    pub sent: u64,
    /// Records acknowledged by the broker.
    pub acked: u64,
    /// Records whose delivery failed (including refused enqueues).
    pub failed: u64,
    /// Records skipped because the client queue was full or the sender lagged.
    pub skipped: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
}

/// Counts kept by the sender thread.
#[derive(Debug, Default, Clone, Copy)]
struct SenderCounts {
    sent: u64,
    skipped: u64,
}

/// A running background producer; stop it with [`Trickle::stop`].
pub struct Trickle {
    stop: Arc<AtomicBool>,
    stats: Arc<DeliveryStats>,
    handle: Option<JoinHandle<(LoadProducer, SenderCounts)>>,
}

impl Trickle {
    /// Creates the producer (so configuration errors surface here) and
    /// starts the sender thread.
    pub fn start(spec: TrickleSpec, clock: Clock) -> anyhow::Result<Self> {
        if spec.partitions.is_empty()
            || !spec.rate_per_partition.is_finite()
            || spec.rate_per_partition <= 0.0
        {
            return Err(anyhow!("trickle needs partitions and a positive rate"));
        }
        let stats = Arc::new(DeliveryStats::new(clock));
        let mut settings = spec.settings.clone();
        settings.props.insert(
            0,
            (
                "client.id".to_string(),
                "kafscale-loadtest-trickle".to_string(),
            ),
        );
        let producer = create_producer(&settings, Arc::clone(&stats), 0)
            .context("creating trickle producer")?;
        let mut payload = PayloadBuilder::new(spec.record_size, spec.run_id ^ 0x7472_6963)
            .map_err(|e| anyhow!("record size {}: {e}", spec.record_size))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sender_stats = Arc::clone(&stats);
        let handle = thread::Builder::new()
            .name("trickle".to_string())
            .spawn(move || {
                let counts = send_loop(&producer, &sender_stats, &spec, &mut payload, &flag, clock);
                (producer, counts)
            })
            .context("spawning trickle thread")?;
        Ok(Self {
            stop,
            stats,
            handle: Some(handle),
        })
    }

    /// Stops sending, waits briefly for outstanding deliveries and returns
    /// the counts.
    pub fn stop(mut self) -> TrickleOutcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut outcome = TrickleOutcome::default();
        if let Some(handle) = self.handle.take() {
            match handle.join() {
                Ok((producer, counts)) => {
                    let _ = producer.flush(Timeout::After(FLUSH_TIMEOUT));
                    outcome.sent = counts.sent;
                    outcome.skipped = counts.skipped;
                    outcome.acked = self.stats.acked();
                    outcome.failed = self.stats.failed();
                    // Dropping the producer purges what is still queued; the
                    // snapshot above is taken first so purges are not counted.
                    outcome.errors = self.stats.error_counts();
                    drop(producer);
                }
                Err(_) => {
                    outcome.errors.insert("TricklePanicked".to_string(), 1);
                }
            }
        }
        outcome
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sends record `i` to partition `partitions[i % n]` at `start + i / total_rate`.
fn send_loop(
    producer: &LoadProducer,
    stats: &DeliveryStats,
    spec: &TrickleSpec,
    payload: &mut PayloadBuilder,
    stop: &AtomicBool,
    clock: Clock,
) -> SenderCounts {
    let total_rate = spec.rate_per_partition * spec.partitions.len() as f64;
    let mut counts = SenderCounts::default();
    let mut start = Instant::now();
    let mut i: u64 = 0;
    let mut sequence: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let at = start + Duration::from_secs_f64(i as f64 / total_rate);
        let now = Instant::now();
        if at > now {
            thread::sleep((at - now).min(MAX_SLEEP));
            continue;
        }
        if now - at > MAX_LAG {
            // Re-anchor the schedule rather than bursting to catch up.
            let behind = ((now - at).as_secs_f64() * total_rate) as u64;
            counts.skipped += behind;
            start = now;
            i = 0;
            continue;
        }
        let partition = spec.partitions[(sequence % spec.partitions.len() as u64) as usize];
        let header = Header {
            scheduled_ns: clock.ns_at(at),
            run_id: spec.run_id,
            producer_id: u32::MAX,
            sequence,
            warmup: false,
        };
        let record = BaseRecord::<(), [u8]>::to(&spec.topic)
            .partition(partition)
            .payload(payload.build(&header));
        match producer.send(record) {
            Ok(()) => counts.sent += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                counts.skipped += 1;
            }
            Err((err, _)) => {
                stats.record_failure(false, format!("enqueue:{}", error_kind(&err)));
            }
        }
        i += 1;
        sequence += 1;
    }
    counts
}
