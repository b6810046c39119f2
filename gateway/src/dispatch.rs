//! Request decoding and dispatch: header, API key and version checks, then
//! the handler for that API, then response encoding.
//!
//! Unknown API keys and unsupported versions close the connection (as Kafka
//! does), except ApiVersions, which answers an unsupported version with
//! Kafka's v0 fallback carrying UNSUPPORTED_VERSION and our version ranges.

use crate::cluster::ClusterView;
use crate::config::GatewayConfig;
use crate::handlers;
use crate::metrics::GatewayMetrics;
use crate::quota::{Mute, Quotas, RequestQuota};
use crate::router::Router;
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use kafscale_controlplane::acl::{self, Requester};
use kafscale_proto::trace_context::TRACE_TARGET;
use tracing::Instrument;

/// What to send back for one request.
pub enum Outcome {
    Respond(Bytes),
    /// No response (Produce with acks=0).
    Silent,
    /// Close the connection.
    Close,
}

/// The versions we serve per API, intersected with what the protocol crate
/// encodes or [`crate::legacy`] serves below it. Anything not listed is not
/// advertised and not served.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 0, 17),
    (ApiKey::ListOffsets, 0, 10),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::AlterReplicaLogDirs, 0, 2),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::DescribeAcls, 0, 3),
    (ApiKey::CreateAcls, 0, 3),
    (ApiKey::DeleteAcls, 0, 3),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
];

/// The supported version range of `key`, if served.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    let (_, lo, hi) = SUPPORTED.iter().find(|(k, _, _)| *k == key)?;
    let r = key.valid_versions();
    let min = crate::legacy::oldest_version(key).unwrap_or(r.min);
    Some(((*lo).max(min), (*hi).min(r.max)))
}

/// Shared state of request handling.
pub struct Dispatcher {
    cfg: GatewayConfig,
    router: Router,
    producer_ids: handlers::init_producer_id::ProducerIds,
    metrics: GatewayMetrics,
    security: crate::auth::Security,
    quotas: Quotas,
}

/// Context handed to every handler.
pub struct Ctx<'a> {
    pub cfg: &'a GatewayConfig,
    pub router: &'a Router,
    pub view: &'a ClusterView,
    pub version: i16,
    /// The request header's client id ("" if absent).
    pub client_id: &'a str,
    /// The client's address as Kafka shows it in group descriptions ("/10.0.0.1").
    pub client_host: &'a str,
    /// Fired once the request's order is fixed (see [`Sequenced`]).
    pub sequenced: &'a Sequenced,
    /// The request's share of the memory budgets (responses reserve here).
    pub budget: &'a RequestBudget,
    /// This gateway's producer-id block.
    pub producer_ids: &'a handlers::init_producer_id::ProducerIds,
    /// The authenticated principal ("User:ANONYMOUS" on a plaintext listener).
    pub principal: &'a str,
    /// The gateway's metrics (handlers count bytes per topic).
    pub metrics: &'a GatewayMetrics,
    /// The client quotas that apply (produce and fetch charge their bytes).
    pub quota: &'a RequestQuota<'a>,
}

