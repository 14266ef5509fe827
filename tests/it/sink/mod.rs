//! The ITSM sink against wiremock servers on 127.0.0.1 (the `rt` profile
//! against a real Request Tracker): the six API
//! profiles, status classification, retries, rate limits, idempotent creation, shutdown
//! and secret handling. This module is the setup they share (a sample
//! action, configs, mounted answers, what the server received); each area
//! is a submodule.

mod body_cap;
mod delivery;
mod generic;
mod jsm;
mod lookup;
mod pagerduty;
mod rate;
mod routes;
mod rt;
mod secrets;
mod servicenow;
mod servicenow_em;
mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use triaged::config::{AuthConfig, CircuitConfig, HumanDuration, RetryConfig, SecretSource, SinkConfig, SinkProfile};
use triaged::event::{Severity, Status};
use triaged::incident::{Action, ActionKind, CiRef, HumanOwned, Incident, IncidentState, Member, SinkError};
use triaged::metrics::Metrics;
use triaged::sink::{Remote, RemoteRecord, RestSink};

const KEY: &str = "trg-00112233445566ff";
const SN_TABLE: &str = "/api/now/table/incident";
/// What the ServiceNow profile's one incident query reads.
const SN_FIELDS: &str = "sys_id,state,urgency,impact,priority,assigned_to,assignment_group,sys_updated_on,closed_at,resolved_at";

// ----- actions and sinks -----------------------------------------------------

fn ci(id: &str, name: &str, kind: &str) -> CiRef {
    CiRef { id: id.into(), name: name.into(), kind: kind.into() }
}

/// A realistic incident action: a core switch down, two members, P1.
fn sample_action(kind: ActionKind) -> Action {
    let t0 = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
    let member = |fp: &str, check: &str, host: &str, sev: Severity, count: u64| Member {
        fingerprint: fp.into(),
        source: "nagios".into(),
        check: check.into(),
        ci: Some(ci(&format!("ci-{host}"), host, "server")),
        severity: sev,
        status: Status::Firing,
        count,
        first_seen: t0,
        last_seen: t0 + chrono::Duration::seconds(90),
        summary: format!("{check} failed on {host}"),
    };
    let resolved = kind == ActionKind::Resolve;
    Action {
        id: 42,
        kind,
        incident: Incident {
            key: KEY.into(),
            scope: "topology:sw-core-01".into(),
            title: "sw-core-01 down: 2 dependent hosts unreachable".into(),
            state: if resolved { IncidentState::Resolved } else { IncidentState::Open },
            priority: 1,
            impact: 1,
            urgency: 2,
            severity: Severity::Major,
            root_cause: Some(ci("ci-sw-core-01", "sw-core-01", "switch")),
            ci: Some(ci("ci-sw-core-01", "sw-core-01", "switch")),
            assignment_group: Some("Network Operations".into()),
            oncall: Some("netops-primary".into()),
            runbook: Some("https://wiki.example.com/runbooks/core-switch".into()),
            impacted_services: vec!["payments".into(), "webshop".into()],
            opened_at: t0,
            resolved_at: resolved.then(|| t0 + chrono::Duration::minutes(30)),
            event_count: 7,
            members: vec![
                member("fp-1", "ping", "sw-core-01", Severity::Critical, 4),
                member("fp-2", "http", "web-01", Severity::Major, 3),
            ],
            reasons: vec!["web-01 depends on sw-core-01 (topology window 5m)".into()],
            parent: None,
            redundancy_group: None,
            human_owned: Default::default(),
            acknowledged: None,
            peak_priority: 1,
        },
        notes: vec![format!("{} by triaged", kind.as_str()), "2 members firing".into()],
        claim: None,
        resent: false,
        priority_changed: true,
    }
}

/// `kind` of the sample incident with `owned` a person's at the sink `default`.
fn owned_action(kind: ActionKind, owned: HumanOwned) -> Action {
    let mut a = sample_action(kind);
    a.incident.human_owned.insert("default".into(), owned);
    a
}

fn config(profile: SinkProfile, endpoint: &str) -> SinkConfig {
    SinkConfig {
        name: "default".into(),
        read_back: Default::default(),
        webhook: None,
        profile,
        endpoint: endpoint.into(),
        timeout: HumanDuration(Duration::from_secs(5)),
        concurrency: 1,
        auth: AuthConfig::None,
        retry: RetryConfig {
            initial_backoff: HumanDuration(Duration::from_millis(1)),
            max_backoff: HumanDuration(Duration::from_millis(5)),
        },
        // These tests are about single requests; the breaker has its own.
        circuit: CircuitConfig { failure_threshold: 0, ..CircuitConfig::default() },
        rate_limit: Default::default(),
        servicenow: None,
        routing_key: None,
        routing_keys: Default::default(),
        max_response_bytes: 64 << 10,
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
        rt: Default::default(),
    }
}

