//! The ServiceNow profile: lookup by `correlation_id` before any create,
//! PATCHes by cached sys_id, state transitions, both auth schemes, records
//! read back, references by name or sys_id, and fields a person owns.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{basic_auth, bearer_token, body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use triaged::config::{AuthConfig, HumanDuration, ReferenceBy, ServicenowConfig, SinkProfile};
use triaged::incident::{ActionKind, HumanOwned, SinkError};
use triaged::scale::ownership::{Claim, Ownership};
use triaged::sink::Remote;

use super::{
    answer, body, build, config, config_with_auth, env_secret, file_secret, mount_create, mount_lookup, mount_patch, owned_action, patches,
    received, sample_action, secret_file, servicenow_sink, KEY, SN_FIELDS, SN_TABLE,
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

/// A mounted answer to the incident query of `key` (`^` escaped as `^^`).
async fn mount_row(server: &MockServer, key: &str, rows: serde_json::Value) {
    Mock::given(method("GET"))
        .and(path(SN_TABLE))
        .and(query_param("sysparm_query", format!("correlation_id={}", key.replace('^', "^^"))))
        .and(query_param("sysparm_fields", SN_FIELDS))
        .and(query_param("sysparm_display_value", "all"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "result": rows })))
        .mount(server)
        .await;
}

/// A field as `sysparm_display_value=all` gives it.
fn both(value: &str, display: &str) -> serde_json::Value {
    json!({ "value": value, "display_value": display })
}

#[tokio::test]
async fn servicenow_reads_records_back_by_correlation_id() {
    let server = MockServer::start().await;
    let empty = both("", "");
    let row = |sys_id: &str, state: (&str, &str), priority: &str, assigned: &serde_json::Value| {
        json!([{ "sys_id": both(sys_id, sys_id), "state": both(state.0, state.1), "priority": both(priority, "x"),
                 "assigned_to": assigned, "assignment_group": both("0a52d3dcd7011200f2d224837e6103f2", "Network Operations"),
                 "urgency": both("2", "2 - Medium"), "impact": both("1", "1 - High"), "sys_updated_on": both("2024-05-01 10:05:00", "x") }])
    };
    mount_row(&server, "trg-new", row("s-new", ("1", "New"), "3", &empty)).await;
    mount_row(&server, KEY, row("s-taken", ("2", "In Progress"), "2", &both("46d44a23a9fe19810012d100cca80666", "Ada Lovelace"))).await;
    mount_row(&server, "trg-assigned", row("s-assigned", ("1", "New"), "4", &both("5137153cc611227c000bbd1bd8cd2005", "Bob"))).await;
    mount_row(&server, "trg-closed", row("s-closed", ("7", "Closed"), "5", &empty)).await;
    // Without display values every field is a plain string.
    mount_row(
        &server,
        "trg-hold",
        json!([{ "sys_id": "s-hold", "state": "3", "priority": "1", "assigned_to": "", "assignment_group": "" }]),
    )
    .await;
    mount_row(&server, "trg-x^y", json!([])).await;
    Mock::given(method("GET"))
        .and(path(SN_TABLE))
        .and(query_param("sysparm_query", "correlation_id=trg-garbage"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>login</html>"))
        .mount(&server)
        .await;
    mount_patch(&server, "s-taken").await;
    let (sink, _) = servicenow_sink(&server);
    let stop = CancellationToken::new();
    assert!(sink.can_read_back());

    let rec = super::read_record;
    let netops = Some("Network Operations");
    assert_eq!(sink.read_back("trg-new", &stop).await.unwrap(), rec(Remote::Open, false, None, Some(3), netops));
    assert_eq!(sink.read_back(KEY, &stop).await.unwrap(), rec(Remote::Open, true, Some("Ada Lovelace"), Some(2), netops));
    assert_eq!(sink.read_back("trg-assigned", &stop).await.unwrap(), rec(Remote::Open, true, Some("Bob"), Some(4), netops));
    assert_eq!(sink.read_back("trg-hold", &stop).await.unwrap(), rec(Remote::Open, true, None, Some(1), None));
    assert_eq!(sink.read_back("trg-closed", &stop).await.unwrap(), rec(Remote::Closed, false, None, Some(5), netops));
    assert_eq!(sink.read_back("trg-x^y", &stop).await.unwrap(), rec(Remote::Missing, false, None, None, None));
    let err = sink.read_back("trg-garbage", &stop).await.unwrap_err();
    assert!(matches!(&err, SinkError::Permanent(m) if m.contains("servicenow lookup") && m.contains("unusable")), "{err:?}");
    // look_up asks the same query.
    assert_eq!(sink.look_up("trg-closed", &stop).await.unwrap(), Remote::Closed);

    // The sys_id read back is cached: the next update PATCHes it directly.
    let gets = received(&server, "GET", SN_TABLE).await.len();
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    assert_eq!(received(&server, "GET", SN_TABLE).await.len(), gets);
    assert_eq!(patches(&server, "s-taken").await.len(), 1);
}

/// `sysparm_input_display_value` of a request, if any.
fn input_display_value(r: &Request) -> Option<String> {
    r.url.query_pairs().find(|(k, _)| k == "sysparm_input_display_value").map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn servicenow_references_by_name_have_servicenow_resolve_them() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([]), None).await;
    mount_create(&server, "dv-1").await;
    mount_patch(&server, "dv-1").await;
    let (sink, _) = servicenow_sink(&server);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    sink.apply(&sample_action(ActionKind::Update)).await.unwrap();
    let posts = received(&server, "POST", SN_TABLE).await;
    assert_eq!(input_display_value(&posts[0]).as_deref(), Some("true"));
    assert_eq!(
        (body(&posts[0])["cmdb_ci"].clone(), body(&posts[0])["assignment_group"].clone()),
        (json!("sw-core-01"), json!("Network Operations"))
    );
    assert_eq!(input_display_value(&patches(&server, "dv-1").await[0]).as_deref(), Some("true"));
    let all = server.received_requests().await.unwrap();
    assert!(all.iter().all(|r| r.url.path() == SN_TABLE || r.url.path().starts_with(&format!("{SN_TABLE}/"))), "no name look-ups");
}

/// A sink with `[sink.servicenow]` set to `sn`.
fn sn_sink(server: &MockServer, sn: ServicenowConfig) -> triaged::sink::RestSink {
    let mut cfg = config(SinkProfile::Servicenow, &server.uri());
    cfg.servicenow = Some(sn);
    build(&cfg).0
}

/// `GET /api/now/table/{table}?sysparm_query=name=<name>` answers `response`.
async fn mount_name(server: &MockServer, table: &str, name: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(format!("/api/now/table/{table}")))
        .and(query_param("sysparm_query", format!("name={name}")))
        .and(query_param("sysparm_fields", "sys_id"))
        .and(query_param("sysparm_limit", "1"))
        .respond_with(response)
        .mount(server)
        .await;
}

