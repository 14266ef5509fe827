//! The ITSM sink against wiremock servers on 127.0.0.1: the three API
//! profiles, status classification, retries, idempotent creation, shutdown
//! and secret handling.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{basic_auth, bearer_token, body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use triaged::config::{AuthConfig, CircuitConfig, HumanDuration, RetryConfig, SecretSource, SinkConfig, SinkProfile};
use triaged::event::{Severity, Status};
use triaged::incident::{Action, ActionKind, CiRef, Incident, IncidentState, Member, SinkError};
use triaged::metrics::Metrics;
use triaged::sink::retry::Backoff;
use triaged::sink::{Remote, RestSink, SinkBuildError};

const KEY: &str = "trg-00112233445566ff";
const SN_TABLE: &str = "/api/now/table/incident";

// ----- helpers ---------------------------------------------------------------

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
        },
        notes: vec![format!("{} by triaged", kind.as_str()), "2 members firing".into()],
        claim: None,
    }
}

fn config(profile: SinkProfile, endpoint: &str) -> SinkConfig {
    SinkConfig {
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
        routing_key: None,
    }
}

fn build(cfg: &SinkConfig) -> (RestSink, Metrics) {
    let metrics = Metrics::new();
    let sink = RestSink::new(cfg, metrics.clone()).expect("sink builds");
    (sink, metrics)
}

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

fn file_secret(p: &std::path::Path) -> SecretSource {
    SecretSource { env: None, file: Some(p.to_owned()) }
}

// ----- generic profile -----------------------------------------------------

#[tokio::test]
async fn generic_puts_the_incident_by_key() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(format!("/incidents/{KEY}")))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    // Trailing slash on the endpoint is ignored.
    let (sink, metrics) = build(&config(SinkProfile::Generic, &format!("{}/", server.uri())));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();

    let reqs = received(&server, "PUT", &format!("/incidents/{KEY}")).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].headers.get("content-type").unwrap(), "application/json");
    let b = body(&reqs[0]);
    assert_eq!(b["action"], "open");
    assert_eq!(b["incident"]["key"], KEY);
    assert_eq!(b["incident"]["priority"], 1);
    assert_eq!(b["incident"]["members"].as_array().unwrap().len(), 2);
    assert_eq!(b["notes"], json!(["open by triaged", "2 members firing"]));
    assert_eq!(metrics.sink_request_duration.with_label_values(&["generic", "put"]).get_sample_count(), 1);
    server.verify().await;
}

#[tokio::test]
async fn generic_endpoint_path_prefix_is_kept() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(format!("/itsm/v1/incidents/{KEY}")))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = build(&config(SinkProfile::Generic, &format!("{}/itsm/v1/", server.uri())));
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn generic_500_then_200_is_delivered_after_a_retry() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(500).set_body_string("backend exploded"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let (sink, metrics) = build(&config(SinkProfile::Generic, &server.uri()));
    sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap();
    assert_eq!(received(&server, "PUT", &format!("/incidents/{KEY}")).await.len(), 2);
    assert_eq!(metrics.sink_errors.with_label_values(&["retryable"]).get(), 1);
    assert_eq!(metrics.sink_errors.with_label_values(&["permanent"]).get(), 0);
    assert_eq!(metrics.sink_request_duration.with_label_values(&["generic", "put"]).get_sample_count(), 2);
}

