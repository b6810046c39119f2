//! Hostile clients against `kafscale dev`: memory stays within the
//! gateway's byte budget however many connections declare giant frames and
//! stall or pipeline huge fetches without reading the answers; connections
//! beyond the per-address limit are refused, a frame that stalls past the
//! read timeout, a response not read within the write timeout and an idle
//! connection lose their connection; thousands of idle connections cost
//! little; ordinary clients keep producing and consuming throughout.
//!
//! Before the budgets, 40 connections declaring 100 MB frames and sending
//! 25 MB of each grew the server from 15 MB to 1,015 MB of RSS.

mod common;

use common::{
    consume_all, create_topic, encode_request, producer, unique_name, DevOptions, DevServer,
    RawConn,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use rdkafka::producer::FutureRecord;
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
