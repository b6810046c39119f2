//! One committer of `--mode commit`: a consumer with a fixed, manually
//! assigned (and paused) set of partitions that commits increasing offsets
//! for all of them as fast as the chosen mode allows.
//!
//! Commit number `k` (1, 2, ...) sets every partition of the committer to
//! offset `k`; the warm-up commit uses offset 0. Offsets are not checked
//! against the partitions' logs: Kafka accepts any offset in OffsetCommit,
//! and the records themselves are irrelevant here. In async mode the offset
//! also identifies the commit when its result arrives.
//!
//! Results accumulate in [`SharedResults`], which the orchestrating thread
//! can read even if the committer's thread never returns: librdkafka's
//! synchronous commit has no timeout of its own, so a broker that stops
//! answering would otherwise hold the run past `--timeout-secs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::async_commit::AsyncCommitter;
use crate::cli::CommitKind;
use crate::stats::{error_kind, lock, new_latency_histogram, ErrorTally};

/// Longest wait for a commit result while the async window is full; a poll
/// returns as soon as one result has been handled.
const RESULT_WAIT: Duration = Duration::from_millis(100);

/// Settings shared by all committers.
#[derive(Debug, Clone)]
pub struct CommitterSettings {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic whose partitions are committed.
    pub topic: String,
    /// `group.id` shared by all committers.
    pub group_id: String,
    /// Extra librdkafka properties, applied last.
    pub props: Vec<(String, String)>,
    /// Sync or async commits.
    pub kind: CommitKind,
    /// Async: most commits awaiting their result.
    pub window: usize,
}

/// When a committer stops issuing commits.
#[derive(Debug, Clone, Copy)]
pub enum StopAt {
    /// At this instant (`--duration-secs`).
    Time(Instant),
    /// After this many commits (`--commits`).
    Count(u64),
}

/// Results of one committer's measured phase.
#[derive(Debug)]
pub struct CommitterOutcome {
    /// Partitions committed by every commit.
    pub partitions: Vec<i32>,
    /// Commits issued.
    pub issued: u64,
    /// Commits that succeeded (for every partition).
    pub ok: u64,
    /// Commits that failed (request or partition error, or refused).
    pub failed: u64,
    /// Commits without a result at the end: async results still pending, or
    /// a sync `commit()` call that had not returned.
    pub unanswered: u64,
    /// The committer's thread had not finished when the run gave up on it.
    pub stuck: bool,
    /// Offset of the last successful commit (0 = only the warm-up).
    pub last_ok_offset: Option<i64>,
    /// When the last successful commit completed.
    pub last_ok_at: Option<Instant>,
    /// Commit latency of the successful commits (microseconds).
    pub latency_us: Histogram<u64>,
}

/// Results recorded by the commit callback (async) or the commit loop (sync).
#[derive(Debug)]
struct Results {
    /// Async: issue instant of each outstanding commit, by offset.
    pending: HashMap<i64, Instant>,
    /// Sync: a `commit()` call has not returned yet.
    sync_in_flight: bool,
    latency_us: Histogram<u64>,
    issued: u64,
    ok: u64,
    failed: u64,
    /// Callbacks that matched no outstanding commit.
    unmatched: u64,
    last_ok_offset: Option<i64>,
    last_ok_at: Option<Instant>,
}

impl Results {
    fn new() -> Self {
        Self {
            pending: HashMap::new(),
            sync_in_flight: false,
            latency_us: new_latency_histogram(),
            issued: 0,
            ok: 0,
            failed: 0,
            unmatched: 0,
            last_ok_offset: None,
            last_ok_at: None,
        }
    }

    fn completed(&self) -> u64 {
        self.ok + self.failed + self.unmatched
    }

    fn success(&mut self, offset: i64, issued: Instant, at: Instant) {
        self.ok += 1;
        let us =
            u64::try_from(at.saturating_duration_since(issued).as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us);
        self.last_ok_offset = Some(self.last_ok_offset.map_or(offset, |o| o.max(offset)));
        self.last_ok_at = Some(at);
    }
}

/// A committer's results, readable from the orchestrating thread.
#[derive(Debug, Clone)]
pub struct SharedResults(Arc<Mutex<Results>>);

impl SharedResults {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Results::new())))
    }

    /// Snapshot as an outcome; `stuck` marks a thread that never finished.
    pub fn outcome(&self, partitions: &[i32], stuck: bool) -> CommitterOutcome {
        let r = lock(&self.0);
        CommitterOutcome {
            partitions: partitions.to_vec(),
            issued: r.issued,
            ok: r.ok,
            failed: r.failed,
            unanswered: r.pending.len() as u64 + u64::from(r.sync_in_flight),
            stuck,
            last_ok_offset: r.last_ok_offset,
            last_ok_at: r.last_ok_at,
            latency_us: r.latency_us.clone(),
        }
    }
}

