use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use triaged::app::validate::Line;
use triaged::config::{Config, ConfigError};
use triaged::logs::LogFormat;

// The pipeline allocates and frees many small strings per event; mimalloc
// handles that faster than the system allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "triaged", version, about = "Monitoring events from Kafka -> dedup -> CMDB topology correlation -> ITSM incidents")]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `triaged=debug`;
    /// when given, overrides the config's `[log] level`.
    #[arg(long, global = true, env = "TRIAGED_LOG", default_value = "info")]
    log: String,
    /// Log line format: `text`, or `json` (one object per line). Logs go to
    /// stderr, coloured only when stderr is a terminal. When given, overrides
    /// the config's `[log] format`.
    #[arg(long, global = true, env = "TRIAGED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How `triaged replay` prints its incident actions.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Run {
        #[arg(long, short, default_value = "/etc/triaged/triaged.toml")]
        config: PathBuf,
    },
    /// Validate the configuration, the rule files and the CMDB; print every error.
    Check {
        #[arg(long, short, default_value = "/etc/triaged/triaged.toml")]
        config: PathBuf,
    },
    /// Run the rule tests in RULES_DIR/tests/*.yaml against the rules in RULES_DIR,
    /// on a virtual clock (format: see crates/triaged/src/tools/ruletest.rs). Exit 1 when one fails.
    Test {
        #[arg(default_value = "rules")]
        rules_dir: PathBuf,
        /// CMDB for tests that do not name their own (default: the config's, else config/cmdb.yaml).
        #[arg(long)]
        cmdb: Option<PathBuf>,
        /// The daemon's config: its `[correlation]` timers apply, and its CMDB.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Replay recorded events through rules and a CMDB without touching the sink;
    /// print the incidents they would open, update and resolve. With --against,
    /// replay through a candidate rules directory too and print the difference
    /// (exit 1 when they differ).
    Replay {
        /// A recording: one raw message payload per line.
        #[arg(long, conflicts_with = "topic", required_unless_present = "topic")]
        from: Option<PathBuf>,
        /// A Kafka topic to read instead (with --brokers and --offsets).
        #[arg(long, requires = "brokers")]
        topic: Option<String>,
        #[arg(long)]
        brokers: Option<String>,
        /// Only this partition (default: all).
        #[arg(long)]
        partition: Option<i32>,
        /// Offsets per partition, half-open: A..B, A.. (to the end), ..B.
        #[arg(long, default_value = "0..")]
        offsets: String,
        /// Rules directory (default: the config's, else rules).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// CMDB (default: the config's, else config/cmdb.yaml).
        #[arg(long)]
        cmdb: Option<PathBuf>,
        /// Candidate rules directory to compare with.
        #[arg(long)]
        against: Option<PathBuf>,
        /// `text`: one line per action, then the last action of each incident.
        /// `json`: one JSON object per action, then one per incident with
        /// `"final": true`; the summary goes to stderr.
        #[arg(long, value_enum, default_value_t = Output::Text, conflicts_with = "against")]
        output: Output,
        /// The daemon's config: its `[correlation]` timers, its topics'
        /// formats, its rules and CMDB, so the replay takes the daemon's
        /// decisions on the same log.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Ask a running daemon why: ID is an open incident's key, an event's
    /// fingerprint, its source event id, or its Kafka origin (topic/partition@offset).
    Explain {
        id: String,
        /// The daemon's HTTP address ([http] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
        /// Print the JSON answer instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the whole pipeline on an embedded Kafka mock cluster and HTTP incident receiver.
    Demo {
        /// Address of /metrics while the demo runs.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: String,
        /// How often each alert of the storm repeats.
        #[arg(long, default_value_t = 3)]
        repeats: u32,
        /// Directory with config/cmdb.yaml and rules/.
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Write the final /metrics text to this file.
        #[arg(long)]
        metrics_out: Option<PathBuf>,
    },
}

/// The short-lived commands print reports that often go into `head` or a
/// pager: when the reader goes away, they end as other Unix tools do (killed
/// by SIGPIPE) rather than panicking on the write. The daemon, the demo and
/// the bench keep Rust's default of ignoring SIGPIPE, since they write to
/// sockets.
fn end_quietly_on_closed_pipe() {
    // SAFETY: restores the default disposition of one signal, before any
    // thread of ours is started; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Given on the command line or in the environment, not defaulted.
    let given = |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
    // `run` reads its config first: its `[log]` applies unless overridden.
    let (config, log) = match &cli.cmd {
        Cmd::Run { config } => {
            let loaded = Config::load(config);
            let log = loaded.as_ref().ok().map(|c| c.log.clone());
            (Some(loaded), log)
        }
        _ => (None, None),
    };
    let log = log.unwrap_or_default();
    let format = if given("log_format") { cli.log_format } else { log.format };
    let filter = match &cli.cmd {
        _ if given("log") => cli.log.as_str(),
        // The demo prints its own story; keep library logs to warnings unless asked.
        Cmd::Demo { .. } => "warn",
        Cmd::Run { .. } => log.level.as_str(),
        _ => cli.log.as_str(),
    };
    if let Err(e) = triaged::logs::init(format, filter) {
        eprintln!("triaged: --log: {e}");
        return ExitCode::from(2);
    }
    if matches!(cli.cmd, Cmd::Check { .. } | Cmd::Test { .. } | Cmd::Explain { .. } | Cmd::Replay { .. }) {
        end_quietly_on_closed_pipe();
    }
    let result = match cli.cmd {
        Cmd::Check { config } => return check(&config),
        Cmd::Test { rules_dir, cmdb, config } => return rule_tests(&rules_dir, cmdb, config.as_deref()),
        Cmd::Explain { id, url, json } => explain(&id, &url, json),
        Cmd::Replay { from, topic, brokers, partition, offsets, rules, cmdb, against, output, config } => {
            return replay(ReplayArgs { from, topic, brokers, partition, offsets, rules, cmdb, against, output, config })
        }
        Cmd::Run { .. } => run(config.expect("loaded for run")),
        Cmd::Demo { listen, repeats, root, metrics_out } => demo(listen, repeats, root, metrics_out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("triaged: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `triaged check`: every error of the config, the rules and the CMDB it
/// names, with file and field or line; exit code 2 on any error.
fn check(path: &Path) -> ExitCode {
    let report = triaged::app::validate::check(path);
    for line in &report.lines {
        match line {
            Line::Ok(l) => println!("{l}"),
            Line::Warning(l) | Line::Error(l) => eprintln!("{l}"),
        }
    }
    if report.errors > 0 {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// The config named by `--config`, for the offline tools.
fn tool_config(path: Option<&Path>) -> anyhow::Result<Option<Config>> {
    path.map(|p| Config::load(p).map_err(|errs| anyhow::anyhow!("{}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))))
        .transpose()
}

fn rule_tests(rules_dir: &Path, cmdb: Option<PathBuf>, config: Option<&Path>) -> ExitCode {
    use triaged::tools::ruletest::{run_file, test_files, Defaults};
    let cfg = match tool_config(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cmdb = cmdb.or_else(|| cfg.as_ref().map(|c| c.cmdb.path.clone())).unwrap_or_else(|| PathBuf::from("config/cmdb.yaml"));
    let cmdb = cmdb.as_path();
    let correlation = cfg.map(|c| c.correlation).unwrap_or_default();
    let rules = match triaged::rules::RuleSet::load_dir(rules_dir) {
        Ok(r) => r,
        Err(errs) => {
            errs.iter().for_each(|e| eprintln!("{e}"));
            return ExitCode::from(2);
        }
    };
    let cmdb = match triaged::topology::Snapshot::load(cmdb) {
        Ok(c) => c,
        Err(errs) => {
            errs.iter().for_each(|e| eprintln!("{e}"));
            return ExitCode::from(2);
        }
    };
    let defaults = Defaults { rules: Some(rules.into()), cmdb: Some(cmdb.into()), correlation };
    let files = match test_files(&rules_dir.join("tests")) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("{}: no rule tests (*.yaml)", rules_dir.join("tests").display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (mut failed, mut invalid) = (0, 0);
    for f in &files {
        match run_file(f, &defaults) {
            Ok(o) if o.passed() => println!("PASS {}", f.display()),
            Ok(o) => {
                failed += 1;
                println!("FAIL {}\n{}", f.display(), o.diff);
            }
            Err(e) => {
                invalid += 1;
                println!("ERROR {e}");
            }
        }
    }
    println!("{} tests, {} passed, {failed} failed, {invalid} invalid", files.len(), files.len() - failed - invalid);
    match (failed, invalid) {
        (0, 0) => ExitCode::SUCCESS,
        (_, 0) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

struct ReplayArgs {
    from: Option<PathBuf>,
    topic: Option<String>,
    brokers: Option<String>,
    partition: Option<i32>,
    offsets: String,
    rules: Option<PathBuf>,
    cmdb: Option<PathBuf>,
    against: Option<PathBuf>,
    output: Output,
    config: Option<PathBuf>,
}

fn replay(a: ReplayArgs) -> ExitCode {
    match replay_inner(a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("triaged: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn replay_inner(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    use triaged::tools::replay::{parse_offsets, read_file, read_topic, replay};
    let load_rules = |dir: &Path| {
        triaged::rules::RuleSet::load_dir(dir)
            .map(std::sync::Arc::new)
            .map_err(|e| anyhow::anyhow!("{}", e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))
    };
    let cfg = tool_config(a.config.as_deref())?;
    let rules_dir = a.rules.clone().or_else(|| cfg.as_ref().map(|c| c.rules.dir.clone())).unwrap_or_else(|| PathBuf::from("rules"));
    let cmdb_path =
        a.cmdb.clone().or_else(|| cfg.as_ref().map(|c| c.cmdb.path.clone())).unwrap_or_else(|| PathBuf::from("config/cmdb.yaml"));
    // Each message is decoded as the daemon decodes its topic's.
    let format = cfg
        .as_ref()
        .and_then(|c| match &a.topic {
            Some(t) => c.kafka.topics.iter().find(|x| &x.name == t),
            None if c.kafka.topics.len() == 1 => c.kafka.topics.first(),
            None => None,
        })
        .map_or(triaged::config::Format::Auto, |t| t.format);
    let rules = load_rules(&rules_dir)?;
    let cmdb = triaged::topology::Snapshot::load(&cmdb_path)
        .map(std::sync::Arc::new)
        .map_err(|e| anyhow::anyhow!("{}", e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))?;
    let messages = match (&a.from, &a.topic) {
        (Some(f), _) => read_file(f)?,
        (None, Some(t)) => {
            let (from, to) = parse_offsets(&a.offsets)?;
            read_topic(a.brokers.as_deref().unwrap_or_default(), t, a.partition, from, to)?
        }
        (None, None) => anyhow::bail!("give --from FILE or --topic T"),
    };
    let cc = cfg.map(|c| c.correlation).unwrap_or_default();
    let current = replay(&messages, rules, cmdb.clone(), &cc, format, true);
    for (origin, e) in &current.undecodable {
        eprintln!("{origin}: undecodable: {e}");
    }
    let Some(dir) = &a.against else {
        let summary = format!(
            "{} messages, {} events, {} undecodable, {} incident actions; decisions {:?}",
            current.messages,
            current.events,
            current.undecodable.len(),
            current.actions.len(),
            current.decisions
        );
        match a.output {
            Output::Text => {
                current.actions.iter().for_each(|l| println!("{l}"));
                println!("\nincidents ({}), last action of each:", current.incidents.len());
                current.incidents.values().for_each(|l| println!("  {l}"));
                println!("{summary}");
            }
            Output::Json => {
                triaged::tools::replay_json::json_lines(&current.records).iter().for_each(|l| println!("{l}"));
                eprintln!("{summary}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let candidate = replay(&messages, load_rules(dir)?, cmdb, &cc, format, true);
    if current.actions == candidate.actions && current.decisions == candidate.decisions {
        println!("no difference: {} incident actions, decisions {:?}", current.actions.len(), current.decisions);
        return Ok(ExitCode::SUCCESS);
    }
    println!("incident actions (- {}, + {}):", rules_dir.display(), dir.display());
    print!("{}", triaged::tools::diff::line_diff(&current.actions, &candidate.actions));
    println!("decisions:\n  - {:?}\n  + {:?}", current.decisions, candidate.decisions);
    Ok(ExitCode::from(1))
}

fn explain(id: &str, base: &str, json: bool) -> anyhow::Result<()> {
    let mut url = reqwest::Url::parse(base).with_context(|| format!("--url {base}"))?;
    url.path_segments_mut().map_err(|()| anyhow::anyhow!("--url {base} cannot take a path"))?.pop_if_empty().push("explain").push(id);
    runtime()?.block_on(async move {
        let resp = reqwest::get(url.clone()).await.with_context(|| format!("asking {url}"))?;
        let status = resp.status();
        let body = resp.text().await.with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            anyhow::bail!("{status}: {}", body.trim());
        }
        if json {
            println!("{body}");
        } else {
            let x: triaged::server::explain::Explanation = serde_json::from_str(&body).context("the daemon's answer")?;
            print!("{}", triaged::server::explain::render(&x));
        }
        Ok(())
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn run(loaded: Result<Config, Vec<ConfigError>>) -> anyhow::Result<()> {
    let cfg = loaded
        .map_err(|errs| anyhow::anyhow!("invalid configuration:\n{}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))?;
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let running = triaged::app::start(cfg, shutdown.clone()).await?;
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        let mut done = running.done;
        let summary = loop {
            tokio::select! {
                _ = term.recv() => shutdown.cancel(),
                _ = int.recv() => shutdown.cancel(),
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading rules and CMDB");
                    let _ = running.reload.try_send(());
                }
                s = &mut done => break s.context("shutdown task failed")?,
            }
        };
        if let Some(failure) = summary.failure {
            anyhow::bail!("{failure}");
        }
        if !summary.clean_shutdown {
            tracing::warn!("in-flight sink actions did not finish before the deadline; their events are replayed on the next start");
        }
        Ok(())
    })
}

fn demo(listen: String, repeats: u32, root: PathBuf, metrics_out: Option<PathBuf>) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let report = triaged::demo::run(triaged::demo::DemoArgs { listen, repeats, root, metrics_out, verbose: true }).await?;
        triaged::demo::print_summary(&report);
        Ok(())
    })
}
