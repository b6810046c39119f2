//! Producer side: rate-scheduled sending and delivery accounting.
//!
//! Each producer is a librdkafka [`ThreadedProducer`] whose delivery callback
//! runs on the client's polling thread and timestamps the acknowledgement the
//! moment librdkafka reports it. Produce latency is `ack time - scheduled send
//! time`, where the scheduled time is read back from the record's payload.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::ClientContext;

use crate::clock::Clock;
use crate::payload::{Header, PayloadBuilder};
use crate::scenario::{Schedule, Slice};
use crate::stats::{error_kind, lock, new_latency_histogram, ErrorTally};

/// Default `queue.buffering.max.messages`: large enough that unthrottled
/// sending is limited by the broker, not by the client queue.
const QUEUE_MAX_MESSAGES: &str = "500000";
/// Default `queue.buffering.max.kbytes` (256 MiB).
const QUEUE_MAX_KBYTES: &str = "262144";
/// Sleeps shorter than this are skipped (sending marginally early is cheaper
/// and more accurate than oversleeping).
const MIN_SLEEP: Duration = Duration::from_micros(50);

/// Delivery counters and the produce-latency histogram shared by all producers.
#[derive(Debug)]
pub struct DeliveryStats {
    clock: Clock,
    latency_us: Mutex<Histogram<u64>>,
    /// Produce latencies since the last [`DeliveryStats::take_interval`].
    interval_us: Mutex<Histogram<u64>>,
    /// When the measured phase started (unset during the warm-up).
    measured_start: OnceLock<Instant>,
    acked: AtomicU64,
    acked_bytes: AtomicU64,
    failed: AtomicU64,
    warmup_failed: AtomicU64,
    last_ack_ns: AtomicU64,
    errors: ErrorTally,
    client_errors: ErrorTally,
}

impl DeliveryStats {
    /// Creates empty statistics using `clock` for acknowledgement times.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            latency_us: Mutex::new(new_latency_histogram()),
            interval_us: Mutex::new(new_latency_histogram()),
            measured_start: OnceLock::new(),
            acked: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            warmup_failed: AtomicU64::new(0),
            last_ack_ns: AtomicU64::new(0),
            errors: ErrorTally::default(),
            client_errors: ErrorTally::default(),
        }
    }

    /// Measured records acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Value bytes of the measured records acknowledged so far.
    pub fn acked_bytes(&self) -> u64 {
        self.acked_bytes.load(Ordering::Relaxed)
    }

    /// Start of the measured phase, once it has started.
    pub fn measured_start(&self) -> Option<Instant> {
        self.measured_start.get().copied()
    }

    /// Produce latencies recorded since the previous call (microseconds);
    /// every measured acknowledgement lands in exactly one interval.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut h = lock(&self.interval_us);
        let taken = h.clone();
        h.reset();
        taken
    }

    fn record_ack(&self, header: &Header, len: usize, now_ns: u64) {
        if header.warmup {
            return;
        }
        let latency_us = now_ns.saturating_sub(header.scheduled_ns) / 1_000;
        lock(&self.latency_us).saturating_record(latency_us);
        lock(&self.interval_us).saturating_record(latency_us);
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.acked_bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.last_ack_ns.fetch_max(now_ns, Ordering::Relaxed);
    }

    /// Measured records whose delivery failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Delivery failures by kind so far.
    pub fn error_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.errors.snapshot()
    }

    /// Counts one failed delivery (or refused enqueue) of kind `kind`.
    pub fn record_failure(&self, warmup: bool, kind: String) {
        if warmup {
            self.warmup_failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.errors.add(kind);
    }
}

/// librdkafka context that feeds delivery reports into [`DeliveryStats`].
#[derive(Debug)]
pub struct LoadProducerContext {
    stats: Arc<DeliveryStats>,
}

