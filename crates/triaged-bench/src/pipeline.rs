//! Kafka-side measurements on the librdkafka mock cluster: the raw consume
//! ceiling, `triaged` end to end, decision latency at a fixed rate, and the
//! correlation core alone from memory.

use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};
use tokio_util::sync::CancellationToken;

use triaged::app;
use triaged::config::Config;
use triaged::core::{Core, CoreConfig};
use triaged::demo::itsm::IncidentReceiver;
use triaged::metrics::LAG_BUCKETS;
use triaged::rules::RuleSet;
use triaged::topology::Snapshot;

use crate::BenchError;

/// The topic the storm is produced into (the demo configuration's input).
pub const TOPIC: &str = "events";

/// A mock cluster holding the input topic; stops when dropped.
pub struct Cluster {
    pub brokers: String,
    _stop: std::sync::mpsc::Sender<()>,
}

impl Cluster {
    pub fn start(partitions: i32) -> Result<Cluster, BenchError> {
        let (brokers, stop) = triaged::demo::start_mock_cluster(&[(TOPIC, partitions), ("triaged-dead-letter", 1), ("triaged-state", 1)])
            .map_err(|e| BenchError::Kafka(e.to_string()))?;
        Ok(Cluster { brokers, _stop: stop })
    }
}

fn kafka(e: impl std::fmt::Display) -> BenchError {
    BenchError::Kafka(e.to_string())
}

fn producer(brokers: &str, linger_ms: u32) -> Result<FutureProducer, BenchError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("batch.num.messages", "10000")
        .create()
        .map_err(kafka)
}

/// The librdkafka mock cluster keeps at most 5 MiB or 100,000 messages per
/// partition and deletes older ones beyond that (`rdkafka_mock.c`), so a storm
/// preloaded in full is spread by key over enough partitions to stay under
/// both (greedy bin packing, largest key first; a key stays on one partition,
/// which keeps its order). Returns the partition of each message.
pub fn spread(messages: &[(String, Vec<u8>)], at_least: i32) -> (i32, Vec<i32>) {
    const BYTES: usize = 3 * 1024 * 1024;
    const COUNT: usize = 80_000;
    let mut per_key: std::collections::HashMap<&str, (usize, usize)> = std::collections::HashMap::new();
    for (k, p) in messages {
        let e = per_key.entry(k.as_str()).or_default();
        e.0 += k.len() + p.len() + 64;
        e.1 += 1;
    }
    let mut keys: Vec<(&str, (usize, usize))> = per_key.into_iter().collect();
    keys.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let total: usize = keys.iter().map(|k| k.1 .0).sum();
    let mut n = total.div_ceil(BYTES).max(messages.len().div_ceil(COUNT)).max(at_least.max(1) as usize);
    loop {
        let mut load = vec![(0usize, 0usize); n];
        let mut of_key = std::collections::HashMap::with_capacity(keys.len());
        for (k, (bytes, count)) in &keys {
            let (i, _) = load.iter().enumerate().min_by_key(|(_, l)| l.0).expect("at least one partition");
            load[i].0 += bytes;
            load[i].1 += count;
            of_key.insert(*k, i as i32);
        }
        let fits = load.iter().all(|l| l.0 <= BYTES + BYTES / 3 && l.1 <= COUNT);
        if fits || n >= 10_000 {
            return (n as i32, messages.iter().map(|(k, _)| of_key[k.as_str()]).collect());
        }
        n += n / 8 + 1;
    }
}

/// Produces every message and waits for every delivery report; then checks
/// that the cluster still holds every one of them (the mock cluster drops a
/// partition's head past its size cap).
pub async fn preload(brokers: &str, messages: &[(String, Vec<u8>)], partition_of: &[i32]) -> Result<(), BenchError> {
    produce_all(brokers, messages, partition_of).await?;
    let probe: rdkafka::consumer::BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().map_err(kafka)?;
    let meta = probe.fetch_metadata(Some(TOPIC), Duration::from_secs(10)).map_err(kafka)?;
    let partitions = meta.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    let mut held = 0i64;
    for p in 0..partitions {
        let (low, high) = probe.fetch_watermarks(TOPIC, p, Duration::from_secs(10)).map_err(kafka)?;
        if low > 0 {
            return Err(BenchError::Setup(format!(
                "the mock cluster dropped the first {low} messages of {TOPIC}/{p} (it keeps 5 MiB per partition): use more partitions"
            )));
        }
        held += high;
    }
    if held != messages.len() as i64 {
        return Err(BenchError::Setup(format!("{TOPIC} holds {held} messages, {} were produced", messages.len())));
    }
    Ok(())
}