#[tokio::test]
async fn generic_429_retry_after_is_reported_and_honoured() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).mount(&server).await;

    // One attempt: the server's delay comes back with the retryable error.
    let mut cfg = config(SinkProfile::Generic, &server.uri());
    cfg.retry =
        RetryConfig { initial_backoff: HumanDuration(Duration::from_millis(100)), max_backoff: HumanDuration(Duration::from_secs(30)) };
    let (sink, _) = build(&cfg);
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    let SinkError::Retryable { retry_after, maybe_applied, message } = err else { panic!("expected retryable, got {err:?}") };
    assert_eq!(retry_after, Some(Duration::from_secs(1)));
    assert!(!maybe_applied);
    assert!(message.contains("429"), "{message}");

    // The delay deliver computes from it: at least the server's 1s for any
    // jitter (the first retry's own ceiling is only 100ms) ...
    let backoff = sink.backoff();
    for jitter in [0.0, 0.25, 0.5, 1.0] {
        assert_eq!(backoff.delay(0, retry_after, jitter), Duration::from_secs(1));
    }
    // ... and never more than max_backoff however long the server asks.
    assert_eq!(backoff.delay(0, Some(Duration::from_secs(3600)), 0.0), Duration::from_secs(30));

    // deliver retries after a 429 and succeeds (max_backoff 5ms caps the
    // server's 1s here, so the test does not wait a real second).
    server.reset().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let (fast, metrics) = build(&config(SinkProfile::Generic, &server.uri()));
    assert_eq!(fast.backoff().delay(0, retry_after, 0.0), Duration::from_millis(5));
    fast.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap();
    assert_eq!(received(&server, "PUT", &format!("/incidents/{KEY}")).await.len(), 2);
    assert_eq!(metrics.sink_errors.with_label_values(&["retryable"]).get(), 1);
}

#[tokio::test]
async fn retry_after_http_date_is_understood() {
    let server = MockServer::start().await;
    let at = std::time::SystemTime::now() + Duration::from_secs(120);
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", httpdate::fmt_http_date(at).as_str()))
        .mount(&server)
        .await;
    let (sink, _) = build(&config(SinkProfile::Generic, &server.uri()));
    match sink.apply(&sample_action(ActionKind::Open)).await {
        Err(SinkError::Retryable { retry_after: Some(d), .. }) => {
            assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}")
        }
        other => panic!("expected retryable with retry_after, got {other:?}"),
    }
}

#[tokio::test]
async fn generic_400_is_permanent_without_retry() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(400).set_body_string("{\"error\": \"field  incident.title\n is invalid\"}"))
        .mount(&server)
        .await;
    let (sink, metrics) = build(&config(SinkProfile::Generic, &server.uri()));
    let err = sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap_err();
    let SinkError::Permanent(msg) = &err else { panic!("expected permanent, got {err:?}") };
    assert!(msg.contains("400"), "{msg}");
    assert!(msg.contains("incident.title is invalid"), "single-line excerpt: {msg}");
    assert_eq!(received(&server, "PUT", &format!("/incidents/{KEY}")).await.len(), 1);
    assert_eq!(metrics.sink_errors.with_label_values(&["permanent"]).get(), 1);
}

#[tokio::test]
async fn long_error_bodies_are_cut_short() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(422).set_body_string("x".repeat(10_000))).mount(&server).await;
    let (sink, _) = build(&config(SinkProfile::Generic, &server.uri()));
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(matches!(err, SinkError::Permanent(_)));
    assert!(err.to_string().len() < 400, "{}", err.to_string().len());
}

#[tokio::test]
async fn generic_501_is_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(501)).mount(&server).await;
    let (sink, _) = build(&config(SinkProfile::Generic, &server.uri()));
    let err = sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(&err, SinkError::Permanent(m) if m.contains("501")), "{err:?}");
    assert_eq!(received(&server, "PUT", &format!("/incidents/{KEY}")).await.len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(302).insert_header("Location", "https://login.example.com/"))
        .mount(&server)
        .await;
    let (sink, _) = build(&config(SinkProfile::Generic, &server.uri()));
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(matches!(&err, SinkError::Permanent(m) if m.contains("302")), "{err:?}");
}

