//! Producers, committed-offset reads, group descriptions and protocol decoding used by the group tests.

use super::*;

/// A producer task that writes keyed records (`{prefix}-{seq}`, round-robin
/// over partitions by key hash) in small batches until stopped, and returns
/// key -> (partition, offset) of every acknowledged record.
pub(crate) struct BackgroundProducer {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) handle: tokio::task::JoinHandle<BTreeMap<String, (i32, i64)>>,
}

impl BackgroundProducer {
    pub(crate) fn start(bootstrap: &str, topic: &str, prefix: &str) -> BackgroundProducer {
        let stop = Arc::new(AtomicBool::new(false));
        let producer: FutureProducer = producer(bootstrap, &[]);
        let (topic, prefix, task_stop) = (topic.to_string(), prefix.to_string(), stop.clone());
        let handle = tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let mut seq = 0usize;
            while !task_stop.load(Ordering::SeqCst) {
                let keys: Vec<String> = (seq..seq + 10).map(|i| format!("{prefix}-{i}")).collect();
                seq += keys.len();
                let sends = keys.iter().map(|key| {
                    producer.send(
                        FutureRecord::to(&topic).key(key).payload(key),
                        Duration::from_secs(30),
                    )
                });
                let results = tokio::time::timeout(Duration::from_secs(60), join_all(sends))
                    .await
                    .expect("deliveries not reported within 60 s");
                for (key, result) in keys.into_iter().zip(results) {
                    let delivery = result
                        .unwrap_or_else(|(e, _)| panic!("record {key} not acknowledged: {e}"));
                    acked.insert(key, (delivery.partition, delivery.offset));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            acked
        });
        BackgroundProducer { stop, handle }
    }

    pub(crate) async fn finish(self) -> BTreeMap<String, (i32, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(90), self.handle)
            .await
            .expect("producer task did not finish within 90 s")
            .expect("producer task")
    }
}

/// Produces `count` records with keys `p{partition}-{i}` to each of the
/// given partitions (in order, one request in flight) and checks they were
/// acknowledged at offsets `first_offset..first_offset + count`.
pub(crate) async fn produce_numbered(
    bootstrap: &str,
    topic: &str,
    partitions: &[i32],
    first_offset: i64,
    count: i64,
) {
    let producer = producer(bootstrap, &[("max.in.flight.requests.per.connection", "1")]);
    for &partition in partitions {
        let keys: Vec<String> = (first_offset..first_offset + count)
            .map(|i| format!("p{partition}-{i}"))
            .collect();
        let sends = keys.iter().map(|key| {
            producer.send(
                FutureRecord::to(topic)
                    .partition(partition)
                    .key(key)
                    .payload(key),
                Duration::from_secs(30),
            )
        });
        let results = tokio::time::timeout(Duration::from_secs(60), join_all(sends))
            .await
            .expect("deliveries not reported within 60 s");
        for (i, (key, result)) in keys.iter().zip(results).enumerate() {
            let delivery =
                result.unwrap_or_else(|(e, _)| panic!("record {key} not acknowledged: {e}"));
            assert_eq!(
                (delivery.partition, delivery.offset),
                (partition, first_offset + i as i64),
                "acknowledgement of {key}"
            );
        }
    }
}

/// Runs blocking client code (a consumer's poll loop, close) on the blocking
/// pool, bounded by `BLOCKING_TIMEOUT`; panics if it panicked or took longer.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    tokio::time::timeout(BLOCKING_TIMEOUT, tokio::task::spawn_blocking(f))
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {BLOCKING_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what} failed: {e}"))
}

