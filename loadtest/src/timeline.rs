//! Per-interval samples of a run (the timeline behind the live progress and
//! the HTML plots).

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::LatencySummary;
use crate::stats::new_latency_histogram;

/// What one side (produce or consume) did in one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideSample {
    /// Measured records so far (acknowledged, or distinct consumed).
    pub total: u64,
    /// Records per second in this interval.
    pub records_per_sec: f64,
    /// Megabytes (1e6 bytes of values) per second in this interval.
    pub mb_per_sec: f64,
    /// Latency percentiles of this interval's records; `None` without any.
    pub latency_ms: Option<LatencySummary>,
}

/// One interval of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// End of the interval, seconds since the measured phase started.
    pub t_secs: f64,
    /// Length of the interval in seconds.
    pub interval_secs: f64,
    /// Mean target rate over the interval, when the run has one.
    pub target_rate: Option<f64>,
    /// Index of the scenario stage running at the end of the interval.
    pub stage: Option<usize>,
    /// Producer side, when producing.
    pub produce: Option<SideSample>,
    /// Consumer side, when consuming.
    pub consume: Option<SideSample>,
    /// Delivery failures plus consumer errors so far.
    pub errors: u64,
}

/// Cumulative counters of one side at one instant, plus the latencies
/// recorded since the previous reading.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Measured records so far.
    pub records: u64,
    /// Value bytes so far.
    pub bytes: u64,
    /// Latencies (microseconds) since the previous reading.
    pub interval_us: Histogram<u64>,
}

/// Where the interval ends and what the run aimed for then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    /// Seconds since the measured phase started.
    pub t_secs: f64,
    /// Mean target rate over the interval ending at `t_secs`.
    pub target_rate: Option<f64>,
    /// Scenario stage at `t_secs`.
    pub stage: Option<usize>,
    /// Errors so far.
    pub errors: u64,
}

/// Running state of one side: the previous counters and every latency so far.
#[derive(Debug)]
struct Side {
    records: u64,
    bytes: u64,
    so_far: Histogram<u64>,
}

impl Side {
    fn new() -> Self {
        Self {
            records: 0,
            bytes: 0,
            so_far: new_latency_histogram(),
        }
    }

    fn advance(&mut self, reading: Reading, secs: f64) -> SideSample {
        let records = reading.records.saturating_sub(self.records);
        let bytes = reading.bytes.saturating_sub(self.bytes);
        self.records = reading.records;
        self.bytes = reading.bytes;
        // Both histograms have the same bounds, so adding cannot fail; a
        // failure would only drop this interval from the running figures.
        let _ = self.so_far.add(&reading.interval_us);
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        SideSample {
            total: reading.records,
            records_per_sec: per_sec(records),
            mb_per_sec: per_sec(bytes) / 1e6,
            latency_ms: LatencySummary::from_histogram(&reading.interval_us),
        }
    }
}

/// Turns successive readings into [`Sample`]s; rates cover exactly the time
/// between two readings, and the running percentiles cover every reading.
#[derive(Debug)]
pub struct Sampler {
    last_t: f64,
    produce: Side,
    consume: Side,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    /// A sampler whose first interval starts at 0 s.
    pub fn new() -> Self {
        Self {
            last_t: 0.0,
            produce: Side::new(),
            consume: Side::new(),
        }
    }

    /// The sample of the interval ending at `tick`.
    pub fn sample(
        &mut self,
        tick: Tick,
        produce: Option<Reading>,
        consume: Option<Reading>,
    ) -> Sample {
        let secs = (tick.t_secs - self.last_t).max(0.0);
        self.last_t = tick.t_secs;
        Sample {
            t_secs: tick.t_secs,
            interval_secs: secs,
            target_rate: tick.target_rate,
            stage: tick.stage,
            produce: produce.map(|r| self.produce.advance(r, secs)),
            consume: consume.map(|r| self.consume.advance(r, secs)),
            errors: tick.errors,
        }
    }

    /// Produce latency over every reading so far.
    pub fn produce_so_far(&self) -> Option<LatencySummary> {
        LatencySummary::from_histogram(&self.produce.so_far)
    }

    /// End-to-end latency over every reading so far.
    pub fn consume_so_far(&self) -> Option<LatencySummary> {
        LatencySummary::from_histogram(&self.consume.so_far)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(records: u64, bytes: u64, latencies_us: &[u64]) -> Reading {
        let mut interval_us = new_latency_histogram();
        for &l in latencies_us {
            interval_us.saturating_record(l);
        }
        Reading {
            records,
            bytes,
            interval_us,
        }
    }

    fn tick(t_secs: f64) -> Tick {
        Tick {
            t_secs,
            target_rate: Some(100.0),
            stage: Some(0),
            errors: 0,
        }
    }

    #[test]
    fn rates_cover_the_interval_and_percentiles_accumulate() {
        let mut s = Sampler::new();
        let a = s.sample(
            tick(1.0),
            Some(reading(100, 2_000_000, &[1_000, 3_000])),
            None,
        );
        let p = a.produce.expect("produce");
        assert_eq!(
            (p.total, p.records_per_sec, p.mb_per_sec),
            (100, 100.0, 2.0)
        );
        assert!(a.consume.is_none());
        // Half a second later: 50 more records is 100 records/s.
        let b = s.sample(tick(1.5), Some(reading(150, 3_000_000, &[9_000])), None);
        let p = b.produce.expect("produce");
        assert_eq!(
            (b.interval_secs, p.records_per_sec, p.mb_per_sec),
            (0.5, 100.0, 2.0)
        );
        let interval = p.latency_ms.expect("latency");
        assert_eq!(interval.count, 1);
        let so_far = s.produce_so_far().expect("so far");
        assert_eq!(so_far.count, 3);
        assert!((so_far.max_ms - 9.0).abs() < 0.01, "{so_far:?}");
        // An interval without records has no latency and zero rate.
        let c = s.sample(tick(2.5), Some(reading(150, 3_000_000, &[])), None);
        let p = c.produce.expect("produce");
        assert_eq!((p.records_per_sec, p.latency_ms), (0.0, None));
    }
}
