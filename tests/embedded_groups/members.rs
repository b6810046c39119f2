//! Group members in their own threads, with rebalance callbacks recorded into one shared log.

use super::*;

/// One rebalance callback as a member saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Callback {
    /// Partitions handed to the member (all of them for the eager protocol,
    /// the added ones for the cooperative protocol).
    Assign(BTreeSet<i32>),
    /// Partitions taken from the member.
    Revoke(BTreeSet<i32>),
    Error(String),
}

/// What one member did.
#[derive(Debug, Default)]
pub(crate) struct MemberRecord {
    /// Current assignment (read back from the consumer after each callback).
    pub(crate) owned: BTreeSet<i32>,
    pub(crate) callbacks: Vec<Callback>,
    /// Rebalance protocol in use at the last assign callback.
    pub(crate) protocol: &'static str,
    /// (partition, offset, key) of every record processed, in order.
    pub(crate) consumed: Vec<(i32, i64, String)>,
    /// Processed but not yet committed: partition -> next offset.
    pub(crate) pending_commit: BTreeMap<i32, i64>,
    pub(crate) commit_errors: Vec<String>,
    pub(crate) poll_errors: Vec<String>,
    /// The member's consumer is closed and its thread is done.
    pub(crate) finished: bool,
}

/// The records of all members of one group, under one lock so that a
/// snapshot is consistent.
#[derive(Debug, Default)]
pub(crate) struct GroupLogInner {
    pub(crate) members: BTreeMap<String, MemberRecord>,
    /// Partitions handed to a member while another member still held them.
    pub(crate) violations: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct GroupLog(pub(crate) Arc<Mutex<GroupLogInner>>);

impl GroupLog {
    pub(crate) fn lock(&self) -> MutexGuard<'_, GroupLogInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn owned(&self, member: &str) -> BTreeSet<i32> {
        self.lock().members[member].owned.clone()
    }

    pub(crate) fn callbacks(&self, member: &str) -> Vec<Callback> {
        self.lock().members[member].callbacks.clone()
    }

    /// Compact description of every member, for failure messages.
    pub(crate) fn describe(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        for (name, m) in &inner.members {
            out.push_str(&format!(
                "\n  {name}: owned={:?} protocol={} consumed={} finished={} callbacks={:?} poll_errors={:?} commit_errors={:?}",
                m.owned,
                m.protocol,
                m.consumed.len(),
                m.finished,
                m.callbacks,
                m.poll_errors,
                m.commit_errors
            ));
        }
        if !inner.violations.is_empty() {
            out.push_str(&format!("\n  violations: {:?}", inner.violations));
        }
        out
    }

    /// `Ok` if `members` split partitions `0..partitions` between them:
    /// every member owns some, no partition is owned twice, none is missing,
    /// and the sizes differ by at most one (what range, round-robin and
    /// sticky assignors produce for one topic).
    pub(crate) fn split(
        &self,
        members: &[&str],
        partitions: i32,
    ) -> Result<Vec<BTreeSet<i32>>, String> {
        let inner = self.lock();
        let sets: Vec<BTreeSet<i32>> = members
            .iter()
            .map(|m| inner.members[*m].owned.clone())
            .collect();
        let mut seen: BTreeMap<i32, &str> = BTreeMap::new();
        for (member, set) in members.iter().zip(&sets) {
            if set.is_empty() {
                return Err(format!("{member} owns nothing; owned: {sets:?}"));
            }
            for p in set {
                if let Some(other) = seen.insert(*p, member) {
                    return Err(format!(
                        "partition {p} owned by both {other} and {member}; owned: {sets:?}"
                    ));
                }
            }
        }
        let missing: Vec<i32> = (0..partitions).filter(|p| !seen.contains_key(p)).collect();
        if !missing.is_empty() {
            return Err(format!("partitions {missing:?} unowned; owned: {sets:?}"));
        }
        let sizes: Vec<usize> = sets.iter().map(BTreeSet::len).collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        if max.zip(min).is_some_and(|(max, min)| max - min > 1) {
            return Err(format!("unbalanced split {sizes:?}; owned: {sets:?}"));
        }
        Ok(sets)
    }

