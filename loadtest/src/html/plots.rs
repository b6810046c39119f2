//! Which plots a report gets and which series each one draws.

use super::chart::{Band, Chart, Series};
use crate::report::{LatencySummary, Report};
use crate::scenario::StageKind;
use crate::timeline::{Sample, SideSample};

const COLOR_TARGET: &str = "#8a94a3";
const COLOR_PRODUCE: &str = "#2563eb";
const COLOR_CONSUME: &str = "#e67e22";
/// Reads one percentile from a summary.
type Percentile = fn(&LatencySummary) -> f64;
/// Percentile lines of the latency plots: name, colour, width, value. p99
/// is wide and drawn before p99.9, which often runs close to it.
const PERCENTILES: [(&str, &str, f64, Percentile); 3] = [
    ("p50", "#2563eb", 2.0, |l| l.p50_ms),
    ("p99", "#e67e22", 4.0, |l| l.p99_ms),
    ("p99.9", "#c0392b", 1.6, |l| l.p999_ms),
];

/// A side of the run as the plots show it.
#[derive(Debug, Clone, Copy)]
enum Side {
    Produce,
    Consume,
}

impl Side {
    fn of(self, s: &Sample) -> Option<&SideSample> {
        match self {
            Self::Produce => s.produce.as_ref(),
            Self::Consume => s.consume.as_ref(),
        }
    }

    fn line_name(self) -> &'static str {
        match self {
            Self::Produce => "produced (acked)",
            Self::Consume => "consumed",
        }
    }

    /// Produce lines are wider and drawn first, so that a consume line with
    /// the same values does not hide them.
    fn width(self) -> f64 {
        match self {
            Self::Produce => 4.0,
            Self::Consume => 1.8,
        }
    }

    fn color(self) -> &'static str {
        match self {
            Self::Produce => COLOR_PRODUCE,
            Self::Consume => COLOR_CONSUME,
        }
    }

    fn latency_chart(self) -> (&'static str, &'static str) {
        match self {
            Self::Produce => ("Produce latency (ms)", "latency-produce"),
            Self::Consume => ("End-to-end latency (ms)", "latency-e2e"),
        }
    }
}

fn line(
    t: &[Sample],
    name: &str,
    color: &'static str,
    value: impl Fn(&Sample) -> Option<f64>,
) -> Series {
    Series {
        name: name.to_string(),
        color,
        dashed: false,
        width: 2.0,
        points: t.iter().map(|s| (s.t_secs, value(s))).collect(),
    }
}

/// One side's line of a throughput plot.
fn side_line(t: &[Sample], side: Side, value: fn(&SideSample) -> f64) -> Series {
    Series {
        width: side.width(),
        ..line(t, side.line_name(), side.color(), |s| side.of(s).map(value))
    }
}

/// The plots of a report with their headings, in display order: records/s
/// (with the target, if any), MB/s, then one latency plot per side present.
pub fn charts(r: &Report) -> Vec<(&'static str, Chart)> {
    let t = &r.timeline;
    let bands: Vec<Band> = r
        .scenario
        .iter()
        .flat_map(|s| &s.stages)
        .map(|s| Band {
            label: s.name.clone(),
            detail: match s.kind {
                StageKind::Ramp => format!("{:.0}\u{2192}{:.0}/s", s.start_rate, s.rate),
                StageKind::Steady | StageKind::Spike => format!("{:.0}/s", s.rate),
            },
            from: s.start_secs,
            to: s.end_secs,
        })
        .collect();
    let sides: Vec<Side> = [Side::Produce, Side::Consume]
        .into_iter()
        .filter(|side| t.iter().any(|s| side.of(s).is_some()))
        .collect();
    let chart = |id, unit, series| Chart {
        id,
        unit,
        series,
        bands: bands.clone(),
    };

    // The dashed target goes last, on top of the measured lines.
    let mut rates: Vec<Series> = sides
        .iter()
        .map(|&side| side_line(t, side, |x| x.records_per_sec))
        .collect();
    if t.iter().any(|s| s.target_rate.is_some()) {
        rates.push(Series {
            dashed: true,
            width: 1.5,
            ..line(t, "target", COLOR_TARGET, |s| s.target_rate)
        });
    }
    let mbs = sides
        .iter()
        .map(|&side| side_line(t, side, |x| x.mb_per_sec))
        .collect();

    let mut charts = vec![
        (
            "Throughput (records/s)",
            chart("throughput-records", "records/s", rates),
        ),
        ("Throughput (MB/s)", chart("throughput-mb", "MB/s", mbs)),
    ];
    for &side in &sides {
        let series = PERCENTILES
            .iter()
            .map(|&(name, color, width, pick)| Series {
                width,
                ..line(t, name, color, |s| {
                    side.of(s).and_then(|x| x.latency_ms.as_ref()).map(pick)
                })
            })
            .collect();
        let (heading, id) = side.latency_chart();
        charts.push((heading, chart(id, "ms", series)));
    }
    charts
}
