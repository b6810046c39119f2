//! The Grafana dashboard (`deploy/grafana/kafscale-dashboard.json`, shipped
//! by the chart from its copy in `dashboards/`): it parses, every panel
//! queries the `${datasource}` variable, and every PromQL expression uses
//! only metrics the processes export, with labels they (or the scrape
//! target) carry, and with `rate` only on counters and histograms. The
//! exported metrics are read from a running `kafscale dev` after some
//! traffic (its `# TYPE` lines and series), plus the S3 metrics, which only
//! a `kafscale logworker` on S3 exports: those come from the same
//! constructors it calls.

mod common;

use common::*;
use kafka_protocol::messages::ApiKey;
use prometheus::core::Collector;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/kafscale-dashboard.json"
);
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/kafscale-operator");

/// Labels Prometheus and the Prometheus operator put on every series of a
/// PodMonitor target (the chart's relabelings add more: [`target_labels`]).
const SCRAPE_LABELS: &[&str] = &[
    "namespace",
    "pod",
    "container",
    "endpoint",
    "job",
    "instance",
];

/// An exported metric family: its type and its labels.
#[derive(Clone, Debug, Default)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

type Catalog = BTreeMap<String, Family>;

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("read the dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// (panel title, expression) of every target.
fn expressions(d: &Value) -> Vec<(String, String)> {
    all_panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or_default().into()))
        })
        .collect()
}

/// The labels the chart's PodMonitor relabelings add (`targetLabel: x`)
/// and those every scrape target has.
fn target_labels() -> BTreeSet<String> {
    let text = std::fs::read_to_string(format!("{CHART}/templates/podmonitor.yaml"))
        .expect("read podmonitor.yaml");
    let mut labels: BTreeSet<String> = SCRAPE_LABELS.iter().map(|l| l.to_string()).collect();
    labels.extend(
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("targetLabel:"))
            .map(|l| l.trim().to_string()),
    );
    labels
}

#[test]
fn the_chart_ships_the_same_dashboard() {
    let ours = std::fs::read(DASHBOARD).expect("deploy/grafana copy");
    let chart = std::fs::read(format!("{CHART}/dashboards/kafscale-dashboard.json"))
        .expect("the chart's copy");
    assert!(
        ours == chart,
        "deploy/grafana/kafscale-dashboard.json and \
         deploy/helm/kafscale-operator/dashboards/kafscale-dashboard.json differ: copy one over the other"
    );
    let template = std::fs::read_to_string(format!("{CHART}/templates/grafana-dashboard.yaml"))
        .expect("grafana-dashboard.yaml");
    assert!(template.contains(r#".Files.Get "dashboards/kafscale-dashboard.json""#));
    assert!(template.contains(".Values.grafanaDashboard.enabled"));
    let values = std::fs::read_to_string(format!("{CHART}/values.yaml")).expect("values");
    let values: Value = serde_yaml::from_str(&values).expect("values.yaml");
    assert_eq!(values["grafanaDashboard"]["enabled"], false);
    assert_eq!(
        values["grafanaDashboard"]["labels"]["grafana_dashboard"],
        "1"
    );
    assert_eq!(values["podMonitor"]["enabled"], false);
}

#[test]
fn every_panel_queries_the_datasource_variable() {
    let d = dashboard();
    assert!(d["uid"].is_string() && d["title"].is_string());
    assert!(d["schemaVersion"].as_i64().unwrap_or(0) >= 36);
    let vars = d["templating"]["list"]
        .as_array()
        .expect("template variables");
    let names: BTreeSet<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], "${datasource}", "variable {v}");
        assert!(v["query"].as_str().is_some_and(|q| !q.is_empty()), "{v}");
    }

    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for p in all_panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(p["id"].as_i64().expect("panel id")),
            "id of {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_i64().unwrap_or(-1), g["w"].as_i64().unwrap_or(0));
        assert!(x >= 0 && w > 0 && x + w <= 24, "{title}: gridPos {g}");
        if p["type"] == "row" {
            continue;
        }
        queried += 1;
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            p["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "{title}: no unit"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no target");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: empty expression");
            // Every $variable is one of the dashboard's or a Grafana built-in.
            for var in expr.split('$').skip(1) {
                let name: String = var
                    .trim_start_matches('{')
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    name.starts_with("__") || names.contains(name.as_str()),
                    "{title}: unknown variable ${name} in {expr}"
                );
            }
        }
    }
    assert!(queried >= 20, "only {queried} panels");
}

