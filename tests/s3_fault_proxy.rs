//! The fault-injecting S3 proxy (tests/common_faults) against a real
//! S3-compatible server (moto): plain forwarding is faithful (the SDK's
//! signed, aws-chunked uploads land intact, connections are kept alive),
//! every fault kind is observed by the repo's own `S3Store`, a lost response
//! really leaves the object on the server, rules change at runtime, and a
//! seed makes the fault pattern reproducible. Chunked framing both ways is
//! checked against a scripted upstream.

mod common_faults;
mod common_s3;

use bytes::Bytes;
use common_faults::{Fault, FaultKind, FaultProxy, Op, Rule};
use common_s3::MotoServer;
use kafscale_logworker::metrics::{RetryMetrics, S3Metrics};
use kafscale_logworker::objstore::retry::{RetryPolicy, RetryingStore};
use kafscale_logworker::objstore::s3::S3Store;
use kafscale_logworker::objstore::{ObjectError, ObjectStore};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUCKET: &str = "proxied";

fn metrics() -> S3Metrics {
    S3Metrics::new(&prometheus::Registry::new()).expect("register S3 metrics")
}

/// moto with a bucket, a store talking to it directly, and one through a
/// fresh proxy (attempt timeout `attempt`).
async fn setup(seed: u64, attempt: Duration) -> (MotoServer, S3Store, FaultProxy, S3Store) {
    let moto = MotoServer::start();
    let direct = moto.create_bucket(BUCKET, metrics()).await;
    let proxy = FaultProxy::start_to(&moto.endpoint, seed);
    let mut cfg = moto.config(BUCKET);
    cfg.endpoint = Some(proxy.endpoint());
    cfg.attempt_timeout = attempt;
    let proxied = moto.connect(cfg, metrics()).await;
    (moto, direct, proxy, proxied)
}

fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect::<Vec<u8>>()
        .into()
}

