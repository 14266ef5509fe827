//! The PagerDuty profile: Events API v2 trigger and resolve events, the
//! severity mapping, and error classes with the routing key redacted.

use serde_json::json;
use wiremock::{MockServer, ResponseTemplate};

use triaged::event::Severity;
use triaged::incident::{ActionKind, SinkError};

use super::{answer, answer_once, body, build, mount_enqueue, pd_config, received, sample_action, secret_file, KEY};

#[tokio::test]
async fn pagerduty_trigger_event() {
    let (_dir, rk) = secret_file("R0UTINGKEY0123456789\n");
    let server = MockServer::start().await;
    mount_enqueue(&server).await;
    let (sink, metrics) = build(&pd_config(&server, &rk));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();

    let reqs = received(&server, "POST", "/v2/enqueue").await;
    assert_eq!(reqs.len(), 1);
    let b = body(&reqs[0]);
    assert_eq!(b["routing_key"], "R0UTINGKEY0123456789");
    assert_eq!(b["event_action"], "trigger");
    assert_eq!(b["dedup_key"], KEY);
    let p = &b["payload"];
    assert_eq!(p["summary"], "sw-core-01 down: 2 dependent hosts unreachable [trg-00112233445566ff]");
    assert_eq!(p["severity"], "error", "Major maps to error");
    assert_eq!(p["source"], "sw-core-01");
    assert_eq!(p["component"], "sw-core-01");
    assert_eq!(p["group"], "payments");
    assert_eq!(p["class"], "topology:sw-core-01");
    let d = &p["custom_details"];
    assert_eq!(d["priority"], "P1");
    assert_eq!(d["impact"], 1);
    assert_eq!(d["urgency"], 2);
    assert_eq!(d["impacted_services"], json!(["payments", "webshop"]));
    assert_eq!(d["members"].as_array().unwrap().len(), 2);
    assert!(d["members"][0].as_str().unwrap().contains("nagios/ping on sw-core-01"));
    assert_eq!(d["notes"], json!(["open by triaged", "2 members firing"]));
    assert_eq!(d["runbook"], "https://wiki.example.com/runbooks/core-switch");
    assert_eq!(d["oncall"], "netops-primary");
    assert_eq!(b["links"], json!([{ "href": "https://wiki.example.com/runbooks/core-switch", "text": "Runbook" }]));
    assert_eq!(metrics.sink_request_duration.with_label_values(&["default", "pagerduty", "enqueue"]).get_sample_count(), 1);
}

#[tokio::test]
async fn pagerduty_update_and_reopen_trigger_and_resolve_resolves() {
    let (_dir, rk) = secret_file("rk-1");
    let server = MockServer::start().await;
    mount_enqueue(&server).await;
    let (sink, _) = build(&pd_config(&server, &rk));
    for kind in [ActionKind::Update, ActionKind::Reopen, ActionKind::Resolve] {
        sink.apply(&sample_action(kind)).await.unwrap();
    }
    let reqs = received(&server, "POST", "/v2/enqueue").await;
    let actions: Vec<_> = reqs.iter().map(|r| body(r)["event_action"].clone()).collect();
    assert_eq!(actions, [json!("trigger"), json!("trigger"), json!("resolve")]);
    let resolve = body(&reqs[2]);
    assert_eq!(resolve["dedup_key"], KEY);
    assert_eq!(resolve["routing_key"], "rk-1");
}

#[tokio::test]
async fn pagerduty_severity_mapping_and_defaults() {
    let (_dir, rk) = secret_file("rk-2");
    let server = MockServer::start().await;
    mount_enqueue(&server).await;
    let (sink, _) = build(&pd_config(&server, &rk));
    let cases = [
        (Severity::Critical, "critical"),
        (Severity::Major, "error"),
        (Severity::Minor, "warning"),
        (Severity::Warning, "warning"),
        (Severity::Info, "info"),
    ];
    for (sev, _) in cases {
        let mut a = sample_action(ActionKind::Open);
        a.incident.severity = sev;
        a.incident.ci = None;
        a.incident.root_cause = None;
        a.incident.runbook = None;
        a.incident.impacted_services.clear();
        a.incident.title = "y".repeat(2000);
        sink.apply(&a).await.unwrap();
    }
    let reqs = received(&server, "POST", "/v2/enqueue").await;
    assert_eq!(reqs.len(), cases.len());
    for (r, (sev, expected)) in reqs.iter().zip(cases) {
        let b = body(r);
        assert_eq!(b["payload"]["severity"], expected, "{sev:?}");
        assert_eq!(b["payload"]["source"], "triaged");
        assert!(b["payload"].get("component").is_none());
        assert!(b["payload"].get("group").is_none());
        assert!(b.get("links").is_none());
        assert_eq!(b["payload"]["summary"].as_str().unwrap().chars().count(), 1024);
    }
}

#[tokio::test]
async fn pagerduty_400_is_permanent_and_429_retryable() {
    let (_dir, rk) = secret_file("rk-secret-777");
    let server = MockServer::start().await;
    answer_once(&server, "POST", ResponseTemplate::new(429)).await;
    let rejected = json!({ "status": "invalid event", "errors": ["routing_key rk-secret-777 is invalid"] });
    answer(&server, "POST", ResponseTemplate::new(400).set_body_json(rejected)).await;
    let (sink, _) = build(&pd_config(&server, &rk));
    let first = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(matches!(first, SinkError::Retryable { maybe_applied: false, .. }), "{first:?}");
    let second = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    let SinkError::Permanent(msg) = &second else { panic!("{second:?}") };
    assert!(msg.contains("400") && msg.contains("invalid event"), "{msg}");
    assert!(!msg.contains("rk-secret-777"), "secret echoed by the server leaks: {msg}");
    assert!(msg.contains("[redacted]"), "{msg}");
}
