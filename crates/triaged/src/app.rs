//! Wiring: source -> core -> sink workers, side tasks, and the shutdown order.
//!
//! ```text
//! KafkaSource --SourceItem (bounded)--> core task --Action (bounded, per worker)--> sink workers
//!      ^                                   |   ^                                        |
//!      +------ store safe offsets ---------+   +-------------- acks (unbounded) --------+
//! ```
//! Shutdown: stop consuming, let the core finish what was received, wait for
//! in-flight sink actions until the deadline, store and commit offsets.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::changelog::Changelog;
use crate::config::Config;
use crate::cores::Cores;
use crate::correlate::{CoreConfig, DecisionKind};
use crate::explain::DecisionLog;
use crate::incident::{Action, Incident, SinkError};
use crate::ingest::{Ingest, IngestError};
use crate::metrics::Metrics;
use crate::ownership::{Claim, Ownership, Verdict};
use crate::problems::{ProblemCandidate, ProblemTracker};
use crate::rekey::{self, Rekeyer, Router};
use crate::rules::{RuleError, RuleSet};
use crate::server::{self, Phase, ServerState};
use crate::sink::{Remote, RestSink};
use crate::source::kafka::{DeadLetter, KafkaSource, OffsetHandle, PartitionChange, SourceItem};
use crate::topology::Snapshot;