#[tokio::test]
async fn timeout_after_sending_may_have_been_applied() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3))).mount(&server).await;
    let mut cfg = config(SinkProfile::Generic, &server.uri());
    cfg.timeout = HumanDuration(Duration::from_millis(200));
    let (sink, metrics) = build(&cfg);
    let started = std::time::Instant::now();
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    match err {
        SinkError::Retryable { maybe_applied, retry_after, message } => {
            assert!(maybe_applied, "{message}");
            assert_eq!(retry_after, None);
            assert!(message.contains("timed out"), "{message}");
        }
        other => panic!("expected retryable, got {other:?}"),
    }
    assert_eq!(metrics.sink_errors.with_label_values(&["retryable"]).get(), 1);
}

#[tokio::test]
async fn connection_refused_is_retryable_and_not_applied() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (sink, _) = build(&config(SinkProfile::Generic, &format!("http://127.0.0.1:{port}")));
    match sink.apply(&sample_action(ActionKind::Open)).await {
        Err(SinkError::Retryable { maybe_applied, message, .. }) => {
            assert!(!maybe_applied, "{message}");
            assert!(message.contains("cannot connect"), "{message}");
        }
        other => panic!("expected retryable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_backoff_cancels_promptly() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let mut cfg = config(SinkProfile::Generic, &server.uri());
    // A minute of backoff: only the shutdown can end the wait in time.
    cfg.retry =
        RetryConfig { initial_backoff: HumanDuration(Duration::from_secs(60)), max_backoff: HumanDuration(Duration::from_secs(60)) };
    let (sink, metrics) = build(&cfg);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (sink, shutdown) = (sink.clone(), shutdown.clone());
        async move { sink.deliver(&sample_action(ActionKind::Open), &shutdown).await }
    });
    // The failed first attempt is counted right before the backoff wait
    // begins (no await point in between): wait for that, without sleeping.
    let retryable = metrics.sink_errors.with_label_values(&["retryable"]);
    while retryable.get() == 0 {
        assert!(!task.is_finished(), "deliver ended before failing once");
        tokio::task::yield_now().await;
    }
    let started = std::time::Instant::now();
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), task).await.expect("deliver returns promptly after shutdown").unwrap();
    assert!(matches!(result, Err(SinkError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(received(&server, "PUT", &format!("/incidents/{KEY}")).await.len(), 1);
    assert_eq!(metrics.sink_errors.with_label_values(&["cancelled"]).get(), 1);
}

/// Answers after `delay` and reports each request on a channel as it arrives.
struct Signalling {
    arrived: tokio::sync::mpsc::UnboundedSender<()>,
    delay: Duration,
}

impl wiremock::Respond for Signalling {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let _ = self.arrived.send(());
        ResponseTemplate::new(200).set_delay(self.delay)
    }
}

#[tokio::test]
async fn shutdown_abandons_a_request_in_flight() {
    let server = MockServer::start().await;
    let (tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    Mock::given(method("PUT")).respond_with(Signalling { arrived: tx, delay: Duration::from_secs(30) }).mount(&server).await;
    let mut cfg = config(SinkProfile::Generic, &server.uri());
    cfg.timeout = HumanDuration(Duration::from_secs(60));
    let (sink, _) = build(&cfg);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (sink, shutdown) = (sink.clone(), shutdown.clone());
        async move { sink.deliver(&sample_action(ActionKind::Open), &shutdown).await }
    });
    arrived.recv().await.expect("the request reaches the server");
    shutdown.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), task).await.expect("deliver returns promptly after shutdown").unwrap();
    assert!(matches!(r, Err(SinkError::Cancelled)), "{r:?}");
}

#[tokio::test]
async fn shutdown_before_delivery_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&server).await;
    let (sink, _) = build(&config(SinkProfile::Generic, &server.uri()));
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let r = sink.deliver(&sample_action(ActionKind::Open), &shutdown).await;
    assert!(matches!(r, Err(SinkError::Cancelled)), "{r:?}");
    server.verify().await;
}

// ----- servicenow profile --------------------------------------------------

