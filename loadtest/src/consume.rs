//! Consumer side: partition assignment, end-to-end latency and completeness.
//!
//! By default every consumer is given a fixed slice of the partitions with
//! `assign()` at offsets fetched up front (the high watermarks, or the log
//! start with `--from-beginning`), which needs no consumer-group support on
//! the broker. With `--group` the consumers subscribe instead; the rebalance
//! callback still pins each newly assigned partition to the up-front offset, so
//! a late or repeated rebalance re-reads (counted as duplicates) rather than
//! skipping records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::clock::Clock;
use crate::payload::Header;
use crate::stats::{error_kind, new_latency_histogram, ErrorTally};

/// How long one `poll` may block; bounds the reaction time to stop requests.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Per-request timeout for watermark look-ups.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumer configuration.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic to read.
    pub topic: String,
    /// Subscribe through a consumer group instead of manual assignment.
    pub group: bool,
    /// Start at the log start instead of the current end.
    pub from_beginning: bool,
    /// `group.id` to use (unique per run).
    pub group_id: String,
    /// Extra librdkafka properties, applied last.
    pub props: Vec<(String, String)>,
}

/// State shared by all consumer threads.
#[derive(Debug)]
pub struct ConsumeShared {
    filter_run: Option<u64>,
    capacity: u64,
    seen: Vec<AtomicU64>,
    unique: AtomicU64,
    duplicates: AtomicU64,
    foreign: AtomicU64,
    warmup: AtomicU64,
    bytes: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    target: AtomicU64,
    stop: AtomicBool,
    assigned: AtomicUsize,
    errors: ErrorTally,
}

impl ConsumeShared {
    /// Tracks sequences `0..capacity`; records of other runs are ignored when
    /// `filter_run` is set.
    pub fn new(capacity: u64, filter_run: Option<u64>) -> Self {
        let words = usize::try_from(capacity.div_ceil(64)).unwrap_or(usize::MAX);
        Self {
            filter_run,
            capacity,
            seen: (0..words).map(|_| AtomicU64::new(0)).collect(),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            warmup: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            stop: AtomicBool::new(false),
            assigned: AtomicUsize::new(0),
            errors: ErrorTally::default(),
        }
    }

    /// Distinct measured records consumed so far.
    pub fn unique(&self) -> u64 {
        self.unique.load(Ordering::Relaxed)
    }

    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.unique() >= self.target.load(Ordering::Relaxed)
    }

    /// Accounts one consumed payload received at `now_ns`, recording its
    /// end-to-end latency into `hist` if it is a new measured record.
    pub fn observe(&self, payload: Option<&[u8]>, now_ns: u64, hist: &mut Histogram<u64>) {
        let header = match payload.map(Header::decode) {
            Some(Ok(h)) if self.filter_run.is_none_or(|r| r == h.run_id) => h,
            _ => {
                self.foreign.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if header.warmup {
            self.warmup.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if header.sequence >= self.capacity {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let word = usize::try_from(header.sequence / 64)
            .ok()
            .and_then(|w| self.seen.get(w));
        let Some(word) = word else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bit = 1u64 << (header.sequence % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        hist.saturating_record(now_ns.saturating_sub(header.scheduled_ns) / 1_000);
        let len = payload.map_or(0, <[u8]>::len) as u64;
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.first_ns.fetch_min(now_ns, Ordering::Relaxed);
        self.last_ns.fetch_max(now_ns, Ordering::Relaxed);
        self.unique.fetch_add(1, Ordering::Relaxed);
    }
}

/// Consumer context: counts errors and, in group mode, pins assigned
/// partitions to the start offsets fetched before producing.
pub struct LoadConsumerContext {
    shared: Arc<ConsumeShared>,
    start_offsets: HashMap<i32, Offset>,
}

impl ClientContext for LoadConsumerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        note_error(&self.shared, &error, reason);
    }
}

impl ConsumerContext for LoadConsumerContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for (topic, partition) in parts {
                    if let Some(offset) = self.start_offsets.get(&partition) {
                        if tpl
                            .set_partition_offset(&topic, partition, *offset)
                            .is_err()
                        {
                            self.shared.errors.add("SetAssignOffset");
                        }
                    }
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                match result {
                    Ok(()) => {
                        self.shared
                            .assigned
                            .fetch_add(tpl.count(), Ordering::Relaxed);
                    }
                    Err(e) => self.shared.errors.add(format!("assign:{}", error_kind(&e))),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    self.shared
                        .errors
                        .add(format!("unassign:{}", error_kind(&e)));
                }
                let n = tpl.count();
                // Never underflow, whatever order librdkafka reports in.
                let _ =
                    self.shared
                        .assigned
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                            Some(a.saturating_sub(n))
                        });
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                self.shared.errors.add(format!("rebalance:{code:?}"));
                let _ = consumer.unassign();
                self.shared.assigned.store(0, Ordering::Relaxed);
            }
        }
    }
}

