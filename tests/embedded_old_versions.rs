//! Old protocol versions against `kafscale dev`, as Kafka 3.9 serves them:
//! hand-made requests (message sets of magic 0 and 1 in Produce v0–2, Fetch
//! v0–3 down-conversion, ListOffsets v0, OffsetCommit v0–1, OffsetFetch v0,
//! CreateTopics v0–1, DeleteTopics v0, DescribeConfigs v0), bad message sets
//! answered with Kafka's error codes and nothing stored, librdkafka forced
//! to old versions (`api.version.request=false`,
//! `broker.version.fallback`), and kafka-python pinned to old `api_version`s.
//!
//! The messages here are written and read by this file's own codec (CRC-32
//! by `crc32fast`), independent of the gateway's.

mod common;

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::ApiKey;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use std::io::Write;
use std::time::Duration;

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
const LIST_OFFSETS: i16 = 2;
const OFFSET_COMMIT: i16 = 8;
const OFFSET_FETCH: i16 = 9;
const CREATE_TOPICS: i16 = 19;
const DELETE_TOPICS: i16 = 20;
const DESCRIBE_CONFIGS: i16 = 32;

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_CONFIG: i16 = 40;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;

// ---------------------------------------------------------------------------
// A small classic-protocol codec.

trait Put {
    fn string(&mut self, s: &str) -> &mut Self;
    fn nullable(&mut self, b: Option<&[u8]>) -> &mut Self;
}

impl Put for BytesMut {
    fn string(&mut self, s: &str) -> &mut Self {
        self.put_i16(s.len() as i16);
        self.put_slice(s.as_bytes());
        self
    }
    fn nullable(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            Some(b) => {
                self.put_i32(b.len() as i32);
                self.put_slice(b);
            }
            None => self.put_i32(-1),
        }
        self
    }
}

/// A message of magic 0 or 1 (offset, size, CRC-32 over the rest).
fn message(
    offset: i64,
    magic: i8,
    attributes: u8,
    ts: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> BytesMut {
    let mut m = BytesMut::new();
    m.put_i8(magic);
    m.put_u8(attributes);
    if magic == 1 {
        m.put_i64(ts);
    }
    m.nullable(key).nullable(value);
    let mut out = BytesMut::new();
    out.put_i64(offset);
    out.put_i32(m.len() as i32 + 4);
    out.put_u32(crc32fast::hash(&m));
    out.put_slice(&m);
    out
}

type Msg<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

fn message_set(magic: i8, msgs: &[Msg<'_>]) -> BytesMut {
    let mut out = BytesMut::new();
    for (i, (k, v, ts)) in msgs.iter().enumerate() {
        out.put_slice(&message(i as i64, magic, 0, *ts, *k, *v));
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn lz4_frame(data: &[u8]) -> Vec<u8> {
    let mut e = lz4::EncoderBuilder::new()
        .block_mode(lz4::BlockMode::Independent)
        .build(Vec::new())
        .expect("lz4");
    e.write_all(data).expect("lz4");
    let (out, r) = e.finish();
    r.expect("lz4");
    out
}

/// A wrapper message holding `inner` compressed with `codec` (1 gzip, 2
/// snappy, 3 lz4).
fn wrapper(magic: i8, codec: u8, inner: &[u8]) -> BytesMut {
    let packed = match codec {
        1 => gzip(inner),
        2 => snap::raw::Encoder::new()
            .compress_vec(inner)
            .expect("snappy"),
        3 => lz4_frame(inner),
        _ => inner.to_vec(),
    };
    message(0, magic, codec, 0, None, Some(&packed))
}

/// The body of a Produce v0–2 request of one partition.
fn produce_body(topic: &str, partition: i32, set: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i16(-1); // acks
    b.put_i32(10_000);
    b.put_i32(1);
    b.string(topic);
    b.put_i32(1);
    b.put_i32(partition);
    b.nullable(Some(set));
    b
}

/// Sends one request and returns its response body (after the correlation id).
async fn call(conn: &mut RawConn, key: i16, version: i16, body: &[u8]) -> Bytes {
    let cid = conn.next_correlation_id();
    let mut frame = BytesMut::new();
    frame.put_i16(key);
    frame.put_i16(version);
    frame.put_i32(cid);
    frame.string("old-client");
    frame.put_slice(body);
    conn.send_frame(&frame).await;
    let resp = conn
        .read_frame()
        .await
        .unwrap_or_else(|| panic!("connection closed instead of answering api {key} v{version}"));
    assert_eq!(i32::from_be_bytes(resp[..4].try_into().expect("cid")), cid);
    Bytes::from(resp).slice(4..)
}

/// Reads classic primitives off a response.
struct Rd(Bytes);

impl Rd {
    fn take(&mut self, n: usize) -> Bytes {
        assert!(self.0.len() >= n, "response truncated");
        self.0.split_to(n)
    }
    fn i8(&mut self) -> i8 {
        self.take(1)[0] as i8
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2)[..].try_into().expect("2"))
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4)[..].try_into().expect("4"))
    }
    fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8)[..].try_into().expect("8"))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.i16();
        (n >= 0).then(|| String::from_utf8(self.take(n as usize).to_vec()).expect("utf8"))
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.i32();
        (n >= 0).then(|| self.take(n as usize))
    }
    fn done(&self) {
        assert!(
            self.0.is_empty(),
            "{} bytes left in the response",
            self.0.len()
        );
    }
}

