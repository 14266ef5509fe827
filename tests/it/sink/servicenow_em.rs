//! The ServiceNow Event Management profile: one event record per action,
//! correlated into one alert by `message_key`, severity "0" for a clear.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wiremock::{MockServer, Request, ResponseTemplate};

use triaged::config::{AuthConfig, SinkProfile};
use triaged::event::Severity;
use triaged::incident::{Action, ActionKind, SinkError};
use triaged::sink::Remote;

use super::{
    answer, answer_once, body, build, config, config_with_auth, env_secret, file_secret, received, sample_action, secret_file, KEY,
};

const EM_PATH: &str = "/api/global/em/jsonv2";

async fn mount_em(server: &MockServer) {
    let ok = json!({ "result": { "Default Bulk Endpoint": "1 events were inserted" } });
    answer(server, "POST", ResponseTemplate::new(200).set_body_json(ok)).await;
}

/// The single record of an EM request.
fn record(r: &Request) -> Value {
    let b = body(r);
    let records = b["records"].as_array().expect("records[]");
    assert_eq!(records.len(), 1, "one record per action: {b}");
    records[0].clone()
}

fn auth_header(r: &Request) -> String {
    r.headers.get("authorization").expect("Authorization header").to_str().unwrap().to_owned()
}

#[tokio::test]
async fn em_open_posts_one_event_keyed_by_the_incident() {
    let (_dir, password) = secret_file("em-pass\n");
    let server = MockServer::start().await;
    mount_em(&server).await;
    let auth = AuthConfig::Basic { username: "triaged".into(), password: file_secret(&password) };
    let (sink, metrics) = build(&config_with_auth(SinkProfile::ServicenowEm, &server.uri(), auth));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();

    let reqs = received(&server, "POST", EM_PATH).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(auth_header(&reqs[0]), "Basic dHJpYWdlZDplbS1wYXNz", "basic auth of triaged:em-pass");
    let r = record(&reqs[0]);
    assert_eq!(r["source"], "triaged");
    assert_eq!(r["event_class"], "triaged");
    assert_eq!(r["node"], "sw-core-01");
    assert_eq!(r["type"], "ping", "the root cause's check");
    assert_eq!(r["resource"], "sw-core-01");
    assert_eq!(r["metric_name"], "nagios/ping");
    assert_eq!(r["severity"], "2", "Major is EM's 2");
    assert_eq!(r["message_key"], KEY);
    assert_eq!(r["description"], "sw-core-01 down: 2 dependent hosts unreachable\nopen by triaged\n2 members firing");
    let info: Value = serde_json::from_str(r["additional_info"].as_str().expect("additional_info is a JSON string")).unwrap();
    assert_eq!(info["priority"], "P1");
    assert_eq!(info["impacted_services"], json!(["payments", "webshop"]));
    assert_eq!(info["root_cause"], "sw-core-01");
    assert_eq!(info["members"], 2);
    assert_eq!(info["parent"], Value::Null);
    assert_eq!(info["triaged_key"], KEY);
    assert_eq!(metrics.sink_request_duration.with_label_values(&["default", "servicenow_em", "event"]).get_sample_count(), 1);
}

#[tokio::test]
async fn em_update_resolve_and_reopen_share_the_message_key_and_a_clear_is_severity_0() {
    std::env::set_var("TRIAGED_IT_EM_TOKEN", "em-token-1");
    let server = MockServer::start().await;
    mount_em(&server).await;
    let auth = AuthConfig::Bearer { token: env_secret("TRIAGED_IT_EM_TOKEN") };
    let (sink, _) = build(&config_with_auth(SinkProfile::ServicenowEm, &server.uri(), auth));
    let mut merged = sample_action(ActionKind::Update);
    merged.incident.parent = Some("trg-parent".into());
    for action in [merged, sample_action(ActionKind::Resolve), sample_action(ActionKind::Reopen)] {
        sink.apply(&action).await.unwrap();
    }
    let reqs = received(&server, "POST", EM_PATH).await;
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(auth_header(r), "Bearer em-token-1");
        assert_eq!(record(r)["message_key"], KEY, "every action correlates into one alert");
    }
    let severities: Vec<Value> = reqs.iter().map(|r| record(r)["severity"].clone()).collect();
    assert_eq!(severities, [json!("2"), json!("0"), json!("2")], "update, clear, reopen");
    let update = record(&reqs[0]);
    let info: Value = serde_json::from_str(update["additional_info"].as_str().unwrap()).unwrap();
    assert_eq!(info["parent"], "trg-parent");
    assert!(record(&reqs[1])["description"].as_str().unwrap().contains("resolve by triaged"));
}

#[tokio::test]
async fn em_severity_mapping_and_an_incident_without_ci() {
    let server = MockServer::start().await;
    mount_em(&server).await;
    let (sink, _) = build(&config(SinkProfile::ServicenowEm, &server.uri()));
    let cases =
        [(Severity::Critical, "1"), (Severity::Major, "2"), (Severity::Minor, "3"), (Severity::Warning, "4"), (Severity::Info, "5")];
    for (sev, _) in cases {
        let mut a: Action = sample_action(ActionKind::Open);
        a.incident.severity = sev;
        a.incident.ci = None;
        a.incident.root_cause = None;
        sink.apply(&a).await.unwrap();
    }
    let reqs = received(&server, "POST", EM_PATH).await;
    assert_eq!(reqs.len(), cases.len());
    for (r, (sev, expected)) in reqs.iter().zip(cases) {
        let rec = record(r);
        assert_eq!(rec["severity"], expected, "{sev:?}");
        assert_eq!(rec["node"], "unknown");
        assert_eq!(rec["type"], "sw-core-01 down: 2 dependent hosts unreachable", "no root check: the title");
    }
}

#[tokio::test]
async fn em_429_with_retry_after_is_retried_then_delivered() {
    let server = MockServer::start().await;
    answer_once(&server, "POST", ResponseTemplate::new(429).insert_header("Retry-After", "1")).await;
    mount_em(&server).await;
    let (sink, metrics) = build(&config(SinkProfile::ServicenowEm, &server.uri()));
    sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap();
    let reqs = received(&server, "POST", EM_PATH).await;
    assert_eq!(reqs.len(), 2);
    assert_eq!(record(&reqs[0]), record(&reqs[1]), "the same event again");
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "retryable"]).get(), 1);
}

#[tokio::test]
async fn em_400_is_permanent_and_em_cannot_look_up() {
    let server = MockServer::start().await;
    answer(&server, "POST", ResponseTemplate::new(400).set_body_json(json!({ "error": { "message": "Invalid records" } }))).await;
    let (sink, _) = build(&config(SinkProfile::ServicenowEm, &server.uri()));
    let err = sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap_err();
    let SinkError::Permanent(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("servicenow_em") && msg.contains("400") && msg.contains("Invalid records"), "{msg}");
    assert_eq!(received(&server, "POST", EM_PATH).await.len(), 1, "not retried");
    assert!(!sink.can_look_up(), "EM has no read back by message_key");
    assert_eq!(sink.look_up(KEY, &CancellationToken::new()).await.unwrap(), Remote::Unknown);
}
