//! The send schedule of a scenario: target rate over time, how many records
//! are due by a given time, and when record `i` is due.

use super::{Scenario, StageKind};

/// One stage on the time axis. The rate moves linearly from `r0` to `r1`
/// over the stage (constant when they are equal).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start_secs: f64,
    secs: f64,
    r0: f64,
    r1: f64,
    /// Records due before the stage starts (fractional).
    due_before: f64,
    producers: u32,
    consumers: u32,
}

impl Segment {
    /// Records due within the first `x` seconds of the stage.
    fn due_within(&self, x: f64) -> f64 {
        let x = x.clamp(0.0, self.secs);
        self.r0 * x + (self.r1 - self.r0) / (2.0 * self.secs) * x * x
    }

    fn end_secs(&self) -> f64 {
        self.start_secs + self.secs
    }
}

/// Records of one stage, by global index: `first..end`, sent by the first
/// `producers` producers in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// First global record index of the stage.
    pub first: u64,
    /// One past the last index.
    pub end: u64,
    /// Producers sending this stage's records.
    pub producers: u32,
}

/// The schedule of a scenario. Time is in seconds from the start of the
/// measured phase; record `i` is due when `i` records are due, so the sends
/// follow the target rate curve exactly (also between whole seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    segments: Vec<Segment>,
}

impl Schedule {
    /// The schedule of a validated scenario.
    pub fn new(scenario: &Scenario) -> Self {
        let mut segments: Vec<Segment> = Vec::with_capacity(scenario.stages.len());
        for stage in &scenario.stages {
            let (start_secs, due_before, prev_rate) =
                segments.last().map_or((0.0, 0.0, 0.0), |s| {
                    (s.end_secs(), s.due_before + s.due_within(s.secs), s.r1)
                });
            let r0 = match stage.kind {
                StageKind::Ramp => prev_rate,
                StageKind::Steady | StageKind::Spike => stage.rate,
            };
            segments.push(Segment {
                start_secs,
                secs: stage.duration_secs,
                r0,
                r1: stage.rate,
                due_before,
                producers: stage.producers,
                consumers: stage.consumers,
            });
        }
        Self { segments }
    }

    /// Length of the schedule in seconds.
    pub fn total_secs(&self) -> f64 {
        self.segments.last().map_or(0.0, Segment::end_secs)
    }

    fn segment_at(&self, t: f64) -> Option<(usize, &Segment)> {
        self.segments
            .iter()
            .enumerate()
            .find(|(_, s)| t >= s.start_secs && t < s.end_secs())
    }

    /// Index of the stage running at `t` seconds; `None` before 0 and after the end.
    pub fn stage_at(&self, t: f64) -> Option<usize> {
        self.segment_at(t).map(|(i, _)| i)
    }

    /// Target rate in records/s at `t` seconds (0 outside the schedule).
    pub fn rate_at(&self, t: f64) -> f64 {
        self.segment_at(t).map_or(0.0, |(_, s)| {
            s.r0 + (s.r1 - s.r0) * (t - s.start_secs) / s.secs
        })
    }

    /// Consumers the stage running at `t` asks for; after the end, the most
    /// any stage used, so that the consumers can catch up.
    pub fn consumers_at(&self, t: f64) -> u32 {
        match self.segment_at(t) {
            Some((_, s)) => s.consumers,
            None => self.segments.iter().map(|s| s.consumers).max().unwrap_or(0),
        }
    }

    /// Records due in the first `t` seconds (fractional).
    pub fn due_by(&self, t: f64) -> f64 {
        self.segments
            .iter()
            .rev()
            .find(|s| t >= s.start_secs)
            .map_or(0.0, |s| s.due_before + s.due_within(t - s.start_secs))
    }

    /// Records the whole schedule sends.
    pub fn total_records(&self) -> u64 {
        first_index(self.due_by(self.total_secs()))
    }

    /// Whole records due from `t0` (inclusive) to `t1` (exclusive) seconds.
    pub fn records_between(&self, t0: f64, t1: f64) -> u64 {
        let total = self.total_records();
        let at = |t: f64| first_index(self.due_by(t)).min(total);
        at(t1).saturating_sub(at(t0))
    }

    /// Mean target rate from `t0` to `t1` seconds (records due in that time
    /// over its length); the rate at `t1` when the span is empty.
    pub fn mean_rate(&self, t0: f64, t1: f64) -> f64 {
        if t1 - t0 <= 1e-9 {
            return self.rate_at(t1);
        }
        (self.due_by(t1) - self.due_by(t0)) / (t1 - t0)
    }

    /// Seconds from the start at which record `i` is due.
    pub fn time_of(&self, i: u64) -> f64 {
        let n = i as f64;
        let Some(s) = self
            .segments
            .iter()
            .rev()
            .find(|s| n >= s.due_before && s.due_within(s.secs) > 0.0)
        else {
            return 0.0;
        };
        // Solve due_within(x) = m for x: a x^2 + b x - m = 0, in the form that
        // stays exact when a is 0 (constant rate) or negative (ramp down).
        let m = n - s.due_before;
        let a = (s.r1 - s.r0) / (2.0 * s.secs);
        let b = s.r0;
        let root = (b * b + 4.0 * a * m).max(0.0).sqrt();
        let x = if b + root > 0.0 {
            2.0 * m / (b + root)
        } else {
            0.0
        };
        s.start_secs + x.min(s.secs)
    }

