//! End-to-end produce/consume against `kafscale dev` with real clients
//! (librdkafka through rdkafka, and the kcat CLI).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    assert_strictly_increasing, consume_all, consumer, create_topic, http_get, producer, run_kcat,
    unique_name, watermarks, Consumed, DevOptions, DevServer, RawConn, CLIENT_TIMEOUT,
};
use futures::future::join_all;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const PARTITIONS: i32 = 12;
const RECORDS_PER_CODEC: usize = 120;
const ONE_MIB: usize = 1 << 20;

/// What the test sent, plus where the broker said it landed.
#[derive(Clone, Debug)]
struct Sent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Deterministic mix of keyed / null-key records, null values, 0–4 headers
/// (including a duplicate key and a null header value) and sizes up to 1 MiB.
fn record_specs(codec_index: usize, rng: &mut StdRng) -> Vec<Sent> {
    (0..RECORDS_PER_CODEC)
        .map(|i| {
            let key =
                (i % 9 != 0).then(|| format!("key-{}", (i * 7 + codec_index) % 40).into_bytes());
            let size = match i {
                _ if i % 40 == 17 => ONE_MIB,
                _ if i % 20 == 3 => 100 * 1024,
                _ => rng.random_range(1..3000),
            };
            let value = (i % 13 != 5).then(|| {
                let mut v = vec![0u8; size];
                if i % 2 == 0 {
                    rng.fill_bytes(&mut v); // incompressible
                } else {
                    let pattern = format!("{}-{i}-", CODECS[codec_index]);
                    for (dst, src) in v.iter_mut().zip(pattern.bytes().cycle()) {
                        *dst = src;
                    }
                }
                v
            });
            let headers = match i % 4 {
                0 => vec![],
                1 => vec![("trace".to_string(), Some(format!("t-{i}").into_bytes()))],
                2 => vec![
                    ("dup".to_string(), Some(b"a".to_vec())),
                    ("dup".to_string(), Some(b"b".to_vec())),
                    (
                        "codec".to_string(),
                        Some(CODECS[codec_index].as_bytes().to_vec()),
                    ),
                ],
                _ => vec![
                    ("null-header".to_string(), None),
                    ("empty-header".to_string(), Some(Vec::new())),
                ],
            };
            Sent {
                key,
                value,
                headers,
            }
        })
        .collect()
}

fn owned_headers(headers: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new(), |acc, (k, v)| {
        acc.insert(Header {
            key: k,
            value: v.as_ref(),
        })
    })
}

fn describe(bytes: &Option<Vec<u8>>) -> String {
    match bytes {
        None => "null".into(),
        Some(b) => format!("{} bytes {:02x?}..", b.len(), &b[..b.len().min(8)]),
    }
}

fn describe_record(c: &Consumed) -> String {
    format!(
        "p{} @{} key={} value={} headers={:?}",
        c.partition,
        c.offset,
        describe(&c.key),
        describe(&c.value),
        c.headers
            .iter()
            .map(|(k, v)| (k, describe(v)))
            .collect::<Vec<_>>()
    )
}

