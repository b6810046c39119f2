//! Property-based fuzzing (proptest, stable toolchain) of every decoder that
//! untrusted or stored bytes reach: Kafka request headers and the request
//! body of every API and version the gateway serves, record batch
//! validation (with all compression codecs), the WAL object footer and
//! trailer, seal objects, chunk verification, the coordinator log's records,
//! and bounded decompression.
//!
//! Inputs are random bytes and, more usefully, valid encodings with bytes
//! flipped, inserted, removed or truncated. Each decoder must return (an
//! error is fine) without panicking or aborting. Our own decoders must not
//! make any allocation beyond a bound proportional to their input (a length
//! field that lies must not reserve memory); allocation sizes are measured
//! by a counting global allocator, per thread. The protocol crate's request
//! decoders do reserve by wire counts (kafka-protocol-rs PRs #152/#161/#200,
//! unreleased): for them the property is that the process survives, which
//! the production allocator ensures (gateway/src/alloc.rs), and
//! `lying_array_counts_cost_no_memory` checks that it costs no memory.
//!
//! Cases per property: `PROPTEST_CASES` (default set below, bounded for CI).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafscale_gateway::alloc::{LazyLargeAlloc, LAZY_THRESHOLD};
use kafscale_gateway::dispatch::SUPPORTED;
use kafscale_logworker::segment::format as segment_format;
use kafscale_logworker::{batch, groups, inflate, wal::format};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

// ---------------------------------------------------------------------------
// Allocation accounting
// ---------------------------------------------------------------------------

/// The production allocator (huge reservations are lazy mappings), with
/// the largest *backed* allocation noted per thread.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

const INNER: LazyLargeAlloc = LazyLargeAlloc;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { INNER.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { INNER.dealloc(ptr, layout) }
    }
}

/// Notes allocations the system allocator backs; a lazily mapped
/// reservation (≥ LAZY_THRESHOLD) costs only the pages written, which the
/// decoders bound by their input.
fn note(size: usize) {
    if size >= LAZY_THRESHOLD {
        return;
    }
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns the largest single allocation it made.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

/// Allocation bound for a decoder given `n` input bytes: proportional to
/// the input, never to what a length field claims.
fn bound(n: usize) -> usize {
    16 * n + 64 * 1024
}

/// Decompressors keep a window: zstd's is capped at 2^24.
const INFLATE_BOUND: usize = (1 << inflate::ZSTD_WINDOW_LOG_MAX) + (1 << 20);

fn check_alloc(what: &str, input: usize, limit: usize, f: impl FnOnce()) {
    let largest = largest_allocation(f);
    assert!(
        largest <= limit,
        "{what}: one allocation of {largest} bytes for {input} input bytes (limit {limit})"
    );
}

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// Ways to damage a valid encoding.
#[derive(Clone, Debug)]
enum Damage {
    Flip {
        at: usize,
        xor: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// Overwrite four bytes with a large big-endian length.
    BigLength {
        at: usize,
        value: u32,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Damage::Flip { at, xor }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Damage::Remove { at, len }),
        any::<usize>().prop_map(|at| Damage::Truncate { at }),
        (
            any::<usize>(),
            prop_oneof![
                Just(u32::MAX),
                Just(i32::MAX as u32),
                Just(0x7fff_fff0),
                1u32 << 20..1 << 31
            ]
        )
            .prop_map(|(at, value)| Damage::BigLength { at, value }),
    ]
}

fn apply(mut v: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
    for d in damages {
        if v.is_empty() {
            break;
        }
        let n = v.len();
        match d {
            Damage::Flip { at, xor } => v[at % n] ^= xor,
            Damage::Insert { at, bytes } => {
                let at = at % (n + 1);
                v.splice(at..at, bytes.iter().copied());
            }
            Damage::Remove { at, len } => {
                let at = at % n;
                v.drain(at..(at + len).min(n));
            }
            Damage::Truncate { at } => v.truncate(at % n),
            Damage::BigLength { at, value } => {
                let at = at % n;
                for (i, b) in value.to_be_bytes().iter().enumerate() {
                    if let Some(x) = v.get_mut(at + i) {
                        *x = *b;
                    }
                }
            }
        }
    }
    v
}

/// A valid record batch of `n` records with `codec`, from the given values.
/// The CRC32C of a buffer of valid batches as the WAL writer derives it,
/// from each batch's header and stored CRC.
fn derived_crc(batches: &[u8]) -> u32 {
    let infos = batch::validate(batches, usize::MAX).expect("valid batches");
    let mut crc = kafscale_logworker::crc::Crc32c::default();
    for b in infos {
        batch::extend_crc(&mut crc, &batches[b.position..b.position + b.size]);
    }
    crc.value()
}

fn record_batch(values: &[Vec<u8>], codec: Compression, producer_id: i64) -> Vec<u8> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if producer_id >= 0 { i as i32 } else { -1 },
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.clone())),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .expect("encode a record batch");
    out.to_vec()
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ]
}

