use super::*;
use crate::report::fixtures::{config, consume, produce};
use crate::scenario::fixtures::scenario;
use crate::scenario::{ScenarioSummary, Schedule};
use crate::timeline::{Sample, SideSample};

fn latency(p50: f64) -> LatencySummary {
    LatencySummary {
        count: 5,
        p50_ms: p50,
        p99_ms: p50 * 4.0,
        p999_ms: p50 * 9.0,
        max_ms: p50 * 10.0,
        mean_ms: p50,
    }
}

fn side(total: u64, rate: f64) -> SideSample {
    SideSample {
        total,
        records_per_sec: rate,
        mb_per_sec: rate / 1000.0,
        latency_ms: Some(latency(rate / 100.0)),
    }
}

fn timeline(consuming: bool) -> Vec<Sample> {
    (1..=10u32)
        .map(|t| Sample {
            t_secs: f64::from(t),
            interval_secs: 1.0,
            target_rate: Some(100.0),
            stage: Some(0),
            produce: Some(side(u64::from(t) * 100, 100.0 + f64::from(t))),
            consume: consuming.then(|| side(u64::from(t) * 90, 90.0)),
            errors: 0,
        })
        .collect()
}

fn report(consuming: bool) -> Report {
    let text = "name: demo <x>\ndescription: a & b\nstages:\n\
                - {kind: ramp, rate: 100, duration_secs: 5}\n\
                - {kind: spike, rate: 300, duration_secs: 5}\n";
    let sc = scenario(text);
    let mut cfg = config();
    cfg.topic = "t\"<script>".into();
    let consumed = consuming.then(|| consume(1000, 1000));
    Report::new(7, cfg, Some(produce(0)), consumed)
        .with_scenario(Some(ScenarioSummary::new(&sc, &Schedule::new(&sc))))
        .with_timeline(timeline(consuming))
}

/// The `data-plot` ids in document order.
fn plot_ids(html: &str) -> Vec<&str> {
    html.split("data-plot=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// The part of the document holding plot `id`.
fn plot<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("data-plot=\"{id}\""))
        .unwrap_or_else(|| panic!("plot {id} missing"));
    let end = html[start..]
        .find("</svg>")
        .map_or(html.len(), |e| start + e);
    &html[start..end]
}

#[test]
fn report_is_self_contained() {
    let html = render(&report(true));
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    let lower = html.to_ascii_lowercase();
    for forbidden in [
        "<script", "<link", "<img", "<iframe", "@import", "url(", "src=", "href=",
    ] {
        assert!(!lower.contains(forbidden), "found {forbidden}");
    }
    assert!(!lower.contains("http://") && !lower.contains("https://"));
    // User text is escaped, never markup.
    assert!(html.contains("t&quot;&lt;script&gt;"));
    assert!(html.contains("demo &lt;x&gt;") && html.contains("a &amp; b"));
}

#[test]
fn one_plot_per_series_group_with_every_series_drawn() {
    let html = render(&report(true));
    assert_eq!(
        plot_ids(&html),
        vec![
            "throughput-records",
            "throughput-mb",
            "latency-produce",
            "latency-e2e"
        ]
    );
    let expect: [(&str, &[&str]); 4] = [
        (
            "throughput-records",
            &["target", "produced (acked)", "consumed"],
        ),
        ("throughput-mb", &["produced (acked)", "consumed"]),
        ("latency-produce", &["p50", "p99", "p99.9"]),
        ("latency-e2e", &["p50", "p99", "p99.9"]),
    ];
    for (id, series) in expect {
        let svg = plot(&html, id);
        assert_eq!(svg.matches("<g data-series=").count(), series.len(), "{id}");
        for name in series {
            let at = svg
                .find(&format!("<g data-series=\"{name}\">"))
                .unwrap_or_else(|| panic!("{id}: no series {name}"));
            // Ten samples: one polyline with ten points.
            let line = &svg[at..];
            let points = line
                .split("points=\"")
                .nth(1)
                .and_then(|p| p.split('"').next())
                .unwrap_or_default();
            assert_eq!(points.split(' ').count(), 10, "{id}/{name}: {points}");
        }
        // Both stages are drawn as bands.
        assert!(
            svg.contains(">ramp 1</text>") && svg.contains(">0\u{2192}100/s</text>"),
            "{id}"
        );
        assert!(
            svg.contains(">spike 2</text>") && svg.contains(">300/s</text>"),
            "{id}"
        );
    }
    // Summary and stage tables.
    assert!(html.contains("<td class=\"l\">end-to-end</td>"));
    assert!(html.contains("<h2>Stages</h2>"));
}

#[test]
fn produce_only_run_has_no_consumer_plots() {
    let html = render(&report(false));
    assert_eq!(
        plot_ids(&html),
        vec!["throughput-records", "throughput-mb", "latency-produce"]
    );
    assert!(!plot(&html, "throughput-records").contains("data-series=\"consumed\""));
}

#[test]
fn run_without_samples_says_so() {
    let html = render(&report(true).with_timeline(Vec::new()));
    assert!(plot_ids(&html).is_empty());
    assert!(html.contains("No samples"));
}