/// One metric named in an expression.
#[derive(Debug)]
struct MetricUse {
    name: String,
    /// Label names of its selector (`name{label="..."}`).
    labels: Vec<String>,
    /// The functions and aggregations it is inside, outermost first.
    within: Vec<String>,
}

/// The metrics of a PromQL expression, and the labels of its `by (...)`,
/// `without (...)`, `on (...)` and `ignoring (...)` clauses. A small
/// tokenizer, enough for the dashboard's expressions: strings, durations and
/// numbers are skipped; an identifier followed by `(` (or an aggregation
/// operator) is a function; every other identifier is a metric.
fn parse_promql(expr: &str) -> (Vec<MetricUse>, Vec<String>) {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "topk",
        "bottomk",
        "quantile",
        "stddev",
        "stdvar",
        "count_values",
        "group",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset"];
    let s: Vec<char> = expr.chars().collect();
    let ident = |i: usize| {
        let mut j = i;
        while j < s.len() && (s[j].is_ascii_alphanumeric() || s[j] == '_' || s[j] == ':') {
            j += 1;
        }
        (s[i..j].iter().collect::<String>(), j)
    };
    let skip_ws = |mut i: usize| {
        while i < s.len() && s[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let skip_string = |i: usize| {
        let quote = s[i];
        let mut j = i + 1;
        while j < s.len() && s[j] != quote {
            j += if s[j] == '\\' { 2 } else { 1 };
        }
        j + 1
    };
    let (mut uses, mut grouping) = (Vec::<MetricUse>::new(), Vec::new());
    let mut stack: Vec<String> = Vec::new();
    let mut pending: Option<String> = None;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            i = skip_string(i);
        } else if c == '[' {
            while i < s.len() && s[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // A selector: its label names go to the metric just before it.
            let mut labels = Vec::new();
            i += 1;
            loop {
                i = skip_ws(i);
                if i >= s.len() || s[i] == '}' {
                    i += 1;
                    break;
                }
                if s[i] == ',' {
                    i += 1;
                    continue;
                }
                let (name, j) = ident(i);
                assert!(!name.is_empty(), "cannot parse the selector of {expr}");
                labels.push(name);
                i = j;
                while i < s.len() && s[i] != '"' && s[i] != '\'' {
                    i += 1;
                }
                i = skip_string(i);
            }
            let last = uses.last_mut().expect("a selector without a metric name");
            last.labels = labels;
        } else if c == '(' {
            stack.push(pending.take().unwrap_or_default());
            i += 1;
        } else if c == ')' {
            stack.pop();
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let (name, j) = ident(i);
            let next = skip_ws(j);
            i = j;
            if GROUPING.contains(&name.as_str()) {
                if next < s.len() && s[next] == '(' {
                    let end = next + s[next..].iter().position(|&c| c == ')').expect(")");
                    let list: String = s[next + 1..end].iter().collect();
                    grouping.extend(
                        list.split(',')
                            .map(|l| l.trim().to_string())
                            .filter(|l| !l.is_empty()),
                    );
                    i = end + 1;
                }
            } else if KEYWORDS.contains(&name.as_str()) {
                // An operator, not a metric.
            } else if AGGREGATIONS.contains(&name.as_str()) || (next < s.len() && s[next] == '(') {
                pending = Some(name);
            } else {
                uses.push(MetricUse {
                    name,
                    labels: Vec::new(),
                    within: stack.iter().filter(|f| !f.is_empty()).cloned().collect(),
                });
            }
        } else {
            i += 1;
        }
    }
    (uses, grouping)
}

/// The family `name` belongs to: itself, or the histogram it is the
/// `_bucket`, `_sum` or `_count` series of.
fn family<'a>(catalog: &'a Catalog, name: &str) -> Option<(&'a Family, &'static str)> {
    if let Some(f) = catalog.get(name) {
        return Some((f, ""));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(f) = name
            .strip_suffix(suffix)
            .and_then(|base| catalog.get(base))
            .filter(|f| f.kind == "histogram")
        {
            return Some((f, suffix));
        }
    }
    None
}