/// Consumer context collecting commit results.
pub struct CommitContext {
    results: SharedResults,
    errors: Arc<ErrorTally>,
    /// Successful commits of all committers (progress output).
    total_ok: Arc<AtomicU64>,
}

impl CommitContext {
    fn failure(&self, results: &mut Results, err: &KafkaError) {
        results.failed += 1;
        self.errors.add(format!("commit:{}", error_kind(err)));
    }
}

impl ClientContext for CommitContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if self.errors.count(error_kind(&error)) == 1 {
            eprintln!("committer client error: {error}: {reason}");
        }
    }
}

impl ConsumerContext for CommitContext {
    /// Async results (see `async_commit`); sync commits do not come here.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let at = Instant::now();
        let elements = offsets.elements();
        let offset = elements.first().and_then(|e| e.offset().to_raw());
        let mut r = lock(&self.results.0);
        let Some((offset, issued)) = offset.and_then(|o| r.pending.remove(&o).map(|i| (o, i)))
        else {
            r.unmatched += 1;
            self.errors.add("UnmatchedCommitResult");
            return;
        };
        let partition_error = elements.iter().find_map(|e| e.error().err());
        match result.err().or(partition_error) {
            None => {
                r.success(offset, issued, at);
                self.total_ok.fetch_add(1, Ordering::Relaxed);
            }
            Some(e) => self.failure(&mut r, &e),
        }
    }
}

/// A committer ready to run.
///
/// Field order matters: librdkafka caches partition handles inside the
/// elements of a list passed to `assign()`/`pause()`, and destroying the
/// client waits for those references. `offsets` is therefore declared (and
/// dropped) before `consumer`; the other order deadlocks in `rd_kafka_destroy`.
pub struct Committer {
    offsets: TopicPartitionList,
    consumer: BaseConsumer<CommitContext>,
    partitions: Vec<i32>,
    kind: CommitKind,
    window: usize,
}

