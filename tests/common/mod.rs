//! Shared harness for the embedded-mode (`kafscale dev`) integration tests.
//!
//! * [`DevServer`] spawns the real `kafscale dev` binary on free loopback ports
//!   with its own data directory, waits for `GET /readyz == 200`, and can
//!   kill -9 and restart it on the same data directory and ports.
//! * rdkafka helpers build producers, consumers and admin clients with test
//!   settings, create topics and read partitions back.
//! * [`RawConn`] speaks the Kafka wire protocol directly (kafka-protocol crate)
//!   for malformed-input tests and for exact, client-filter-free fetches.
//!
//! Every helper here is bounded in time and panics with a descriptive message
//! (including the server log where useful) instead of hanging.

// Each integration test crate uses only a subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, ProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the server may take to answer `GET /readyz` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for a single rdkafka metadata / offsets / admin call.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a raw connection waits for one response frame.
pub const RAW_READ_TIMEOUT: Duration = Duration::from_secs(15);

mod clients;
mod pki;
mod raw;
mod server;

#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use pki::*;
#[allow(unused_imports)]
pub use raw::*;
#[allow(unused_imports)]
pub use server::*;
