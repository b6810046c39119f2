//! When a worker's WAL buffer becomes one object: the cost-aware flush policy.
//!
//! S3 bills per PUT, so an object should be big; a produce is acknowledged
//! only once its object exists, so no byte should wait long. The policy
//! flushes the buffer when
//! - it holds `flush_bytes` (the hard size trigger), or
//! - it holds `target_bytes` and its oldest byte has waited `min_interval`, or
//! - its oldest byte has waited the current interval: the time the worker's
//!   observed ingest rate needs to fill `target_bytes`, clamped to
//!   `[min_interval, max_interval]`.
//!
//! So at high rates objects are about `target_bytes` and latency falls
//! towards `min_interval`; at low rates objects are as big as
//! `max_interval` allows, at most one PUT per `max_interval` per worker, and
//! no byte waits in the buffer longer than `max_interval`.

use std::time::Duration;
use tokio::time::Instant;

/// How fast the ingest-rate estimate forgets: the time constant of its
/// exponential decay.
const RATE_TIME_CONSTANT: Duration = Duration::from_secs(1);

/// A named set of flush settings (`KAFSCALE_WAL_FLUSH_PROFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushProfile {
    /// Objects of ~4 MiB when the rate allows, no byte waits over 200 ms.
    Balanced,
    /// Objects of ~8 MiB, bytes wait up to 1 s: fewest PUTs.
    Cost,
    /// Objects of ~1 MiB, bytes wait at most 50 ms: lowest ack latency.
    Latency,
    /// Objects of ~1 MiB, bytes wait at most 5 ms: for a store without a
    /// price per request (`kafscale dev`'s local directory or memory).
    Local,
}

/// The thresholds of the flush policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushSettings {
    /// Flush at once when the buffer holds this many bytes.
    pub flush_bytes: usize,
    /// The object size the policy aims for.
    pub target_bytes: usize,
    /// A buffer is never flushed below `flush_bytes` before its oldest byte
    /// waited this long.
    pub min_interval: Duration,
    /// No buffered byte waits longer than this.
    pub max_interval: Duration,
}

/// A profile name that is none of `balanced`, `cost`, `latency`, `local`.
#[derive(Debug, thiserror::Error)]
#[error("unknown flush profile {0:?} (balanced, cost, latency or local)")]
pub struct UnknownProfile(String);

impl std::str::FromStr for FlushProfile {
    type Err = UnknownProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "balanced" => Ok(FlushProfile::Balanced),
            "cost" => Ok(FlushProfile::Cost),
            "latency" => Ok(FlushProfile::Latency),
            "local" => Ok(FlushProfile::Local),
            other => Err(UnknownProfile(other.to_string())),
        }
    }
}

impl std::fmt::Display for FlushProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlushProfile::Balanced => "balanced",
            FlushProfile::Cost => "cost",
            FlushProfile::Latency => "latency",
            FlushProfile::Local => "local",
        })
    }
}

impl FlushProfile {
    /// The profile's settings.
    pub const fn settings(self) -> FlushSettings {
        const fn ms(n: u64) -> Duration {
            Duration::from_millis(n)
        }
        let mib = 1024 * 1024;
        match self {
            FlushProfile::Balanced => FlushSettings {
                flush_bytes: 8 * mib,
                target_bytes: 4 * mib,
                min_interval: ms(10),
                max_interval: ms(200),
            },
            FlushProfile::Cost => FlushSettings {
                flush_bytes: 16 * mib,
                target_bytes: 8 * mib,
                min_interval: ms(50),
                max_interval: ms(1000),
            },
            FlushProfile::Latency => FlushSettings {
                flush_bytes: 8 * mib,
                target_bytes: mib,
                min_interval: ms(5),
                max_interval: ms(50),
            },
            FlushProfile::Local => FlushSettings {
                flush_bytes: 8 * mib,
                target_bytes: mib,
                min_interval: ms(1),
                max_interval: ms(5),
            },
        }
    }
}

impl FlushSettings {
    /// The same settings made consistent: `target_bytes` at most
    /// `flush_bytes`, `min_interval` at most `max_interval`, both sizes at
    /// least 1.
    pub fn normalized(mut self) -> Self {
        self.flush_bytes = self.flush_bytes.max(1);
        self.target_bytes = self.target_bytes.clamp(1, self.flush_bytes);
        self.min_interval = self.min_interval.min(self.max_interval);
        self
    }
}

impl FlushSettings {
    /// The ingest rate (bytes per second) from which objects reach
    /// `target_bytes` within `max_interval`; below it a worker writes one
    /// object per `max_interval` whatever its rate.
    pub fn target_rate(&self) -> u64 {
        let secs = self.max_interval.as_secs_f64().max(1e-3);
        (self.target_bytes as f64 / secs).round() as u64
    }
}

/// The flush policy of one writer, with its estimate of the ingest rate.
#[derive(Debug)]
pub struct FlushPolicy {
    settings: FlushSettings,
    /// Estimated bytes per second appended to the writer.
    rate: f64,
    /// When the buffer was last taken for a flush.
    last_take: Option<Instant>,
}