type LoadConsumer = BaseConsumer<LoadConsumerContext>;

/// Counts a consumer error; the first of each kind is also printed.
fn note_error(shared: &ConsumeShared, error: &KafkaError, reason: &str) {
    if shared.errors.count(error_kind(error)) == 1 {
        if reason.is_empty() {
            eprintln!("consumer error: {error}");
        } else {
            eprintln!("consumer error: {error}: {reason}");
        }
    }
}

/// Results of the consumers.
#[derive(Debug)]
pub struct ConsumeOutcome {
    /// Target the consumers waited for.
    pub expected: u64,
    /// Distinct measured records consumed.
    pub unique: u64,
    /// Measured records seen more than once.
    pub duplicates: u64,
    /// Records of other runs or without a load-test header.
    pub foreign: u64,
    /// Warm-up records seen.
    pub warmup: u64,
    /// Value bytes of distinct measured records.
    pub bytes: u64,
    /// First measured record consumed (unix ns), if any.
    pub first_ns: Option<u64>,
    /// Last measured record consumed (unix ns), if any.
    pub last_ns: Option<u64>,
    /// End-to-end latency histogram (microseconds).
    pub latency_us: Histogram<u64>,
    /// Consumer errors by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// Running consumer threads.
pub struct ConsumerPool {
    shared: Arc<ConsumeShared>,
    handles: Vec<JoinHandle<Histogram<u64>>>,
    partitions: usize,
}

impl ConsumerPool {
    /// Creates up to `count` consumers on `partitions`, positions them and
    /// starts their poll threads. Manual mode uses at most one consumer per
    /// partition.
    pub fn start(
        settings: &ConsumerSettings,
        partitions: &[i32],
        count: u32,
        shared: Arc<ConsumeShared>,
        clock: Clock,
        deadline: Instant,
    ) -> anyhow::Result<Self> {
        if partitions.is_empty() {
            bail!("topic {} has no partitions", settings.topic);
        }
        let start_offsets = start_offsets(settings, partitions)?;
        let count = usize::try_from(count).unwrap_or(usize::MAX).max(1);
        let count = if settings.group {
            count
        } else {
            count.min(partitions.len())
        };
        let mut handles = Vec::with_capacity(count);
        for c in 0..count {
            let consumer = create_consumer(settings, c, &shared, &start_offsets)?;
            if settings.group {
                consumer
                    .subscribe(&[settings.topic.as_str()])
                    .context("subscribing")?;
            } else {
                let mut tpl = TopicPartitionList::new();
                for (&p, _) in partitions
                    .iter()
                    .zip(0usize..)
                    .filter(|(_, i)| i % count == c)
                {
                    let offset = start_offsets.get(&p).copied().unwrap_or(Offset::End);
                    tpl.add_partition_offset(&settings.topic, p, offset)
                        .context("building assignment")?;
                }
                consumer.assign(&tpl).context("assigning partitions")?;
                shared.assigned.fetch_add(tpl.count(), Ordering::Relaxed);
            }
            let shared = Arc::clone(&shared);
            let handle = thread::Builder::new()
                .name(format!("consumer-{c}"))
                .spawn(move || consume_loop(&consumer, &shared, clock, deadline))
                .context("spawning consumer thread")?;
            handles.push(handle);
        }
        Ok(Self {
            shared,
            handles,
            partitions: partitions.len(),
        })
    }

