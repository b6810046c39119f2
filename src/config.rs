//! Settings of `kafscale dev`: every flag has a `KAFSCALE_*` env twin.
//! The defaults here are the ones documented in docs/configuration.md
//! (a test checks that table against `--help`).

use clap::Args;
use std::path::PathBuf;

/// Settings of the embedded single-process cluster.
#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Directory for metadata and log objects.
    #[arg(long, env = "KAFSCALE_DATA_DIR", default_value = "./kafscale-data")]
    pub data_dir: PathBuf,
    /// Kafka protocol listen address.
    #[arg(long, env = "KAFSCALE_KAFKA_ADDR", default_value = "0.0.0.0:9092")]
    pub kafka_addr: String,
    /// Host advertised to clients in Metadata (default: localhost).
    #[arg(long, env = "KAFSCALE_ADVERTISED_HOST", default_value = "localhost")]
    pub advertised_host: String,
    /// Port advertised to clients (default: the Kafka listen port).
    #[arg(long, env = "KAFSCALE_ADVERTISED_PORT")]
    pub advertised_port: Option<u16>,
    /// HTTP listen address for /metrics, /healthz, /readyz.
    #[arg(long, env = "KAFSCALE_HTTP_ADDR", default_value = "0.0.0.0:9093")]
    pub http_addr: String,
    /// Internal gateway→worker gRPC listen address (loopback in dev).
    #[arg(long, env = "KAFSCALE_GRPC_ADDR", default_value = "127.0.0.1:0")]
    pub grpc_addr: String,
    /// Create unknown topics on Metadata/Produce.
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics.
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_PARTITIONS", default_value_t = 1)]
    pub auto_create_partitions: i32,
    /// Flush the WAL buffer when its oldest byte is this old.
    #[arg(long, env = "KAFSCALE_WAL_FLUSH_INTERVAL_MS", default_value_t = 50)]
    pub wal_flush_interval_ms: u64,
    /// Flush the WAL buffer when it holds this many bytes.
    #[arg(long, env = "KAFSCALE_WAL_FLUSH_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub wal_flush_bytes: usize,
    /// WAL object writes in flight at once.
    #[arg(long, env = "KAFSCALE_WAL_MAX_INFLIGHT", default_value_t = 4)]
    pub wal_max_inflight: usize,
    /// Bytes of recent log data kept in memory.
    #[arg(long, env = "KAFSCALE_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_bytes: usize,
    /// Largest accepted Kafka request frame.
    #[arg(long, env = "KAFSCALE_MAX_FRAME_BYTES", default_value_t = 104_857_600)]
    pub max_frame_bytes: usize,
    /// Default max.message.bytes of topics.
    #[arg(long, env = "KAFSCALE_MAX_MESSAGE_BYTES", default_value_t = 1_048_588)]
    pub max_message_bytes: usize,
    /// First rebalance of an empty group waits this long for more members.
    #[arg(
        long,
        env = "KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    pub group_initial_rebalance_delay_ms: u64,
    /// Smallest session.timeout.ms a group member may ask for.
    #[arg(
        long,
        env = "KAFSCALE_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6000
    )]
    pub group_min_session_timeout_ms: u64,
    /// Largest session.timeout.ms a group member may ask for.
    #[arg(
        long,
        env = "KAFSCALE_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    pub group_max_session_timeout_ms: u64,
    /// Group coordinator slots (partitions of __consumer_offsets), fixed at first start.
    #[arg(long, env = "KAFSCALE_OFFSETS_TOPIC_PARTITIONS", default_value_t = 50)]
    pub offsets_topic_partitions: i32,
    /// Object key namespace.
    #[arg(long, env = "KAFSCALE_S3_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "KAFSCALE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}
