//! Prometheus metrics of a gateway: requests by API and version, their
//! latency, requests refused by closing the connection, client connections,
//! and record bytes in and out per topic.
//!
//! Cardinality is bounded: API and version come from the served table, the
//! refusal reasons and connection outcomes are fixed sets, and the topic
//! label can be turned off (`KAFSCALE_METRICS_TOPIC_LABELS=false`: every
//! topic counts as `topic=""`).

use crate::dispatch::{supported, SUPPORTED};
use kafka_protocol::messages::ApiKey;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};
use std::collections::HashMap;

/// The series one request of an API at a version counts into, resolved
/// once at start so a request costs no label lookup or allocation.
#[derive(Clone, Debug)]
struct RequestSeries {
    count: IntCounter,
    seconds: Histogram,
}

/// Handles to the gateway's metrics (cheap to clone).
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    /// `kafscale_gateway_requests_total{api,version}`: requests served.
    pub requests: IntCounterVec,
    /// `kafscale_gateway_request_seconds{api}`: from a request's frame to its
    /// answer (an acknowledged produce includes waiting for durability, a
    /// fetch its long poll).
    pub request_seconds: HistogramVec,
    /// `kafscale_gateway_refused_requests_total{reason}`: requests answered by
    /// closing the connection (`unknown_api`, `unsupported_version`,
    /// `malformed`, `frame_size`).
    pub refused_requests: IntCounterVec,
    /// `kafscale_gateway_connections`: open client connections.
    pub connections: IntGauge,
    /// `kafscale_gateway_connections_total{outcome}`: accepted connections
    /// (`accepted`) and those closed on accept (`gateway_limit`,
    /// `address_limit`, `quota`, `drained`).
    pub connections_total: IntCounterVec,
    /// `kafscale_gateway_produced_bytes_total{topic}`: record-batch bytes of
    /// produce requests routed to workers.
    pub produced_bytes: IntCounterVec,
    /// `kafscale_gateway_fetched_bytes_total{topic}`: record-batch bytes of
    /// fetch answers.
    pub fetched_bytes: IntCounterVec,
    /// `kafscale_gateway_authentications_total{mechanism,outcome}`: SASL
    /// authentications (`success`, `failure`) and TLS handshakes
    /// (mechanism `TLS`; `failure` when the handshake or the client's
    /// certificate fails).
    pub authentications: IntCounterVec,
    /// `kafscale_gateway_down_converted_bytes_total`: stored record-batch
    /// bytes down-converted to magic 0 or 1 for Fetch v0–3.
    pub down_converted_bytes: IntCounter,
    /// `kafscale_gateway_throttled_total{quota}`: charges that exceeded a
    /// client quota (a throttled answer, or a connection closed on accept
    /// for `connection_creation_rate`).
    pub throttled_total: IntCounterVec,
    /// `kafscale_gateway_throttle_seconds_total{quota}`: throttle time
    /// handed to clients (the time their connections stay muted).
    pub throttle_seconds: prometheus::CounterVec,
    topic_labels: bool,
    /// By (API key, version), for every served pair.
    series: HashMap<(ApiKey, i16), RequestSeries>,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry, topic_labels: bool) -> Result<Self, prometheus::Error> {
        let mut m = Self {
            requests: IntCounterVec::new(
                Opts::new("kafscale_gateway_requests_total", "Kafka requests served"),
                &["api", "version"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "kafscale_gateway_request_seconds",
                    "Time from a Kafka request's frame to its answer",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 16)?),
                &["api"],
            )?,
            refused_requests: IntCounterVec::new(
                Opts::new(
                    "kafscale_gateway_refused_requests_total",
                    "Kafka requests answered by closing the connection",
                ),
                &["reason"],
            )?,
            connections: IntGauge::new(
                "kafscale_gateway_connections",
                "Open Kafka client connections",
            )?,
            connections_total: IntCounterVec::new(
                Opts::new(
                    "kafscale_gateway_connections_total",
                    "Kafka client connections by outcome of their accept",
                ),
                &["outcome"],
            )?,
            produced_bytes: IntCounterVec::new(
                Opts::new(
                    "kafscale_gateway_produced_bytes_total",
                    "Record-batch bytes produced, by topic",
                ),
                &["topic"],
            )?,
            fetched_bytes: IntCounterVec::new(
                Opts::new(
                    "kafscale_gateway_fetched_bytes_total",
                    "Record-batch bytes fetched, by topic",
                ),
                &["topic"],
            )?,
            authentications: IntCounterVec::new(
                Opts::new(
                    "kafscale_gateway_authentications_total",
                    "Authentications by mechanism and outcome",
                ),
                &["mechanism", "outcome"],
            )?,
            down_converted_bytes: IntCounter::new(
                "kafscale_gateway_down_converted_bytes_total",
                "Stored record-batch bytes down-converted for Fetch v0-3",
            )?,
            throttled_total: IntCounterVec::new(
                Opts::new(
                    "kafscale_gateway_throttled_total",
                    "Charges that exceeded a client quota, by quota",
                ),
                &["quota"],
            )?,
            throttle_seconds: prometheus::CounterVec::new(
                Opts::new(
                    "kafscale_gateway_throttle_seconds_total",
                    "Throttle time handed to clients, by quota",
                ),
                &["quota"],
            )?,
            topic_labels,
            series: HashMap::new(),
        };
        for (key, _, _) in SUPPORTED {
            let Some((lo, hi)) = supported(*key) else {
                continue;
            };
            let api = format!("{key:?}");
            let seconds = m.request_seconds.get_metric_with_label_values(&[&api])?;
            for v in lo..=hi {
                let count = m
                    .requests
                    .get_metric_with_label_values(&[&api, &v.to_string()])?;
                m.series.insert(
                    (*key, v),
                    RequestSeries {
                        count,
                        seconds: seconds.clone(),
                    },
                );
            }
        }
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_seconds.clone()))?;
        registry.register(Box::new(m.refused_requests.clone()))?;
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.connections_total.clone()))?;
        registry.register(Box::new(m.authentications.clone()))?;
        registry.register(Box::new(m.produced_bytes.clone()))?;
        registry.register(Box::new(m.fetched_bytes.clone()))?;
        registry.register(Box::new(m.down_converted_bytes.clone()))?;
        registry.register(Box::new(m.throttled_total.clone()))?;
        registry.register(Box::new(m.throttle_seconds.clone()))?;
        Ok(m)
    }

    /// The topic label value for `topic` (empty when topic labels are off).
    pub fn topic<'a>(&self, topic: &'a str) -> &'a str {
        if self.topic_labels {
            topic
        } else {
            ""
        }
    }

    /// Counts `bytes` produced to `topic`.
    pub fn produced(&self, topic: &str, bytes: usize) {
        self.produced_bytes
            .with_label_values(&[self.topic(topic)])
            .inc_by(bytes as u64);
    }

    /// Counts `bytes` fetched from `topic`.
    pub fn fetched(&self, topic: &str, bytes: usize) {
        self.fetched_bytes
            .with_label_values(&[self.topic(topic)])
            .inc_by(bytes as u64);
    }

    /// Counts `bytes` of stored batches down-converted for an old fetch.
    pub fn down_converted(&self, bytes: usize) {
        self.down_converted_bytes.inc_by(bytes as u64);
    }

    /// Counts a served request of `key` at `version` that took `seconds`.
    pub fn served(&self, key: ApiKey, version: i16, seconds: f64) {
        if let Some(s) = self.series.get(&(key, version)) {
            s.count.inc();
            s.seconds.observe(seconds);
        }
    }

    /// Counts a charge over the `quota` and the throttle time it earned.
    pub fn throttled(&self, quota: &str, throttle: std::time::Duration) {
        self.throttled_total.with_label_values(&[quota]).inc();
        self.throttle_seconds
            .with_label_values(&[quota])
            .inc_by(throttle.as_secs_f64());
    }

    /// Counts a request refused by closing the connection.
    pub fn refused(&self, reason: &str) {
        self.refused_requests.with_label_values(&[reason]).inc();
    }
}
