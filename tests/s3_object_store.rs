//! The S3 `ObjectStore` against a real S3-compatible server (moto): the
//! object-store conformance suite, pagination, error mapping, the
//! conditional-PUT startup check, the read replica and the S3 metrics.
//!
//! These tests fail (never skip) when `moto_server` is missing: run
//! `scripts/test.sh`, which installs it.

mod common_s3;

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use common_s3::{dead_endpoint, MotoServer};
use futures::stream::{self, StreamExt, TryStreamExt};
use kafscale_logworker::metrics::S3Metrics;
use kafscale_logworker::objstore::local::LocalDirStore;
use kafscale_logworker::objstore::replica::ReplicaReadStore;
use kafscale_logworker::objstore::s3::PayloadSigning;
use kafscale_logworker::objstore::{Body, ObjectError, ObjectStore};
use prometheus::{Encoder, Registry, TextEncoder};

fn metrics() -> (Registry, S3Metrics) {
    let registry = Registry::new();
    let metrics = S3Metrics::new(&registry).expect("register S3 metrics");
    (registry, metrics)
}

fn count(m: &S3Metrics, op: &str, outcome: &str) -> u64 {
    m.requests.with_label_values(&[op, outcome]).get()
}

/// Deterministic, incompressible-ish test bytes.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

/// What every `ObjectStore` must do; run over S3 and, as a reference, over
/// the local directory store.
async fn conformance(s: &dyn ObjectStore) {
    // Conditional create: the second create fails and the first body stays.
    let k = "ns/wal/w1/1/00000000000000000001";
    s.put_if_absent(k, Bytes::from_static(b"first body"))
        .await
        .expect("first create");
    match s.put_if_absent(k, Bytes::from_static(b"second")).await {
        Err(ObjectError::AlreadyExists(key)) => assert_eq!(key, k),
        other => panic!("second create must be AlreadyExists, got {other:?}"),
    }
    assert_eq!(&s.get(k).await.unwrap()[..], b"first body");

    // Ranged reads.
    assert_eq!(&s.get_range(k, 1..4).await.unwrap()[..], b"irs");
    assert_eq!(&s.get_range(k, 0..10).await.unwrap()[..], b"first body");
    assert_eq!(&s.get_range(k, 9..10).await.unwrap()[..], b"y");
    assert!(s.get_range(k, 4..4).await.unwrap().is_empty());
    let past_end = s.get_range(k, 5..100).await;
    assert!(
        past_end.is_err() && !matches!(past_end, Err(ObjectError::NotFound(_))),
        "a range past the end is an error, got {past_end:?}"
    );

    // A larger object, whole and in parts.
    let big_key = "ns/seg/t/0/00000000000000000000";
    let big = pattern(3 * 1024 * 1024 + 17, 7);
    s.put_if_absent(big_key, big.clone()).await.unwrap();
    assert_eq!(s.get(big_key).await.unwrap(), big);
    let r = 1_048_000u64..2_100_001u64;
    assert_eq!(
        s.get_range(big_key, r.clone()).await.unwrap(),
        big.slice(r.start as usize..r.end as usize)
    );

    // An object written in parts (header, chunks, footer: a WAL object) is
    // one object; empty parts are allowed.
    let parts_key = "parts/wal/w1/1/00000000000000000001";
    let cut = [0, 5, 5, 1_500_000, big.len()];
    let body = Body::from_parts(cut.windows(2).map(|w| big.slice(w[0]..w[1])).collect());
    s.put_body_if_absent(parts_key, body).await.unwrap();
    assert_eq!(s.get(parts_key).await.unwrap(), big);
    assert!(matches!(
        s.put_body_if_absent(parts_key, Body::from(Bytes::from_static(b"x")))
            .await,
        Err(ObjectError::AlreadyExists(_))
    ));

    // Empty objects exist and are empty.
    s.put_if_absent("ns/empty", Bytes::new()).await.unwrap();
    assert!(s.get("ns/empty").await.unwrap().is_empty());

    // Missing objects are NotFound, for whole and ranged reads.
    assert!(matches!(
        s.get("ns/missing").await,
        Err(ObjectError::NotFound(_))
    ));
    assert!(matches!(
        s.get_range("ns/missing", 0..1).await,
        Err(ObjectError::NotFound(_))
    ));

    // Listing: by prefix, in key order, with sizes; prefixes are byte
    // prefixes, not directories.
    for key in [
        "ns/wal/w1/1/00000000000000000002",
        "ns/wal/w2/1/00000000000000000001",
        "ns/wal/w10/1/00000000000000000001",
    ] {
        s.put_if_absent(key, Bytes::from(key.to_string()))
            .await
            .unwrap();
    }
    let listed = s.list("ns/wal/w1/").await.unwrap();
    let keys: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ns/wal/w1/1/00000000000000000001",
            "ns/wal/w1/1/00000000000000000002"
        ]
    );
    assert_eq!(listed[0].size, 10);
    assert_eq!(listed[1].size, 32);
    let keys: Vec<_> = s
        .list("ns/wal/w1")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys.len(), 3, "byte prefix also matches w10: {keys:?}");
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "key order: {keys:?}");
    let all = s.list("ns/").await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key));
    assert!(all.iter().any(|m| m.key == "ns/empty" && m.size == 0));
    assert!(s.list("other/").await.unwrap().is_empty());

    // Delete is idempotent, and deleted objects are gone.
    s.delete(k).await.unwrap();
    assert!(matches!(s.get(k).await, Err(ObjectError::NotFound(_))));
    s.delete(k).await.unwrap();
    s.delete("ns/never-existed").await.unwrap();
    assert_eq!(s.list("ns/wal/w1/").await.unwrap().len(), 1);
    // A deleted key can be created again.
    s.put_if_absent(k, Bytes::from_static(b"again"))
        .await
        .unwrap();
    assert_eq!(&s.get(k).await.unwrap()[..], b"again");

    // Keys that do not name the same object everywhere are rejected.
    for bad in ["../evil", "", "/abs"] {
        assert!(
            matches!(
                s.put_if_absent(bad, Bytes::new()).await,
                Err(ObjectError::InvalidKey(_))
            ),
            "key {bad:?} must be invalid"
        );
    }
}