/// What is wrong with the metrics of `expr`, judged against `catalog`.
fn check_expression(expr: &str, catalog: &Catalog, target: &BTreeSet<String>) -> Vec<String> {
    let (uses, grouping) = parse_promql(expr);
    let mut errors = Vec::new();
    if uses.is_empty() {
        errors.push("no metric".to_string());
    }
    let mut known_labels: BTreeSet<String> = target.clone();
    known_labels.insert("le".into());
    for u in &uses {
        let Some((fam, suffix)) = family(catalog, &u.name) else {
            errors.push(format!("{} is not exported", u.name));
            continue;
        };
        known_labels.extend(fam.labels.iter().cloned());
        for l in &u.labels {
            if !fam.labels.contains(l) && !target.contains(l) {
                errors.push(format!("{} has no label {l}", u.name));
            }
        }
        let innermost = u.within.last().map(String::as_str).unwrap_or("");
        let rated = ["rate", "irate", "increase"].contains(&innermost);
        match (fam.kind.as_str(), suffix) {
            ("counter", _) | ("histogram", "_sum" | "_count") if !rated => errors.push(format!(
                "{} is a counter: wrap it in rate() or increase()",
                u.name
            )),
            ("histogram", "_bucket")
                if !rated || !u.within.iter().any(|f| f == "histogram_quantile") =>
            {
                errors.push(format!(
                    "{}: use histogram_quantile over rate() of the buckets",
                    u.name
                ))
            }
            ("histogram", "") => errors.push(format!(
                "{} is a histogram: use its _bucket, _sum or _count series",
                u.name
            )),
            ("gauge", _) if rated => errors.push(format!(
                "{} is a gauge: rate() and increase() are for counters",
                u.name
            )),
            _ => {}
        }
    }
    for l in grouping {
        if !known_labels.contains(&l) {
            errors.push(format!("grouping by {l}, which no metric of it has"));
        }
    }
    errors
}

#[test]
fn the_promql_checker_catches_what_it_should() {
    let catalog: Catalog = [
        ("c_total", "counter", &["a"][..]),
        ("g", "gauge", &["b"][..]),
        ("h", "histogram", &["a"][..]),
    ]
    .into_iter()
    .map(|(n, k, l)| {
        (
            n.to_string(),
            Family {
                kind: k.into(),
                labels: l.iter().map(|l| l.to_string()).collect(),
            },
        )
    })
    .collect();
    let target: BTreeSet<String> = ["pod".to_string()].into();
    let ok = [
        r#"sum by (a, pod) (rate(c_total{a=~"x|y",pod=~"$pod"}[$__rate_interval]))"#,
        r#"histogram_quantile(0.99, sum by (a, le) (rate(h_bucket{a="Produce"}[5m])))"#,
        r#"sum(rate(h_sum[5m])) / sum(rate(h_count[5m]))"#,
        r#"topk(10, max by (b) (g{b="1"})) > 0"#,
        r#"sum by (b) (deriv(g[5m]))"#,
    ];
    for e in ok {
        assert_eq!(
            check_expression(e, &catalog, &target),
            Vec::<String>::new(),
            "{e}"
        );
    }
    let bad = [
        ("sum(c_total)", "counter"),
        ("rate(g[5m])", "gauge"),
        ("histogram_quantile(0.5, h_bucket)", "histogram_quantile"),
        ("rate(h[5m])", "histogram"),
        ("rate(missing_total[5m])", "not exported"),
        (r#"rate(c_total{b="1"}[5m])"#, "no label b"),
        ("sum by (zz) (rate(c_total[5m]))", "grouping by zz"),
    ];
    for (e, why) in bad {
        let errors = check_expression(e, &catalog, &target);
        assert!(errors.iter().any(|x| x.contains(why)), "{e}: {errors:?}");
    }
}

/// Families and their label names from a Prometheus text exposition.
fn parse_exposition(text: &str) -> Catalog {
    let mut catalog = Catalog::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            catalog.entry(name.to_string()).or_default().kind = kind.to_string();
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(end) = line.find(['{', ' ']) else {
            continue;
        };
        let name = &line[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|b| catalog.get(*b).is_some_and(|f| f.kind == "histogram"))
            .unwrap_or(name);
        let Some(fam) = catalog.get_mut(base) else {
            continue;
        };
        if line[end..].starts_with('{') {
            // The series' selector, read by the PromQL tokenizer.
            let selector = &line[end..line.rfind('}').unwrap_or(end) + 1];
            let (uses, _) = parse_promql(&format!("m{selector}"));
            for l in uses.into_iter().flat_map(|u| u.labels) {
                if l != "le" {
                    fam.labels.insert(l);
                }
            }
        }
    }
    catalog
}

