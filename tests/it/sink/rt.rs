//! The `rt` profile against a real Request Tracker 5 (`support::rt`): each
//! test starts its own RT, drives the sink, and checks the ticket by REST2
//! reads at the end. Two answers a real RT is not made to give here (a
//! refused status, a body that is not RT's JSON) come from wiremock.

use super::*;
use crate::support::rt::{Rt, ROOT_PASSWORD};
use triaged::config::RtConfig;
use triaged::incident::HumanOwned;
use triaged::sink::{Remote, RemoteRecord};

/// An `rt` sink authenticating with root's token (the file is kept alive
/// by the returned guard).
fn rt_sink(rt: &Rt) -> (RestSink, tempfile::TempDir) {
    let (guard, token) = secret_file(&rt.token);
    let cfg = config_with_auth(SinkProfile::Rt, &rt.url, AuthConfig::Token { token: file_secret(&token) });
    (build(&cfg).0, guard)
}

fn with_priority(mut action: Action, priority: u8) -> Action {
    action.incident.priority = priority;
    action
}

async fn deliver(sink: &RestSink, action: &Action) {
    sink.deliver(action, &CancellationToken::new()).await.unwrap_or_else(|e| panic!("{} delivered: {e}", action.kind.as_str()));
}

async fn look_up(sink: &RestSink, key: &str) -> Remote {
    sink.look_up(key, &CancellationToken::new()).await.unwrap()
}