#[tokio::test]
async fn s3_store_passes_the_object_store_conformance_suite() {
    let moto = MotoServer::start();
    let (registry, m) = metrics();
    let s = moto.create_bucket("kafscale-conformance", m.clone()).await;
    conformance(&s).await;

    // Every call was measured.
    assert!(count(&m, "put", "ok") >= 7);
    assert_eq!(count(&m, "put", "already_exists"), 2);
    assert_eq!(count(&m, "get", "not_found"), 2);
    assert_eq!(count(&m, "get_range", "not_found"), 1);
    assert!(count(&m, "get_range", "permanent") >= 1);
    assert!(count(&m, "list", "ok") >= 5);
    assert_eq!(count(&m, "delete", "ok"), 3);
    let put_bytes = m.bytes.with_label_values(&["put"]).get();
    assert!(put_bytes > 3 * 1024 * 1024, "put bytes {put_bytes}");
    assert!(m.bytes.with_label_values(&["get"]).get() > 3 * 1024 * 1024);
    assert_eq!(
        m.bytes.with_label_values(&["get_range"]).get(),
        3 + 10 + 1 + (2_100_001 - 1_048_000)
    );
    assert!(
        m.request_seconds
            .with_label_values(&["put"])
            .get_sample_count()
            >= 8
    );
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    for name in [
        "kafscale_s3_requests_total{op=\"put\",outcome=\"already_exists\"} 2",
        "kafscale_s3_request_seconds_bucket{op=\"get\"",
        "kafscale_s3_bytes_total{op=\"put\"}",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
}

/// With unsigned payloads (`KAFSCALE_S3_PAYLOAD_SIGNING=unsigned`: bodies
/// streamed from their parts) the store behaves the same, and every object
/// carries the CRC32C of its bytes, signed or not.
#[tokio::test]
async fn s3_store_with_unsigned_payloads_passes_the_suite_and_objects_carry_crc32c() {
    let moto = MotoServer::start();
    let (_registry, m) = metrics();
    let signed = moto.create_bucket("kafscale-unsigned", m.clone()).await;
    let mut cfg = moto.config("kafscale-unsigned");
    cfg.payload_signing = PayloadSigning::Unsigned;
    let unsigned = moto.connect(cfg, m).await;
    conformance(&unsigned).await;

    let big = pattern(2 * 1024 * 1024 + 3, 9);
    let parts = vec![big.slice(..1000), big.slice(1000..)];
    for (store, key) in [(&unsigned, "crc/unsigned"), (&signed, "crc/signed")] {
        store
            .put_body_if_absent(key, Body::from_parts(parts.clone()))
            .await
            .unwrap();
        let head = store
            .client()
            .head_object()
            .bucket("kafscale-unsigned")
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap_or_else(|e| panic!("head {key}: {e:?}"));
        let expected = BASE64.encode(crc32c::crc32c(&big).to_be_bytes());
        assert_eq!(
            head.checksum_crc32_c(),
            Some(expected.as_str()),
            "{key}: stored checksum"
        );
        assert_eq!(head.content_length(), Some(big.len() as i64));
    }
}

#[tokio::test]
async fn local_store_passes_the_same_suite() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalDirStore::open(dir.path()).unwrap();
    conformance(&s).await;
}

