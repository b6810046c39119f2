//! Client quotas end to end (issue 12): AlterClientQuotas and
//! DescribeClientQuotas with Kafka's validation and filters; a producer and
//! a consumer (librdkafka) pushed well past their byte rates are answered
//! with throttle_time_ms > 0 and slowed to about the quota; a connection
//! creation rate closes the connections over it.
//!
//! Time is only bounded from below (N bytes at a quota of Q cannot take much
//! less than N / Q), which a slow machine cannot make fail.

mod common;

use bytes::Bytes;
use common::*;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, ProduceResponse,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use std::time::{Duration, Instant};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn entity(parts: &[(&str, Option<&str>)]) -> Vec<EntityData> {
    parts
        .iter()
        .map(|(t, n)| {
            let mut e = EntityData::default();
            e.entity_type = s(t);
            e.entity_name = n.map(s);
            e
        })
        .collect()
}

fn op(key: &str, value: Option<f64>) -> OpData {
    let mut o = OpData::default();
    o.key = s(key);
    o.value = value.unwrap_or(0.0);
    o.remove = value.is_none();
    o
}

async fn alter(
    conn: &mut RawConn,
    parts: &[(&str, Option<&str>)],
    ops: Vec<OpData>,
    validate_only: bool,
) -> AlterClientQuotasResponse {
    let mut entry = EntryData::default();
    entry.entity = entity(parts);
    entry.ops = ops;
    let mut req = AlterClientQuotasRequest::default();
    req.entries = vec![entry];
    req.validate_only = validate_only;
    conn.request(1, &req).await
}

/// Sets quotas on an entity and checks that every entry succeeded.
async fn set(conn: &mut RawConn, parts: &[(&str, Option<&str>)], ops: Vec<OpData>) {
    let resp = alter(conn, parts, ops, false).await;
    assert_eq!(resp.entries.len(), 1);
    assert_eq!(resp.entries[0].error_code, 0, "{resp:?}");
}

async fn describe(
    conn: &mut RawConn,
    filter: &[(&str, i8, Option<&str>)],
    strict: bool,
) -> DescribeClientQuotasResponse {
    let mut req = DescribeClientQuotasRequest::default();
    req.components = filter
        .iter()
        .map(|(t, m, n)| {
            let mut c = ComponentData::default();
            c.entity_type = s(t);
            c.match_type = *m;
            c._match = n.map(s);
            c
        })
        .collect();
    req.strict = strict;
    conn.request(1, &req).await
}

