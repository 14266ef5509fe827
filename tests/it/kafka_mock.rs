//! The Kafka source against librdkafka's in-process mock cluster: decoding and
//! dead letters, offset storage and restart, backpressure (also across a
//! rebalance while paused), consumer lag and shutdown.
//!
//! The mock cluster is not `Send`: each test keeps it on its own thread and
//! runs its async body on a runtime built there. Waiting is always on a
//! condition or a channel, bounded by a timeout.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use triaged::config::{Format, HumanDuration, KafkaConfig, TopicConfig};
use triaged::kafka::DeadLetter;
use triaged::metrics::Metrics;
use triaged::source::{KafkaSource, OffsetHandle, SourceError, SourceItem};

use crate::support::wait_until;

const TOPIC: &str = "events";
const DLQ: &str = "triaged-dead-letter";
/// Group joins on the mock cluster take about 3 s (initial rebalance delay).
const JOIN: Duration = Duration::from_secs(20);

/// Runs `body` against a fresh mock cluster kept on this thread. `TEST_LOG`
/// (an env filter such as `debug`) prints the source's logs.
fn with_cluster<F, Fut>(topics: &[(&str, i32)], body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
    }
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (t, p) in topics {
        cluster.create_topic(t, *p, 1).expect("create topic");
    }
    let servers = cluster.bootstrap_servers();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        timeout(Duration::from_secs(90), body(servers)).await.expect("test body timed out");
    });
    // Consumers and producers go before the brokers they talk to.
    drop(rt);
    drop(cluster);
}

fn config(servers: &str, group: &str, capacity: usize, dead_letter: Option<&str>) -> KafkaConfig {
    KafkaConfig {
        brokers: servers.into(),
        group_id: group.into(),
        topics: vec![TopicConfig { name: TOPIC.into(), format: Format::Native }],
        dead_letter_topic: dead_letter.map(Into::into),
        channel_capacity: capacity,
        commit_interval: HumanDuration(Duration::from_millis(200)),
        options: test_options(),
        sasl_password: None,
        ssl_key_password: None,
        secrets: Default::default(),
    }
}

/// A short session: the mock cluster makes a member joining a group that
/// another member has just left wait for `session.timeout.ms` - 1 s.
/// `TEST_KAFKA_DEBUG=cgrp,fetch` adds librdkafka debug contexts (see `TEST_LOG`).
fn test_options() -> BTreeMap<String, String> {
    let mut o =
        BTreeMap::from([("session.timeout.ms".to_string(), "3000".to_string()), ("heartbeat.interval.ms".to_string(), "500".to_string())]);
    if let Ok(d) = std::env::var("TEST_KAFKA_DEBUG") {
        o.insert("debug".into(), d);
    }
    o
}

struct Running {
    offsets: OffsetHandle,
    items: mpsc::Receiver<SourceItem>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), SourceError>>,
    metrics: Metrics,
}

fn start(cfg: &KafkaConfig) -> Running {
    let metrics = Metrics::new();
    let source = KafkaSource::new(cfg, metrics.clone()).expect("source");
    let offsets = source.offsets();
    let (tx, items) = mpsc::channel(cfg.channel_capacity);
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, stop.clone()));
    Running { offsets, items, stop, task, metrics }
}

impl Running {
    async fn stop(self) -> (OffsetHandle, mpsc::Receiver<SourceItem>) {
        self.stop.cancel();
        timeout(Duration::from_secs(5), self.task).await.expect("run returns after shutdown").expect("run task").expect("run result");
        (self.offsets, self.items)
    }
}

fn event_json(i: usize) -> Vec<u8> {
    format!(
        r#"{{"source":"mocktest","check":"check-{i}","severity":"major","status":"firing","time":"2024-05-01T12:00:00Z","ci":{{"host":"host-{i}"}}}}"#
    )
    .into_bytes()
}

/// Produces `payloads` to one partition, in order, and waits for every delivery.
async fn produce(servers: &str, topic: &str, partition: i32, payloads: &[Vec<u8>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("linger.ms", "0")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut pending = Vec::with_capacity(payloads.len());
    for p in payloads {
        let record = FutureRecord::<(), [u8]>::to(topic).partition(partition).payload(p.as_slice());
        pending.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueue"));
    }
    for d in pending {
        d.await.expect("delivery reported").map_err(|(e, _)| e).expect("delivered");
    }
}

async fn recv_n(items: &mut mpsc::Receiver<SourceItem>, n: usize, within: Duration) -> Vec<SourceItem> {
    timeout(within, async {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            got.push(items.recv().await.expect("source stopped early"));
        }
        got
    })
    .await
    .unwrap_or_else(|_| panic!("fewer than {n} items within {within:?}"))
}

