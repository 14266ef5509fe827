//! The Jira Service Management Operations profile: alerts created, noted,
//! re-prioritised and closed by `alias` (the incident key) with
//! `identifierType=alias`, 202 answers taken as delivered, look-up and
//! read-back by alias, a priority a person owns left alone.

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use triaged::config::{AuthConfig, SinkConfig, SinkProfile};
use triaged::incident::{ActionKind, HumanOwned, SinkError};
use triaged::sink::{Remote, RemoteRecord};

use super::{answer, answer_once, body, build, config_with_auth, file_secret, owned_action, received, sample_action, secret_file, KEY};

const ALERTS: &str = "/v2/alerts";

/// A jsm config against `server` with the API key in a temp file.
fn jsm_config(server: &MockServer) -> (tempfile::TempDir, SinkConfig) {
    let (dir, key) = secret_file("genie-key-0123\n");
    let cfg = config_with_auth(SinkProfile::Jsm, &server.uri(), AuthConfig::GenieKey { token: file_secret(&key) });
    (dir, cfg)
}

/// JSM's asynchronous answer to every request.
async fn mount_accepted(server: &MockServer) {
    let accepted = json!({ "result": "Request will be processed", "took": 0.1, "requestId": "43a29c5c-3dbf-4fa4-9c26-f4f71023e120" });
    answer(server, "POST", ResponseTemplate::new(202).set_body_json(accepted.clone())).await;
    answer(server, "PUT", ResponseTemplate::new(202).set_body_json(accepted)).await;
}

fn alias_path(op: &str) -> String {
    format!("{ALERTS}/{KEY}/{op}")
}

/// Each request as `METHOD path?query`, in order.
async fn requests(server: &MockServer) -> Vec<String> {
    let all = server.received_requests().await.expect("recording is on");
    all.iter().map(|r| format!("{} {}{}", r.method, r.url.path(), r.url.query().map(|q| format!("?{q}")).unwrap_or_default())).collect()
}

fn assert_genie_key(r: &Request) {
    let auth = r.headers.get("authorization").expect("Authorization header").to_str().unwrap();
    assert_eq!(auth, "GenieKey genie-key-0123");
}

#[tokio::test]
async fn jsm_open_creates_an_alert_with_the_key_as_alias() {
    let server = MockServer::start().await;
    mount_accepted(&server).await;
    let (_dir, cfg) = jsm_config(&server);
    let (sink, metrics) = build(&cfg);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();

    assert_eq!(requests(&server).await, [format!("POST {ALERTS}")]);
    let reqs = received(&server, "POST", ALERTS).await;
    assert_genie_key(&reqs[0]);
    let b = body(&reqs[0]);
    assert_eq!(b["message"], "sw-core-01 down: 2 dependent hosts unreachable");
    assert_eq!(b["alias"], KEY);
    assert_eq!(b["priority"], "P1");
    assert_eq!(b["entity"], "sw-core-01");
    assert_eq!(b["source"], "triaged");
    assert_eq!(b["tags"], json!(["triaged", "severity:major", "service:payments", "service:webshop"]));
    let d = &b["details"];
    assert_eq!(d["triaged_key"], KEY);
    assert_eq!(d["root_cause"], "sw-core-01");
    assert_eq!(d["impacted_services"], "payments, webshop");
    assert_eq!(d["members"], "2");
    assert_eq!(d["assignment_group"], "Network Operations");
    assert_eq!(d["runbook"], "https://wiki.example.com/runbooks/core-switch");
    assert!(d.as_object().unwrap().values().all(Value::is_string), "JSM details are string to string: {d}");
    let description = b["description"].as_str().unwrap();
    for needle in ["Root cause: sw-core-01", "nagios/http on web-01", "open by triaged"] {
        assert!(description.contains(needle), "{needle:?} missing from {description}");
    }
    assert_eq!(metrics.sink_request_duration.with_label_values(&["default", "jsm", "create"]).get_sample_count(), 1);
}

#[tokio::test]
async fn jsm_priorities_map_and_long_titles_are_cut_to_130() {
    let server = MockServer::start().await;
    mount_accepted(&server).await;
    let (_dir, cfg) = jsm_config(&server);
    let (sink, _) = build(&cfg);
    for priority in 1..=5u8 {
        let mut a = sample_action(ActionKind::Open);
        a.incident.priority = priority;
        a.incident.title = "t".repeat(500);
        a.incident.ci = None;
        sink.apply(&a).await.unwrap();
    }
    let reqs = received(&server, "POST", ALERTS).await;
    let priorities: Vec<Value> = reqs.iter().map(|r| body(r)["priority"].clone()).collect();
    assert_eq!(priorities, [json!("P1"), json!("P2"), json!("P3"), json!("P4"), json!("P5")]);
    for r in &reqs {
        let b = body(r);
        assert_eq!(b["message"].as_str().unwrap().chars().count(), 130);
        assert!(b.get("entity").is_none(), "no CI, no entity");
    }
}

