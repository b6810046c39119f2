//! rdkafka helpers: producers, consumers, admin clients with test settings, topic creation, reading partitions back.

use super::*;

/// librdkafka settings every test client shares (quick reconnects and
/// metadata refreshes, IPv4 loopback), then `extra`.
pub fn client_config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("topic.metadata.refresh.interval.ms", "500")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500")
        .set("retry.backoff.ms", "100");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg
}

/// Producer with acks=all, no idempotence, long message timeout. `extra` overrides.
pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut settings = vec![
        ("acks", "all"),
        ("enable.idempotence", "false"),
        ("message.timeout.ms", "120000"),
        ("request.timeout.ms", "30000"),
        ("linger.ms", "5"),
    ];
    settings.extend_from_slice(extra);
    client_config(bootstrap, &settings)
        .create()
        .expect("create rdkafka producer")
}

/// Consumer for manual `assign()` (no group protocol used). `extra` overrides.
pub fn consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut settings = vec![
        ("group.id", "kafscale-it"),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "error"),
        ("check.crcs", "true"),
        ("fetch.wait.max.ms", "100"),
    ];
    settings.extend_from_slice(extra);
    client_config(bootstrap, &settings)
        .create()
        .expect("create rdkafka consumer")
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    client_config(bootstrap, &[])
        .create()
        .expect("create rdkafka admin client")
}

/// Config for a consumer-group member that uses `subscribe()`: `group.id`,
/// `client.id`, a 6 s session timeout (the server's default minimum) with
/// 500 ms heartbeats, no auto-commit and `auto.offset.reset=earliest`.
/// `extra` overrides. Create it with `create()` or `create_with_context()`.
pub fn group_member_config(
    bootstrap: &str,
    group: &str,
    client_id: &str,
    extra: &[(&str, &str)],
) -> ClientConfig {
    let mut settings = vec![
        ("group.id", group),
        ("client.id", client_id),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        ("fetch.wait.max.ms", "100"),
    ];
    settings.extend_from_slice(extra);
    client_config(bootstrap, &settings)
}

/// Committed offset and metadata of one partition, as OffsetFetch reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: Offset,
    pub metadata: String,
}

/// Committed offsets of `group` for partitions `0..partitions` of `topic`,
/// fetched by a fresh consumer that does not join the group. A partition
/// without a committed offset reports `Offset::Invalid` (Kafka's -1).
pub fn fetch_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> KafkaResult<BTreeMap<i32, CommittedOffset>> {
    let probe = consumer(bootstrap, &[("group.id", group)]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_range(topic, 0, partitions - 1);
    let result = probe.committed_offsets(tpl, CLIENT_TIMEOUT)?;
    let mut out = BTreeMap::new();
    for elem in result.elements() {
        elem.error()?;
        out.insert(
            elem.partition(),
            CommittedOffset {
                offset: elem.offset(),
                metadata: elem.metadata().to_string(),
            },
        );
    }
    Ok(out)
}

/// The committed offset of `group` for partition 0 of `topic`, or `None`
/// when it has none (never committed, or expired).
pub fn committed_offset(bootstrap: &str, group: &str, topic: &str) -> Option<i64> {
    let got = fetch_committed(bootstrap, group, topic, 1).expect("committed offsets");
    match got.get(&0).map(|c| c.offset) {
        Some(Offset::Offset(o)) => Some(o),
        _ => None,
    }
}

/// Commits `offset` for partition 0 of `topic` as `group`, without joining it.
pub fn commit_offset(bootstrap: &str, group: &str, topic: &str, offset: i64) {
    let c = consumer(bootstrap, &[("group.id", group)]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .expect("offset");
    c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit");
}

/// Creates a topic through CreateTopics and waits until Metadata shows all its
/// partitions with a leader.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin = admin(bootstrap);
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(CLIENT_TIMEOUT));
    let results = tokio::time::timeout(CLIENT_TIMEOUT * 2, admin.create_topics([&topic], &opts))
        .await
        .unwrap_or_else(|_| panic!("CreateTopics {name} timed out"))
        .unwrap_or_else(|e| panic!("CreateTopics {name} failed: {e}"));
    for result in results {
        result.unwrap_or_else(|(t, e)| panic!("CreateTopics {t} returned error {e}"));
    }
    let probe = consumer(bootstrap, &[]);
    poll_until(
        &format!("metadata for topic {name} with {partitions} led partitions"),
        CLIENT_TIMEOUT,
        || {
            let md = probe
                .fetch_metadata(Some(name), Duration::from_secs(2))
                .ok()?;
            let t = md.topics().iter().find(|t| t.name() == name)?;
            let ok = t.error().is_none()
                && t.partitions().len() == partitions as usize
                && t.partitions().iter().all(|p| p.leader() >= 0);
            ok.then_some(())
        },
    )
    .await;
}

