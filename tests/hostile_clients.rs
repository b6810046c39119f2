//! Hostile clients against `kafscale dev`: memory stays within the
//! gateway's byte budget however many connections declare giant frames and
//! stall or pipeline huge fetches without reading the answers; connections
//! beyond the per-address limit are refused, a frame that stalls past the
//! read timeout, a response not read within the write timeout and an idle
//! connection lose their connection; thousands of idle connections cost
//! little; TLS handshakes that never finish (slowloris) are closed by the
//! auth timeout and garbage instead of a ClientHello at once; ordinary
//! clients keep producing and consuming throughout.
//!
//! Before the budgets, 40 connections declaring 100 MB frames and sending
//! 25 MB of each grew the server from 15 MB to 1,015 MB of RSS.

mod common;

use common::{
    consume_all, consumer, create_topic, encode_request, producer, unique_name, watermarks,
    DevOptions, DevServer, RawConn, TestPki,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: u64 = 1 << 20;

/// Resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// One record produced and the whole topic read back, through librdkafka.
async fn produce_and_consume(server: &DevServer, topic: &str, n: usize) {
    let p = producer(&server.bootstrap(), &[]);
    let value = format!("ordinary-{n}");
    p.send(
        FutureRecord::to(topic)
            .partition(0)
            .key("k")
            .payload(&value),
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|(e, _)| panic!("an ordinary produce failed during the attack: {e}"));
    let (b, t) = (server.bootstrap(), topic.to_string());
    let (highs, _) =
        tokio::task::spawn_blocking(move || consume_all(&b, &t, 1, Duration::from_secs(30)))
            .await
            .expect("consumer thread");
    assert_eq!(highs[&0], n as i64 + 1, "records of the ordinary client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_giant_frames_stay_within_the_memory_budget() {
    const BUDGET: u64 = 256 << 20;
    let mut server =
        DevServer::start(DevOptions::default().env("KAFSCALE_MAX_GATEWAY_BYTES", BUDGET)).await;
    let topic = unique_name("hostile");
    create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    produce_and_consume(&server, &topic, 0).await;
    let pid = server.pid().expect("server pid");
    let before = rss(pid);

    // 40 connections each declare a 100 MB request, send 25 MB of it (as far
    // as the server reads), and stall.
    let declared: u32 = 100 << 20;
    let sent = 25usize << 20;
    let chunk = vec![0x5au8; 1 << 20];
    let mut attackers = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(server.kafka_addr())
            .await
            .expect("connect");
        let chunk = chunk.clone();
        attackers.push(tokio::spawn(async move {
            let _ = s.write_all(&declared.to_be_bytes()).await;
            let mut written = 0;
            while written < sent {
                match tokio::time::timeout(Duration::from_secs(5), s.write_all(&chunk)).await {
                    Ok(Ok(())) => written += chunk.len(),
                    _ => break,
                }
            }
            // Hold the connection open, stalled.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        }));
    }
    // Let every attacker push what it can.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = rss(pid);
    eprintln!(
        "[hostile] RSS {} MiB before, {} MiB with 40 stalled 100 MB frames (budget {} MiB)",
        before >> 20,
        during >> 20,
        BUDGET >> 20
    );
    server.assert_running();
    // Ordinary clients still get through (the budget has room for them).
    produce_and_consume(&server, &topic, 1).await;
    assert!(
        during.saturating_sub(before) < BUDGET + (64 << 20),
        "RSS grew by {} MiB with a budget of {} MiB",
        during.saturating_sub(before) >> 20,
        BUDGET >> 20
    );
    for a in attackers {
        a.abort();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    produce_and_consume(&server, &topic, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_limit_are_refused() {
    let mut server =
        DevServer::start(DevOptions::default().env("KAFSCALE_MAX_CONNECTIONS_PER_IP", 8)).await;
    let mut open = Vec::new();
    for _ in 0..8 {
        let mut c = RawConn::connect(server.kafka_addr()).await;
        c.api_versions().await;
        open.push(c);
    }
    let mut refused = RawConn::connect(server.kafka_addr()).await;
    refused
        .expect_closed("the 9th connection from one address")
        .await;
    // A slot frees up when a connection closes.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut again = RawConn::connect(server.kafka_addr()).await;
    again.api_versions().await;
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_stalled_past_the_read_timeout_loses_its_connection() {
    let mut server =
        DevServer::start(DevOptions::default().env("KAFSCALE_FRAME_READ_TIMEOUT_MS", 1000)).await;
    let mut c = RawConn::connect(server.kafka_addr()).await;
    c.write_raw(&1000u32.to_be_bytes())
        .await
        .expect("write length");
    c.write_raw(&[0u8; 10]).await.expect("write a little");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.expect_closed("a frame stalled past the read timeout")
        .await;
    let mut ok = RawConn::connect(server.kafka_addr()).await;
    ok.api_versions().await;
    server.assert_running();
}

/// Fills partition 0 of `topic` with `n` records of `size` bytes.
async fn fill(server: &DevServer, topic: &str, n: usize, size: usize) {
    let p = producer(&server.bootstrap(), &[("linger.ms", "20")]);
    let value = vec![0x42u8; size];
    let sends: Vec<_> = (0..n)
        .map(|_| {
            p.send(
                FutureRecord::<(), _>::to(topic)
                    .partition(0)
                    .payload(&value),
                Duration::from_secs(60),
            )
        })
        .collect();
    for s in futures::future::join_all(sends).await {
        s.unwrap_or_else(|(e, _)| panic!("fill {topic}: {e}"));
    }
}

/// A Fetch v12 of partition 0 from offset 0, asking for `max_bytes`.
fn greedy_fetch(topic: &str, correlation_id: i32, max_bytes: i32) -> Vec<u8> {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(max_bytes)])]);
    let body = encode_request(correlation_id, 12, &request);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Slow readers: 16 connections each pipeline 64 fetches asking for 1 GB
/// of a 24 MiB partition and never read an answer. Unbounded, that is 24 GiB
/// of responses; the budgets hold it to the gateway's budget (twice over in
/// `kafscale dev`, where the in-process worker's copy of an answer being
/// sent to the gateway counts too), ordinary clients keep working, and the
/// write timeout disconnects the readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_readers_of_huge_fetches_stay_within_the_memory_budget() {
    const BUDGET: u64 = 64 * MIB;
    let mut server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_MAX_FRAME_BYTES", 8 * MIB)
            .env("KAFSCALE_MAX_CONNECTION_BYTES", 16 * MIB)
            .env("KAFSCALE_MAX_GATEWAY_BYTES", BUDGET)
            .env("KAFSCALE_RESPONSE_WRITE_TIMEOUT_MS", 8000),
    )
    .await;
    let topic = unique_name("slow-readers");
    create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    fill(&server, &topic, 3072, 8 << 10).await;
    let ordinary = unique_name("ordinary");
    create_topic(&server.bootstrap(), &ordinary, 1, &[]).await;
    produce_and_consume(&server, &ordinary, 0).await;
    let pid = server.pid().expect("server pid");
    let before = rss(pid);

    let mut readers = Vec::new();
    for _ in 0..16 {
        // Keep the kernel's buffers small, so the server holds the answers.
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        let _ = sock.set_recv_buffer_size(4096);
        let mut s = sock.connect(server.kafka_addr()).await.expect("connect");
        let mut pipelined = Vec::new();
        for i in 0..64 {
            pipelined.extend(greedy_fetch(&topic, i + 1, 1 << 30));
        }
        s.write_all(&pipelined).await.expect("pipeline fetches");
        readers.push(s);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = rss(pid);
    eprintln!(
        "[hostile] RSS {} MiB before, {} MiB with 16 slow readers of 64 fetches each (budget {} MiB)",
        before / MIB,
        during / MIB,
        BUDGET / MIB
    );
    server.assert_running();
    produce_and_consume(&server, &ordinary, 1).await;
    assert!(
        during.saturating_sub(before) < 2 * BUDGET + 64 * MIB,
        "RSS grew by {} MiB with a budget of {} MiB",
        during.saturating_sub(before) / MIB,
        BUDGET / MIB
    );
    // Past the write timeout the server has given up on the slow readers:
    // draining one now ends in EOF rather than 64 answers.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut drained = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the slow reader was never disconnected"
        );
        match tokio::time::timeout(Duration::from_secs(10), readers[0].read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => drained += n,
            Err(_) => panic!("the slow reader was not disconnected (read {drained} bytes)"),
        }
    }
    assert!(
        (drained as u64) < 64 * 24 * MIB,
        "a disconnected slow reader still got every answer ({drained} bytes)"
    );
    drop(readers);
    produce_and_consume(&server, &ordinary, 2).await;
}

/// 2,000 idle connections (each has asked for ApiVersions once) cost a few
/// KiB each, ordinary clients are unaffected, and connections idle past
/// `KAFSCALE_CONNECTIONS_MAX_IDLE_MS` are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_cost_little_and_are_closed_when_idle() {
    const CONNECTIONS: usize = 2000;
    // This process holds the client ends (the server raises its own limit).
    let limit = kafscale_gateway::rlimit::raise_open_file_limit().unwrap_or(0);
    assert!(
        limit as usize > CONNECTIONS + 200,
        "open-file limit {limit} is too low for {CONNECTIONS} connections"
    );
    let mut server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_MAX_CONNECTIONS_PER_IP", CONNECTIONS + 10)
            .env("KAFSCALE_CONNECTIONS_MAX_IDLE_MS", 6000),
    )
    .await;
    let topic = unique_name("idle");
    create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    produce_and_consume(&server, &topic, 0).await;
    let pid = server.pid().expect("server pid");
    let before = rss(pid);
    let started = Instant::now();
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut c = RawConn::connect(server.kafka_addr()).await;
        c.api_versions().await;
        idle.push(c);
    }
    let opened_in = started.elapsed();
    let during = rss(pid);
    let per_connection = during.saturating_sub(before) / CONNECTIONS as u64;
    eprintln!(
        "[hostile] {CONNECTIONS} idle connections opened in {opened_in:?}: RSS {} MiB before, {} MiB with them ({} KiB each)",
        before / MIB,
        during / MIB,
        per_connection >> 10
    );
    produce_and_consume(&server, &topic, 1).await;
    assert!(
        per_connection < 64 << 10,
        "an idle connection costs {} KiB",
        per_connection >> 10
    );
    // Idle past the limit: closed by the server.
    tokio::time::sleep(Duration::from_secs(7)).await;
    if opened_in < Duration::from_secs(5) {
        for c in idle.iter_mut().take(10) {
            c.expect_closed("an idle connection").await;
        }
    }
    let last = idle.last_mut().expect("connections");
    tokio::time::sleep(Duration::from_secs(7)).await;
    last.expect_closed("the last idle connection").await;
    server.assert_running();
    produce_and_consume(&server, &topic, 2).await;
}

