//! Monotonic clock expressed in unix-epoch nanoseconds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Converts a monotonic [`Instant`] into unix nanoseconds, anchored once at
/// construction, so latencies inside one process are immune to wall-clock
/// steps while timestamps stay comparable across processes on one host.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    base_unix_ns: u64,
}

impl Clock {
    /// Anchors a new clock at the current wall-clock time.
    pub fn new() -> Self {
        let base_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(saturating_nanos)
            .unwrap_or(0);
        Self {
            base: Instant::now(),
            base_unix_ns,
        }
    }

    /// Current time in unix nanoseconds.
    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    /// Unix nanoseconds corresponding to `instant`.
    pub fn ns_at(&self, instant: Instant) -> u64 {
        self.base_unix_ns.saturating_add(saturating_nanos(
            instant.saturating_duration_since(self.base),
        ))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Duration in nanoseconds, saturating at `u64::MAX`.
pub fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_anchored() {
        let c = Clock::new();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a);
        let later = Instant::now() + Duration::from_millis(5);
        assert!(c.ns_at(later) >= a + 5_000_000);
    }
}
