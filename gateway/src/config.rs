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
    /// Requests of one connection processed concurrently (answered in order).
    pub max_pipelined: usize,
    /// ACL authorization; `None` allows everything and refuses the ACL APIs
    /// with SECURITY_DISABLED, as a Kafka broker without an authorizer does.
    pub authorizer: Option<kafscale_controlplane::acl::AuthorizerConfig>,
}
