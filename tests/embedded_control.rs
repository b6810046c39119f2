//! The control API (`kafscale.control.v1`) of `kafscale dev`, through
//! `kafscale ctl`: status reports what the process holds, flush makes
//! buffered records durable, and a drain with nowhere to go is refused with
//! nothing changed. Draining under load across workers is in
//! `distributed_cluster.rs`.

mod common;

use common::{create_topic, ctl, http_get, producer, unique_name, DevOptions, DevServer};
use rdkafka::producer::FutureRecord;
use std::time::Duration;

/// The owned partition `topic`-0 in a `--json` status.
fn partition(status: &serde_json::Value, topic: &str) -> serde_json::Value {
    status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|p| p["topic"] == topic && p["partition"] == 0)
        .cloned()
        .unwrap_or_else(|| panic!("{topic}-0 not in status: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_makes_buffered_records_durable_and_status_shows_it() {
    // The WAL buffer is never flushed by the policy: only Flush (or the
    // 256 MiB size trigger) writes it.
    let server = DevServer::start(
        DevOptions::default()
            .env("KAFSCALE_WAL_FLUSH_INTERVAL_MS", 600_000)
            .env("KAFSCALE_WAL_FLUSH_MIN_INTERVAL_MS", 600_000),
    )
    .await;
    let topic = unique_name("flush");
    create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    let http = server.http_addr();

    let before = ctl(http, &["status", "--json"]).await.json();
    assert_eq!(before["role"], "dev");
    assert_eq!(before["ready"], true);
    assert_eq!(before["lease"]["state"], "none");
    assert_eq!(partition(&before, &topic)["high_watermark"], 0);

    // acks=0: sent, not waited for; the records sit in the WAL buffer.
    let p = producer(&server.bootstrap(), &[("acks", "0"), ("linger.ms", "0")]);
    for i in 0..20 {
        let v = format!("r{i}");
        p.send(
            FutureRecord::<(), _>::to(&topic).payload(&v),
            Duration::from_secs(5),
        )
        .await
        .expect("sent");
    }
    let mut buffered = serde_json::Value::Null;
    for _ in 0..100 {
        buffered = ctl(http, &["status", "--json"]).await.json();
        if buffered["wal"]["buffered_bytes"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        buffered["wal"]["buffered_bytes"].as_u64().unwrap_or(0) > 0,
        "records never reached the WAL buffer: {buffered}"
    );
    assert_eq!(
        partition(&buffered, &topic)["high_watermark"],
        0,
        "records became visible before they were durable"
    );

    let flushed = ctl(http, &["flush", "--json"]).await.json();
    assert!(flushed["durable_sequence"].as_u64().unwrap_or(0) >= 1);
    let after = ctl(http, &["status", "--json"]).await.json();
    assert_eq!(after["wal"]["buffered_bytes"], 0);
    assert_eq!(partition(&after, &topic)["high_watermark"], 20);

    // Flushing an empty buffer answers at once.
    assert!(ctl(http, &["flush"]).await.success);
    // The text form names what a human looks for.
    let text = ctl(http, &["status"]).await;
    assert!(text.success, "{}", text.stderr);
    assert!(text.stdout.contains("role:      dev"), "{}", text.stdout);
    assert!(
        text.stdout.contains(&format!("{topic}-0")),
        "{}",
        text.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_only_worker_is_refused_and_changes_nothing() {
    let server = DevServer::start(DevOptions::default()).await;
    let topic = unique_name("nodrain");
    create_topic(&server.bootstrap(), &topic, 2, &[]).await;
    let http = server.http_addr();
    let owned = |s: &serde_json::Value| s["partitions"].as_array().map_or(0, Vec::len);
    let before = ctl(http, &["status", "--json"]).await.json();

    let drain = ctl(http, &["drain"]).await;
    assert!(!drain.success, "a drain with nowhere to go succeeded");
    assert!(
        drain.stderr.contains("no other live worker"),
        "unclear refusal: {}",
        drain.stderr
    );
    let after = ctl(http, &["status", "--json"]).await.json();
    assert_eq!(after["draining"], false);
    assert_eq!(owned(&after), owned(&before));
    assert_eq!(http_get(http, "/readyz").await.expect("readyz").0, 200);
    // Still serving.
    let p = producer(&server.bootstrap(), &[]);
    p.send(
        FutureRecord::<(), _>::to(&topic).payload("x"),
        Duration::from_secs(10),
    )
    .await
    .expect("produce after a refused drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_reports_an_unreachable_process_clearly() {
    // A port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let out = ctl(addr, &["status"]).await;
    assert!(!out.success);
    assert!(
        out.stderr.contains("connecting to the control API"),
        "{}",
        out.stderr
    );
}
