//! The sink's rate limit against wiremock: a burst answered 429 with
//! Retry-After loses nothing (the retry path and the bucket together),
//! PagerDuty's default of 120 a minute, and a shutdown during the wait for
//! a token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use triaged::config::{HumanDuration, RateLimitConfig, RetryConfig, SinkProfile};
use triaged::incident::{Action, ActionKind, SinkError};

use super::{body, build, config, mount_enqueue, pd_config, sample_action, secret_file};

fn action(id: u64, kind: ActionKind, key: &str) -> Action {
    let mut a = sample_action(kind);
    a.id = id;
    a.incident.key = key.into();
    a.incident.event_count = id;
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_loses_nothing_and_every_open_and_resolve_arrives() {
    const INCIDENTS: u64 = 6;
    const REFUSED: u64 = 6;
    let server = MockServer::start().await;
    // The ITSM's own limit: the first requests of the burst get 429.
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(REFUSED)
        .mount(&server)
        .await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let mut cfg = config(SinkProfile::Generic, &server.uri());
    cfg.retry =
        RetryConfig { initial_backoff: HumanDuration(Duration::from_millis(10)), max_backoff: HumanDuration(Duration::from_secs(2)) };
    cfg.rate_limit = RateLimitConfig { per_minute: Some(600), burst: Some(5) };
    let (sink, metrics) = build(&cfg);
    let sink = Arc::new(sink);
    let stop = CancellationToken::new();
    let started = Instant::now();
    // Three workers sharing the sink, two incidents each: open, update, resolve.
    let mut workers = Vec::new();
    for w in 0..3u64 {
        let (sink, stop) = (sink.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            for i in [2 * w, 2 * w + 1] {
                let key = format!("trg-rate-{i:02}");
                for (n, kind) in [ActionKind::Open, ActionKind::Update, ActionKind::Resolve].into_iter().enumerate() {
                    sink.deliver(&action(10 * i + n as u64, kind, &key), &stop).await.expect("delivered in the end");
                }
            }
        }));
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w).await.expect("the storm is over within a minute").unwrap();
    }
    let elapsed = started.elapsed();

    let requests = server.received_requests().await.unwrap();
    let actions = INCIDENTS * 3;
    assert_eq!(requests.len() as u64, actions + REFUSED, "each refused request was sent again, nothing else");
    // What each incident's record went through, answered or not.
    let mut seen: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in &requests {
        let b = body(r);
        let key = b["incident"]["key"].as_str().unwrap().to_owned();
        seen.entry(key).or_default().push((b["action"].as_str().unwrap().into(), b["incident"]["state"].as_str().unwrap().into()));
    }
    assert_eq!(seen.len() as u64, INCIDENTS);
    for (key, got) in &seen {
        let kinds: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        let mut deduped = kinds.clone();
        deduped.dedup();
        assert_eq!(deduped, ["open", "update", "resolve"], "{key}: in order, a refused one again: {kinds:?}");
        assert_eq!(got.last().unwrap().1, "resolved", "{key}");
    }
    assert_eq!(metrics.sink_errors.with_label_values(&["default", "retryable"]).get(), REFUSED);
    // Every request took a token; past the burst of 5 they came 10 a second.
    assert_eq!(metrics.sink_rate_limited.with_label_values(&["default"]).get_sample_count(), actions + REFUSED);
    let paced = Duration::from_millis(100 * (actions + REFUSED - 5) - 100);
    assert!(elapsed >= paced, "{elapsed:?} < {paced:?}");
    assert!(metrics.sink_rate_limited.with_label_values(&["default"]).get_sample_sum() > 0.0);
    println!(
        "429 storm: {actions} actions, {} requests ({REFUSED} refused and sent again) in {elapsed:?}, {:.2}s waited for tokens",
        requests.len(),
        metrics.sink_rate_limited.with_label_values(&["default"]).get_sample_sum()
    );
}

