//! Broker faults on the librdkafka mock cluster, on a running daemon: failed
//! offset commits, added latency and the broker down then up never move the
//! committed offsets backwards and lose nothing; SIGTERM's path with the
//! broker unreachable, or during a rebalance, ends within the shutdown
//! deadline; a consumer fenced
//! for good stops the daemon with a failure instead of leaving it idle.

use crate::support::{self, in_process};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use triaged::config::HumanDuration;
use triaged::incident::ActionKind;
use triaged::topology::Snapshot;
use triaged_testkit::itsm::{latest, opened_keys};

const PARTITIONS: i32 = 3;
const GROUP: &str = "triaged-demo";

/// Produces `messages`; returns per partition the offset after the last one.
async fn produce(producer: &FutureProducer, messages: &[(String, Vec<u8>)], ends: &mut BTreeMap<i32, i64>) {
    for (key, payload) in messages {
        let delivered =
            producer.send(FutureRecord::to("events").key(key).payload(payload), Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        let end = ends.entry(delivered.partition).or_default();
        *end = (*end).max(delivered.offset + 1);
    }
}

type Readings = Arc<Mutex<Vec<BTreeMap<i32, i64>>>>;

/// Reads the group's committed offsets every 50 ms into `readings` until
/// `stop`; failed reads (broker down) are skipped.
fn sample_committed(brokers: String, readings: Readings, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", GROUP).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition("events", p);
        }
        while !stop.load(Ordering::Relaxed) {
            if let Ok(c) = consumer.committed_offsets(tpl.clone(), Duration::from_secs(1)) {
                let reading: BTreeMap<i32, i64> = (0..PARTITIONS)
                    .filter_map(|p| match c.find_partition("events", p)?.offset() {
                        Offset::Offset(o) => Some((p, o)),
                        _ => None,
                    })
                    .collect();
                readings.lock().unwrap().push(reading);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn storm() -> triaged::demo::Storm {
    let cmdb = Snapshot::load(&crate::repo().join("config/cmdb.yaml")).unwrap();
    triaged::demo::storm(&cmdb, 2, chrono::Utc::now()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_faults_never_move_committed_offsets_backwards() {
    let d = in_process::start(crate::repo(), PARTITIONS, |cfg| {
        cfg.kafka.commit_interval = HumanDuration(Duration::from_millis(100));
    })
    .await;
    let minute = Duration::from_secs(60);
    let storm = storm();
    let mut ends = BTreeMap::new();
    let stop = Arc::new(AtomicBool::new(false));
    let readings = Readings::default();
    let sampler = sample_committed(d.brokers(), readings.clone(), stop.clone());

    produce(&d.producer, &storm.firing, &mut ends).await;
    d.receiver.wait_for(minute, |log| opened_keys(log).len() == 2).await.expect("both incidents open");

    // Offset commits fail, the broker slows down, then goes away for a while.
    // (The durations are the faults' own; nothing waits on them to synchronise.)
    let cluster = d.cluster();
    let timed_out = RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT;
    let no_coordinator = RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE;
    cluster.request_errors(RDKafkaApiKey::OffsetCommit, &[timed_out, timed_out, no_coordinator, timed_out, no_coordinator]);
    cluster.broker_round_trip_time(-1, Duration::from_millis(300)).unwrap();
    produce(&d.producer, &storm.recovery[..storm.recovery.len() / 2], &mut ends).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_round_trip_time(-1, Duration::ZERO).unwrap();
    cluster.broker_down(-1).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker_up(-1).unwrap();
    produce(&d.producer, &storm.recovery[storm.recovery.len() / 2..], &mut ends).await;

    let log = d
        .receiver
        .wait_for(minute, |log| latest(log).iter().filter(|r| r.kind == ActionKind::Resolve).count() == 2)
        .await
        .unwrap_or_else(|log| panic!("not resolved: {:?}", latest(&log).iter().map(|r| (&r.incident.key, r.kind)).collect::<Vec<_>>()));
    // The incidents close after the reopen window; then every offset is
    // stored and committed.
    let deadline = Instant::now() + minute;
    let reached = |r: &BTreeMap<i32, i64>| ends.iter().all(|(p, e)| r.get(p) == Some(e));
    while !readings.lock().unwrap().last().is_some_and(reached) {
        assert!(Instant::now() < deadline, "offsets not committed to {ends:?}: last {:?}", readings.lock().unwrap().last());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    let readings = readings.lock().unwrap().clone();
    for pair in readings.windows(2) {
        for (p, before) in &pair[0] {
            let after = pair[1].get(p).copied().unwrap_or(-1);
            assert!(after >= *before, "partition {p}: committed offset went from {before} to {after}");
        }
    }
    let opens: Vec<usize> =
        opened_keys(&log).iter().map(|k| log.iter().filter(|r| r.kind == ActionKind::Open && &r.incident.key == k).count()).collect();
    assert_eq!(opens, [1, 1], "each incident opened once");
    assert!(latest(&log).iter().all(|r| r.incident.members.iter().all(|m| m.status == triaged::event::Status::Resolved)));
    eprintln!(
        "broker faults: {} events, {} incidents, opens per incident {opens:?}, {} committed-offset readings, all monotonic, peak RSS {:.0} MiB (test process)",
        storm.firing.len() + storm.recovery.len(),
        opened_keys(&log).len(),
        readings.len(),
        triaged_testkit::rss::rss_mib().1
    );
    assert!(d.stop().await.clean_shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_broker_down_stops_within_the_deadline() {
    // Stopping the source waits out its lag query (about 0.8 s with the
    // broker gone), and the consumer's close gets at least 1 s, all of which
    // it takes when it has checkpointed offsets to commit and no broker.
    let deadline = Duration::from_secs(3);
    let d = in_process::start(crate::repo(), PARTITIONS, |cfg| {
        cfg.shutdown.deadline = HumanDuration(deadline);
    })
    .await;
    let storm = storm();
    produce(&d.producer, &storm.firing, &mut BTreeMap::new()).await;
    d.receiver.wait_for(Duration::from_secs(60), |log| opened_keys(log).len() == 2).await.expect("both incidents open");

    d.cluster().broker_down(-1).unwrap();
    let (summary, took) = tokio::time::timeout(deadline * 2, d.stop_timed()).await.expect("shutdown hung with the broker down");
    eprintln!("shutdown with the broker down took {took:?}");
    assert!(took < deadline, "shutdown took {took:?}, the deadline is {deadline:?}");
    assert!(summary.clean_shutdown, "nothing was in flight at the sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_consumer_error_stops_the_daemon_with_a_failure() {
    let d = in_process::start(crate::repo(), 1, |_| {}).await;
    let storm = storm();
    produce(&d.producer, &storm.firing[..1], &mut BTreeMap::new()).await;
    let handled = d.running.metrics.messages_handled.clone();
    support::wait_until("the daemon consumed", Duration::from_secs(60), || handled.get() >= 1).await;
    // librdkafka treats a fenced group instance as fatal: the consumer is done for.
    d.cluster().request_errors(RDKafkaApiKey::Heartbeat, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID]);
    let summary = d.stopped_by_itself(Duration::from_secs(60)).await;
    let failure = summary.failure.expect("a failure is reported");
    assert!(failure.contains("event source ended"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_rebalance_stops_within_the_deadline() {
    let deadline = Duration::from_secs(3);
    let d = in_process::start(crate::repo(), PARTITIONS, |cfg| {
        cfg.shutdown.deadline = HumanDuration(deadline);
        cfg.kafka.options.insert("session.timeout.ms".into(), "6000".into());
        cfg.kafka.options.insert("heartbeat.interval.ms".into(), "500".into());
    })
    .await;
    let storm = storm();
    produce(&d.producer, &storm.firing, &mut BTreeMap::new()).await;
    d.receiver.wait_for(Duration::from_secs(60), |log| opened_keys(log).len() == 2).await.expect("both incidents open");
    // The storm's offsets are committed (after the checkpoint that holds
    // them, at an auto-commit): what the second member must not read again.
    let brokers = d.brokers();
    support::wait_until("the storm committed", Duration::from_secs(60), || {
        support::process::committed_to_end(&brokers, "triaged-demo", "events", PARTITIONS)
    })
    .await;

    // A second member joins: the group starts rebalancing, and the first
    // member is told to stop while that is under way.
    let (second, second_stop) = d.second_member().await;
    let keys = opened_keys(&d.receiver.log());
    let firing = storm.firing.len() as u64;
    let (summary, took, remains) = d.stop_first().await;
    eprintln!("shutdown during a rebalance took {took:?}");
    assert!(took < deadline, "shutdown took {took:?}, the deadline is {deadline:?}");
    assert!(summary.clean_shutdown);

    // The second member takes every partition over with the state the first
    // checkpointed before its revoke: the same incidents, open, without
    // reading the storm again or sending their opens a second time.
    let open = second.metrics.open_incidents.clone();
    let end = Instant::now() + Duration::from_secs(60);
    while ["P1", "P2", "P3", "P4", "P5"].iter().map(|p| open.with_label_values(&[p]).get()).sum::<i64>() < 2 {
        assert!(Instant::now() < end, "the second member does not hold the two incidents open\n{:?}", remains.receiver.log().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reread = second.metrics.messages_handled.get();
    assert!(reread < firing, "the second member read {reread} of {firing} messages again");
    let log = remains.receiver.log();
    assert_eq!(opened_keys(&log), keys, "the same incident keys");
    assert_eq!(log.iter().filter(|r| r.kind == ActionKind::Open).count(), 2, "each incident opened once");
    second_stop.cancel();
    assert!(second.done.await.unwrap().clean_shutdown);
    drop(remains);
}