/// Every ticket in the test RT, whatever its key.
async fn ticket_count(rt: &Rt) -> u64 {
    rt.get("tickets", &[("query", "id > 0")]).await["total"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_creates_one_ticket_by_key_and_opening_again_finds_it() {
    let rt = Rt::start().await;
    let (sink, _guard) = rt_sink(&rt);
    assert_eq!(look_up(&sink, KEY).await, Remote::Missing);
    let open = sample_action(ActionKind::Open);
    deliver(&sink, &open).await;
    // A second sink knows nothing of the first one's cache: as after a
    // restart, or a create whose response was lost.
    let (fresh, _guard2) = rt_sink(&rt);
    deliver(&fresh, &open).await;
    deliver(&sink, &open).await;

    assert_eq!(look_up(&fresh, KEY).await, Remote::Open);
    assert_eq!(ticket_count(&rt).await, 1, "one ticket for the key");
    let t = rt.ticket(KEY).await;
    assert_eq!(t["Subject"], open.incident.title.as_str());
    assert_eq!((t["Status"].as_str(), t["Priority"].as_str()), (Some("new"), Some("100")), "P1 is priority 100: {t}");
    assert_eq!(t["Queue"]["Name"], "General");
    let id = t["id"].as_str().unwrap();
    let content = rt.get(&format!("ticket/{id}/attachments"), &[("fields", "Content")]).await;
    let text = content["items"][0]["Content"].as_str().unwrap();
    assert!(text.contains("Root cause: sw-core-01") && text.contains(KEY) && text.contains("2 members firing"), "{text}");
    assert!(rt.comments(id).await.is_empty(), "opening again wrote no comment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_comments_the_notes_and_changes_the_priority() {
    let rt = Rt::start().await;
    let (sink, _guard) = rt_sink(&rt);
    deliver(&sink, &sample_action(ActionKind::Open)).await;
    let mut update = with_priority(sample_action(ActionKind::Update), 3);
    update.notes = vec!["web-02 joined: http failed".into()];
    deliver(&sink, &update).await;

    let t = rt.ticket(KEY).await;
    assert_eq!(t["Priority"], "60", "P3 is priority 60: {t}");
    assert_eq!(rt.comments(t["id"].as_str().unwrap()).await, ["web-02 joined: http failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_and_reopen_set_the_status_with_a_comment_each() {
    let rt = Rt::start().await;
    let (sink, _guard) = rt_sink(&rt);
    deliver(&sink, &sample_action(ActionKind::Open)).await;
    deliver(&sink, &sample_action(ActionKind::Resolve)).await;
    assert_eq!(look_up(&sink, KEY).await, Remote::Closed);
    assert_eq!(rt.ticket(KEY).await["Status"], "resolved");
    let closed = sink.read_back(KEY, &CancellationToken::new()).await.unwrap();
    assert_eq!(closed.state, Remote::Closed);
    let ago = closed.closed_at.map(|t| chrono::Utc::now() - t);
    assert!(ago.is_some_and(|a| a >= chrono::Duration::zero() && a < chrono::Duration::minutes(5)), "RT's Resolved time: {closed:?}");

    deliver(&sink, &sample_action(ActionKind::Reopen)).await;
    assert_eq!(look_up(&sink, KEY).await, Remote::Open);
    let t = rt.ticket(KEY).await;
    assert_eq!(t["Status"], "open");
    assert_eq!(
        rt.comments(t["id"].as_str().unwrap()).await,
        ["resolve by triaged\n2 members firing", "reopen by triaged\n2 members firing"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_for_a_key_without_a_ticket_creates_it_first_with_basic_auth() {
    let rt = Rt::start().await;
    let (guard, password) = secret_file(ROOT_PASSWORD);
    let auth = AuthConfig::Basic { username: "root".into(), password: file_secret(&password) };
    let (sink, _) = build(&config_with_auth(SinkProfile::Rt, &rt.url, auth));
    deliver(&sink, &sample_action(ActionKind::Resolve)).await;
    drop(guard);

    let t = rt.ticket(KEY).await;
    assert_eq!(t["Status"], "resolved");
    let id = t["id"].as_str().unwrap();
    let content = rt.get(&format!("ticket/{id}/attachments"), &[("fields", "Content")]).await;
    assert!(content["items"][0]["Content"].as_str().unwrap().starts_with("Created by triaged while delivering a resolve"), "{content}");
    assert_eq!(rt.comments(id).await.len(), 1, "the resolve's comment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_an_operator_took_reads_back_acknowledged_and_an_owned_priority_is_not_written() {
    let rt = Rt::start().await;
    let (sink, _guard) = rt_sink(&rt);
    assert_eq!(
        sink.read_back(KEY, &CancellationToken::new()).await.unwrap(),
        RemoteRecord { state: Remote::Missing, ..RemoteRecord::default() }
    );
    deliver(&sink, &with_priority(sample_action(ActionKind::Open), 2)).await;
    let untaken = sink.read_back(KEY, &CancellationToken::new()).await.unwrap();
    assert_eq!((untaken.acknowledged, untaken.assignee.as_deref(), untaken.priority), (false, None, Some(2)), "{untaken:?}");

    // The operator takes the ticket and raises it to 95 (P1).
    let id = rt.ticket(KEY).await["id"].as_str().unwrap().to_owned();
    rt.put(&format!("ticket/{id}"), json!({ "Owner": "root", "Priority": 95 })).await;
    let taken = sink.read_back(KEY, &CancellationToken::new()).await.unwrap();
    let expected = RemoteRecord {
        state: Remote::Open,
        acknowledged: true,
        assignee: Some("root".into()),
        priority: Some(1),
        group: Some("General".into()),
        closed_at: None,
    };
    assert_eq!(taken, expected);

    // The priority is the operator's now: an update to P4 only comments.
    let mut update = with_priority(sample_action(ActionKind::Update), 4);
    update.incident.human_owned.insert(sink.name().to_owned(), HumanOwned { priority: true, ..Default::default() });
    deliver(&sink, &update).await;
    let t = rt.ticket(KEY).await;
    assert_eq!(t["Priority"], "95", "the operator's priority stays: {t}");
    assert_eq!(rt.comments(&id).await.len(), 1, "the update's notes were written");
    // Without the ownership the same update writes P4 (priority 40).
    update.incident.human_owned.clear();
    deliver(&sink, &update).await;
    assert_eq!(rt.ticket(KEY).await["Priority"], "40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_quoted_in_ticketsql() {
    let rt = Rt::start().await;
    let (sink, _guard) = rt_sink(&rt);
    deliver(&sink, &sample_action(ActionKind::Open)).await;
    // Unquoted, this would match every ticket.
    assert_eq!(look_up(&sink, "x' OR id > 0 OR 'y").await, Remote::Missing);
    let mut odd = sample_action(ActionKind::Open);
    odd.incident.key = "trg-it's\\' OR 'x".into();
    deliver(&sink, &odd).await;
    let (fresh, _guard2) = rt_sink(&rt);
    deliver(&fresh, &odd).await;
    assert_eq!(look_up(&fresh, &odd.incident.key).await, Remote::Open);
    assert_eq!(ticket_count(&rt).await, 2, "the odd key was found again, not created twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_without_the_key_field_gets_no_ticket() {
    let rt = Rt::start().await;
    let (guard, token) = secret_file(&rt.token);
    let mut cfg = config_with_auth(SinkProfile::Rt, &rt.url, AuthConfig::Token { token: file_secret(&token) });
    cfg.rt = RtConfig { key_field: "IncidentKey".into(), ..RtConfig::default() };
    let (sink, _) = build(&cfg);
    let err = sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, SinkError::Permanent(_)), "{err}");
    assert!(err.to_string().contains("`IncidentKey` (sink.rt.key_field) is not applied to queue `General`"), "{err}");
    cfg.rt = RtConfig { queue: "Nope".into(), ..RtConfig::default() };
    let err = build(&cfg).0.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("queue `Nope` (sink.rt.queue) does not exist"), "{err}");
    drop(guard);
    assert_eq!(ticket_count(&rt).await, 0);
}

// ----- what a real RT is not made to answer here: wiremock -----------------------

/// An `rt` sink on `server`, basic auth.
fn mock_rt_sink(server: &MockServer, password: &Path) -> RestSink {
    let auth = AuthConfig::Basic { username: "root".into(), password: file_secret(password) };
    build(&config_with_auth(SinkProfile::Rt, &server.uri(), auth)).0
}

#[tokio::test]
async fn a_status_rt_refuses_with_a_200_is_a_permanent_error_quoting_rt() {
    let server = MockServer::start().await;
    let found = json!({ "items": [{ "id": "7", "Status": "new", "type": "ticket" }], "count": 1 });
    Mock::given(method("GET"))
        .and(path("/REST/2.0/tickets"))
        .respond_with(ResponseTemplate::new(200).set_body_json(found))
        .mount(&server)
        .await;
    let refused = json!(["Ticket 7: Status 'resolved' isn't a valid status for this ticket."]);
    Mock::given(method("PUT"))
        .and(path("/REST/2.0/ticket/7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(refused))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/REST/2.0/ticket/7/comment"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!(["Comments added"])))
        .mount(&server)
        .await;
    let ticket = json!({ "id": 7, "Status": "new" });
    Mock::given(method("GET"))
        .and(path("/REST/2.0/ticket/7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ticket))
        .mount(&server)
        .await;
    let (_guard, password) = secret_file("pw");
    let err = mock_rt_sink(&server, &password).apply(&sample_action(ActionKind::Resolve)).await.unwrap_err();
    assert!(matches!(err, SinkError::Permanent(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("ticket 7 is `new` after setting `resolved`") && text.contains("isn't a valid status"), "{text}");
}

#[tokio::test]
async fn an_answer_that_is_not_rt_json_is_a_permanent_error_naming_the_request() {
    let server = MockServer::start().await;
    let html = ResponseTemplate::new(200).set_body_string("<html>login</html>");
    Mock::given(method("GET")).and(path("/REST/2.0/tickets")).respond_with(html).mount(&server).await;
    let (_guard, password) = secret_file("pw");
    let sink = mock_rt_sink(&server, &password);
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(matches!(&err, SinkError::Permanent(m) if m.starts_with("rt lookup: unusable response: <html>")), "{err}");
    let err = sink.read_back(KEY, &CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("rt lookup: unusable response"), "{err}");
    assert!(received(&server, "POST", "/REST/2.0/ticket").await.is_empty(), "nothing created after an unusable look-up");
}
