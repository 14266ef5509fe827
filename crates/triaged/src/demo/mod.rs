//! `triaged demo`: the whole real pipeline on one machine, no external services.
//!
//! An in-process librdkafka mock cluster is the broker, an in-process HTTP
//! server is the ITSM (generic profile), the example CMDB and the shipped rules
//! drive correlation. A generated storm (a core switch failure cascading to
//! every CI downstream, in four monitoring formats, with repeats and noise, plus
//! an unrelated database fault) is produced into Kafka, the daemon runs, the
//! faults recover, and the incidents are printed as the receiver gets them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

pub mod itsm;
pub mod storm;

pub use self::storm::{downstream, message, storm, Storm};

use self::itsm::{opened_keys, IncidentReceiver, Received};
use crate::app;
use crate::config::{
    AuthConfig, CircuitConfig, CmdbConfig, Config, CorrelationConfig, Format, HttpConfig, HumanDuration, KafkaConfig, RetryConfig,
    RulesConfig, ShutdownConfig, SinkConfig, SinkProfile, TopicConfig,
};
use crate::incident::ActionKind;
use crate::topology::Snapshot;

/// Demo failures.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("mock Kafka cluster: {0}")]
    Kafka(String),
    #[error("{0}")]
    App(#[from] app::AppError),
    #[error("incident receiver: {0}")]
    Receiver(std::io::Error),
    #[error("example CMDB {path}: {message}")]
    Cmdb { path: PathBuf, message: String },
    #[error("the demo did not settle within {0:?}: {1}")]
    Timeout(Duration, String),
}

/// Demo knobs.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Where `/metrics` is served while the demo runs.
    pub listen: String,
    /// How often each alert is repeated in the storm (monitoring tools re-send).
    pub repeats: u32,
    /// Directory holding `config/` and `rules/` (the repository root).
    pub root: PathBuf,
    /// Write the final `/metrics` exposition here.
    pub metrics_out: Option<PathBuf>,
    /// Print one line per incident action.
    pub verbose: bool,
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub produced: u64,
    pub summary: app::Summary,
    /// Storm messages the throughput was measured over.
    pub measured: u64,
    /// Messages per second from the first handled message to the storm's last.
    pub events_per_second: f64,
    pub received: Vec<Received>,
}

/// Below this many storm messages the throughput figure is mostly consumer start-up.
const THROUGHPUT_MIN_MESSAGES: u64 = 5_000;

/// Runs the mock cluster on its own thread (it is not `Send`) until the
/// returned guard is dropped. Returns the bootstrap servers.
pub fn start_mock_cluster(topics: &[(&str, i32)]) -> Result<(String, std::sync::mpsc::Sender<()>), DemoError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let topics: Vec<(String, i32)> = topics.iter().map(|(t, p)| (t.to_string(), *p)).collect();
    std::thread::Builder::new()
        .name("mock-kafka".into())
        .spawn(move || {
            let cluster = match rdkafka::mocking::MockCluster::new(1) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            for (t, p) in &topics {
                if let Err(e) = cluster.create_topic(t, *p, 1) {
                    let _ = tx.send(Err(format!("create topic {t}: {e}")));
                    return;
                }
            }
            let _ = tx.send(Ok(cluster.bootstrap_servers()));
            let _ = stop_rx.recv();
        })
        .map_err(|e| DemoError::Kafka(e.to_string()))?;
    let servers = rx.recv().map_err(|e| DemoError::Kafka(e.to_string()))?.map_err(DemoError::Kafka)?;
    Ok((servers, stop_tx))
}