/// Startup failures.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("rules: {}", join(.0))]
    Rules(Vec<RuleError>),
    #[error("CMDB: {}", join(.0))]
    Cmdb(Vec<String>),
    #[error("kafka: {0}")]
    Kafka(#[from] crate::source::kafka::SourceError),
    #[error("{0}")]
    Ingest(#[from] IngestError),
    #[error("sink: {0}")]
    Sink(String),
    #[error("{0}")]
    Changelog(#[from] crate::changelog::ChangelogError),
    #[error("{0}")]
    RekeyTopic(#[from] crate::rekey::TopicError),
    #[error("HTTP server on {addr}: {source}")]
    Http { addr: String, source: std::io::Error },
}

pub(crate) fn join<T: std::fmt::Display>(errs: &[T]) -> String {
    errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

/// Loads rules and CMDB as configured (also used by `check` and reloads).
pub fn load_rules_and_cmdb(cfg: &Config) -> Result<(RuleSet, Snapshot), AppError> {
    let rules = RuleSet::load_dir(&cfg.rules.dir).map_err(AppError::Rules)?;
    let cmdb = load_cmdb(cfg).map_err(AppError::Cmdb)?;
    Ok((rules, cmdb))
}

/// The CMDB snapshot with the change calendar, if any, merged in.
pub fn load_cmdb(cfg: &Config) -> Result<Snapshot, Vec<String>> {
    fn strings<E: std::fmt::Display>(errs: Vec<E>) -> Vec<String> {
        errs.iter().map(E::to_string).collect()
    }
    let mut cmdb = Snapshot::load(&cfg.cmdb.path).map_err(strings)?;
    if let Some(ch) = &cfg.changes {
        crate::changes::apply_calendar(&ch.path, &mut cmdb, cfg.correlation.max_upstream_depth).map_err(strings)?;
    }
    Ok(cmdb)
}

/// A request to swap rules and/or CMDB, already validated.
pub enum Reload {
    Rules(Arc<RuleSet>),
    Cmdb(Arc<Snapshot>),
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

/// Time the Kafka consumer gets to close (leave its group) even when the
/// shutdown deadline is spent.
const CLOSE_AT_LEAST: Duration = Duration::from_secs(1);
/// What a close leaves of the deadline for the rest of the shutdown.
const CLOSE_MARGIN: Duration = Duration::from_millis(300);

/// How long a consumer may take to close: what is left of the deadline,
/// less a margin, and at least `CLOSE_AT_LEAST`.
fn close_budget(deadline: Duration, started: Instant) -> Duration {
    deadline.saturating_sub(started.elapsed()).saturating_sub(CLOSE_MARGIN).max(CLOSE_AT_LEAST)
}

/// Starts the daemon; it runs until `shutdown` is cancelled.
pub async fn start(cfg: Config, shutdown: CancellationToken) -> Result<Running, AppError> {
    let metrics = Metrics::new();
    let (rules, cmdb) = load_rules_and_cmdb(&cfg)?;
    metrics.cmdb_cis.set(cmdb.len() as i64);
    metrics.cmdb_last_load.set(Utc::now().timestamp() as f64);
    info!(rules = rules.len(), cis = cmdb.len(), "rules and CMDB loaded");
    // With a re-key stage, state follows partitions and actions carry claims.
    let ownership = cfg.rekey.as_ref().map(|_| Ownership::new(session_timeout(&cfg.kafka)));
    let mut sink = RestSink::new(&cfg.sink, metrics.clone()).map_err(|e| AppError::Sink(e.to_string()))?;
    if let Some(o) = &ownership {
        sink = sink.with_ownership(o.clone());
    }
    let sink = Arc::new(sink);
    let dead_letter = DeadLetter::new(&cfg.kafka)?.map(Arc::new);
    let ingest = Ingest::new(&cfg, metrics.clone())?.map(Arc::new);
    // With `[rekey]`, `input` feeds the re-key stage and `source` reads the
    // repartition topic; without, `source` reads the input topics.
    let (input, source) = match (&cfg.rekey, &ownership) {
        (Some(rk), Some(o)) => {
            rekey::check_topics(&cfg.kafka, rk).await?;
            let input = KafkaSource::new(&cfg.kafka, metrics.clone())?;
            let rekeyer = Rekeyer::new(&cfg.kafka, rk, metrics.clone())?;
            let source = KafkaSource::new(&rekey::correlating_consumer(&cfg.kafka, rk), metrics.clone())?;
            source.track_ownership(o.clone());
            (Some((input, rekeyer, rk.scope)), source)
        }
        _ => (None, KafkaSource::new(&cfg.kafka, metrics.clone())?),
    };
    let offsets = source.offsets();
    let changelog = match cfg.rekey.as_ref().and_then(|r| r.changelog_topic.as_deref()) {
        Some(t) => Some(Arc::new(Changelog::new(&cfg.kafka, t)?)),
        None => None,
    };
    // Revoked partitions are checkpointed before the revoke completes, so
    // their next owner starts from their state as it was handed over.
    let (drain_tx, drain_rx) = mpsc::unbounded_channel::<Drain>();
    let (reconciled_tx, reconciled_rx) = mpsc::unbounded_channel::<Reconciled>();
    if changelog.is_some() {
        source.on_revoke(drain_hook(drain_tx));
    }

    let (phase_tx, phase_rx) = watch::channel(Phase::Starting);
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
    tracker.spawn(server::serve(
        listener,
        ServerState {
            metrics: metrics.clone(),
            phase: phase_rx,
            incidents: incidents_rx,
            ingest,
            problems: problems_rx,
            decisions: decisions.clone(),
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

    let core_cfg = CoreConfig::from_config(&cfg.correlation);
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
    let mut workers = Vec::new();
    for i in 0..cfg.sink.concurrency {
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
    drop(ack_tx);
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
        drains: drain_rx,
        reconcile: sink.can_look_up().then(|| Reconcile { sink: sink.clone(), tx: reconciled_tx, stop: sink_stop.clone() }),
        reconciled: reconciled_rx,
        ownership: ownership.clone(),
        checkpoint_every: cfg.kafka.commit_interval.0,
        items: item_rx,
        circuit: sink.circuit_closed(),
        acks: ack_rx,
        swaps: swap_rx,
        workers,
        offsets: offsets.clone(),
        metrics: metrics.clone(),
        incidents: incidents_tx,
        problems: ProblemTracker::new(cfg.problems.threshold, cfg.problems.period.0),
        problems_tx,
        decisions,
    }));

    tracker.close();
    let done = tokio::spawn(async move {
        let _ = phase_tx.send(Phase::Running);
        let mut core_task = core_task;
        // The core ends on its own only when something failed: a panic, or
        // the source gone on a fatal error. Then the daemon stops and exits
        // non-zero (its supervisor restarts it and the log is replayed)
        // instead of idling with nothing consuming.
        let ended = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = &mut core_task => Some(r),
        };
        let failure = ended.as_ref().map(|r| match r {
            Ok(s) => s
                .failure
                .clone()
                .unwrap_or_else(|| "the correlation core stopped: its event source ended (see the errors above)".to_string()),
            // Names the panic message too.
            Err(e) => format!("the correlation core failed: {e}"),
        });
        match &failure {
            Some(f) => {
                error!("{f}; shutting down");
                // Everything else (reloader, HTTP) stops as after SIGTERM.
                shutdown.cancel();
            }
            None => info!("shutting down: consumption stops, in-flight work drains for up to {deadline:?}"),
        }
        let _ = phase_tx.send(Phase::Draining);
        // The deadline counts from here: stopping the source (a broker that
        // does not answer) comes out of it too.
        let started = Instant::now();
        let sink_deadline = tokio::spawn({
            let sink_stop = sink_stop.clone();
            async move {
                tokio::time::sleep(deadline).await;
                sink_stop.cancel();
            }
        });
        source_stop.cancel();
        let _ = source_task.await;
        if let Some((input_task, rekey_task, input_offsets)) = rekey_stage {
            // What was read is produced and confirmed (up to the deadline),
            // then the input offsets are committed.
            let _ = input_task.await;
            let _ = rekey_task.await;
            if let Err(e) = input_offsets.commit_now() {
                warn!(error = %e, "final input offset commit failed; the next start re-keys from the last committed offsets");
            }
            input_offsets.close(close_budget(deadline, started)).await;
        }
        let core_result = match ended {
            Some(r) => r,
            None => core_task.await,
        };
        let (summary, clean) = match core_result {
            Ok(s) => (s, true),
            Err(e) => {
                if failure.is_none() {
                    error!("the correlation core failed while draining: {e}");
                }
                (Summary::default(), false)
            }
        };
        sink_stop.cancel();
        sink_deadline.abort();
        http_stop.cancel();
        tracker.wait().await;
        if let Err(e) = offsets.commit_now() {
            warn!(error = %e, "final offset commit failed; the next start replays from the last committed offsets");
        }
        offsets.close(close_budget(deadline, started)).await;
        if let (Some(o), Some(t)) = (&ownership, watch_thread) {
            o.stop();
            let _ = t.join();
        }
        info!(elapsed = ?started.elapsed(), "shutdown complete");
        Summary { clean_shutdown: clean && summary.clean_shutdown, failure, ..summary }
    });
    Ok(Running { metrics, http_addr, reload: reload_tx, done })
}

struct CoreLoop {
    core: Cores,
    /// Where partition cores checkpoint their state (`rekey.changelog_topic`).
    changelog: Option<Arc<Changelog>>,
    /// Partitions to checkpoint before their revoke completes.
    drains: mpsc::UnboundedReceiver<Drain>,
    /// Looks restored open incidents up at the ITSM (profiles that can).
    reconcile: Option<Reconcile>,
    reconciled: mpsc::UnboundedReceiver<Reconciled>,
    /// Only partitions still owned are checkpointed: a late write would
    /// overwrite what their new owner restored.
    ownership: Option<Arc<Ownership>>,
    checkpoint_every: Duration,
    items: mpsc::Receiver<SourceItem>,
    /// `true` while the sink's circuit is closed; events are read only then.
    circuit: watch::Receiver<bool>,
    acks: mpsc::UnboundedReceiver<u64>,
    swaps: mpsc::Receiver<Reload>,
    workers: Vec<mpsc::Sender<Action>>,
    offsets: OffsetHandle,
    metrics: Metrics,
    incidents: watch::Sender<Arc<Vec<Incident>>>,
    problems: ProblemTracker,
    problems_tx: watch::Sender<Arc<Vec<ProblemCandidate>>>,
    decisions: DecisionLog,
}

/// The core task: the only owner of correlation state. It ends when the
/// source has stopped (its channel closed) and in-flight actions are settled
/// or the sink workers gave up at the deadline.
async fn core_loop(mut l: CoreLoop) -> Summary {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauges = tokio::time::interval(Duration::from_secs(2));
    let mut checkpoints = tokio::time::interval(l.checkpoint_every);
    checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first_event: Option<Instant> = None;
    let mut last_event = Instant::now();
    let mut source_open = true;
    let mut acks_open = true;
    loop {
        // While the ITSM is unreachable, events stay in Kafka: the source
        // channel fills and the source pauses its partitions. At shutdown the
        // unread ones are left for the next start (their offsets are unstored).
        let circuit_closed = *l.circuit.borrow_and_update();
        if source_open && !circuit_closed && l.items.is_closed() {
            source_open = false;
        }
        tokio::select! {
            Ok(()) = l.circuit.changed() => {}
            item = l.items.recv(), if source_open && circuit_closed => match item {
                Some(item) => {
                    let mut batch = vec![item];
                    while batch.len() < 512 {
                        match l.items.try_recv() {
                            Ok(i) => batch.push(i),
                            Err(_) => break,
                        }
                    }
                    let now = Utc::now();
                    let mut stamps = Vec::with_capacity(batch.len());
                    for item in batch {
                        if let SourceItem::Events { timestamp: Some(t), .. } = item {
                            stamps.push(t);
                        }
                        match item {
                            SourceItem::Partitions(changes) => {
                                if !partitions_changed(&mut l, changes).await {
                                    return failed(&l, "the changelog could not be read back; see the errors above");
                                }
                            }
                            item => handle_item(&mut l, item, now),
                        }
                    }
                    // Every decision of the batch is taken by now.
                    let decided = Utc::now().timestamp_micros();
                    for t in stamps {
                        l.metrics.event_lag.observe((decided - t * 1000).max(0) as f64 / 1e6);
                    }
                    first_event.get_or_insert_with(Instant::now);
                    last_event = Instant::now();
                }
                None => source_open = false,
            },
            ack = l.acks.recv(), if acks_open => match ack {
                Some(id) => {
                    l.core.ack(id);
                    while let Ok(id) = l.acks.try_recv() {
                        l.core.ack(id);
                    }
                }
                None => acks_open = false,
            },
            Some(swap) = l.swaps.recv() => match swap {
                // Counted here, once in effect for the next event.
                Reload::Rules(r) => {
                    info!(rules = r.len(), "rules swapped in");
                    l.core.set_rules(r);
                    l.metrics.reloads.with_label_values(&["rules", "ok"]).inc();
                }
                Reload::Cmdb(c) => {
                    info!(cis = c.len(), "CMDB swapped in");
                    l.metrics.cmdb_cis.set(c.len() as i64);
                    l.metrics.cmdb_last_load.set(Utc::now().timestamp() as f64);
                    l.core.set_cmdb(c);
                    l.metrics.reloads.with_label_values(&["cmdb", "ok"]).inc();
                }
            },
            _ = tick.tick() => {
                if source_open {
                    l.core.tick(Utc::now());
                }
            }
            _ = gauges.tick() => publish_gauges(&mut l),
            _ = checkpoints.tick(), if l.changelog.is_some() => checkpoint(&mut l, None).await,
            Some(r) = l.reconciled.recv() => reconciled(&mut l, r),
            Some((parts, done)) = l.drains.recv() => {
                checkpoint(&mut l, Some(&parts)).await;
                let _ = done.send(());
            }
        }
        // Dispatch decided actions; a full worker queue blocks here, which stops
        // reading the source channel, which pauses the Kafka partitions.
        for action in l.core.take_actions() {
            if let Some(p) = l.problems.observe(&action, Utc::now()) {
                warn!(problem = %p.id, ci = %p.ci, incidents = ?p.incidents, "problem candidate: {}", p.reason);
                l.metrics.problem_candidates.inc();
            }
            let w = worker_for(&action.incident.key, l.workers.len());
            if l.workers[w].send(action).await.is_err() {
                warn!("sink worker gone; action not delivered, its offsets stay unstored");
            }
        }
        let changed = l.core.take_offsets();
        if !changed.is_empty() {
            if let Err(e) = l.offsets.store(&changed) {
                warn!(error = %e, "storing offsets failed; they are retried with the next change");
            }
        }
        if !source_open && (l.core.inflight_actions() == 0 || !acks_open) {
            break;
        }
        if !source_open && l.workers.iter().all(|w| w.is_closed()) {
            break;
        }
    }
    // Still assigned until the consumer closes: the next owner starts here.
    checkpoint(&mut l, None).await;
    publish_gauges(&mut l);
    Summary {
        busy_seconds: first_event.map_or(0.0, |f| last_event.duration_since(f).as_secs_f64()),
        clean_shutdown: l.core.inflight_actions() == 0,
        ..counted(&l)
    }
}

/// The core's counters as a summary (no time, no verdict yet).
fn counted(l: &CoreLoop) -> Summary {
    let stats = l.core.stats();
    Summary {
        events: stats.events,
        decisions: stats.decisions.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        actions: stats.actions.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        ..Summary::default()
    }
}

/// Applies assignment changes; an assigned partition's state is read back
/// from the changelog first. `false` when that failed for good.
async fn partitions_changed(l: &mut CoreLoop, changes: Vec<PartitionChange>) -> bool {
    for c in changes {
        match c {
            PartitionChange::Revoked { topic, partition } => l.core.revoke(&topic, partition),
            PartitionChange::Assigned { topic, partition, epoch } => match &l.changelog {
                None => l.core.assign(&topic, partition, epoch),
                Some(log) => {
                    let started = Instant::now();
                    let mut attempt = 0;
                    let records = loop {
                        match log.read(partition).await {
                            Ok(r) => break r,
                            Err(e) if attempt < RESTORE_ATTEMPTS => {
                                attempt += 1;
                                warn!(error = %e, attempt, "reading the changelog back failed; retrying");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            Err(e) => {
                                error!(error = %e, topic, partition, "the changelog cannot be read; correlating without its state would open incidents twice or lose them");
                                return false;
                            }
                        }
                    };
                    let (incidents, bad) = l.core.assign_restored(&topic, partition, epoch, &records);
                    for (key, why) in bad {
                        error!(changelog = log.topic(), partition, %key, error = %why, "changelog record left out");
                    }
                    info!(topic, partition, incidents, records = records.len(), elapsed = ?started.elapsed(), "partition state restored from the changelog");
                    if let Some(r) = &l.reconcile {
                        r.start(&topic, partition, epoch, l.core.open_keys(&topic, partition, epoch));
                    }
                }
            },
        }
    }
    l.metrics.correlation_partitions.set(l.core.partitions() as i64);
    true
}

/// What the ITSM holds for a restored open incident.
struct Reconciled {
    topic: String,
    partition: i32,
    epoch: u64,
    key: String,
    remote: Result<Remote, String>,
}

/// Looks up, in the background, the incidents a restored state says are open.
struct Reconcile {
    sink: Arc<RestSink>,
    tx: mpsc::UnboundedSender<Reconciled>,
    stop: CancellationToken,
}

impl Reconcile {
    fn start(&self, topic: &str, partition: i32, epoch: u64, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let (sink, tx, stop, topic) = (self.sink.clone(), self.tx.clone(), self.stop.clone(), topic.to_owned());
        tokio::spawn(async move {
            for key in keys {
                let remote = match sink.look_up(&key, &stop).await {
                    Err(SinkError::Cancelled) => return,
                    r => r.map_err(|e| e.to_string()),
                };
                if tx.send(Reconciled { topic: topic.clone(), partition, epoch, key, remote }).is_err() {
                    return;
                }
            }
        });
    }
}

/// Acts on what the ITSM holds for a restored open incident: one it lost is
/// opened again; one closed there is left to its alerts (triaged updates and
/// resolves it as they change).
fn reconciled(l: &mut CoreLoop, r: Reconciled) {
    let Reconciled { topic, partition, epoch, key, remote } = r;
    let outcome = match remote {
        Ok(Remote::Open) => "open",
        Ok(Remote::Unknown) => return,
        Ok(Remote::Closed) => {
            warn!(%key, "incident closed at the ITSM while its state here says open; left to its alerts");
            "closed"
        }
        Ok(Remote::Missing) => {
            let why = "reconciled: the ITSM had no record under this key although the restored state said open; opened again";
            if l.core.open_again(&topic, partition, epoch, &key, why, Utc::now()) {
                warn!(%key, topic, partition, "incident missing at the ITSM; opened again");
            }
            "missing"
        }
        Err(e) => {
            warn!(%key, error = %e, "looking the incident up at the ITSM failed; not reconciled");
            "failed"
        }
    };
    l.metrics.reconciled.with_label_values(&[outcome]).inc();
}

/// A revoke waiting for its partitions' checkpoint.
type Drain = (Vec<(String, i32)>, std::sync::mpsc::SyncSender<()>);

/// How long a revoke waits for the checkpoint of its partitions.
const DRAIN_WITHIN: Duration = Duration::from_secs(3);

/// The rebalance callback's side of a drain: hands the revoked partitions to
/// the core task and waits (up to `DRAIN_WITHIN`) for their checkpoint. Only
/// on a multi-threaded runtime, where the core task runs meanwhile; at
/// shutdown (the consumer closes on a thread of its own) the core task has
/// checkpointed already.
fn drain_hook(tx: mpsc::UnboundedSender<Drain>) -> crate::source::kafka::RevokeHook {
    Box::new(move |parts| {
        let multi = tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi || parts.is_empty() {
            return;
        }
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        if tx.send((parts.to_vec(), done_tx)).is_ok() {
            let started = Instant::now();
            let drained = tokio::task::block_in_place(|| done_rx.recv_timeout(DRAIN_WITHIN).is_ok());
            if drained {
                info!(partitions = parts.len(), elapsed = ?started.elapsed(), "revoked partitions checkpointed before the revoke");
            } else {
                warn!(within = ?DRAIN_WITHIN, "revoked partitions not checkpointed in time; their next owner reads them from the last checkpoint");
            }
        }
    })
}

/// Writes the checkpoints of settled partition cores (of `only` these
/// partitions, when given) to the changelog and then stores their input
/// offsets.
async fn checkpoint(l: &mut CoreLoop, only: Option<&[(String, i32)]>) {
    let Some(log) = l.changelog.clone() else { return };
    for cp in l.core.checkpoints() {
        if only.is_some_and(|parts| !parts.iter().any(|(t, p)| *t == cp.topic && *p == cp.partition)) {
            continue;
        }
        let claim = Claim { topic: cp.topic.clone(), partition: cp.partition, epoch: cp.epoch };
        if l.ownership.as_ref().is_some_and(|o| o.check(&claim) != Verdict::Owned) {
            continue;
        }
        if !cp.records.is_empty() {
            match tokio::time::timeout(CHECKPOINT_WITHIN, log.write(cp.partition, &cp.records)).await {
                Ok(Ok(())) => debug!(partition = cp.partition, records = cp.records.len(), "checkpoint written"),
                Ok(Err(e)) => {
                    warn!(error = %e, "checkpoint not written; offsets stay where they are until the next one");
                    continue;
                }
                Err(_) => {
                    warn!(partition = cp.partition, within = ?CHECKPOINT_WITHIN, "checkpoint not acknowledged in time; tried again at the next one");
                    continue;
                }
            }
        }
        let offsets = cp.offsets.clone();
        l.core.checkpointed(cp);
        if let Err(e) = l.offsets.store(&offsets) {
            warn!(error = %e, "storing checkpointed offsets failed; they are retried with the next checkpoint");
        }
    }
}

fn failed(l: &CoreLoop, why: &str) -> Summary {
    error!("{why}");
    Summary { clean_shutdown: false, failure: Some(why.to_string()), ..counted(l) }
}

/// Attempts at reading a changelog partition back before the daemon gives up.
const RESTORE_ATTEMPTS: u32 = 5;
/// How long a checkpoint may take to be acknowledged.
const CHECKPOINT_WITHIN: Duration = Duration::from_secs(5);

fn handle_item(l: &mut CoreLoop, item: SourceItem, now: chrono::DateTime<Utc>) {
    if item.origin().is_some() {
        l.metrics.messages_handled.inc();
    }
    match item {
        SourceItem::Skipped { origin, reason } => {
            l.decisions.record_skipped(&origin, &reason, now);
            l.core.skip(&origin);
        }
        SourceItem::Partitions(_) => unreachable!("handled by partitions_changed"),
        SourceItem::Events { origin, events, .. } => {
            if events.is_empty() {
                l.core.skip(&origin);
            }
            for ev in events {
                let started = Instant::now();
                let Some(d) = l.core.handle(&ev, now) else { break };
                l.metrics.rule_evaluation.with_label_values(&["event"]).observe(started.elapsed().as_secs_f64());
                l.metrics.decisions.with_label_values(&[d.kind.as_str()]).inc();
                match d.kind {
                    DecisionKind::Deduplicated => l.metrics.events_deduplicated.with_label_values(&[&ev.source]).inc(),
                    DecisionKind::Suppressed => l.metrics.events_suppressed.with_label_values(&[&ev.source, "rule"]).inc(),
                    DecisionKind::Dropped => l.metrics.events_dropped.with_label_values(&[&ev.source]).inc(),
                    _ => {}
                }
                debug!(origin = %origin, decision = d.kind.as_str(), fingerprint = ?d.fingerprint, reason = %d.reason, "decision");
                l.decisions.record(&ev, &d, now);
            }
        }
    }
}

fn publish_gauges(l: &mut CoreLoop) {
    let open = l.core.open_incidents();
    l.metrics.open_incidents.reset();
    l.metrics.open_incidents_by_service.reset();
    for i in &open {
        l.metrics.open_incidents.with_label_values(&[&format!("P{}", i.priority)]).inc();
        for s in &i.impacted_services {
            l.metrics.open_incidents_by_service.with_label_values(&[s]).inc();
        }
    }
    l.metrics.fingerprints.set(l.core.fingerprint_count() as i64);
    let _ = l.incidents.send(Arc::new(open));
    let _ = l.problems_tx.send(Arc::new(l.problems.current(Utc::now())));
}

fn worker_for(key: &str, n: usize) -> usize {
    let h = key.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (h % n as u64) as usize
}

/// Delivers the actions of one queue, in order.
struct SinkWorker {
    id: usize,
    sink: Arc<RestSink>,
    dead_letter: Option<Arc<DeadLetter>>,
    ownership: Option<Arc<Ownership>>,
    acks: mpsc::UnboundedSender<u64>,
    metrics: Metrics,
}

impl SinkWorker {
    async fn run(self, mut rx: mpsc::Receiver<Action>, stop: CancellationToken) {
        let SinkWorker { id, sink, dead_letter, ownership, acks, metrics } = self;
        loop {
            let action = tokio::select! {
                a = rx.recv() => match a { Some(a) => a, None => break },
                _ = stop.cancelled() => break,
            };
            let delivered = match ownership.as_deref().zip(action.claim.as_ref()) {
                None => sink.deliver(&action, &stop).await,
                // The sink checks the claim before every attempt; a request in
                // flight or a retry waiting is dropped as soon as it is lost.
                Some((o, claim)) => tokio::select! {
                    r = sink.deliver(&action, &stop) => r,
                    () = o.lost(claim) => Err(SinkError::Disowned { topic: claim.topic.clone(), partition: claim.partition }),
                },
            };
            match delivered {
                Err(SinkError::Disowned { topic, partition }) => {
                    metrics.actions_disowned.inc();
                    info!(worker = id, action = action.kind.as_str(), key = %action.incident.key, %topic, partition, "partition revoked; action left to its new owner");
                    let _ = acks.send(action.id);
                }
                Ok(()) => {
                    metrics.incident_actions.with_label_values(&[action.kind.as_str()]).inc();
                    info!(worker = id, action = action.kind.as_str(), key = %action.incident.key, priority = action.incident.priority, title = %action.incident.title, "incident action delivered");
                    let _ = acks.send(action.id);
                }
                Err(SinkError::Cancelled) => break,
                Err(e) => {
                    error!(action = action.kind.as_str(), key = %action.incident.key, error = %e, "sink rejected the action permanently; dead-lettering it");
                    metrics.dead_letters.with_label_values(&["sink"]).inc();
                    if let Some(dl) = &dead_letter {
                        // The action is acknowledged only once it is in the dead-letter
                        // topic: a failed write is retried with the sink's backoff.
                        let payload = serde_json::to_vec(&action).unwrap_or_default();
                        let mut attempt = 0;
                        while let Err(de) = dl.send("sink", None, Some(&action.incident.key), &payload, &e.to_string()).await {
                            let delay = sink.backoff().next_delay(attempt, None, &mut rand::thread_rng());
                            attempt = attempt.saturating_add(1);
                            error!(error = %de, retry_in = ?delay, "dead-letter write failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = stop.cancelled() => return,
                            }
                        }
                    }
                    let _ = acks.send(action.id);
                }
            }
        }
    }
}

/// `session.timeout.ms` of the consumer (librdkafka's default: 45 s).
fn session_timeout(kafka: &crate::config::KafkaConfig) -> Duration {
    let ms = kafka.options.get("session.timeout.ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(45_000);
    Duration::from_millis(ms)
}

/// What the reloader needs to rebuild the re-key stage's router.
struct RouterFeed {
    tx: watch::Sender<Arc<Router>>,
    scope: crate::config::RekeyScope,
    core: CoreConfig,
    rules: Arc<RuleSet>,
    cmdb: Arc<Snapshot>,
}

impl RouterFeed {
    async fn publish(&mut self) {
        let (core, rules, cmdb, scope) = (self.core.clone(), self.rules.clone(), self.cmdb.clone(), self.scope);
        match tokio::task::spawn_blocking(move || Router::new(core, rules, cmdb, scope)).await {
            Ok(r) => {
                let _ = self.tx.send(Arc::new(r));
            }
            Err(e) => error!(error = %e, "rebuilding the re-key router failed; the old one stays"),
        }
    }
}

/// Reloads rules and CMDB on request (SIGHUP) and on the CMDB refresh
/// interval. A reload that fails validation keeps the old state and says why.
async fn reloader(
    cfg: Config,
    mut requests: mpsc::Receiver<()>,
    swaps: mpsc::Sender<Reload>,
    mut router: Option<RouterFeed>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let period = cfg.cmdb.refresh_interval.map(|d| d.0).unwrap_or(Duration::from_secs(365 * 86400));
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let rules_too = tokio::select! {
            r = requests.recv() => match r { Some(()) => true, None => break },
            _ = refresh.tick() => false,
            _ = shutdown.cancelled() => break,
        };
        if rules_too {
            let dir: PathBuf = cfg.rules.dir.clone();
            if let Some(r) = load_for_reload("rules", &metrics, move || RuleSet::load_dir(&dir)).await {
                let r = Arc::new(r);
                if let Some(f) = &mut router {
                    f.rules = r.clone();
                }
                let _ = swaps.send(Reload::Rules(r)).await;
            }
        }
        let c = cfg.clone();
        if let Some(s) = load_for_reload("cmdb", &metrics, move || load_cmdb(&c)).await {
            let s = Arc::new(s);
            if let Some(f) = &mut router {
                f.cmdb = s.clone();
            }
            let _ = swaps.send(Reload::Cmdb(s)).await;
        }
        if let Some(f) = &mut router {
            f.publish().await;
        }
    }
}

/// Loads and validates `kind` off the async threads. On failure every error is
/// logged and counted, and `None` keeps the running state.
async fn load_for_reload<T, E>(
    kind: &'static str,
    metrics: &Metrics,
    load: impl FnOnce() -> Result<T, Vec<E>> + Send + 'static,
) -> Option<T>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(load).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(errs)) => {
            metrics.reloads.with_label_values(&[kind, "error"]).inc();
            for e in errs {
                error!(kind, error = %e, "reload rejected; keeping the running state");
            }
            None
        }
        Err(e) => {
            metrics.reloads.with_label_values(&[kind, "error"]).inc();
            error!(kind, error = %e, "reload task failed; keeping the running state");
            None
        }
    }
}
