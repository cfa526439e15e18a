//! The operations files against the real daemon: every metric that the
//! Grafana dashboard (ops/grafana/argus.json) and the Prometheus alerting
//! rules (ops/prometheus/alerts.yml) read is one the daemon exports, under
//! that type; and both files have the shape their tools expect.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{start, ROOT};
use serde_json::Value;

/// Histogram and summary series that carry their family's name plus a suffix.
const SERIES_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// The metric names an expression reads: identifiers starting `argus_` or
/// `process_` outside quoted strings (label values), as written.
fn metric_names(expr: &str) -> Vec<String> {
    let mut unquoted = String::with_capacity(expr.len());
    let mut quote = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                unquoted.push(' ');
            }
            None if matches!(c, '"' | '\'' | '`') => {
                quote = Some(c);
                unquoted.push(' ');
            }
            None => unquoted.push(c),
        }
    }
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut rest = unquoted.as_str();
    while !rest.is_empty() {
        let start = rest.find(|c: char| is_ident(c)).unwrap_or(rest.len());
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        let ident = &rest[..end];
        if ident.starts_with("argus_") || ident.starts_with("process_") {
            names.push(ident.to_string());
        }
        rest = &rest[end..];
    }
    names
}

/// `# TYPE name type` lines of a scrape.
fn exported_types(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect()
}

/// The names in `exprs` the daemon does not export: a name must be a
/// family of the scrape, or a family's `_bucket`/`_sum`/`_count` series
/// when that family is a histogram (or summary).
fn unexported(exprs: &[String], types: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut missing = BTreeSet::new();
    for expr in exprs {
        for name in metric_names(expr) {
            let as_series_of = SERIES_SUFFIXES.iter().find_map(|s| {
                let base = name.strip_suffix(s)?;
                matches!(
                    types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
                .then_some(base)
            });
            if as_series_of.is_none() && !types.contains_key(&name) {
                missing.insert(name);
            }
        }
    }
    missing
}

/// Every string of `v` under one of `keys`, at any depth.
fn strings_under(v: &Value, keys: &[&str], out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::String(s) if keys.contains(&k.as_str()) => out.push(s.clone()),
                    _ => strings_under(x, keys, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| strings_under(x, keys, out)),
        _ => {}
    }
}

/// The dashboard's PromQL (panel targets and template variable queries),
/// after checking its shape: a datasource variable every query uses, so it
/// imports into any Grafana with a Prometheus data source.
fn dashboard_exprs() -> Vec<String> {
    let path = format!("{ROOT}/ops/grafana/argus.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let d: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "schemaVersion");
    assert!(!d["uid"].as_str().unwrap().is_empty());
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "a DS_PROMETHEUS datasource variable"
    );
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id of {title}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            assert!(!metric_names(expr).is_empty(), "{title}: {expr}");
            exprs.push(expr.to_string());
        }
    }
    strings_under(&d["templating"], &["query", "definition"], &mut exprs);
    exprs
}

/// The rules' expressions, after checking each rule has what an alert
/// needs: a `for`, a severity and both annotations.
fn alert_exprs() -> Vec<String> {
    let path = format!("{ROOT}/ops/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut exprs = Vec::new();
    let mut alerts = BTreeSet::new();
    let groups = doc["groups"].as_sequence().expect("groups");
    assert!(!groups.is_empty());
    for g in groups {
        assert!(g["name"].as_str().is_some_and(|n| !n.is_empty()));
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().expect("every rule is an alert");
            assert!(alerts.insert(name.to_string()), "{name} twice");
            let expr = r["expr"].as_str().expect("expr").trim();
            let d = r["for"].as_str().unwrap_or_else(|| panic!("{name}: for"));
            assert!(
                d.ends_with(['s', 'm', 'h']) && d[..d.len() - 1].parse::<u32>().is_ok(),
                "{name}: for {d}"
            );
            let severity = r["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning" | "info")),
                "{name}: severity {severity:?}"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: {a}"
                );
            }
            // Only the scrape's own `up` may stand without an argus metric.
            assert!(
                !metric_names(expr).is_empty() || expr.starts_with("up{"),
                "{name}: {expr}"
            );
            exprs.push(expr.to_string());
        }
    }
    exprs
}

/// The unlabelled sample `name`'s value in a scrape.
fn sample(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name}"))
}

#[tokio::test]
async fn dashboard_and_alerts_read_only_exported_metrics() {
    let dashboard = dashboard_exprs();
    let alerts = alert_exprs();

    let s = start(|_| {}).await;
    // Series labelled by route and failure reason come with traffic.
    assert_eq!(
        s.client
            .get(s.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        s.client
            .get(s.url("/api/v1/no-such-thing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // An invented method is one `other` series, however many a client
    // makes up.
    for m in ["XYZZY", "M12345", "PROPFIND"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = s
            .client
            .request(method, s.url("/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{m}");
    }
    let scrape = s.metrics().await;
    s.stop().await;
    for m in ["XYZZY", "M12345", "PROPFIND"] {
        assert!(
            !scrape.contains(&format!("method=\"{m}\"")),
            "{m} is a label value"
        );
    }
    assert!(scrape.contains("method=\"other\""), "{scrape}");
    let types = exported_types(&scrape);

    // The check itself catches a misspelt name and a histogram suffix on a
    // counter.
    let wrong = [
        "rate(argus_http_request_total[5m])".to_string(),
        "argus_failures_total_bucket".to_string(),
        "process_open_fd".to_string(),
    ];
    assert_eq!(
        unexported(&wrong, &types),
        BTreeSet::from(wrong.map(|w| metric_names(&w).remove(0))),
    );

    let missing = unexported(&dashboard, &types);
    assert!(
        missing.is_empty(),
        "the dashboard reads {missing:?}, which /metrics does not export"
    );
    let missing = unexported(&alerts, &types);
    assert!(
        missing.is_empty(),
        "the alerting rules read {missing:?}, which /metrics does not export"
    );

    // The metrics added for these files carry real values.
    assert_eq!(sample(&scrape, "argus_ready"), 1.0);
    let (avail, size) = (
        sample(&scrape, "argus_state_filesystem_avail_bytes"),
        sample(&scrape, "argus_state_filesystem_size_bytes"),
    );
    assert!(avail > 0.0 && size >= avail, "{avail} of {size}");
    for family in ["pbs", "skin"] {
        let line = format!("argus_webhook_pending{{family=\"{family}\"}} 0");
        assert!(scrape.lines().any(|l| l == line), "{line} in\n{scrape}");
    }
    // The default depth: three CPU batches.
    let capacity = 3 * argus::config::Config::default().batch.max_batch_size;
    assert!(
        scrape
            .lines()
            .any(|l| l == format!("argus_batch_queue_capacity{{model=\"centerface\"}} {capacity}")),
        "{scrape}"
    );
}