/// (error, base offset) of a one-partition Produce v0–2 response.
async fn produce(
    conn: &mut RawConn,
    version: i16,
    topic: &str,
    partition: i32,
    set: &[u8],
) -> (i16, i64) {
    let mut r = Rd(call(conn, PRODUCE, version, &produce_body(topic, partition, set)).await);
    assert_eq!(r.i32(), 1);
    assert_eq!(r.string().as_deref(), Some(topic));
    assert_eq!(r.i32(), 1);
    assert_eq!(r.i32(), partition);
    let (error, base) = (r.i16(), r.i64());
    if version >= 2 {
        r.i64(); // log append time
    }
    if version >= 1 {
        r.i32(); // throttle
    }
    r.done();
    (error, base)
}

/// One message read from a fetch, its CRC checked.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    offset: i64,
    magic: i8,
    ts: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

fn parse_set(mut set: Bytes) -> Vec<Got> {
    let mut out = Vec::new();
    while set.len() >= 12 {
        let mut r = Rd(set.clone());
        let offset = r.i64();
        let size = r.i32() as usize;
        if r.0.len() < size {
            break; // a partial message at the end, as Kafka may send
        }
        let mut m = Rd(r.take(size));
        set = r.0;
        let crc = m.i32() as u32;
        assert_eq!(
            crc32fast::hash(&m.0),
            crc,
            "CRC of message at offset {offset}"
        );
        let magic = m.i8();
        let attributes = m.i8();
        assert_eq!(attributes & 7, 0, "messages come uncompressed");
        let ts = if magic == 1 { m.i64() } else { -1 };
        let key = m.bytes();
        let value = m.bytes();
        m.done();
        out.push(Got {
            offset,
            magic,
            ts,
            key,
            value,
        });
    }
    out
}

/// (error, high watermark, messages) of partition `p` through Fetch `version`.
async fn fetch(
    conn: &mut RawConn,
    version: i16,
    topic: &str,
    p: i32,
    offset: i64,
) -> (i16, i64, Vec<Got>) {
    let mut b = BytesMut::new();
    b.put_i32(-1);
    b.put_i32(200);
    b.put_i32(1);
    if version >= 3 {
        b.put_i32(4 << 20);
    }
    b.put_i32(1);
    b.string(topic);
    b.put_i32(1);
    b.put_i32(p);
    b.put_i64(offset);
    b.put_i32(1 << 20);
    let mut r = Rd(call(conn, FETCH, version, &b).await);
    if version >= 1 {
        r.i32();
    }
    assert_eq!(r.i32(), 1);
    assert_eq!(r.string().as_deref(), Some(topic));
    assert_eq!(r.i32(), 1);
    assert_eq!(r.i32(), p);
    let error = r.i16();
    let hw = r.i64();
    let set = r.bytes().unwrap_or_default();
    r.done();
    (error, hw, parse_set(set))
}

/// ListOffsets v0 of one partition: (error, offsets).
async fn list_offsets_v0(
    conn: &mut RawConn,
    topic: &str,
    p: i32,
    ts: i64,
    max: i32,
) -> (i16, Vec<i64>) {
    let mut b = BytesMut::new();
    b.put_i32(-1);
    b.put_i32(1);
    b.string(topic);
    b.put_i32(1);
    b.put_i32(p);
    b.put_i64(ts);
    b.put_i32(max);
    let mut r = Rd(call(conn, LIST_OFFSETS, 0, &b).await);
    assert_eq!(r.i32(), 1);
    assert_eq!(r.string().as_deref(), Some(topic));
    assert_eq!(r.i32(), 1);
    assert_eq!(r.i32(), p);
    let error = r.i16();
    let offsets = (0..r.i32()).map(|_| r.i64()).collect();
    r.done();
    (error, offsets)
}

