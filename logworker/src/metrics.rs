//! Prometheus metrics of the log worker.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry,
};

/// Handles to the worker's metrics (cheap to clone).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub wal_flush_bytes: Histogram,
    pub wal_flush_seconds: Histogram,
    pub produced_records: IntCounter,
    pub produced_bytes: IntCounter,
    pub fetched_bytes: IntCounter,
    pub cache_reads: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            wal_flush_bytes: Histogram::with_opts(
                HistogramOpts::new("kafscale_wal_flush_bytes", "Size of WAL objects written")
                    .buckets(exponential_buckets(1024.0, 4.0, 10)?),
            )?,
            wal_flush_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "kafscale_wal_flush_seconds",
                    "Time from flush start to durable WAL object",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 16)?),
            )?,
            produced_records: IntCounter::new(
                "kafscale_produced_records_total",
                "Records accepted by the worker",
            )?,
            produced_bytes: IntCounter::new(
                "kafscale_produced_bytes_total",
                "Record-batch bytes accepted by the worker",
            )?,
            fetched_bytes: IntCounter::new(
                "kafscale_fetched_bytes_total",
                "Record-batch bytes served by fetches",
            )?,
            cache_reads: IntCounterVec::new(
                Opts::new(
                    "kafscale_chunk_reads_total",
                    "Chunk reads by source (cache or storage)",
                ),
                &["source"],
            )?,
        };
        registry.register(Box::new(m.wal_flush_bytes.clone()))?;
        registry.register(Box::new(m.wal_flush_seconds.clone()))?;
        registry.register(Box::new(m.produced_records.clone()))?;
        registry.register(Box::new(m.produced_bytes.clone()))?;
        registry.register(Box::new(m.fetched_bytes.clone()))?;
        registry.register(Box::new(m.cache_reads.clone()))?;
        Ok(m)
    }
}

/// Handles to the object-store metrics of the S3 implementation and its read
/// replica (cheap to clone). Registered separately from [`Metrics`] so that
/// only processes that talk to S3 export them.
///
/// Label values: `op` is one of `put`, `get`, `get_range`, `list`, `delete`;
/// `outcome` is `ok`, `already_exists`, `not_found`, `transient`, `permanent`
/// or `invalid_key`.
#[derive(Clone, Debug)]
pub struct S3Metrics {
    /// `kafscale_s3_requests_total{op,outcome}`: one per store call (a `list`
    /// counts once however many pages it reads).
    pub requests: IntCounterVec,
    /// `kafscale_s3_request_seconds{op}`: wall time of each store call.
    pub request_seconds: HistogramVec,
    /// `kafscale_s3_bytes_total{op}`: body bytes written by successful `put`s
    /// and read by successful `get`/`get_range`s.
    pub bytes: IntCounterVec,
    /// `kafscale_s3_replica_reads_total{outcome}`: reads through the read
    /// replica, `hit` (served by the replica) or `fallback` (served by, or
    /// failed on, the primary).
    pub replica_reads: IntCounterVec,
}

impl S3Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_seconds.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.replica_reads.clone()))?;
        Ok(m)
    }

    /// Creates the metrics without registering them (for tools and tests
    /// that do not export metrics).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "kafscale_s3_requests_total",
                    "Object store calls by operation and outcome",
                ),
                &["op", "outcome"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "kafscale_s3_request_seconds",
                    "Latency of object store calls by operation",
                )
                .buckets(exponential_buckets(0.001, 2.0, 16)?),
                &["op"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "kafscale_s3_bytes_total",
                    "Object body bytes written (put) and read (get, get_range)",
                ),
                &["op"],
            )?,
            replica_reads: IntCounterVec::new(
                Opts::new(
                    "kafscale_s3_replica_reads_total",
                    "Reads through the read replica: hit or fallback to the primary",
                ),
                &["outcome"],
            )?,
        })
    }
}

/// Handles to the metrics of the object store's retry wrapper
/// (`objstore::retry::RetryingStore`), the one place where failed attempts
/// are seen: every failed attempt is counted, not only the calls that fail
/// after all retries, so the counters move while storage is failing even
/// when retries hide it from clients.
#[derive(Clone, Debug)]
pub struct RetryMetrics {
    /// `kafscale_wal_put_errors_total`: failed PUT attempts of WAL and seal
    /// objects (transient or permanent; a lost conditional create, which is
    /// fencing and not a storage failure, is not counted).
    pub put_errors: IntCounter,
    /// `kafscale_object_store_retries_total{op}`: attempts retried after a
    /// transient failure, by operation (`put`, `get`, `get_range`, `list`,
    /// `delete`).
    pub retries: IntCounterVec,
}

impl RetryMetrics {
    /// Creates the metrics and registers them in `registry` (tests pass a
    /// registry of their own).
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let put_errors = IntCounter::new(
            "kafscale_wal_put_errors_total",
            "Failed object-store PUT attempts (WAL and seal objects), each retry counted",
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "kafscale_object_store_retries_total",
                "Object store attempts retried after a transient failure, by operation",
            ),
            &["op"],
        )?;
        registry.register(Box::new(put_errors.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        Ok(Self {
            put_errors,
            retries,
        })
    }
}