async fn mount_lookup(server: &MockServer, rows: Value, times: Option<u64>) {
    let mock = Mock::given(method("GET"))
        .and(path(SN_TABLE))
        .and(query_param("sysparm_query", format!("correlation_id={KEY}")))
        .and(query_param("sysparm_fields", "sys_id,state"))
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

#[tokio::test]
async fn servicenow_open_creates_when_lookup_is_empty() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([]), None).await;
    mount_create(&server, "abc123").await;
    mount_patch(&server, "abc123").await;
    let (sink, metrics) = build(&config(SinkProfile::Servicenow, &server.uri()));
    let mut open = sample_action(ActionKind::Open);
    open.incident.title = "T".repeat(300);
    sink.apply(&open).await.unwrap();

    let posts = received(&server, "POST", SN_TABLE).await;
    assert_eq!(posts.len(), 1);
    let b = body(&posts[0]);
    assert_eq!(b["correlation_id"], KEY);
    assert_eq!(b["correlation_display"], "triaged");
    assert_eq!(b["urgency"], "2");
    assert_eq!(b["impact"], "1");
    assert_eq!(b["assignment_group"], "Network Operations");
    assert_eq!(b["cmdb_ci"], "sw-core-01");
    assert_eq!(b["short_description"].as_str().unwrap().chars().count(), 160);
    assert_eq!(b["work_notes"], "open by triaged\n2 members firing");
    assert!(b.get("caller_id").is_none());
    let description = b["description"].as_str().unwrap();
    for needle in ["Root cause: sw-core-01", "payments, webshop", "nagios/http on web-01", "depends on sw-core-01"] {
        assert!(description.contains(needle), "{needle:?} missing from {description}");
    }
    assert!(description.lines().count() > 5);
    assert_eq!(metrics.sink_request_duration.with_label_values(&["servicenow", "lookup"]).get_sample_count(), 1);
    assert_eq!(metrics.sink_request_duration.with_label_values(&["servicenow", "create"]).get_sample_count(), 1);

    // A later update uses the cached sys_id: no second lookup.
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    assert_eq!(received(&server, "GET", SN_TABLE).await.len(), 1);
    let patches = received(&server, "PATCH", &format!("{SN_TABLE}/abc123")).await;
    assert_eq!(patches.len(), 1);
    let p = body(&patches[0]);
    assert_eq!(p["work_notes"], "update by triaged\n2 members firing");
    assert_eq!(p["urgency"], "2");
    assert_eq!(p["impact"], "1");
    assert_eq!(p["short_description"], "sw-core-01 down: 2 dependent hosts unreachable");
    assert!(p.get("state").is_none());
    assert_eq!(metrics.sink_request_duration.with_label_values(&["servicenow", "update"]).get_sample_count(), 1);
}

#[tokio::test]
async fn servicenow_open_when_found_patches_and_never_posts() {
    // The "create timed out but was applied" case seen from the next attempt.
    let server = MockServer::start().await;
    mount_lookup(&server, json!([{ "sys_id": "found-1", "state": "1" }]), None).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(201)).expect(0).mount(&server).await;
    mount_patch(&server, "found-1").await;
    let (sink, _) = build(&config(SinkProfile::Servicenow, &server.uri()));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    assert_eq!(received(&server, "POST", SN_TABLE).await.len(), 0);
    let patches = received(&server, "PATCH", &format!("{SN_TABLE}/found-1")).await;
    assert_eq!(patches.len(), 1);
    assert_eq!(body(&patches[0])["urgency"], "2");
    server.verify().await;
}

