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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
use crate::stats::{error_kind, lock, new_latency_histogram, ErrorTally};

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
    /// Consumers that should be reading (a scenario stage's count).
    active: AtomicUsize,
    /// End-to-end latencies since the last [`ConsumeShared::take_interval`].
    interval_us: Mutex<Histogram<u64>>,
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
            active: AtomicUsize::new(usize::MAX),
            interval_us: Mutex::new(new_latency_histogram()),
            errors: ErrorTally::default(),
        }
    }

    /// Distinct measured records consumed so far.
    pub fn unique(&self) -> u64 {
        self.unique.load(Ordering::Relaxed)
    }

    /// Value bytes of the distinct measured records consumed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Consumer errors so far, all kinds together.
    pub fn error_total(&self) -> u64 {
        self.errors.snapshot().values().sum()
    }

    /// Lets only the first `n` consumers read; the others give up their
    /// partitions (manual mode) or leave the group (group mode) until a later
    /// call lets them back in. Their partitions go on from where the last
    /// reader stopped, so nothing is skipped.
    pub fn set_active(&self, n: u32) {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        self.active.store(n, Ordering::Relaxed);
    }

    /// End-to-end latencies recorded since the previous call (microseconds);
    /// every new measured record lands in exactly one interval.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut h = lock(&self.interval_us);
        let taken = h.clone();
        h.reset();
        taken
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
        let latency_us = now_ns.saturating_sub(header.scheduled_ns) / 1_000;
        hist.saturating_record(latency_us);
        lock(&self.interval_us).saturating_record(latency_us);
        let len = payload.map_or(0, <[u8]>::len) as u64;
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.first_ns.fetch_min(now_ns, Ordering::Relaxed);
        self.last_ns.fetch_max(now_ns, Ordering::Relaxed);
        self.unique.fetch_add(1, Ordering::Relaxed);
    }
}

/// Next offset to read of every partition: the start offset fetched before
/// producing, raised as records are consumed. A partition handed to another
/// consumer resumes here, so it re-reads at most what was in flight (counted
/// as duplicates) and never skips.
#[derive(Debug)]
pub struct Positions {
    next: HashMap<i32, AtomicI64>,
}

impl Positions {
    fn new(start: &HashMap<i32, Offset>) -> Self {
        let next = start
            .iter()
            .map(|(&p, o)| (p, AtomicI64::new(o.to_raw().unwrap_or(RAW_BEGINNING))))
            .collect();
        Self { next }
    }