/// Compares expected and consumed records of one partition, reporting the
/// first difference compactly (values can be 1 MiB).
fn assert_partition_equal(partition: i32, expected: &[Consumed], got: &[Consumed]) {
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        assert!(
            e == g,
            "partition {partition}, record #{i}: expected {} but consumed {}",
            describe_record(e),
            describe_record(g)
        );
    }
    assert_eq!(
        expected.len(),
        got.len(),
        "partition {partition}: produced {} records, consumed {}",
        expected.len(),
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_codecs_keys_headers_nulls_and_1mib_records_round_trip_over_12_partitions() {
    let server = DevServer::start(DevOptions::default()).await;
    let bootstrap = server.bootstrap();
    let topic = unique_name("mixed");
    create_topic(
        &bootstrap,
        &topic,
        PARTITIONS,
        &[("max.message.bytes", "2097152")],
    )
    .await;

    let mut rng = StdRng::seed_from_u64(0x6b61_6673);
    // Expected records per partition, in produce order.
    let mut expected: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
    for (codec_index, codec) in CODECS.iter().enumerate() {
        let specs = record_specs(codec_index, &mut rng);
        let producer = producer(
            &bootstrap,
            &[
                ("compression.codec", codec),
                ("message.max.bytes", "4194304"),
                // One request in flight keeps produce order == log order.
                ("max.in.flight.requests.per.connection", "1"),
            ],
        );
        let deliveries = specs.iter().map(|s| {
            let mut record =
                FutureRecord::<[u8], [u8]>::to(&topic).headers(owned_headers(&s.headers));
            if let Some(k) = &s.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &s.value {
                record = record.payload(v.as_slice());
            }
            producer.send(record, Duration::from_secs(30))
        });
        let results = tokio::time::timeout(Duration::from_secs(120), join_all(deliveries))
            .await
            .unwrap_or_else(|_| panic!("codec {codec}: deliveries not reported within 120 s"));
        for (i, (spec, result)) in specs.into_iter().zip(results).enumerate() {
            let delivery = result.unwrap_or_else(|(e, _)| {
                panic!(
                    "codec {codec}: record #{i} ({}) not acknowledged: {e}",
                    describe(&spec.value)
                )
            });
            expected
                .entry(delivery.partition)
                .or_default()
                .push(Consumed {
                    partition: delivery.partition,
                    offset: delivery.offset,
                    key: spec.key,
                    value: spec.value,
                    headers: spec.headers,
                });
        }
    }

    assert_eq!(
        expected.len(),
        PARTITIONS as usize,
        "records were not spread over all partitions: {:?}",
        expected
            .iter()
            .map(|(p, v)| (*p, v.len()))
            .collect::<Vec<_>>()
    );
    for (partition, records) in &expected {
        // Acknowledged offsets follow produce order within each partition.
        assert_strictly_increasing(&topic, *partition, records);
    }

    let bootstrap_for_read = bootstrap.clone();
    let topic_for_read = topic.clone();
    let (highs, consumed) = tokio::task::spawn_blocking(move || {
        consume_all(
            &bootstrap_for_read,
            &topic_for_read,
            PARTITIONS,
            Duration::from_secs(120),
        )
    })
    .await
    .expect("consumer thread");

    for partition in 0..PARTITIONS {
        let want = expected
            .get(&partition)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let got = &consumed[&partition];
        assert_eq!(
            highs[&partition],
            want.len() as i64,
            "partition {partition}: high watermark vs. number of acknowledged records"
        );
        assert_strictly_increasing(&topic, partition, got);
        assert_partition_equal(partition, want, got);
    }
}

/// Runs kcat (see [`run_kcat`]) and requires it to succeed; its stdout.
async fn kcat(args: &[&str], stdin: Option<&str>) -> String {
    let out = run_kcat(args, stdin).await;
    assert!(
        out.ok,
        "kcat {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_metadata_and_round_trips_records() {
    let server = DevServer::start(DevOptions::default()).await;
    let bootstrap = server.bootstrap();
    let topic = unique_name("kcat");
    create_topic(&bootstrap, &topic, 3, &[]).await;

    let listing = kcat(&["-b", &bootstrap, "-L"], None).await;
    assert!(
        listing.contains(&format!("topic \"{topic}\" with 3 partitions")),
        "kcat -L does not list {topic} with 3 partitions:\n{listing}"
    );
    assert!(
        listing.contains(&format!("at {bootstrap}")),
        "kcat -L does not show the advertised broker {bootstrap}:\n{listing}"
    );

    kcat_round_trips_keyed_records(&bootstrap, &topic).await;
}

/// `KAFSCALE_DEV_STORAGE=memory`: the same round trip, and nothing is
/// written under the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_storage_round_trips_records_without_touching_the_data_dir() {
    let server =
        DevServer::start(DevOptions::default().env("KAFSCALE_DEV_STORAGE", "memory")).await;
    let bootstrap = server.bootstrap();
    let topic = unique_name("mem");
    create_topic(&bootstrap, &topic, 2, &[]).await;
    kcat_round_trips_keyed_records(&bootstrap, &topic).await;
    let written: Vec<_> = std::fs::read_dir(server.data_dir())
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        written.is_empty(),
        "memory storage wrote under the data directory: {written:?}"
    );
}

