//! The Alertmanager-compatible ingest on a running daemon: alerts posted to
//! `POST /api/v2/alerts` go through Kafka (the mock cluster) into the same
//! pipeline and open an incident; bad tokens, bodies and sizes are refused.

use crate::support::in_process;

use std::time::Duration;

use triaged::config::{IngestConfig, SecretSource};
use triaged::incident::ActionKind;

fn alert(name: &str, instance: &str, starts: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    serde_json::json!({
        "labels": {"alertname": name, "instance": instance, "job": "node", "severity": "critical"},
        "annotations": {"summary": format!("{instance} is down")},
        "startsAt": starts.to_rfc3339(),
        "endsAt": (starts + chrono::Duration::minutes(5)).to_rfc3339(),
        "generatorURL": "http://prometheus:9090/graph"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_alerts_become_incidents_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();

    let d = in_process::start(crate::repo(), 2, |cfg| {
        cfg.ingest =
            Some(IngestConfig { topic: None, token: Some(SecretSource { env: None, file: Some(token_file) }), max_body_bytes: 4096 });
    })
    .await;
    let (receiver, running) = (&d.receiver, &d.running);
    let url = format!("http://{}/api/v2/alerts", running.http_addr);
    let http = reqwest::Client::new();
    let now = chrono::Utc::now();
    let body = serde_json::json!([alert("InstanceDown", "vm-par1-0001:9100", now), alert("InstanceDown", "vm-par1-0002:9100", now)]);

    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token");
    let r = http.post(&url).bearer_auth("wrong").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401, "wrong token");
    let r = http.post(&url).bearer_auth("s3cret").body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http.post(&url).bearer_auth("s3cret").json(&serde_json::json!([{"labels": {}}])).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().starts_with("alerts[0]: "), "the bad alert is named");
    let r = http.post(&url).bearer_auth("s3cret").body(vec![b' '; 5000]).send().await.unwrap();
    assert_eq!(r.status(), 413, "larger than max_body_bytes");

    let r = http.post(&url).bearer_auth("s3cret").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Two VMs with no failing upstream: one incident each, opened after the group wait.
    let members = |log: &[triaged_testkit::itsm::Received]| -> usize {
        log.iter().filter(|r| r.kind == ActionKind::Open).map(|r| r.incident.members.len()).sum()
    };
    let log = receiver
        .wait_for(Duration::from_secs(30), |log| members(log) >= 2)
        .await
        .unwrap_or_else(|log| panic!("the posted alerts did not open incidents: {} actions", log.len()));
    assert_eq!(members(&log), 2, "both posted alerts reached the core, once each");
    let m = &running.metrics;
    assert_eq!(m.ingest_alerts.get(), 2);
    assert_eq!(m.ingest_requests.with_label_values(&["401"]).get(), 2);
    assert_eq!(m.ingest_requests.with_label_values(&["400"]).get(), 2);
    assert_eq!(m.ingest_requests.with_label_values(&["200"]).get(), 1);

    assert!(d.stop().await.clean_shutdown);
}