/// Asserts nothing more arrives for a little while (no duplicates, no extras).
async fn assert_no_more(items: &mut mpsc::Receiver<SourceItem>) {
    if let Ok(Some(extra)) = timeout(Duration::from_millis(300), items.recv()).await {
        panic!("unexpected extra item at {}", extra.origin().expect("a message"));
    }
}

/// The group's committed offset of `TOPIC`/`partition`, read by a fresh consumer.
async fn committed(servers: &str, group: &str, partition: i32) -> Offset {
    let (servers, group) = (servers.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &servers).set("group.id", &group).create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(TOPIC, partition);
        let got = c.committed_offsets(tpl, Duration::from_secs(5)).expect("committed offsets");
        got.find_partition(TOPIC, partition).expect("partition listed").offset()
    })
    .await
    .expect("committed task")
}

/// The `kafka_consumer_lag_messages` samples of the text exposition.
fn lag_lines(metrics: &Metrics) -> Vec<String> {
    metrics.render().lines().filter(|l| l.starts_with("triaged_kafka_consumer_lag_messages{")).map(str::to_owned).collect()
}

fn counter(m: &prometheus::IntCounterVec, label: &str) -> u64 {
    m.with_label_values(&[label]).get()
}

#[test]
fn consumes_decodes_and_dead_letters_in_partition_order() {
    with_cluster(&[(TOPIC, 1), (DLQ, 1)], |servers| async move {
        const N: usize = 20;
        const BAD_AT: usize = 10;
        let malformed = b"{\"source\": this is not JSON".to_vec();
        let payloads: Vec<Vec<u8>> = (0..=N).map(|i| if i == BAD_AT { malformed.clone() } else { event_json(i) }).collect();
        produce(&servers, TOPIC, 0, &payloads).await;

        let cfg = config(&servers, "decode-test", 64, Some(DLQ));
        assert!(DeadLetter::new(&config(&servers, "g", 1, None)).expect("no dead letters").is_none());
        let mut run = start(&cfg);
        let items = recv_n(&mut run.items, N + 1, JOIN).await;
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item.origin().unwrap().topic, TOPIC);
            assert_eq!(item.origin().unwrap().offset, i as i64, "partition order");
            match item {
                SourceItem::Skipped { reason, .. } => {
                    assert_eq!(i, BAD_AT, "only the malformed message is skipped: {reason}");
                }
                SourceItem::Events { origin, events, .. } => {
                    assert_ne!(i, BAD_AT, "the malformed message decoded");
                    assert_eq!(events.len(), 1);
                    assert_eq!(events[0].check, format!("check-{i}"));
                    assert_eq!(events[0].origin.as_ref(), Some(origin), "origin set on the event");
                }
                SourceItem::Partitions(c) => panic!("assignment changes are sent only when ownership is tracked: {c:?}"),
            }
        }
        assert_no_more(&mut run.items).await;
        assert_eq!(counter(&run.metrics.messages_received, TOPIC), N as u64 + 1);
        assert_eq!(counter(&run.metrics.events_decoded, "other"), N as u64);
        assert_eq!(counter(&run.metrics.events_failed, TOPIC), 1);
        assert_eq!(counter(&run.metrics.dead_letters, "decode"), 1);
        run.stop().await;

        // The dead-letter topic holds the raw payload with its origin.
        let reader: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", "dlq-reader")
            .set("enable.auto.commit", "false")
            .create()
            .expect("dlq consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(DLQ, 0, Offset::Beginning).unwrap();
        reader.assign(&tpl).unwrap();
        let msg = timeout(Duration::from_secs(10), reader.recv()).await.expect("dead letter in time").expect("message");
        assert_eq!(msg.payload(), Some(malformed.as_slice()));
        let headers: HashMap<String, String> = msg
            .headers()
            .expect("headers")
            .iter()
            .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
            .collect();
        assert_eq!(headers["triaged-kind"], "decode");
        assert_eq!(headers["triaged-origin-topic"], TOPIC);
        assert_eq!(headers["triaged-origin-partition"], "0");
        assert_eq!(headers["triaged-origin-offset"], BAD_AT.to_string());
        assert!(!headers["triaged-error"].is_empty());
    });
}