fn assert_transient(r: Result<impl std::fmt::Debug, ObjectError>, needle: &str, what: &str) {
    match r {
        Err(ObjectError::Transient { reason, .. }) => assert!(
            needle.is_empty() || reason.contains(needle),
            "{what}: transient error should mention {needle:?}, got {reason}"
        ),
        other => panic!("{what}: expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn forwards_every_operation_faithfully_over_kept_alive_connections() {
    let (_moto, direct, proxy, s) = setup(1, Duration::from_secs(30)).await;
    let big = pattern(3 * 1024 * 1024 + 5);
    s.put_if_absent("ns/wal/w0/1/00000000000000000001", big.clone())
        .await
        .expect("PUT through the proxy");
    assert_eq!(
        direct
            .get("ns/wal/w0/1/00000000000000000001")
            .await
            .expect("read back directly"),
        big,
        "the object on the server must hold exactly the bytes sent"
    );
    match s
        .put_if_absent("ns/wal/w0/1/00000000000000000001", Bytes::from_static(b"x"))
        .await
    {
        Err(ObjectError::AlreadyExists(_)) => {}
        other => panic!("the conditional create must reach the server: {other:?}"),
    }
    for i in 0..20u32 {
        s.put_if_absent(&format!("ns/small/{i:04}"), Bytes::from(i.to_string()))
            .await
            .expect("small PUT");
    }
    assert_eq!(s.get("ns/small/0007").await.expect("GET"), "7".as_bytes());
    assert_eq!(
        s.get_range("ns/wal/w0/1/00000000000000000001", 1000..5000)
            .await
            .expect("ranged GET"),
        big.slice(1000..5000)
    );
    assert_eq!(s.list("ns/small/").await.expect("LIST").len(), 20);
    s.client()
        .head_object()
        .bucket(BUCKET)
        .key("ns/small/0001")
        .send()
        .await
        .expect("HEAD");
    s.delete("ns/small/0001").await.expect("DELETE");
    assert!(matches!(
        direct.get("ns/small/0001").await,
        Err(ObjectError::NotFound(_))
    ));
    assert!(matches!(
        s.get("ns/small/0001").await,
        Err(ObjectError::NotFound(_))
    ));

    let st = proxy.stats();
    eprintln!("{st}");
    assert_eq!(st.requests(Op::Put), 22);
    assert_eq!(st.conditional_puts, 22);
    assert_eq!(st.requests(Op::Get), 2);
    assert_eq!(st.requests(Op::GetRange), 1);
    assert_eq!(st.requests(Op::List), 1);
    assert_eq!(st.requests(Op::Head), 1);
    assert_eq!(st.requests(Op::Delete), 1);
    assert_eq!(st.total_faults(), 0);
    assert_eq!(st.upstream_statuses.get(&(Op::Put, 412)), Some(&1));
    assert_eq!(st.upstream_statuses.get(&(Op::Get, 404)), Some(&1));
    assert!(
        st.connections < st.total_requests() / 2,
        "the client's connections must be kept alive ({} connections for {} requests)",
        st.connections,
        st.total_requests()
    );
}

/// A held small ranged read (a footer, a seal) fails after the store's
/// small-read limit, not after the 30 s attempt timeout: a partition open
/// retries it on a fresh connection instead of waiting (long nemesis).
#[tokio::test]
async fn a_held_small_ranged_read_gives_up_long_before_the_attempt_timeout() {
    let (_moto, direct, proxy, s) = setup(5, Duration::from_secs(30)).await;
    let key = "ns/wal/w0/1/00000000000000000001";
    direct
        .put_if_absent(key, pattern(4096))
        .await
        .expect("created directly");
    proxy.set(Op::GetRange, vec![Rule::new(Fault::Timeout, 1.0)]);
    let started = Instant::now();
    assert_transient(s.get_range(key, 0..64).await, "timed out", "held read");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(15),
        "a held small read ends by the 5 s small-read limit, took {took:?}"
    );
    proxy.clear_all();
    assert_eq!(
        s.get_range(key, 0..64).await.expect("read once released"),
        pattern(4096).slice(0..64)
    );
}

#[tokio::test]
async fn injected_errors_resets_and_timeouts_are_seen_by_the_client() {
    let (_moto, direct, proxy, s) = setup(2, Duration::from_millis(1500)).await;
    let key = "ns/wal/w0/1/00000000000000000001";
    let body = Bytes::from_static(b"wal object");

    for (fault, needle) in [
        (Fault::InternalError, "InternalError"),
        (Fault::SlowDown, "SlowDown"),
        (Fault::Reset, ""),
    ] {
        proxy.set(Op::Put, vec![Rule::new(fault, 1.0)]);
        assert_transient(
            s.put_if_absent(key, body.clone()).await,
            needle,
            &format!("{fault:?}"),
        );
        assert!(
            matches!(direct.get(key).await, Err(ObjectError::NotFound(_))),
            "{fault:?} must not reach the server"
        );
    }

    proxy.set(Op::Put, vec![Rule::new(Fault::Timeout, 1.0)]);
    let started = Instant::now();
    assert_transient(s.put_if_absent(key, body.clone()).await, "", "timeout");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "a held request ends by the client's attempt timeout, took {:?}",
        started.elapsed()
    );

    proxy.set(
        Op::Put,
        vec![Rule::new(Fault::Slow(Duration::from_millis(600)), 1.0)],
    );
    let started = Instant::now();
    s.put_if_absent(key, body.clone())
        .await
        .expect("a slow PUT still succeeds");
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(direct.get(key).await.expect("slow PUT landed"), body);

    // Rules apply per operation: GETs fail, PUTs pass.
    proxy.clear(Op::Put);
    proxy.set(Op::Get, vec![Rule::new(Fault::InternalError, 1.0)]);
    assert_transient(s.get(key).await, "InternalError", "GET");
    assert_eq!(s.get_range(key, 0..3).await.expect("ranged GET"), "wal");
    proxy.set(Op::GetRange, vec![Rule::new(Fault::SlowDown, 1.0)]);
    assert_transient(s.get_range(key, 0..3).await, "SlowDown", "ranged GET");
    proxy.set(Op::List, vec![Rule::new(Fault::Reset, 1.0)]);
    assert_transient(s.list("ns/").await, "", "LIST");
    proxy.set(Op::Delete, vec![Rule::new(Fault::InternalError, 1.0)]);
    assert_transient(s.delete(key).await, "", "DELETE");
    proxy.set(Op::Head, vec![Rule::new(Fault::SlowDown, 1.0)]);
    let head = s
        .client()
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await;
    assert!(head.is_err(), "HEAD must fail: {head:?}");

    proxy.clear_all();
    assert_eq!(s.get(key).await.expect("GET after clearing"), body);
    let st = proxy.stats();
    eprintln!("{st}");
    for (op, kind) in [
        (Op::Put, FaultKind::InternalError),
        (Op::Put, FaultKind::SlowDown),
        (Op::Put, FaultKind::Reset),
        (Op::Put, FaultKind::Timeout),
        (Op::Put, FaultKind::Slow),
        (Op::Get, FaultKind::InternalError),
        (Op::GetRange, FaultKind::SlowDown),
        (Op::List, FaultKind::Reset),
        (Op::Delete, FaultKind::InternalError),
        (Op::Head, FaultKind::SlowDown),
    ] {
        assert_eq!(st.faults(op, kind), 1, "{op} {kind}");
    }
    assert_eq!(st.total_faults(), 10);
}