#[tokio::test]
async fn servicenow_create_timeout_is_not_duplicated_on_retry() {
    let server = MockServer::start().await;
    // First lookup: nothing. The create "hangs" past the sink timeout but is
    // applied; from then on the lookup finds it.
    mount_lookup(&server, json!([]), Some(1)).await;
    mount_lookup(&server, json!([{ "sys_id": "late-1", "state": "1" }]), None).await;
    Mock::given(method("POST"))
        .and(path(SN_TABLE))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({ "result": { "sys_id": "late-1" } })).set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    mount_patch(&server, "late-1").await;
    let mut cfg = config(SinkProfile::Servicenow, &server.uri());
    cfg.timeout = HumanDuration(Duration::from_millis(300));
    let (sink, metrics) = build(&cfg);

    sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap();
    assert_eq!(received(&server, "POST", SN_TABLE).await.len(), 1, "created exactly once");
    assert_eq!(received(&server, "GET", SN_TABLE).await.len(), 2, "looked up again before any create");
    assert_eq!(received(&server, "PATCH", &format!("{SN_TABLE}/late-1")).await.len(), 1);
    assert_eq!(metrics.sink_errors.with_label_values(&["retryable"]).get(), 1);
}

#[tokio::test]
async fn servicenow_resolve_sends_state_6() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([{ "sys_id": "r-1", "state": "2" }]), None).await;
    mount_patch(&server, "r-1").await;
    let (sink, _) = build(&config(SinkProfile::Servicenow, &server.uri()));
    sink.apply(&sample_action(ActionKind::Resolve)).await.unwrap();
    let patches = received(&server, "PATCH", &format!("{SN_TABLE}/r-1")).await;
    assert_eq!(patches.len(), 1);
    let p = body(&patches[0]);
    assert_eq!(p["state"], "6");
    assert_eq!(p["close_code"], "Solved (Permanently)");
    assert!(!p["close_notes"].as_str().unwrap().is_empty());
    assert_eq!(p["work_notes"], "resolve by triaged\n2 members firing");
}

#[tokio::test]
async fn servicenow_reopen_sends_state_2() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([{ "sys_id": "o-1", "state": "6" }]), None).await;
    mount_patch(&server, "o-1").await;
    let (sink, _) = build(&config(SinkProfile::Servicenow, &server.uri()));
    sink.apply(&sample_action(ActionKind::Reopen)).await.unwrap();
    let patches = received(&server, "PATCH", &format!("{SN_TABLE}/o-1")).await;
    assert_eq!(patches.len(), 1);
    let p = body(&patches[0]);
    assert_eq!(p["state"], "2");
    assert_eq!(p["work_notes"], "reopen by triaged\n2 members firing");
}

#[tokio::test]
async fn servicenow_resolve_of_unknown_key_creates_then_resolves() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([]), None).await;
    mount_create(&server, "new-1").await;
    mount_patch(&server, "new-1").await;
    let (sink, _) = build(&config(SinkProfile::Servicenow, &server.uri()));
    sink.apply(&sample_action(ActionKind::Resolve)).await.unwrap();
    let all = server.received_requests().await.unwrap();
    let seq: Vec<_> = all.iter().map(|r| format!("{} {}", r.method, r.url.path())).collect();
    assert_eq!(seq, [format!("GET {SN_TABLE}"), format!("POST {SN_TABLE}"), format!("PATCH {SN_TABLE}/new-1")]);
    assert_eq!(body(&all[1])["correlation_id"], KEY);
    assert_eq!(body(&all[2])["state"], "6");
}

#[tokio::test]
async fn servicenow_update_of_unknown_key_creates_it() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([]), None).await;
    mount_create(&server, "u-1").await;
    let (sink, _) = build(&config(SinkProfile::Servicenow, &server.uri()));
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    let posts = received(&server, "POST", SN_TABLE).await;
    assert_eq!(posts.len(), 1);
    assert_eq!(body(&posts[0])["work_notes"], "update by triaged\n2 members firing");
}

#[tokio::test]
async fn servicenow_stale_cached_sys_id_is_looked_up_again() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([]), Some(1)).await;
    mount_lookup(&server, json!([{ "sys_id": "moved-2", "state": "2" }]), None).await;
    mount_create(&server, "gone-1").await;
    Mock::given(method("PATCH")).and(path(format!("{SN_TABLE}/gone-1"))).respond_with(ResponseTemplate::new(404)).mount(&server).await;
    mount_patch(&server, "moved-2").await;
    let (sink, _) = build(&config(SinkProfile::Servicenow, &server.uri()));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    assert_eq!(received(&server, "PATCH", &format!("{SN_TABLE}/moved-2")).await.len(), 1);
    assert_eq!(received(&server, "POST", SN_TABLE).await.len(), 1);
}