#[test]
fn restart_resumes_after_the_stored_offsets() {
    with_cluster(&[(TOPIC, 1)], |servers| async move {
        const N: usize = 20;
        const K: i64 = 7;
        let payloads: Vec<Vec<u8>> = (0..N).map(event_json).collect();
        produce(&servers, TOPIC, 0, &payloads).await;
        let cfg = config(&servers, "restart-test", 64, None);

        let mut run = start(&cfg);
        recv_n(&mut run.items, N, JOIN).await;
        // The core is done with messages 0..K only.
        run.offsets.store(&[(TOPIC.to_string(), 0, K)]).expect("store");
        run.offsets.commit_now().expect("commit");
        let (offsets, items) = run.stop().await;
        drop((offsets, items)); // the consumer closes and leaves the group
        assert_eq!(committed(&servers, "restart-test", 0).await, Offset::Offset(K));

        produce(&servers, TOPIC, 0, &[event_json(N)]).await;
        let mut run = start(&cfg);
        let items = recv_n(&mut run.items, N + 1 - K as usize, JOIN).await;
        let offsets: Vec<i64> = items.iter().map(|i| i.origin().unwrap().offset).collect();
        assert_eq!(offsets, (K..=N as i64).collect::<Vec<_>>(), "exactly K..=N after restart");
        assert_no_more(&mut run.items).await;
        run.stop().await;
    });
}

#[test]
fn stored_offsets_never_go_backwards() {
    with_cluster(&[(TOPIC, 1)], |servers| async move {
        let payloads: Vec<Vec<u8>> = (0..15).map(event_json).collect();
        produce(&servers, TOPIC, 0, &payloads).await;
        let cfg = config(&servers, "monotonic-test", 64, None);
        let mut run = start(&cfg);
        recv_n(&mut run.items, 15, JOIN).await; // assigned and consuming

        run.offsets.store(&[(TOPIC.to_string(), 0, 10)]).expect("store 10");
        run.offsets.store(&[(TOPIC.to_string(), 0, 5)]).expect("store 5 is ignored, not an error");
        // Partitions not assigned here are ignored quietly.
        run.offsets.store(&[("not-a-topic".to_string(), 0, 3), (TOPIC.to_string(), 9, 3)]).expect("unknown partitions are ignored");
        run.offsets.commit_now().expect("commit");
        assert_eq!(committed(&servers, "monotonic-test", 0).await, Offset::Offset(10));

        // A batch with the lower value first still ends at its highest.
        run.offsets.store(&[(TOPIC.to_string(), 0, 12), (TOPIC.to_string(), 0, 11)]).expect("store 12");
        run.offsets.commit_now().expect("commit");
        assert_eq!(committed(&servers, "monotonic-test", 0).await, Offset::Offset(12));
        run.stop().await;
    });
}

#[test]
fn backpressure_pauses_partitions_and_loses_nothing() {
    with_cluster(&[(TOPIC, 2)], |servers| async move {
        const PER_PARTITION: usize = 100;
        let payloads: Vec<Vec<u8>> = (0..PER_PARTITION).map(event_json).collect();
        produce(&servers, TOPIC, 0, &payloads).await;
        produce(&servers, TOPIC, 1, &payloads).await;
        let cfg = config(&servers, "backpressure-test", 1, None);
        let mut run = start(&cfg);

        let mut got: Vec<SourceItem> = recv_n(&mut run.items, 1, JOIN).await;
        let paused = run.metrics.paused_partitions.clone();
        // Several slow phases: each time the reader stalls, every assigned
        // partition is paused; then a burst is drained.
        for _ in 0..4 {
            wait_until("both partitions paused", Duration::from_secs(10), || paused.get() == 2).await;
            got.extend(recv_n(&mut run.items, 25, Duration::from_secs(10)).await);
        }
        let rest = 2 * PER_PARTITION - got.len();
        got.extend(recv_n(&mut run.items, rest, Duration::from_secs(30)).await);
        assert_no_more(&mut run.items).await;
        wait_until("partitions resumed", Duration::from_secs(10), || paused.get() == 0).await;

        let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for item in &got {
            assert!(matches!(item, SourceItem::Events { .. }));
            by_partition.entry(item.origin().unwrap().partition).or_default().push(item.origin().unwrap().offset);
        }
        let all: Vec<i64> = (0..PER_PARTITION as i64).collect();
        assert_eq!(by_partition.get(&0), Some(&all), "partition 0: every offset once, in order");
        assert_eq!(by_partition.get(&1), Some(&all), "partition 1: every offset once, in order");
        assert_eq!(counter(&run.metrics.messages_received, TOPIC), 2 * PER_PARTITION as u64);
        // Consumer lag is measured every 5 s: once everything is handed over,
        // both partitions report 0.
        let metrics = run.metrics.clone();
        wait_until("consumer lag 0 on both partitions", Duration::from_secs(15), || {
            lag_lines(&metrics).iter().filter(|l| l.ends_with(" 0")).count() == 2
        })
        .await;
        run.stop().await;
    });
}