fn rows(rows: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "result": rows }))
}

#[tokio::test]
async fn servicenow_references_by_sys_id_are_looked_up_once() {
    let server = MockServer::start().await;
    // Every incident query finds nothing: each action here creates.
    Mock::given(method("GET")).and(path(SN_TABLE)).respond_with(rows(json!([]))).mount(&server).await;
    mount_create(&server, "sid-1").await;
    mount_name(&server, "cmdb_ci", "sw-core-01", rows(json!([{ "sys_id": "ci-sys-1" }]))).await;
    mount_name(&server, "sys_user_group", "Network Operations", rows(json!([{ "sys_id": both("grp-sys-1", "Network Operations") }]))).await;
    let sink = sn_sink(&server, ServicenowConfig { reference_by: ReferenceBy::SysId, ..ServicenowConfig::default() });
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    let mut other = sample_action(ActionKind::Open);
    other.incident.key = "trg-other".into();
    sink.apply(&other).await.unwrap();

    let posts = received(&server, "POST", SN_TABLE).await;
    assert_eq!(posts.len(), 2);
    for p in &posts {
        assert_eq!(input_display_value(p), None);
        assert_eq!(body(p)["cmdb_ci"], "ci-sys-1");
        assert_eq!(body(p)["assignment_group"], "grp-sys-1");
    }
    assert_eq!(received(&server, "GET", "/api/now/table/cmdb_ci").await.len(), 1, "cached");
    assert_eq!(received(&server, "GET", "/api/now/table/sys_user_group").await.len(), 1, "cached");
}

