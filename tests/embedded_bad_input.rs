//! Malformed and hostile Kafka input against `kafscale dev`, sent as raw
//! frames built with the kafka-protocol crate. After each bad input a fresh
//! rdkafka producer/consumer (separate connections) must still produce and
//! read back correctly, with everything stored earlier intact.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{
    consume_all, consumer, create_topic, encode_batch, encode_header, only_partition,
    produce_request, producer, unique_name, watermarks, DevOptions, DevServer, RawConn,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use rdkafka::producer::FutureRecord;

/// Size of the v2 record batch header; the records region starts after it.
const BATCH_HEADER_LEN: usize = 61;
/// The broker's default topic max.message.bytes.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// A server with a one-partition topic and a ledger of what it must hold.
struct Fixture {
    server: DevServer,
    topic: String,
    /// (offset, value) of every record successfully stored so far, in order.
    ledger: Vec<(i64, Vec<u8>)>,
}

impl Fixture {
    async fn new() -> Fixture {
        let server = DevServer::start(DevOptions::default()).await;
        let topic = unique_name("bad-input");
        create_topic(&server.bootstrap(), &topic, 1, &[]).await;
        let mut fixture = Fixture {
            server,
            topic,
            ledger: Vec::new(),
        };
        fixture.assert_healthy("startup").await;
        fixture
    }

    async fn raw(&self) -> RawConn {
        RawConn::connect(self.server.kafka_addr()).await
    }

    /// Latest offset (high watermark) of partition 0, via ListOffsets.
    fn latest_offset(&self) -> i64 {
        watermarks(&consumer(&self.server.bootstrap(), &[]), &self.topic, 0).1
    }

    /// Produces over a raw connection and expects success at the next offset.
    async fn raw_produce_ok(&mut self, conn: &mut RawConn, version: i16, value: Vec<u8>) {
        let batch = encode_batch(&[(
            Some(Bytes::from_static(b"raw")),
            Some(Bytes::from(value.clone())),
        )]);
        let response = conn
            .request(version, &produce_request(&self.topic, 0, batch))
            .await;
        let partition = only_partition(&response);
        assert_eq!(
            partition.error_code, 0,
            "valid raw produce rejected: {partition:?}"
        );
        let expected_offset = self.ledger.last().map_or(0, |(o, _)| o + 1);
        assert_eq!(
            partition.base_offset, expected_offset,
            "base offset of valid raw produce"
        );
        self.ledger.push((partition.base_offset, value));
    }