#[tokio::test]
async fn lost_response_leaves_the_object_on_the_server() {
    let (_moto, direct, proxy, s) = setup(3, Duration::from_secs(30)).await;
    let key = "ns/wal/w0/1/00000000000000000007";
    let body = pattern(200_000);
    proxy.set(
        Op::Put,
        vec![Rule::new(Fault::LostResponse, 1.0).at_most(1)],
    );
    assert_transient(
        s.put_if_absent(key, body.clone()).await,
        "",
        "PUT whose response is lost",
    );
    assert_eq!(
        direct.get(key).await.expect("the PUT landed"),
        body,
        "the server holds the object although the client saw a failure"
    );
    let st = proxy.stats();
    assert_eq!(st.faults(Op::Put, FaultKind::LostResponse), 1);
    assert_eq!(st.lost.len(), 1);
    assert_eq!(st.lost[0].status, 200);
    assert!(st.lost[0].target.contains(key), "{:?}", st.lost[0]);

    // The retrying store resolves a lost conditional create by reading back.
    let retry_metrics = RetryMetrics::new(&prometheus::Registry::new()).expect("register");
    let retrying = RetryingStore::new(
        Arc::new(s.clone()),
        RetryPolicy::default(),
        retry_metrics.clone(),
    );
    let key2 = "ns/wal/w0/1/00000000000000000008";
    proxy.set(
        Op::Put,
        vec![Rule::new(Fault::LostResponse, 1.0).at_most(1)],
    );
    retrying
        .put_if_absent(key2, Bytes::from_static(b"second"))
        .await
        .expect("a lost response is resolved by reading the object back");
    assert_eq!(direct.get(key2).await.expect("landed"), "second".as_bytes());
    let st = proxy.stats();
    assert_eq!(st.faults(Op::Put, FaultKind::LostResponse), 2);
    assert_eq!(st.upstream_statuses.get(&(Op::Put, 412)), Some(&1));
    // The lost attempt is a failed PUT attempt and a retry: both counted,
    // although the call as a whole succeeded.
    assert_eq!(
        retry_metrics.put_errors.get(),
        1,
        "kafscale_wal_put_errors_total"
    );
    assert_eq!(
        retry_metrics.retries.with_label_values(&["put"]).get(),
        1,
        "kafscale_object_store_retries_total{{op=\"put\"}}"
    );

    // A delayed response still arrives.
    proxy.set(
        Op::Put,
        vec![Rule::new(
            Fault::DelayedResponse(Duration::from_millis(500)),
            1.0,
        )],
    );
    let started = Instant::now();
    s.put_if_absent("ns/wal/w0/1/00000000000000000009", Bytes::from_static(b"d"))
        .await
        .expect("delayed response");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn target_filters_limits_and_seeds_decide_which_requests_fail() {
    let moto = MotoServer::start();
    let direct = moto.create_bucket(BUCKET, metrics()).await;
    direct
        .put_if_absent("ns/wal/x", Bytes::from_static(b"x"))
        .await
        .expect("seed object");
    direct
        .put_if_absent("ns/_probe/y", Bytes::from_static(b"y"))
        .await
        .expect("seed object");

    /// Outcome of 200 sequential GETs through a proxy seeded with `seed`.
    async fn pattern_of(moto: &MotoServer, seed: u64) -> Vec<bool> {
        let proxy = FaultProxy::start_to(&moto.endpoint, seed);
        let mut cfg = moto.config(BUCKET);
        cfg.endpoint = Some(proxy.endpoint());
        let s = moto.connect(cfg, metrics()).await;
        proxy.set(
            Op::Get,
            vec![Rule::new(Fault::InternalError, 0.3).targets("/wal/")],
        );
        let mut out = Vec::new();
        for _ in 0..200 {
            out.push(s.get("ns/wal/x").await.is_ok());
            // Never faulted: the target does not match.
            s.get("ns/_probe/y").await.expect("unfiltered key");
        }
        assert_eq!(
            proxy.stats().faults(Op::Get, FaultKind::InternalError),
            out.iter().filter(|ok| !**ok).count() as u64
        );
        out
    }
    let a = pattern_of(&moto, 42).await;
    let b = pattern_of(&moto, 42).await;
    let c = pattern_of(&moto, 43).await;
    let failed = a.iter().filter(|ok| !**ok).count();
    assert!(
        (30..=90).contains(&failed),
        "rate 0.3 of 200 requests failed {failed}"
    );
    assert_eq!(a, b, "the same seed must give the same faults");
    assert_ne!(a, c, "another seed gives other faults");

    // `at_most` bounds a rule.
    let proxy = FaultProxy::start_to(&moto.endpoint, 7);
    let mut cfg = moto.config(BUCKET);
    cfg.endpoint = Some(proxy.endpoint());
    let s = moto.connect(cfg, metrics()).await;
    proxy.set(Op::Get, vec![Rule::new(Fault::SlowDown, 1.0).at_most(3)]);
    let oks = {
        let mut n = 0;
        for _ in 0..10 {
            if s.get("ns/wal/x").await.is_ok() {
                n += 1;
            }
        }
        n
    };
    assert_eq!(oks, 7);
    assert_eq!(proxy.stats().faults(Op::Get, FaultKind::SlowDown), 3);
}

/// Raw bytes of a whole HTTP request or response head + body, read until
/// `complete` says so.
async fn read_until(s: &mut tokio::net::TcpStream, complete: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !complete(&buf) {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("read within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "peer closed early; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

#[tokio::test]
async fn chunked_requests_and_responses_are_forwarded_byte_for_byte() {
    // A scripted upstream: records the request bytes it got, answers with a
    // chunked response with a trailer.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let up_addr = upstream.local_addr().expect("addr");
    let request = b"PUT /b/ns/k HTTP/1.1\r\nHost: proxy\r\nX-Amz-Date: 20260101T000000Z\r\n\
Authorization: AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host;x-amz-date, Signature=abc\r\n\
Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
    let response: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: \"e\"\r\n\r\n\
3\r\nabc\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n";
    let server = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..2 {
            let (mut c, _) = upstream.accept().await.expect("accept");
            let bytes = read_until(&mut c, |b| b.ends_with(b"x-trailer: t\r\n\r\n")).await;
            c.write_all(response).await.expect("answer");
            got.push(bytes);
        }
        got
    });
    let proxy = FaultProxy::start_to(&format!("http://{up_addr}"), 9);
    let mut client = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect proxy");
    // Two requests on one kept-alive client connection.
    for _ in 0..2 {
        client.write_all(request).await.expect("send");
        let answer = read_until(&mut client, |b| b.ends_with(b"AAAAAA==\r\n\r\n")).await;
        assert_eq!(answer, response, "the response is relayed verbatim");
    }
    let got = server.await.expect("upstream task");
    for g in got {
        assert_eq!(g, request, "the request is forwarded verbatim");
    }
    let st = proxy.stats();
    assert_eq!(st.connections, 1);
    assert_eq!(st.requests(Op::Put), 2);
    assert_eq!(st.conditional_puts, 0);
}
