//! Wiring: source -> core -> sink workers, side tasks, and the shutdown order.
//!
//! ```text
//! KafkaSource --SourceItem (bounded)--> core task --Action (bounded, per worker)--> sink workers
//!      ^                                   |   ^                                        |
//!      +------ store safe offsets ---------+   +-------------- acks (unbounded) --------+
//! ```
//! Shutdown: stop consuming, let the core finish what was received, wait for
//! in-flight sink actions until the deadline, store and commit offsets.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

mod broker_probe;
mod core_task;
mod coverage;
mod fanout;
mod handover;
mod readback;
mod reconcile;
mod reload;
mod shutdown;

pub mod validate;

use self::core_task::{core_loop, CoreLoop};
use self::fanout::{Fanout, Lane};
use self::handover::{drain_hook, Drain};
use self::reconcile::{Reconcile, Reconciled};
pub use self::reload::{load_cmdb, load_rules_and_cmdb, Reload};
use self::reload::{reloader, RouterFeed};
use self::shutdown::Stopping;
use crate::sink::worker::SinkWorker;

use crate::config::Config;
use crate::core::partitions::Cores;
use crate::core::problems::{ProblemCandidate, ProblemTracker};
use crate::core::CoreConfig;
use crate::incident::{Action, Incident};
use crate::kafka::DeadLetter;
use crate::metrics::Metrics;
use crate::route::Routes;
use crate::rules::RuleError;
use crate::scale::changelog::Changelog;
use crate::scale::ownership::Ownership;
use crate::scale::rekey::{self, Rekeyer, Router};
use crate::server::explain::DecisionLog;
use crate::server::ingest::{Ingest, IngestError};
use crate::server::ready::Readiness;
use crate::server::{self, Lifecycle, ServerState};
use crate::sink::RestSink;
use crate::source::{KafkaSource, SourceItem};

