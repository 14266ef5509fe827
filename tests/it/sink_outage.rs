//! The ITSM in trouble, on a running daemon (mock cluster, in-process ITSM):
//! a sustained 503 opens the sink's circuit breaker, the core stops reading,
//! the Kafka partitions pause, the ITSM is not hammered, and once it heals
//! every incident arrives exactly once; a 429 with `Retry-After` is waited out;
//! requests the ITSM applied but answered too late are repeated under the
//! same key, never as a second incident.

use crate::support::{self, in_process};

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rdkafka::producer::{FutureProducer, FutureRecord};

use triaged::config::{Config, HumanDuration};
use triaged::incident::{ActionKind, IncidentState};
use triaged::topology::Snapshot;
use triaged_testkit::itsm::{latest, opened_keys, Received};

const THRESHOLD: u32 = 3;
const CONCURRENCY: usize = 4;

fn tweak(cfg: &mut Config) {
    cfg.sink.as_mut().unwrap().concurrency = CONCURRENCY;
    cfg.sink.as_mut().unwrap().circuit.failure_threshold = THRESHOLD;
    cfg.sink.as_mut().unwrap().circuit.open_for = HumanDuration(Duration::from_millis(500));
    // Without the breaker, workers would retry every 100 ms at most.
    cfg.sink.as_mut().unwrap().retry.initial_backoff = HumanDuration(Duration::from_millis(20));
    cfg.sink.as_mut().unwrap().retry.max_backoff = HumanDuration(Duration::from_millis(100));
    // A small channel, so the source pauses its partitions soon after the core stops reading.
    cfg.kafka.channel_capacity = 4;
}

async fn produce(producer: &FutureProducer, messages: &[(String, Vec<u8>)]) {
    for (key, payload) in messages {
        producer.send(FutureRecord::to("events").key(key).payload(payload), Duration::from_secs(5)).await.map_err(|(e, _)| e).unwrap();
    }
}

fn opens_per_key(log: &[Received]) -> Vec<(String, usize)> {
    opened_keys(log)
        .into_iter()
        .map(|k| (k.clone(), log.iter().filter(|r| r.kind == ActionKind::Open && r.incident.key == k).count()))
        .collect()
}

