//! Settings of every subcommand: each flag has a `KAFSCALE_*` env twin.
//! The defaults here are the ones documented in docs/configuration.md
//! (a test checks each subcommand's table against its `--help`).

use clap::Args;
use kafscale_controlplane::log_policy::LogDefaults;
use kafscale_logworker::groups::group::GroupConfig;
use kafscale_logworker::wal::policy::{FlushProfile, FlushSettings};
use std::path::PathBuf;
use std::time::Duration;

/// WAL batching and the tail cache (dev and logworker).
#[derive(Args, Debug, Clone)]
pub struct WalArgs {
    /// The WAL flush profile whose settings apply where none of the four
    /// below is set: balanced, cost, latency or local [default: local in
    /// dev, balanced in logworker].
    #[arg(long, env = "KAFSCALE_WAL_FLUSH_PROFILE")]
    pub wal_flush_profile: Option<FlushProfile>,
    /// No buffered byte waits longer than this before its flush [default: from the profile].
    #[arg(long, env = "KAFSCALE_WAL_FLUSH_INTERVAL_MS")]
    pub wal_flush_interval_ms: Option<u64>,
    /// A buffer below the size trigger is not flushed before its oldest byte
    /// waited this long [default: from the profile].
    #[arg(long, env = "KAFSCALE_WAL_FLUSH_MIN_INTERVAL_MS")]
    pub wal_flush_min_interval_ms: Option<u64>,
    /// The WAL object size the flush interval adapts to [default: from the profile].
    #[arg(long, env = "KAFSCALE_WAL_TARGET_OBJECT_BYTES")]
    pub wal_target_object_bytes: Option<usize>,
    /// Flush the WAL buffer at once when it holds this many bytes [default: from the profile].
    #[arg(long, env = "KAFSCALE_WAL_FLUSH_BYTES")]
    pub wal_flush_bytes: Option<usize>,
    /// WAL object writes in flight at once (1 to 16).
    #[arg(long, env = "KAFSCALE_WAL_MAX_INFLIGHT", default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=kafscale_logworker::seal::MAX_INFLIGHT_PUTS as u64))]
    pub wal_max_inflight: usize,
    /// Bytes of recent log data kept in memory.
    #[arg(long, env = "KAFSCALE_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_bytes: usize,
    /// Bytes of chunks read from storage (segment blocks, WAL chunks below
    /// the tail cache) kept in memory for reads below the tail.
    #[arg(long, env = "KAFSCALE_SEGMENT_CACHE_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub segment_cache_bytes: usize,
    #[command(flatten)]
    pub log: LogArgs,
}

impl WalArgs {
    /// The flush settings: the profile's (`default` where none is set), each
    /// overridden where set.
    pub fn flush_settings(&self, default: FlushProfile) -> FlushSettings {
        let p = self.wal_flush_profile.unwrap_or(default).settings();
        let ms = Duration::from_millis;
        FlushSettings {
            flush_bytes: self.wal_flush_bytes.unwrap_or(p.flush_bytes),
            target_bytes: self.wal_target_object_bytes.unwrap_or(p.target_bytes),
            min_interval: self.wal_flush_min_interval_ms.map_or(p.min_interval, ms),
            max_interval: self.wal_flush_interval_ms.map_or(p.max_interval, ms),
        }
        .normalized()
    }
}