#[tokio::test]
async fn jsm_update_adds_a_note_and_changes_the_priority_only_when_it_changed() {
    let server = MockServer::start().await;
    mount_accepted(&server).await;
    let (_dir, cfg) = jsm_config(&server);
    let (sink, _) = build(&cfg);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    let mut lowered = sample_action(ActionKind::Update);
    lowered.incident.priority = 3;
    sink.apply(&lowered).await.unwrap();

    let notes = format!("POST {}?identifierType=alias", alias_path("notes"));
    let priority = format!("PUT {}?identifierType=alias", alias_path("priority"));
    // The priority is changed before the note, and only when it changed.
    assert_eq!(requests(&server).await, [format!("POST {ALERTS}"), notes.clone(), priority, notes]);
    let note_reqs = received(&server, "POST", &alias_path("notes")).await;
    for r in &note_reqs {
        assert_genie_key(r);
        assert_eq!(body(r)["note"], "update by triaged\n2 members firing");
        assert_eq!(body(r)["source"], "triaged");
    }
    let put = received(&server, "PUT", &alias_path("priority")).await;
    assert_genie_key(&put[0]);
    assert_eq!(body(&put[0]), json!({ "priority": "P3" }));
}

#[tokio::test]
async fn jsm_update_without_a_known_priority_sets_it() {
    // After a restart the priority last sent is unknown: it is set again
    // (idempotent at JSM).
    let server = MockServer::start().await;
    mount_accepted(&server).await;
    let (_dir, cfg) = jsm_config(&server);
    let (sink, _) = build(&cfg);
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    let notes = format!("POST {}?identifierType=alias", alias_path("notes"));
    let priority = format!("PUT {}?identifierType=alias", alias_path("priority"));
    assert_eq!(requests(&server).await, [priority, notes]);
}

#[tokio::test]
async fn jsm_resolve_closes_by_alias_and_reopen_creates_with_the_same_alias() {
    let server = MockServer::start().await;
    mount_accepted(&server).await;
    let (_dir, cfg) = jsm_config(&server);
    let (sink, _) = build(&cfg);
    sink.apply(&sample_action(ActionKind::Resolve)).await.unwrap();
    sink.apply(&sample_action(ActionKind::Reopen)).await.unwrap();

    let close = format!("POST {}?identifierType=alias", alias_path("close"));
    assert_eq!(requests(&server).await, [close, format!("POST {ALERTS}")]);
    let c = received(&server, "POST", &alias_path("close")).await;
    assert_genie_key(&c[0]);
    assert_eq!(body(&c[0])["note"], "resolve by triaged\n2 members firing");
    assert_eq!(body(&c[0])["source"], "triaged");
    let reopen = received(&server, "POST", ALERTS).await;
    assert_genie_key(&reopen[0]);
    let b = body(&reopen[0]);
    assert_eq!(b["alias"], KEY, "a closed alias opens a new alert");
    assert_eq!(b["priority"], "P1");
    assert!(b["description"].as_str().unwrap().contains("reopen by triaged"));
}

#[tokio::test]
async fn jsm_202_is_delivered_429_is_retried_and_400_is_permanent() {
    let server = MockServer::start().await;
    answer_once(&server, "POST", ResponseTemplate::new(429).insert_header("Retry-After", "1")).await;
    mount_accepted(&server).await;
    let (_dir, cfg) = jsm_config(&server);
    let (sink, metrics) = build(&cfg);
    let stop = CancellationToken::new();
    sink.deliver(&sample_action(ActionKind::Open), &stop).await.unwrap();
    assert_eq!(received(&server, "POST", ALERTS).await.len(), 2, "429 then 202");
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "retryable"]).get(), 1);

    let rejecting = MockServer::start().await;
    let bad = json!({ "message": "Request body is not processable. Please check the errors.", "errors": { "message": "Message can not be empty." } });
    answer(&rejecting, "POST", ResponseTemplate::new(400).set_body_json(bad)).await;
    let (_dir2, cfg) = jsm_config(&rejecting);
    let (sink, _) = build(&cfg);
    let err = sink.deliver(&sample_action(ActionKind::Open), &stop).await.unwrap_err();
    let SinkError::Permanent(msg) = &err else { panic!("{err:?}") };
    assert!(msg.contains("jsm") && msg.contains("400") && msg.contains("not processable"), "{msg}");
    assert!(!msg.contains("genie-key-0123"), "{msg}");
    assert_eq!(received(&rejecting, "POST", ALERTS).await.len(), 1, "not retried");
}

