//! Live progress: a progress bar on a terminal, plain periodic lines
//! otherwise, nothing with `--quiet`.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::LatencySummary;
use crate::timeline::{Sample, SideSample};

/// Interval between plain progress lines when stderr is not a terminal.
const PLAIN_EVERY_SECS: f64 = 2.0;

/// Everything one progress update shows.
#[derive(Debug, Clone, Copy)]
pub struct Status<'a> {
    /// The latest interval.
    pub sample: &'a Sample,
    /// Produce latency over the run so far.
    pub produce_so_far: Option<&'a LatencySummary>,
    /// End-to-end latency over the run so far.
    pub consume_so_far: Option<&'a LatencySummary>,
    /// Records the run will produce (or consume) in all.
    pub goal: u64,
    /// Name of the running scenario stage and the number of stages.
    pub stage: Option<(&'a str, usize)>,
}

/// Short latency figure: three significant digits or so, e.g. `1.23ms`.
pub fn short_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

fn side(out: &mut String, label: &str, s: &SideSample, so_far: Option<&LatencySummary>) {
    let _ = write!(
        out,
        " | {label} {:.0}/s {:.2} MB/s",
        s.records_per_sec, s.mb_per_sec
    );
    match so_far {
        Some(l) => {
            let _ = write!(
                out,
                " p50 {} p99 {}",
                short_ms(l.p50_ms),
                short_ms(l.p99_ms)
            );
        }
        None => out.push_str(" p50 - p99 -"),
    }
}

/// The figures after the position: stage, target, rates, latency so far,
/// errors. Shared by the bar and the plain line.
pub fn figures(status: &Status<'_>) -> String {
    let s = status.sample;
    let mut out = String::new();
    if let (Some((name, stages)), Some(i)) = (status.stage, s.stage) {
        let _ = write!(out, "stage {}/{stages} {name}", i + 1);
    }
    if let Some(rate) = s.target_rate {
        let sep = if out.is_empty() { "" } else { " " };
        let _ = write!(out, "{sep}target {rate:.0}/s");
    }
    if let Some(p) = &s.produce {
        side(&mut out, "produce", p, status.produce_so_far);
    }
    if let Some(c) = &s.consume {
        let _ = write!(out, " | consumed {}", c.total);
        side(&mut out, "e2e", c, status.consume_so_far);
    }
    let _ = write!(out, " | errors {}", s.errors);
    out.trim_start_matches(" | ").to_string()
}

/// Records counted towards the goal: acknowledged when producing, else
/// consumed.
pub fn position(sample: &Sample) -> u64 {
    sample
        .produce
        .as_ref()
        .or(sample.consume.as_ref())
        .map_or(0, |s| s.total)
}

/// One plain progress line, e.g.
/// `[   4.0s]  1200/5000 (24.0%) | target 300/s | produce 301/s ...`.
pub fn plain_line(status: &Status<'_>) -> String {
    let done = position(status.sample);
    let pct = if status.goal > 0 {
        done as f64 * 100.0 / status.goal as f64
    } else {
        0.0
    };
    format!(
        "[{:7.1}s] {done}/{} ({pct:.1}%) {}",
        status.sample.t_secs,
        status.goal,
        figures(status)
    )
}

/// Where progress goes.
pub enum Display {
    /// `--quiet`: nowhere.
    Quiet,
    /// Not a terminal: a line every [`PLAIN_EVERY_SECS`].
    Plain {
        /// Time of the last line printed.
        last_secs: Option<f64>,
    },
    /// A terminal: a redrawn bar.
    Bar(ProgressBar),
}

impl Display {
    /// The display for a run of `goal` records: quiet, a bar when stderr is a
    /// terminal, plain lines otherwise.
    pub fn new(quiet: bool, goal: u64) -> Self {
        if quiet {
            return Self::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            return Self::Plain { last_secs: None };
        }
        let bar = ProgressBar::with_draw_target(Some(goal), ProgressDrawTarget::stderr());
        // The template is a constant; fall back to the default style if
        // indicatif ever rejects it.
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed:>4} [{bar:28.cyan/blue}] {percent:>3}% {pos}/{len} {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Self::Bar(bar)
    }

    /// Shows a new sample.
    pub fn show(&mut self, status: &Status<'_>) {
        match self {
            Self::Quiet => {}
            Self::Plain { last_secs } => {
                let t = status.sample.t_secs;
                // Half a second of slack: samples land a little after each
                // whole second, so exact spacing would skip some lines.
                if last_secs.is_none_or(|l| t - l >= PLAIN_EVERY_SECS - 0.5) {
                    *last_secs = Some(t);
                    eprintln!("{}", plain_line(status));
                }
            }
            Self::Bar(bar) => {
                bar.set_position(position(status.sample));
                bar.set_message(figures(status));
            }
        }
    }

    /// Removes the bar, if any, before the report is printed.
    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(p50: f64, p99: f64) -> LatencySummary {
        LatencySummary {
            count: 10,
            p50_ms: p50,
            p99_ms: p99,
            p999_ms: p99,
            max_ms: p99,
            mean_ms: p50,
        }
    }

    fn sample(consume: bool) -> Sample {
        Sample {
            t_secs: 4.0,
            interval_secs: 1.0,
            target_rate: Some(300.0),
            stage: Some(1),
            produce: Some(SideSample {
                total: 1200,
                records_per_sec: 301.4,
                mb_per_sec: 0.3086,
                latency_ms: None,
            }),
            consume: consume.then_some(SideSample {
                total: 1100,
                records_per_sec: 290.0,
                mb_per_sec: 0.297,
                latency_ms: None,
            }),
            errors: 2,
        }
    }

    #[test]
    fn short_ms_keeps_about_three_digits() {
        assert_eq!(short_ms(1.2345), "1.23ms");
        assert_eq!(short_ms(12.345), "12.3ms");
        assert_eq!(short_ms(1234.5), "1234ms");
    }

    #[test]
    fn plain_line_shows_position_stage_rates_latency_and_errors() {
        let s = sample(true);
        let (p, e) = (latency(1.5, 12.0), latency(3.25, 150.0));
        let status = Status {
            sample: &s,
            produce_so_far: Some(&p),
            consume_so_far: Some(&e),
            goal: 5000,
            stage: Some(("steady", 3)),
        };
        assert_eq!(
            plain_line(&status),
            "[    4.0s] 1200/5000 (24.0%) stage 2/3 steady target 300/s \
             | produce 301/s 0.31 MB/s p50 1.50ms p99 12.0ms \
             | consumed 1100 | e2e 290/s 0.30 MB/s p50 3.25ms p99 150ms | errors 2"
        );
    }

    #[test]
    fn figures_without_stage_target_or_samples() {
        let mut s = sample(false);
        s.stage = None;
        s.target_rate = None;
        let status = Status {
            sample: &s,
            produce_so_far: None,
            consume_so_far: None,
            goal: 0,
            stage: None,
        };
        assert_eq!(
            figures(&status),
            "produce 301/s 0.31 MB/s p50 - p99 - | errors 2"
        );
        assert_eq!(position(&s), 1200);
        assert!(plain_line(&status).contains("1200/0 (0.0%)"));
    }
}