/// How many of `entries` (chunks or blocks) verify against `object`'s bytes.
fn verify_entries(object: &[u8], entries: &[format::ChunkEntry]) -> usize {
    entries
        .iter()
        .filter(|e| {
            let start = e.position as usize;
            object
                .get(start..start + e.length as usize)
                .is_some_and(|data| format::verify_chunk(e, data).is_ok())
        })
        .count()
}

fn values() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..8)
}

/// Every (API key, version) the gateway serves.
fn served() -> Vec<(ApiKey, i16)> {
    SUPPORTED
        .iter()
        .flat_map(|(k, _, _)| {
            let (lo, hi) = kafscale_gateway::dispatch::supported(*k).unwrap_or((0, -1));
            (lo..=hi).map(move |v| (*k, v))
        })
        .collect()
}

/// A valid encoding of a default request of `key` at `version`.
fn default_request(key: ApiKey, version: i16) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = Some(StrBytes::from_static_str("fuzz"));
    let mut out = BytesMut::new();
    header
        .encode(&mut out, key.request_header_version(version))
        .expect("encode header");
    if let Some(body) = default_body(key, version) {
        out.extend_from_slice(&body);
    }
    out.to_vec()
}

/// An empty request of a version older than the protocol crate encodes
/// (the gateway's `legacy` module reads these): every array empty, every
/// string empty, every number 0.
fn old_default_body(key: ApiKey, version: i16) -> Option<Vec<u8>> {
    let len = match (key, version) {
        // acks, timeout, topics
        (ApiKey::Produce, _) => 10,
        // replica, max wait, min bytes, [max bytes,] topics
        (ApiKey::Fetch, 3) => 20,
        (ApiKey::Fetch, _) => 16,
        // replica, topics
        (ApiKey::ListOffsets, _) => 8,
        // group, [generation, member,] topics
        (ApiKey::OffsetCommit, 0) => 6,
        (ApiKey::OffsetCommit, _) => 12,
        // group, topics (v1's format)
        (ApiKey::OffsetFetch, _) => 6,
        // topics, timeout, [validate only]
        (ApiKey::CreateTopics, 0) => 8,
        (ApiKey::CreateTopics, _) => 9,
        // topics, timeout
        (ApiKey::DeleteTopics, _) => 8,
        // resources
        (ApiKey::DescribeConfigs, _) => 4,
        // topics (v1's format: a nullable array, here empty)
        (ApiKey::DescribeLogDirs, _) | (ApiKey::AlterReplicaLogDirs, _) => 4,
        // resource type, name, principal, host, operation, permission
        (ApiKey::DescribeAcls, _) => 9,
        // creations / filters
        (ApiKey::CreateAcls, _) | (ApiKey::DeleteAcls, _) => 4,
        _ => return None,
    };
    Some(vec![0; len])
}