fn build(cfg: &SinkConfig) -> (RestSink, Metrics) {
    let metrics = Metrics::new();
    let sink = RestSink::new(cfg, metrics.clone()).expect("sink builds");
    (sink, metrics)
}

/// `config` authenticating with `auth`.
fn config_with_auth(profile: SinkProfile, endpoint: &str, auth: AuthConfig) -> SinkConfig {
    SinkConfig { auth, ..config(profile, endpoint) }
}

/// A generic-profile sink against `server`, default config.
fn generic_sink(server: &MockServer) -> (RestSink, Metrics) {
    build(&config(SinkProfile::Generic, &server.uri()))
}

/// A ServiceNow-profile sink against `server`, default config.
fn servicenow_sink(server: &MockServer) -> (RestSink, Metrics) {
    build(&config(SinkProfile::Servicenow, &server.uri()))
}

fn pd_config(server: &MockServer, routing_key_file: &Path) -> SinkConfig {
    let mut cfg = config(SinkProfile::Pagerduty, &server.uri());
    cfg.routing_key = Some(file_secret(routing_key_file));
    cfg
}

/// `deliver` of the sample Open action on its own task, until done or `shutdown`.
fn spawn_deliver(sink: &RestSink, shutdown: &CancellationToken) -> JoinHandle<Result<(), SinkError>> {
    let (sink, shutdown) = (sink.clone(), shutdown.clone());
    tokio::spawn(async move { sink.deliver(&sample_action(ActionKind::Open), &shutdown).await })
}

// ----- secrets -----------------------------------------------------------------

/// A secret file in a temp dir (kept alive by the returned guard).
fn secret_file(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("secret");
    std::fs::write(&p, content).unwrap();
    (dir, p)
}

fn env_secret(var: &str) -> SecretSource {
    SecretSource { env: Some(var.into()), file: None }
}

fn file_secret(p: &Path) -> SecretSource {
    SecretSource { env: None, file: Some(p.to_owned()) }
}

// ----- mounted answers ---------------------------------------------------------

/// Every `http_method` request gets `response`.
async fn answer(server: &MockServer, http_method: &str, response: ResponseTemplate) {
    Mock::given(method(http_method)).respond_with(response).mount(server).await;
}

/// The first `http_method` request gets `response`; later ones fall through.
async fn answer_once(server: &MockServer, http_method: &str, response: ResponseTemplate) {
    Mock::given(method(http_method)).respond_with(response).up_to_n_times(1).mount(server).await;
}

async fn mount_lookup(server: &MockServer, rows: Value, times: Option<u64>) {
    let mock = Mock::given(method("GET"))
        .and(path(SN_TABLE))
        .and(query_param("sysparm_query", format!("correlation_id={KEY}")))
        .and(query_param("sysparm_fields", SN_FIELDS))
        .and(query_param("sysparm_display_value", "all"))
        .and(query_param("sysparm_limit", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "result": rows })));
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

async fn mount_create(server: &MockServer, sys_id: &str) {
    Mock::given(method("POST"))
        .and(path(SN_TABLE))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "result": { "sys_id": sys_id, "number": "INC0010001" } })))
        .mount(server)
        .await;
}

async fn mount_patch(server: &MockServer, sys_id: &str) {
    Mock::given(method("PATCH"))
        .and(path(format!("{SN_TABLE}/{sys_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "result": { "sys_id": sys_id } })))
        .mount(server)
        .await;
}

async fn mount_enqueue(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({ "status": "success", "message": "Event processed" })))
        .mount(server)
        .await;
}

// ----- what the server received --------------------------------------------------

async fn received(server: &MockServer, http_method: &str, url_path: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording is on")
        .into_iter()
        .filter(|r| r.method.as_str() == http_method && r.url.path() == url_path)
        .collect()
}

fn body(r: &Request) -> Value {
    r.body_json().expect("JSON request body")
}

/// The generic profile's PUTs of the sample incident.
async fn puts(server: &MockServer) -> Vec<Request> {
    received(server, "PUT", &format!("/incidents/{KEY}")).await
}

/// ServiceNow PATCHes of record `sys_id`.
async fn patches(server: &MockServer, sys_id: &str) -> Vec<Request> {
    received(server, "PATCH", &format!("{SN_TABLE}/{sys_id}")).await
}

/// A read-back record, for comparisons.
pub(super) fn read_record(
    state: Remote,
    acknowledged: bool,
    assignee: Option<&str>,
    priority: Option<u8>,
    group: Option<&str>,
) -> RemoteRecord {
    RemoteRecord { state, acknowledged, assignee: assignee.map(str::to_owned), priority, group: group.map(str::to_owned), closed_at: None }
}