    /// A new rdkafka producer stores one more record, and a new consumer reads
    /// the whole partition back exactly as recorded in the ledger.
    async fn assert_healthy(&mut self, after: &str) {
        self.server.assert_running();
        let bootstrap = self.server.bootstrap();
        let value = format!("healthy-after-{after}-{}", self.ledger.len()).into_bytes();
        let delivery = producer(&bootstrap, &[])
            .send(
                FutureRecord::<str, [u8]>::to(&self.topic)
                    .partition(0)
                    .key("k")
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("after {after}: healthy rdkafka produce failed: {e}"));
        self.ledger.push((delivery.offset, value));

        let topic = self.topic.clone();
        let (highs, consumed) = tokio::task::spawn_blocking(move || {
            consume_all(&bootstrap, &topic, 1, Duration::from_secs(60))
        })
        .await
        .expect("consumer thread");
        let got: Vec<(i64, Vec<u8>)> = consumed[&0]
            .iter()
            .map(|c| (c.offset, c.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            highs[&0],
            self.ledger.len() as i64,
            "after {after}: high watermark vs. stored records"
        );
        let summarize = |v: &[(i64, Vec<u8>)]| -> Vec<(i64, usize)> {
            v.iter().map(|(o, b)| (*o, b.len())).collect()
        };
        assert!(
            got == self.ledger,
            "after {after}: partition content differs from what was stored\nexpected (offset, len): {:?}\nconsumed (offset, len): {:?}",
            summarize(&self.ledger),
            summarize(&got)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_batch_crc_is_rejected_with_corrupt_message_and_not_stored() {
    let mut f = Fixture::new().await;
    let mut conn = f.raw().await;
    let version = conn.negotiate(ApiKey::Produce, 12).await;
    let before = f.latest_offset();

    let batch = encode_batch(&[
        (
            Some(Bytes::from_static(b"k1")),
            Some(Bytes::from_static(b"corrupted-value-one")),
        ),
        (None, Some(Bytes::from_static(b"corrupted-value-two"))),
    ]);
    let mut corrupted = batch.to_vec();
    assert!(
        corrupted.len() > BATCH_HEADER_LEN + 8,
        "batch too small to corrupt"
    );
    let flip_at = BATCH_HEADER_LEN + (corrupted.len() - BATCH_HEADER_LEN) / 2;
    corrupted[flip_at] ^= 0xff;

    let response = conn
        .request(
            version,
            &produce_request(&f.topic, 0, Bytes::from(corrupted)),
        )
        .await;
    let partition = only_partition(&response);
    assert_eq!(
        partition.error_code,
        ResponseError::CorruptMessage.code(),
        "Produce v{version} with batch byte {flip_at} flipped: expected CORRUPT_MESSAGE, got {partition:?}"
    );
    assert_eq!(
        f.latest_offset(),
        before,
        "corrupted batch changed the latest offset"
    );

    // The connection stays usable and the next valid batch gets the next offset.
    f.raw_produce_ok(&mut conn, version, b"valid-after-corrupt".to_vec())
        .await;
    f.assert_healthy("corrupted CRC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_then_eof_closes_connection() {
    let mut f = Fixture::new().await;
    let mut conn = f.raw().await;
    let mut bytes = 100i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&encode_header(ApiKey::ApiVersions as i16, 0, 1, 1)[..10]);
    conn.write_raw(&bytes).await.expect("write truncated frame");
    conn.shutdown_write().await;
    conn.expect_closed("frame announcing 100 bytes, 10 sent, then FIN")
        .await;
    f.assert_healthy("truncated frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_length_closes_connection_without_reading() {
    let mut f = Fixture::new().await;
    let mut conn = f.raw().await;
    conn.write_raw(&0x7fff_ffffi32.to_be_bytes())
        .await
        .expect("write length prefix");
    conn.expect_closed("length prefix 0x7fffffff (body never sent)")
        .await;
    f.assert_healthy("oversized frame").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_api_key_closes_connection() {
    let mut f = Fixture::new().await;
    let mut conn = f.raw().await;
    let mut frame = encode_header(999, 0, 1, 7);
    frame.extend_from_slice(&[0, 0, 0, 0]);
    conn.send_frame(&frame).await;
    conn.expect_closed("request with api key 999").await;
    f.assert_healthy("unknown api key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_metadata_version_closes_connection() {
    let mut f = Fixture::new().await;
    let mut conn = f.raw().await;
    let mut frame = encode_header(ApiKey::Metadata as i16, 99, 2, 8);
    // Compact array of zero topics, allow_auto_topic_creation, empty tagged fields.
    frame.extend_from_slice(&[1, 1, 0, 0, 0]);
    conn.send_frame(&frame).await;
    conn.expect_closed("Metadata v99").await;
    f.assert_healthy("Metadata v99").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_v99_falls_back_to_v0_unsupported_version_response() {
    let mut f = Fixture::new().await;
    let mut conn = f.raw().await;
    let correlation_id = 42;
    let mut frame = encode_header(ApiKey::ApiVersions as i16, 99, 2, correlation_id);
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("kafscale-raw-test"))
        .with_client_software_version(StrBytes::from_static_str("99.0"))
        .encode(&mut frame, 3)
        .expect("encode ApiVersions body");
    conn.send_frame(&frame).await;

    let payload = conn
        .read_frame()
        .await
        .expect("server closed the connection instead of answering ApiVersions v99");
    let mut buf = Bytes::from(payload.clone());
    let header = ResponseHeader::decode(&mut buf, 0).expect("decode v0 response header");
    assert_eq!(header.correlation_id, correlation_id, "correlation id");
    let response = ApiVersionsResponse::decode(&mut buf, 0).unwrap_or_else(|e| {
        panic!("response is not a valid ApiVersionsResponse v0 ({e}): {payload:02x?}")
    });
    assert!(
        buf.is_empty(),
        "{} trailing bytes after the v0 ApiVersionsResponse",
        buf.len()
    );
    assert_eq!(
        response.error_code,
        ResponseError::UnsupportedVersion.code(),
        "ApiVersions v99 error code: {response:?}"
    );
    assert!(
        response
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::ApiVersions as i16),
        "api_keys must list ApiVersions: {:?}",
        response.api_keys
    );

    // A client then retries with a supported version on the same connection.
    let retry = conn.api_versions().await;
    assert_eq!(retry.error_code, 0, "ApiVersions v0 after the fallback");
    f.assert_healthy("ApiVersions v99").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_over_max_message_bytes_is_rejected_with_message_too_large() {
    let mut f = Fixture::new().await;
    let mut conn = f.raw().await;
    let version = conn.negotiate(ApiKey::Produce, 12).await;
    let before = f.latest_offset();

    let too_big = Bytes::from(vec![b'x'; DEFAULT_MAX_MESSAGE_BYTES + 50_000]);
    let batch = encode_batch(&[(Some(Bytes::from_static(b"big")), Some(too_big))]);
    let batch_len = batch.len();
    let response = conn
        .request(version, &produce_request(&f.topic, 0, batch))
        .await;
    let partition = only_partition(&response);
    assert_eq!(
        partition.error_code,
        ResponseError::MessageTooLarge.code(),
        "Produce v{version} of a {batch_len}-byte batch (limit {DEFAULT_MAX_MESSAGE_BYTES}): expected MESSAGE_TOO_LARGE, got {partition:?}"
    );
    assert_eq!(
        f.latest_offset(),
        before,
        "oversized record changed the latest offset"
    );

    // Just under the limit is accepted on the same connection.
    f.raw_produce_ok(&mut conn, version, vec![b'y'; 1_000_000])
        .await;
    f.assert_healthy("oversized record").await;
}

/// Array counts that lie (2^31 topics in a few bytes) made the protocol
/// crate reserve hundreds of GiB up front, which aborted the whole process
/// (found by tests/fuzz_decoders.rs). Now the request fails to decode, its
/// connection closes, and everyone else carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_array_counts_close_the_connection_not_the_server() {
    let mut f = Fixture::new().await;
    for (key, version, header_version, body) in [
        // Metadata v0: topics array of i32::MAX entries.
        (ApiKey::Metadata, 0, 1, &[0x7f, 0xff, 0xff, 0xff, 0x00][..]),
        // CreateTopics v5 (flexible): compact array of 2^32 - 2 entries.
        (
            ApiKey::CreateTopics,
            5,
            2,
            &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00][..],
        ),
        // Produce v9: compact topic array, huge.
        (
            ApiKey::Produce,
            9,
            2,
            &[0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        ),
    ] {
        let mut conn = f.raw().await;
        let mut frame = encode_header(key as i16, version, header_version, 9);
        frame.extend_from_slice(body);
        conn.send_frame(&frame).await;
        conn.expect_closed(&format!("{key:?} v{version} with a lying array count"))
            .await;
        f.assert_healthy(&format!("{key:?} v{version} with a lying array count"))
            .await;
    }
}