/// The demo's daemon configuration: short timers so the story fits in seconds.
pub fn demo_config(root: &std::path::Path, brokers: &str, sink: &str, listen: &str) -> Config {
    let d = |s: &str| HumanDuration(HumanDuration::parse(s).expect("valid"));
    Config {
        kafka: KafkaConfig {
            brokers: brokers.into(),
            group_id: "triaged-demo".into(),
            topics: vec![TopicConfig { name: "events".into(), format: Format::Auto }],
            dead_letter_topic: Some("triaged-dead-letter".into()),
            channel_capacity: 4096,
            commit_interval: d("1s"),
            options: BTreeMap::new(),
            sasl_password: None,
            ssl_key_password: None,
            secrets: Default::default(),
        },
        cmdb: CmdbConfig { path: root.join("config/cmdb.yaml"), refresh_interval: None },
        rules: RulesConfig { dir: root.join("rules") },
        sink: Some(SinkConfig {
            name: "default".into(),
            read_back: Default::default(),
            webhook: None,
            profile: SinkProfile::Generic,
            endpoint: sink.into(),
            timeout: d("5s"),
            concurrency: 4,
            auth: AuthConfig::None,
            retry: RetryConfig::default(),
            circuit: CircuitConfig::default(),
            rate_limit: Default::default(),
            servicenow: None,
            routing_key: None,
            routing_keys: Default::default(),
            max_response_bytes: 64 << 10,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            rt: Default::default(),
        }),
        sinks: Default::default(),
        routes: Vec::new(),
        http: HttpConfig { listen: listen.into(), ..HttpConfig::default() },
        correlation: CorrelationConfig {
            group_wait: d("2s"),
            // Compressed like the other timers: no longer than the group wait.
            topology_wait: d("2s"),
            update_interval: d("1s"),
            resolve_hold_down: d("2s"),
            reopen_window: d("3s"),
            ..CorrelationConfig::default()
        },
        shutdown: ShutdownConfig { deadline: d("10s") },
        ingest: None,
        rekey: None,
        state: Default::default(),
        metrics: Default::default(),
        log: Default::default(),
        problems: Default::default(),
        changes: None,
    }
}

async fn produce(producer: &FutureProducer, messages: &[(String, Vec<u8>)]) -> Result<(), DemoError> {
    crate::kafka::produce_all(producer, "events", messages, None).await.map_err(|e| DemoError::Kafka(format!("produce: {e}")))
}

fn print_action(r: &Received) {
    let i = &r.incident;
    let root = i.root_cause.as_ref().map(|c| format!(" root cause {}", c.id)).unwrap_or_default();
    let services = if i.impacted_services.is_empty() { String::new() } else { format!(" impacting {}", i.impacted_services.join(", ")) };
    println!(
        "{:<7} {} P{} {}{}{} [{} events, {} streams, owner {}]",
        r.kind.as_str().to_uppercase(),
        i.key,
        i.priority,
        i.title,
        root,
        services,
        i.event_count,
        i.members.len(),
        i.assignment_group.as_deref().unwrap_or("-")
    );
    for n in r.notes.iter().take(3) {
        println!("        note: {n}");
    }
    if r.notes.len() > 3 {
        println!("        note: ... {} more", r.notes.len() - 3);
    }
}

