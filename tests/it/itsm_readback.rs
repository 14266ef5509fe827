//! What people do in ServiceNow, read back by the daemon and acted on: a
//! record an operator closed (state 7) while its alert fires is reopened
//! with a note, never written into silently; closed again, it is left
//! closed; an acknowledgement and a priority the operator set survive a
//! SIGKILL restart, and the priority is not overwritten. The daemon is the
//! real binary on the librdkafka mock cluster; ServiceNow is the mimic.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use rdkafka::mocking::MockCluster;
use serde_json::json;
use triaged_testkit::mimic::{Exchange, Itsm, Meaning, Mimic};

use crate::support::process::{free_port, produce_to, write_config_with, Daemon, Extra, LogDir, Sink};

const MINUTE: Duration = Duration::from_secs(60);
const PD_KEY_ENV: &str = "READBACK_PD_ROUTING_KEY";
const PD_KEY: &str = "R0UT1NGKEY0000000000000000000000";
const WEBHOOK_SECRET: &str = "whsec-readback";

/// A native event on `host`.
fn event(id: &str, host: &str, severity: &str) -> (String, Vec<u8>) {
    let event = json!({
        "source": "readback",
        "source_id": id,
        "ci": { "host": host },
        "check": "Disk full",
        "severity": severity,
        "status": "firing",
        "summary": format!("Disk full on {host}"),
        "time": Utc::now().to_rfc3339(),
    });
    (host.to_owned(), serde_json::to_vec(&event).unwrap())
}

