//! `triaged-bench`: one generated storm through `triaged` and its peers,
//! measured in one run, written as `results.json` and `results.md` (the
//! plot is drawn from the JSON by `scripts/plot-bench.py`).
//!
//! Phases: the raw consume ceiling and `triaged` end to end over the same
//! preloaded mock-cluster topic (alternating, `rounds` times each); the core
//! alone from memory; Alertmanager and SEC on the same alerts; decision
//! latency at a fixed rate; memory with many live fingerprints; CMDB load
//! time and memory. Memory phases run in child processes.

pub mod memory;
pub mod peers;
pub mod pipeline;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use self::memory::MemoryFigure;
use self::peers::PeerResult;
use self::pipeline::{Cluster, EndToEnd, Latency, Throughput};
use triaged_testkit::storm::{Storm, StormParams};

/// Benchmark failures; each names the phase's subject.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("daemon: {0}")]
    App(String),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Setup(String),
    #[error("not done within {0:?}: {1}")]
    Timeout(Duration, String),
}

/// Phases that can be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Kafka,
    Core,
    Alertmanager,
    Sec,
    Latency,
    Fingerprints,
    Cmdb,
}

impl Phase {
    pub const ALL: [Phase; 7] =
        [Phase::Kafka, Phase::Core, Phase::Alertmanager, Phase::Sec, Phase::Latency, Phase::Fingerprints, Phase::Cmdb];

    /// The name `--skip` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Kafka => "kafka",
            Phase::Core => "core",
            Phase::Alertmanager => "alertmanager",
            Phase::Sec => "sec",
            Phase::Latency => "latency",
            Phase::Fingerprints => "fingerprints",
            Phase::Cmdb => "cmdb",
        }
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Phase, String> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown phase `{s}` (one of {})", Phase::ALL.map(Phase::as_str).join(", ")))
    }
}

/// Benchmark knobs (`triaged-bench --help`).
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub storm: StormParams,
    /// Repository root (rules/ and config/).
    pub root: PathBuf,
    pub out: PathBuf,
    pub partitions: i32,
    /// Raw/triaged alternations; the best of each is reported.
    pub rounds: u32,
    /// Alerts fed to each peer (from the storm's start), to bound their run time.
    pub peer_events: usize,
    pub latency_rate: u64,
    pub latency_seconds: u64,
    pub fingerprints: u64,
    pub cmdb_sizes: Vec<usize>,
    pub skip: Vec<Phase>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Results {
    pub machine: String,
    pub started: String,
    pub storm: StormSummary,
    pub raw: Vec<Throughput>,
    pub triaged: Vec<EndToEnd>,
    pub core: Option<Throughput>,
    pub peers: Vec<PeerResult>,
    pub latency: Option<Latency>,
    /// The same schedule through a plain consume loop: the broker's share.
    pub raw_latency: Option<Latency>,
    pub memory: Vec<MemoryFigure>,
}