/// Segments and retention: broker defaults of the topic configs of the same
/// meaning (dev and logworker).
#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Default `segment.bytes`: a segment is cut once this much waits in the WAL.
    #[arg(long, env = "KAFSCALE_LOG_SEGMENT_BYTES", default_value_t = LogDefaults::SEGMENT_BYTES)]
    pub log_segment_bytes: i64,
    /// Default `segment.ms`: a segment is cut once its oldest record is this old.
    #[arg(long, env = "KAFSCALE_LOG_SEGMENT_MS", default_value_t = LogDefaults::SEGMENT_MS)]
    pub log_segment_ms: i64,
    /// Default `retention.ms` (-1: keep forever).
    #[arg(long, env = "KAFSCALE_LOG_RETENTION_MS", default_value_t = LogDefaults::RETENTION_MS, allow_hyphen_values = true)]
    pub log_retention_ms: i64,
    /// Default `retention.bytes` per partition (-1: no limit).
    #[arg(long, env = "KAFSCALE_LOG_RETENTION_BYTES", default_value_t = LogDefaults::RETENTION_BYTES, allow_hyphen_values = true)]
    pub log_retention_bytes: i64,
    /// How often an owner looks for compaction and retention work.
    #[arg(
        long,
        env = "KAFSCALE_COMPACTION_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub compaction_interval_ms: u64,
}

impl LogArgs {
    /// The broker-wide defaults.
    pub fn defaults(&self) -> LogDefaults {
        LogDefaults {
            segment_bytes: self.log_segment_bytes,
            segment_ms: self.log_segment_ms,
            retention_ms: self.log_retention_ms,
            retention_bytes: self.log_retention_bytes,
        }
    }
}

/// Group coordinator settings (dev and logworker).
#[derive(Args, Debug, Clone)]
pub struct GroupArgs {
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
    /// `offsets.retention.minutes`: committed offsets of a consumer group are
    /// deleted once it has been empty this long (those of standalone
    /// consumers this long after their commit). Fractions allowed.
    #[arg(
        long,
        env = "KAFSCALE_OFFSETS_RETENTION_MINUTES",
        default_value_t = 10080.0
    )]
    pub offsets_retention_minutes: f64,
    /// Group coordinator slots (partitions of __consumer_offsets), fixed at first start.
    #[arg(long, env = "KAFSCALE_OFFSETS_TOPIC_PARTITIONS", default_value_t = 50)]
    pub offsets_topic_partitions: i32,
}

impl GroupArgs {
    /// The coordinator settings.
    pub fn config(&self) -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(self.group_initial_rebalance_delay_ms),
            min_session_timeout: Duration::from_millis(self.group_min_session_timeout_ms),
            max_session_timeout: Duration::from_millis(self.group_max_session_timeout_ms),
            offsets_retention: Duration::try_from_secs_f64(self.offsets_retention_minutes * 60.0)
                .unwrap_or(Duration::MAX),
        }
    }
}

