//! This worker's ingest rate, published in its registration for the
//! assigner's `pack` placement (controlplane `assigner::Placement`).
//!
//! The rate is the produced bytes per second, smoothed over about
//! [`TIME_CONSTANT`] so a burst does not move partitions, and it is written
//! to the registration only when it changed markedly, so a steady cluster
//! does not write to etcd (and wake the assigner) every few seconds.

use crate::worker::Worker;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the rate is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The time constant of the rate's exponential smoothing.
pub const TIME_CONSTANT: Duration = Duration::from_secs(15);

/// Rates below this many bytes per second are published as 0 (idle): the
/// assigner then sees an idle cluster as idle, not as the sum of its
/// workers' last small estimates.
pub const IDLE_BYTES_PER_SEC: u64 = 256 * 1024;

/// A smoothed rate estimate from a cumulative byte counter.
#[derive(Debug, Default)]
pub struct RateEstimate {
    rate: f64,
    last: Option<(u64, Instant)>,
}

impl RateEstimate {
    /// Feeds the counter's value `total` read at `now`; returns the
    /// estimate in bytes per second. The weight of a sample grows with the
    /// time it covers, so the estimate of a steady rate is exact whatever
    /// the sampling cadence; the first call only sets the starting point.
    pub fn observe(&mut self, total: u64, now: Instant) -> u64 {
        if let Some((before, at)) = self.last {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            if dt > 0.0 {
                let sample = total.saturating_sub(before) as f64 / dt;
                let keep = (-dt / TIME_CONSTANT.as_secs_f64()).exp();
                self.rate = self.rate * keep + sample * (1.0 - keep);
            }
        }
        self.last = Some((total, now));
        self.rate.round() as u64
    }
}

/// The rate to publish for `estimate`, if it should replace the
/// `published` one: estimates below [`IDLE_BYTES_PER_SEC`] count as 0, and
/// a non-zero rate is rewritten only once it changed by more than a quarter.
pub fn to_publish(published: u64, estimate: u64) -> Option<u64> {
    let rate = if estimate < IDLE_BYTES_PER_SEC {
        0
    } else {
        estimate
    };
    let marked = rate == 0 || published == 0 || published.abs_diff(rate) > published.max(rate) / 4;
    (rate != published && marked).then_some(rate)
}

impl Worker {
    /// Samples the produced bytes every [`SAMPLE_EVERY`] and publishes the
    /// smoothed rate in the registration when it changed markedly, until
    /// `shutdown`.
    pub(crate) async fn report_load_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rates = RateEstimate::default();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let estimate = rates.observe(self.produced_bytes(), Instant::now());
            let Some(rate) = to_publish(self.published_rate().await, estimate) else {
                continue;
            };
            if let Err(e) = self
                .update_registration(|r| r.ingest_bytes_per_sec = rate)
                .await
            {
                tracing::warn!(error = %e, "cannot publish the ingest rate");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_is_estimated_whatever_the_cadence() {
        for every in [Duration::from_secs(1), Duration::from_secs(5)] {
            let mut e = RateEstimate::default();
            let start = Instant::now();
            let mut rate = 0;
            // Ten time constants: the start from zero is forgotten.
            let samples = 150 / every.as_secs() as u32;
            for i in 0..=samples {
                let t = every * i;
                rate = e.observe(u64::from(i) * every.as_secs() * 2_000_000, start + t);
            }
            assert!(rate.abs_diff(2_000_000) < 20_000, "{every:?}: {rate}");
        }
    }

    #[test]
    fn a_burst_moves_the_estimate_only_partly_and_idleness_brings_it_down() {
        let mut e = RateEstimate::default();
        let start = Instant::now();
        e.observe(0, start);
        // 5 s at 50 MB/s after idleness: about a third of it.
        let burst = e.observe(250_000_000, start + Duration::from_secs(5));
        assert!(
            (10_000_000..25_000_000).contains(&burst),
            "{burst} after a 5 s burst"
        );
        // A minute of nothing.
        let idle = e.observe(250_000_000, start + Duration::from_secs(65));
        assert!(idle < burst / 20, "{idle} after a minute idle");
    }

    #[test]
    fn only_marked_changes_are_published_and_small_rates_as_idle() {
        assert_eq!(to_publish(0, 100_000), None, "below the idle line");
        assert_eq!(to_publish(10_000_000, 11_000_000), None, "within a quarter");
        assert_eq!(to_publish(10_000_000, 14_000_000), Some(14_000_000));
        assert_eq!(to_publish(10_000_000, 100_000), Some(0));
        assert_eq!(to_publish(0, 1_000_000), Some(1_000_000));
        assert_eq!(to_publish(300_000, 270_000), None);
    }
}
