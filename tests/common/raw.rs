//! The raw Kafka protocol (kafka-protocol crate): frames, requests, record batches, exact fetches.

use super::*;

/// A raw Kafka connection that writes hand-built frames.
pub struct RawConn {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        RawConn {
            stream,
            correlation_id: 0,
        }
    }

    pub fn next_correlation_id(&mut self) -> i32 {
        self.correlation_id += 1;
        self.correlation_id
    }

    /// Writes raw bytes (no length prefix added).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Writes `payload` preceded by its big-endian i32 length.
    pub async fn send_frame(&mut self, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + 4);
        frame.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        frame.extend_from_slice(payload);
        self.write_raw(&frame).await.expect("write frame");
    }

    /// Half-closes the connection (FIN) so the server sees EOF.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown write half");
    }

    /// Reads one length-prefixed frame; `None` if the server closed the connection.
    pub async fn read_frame(&mut self) -> Option<Vec<u8>> {
        let read = async {
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = i32::from_be_bytes(len);
            assert!(
                (0..=256 << 20).contains(&len),
                "server sent implausible frame length {len}"
            );
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).await?;
            Ok::<_, std::io::Error>(payload)
        };
        match tokio::time::timeout(RAW_READ_TIMEOUT, read).await {
            Err(_) => panic!("no response frame within {RAW_READ_TIMEOUT:?}"),
            Ok(Ok(payload)) => Some(payload),
            Ok(Err(e)) if is_closed_error(&e) => None,
            Ok(Err(e)) => panic!("reading response frame: {e}"),
        }
    }

    /// Asserts that the server closes the connection within 5 s without sending anything.
    pub async fn expect_closed(&mut self, what: &str) {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: server did not close the connection within 5 s"),
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => panic!(
                "{what}: expected the server to close the connection, but it sent {n} bytes: {:02x?}",
                &buf[..n]
            ),
            Ok(Err(e)) if is_closed_error(&e) => {}
            Ok(Err(e)) => panic!("{what}: unexpected read error {e}"),
        }
    }

    /// Sends a typed request and decodes its typed response.
    pub async fn request<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let correlation_id = self.next_correlation_id();
        let frame = encode_request(correlation_id, version, request);
        self.send_frame(&frame).await;
        let payload = self.read_frame().await.unwrap_or_else(|| {
            panic!(
                "server closed the connection instead of answering {:?} v{version}",
                ApiKey::try_from(R::KEY)
            )
        });
        let mut buf = Bytes::from(payload);
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .expect("decode response header");
        assert_eq!(
            header.correlation_id, correlation_id,
            "response correlation id"
        );
        R::Response::decode(&mut buf, version).unwrap_or_else(|e| {
            panic!(
                "decode {:?} v{version} response: {e}",
                ApiKey::try_from(R::KEY)
            )
        })
    }

    /// ApiVersions v0 (the version every broker must understand).
    pub async fn api_versions(&mut self) -> ApiVersionsResponse {
        self.request(0, &ApiVersionsRequest::default()).await
    }

    /// Highest version of `key` supported by both the server and us
    /// (capped at `max_wanted`); panics if there is none.
    pub async fn negotiate(&mut self, key: ApiKey, max_wanted: i16) -> i16 {
        let versions = self.api_versions().await;
        assert_eq!(versions.error_code, 0, "ApiVersions v0 error");
        let ours = key.valid_versions();
        let entry = versions
            .api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .unwrap_or_else(|| panic!("server does not advertise {key:?} in ApiVersions"));
        let version = entry.max_version.min(max_wanted).min(ours.max);
        assert!(
            version >= entry.min_version && version >= ours.min,
            "no common {key:?} version: server {}..={}, test wants ..={max_wanted} (crate {}..={})",
            entry.min_version,
            entry.max_version,
            ours.min,
            ours.max
        );
        version
    }
}

fn is_closed_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Request header bytes for an arbitrary (possibly invalid) api key / version.
pub fn encode_header(
    api_key: i16,
    version: i16,
    header_version: i16,
    correlation_id: i32,
) -> BytesMut {
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("kafscale-raw-test")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, header_version)
        .expect("encode request header");
    buf
}

/// Header + body of a typed request, without the length prefix.
pub fn encode_request<R: Request>(correlation_id: i32, version: i16, request: &R) -> BytesMut {
    let mut buf = encode_header(R::KEY, version, R::header_version(version), correlation_id);
    request
        .encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("encode {:?} v{version}: {e}", ApiKey::try_from(R::KEY)));
    buf
}

/// One uncompressed v2 record batch of `records` (key, value), offsets from
/// 0, from no producer (base sequence -1).
pub fn encode_batch(records: &[(Option<Bytes>, Option<Bytes>)]) -> Bytes {
    encode_producer_batch(None, records)
}