#[tokio::test]
async fn servicenow_unusable_lookup_is_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(200).set_body_string("<html>login</html>")).mount(&server).await;
    let (sink, _) = build(&config(SinkProfile::Servicenow, &server.uri()));
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(matches!(&err, SinkError::Permanent(m) if m.contains("unusable")), "{err:?}");
    assert_eq!(received(&server, "POST", SN_TABLE).await.len(), 0);
}

#[tokio::test]
async fn servicenow_bearer_auth_header() {
    std::env::set_var("TRIAGED_TEST_SN_BEARER", "sn-bearer-token\n");
    let server = MockServer::start().await;
    Mock::given(bearer_token("sn-bearer-token"))
        .and(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "result": [{ "sys_id": "b-1" }] })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(bearer_token("sn-bearer-token"))
        .and(method("PATCH"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(SinkProfile::Servicenow, &server.uri());
    cfg.auth = AuthConfig::Bearer { token: env_secret("TRIAGED_TEST_SN_BEARER") };
    let (sink, _) = build(&cfg);
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn servicenow_basic_auth_header() {
    let (_dir, file) = secret_file("p@ss:word\n");
    let server = MockServer::start().await;
    Mock::given(basic_auth("triaged-svc", "p@ss:word"))
        .and(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "result": [] })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(basic_auth("triaged-svc", "p@ss:word"))
        .and(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "result": { "sys_id": "x" } })))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(SinkProfile::Servicenow, &server.uri());
    cfg.auth = AuthConfig::Basic { username: "triaged-svc".into(), password: file_secret(&file) };
    let (sink, _) = build(&cfg);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    server.verify().await;
}

// ----- pagerduty profile ---------------------------------------------------

fn pd_config(server: &MockServer, routing_key_file: &std::path::Path) -> SinkConfig {
    let mut cfg = config(SinkProfile::Pagerduty, &server.uri());
    cfg.routing_key = Some(file_secret(routing_key_file));
    cfg
}

async fn mount_enqueue(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/v2/enqueue"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({ "status": "success", "message": "Event processed" })))
        .mount(server)
        .await;
}

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
    assert_eq!(p["summary"], "sw-core-01 down: 2 dependent hosts unreachable");
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
    assert_eq!(metrics.sink_request_duration.with_label_values(&["pagerduty", "enqueue"]).get_sample_count(), 1);
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
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(429)).up_to_n_times(1).mount(&server).await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({ "status": "invalid event", "errors": ["routing_key rk-secret-777 is invalid"] })),
        )
        .mount(&server)
        .await;
    let (sink, _) = build(&pd_config(&server, &rk));
    let first = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(matches!(first, SinkError::Retryable { maybe_applied: false, .. }), "{first:?}");
    let second = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    let SinkError::Permanent(msg) = &second else { panic!("{second:?}") };
    assert!(msg.contains("400") && msg.contains("invalid event"), "{msg}");
    assert!(!msg.contains("rk-secret-777"), "secret echoed by the server leaks: {msg}");
    assert!(msg.contains("[redacted]"), "{msg}");
}

// ----- secrets ---------------------------------------------------------------

