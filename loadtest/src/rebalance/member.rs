//! One subscribe()-based group member of `--mode rebalance`: a
//! [`BaseConsumer`] polled on its own thread, reporting its rebalance
//! callbacks and first records to the [`Tracker`].
//!
//! librdkafka runs rebalance callbacks inside `poll()`, i.e. on the member's
//! thread, so a callback and the poll loop never race: the loop reports the
//! first record after each assignment change (signalled through the
//! `wants_record` flag) and nothing else, keeping the tracker's lock off the
//! per-record path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};

use super::tracker::Tracker;
use crate::stats::{error_kind, ErrorTally};

/// Longest poll; bounds the reaction time to leave and stop requests (which
/// is not part of any measurement: a leave round's clock starts on the
/// member's thread).
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Client settings shared by all members.
#[derive(Debug, Clone)]
pub struct MemberSettings {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// Topic to subscribe to.
    pub topic: String,
    /// `group.id`.
    pub group_id: String,
    /// `partition.assignment.strategy`.
    pub assignor: String,
    /// Extra librdkafka properties, applied last.
    pub props: Vec<(String, String)>,
}

/// Forwards rebalance callbacks and client errors.
struct MemberContext {
    id: usize,
    tracker: Arc<Tracker>,
    errors: Arc<ErrorTally>,
}

impl ClientContext for MemberContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if self.errors.count(error_kind(&error)) == 1 {
            eprintln!("member {} client error: {error}: {reason}", self.id);
        }
    }
}

impl ConsumerContext for MemberContext {
    /// Runs after the default handler has applied the (incremental)
    /// assignment or revocation.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let at = Instant::now();
        let incremental = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.tracker
                    .assigned(self.id, &partitions(tpl), incremental, at);
            }
            Rebalance::Revoke(tpl) => {
                self.tracker
                    .revoked(self.id, &partitions(tpl), incremental, at);
            }
            Rebalance::Error(e) => {
                self.errors.add(format!("rebalance:{}", error_kind(e)));
                self.tracker.lost(self.id, at);
            }
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

type MemberConsumer = BaseConsumer<MemberContext>;

/// A running member; leave with [`Member::leave`] or [`Member::stop`].
pub struct Member {
    id: usize,
    leave: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Member {
    /// Creates member `id`, registers it with the tracker, subscribes and
    /// starts polling. `before_subscribe` runs right before `subscribe()`
    /// (with the instant it is called), so a join round's clock starts there.
    pub fn start(
        id: usize,
        settings: &MemberSettings,
        tracker: &Arc<Tracker>,
        errors: &Arc<ErrorTally>,
        before_subscribe: impl FnOnce(Instant),
    ) -> anyhow::Result<Self> {
        let context = MemberContext {
            id,
            tracker: Arc::clone(tracker),
            errors: Arc::clone(errors),
        };
        let consumer: MemberConsumer = config(settings, id)
            .create_with_context(context)
            .with_context(|| format!("creating member {id}"))?;
        let wants_record = Arc::new(AtomicBool::new(true));
        tracker.register(id, Arc::clone(&wants_record), Instant::now());
        before_subscribe(Instant::now());
        consumer
            .subscribe(&[settings.topic.as_str()])
            .with_context(|| format!("member {id} subscribing"))?;
        let leave = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (leave_flag, stop_flag) = (Arc::clone(&leave), Arc::clone(&stop));
        let tracker = Arc::clone(tracker);
        let errors = Arc::clone(errors);
        let handle = thread::Builder::new()
            .name(format!("member-{id}"))
            .spawn(move || {
                poll_loop(
                    id,
                    consumer,
                    &tracker,
                    &errors,
                    &wants_record,
                    &leave_flag,
                    &stop_flag,
                );
            })
            .context("spawning member thread")?;
        Ok(Self {
            id,
            leave,
            stop,
            handle: Some(handle),
        })
    }

    /// Asks the member to leave the group: its thread starts the tracker's
    /// round clock, then closes the consumer (revoke callback and
    /// LeaveGroup). Returns without waiting; see [`Self::join`].
    pub fn leave(&self) {
        self.leave.store(true, Ordering::Relaxed);
    }

    /// Asks the member to close without starting any round clock.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the member's thread (after [`Self::leave`] or
    /// [`Self::stop`]) until `until`; returns `false` if it had not finished
    /// (closing a consumer waits on the broker), leaving it behind.
    pub fn join_until(mut self, until: Instant) -> anyhow::Result<bool> {
        let Some(h) = self.handle.take() else {
            return Ok(true);
        };
        while !h.is_finished() {
            if Instant::now() >= until {
                return Ok(false);
            }
            thread::sleep(Duration::from_millis(10));
        }
        h.join()
            .map_err(|_| anyhow!("member {} thread panicked", self.id))?;
        Ok(true)
    }
}

impl Drop for Member {
    /// Asks the thread to stop without waiting for it (error paths only;
    /// the regular path uses [`Member::join_until`]).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn config(settings: &MemberSettings, id: usize) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.bootstrap)
        .set("client.id", format!("kafscale-loadtest-m{id}"))
        .set("group.id", &settings.group_id)
        .set("partition.assignment.strategy", &settings.assignor)
        .set("enable.partition.eof", "false");
    for (k, v) in &settings.props {
        config.set(k, v);
    }
    config
}

fn poll_loop(
    id: usize,
    consumer: MemberConsumer,
    tracker: &Tracker,
    errors: &ErrorTally,
    wants_record: &AtomicBool,
    leave: &AtomicBool,
    stop: &AtomicBool,
) {
    loop {
        if leave.load(Ordering::Relaxed) {
            tracker.start_clock(Instant::now());
            break;
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        match consumer.poll(POLL_INTERVAL) {
            Some(Ok(_)) if wants_record.swap(false, Ordering::Relaxed) => {
                tracker.consumed(id, Instant::now());
            }
            Some(Err(e)) if errors.count(error_kind(&e)) == 1 => {
                eprintln!("member {id} consumer error: {e}");
            }
            _ => {}
        }
    }
    // Dropping closes the consumer: the revoke callback runs (reporting the
    // empty assignment) and the member leaves the group.
    drop(consumer);
    tracker.remove(id, Instant::now());
}