    pub(crate) fn assert_no_violations(&self) {
        let inner = self.lock();
        assert!(
            inner.violations.is_empty(),
            "partitions were assigned to two members at once: {:?}",
            inner.violations
        );
    }
}

pub(crate) fn partitions_of(tpl: &TopicPartitionList) -> BTreeSet<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

pub(crate) fn protocol_name(protocol: RebalanceProtocol) -> &'static str {
    match protocol {
        RebalanceProtocol::None => "none",
        RebalanceProtocol::Eager => "eager",
        RebalanceProtocol::Cooperative => "cooperative",
    }
}

/// Consumer context that records rebalances into the [`GroupLog`].
pub(crate) struct Recorder {
    pub(crate) name: String,
    pub(crate) topic: String,
    pub(crate) log: GroupLog,
}

impl Recorder {
    /// Commits (synchronously) what was processed on `partitions`.
    pub(crate) fn commit_pending(
        &self,
        consumer: &BaseConsumer<Recorder>,
        partitions: &BTreeSet<i32>,
    ) {
        let pending: Vec<(i32, i64)> = {
            let mut inner = self.log.lock();
            let record = inner.members.get_mut(&self.name).expect("member record");
            let taken: Vec<(i32, i64)> = record
                .pending_commit
                .iter()
                .filter(|(p, _)| partitions.contains(p))
                .map(|(p, o)| (*p, *o))
                .collect();
            for (p, _) in &taken {
                record.pending_commit.remove(p);
            }
            taken
        };
        if pending.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &pending {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o))
                .expect("tpl");
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            let mut inner = self.log.lock();
            let record = inner.members.get_mut(&self.name).expect("member record");
            record
                .commit_errors
                .push(format!("commit {pending:?} on revoke: {e}"));
        }
    }
}

impl ClientContext for Recorder {}

impl ConsumerContext for Recorder {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // At-least-once: commit what was processed before giving partitions up.
        if let Rebalance::Revoke(tpl) = rebalance {
            self.commit_pending(consumer, &partitions_of(tpl));
        }
    }

    /// Records the callback and what the member owns after it. Nothing here
    /// asks librdkafka for its state: a synchronous request to the consumer
    /// group (`assignment()`, `rebalance_protocol()`) from the revoke callback
    /// that closing the consumer runs can wait forever, because the group
    /// may already have stopped serving its requests (the closing thread
    /// then hangs in `rd_kafka_op_req`; librdkafka issues #4041 and #4884).
    /// What the member owns follows from the callbacks instead: an assign
    /// adds its partitions (an eager one comes after a revoke of all), a
    /// revoke removes them.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // An assign never runs while closing: asking for the protocol is safe.
        let protocol = match rebalance {
            Rebalance::Assign(_) => Some(protocol_name(consumer.rebalance_protocol())),
            _ => None,
        };
        let mut guard = self.log.lock();
        let inner = &mut *guard;
        let callback = match rebalance {
            Rebalance::Assign(tpl) => {
                let added = partitions_of(tpl);
                for (other, record) in &inner.members {
                    if *other == self.name {
                        continue;
                    }
                    let both: Vec<i32> = record.owned.intersection(&added).copied().collect();
                    if !both.is_empty() {
                        inner.violations.push(format!(
                            "{} was assigned {both:?} while {other} still owned them",
                            self.name
                        ));
                    }
                }
                Callback::Assign(added)
            }
            Rebalance::Revoke(tpl) => Callback::Revoke(partitions_of(tpl)),
            Rebalance::Error(e) => Callback::Error(e.to_string()),
        };
        let record = inner.members.get_mut(&self.name).expect("member record");
        if let Some(protocol) = protocol {
            record.protocol = protocol;
        }
        match &callback {
            Callback::Assign(added) => record.owned.extend(added),
            Callback::Revoke(revoked) => record.owned.retain(|p| !revoked.contains(p)),
            Callback::Error(_) => {}
        }
        record.callbacks.push(callback);
    }
}

