//! Idempotent producers: InitProducerId hands out ids, a retried batch is
//! not appended twice (it is answered with its original offset), sequence
//! gaps and stale epochs are refused, all of it also after a kill -9 (the
//! new owner rebuilds the state from the durable log), and librdkafka's
//! idempotent producer (the default of modern Java and Python clients) works
//! end to end.

mod common;

use bytes::Bytes;
use common::{DevOptions, DevServer, RawConn};
use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// One batch of `n` records from producer `pid`/`epoch` starting at `seq`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, n: usize, tag: &str) -> Bytes {
    let records: Vec<_> = (0..n)
        .map(|i| (None, Some(Bytes::from(format!("{tag}-{i}")))))
        .collect();
    common::encode_producer_batch(Some((pid, epoch, seq)), &records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_batches_are_deduplicated_and_gaps_refused() {
    let server = DevServer::start(DevOptions::default()).await;
    let topic = common::unique_name("idem");
    common::create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    let mut init = InitProducerIdRequest::default();
    init.producer_id = ProducerId(-1);
    init.producer_epoch = -1;
    let ids = conn.request(4, &init).await;
    assert_eq!(ids.error_code, 0);
    let pid = ids.producer_id.0;
    assert!(pid >= 0);
    let again = conn.request(4, &init).await;
    assert_ne!(again.producer_id.0, pid, "each producer gets its own id");

    let produce = |b: Bytes| common::produce_request(&topic, 0, b);
    let first = conn
        .request(9, &produce(idempotent_batch(pid, 0, 0, 3, "a")))
        .await;
    let first = common::only_partition(&first).clone();
    assert_eq!((first.error_code, first.base_offset), (0, 0));
    // The same batch again (a retry): same offset, not appended twice.
    let retry = conn
        .request(9, &produce(idempotent_batch(pid, 0, 0, 3, "a")))
        .await;
    let retry = common::only_partition(&retry).clone();
    assert_eq!((retry.error_code, retry.base_offset), (0, 0));
    // A gap in sequence numbers is refused.
    let gap = conn
        .request(9, &produce(idempotent_batch(pid, 0, 5, 1, "gap")))
        .await;
    assert_eq!(common::only_partition(&gap).error_code, 45);
    let next = conn
        .request(9, &produce(idempotent_batch(pid, 0, 3, 2, "b")))
        .await;
    let next = common::only_partition(&next).clone();
    assert_eq!((next.error_code, next.base_offset), (0, 3));
    // A bumped epoch (KIP-360) restarts sequences; the old epoch is fenced.
    init.producer_id = ProducerId(pid);
    init.producer_epoch = 0;
    let bumped = conn.request(4, &init).await;
    assert_eq!((bumped.producer_id.0, bumped.producer_epoch), (pid, 1));
    let e1 = conn
        .request(9, &produce(idempotent_batch(pid, 1, 0, 1, "c")))
        .await;
    assert_eq!(common::only_partition(&e1).base_offset, 5);
    let stale = conn
        .request(9, &produce(idempotent_batch(pid, 0, 5, 1, "d")))
        .await;
    assert_eq!(common::only_partition(&stale).error_code, 47);

    let records = common::raw_fetch_partition(server.kafka_addr(), &topic, 0, 6).await;
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(values, ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_state_survives_a_kill_9() {
    let mut server = DevServer::start(DevOptions::default()).await;
    let topic = common::unique_name("idem-crash");
    common::create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    let mut init = InitProducerIdRequest::default();
    init.producer_id = ProducerId(-1);
    init.producer_epoch = -1;
    let pid = conn.request(4, &init).await.producer_id.0;
    let other = conn.request(4, &init).await.producer_id.0;
    let produce = |b: Bytes| common::produce_request(&topic, 0, b);
    // Seven batches of two producers, interleaved: more than the five
    // remembered per producer for `pid`.
    let mut acked = Vec::new();
    for i in 0..7 {
        let r = conn
            .request(
                9,
                &produce(idempotent_batch(pid, 0, i * 2, 2, &format!("p{i}"))),
            )
            .await;
        acked.push(common::only_partition(&r).base_offset);
        if i == 3 {
            let r = conn
                .request(9, &produce(idempotent_batch(other, 0, 0, 1, "o")))
                .await;
            assert_eq!(common::only_partition(&r).error_code, 0);
        }
    }
    drop(conn);
    server.restart().await;

    let mut conn = RawConn::connect(server.kafka_addr()).await;
    // Retries of the last five batches (a client whose acks were lost in
    // the crash) get their original offsets and append nothing.
    for i in 2..7 {
        let r = conn
            .request(
                9,
                &produce(idempotent_batch(pid, 0, i * 2, 2, &format!("p{i}"))),
            )
            .await;
        let r = common::only_partition(&r).clone();
        assert_eq!(
            (r.error_code, r.base_offset),
            (0, acked[i as usize]),
            "retry of batch {i} after the restart"
        );
    }
    // The sequence continues where it was; a gap is still refused.
    let gap = conn
        .request(9, &produce(idempotent_batch(pid, 0, 20, 1, "gap")))
        .await;
    assert_eq!(
        common::only_partition(&gap).error_code,
        45,
        "gap after restart"
    );
    let next = conn
        .request(9, &produce(idempotent_batch(pid, 0, 14, 1, "next")))
        .await;
    assert_eq!(
        (
            common::only_partition(&next).error_code,
            common::only_partition(&next).base_offset
        ),
        (0, 15),
        "next batch after the restart"
    );
    let dup_other = conn
        .request(9, &produce(idempotent_batch(other, 0, 0, 1, "o")))
        .await;
    assert_eq!(
        common::only_partition(&dup_other).base_offset,
        8,
        "other producer's retry"
    );
    let records = common::raw_fetch_partition(server.kafka_addr(), &topic, 0, 16).await;
    assert_eq!(records.len(), 16, "7×2 + 1 + 1 records, no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_idempotent_producer_round_trips() {
    let server = DevServer::start(DevOptions::default()).await;
    let topic = common::unique_name("idem-rdk");
    common::create_topic(&server.bootstrap(), &topic, 4, &[]).await;
    let producer: FutureProducer = common::producer(
        &server.bootstrap(),
        &[("enable.idempotence", "true"), ("linger.ms", "5")],
    );
    let sends = (0..2000).map(|i| {
        let p = producer.clone();
        let t = topic.clone();
        async move {
            let k = format!("k{}", i % 97);
            let v = i.to_string();
            p.send(
                FutureRecord::to(&t).key(&k).payload(&v),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e.to_string())
        }
    });
    for r in futures::future::join_all(sends).await {
        r.expect("idempotent delivery");
    }
    let (highs, records) =
        common::consume_all(&server.bootstrap(), &topic, 4, Duration::from_secs(60));
    assert_eq!(
        highs.values().sum::<i64>(),
        2000,
        "no duplicates, nothing lost"
    );
    let total: usize = records.values().map(Vec::len).sum();
    assert_eq!(total, 2000);
}