/// The first bytes of a TLS ClientHello: a handshake record of 512 bytes,
/// of which only this much ever arrives.
const PARTIAL_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, // record: handshake, TLS 1.0, 512 bytes
    0x01, 0x00, 0x01, 0xfc, // ClientHello, 508 bytes
    0x03, 0x03, 0x5a, 0x5a, 0x5a, 0x5a, // TLS 1.2, the start of the random
];

/// Whether `s` is closed by the server within `wait` (end of stream or a
/// reset; any alert it sends first is read and ignored).
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// One record produced over SSL and the partition read back (its high
/// watermark `n + 1`), through librdkafka.
async fn produce_and_consume_tls(bootstrap: &str, ca: &str, topic: &str, n: i64) {
    let ssl = [("security.protocol", "ssl"), ("ssl.ca.location", ca)];
    let p = producer(bootstrap, &ssl);
    p.send(
        FutureRecord::to(topic).partition(0).key("k").payload("v"),
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|(e, _)| panic!("an ordinary TLS produce failed during the attack: {e}"));
    let (b, t, ca) = (bootstrap.to_string(), topic.to_string(), ca.to_string());
    tokio::task::spawn_blocking(move || {
        let c = consumer(
            &b,
            &[("security.protocol", "ssl"), ("ssl.ca.location", &ca)],
        );
        let (_, high) = watermarks(&c, &t, 0);
        assert_eq!(high, n + 1, "records of the ordinary TLS client");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t, 0, Offset::Beginning)
            .expect("partition");
        c.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut read = 0;
        while read < high {
            assert!(Instant::now() < deadline, "read {read} of {high} records");
            if let Some(m) = c.poll(Duration::from_millis(500)) {
                let m = m.expect("consume over TLS");
                assert_eq!(m.offset(), read, "offsets read in order");
                read += 1;
            }
        }
    })
    .await
    .expect("consumer thread");
}