impl Ctx<'_> {
    /// Whether the request's principal may perform `operation` (an
    /// `acl::op` code) on a resource; always true without an authorizer.
    pub fn allowed(&self, operation: i32, resource_type: i32, name: &str) -> bool {
        let Some(cfg) = &self.cfg.authorizer else {
            return true;
        };
        self.view
            .snapshot()
            .acls
            .authorize(cfg, self.requester(), operation, resource_type, name)
    }

    /// The operations the principal may perform on a resource, as Kafka's
    /// authorized-operations bit field (bit n = operation code n); every
    /// supported operation without an authorizer.
    pub fn authorized_operations(&self, resource_type: i32, name: &str) -> i32 {
        acl::supported_operations(resource_type)
            .iter()
            .filter(|&&op| self.allowed(op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op))
    }

    /// [`Self::allowed`] on the cluster resource.
    pub fn allowed_on_cluster(&self, operation: i32) -> bool {
        self.allowed(operation, acl::resource::CLUSTER, acl::CLUSTER_NAME)
    }

    /// [`Self::allowed`] on a topic.
    pub fn allowed_on_topic(&self, operation: i32, topic: &str) -> bool {
        self.allowed(operation, acl::resource::TOPIC, topic)
    }

    /// [`Self::allowed`] on a consumer group.
    pub fn allowed_on_group(&self, operation: i32, group: &str) -> bool {
        self.allowed(operation, acl::resource::GROUP, group)
    }

    /// Whether the principal may create `topic`: CREATE on the cluster or on
    /// the topic, as in Kafka.
    pub fn may_create_topic(&self, topic: &str) -> bool {
        self.allowed_on_cluster(acl::op::CREATE) || self.allowed_on_topic(acl::op::CREATE, topic)
    }

    /// Whether the principal may init an idempotent producer:
    /// IDEMPOTENT_WRITE on the cluster or WRITE on some topic (Kafka's rule).
    pub fn may_write_idempotently(&self) -> bool {
        let Some(cfg) = &self.cfg.authorizer else {
            return true;
        };
        self.allowed_on_cluster(acl::op::IDEMPOTENT_WRITE)
            || self.view.snapshot().acls.authorize_any(
                cfg,
                self.requester(),
                acl::op::WRITE,
                acl::resource::TOPIC,
            )
    }

    fn requester(&self) -> Requester<'_> {
        Requester {
            principal: self.principal,
            host: self.client_host.trim_start_matches('/'),
        }
    }
}

/// Names the topics a request touches on its trace span (only computed
/// when the span is recorded).
pub fn record_topics<'a>(topics: impl Iterator<Item = &'a str>) {
    let span = tracing::Span::current();
    if !span.is_disabled() {
        let names: Vec<&str> = topics.collect();
        span.record("kafka.topics", names.join(",").as_str());
    }
}

pub use crate::auth::ANONYMOUS;

/// Per-connection ordering: a connection's next request is dispatched only
/// after the previous one is sequenced, i.e. its effect on log order is fixed
/// (a produce's batches have offsets, a commit's records are appended).
/// Requests pipeline everything after that point (durability, long polls),
/// so Kafka's in-order guarantee per connection holds without giving up
/// pipelining.
pub use crate::budget::RequestBudget;
pub use kafscale_proto::sequencing::Sequenced;

/// Decodes a request body of type `R` at `version`, or closes.
pub fn decode<R: Decodable>(body: &mut Bytes, version: i16) -> Option<R> {
    match R::decode(body, version) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, version, "malformed request body");
            None
        }
    }
}

/// A response body encoded elsewhere (by a coordinator, at the request's
/// version), behind a response header of `header_version`.
pub fn encode_raw(correlation_id: i32, header_version: i16, body: &Bytes) -> Outcome {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let mut out = BytesMut::with_capacity(16 + body.len());
    match header.encode(&mut out, header_version) {
        Ok(()) => {
            out.extend_from_slice(body);
            Outcome::Respond(out.freeze())
        }
        Err(e) => {
            tracing::error!(error = %e, "response header encoding failed");
            Outcome::Close
        }
    }
}

/// Encodes a response with its header.
pub fn encode<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    resp: &R,
) -> Outcome {
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let mut out = BytesMut::new();
    let res = header
        .encode(&mut out, R::header_version(version))
        .and_then(|_| resp.encode(&mut out, version));
    match res {
        Ok(()) => Outcome::Respond(out.freeze()),
        Err(e) => {
            tracing::error!(version, error = %e, "response encoding failed");
            Outcome::Close
        }
    }
}

impl Dispatcher {
    /// A dispatcher for one gateway, counting into `metrics`.
    pub fn new(cfg: GatewayConfig, router: Router, metrics: GatewayMetrics) -> Self {
        Self {
            cfg,
            router,
            producer_ids: Default::default(),
            quotas: Quotas::new(metrics.clone()),
            metrics,
            security: Default::default(),
        }
    }