#[tokio::test]
async fn servicenow_a_name_not_found_still_creates_the_incident() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([]), None).await;
    mount_create(&server, "nf-1").await;
    mount_name(&server, "cmdb_ci", "sw-core-01", rows(json!([]))).await;
    // A table the sink may not read is no reason to lose the incident either.
    mount_name(&server, "sys_user_group", "Network Operations", ResponseTemplate::new(403)).await;
    let sink = sn_sink(&server, ServicenowConfig { reference_by: ReferenceBy::SysId, ..ServicenowConfig::default() });
    sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap();
    let posts = received(&server, "POST", SN_TABLE).await;
    assert_eq!(posts.len(), 1);
    let b = body(&posts[0]);
    assert_eq!(b["correlation_id"], KEY);
    assert!(b.get("cmdb_ci").is_none() && b.get("assignment_group").is_none(), "{b}");
    assert_eq!(received(&server, "GET", "/api/now/table/sys_user_group").await.len(), 1, "a 403 is not retried");
}

#[tokio::test]
async fn servicenow_resolve_sends_the_configured_close_code() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([{ "sys_id": "cc-1", "state": "2" }]), None).await;
    mount_patch(&server, "cc-1").await;
    let sink = sn_sink(&server, ServicenowConfig { close_code: "Resolved by monitoring".into(), ..ServicenowConfig::default() });
    sink.apply(&sample_action(ActionKind::Resolve)).await.unwrap();
    let p = body(&patches(&server, "cc-1").await[0]);
    assert_eq!((p["state"].clone(), p["close_code"].clone()), (json!("6"), json!("Resolved by monitoring")));
}

#[tokio::test]
async fn servicenow_fields_a_person_owns_are_left_out_of_the_patch() {
    let server = MockServer::start().await;
    mount_lookup(&server, json!([]), None).await;
    mount_create(&server, "own-1").await;
    mount_patch(&server, "own-1").await;
    let (sink, _) = servicenow_sink(&server);
    let all = HumanOwned { priority: true, assignment: true, ..Default::default() };
    // A create sends everything.
    sink.apply(&owned_action(ActionKind::Open, all)).await.unwrap();
    let post = body(&received(&server, "POST", SN_TABLE).await[0]);
    assert_eq!((post["urgency"].clone(), post["assignment_group"].clone()), (json!("2"), json!("Network Operations")));

    sink.apply(&owned_action(ActionKind::Update, all)).await.unwrap();
    sink.apply(&owned_action(ActionKind::Update, HumanOwned { assignment: true, ..Default::default() })).await.unwrap();
    let patches = patches(&server, "own-1").await;
    let owned = body(&patches[0]);
    for field in ["urgency", "impact", "assignment_group"] {
        assert!(owned.get(field).is_none(), "{field} in {owned}");
    }
    assert_eq!(owned["work_notes"], "update by triaged\n2 members firing");
    assert_eq!(owned["short_description"], "sw-core-01 down: 2 dependent hosts unreachable");
    let priority_free = body(&patches[1]);
    assert_eq!((priority_free["urgency"].clone(), priority_free["impact"].clone()), (json!("2"), json!("1")));
    assert!(priority_free.get("assignment_group").is_none());
}

/// Log output written to a shared buffer.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn servicenow_a_name_not_found_is_warned_about_once() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber =
        tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_ansi(false).with_writer(move || writer.clone()).finish();
    // The test runs on one thread: what the sink logs here is captured.
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = MockServer::start().await;
    Mock::given(method("GET")).and(path(SN_TABLE)).respond_with(rows(json!([]))).mount(&server).await;
    mount_create(&server, "w-1").await;
    mount_name(&server, "cmdb_ci", "sw-core-01", rows(json!([]))).await;
    mount_name(&server, "sys_user_group", "Network Operations", rows(json!([{ "sys_id": "grp-sys-1" }]))).await;
    let sink = sn_sink(&server, ServicenowConfig { reference_by: ReferenceBy::SysId, ..ServicenowConfig::default() });
    for key in ["trg-w1", "trg-w2", "trg-w3"] {
        let mut open = sample_action(ActionKind::Open);
        open.incident.key = key.into();
        sink.apply(&open).await.unwrap();
    }
    assert_eq!(received(&server, "POST", SN_TABLE).await.len(), 3);
    assert_eq!(received(&server, "GET", "/api/now/table/cmdb_ci").await.len(), 3, "looked up again: it may appear");
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warned: Vec<_> = text.lines().filter(|l| l.contains("WARN") && l.contains("sw-core-01")).collect();
    assert_eq!(warned.len(), 1, "{text}");
    assert!(warned[0].contains("cmdb_ci"), "{text}");
}