#[tokio::test]
async fn pagerduty_is_held_to_120_a_minute_with_bursts_of_20_by_default() {
    let (_dir, rk) = secret_file("rk-rate");
    let server = MockServer::start().await;
    mount_enqueue(&server).await;
    let cfg = pd_config(&server, &rk);
    assert_eq!(cfg.rate_limit, RateLimitConfig::default(), "nothing configured");
    let (sink, metrics) = build(&cfg);
    let stop = CancellationToken::new();
    let started = Instant::now();
    for id in 0..22 {
        sink.deliver(&action(id, ActionKind::Update, "trg-pd-rate"), &stop).await.unwrap();
    }
    let elapsed = started.elapsed();
    // 20 at once, then one every 500 ms.
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert_eq!(metrics.sink_rate_limited.with_label_values(&["default"]).get_sample_count(), 22);
    assert!(
        metrics.sink_rate_limited.with_label_values(&["default"]).get_sample_sum() >= 0.95,
        "{}",
        metrics.sink_rate_limited.with_label_values(&["default"]).get_sample_sum()
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 22);
}

#[tokio::test]
async fn other_profiles_are_not_limited_unless_configured() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let (sink, metrics) = build(&config(SinkProfile::Generic, &server.uri()));
    let stop = CancellationToken::new();
    for id in 0..40 {
        sink.deliver(&action(id, ActionKind::Update, "trg-free"), &stop).await.unwrap();
    }
    assert_eq!(metrics.sink_rate_limited.with_label_values(&["default"]).get_sample_count(), 0, "no bucket, no wait");
}

// One thread: the spawned delivery runs up to its wait for a token
// (nothing before it waits on the network) when the test yields.
#[tokio::test]
async fn a_shutdown_ends_the_wait_for_a_token() {
    let server = MockServer::start().await;
    Mock::given(method("PUT")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let mut cfg = config(SinkProfile::Generic, &server.uri());
    // One a minute: the second action would wait about a minute.
    cfg.rate_limit = RateLimitConfig { per_minute: Some(1), burst: Some(1) };
    let (sink, _) = build(&cfg);
    let stop = CancellationToken::new();
    sink.deliver(&action(1, ActionKind::Open, "trg-stop"), &stop).await.unwrap();
    let waiting = {
        let (sink, stop) = (sink.clone(), stop.clone());
        tokio::spawn(async move { sink.deliver(&action(2, ActionKind::Resolve, "trg-stop"), &stop).await })
    };
    tokio::task::yield_now().await;
    let started = Instant::now();
    stop.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("returns promptly").unwrap();
    assert!(matches!(r, Err(SinkError::Cancelled)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.received_requests().await.unwrap().len(), 1, "the resolve waits for the restart");
}

/// PagerDuty limits events per routing key: each on-call rotation's key has
/// its own bucket, so one busy rotation does not hold back another's pages;
/// and the key sent is the rotation's (or the default for any other).
#[tokio::test]
async fn pagerduty_has_one_bucket_per_routing_key_chosen_by_rotation() {
    let (_d1, default_key) = secret_file("rk-default");
    let (_d2, dba_key) = secret_file("rk-dba");
    let server = MockServer::start().await;
    mount_enqueue(&server).await;
    let mut cfg = pd_config(&server, &default_key);
    cfg.routing_keys = BTreeMap::from([("dba-oncall".to_string(), super::file_secret(&dba_key))]);
    cfg.rate_limit = RateLimitConfig { per_minute: Some(1), burst: Some(1) };
    let (sink, _) = build(&cfg);
    let stop = CancellationToken::new();
    let on = |id, oncall: &str| {
        let mut a = action(id, ActionKind::Open, &format!("trg-pd-key-{id}"));
        a.incident.oncall = Some(oncall.into());
        a
    };
    let started = Instant::now();
    sink.deliver(&on(1, "dba-oncall"), &stop).await.unwrap();
    // The default key's bucket is still full: no wait for the minute.
    tokio::time::timeout(Duration::from_secs(5), sink.deliver(&on(2, "network-oncall"), &stop))
        .await
        .expect("another routing key is not held by the first one's bucket")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let keys: Vec<_> = server.received_requests().await.unwrap().iter().map(|r| body(r)["routing_key"].clone()).collect();
    assert_eq!(keys, ["rk-dba", "rk-default"]);
    // The dba key's bucket is empty now: its next event waits.
    let again = tokio::time::timeout(Duration::from_millis(300), sink.deliver(&on(3, "dba-oncall"), &stop)).await;
    assert!(again.is_err(), "the same key waits for its bucket");
}
