//! Hostile clients against `kafscale dev`: memory stays within the
//! gateway's byte budget however many connections declare giant frames and
//! stall, connections beyond the per-address limit are refused, a frame that
//! stalls past the read timeout loses its connection, and ordinary clients
//! keep producing and consuming throughout.
//!
//! Before the budgets, 40 connections declaring 100 MB frames and sending
//! 25 MB of each grew the server from 15 MB to 1,015 MB of RSS.

mod common;

use common::{consume_all, create_topic, producer, unique_name, DevOptions, DevServer, RawConn};
use rdkafka::producer::FutureRecord;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

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