/// One uncompressed v2 record batch; with `producer = Some((id, epoch,
/// base_sequence))` it is an idempotent producer's batch.
pub fn encode_producer_batch(
    producer: Option<(i64, i16, i32)>,
    records: &[(Option<Bytes>, Option<Bytes>)],
) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    // offset - sequence must be constant for the encoder to keep one batch;
    // without a producer this yields base sequence -1 (no sequence).
    let (producer_id, producer_epoch, first_seq) =
        producer.unwrap_or((NO_PRODUCER_ID, NO_PRODUCER_EPOCH, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: first_seq + i as i32,
            timestamp: now,
            key: key.clone(),
            value: value.clone(),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode record batch");
    buf.freeze()
}

/// Produce request (acks=all) carrying `records` for one partition.
pub fn produce_request(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// The single partition response of a single-partition Produce.
pub fn only_partition(response: &ProduceResponse) -> &PartitionProduceResponse {
    assert_eq!(
        response.responses.len(),
        1,
        "topics in produce response: {response:?}"
    );
    let partitions = &response.responses[0].partition_responses;
    assert_eq!(
        partitions.len(),
        1,
        "partitions in produce response: {response:?}"
    );
    &partitions[0]
}

/// One record as returned by a raw Fetch.
#[derive(Clone, Debug)]
pub struct RawRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Reads `[0, end)` of a partition with raw Fetch requests, without any of
/// librdkafka's client-side filtering, and checks that the batches the
/// server returns never repeat or go back in offset within a response, and
/// that consecutive fetches continue exactly where the previous one stopped.
pub async fn raw_fetch_partition(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
    end: i64,
) -> Vec<RawRecord> {
    let mut conn = RawConn::connect(addr).await;
    let version = conn.negotiate(ApiKey::Fetch, 12).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out: Vec<RawRecord> = Vec::new();
    let mut next = 0i64;
    while next < end {
        assert!(
            Instant::now() < deadline,
            "raw fetch of {topic}/{partition} timed out at offset {next} (end {end})"
        );
        let request = FetchRequest::default()
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(next)
                    .with_partition_max_bytes(64 << 20)])]);
        let response = conn.request(version, &request).await;
        assert_eq!(
            response.error_code, 0,
            "Fetch top-level error: {response:?}"
        );
        let data = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .unwrap_or_else(|| panic!("Fetch response without partition data: {response:?}"));
        assert_eq!(
            data.error_code, 0,
            "Fetch {topic}/{partition}@{next} error code {}",
            data.error_code
        );
        let mut records = data.records.clone().unwrap_or_default();
        let mut previous: Option<i64> = None;
        for batch in split_batches(&mut records) {
            let mut batch = batch;
            let set = RecordBatchDecoder::decode(&mut batch)
                .unwrap_or_else(|e| panic!("decode batch of {topic}/{partition}@{next}: {e}"));
            for record in set.records {
                if let Some(prev) = previous {
                    assert!(
                        record.offset > prev,
                        "{topic}/{partition}: fetch at {next} returned offset {} after {prev} (duplicate or out of order)",
                        record.offset
                    );
                }
                previous = Some(record.offset);
                if record.offset < next {
                    continue; // a batch may legally start before the fetch offset
                }
                if record.offset >= end {
                    continue;
                }
                next = record.offset + 1;
                out.push(RawRecord {
                    offset: record.offset,
                    key: record.key,
                    value: record.value,
                });
            }
        }
    }
    out
}

/// Splits a records blob into complete batches (a trailing partial batch is dropped).
fn split_batches(records: &mut Bytes) -> Vec<Bytes> {
    let mut batches = Vec::new();
    while records.len() >= 12 {
        let len = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
        let total = 12 + len.max(0) as usize;
        if records.len() < total {
            break;
        }
        batches.push(records.split_to(total));
    }
    batches
}

/// Runs `tests/python/<script> --bootstrap <server> <args>` with kafka-python
/// (installed by scripts/test.sh; a missing module fails rather than skips)
/// and panics with its output and the server log unless it exits 0 within
/// two minutes. Returns the script's last output line (its summary).
pub async fn run_kafka_python_check(script: &str, server: &DevServer, args: &[&str]) -> String {
    const TIMEOUT: Duration = Duration::from_secs(120);
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let probe = tokio::process::Command::new("python3")
        .args(["-c", "import kafka; print(kafka.__version__)"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); run scripts/test.sh to install it"));
    assert!(
        probe.status.success(),
        "kafka-python is not importable ({}); run scripts/test.sh, which installs kafka-python==3.0.12:\n{}",
        probe.status,
        String::from_utf8_lossy(&probe.stderr)
    );
    let child = tokio::process::Command::new("python3")
        .arg(&path)
        .args(["--bootstrap", &server.bootstrap()])
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run python3 {path}: {e}"));
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{path} did not finish within {TIMEOUT:?}\n--- server log tail ---\n{}",
                server.log_tail(80)
            )
        })
        .unwrap_or_else(|e| panic!("{path} output: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{path} failed with {}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- server log tail ---\n{}",
        output.status,
        server.log_tail(80)
    );
    let summary = stdout.lines().last().unwrap_or_default().to_string();
    eprintln!(
        "kafka-python {}: {summary}",
        String::from_utf8_lossy(&probe.stdout).trim()
    );
    summary
}