/// The families of the S3 and retry metrics that a `kafscale logworker`
/// registers (src/logworker.rs), from the same constructors: `kafscale dev`
/// has no S3 and its local store never retries, so it exports none of
/// them (retries only once one happens).
fn s3_worker_families() -> Catalog {
    let registry = prometheus::Registry::new();
    let s3 = kafscale_logworker::metrics::S3Metrics::new(&registry).expect("S3 metrics");
    let retry = kafscale_logworker::metrics::RetryMetrics::new(&registry).expect("retry metrics");
    let collectors: Vec<Box<dyn Collector>> = vec![
        Box::new(s3.requests),
        Box::new(s3.request_seconds),
        Box::new(s3.bytes),
        Box::new(s3.replica_reads),
        Box::new(retry.put_errors),
        Box::new(retry.retries),
    ];
    let mut catalog = Catalog::new();
    for c in &collectors {
        let kinds = c.collect();
        for (desc, mf) in c.desc().into_iter().zip(kinds) {
            catalog.insert(
                desc.fq_name.clone(),
                Family {
                    kind: format!("{:?}", mf.get_field_type()).to_lowercase(),
                    labels: desc.variable_labels.iter().cloned().collect(),
                },
            );
        }
    }
    catalog
}

/// Produces, fetches, commits a group offset and sends one request of an
/// unknown API, so that the labelled series of a dev server exist.
async fn traffic(server: &DevServer) {
    let topic = unique_name("dashboard");
    create_topic(&server.bootstrap(), &topic, 1, &[]).await;
    let mut conn = RawConn::connect(server.kafka_addr()).await;
    let version = conn.negotiate(ApiKey::Produce, 9).await;
    for i in 0..3u8 {
        let batch = encode_batch(&[(None, Some(bytes::Bytes::from(vec![i; 200])))]);
        let resp = conn
            .request(version, &produce_request(&topic, 0, batch))
            .await;
        assert_eq!(only_partition(&resp).error_code, 0, "{resp:?}");
    }
    assert_eq!(
        raw_fetch_partition(server.kafka_addr(), &topic, 0, 3)
            .await
            .len(),
        3
    );
    let bootstrap = server.bootstrap();
    let group = unique_name("dashboard-group");
    tokio::task::spawn_blocking(move || commit_offset(&bootstrap, &group, &topic, 2))
        .await
        .expect("commit");
    let mut bad = RawConn::connect(server.kafka_addr()).await;
    bad.send_frame(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .await;
    bad.expect_closed("an unknown API key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_uses_exported_metrics_and_labels() {
    let d = dashboard();
    let exprs = expressions(&d);
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|(_, e)| parse_promql(e).0)
        .map(|u| u.name)
        .collect();
    for m in &used {
        assert!(m.starts_with("kafscale_"), "{m} is not a KafScale metric");
    }

    let server = DevServer::start(DevOptions::default()).await;
    traffic(&server).await;
    let s3 = s3_worker_families();
    // Wait until every metric the dashboard uses that a dev server exports
    // has a series (chunk reads and refusals are counted asynchronously).
    let mut catalog = Catalog::new();
    for _ in 0..100 {
        catalog = parse_exposition(&server.metrics().await);
        let missing: Vec<&String> = used
            .iter()
            .filter(|m| family(&catalog, m).is_none() && family(&s3, m).is_none())
            .collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, fam) in s3 {
        catalog.entry(name).or_insert(fam);
    }
    let target = target_labels();
    assert!(target.contains("kafscale_cluster") && target.contains("component"));
    let mut errors = Vec::new();
    for (title, expr) in &exprs {
        for e in check_expression(expr, &catalog, &target) {
            errors.push(format!("{title}: {e}\n    {expr}"));
        }
    }
    // Template variables: label_values(selector, label).
    for v in d["templating"]["list"].as_array().expect("variables") {
        let Some(q) = v["query"].as_str().filter(|_| v["type"] == "query") else {
            continue;
        };
        let (selector, label) = q
            .trim_end_matches(')')
            .rsplit_once(',')
            .unwrap_or_else(|| panic!("not label_values(selector, label): {q}"));
        let label = label.trim();
        // Metric names: the selector's name and the `__name__` regex, not
        // its label names (followed by `=`, `!=` or `=~`).
        let metrics: Vec<&str> = selector
            .split_inclusive(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| !t.ends_with(['=', '!']))
            .map(|t| t.trim_end_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
            .filter(|t| t.starts_with("kafscale_"))
            .collect();
        assert!(!metrics.is_empty(), "variable query {q}");
        for m in metrics {
            match family(&catalog, m) {
                None => errors.push(format!("variable {}: {m} is not exported", v["name"])),
                Some((f, _)) if !f.labels.contains(label) && !target.contains(label) => {
                    errors.push(format!("variable {}: {m} has no label {label}", v["name"]))
                }
                _ => {}
            }
        }
    }
    assert!(
        errors.is_empty(),
        "dashboard queries:\n{}\nexported: {catalog:#?}",
        errors.join("\n")
    );
}
