//! The generic profile: the incident PUT by key, read back by GET, and how
//! reply statuses are classified (retryable, permanent, `Retry-After`,
//! excerpts, redirects).

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use triaged::config::{HumanDuration, RetryConfig, SinkProfile};
use triaged::demo::itsm::IncidentReceiver;
use triaged::incident::{ActionKind, HumanOwned, SinkError};
use triaged::sink::{Remote, RemoteRecord};

use super::{answer, answer_once, body, build, config, generic_sink, owned_action, puts, sample_action, KEY};

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

    let reqs = puts(&server).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].headers.get("content-type").unwrap(), "application/json");
    let b = body(&reqs[0]);
    assert_eq!(b["action"], "open");
    assert_eq!(b["incident"]["key"], KEY);
    assert_eq!(b["incident"]["priority"], 1);
    assert_eq!(b["incident"]["members"].as_array().unwrap().len(), 2);
    assert_eq!(b["notes"], json!(["open by triaged", "2 members firing"]));
    assert_eq!(metrics.sink_request_duration.with_label_values(&["default", "generic", "put"]).get_sample_count(), 1);
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
    answer_once(&server, "PUT", ResponseTemplate::new(500).set_body_string("backend exploded")).await;
    answer(&server, "PUT", ResponseTemplate::new(200)).await;
    let (sink, metrics) = generic_sink(&server);
    sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap();
    assert_eq!(puts(&server).await.len(), 2);
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "retryable"]).get(), 1);
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "permanent"]).get(), 0);
    assert_eq!(metrics.sink_request_duration.with_label_values(&["default", "generic", "put"]).get_sample_count(), 2);
}

#[tokio::test]
async fn generic_429_retry_after_is_reported_and_honoured() {
    let server = MockServer::start().await;
    answer_once(&server, "PUT", ResponseTemplate::new(429).insert_header("Retry-After", "1")).await;
    answer(&server, "PUT", ResponseTemplate::new(200)).await;

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
    answer_once(&server, "PUT", ResponseTemplate::new(429).insert_header("Retry-After", "1")).await;
    answer(&server, "PUT", ResponseTemplate::new(200)).await;
    let (fast, metrics) = generic_sink(&server);
    assert_eq!(fast.backoff().delay(0, retry_after, 0.0), Duration::from_millis(5));
    fast.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap();
    assert_eq!(puts(&server).await.len(), 2);
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "retryable"]).get(), 1);
}

#[tokio::test]
async fn retry_after_http_date_is_understood() {
    let server = MockServer::start().await;
    let at = std::time::SystemTime::now() + Duration::from_secs(120);
    answer(&server, "PUT", ResponseTemplate::new(503).insert_header("Retry-After", httpdate::fmt_http_date(at).as_str())).await;
    let (sink, _) = generic_sink(&server);
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
    answer(&server, "PUT", ResponseTemplate::new(400).set_body_string("{\"error\": \"field  incident.title\n is invalid\"}")).await;
    let (sink, metrics) = generic_sink(&server);
    let err = sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap_err();
    let SinkError::Permanent(msg) = &err else { panic!("expected permanent, got {err:?}") };
    assert!(msg.contains("400"), "{msg}");
    assert!(msg.contains("incident.title is invalid"), "single-line excerpt: {msg}");
    assert_eq!(puts(&server).await.len(), 1);
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "permanent"]).get(), 1);
}

#[tokio::test]
async fn long_error_bodies_are_cut_short() {
    let server = MockServer::start().await;
    answer(&server, "PUT", ResponseTemplate::new(422).set_body_string("x".repeat(10_000))).await;
    let (sink, _) = generic_sink(&server);
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(matches!(err, SinkError::Permanent(_)));
    assert!(err.to_string().len() < 400, "{}", err.to_string().len());
}