    /// The same dispatcher behind a listener with `security` (PLAINTEXT
    /// without it).
    pub fn with_security(mut self, security: crate::auth::Security) -> Self {
        self.security = security;
        self
    }

    /// How the listener establishes who clients are.
    pub fn security(&self) -> &crate::auth::Security {
        &self.security
    }

    /// The gateway settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    /// Whether a new connection from `ip` fits its connection creation
    /// rate quota.
    pub fn admit_connection(&self, ip: std::net::IpAddr) -> bool {
        let snap = self.router.view().snapshot();
        snap.quotas.is_empty()
            || self
                .quotas
                .admit_connection(&snap.quotas, snap.gateways, &ip.to_string())
    }

    /// Handles one request frame from the client at `client_host`;
    /// `sequenced` fires once the next request of the connection may start;
    /// quota charges the request cannot pay at once are owed on `mute`.
    pub async fn dispatch(
        &self,
        mut frame: Bytes,
        client_host: &str,
        principal: &str,
        sequenced: Sequenced,
        budget: &RequestBudget,
        mute: &Mute,
    ) -> Outcome {
        if frame.len() < 8 {
            return Outcome::Close;
        }
        let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let Ok(key) = ApiKey::try_from(raw_key) else {
            tracing::warn!(api_key = raw_key, "unknown API key; closing connection");
            self.metrics.refused("unknown_api");
            return Outcome::Close;
        };
        let Some((lo, hi)) = supported(key) else {
            tracing::warn!(?key, "unsupported API; closing connection");
            self.metrics.refused("unknown_api");
            return Outcome::Close;
        };
        if version < lo || version > hi {
            if key == ApiKey::ApiVersions {
                return handlers::api_versions::unsupported_version(correlation_id);
            }
            tracing::warn!(?key, version, "unsupported version; closing connection");
            self.metrics.refused("unsupported_version");
            return Outcome::Close;
        }
        let header = match RequestHeader::decode(&mut frame, key.request_header_version(version)) {
            Ok(h) => h,
            Err(_) => {
                self.metrics.refused("malformed");
                return Outcome::Close;
            }
        };
        let started = std::time::Instant::now();
        // Only these change log order; everything else may overlap freely.
        if !matches!(key, ApiKey::Produce | ApiKey::OffsetCommit) {
            sequenced.fire();
        }
        let client_id = header.client_id.as_deref().unwrap_or("");
        let snapshot = self.router.view().snapshot();
        let quota = RequestQuota::new(&self.quotas, &snapshot, principal, client_id, mute);
        // Produce bytes count as they arrive (see RequestQuota::producing).
        if key == ApiKey::Produce {
            quota.producing(frame.len());
        }
        let ctx = Ctx {
            cfg: &self.cfg,
            router: &self.router,
            view: self.router.view(),
            version,
            client_id,
            client_host,
            sequenced: &sequenced,
            budget,
            producer_ids: &self.producer_ids,
            principal,
            metrics: &self.metrics,
            quota: &quota,
        };
        let span = tracing::info_span!(
            target: TRACE_TARGET,
            "kafka.request",
            otel.name = format!("{key:?}"),
            otel.kind = "server",
            messaging.system = "kafka",
            kafka.api_version = version,
            kafka.client_id = client_id,
            kafka.principal = principal,
            kafka.topics = tracing::field::Empty,
            client.address = client_host,
        );
        let handled =
            handlers::handle(&ctx, key, header.correlation_id, &mut frame).instrument(span);
        // request_percentage: the time spent running the request is charged.
        let outcome = if quota.times_requests() {
            let (outcome, busy) = crate::quota::timed(handled).await;
            quota.busy(busy);
            outcome
        } else {
            handled.await
        };
        if matches!(outcome, Outcome::Close) {
            self.metrics.refused("malformed");
        } else {
            self.metrics
                .served(key, version, started.elapsed().as_secs_f64());
        }
        if frame.has_remaining() && !matches!(outcome, Outcome::Close) {
            tracing::debug!(?key, left = frame.remaining(), "request had trailing bytes");
        }
        outcome
    }
}
