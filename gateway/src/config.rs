//! Gateway settings.

/// What the gateway needs to know about itself.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Broker id presented to clients.
    pub node_id: i32,
    pub advertised_host: String,
    pub advertised_port: i32,
    pub auto_create_topics: bool,
    pub auto_create_partitions: i32,
    /// Default `max.message.bytes` of topics.
    pub default_max_message_bytes: usize,
    /// Largest accepted request frame.
    pub max_frame_bytes: usize,
    /// Requests of one connection processed concurrently (answered in order;
    /// see [`MAX_PIPELINED`]).
    pub max_pipelined: usize,
    /// Memory and connection bounds (see [`Limits`]).
    pub limits: Limits,
    /// ACL authorization; `None` allows everything and refuses the ACL APIs
    /// with SECURITY_DISABLED, as a Kafka broker without an authorizer does.
    pub authorizer: Option<kafscale_controlplane::acl::AuthorizerConfig>,
}

/// Requests one connection may have in progress at once. A produce is
/// answered once its WAL object is durable, up to the flush ceiling later
/// (200 ms by default, 1 s with the cost profile), and a client pipelines
/// a request every few milliseconds, so a connection's throughput is at
/// most this many requests per ack: at 64, librdkafka at linger 5 ms over
/// 96 keyed partitions was held to 4.4–4.7 of 5 MB/s, its records waiting
/// 4.5–5 s (p50), and under the cost profile to 0.62 of 1 MB/s.
/// Memory stays bounded by the byte budgets ([`Limits`]), which charge every
/// request at least [`crate::budget::MIN_FRAME_CHARGE`].
pub const MAX_PIPELINED: usize = 1024;

/// Bounds on what clients can make a gateway hold (see [`crate::budget`]).
/// Request bytes are counted from the moment a frame's length is read until
/// its response has been written, fetch responses from before they are
/// produced; past a budget the gateway stops reading from the socket
/// (backpressure), so memory never grows beyond the budgets.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request and fetch-response bytes one connection may hold (at least
    /// `max_frame_bytes`).
    pub connection_bytes: usize,
    /// Request bytes all connections together may hold (at least
    /// `max_frame_bytes`).
    pub gateway_bytes: usize,
    /// Open client connections, in all.
    pub max_connections: usize,
    /// Open client connections from one source address.
    pub max_connections_per_ip: usize,
    /// Longest time a frame's bytes may take to arrive once its length is
    /// read (a client that stalls mid-request is disconnected).
    pub frame_read_timeout: std::time::Duration,
    /// Longest time writing one response may take (a client that does not
    /// read its answers is disconnected).
    pub response_write_timeout: std::time::Duration,
    /// A connection with nothing received and nothing to answer for this
    /// long is closed (Kafka's `connections.max.idle.ms`).
    pub idle_timeout: std::time::Duration,
    /// Largest fetch response (Kafka's broker `fetch.max.bytes`); a fetch
    /// asking for more is answered with at most this.
    pub fetch_max_bytes: usize,
    /// The TLS handshake and SASL authentication of a new connection must
    /// both be done this long after it was accepted, or it is closed (a
    /// client that never finishes its handshake holds nothing for longer).
    pub auth_timeout: std::time::Duration,
}

impl Limits {
    /// Generous bounds for tests.
    #[cfg(test)]
    pub fn unbounded_for_tests(max_frame_bytes: usize) -> Self {
        Self {
            connection_bytes: max_frame_bytes,
            gateway_bytes: max_frame_bytes * 64,
            max_connections: 100_000,
            max_connections_per_ip: 100_000,
            frame_read_timeout: std::time::Duration::from_secs(60),
            response_write_timeout: std::time::Duration::from_secs(60),
            idle_timeout: std::time::Duration::from_secs(600),
            fetch_max_bytes: 57_671_680,
            auth_timeout: std::time::Duration::from_secs(30),
        }
    }
}