impl ClientContext for LoadProducerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let seen = self.stats.client_errors.count(error_kind(&error));
        // Client errors are mostly transient (reconnects): show the first few
        // of each kind, the report has the totals.
        if seen <= 3 {
            eprintln!("producer client error: {error}: {reason}");
        }
    }
}

impl ProducerContext for LoadProducerContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        let now_ns = self.stats.clock.now_ns();
        match result {
            Ok(msg) => match msg.payload().map(Header::decode) {
                Some(Ok(header)) => self.stats.record_ack(&header, msg.payload_len(), now_ns),
                // Every record we send carries a header; anything else is a bug.
                _ => self
                    .stats
                    .record_failure(false, "UndecodableDeliveryReport".to_string()),
            },
            Err((err, msg)) => {
                let warmup = msg
                    .payload()
                    .and_then(|p| Header::decode(p).ok())
                    .is_some_and(|h| h.warmup);
                self.stats.record_failure(warmup, error_kind(err));
            }
        }
    }
}

/// A producer client wired to shared delivery statistics.
pub type LoadProducer = ThreadedProducer<LoadProducerContext>;

/// Client settings for the producers.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// `acks`.
    pub acks: String,
    /// `compression.type`.
    pub compression: String,
    /// `linger.ms`.
    pub linger_ms: u64,
    /// Delivery timeout (`message.timeout.ms`).
    pub message_timeout: Duration,
    /// Extra librdkafka properties, applied last.
    pub props: Vec<(String, String)>,
}

/// Creates producer number `id`.
pub fn create_producer(
    settings: &ProducerSettings,
    stats: Arc<DeliveryStats>,
    id: u32,
) -> anyhow::Result<LoadProducer> {
    let timeout_ms = settings
        .message_timeout
        .as_millis()
        .clamp(1, i32::MAX as u128);
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap)
        .set("client.id", format!("kafscale-loadtest-p{id}"))
        .set("acks", &settings.acks)
        .set("compression.type", &settings.compression)
        .set("linger.ms", settings.linger_ms.to_string())
        .set("queue.buffering.max.messages", QUEUE_MAX_MESSAGES)
        .set("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES)
        .set("message.timeout.ms", timeout_ms.to_string());
    for (k, v) in &settings.props {
        config.set(k, v);
    }
    config
        .create_with_context(LoadProducerContext { stats })
        .with_context(|| format!("creating producer {id}"))
}

/// What one phase (warm-up or measured) should send.
#[derive(Debug, Clone)]
pub struct SendPlan {
    /// Topic to produce to.
    pub topic: String,
    /// Record value size in bytes.
    pub record_size: usize,
    /// Attach a per-record key.
    pub keys: bool,
    /// Records in this phase, across all producers (ignored with a `schedule`).
    pub records: u64,
    /// Total target rate in records/s; `None` = unthrottled (ignored with a
    /// `schedule`).
    pub rate: Option<f64>,
    /// Staged schedule (`--scenario`): when each record is due and which
    /// producers send it.
    pub schedule: Option<Arc<Schedule>>,
    /// Mark records as warm-up (excluded from statistics).
    pub warmup: bool,
    /// Run id written into each payload.
    pub run_id: u64,
    /// Stop sending (and flushing) at this instant.
    pub deadline: Instant,
}

impl SendPlan {
    /// Record index ranges and the producers sending each: the schedule's
    /// stages, or one range over all `producers`.
    fn slices(&self, producers: u32) -> Vec<Slice> {
        match &self.schedule {
            Some(schedule) => schedule.slices(),
            None => vec![Slice {
                first: 0,
                end: self.records,
                producers,
            }],
        }
    }

    /// When record `i` is due, after the phase start; `None` = now.
    fn due_after_start(&self, i: u64) -> Option<Duration> {
        match (&self.schedule, self.rate) {
            (Some(schedule), _) => Some(Duration::from_secs_f64(schedule.time_of(i))),
            (None, Some(rate)) => Some(Duration::from_secs_f64(i as f64 / rate)),
            (None, None) => None,
        }
    }
}