#[tokio::test]
async fn bearer_token_from_env_var() {
    std::env::set_var("TRIAGED_TEST_ENV_TOKEN", "env-token-abc");
    let server = MockServer::start().await;
    Mock::given(bearer_token("env-token-abc")).respond_with(ResponseTemplate::new(200)).expect(1).mount(&server).await;
    let mut cfg = config(SinkProfile::Generic, &server.uri());
    cfg.auth = AuthConfig::Bearer { token: env_secret("TRIAGED_TEST_ENV_TOKEN") };
    let (sink, _) = build(&cfg);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn bearer_token_from_file_trims_trailing_newline() {
    let (_dir, file) = secret_file("file-token-xyz\r\n");
    let server = MockServer::start().await;
    Mock::given(bearer_token("file-token-xyz")).respond_with(ResponseTemplate::new(200)).expect(1).mount(&server).await;
    let mut cfg = config(SinkProfile::Generic, &server.uri());
    cfg.auth = AuthConfig::Bearer { token: file_secret(&file) };
    let (sink, _) = build(&cfg);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    server.verify().await;
}

#[test]
fn missing_env_var_names_the_variable() {
    let mut cfg = config(SinkProfile::Generic, "http://127.0.0.1:9");
    cfg.auth = AuthConfig::Bearer { token: env_secret("TRIAGED_TEST_SURELY_UNSET_VAR") };
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(matches!(&err, SinkBuildError::MissingEnv { var, .. } if var == "TRIAGED_TEST_SURELY_UNSET_VAR"));
    let text = err.to_string();
    assert!(text.contains("TRIAGED_TEST_SURELY_UNSET_VAR"), "{text}");
    assert!(text.contains("sink.auth.token"), "{text}");
}

#[test]
fn missing_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let mut cfg = config(SinkProfile::Generic, "http://127.0.0.1:9");
    cfg.auth = AuthConfig::Basic { username: "u".into(), password: file_secret(&missing) };
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no-such-token") && text.contains("sink.auth.password"), "{text}");
}

#[test]
fn empty_secret_is_rejected() {
    let (_dir, file) = secret_file("\n");
    let mut cfg = config(SinkProfile::Generic, "http://127.0.0.1:9");
    cfg.auth = AuthConfig::Bearer { token: file_secret(&file) };
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(matches!(err, SinkBuildError::EmptyFile { .. }), "{err:?}");
}

#[test]
fn pagerduty_requires_a_routing_key() {
    let cfg = config(SinkProfile::Pagerduty, "http://127.0.0.1:9");
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(err.to_string().contains("sink.routing_key"), "{err}");
}

#[test]
fn bad_endpoint_is_a_build_error() {
    let cfg = config(SinkProfile::Generic, "not a url");
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(matches!(err, SinkBuildError::Endpoint(_)), "{err:?}");
}

#[test]
fn secrets_never_show_in_debug_or_display() {
    // Bearer from env, basic from file, routing key from file.
    std::env::set_var("TRIAGED_TEST_DEBUG_TOKEN", "tok-SECRET-1");
    let (_d1, pw) = secret_file("pw-SECRET-2\n");
    let (_d2, rk) = secret_file("rk-SECRET-3\n");
    let mut sinks = Vec::new();
    let mut cfg = config(SinkProfile::Servicenow, "https://user:url-SECRET-4@example.service-now.com/");
    cfg.auth = AuthConfig::Bearer { token: env_secret("TRIAGED_TEST_DEBUG_TOKEN") };
    sinks.push(RestSink::new(&cfg, Metrics::new()).unwrap());
    cfg.auth = AuthConfig::Basic { username: "svc".into(), password: file_secret(&pw) };
    sinks.push(RestSink::new(&cfg, Metrics::new()).unwrap());
    let mut cfg = config(SinkProfile::Pagerduty, "https://events.pagerduty.com");
    cfg.routing_key = Some(file_secret(&rk));
    sinks.push(RestSink::new(&cfg, Metrics::new()).unwrap());
    for sink in &sinks {
        for text in [format!("{sink:?}"), format!("{sink:#?}"), format!("{sink}")] {
            assert!(!text.contains("SECRET"), "{text}");
        }
    }
    assert!(format!("{}", sinks[0]).starts_with("servicenow sink at https://user@example.service-now.com"));
    assert!(format!("{:?}", sinks[1]).contains("basic"));

    // A token that cannot be a header value: the error does not quote it.
    let (_d3, bad) = secret_file("tok-SECRET-5\nsecond line\n");
    let mut cfg = config(SinkProfile::Generic, "http://127.0.0.1:9");
    cfg.auth = AuthConfig::Bearer { token: file_secret(&bad) };
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(matches!(err, SinkBuildError::InvalidSecret { .. }), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("SECRET"), "{text}");
    }
}