async fn produce_all(brokers: &str, messages: &[(String, Vec<u8>)], partition_of: &[i32]) -> Result<(), BenchError> {
    let producer = producer(brokers, 20)?;
    triaged::kafka::produce_all(&producer, TOPIC, messages, Some(partition_of)).await.map_err(|e| kafka(format!("produce: {e}")))
}

fn delivered<C>(r: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, C>) -> Result<(), BenchError> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(kafka(format!("delivery: {e}"))),
        Err(_) => Err(kafka("delivery report lost")),
    }
}

/// Throughput of one consumer over the preloaded topic.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Throughput {
    pub messages: u64,
    pub seconds: f64,
    pub per_second: f64,
}

impl Throughput {
    pub(crate) fn new(messages: u64, elapsed: Duration) -> Throughput {
        let seconds = elapsed.as_secs_f64();
        Throughput { messages, seconds, per_second: per_second(messages, seconds) }
    }
}

/// `count / seconds`, 0 for no time.
pub(crate) fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The ceiling: a plain consume loop with the daemon's own consumer settings
/// (a fresh group), touching each payload and nothing else. Timed from the
/// first message to the last.
pub async fn raw_consume(cfg: &Config, group: &str, expected: u64, limit: Duration) -> Result<Throughput, BenchError> {
    let mut kcfg = cfg.kafka.clone();
    kcfg.group_id = group.into();
    let consumer: StreamConsumer = triaged::kafka::consumer_config(&kcfg).create().map_err(kafka)?;
    consumer.subscribe(&[TOPIC]).map_err(kafka)?;
    let deadline = tokio::time::Instant::now() + limit;
    let mut first = None;
    let mut n = 0u64;
    let mut bytes = 0usize;
    while n < expected {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| BenchError::Timeout(limit, format!("raw consume read {n} of {expected} messages")))?
            .map_err(kafka)?;
        first.get_or_insert_with(Instant::now);
        bytes += m.payload().map_or(0, <[u8]>::len);
        n += 1;
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    std::hint::black_box(bytes);
    consumer.unsubscribe();
    Ok(Throughput::new(n, elapsed))
}

/// The daemon with `cfg`, its sink an in-process incident receiver.
async fn start_daemon(mut cfg: Config) -> Result<(IncidentReceiver, CancellationToken, app::Running), BenchError> {
    let receiver = IncidentReceiver::start().await.map_err(BenchError::Io)?;
    cfg.sink.as_mut().unwrap().endpoint = receiver.url();
    let shutdown = CancellationToken::new();
    let running = app::start(cfg, shutdown.clone()).await.map_err(|e| BenchError::App(e.to_string()))?;
    Ok((receiver, shutdown, running))
}

/// What `triaged` did with the storm.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndToEnd {
    pub throughput: Throughput,
    pub events: u64,
    pub decisions: std::collections::BTreeMap<String, u64>,
    /// Requests the incident receiver got, and the incidents they opened.
    pub sink_calls: u64,
    pub incidents: u64,
}

/// `triaged` over the preloaded topic with an in-process incident receiver,
/// timed from the first handled message to the last; then the sink calls are
/// counted once the incidents have settled.
pub async fn triaged(cfg: Config, expected: u64, limit: Duration) -> Result<EndToEnd, BenchError> {
    let (receiver, shutdown, running) = start_daemon(cfg).await?;
    let deadline = Instant::now() + limit;
    let handled = &running.metrics.messages_handled;
    let throughput = triaged::demo::time_until_handled(handled, expected, limit)
        .await
        .map(|(n, took)| Throughput::new(n, took))
        .ok_or_else(|| BenchError::Timeout(limit, format!("triaged handled {} of {expected} messages", handled.get())))?;
    // The last incident actions follow the last event by the correlation
    // timers; count them once the receiver has been quiet for a while.
    let quiet = Duration::from_secs(3);
    let mut last = (receiver.log().len(), Instant::now());
    while last.1.elapsed() < quiet && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = receiver.log().len();
        if n != last.0 {
            last = (n, Instant::now());
        }
    }
    shutdown.cancel();
    let summary = running.done.await.unwrap_or_default();
    let log = receiver.log();
    Ok(EndToEnd {
        throughput,
        events: summary.events,
        decisions: summary.decisions,
        sink_calls: log.len() as u64,
        incidents: triaged::demo::itsm::opened_keys(&log).len() as u64,
    })
}