/// Records of `slices` that producer `id` has not sent, from index `from`
/// of the first slice on.
fn share_left(slices: &[Slice], id: u32, from: u64) -> u64 {
    slices
        .iter()
        .enumerate()
        .filter(|(_, s)| id < s.producers)
        .map(|(k, s)| {
            let start = if k == 0 {
                from
            } else {
                s.first + u64::from(id)
            };
            s.end.saturating_sub(start).div_ceil(u64::from(s.producers))
        })
        .sum()
}

/// Counts from sending one phase.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendTotals {
    /// Records accepted by the client.
    pub sent: u64,
    /// Records not handed to the client before the deadline.
    pub not_sent: u64,
    /// Records the client refused (counted as failed deliveries too).
    pub enqueue_failed: u64,
    /// Records still unacknowledged after the final flush.
    pub unacked: u64,
}

impl SendTotals {
    fn add(&mut self, o: SendTotals) {
        self.sent += o.sent;
        self.not_sent += o.not_sent;
        self.enqueue_failed += o.enqueue_failed;
        self.unacked += o.unacked;
    }
}

/// Result of one phase.
#[derive(Debug, Clone, Copy)]
pub struct PhaseResult {
    /// Phase start (schedule origin) in unix nanoseconds.
    pub start_ns: u64,
    /// Summed counts over all producers.
    pub totals: SendTotals,
}

