//! Which plots a report gets and which series each one draws.

use super::chart::{Band, Chart, Series};
use crate::report::{LatencySummary, Report};
use crate::timeline::{Sample, SideSample};

const COLOR_TARGET: &str = "#8a94a3";
const COLOR_PRODUCE: &str = "#2563eb";
const COLOR_CONSUME: &str = "#e67e22";
/// Reads one percentile from a summary.
type Percentile = fn(&LatencySummary) -> f64;
/// Percentile lines of the latency plots: name, colour, value.
const PERCENTILES: [(&str, &str, Percentile); 3] = [
    ("p50", "#2563eb", |l| l.p50_ms),
    ("p99", "#e67e22", |l| l.p99_ms),
    ("p99.9", "#c0392b", |l| l.p999_ms),
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
        points: t.iter().map(|s| (s.t_secs, value(s))).collect(),
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
            label: format!("{} ({} {:.0}/s)", s.name, s.kind.as_str(), s.rate),
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

    let mut rates = Vec::new();
    if t.iter().any(|s| s.target_rate.is_some()) {
        rates.push(Series {
            dashed: true,
            ..line(t, "target", COLOR_TARGET, |s| s.target_rate)
        });
    }
    rates.extend(sides.iter().map(|&side| {
        line(t, side.line_name(), side.color(), |s| {
            side.of(s).map(|x| x.records_per_sec)
        })
    }));
    let mbs = sides
        .iter()
        .map(|&side| {
            line(t, side.line_name(), side.color(), |s| {
                side.of(s).map(|x| x.mb_per_sec)
            })
        })
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
            .map(|&(name, color, pick)| {
                line(t, name, color, |s| {
                    side.of(s).and_then(|x| x.latency_ms.as_ref()).map(pick)
                })
            })
            .collect();
        let (heading, id) = side.latency_chart();
        charts.push((heading, chart(id, "ms", series)));
    }
    charts
}