/// The described entities as `type=name` lists (`<default>` for defaults).
fn described(resp: &DescribeClientQuotasResponse) -> Vec<(String, Vec<(String, f64)>)> {
    assert_eq!(resp.error_code, 0, "{resp:?}");
    let mut out: Vec<_> = resp
        .entries
        .iter()
        .flatten()
        .map(|e| {
            let name = e
                .entity
                .iter()
                .map(|c| {
                    format!(
                        "{}={}",
                        c.entity_type.as_str(),
                        c.entity_name.as_deref().unwrap_or("<default>")
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            let values = e
                .values
                .iter()
                .map(|v| (v.key.to_string(), v.value))
                .collect();
            (name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

const EXACT: i8 = 0;
const DEFAULT: i8 = 1;
const SPECIFIED: i8 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_are_stored_validated_and_described_as_kafka_does() {
    let server = DevServer::start(DevOptions::default()).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;

    // Invalid entities and values are refused with INVALID_REQUEST.
    let invalid = ResponseError::InvalidRequest.code();
    for (parts, ops) in [
        (
            vec![("group", Some("g"))],
            vec![op("producer_byte_rate", Some(1e6))],
        ),
        (
            vec![("user", Some("a")), ("ip", None)],
            vec![op("producer_byte_rate", Some(1e6))],
        ),
        (
            vec![("user", Some("a"))],
            vec![op("no_such_quota", Some(1.0))],
        ),
        (
            vec![("user", Some("a"))],
            vec![op("producer_byte_rate", Some(1.5))],
        ),
        (
            vec![("user", Some("a"))],
            vec![op("producer_byte_rate", Some(-5.0))],
        ),
        (
            vec![("user", Some("a"))],
            vec![op("connection_creation_rate", Some(5.0))],
        ),
        (
            vec![("ip", Some("not-an-ip"))],
            vec![op("connection_creation_rate", Some(5.0))],
        ),
    ] {
        let resp = alter(&mut conn, &parts, ops, false).await;
        assert_eq!(resp.entries[0].error_code, invalid, "{parts:?}: {resp:?}");
        assert!(resp.entries[0].error_message.is_some());
    }
    // validate_only stores nothing.
    let resp = alter(
        &mut conn,
        &[("user", Some("alice"))],
        vec![op("producer_byte_rate", Some(1024.0))],
        true,
    )
    .await;
    assert_eq!(resp.entries[0].error_code, 0);
    assert!(described(&describe(&mut conn, &[], false).await).is_empty());

    set(
        &mut conn,
        &[("user", Some("alice"))],
        vec![
            op("producer_byte_rate", Some(1024.0)),
            op("request_percentage", Some(12.5)),
        ],
    )
    .await;
    set(
        &mut conn,
        &[("user", Some("alice")), ("client-id", None)],
        vec![op("consumer_byte_rate", Some(2048.0))],
    )
    .await;
    set(
        &mut conn,
        &[("user", None)],
        vec![op("producer_byte_rate", Some(4096.0))],
    )
    .await;
    set(
        &mut conn,
        &[("ip", Some("10.1.2.3"))],
        vec![op("connection_creation_rate", Some(7.0))],
    )
    .await;

    // Everything (an empty filter matches all).
    let all = described(&describe(&mut conn, &[], false).await);
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ip=10.1.2.3",
            "user=<default>",
            "user=alice",
            "user=alice,client-id=<default>"
        ]
    );
    let alice = &all[2].1;
    assert!(
        alice.contains(&("producer_byte_rate".into(), 1024.0)),
        "{alice:?}"
    );
    assert!(
        alice.contains(&("request_percentage".into(), 12.5)),
        "{alice:?}"
    );
    // Exact user, not strict: alice and alice + default client.
    let exact = described(&describe(&mut conn, &[("user", EXACT, Some("alice"))], false).await);
    assert_eq!(exact.len(), 2, "{exact:?}");
    // Strict: only the entity with exactly that component.
    let strict = described(&describe(&mut conn, &[("user", EXACT, Some("alice"))], true).await);
    assert_eq!(strict.len(), 1, "{strict:?}");
    // Default user.
    let default = described(&describe(&mut conn, &[("user", DEFAULT, None)], false).await);
    assert_eq!(default[0].0, "user=<default>");
    assert_eq!(default.len(), 1);
    // Specified: every entity that has the type, named or default.
    let any_user = described(&describe(&mut conn, &[("user", SPECIFIED, None)], false).await);
    assert_eq!(any_user.len(), 3, "{any_user:?}");
    // Filter errors.
    let resp = describe(
        &mut conn,
        &[("ip", SPECIFIED, None), ("user", SPECIFIED, None)],
        false,
    )
    .await;
    assert_eq!(resp.error_code, invalid);
    let resp = describe(&mut conn, &[("user", EXACT, None)], false).await;
    assert_eq!(resp.error_code, invalid);
    let resp = describe(&mut conn, &[("group", SPECIFIED, None)], false).await;
    assert_eq!(resp.error_code, ResponseError::UnsupportedVersion.code());

    // Removing the last value removes the entity.
    set(
        &mut conn,
        &[("user", Some("alice")), ("client-id", None)],
        vec![op("consumer_byte_rate", None)],
    )
    .await;
    let after = described(&describe(&mut conn, &[("user", EXACT, Some("alice"))], false).await);
    assert_eq!(after.len(), 1, "{after:?}");

    // They survive a restart (stored in the metadata store).
    let mut server = server;
    server.restart().await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    assert_eq!(described(&describe(&mut conn, &[], false).await).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_and_consumers_over_their_quota_are_throttled() {
    let server = DevServer::start(DevOptions::default()).await;
    let bootstrap = server.bootstrap();
    let topic = unique_name("quota");
    create_topic(&bootstrap, &topic, 1, &[]).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;

    // The raw connection's own produce requests: 3 × 100 KB at 100 KB/s
    // overflow the one-second burst, and the answer says how long to wait.
    const RAW_RATE: f64 = 100_000.0;
    set(
        &mut conn,
        &[("client-id", Some("kafscale-raw-test"))],
        vec![op("producer_byte_rate", Some(RAW_RATE))],
    )
    .await;
    let value = Bytes::from(vec![b'q'; 100_000]);
    let mut throttles = Vec::new();
    let started = Instant::now();
    for _ in 0..3 {
        let batch = encode_batch(&[(None, Some(value.clone()))]);
        let resp: ProduceResponse = conn.request(9, &produce_request(&topic, 0, batch)).await;
        assert_eq!(only_partition(&resp).error_code, 0, "{resp:?}");
        throttles.push(resp.throttle_time_ms);
    }
    // The first request (a little over the 100 KB burst with its headers)
    // owes almost nothing.
    assert!(
        throttles[0] < 100,
        "the first request fits the burst: {throttles:?}"
    );
    assert!(throttles[2] > 0, "throttle_time_ms: {throttles:?}");
    // The connection was muted: the third request was read only once the
    // second one's debt was paid (300 KB at 100 KB/s, 100 KB of burst).
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "three requests over quota answered in {:?}",
        started.elapsed()
    );

    // librdkafka, 2 MB at 400 KB/s (default client-id entity; the raw
    // connection keeps its own, more specific quota).
    const RATE: f64 = 400_000.0;
    set(
        &mut conn,
        &[("client-id", None)],
        vec![
            op("producer_byte_rate", Some(RATE)),
            op("consumer_byte_rate", Some(RATE)),
        ],
    )
    .await;
    let producer = producer(&bootstrap, &[("linger.ms", "5"), ("batch.size", "65536")]);
    let payload = vec![b'p'; 10_000];
    let records = 200;
    let started = Instant::now();
    let mut sends = Vec::new();
    for _ in 0..records {
        sends.push(
            producer.send_result(
                FutureRecord::<(), _>::to(&topic)
                    .partition(0)
                    .payload(&payload),
            ),
        );
    }
    for s in sends {
        s.expect("enqueue")
            .await
            .expect("delivery")
            .expect("delivered");
    }
    let produced = started.elapsed();
    let bytes = (records * payload.len()) as f64;
    // Nearly nothing beyond one second's burst passes faster than the quota.
    let floor = Duration::from_secs_f64((bytes - RATE) / RATE * 0.8);
    assert!(
        produced >= floor,
        "produced {bytes} bytes in {produced:?}, quota {RATE} B/s"
    );
    let scrape = server.metrics().await;
    assert!(
        metric_value(
            &scrape,
            "kafscale_gateway_throttled_total",
            r#"quota="producer_byte_rate""#
        ) > 0.0,
        "no producer throttle counted"
    );

    // The consumer reads it back, throttled the same way.
    let consumer = consumer(&bootstrap, &[("fetch.max.bytes", "1048576")]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let mut read = 0usize;
    let mut consumed_bytes = 0usize;
    while read < records + 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "consumed {read} records in 120 s"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m.expect("consume");
            consumed_bytes += m.payload().map_or(0, <[u8]>::len);
            read += 1;
        }
    }
    let consumed = started.elapsed();
    let floor = Duration::from_secs_f64((consumed_bytes as f64 - RATE) / RATE * 0.8);
    assert!(
        consumed >= floor,
        "consumed {consumed_bytes} bytes in {consumed:?}, quota {RATE} B/s"
    );
    let scrape = server.metrics().await;
    assert!(
        metric_value(
            &scrape,
            "kafscale_gateway_throttled_total",
            r#"quota="consumer_byte_rate""#
        ) > 0.0,
        "no consumer throttle counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_creation_rate_are_closed() {
    let server = DevServer::start(DevOptions::default()).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    set(
        &mut conn,
        &[("ip", Some("127.0.0.1"))],
        vec![op("connection_creation_rate", Some(2.0))],
    )
    .await;
    // A burst of 20 connections: the first couple fit the rate, the rest
    // are closed without an answer.
    let mut served = 0;
    for _ in 0..20 {
        let mut c = RawConn::connect(server.kafka_addr()).await;
        let body = encode_request(
            1,
            0,
            &kafka_protocol::messages::ApiVersionsRequest::default(),
        );
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        // A refused connection may already be reset when we write.
        if c.write_raw(&frame).await.is_ok() && c.read_frame().await.is_some() {
            served += 1;
        }
    }
    assert!((1..20).contains(&served), "{served} of 20 served");
    let scrape = server.metrics().await;
    assert!(
        metric_value(
            &scrape,
            "kafscale_gateway_connections_total",
            r#"outcome="quota""#
        ) > 0.0
    );
    // Without the quota, connections are accepted again.
    set(
        &mut conn,
        &[("ip", Some("127.0.0.1"))],
        vec![op("connection_creation_rate", None)],
    )
    .await;
    for _ in 0..10 {
        let mut c = RawConn::connect(server.kafka_addr()).await;
        assert!(!c.api_versions().await.api_keys.is_empty());
    }
}