#[tokio::test]
async fn secrets_echoed_in_error_bodies_are_redacted() {
    let (_dir, pw) = secret_file("pw-ECHOED-9");
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_string("bad credentials for svc:pw-ECHOED-9"))
        .mount(&server)
        .await;
    let mut cfg = config(SinkProfile::Servicenow, &server.uri());
    cfg.auth = AuthConfig::Basic { username: "svc".into(), password: file_secret(&pw) };
    let (sink, _) = build(&cfg);
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, SinkError::Permanent(_)), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains("ECHOED"), "{text}");
}

#[test]
fn backoff_is_built_from_the_retry_config() {
    let (sink, _) = build(&config(SinkProfile::Generic, "http://127.0.0.1:9"));
    assert_eq!(*sink.backoff(), Backoff::from_bounds(Duration::from_millis(1), Duration::from_millis(5)));
}

#[tokio::test]
async fn body_matchers_agree_with_the_profiles() {
    // Servicenow create is matched purely on the body: the fields an
    // assignment rule in ServiceNow keys on are present and typed as strings.
    let server = MockServer::start().await;
    mount_lookup(&server, json!([]), None).await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({
            "correlation_id": KEY,
            "urgency": "2",
            "impact": "1",
            "assignment_group": "Network Operations"
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "result": { "sys_id": "m-1" } })))
        .expect(1)
        .mount(&server)
        .await;
    let (sink, _) = build(&config(SinkProfile::Servicenow, &server.uri()));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn incidents_are_looked_up_by_key_where_the_profile_can() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/incidents/trg-open"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"incident": {"key": "trg-open", "state": "open"}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/incidents/trg-done"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"incident": {"key": "trg-done", "state": "resolved"}})))
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path("/incidents/trg-gone")).respond_with(ResponseTemplate::new(404)).mount(&server).await;
    let stop = CancellationToken::new();
    let generic = RestSink::new(&config(SinkProfile::Generic, &server.uri()), Metrics::new()).unwrap();
    assert!(generic.can_look_up());
    assert_eq!(generic.look_up("trg-open", &stop).await.unwrap(), Remote::Open);
    assert_eq!(generic.look_up("trg-done", &stop).await.unwrap(), Remote::Closed);
    assert_eq!(generic.look_up("trg-gone", &stop).await.unwrap(), Remote::Missing);

    let sn = MockServer::start().await;
    for (key, rows) in
        [("trg-a", json!([{"sys_id": "1", "state": "2"}])), ("trg-b", json!([{"sys_id": "2", "state": "7"}])), ("trg-c", json!([]))]
    {
        Mock::given(method("GET"))
            .and(path("/api/now/table/incident"))
            .and(query_param("sysparm_query", format!("correlation_id={key}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "result": rows })))
            .mount(&sn)
            .await;
    }
    let servicenow = RestSink::new(&config(SinkProfile::Servicenow, &sn.uri()), Metrics::new()).unwrap();
    assert_eq!(servicenow.look_up("trg-a", &stop).await.unwrap(), Remote::Open);
    assert_eq!(servicenow.look_up("trg-b", &stop).await.unwrap(), Remote::Closed);
    assert_eq!(servicenow.look_up("trg-c", &stop).await.unwrap(), Remote::Missing);

    let (_dir, rk) = secret_file("R0UTINGKEY0123456789\n");
    let (pagerduty, _) = build(&pd_config(&server, &rk));
    assert!(!pagerduty.can_look_up(), "the Events API has no lookup");
    assert_eq!(pagerduty.look_up("trg-open", &stop).await.unwrap(), Remote::Unknown);
}