/// Per API the gateway serves: the default request body encoded at a
/// version, and decoding a body at a version (the protocol crate's typed
/// decoders, as the gateway's handlers use them).
macro_rules! request_types {
    ($($k:ident => $t:ident),* $(,)?) => {
        /// The default body of `key` encoded at `version`, if that encodes.
        fn default_body(key: ApiKey, version: i16) -> Option<Vec<u8>> {
            use kafka_protocol::messages::*;
            if version < key.valid_versions().min {
                return old_default_body(key, version);
            }
            let mut out = BytesMut::new();
            let encoded = match key {
                $(ApiKey::$k => $t::default().encode(&mut out, version).is_ok(),)*
                _ => return None,
            };
            encoded.then(|| out.to_vec())
        }

        /// Decodes a body of `key` at `version`; whether it decoded.
        fn decode_body(key: ApiKey, buf: &mut Bytes, version: i16) -> Option<bool> {
            use kafka_protocol::messages::*;
            if version < key.valid_versions().min {
                return Some(kafscale_gateway::legacy::reads(key, version, buf));
            }
            Some(match key {
                $(ApiKey::$k => $t::decode(buf, version).is_ok(),)*
                _ => return None,
            })
        }
    };
}

request_types!(
    Produce => ProduceRequest,
    Fetch => FetchRequest,
    ListOffsets => ListOffsetsRequest,
    Metadata => MetadataRequest,
    ApiVersions => ApiVersionsRequest,
    CreateTopics => CreateTopicsRequest,
    DeleteTopics => DeleteTopicsRequest,
    CreatePartitions => CreatePartitionsRequest,
    DescribeCluster => DescribeClusterRequest,
    DescribeConfigs => DescribeConfigsRequest,
    IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
    AlterConfigs => AlterConfigsRequest,
    FindCoordinator => FindCoordinatorRequest,
    JoinGroup => JoinGroupRequest,
    SyncGroup => SyncGroupRequest,
    Heartbeat => HeartbeatRequest,
    LeaveGroup => LeaveGroupRequest,
    OffsetCommit => OffsetCommitRequest,
    OffsetFetch => OffsetFetchRequest,
    DescribeGroups => DescribeGroupsRequest,
    ListGroups => ListGroupsRequest,
    DeleteGroups => DeleteGroupsRequest,
    OffsetDelete => OffsetDeleteRequest,
    InitProducerId => InitProducerIdRequest,
    ElectLeaders => ElectLeadersRequest,
    DeleteRecords => DeleteRecordsRequest,
    DescribeLogDirs => DescribeLogDirsRequest,
    AlterReplicaLogDirs => AlterReplicaLogDirsRequest,
    ListPartitionReassignments => ListPartitionReassignmentsRequest,
    AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
    DescribeTopicPartitions => DescribeTopicPartitionsRequest,
    DescribeAcls => DescribeAclsRequest,
    CreateAcls => CreateAclsRequest,
    DeleteAcls => DeleteAclsRequest,
    SaslHandshake => SaslHandshakeRequest,
    SaslAuthenticate => SaslAuthenticateRequest,
    DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
    AlterUserScramCredentials => AlterUserScramCredentialsRequest,
    DescribeClientQuotas => DescribeClientQuotasRequest,
    AlterClientQuotas => AlterClientQuotasRequest,
);