/// `fetch.wait.max.ms` of the latency phase on the mock cluster. A real
/// broker answers a fetch as soon as data arrives (fetch.min.bytes 1); the
/// mock cluster answers an empty fetch only after its full wait
/// (`rdkafka_mock_handlers.c`: "If there was no data, delay up to MaxWait"),
/// which would put librdkafka's 500 ms default into every figure of a
/// consumer that keeps up.
pub const MOCK_FETCH_WAIT_MS: u32 = 1;

/// Decision latency at a fixed produce rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub rate: u64,
    pub messages: u64,
    /// Upper bounds of the histogram buckets holding the quantiles (ms).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_bucket_ms: f64,
    /// Cumulative (upper bound ms, count) of every bucket.
    pub buckets: Vec<(f64, u64)>,
}

/// Starts `triaged` on an empty topic, produces `messages` at `rate` per
/// second (paced every millisecond), and reads the quantiles of
/// `triaged_event_lag_seconds`: Kafka create time to the core's decision.
pub async fn latency(cfg: Config, messages: &[(String, Vec<u8>)], rate: u64, limit: Duration) -> Result<Latency, BenchError> {
    let brokers = cfg.kafka.brokers.clone();
    let mut cfg = cfg;
    cfg.kafka.options.insert("fetch.wait.max.ms".into(), MOCK_FETCH_WAIT_MS.to_string());
    let (_receiver, shutdown, running) = start_daemon(cfg).await?;
    let producer = producer(&brokers, 0)?;
    // The consumer must own its partitions before the clock starts. Counted
    // by lag samples, which the core records after each batch's decisions.
    let decided = || running.metrics.event_lag.get_sample_count();
    prime(&producer, &messages[0], limit, || decided() >= 1).await?;
    let before = cumulative(&running.metrics.event_lag);
    produce_paced(&producer, messages, rate).await?;
    let expected = messages.len() as u64 + 1;
    wait_until(limit, || decided() >= expected, || format!("{} of {expected} messages decided", decided())).await?;
    let after = cumulative(&running.metrics.event_lag);
    shutdown.cancel();
    let _ = running.done.await;
    Ok(Latency::new(rate, after.iter().zip(&before).map(|(a, b)| (a.0, a.1 - b.1)).collect()))
}

/// The baseline of `latency`: a plain rdkafka consume loop (no processing)
/// on the same schedule, create time to receipt, in the same buckets.
pub async fn raw_latency(cfg: &Config, messages: &[(String, Vec<u8>)], rate: u64, limit: Duration) -> Result<Latency, BenchError> {
    let mut kcfg = cfg.kafka.clone();
    kcfg.group_id = "bench-raw-latency".into();
    kcfg.options.insert("fetch.wait.max.ms".into(), MOCK_FETCH_WAIT_MS.to_string());
    let consumer: StreamConsumer = triaged::kafka::consumer_config(&kcfg).create().map_err(kafka)?;
    consumer.subscribe(&[TOPIC]).map_err(kafka)?;
    let histogram = prometheus::Histogram::with_opts(prometheus::HistogramOpts::new("raw", "raw").buckets(LAG_BUCKETS.to_vec()))
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let expected = messages.len() as u64 + 1;
    let reader = {
        let histogram = histogram.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + limit;
            for n in 0..expected {
                let m = tokio::time::timeout_at(deadline, consumer.recv())
                    .await
                    .map_err(|_| BenchError::Timeout(limit, format!("raw consume read {n} of {expected} messages")))?
                    .map_err(kafka)?;
                if let Some(t) = m.timestamp().to_millis() {
                    histogram.observe((Utc::now().timestamp_micros() - t * 1000).max(0) as f64 / 1e6);
                }
            }
            consumer.unsubscribe();
            Ok::<(), BenchError>(())
        })
    };
    let producer = producer(&cfg.kafka.brokers, 0)?;
    prime(&producer, &messages[0], limit, || histogram.get_sample_count() >= 1).await?;
    let before = cumulative(&histogram);
    produce_paced(&producer, messages, rate).await?;
    reader.await.map_err(|e| BenchError::Setup(format!("raw latency reader: {e}")))??;
    let after = cumulative(&histogram);
    Ok(Latency::new(rate, after.iter().zip(&before).map(|(a, b)| (a.0, a.1 - b.1)).collect()))
}