/// Produces 20 keyed records to partition 1 of `topic` with kcat and reads
/// them back with kcat, at offsets 0 to 19.
async fn kcat_round_trips_keyed_records(bootstrap: &str, topic: &str) {
    let lines: Vec<(String, String)> = (0..20)
        .map(|i| (format!("k{i}"), format!("value-{i}")))
        .collect();
    let input: String = lines.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    kcat(
        &["-b", bootstrap, "-t", topic, "-p", "1", "-K:", "-P"],
        Some(&input),
    )
    .await;

    let output = kcat(
        &[
            "-b",
            bootstrap,
            "-t",
            topic,
            "-p",
            "1",
            "-C",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k=%s@%o\\n",
        ],
        None,
    )
    .await;
    let want: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, (k, v))| format!("{k}={v}@{i}"))
        .collect();
    let got: Vec<&str> = output.lines().collect();
    assert_eq!(got, want, "kcat -C output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_watermarks_and_offsets_for_times() {
    let server = DevServer::start(DevOptions::default()).await;
    let bootstrap = server.bootstrap();
    let topic = unique_name("times");
    create_topic(&bootstrap, &topic, 2, &[]).await;

    let probe = consumer(&bootstrap, &[]);
    assert_eq!(
        watermarks(&probe, &topic, 0),
        (0, 0),
        "empty partition 0 watermarks"
    );

    // Ten records on partition 0 with timestamps base, base+1s, ... base+9s:
    // the first five in separate batches, the last five in one batch.
    // Recent timestamps (a minute ago, whole second) so no retention applies.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let base = (now_ms - 60_000) / 1000 * 1000;
    let producer = producer(&bootstrap, &[("linger.ms", "50")]);
    let send = |i: i64| {
        let (producer, topic) = (&producer, &topic);
        async move {
            let value = format!("ts-{i}");
            let record = FutureRecord::<str, str>::to(topic)
                .partition(0)
                .timestamp(base + i * 1000)
                .payload(&value)
                .key("k");
            producer.send(record, Duration::from_secs(30)).await
        }
    };
    for i in 0..5 {
        let delivery = send(i)
            .await
            .unwrap_or_else(|(e, _)| panic!("produce #{i}: {e}"));
        assert_eq!(
            (delivery.partition, delivery.offset),
            (0, i),
            "ack of record #{i}"
        );
    }
    for (i, result) in (5..10).zip(join_all((5..10).map(send)).await) {
        let delivery = result.unwrap_or_else(|(e, _)| panic!("produce #{i}: {e}"));
        assert_eq!(
            (delivery.partition, delivery.offset),
            (0, i),
            "ack of record #{i}"
        );
    }

    assert_eq!(
        watermarks(&probe, &topic, 0),
        (0, 10),
        "partition 0 watermarks"
    );
    assert_eq!(
        watermarks(&probe, &topic, 1),
        (0, 0),
        "partition 1 watermarks"
    );

    // (target timestamp, expected offset of first record with timestamp >= target)
    let cases = [
        (base - 5_000, Offset::Offset(0)),
        (base, Offset::Offset(0)),
        (base + 1, Offset::Offset(1)),
        (base + 2_500, Offset::Offset(3)),
        (base + 4_000, Offset::Offset(4)),
        (base + 4_001, Offset::Offset(5)),
        (base + 5_000, Offset::Offset(5)),
        (base + 7_001, Offset::Offset(8)),
        (base + 9_000, Offset::Offset(9)),
        (base + 9_001, Offset::End),
    ];
    for (target, want) in cases {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(target))
            .expect("tpl");
        tpl.add_partition_offset(&topic, 1, Offset::Offset(target))
            .expect("tpl");
        let result = probe
            .offsets_for_times(tpl, CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("offsets_for_times({target}): {e}"));
        let elements = result.elements();
        let by_partition = |p: i32| {
            let e = elements
                .iter()
                .find(|e| e.partition() == p)
                .expect("partition in result");
            assert!(
                e.error().is_ok(),
                "offsets_for_times({target}) p{p}: {:?}",
                e.error()
            );
            e.offset()
        };
        assert_eq!(
            by_partition(0),
            want,
            "offsets_for_times(base + {}) on partition 0",
            target - base
        );
        assert_eq!(
            by_partition(1),
            Offset::End,
            "offsets_for_times(base + {}) on empty partition 1",
            target - base
        );
    }

    // ListOffsets v10 (Kafka 4.0): earliest-local (-4) is the log start and
    // latest-tiered (-5) is -1, as on a Kafka broker without tiered storage.
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    for (ts, want) in [(-4, 0), (-5, -1), (-1, 10), (-2, 0)] {
        let mut p = ListOffsetsPartition::default();
        p.partition_index = 0;
        p.timestamp = ts;
        let mut t = ListOffsetsTopic::default();
        t.name = TopicName(StrBytes::from_string(topic.clone()));
        t.partitions = vec![p];
        let mut req = ListOffsetsRequest::default();
        req.replica_id = BrokerId(-1);
        req.topics = vec![t];
        req.timeout_ms = 5000;
        let resp = conn.request(10, &req).await;
        let got = &resp.topics[0].partitions[0];
        assert_eq!(
            (got.error_code, got.offset),
            (0, want),
            "ListOffsets v10 timestamp {ts}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_and_metrics_endpoints_answer() {
    let server = DevServer::start(DevOptions::default()).await;
    for path in ["/readyz", "/healthz", "/metrics"] {
        let (status, body) = http_get(server.http_addr(), path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path} -> {status}: {body}");
    }
}