/// The storm's shape, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StormSummary {
    pub events: usize,
    pub cis: usize,
    pub faults: usize,
    pub streams: usize,
    pub repeats: usize,
    pub kafka_bytes: usize,
    /// Partitions of the preloaded topic.
    pub partitions: i32,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0) / 1048576.0))
        .unwrap_or(0.0);
    format!("{cpu}, {cores} cores, {mem:.0} GiB, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

fn progress(msg: impl std::fmt::Display) {
    eprintln!("[bench {}] {msg}", Utc::now().format("%H:%M:%S"));
}

/// Runs every phase not skipped and writes the results into `args.out`.
pub async fn run(args: BenchArgs) -> Result<Results, BenchError> {
    std::fs::create_dir_all(&args.out).map_err(BenchError::Io)?;
    let on = |p: Phase| !args.skip.contains(&p);
    let mut r = Results { machine: machine(), started: Utc::now().to_rfc3339(), ..Results::default() };
    progress(format!("generating the storm: {} events over {} CIs", args.storm.events, args.storm.cis));
    let storm = Storm::generate(&args.storm, Utc::now()).map_err(BenchError::Setup)?;
    let messages = storm.kafka_messages();
    r.storm = StormSummary {
        events: storm.alerts.len(),
        cis: storm.cmdb.len(),
        faults: storm.faults.len(),
        streams: storm.streams,
        repeats: storm.repeats,
        kafka_bytes: messages.iter().map(|m| m.1.len()).sum(),
        partitions: args.partitions,
    };
    progress(format!("{:?}", r.storm));
    let cmdb_path = args.out.join("storm-cmdb.json");
    memory::write_cmdb(&cmdb_path, args.storm.cis)?;

    if on(Phase::Kafka) {
        let (partitions, partition_of) = pipeline::spread(&messages, args.partitions);
        r.storm.partitions = partitions;
        let cluster = Cluster::start(partitions)?;
        progress(format!("preloading {} messages into the mock cluster ({partitions} partitions)", messages.len()));
        pipeline::preload(&cluster.brokers, &messages, &partition_of).await?;
        let limit = Duration::from_secs(600);
        for round in 0..args.rounds.max(1) {
            let cfg = config(&args, &cluster.brokers, &cmdb_path, &format!("bench-triaged-{round}"));
            let raw = pipeline::raw_consume(&cfg, &format!("bench-raw-{round}"), messages.len() as u64, limit).await?;
            progress(format!("round {round}: raw consume {:.0} messages/s", raw.per_second));
            r.raw.push(raw);
            let e2e = pipeline::triaged(cfg, messages.len() as u64, limit).await?;
            progress(format!(
                "round {round}: triaged {:.0} messages/s, {} incidents, {} sink calls",
                e2e.throughput.per_second, e2e.incidents, e2e.sink_calls
            ));
            r.triaged.push(e2e);
        }
    }
    if on(Phase::Core) {
        let rules =
            Arc::new(triaged::rules::RuleSet::load_dir(&args.root.join("rules")).map_err(|e| BenchError::Setup(triaged::app::join(&e)))?);
        let cmdb = Arc::new(storm.cmdb.clone());
        let (events, elapsed) = pipeline::core_pass(&rules, &cmdb, &messages);
        let t = Throughput::new(events, elapsed);
        progress(format!("core alone: {:.0} events/s", t.per_second));
        r.core = Some(t);
    }
    for (phase, name) in [(Phase::Alertmanager, "alertmanager"), (Phase::Sec, "sec")] {
        if !on(phase) {
            continue;
        }
        let dir = args.out.join(name);
        std::fs::create_dir_all(&dir).map_err(BenchError::Io)?;
        progress(format!("{name}: feeding {} alerts", args.peer_events.min(storm.alerts.len())));
        let p = match phase {
            Phase::Alertmanager => peers::alertmanager(&storm, args.peer_events, &dir).await,
            _ => peers::sec(&storm, args.peer_events, &dir).await,
        }
        .map_err(|e| BenchError::Setup(format!("{name}: {e}")))?;
        progress(format!("{}: {:.0} events/s, {} outputs", p.system, p.events_per_second, p.notifications));
        r.peers.push(p);
    }
    if on(Phase::Latency) {
        let cluster = Cluster::start(args.partitions)?;
        let cfg = config(&args, &cluster.brokers, &cmdb_path, "bench-latency");
        let n = (args.latency_rate * args.latency_seconds) as usize;
        let sample: Vec<(String, Vec<u8>)> = messages.iter().take(n).cloned().collect();
        progress(format!("latency: {} messages at {}/s", sample.len(), args.latency_rate));
        let limit = Duration::from_secs(args.latency_seconds * 4 + 60);
        let raw = pipeline::raw_latency(&cfg, &sample, args.latency_rate, limit).await?;
        progress(format!("latency, raw consume loop: p50 <= {} ms, p99 <= {} ms", raw.p50_ms, raw.p99_ms));
        r.raw_latency = Some(raw);
        drop(cluster);
        // A fresh cluster: the raw loop's messages are not the daemon's.
        let cluster = Cluster::start(args.partitions)?;
        let cfg = config(&args, &cluster.brokers, &cmdb_path, "bench-latency");
        let l = pipeline::latency(cfg, &sample, args.latency_rate, limit).await?;
        progress(format!("latency: p50 <= {} ms, p99 <= {} ms", l.p50_ms, l.p99_ms));
        r.latency = Some(l);
    }
    drop(messages);
    let exe = std::env::current_exe().map_err(BenchError::Io)?;
    if on(Phase::Fingerprints) {
        progress(format!("memory: {} live fingerprints", args.fingerprints));
        let f = memory::in_child(
            &exe,
            "fingerprints",
            &["--root".into(), args.root.display().to_string(), "--fingerprints".into(), args.fingerprints.to_string()],
        )?;
        progress(format!("memory: {:.0} MiB RSS with {} fingerprints", f.rss_mib, f.items));
        r.memory.push(f);
        for phase in ["fingerprints-expiring", "oversized-events"] {
            let f = memory::in_child(
                &exe,
                phase,
                &["--root".into(), args.root.display().to_string(), "--fingerprints".into(), args.fingerprints.to_string()],
            )?;
            progress(format!("memory: {}: peak RSS {:.0} MiB (baseline {:.0})", f.what, f.peak_rss_mib, f.baseline_rss_mib));
            r.memory.push(f);
        }
    }
    if on(Phase::Cmdb) {
        for &n in &args.cmdb_sizes {
            let path = args.out.join(format!("cmdb-{n}.json"));
            let bytes = memory::write_cmdb(&path, n)?;
            progress(format!("CMDB load: {n} CIs, {} MiB of YAML", bytes / 1048576));
            let f = memory::in_child(&exe, "cmdb-load", &["--cmdb".into(), path.display().to_string()])?;
            progress(format!("CMDB load: {} CIs in {:.2} s, peak RSS {:.0} MiB", f.items, f.seconds, f.peak_rss_mib));
            r.memory.push(f);
            let _ = std::fs::remove_file(&path);
        }
    }
    write_results(&args.out, &r)?;
    Ok(r)
}

/// The daemon configuration for the Kafka phases: the demo's, over the
/// storm's estate, with the default correlation timers.
fn config(args: &BenchArgs, brokers: &str, cmdb: &Path, group: &str) -> triaged::config::Config {
    let mut cfg = triaged::demo::demo_config(&args.root, brokers, "http://127.0.0.1:9", "127.0.0.1:0");
    cfg.kafka.group_id = group.into();
    cfg.cmdb.path = cmdb.to_path_buf();
    cfg
}

/// Runs one child phase and prints its figure as JSON.
pub fn run_phase(phase: &str, root: &Path, fingerprints: u64, cmdb: Option<&Path>) -> Result<String, BenchError> {
    let figure = match (phase, cmdb) {
        ("fingerprints", _) => memory::fingerprints(&root.join("rules"), fingerprints)?,
        ("fingerprints-expiring", _) => memory::fingerprints_expiring(&root.join("rules"), fingerprints)?,
        ("oversized-events", _) => memory::oversized_events(&root.join("rules"), 400)?,
        ("cmdb-load", Some(path)) => memory::cmdb_load(path)?,
        _ => {
            return Err(BenchError::Setup(format!(
                "unknown phase `{phase}` (fingerprints, fingerprints-expiring, oversized-events, cmdb-load --cmdb FILE)"
            )))
        }
    };
    serde_json::to_string(&figure).map_err(|e| BenchError::Setup(e.to_string()))
}

fn best<T>(items: &[T], key: impl Fn(&T) -> f64) -> Option<&T> {
    items.iter().max_by(|a, b| key(a).total_cmp(&key(b)))
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    use std::fmt::Write;
    let mut md = String::new();
    let s = &r.storm;
    let _ = writeln!(md, "# triaged benchmark\n");
    let _ = writeln!(md, "Machine: {}. Started {}.\n", r.machine, r.started);
    let _ = writeln!(
        md,
        "Storm: {} events over {} CIs; {} failing CIs, {} alert streams (failures and their downstream symptoms), {} repeats each, then every stream recovers; {:.0} MiB as Kafka messages, preloaded into {} partitions of the librdkafka mock cluster.\n",
        s.events,
        s.cis,
        s.faults,
        s.streams,
        s.repeats,
        s.kafka_bytes as f64 / 1048576.0,
        s.partitions
    );
    let _ = writeln!(md, "| system | workload | events | seconds | events/s | triaged ÷ this | output |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---|");
    let triaged = best(&r.triaged, |e| e.throughput.per_second);
    let base = triaged.map(|t| t.throughput.per_second);
    let ratio = |v: f64| base.map_or("-".to_string(), |b| format!("{:.2}x", b / v));
    if let Some(t) = triaged {
        let _ = writeln!(
            md,
            "| triaged | Kafka (mock cluster) -> decode -> dedup -> topology/rules -> decisions, in-process sink | {} | {:.2} | {:.0} | 1.00x | {} incidents, {} sink calls |",
            t.throughput.messages, t.throughput.seconds, t.throughput.per_second, t.incidents, t.sink_calls
        );
    }
    if let Some(raw) = best(&r.raw, |t| t.per_second) {
        let _ = writeln!(
            md,
            "| raw consume | plain rdkafka consume loop, same topic and consumer settings | {} | {:.2} | {:.0} | {} | triaged = {:.2} of raw |",
            raw.messages,
            raw.seconds,
            raw.per_second,
            ratio(raw.per_second),
            base.map_or(0.0, |b| b / raw.per_second)
        );
    }
    if let Some(c) = &r.core {
        let _ = writeln!(
            md,
            "| triaged core | decode + dedup + correlate from memory, one thread | {} | {:.2} | {:.0} | {} | |",
            c.messages,
            c.seconds,
            c.per_second,
            ratio(c.per_second)
        );
    }
    for p in &r.peers {
        let _ = writeln!(
            md,
            "| {} | the storm's first {} alerts, configured as noted below | {} | {:.2} | {:.0} | {} | {} notifications or actions |",
            p.system,
            p.events,
            p.events,
            p.seconds,
            p.events_per_second,
            ratio(p.events_per_second),
            p.notifications
        );
    }
    if !r.peers.is_empty() {
        let _ = writeln!(md);
        for p in &r.peers {
            let _ = writeln!(md, "- {}: {}", p.system, p.note);
        }
    }
    if r.raw.len() + r.triaged.len() > 2 {
        let _ = writeln!(
            md,
            "\nEvery round (messages/s): raw {:?}, triaged {:?}; the table shows the best of each.",
            r.raw.iter().map(|t| t.per_second.round()).collect::<Vec<_>>(),
            r.triaged.iter().map(|t| t.throughput.per_second.round()).collect::<Vec<_>>()
        );
    }
    if let Some(l) = &r.latency {
        let _ = writeln!(md, "\n## Decision latency\n");
        let _ = writeln!(
            md,
            "{} messages produced at {} per second; Kafka create time to the core's decision (`triaged_event_lag_seconds`; bucket upper bounds, create time has millisecond resolution): p50 <= {} ms, p99 <= {} ms, max <= {} ms.",
            l.messages, l.rate, l.p50_ms, l.p99_ms, l.max_bucket_ms
        );
        if let Some(raw) = &r.raw_latency {
            let _ = writeln!(
                md,
                "\nThe same schedule through a plain rdkafka consume loop on a fresh cluster (create time to receipt, same buckets): p50 <= {} ms, p99 <= {} ms, max <= {} ms.",
                raw.p50_ms, raw.p99_ms, raw.max_bucket_ms
            );
        }
    }
    if !r.memory.is_empty() {
        let _ = writeln!(md, "\n## Memory\n");
        let _ = writeln!(md, "| what | items | seconds | RSS before (MiB) | RSS after (MiB) | peak RSS (MiB) |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        for m in &r.memory {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} | {:.0} | {:.0} | {:.0} |",
                m.what, m.items, m.seconds, m.baseline_rss_mib, m.rss_mib, m.peak_rss_mib
            );
        }
    }
    md
}

fn write_results(out: &Path, r: &Results) -> Result<(), BenchError> {
    let json = serde_json::to_string_pretty(r).map_err(|e| BenchError::Setup(e.to_string()))?;
    std::fs::write(out.join("results.json"), json).map_err(BenchError::Io)?;
    std::fs::write(out.join("results.md"), markdown(r)).map_err(BenchError::Io)?;
    Ok(())
}