/// Decodes a request frame the way the gateway does: header at the API's
/// header version, then the body.
fn decode_frame(frame: &[u8]) {
    let mut buf = Bytes::copy_from_slice(frame);
    if buf.len() < 4 {
        return;
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(key) = ApiKey::try_from(key) else {
        return;
    };
    if kafscale_gateway::dispatch::supported(key)
        .is_none_or(|(lo, hi)| version < lo || version > hi)
    {
        return;
    }
    if RequestHeader::decode(&mut buf, key.request_header_version(version)).is_err() {
        return;
    }
    let _ = decode_body(key, &mut buf, version);
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Random frames for every served API and version.
    #[test]
    fn request_frames_of_random_bytes(
        which in any::<prop::sample::Index>(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let apis = served();
        let (key, version) = apis[which.index(apis.len())];
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(key as i16).to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&body);
        check_alloc("request decode", frame.len(), LAZY_THRESHOLD, || decode_frame(&frame));
    }

    /// Damaged valid frames for every served API and version.
    #[test]
    fn damaged_request_frames(
        which in any::<prop::sample::Index>(),
        damages in prop::collection::vec(damage(), 1..4),
    ) {
        let apis = served();
        let (key, version) = apis[which.index(apis.len())];
        let frame = apply(default_request(key, version), &damages);
        check_alloc("request decode", frame.len(), LAZY_THRESHOLD, || decode_frame(&frame));
    }

    /// A produce payload: valid batches pass, damaged ones fail cleanly.
    #[test]
    fn record_batch_validation(
        vals in values(),
        c in codec(),
        idempotent in any::<bool>(),
        damages in prop::collection::vec(damage(), 0..3),
    ) {
        let good = record_batch(&vals, c, if idempotent { 42 } else { -1 });
        if damages.is_empty() {
            let infos = batch::validate(&good, 1 << 20).expect("a valid batch validates");
            let records: i32 = infos.iter().map(|b| b.record_count).sum();
            prop_assert_eq!(records as usize, vals.len());
        }
        let bad = apply(good, &damages);
        check_alloc("batch::validate", bad.len(), INFLATE_BOUND.max(bound(bad.len())), || {
            let _ = batch::validate(&bad, 1 << 20);
        });
    }

    /// Bounded decompression on arbitrary bytes for every codec.
    #[test]
    fn inflate_of_random_bytes(codec in 1i16..=4, data in prop::collection::vec(any::<u8>(), 0..256), n in 1i32..1000) {
        check_alloc("inflate", data.len(), INFLATE_BOUND, || {
            let _ = inflate::check_count(&data, codec, n);
        });
    }

    /// WAL objects: footer, trailer, chunks; damaged objects fail cleanly.
    #[test]
    fn wal_objects(
        chunks in prop::collection::vec((0i32..8, values()), 1..4),
        damages in prop::collection::vec(damage(), 0..3),
    ) {
        let inputs: Vec<format::ChunkInput> = chunks
            .iter()
            .enumerate()
            .map(|(i, (p, vals))| {
                let data = Bytes::from(record_batch(vals, Compression::None, -1));
                format::ChunkInput {
                    topic_id: uuid::Uuid::from_u128(i as u128 + 1),
                    partition: *p,
                    base_offset: 10 * i as i64,
                    last_offset: 10 * i as i64 + vals.len() as i64 - 1,
                    max_timestamp: 1,
                    batch_count: 1,
                    // As the WAL writer does: derived from the batches' own CRCs.
                    crc: Some(derived_crc(&data)),
                    data,
                }
            })
            .collect();
        let (object, entries) = format::encode(&inputs);
        if damages.is_empty() {
            let decoded = format::decode_footer(&object).expect("a valid object decodes");
            prop_assert_eq!(decoded.len(), entries.len());
            prop_assert_eq!(verify_entries(&object, &decoded), decoded.len(), "valid chunks verify");
        }
        let bad = apply(object.to_vec(), &damages);
        check_alloc("wal footer", bad.len(), bound(bad.len()), || {
            if let Ok(entries) = format::decode_footer(&bad) {
                verify_entries(&bad, &entries);
            }
            let tail = &bad[bad.len().saturating_sub(16)..];
            let _ = format::decode_trailer(tail, bad.len() as u64);
        });
    }

    /// Segments: footer, trailer, blocks; damaged segments fail cleanly.
    #[test]
    fn segment_objects(
        blocks in prop::collection::vec(values(), 0..4),
        damages in prop::collection::vec(damage(), 0..3),
    ) {
        let inputs: Vec<segment_format::BlockInput> = blocks
            .iter()
            .enumerate()
            .map(|(i, vals)| segment_format::BlockInput {
                base_offset: 100 * i as i64,
                last_offset: 100 * i as i64 + vals.len() as i64 - 1,
                max_timestamp: 1,
                batch_count: 1,
                data: vec![Bytes::from(record_batch(vals, Compression::None, -1))],
                crc: None,
            })
            .collect();
        let end = 100 * inputs.len() as i64 + 1;
        let (object, index) = segment_format::encode(uuid::Uuid::from_u128(3), 2, 0, end, &inputs);
        if damages.is_empty() {
            let decoded = segment_format::decode(&object).expect("a valid segment decodes");
            prop_assert_eq!(&decoded, &index);
            prop_assert_eq!(verify_entries(&object, &decoded.blocks), decoded.blocks.len(), "valid blocks verify");
        }
        let bad = apply(object.to_vec(), &damages);
        check_alloc("segment footer", bad.len(), bound(bad.len()), || {
            if let Ok(index) = segment_format::decode(&bad) {
                verify_entries(&bad, &index.blocks);
            }
            let tail = &bad[bad.len().saturating_sub(16)..];
            let _ = segment_format::decode_trailer(tail, bad.len() as u64);
        });
    }

    /// Seal objects.
    #[test]
    fn seal_objects(end in any::<bool>(), sealer in "[a-z0-9-]{0,20}", damages in prop::collection::vec(damage(), 0..3)) {
        let kind = if end { format::SealKind::End } else { format::SealKind::Hole };
        let good = format::encode_seal(kind, &sealer);
        if damages.is_empty() {
            prop_assert_eq!(format::decode_seal(&good), Some(kind));
        }
        let bad = apply(good.to_vec(), &damages);
        check_alloc("seal", bad.len(), bound(bad.len()), || {
            let _ = format::decode_seal(&bad);
        });
    }

    /// The coordinator log's records: valid group batches replay, damaged
    /// ones fail or skip cleanly.
    #[test]
    fn coordinator_log_records(
        offsets in prop::collection::vec(("[a-z]{1,8}", "[a-z]{1,8}", 0i32..4, any::<i64>()), 1..6),
        damages in prop::collection::vec(damage(), 0..3),
    ) {
        let kvs: Vec<_> = offsets
            .iter()
            .map(|(g, t, p, o)| {
                let c = groups::group::Committed {
                    offset: *o,
                    leader_epoch: -1,
                    metadata: None,
                    commit_timestamp_ms: 1,
                    log_offset: 0,
                };
                groups::records::offset(g, t, *p, Some(&c))
            })
            .collect();
        let good = groups::records::batch(&kvs, 1).expect("encode group records");
        if damages.is_empty() {
            let replayed = groups::records::decode(good.clone()).expect("valid records replay");
            prop_assert_eq!(replayed.len(), kvs.len());
        }
        let bad = apply(good.to_vec(), &damages);
        check_alloc("group records", bad.len(), INFLATE_BOUND.max(bound(bad.len())), || {
            let _ = groups::records::decode(Bytes::from(bad.clone()));
        });
    }
}

/// Every served API has a default body to damage, and it decodes back at
/// every served version (so the damaged-frame property starts from valid
/// frames).
#[test]
fn every_served_request_round_trips() {
    for (key, version) in served() {
        let mut buf = Bytes::from(default_request(key, version));
        RequestHeader::decode(&mut buf, key.request_header_version(version))
            .unwrap_or_else(|e| panic!("{key:?} v{version} header: {e}"));
        assert!(
            default_body(key, version).is_some(),
            "{key:?} v{version} has no default body"
        );
        assert_eq!(
            decode_body(key, &mut buf, version),
            Some(true),
            "{key:?} v{version} body"
        );
    }
}

/// Resident set size of this process, in bytes (Linux).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Regression: 8 bytes of Metadata v0 whose topic array claims 54 million
/// entries made the protocol crate reserve ~3.6 GiB (an abort under the
/// system allocator); a CompactArray in a flexible version claiming 2^32
/// entries, more. Both now fail to decode without a backed allocation.
#[test]
fn lying_array_counts_cost_no_memory() {
    let before = rss();
    let mut metadata_v0 = Bytes::from_static(&[0x03, 0x3c, 0x0c, 0x00, 0xb6]);
    assert_eq!(
        decode_body(ApiKey::Metadata, &mut metadata_v0, 0),
        Some(false)
    );
    let mut huge = BytesMut::new();
    huge.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff, 0x00, 0x00]);
    for (key, version) in served() {
        let mut b = huge.clone().freeze();
        let _ = decode_body(key, &mut b, version);
        // Flexible versions: a compact array length of 2^32 - 1.
        let mut c = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
        let _ = decode_body(key, &mut c, version);
    }
    let grown = rss().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "decoding lying counts grew RSS by {grown} bytes"
    );
}