#[tokio::test]
async fn s3_list_follows_continuation_tokens() {
    let moto = MotoServer::start();
    let (_, m) = metrics();
    let s = Arc::new(moto.create_bucket("kafscale-pages", m.clone()).await);

    // More keys than one default page (1000), written out of order.
    let n = 1_234usize;
    stream::iter((0..n).rev())
        .map(|i| {
            let s = s.clone();
            async move {
                s.put_if_absent(&format!("ns/many/{i:06}"), Bytes::from(vec![1u8; i % 5]))
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("create many objects");
    s.put_if_absent("ns/manz", Bytes::new()).await.unwrap();

    let check = |listed: Vec<kafscale_logworker::objstore::ObjectMeta>| {
        assert_eq!(listed.len(), n);
        for (i, m) in listed.iter().enumerate() {
            assert_eq!(m.key, format!("ns/many/{i:06}"));
            assert_eq!(m.size, (i % 5) as u64);
        }
    };
    check(s.list("ns/many/").await.unwrap());

    // A small page size makes every listing span many pages.
    let mut cfg = moto.config("kafscale-pages");
    cfg.list_page_size = Some(37);
    let small = moto.connect(cfg, m.clone()).await;
    check(small.list("ns/many/").await.unwrap());
    assert_eq!(small.list("ns/").await.unwrap().len(), n + 1);
    assert_eq!(count(&m, "list", "ok"), 3, "a list is one call");
}

#[tokio::test]
async fn s3_errors_are_classified() {
    let moto = MotoServer::start();
    let (_, m) = metrics();

    // A missing bucket is a configuration error, not a missing object.
    let nobucket = moto
        .connect(moto.config("kafscale-no-such-bucket"), m.clone())
        .await;
    for r in [
        nobucket.get("ns/a").await.map(|_| ()),
        nobucket
            .put_if_absent("ns/a", Bytes::from_static(b"x"))
            .await,
        nobucket.list("ns/").await.map(|_| ()),
    ] {
        assert!(
            matches!(r, Err(ObjectError::Permanent { .. })),
            "missing bucket must be Permanent, got {r:?}"
        );
    }
    assert!(nobucket.check_conditional_put("ns").await.is_err());

    // Nothing listening: retriable.
    let mut cfg = moto.config("kafscale-any");
    cfg.endpoint = Some(dead_endpoint());
    let dead = moto.connect(cfg, m.clone()).await;
    let r = dead.get("ns/a").await;
    assert!(
        matches!(&r, Err(e @ ObjectError::Transient { .. }) if e.is_retriable()),
        "connection refused must be Transient, got {r:?}"
    );
    let r = dead.put_if_absent("ns/a", Bytes::from_static(b"x")).await;
    assert!(matches!(r, Err(ObjectError::Transient { .. })), "{r:?}");
    assert_eq!(count(&m, "get", "transient"), 1);
}

#[tokio::test]
async fn s3_conditional_put_check_passes_and_cleans_up() {
    let moto = MotoServer::start();
    let (_, m) = metrics();
    let s = moto.create_bucket("kafscale-probe", m.clone()).await;
    s.check_conditional_put("prod-ns")
        .await
        .expect("moto honours If-None-Match: *");
    assert_eq!(count(&m, "put", "already_exists"), 1);
    assert!(
        s.list("prod-ns/").await.unwrap().is_empty(),
        "probe object deleted"
    );
}

#[tokio::test]
async fn s3_read_replica_falls_back_to_the_primary_then_hits() {
    let moto = MotoServer::start();
    let (_, m) = metrics();
    let primary = Arc::new(moto.create_bucket("kafscale-primary", m.clone()).await);
    let replica = Arc::new(moto.create_bucket("kafscale-replica", m.clone()).await);
    let store = ReplicaReadStore::new(primary.clone(), replica.clone(), &m);
    let reads = |o: &str| m.replica_reads.with_label_values(&[o]).get();

    // Writes go to the primary only.
    let k = "ns/seg/t/0/00000000000000000042";
    let body = pattern(100_000, 3);
    store.put_if_absent(k, body.clone()).await.unwrap();
    assert!(matches!(
        replica.get(k).await,
        Err(ObjectError::NotFound(_))
    ));
    assert_eq!(primary.get(k).await.unwrap(), body);

    // Replication lag: served by the primary, counted as a fallback.
    assert_eq!(store.get(k).await.unwrap(), body);
    assert_eq!((reads("hit"), reads("fallback")), (0, 1));
    assert_eq!(store.list("ns/").await.unwrap().len(), 1);

    // After replication (a server-side copy into the replica bucket): a hit.
    replica
        .client()
        .copy_object()
        .bucket("kafscale-replica")
        .key(k)
        .copy_source(format!("kafscale-primary/{k}"))
        .send()
        .await
        .expect("copy to the replica bucket");
    assert_eq!(store.get(k).await.unwrap(), body);
    assert_eq!(
        store.get_range(k, 10..20).await.unwrap(),
        body.slice(10..20)
    );
    assert_eq!((reads("hit"), reads("fallback")), (2, 1));

    // Missing everywhere: NotFound from the primary, counted as a fallback.
    assert!(matches!(
        store.get("ns/none").await,
        Err(ObjectError::NotFound(_))
    ));
    assert_eq!(reads("fallback"), 2);

    // Deletes go to the primary only.
    store.delete(k).await.unwrap();
    assert!(matches!(
        primary.get(k).await,
        Err(ObjectError::NotFound(_))
    ));
    assert_eq!(replica.get(k).await.unwrap(), body);

    // An unreachable replica costs a fallback, not a failed read.
    let mut cfg = moto.config("kafscale-replica");
    cfg.endpoint = Some(dead_endpoint());
    let down = Arc::new(moto.connect(cfg, m.clone()).await);
    let store = ReplicaReadStore::new(primary.clone(), down, &m);
    primary
        .put_if_absent("ns/b", Bytes::from_static(b"b"))
        .await
        .unwrap();
    assert_eq!(&store.get("ns/b").await.unwrap()[..], b"b");
    assert_eq!(reads("fallback"), 3);
}