/// Slowloris on a TLS listener: hundreds of connections that send half a
/// ClientHello, or nothing, and stall are closed once
/// `KAFSCALE_AUTH_TIMEOUT_MS` has passed (not before), cost bounded memory,
/// and leave an ordinary TLS client unaffected; garbage instead of a
/// ClientHello is closed at once. The dev server also runs its internal
/// gRPC and its HTTP endpoint over TLS, so the ordinary client's records
/// cross the TLS gRPC hop and readiness is probed over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_that_never_finish_are_closed_by_the_auth_timeout() {
    const STALLED: usize = 400;
    const AUTH_TIMEOUT_MS: u64 = 4000;
    let pki = TestPki::new();
    let ca = pki.ca("ca", "test CA");
    pki.issue("server", "localhost", &ca);
    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_SECURITY_PROTOCOL", "SSL")
            .env("KAFSCALE_TLS_CERT_FILE", pki.arg("server.pem"))
            .env("KAFSCALE_TLS_KEY_FILE", pki.arg("server.key"))
            .env("KAFSCALE_AUTH_TIMEOUT_MS", AUTH_TIMEOUT_MS)
            .internal_and_http_tls(&pki, "server", "server"),
    )
    .await;
    let (b, ca_file) = (server.bootstrap(), pki.arg("ca.pem"));
    let topic = unique_name("slowloris");
    produce_and_consume_tls(&b, &ca_file, &topic, 0).await;
    let pid = server.pid().expect("server pid");
    let before = rss(pid);

    let opened = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let mut s = TcpStream::connect(server.kafka_addr())
            .await
            .expect("connect");
        if i % 2 == 0 {
            s.write_all(PARTIAL_CLIENT_HELLO).await.expect("send");
        }
        stalled.push(s);
    }
    let opened_in = opened.elapsed();
    // Garbage instead of a ClientHello: closed at once, long before the
    // auth timeout.
    let mut junk = TcpStream::connect(server.kafka_addr())
        .await
        .expect("connect");
    junk.write_all(&[0x47; 600]).await.expect("send");
    assert!(
        closed_within(&mut junk, Duration::from_secs(2)).await,
        "a connection that sent garbage instead of a ClientHello is still open"
    );
    // Meanwhile an ordinary client is served.
    produce_and_consume_tls(&b, &ca_file, &topic, 1).await;
    let during = rss(pid);
    eprintln!(
        "[hostile] {STALLED} stalled TLS handshakes opened in {opened_in:?}: RSS {} MiB before, {} MiB with them",
        before / MIB,
        during / MIB
    );
    assert!(
        during.saturating_sub(before) < 200 * MIB,
        "RSS grew by {} MiB with {STALLED} stalled handshakes",
        during.saturating_sub(before) / MIB
    );
    // Not closed before the timeout (when the test got here in time)...
    let waited = opened.elapsed();
    if waited + Duration::from_millis(1500) < Duration::from_millis(AUTH_TIMEOUT_MS) {
        let last = stalled.last_mut().expect("connections");
        assert!(
            !closed_within(last, Duration::from_millis(300)).await,
            "a stalled handshake was closed before the auth timeout"
        );
    }
    // ...and every one closed after it.
    let deadline = opened + Duration::from_millis(AUTH_TIMEOUT_MS) + Duration::from_secs(5);
    let mut open = 0;
    for s in &mut stalled {
        let left = deadline.saturating_duration_since(Instant::now());
        if !closed_within(s, left.max(Duration::from_millis(100))).await {
            open += 1;
        }
    }
    assert_eq!(
        open,
        0,
        "stalled handshakes still open {:?} after the first was opened",
        opened.elapsed()
    );
    let failures = common::metric_value(
        &server.metrics().await,
        "kafscale_gateway_authentications_total",
        r#"mechanism="TLS",outcome="failure""#,
    );
    assert!(
        failures >= (STALLED + 1) as f64,
        "TLS failures counted: {failures}"
    );
    produce_and_consume_tls(&b, &ca_file, &topic, 2).await;
}
