//! `score`: correlation quality on generated storms with their ground truth.
//! Each scenario (small, medium, large) is replayed in process through the
//! rules and the `[correlation]` timers of a config over its own estate, and
//! scored (`triaged_testkit::score`); one markdown table per size.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use triaged_testkit::quality::{run_size, Size};
use triaged_testkit::scenario::Difficulties;

#[derive(Parser, Debug)]
#[command(
    name = "score",
    about = "Correlation quality on generated storms: one markdown table per size (faults, incidents opened, roots right, splits, shells, warnings joined, held open, precision)"
)]
struct ScoreCli {
    /// Seeds per size, from --first-seed.
    #[arg(long, default_value_t = 20)]
    seeds: u64,
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Sizes to run (comma-separated: small, medium, large).
    #[arg(long, value_delimiter = ',', default_value = "small,medium,large")]
    sizes: Vec<Size>,
    /// Rules directory.
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// The config whose `[correlation]` timers apply.
    #[arg(long, default_value = "config/triaged.toml")]
    config: PathBuf,
    /// Difficulties to turn off (comma-separated: out_of_order, missing_symptoms,
    /// late_roots, overlapping_faults, warning_noise, unkeyed_partitions,
    /// redundant_pairs, slow_symptoms; `all` for clean storms).
    #[arg(long, value_delimiter = ',')]
    without: Vec<String>,
    /// Threads (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let a = ScoreCli::parse();
    let join = |e: Vec<String>| e.join("\n");
    let cfg = triaged::config::Config::load(&a.config)
        .map_err(|e| anyhow::anyhow!(join(e.iter().map(|e| e.to_string()).collect())))
        .with_context(|| format!("config {}", a.config.display()))?;
    let rules = triaged::rules::RuleSet::load_dir(&a.rules)
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!(join(e.iter().map(|e| e.to_string()).collect())))
        .with_context(|| format!("rules {}", a.rules.display()))?;
    let mut d = Difficulties::default();
    for name in &a.without {
        match name.as_str() {
            "all" => d = Difficulties::none(),
            n => d.set(n, false).map_err(anyhow::Error::msg).context("--without")?,
        }
    }
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let seeds = a.first_seed..a.first_seed + a.seeds;
    let on = d.on();
    println!(
        "Correlation quality: rules {}, [correlation] of {}, difficulties: {}.\n",
        a.rules.display(),
        a.config.display(),
        if on.is_empty() { "none".to_string() } else { on.join(", ") }
    );
    for size in a.sizes {
        let started = std::time::Instant::now();
        let rows = run_size(size, d, seeds.clone(), &rules, &cfg.correlation, threads).map_err(anyhow::Error::msg)?;
        println!("{}", triaged_testkit::score::table(&size.title(&seeds), &rows));
        eprintln!("{}: {} scenarios in {:.1} s", size.name(), rows.len(), started.elapsed().as_secs_f64());
    }
    Ok(())
}
