//! Several sinks and routes on a running daemon (mock cluster, in-process):
//! ServiceNow gets every incident, PagerDuty the P1–P2 ones with the routing
//! key of the incident's on-call rotation. An action is acknowledged to the
//! core only once every sink it was routed to has acknowledged it: with
//! PagerDuty down it stays owed (the shutdown is not clean, a restart sends
//! it again) even though ServiceNow has it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use triaged::config::{Config, HumanDuration, RouteConfig, SinkProfile};

use super::{config, file_secret, secret_file};
use crate::support::{self, in_process};

/// A critical database (its critical alerts are P1) and a low-criticality
/// application (its critical alerts are P3), with their rotations.
const CMDB: &str = "cis:
  - { id: rt-db-01, name: rt-db-01, type: database, criticality: critical, owner_group: dba, oncall: dba-oncall }
  - { id: rt-app-01, name: rt-app-01, type: application, criticality: low, owner_group: apps, oncall: apps-oncall }
";

/// Keeps the CMDB and the key files alive for the test.
struct Setup {
    _dir: tempfile::TempDir,
    _keys: Vec<tempfile::TempDir>,
    servicenow: MockServer,
    pagerduty: MockServer,
}

async fn setup() -> Setup {
    let servicenow = MockServer::start().await;
    // Method only: no record under any key, every create and update accepted.
    let sn = |m: &str, status: u16, body: serde_json::Value| {
        Mock::given(method(m)).respond_with(ResponseTemplate::new(status).set_body_json(body))
    };
    sn("GET", 200, json!({ "result": [] })).mount(&servicenow).await;
    sn("POST", 201, json!({ "result": { "sys_id": "sys-1", "number": "INC0010001" } })).mount(&servicenow).await;
    sn("PATCH", 200, json!({ "result": { "sys_id": "sys-1" } })).mount(&servicenow).await;
    let pagerduty = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cmdb.yaml"), CMDB).unwrap();
    Setup { _dir: dir, _keys: Vec::new(), servicenow, pagerduty }
}

async fn pagerduty_answers(server: &MockServer, status: u16) {
    server.reset().await;
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(status).set_body_json(json!({ "status": "success", "message": "Event processed" })))
        .mount(server)
        .await;
}

/// `[sinks.servicenow]` for everything, `[sinks.pagerduty]` for P1–P2 with
/// a default key and one for `dba-oncall`.
fn routed(s: &mut Setup) -> impl FnOnce(&mut Config) {
    let (d1, default_key) = secret_file("pd-key-default");
    let (d2, dba_key) = secret_file("pd-key-dba");
    s._keys.extend([d1, d2]);
    let (sn_url, pd_url, cmdb) = (s.servicenow.uri(), s.pagerduty.uri(), s._dir.path().join("cmdb.yaml"));
    move |cfg: &mut Config| {
        cfg.cmdb.path = cmdb;
        cfg.sink = None;
        let mut sn = config(SinkProfile::Servicenow, &sn_url);
        sn.name = "servicenow".into();
        let mut pd = config(SinkProfile::Pagerduty, &pd_url);
        pd.name = "pagerduty".into();
        pd.routing_key = Some(file_secret(&default_key));
        pd.routing_keys = BTreeMap::from([("dba-oncall".to_string(), file_secret(&dba_key))]);
        pd.retry.max_backoff = HumanDuration(Duration::from_millis(50));
        cfg.sinks = BTreeMap::from([("servicenow".to_string(), sn), ("pagerduty".to_string(), pd)]);
        cfg.routes = vec![
            RouteConfig { name: Some("everything to ServiceNow".into()), sinks: vec!["servicenow".into()], ..Default::default() },
            RouteConfig { sinks: vec!["pagerduty".into()], priority: Some(vec![1, 2]), ..Default::default() },
        ];
        cfg.shutdown.deadline = HumanDuration(Duration::from_secs(3));
        let errs = cfg.validate(std::path::Path::new("routes.toml"));
        assert!(errs.is_empty(), "{errs:?}");
    }
}

async fn alert(producer: &FutureProducer, host: &str) {
    let event = json!({
        "source": "routes-test",
        "source_id": format!("{host}-disk"),
        "ci": { "host": host },
        "check": "Disk full",
        "severity": "critical",
        "status": "firing",
        "summary": "Disk full",
        "time": Utc::now().to_rfc3339(),
    });
    let payload = serde_json::to_vec(&event).unwrap();
    producer.send(FutureRecord::to("events").key(host).payload(&payload), Duration::from_secs(5)).await.map_err(|(e, _)| e).unwrap();
}