    /// Waits until every partition is assigned (immediate in manual mode).
    pub fn wait_ready(&self, deadline: Instant) -> anyhow::Result<()> {
        while self.shared.assigned.load(Ordering::Relaxed) < self.partitions {
            if Instant::now() >= deadline {
                bail!(
                    "consumers got {} of {} partitions assigned before the timeout",
                    self.shared.assigned.load(Ordering::Relaxed),
                    self.partitions
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Shared counters (for progress output).
    pub fn shared(&self) -> &Arc<ConsumeShared> {
        &self.shared
    }

    /// Sets how many distinct measured records to wait for.
    pub fn set_target(&self, target: u64) {
        self.shared.target.store(target, Ordering::Relaxed);
    }

    /// Asks the consumer threads to stop at their next poll.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the threads (they stop at the target, on [`Self::stop`] or
    /// at the deadline) and merges their results.
    pub fn finish(self) -> anyhow::Result<ConsumeOutcome> {
        let mut latency_us = new_latency_histogram();
        for h in self.handles {
            let hist = h
                .join()
                .map_err(|_| anyhow!("a consumer thread panicked"))?;
            latency_us
                .add(&hist)
                .map_err(|e| anyhow!("merging latency histograms: {e:?}"))?;
        }
        let s = &self.shared;
        let first = s.first_ns.load(Ordering::Relaxed);
        let last = s.last_ns.load(Ordering::Relaxed);
        let unique = s.unique();
        Ok(ConsumeOutcome {
            expected: s.target.load(Ordering::Relaxed),
            unique,
            duplicates: s.duplicates.load(Ordering::Relaxed),
            foreign: s.foreign.load(Ordering::Relaxed),
            warmup: s.warmup.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            first_ns: (unique > 0).then_some(first),
            last_ns: (unique > 0).then_some(last),
            latency_us,
            errors: s.errors.snapshot(),
        })
    }
}

fn consumer_config(settings: &ConsumerSettings, index: usize) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap)
        .set("client.id", format!("kafscale-loadtest-c{index}"))
        // Required by librdkafka even for assign(); no offsets are committed.
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Every partition starts at an explicit offset, so a reset can only
        // mean records were deleted before they were read: surface it as an
        // error instead of silently skipping ahead.
        .set("auto.offset.reset", "error");
    for (k, v) in &settings.props {
        config.set(k, v);
    }
    config
}

fn create_consumer(
    settings: &ConsumerSettings,
    index: usize,
    shared: &Arc<ConsumeShared>,
    start_offsets: &HashMap<i32, Offset>,
) -> anyhow::Result<LoadConsumer> {
    let context = LoadConsumerContext {
        shared: Arc::clone(shared),
        start_offsets: start_offsets.clone(),
    };
    consumer_config(settings, index)
        .create_with_context(context)
        .with_context(|| format!("creating consumer {index}"))
}

/// Fetches the starting offset of every partition before anything is produced.
fn start_offsets(
    settings: &ConsumerSettings,
    partitions: &[i32],
) -> anyhow::Result<HashMap<i32, Offset>> {
    if settings.from_beginning {
        return Ok(partitions.iter().map(|&p| (p, Offset::Beginning)).collect());
    }
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.bootstrap);
    for (k, v) in &settings.props {
        config.set(k, v);
    }
    let probe: BaseConsumer = config.create().context("creating offset probe")?;
    partitions
        .iter()
        .map(|&p| {
            let (_low, high) = probe
                .fetch_watermarks(&settings.topic, p, WATERMARK_TIMEOUT)
                .with_context(|| format!("fetching end offset of {}/{p}", settings.topic))?;
            Ok((p, Offset::Offset(high)))
        })
        .collect()
}

fn consume_loop(
    consumer: &LoadConsumer,
    shared: &ConsumeShared,
    clock: Clock,
    deadline: Instant,
) -> Histogram<u64> {
    let mut hist = new_latency_histogram();
    while !shared.done() && Instant::now() < deadline {
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Err(e)) => note_error(shared, &e, ""),
            Some(Ok(msg)) => shared.observe(msg.payload(), clock.now_ns(), &mut hist),
        }
    }
    hist
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PayloadBuilder;

    fn payload(run_id: u64, sequence: u64, scheduled_ns: u64, warmup: bool) -> Vec<u8> {
        let mut b = PayloadBuilder::new(64, 1).expect("builder");
        b.build(&Header {
            scheduled_ns,
            run_id,
            producer_id: 0,
            sequence,
            warmup,
        })
        .to_vec()
    }

    #[test]
    fn observe_dedups_filters_and_measures() {
        let shared = ConsumeShared::new(100, Some(7));
        let mut hist = new_latency_histogram();
        shared.observe(Some(&payload(7, 3, 1_000_000, false)), 5_000_000, &mut hist);
        shared.observe(Some(&payload(7, 3, 1_000_000, false)), 6_000_000, &mut hist);
        shared.observe(Some(&payload(8, 4, 1_000_000, false)), 6_000_000, &mut hist);
        shared.observe(Some(&payload(7, 4, 1_000_000, true)), 6_000_000, &mut hist);
        shared.observe(
            Some(&payload(7, 100, 1_000_000, false)),
            6_000_000,
            &mut hist,
        );
        shared.observe(Some(b"not a loadtest record"), 6_000_000, &mut hist);
        shared.observe(None, 6_000_000, &mut hist);
        assert_eq!(shared.unique(), 1);
        assert_eq!(shared.duplicates.load(Ordering::Relaxed), 1);
        assert_eq!(shared.warmup.load(Ordering::Relaxed), 1);
        assert_eq!(shared.foreign.load(Ordering::Relaxed), 4);
        assert_eq!(shared.bytes.load(Ordering::Relaxed), 64);
        assert_eq!(hist.len(), 1);
        assert!(hist.equivalent(hist.max(), 4_000)); // 4 ms in µs
    }

    #[test]
    fn done_when_target_reached() {
        let shared = ConsumeShared::new(2, None);
        let mut hist = new_latency_histogram();
        assert!(!shared.done());
        shared.target.store(1, Ordering::Relaxed);
        assert!(!shared.done());
        shared.observe(Some(&payload(99, 1, 0, false)), 1, &mut hist);
        assert!(shared.done());
    }
}
