//! The self-contained HTML report (`--html`): one file with inline CSS and
//! inline SVG plots, no scripts and nothing loaded from elsewhere.

mod chart;
mod plots;

use std::fmt::Write as _;

use crate::report::{errors_line, format_ms, LatencySummary, Report, Throughput};

use plots::charts;

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
color:#1d2733;margin:24px auto;max-width:1240px;padding:0 16px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5dbe3;\
padding-bottom:4px}h3{font-size:15px;margin:18px 0 2px}.sub{color:#5b6573}\
.ok{background:#1f8a4c}.failed{background:#c0392b}.verdict{color:#fff;border-radius:4px;\
padding:2px 10px;font-weight:600;margin-left:8px;font-size:14px;vertical-align:middle}\
table{border-collapse:collapse;margin:4px 0;max-width:100%}td,th{border:1px solid #d5dbe3;padding:4px 10px;text-align:right;white-space:nowrap}\
th{background:#f1f4f8}td.l,th.l{text-align:left}svg.plot{width:100%;height:auto;display:block}\
svg text{font-family:system-ui,sans-serif;fill:#3a4552}text.tick{font-size:12px}\
text.unit{font-size:13px}text.legend{font-size:13px}text.band{font-size:11px;fill:#5b6573}\
";

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole report as one HTML document that needs nothing else to display:
/// summary, throughput and latency plots over time (one per series group
/// present in the run), stages and parameters.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let title = match &report.scenario {
        Some(s) => format!("kafscale-loadtest: {}", s.name),
        None => "kafscale-loadtest report".to_string(),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        escape(&title)
    );
    header(&mut out, report, &title);
    summary(&mut out, report);
    plots(&mut out, report);
    stages(&mut out, report);
    parameters(&mut out, report);
    let _ = writeln!(
        out,
        "<h2>Notes</h2><p class=\"sub\">{}.<br>{}.<br>Plots show one point per \
         interval of about one second; latency percentiles are those of the records \
         acknowledged (produce) or consumed (end-to-end) in that interval.</p></body></html>",
        escape(report.mb_definition),
        escape(report.latency_definition)
    );
    out
}

fn header(out: &mut String, r: &Report, title: &str) {
    let (class, word) = if r.verdict.ok {
        ("ok", "OK")
    } else {
        ("failed", "FAILED")
    };
    let _ = write!(
        out,
        "<h1>{}<span class=\"verdict {class}\">{word}</span></h1>\
         <div class=\"sub\">{} {} &middot; run {} &middot; mode {} &middot; topic {} \
         &middot; bootstrap {}</div>",
        escape(title),
        r.run.tool,
        r.run.version,
        r.run.run_id,
        escape(&r.config.mode),
        escape(&r.config.topic),
        escape(&r.config.bootstrap)
    );
    if let Some(d) = r.scenario.as_ref().and_then(|s| s.description.as_deref()) {
        let _ = write!(out, "<p>{}</p>", escape(d));
    }
    if !r.verdict.failures.is_empty() {
        out.push_str("<ul>");
        for f in &r.verdict.failures {
            let _ = write!(out, "<li>{}</li>", escape(f));
        }
        out.push_str("</ul>");
    }
}

fn latency_cells(l: Option<&LatencySummary>) -> String {
    match l {
        Some(l) => [l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms]
            .iter()
            .map(|v| format!("<td>{}</td>", format_ms(*v)))
            .collect(),
        None => "<td colspan=\"5\">no samples</td>".to_string(),
    }
}

fn summary_row(
    out: &mut String,
    side: &str,
    records: String,
    secs: f64,
    t: Throughput,
    l: Option<&LatencySummary>,
    errors: &str,
) {
    let _ = write!(
        out,
        "<tr><td class=\"l\">{side}</td><td>{records}</td><td>{secs:.2} s</td>\
         <td>{:.1}</td><td>{:.3}</td>{}<td class=\"l\">{}</td></tr>",
        t.records_per_sec,
        t.mb_per_sec,
        latency_cells(l),
        escape(errors)
    );
}

fn summary(out: &mut String, r: &Report) {
    out.push_str(
        "<h2>Summary</h2><table><tr><th class=\"l\">side</th><th>records</th>\
         <th>elapsed</th><th>records/s</th><th>MB/s</th><th>p50</th><th>p99</th>\
         <th>p99.9</th><th>max</th><th>mean</th><th class=\"l\">errors</th></tr>",
    );
    if let Some(p) = &r.produce {
        let mut records = format!("{} of {} acked", p.records_acked, p.records_sent);
        for (n, what) in [
            (p.records_failed, "failed"),
            (p.records_not_sent, "not sent"),
            (p.records_unacked, "unacked"),
        ] {
            if n > 0 {
                records.push_str(&format!(", {n} {what}"));
            }
        }
        let errors = errors_line(&p.errors);
        summary_row(
            out,
            "produce",
            records,
            p.elapsed_secs,
            p.throughput,
            p.latency_ms.as_ref(),
            &errors,
        );
    }
    if let Some(c) = &r.consume {
        let mut records = format!("{} of {} consumed", c.records_consumed, c.records_expected);
        if c.duplicates > 0 {
            records.push_str(&format!(", {} duplicates", c.duplicates));
        }
        let errors = errors_line(&c.errors);
        summary_row(
            out,
            "end-to-end",
            records,
            c.elapsed_secs,
            c.throughput,
            c.e2e_latency_ms.as_ref(),
            &errors,
        );
    }
    out.push_str("</table>");
}

fn plots(out: &mut String, r: &Report) {
    out.push_str("<h2>Over time</h2>");
    if r.timeline.is_empty() {
        out.push_str("<p>No samples: the measured phase did not start.</p>");
        return;
    }
    for (heading, chart) in charts(r) {
        let _ = write!(out, "<h3>{heading}</h3>{}", chart.to_svg());
    }
}

fn stages(out: &mut String, r: &Report) {
    let Some(s) = &r.scenario else {
        return;
    };
    let _ = write!(
        out,
        "<h2>Stages</h2><p class=\"sub\">scenario {}: {} stages, {:.1} s, {} records</p>\
         <table><tr><th>#</th><th class=\"l\">name</th><th class=\"l\">kind</th><th>from</th>\
         <th>to</th><th>start rate</th><th>end rate</th><th>records</th><th>producers</th>\
         <th>consumers</th></tr>",
        escape(&s.name),
        s.stages.len(),
        s.total_secs,
        s.total_records
    );
    for (i, st) in s.stages.iter().enumerate() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{:.1} s</td>\
             <td>{:.1} s</td><td>{:.0}/s</td><td>{:.0}/s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            escape(&st.name),
            st.kind.as_str(),
            st.start_secs,
            st.end_secs,
            st.start_rate,
            st.rate,
            st.records,
            st.producers,
            st.consumers
        );
    }
    out.push_str("</table>");
}

fn parameters(out: &mut String, r: &Report) {
    let c = &r.config;
    let rows: [(&str, String); 16] = [
        ("mode", c.mode.clone()),
        ("bootstrap", c.bootstrap.clone()),
        ("topic", c.topic.clone()),
        ("partitions", c.partitions.to_string()),
        ("records", c.records.to_string()),
        ("record size", format!("{} B", c.record_size)),
        ("rate", r.rate_label()),
        ("producers", c.producers.to_string()),
        ("consumers", c.consumers.to_string()),
        ("acks", c.acks.clone()),
        ("compression", c.compression.clone()),
        ("linger.ms", c.linger_ms.to_string()),
        ("keys", c.keys.to_string()),
        ("consumer group", c.group.to_string()),
        ("warm-up records", c.warmup_records.to_string()),
        ("timeout", format!("{} s", c.timeout_secs)),
    ];
    out.push_str("<h2>Parameters</h2><table>");
    for pair in rows.chunks(2) {
        out.push_str("<tr>");
        for (k, v) in pair {
            let _ = write!(
                out,
                "<th class=\"l\">{k}</th><td class=\"l\">{}</td>",
                escape(v)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

#[cfg(test)]
mod tests;