/// Kafka listener settings (dev and gateway).
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka protocol listen address.
    #[arg(long, env = "KAFSCALE_KAFKA_ADDR", default_value = "0.0.0.0:9092")]
    pub kafka_addr: String,
    /// Host advertised to clients in Metadata (default: localhost).
    #[arg(long, env = "KAFSCALE_ADVERTISED_HOST", default_value = "localhost")]
    pub advertised_host: String,
    /// Port advertised to clients (default: the Kafka listen port).
    #[arg(long, env = "KAFSCALE_ADVERTISED_PORT")]
    pub advertised_port: Option<u16>,
    /// Create unknown topics on Metadata/Produce.
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// Label per-topic gateway metrics with the topic (false: one series for
    /// all topics, for clusters with very many topics).
    #[arg(long, env = "KAFSCALE_METRICS_TOPIC_LABELS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_topic_labels: bool,
    /// Partition count of auto-created topics.
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_PARTITIONS", default_value_t = 1)]
    pub auto_create_partitions: i32,
    /// Largest accepted Kafka request frame.
    #[arg(long, env = "KAFSCALE_MAX_FRAME_BYTES", default_value_t = 104_857_600)]
    pub max_frame_bytes: usize,
    /// Request bytes one client connection may hold in memory (read, not yet
    /// answered); past it the gateway stops reading that socket. At least
    /// the max frame size.
    #[arg(
        long,
        env = "KAFSCALE_MAX_CONNECTION_BYTES",
        default_value_t = 104_857_600
    )]
    pub max_connection_bytes: usize,
    /// Request bytes all client connections together may hold in memory;
    /// past it the gateway stops reading from sockets. At least the max
    /// frame size.
    #[arg(
        long,
        env = "KAFSCALE_MAX_GATEWAY_BYTES",
        default_value_t = 536_870_912
    )]
    pub max_gateway_bytes: usize,
    /// Open client connections per gateway; more are closed on accept.
    #[arg(long, env = "KAFSCALE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Open client connections per source address; more are closed on accept.
    #[arg(long, env = "KAFSCALE_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,
    /// A client that has sent a frame's length must send the whole frame
    /// within this time, or it is disconnected.
    #[arg(long, env = "KAFSCALE_FRAME_READ_TIMEOUT_MS", default_value_t = 60_000)]
    pub frame_read_timeout_ms: u64,
    /// Writing one response must finish within this time, or the client
    /// (which is not reading its answers) is disconnected.
    #[arg(
        long,
        env = "KAFSCALE_RESPONSE_WRITE_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub response_write_timeout_ms: u64,
    /// A connection with nothing sent and nothing to answer for this long is
    /// closed (Kafka's `connections.max.idle.ms`).
    #[arg(
        long,
        env = "KAFSCALE_CONNECTIONS_MAX_IDLE_MS",
        default_value_t = 600_000
    )]
    pub connections_max_idle_ms: u64,
    /// A TLS handshake, or a SASL authentication on SASL listeners, that has
    /// not finished this long after the connection opened closes it.
    #[arg(long, env = "KAFSCALE_AUTH_TIMEOUT_MS", default_value_t = 30_000)]
    pub auth_timeout_ms: u64,
    /// Largest fetch response (Kafka's broker `fetch.max.bytes`).
    #[arg(long, env = "KAFSCALE_FETCH_MAX_BYTES", default_value_t = 57_671_680)]
    pub fetch_max_bytes: usize,
    /// Authorization: `none` allows every request, `acl` enforces the ACLs in the metadata store.
    #[arg(long, env = "KAFSCALE_AUTHORIZER", value_enum, default_value = "none")]
    pub authorizer: Authorizer,
    /// Principals the authorizer allows everything, `;`-separated (e.g. User:admin).
    #[arg(long, env = "KAFSCALE_SUPER_USERS", value_delimiter = ';')]
    pub super_users: Vec<String>,
    /// With `acl`: allow access to resources that have no ACL at all.
    #[arg(long, env = "KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_everyone_if_no_acl_found: bool,
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
}

/// The gateway's authorizer.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorizer {
    /// Allow every request; the ACL APIs answer SECURITY_DISABLED.
    None,
    /// Enforce ACLs (Kafka's StandardAuthorizer rules).
    Acl,
}

impl KafkaArgs {
    /// The authorizer settings, `None` when authorization is off.
    pub fn authorizer_config(&self) -> Option<kafscale_controlplane::acl::AuthorizerConfig> {
        (self.authorizer == Authorizer::Acl).then(|| kafscale_controlplane::acl::AuthorizerConfig {
            super_users: self.super_users.clone(),
            allow_everyone_if_no_acl_found: self.allow_everyone_if_no_acl_found,
        })
    }
}

/// Where `kafscale dev` keeps its data.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevStorage {
    /// Under `KAFSCALE_DATA_DIR`: data survives a restart.
    Disk,
    /// In the process: gone when it exits.
    Memory,
}