    /// Record index ranges of the stages, in order; stages without records
    /// are left out.
    pub fn slices(&self) -> Vec<Slice> {
        let total = self.total_records();
        self.segments
            .iter()
            .map(|s| Slice {
                first: first_index(s.due_before).min(total),
                end: first_index(s.due_before + s.due_within(s.secs)).min(total),
                producers: s.producers,
            })
            .filter(|s| s.end > s.first)
            .collect()
    }

    /// Stage boundaries in seconds: start of every stage and the end.
    pub fn boundaries(&self) -> Vec<f64> {
        let mut b: Vec<f64> = self.segments.iter().map(|s| s.start_secs).collect();
        b.push(self.total_secs());
        b
    }
}

/// First whole record index at or after `due` records, forgiving the
/// rounding error of summed floats.
fn first_index(due: f64) -> u64 {
    (due - 1e-6).ceil().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::fixtures::scenario;

    fn schedule(stages: &str) -> Schedule {
        Schedule::new(&scenario(&format!("stages:\n{stages}")))
    }

    /// ramp 0 -> 100/s over 4 s, steady 100/s for 3 s, spike 400/s for 1 s,
    /// ramp 400 -> 0 over 2 s.
    fn rss() -> Schedule {
        schedule(
            "- {kind: ramp, rate: 100, duration_secs: 4}\n\
             - {kind: steady, duration_secs: 3, consumers: 2}\n\
             - {kind: spike, rate: 400, duration_secs: 1, producers: 3}\n\
             - {kind: ramp, rate: 0, duration_secs: 2}\n",
        )
    }

    #[test]
    fn per_second_targets_follow_the_stages() {
        let s = rss();
        assert_eq!(s.total_secs(), 10.0);
        // Ramp: mean rate of each second is 12.5, 37.5, 62.5, 87.5.
        let want = [
            12.5, 37.5, 62.5, 87.5, 100.0, 100.0, 100.0, 400.0, 300.0, 100.0,
        ];
        let got: Vec<f64> = (0..10)
            .map(|t| s.mean_rate(f64::from(t), f64::from(t + 1)))
            .collect();
        for (sec, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-9, "second {sec}: got {g}, want {w}");
        }
        assert_eq!(s.total_records(), 200 + 300 + 400 + 400);
        assert_eq!(s.rate_at(2.0), 50.0);
        assert_eq!(s.rate_at(7.5), 400.0);
        assert_eq!(s.rate_at(9.5), 100.0);
        assert_eq!(s.rate_at(10.0), 0.0);
        assert_eq!(s.stage_at(7.2), Some(2));
        assert_eq!(s.boundaries(), vec![0.0, 4.0, 7.0, 8.0, 10.0]);
    }

    #[test]
    fn time_of_inverts_due_by() {
        let s = rss();
        // Ramp: due_by(t) = 12.5 t^2, so record 50 is due at t = 2.
        assert!((s.time_of(50) - 2.0).abs() < 1e-9, "{}", s.time_of(50));
        // Steady: record 200 starts the steady stage at t = 4.
        assert!((s.time_of(200) - 4.0).abs() < 1e-9);
        assert!((s.time_of(350) - 5.5).abs() < 1e-9);
        // Spike: 400/s from t = 7, after 500 records.
        assert!((s.time_of(600) - 7.25).abs() < 1e-9, "{}", s.time_of(600));
        for i in (0..s.total_records()).step_by(7) {
            let t = s.time_of(i);
            assert!((s.due_by(t) - i as f64).abs() < 1e-6, "record {i} at {t}");
        }
        // Monotonic over the whole run, including the ramp down.
        let times: Vec<f64> = (0..s.total_records()).map(|i| s.time_of(i)).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(times.last().is_some_and(|&t| t < 10.0));
    }

    #[test]
    fn slices_split_records_by_stage_and_clients_follow_stages() {
        let s = rss();
        let slices = s.slices();
        assert_eq!(
            slices,
            vec![
                Slice {
                    first: 0,
                    end: 200,
                    producers: 1
                },
                Slice {
                    first: 200,
                    end: 500,
                    producers: 1
                },
                Slice {
                    first: 500,
                    end: 900,
                    producers: 3
                },
                Slice {
                    first: 900,
                    end: 1300,
                    producers: 3
                },
            ]
        );
        assert_eq!(s.consumers_at(1.0), 1);
        assert_eq!(s.consumers_at(5.0), 2);
        assert_eq!(s.consumers_at(11.0), 2);
    }

    #[test]
    fn zero_rate_stage_sends_nothing() {
        let s = schedule(
            "- {kind: steady, rate: 10, duration_secs: 2}\n\
             - {kind: steady, rate: 0, duration_secs: 3}\n\
             - {kind: steady, rate: 10, duration_secs: 1}\n",
        );
        assert_eq!(s.total_records(), 30);
        assert_eq!(s.slices().len(), 2);
        assert!((s.time_of(20) - 5.0).abs() < 1e-9, "{}", s.time_of(20));
        assert_eq!(s.mean_rate(3.0, 4.0), 0.0);
        assert_eq!(s.mean_rate(1.5, 2.5), 5.0);
    }
}