/// Sets a flag when dropped (also when the member thread panics).
pub(crate) struct SetOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A group member: a subscribed `BaseConsumer` polled by its own thread,
/// which records every record it processes and, if `commit_every` is set,
/// commits what it processed at that interval (and on revoke and close).
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) log: GroupLog,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) done: Arc<AtomicBool>,
}

impl Member {
    pub(crate) fn start(
        log: &GroupLog,
        name: &str,
        config: ClientConfig,
        topic: &str,
        commit_every: Option<Duration>,
    ) -> Member {
        log.lock()
            .members
            .insert(name.to_string(), MemberRecord::default());
        let context = Recorder {
            name: name.to_string(),
            topic: topic.to_string(),
            log: log.clone(),
        };
        let consumer: BaseConsumer<Recorder> = config
            .create_with_context(context)
            .unwrap_or_else(|e| panic!("create consumer {name}: {e}"));
        consumer
            .subscribe(&[topic])
            .unwrap_or_else(|e| panic!("{name}: subscribe to {topic}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (thread_stop, thread_done) = (stop.clone(), done.clone());
        let (thread_log, thread_name) = (log.clone(), name.to_string());
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _done = SetOnDrop(thread_done);
                run_member(
                    consumer,
                    &thread_name,
                    &thread_log,
                    &thread_stop,
                    commit_every,
                );
            })
            .expect("spawn member thread");
        Member {
            name: name.to_string(),
            log: log.clone(),
            stop,
            done,
        }
    }

    /// Closes the consumer (commit, revoke, LeaveGroup unless static) and
    /// waits for its thread to finish.
    pub(crate) async fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let done = self.done.clone();
        wait_for(
            &format!("member {} to close", self.name),
            CLOSE_TIMEOUT,
            || {
                if done.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(self.log.describe())
                }
            },
        )
        .await;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub(crate) fn run_member(
    consumer: BaseConsumer<Recorder>,
    name: &str,
    log: &GroupLog,
    stop: &AtomicBool,
    commit_every: Option<Duration>,
) {
    let mut last_commit = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(msg)) => {
                let key = record_key(&msg);
                let mut inner = log.lock();
                let record = inner.members.get_mut(name).expect("member record");
                record.consumed.push((msg.partition(), msg.offset(), key));
                if commit_every.is_some() {
                    record
                        .pending_commit
                        .insert(msg.partition(), msg.offset() + 1);
                }
            }
            Some(Err(e)) => {
                let mut inner = log.lock();
                let record = inner.members.get_mut(name).expect("member record");
                record.poll_errors.push(e.to_string());
            }
        }
        if let Some(every) = commit_every {
            if last_commit.elapsed() >= every {
                let owned = log.lock().members[name].owned.clone();
                consumer.context().commit_pending(&consumer, &owned);
                last_commit = Instant::now();
            }
        }
    }
    if commit_every.is_some() {
        let owned = log.lock().members[name].owned.clone();
        consumer.context().commit_pending(&consumer, &owned);
    }
    // Dropping the consumer closes it: revoke callback, then LeaveGroup
    // (librdkafka sends none for static members).
    drop(consumer);
    let mut inner = log.lock();
    let record = inner.members.get_mut(name).expect("member record");
    record.owned.clear();
    record.finished = true;
}

/// Waits until `members` split partitions `0..partitions` (see [`GroupLog::split`]).
pub(crate) async fn wait_for_split(
    log: &GroupLog,
    members: &[&str],
    partitions: i32,
    what: &str,
) -> Vec<BTreeSet<i32>> {
    let sets = wait_for(what, REBALANCE_TIMEOUT, || {
        log.split(members, partitions)
            .map_err(|e| format!("{e}{}", log.describe()))
    })
    .await;
    log.assert_no_violations();
    sets
}