/// `fetch_committed` that must succeed (retrying only errors, e.g. while the
/// coordinator starts up) within `timeout`.
pub(crate) async fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> BTreeMap<i32, CommittedOffset> {
    let deadline = Instant::now() + timeout;
    loop {
        let (b, g, t) = (bootstrap.to_string(), group.to_string(), topic.to_string());
        let result = blocking("fetching committed offsets", move || {
            fetch_committed(&b, &g, &t, partitions)
        })
        .await;
        match result {
            Ok(offsets) => return offsets,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "fetching committed offsets of group {group} failed for {timeout:?}; last error: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits (30 s at most) until `group`'s committed offsets on `topic` are
/// exactly `expected`; on timeout fails with both and the group's log.
pub(crate) async fn wait_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    expected: &BTreeMap<i32, Offset>,
    log: &GroupLog,
) {
    let partitions = expected.len() as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got =
            offsets_only(&committed(bootstrap, group, topic, partitions, CLIENT_TIMEOUT).await);
        if &got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets of {group} did not reach {expected:?} within 30 s: {got:?}{}",
            log.describe()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn offsets_only(committed: &BTreeMap<i32, CommittedOffset>) -> BTreeMap<i32, Offset> {
    committed.iter().map(|(p, c)| (*p, c.offset)).collect()
}

/// Subscribes a fresh member of `group` and returns, per partition, the first
/// record (offset, key) it receives; waits until every partition in
/// `expect_records_on` delivered one.
pub(crate) fn first_records(
    bootstrap: &str,
    group: &str,
    topic: &str,
    expect_records_on: &[i32],
) -> BTreeMap<i32, (i64, String)> {
    let consumer: BaseConsumer =
        group_member_config(bootstrap, group, &format!("{group}-resumer"), &[])
            .create()
            .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut first: BTreeMap<i32, (i64, String)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expect_records_on.iter().all(|p| first.contains_key(p)) {
        assert!(
            Instant::now() < deadline,
            "a new member of {group} did not receive records from all of {expect_records_on:?} within 60 s; first records so far: {first:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(msg)) => {
                let key = record_key(&msg);
                first.entry(msg.partition()).or_insert((msg.offset(), key));
            }
            Some(Err(e)) => panic!("consumer error in group {group}: {e}"),
        }
    }
    first
}

/// `fetch_group_list` for one group; `None` if the broker does not list it.
pub(crate) fn describe_group(
    probe: &BaseConsumer,
    group: &str,
) -> Result<Option<GroupInfoSnapshot>, String> {
    let list = probe
        .fetch_group_list(Some(group), CLIENT_TIMEOUT)
        .map_err(|e| format!("fetch_group_list({group}): {e}"))?;
    let groups: Vec<GroupInfoSnapshot> =
        list.groups().iter().map(GroupInfoSnapshot::from).collect();
    match groups.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        more => Err(format!("fetch_group_list({group}) returned {more:?}")),
    }
}

/// Owned copy of an rdkafka `GroupInfo`.
#[derive(Clone, Debug)]
pub(crate) struct GroupInfoSnapshot {
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) protocol_type: String,
    pub(crate) protocol: String,
    pub(crate) members: Vec<MemberInfoSnapshot>,
}

#[derive(Clone, Debug)]
pub(crate) struct MemberInfoSnapshot {
    pub(crate) id: String,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) metadata: Option<Vec<u8>>,
    pub(crate) assignment: Option<Vec<u8>>,
}

impl From<&GroupInfo> for GroupInfoSnapshot {
    fn from(g: &GroupInfo) -> Self {
        GroupInfoSnapshot {
            name: g.name().to_string(),
            state: g.state().to_string(),
            protocol_type: g.protocol_type().to_string(),
            protocol: g.protocol().to_string(),
            members: g
                .members()
                .iter()
                .map(|m| MemberInfoSnapshot {
                    id: m.id().to_string(),
                    client_id: m.client_id().to_string(),
                    client_host: m.client_host().to_string(),
                    metadata: m.metadata().map(<[u8]>::to_vec),
                    assignment: m.assignment().map(<[u8]>::to_vec),
                })
                .collect(),
        }
    }
}

/// Minimal reader for the consumer protocol's big-endian encoding.
pub(crate) struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!("truncated: need {n} bytes, have {}", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub(crate) fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    pub(crate) fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub(crate) fn string(&mut self) -> Result<String, String> {
        let len = self.i16()?;
        let bytes = self.take(usize::try_from(len).map_err(|_| format!("string length {len}"))?)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    pub(crate) fn array_len(&mut self) -> Result<usize, String> {
        let len = self.i32()?;
        usize::try_from(len).map_err(|_| format!("array length {len}"))
    }
}

/// Topics of a ConsumerProtocolSubscription (member metadata).
pub(crate) fn decode_subscription_topics(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    (0..r.array_len()?).map(|_| r.string()).collect()
}

/// Topic -> partitions of a ConsumerProtocolAssignment (member assignment).
pub(crate) fn decode_assignment(bytes: &[u8]) -> Result<BTreeMap<String, BTreeSet<i32>>, String> {
    let mut r = Reader(bytes);
    let _version = r.i16()?;
    let mut out = BTreeMap::new();
    for _ in 0..r.array_len()? {
        let topic = r.string()?;
        let partitions: Result<BTreeSet<i32>, String> =
            (0..r.array_len()?).map(|_| r.i32()).collect();
        out.insert(topic, partitions?);
    }
    Ok(out)
}

/// A child process that is SIGKILLed and reaped when dropped.
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A record's key as text (empty without one).
pub(crate) fn record_key(msg: &impl Message) -> String {
    msg.key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default()
}
