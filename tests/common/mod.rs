//! Shared harness for the embedded-mode (`kafscale dev`) integration tests.
//!
//! * [`DevServer`] spawns the real `kafscale dev` binary on free loopback ports
//!   with its own data directory, waits for `GET /readyz == 200`, and can
//!   kill -9 and restart it on the same data directory and ports.
//! * rdkafka helpers build producers, consumers and admin clients with test
//!   settings, create topics and read partitions back.
//! * [`RawConn`] speaks the Kafka wire protocol directly (kafka-protocol crate)
//!   for malformed-input tests and for exact, client-filter-free fetches.
//!
//! Every helper here is bounded in time and panics with a descriptive message
//! (including the server log where useful) instead of hanging.

// Each integration test crate uses only a subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the server may take to answer `GET /readyz` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for a single rdkafka metadata / offsets / admin call.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a raw connection waits for one response frame.
pub const RAW_READ_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

/// Options for [`DevServer::start`].
#[derive(Clone, Debug, Default)]
pub struct DevOptions {
    /// Reuse this data directory instead of a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// Extra `KAFSCALE_*` (or other) environment variables; they override the defaults.
    pub env: Vec<(String, String)>,
}

impl DevOptions {
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
}

/// A running `kafscale dev` process with its own ports, data dir and log file.
pub struct DevServer {
    child: Option<Child>,
    /// Holds the temporary directory (log file, and data dir unless one was given).
    _tmp: tempfile::TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    kafka_port: u16,
    http_port: u16,
    grpc_port: u16,
    env: Vec<(String, String)>,
    runs: u32,
}

impl DevServer {
    /// Spawns `kafscale dev` and waits until `GET /readyz` answers 200.
    pub async fn start(opts: DevOptions) -> DevServer {
        let tmp = tempfile::Builder::new()
            .prefix("kafscale-it-")
            .tempdir()
            .expect("create temp dir");
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| tmp.path().join("data"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let [kafka_port, http_port, grpc_port] = free_ports();
        let log_path = tmp.path().join("server.log");
        let mut server = DevServer {
            child: None,
            _tmp: tmp,
            data_dir,
            log_path,
            kafka_port,
            http_port,
            grpc_port,
            env: opts.env,
            runs: 0,
        };
        server.spawn_and_wait_ready().await;
        server
    }

    /// `host:port` of the Kafka listener, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn kafka_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.kafka_port))
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// Last `lines` lines of the server log (all runs, appended).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILLs the server (no graceful shutdown) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL on Unix.
            let _ = child.kill();
            let status = child.wait().expect("wait for killed server");
            self.note(&format!(
                "killed with SIGKILL by the test harness ({status})"
            ));
        }
    }

    /// Process id of the running server, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server gracefully: SIGTERM, then waits (bounded by `timeout`)
    /// for it to flush and exit, and asserts that it exited with status 0.
    /// Follow with [`DevServer::restart`] for a clean restart.
    pub async fn terminate(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.note("sending SIGTERM (graceful shutdown requested by the test harness)");
        send_signal(child.id(), "TERM");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.note("did not exit after SIGTERM; killed with SIGKILL");
                panic!(
                    "kafscale dev did not exit within {timeout:?} after SIGTERM (server log printed below)"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.note(&format!("exited after SIGTERM ({status})"));
        assert!(
            status.success(),
            "kafscale dev exited with {status} after SIGTERM (server log printed below)"
        );
    }

    /// Restarts the server on the same data dir and ports (kill -9 first if
    /// it is still running) and waits until it is ready again.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn_and_wait_ready().await;
    }

    /// Panics if the process has exited (Drop then prints the server log).
    pub fn assert_running(&mut self) {
        let exited = self.child.as_mut().map(|c| c.try_wait().expect("try_wait"));
        match exited {
            Some(None) => {}
            Some(Some(status)) => {
                panic!("kafscale dev exited unexpectedly with {status} (server log printed below)",)
            }
            None => panic!("kafscale dev is not running (killed by the test)"),
        }
    }

    fn note(&self, line: &str) {
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(f, "===== [test harness] {line} =====");
        }
    }

    async fn spawn_and_wait_ready(&mut self) {
        self.runs += 1;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        self.note(&format!(
            "starting `kafscale dev` run #{} (kafka {}, http {}, grpc {}, data {})",
            self.runs,
            self.kafka_port,
            self.http_port,
            self.grpc_port,
            self.data_dir.display()
        ));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kafscale"));
        cmd.arg("dev");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KAFSCALE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("KAFSCALE_DATA_DIR", &self.data_dir)
            .env(
                "KAFSCALE_KAFKA_ADDR",
                format!("127.0.0.1:{}", self.kafka_port),
            )
            .env("KAFSCALE_ADVERTISED_HOST", "127.0.0.1")
            .env("KAFSCALE_ADVERTISED_PORT", self.kafka_port.to_string())
            .env(
                "KAFSCALE_HTTP_ADDR",
                format!("127.0.0.1:{}", self.http_port),
            )
            .env(
                "KAFSCALE_GRPC_ADDR",
                format!("127.0.0.1:{}", self.grpc_port),
            )
            .env("KAFSCALE_LOG_LEVEL", "info")
            .env("RUST_BACKTRACE", "1");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", env!("CARGO_BIN_EXE_kafscale")));
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        let mut last = String::from("no attempt yet");
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                panic!(
                    "kafscale dev exited with {status} before /readyz answered 200 (server log printed below)",
                );
            }
            match http_get(self.http_addr(), "/readyz").await {
                Ok((200, _)) => return,
                Ok((status, body)) => last = format!("HTTP {status}: {body}"),
                Err(e) => last = format!("error: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "kafscale dev not ready within {READY_TIMEOUT:?} (last /readyz: {last}) (server log printed below)",
        );
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- kafscale dev log (last 150 lines of {}) ---\n{}\n--- end of server log ---",
                self.log_path.display(),
                self.log_tail(150)
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Distinct free loopback ports (all bound at once, then released).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<StdTcpListener> = (0..N)
        .map(|_| StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}

/// Minimal HTTP/1.1 GET; returns (status, body). Bounded by a 3 s timeout.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP timeout"))??;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad HTTP response: {text:?}"),
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A unique-enough name for topics (tests run in parallel, each has its own server anyway).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Polls `cond` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`poll_until`], but `cond` says why it is not satisfied yet
/// (`Err(reason)`); the last reason is part of the panic message on timeout.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let reason = match cond() {
            Ok(v) => return v,
            Err(reason) => reason,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last state: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends signal `name` (`"STOP"`, `"CONT"`, `"TERM"`, `"KILL"`, ...) to
/// process `pid` through `sh -c kill` (no libc dependency); panics if that fails.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{name} {pid}"))
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run `kill -{name} {pid}`: {e}"));
    assert!(
        status.success(),
        "`kill -{name} {pid}` failed with {status}"
    );
}

// ---------------------------------------------------------------------------
// rdkafka helpers
// ---------------------------------------------------------------------------

fn base_config(bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
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
    base_config(bootstrap, &settings)
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
    base_config(bootstrap, &settings)
        .create()
        .expect("create rdkafka consumer")
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    base_config(bootstrap, &[])
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
    base_config(bootstrap, &settings)
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

// ---------------------------------------------------------------------------
// Raw Kafka protocol
// ---------------------------------------------------------------------------

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
