//! Prometheus metrics of the log worker.

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
};

/// Handles to the worker's metrics (cheap to clone).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub wal_flush_bytes: Histogram,
    pub wal_flush_seconds: Histogram,
    pub storage_errors: IntCounter,
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
            storage_errors: IntCounter::new(
                "kafscale_wal_put_errors_total",
                "Failed WAL PUT attempts",
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
        registry.register(Box::new(m.storage_errors.clone()))?;
        registry.register(Box::new(m.produced_records.clone()))?;
        registry.register(Box::new(m.produced_bytes.clone()))?;
        registry.register(Box::new(m.fetched_bytes.clone()))?;
        registry.register(Box::new(m.cache_reads.clone()))?;
        Ok(m)
    }
}
