//! The embedded demo runs the real pipeline (mock Kafka cluster, daemon, HTTP
//! receiver) and must turn the storm into exactly its two faults.

use triaged::demo::{run, DemoArgs};
use triaged::incident::{ActionKind, IncidentState};
use triaged_testkit::itsm::{latest, opened_keys};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_storm_becomes_two_incidents() {
    let root = crate::repo().to_path_buf();
    let report = run(DemoArgs { listen: "127.0.0.1:0".into(), repeats: 2, root, metrics_out: None, verbose: false })
        .await
        .unwrap_or_else(|e| panic!("demo failed: {e}"));
    let keys = opened_keys(&report.received);
    assert_eq!(keys.len(), 2, "one incident per fault: {keys:?}");
    let last = latest(&report.received);
    assert!(last.iter().all(|r| r.kind == ActionKind::Resolve && r.incident.state == IncidentState::Resolved));
    let storm =
        last.iter().find(|r| r.incident.root_cause.as_ref().is_some_and(|c| c.id.starts_with("sw-core"))).expect("core switch incident");
    assert_eq!(storm.incident.priority, 1, "a core switch failure impacting business services is P1");
    assert!(storm.incident.members.len() > 50, "the cascade is one incident: {}", storm.incident.members.len());
    assert!(!storm.incident.impacted_services.is_empty());
    assert_eq!(report.summary.decisions.get("dropped"), Some(&1), "the Watchdog heartbeat is dropped");
    let opens = report.received.iter().filter(|r| r.kind == ActionKind::Open).count();
    assert_eq!(opens, 2, "sink calls scale with incidents, not events");
    assert!(report.summary.clean_shutdown);
}

/// The value of the sample `name{labels}` in a Prometheus text file.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_metrics_file_counts_the_last_actions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("metrics.prom");
    let root = crate::repo().to_path_buf();
    let report = run(DemoArgs { listen: "127.0.0.1:0".into(), repeats: 1, root, metrics_out: Some(out.clone()), verbose: false })
        .await
        .unwrap_or_else(|e| panic!("demo failed: {e}"));
    let text = std::fs::read_to_string(&out).unwrap();
    let resolves = sample(&text, r#"triaged_incident_actions_total{action="resolve",sink="default"}"#).unwrap_or(0.0);
    assert_eq!(Some(resolves as u64), report.summary.actions.get("resolve").copied(), "the file and the summary agree");
    assert_eq!(resolves as usize, opened_keys(&report.received).len(), "every opened incident resolved");
    for p in 1..=5 {
        let open = sample(&text, &format!(r#"triaged_open_incidents{{priority="P{p}"}}"#)).unwrap_or(0.0);
        assert_eq!(open, 0.0, "P{p} incidents still open in the file");
    }
}