/// Settings of the embedded single-process cluster.
#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// Directory for metadata and log objects.
    #[arg(long, env = "KAFSCALE_DATA_DIR", default_value = "./kafscale-data")]
    pub data_dir: PathBuf,
    /// Where data lives: `disk` (under the data directory, survives a
    /// restart) or `memory` (metadata and log objects in the process, gone
    /// when it exits; no disk I/O).
    #[arg(long, env = "KAFSCALE_DEV_STORAGE", value_enum, default_value_t = DevStorage::Disk)]
    pub storage: DevStorage,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub http: crate::security::HttpArgs,
    /// Internal gateway→worker gRPC listen address (loopback in dev).
    #[arg(long, env = "KAFSCALE_GRPC_ADDR", default_value = "127.0.0.1:0")]
    pub grpc_addr: String,
    #[command(flatten)]
    pub internal_tls: crate::security::InternalTlsArgs,
    #[command(flatten)]
    pub wal: WalArgs,
    /// Default max.message.bytes of topics.
    #[arg(long, env = "KAFSCALE_MAX_MESSAGE_BYTES", default_value_t = 1_048_588)]
    pub max_message_bytes: usize,
    #[command(flatten)]
    pub groups: GroupArgs,
    /// Object key namespace.
    #[arg(long, env = "KAFSCALE_S3_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "KAFSCALE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub trace: crate::telemetry::TraceArgs,
}

/// etcd connection and registration leases (gateway and logworker).
#[derive(Args, Debug, Clone)]
pub struct EtcdArgs {
    /// Comma-separated etcd endpoints, e.g. http://etcd-0:2379,http://etcd-1:2379.
    #[arg(
        long,
        env = "KAFSCALE_ETCD_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    pub etcd_endpoints: Vec<String>,
    /// etcd user name (with the password).
    #[arg(long, env = "KAFSCALE_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// etcd password.
    #[arg(long, env = "KAFSCALE_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    /// Registration lease time-to-live: a process that stops refreshing it
    /// for this long is considered gone and its partitions move.
    #[arg(long, env = "KAFSCALE_LEASE_TTL_MS", default_value_t = 10_000)]
    pub lease_ttl_ms: u64,
    /// Metadata and object key namespace (one cluster per namespace).
    #[arg(long, env = "KAFSCALE_S3_NAMESPACE", default_value = "default")]
    pub namespace: String,
}

/// The S3 bucket(s) holding log data (logworker).
#[derive(Args, Debug, Clone)]
pub struct S3Args {
    /// Bucket for WAL objects and segments.
    #[arg(long, env = "KAFSCALE_S3_BUCKET", required = true)]
    pub s3_bucket: String,
    /// Region of the bucket.
    #[arg(long, env = "KAFSCALE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Custom S3 endpoint (S3-compatible stores).
    #[arg(long, env = "KAFSCALE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Path-style addressing (most S3-compatible stores need it).
    #[arg(long, env = "KAFSCALE_S3_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_path_style: bool,
    /// Whether PUT payloads are covered by the request signature: `auto`
    /// (unsigned over HTTPS, signed over plain HTTP), `signed` or `unsigned`.
    /// Every PUT carries a CRC32C that S3 checks, whichever is chosen.
    #[arg(long, env = "KAFSCALE_S3_PAYLOAD_SIGNING", default_value = "auto")]
    pub s3_payload_signing: kafscale_logworker::objstore::s3::PayloadSigning,
    /// Static access key (else the standard AWS credential chain).
    #[arg(long, env = "KAFSCALE_S3_ACCESS_KEY")]
    pub s3_access_key: Option<String>,
    /// Static secret key.
    #[arg(long, env = "KAFSCALE_S3_SECRET_KEY", hide_env_values = true)]
    pub s3_secret_key: Option<String>,
    /// Static session token.
    #[arg(long, env = "KAFSCALE_S3_SESSION_TOKEN", hide_env_values = true)]
    pub s3_session_token: Option<String>,
    /// Read replica bucket (cross-region replica); reads fall back to the primary.
    #[arg(long, env = "KAFSCALE_S3_READ_BUCKET")]
    pub s3_read_bucket: Option<String>,
    /// Region of the read replica (default: the primary's).
    #[arg(long, env = "KAFSCALE_S3_READ_REGION")]
    pub s3_read_region: Option<String>,
    /// Endpoint of the read replica (default: the primary's).
    #[arg(long, env = "KAFSCALE_S3_READ_ENDPOINT")]
    pub s3_read_endpoint: Option<String>,
}