#[tokio::test]
async fn jsm_looks_alerts_up_by_alias() {
    let server = MockServer::start().await;
    for (alias, status) in [("trg-open", "open"), ("trg-done", "closed")] {
        let alert =
            json!({ "data": { "id": "70413a06", "alias": alias, "status": status, "acknowledged": false }, "requestId": "9ae63dd7" });
        Mock::given(method("GET"))
            .and(path(format!("{ALERTS}/{alias}")))
            .and(query_param("identifierType", "alias"))
            .respond_with(ResponseTemplate::new(200).set_body_json(alert))
            .mount(&server)
            .await;
    }
    let missing = json!({ "message": "Alert does not exist", "requestId": "1f2c" });
    Mock::given(method("GET"))
        .and(path(format!("{ALERTS}/trg-gone")))
        .respond_with(ResponseTemplate::new(404).set_body_json(missing))
        .mount(&server)
        .await;
    let (_dir, cfg) = jsm_config(&server);
    let (sink, _) = build(&cfg);
    let stop = CancellationToken::new();
    assert!(sink.can_look_up());
    assert_eq!(sink.look_up("trg-open", &stop).await.unwrap(), Remote::Open);
    assert_eq!(sink.look_up("trg-done", &stop).await.unwrap(), Remote::Closed);
    assert_eq!(sink.look_up("trg-gone", &stop).await.unwrap(), Remote::Missing);
    let gets = received(&server, "GET", &format!("{ALERTS}/trg-open")).await;
    assert_genie_key(&gets[0]);
}

#[tokio::test]
async fn jsm_reads_alerts_back_by_alias() {
    let server = MockServer::start().await;
    let answers = [
        ("trg-open", json!({ "status": "open", "acknowledged": false, "priority": "P3" })),
        ("trg-acked", json!({ "status": "open", "acknowledged": true, "owner": "ada@example.com", "priority": "P1" })),
        ("trg-done", json!({ "status": "closed", "acknowledged": true, "owner": "", "priority": "P5" })),
        ("trg-odd", json!({ "status": "snoozed" })),
    ];
    for (alias, data) in answers {
        let mut data = data;
        data["alias"] = alias.into();
        Mock::given(method("GET"))
            .and(path(format!("{ALERTS}/{alias}")))
            .and(query_param("identifierType", "alias"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "data": data, "requestId": "9ae63dd7" })))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path(format!("{ALERTS}/trg-garbage")))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path(format!("{ALERTS}/trg-gone"))).respond_with(ResponseTemplate::new(404)).mount(&server).await;
    let (_dir, cfg) = jsm_config(&server);
    let (sink, _) = build(&cfg);
    let stop = CancellationToken::new();
    assert!(sink.can_read_back());
    let rec = |state, acknowledged, assignee: Option<&str>, priority| RemoteRecord {
        state,
        acknowledged,
        assignee: assignee.map(str::to_owned),
        priority,
        group: None,
        closed_at: None,
    };
    assert_eq!(sink.read_back("trg-open", &stop).await.unwrap(), rec(Remote::Open, false, None, Some(3)));
    assert_eq!(sink.read_back("trg-acked", &stop).await.unwrap(), rec(Remote::Open, true, Some("ada@example.com"), Some(1)));
    assert_eq!(sink.read_back("trg-done", &stop).await.unwrap(), rec(Remote::Closed, true, None, Some(5)));
    assert_eq!(sink.read_back("trg-gone", &stop).await.unwrap(), rec(Remote::Missing, false, None, None));
    for alias in ["trg-odd", "trg-garbage"] {
        let err = sink.read_back(alias, &stop).await.unwrap_err();
        assert!(matches!(&err, SinkError::Permanent(m) if m.contains("jsm lookup") && m.contains("unusable")), "{alias}: {err:?}");
    }
    assert_genie_key(&received(&server, "GET", &format!("{ALERTS}/trg-acked")).await[0]);
}

#[tokio::test]
async fn jsm_a_priority_a_person_owns_is_not_changed() {
    let server = MockServer::start().await;
    mount_accepted(&server).await;
    let (_dir, cfg) = jsm_config(&server);
    let (sink, _) = build(&cfg);
    let owned = HumanOwned { priority: true, ..Default::default() };
    // A create sends it all the same.
    sink.apply(&owned_action(ActionKind::Open, owned)).await.unwrap();
    let mut lowered = owned_action(ActionKind::Update, owned);
    lowered.incident.priority = 3;
    sink.apply(&lowered).await.unwrap();
    let notes = format!("POST {}?identifierType=alias", alias_path("notes"));
    assert_eq!(requests(&server).await, [format!("POST {ALERTS}"), notes]);
    assert_eq!(body(&received(&server, "POST", ALERTS).await[0])["priority"], "P1");
}
