//! Looking incidents up by key (`RestSink::look_up`) in each profile, and
//! the profiles that cannot read a record back.

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use triaged::config::SinkProfile;
use triaged::metrics::Metrics;
use triaged::sink::{Remote, RemoteRecord, RestSink};

use super::{build, config, pd_config, secret_file};

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

#[tokio::test]
async fn pagerduty_and_event_management_do_not_read_back() {
    let server = MockServer::start().await;
    let stop = CancellationToken::new();
    let (_dir, rk) = secret_file("R0UTINGKEY0123456789\n");
    let (pagerduty, _) = build(&pd_config(&server, &rk));
    let (em, _) = build(&config(SinkProfile::ServicenowEm, &server.uri()));
    for sink in [pagerduty, em] {
        assert!(!sink.can_read_back(), "{sink}");
        assert_eq!(sink.read_back("trg-open", &stop).await.unwrap(), RemoteRecord::default(), "{sink}");
    }
    assert!(server.received_requests().await.unwrap().is_empty(), "nothing asked");
}