/// Sends `first` and waits for `consumed`: the consumer owns its partitions.
async fn prime(
    producer: &FutureProducer,
    first: &(String, Vec<u8>),
    limit: Duration,
    consumed: impl Fn() -> bool,
) -> Result<(), BenchError> {
    producer
        .send(FutureRecord::to(TOPIC).key(&first.0).payload(&first.1), Timeout::After(limit))
        .await
        .map_err(|(e, _)| kafka(format!("produce: {e}")))?;
    wait_until(limit, consumed, || "the consumer did not receive the first message".into()).await
}

async fn wait_until(limit: Duration, done: impl Fn() -> bool, what: impl Fn() -> String) -> Result<(), BenchError> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(limit, what()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Produces `messages` at `rate` per second, paced every millisecond, and
/// waits for every delivery.
async fn produce_paced(producer: &FutureProducer, messages: &[(String, Vec<u8>)], rate: u64) -> Result<(), BenchError> {
    let start = Instant::now();
    let mut pending = Vec::with_capacity(messages.len());
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while sent < messages.len() {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(messages.len());
        while sent < due {
            let (k, p) = &messages[sent];
            let f = producer.send_result(FutureRecord::to(TOPIC).key(k).payload(p)).map_err(|(e, _)| kafka(format!("produce: {e}")))?;
            pending.push(f);
            sent += 1;
        }
    }
    for f in pending {
        delivered(f.await)?;
    }
    Ok(())
}

impl Latency {
    /// From cumulative (upper bound in seconds, count) buckets, +Inf last.
    fn new(rate: u64, counts: Vec<(f64, u64)>) -> Latency {
        let total = counts.last().map_or(0, |c| c.1);
        let q = |p: f64| counts.iter().find(|c| c.1 as f64 >= p * total as f64).map_or(f64::INFINITY, |c| c.0 * 1000.0);
        Latency {
            rate,
            messages: total,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_bucket_ms: counts.iter().find(|c| c.1 == total).map_or(f64::INFINITY, |c| c.0 * 1000.0),
            buckets: counts.iter().map(|c| (c.0 * 1000.0, c.1)).collect(),
        }
    }
}

/// Cumulative (upper bound in seconds, count) of a histogram, +Inf last.
fn cumulative(histogram: &prometheus::Histogram) -> Vec<(f64, u64)> {
    use prometheus::core::Collector;
    let families = histogram.collect();
    let h = families[0].get_metric()[0].get_histogram();
    let mut v: Vec<(f64, u64)> = h.get_bucket().iter().map(|b| (b.upper_bound(), b.cumulative_count())).collect();
    v.push((f64::INFINITY, h.get_sample_count()));
    v
}

/// The correlation core alone, single thread, from memory: decode every
/// message and hand its events to a fresh core. Returns (events, elapsed).
pub fn core_pass(rules: &std::sync::Arc<RuleSet>, cmdb: &std::sync::Arc<Snapshot>, messages: &[(String, Vec<u8>)]) -> (u64, Duration) {
    let mut core = Core::new(CoreConfig::from_config(&Default::default()), rules.clone(), cmdb.clone());
    let received = Utc::now();
    let start = Instant::now();
    let mut events = 0u64;
    for (_, payload) in messages {
        if let Ok(evs) = triaged::source::decode::decode(triaged::config::Format::Auto, payload, received) {
            for ev in &evs {
                std::hint::black_box(core.handle(ev, received));
                events += 1;
            }
        }
        // Actions are the sink's business; drop them as the loop would send them.
        drop(core.take_actions());
    }
    (events, start.elapsed())
}
