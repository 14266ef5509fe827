//! Delivery beyond one reply: timeouts, refused connections, shutdown during
//! a backoff or a request, and the backoff policy built from the config.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use triaged::config::{HumanDuration, RetryConfig, SinkProfile};
use triaged::incident::{ActionKind, SinkError};
use triaged::sink::retry::Backoff;

use super::{answer, build, config, generic_sink, puts, sample_action, spawn_deliver};

#[tokio::test]
async fn timeout_after_sending_may_have_been_applied() {
    let server = MockServer::start().await;
    answer(&server, "PUT", ResponseTemplate::new(200).set_delay(Duration::from_secs(3))).await;
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
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "retryable"]).get(), 1);
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
    answer(&server, "PUT", ResponseTemplate::new(503)).await;
    let mut cfg = config(SinkProfile::Generic, &server.uri());
    // A minute of backoff: only the shutdown can end the wait in time.
    cfg.retry =
        RetryConfig { initial_backoff: HumanDuration(Duration::from_secs(60)), max_backoff: HumanDuration(Duration::from_secs(60)) };
    let (sink, metrics) = build(&cfg);
    let shutdown = CancellationToken::new();
    let task = spawn_deliver(&sink, &shutdown);
    // The failed first attempt is counted right before the backoff wait
    // begins (no await point in between): wait for that, without sleeping.
    let retryable = metrics.sink_errors.with_label_values(&["default", "retryable"]);
    while retryable.get() == 0 {
        assert!(!task.is_finished(), "deliver ended before failing once");
        tokio::task::yield_now().await;
    }
    let started = std::time::Instant::now();
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), task).await.expect("deliver returns promptly after shutdown").unwrap();
    assert!(matches!(result, Err(SinkError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(puts(&server).await.len(), 1);
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "cancelled"]).get(), 1);
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
    let task = spawn_deliver(&sink, &shutdown);
    arrived.recv().await.expect("the request reaches the server");
    shutdown.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), task).await.expect("deliver returns promptly after shutdown").unwrap();
    assert!(matches!(r, Err(SinkError::Cancelled)), "{r:?}");
}

#[tokio::test]
async fn shutdown_before_delivery_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&server).await;
    let (sink, _) = generic_sink(&server);
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let r = sink.deliver(&sample_action(ActionKind::Open), &shutdown).await;
    assert!(matches!(r, Err(SinkError::Cancelled)), "{r:?}");
    server.verify().await;
}

#[test]
fn backoff_is_built_from_the_retry_config() {
    let (sink, _) = build(&config(SinkProfile::Generic, "http://127.0.0.1:9"));
    assert_eq!(*sink.backoff(), Backoff::from_bounds(Duration::from_millis(1), Duration::from_millis(5)));
}