fn storm() -> triaged::demo::Storm {
    let root = crate::repo();
    let cmdb = Snapshot::load(&root.join("config/cmdb.yaml")).unwrap();
    triaged::demo::storm(&cmdb, 2, chrono::Utc::now()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_503_opens_the_circuit_pauses_consumption_and_loses_nothing() {
    let d = in_process::start(crate::repo(), 2, tweak).await;
    let (producer, receiver, m) = (&d.producer, &d.receiver, &d.running.metrics);
    let minute = Duration::from_secs(60);
    let storm = storm();
    let firing = storm.firing.len() as u64;

    receiver.fail_with(StatusCode::SERVICE_UNAVAILABLE, None);
    produce(producer, &storm.firing).await;
    support::wait_until("circuit opened", minute, || m.sink_circuit_opened.with_label_values(&["default"]).get() >= 1).await;
    // Events that arrive during the outage wait in Kafka: the core stops
    // reading, its channel fills and the source pauses the partitions.
    produce(producer, &storm.recovery).await;
    support::wait_until("partitions paused", minute, || m.paused_partitions.get() > 0).await;
    let handled = m.messages_handled.get();
    assert!(handled < firing + storm.recovery.len() as u64);
    // Two failed probes later the core has read nothing more.
    let opened = m.sink_circuit_opened.with_label_values(&["default"]).get();
    support::wait_until("two failed probes", minute, || m.sink_circuit_opened.with_label_values(&["default"]).get() >= opened + 2).await;
    assert_eq!(m.messages_handled.get(), handled, "no event read while the circuit is open");
    assert_ne!(m.sink_circuit_state.with_label_values(&["default"]).get(), 0);
    // What reached the ITSM: the failures that opened the circuit, requests
    // already out on the other workers, and one probe per reopening (plus
    // one that may be out right now).
    let rejected = receiver.rejected();
    let opened = m.sink_circuit_opened.with_label_values(&["default"]).get();
    let bound = u64::from(THRESHOLD) + CONCURRENCY as u64 + opened;
    assert!(rejected <= bound, "{rejected} requests during the outage, at most {bound} expected");
    assert!(receiver.log().is_empty());

    receiver.heal();
    let all = firing + storm.recovery.len() as u64;
    let log = receiver
        .wait_for(minute, |log| {
            let keys = opened_keys(log);
            keys.len() == 2 && latest(log).iter().all(|r| r.kind == ActionKind::Resolve)
        })
        .await
        .unwrap_or_else(|log| panic!("after healing: {:?}", latest(&log).iter().map(|r| (&r.incident.key, r.kind)).collect::<Vec<_>>()));
    assert_eq!(m.messages_handled.get(), all);
    assert!(opens_per_key(&log).iter().all(|(_, n)| *n == 1), "one open per incident: {:?}", opens_per_key(&log));
    let last = latest(&log);
    let storm_inc = last.iter().find(|r| r.incident.root_cause.as_ref().is_some_and(|c| c.id == storm.root)).expect("the storm incident");
    assert_eq!(storm_inc.incident.members.len(), storm.downstream + 1);
    assert!(last.iter().all(|r| r.incident.state == IncidentState::Resolved));
    assert_eq!(m.sink_circuit_state.with_label_values(&["default"]).get(), 0);
    support::wait_until("partitions resumed", minute, || m.paused_partitions.get() == 0).await;
    eprintln!(
        "sustained 503: {all} events, 2 incidents expected, {} created, {} opens, {rejected} requests refused during the outage, {} circuit openings, peak RSS {:.0} MiB (test process)",
        opened_keys(&log).len(),
        log.iter().filter(|r| r.kind == ActionKind::Open).count(),
        m.sink_circuit_opened.with_label_values(&["default"]).get(),
        triaged_testkit::rss::rss_mib().1
    );

    assert!(d.stop().await.clean_shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_with_retry_after_is_waited_out() {
    let d = in_process::start(crate::repo(), 1, |cfg| {
        tweak(cfg);
        cfg.sink.as_mut().unwrap().retry.max_backoff = HumanDuration(Duration::from_secs(5));
    })
    .await;
    let (producer, receiver, m) = (&d.producer, &d.receiver, &d.running.metrics);
    let minute = Duration::from_secs(60);
    let storm = storm();

    receiver.fail_with(StatusCode::TOO_MANY_REQUESTS, Some(1));
    produce(producer, &storm.firing).await;
    // An incident refused twice has retried once. (The breaker may open
    // before the core has read the other fault: it is read after healing.)
    let refused_twice = || {
        let r = receiver.rejections();
        r.iter().any(|(k, _)| r.iter().filter(|(rk, _)| rk == k).count() >= 2)
    };
    support::wait_until("an incident refused twice", minute, refused_twice).await;
    receiver.heal();
    let log = receiver.wait_for(minute, |log| opened_keys(log).len() == 2).await.expect("both incidents open after the 429s");
    // Every retry of an incident waited at least the second the ITSM asked for.
    let rejections = receiver.rejections();
    assert!(rejections.len() >= 2);
    for (key, _) in &rejections {
        let times: Vec<Instant> = rejections.iter().filter(|(k, _)| k == key).map(|(_, t)| *t).collect();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_secs(1), "{key} retried {gap:?} after a 429 with Retry-After: 1");
        }
    }
    assert!(opens_per_key(&log).iter().all(|(_, n)| *n == 1), "{:?}", opens_per_key(&log));
    assert!(m.sink_errors.with_label_values(&["default", "retryable"]).get() >= 2);

    assert!(d.stop().await.clean_shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_the_itsm_applied_the_request_duplicates_no_incident() {
    let d = in_process::start(crate::repo(), 2, |cfg| {
        tweak(cfg);
        cfg.sink.as_mut().unwrap().timeout = HumanDuration(Duration::from_millis(300));
    })
    .await;
    let (producer, receiver, m) = (&d.producer, &d.receiver, &d.running.metrics);
    let minute = Duration::from_secs(60);
    let storm = storm();

    // Every request is applied, and answered after the sink gave up on it.
    receiver.answer_late(Duration::from_secs(2));
    produce(producer, &storm.firing).await;
    let timed_out = || m.sink_errors.with_label_values(&["default", "retryable"]).get() >= 3;
    support::wait_until("three timed-out requests", minute, timed_out).await;
    receiver.heal();
    receiver.wait_for(minute, |log| opened_keys(log).len() == 2).await.expect("both incidents open");
    produce(producer, &storm.recovery).await;
    let log = receiver
        .wait_for(minute, |log| latest(log).iter().filter(|r| r.incident.state == IncidentState::Resolved).count() == 2)
        .await
        .expect("both incidents resolved");

    // Retried opens are the same PUT to the same key: one incident each.
    assert_eq!(opened_keys(&log).len(), 2, "{:?}", opens_per_key(&log));
    assert!(latest(&log).iter().all(|r| r.incident.state == IncidentState::Resolved));
    let repeats: usize = opens_per_key(&log).iter().map(|(_, n)| n - 1).sum();
    let (_, peak) = triaged_testkit::rss::rss_mib_of(std::process::id());
    eprintln!(
        "timeout after create: {} events, 2 incidents expected, {} created, {} open requests repeated after a timeout (same key, same record), peak RSS {peak:.0} MiB (test process)",
        storm.firing.len() + storm.recovery.len(),
        opened_keys(&log).len(),
        repeats
    );
    assert!(d.stop().await.clean_shutdown);
}
