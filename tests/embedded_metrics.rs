//! The gateway's Prometheus metrics move by exactly what the traffic was:
//! bytes produced and fetched per topic equal the record batches sent and
//! read back, requests are counted per API and version, a refused request
//! and a connection are counted; consumer lag is high watermark minus the
//! committed offset; the compaction backlog is the bytes not yet in segments.

mod common;

use common::*;
use kafka_protocol::messages::ApiKey;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_counters_move_by_the_traffic() {
    let server = DevServer::start(DevOptions::default()).await;
    let topic = unique_name("metered");
    create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    let before = server.metrics().await;
    let label = format!("topic=\"{topic}\"");
    assert_eq!(
        metric_value(&before, "kafscale_gateway_produced_bytes_total", &label),
        0.0
    );

    // Three produces of known batches through one raw connection.
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    let version = conn.negotiate(ApiKey::Produce, 9).await;
    let mut sent = 0usize;
    for i in 0..3u8 {
        let batch = encode_batch(&[(
            None,
            Some(bytes::Bytes::from(vec![i; 100 + usize::from(i)])),
        )]);
        sent += batch.len();
        let resp = conn
            .request(version, &produce_request(&topic, 0, batch))
            .await;
        assert_eq!(only_partition(&resp).error_code, 0, "{resp:?}");
    }
    // Read them back.
    let records = raw_fetch_partition(server.kafka_addr(), &topic, 0, 3).await;
    assert_eq!(records.len(), 3);

    let after = server.metrics().await;
    assert_eq!(
        metric_value(&after, "kafscale_gateway_produced_bytes_total", &label),
        sent as f64,
        "bytes in differ from what was produced"
    );
    // The stored batches are the sent ones (offsets patched in place), so a
    // reader of the whole partition fetched at least as much.
    assert!(metric_value(&after, "kafscale_gateway_fetched_bytes_total", &label) >= sent as f64);
    let produces = metric_value(
        &after,
        "kafscale_gateway_requests_total",
        &format!("api=\"Produce\",version=\"{version}\""),
    ) - metric_value(
        &before,
        "kafscale_gateway_requests_total",
        &format!("api=\"Produce\",version=\"{version}\""),
    );
    assert_eq!(produces, 3.0);
    assert!(
        metric_value(
            &after,
            "kafscale_gateway_request_seconds_count",
            "api=\"Produce\""
        ) >= 3.0
    );
    assert!(metric_value(&after, "kafscale_gateway_connections", "") >= 1.0);
    assert!(
        metric_value(
            &after,
            "kafscale_gateway_connections_total",
            "outcome=\"accepted\""
        ) >= 2.0
    );
    // The worker counted the same bytes.
    assert_eq!(
        metric_value(&after, "kafscale_produced_bytes_total", "")
            - metric_value(&before, "kafscale_produced_bytes_total", ""),
        sent as f64
    );

    // A request of an unknown API closes its connection and is counted.
    let refused_before = metric_value(
        &after,
        "kafscale_gateway_refused_requests_total",
        "reason=\"unknown_api\"",
    );
    let mut bad = RawConn::connect(server.kafka_addr()).await;
    bad.send_frame(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .await;
    bad.expect_closed("an unknown API key").await;
    let mut refused = 0.0;
    for _ in 0..50 {
        refused = metric_value(
            &server.metrics().await,
            "kafscale_gateway_refused_requests_total",
            "reason=\"unknown_api\"",
        );
        if refused > refused_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused, refused_before + 1.0);
}

/// Ten small records to partition 0 of `topic`, each acknowledged.
async fn produce_ten(server: &DevServer, topic: &str) {
    let p = producer(&server.bootstrap(), &[]);
    for i in 0..10 {
        p.send(
            rdkafka::producer::FutureRecord::to(topic)
                .partition(0)
                .key("k")
                .payload(&format!("v{i}")),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_is_what_was_produced_minus_what_was_committed() {
    let server = DevServer::start(DevOptions::default()).await;
    let topic = unique_name("lag");
    create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    produce_ten(&server, &topic).await;
    let group = unique_name("lagging");
    let (b, g, t) = (server.bootstrap(), group.clone(), topic.clone());
    tokio::task::spawn_blocking(move || commit_offset(&b, &g, &t, 4))
        .await
        .expect("commit");
    let scrape = server.metrics().await;
    let labels = format!("group=\"{group}\",partition=\"0\",topic=\"{topic}\"");
    assert_eq!(
        metric_value(&scrape, "kafscale_consumer_group_committed_offset", &labels),
        4.0,
        "{scrape}"
    );
    assert_eq!(
        metric_value(
            &scrape,
            "kafscale_partition_high_watermark",
            &format!("partition=\"0\",topic=\"{topic}\"")
        ),
        10.0
    );
    assert_eq!(
        metric_value(&scrape, "kafscale_consumer_group_lag", &labels),
        6.0,
        "lag is the 10 produced minus the 4 committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compaction_backlog_is_what_waits_in_wal_objects_until_a_segment_is_cut() {
    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_COMPACTION_INTERVAL_MS", 300)).await;
    let topic = unique_name("backlog");
    // Cut by age 3 s after the first record: time enough to see the backlog.
    create_topic(&server.bootstrap(), &topic, 1, &[("segment.ms", "3000")]).await;
    produce_ten(&server, &topic).await;
    let series =
        format!("kafscale_partition_uncompacted_bytes{{partition=\"0\",topic=\"{topic}\"}}");
    let waiting = metric_value(&server.metrics().await, &series, "");
    assert!(
        waiting > 100.0,
        "10 acknowledged records wait for compaction: {waiting} bytes"
    );
    eventually(
        "the segment is cut and nothing waits",
        Duration::from_secs(30),
        async || {
            let scrape = server.metrics().await;
            scrape.lines().any(|l| l == format!("{series} 0"))
        },
    )
    .await;
}
