//! Thread-safe counters shared between client callbacks and the runner.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hdrhistogram::Histogram;
use rdkafka::error::KafkaError;

/// Highest latency the histograms track: one hour, in microseconds. Larger
/// values are clamped (saturated) to this bound.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Creates an empty latency histogram (microseconds, 3 significant digits).
pub fn new_latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail for any user input.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts errors by kind (e.g. `MessageTimedOut`).
#[derive(Debug, Default)]
pub struct ErrorTally {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl ErrorTally {
    /// Adds one occurrence of `kind`.
    pub fn add(&self, kind: impl Into<String>) {
        self.count(kind);
    }

    /// Adds one occurrence of `kind`; returns how often it has been seen.
    pub fn count(&self, kind: impl Into<String>) -> u64 {
        let mut counts = lock(&self.counts);
        let n = counts.entry(kind.into()).or_insert(0);
        *n += 1;
        *n
    }

    /// Copy of the current counts, sorted by kind.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.counts).clone()
    }
}

/// Short, stable name for a Kafka error: the librdkafka error code name when
/// there is one (e.g. `MessageTimedOut`), else the error's display text.
pub fn error_kind(err: &KafkaError) -> String {
    match err.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn tally_counts_by_kind() {
        let t = ErrorTally::default();
        assert_eq!(t.count("a"), 1);
        t.add("b");
        assert_eq!(t.count("a"), 2);
        let s = t.snapshot();
        assert_eq!(s.get("a"), Some(&2));
        assert_eq!(s.get("b"), Some(&1));
    }

    #[test]
    fn kind_uses_error_code_name() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(error_kind(&e), "MessageTimedOut");
    }

    #[test]
    fn histogram_saturates() {
        let mut h = new_latency_histogram();
        h.saturating_record(0);
        h.saturating_record(u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_LATENCY_US);
    }
}