/// Runs one phase starting at `start`: every producer sends its share on its
/// own thread, then flushes until everything is acknowledged or the deadline
/// passes.
///
/// Within each slice (the whole phase, or one scenario stage), producer `p`
/// of the slice's `P` sends indices `first+p, first+p+P, ...`; record `i` is
/// scheduled at `start + i / rate` (or the schedule's time for `i`), so the
/// union of all producers follows the target rate.
pub fn run_phase(
    producers: &[LoadProducer],
    plan: &SendPlan,
    clock: &Clock,
    start: Instant,
) -> anyhow::Result<PhaseResult> {
    let count = u32::try_from(producers.len()).context("too many producers")?;
    let results: Vec<thread::Result<anyhow::Result<SendTotals>>> = thread::scope(|s| {
        let handles: Vec<_> = producers
            .iter()
            .zip(0u32..)
            .map(|(producer, id)| {
                s.spawn(move || {
                    let mut totals = send_share(producer, plan, id, count, start, clock)?;
                    totals.unacked = flush(producer, plan.deadline);
                    Ok(totals)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let mut totals = SendTotals::default();
    for r in results {
        let t = r.map_err(|_| anyhow!("a producer thread panicked"))??;
        totals.add(t);
    }
    Ok(PhaseResult {
        start_ns: clock.ns_at(start),
        totals,
    })
}

/// Flushes until the deadline; returns the records still in flight.
fn flush(producer: &LoadProducer, deadline: Instant) -> u64 {
    let remaining = deadline.saturating_duration_since(Instant::now());
    match producer.flush(Timeout::After(remaining)) {
        Ok(()) => 0,
        Err(_) => u64::try_from(producer.in_flight_count()).unwrap_or(0),
    }
}

/// Sends producer `id`'s share of the phase.
fn send_share(
    producer: &LoadProducer,
    plan: &SendPlan,
    id: u32,
    producers: u32,
    start: Instant,
    clock: &Clock,
) -> anyhow::Result<SendTotals> {
    let seed = plan.run_id ^ (u64::from(id) << 48) ^ 0x9E37_79B9_7F4A_7C15;
    let mut payload = PayloadBuilder::new(plan.record_size, seed)
        .map_err(|e| anyhow!("record size {}: {e}", plan.record_size))?;
    let slices = plan.slices(producers);
    let mut totals = SendTotals::default();
    let mut key = String::new();
    for (k, slice) in slices.iter().enumerate() {
        if id >= slice.producers {
            continue;
        }
        let step = u64::from(slice.producers);
        let mut i = slice.first + u64::from(id);
        while i < slice.end {
            if Instant::now() >= plan.deadline {
                totals.not_sent += share_left(&slices[k..], id, i);
                return Ok(totals);
            }
            let scheduled_ns = match plan.due_after_start(i) {
                Some(after) => {
                    let at = start + after;
                    sleep_until(at, plan.deadline);
                    clock.ns_at(at)
                }
                None => clock.now_ns(),
            };
            let header = Header {
                scheduled_ns,
                run_id: plan.run_id,
                producer_id: id,
                sequence: i,
                warmup: plan.warmup,
            };
            let bytes = payload.build(&header);
            let mut record = BaseRecord::<str, [u8]>::to(&plan.topic).payload(bytes);
            if plan.keys {
                key.clear();
                // Writing to a String cannot fail.
                let _ = write!(key, "{i}");
                record = record.key(key.as_str());
            }
            send_one(producer, record, plan, &mut totals);
            i += step;
        }
    }
    Ok(totals)
}

/// Hands one record to the client, waiting out a full queue until the
/// deadline; counts the outcome in `totals`.
fn send_one(
    producer: &LoadProducer,
    mut record: BaseRecord<'_, str, [u8]>,
    plan: &SendPlan,
    totals: &mut SendTotals,
) {
    loop {
        match producer.send(record) {
            Ok(()) => {
                totals.sent += 1;
                return;
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                if Instant::now() >= plan.deadline {
                    totals.not_sent += 1;
                    return;
                }
                // Back-pressure: the wait counts towards this record's
                // latency because its scheduled time is already fixed.
                record = back;
                thread::sleep(Duration::from_micros(200));
            }
            Err((err, _)) => {
                totals.enqueue_failed += 1;
                producer
                    .context()
                    .stats
                    .record_failure(plan.warmup, format!("enqueue:{}", error_kind(&err)));
                return;
            }
        }
    }
}

/// Sleeps until `at` (bounded by `deadline`); skips sub-[`MIN_SLEEP`] waits.
fn sleep_until(at: Instant, deadline: Instant) {
    let now = Instant::now();
    let wait = at.min(deadline).saturating_duration_since(now);
    if wait >= MIN_SLEEP {
        thread::sleep(wait);
    }
}

/// Measured-phase results of [`produce`].
#[derive(Debug)]
pub struct ProduceOutcome {
    /// Send counts of the measured phase.
    pub totals: SendTotals,
    /// Measured records acknowledged.
    pub acked: u64,
    /// Value bytes acknowledged.
    pub acked_bytes: u64,
    /// Measured records failed (delivery or enqueue).
    pub failed: u64,
    /// Warm-up records failed.
    pub warmup_failed: u64,
    /// Measured phase start, unix nanoseconds.
    pub start_ns: u64,
    /// Seconds from measured start to the last acknowledgement.
    pub elapsed_secs: f64,
    /// Produce latency histogram (microseconds).
    pub latency_us: Histogram<u64>,
    /// Delivery failures by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Client-level errors by kind.
    pub client_errors: std::collections::BTreeMap<String, u64>,
}

/// Inputs of [`produce`].
#[derive(Debug, Clone)]
pub struct ProduceJob {
    /// Client settings.
    pub settings: ProducerSettings,
    /// Producer count.
    pub producers: u32,
    /// Warm-up records sent (and flushed) before measuring.
    pub warmup_records: u64,
    /// Measured-phase plan (its `warmup` flag is ignored).
    pub plan: SendPlan,
}

/// Creates the producers, runs the warm-up and measured phases and collects
/// the results of the measured phase.
pub fn produce(
    job: &ProduceJob,
    stats: &Arc<DeliveryStats>,
    clock: &Clock,
) -> anyhow::Result<ProduceOutcome> {
    let producers = (0..job.producers)
        .map(|id| create_producer(&job.settings, Arc::clone(stats), id))
        .collect::<anyhow::Result<Vec<_>>>()?;

    if job.warmup_records > 0 {
        let warmup = SendPlan {
            records: job.warmup_records,
            warmup: true,
            schedule: None,
            ..job.plan.clone()
        };
        run_phase(&producers, &warmup, clock, Instant::now()).context("warm-up phase")?;
    }

    let plan = SendPlan {
        warmup: false,
        ..job.plan.clone()
    };
    let start = Instant::now();
    // Set once: a second measured phase on the same stats cannot happen.
    let _ = stats.measured_start.set(start);
    let phase = run_phase(&producers, &plan, clock, start).context("measured phase")?;
    let now_ns = clock.now_ns();

    // Snapshot before the producers are dropped: dropping purges anything
    // still queued, which would add purge failures after the fact.
    let acked = stats.acked();
    let last_ack_ns = stats.last_ack_ns.load(Ordering::Relaxed);
    let end_ns = if acked > 0 { last_ack_ns } else { now_ns };
    let outcome = ProduceOutcome {
        totals: phase.totals,
        acked,
        acked_bytes: stats.acked_bytes.load(Ordering::Relaxed),
        failed: stats.failed.load(Ordering::Relaxed),
        warmup_failed: stats.warmup_failed.load(Ordering::Relaxed),
        start_ns: phase.start_ns,
        elapsed_secs: end_ns.saturating_sub(phase.start_ns) as f64 / 1e9,
        latency_us: lock(&stats.latency_us).clone(),
        errors: stats.errors.snapshot(),
        client_errors: stats.client_errors.snapshot(),
    };
    drop(producers);
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_accounting_skips_warmup_and_measures_from_schedule() {
        let clock = Clock::new();
        let stats = DeliveryStats::new(clock);
        let h = Header {
            scheduled_ns: 1_000_000,
            run_id: 1,
            producer_id: 0,
            sequence: 0,
            warmup: false,
        };
        stats.record_ack(&h, 100, 3_500_000);
        stats.record_ack(&Header { warmup: true, ..h }, 100, 9_000_000);
        assert_eq!(stats.acked(), 1);
        assert_eq!(stats.acked_bytes.load(Ordering::Relaxed), 100);
        let hist = lock(&stats.latency_us).clone();
        assert_eq!(hist.len(), 1);
        assert!(hist.equivalent(hist.max(), 2_500)); // 2.5 ms in µs
        stats.record_failure(true, "X".into());
        stats.record_failure(false, "X".into());
        assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
        assert_eq!(stats.warmup_failed.load(Ordering::Relaxed), 1);
        assert_eq!(stats.errors.snapshot().get("X"), Some(&2));
    }

    #[test]
    fn share_left_counts_the_remaining_records_of_one_producer() {
        let slices = [
            Slice {
                first: 0,
                end: 10,
                producers: 2,
            },
            Slice {
                first: 10,
                end: 20,
                producers: 1,
            },
            Slice {
                first: 20,
                end: 29,
                producers: 3,
            },
        ];
        // Producer 0 from index 4: 4,6,8 + 10..20 (10) + 20,23,26 (3).
        assert_eq!(share_left(&slices, 0, 4), 3 + 10 + 3);
        // Producer 1 skips the single-producer slice: 21,24,27.
        assert_eq!(share_left(&slices[1..], 1, 10), 3);
        assert_eq!(share_left(&slices[2..], 2, 29), 0);
    }

    #[test]
    fn sleep_until_respects_deadline() {
        let now = Instant::now();
        sleep_until(
            now + Duration::from_secs(10),
            now + Duration::from_millis(5),
        );
        assert!(now.elapsed() < Duration::from_secs(1));
    }
}
