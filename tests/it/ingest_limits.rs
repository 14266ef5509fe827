//! Ingest answers that stop Prometheus from retrying what can never
//! succeed: an alert larger than Kafka's message size gets 413 (not 503),
//! `bearer` in any case is the Bearer scheme, and every answer is counted.

use crate::support::in_process;

use triaged::config::{IngestConfig, SecretSource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_too_large_for_kafka_gets_413_and_every_answer_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let d = in_process::start(crate::repo(), 1, |cfg| {
        cfg.ingest =
            Some(IngestConfig { topic: None, token: Some(SecretSource { env: None, file: Some(token_file) }), max_body_bytes: 4 << 20 });
    })
    .await;
    let addr = d.running.http_addr;
    let url = format!("http://{addr}/api/v2/alerts");
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().to_rfc3339();
    let huge = serde_json::json!([{
        "labels": {"alertname": "Huge", "instance": "vm-par1-0001:9100", "severity": "critical"},
        "annotations": {"description": "x".repeat(1_200_000)},
        "startsAt": now,
    }]);
    let r = http.post(&url).header("Authorization", "bearer s3cret").json(&huge).send().await.unwrap();
    let code = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(code, 413, "above message.max.bytes, lower-case scheme accepted: {text}");
    assert!(text.contains("message.max.bytes"), "{text}");
    let r = http.post(&url).header("Authorization", "Bearer nope").json(&huge).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let small = serde_json::json!([{ "labels": {"alertname": "Small", "instance": "vm-par1-0001:9100"}, "startsAt": now }]);
    let r = http.post(&url).header("Authorization", "BEARER s3cret").json(&small).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let metrics = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    for (code, n) in [("200", 1), ("401", 1), ("413", 1), ("503", 0)] {
        let series = format!("triaged_ingest_requests_total{{code=\"{code}\"}} {n}");
        assert!(metrics.contains(&series), "{series} missing");
    }
    d.stop().await;
}