impl FlushPolicy {
    /// A policy with `settings` and no rate observed yet (the first buffer
    /// waits `max_interval` unless it fills).
    pub fn new(settings: FlushSettings) -> Self {
        Self {
            settings: settings.normalized(),
            rate: 0.0,
            last_take: None,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> FlushSettings {
        self.settings
    }

    /// The estimated ingest rate, bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Records that a buffer of `bytes` was taken for a flush at `now`: the
    /// bytes appended since the previous take. The estimate is an
    /// exponentially weighted mean whose weight depends on elapsed time, so
    /// it is exact for a steady rate whatever the flush cadence, and an idle
    /// gap lowers it as much as its length says.
    pub fn observe_take(&mut self, bytes: usize, now: Instant) {
        let Some(last) = self.last_take.replace(now) else {
            return;
        };
        let dt = now.saturating_duration_since(last).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        let sample = bytes as f64 / dt;
        let keep = (-dt / RATE_TIME_CONSTANT.as_secs_f64()).exp();
        self.rate = self.rate * keep + sample * (1.0 - keep);
    }

    /// How long the oldest buffered byte may wait at the current rate.
    pub fn interval(&self) -> Duration {
        let s = &self.settings;
        if self.rate <= 0.0 {
            return s.max_interval;
        }
        let fill = self.settings.target_bytes as f64 / self.rate;
        Duration::from_secs_f64(fill.min(s.max_interval.as_secs_f64())).max(s.min_interval)
    }

    /// When a buffer of `bytes` whose oldest byte arrived at `first_at` is
    /// to be flushed (now, if the result is not in the future).
    pub fn due(&self, bytes: usize, first_at: Instant) -> Instant {
        let s = &self.settings;
        if bytes >= s.flush_bytes {
            first_at
        } else if bytes >= s.target_bytes {
            first_at + s.min_interval
        } else {
            first_at + self.interval()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn policy() -> FlushPolicy {
        FlushPolicy::new(BALANCED)
    }

    const BALANCED: FlushSettings = FlushProfile::Balanced.settings();

    /// Feeds a steady `rate` (bytes/s) flushed every `every`, `n` times.
    fn feed(p: &mut FlushPolicy, start: Instant, rate: f64, every: Duration, n: u32) -> Instant {
        let mut t = start;
        for _ in 0..n {
            t += every;
            p.observe_take((rate * every.as_secs_f64()) as usize, t);
        }
        t
    }

    #[test]
    fn the_first_buffer_waits_the_ceiling() {
        let p = policy();
        assert_eq!(p.interval(), BALANCED.max_interval);
    }

    #[test]
    fn a_steady_rate_is_estimated_whatever_the_flush_cadence() {
        for every in [10, 50, 200, 1000] {
            let mut p = policy();
            feed(
                &mut p,
                Instant::now(),
                5e6,
                Duration::from_millis(every),
                (10_000 / every) as u32,
            );
            assert!(
                (p.rate() - 5e6).abs() < 5e6 * 0.01,
                "{every} ms: {}",
                p.rate()
            );
        }
    }

    #[test]
    fn the_interval_fills_the_target_between_floor_and_ceiling() {
        let t0 = Instant::now();
        // 5 MB/s fills 4 MiB in 0.84 s: the ceiling holds.
        let mut p = policy();
        feed(&mut p, t0, 5e6, Duration::from_millis(200), 50);
        assert_eq!(p.interval(), BALANCED.max_interval);
        // 40 MiB/s fills 4 MiB in 100 ms.
        let mut p = policy();
        feed(
            &mut p,
            t0,
            40.0 * MIB as f64,
            Duration::from_millis(100),
            50,
        );
        let ms = p.interval().as_secs_f64() * 1e3;
        assert!((ms - 100.0).abs() < 2.0, "{ms}");
        // 4 GiB/s would fill it in 1 ms: the floor holds.
        let mut p = policy();
        feed(
            &mut p,
            t0,
            4096.0 * MIB as f64,
            Duration::from_millis(10),
            50,
        );
        assert_eq!(p.interval(), BALANCED.min_interval);
    }

    #[test]
    fn an_idle_gap_brings_the_estimate_down() {
        let t0 = Instant::now();
        let mut p = policy();
        let t = feed(&mut p, t0, 50e6, Duration::from_millis(80), 50);
        p.observe_take(1000, t + Duration::from_secs(30));
        assert!(p.rate() < 1e3, "{}", p.rate());
        assert_eq!(p.interval(), BALANCED.max_interval);
    }

    #[test]
    fn size_thresholds_bring_the_flush_forward() {
        let p = policy();
        let t0 = Instant::now();
        assert_eq!(p.due(100, t0), t0 + BALANCED.max_interval);
        assert_eq!(p.due(BALANCED.target_bytes, t0), t0 + BALANCED.min_interval);
        assert_eq!(p.due(BALANCED.flush_bytes, t0), t0);
    }

    #[test]
    fn profile_names_round_trip() {
        for name in ["balanced", "cost", "latency", "local"] {
            let p: FlushProfile = name.parse().expect("known");
            assert_eq!(p.to_string(), name);
        }
        assert!("cheap".parse::<FlushProfile>().is_err());
    }

    #[test]
    fn settings_are_made_consistent() {
        let s = FlushSettings {
            flush_bytes: MIB,
            target_bytes: 4 * MIB,
            min_interval: Duration::from_millis(500),
            max_interval: Duration::from_millis(100),
        }
        .normalized();
        assert_eq!(s.target_bytes, MIB);
        assert_eq!(s.min_interval, Duration::from_millis(100));
    }

    #[test]
    fn every_profile_keeps_its_promises() {
        for profile in [
            FlushProfile::Balanced,
            FlushProfile::Cost,
            FlushProfile::Latency,
            FlushProfile::Local,
        ] {
            let s = profile.settings();
            assert_eq!(s, s.normalized(), "{profile:?}");
        }
        let (b, c, l) = (
            FlushProfile::Balanced.settings(),
            FlushProfile::Cost.settings(),
            FlushProfile::Latency.settings(),
        );
        assert!(c.max_interval > b.max_interval && b.max_interval > l.max_interval);
        assert!(l.max_interval > FlushProfile::Local.settings().max_interval);
        assert!(c.target_bytes > b.target_bytes && b.target_bytes > l.target_bytes);
    }
}