/// Requests served of `api` at `version`, from the gateway's metrics.
async fn served(server: &DevServer, api: &str, version: i16) -> f64 {
    let prefix = format!("kafscale_gateway_requests_total{{api=\"{api}\",version=\"{version}\"}} ");
    server
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Asserts the clients really spoke these old versions.
async fn assert_served(server: &DevServer, who: &str, wanted: &[(&str, i16)]) {
    for (api, version) in wanted {
        assert!(
            served(server, api, *version).await > 0.0,
            "{who} sent no {api} v{version}"
        );
    }
}

fn b(s: &str) -> Option<Bytes> {
    Some(Bytes::copy_from_slice(s.as_bytes()))
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_advertise_every_version_kafka_3_9_has_for_our_apis() {
    let server = DevServer::start(DevOptions::default()).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    let v = conn.api_versions().await;
    let range = |key: ApiKey| {
        v.api_keys
            .iter()
            .find(|k| k.api_key == key as i16)
            .map(|k| (k.min_version, k.max_version))
    };
    for (key, lo) in [
        (ApiKey::Produce, 0),
        (ApiKey::Fetch, 0),
        (ApiKey::ListOffsets, 0),
        (ApiKey::Metadata, 0),
        (ApiKey::OffsetCommit, 0),
        (ApiKey::OffsetFetch, 0),
        (ApiKey::FindCoordinator, 0),
        (ApiKey::JoinGroup, 0),
        (ApiKey::SyncGroup, 0),
        (ApiKey::Heartbeat, 0),
        (ApiKey::LeaveGroup, 0),
        (ApiKey::DescribeGroups, 0),
        (ApiKey::ListGroups, 0),
        (ApiKey::CreateTopics, 0),
        (ApiKey::DeleteTopics, 0),
        (ApiKey::DescribeConfigs, 0),
        (ApiKey::AlterConfigs, 0),
        (ApiKey::DescribeLogDirs, 0),
        (ApiKey::AlterReplicaLogDirs, 0),
        (ApiKey::ApiVersions, 0),
    ] {
        let got = range(key).unwrap_or_else(|| panic!("{key:?} not advertised"));
        assert_eq!(got.0, lo, "{key:?} lowest version");
    }
    assert_eq!(range(ApiKey::AlterConfigs), Some((0, 2)));
    assert_eq!(range(ApiKey::Produce).map(|r| r.1), Some(12));
    // The newest versions Kafka 3.9 has for these (KIP-848, KIP-890) and the
    // ACL APIs' v0 (no pattern types).
    for (key, wanted) in [
        (ApiKey::OffsetCommit, (0, 9)),
        (ApiKey::OffsetFetch, (0, 9)),
        (ApiKey::FindCoordinator, (0, 5)),
        (ApiKey::ListGroups, (0, 5)),
        (ApiKey::InitProducerId, (0, 5)),
        (ApiKey::DescribeAcls, (0, 3)),
        (ApiKey::CreateAcls, (0, 3)),
        (ApiKey::DeleteAcls, (0, 3)),
    ] {
        assert_eq!(range(key), Some(wanted), "{key:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_sets_of_magic_0_and_1_are_stored_and_every_fetch_version_reads_them() {
    let server = DevServer::start(DevOptions::default()).await;
    let bootstrap = server.bootstrap();
    let topic = "legacy-roundtrip";
    create_topic(&bootstrap, topic, 1, &[]).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;

    // A magic-0 lz4 frame whose header checksum is wrong, as Kafka 0.8–0.9
    // clients wrote it (and Kafka brokers accept).
    let mut broken_lz4 = message_set(0, &[(Some(b"k8"), Some(b"v8"), -1)]).to_vec();
    let packed = {
        let mut p = lz4_frame(&broken_lz4);
        p[6] ^= 0x5a;
        p
    };
    broken_lz4 = message(0, 0, 3, 0, None, Some(&packed)).to_vec();

    let sends: Vec<(i16, BytesMut, i64)> = vec![
        (
            0,
            message_set(
                0,
                &[
                    (Some(b"k0"), Some(b"v0"), -1),
                    (Some(b"k1"), Some(b"v1"), -1),
                ],
            ),
            0,
        ),
        (
            1,
            wrapper(0, 1, &message_set(0, &[(Some(b"k2"), Some(b"v2"), -1)])),
            2,
        ),
        (
            2,
            message_set(
                1,
                &[
                    (Some(b"k3"), Some(b"v3"), 1_003),
                    (Some(b"k4"), None, 1_004),
                ],
            ),
            3,
        ),
        (
            2,
            wrapper(
                1,
                2,
                &message_set(
                    1,
                    &[
                        (Some(b"k5"), Some(b"v5"), 1_005),
                        (None, Some(b"v6"), 1_006),
                    ],
                ),
            ),
            5,
        ),
        (
            2,
            wrapper(1, 3, &message_set(1, &[(Some(b"k7"), Some(b"v7"), 1_007)])),
            7,
        ),
        (1, BytesMut::from(&broken_lz4[..]), 8),
    ];
    for (i, (version, set, base)) in sends.iter().enumerate() {
        assert_eq!(
            produce(&mut conn, *version, topic, 0, set).await,
            (0, *base),
            "produce #{i} (v{version})"
        );
    }
    // And one record from a modern client (a v2 batch).
    let producer = producer(&bootstrap, &[]);
    producer
        .send(
            FutureRecord::to(topic)
                .partition(0)
                .key("k9")
                .payload("v9")
                .timestamp(1_009),
            Duration::from_secs(10),
        )
        .await
        .expect("modern produce");

    let want: Vec<(i64, Option<Bytes>, Option<Bytes>, i64)> = vec![
        (0, b("k0"), b("v0"), -1),
        (1, b("k1"), b("v1"), -1),
        (2, b("k2"), b("v2"), -1),
        (3, b("k3"), b("v3"), 1_003),
        (4, b("k4"), None, 1_004),
        (5, b("k5"), b("v5"), 1_005),
        (6, None, b("v6"), 1_006),
        (7, b("k7"), b("v7"), 1_007),
        (8, b("k8"), b("v8"), -1),
        (9, b("k9"), b("v9"), 1_009),
    ];
    for version in 0..=3 {
        let magic = if version >= 2 { 1 } else { 0 };
        let (error, hw, got) = fetch(&mut conn, version, topic, 0, 0).await;
        assert_eq!((error, hw), (0, 10), "fetch v{version}");
        let expected: Vec<Got> = want
            .iter()
            .map(|(offset, key, value, ts)| Got {
                offset: *offset,
                magic,
                ts: if magic == 1 { *ts } else { -1 },
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        assert_eq!(got, expected, "fetch v{version}");
        // From the middle of a stored batch: the records before are skipped.
        let (_, _, tail) = fetch(&mut conn, version, topic, 0, 6).await;
        assert_eq!(
            tail.iter().map(|g| g.offset).collect::<Vec<_>>(),
            vec![6, 7, 8, 9]
        );
    }
    // A modern consumer reads what old producers wrote.
    let modern = read_to_end(&bootstrap, topic);
    let as_text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    assert_eq!(
        modern
            .iter()
            .map(|(o, k, v)| (*o, Some(k.clone()), v.clone()))
            .collect::<Vec<_>>(),
        want.iter()
            .map(|(o, k, v, _)| (*o, Some(as_text(k).unwrap_or_default()), as_text(v)))
            .collect::<Vec<_>>()
    );
    let metrics = server.metrics().await;
    let converted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kafscale_gateway_down_converted_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("down-conversion metric");
    assert!(converted > 0.0, "down-converted bytes counted");
}

/// The peak resident memory of process `pid` in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_message_sets_get_kafkas_errors_and_nothing_is_stored() {
    const FRAME: usize = 8 << 20;
    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_MAX_FRAME_BYTES", FRAME)).await;
    let topic = "legacy-bad";
    create_topic(&server.bootstrap(), topic, 2, &[]).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    let good = message_set(1, &[(Some(b"k"), Some(b"v"), 1)]);
    assert_eq!(produce(&mut conn, 2, topic, 0, &good).await, (0, 0));

    let mut bad_crc = message_set(0, &[(Some(b"k"), Some(b"v"), -1)]);
    bad_crc[14] ^= 0x01; // inside the CRC-covered part
    let mut unknown_magic = message(0, 1, 0, 0, None, Some(b"v"));
    unknown_magic[16] = 5;
    let crc = crc32fast::hash(&unknown_magic[16..]);
    unknown_magic[12..16].copy_from_slice(&crc.to_be_bytes());
    let v2_batch = encode_batch(&[(None, b("v2 batch"))]);
    let truncated = good.clone().freeze().slice(..good.len() - 2);
    let nested = wrapper(
        1,
        1,
        &wrapper(1, 1, &message_set(1, &[(None, Some(b"x"), 0)])),
    );
    let mut lying_inner = message_set(1, &[(None, Some(b"x"), 0)]);
    lying_inner[8..12].copy_from_slice(&(1i32 << 30).to_be_bytes());
    let lying_size = wrapper(1, 2, &lying_inner);
    let mut lying_key = message_set(1, &[(Some(b"k"), Some(b"x"), 0)]);
    lying_key[26..30].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32fast::hash(&lying_key[16..]);
    lying_key[12..16].copy_from_slice(&crc.to_be_bytes());
    let mut out_of_order = message(5, 1, 0, 0, None, Some(b"a"));
    out_of_order.put_slice(&message(3, 1, 0, 0, None, Some(b"b")));
    let out_of_order = wrapper(1, 1, &out_of_order);
    let other_magic = wrapper(1, 3, &message_set(0, &[(None, Some(b"x"), 0)]));
    let empty_wrapper = wrapper(1, 1, b"");
    let zstd = message(0, 1, 4, 0, None, Some(b"whatever"));
    // A bad CRC one level down, inside a gzip wrapper whose own CRC holds.
    let mut inner_bad_crc = message_set(1, &[(Some(b"k"), Some(b"v"), 0)]);
    inner_bad_crc[14] ^= 0x01;
    let inner_bad_crc = wrapper(1, 1, &inner_bad_crc);
    // A wrapper whose payload is not what its codec says.
    let not_gzip = message(0, 1, 1, 0, None, Some(b"not a gzip stream"));
    let not_lz4 = message(0, 1, 3, 0, None, Some(b"not an lz4 frame"));
    let cases: Vec<(&str, Bytes, i16)> = vec![
        ("bad CRC", bad_crc.freeze(), CORRUPT_MESSAGE),
        ("unknown magic", unknown_magic.freeze(), CORRUPT_MESSAGE),
        ("a v2 batch in Produce v2", v2_batch, INVALID_RECORD),
        ("truncated message", truncated, CORRUPT_MESSAGE),
        ("wrapper inside a wrapper", nested.freeze(), INVALID_RECORD),
        (
            "inner message size that lies",
            lying_size.freeze(),
            CORRUPT_MESSAGE,
        ),
        ("key length that lies", lying_key.freeze(), CORRUPT_MESSAGE),
        (
            "inner offsets out of order",
            out_of_order.freeze(),
            INVALID_RECORD,
        ),
        (
            "inner magic differs from the wrapper's",
            other_magic.freeze(),
            INVALID_RECORD,
        ),
        (
            "wrapper with no inner messages",
            empty_wrapper.freeze(),
            INVALID_RECORD,
        ),
        (
            "zstd with magic 1",
            zstd.freeze(),
            UNSUPPORTED_COMPRESSION_TYPE,
        ),
        (
            "bad CRC inside a compressed wrapper",
            inner_bad_crc.freeze(),
            CORRUPT_MESSAGE,
        ),
        (
            "gzip wrapper of garbage",
            not_gzip.freeze(),
            CORRUPT_MESSAGE,
        ),
        ("lz4 wrapper of garbage", not_lz4.freeze(), CORRUPT_MESSAGE),
    ];
    for (what, set, code) in &cases {
        assert_eq!(
            produce(&mut conn, 2, topic, 1, set).await.0,
            *code,
            "{what}"
        );
    }

    // A gzip bomb: 512 MiB of zeros in a ~0.5 MiB request. Decompression
    // stops at the request size limit; memory stays bounded.
    let pid = server.pid().expect("server pid");
    let before = peak_rss(pid);
    let bomb = {
        let mut inner = BytesMut::new();
        inner.put_i64(0);
        inner.put_i32(0); // size and CRC do not matter: never reached
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&inner).expect("gzip");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..512 {
            e.write_all(&zeros).expect("gzip");
        }
        message(0, 1, 1, 0, None, Some(&e.finish().expect("gzip")))
    };
    assert!(bomb.len() < FRAME);
    assert_eq!(
        produce(&mut conn, 2, topic, 1, &bomb).await.0,
        MESSAGE_TOO_LARGE,
        "gzip bomb"
    );
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "peak memory grew by {grown} bytes for a gzip bomb"
    );

    // One request, two partitions: the good one is stored, the bad one not.
    let mut two = BytesMut::new();
    two.put_i16(-1);
    two.put_i32(10_000);
    two.put_i32(1);
    two.string(topic);
    two.put_i32(2);
    two.put_i32(0);
    two.nullable(Some(&good));
    two.put_i32(1);
    two.nullable(Some(&cases[0].1));
    let mut r = Rd(call(&mut conn, PRODUCE, 0, &two).await);
    assert_eq!(r.i32(), 1);
    r.string();
    assert_eq!(r.i32(), 2);
    assert_eq!((r.i32(), r.i16(), r.i64()), (0, 0, 1));
    assert_eq!((r.i32(), r.i16(), r.i64()), (1, CORRUPT_MESSAGE, -1));
    r.done();

    // Nothing of the refused sets was stored.
    assert_eq!(
        list_offsets_v0(&mut conn, topic, 1, -1, 1).await,
        (0, vec![0])
    );
    assert_eq!(
        list_offsets_v0(&mut conn, topic, 0, -1, 1).await,
        (0, vec![2])
    );
    let (error, hw, got) = fetch(&mut conn, 2, topic, 1, 0).await;
    assert_eq!((error, hw, got.len()), (0, 0, 0));
    assert_eq!(fetch(&mut conn, 3, topic, 0, 0).await.2.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_offset_and_admin_api_versions() {
    let server = DevServer::start(DevOptions::default()).await;
    let bootstrap = server.bootstrap();
    let mut conn = RawConn::connect(server.kafka_addr()).await;

    let create =
        |name: &str, partitions: i32, configs: &[(&str, &str)], validate_only: Option<bool>| {
            let mut b = BytesMut::new();
            b.put_i32(1);
            b.string(name);
            b.put_i32(partitions);
            b.put_i16(1);
            b.put_i32(0);
            b.put_i32(configs.len() as i32);
            for (k, v) in configs {
                b.string(k).string(v);
            }
            b.put_i32(10_000);
            if let Some(v) = validate_only {
                b.put_u8(v.into());
            }
            b
        };
    // (name, error, message) of a one-topic CreateTopics v0/v1 response.
    async fn created(
        conn: &mut RawConn,
        version: i16,
        body: &[u8],
    ) -> (String, i16, Option<String>) {
        let mut r = Rd(call(conn, CREATE_TOPICS, version, body).await);
        assert_eq!(r.i32(), 1);
        let name = r.string().unwrap_or_default();
        let error = r.i16();
        let message = if version >= 1 { r.string() } else { None };
        r.done();
        (name, error, message)
    }
    let t = "old-admin";
    let (_, error, _) = created(&mut conn, 1, &create(t, 2, &[], Some(true))).await;
    assert_eq!(error, 0, "CreateTopics v1 validate_only");
    let (_, error, message) = created(
        &mut conn,
        1,
        &create(t, 2, &[("retention.ms", "x")], Some(false)),
    )
    .await;
    assert_eq!(error, INVALID_CONFIG, "CreateTopics v1 with a bad config");
    assert!(message.is_some(), "v1 carries the error message");
    // DescribeConfigs v0 of a topic that validate_only did not create.
    let describe = |name: &str| {
        let mut b = BytesMut::new();
        b.put_i32(1);
        b.put_i8(2);
        b.string(name);
        b.put_i32(-1);
        b
    };
    let mut r = Rd(call(&mut conn, DESCRIBE_CONFIGS, 0, &describe(t)).await);
    r.i32();
    assert_eq!(r.i32(), 1);
    assert_eq!(
        r.i16(),
        UNKNOWN_TOPIC_OR_PARTITION,
        "validate_only created nothing"
    );
    let (name, error, _) = created(
        &mut conn,
        0,
        &create(t, 2, &[("retention.ms", "1000")], None),
    )
    .await;
    assert_eq!((name.as_str(), error), (t, 0), "CreateTopics v0");
    assert_eq!(
        created(&mut conn, 0, &create(t, 2, &[], None)).await.1,
        TOPIC_ALREADY_EXISTS
    );

    // DescribeConfigs v0: is_default instead of a config source.
    let mut r = Rd(call(&mut conn, DESCRIBE_CONFIGS, 0, &describe(t)).await);
    r.i32();
    assert_eq!(r.i32(), 1);
    assert_eq!(r.i16(), 0);
    r.string();
    assert_eq!(r.i8(), 2);
    assert_eq!(r.string().as_deref(), Some(t));
    let mut defaults = std::collections::BTreeMap::new();
    for _ in 0..r.i32() {
        let name = r.string().unwrap_or_default();
        let value = r.string();
        let _read_only = r.i8();
        let is_default = r.i8() != 0;
        let _sensitive = r.i8();
        defaults.insert(name, (value, is_default));
    }
    r.done();
    assert_eq!(
        defaults.get("retention.ms"),
        Some(&(Some("1000".into()), false))
    );
    assert_eq!(
        defaults.get("cleanup.policy"),
        Some(&(Some("delete".into()), true))
    );

    // Produce v0 (magic 0) then ListOffsets v0.
    let set = message_set(
        0,
        &[
            (None, Some(b"a"), -1),
            (None, Some(b"b"), -1),
            (None, Some(b"c"), -1),
        ],
    );
    assert_eq!(produce(&mut conn, 0, t, 0, &set).await, (0, 0));
    assert_eq!(list_offsets_v0(&mut conn, t, 0, -1, 1).await, (0, vec![3]));
    assert_eq!(list_offsets_v0(&mut conn, t, 0, -2, 1).await, (0, vec![0]));
    assert_eq!(list_offsets_v0(&mut conn, t, 0, -1, 0).await, (0, vec![]));
    assert_eq!(
        list_offsets_v0(&mut conn, t, 7, -1, 1).await.0,
        UNKNOWN_TOPIC_OR_PARTITION
    );

    // OffsetCommit v0 and v1, read back by OffsetFetch v0 and a modern client.
    let commit = |version: i16, offset: i64| {
        let mut b = BytesMut::new();
        b.string("old-group");
        if version >= 1 {
            b.put_i32(-1);
            b.string("");
        }
        b.put_i32(1);
        b.string(t);
        b.put_i32(1);
        b.put_i32(0);
        b.put_i64(offset);
        if version >= 1 {
            b.put_i64(-1);
        }
        b.string("meta");
        b
    };
    let fetch_body = {
        let mut b = BytesMut::new();
        b.string("old-group");
        b.put_i32(1);
        b.string(t);
        b.put_i32(1);
        b.put_i32(0);
        b
    };
    for (version, offset) in [(0i16, 2i64), (1, 3)] {
        let mut r = Rd(call(&mut conn, OFFSET_COMMIT, version, &commit(version, offset)).await);
        assert_eq!(r.i32(), 1);
        r.string();
        assert_eq!(r.i32(), 1);
        assert_eq!((r.i32(), r.i16()), (0, 0), "OffsetCommit v{version}");
        r.done();
        let mut r = Rd(call(&mut conn, OFFSET_FETCH, 0, &fetch_body).await);
        assert_eq!(r.i32(), 1);
        r.string();
        assert_eq!(r.i32(), 1);
        assert_eq!(r.i32(), 0);
        assert_eq!(
            r.i64(),
            offset,
            "OffsetFetch v0 after OffsetCommit v{version}"
        );
        assert_eq!(r.string().as_deref(), Some("meta"));
        assert_eq!(r.i16(), 0);
        r.done();
    }
    assert_eq!(committed_offset(&bootstrap, "old-group", t), Some(3));

    // DeleteTopics v0.
    let delete = {
        let mut b = BytesMut::new();
        b.put_i32(1);
        b.string(t);
        b.put_i32(10_000);
        b
    };
    for want in [0, UNKNOWN_TOPIC_OR_PARTITION] {
        let mut r = Rd(call(&mut conn, DELETE_TOPICS, 0, &delete).await);
        assert_eq!(r.i32(), 1);
        assert_eq!(r.string().as_deref(), Some(t));
        assert_eq!(r.i16(), want, "DeleteTopics v0");
        r.done();
    }
}

/// librdkafka forced to an old protocol baseline.
fn old_rdkafka(bootstrap: &str, fallback: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![
        ("api.version.request".into(), "false".into()),
        ("broker.version.fallback".into(), fallback.into()),
        ("bootstrap.servers".into(), bootstrap.into()),
    ];
    out.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    out
}

fn old_group_consumer(bootstrap: &str, fallback: &str, group: &str, topic: &str) -> BaseConsumer {
    let mut cfg = group_member_config(bootstrap, group, "old-rdkafka", &[]);
    for (k, v) in old_rdkafka(bootstrap, fallback, &[]) {
        cfg.set(k, v);
    }
    let c: BaseConsumer = cfg.create().expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

fn poll_n(c: &BaseConsumer, n: usize) -> Vec<(i64, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} records",
            got.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            got.push((
                m.offset(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into(),
            ));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_forced_to_old_versions_produces_consumes_and_resumes_from_commits() {
    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS", 0))
            .await;
    let bootstrap = server.bootstrap();
    for (fallback, codec) in [
        ("0.9.0", "gzip"),
        ("0.9.0", "snappy"),
        ("0.9.0", "lz4"),
        ("0.9.0", "none"),
        ("0.8.2", "lz4"),
        // From 0.10 on librdkafka turns ApiVersions requests back on by
        // itself (rd_kafka_new: the fallback is "queryable"), so this
        // baseline negotiates like a modern client.
        ("0.10.0", "gzip"),
    ] {
        let topic = format!("rdkafka-{}-{codec}", fallback.replace('.', "-"));
        create_topic(&bootstrap, &topic, 1, &[]).await;
        let mut cfg = ClientConfig::new();
        for (k, v) in old_rdkafka(
            &bootstrap,
            fallback,
            &[
                ("compression.codec", codec),
                ("linger.ms", "20"),
                ("acks", "all"),
            ],
        ) {
            cfg.set(k, v);
        }
        let producer: rdkafka::producer::FutureProducer = cfg.create().expect("producer");
        let sends = (0..20).map(|i| {
            let (key, value) = (format!("k{i}"), format!("v{i}"));
            let producer = &producer;
            let topic = &topic;
            async move {
                producer
                    .send(
                        FutureRecord::to(topic)
                            .partition(0)
                            .key(&key)
                            .payload(&value),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        let results = futures::future::join_all(sends).await;
        for r in &results {
            assert!(r.is_ok(), "{fallback} {codec}: produce failed: {r:?}");
        }
        if fallback == "0.8.2" {
            // librdkafka has no group consumer before 0.9: what its producer
            // wrote (magic 0, lz4 with Kafka 0.8's frame header checksum)
            // is read back by a modern client.
            let got: Vec<_> = read_to_end(&bootstrap, &topic)
                .into_iter()
                .map(|(o, _, v)| (o, v.unwrap_or_default()))
                .collect();
            assert_eq!(
                got,
                (0..20)
                    .map(|i| (i as i64, format!("v{i}")))
                    .collect::<Vec<_>>()
            );
            continue;
        }
        let group = format!("g-{topic}");
        let c = old_group_consumer(&bootstrap, fallback, &group, &topic);
        let first = poll_n(&c, 10);
        assert_eq!(
            first,
            (0..10)
                .map(|i| (i as i64, format!("v{i}")))
                .collect::<Vec<_>>(),
            "{fallback} {codec}: first half"
        );
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
        drop(c);
        assert_eq!(
            committed_offset(&bootstrap, &group, &topic),
            Some(10),
            "{fallback}: commit stored"
        );
        let c = old_group_consumer(&bootstrap, fallback, &group, &topic);
        let rest = poll_n(&c, 10);
        assert_eq!(
            rest,
            (10..20)
                .map(|i| (i as i64, format!("v{i}")))
                .collect::<Vec<_>>(),
            "{fallback} {codec}: a restarted consumer resumes from the commit"
        );
    }
    let wanted = [
        ("Produce", 0),
        ("Produce", 1),
        ("Fetch", 1),
        ("ListOffsets", 0),
        ("OffsetCommit", 2),
    ];
    assert_served(&server, "librdkafka", &wanted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_pinned_to_old_api_versions() {
    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS", 0))
            .await;
    for version in ["0.8.2", "0.9", "0.10.1", "0.11", "1.0"] {
        run_kafka_python_check(
            "old_versions_check.py",
            &server,
            &["--api-version", version],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_group_and_producer_versions_of_kafka_3_9() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    const ILLEGAL_GENERATION: i16 = 22;
    const GROUP_ID_NOT_FOUND: i16 = 69;

    let server = DevServer::start(DevOptions::default()).await;
    let topic = "newest-versions";
    create_topic(&server.bootstrap(), topic, 1, &[]).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let commit = |group: &str, generation: i32, offset: i64| {
        let mut p = OffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = offset;
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(s(topic));
        t.partitions = vec![p];
        let mut r = OffsetCommitRequest::default();
        r.group_id = GroupId(s(group));
        r.generation_id_or_member_epoch = generation;
        r.topics = vec![t];
        r
    };
    let code = |r: &OffsetCommitResponse| r.topics[0].partitions[0].error_code;

    // A generation for a group that does not exist: v8 says
    // ILLEGAL_GENERATION, v9 GROUP_ID_NOT_FOUND (Kafka 3.9's coordinator).
    let r = conn.request(8, &commit("no-such-group", 3, 1)).await;
    assert_eq!(code(&r), ILLEGAL_GENERATION);
    let r = conn.request(9, &commit("no-such-group", 3, 1)).await;
    assert_eq!(code(&r), GROUP_ID_NOT_FOUND);
    // Member epoch -1 (no group management) commits at v9, creating a
    // classic group, as Kafka does.
    let r = conn.request(9, &commit("simple-9", -1, 42)).await;
    assert_eq!(code(&r), 0);

    // OffsetFetch v9: a classic group ignores member id and epoch.
    for (member, epoch) in [("", -1), ("someone", 7)] {
        let mut t = OffsetFetchRequestTopics::default();
        t.name = TopicName(s(topic));
        t.partition_indexes = vec![0];
        let mut g = OffsetFetchRequestGroup::default();
        g.group_id = GroupId(s("simple-9"));
        g.member_id = Some(s(member));
        g.member_epoch = epoch;
        g.topics = Some(vec![t]);
        let mut req = OffsetFetchRequest::default();
        req.groups = vec![g];
        let r = conn.request(9, &req).await;
        let g = &r.groups[0];
        assert_eq!(g.error_code, 0);
        assert_eq!(g.topics[0].partitions[0].committed_offset, 42, "{member}");
    }

    // ListGroups v5: the type filter is case-insensitive; every group is
    // classic.
    for (types, listed) in [
        (vec![], true),
        (vec!["Classic"], true),
        (vec!["consumer"], false),
        (vec!["consumer", "CLASSIC"], true),
    ] {
        let mut req = ListGroupsRequest::default();
        req.types_filter = types.iter().map(|t| s(t)).collect();
        let r = conn.request(5, &req).await;
        assert_eq!(r.error_code, 0);
        let g = r.groups.iter().find(|g| g.group_id.as_str() == "simple-9");
        assert_eq!(g.is_some(), listed, "types {types:?}");
        if let Some(g) = g {
            assert_eq!(g.group_type.as_str(), "classic");
        }
    }

    // FindCoordinator v5 (batched) and InitProducerId v5.
    let mut req = FindCoordinatorRequest::default();
    req.coordinator_keys = vec![s("simple-9")];
    let r = conn.request(5, &req).await;
    assert_eq!(r.coordinators.len(), 1);
    assert_eq!(r.coordinators[0].error_code, 0);
    assert!(r.coordinators[0].port > 0);
    let mut req = InitProducerIdRequest::default();
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    let r = conn.request(5, &req).await;
    assert_eq!(r.error_code, 0);
    assert!(r.producer_id.0 >= 0);
    assert_served(
        &server,
        "raw v9/v5 requests",
        &[
            ("OffsetCommit", 9),
            ("OffsetFetch", 9),
            ("ListGroups", 5),
            ("FindCoordinator", 5),
            ("InitProducerId", 5),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_apis_v0_see_literal_patterns_only() {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    const TOPIC: i8 = 2;
    const ANY: i8 = 1;
    const READ: i8 = 3;
    const ALLOW: i8 = 3;
    const PREFIXED: i8 = 4;
    const DESCRIBE_ACLS: i16 = 29;
    const CREATE_ACLS: i16 = 30;
    const DELETE_ACLS: i16 = 31;

    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_AUTHORIZER", "acl")
            .env("KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND", "true"),
    )
    .await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    // A prefixed binding through v1, which v0 cannot express.
    let mut c = AclCreation::default();
    c.resource_type = TOPIC;
    c.resource_name = StrBytes::from_static_str("logs-");
    c.resource_pattern_type = PREFIXED;
    c.principal = StrBytes::from_static_str("User:bob");
    c.host = StrBytes::from_static_str("*");
    c.operation = READ;
    c.permission_type = ALLOW;
    let mut req = CreateAclsRequest::default();
    req.creations = vec![c];
    let r = conn.request(1, &req).await;
    assert_eq!(r.results[0].error_code, 0);

    // CreateAcls v0: a literal binding.
    let mut b = BytesMut::new();
    b.put_i32(1);
    b.put_i8(TOPIC);
    b.string("orders");
    b.string("User:alice");
    b.string("*");
    b.put_i8(READ);
    b.put_i8(ALLOW);
    let mut r = Rd(call(&mut conn, CREATE_ACLS, 0, &b).await);
    assert_eq!(r.i32(), 0, "throttle");
    assert_eq!(r.i32(), 1);
    assert_eq!(r.i16(), 0, "created");
    r.string();
    r.done();

    // An ANY filter at v0: LITERAL pattern type, so only alice's binding.
    let filter = |b: &mut BytesMut| {
        b.put_i8(ANY);
        b.put_i16(-1);
        b.put_i16(-1);
        b.put_i16(-1);
        b.put_i8(ANY);
        b.put_i8(ANY);
    };
    let mut b = BytesMut::new();
    filter(&mut b);
    let mut r = Rd(call(&mut conn, DESCRIBE_ACLS, 0, &b).await);
    r.i32();
    assert_eq!(r.i16(), 0);
    r.string();
    assert_eq!(r.i32(), 1, "one literal resource");
    assert_eq!(r.i8(), TOPIC);
    assert_eq!(r.string().as_deref(), Some("orders"));
    assert_eq!(r.i32(), 1);
    assert_eq!(r.string().as_deref(), Some("User:alice"));
    assert_eq!(r.string().as_deref(), Some("*"));
    assert_eq!((r.i8(), r.i8()), (READ, ALLOW));
    r.done();

    // DeleteAcls v0 with the same filter removes alice's binding only.
    let mut b = BytesMut::new();
    b.put_i32(1);
    filter(&mut b);
    let mut r = Rd(call(&mut conn, DELETE_ACLS, 0, &b).await);
    r.i32();
    assert_eq!(r.i32(), 1);
    assert_eq!(r.i16(), 0);
    r.string();
    assert_eq!(r.i32(), 1, "one match");
    assert_eq!(r.i16(), 0);
    r.string();
    assert_eq!(r.i8(), TOPIC);
    assert_eq!(r.string().as_deref(), Some("orders"));
    assert_eq!(r.string().as_deref(), Some("User:alice"));
    assert_eq!(r.string().as_deref(), Some("*"));
    assert_eq!((r.i8(), r.i8()), (READ, ALLOW));
    r.done();
    let left = conn
        .request(1, &{
            let mut d = DescribeAclsRequest::default();
            d.resource_type_filter = ANY;
            d.resource_name_filter = None;
            d.principal_filter = None;
            d.host_filter = None;
            d.pattern_type_filter = ANY;
            d.operation = ANY;
            d.permission_type = ANY;
            d
        })
        .await;
    let names: Vec<&str> = left
        .resources
        .iter()
        .map(|r| r.resource_name.as_str())
        .collect();
    assert_eq!(names, ["logs-"], "the prefixed binding stays");
}