#[tokio::test]
async fn generic_501_is_permanent() {
    let server = MockServer::start().await;
    answer(&server, "PUT", ResponseTemplate::new(501)).await;
    let (sink, _) = generic_sink(&server);
    let err = sink.deliver(&sample_action(ActionKind::Open), &CancellationToken::new()).await.unwrap_err();
    assert!(matches!(&err, SinkError::Permanent(m) if m.contains("501")), "{err:?}");
    assert_eq!(puts(&server).await.len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    answer(&server, "PUT", ResponseTemplate::new(302).insert_header("Location", "https://login.example.com/")).await;
    let (sink, _) = generic_sink(&server);
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(matches!(&err, SinkError::Permanent(m) if m.contains("302")), "{err:?}");
}

#[tokio::test]
async fn generic_reads_records_back_by_key() {
    let server = MockServer::start().await;
    let answers = [
        ("trg-open", json!({ "state": "open" })),
        (
            "trg-taken",
            json!({ "state": "open", "acknowledged": true, "assignee": "Ada Lovelace", "priority": 2, "assignment_group": "NetOps" }),
        ),
        ("trg-closed", json!({ "state": "closed", "priority": 9 })),
        // What a receiver that stores the PUT body returns.
        ("trg-stored", json!({ "incident": { "key": "trg-stored", "state": "resolved", "priority": 4, "assignment_group": "DBA" } })),
        ("trg-bare", json!({})),
    ];
    for (key, answer) in answers {
        Mock::given(method("GET"))
            .and(path(format!("/incidents/{key}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET")).and(path("/incidents/trg-gone")).respond_with(ResponseTemplate::new(404)).mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/incidents/trg-garbage"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>sign in</html>"))
        .mount(&server)
        .await;
    let (sink, _) = generic_sink(&server);
    let stop = CancellationToken::new();
    assert!(sink.can_read_back());
    let rec = super::read_record;
    assert_eq!(sink.read_back("trg-open", &stop).await.unwrap(), rec(Remote::Open, false, None, None, None));
    assert_eq!(sink.read_back("trg-taken", &stop).await.unwrap(), rec(Remote::Open, true, Some("Ada Lovelace"), Some(2), Some("NetOps")));
    assert_eq!(sink.read_back("trg-closed", &stop).await.unwrap(), rec(Remote::Closed, false, None, None, None));
    assert_eq!(sink.read_back("trg-stored", &stop).await.unwrap(), rec(Remote::Closed, false, None, Some(4), Some("DBA")));
    assert_eq!(sink.read_back("trg-bare", &stop).await.unwrap(), rec(Remote::Open, false, None, None, None));
    assert_eq!(sink.read_back("trg-gone", &stop).await.unwrap(), rec(Remote::Missing, false, None, None, None));
    let err = sink.read_back("trg-garbage", &stop).await.unwrap_err();
    assert!(matches!(&err, SinkError::Permanent(m) if m.contains("generic lookup") && m.contains("unusable")), "{err:?}");
}

#[tokio::test]
async fn generic_read_back_of_the_demo_itsm() {
    let itsm = IncidentReceiver::start().await.unwrap();
    let (sink, _) = build(&config(SinkProfile::Generic, &itsm.url()));
    let stop = CancellationToken::new();
    assert_eq!(sink.read_back(KEY, &stop).await.unwrap().state, Remote::Missing);
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    let open = sink.read_back(KEY, &stop).await.unwrap();
    let expected = RemoteRecord {
        state: Remote::Open,
        acknowledged: false,
        assignee: None,
        priority: Some(1),
        group: Some("Network Operations".into()),
        closed_at: None,
    };
    assert_eq!(open, expected);
    sink.apply(&sample_action(ActionKind::Resolve)).await.unwrap();
    assert_eq!(sink.read_back(KEY, &stop).await.unwrap().state, Remote::Closed);
}

#[tokio::test]
async fn generic_sends_the_fields_a_person_owns_with_the_snapshot() {
    // The receiver decides what a person's fields mean there.
    let server = MockServer::start().await;
    answer(&server, "PUT", ResponseTemplate::new(200)).await;
    let (sink, _) = generic_sink(&server);
    sink.apply(&owned_action(ActionKind::Update, HumanOwned { priority: true, ..Default::default() })).await.unwrap();
    let b = body(&puts(&server).await[0]);
    assert_eq!(b["incident"]["human_owned"], json!({ "default": { "priority": true, "assignment": false, "closed": false } }));
    assert_eq!(b["incident"]["priority"], 1, "the snapshot is whole");
}
