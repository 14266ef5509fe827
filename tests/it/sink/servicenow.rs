//! The ServiceNow profile: lookup by `correlation_id` before any create,
//! PATCHes by cached sys_id, state transitions, and both auth schemes.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{basic_auth, bearer_token, body_partial_json, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use triaged::config::{AuthConfig, HumanDuration, SinkProfile};
use triaged::incident::{ActionKind, SinkError};
use triaged::scale::ownership::{Claim, Ownership};

use super::{
    answer, body, build, config, config_with_auth, env_secret, file_secret, mount_create, mount_lookup, mount_patch, patches, received,
    sample_action, secret_file, servicenow_sink, KEY, SN_TABLE,
};

#[tokio::test]
async fn servicenow_open_creates_when_lookup_is_empty() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([]), None).await;
    mount_create(&server, "abc123").await;
    mount_patch(&server, "abc123").await;
    let (sink, metrics) = servicenow_sink(&server);
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
    assert_eq!(metrics.sink_request_duration.with_label_values(&["default", "servicenow", "lookup"]).get_sample_count(), 1);
    assert_eq!(metrics.sink_request_duration.with_label_values(&["default", "servicenow", "create"]).get_sample_count(), 1);

    // A later update uses the cached sys_id: no second lookup.
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    assert_eq!(received(&server, "GET", SN_TABLE).await.len(), 1);
    let patches = patches(&server, "abc123").await;
    assert_eq!(patches.len(), 1);
    let p = body(&patches[0]);
    assert_eq!(p["work_notes"], "update by triaged\n2 members firing");
    assert_eq!(p["urgency"], "2");
    assert_eq!(p["impact"], "1");
    assert_eq!(p["short_description"], "sw-core-01 down: 2 dependent hosts unreachable");
    assert!(p.get("state").is_none());
    assert_eq!(metrics.sink_request_duration.with_label_values(&["default", "servicenow", "update"]).get_sample_count(), 1);
}

/// An empty lookup answered while the partition is revoked: the
/// attempt's next request is judged again.
struct RevokingLookup(std::sync::Arc<Ownership>);

impl Respond for RevokingLookup {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.revoked("rekeyed", 0);
        ResponseTemplate::new(200).set_body_json(json!({ "result": [] }))
    }
}

#[tokio::test]
async fn servicenow_claim_lost_during_the_lookup_stops_the_create() {
    // The lookup can span a stall (a GET in flight while the process is
    // stopped): the create after it is a call of its own, made only while
    // the claim still holds.
    let ownership = Ownership::new(Duration::from_secs(3));
    let watch = ownership.watch();
    let epoch = ownership.assigned("rekeyed", 0);
    let server = MockServer::start().await;
    Mock::given(method("GET")).and(path(SN_TABLE)).respond_with(RevokingLookup(ownership.clone())).mount(&server).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(201)).expect(0).mount(&server).await;
    let (sink, metrics) = servicenow_sink(&server);
    let sink = sink.with_ownership(ownership.clone());
    let mut open = sample_action(ActionKind::Open);
    open.claim = Some(Claim { topic: "rekeyed".into(), partition: 0, epoch });
    let result = sink.deliver(&open, &CancellationToken::new()).await;
    assert!(matches!(result, Err(SinkError::Disowned { partition: 0, .. })), "{result:?}");
    assert_eq!(received(&server, "GET", SN_TABLE).await.len(), 1);
    assert_eq!(received(&server, "POST", SN_TABLE).await.len(), 0);
    // Not the ITSM's failure.
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "disowned"]).get(), 0);
    server.verify().await;
    ownership.stop();
    watch.join().unwrap();
}

#[tokio::test]
async fn servicenow_open_when_found_patches_and_never_posts() {
    // The "create timed out but was applied" case seen from the next attempt.
    let server = MockServer::start().await;
    mount_lookup(&server, json!([{ "sys_id": "found-1", "state": "1" }]), None).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(201)).expect(0).mount(&server).await;
    mount_patch(&server, "found-1").await;
    let (sink, _) = servicenow_sink(&server);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    assert_eq!(received(&server, "POST", SN_TABLE).await.len(), 0);
    let patches = patches(&server, "found-1").await;
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
    assert_eq!(patches(&server, "late-1").await.len(), 1);
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "retryable"]).get(), 1);
}

#[tokio::test]
async fn servicenow_resolve_sends_state_6() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([{ "sys_id": "r-1", "state": "2" }]), None).await;
    mount_patch(&server, "r-1").await;
    let (sink, _) = servicenow_sink(&server);
    sink.apply(&sample_action(ActionKind::Resolve)).await.unwrap();
    let patches = patches(&server, "r-1").await;
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
    let (sink, _) = servicenow_sink(&server);
    sink.apply(&sample_action(ActionKind::Reopen)).await.unwrap();
    let patches = patches(&server, "o-1").await;
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
    let (sink, _) = servicenow_sink(&server);
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
    let (sink, _) = servicenow_sink(&server);
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
    let (sink, _) = servicenow_sink(&server);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    assert_eq!(patches(&server, "moved-2").await.len(), 1);
    assert_eq!(received(&server, "POST", SN_TABLE).await.len(), 1);
}

#[tokio::test]
async fn servicenow_unusable_lookup_is_permanent() {
    let server = MockServer::start().await;
    answer(&server, "GET", ResponseTemplate::new(200).set_body_string("<html>login</html>")).await;
    let (sink, _) = servicenow_sink(&server);
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
    let (sink, _) = build(&config_with_auth(
        SinkProfile::Servicenow,
        &server.uri(),
        AuthConfig::Bearer { token: env_secret("TRIAGED_TEST_SN_BEARER") },
    ));
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
    let auth = AuthConfig::Basic { username: "triaged-svc".into(), password: file_secret(&file) };
    let (sink, _) = build(&config_with_auth(SinkProfile::Servicenow, &server.uri(), auth));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    server.verify().await;
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
    let (sink, _) = servicenow_sink(&server);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn servicenow_a_merged_record_becomes_the_child_of_its_parent() {
    // A root found upstream after two symptom records opened: the one merged
    // away is resolved as the child of the survivor's record.
    let server = MockServer::start().await;
    mount_lookup(&server, json!([{ "sys_id": "child-1", "state": "2" }]), None).await;
    Mock::given(method("GET"))
        .and(path(SN_TABLE))
        .and(wiremock::matchers::query_param("sysparm_query", "correlation_id=trg-parent"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "result": [{ "sys_id": "parent-9", "state": "2" }] })))
        .mount(&server)
        .await;
    mount_patch(&server, "child-1").await;
    let (sink, _) = servicenow_sink(&server);
    let mut resolve = sample_action(ActionKind::Resolve);
    resolve.incident.parent = Some("trg-parent".into());
    sink.apply(&resolve).await.unwrap();
    let patches = patches(&server, "child-1").await;
    assert_eq!(patches.len(), 1);
    let p = body(&patches[0]);
    assert_eq!(p["parent_incident"], "parent-9");
    assert_eq!(p["state"], "6");
    // Without a parent nothing is linked.
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    let patches = super::patches(&server, "child-1").await;
    assert!(body(&patches[1]).get("parent_incident").is_none());
}