/// Startup failures.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("rules: {}", join(.0))]
    Rules(Vec<RuleError>),
    #[error("CMDB: {}", join(.0))]
    Cmdb(Vec<String>),
    #[error("kafka: {0}")]
    Kafka(#[from] crate::source::SourceError),
    #[error("{0}")]
    Ingest(#[from] IngestError),
    #[error("sink: {0}")]
    Sink(String),
    #[error("{0}")]
    Changelog(#[from] crate::scale::changelog::ChangelogError),
    #[error("{0}")]
    RekeyTopic(#[from] crate::scale::rekey::TopicError),
    #[error("{0}")]
    ChangelogTopic(#[from] crate::scale::changelog::TopicError),
    #[error("HTTP server on {addr}: {source}")]
    Http { addr: String, source: std::io::Error },
    #[error("{0}")]
    Listener(#[from] server::ListenerError),
}

/// Errors as one line, `; `-separated.
pub fn join<T: std::fmt::Display>(errs: &[T]) -> String {
    errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

/// Handles to a running daemon.
pub struct Running {
    pub metrics: Metrics,
    /// Address the HTTP server listens on.
    pub http_addr: std::net::SocketAddr,
    /// Trigger a reload of rules and CMDB from disk (what SIGHUP does).
    pub reload: mpsc::Sender<()>,
    /// Resolves when the daemon has stopped, with what it did.
    pub done: tokio::task::JoinHandle<Summary>,
}

/// What a run did, printed by the demo.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub events: u64,
    pub decisions: std::collections::BTreeMap<String, u64>,
    pub actions: std::collections::BTreeMap<String, u64>,
    /// Seconds between the first and the last event handled.
    pub busy_seconds: f64,
    pub clean_shutdown: bool,
    /// Why the daemon stopped without being asked to (the correlation core
    /// panicked, or the source ended on a fatal error); `None` after SIGTERM.
    pub failure: Option<String>,
}

/// Starts the daemon; it runs until `shutdown` is cancelled. Secret files
/// others can read are warned about first, as `check` does.
pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Running, AppError> {
    for w in validate::secret_file_warnings(&cfg) {
        warn!("{w}");
    }
    let metrics = Metrics::with_sources(&cfg.metrics.source_labels);
    let (rules, cmdb) = load_rules_and_cmdb(&cfg)?;
    metrics.cmdb_cis.set(cmdb.len() as i64);
    metrics.cmdb_last_load.set(Utc::now().timestamp() as f64);
    info!(rules = rules.len(), cis = cmdb.len(), "rules and CMDB loaded");
    // With a re-key stage, state follows partitions and actions carry claims.
    let ownership = cfg.rekey.as_ref().map(|_| Ownership::new(session_timeout(&cfg.kafka)));
    // One sink (its own retries, breaker, rate limit and workers) per
    // `[sinks.NAME]`, or the lone `[sink]`; routes say which get an action.
    let routes = Routes::new(&cfg);
    for w in crate::config::unused_sinks(&cfg.sinks, &cfg.routes) {
        warn!(sink = w, "no route names this sink: it gets no incident");
    }
    let mut sinks = Vec::new();
    for (at, sink_cfg) in cfg.sink_tables() {
        let mut sink = RestSink::new(sink_cfg, metrics.clone()).map_err(|e| AppError::Sink(format!("{at}: {e}")))?;
        if let Some(o) = &ownership {
            sink = sink.with_ownership(o.clone());
        }
        sinks.push((Arc::new(sink), sink_cfg.concurrency));
    }
    let dead_letter = DeadLetter::new(&cfg.kafka)?.map(Arc::new);
    let ingest = Ingest::new(&cfg, metrics.clone())?.map(Arc::new);
    let listener_setup = server::Listener::new(&cfg.http)?;
    let readiness = Readiness::new(metrics.listener.kafka_broker_up.clone());
    // With `[rekey]`, `input` feeds the re-key stage and `source` reads the
    // repartition topic; without, `source` reads the input topics.
    let (input, source) = match (&cfg.rekey, &ownership) {
        (Some(rk), Some(o)) => {
            rekey::check_topic(&cfg.kafka, rk).await?;
            let input = KafkaSource::new(&cfg.kafka, metrics.clone())?;
            let rekeyer = Rekeyer::new(&cfg.kafka, rk, metrics.clone())?;
            let source = KafkaSource::new(&rekey::correlating_consumer(&cfg.kafka, rk), metrics.clone())?;
            source.track_ownership(o.clone());
            (Some((input, rekeyer, rk.scope)), source)
        }
        _ => (None, KafkaSource::new(&cfg.kafka, metrics.clone())?),
    };
    let offsets = source.offsets();
    let (kafka, state, rekey) = (cfg.kafka.clone(), cfg.state.clone(), cfg.rekey.clone());
    let topic_checked =
        tokio::task::spawn_blocking(move || crate::scale::changelog::check_topic(&kafka, &state, rekey.as_ref(), Duration::from_secs(10)))
            .await;
    match topic_checked {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::warn!(topic = %cfg.state.changelog_topic, "the broker did not describe the changelog topic; it was not checked")
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => tracing::warn!(error = %e, "the changelog topic check did not finish"),
    }
    let changelog = Arc::new(Changelog::new(&cfg.kafka, &cfg.state.changelog_topic)?);
    // Revoked partitions are checkpointed before the revoke completes, so
    // their next owner starts from their state as it was handed over.
    let (drain_tx, drain_rx) = mpsc::unbounded_channel::<Drain>();
    let (reconciled_tx, reconciled_rx) = mpsc::unbounded_channel::<Reconciled>();
    source.on_revoke(drain_hook(drain_tx, shutdown.clone()));
    // The cores follow assignments in every mode (the single one is
    // restored from the changelog at each).
    source.report_assignments();

    let (phase_tx, phase_rx) = watch::channel(Lifecycle::Starting);
    let (incidents_tx, incidents_rx) = watch::channel(Arc::new(Vec::<Incident>::new()));
    let (problems_tx, problems_rx) = watch::channel(Arc::new(Vec::<ProblemCandidate>::new()));
    let decisions = DecisionLog::default();
    let listener =
        tokio::net::TcpListener::bind(&cfg.http.listen).await.map_err(|source| AppError::Http { addr: cfg.http.listen.clone(), source })?;
    let http_addr = listener.local_addr().map_err(|source| AppError::Http { addr: cfg.http.listen.clone(), source })?;
    info!(%http_addr, "serving /metrics, /healthz, /readyz, /incidents");

    let tracker = TaskTracker::new();
    let source_stop = CancellationToken::new();
    let sink_stop = CancellationToken::new();
    let http_stop = CancellationToken::new();
    tracker.spawn(broker_probe::run(cfg.kafka.clone(), readiness.clone(), http_stop.clone()));
    let (observed_tx, observed_rx) = mpsc::unbounded_channel::<crate::core::partitions::Observed>();
    let webhooks = server::webhook::Webhooks::new(cfg.sink_configs(), observed_tx.clone(), metrics.clone())
        .map_err(|e| AppError::Sink(e.to_string()))?;
    tracker.spawn(server::serve(
        listener,
        ServerState {
            metrics: metrics.clone(),
            phase: phase_rx,
            readiness: readiness.clone(),
            listener: listener_setup,
            incidents: incidents_rx,
            ingest,
            problems: problems_rx,
            decisions: decisions.clone(),
            webhooks,
        },
        http_stop.clone(),
    ));

    let (item_tx, item_rx) = mpsc::channel::<SourceItem>(cfg.kafka.channel_capacity);
    let source_task = tracker.spawn({
        let stop = source_stop.clone();
        async move {
            if let Err(e) = source.run(item_tx, stop).await {
                error!(error = %e, "Kafka source stopped with an error");
            }
        }
    });

    let mut core_cfg = CoreConfig::from_config(&cfg.correlation);
    for s in cfg.sink_configs() {
        core_cfg.closed_while_firing.insert(s.name.clone(), s.read_back.closed_while_firing);
    }
    let (rules, cmdb) = (Arc::new(rules), Arc::new(cmdb));
    // The re-key stage: its own consumer, producer and offsets.
    let mut rekey_stage = None;
    let mut router_tx = None;
    if let Some((input, rekeyer, scope)) = input {
        let input_offsets = input.offsets();
        let router = Router::new(core_cfg.clone(), rules.clone(), cmdb.clone(), scope);
        let (tx, router_rx) = watch::channel(Arc::new(router));
        router_tx = Some((tx, scope));
        let (in_tx, in_rx) = mpsc::channel::<SourceItem>(cfg.kafka.channel_capacity);
        let input_task = tracker.spawn({
            let stop = source_stop.clone();
            async move {
                if let Err(e) = input.run(in_tx, stop).await {
                    error!(error = %e, "Kafka input source stopped with an error");
                }
            }
        });
        let rekey_task = tracker.spawn(rekeyer.run(in_rx, router_rx, input_offsets.clone(), sink_stop.clone()));
        rekey_stage = Some((input_task, rekey_task, input_offsets));
    }

    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<u64>();
    let mut lanes = Vec::new();
    for (sink, concurrency) in &sinks {
        let mut workers = Vec::new();
        for i in 0..*concurrency {
            let (tx, rx) = mpsc::channel::<Action>(256);
            workers.push(tx);
            let w = SinkWorker {
                id: i,
                sink: sink.clone(),
                dead_letter: dead_letter.clone(),
                ownership: ownership.clone(),
                acks: ack_tx.clone(),
                metrics: metrics.clone(),
            };
            tracker.spawn(w.run(rx, sink_stop.clone()));
        }
        lanes.push(Lane { name: sink.name().to_owned(), workers });
    }
    drop(ack_tx);
    let (poll_tx, poll_rx) = mpsc::channel::<readback::PollRequest>(4);
    // A poller per sink that can read records back, each for the incidents routed to it.
    for ((sink, _), sink_cfg) in sinks.iter().zip(cfg.sink_configs()) {
        let every = sink_cfg.read_back.poll_interval.0;
        if sink.can_read_back() && !every.is_zero() {
            tracker.spawn(readback::poll(sink.clone(), every, poll_tx.clone(), observed_tx.clone(), metrics.clone(), sink_stop.clone()));
        }
    }
    drop(poll_tx);
    let watch_thread = ownership.as_ref().map(|o| o.watch());

    let (reload_tx, reload_rx) = mpsc::channel::<()>(4);
    let (swap_tx, swap_rx) = mpsc::channel::<Reload>(4);
    tracker.spawn(reloader(
        cfg.clone(),
        reload_rx,
        swap_tx,
        router_tx.map(|(tx, scope)| RouterFeed { tx, scope, core: core_cfg.clone(), rules: rules.clone(), cmdb: cmdb.clone() }),
        metrics.clone(),
        shutdown.clone(),
    ));

    let core = match &ownership {
        Some(_) => Cores::per_partition(core_cfg, rules, cmdb),
        None => Cores::single(core_cfg, rules, cmdb),
    };
    let deadline = cfg.shutdown.deadline.0;
    let core_task = tokio::spawn(core_loop(CoreLoop {
        core,
        changelog,
        replay_since: Default::default(),
        refused_logged: None,
        checkpoint_within: handover::CHECKPOINT_WITHIN.min(cfg.shutdown.deadline.0 / 4),
        changelog_failing: false,
        stopping: shutdown.clone(),
        closing: false,
        deadline: cfg.shutdown.deadline.0,
        drains: drain_rx,
        // The first sink that can look incidents up reconciles them all.
        reconcile: sinks.iter().find(|(s, _)| s.can_look_up()).map(|(s, _)| Reconcile {
            sink: s.clone(),
            tx: reconciled_tx,
            stop: sink_stop.clone(),
        }),
        reconciled: reconciled_rx,
        observed: observed_rx,
        poll_requests: poll_rx,
        ownership: ownership.clone(),
        checkpoint_every: cfg.kafka.commit_interval.0,
        items: item_rx,
        circuit: fanout::all_closed(sinks.iter().map(|(s, _)| s.circuit_closed()).collect(), &tracker, &sink_stop),
        acks: ack_rx,
        swaps: swap_rx,
        fanout: Fanout::new(routes, lanes, metrics.clone()),
        offsets: offsets.clone(),
        metrics: metrics.clone(),
        incidents: incidents_tx,
        problems: ProblemTracker::new(cfg.problems.threshold, cfg.problems.period.0),
        problems_tx,
        decisions,
        readiness,
    }));

    tracker.close();
    let done = tokio::spawn(
        Stopping {
            shutdown,
            phase_tx,
            core_task,
            deadline,
            source_stop,
            source_task,
            rekey_stage,
            sink_stop,
            http_stop,
            tracker,
            offsets,
            ownership,
            watch_thread,
        }
        .run(),
    );
    Ok(Running { metrics, http_addr, reload: reload_tx, done })
}

/// `session.timeout.ms` of the consumer (librdkafka's default: 45 s).
fn session_timeout(kafka: &crate::config::KafkaConfig) -> Duration {
    let ms = kafka.options.get("session.timeout.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(45_000);
    Duration::from_millis(ms)
}
