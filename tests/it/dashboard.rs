//! The NOC wall dashboard (`docs/grafana/triaged-noc-wall.json`) only queries
//! metrics the daemon exports: renaming a metric it uses fails this test.

use std::collections::BTreeSet;

use regex::Regex;
use triaged::metrics::Metrics;

fn dashboard() -> serde_json::Value {
    let path = crate::repo().join("docs/grafana/triaged-noc-wall.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_queried_metric_is_exported() {
    let names = Metrics::new().names();
    let metric = Regex::new(r"triaged_[a-z0-9_]+").unwrap();
    let d = dashboard();
    let mut used = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for m in metric.find_iter(expr) {
                let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| m.as_str().strip_suffix(s)).unwrap_or(m.as_str());
                assert!(names.contains(base), "panel `{}` queries `{}`, which triaged does not export", p["title"], m.as_str());
                used.insert(base.to_string());
            }
        }
    }
    for wanted in
        ["triaged_open_incidents", "triaged_open_incidents_by_service", "triaged_sink_errors_total", "triaged_kafka_consumer_lag_messages"]
    {
        assert!(used.contains(wanted), "the wall shows {wanted}");
    }
}

#[test]
fn panels_have_unique_ids_and_the_datasource_variable() {
    let d = dashboard();
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id {}", p["id"]);
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel `{}`", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel `{}`", p["title"]);
        }
    }
    let vars: Vec<&str> = d["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(vars, ["datasource", "instance"]);
}

/// Every query is valid PromQL: `promtool check rules` on recording rules made
/// of them, with Grafana's variables replaced by values. promtool comes from
/// the Debian package `prometheus` (`scripts/install-test-deps`).
#[test]
fn every_query_is_valid_promql() {
    let d = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$__range", "6h").replace("$instance", ".*");
            n += 1;
            rules.push_str(&format!("      - record: dashboard:query{n}\n        expr: {}\n", serde_json::to_string(&expr).unwrap()));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules", file.to_str().unwrap()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}); run scripts/install-test-deps"));
    assert!(out.status.success(), "{}\n{}\n{rules}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