/// Settings of `kafscale logworker`.
#[derive(Args, Debug, Clone)]
pub struct LogworkerArgs {
    /// Internal data-plane gRPC listen address.
    #[arg(long, env = "KAFSCALE_GRPC_ADDR", default_value = "0.0.0.0:9094")]
    pub grpc_addr: String,
    /// Address gateways dial (default: the listen address, with this host's
    /// name in place of an unspecified IP).
    #[arg(long, env = "KAFSCALE_GRPC_ADVERTISED_ADDR")]
    pub grpc_advertised_addr: Option<String>,
    #[command(flatten)]
    pub http: crate::security::HttpArgs,
    /// Stable worker id (default: generated at start).
    #[arg(long, env = "KAFSCALE_WORKER_ID")]
    pub worker_id: Option<String>,
    #[command(flatten)]
    pub internal_tls: crate::security::InternalTlsArgs,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub wal: WalArgs,
    /// Which workers the elected assigner gives partitions: spread (every
    /// worker) or pack (only as many as the cluster's ingest rate needs, at
    /// the rate where WAL objects reach their target size) [default: pack
    /// with the cost flush profile, spread otherwise].
    #[arg(long, env = "KAFSCALE_PLACEMENT", value_parser = clap::builder::PossibleValuesParser::new(kafscale_controlplane::assigner::PLACEMENT_NAMES))]
    pub placement: Option<String>,
    /// Default max.message.bytes of topics.
    #[arg(long, env = "KAFSCALE_MAX_MESSAGE_BYTES", default_value_t = 1_048_588)]
    pub max_message_bytes: usize,
    #[command(flatten)]
    pub groups: GroupArgs,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "KAFSCALE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub trace: crate::telemetry::TraceArgs,
}

impl LogworkerArgs {
    /// The placement's name: as set, else `pack` with the cost flush
    /// profile (fewest PUTs) and `spread` otherwise.
    pub fn placement_name(&self) -> &str {
        match (&self.placement, self.wal.wal_flush_profile) {
            (Some(p), _) => p,
            (None, Some(FlushProfile::Cost)) => "pack",
            (None, _) => "spread",
        }
    }
}

/// Settings of `kafscale gateway`.
#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub http: crate::security::HttpArgs,
    /// Default max.message.bytes of topics.
    #[arg(long, env = "KAFSCALE_MAX_MESSAGE_BYTES", default_value_t = 1_048_588)]
    pub max_message_bytes: usize,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Longest a SIGTERM waits for in-flight requests before exiting.
    #[arg(long, env = "KAFSCALE_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    #[command(flatten)]
    pub internal_tls: crate::security::InternalTlsArgs,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "KAFSCALE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub trace: crate::telemetry::TraceArgs,
}

/// `kafscale operator` settings.
#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Namespace whose KafscaleCluster and KafscaleTopic resources are
    /// reconciled (all namespaces when unset).
    #[arg(long, env = "KAFSCALE_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    #[command(flatten)]
    pub http: crate::security::HttpArgs,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "KAFSCALE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        worker: LogworkerArgs,
    }

    fn placement(args: &[&str]) -> String {
        let mut argv = vec![
            "kafscale",
            "--etcd-endpoints",
            "http://e:2379",
            "--s3-bucket",
            "b",
        ];
        argv.extend_from_slice(args);
        Cli::parse_from(argv).worker.placement_name().to_string()
    }

    #[test]
    fn the_cost_profile_packs_unless_told_otherwise() {
        assert_eq!(placement(&[]), "spread");
        assert_eq!(placement(&["--wal-flush-profile", "cost"]), "pack");
        assert_eq!(
            placement(&["--wal-flush-profile", "cost", "--placement", "spread"]),
            "spread"
        );
        assert_eq!(placement(&["--placement", "pack"]), "pack");
    }
}