struct Setup {
    // Dropped last: the daemon and producers go first.
    _logs: LogDir,
    mimic: Mimic,
    brokers: String,
    config: std::path::PathBuf,
    port: u16,
    logs_path: std::path::PathBuf,
    cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

async fn setup(group: &str, read_back: &str) -> Setup {
    let sink = Sink { profile: "servicenow", routing_key_env: None, auth: None };
    setup_with(group, Itsm::ServiceNow, sink, &format!("[sink.read_back]\npoll_interval = \"200ms\"\n{read_back}")).await
}

async fn setup_with(group: &str, itsm: Itsm, sink: Sink, sections: &str) -> Setup {
    let logs = LogDir::new();
    let cluster = MockCluster::new(1).unwrap();
    for (topic, n) in [("events", 1), ("triaged-dead-letter", 1), ("triaged-state", 1)] {
        cluster.create_topic(topic, n, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let mimic = Mimic::start(itsm).await.unwrap();
    let port = free_port();
    let sections = sections.replace("{logs}", &logs.path().display().to_string());
    let extra = Extra { sink: Some(sink), sections, ..Extra::default() };
    let config = write_config_with(logs.path(), &brokers, group, 3000, &mimic.url(), port, &extra);
    let logs_path = logs.path().to_owned();
    Setup { _logs: logs, mimic, brokers, config, port, logs_path, cluster }
}

impl Setup {
    fn start(&self, n: u32) -> Daemon {
        Daemon::start_with_env(&self.config, &self.logs_path, n, self.port, &[(PD_KEY_ENV, PD_KEY)])
    }

    async fn send(&self, messages: &[(String, Vec<u8>)]) {
        produce_to(&self.brokers, 0, messages, &mut BTreeMap::new()).await;
    }

    /// The key of the first record created.
    async fn created(&self) -> String {
        let x = self.mimic.answered(MINUTE, |x| x.meaning == Meaning::Create).await.expect("a record created");
        x.key.expect("the create carries its correlation_id")
    }

    /// Requests about `key` after log entry `mark` that write (not look-ups).
    fn writes_since(&self, key: &str, mark: u64) -> Vec<Exchange> {
        self.mimic.log().into_iter().filter(|x| x.seq > mark && x.key.as_deref() == Some(key) && x.meaning != Meaning::Lookup).collect()
    }

    fn last_seq(&self) -> u64 {
        self.mimic.log().last().map_or(0, |x| x.seq)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_closed_while_its_alert_fires_is_reopened_once_then_left_closed() {
    let s = setup("triaged-readback-reopen", "").await;
    let daemon = s.start(1);
    s.send(&[event("a-1", "rb-reopen", "major")]).await;
    let key = s.created().await;

    // An operator closes the record; the alert still fires.
    let mark = s.last_seq();
    assert!(s.mimic.sn_operator(&key, json!({ "state": "7", "close_code": "Closed by caller" })));
    let reopen = s.mimic.answered(MINUTE, |x| x.seq > mark && x.meaning == Meaning::Reopen).await.expect("reopened");
    let writes = s.writes_since(&key, mark);
    assert_eq!(
        writes.iter().map(|x| x.meaning).collect::<Vec<_>>(),
        [Meaning::Reopen],
        "nothing written into the closed record but the reopen: {writes:#?}"
    );
    assert_eq!(reopen.key.as_deref(), Some(key.as_str()));
    let record = s.mimic.sn_records(&key).pop().unwrap();
    assert_eq!(record.state, "2");
    let note = record.work_notes.last().cloned().unwrap_or_default();
    assert!(note.contains("closed at default by a person while 1 alert(s) still fire"), "{note}");
    daemon.wait_metric("triaged_itsm_readback_total{outcome=\"reopened\"}", |v| v == 1.0, MINUTE).await;

    // Closed again: the person wins. A new severity makes triaged decide an
    // update, which is not sent.
    let mark = s.last_seq();
    assert!(s.mimic.sn_operator(&key, json!({ "state": "7" })));
    daemon.wait_metric("triaged_itsm_readback_total{outcome=\"left_closed\"}", |v| v == 1.0, MINUTE).await;
    s.send(&[event("a-2", "rb-reopen", "critical")]).await;
    daemon.wait_metric("triaged_sink_left_closed_total", |v| v >= 1.0, MINUTE).await;
    let writes = s.writes_since(&key, mark);
    assert!(writes.is_empty(), "nothing written to the record closed again: {writes:#?}");
    assert_eq!(s.mimic.sn_records(&key).len(), 1, "no second record");
    assert_eq!(s.mimic.sn_records(&key)[0].state, "7");
    println!("{}", s.mimic.transcript(&key));
    daemon.sigterm(MINUTE);
    drop(s.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_closed_longer_than_the_reopen_window_ago_is_left_and_a_new_one_opened() {
    let s = setup("triaged-readback-new", "").await;
    let daemon = s.start(1);
    s.send(&[event("w-1", "rb-new", "major")]).await;
    let old = s.created().await;
    // Closed an hour ago (the test's reopen_window is 2 s), as ServiceNow
    // says in `closed_at`; the alert still fires.
    let mark = s.last_seq();
    let an_hour_ago = (Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%d %H:%M:%S").to_string();
    assert!(s.mimic.sn_operator(&old, json!({ "state": "7", "closed_at": an_hour_ago })));
    let created = s.mimic.answered(MINUTE, |x| x.seq > mark && x.meaning == Meaning::Create).await.expect("a new record");
    let new = created.key.expect("keyed");
    assert_ne!(new, old);
    daemon.wait_metric("triaged_itsm_readback_total{outcome=\"new_record\"}", |v| v == 1.0, MINUTE).await;
    // The old record's resolve is not sent to it: it is left closed.
    daemon.wait_metric("triaged_sink_left_closed_total", |v| v >= 1.0, MINUTE).await;
    let writes = s.writes_since(&old, mark);
    assert!(writes.is_empty(), "nothing written to the old record: {writes:#?}");
    assert_eq!(s.mimic.sn_records(&old)[0].state, "7");
    let fresh = s.mimic.sn_records(&new).pop().expect("the new record");
    assert!(
        fresh
            .work_notes
            .iter()
            .chain([&fresh.fields.get("description").map(|d| d.to_string()).unwrap_or_default()])
            .any(|n| n.contains(&old)),
        "{fresh:#?}"
    );
    daemon.sigterm(MINUTE);
    drop(s.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_note_writes_one_note_into_the_closed_record_and_then_nothing() {
    let s = setup("triaged-readback-note", "closed_while_firing = \"note\"\n").await;
    let daemon = s.start(1);
    s.send(&[event("n-1", "rb-note", "major")]).await;
    let key = s.created().await;
    let mark = s.last_seq();
    assert!(s.mimic.sn_operator(&key, json!({ "state": "7" })));
    daemon.wait_metric("triaged_itsm_readback_total{outcome=\"left_closed\"}", |v| v == 1.0, MINUTE).await;
    s.mimic.answered(MINUTE, |x| x.seq > mark && x.meaning == Meaning::Update).await.expect("the note");
    s.send(&[event("n-2", "rb-note", "critical")]).await;
    daemon.wait_metric("triaged_sink_left_closed_total", |v| v >= 1.0, MINUTE).await;
    let writes = s.writes_since(&key, mark);
    assert_eq!(writes.iter().map(|x| x.meaning).collect::<Vec<_>>(), [Meaning::Update], "one note, then nothing: {writes:#?}");
    let record = s.mimic.sn_records(&key).pop().unwrap();
    assert_eq!(record.state, "7", "left closed");
    assert!(record.work_notes.last().is_some_and(|n| n.contains("this is the last note triaged writes to it")), "{:?}", record.work_notes);
    daemon.sigterm(MINUTE);
    drop(s.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_and_a_persons_priority_survive_a_restart() {
    let s = setup("triaged-readback-ack", "").await;
    let daemon = s.start(1);
    s.send(&[event("k-1", "rb-ack", "major")]).await;
    let key = s.created().await;
    daemon.wait_metric("triaged_itsm_reads_total{result=\"ok\"}", |v| v >= 1.0, MINUTE).await;
    let computed = s.mimic.sn_records(&key)[0].fields.get("priority").cloned();
    assert!(computed.is_some(), "the mimic rates the record from impact and urgency");

    // The operator takes the record, then raises its priority.
    assert!(s.mimic.sn_operator(&key, json!({ "state": "2", "assigned_to": "jdoe" })));
    daemon.wait_metric("triaged_incident_time_to_acknowledge_seconds_count", |v| v == 1.0, MINUTE).await;
    assert!(s.mimic.sn_operator(&key, json!({ "priority": "1" })));
    daemon.wait_metric("triaged_itsm_readback_total{outcome=\"priority_owned\"}", |v| v == 1.0, MINUTE).await;
    // A checkpoint written after one more event holds what was read back
    // before it (each holds every change since the last).
    let written = "triaged_state_checkpoints_total{outcome=\"written\"}";
    let before = daemon.metric(written).await.unwrap();
    s.send(&[event("k-repeat", "rb-ack", "major")]).await;
    daemon.wait_metric(written, |v| v > before, MINUTE).await;
    daemon.sigkill();

    let daemon = s.start(2);
    let mark = s.last_seq();
    // A new severity: triaged updates the record, without its priority.
    s.send(&[event("k-2", "rb-ack", "critical")]).await;
    s.mimic
        .answered(MINUTE, |x| x.seq > mark && x.meaning == Meaning::Update && x.key.as_deref() == Some(key.as_str()))
        .await
        .expect("updated");
    let record = s.mimic.sn_records(&key).pop().unwrap();
    assert_eq!(record.fields.get("priority"), Some(&json!("1")), "the person's priority stands: {:?}", record.fields);
    assert!(record.work_notes.iter().any(|n| n.contains("acknowledged at default by jdoe")), "{:?}", record.work_notes);
    // Read back again after the restart: nothing new to record.
    daemon.wait_metric("triaged_itsm_reads_total{result=\"ok\"}", |v| v >= 2.0, MINUTE).await;
    assert_eq!(
        daemon.metric("triaged_itsm_readback_total").await,
        Some(0.0),
        "the acknowledgement and ownership are remembered, not seen anew"
    );
    assert_eq!(s.mimic.sn_records(&key).len(), 1);
    daemon.sigterm(MINUTE);
    drop(s.cluster);
}

/// A PagerDuty v3 webhook about the incident of `key`, signed with `secret`.
fn pd_webhook(key: &str, status: &str, secret: &str) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&json!({ "event": {
        "id": format!("ev-{status}"), "event_type": format!("incident.{status}"), "resource_type": "incident",
        "occurred_at": Utc::now().to_rfc3339(), "agent": { "summary": "Jo Oncall", "type": "user_reference" },
        "data": { "id": "PGR0VU2", "type": "incident", "status": status, "title": format!("Disk full on rb-pd [{key}]") } } }))
    .unwrap();
    let sig = format!("v1={}", triaged::server::webhook::hmac_sha256_hex(secret.as_bytes(), &body));
    (body, sig)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_webhooks_record_the_acknowledgement_and_a_resolve_while_firing_triggers_again() {
    let sink = Sink { profile: "pagerduty", routing_key_env: Some(PD_KEY_ENV), auth: None };
    let s =
        setup_with("triaged-readback-pd", Itsm::PagerDuty, sink, "[sink.webhook]\nsecret = { file = \"{logs}/webhook.secret\" }\n").await;
    std::fs::write(s.logs_path.join("webhook.secret"), format!("{WEBHOOK_SECRET}\n")).unwrap();
    s.mimic.expect_routing_key(PD_KEY);
    let daemon = s.start(1);
    s.send(&[event("p-1", "rb-pd", "critical")]).await;
    let trigger = s.mimic.answered(MINUTE, |x| x.meaning == Meaning::Trigger).await.expect("paged");
    let key = trigger.key.expect("a dedup key");
    let url = format!("http://127.0.0.1:{}/webhooks/default", s.port);
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>, sig: String| client.post(&url).header("X-PagerDuty-Signature", sig).body(body).send();

    let (body, _) = pd_webhook(&key, "acknowledged", WEBHOOK_SECRET);
    let (_, forged) = pd_webhook(&key, "acknowledged", "not-the-secret");
    assert_eq!(post(body.clone(), forged).await.unwrap().status(), 401);
    let (body, sig) = pd_webhook(&key, "acknowledged", WEBHOOK_SECRET);
    assert_eq!(post(body, sig).await.unwrap().status(), 202);
    daemon.wait_metric("triaged_incident_time_to_acknowledge_seconds_count{sink=\"default\"}", |v| v == 1.0, MINUTE).await;

    // The on-call resolves it in PagerDuty while the alert fires: the
    // default policy reopens, which for PagerDuty is a new trigger under the
    // same key, and PagerDuty opens a new incident for it (it pages).
    let mark = s.last_seq();
    let (body, sig) = pd_webhook(&key, "resolved", WEBHOOK_SECRET);
    s.mimic.pd_resolve_by_hand(&key);
    assert_eq!(post(body, sig).await.unwrap().status(), 202);
    s.mimic.answered(MINUTE, |x| x.seq > mark && x.meaning == Meaning::Trigger).await.expect("triggered again");
    assert_eq!(s.mimic.pages_for(&key), 2, "{}", s.mimic.transcript(&key));
    daemon.wait_metric("triaged_webhook_requests_total{result=\"bad_signature\"}", |v| v == 1.0, MINUTE).await;
    daemon.wait_metric("triaged_itsm_readback_total{outcome=\"reopened\"}", |v| v == 1.0, MINUTE).await;
    println!("{}", s.mimic.transcript(&key));
    daemon.sigterm(MINUTE);
    drop(s.cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rt_a_ticket_taken_reads_back_acknowledged_and_one_resolved_by_hand_while_firing_is_reopened() {
    const TOKEN_ENV: &str = "READBACK_RT_TOKEN";
    let rt = crate::support::rt::Rt::start().await;
    let logs = LogDir::new();
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["events", "triaged-dead-letter", "triaged-state"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let port = free_port();
    let extra = Extra {
        sink: Some(Sink {
            profile: "rt",
            routing_key_env: None,
            auth: Some(format!("{{ kind = \"token\", token = {{ env = \"{TOKEN_ENV}\" }} }}")),
        }),
        sections: "[sink.read_back]\npoll_interval = \"300ms\"\n".into(),
        ..Extra::default()
    };
    let config = write_config_with(logs.path(), &brokers, "triaged-readback-rt", 3000, &rt.url, port, &extra);
    let daemon = Daemon::start_with_env(&config, logs.path(), 1, port, &[(TOKEN_ENV, rt.token.as_str())]);
    produce_to(&brokers, 0, &[event("r-1", "rb-rt", "major")], &mut BTreeMap::new()).await;
    crate::rt_e2e::wait_tickets(&rt, "the ticket", logs.path(), |t| t.len() == 1).await;
    let (id, key, _) = rt.all_tickets().await.remove(0);

    // An operator takes the ticket: acknowledged.
    rt.put(&format!("ticket/{id}"), json!({ "Owner": "root" })).await;
    daemon.wait_metric("triaged_incident_time_to_acknowledge_seconds_count", |v| v == 1.0, MINUTE).await;
    // Then resolves it while the alert fires: reopened, with the reason.
    rt.put(&format!("ticket/{id}"), json!({ "Status": "resolved" })).await;
    daemon.wait_metric("triaged_itsm_readback_total{outcome=\"reopened\"}", |v| v == 1.0, MINUTE).await;
    crate::rt_e2e::wait_tickets(&rt, "reopened", logs.path(), |t| t.iter().all(|(_, _, s)| s == "open")).await;
    let statuses = rt.statuses(&id).await;
    assert_eq!(statuses.last().map(String::as_str), Some("open"), "{statuses:?}");
    assert!(statuses.iter().any(|s| s == "resolved"), "{statuses:?}");
    // The reopen sets the status, then comments: wait for the comment.
    let deadline = std::time::Instant::now() + MINUTE;
    let comments = loop {
        let comments = rt.comments(&id).await;
        if comments.iter().any(|c| c.contains("closed at default by a person while 1 alert(s) still fire")) {
            break comments;
        }
        assert!(std::time::Instant::now() < deadline, "no reopen comment: {comments:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rt.tickets(&key).await.len(), 1, "the same ticket, no second one");
    println!("rt read-back: ticket {id} {key}: statuses {}, {} comment(s)", statuses.join(" -> "), comments.len());
    daemon.sigterm(MINUTE);
    drop(cluster);
}