    /// Notes that `offset` of `partition` was consumed.
    fn consumed(&self, partition: i32, offset: i64) {
        if let Some(n) = self.next.get(&partition) {
            n.fetch_max(offset.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// Where a new reader of `partition` starts.
    fn offset(&self, partition: i32) -> Option<Offset> {
        self.next
            .get(&partition)
            .map(|n| Offset::from_raw(n.load(Ordering::Relaxed)))
    }
}

/// librdkafka's raw value for the log start (`RD_KAFKA_OFFSET_BEGINNING`).
const RAW_BEGINNING: i64 = -2;

/// Consumer context: counts errors and, in group mode, pins assigned
/// partitions to their [`Positions`].
pub struct LoadConsumerContext {
    shared: Arc<ConsumeShared>,
    positions: Arc<Positions>,
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
                    if let Some(offset) = self.positions.offset(partition) {
                        if tpl.set_partition_offset(&topic, partition, offset).is_err() {
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
        let positions = Arc::new(Positions::new(&start_offsets(settings, partitions)?));
        let count = usize::try_from(count).unwrap_or(usize::MAX).max(1);
        let count = if settings.group {
            count
        } else {
            count.min(partitions.len())
        };
        let all: Arc<[i32]> = partitions.into();
        let mut handles = Vec::with_capacity(count);
        for c in 0..count {
            let consumer = create_consumer(settings, c, &shared, &positions)?;
            let member = Member {
                index: c,
                count,
                group: settings.group,
                topic: settings.topic.clone(),
                partitions: Arc::clone(&all),
                positions: Arc::clone(&positions),
            };
            member.join(&consumer, count)?;
            if !settings.group {
                shared
                    .assigned
                    .fetch_add(member.share(count).len(), Ordering::Relaxed);
            }
            let shared = Arc::clone(&shared);
            let handle = thread::Builder::new()
                .name(format!("consumer-{c}"))
                .spawn(move || consume_loop(&consumer, &member, &shared, clock, deadline))
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
    positions: &Arc<Positions>,
) -> anyhow::Result<LoadConsumer> {
    let context = LoadConsumerContext {
        shared: Arc::clone(shared),
        positions: Arc::clone(positions),
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

/// One consumer's place in the pool, and how it joins or leaves the reading.
struct Member {
    index: usize,
    count: usize,
    group: bool,
    topic: String,
    partitions: Arc<[i32]>,
    positions: Arc<Positions>,
}

impl Member {
    /// This member's partitions when the first `active` members read
    /// (manual mode): every `active`-th partition.
    fn share(&self, active: usize) -> Vec<i32> {
        if self.index >= active {
            return Vec::new();
        }
        self.partitions
            .iter()
            .zip(0usize..)
            .filter(|(_, i)| i % active == self.index)
            .map(|(&p, _)| p)
            .collect()
    }

    /// Starts reading as one of the first `active` members: subscribes, or
    /// assigns this member's share at the current positions.
    fn join(&self, consumer: &LoadConsumer, active: usize) -> anyhow::Result<()> {
        if self.group {
            return consumer
                .subscribe(&[self.topic.as_str()])
                .context("subscribing");
        }
        let mut tpl = TopicPartitionList::new();
        for p in self.share(active) {
            let offset = self.positions.offset(p).unwrap_or(Offset::End);
            tpl.add_partition_offset(&self.topic, p, offset)
                .context("building assignment")?;
        }
        consumer.assign(&tpl).context("assigning partitions")
    }

    /// Follows a change from `from` to `to` reading members.
    fn follow(&self, consumer: &LoadConsumer, from: usize, to: usize) -> anyhow::Result<()> {
        let (was, is) = (self.index < from, self.index < to);
        match (self.group, was, is) {
            (true, true, false) => {
                consumer.unsubscribe();
                Ok(())
            }
            (true, false, true) => self.join(consumer, to),
            (true, _, _) => Ok(()),
            (false, _, _) => self.join(consumer, to),
        }
    }
}

fn consume_loop(
    consumer: &LoadConsumer,
    member: &Member,
    shared: &ConsumeShared,
    clock: Clock,
    deadline: Instant,
) -> Histogram<u64> {
    let mut hist = new_latency_histogram();
    let mut active = member.count;
    while !shared.done() && Instant::now() < deadline {
        let wanted = shared.active.load(Ordering::Relaxed).min(member.count);
        if wanted != active {
            if let Err(e) = member.follow(consumer, active, wanted) {
                shared.errors.add(format!("restage:{e:#}"));
            }
            active = wanted;
        }
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Err(e)) => note_error(shared, &e, ""),
            Some(Ok(msg)) => {
                member.positions.consumed(msg.partition(), msg.offset());
                shared.observe(msg.payload(), clock.now_ns(), &mut hist);
            }
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
    fn positions_start_at_the_fetched_offset_and_only_move_forward() {
        let start = HashMap::from([(0, Offset::Offset(10)), (1, Offset::Beginning)]);
        let pos = Positions::new(&start);
        assert_eq!(pos.offset(0), Some(Offset::Offset(10)));
        assert_eq!(pos.offset(1), Some(Offset::Beginning));
        pos.consumed(0, 14);
        pos.consumed(0, 12);
        pos.consumed(1, 0);
        pos.consumed(7, 3);
        assert_eq!(pos.offset(0), Some(Offset::Offset(15)));
        assert_eq!(pos.offset(1), Some(Offset::Offset(1)));
        assert_eq!(pos.offset(7), None);
    }

    #[test]
    fn member_shares_split_partitions_among_active_members() {
        let member = |index| Member {
            index,
            count: 3,
            group: false,
            topic: "t".into(),
            partitions: Arc::from(vec![0, 1, 2, 3, 4, 5, 6]),
            positions: Arc::new(Positions::new(&HashMap::new())),
        };
        assert_eq!(member(0).share(3), vec![0, 3, 6]);
        assert_eq!(member(2).share(3), vec![2, 5]);
        assert_eq!(member(0).share(1), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(member(1).share(2), vec![1, 3, 5]);
        assert!(member(2).share(2).is_empty());
    }

    #[test]
    fn interval_latencies_are_taken_once() {
        let shared = ConsumeShared::new(10, None);
        let mut hist = new_latency_histogram();
        shared.observe(Some(&payload(1, 0, 0, false)), 2_000_000, &mut hist);
        shared.observe(Some(&payload(1, 1, 0, false)), 3_000_000, &mut hist);
        assert_eq!(shared.take_interval().len(), 2);
        assert_eq!(shared.take_interval().len(), 0);
        assert_eq!((shared.unique(), shared.bytes()), (2, 128));
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
