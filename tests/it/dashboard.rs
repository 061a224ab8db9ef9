//! The Grafana dashboard queries only metrics konsumer exports: the names come
//! from konsumer's own registry (its `/metrics` text, types included), not from a
//! list kept here.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// Words of PromQL that are not metric names.
const PROMQL: &[&str] = &[
    "sum",
    "avg",
    "max",
    "min",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "rate",
    "irate",
    "increase",
    "delta",
    "deriv",
    "histogram_quantile",
    "label_values",
    "clamp_min",
    "clamp_max",
    "abs",
    "absent",
    "changes",
    "resets",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "sum_over_time",
    "count_over_time",
    "time",
    "vector",
    "scalar",
    "sort",
    "sort_desc",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
];

/// A scrape of konsumer's registry with one sample in every labelled family (an
/// empty family is not written at all).
fn scrape() -> String {
    use konsumer::telemetry::metrics::*;
    let m = Metrics::default();
    m.observe_admission(
        AdmissionLabels {
            webhook: Webhook::mutate_workloads,
            kind: Kind::Pod,
            operation: Operation::CREATE,
            outcome: Outcome::patched,
        },
        0.001,
    );
    m.observe_prometheus_query("http://prometheus:9090", None, 0.01);
    m.set_instances(
        "streams/orders",
        Some([
            ("RUNNING", 1),
            ("PENDING_SCALE_UP", 0),
            ("PENDING_SCALE_DOWN", 0),
            ("SATURATED", 0),
        ]),
    );
    m.reconcile_errors
        .get_or_create(&ReasonLabel {
            reason: "status".into(),
        })
        .inc();
    m.transitions
        .get_or_create(&EventLabel {
            event: "ScaledUp".into(),
        })
        .inc();
    m.connections_displaced
        .get_or_create(&ListenerLabel {
            listener: "webhook".into(),
        })
        .inc();
    m.deployment_writes
        .get_or_create(&WriteLabels {
            change: "rollout".into(),
            outcome: "ok".into(),
        })
        .inc();
    m.events_journaled
        .get_or_create(&TypeLabel {
            event_type: "scaled".into(),
        })
        .inc();
    m.event_deliveries
        .get_or_create(&OutcomeLabel {
            outcome: "delivered".into(),
        })
        .inc();
    let subscription = SubscriptionLabel {
        subscription: "streams/feed".into(),
    };
    m.events_pending.get_or_create(&subscription).set(1);
    m.subscription_failing.get_or_create(&subscription).set(0);
    let api = ApiLabels {
        route: "/v1/namespaces/{namespace}/consumers/{name}".into(),
        method: "GET".into(),
        status_class: "2xx".into(),
    };
    m.api_requests.get_or_create(&api).inc();
    m.api_duration.get_or_create(&api).observe(0.001);
    m.encode()
}

/// Every sample name `/metrics` can carry, from the `# TYPE` lines of a scrape.
fn exported() -> BTreeSet<String> {
    let text = scrape();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            "gaugehistogram" => &["_gsum", "_gcount", "_bucket"],
            _ => &[""],
        };
        for s in suffixes {
            names.insert(format!("{name}{s}"));
        }
    }
    names
}

/// The metric names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Drop what holds no metric names: strings, label matchers, ranges, grouping
    // label lists, Grafana variables.
    let mut cleaned = String::new();
    let mut depth_braces = 0;
    let mut depth_brackets = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' if depth_braces == 0 => in_string = !in_string,
            _ if in_string => {}
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => depth_brackets += 1,
            ']' => depth_brackets -= 1,
            _ if depth_braces > 0 || depth_brackets > 0 => {}
            c => cleaned.push(c),
        }
    }
    let mut names = BTreeSet::new();
    let tokens: Vec<&str> = cleaned
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$'))
        .filter(|t| !t.is_empty())
        .collect();
    let mut skip_group = false;
    for t in &tokens {
        if skip_group {
            // The label list after by/without/on/ignoring, up to its ')' (the
            // split dropped it): labels until the next PromQL word or metric call.
            if PROMQL.contains(t) || t.starts_with("konsumer_") || t.starts_with("process_") {
                skip_group = false;
            } else {
                continue;
            }
        }
        if matches!(*t, "by" | "without" | "on" | "ignoring") {
            skip_group = true;
            continue;
        }
        let is_number = t.chars().next().is_some_and(|c| c.is_ascii_digit());
        if PROMQL.contains(t) || is_number || t.starts_with('$') {
            continue;
        }
        names.insert(t.to_string());
    }
    names
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" || k == "definition" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    exprs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let got = metric_names(
        r#"histogram_quantile(0.99, sum by (le, webhook) (rate(konsumer_admission_duration_seconds_bucket{job=~"$job", x="a{b}"}[5m])))"#,
    );
    assert_eq!(
        got,
        BTreeSet::from(["konsumer_admission_duration_seconds_bucket".to_string()])
    );
    let got =
        metric_names(r#"max by (pod) (konsumer_leader{job=~"$job"}) == 1 or process_open_fds"#);
    assert_eq!(
        got,
        BTreeSet::from([
            "konsumer_leader".to_string(),
            "process_open_fds".to_string()
        ])
    );
    assert_eq!(
        metric_names("label_values(konsumer_build_info, job)"),
        BTreeSet::from(["konsumer_build_info".to_string(), "job".to_string()])
    );
}

#[test]
fn every_metric_the_dashboard_queries_is_one_konsumer_exports() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/konsumer.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 15, "{} queries", all.len());
    let exported = exported();
    assert!(
        exported.contains("konsumer_admission_requests_total"),
        "{exported:?}"
    );
    let mut used = BTreeSet::new();
    for e in &all {
        for name in metric_names(e) {
            // label_values(metric, label): the label is not a metric.
            if e.starts_with("label_values(") && !name.starts_with("konsumer_") {
                continue;
            }
            assert!(
                exported.contains(&name),
                "the dashboard queries {name}, which konsumer does not export (in {e})"
            );
            used.insert(name);
        }
    }
    // Every family konsumer exports has a panel: a new metric gets one here.
    let families = scrape()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE konsumer_"))
        .map(|l| format!("konsumer_{}", l.split(' ').next().unwrap()))
        .collect::<Vec<_>>();
    for family in families {
        assert!(
            used.iter().any(|u| u.starts_with(&family)),
            "no panel of dashboards/konsumer.json shows {family}"
        );
    }
}