#[test]
fn shutdown_while_blocked_on_a_full_channel() {
    with_cluster(&[(TOPIC, 1)], |servers| async move {
        let payloads: Vec<Vec<u8>> = (0..10).map(event_json).collect();
        produce(&servers, TOPIC, 0, &payloads).await;
        let cfg = config(&servers, "shutdown-test", 1, None);
        let run = start(&cfg);
        let paused = run.metrics.paused_partitions.clone();
        wait_until("the source blocked and paused", JOIN, || paused.get() == 1).await;

        let started = Instant::now();
        run.stop.cancel();
        let result = timeout(Duration::from_secs(2), run.task).await.expect("run returns within 2 s");
        result.expect("run task").expect("run result");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Only what fit in the channel was handed over.
        let mut items = run.items;
        assert_eq!(items.recv().await.map(|i| i.origin().unwrap().offset), Some(0));
        assert!(items.recv().await.is_none(), "channel closed after the source stopped");
    });
}

#[test]
fn rebalance_while_paused_repauses_and_leaves_no_gaps() {
    with_cluster(&[(TOPIC, 2)], |servers| async move {
        const PER_PARTITION: i64 = 50;
        let payloads: Vec<Vec<u8>> = (0..PER_PARTITION as usize).map(event_json).collect();
        produce(&servers, TOPIC, 0, &payloads).await;
        produce(&servers, TOPIC, 1, &payloads).await;
        let cfg = config(&servers, "rebalance-test", 1, None);

        // A owns both partitions and blocks on its full channel, paused.
        let mut a = start(&cfg);
        let mut seen_a: Vec<SourceItem> = recv_n(&mut a.items, 1, JOIN).await;
        let paused_a = a.metrics.paused_partitions.clone();
        wait_until("A paused", Duration::from_secs(10), || paused_a.get() == 2).await;

        // B joins: A, still waiting for room, keeps polling, takes part in the
        // rebalance and pauses its new assignment too.
        let mut b = start(&cfg);
        wait_until("A re-paused with one partition", JOIN, || paused_a.get() == 1).await;

        // Drain both until every offset of both partitions was handed over.
        let mut seen_b: Vec<SourceItem> = Vec::new();
        let covered = |a: &[SourceItem], b: &[SourceItem]| {
            let mut offsets: BTreeMap<i32, std::collections::BTreeSet<i64>> = BTreeMap::new();
            for i in a.iter().chain(b) {
                offsets.entry(i.origin().unwrap().partition).or_default().insert(i.origin().unwrap().offset);
            }
            (0..2).all(|p| offsets.get(&p).map_or(0, |s| s.len()) == PER_PARTITION as usize)
        };
        timeout(Duration::from_secs(30), async {
            while !covered(&seen_a, &seen_b) {
                tokio::select! {
                    Some(i) = a.items.recv() => seen_a.push(i),
                    Some(i) = b.items.recv() => seen_b.push(i),
                }
            }
        })
        .await
        .expect("every offset handed over by A or B");

        // Within one consumer, a partition moves on one offset at a time; a
        // step back is a replay from the committed offset after the
        // rebalance (at-least-once), never a skip forward.
        for (name, seen) in [("A", &seen_a), ("B", &seen_b)] {
            let mut last: HashMap<i32, i64> = HashMap::new();
            for item in seen.iter() {
                let (p, o) = (item.origin().unwrap().partition, item.origin().unwrap().offset);
                if let Some(prev) = last.get(&p) {
                    assert!(o == prev + 1 || o <= *prev, "{name}: partition {p} jumped from {prev} to {o}");
                }
                last.insert(p, o);
            }
        }
        a.stop().await;
        b.stop().await;
    });
}