/// (low, high) watermarks of a partition via ListOffsets (earliest / latest).
pub fn watermarks(consumer: &BaseConsumer, topic: &str, partition: i32) -> (i64, i64) {
    consumer
        .fetch_watermarks(topic, partition, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("fetch_watermarks {topic}/{partition}: {e}"))
}

/// One record as seen by a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Reads offsets `[start, end)` of each given partition with manual assign.
/// Panics (with progress) on any consumer error or if not done within `timeout`.
pub fn consume_ranges(
    bootstrap: &str,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    timeout: Duration,
) -> BTreeMap<i32, Vec<Consumed>> {
    let consumer = consumer(bootstrap, &[]);
    let mut tpl = TopicPartitionList::new();
    let mut pending: BTreeMap<i32, i64> = BTreeMap::new(); // partition -> end
    for &(partition, start, end) in ranges {
        if end > start {
            tpl.add_partition_offset(topic, partition, Offset::Offset(start))
                .expect("add partition");
            pending.insert(partition, end);
        }
    }
    let mut out: BTreeMap<i32, Vec<Consumed>> =
        ranges.iter().map(|&(p, _, _)| (p, Vec::new())).collect();
    if pending.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "consuming {topic} timed out after {timeout:?}; still waiting for {pending:?} (partition -> end offset); got so far: {:?}",
            out.iter().map(|(p, v)| (*p, v.len(), v.last().map(|c| c.offset))).collect::<Vec<_>>()
        );
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let msg = result.unwrap_or_else(|e| panic!("consumer error while reading {topic}: {e}"));
        let partition = msg.partition();
        let Some(&end) = pending.get(&partition) else {
            continue;
        };
        if msg.offset() >= end {
            pending.remove(&partition);
            continue;
        }
        let headers = msg
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        out.get_mut(&partition)
            .expect("assigned partition")
            .push(Consumed {
                partition,
                offset: msg.offset(),
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                headers,
            });
        if msg.offset() + 1 >= end {
            pending.remove(&partition);
        }
    }
    out
}

/// Reads every record of partitions `0..partitions` from offset 0 to the
/// current high watermark (which is also returned, per partition).
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> (BTreeMap<i32, i64>, BTreeMap<i32, Vec<Consumed>>) {
    let probe = consumer(bootstrap, &[]);
    let highs: BTreeMap<i32, i64> = (0..partitions)
        .map(|p| (p, watermarks(&probe, topic, p).1))
        .collect();
    let ranges: Vec<(i32, i64, i64)> = highs.iter().map(|(&p, &h)| (p, 0, h)).collect();
    (highs, consume_ranges(bootstrap, topic, &ranges, timeout))
}

/// Asserts the consumed offsets of one partition are strictly increasing.
pub fn assert_strictly_increasing(topic: &str, partition: i32, records: &[Consumed]) {
    for pair in records.windows(2) {
        assert!(
            pair[1].offset > pair[0].offset,
            "{topic}/{partition}: offset {} followed by {} (not strictly increasing)",
            pair[0].offset,
            pair[1].offset
        );
    }
}

/// (offset, key, value as text) of every record of partition 0 of `topic`,
/// from the earliest offset to the end (gaps allowed: compacted topics).
pub fn read_to_end(bootstrap: &str, topic: &str) -> Vec<(i64, String, Option<String>)> {
    use rdkafka::consumer::Consumer;
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message;
    let c = consumer(bootstrap, &[("enable.partition.eof", "true")]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .expect("add partition");
    c.assign(&tpl).expect("assign");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} timed out"
        );
        match c.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("consumer error reading {topic}: {e}"),
            Some(Ok(m)) => out.push((
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            )),
        }
    }
}

/// What a kcat run printed, and whether it exited with success.
pub struct KcatOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs kcat with a 30 s bound; a missing kcat is a test failure, not a skip.
pub async fn run_kcat(args: &[&str], stdin: Option<&str>) -> KcatOutput {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("kcat");
    // cargo points the dynamic loader at its build outputs, which may hold
    // the rdkafka crate's librdkafka (built without OpenSSL): kcat must load
    // the system's.
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kcat (it must be installed for this test): {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("kcat stdin");
        pipe.write_all(input.as_bytes())
            .await
            .expect("write kcat stdin");
        drop(pipe);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kcat {args:?} did not finish within 30 s"))
        .expect("kcat output");
    KcatOutput {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
