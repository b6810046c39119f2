//! The monitor thread: samples the run once a second into the timeline,
//! shows progress, and sets the consumer count of the running scenario stage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::consume::ConsumeShared;
use crate::produce::DeliveryStats;
use crate::progress::{Display, Status};
use crate::scenario::{Scenario, Schedule};
use crate::timeline::{Reading, Sample, Sampler, Tick};

/// Length of one timeline interval.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often the thread wakes to check for the next interval or a stop.
const WAKE_EVERY: Duration = Duration::from_millis(50);
/// A last partial interval shorter than this is left out (its rates would be
/// mostly noise).
const MIN_LAST_INTERVAL: Duration = Duration::from_millis(250);

/// What the monitor watches.
pub struct Watched {
    /// Producer counters, when producing.
    pub produce: Option<Arc<DeliveryStats>>,
    /// Consumer counters, when consuming.
    pub consume: Option<Arc<ConsumeShared>>,
    /// Fixed target rate (`--rate`).
    pub rate: Option<f64>,
    /// Scenario and its schedule (`--scenario`).
    pub scenario: Option<(Scenario, Arc<Schedule>)>,
    /// Records the run aims at.
    pub goal: u64,
    /// `--quiet`.
    pub quiet: bool,
}

/// The running monitor; [`Monitor::finish`] stops it and returns the timeline.
pub struct Monitor {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

impl Monitor {
    /// Starts the monitor thread. Time 0 of the timeline is the start of the
    /// measured produce phase, or now when only consuming.
    pub fn spawn(watched: Watched) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name("monitor".to_string())
            .spawn(move || watch(&watched, &flag))
            .ok();
        Self { stop, handle }
    }

    /// Stops the thread (after one last partial interval) and returns the
    /// samples, oldest first.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn origin(w: &Watched, started: Instant) -> Option<Instant> {
    match &w.produce {
        Some(stats) => stats.measured_start(),
        None => Some(started),
    }
}

fn watch(w: &Watched, stop: &AtomicBool) -> Vec<Sample> {
    let started = Instant::now();
    let mut display = Display::new(w.quiet, w.goal);
    let mut sampler = Sampler::new();
    let mut samples = Vec::new();
    let mut next = SAMPLE_EVERY;
    let mut last_secs = 0.0;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let Some(zero) = origin(w, started) else {
            if stopping {
                break;
            }
            thread::sleep(WAKE_EVERY);
            continue;
        };
        let t = zero.elapsed();
        let t_secs = t.as_secs_f64();
        if let (Some((_, schedule)), Some(c)) = (&w.scenario, &w.consume) {
            c.set_active(schedule.consumers_at(t_secs));
        }
        if t >= next || (stopping && t + SAMPLE_EVERY >= next + MIN_LAST_INTERVAL) {
            next += SAMPLE_EVERY;
            let sample = take_sample(w, &mut sampler, last_secs, t_secs);
            last_secs = t_secs;
            let (p, c) = (sampler.produce_so_far(), sampler.consume_so_far());
            let stage = w.scenario.as_ref().and_then(|(sc, _)| {
                let i = sample.stage?;
                Some((sc.stages.get(i)?.name.as_str(), sc.stages.len()))
            });
            display.show(&Status {
                sample: &sample,
                produce_so_far: p.as_ref(),
                consume_so_far: c.as_ref(),
                goal: w.goal,
                stage,
            });
            samples.push(sample);
        }
        if stopping {
            break;
        }
        thread::sleep(WAKE_EVERY);
    }
    display.finish();
    samples
}

/// Samples the interval from `from_secs` to `t_secs`; its target is the
/// schedule's mean rate over the same interval.
fn take_sample(w: &Watched, sampler: &mut Sampler, from_secs: f64, t_secs: f64) -> Sample {
    let (target_rate, stage) = match &w.scenario {
        Some((_, schedule)) => (
            Some(schedule.mean_rate(from_secs, t_secs)),
            schedule.stage_at(t_secs),
        ),
        None => (w.rate, None),
    };
    let errors = w.produce.as_ref().map_or(0, |p| p.failed())
        + w.consume.as_ref().map_or(0, |c| c.error_total());
    let produce = w.produce.as_ref().map(|p| Reading {
        records: p.acked(),
        bytes: p.acked_bytes(),
        interval_us: p.take_interval(),
    });
    let consume = w.consume.as_ref().map(|c| Reading {
        records: c.unique(),
        bytes: c.bytes(),
        interval_us: c.take_interval(),
    });
    let tick = Tick {
        t_secs,
        target_rate,
        stage,
        errors,
    };
    sampler.sample(tick, produce, consume)
}
