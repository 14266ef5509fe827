//! `triaged-bench`: clap and the run; the phases are in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use triaged_bench::Phase;
use triaged_testkit::storm::StormParams;

// The daemon's allocator, so the figures are the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "triaged-bench",
    version,
    about = "Benchmark one generated storm through triaged (mock cluster), a raw consume loop, the core alone, Alertmanager and SEC; measure decision latency, fingerprint memory and CMDB load. Writes OUT/results.{json,md}."
)]
struct BenchCli {
    /// Events in the storm.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// CIs in the synthetic estate.
    #[arg(long, default_value_t = 10_000)]
    cis: usize,
    /// Share of the CIs that fail.
    #[arg(long, default_value_t = 0.01)]
    fault_ratio: f64,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Raw/triaged alternations (the best of each is reported).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Alerts fed to Alertmanager and SEC (from the storm's start).
    #[arg(long, default_value_t = 200_000)]
    peer_events: usize,
    /// Produce rate of the latency phase (messages per second).
    #[arg(long, default_value_t = 20_000)]
    latency_rate: u64,
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Live fingerprints of the memory phase.
    #[arg(long, default_value_t = 1_000_000)]
    fingerprints: u64,
    /// CMDB sizes of the load phase (comma-separated CI counts).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    cmdb_sizes: Vec<usize>,
    /// Phases to leave out (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<Phase>,
    /// Directory with rules/.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Internal: run one memory phase in this process and print it as JSON.
    #[arg(long, hide = true)]
    phase: Option<String>,
    #[arg(long, hide = true)]
    cmdb: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    // The benchmark prints its own story; library logs only from warnings on
    // unless TRIAGED_LOG asks for more.
    let filter = std::env::var("TRIAGED_LOG").ok().and_then(|f| EnvFilter::try_new(f).ok()).unwrap_or_else(|| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    bench(BenchCli::parse())
}

fn bench(b: BenchCli) -> anyhow::Result<()> {
    if let Some(phase) = &b.phase {
        let json = triaged_bench::run_phase(phase, &b.root, b.fingerprints, b.cmdb.as_deref())?;
        println!("{json}");
        return Ok(());
    }
    let args = triaged_bench::BenchArgs {
        storm: StormParams { events: b.events, cis: b.cis, fault_ratio: b.fault_ratio, ..Default::default() },
        root: b.root,
        out: b.out.clone(),
        partitions: b.partitions,
        rounds: b.rounds,
        peer_events: b.peer_events,
        latency_rate: b.latency_rate,
        latency_seconds: b.latency_seconds,
        fingerprints: b.fingerprints,
        cmdb_sizes: b.cmdb_sizes,
        skip: b.skip,
    };
    let results = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(triaged_bench::run(args))?;
    print!("{}", triaged_bench::markdown(&results));
    println!("\nwritten: {}/results.md and results.json", b.out.display());
    Ok(())
}