/// Polls `handled` (every millisecond) until it reaches `expected`, for at
/// most `limit`; returns the messages handled since the first one was seen
/// and the time that took, or None when `limit` passed first.
pub async fn time_until_handled(handled: &prometheus::IntCounter, expected: u64, limit: Duration) -> Option<(u64, Duration)> {
    let deadline = Instant::now() + limit;
    let mut first: Option<(Instant, u64)> = None;
    while Instant::now() < deadline {
        let n = handled.get();
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= expected {
            let (t0, n0) = first?;
            return Some((n - n0, t0.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// Runs the demo end to end.
pub async fn run(args: DemoArgs) -> Result<DemoReport, DemoError> {
    let cmdb_path = args.root.join("config/cmdb.yaml");
    let cmdb = Snapshot::load(&cmdb_path).map_err(|e| DemoError::Cmdb {
        path: cmdb_path.clone(),
        message: e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "),
    })?;
    let storm = storm(&cmdb, args.repeats, Utc::now())
        .ok_or_else(|| DemoError::Cmdb { path: cmdb_path.clone(), message: "needs a core switch and a database on another site".into() })?;
    let (brokers, cluster_guard) = start_mock_cluster(&[("events", 4), ("triaged-dead-letter", 1), ("triaged-state", 1)])?;

    let receiver = IncidentReceiver::start().await.map_err(DemoError::Receiver)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .map_err(|e| DemoError::Kafka(e.to_string()))?;
    println!(
        "storm: {} fails; {} CIs downstream alert in Zabbix, Nagios and Alertmanager formats, {} repeats each; unrelated fault on {}",
        storm.root, storm.downstream, args.repeats, storm.unrelated
    );
    produce(&producer, &storm.firing).await?;
    let produced_firing = storm.firing.len() as u64;
    println!("produced {produced_firing} messages into the mock cluster (topic events, 4 partitions)");

    let cfg = demo_config(&args.root, &brokers, &receiver.url(), &args.listen);
    let shutdown = CancellationToken::new();
    let running = app::start(cfg, shutdown.clone()).await?;
    println!("daemon running; metrics at http://{}/metrics", running.http_addr);

    // Wait until every firing message is handled and the incidents opened,
    // then recover the faults and wait until every incident is resolved.
    let settle = Duration::from_secs(60);
    let total = produced_firing + storm.recovery.len() as u64;
    let handled = || running.metrics.messages_handled.get();
    let mut printed = 0;
    let mut show = |log: &[Received]| {
        if args.verbose {
            log[printed..].iter().for_each(print_action);
        }
        printed = log.len();
    };
    // Throughput: from the first handled message to the last of the storm.
    let (measured, consumed) = time_until_handled(&running.metrics.messages_handled, produced_firing, settle).await.unwrap_or_default();
    let opened = receiver
        .wait_for(settle, |log| {
            let keys = opened_keys(log);
            handled() >= produced_firing && keys.len() >= 2
        })
        .await
        .map_err(|log| {
            DemoError::Timeout(settle, format!("{} of {produced_firing} messages handled, {} actions received", handled(), log.len()))
        })?;
    show(&opened);
    println!("faults recover: producing {} resolves", storm.recovery.len());
    produce(&producer, &storm.recovery).await?;
    let all_resolved = |log: &[Received]| {
        handled() >= total && opened_keys(log).iter().all(|k| log.iter().any(|r| r.kind == ActionKind::Resolve && &r.incident.key == k))
    };
    let done = receiver
        .wait_for(settle, all_resolved)
        .await
        .map_err(|log| DemoError::Timeout(settle, format!("{} of {total} messages handled, {} actions received", handled(), log.len())))?;
    show(&done);
    shutdown.cancel();
    let summary = running.done.await.unwrap_or_default();
    // Rendered once the daemon has stopped, so the last acknowledged actions are counted.
    let metrics_text = running.metrics.render();
    // Every client goes before the cluster, or librdkafka reports its brokers down.
    drop(producer);
    drop(cluster_guard);
    if let Some(p) = &args.metrics_out {
        let _ = std::fs::write(p, &metrics_text);
    }
    let received = receiver.log();
    let events_per_second = if consumed.is_zero() { 0.0 } else { measured as f64 / consumed.as_secs_f64() };
    Ok(DemoReport { produced: total, measured, events_per_second, summary, received })
}

/// Prints the demo's closing summary.
pub fn print_summary(r: &DemoReport) {
    println!();
    println!("summary");
    println!("  messages produced     {}", r.produced);
    println!("  events handled        {}", r.summary.events);
    for (k, v) in &r.summary.decisions {
        println!("    {k:<20}{v}");
    }
    let opened: Vec<&Received> = r.received.iter().filter(|x| x.kind == ActionKind::Open).collect();
    println!("  sink calls            {}", r.received.len());
    for (k, v) in &r.summary.actions {
        println!("    {k:<20}{v}");
    }
    println!("  incidents opened      {}", opened.len());
    for o in &opened {
        let last = r.received.iter().rev().find(|x| x.incident.key == o.incident.key).unwrap_or(o);
        println!(
            "    {} P{} root cause {} ({} streams, {} events) -> {}",
            o.incident.key,
            last.incident.priority,
            last.incident.root_cause.as_ref().or(last.incident.ci.as_ref()).map_or("-", |c| c.id.as_str()),
            last.incident.members.len(),
            last.incident.event_count,
            match last.incident.state {
                crate::incident::IncidentState::Open => "open",
                crate::incident::IncidentState::Resolved => "resolved",
            }
        );
    }
    println!("  noise reduction       {:.1} events per incident", r.summary.events as f64 / opened.len().max(1) as f64);
    println!(
        "  pipeline throughput   {:.0} messages/s ({} storm messages consumed from Kafka, decoded and correlated)",
        r.events_per_second, r.measured
    );
    if r.measured < THROUGHPUT_MIN_MESSAGES {
        println!("                        (too few to measure more than start-up: `demo --repeats 300` gives a throughput figure)");
    }
}