impl Committer {
    /// Creates committer `index` and assigns it `partitions` (paused, so it
    /// does not fetch).
    pub fn create(
        settings: &CommitterSettings,
        index: usize,
        partitions: &[i32],
        errors: &Arc<ErrorTally>,
        total_ok: &Arc<AtomicU64>,
    ) -> anyhow::Result<Self> {
        let context = CommitContext {
            results: SharedResults::new(),
            errors: Arc::clone(errors),
            total_ok: Arc::clone(total_ok),
        };
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &settings.bootstrap)
            .set("client.id", format!("kafscale-loadtest-k{index}"))
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        for (k, v) in &settings.props {
            config.set(k, v);
        }
        let consumer: BaseConsumer<CommitContext> = config
            .create_with_context(context)
            .with_context(|| format!("creating committer {index}"))?;
        let mut offsets = TopicPartitionList::with_capacity(partitions.len());
        for &p in partitions {
            offsets
                .add_partition_offset(&settings.topic, p, Offset::End)
                .context("building assignment")?;
        }
        consumer
            .assign(&offsets)
            .with_context(|| format!("committer {index}: assigning partitions"))?;
        if let Err(e) = consumer.pause(&offsets) {
            errors.add(format!("pause:{}", error_kind(&e)));
        }
        Ok(Self {
            offsets,
            consumer,
            partitions: partitions.to_vec(),
            kind: settings.kind,
            window: settings.window.max(1),
        })
    }

    /// The committer's results, for reading from another thread.
    pub fn results(&self) -> SharedResults {
        self.consumer.context().results.clone()
    }

    /// Partitions in every commit.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// One synchronous commit of offset 0 (not measured): finds the group
    /// coordinator and fails early when commits do not work at all. Blocks
    /// for at most about `session.timeout.ms` without a coordinator.
    pub fn warm_up(&mut self) -> anyhow::Result<()> {
        self.offsets.set_all_offsets(Offset::Offset(0))?;
        self.consumer
            .commit(&self.offsets, CommitMode::Sync)
            .context("warm-up commit")?;
        lock(&self.consumer.context().results.0).last_ok_offset = Some(0);
        Ok(())
    }

    /// Waits until `start`, then commits until `stop` (or `deadline`).
    pub fn run(mut self, start: Instant, stop: StopAt, deadline: Instant) {
        thread::sleep(start.saturating_duration_since(Instant::now()));
        match self.kind {
            CommitKind::Sync => self.run_sync(stop, deadline),
            CommitKind::Async => self.run_async(stop, deadline),
        }
    }

    /// Sync loop: latency is the time spent in `commit(.., Sync)`.
    fn run_sync(&mut self, stop: StopAt, deadline: Instant) {
        let results = &self.consumer.context().results;
        let mut issued = 0u64;
        while more(stop, issued, deadline) {
            issued += 1;
            let offset = i64::try_from(issued).unwrap_or(i64::MAX);
            {
                let mut r = lock(&results.0);
                r.issued = issued;
                r.sync_in_flight = true;
            }
            let result = self
                .offsets
                .set_all_offsets(Offset::Offset(offset))
                .and_then(|()| {
                    let sent = Instant::now();
                    self.consumer
                        .commit(&self.offsets, CommitMode::Sync)
                        .map(|()| sent)
                });
            let at = Instant::now();
            let context = self.consumer.context();
            let mut r = lock(&results.0);
            r.sync_in_flight = false;
            match result {
                Ok(sent) => {
                    r.success(offset, sent, at);
                    context.total_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => context.failure(&mut r, &e),
            }
            drop(r);
            // Serve client error events (nothing is fetched: paused).
            let _ = self.consumer.poll(Duration::ZERO);
        }
    }

    /// Async loop: keeps up to `window` commits outstanding; latency runs
    /// from submission to the commit callback.
    fn run_async(&mut self, stop: StopAt, deadline: Instant) {
        let context = self.consumer.context();
        let results = &context.results;
        let committer = match AsyncCommitter::new(&self.consumer) {
            Ok(c) => c,
            Err(e) => {
                context.failure(&mut lock(&results.0), &e);
                return;
            }
        };
        let mut issued = 0u64;
        while more(stop, issued, deadline) {
            if lock(&results.0).pending.len() >= self.window {
                let _ = self.consumer.poll(RESULT_WAIT);
                continue;
            }
            issued += 1;
            let offset = i64::try_from(issued).unwrap_or(i64::MAX);
            if let Err(e) = self.offsets.set_all_offsets(Offset::Offset(offset)) {
                context.failure(&mut lock(&results.0), &e);
                continue;
            }
            {
                let mut r = lock(&results.0);
                r.issued = issued;
                r.pending.insert(offset, Instant::now());
            }
            if let Err(e) = committer.commit(&self.offsets) {
                let mut r = lock(&results.0);
                r.pending.remove(&offset);
                context.failure(&mut r, &e);
            }
            drain(&self.consumer);
        }
        // Collect the outstanding results.
        while !lock(&results.0).pending.is_empty() && Instant::now() < deadline {
            let _ = self.consumer.poll(RESULT_WAIT);
        }
    }
}

/// Serves every commit result that is already queued, without blocking.
fn drain(consumer: &BaseConsumer<CommitContext>) {
    let results = &consumer.context().results;
    loop {
        let before = lock(&results.0).completed();
        let _ = consumer.poll(Duration::ZERO);
        if lock(&results.0).completed() == before {
            return;
        }
    }
}

/// Whether another commit should be issued after `issued` commits.
fn more(stop: StopAt, issued: u64, deadline: Instant) -> bool {
    let now = Instant::now();
    now < deadline
        && match stop {
            StopAt::Time(end) => now < end,
            StopAt::Count(n) => issued < n,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_conditions() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        assert!(more(StopAt::Count(2), 1, later));
        assert!(!more(StopAt::Count(2), 2, later));
        assert!(!more(StopAt::Count(2), 0, now));
        assert!(more(StopAt::Time(later), 99, later));
        assert!(!more(StopAt::Time(now), 0, later));
    }

    #[test]
    fn results_track_latest_success_and_unanswered() {
        let mut r = Results::new();
        r.last_ok_offset = Some(0);
        let t = Instant::now();
        r.success(3, t, t + Duration::from_micros(1500));
        r.success(2, t, t + Duration::from_micros(500));
        assert_eq!(r.last_ok_offset, Some(3));
        assert_eq!(r.ok, 2);
        assert_eq!(r.completed(), 2);
        assert_eq!(r.latency_us.len(), 2);
        assert!(r.latency_us.equivalent(r.latency_us.max(), 1500));

        r.pending.insert(4, t);
        r.sync_in_flight = true;
        let shared = SharedResults(Arc::new(Mutex::new(r)));
        let o = shared.outcome(&[1, 2], true);
        assert_eq!((o.ok, o.unanswered, o.stuck), (2, 2, true));
        assert_eq!(o.partitions, vec![1, 2]);
    }
}