async fn requests(server: &MockServer, http_method: &str) -> Vec<Request> {
    server.received_requests().await.unwrap().into_iter().filter(|r| r.method.as_str() == http_method).collect()
}

/// Polls `server` until it has at least `n` `http_method` requests.
async fn wait_for(server: &MockServer, http_method: &str, n: usize, what: &str) -> Vec<Request> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = requests(server, http_method).await;
        if got.len() >= n {
            return got;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {} of {n} {http_method}s within a minute", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn routing_key(r: &Request) -> String {
    r.body_json::<serde_json::Value>().unwrap()["routing_key"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p3_reaches_only_servicenow_and_a_p1_both_with_its_rotations_key() {
    let mut s = setup().await;
    pagerduty_answers(&s.pagerduty, 202).await;
    let d = in_process::start(crate::repo(), 1, routed(&mut s)).await;
    alert(&d.producer, "rt-app-01").await;
    wait_for(&s.servicenow, "POST", 1, "the P3 created at ServiceNow").await;
    alert(&d.producer, "rt-db-01").await;
    wait_for(&s.servicenow, "POST", 2, "the P1 created at ServiceNow").await;
    let pages = wait_for(&s.pagerduty, "POST", 1, "the P1 paged").await;
    let m = &d.running.metrics;
    support::wait_until("both opens counted at ServiceNow", Duration::from_secs(10), || {
        m.incident_actions.with_label_values(&["servicenow", "open"]).get() == 2
    })
    .await;
    assert_eq!(pages.len(), 1, "the P3 is not paged");
    assert_eq!(routing_key(&pages[0]), "pd-key-dba", "the dba rotation's key");
    assert_eq!(m.incident_actions.with_label_values(&["pagerduty", "open"]).get(), 1);
    assert_eq!(m.actions_unrouted.get(), 0);
    let text = m.render();
    assert!(text.contains("triaged_incident_actions_total{action=\"open\",sink=\"pagerduty\"} 1"), "{text}");
    assert!(text.contains("triaged_sink_circuit_state{sink=\"servicenow\"} 0"), "{text}");
    let summary = d.stop().await;
    assert!(summary.clean_shutdown, "every action acknowledged by every sink it was routed to");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pagerduty_down_the_p1_stays_owed_although_servicenow_has_it() {
    let mut s = setup().await;
    pagerduty_answers(&s.pagerduty, 500).await;
    let d = in_process::start(crate::repo(), 1, routed(&mut s)).await;
    alert(&d.producer, "rt-db-01").await;
    wait_for(&s.servicenow, "POST", 1, "the P1 created at ServiceNow").await;
    wait_for(&s.pagerduty, "POST", 3, "PagerDuty retried").await;
    let m = &d.running.metrics;
    support::wait_until("ServiceNow acknowledged", Duration::from_secs(10), || {
        m.incident_actions.with_label_values(&["servicenow", "open"]).get() == 1
    })
    .await;
    assert!(m.sink_errors.with_label_values(&["pagerduty", "retryable"]).get() >= 3);
    assert_eq!(m.sink_errors.with_label_values(&["servicenow", "retryable"]).get(), 0);
    assert_eq!(m.incident_actions.with_label_values(&["pagerduty", "open"]).get(), 0);
    let summary = d.stop().await;
    assert!(!summary.clean_shutdown, "the open is still owed to PagerDuty: a restart sends it again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_pagerduty_heals_the_owed_p1_is_acknowledged() {
    let mut s = setup().await;
    pagerduty_answers(&s.pagerduty, 500).await;
    let d = in_process::start(crate::repo(), 1, routed(&mut s)).await;
    alert(&d.producer, "rt-db-01").await;
    wait_for(&s.servicenow, "POST", 1, "the P1 created at ServiceNow").await;
    wait_for(&s.pagerduty, "POST", 2, "PagerDuty refused").await;
    pagerduty_answers(&s.pagerduty, 202).await;
    let m = &d.running.metrics;
    support::wait_until("PagerDuty acknowledged", Duration::from_secs(30), || {
        m.incident_actions.with_label_values(&["pagerduty", "open"]).get() == 1
    })
    .await;
    assert_eq!(routing_key(&requests(&s.pagerduty, "POST").await[0]), "pd-key-dba");
    let summary = d.stop().await;
    assert!(summary.clean_shutdown, "acknowledged by both sinks");
}
