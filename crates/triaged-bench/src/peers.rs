//! The storm through two peer systems installed from Debian packages,
//! Prometheus Alertmanager and SEC (Simple Event Correlator), so `triaged
//! bench` can put their throughput next to `triaged`'s.
//!
//! # What each peer is configured to do
//!
//! `triaged` deduplicates the repeats of an alert stream (one CI, one check),
//! puts every alert raised downstream of a failing CI (CMDB topology) into that
//! CI's incident, opens it after `group_wait` (2 s in the benchmark, the demo's
//! timers) and resolves it when every member recovered. Neither peer knows the topology, so each gets its closest
//! equivalent:
//!
//! - **Alertmanager** ([`alertmanager_config`]): alerts grouped by
//!   `[site, alertname]` (group_wait 2s, group_interval 5s, repeat_interval 4h)
//!   to one webhook receiver with `send_resolved: true`; one inhibit rule stands
//!   in for topology: infrastructure down at a site (`HostDown`,
//!   `IcmpUnreachable`, `DatabaseDown`) inhibits the service symptoms at the same
//!   site (`InstanceDown`, `HighErrorRate`, `ProbeFailure`). Deduplication is
//!   Alertmanager's own (one alert per label set). A notification is one webhook
//!   `POST`.
//! - **SEC** ([`sec_rules`]): a `Pair` rule keyed on ci + alert writes `open`
//!   for the first FIRING line of a stream, silently consumes its repeats, and
//!   writes `resolve` on the stream's RESOLVED line (dedup + open/resolve); it
//!   passes every line on (`continue=TakeNext`) to a `SingleWithThreshold` rule
//!   that writes `storm site=X` once [`SEC_STORM_THRESHOLD`] FIRING lines from a
//!   site were seen within [`SEC_STORM_WINDOW_SECS`], and stays quiet for the
//!   rest of that window (the rule's own suppression). A notification is one line
//!   written by SEC's `write` action.
//!
//! # How they are timed
//!
//! The first `limit` alerts of the storm are fed, in order (the recoveries are
//! at the end of the storm: a capped run feeds no recovery).
//!
//! - Alertmanager: started and awaited through `/-/ready` (not timed), then
//!   fed through `POST /api/v2/alerts` in batches of [`AM_BATCH`] (Prometheus'
//!   notifier default), four requests in flight as from a few Prometheus
//!   servers; each alert is rendered with its `startsAt` (and `endsAt` for
//!   recoveries) at send time. The firing alerts go first; the recoveries only
//!   once the firing notifications settled (none for `group_interval` + 2 s,
//!   bounded), as in the storm, where they come after `group_wait`: posted back
//!   to back, every alert would be resolved before its group's first flush and
//!   Alertmanager would notify nothing. Timed from the first `POST` sent to the
//!   last one answered, the wait between the two runs excluded; notifications
//!   are counted until they settle again.
//! - SEC: the lines are rendered beforehand and piped into `sec --input=-
//!   --notail`, which exits at end of input. Timed from spawn to exit, so SEC's
//!   start-up (rules compilation) is included; it is measured once with an empty
//!   input and reported in the note.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use triaged::sink::error_chain;
use triaged_testkit::storm::{Alert, Storm};

use crate::pipeline::per_second;

/// Alerts per `POST /api/v2/alerts` (Prometheus' notifier `DefaultMaxBatchSize`).
pub const AM_BATCH: usize = 256;
/// Alertmanager's `group_interval` in the benchmark configuration.
pub const AM_GROUP_INTERVAL: Duration = Duration::from_secs(5);
/// How long Alertmanager may take to answer `/-/ready`.
const AM_READY_WITHIN: Duration = Duration::from_secs(20);
/// Notifications have settled when none came for this long...
const AM_QUIET: Duration = Duration::from_secs(AM_GROUP_INTERVAL.as_secs() + 2);
/// ...or this long after the last alert was accepted.
const AM_SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// FIRING lines from one site that make SEC report a storm there.
pub const SEC_STORM_THRESHOLD: usize = 50;
/// Window of [`SEC_STORM_THRESHOLD`], seconds.
pub const SEC_STORM_WINDOW_SECS: u64 = 60;
/// File SEC's `write` actions append to, in the work directory.
const SEC_ACTIONS: &str = "sec-actions.log";

/// One peer's run over the storm.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerResult {
    /// Name and version as the binary reports it, e.g. "alertmanager 0.25.0".
    pub system: String,
    /// Alerts (Alertmanager) or lines (SEC) fed.
    pub events: usize,
    /// Wall time to process them (see the module documentation).
    pub seconds: f64,
    pub events_per_second: f64,
    /// Webhook notifications (Alertmanager) or action lines written (SEC).
    pub notifications: u64,
    /// One line: what was configured and how it was timed.
    pub note: String,
}

/// Why a peer could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{binary} is not installed (not found in PATH); install it with `{hint}`")]
    NotInstalled { binary: &'static str, hint: &'static str },
    #[error("cannot run {binary}: {source}")]
    Spawn { binary: String, source: std::io::Error },
    #[error("{binary} exited with {status} {when}; last lines of {}:\n{tail}", log.display())]
    Exited { binary: String, status: String, when: &'static str, log: PathBuf, tail: String },
    #[error("{what}: {message}")]
    Http { what: String, message: String },
    #[error("{what} did not happen within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PeerError + '_ {
    move |source| PeerError::Io { path: path.to_path_buf(), source }
}

/// The first of `names` found as an executable file in the directories of
/// `path_var` (a `PATH` value), directories first.
fn find_in(path_var: &OsStr, names: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

fn find_binary(names: &[&str], binary: &'static str, hint: &'static str) -> Result<PathBuf, PeerError> {
    std::env::var_os("PATH").and_then(|p| find_in(&p, names)).ok_or(PeerError::NotInstalled { binary, hint })
}

/// The first token of `--version` output that looks like a version number.
fn parse_version(output: &str) -> Option<&str> {
    output
        .split_whitespace()
        .map(|t| t.trim_matches(|c: char| !c.is_ascii_alphanumeric()))
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()) && t.contains('.'))
}

/// "`name` `version`", asking the binary.
async fn system_name(binary: &Path, name: &str) -> Result<String, PeerError> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| PeerError::Spawn { binary: binary.display().to_string(), source })?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(format!("{name} {}", parse_version(&text).unwrap_or("(unknown version)")))
}

/// The last lines of a log file, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// A peer process, killed when dropped (on error paths included); the normal
/// path calls [`Running::stop`], which kills and waits. A dropped child is
/// reaped by tokio's orphan reaper.
struct Running {
    child: Child,
    binary: String,
    log: PathBuf,
}

impl Running {
    fn spawn(mut cmd: Command, binary: &Path, log: PathBuf, stdin: Stdio) -> Result<Running, PeerError> {
        let out = std::fs::File::create(&log).map_err(io_err(&log))?;
        let err = out.try_clone().map_err(io_err(&log))?;
        let child = cmd
            .stdin(stdin)
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PeerError::Spawn { binary: binary.display().to_string(), source })?;
        Ok(Running { child, binary: binary.display().to_string(), log })
    }

    fn exited(&self, status: std::process::ExitStatus, when: &'static str) -> PeerError {
        PeerError::Exited { binary: self.binary.clone(), status: status.to_string(), when, log: self.log.clone(), tail: tail(&self.log) }
    }

    /// `Err` if the process already exited.
    fn check_alive(&mut self, when: &'static str) -> Result<(), PeerError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.exited(status, when)),
            Ok(None) => Ok(()),
            Err(source) => Err(PeerError::Spawn { binary: self.binary.clone(), source }),
        }
    }

    /// Waits for the exit, which must be a success.
    async fn exit(&mut self, within: Duration) -> Result<(), PeerError> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .map_err(|_| PeerError::Timeout { what: format!("{} exiting at end of input", self.binary), after: within })?
            .map_err(|source| PeerError::Spawn { binary: self.binary.clone(), source })?;
        if status.success() {
            Ok(())
        } else {
            Err(self.exited(status, "while processing the input"))
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

// ---------------------------------------------------------------------------
// Alertmanager

/// Notifications received by the webhook so far.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    notifications: u64,
    firing: u64,
    resolved: u64,
    last: Option<Instant>,
}

/// An in-process webhook receiver on 127.0.0.1; stops when dropped.
struct Webhook {
    addr: SocketAddr,
    seen: watch::Receiver<Seen>,
    stop: CancellationToken,
}

async fn notified(State(seen): State<Arc<watch::Sender<Seen>>>, body: Bytes) -> StatusCode {
    let status = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["status"].as_str().map(str::to_owned));
    seen.send_modify(|s| {
        s.notifications += 1;
        match status.as_deref() {
            Some("firing") => s.firing += 1,
            Some("resolved") => s.resolved += 1,
            _ => {}
        }
        s.last = Some(Instant::now());
    });
    StatusCode::OK
}

impl Webhook {
    async fn start() -> Result<Webhook, PeerError> {
        let at = PathBuf::from("webhook receiver on 127.0.0.1:0");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(io_err(&at))?;
        let addr = listener.local_addr().map_err(io_err(&at))?;
        let (tx, seen) = watch::channel(Seen::default());
        let router = Router::new().route("/hook", post(notified)).with_state(Arc::new(tx));
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(async move { s.cancelled().await }).await;
        });
        Ok(Webhook { addr, seen, stop })
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Waits until no notification came for `quiet` (counting from `since` at
    /// the earliest), at most until `since + within`; returns what was seen and
    /// whether it settled.
    async fn settle(&mut self, since: Instant, quiet: Duration, within: Duration) -> (Seen, bool) {
        let deadline = since + within;
        loop {
            let last = self.seen.borrow_and_update().last.map_or(since, |l| l.max(since));
            let quiet_at = last + quiet;
            match tokio::time::timeout_at(quiet_at.min(deadline).into(), self.seen.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return (*self.seen.borrow(), true),
                Err(_) => return (*self.seen.borrow(), quiet_at <= deadline),
            }
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The Alertmanager configuration used by the benchmark, notifying `webhook`.
pub fn alertmanager_config(webhook: &str) -> String {
    format!(
        r#"# Written by triaged-bench (crates/triaged-bench/src/peers.rs).
route:
  receiver: bench
  group_by: ['site', 'alertname']
  group_wait: 2s
  group_interval: {}s
  repeat_interval: 4h
receivers:
  - name: bench
    webhook_configs:
      - url: '{webhook}'
        send_resolved: true
inhibit_rules:
  # Infrastructure down at a site inhibits the service symptoms at that site.
  - source_matchers: ['alertname=~"HostDown|IcmpUnreachable|DatabaseDown"']
    target_matchers: ['alertname=~"InstanceDown|HighErrorRate|ProbeFailure"']
    equal: ['site']
"#,
        AM_GROUP_INTERVAL.as_secs()
    )
}

/// A free loopback port for Alertmanager's API (it binds it itself).
fn free_port() -> Result<u16, PeerError> {
    let at = PathBuf::from("127.0.0.1:0");
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err(&at))?;
    Ok(l.local_addr().map_err(io_err(&at))?.port())
}

async fn wait_ready(client: &reqwest::Client, base: &str, am: &mut Running) -> Result<(), PeerError> {
    let deadline = Instant::now() + AM_READY_WITHIN;
    let url = format!("{base}/-/ready");
    loop {
        am.check_alive("before it was ready")?;
        let last = match client.get(&url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => error_chain(&e),
        };
        if Instant::now() >= deadline {
            return Err(PeerError::Timeout {
                what: format!("{} answering 200 on {url} (last: {last}; see {})", am.binary, am.log.display()),
                after: AM_READY_WITHIN,
            });
        }
        // Bounded polling of a readiness endpoint.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts `batches` with four requests in flight; every answer must be 200.
async fn post_batches(client: &reqwest::Client, url: &str, storm: &Storm, batches: &[&[Alert]]) -> Result<(), PeerError> {
    let next = &AtomicUsize::new(0);
    let worker = || async move {
        while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
            let now = Utc::now();
            let body: Vec<serde_json::Value> = batch.iter().map(|a| storm.alertmanager_alert(a, now)).collect();
            let what = || format!("POST {url} ({} alerts)", batch.len());
            let r = client.post(url).json(&body).send().await.map_err(|e| PeerError::Http { what: what(), message: error_chain(&e) })?;
            let status = r.status();
            if status != reqwest::StatusCode::OK {
                let text = r.text().await.unwrap_or_default();
                return Err(PeerError::Http { what: what(), message: format!("answered {status}: {}", text.trim()) });
            }
        }
        Ok::<(), PeerError>(())
    };
    tokio::try_join!(worker(), worker(), worker(), worker())?;
    Ok(())
}

/// The first `limit` alerts of `storm` through Alertmanager (see the module
/// documentation); `workdir` receives its configuration, data and log.
pub async fn alertmanager(storm: &Storm, limit: usize, workdir: &Path) -> Result<PeerResult, PeerError> {
    Ok(alertmanager_run(storm, limit, workdir).await?.0)
}

async fn alertmanager_run(storm: &Storm, limit: usize, workdir: &Path) -> Result<(PeerResult, Seen), PeerError> {
    let binary =
        find_binary(&["prometheus-alertmanager", "alertmanager"], "prometheus-alertmanager", "apt-get install prometheus-alertmanager")?;
    let system = system_name(&binary, "alertmanager").await?;
    let alerts = &storm.alerts[..limit.min(storm.alerts.len())];
    std::fs::create_dir_all(workdir).map_err(io_err(workdir))?;

    let mut hook = Webhook::start().await?;
    let config = workdir.join("alertmanager.yml");
    std::fs::write(&config, alertmanager_config(&hook.url())).map_err(io_err(&config))?;
    // A fresh data directory: no notification log or silence from an earlier run.
    let data = workdir.join("am-data");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(io_err(&data))?;
    }
    let port = free_port()?;
    let mut cmd = Command::new(&binary);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn");
    let mut am = Running::spawn(cmd, &binary, workdir.join("alertmanager.log"), Stdio::null())?;

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| PeerError::Http { what: "HTTP client".into(), message: error_chain(&e) })?;
    wait_ready(&client, &base, &mut am).await?;

    // Runs of one status (the firing repeats, then the recoveries) one after
    // the other, with the notifications of one run settled before the next
    // starts: in the storm the recoveries come after the firing phase, later
    // than group_wait, and fed back to back they would resolve every alert
    // before its group was first flushed (no notification at all). Only the
    // POSTs are timed.
    let url = format!("{base}/api/v2/alerts");
    let (mut posts, mut elapsed, mut runs) = (0, Duration::ZERO, 0);
    let mut seen = Seen::default();
    let mut unsettled = false;
    for run in alerts.chunk_by(|a, b| a.firing == b.firing) {
        let batches: Vec<&[Alert]> = run.chunks(AM_BATCH).collect();
        posts += batches.len();
        runs += 1;
        let started = Instant::now();
        post_batches(&client, &url, storm, &batches).await?;
        elapsed += started.elapsed();
        let settled;
        (seen, settled) = hook.settle(Instant::now(), AM_QUIET, AM_SETTLE_WITHIN).await;
        unsettled |= !settled;
    }
    am.check_alive("while notifications were awaited")?;
    am.stop().await;

    let seconds = elapsed.as_secs_f64();
    let note = format!(
        "group_by [site, alertname], group_wait 2s, group_interval {}s, repeat_interval 4h, inhibit {{HostDown,IcmpUnreachable,DatabaseDown}} \
         -> {{InstanceDown,HighErrorRate,ProbeFailure}} by site; {posts} POSTs of <= {AM_BATCH} alerts, 4 in flight, in {runs} run(s) \
         (firing, then recoveries once the firing notifications settled), timed first POST sent -> last answered, waits excluded; \
         {} firing + {} resolved notifications, each run's counted until {}s without one{}",
        AM_GROUP_INTERVAL.as_secs(),
        seen.firing,
        seen.resolved,
        AM_QUIET.as_secs(),
        if unsettled { format!(" (not settled {}s after a run)", AM_SETTLE_WITHIN.as_secs()) } else { String::new() },
    );
    let result = PeerResult {
        system,
        events: alerts.len(),
        seconds,
        events_per_second: per_second(alerts.len() as u64, seconds),
        notifications: seen.notifications,
        note,
    };
    Ok((result, seen))
}

// ---------------------------------------------------------------------------
// SEC

/// The SEC rules used by the benchmark; actions are appended to `actions`
/// (relative to SEC's working directory; no whitespace).
pub fn sec_rules(actions: &str) -> String {
    format!(
        r#"# Written by triaged-bench (crates/triaged-bench/src/peers.rs).
# Dedup + open/resolve: one operation per alert stream (ci + alert). The first
# FIRING line opens it, its repeats are consumed, its RESOLVED line resolves it.
type=Pair
continue=TakeNext
ptype=RegExp
pattern=^\S+ FIRING ci=(\S+) alert=(\S+) 
desc=stream $1 $2
action=write {actions} open ci=$1 alert=$2
ptype2=RegExp
pattern2=^\S+ RESOLVED ci=$1 alert=$2 
desc2=stream %1 %2 recovered
action2=write {actions} resolve ci=%1 alert=%2
window=0

# Storm per site: {SEC_STORM_THRESHOLD} FIRING lines within {SEC_STORM_WINDOW_SECS} s report once, then the
# operation consumes the site's lines for the rest of its window.
type=SingleWithThreshold
ptype=RegExp
pattern=^\S+ FIRING ci=\S+ alert=\S+ severity=\S+ site=(\S+) 
desc=storm at site $1
action=write {actions} storm site=$1
window={SEC_STORM_WINDOW_SECS}
thresh={SEC_STORM_THRESHOLD}
"#
    )
}

/// Action lines SEC wrote, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Actions {
    open: u64,
    resolve: u64,
    storm: u64,
    other: u64,
}

impl Actions {
    fn total(&self) -> u64 {
        self.open + self.resolve + self.storm + self.other
    }
}

fn read_actions(path: &Path) -> Result<Actions, PeerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(PeerError::Io { path: path.to_path_buf(), source: e }),
    };
    let mut a = Actions::default();
    for line in text.lines() {
        match line.split(' ').next() {
            Some("open") => a.open += 1,
            Some("resolve") => a.resolve += 1,
            Some("storm") => a.storm += 1,
            _ => a.other += 1,
        }
    }
    Ok(a)
}

fn sec_command(binary: &Path, workdir: &Path, rules: &str) -> Command {
    let mut cmd = Command::new(binary);
    cmd.current_dir(workdir).args([
        &format!("--conf={rules}"),
        "--input=-",
        "--notail",
        "--nodetach",
        "--nointevents",
        "--log=sec.log",
        "--debug=3",
    ]);
    cmd
}

/// The first `limit` alerts of `storm` through SEC (see the module
/// documentation); `workdir` receives its rules, actions and logs.
pub async fn sec(storm: &Storm, limit: usize, workdir: &Path) -> Result<PeerResult, PeerError> {
    let binary = find_binary(&["sec"], "sec", "apt-get install sec")?;
    let system = system_name(&binary, "sec").await?;
    let alerts = &storm.alerts[..limit.min(storm.alerts.len())];
    std::fs::create_dir_all(workdir).map_err(io_err(workdir))?;
    let rules = workdir.join("sec.rules");
    std::fs::write(&rules, sec_rules(SEC_ACTIONS)).map_err(io_err(&rules))?;
    let actions = workdir.join(SEC_ACTIONS);
    let remove_actions = || match std::fs::remove_file(&actions) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PeerError::Io { path: actions.clone(), source: e }),
        _ => Ok(()),
    };
    let mut input = Vec::with_capacity(alerts.len() * 100);
    for a in alerts {
        input.extend_from_slice(storm.sec_line(a).as_bytes());
        input.push(b'\n');
    }
    let within = Duration::from_secs(60) + Duration::from_millis(alerts.len() as u64);

    // Start-up alone: the same command on an empty input.
    remove_actions()?;
    let started = Instant::now();
    let mut empty = Running::spawn(sec_command(&binary, workdir, "sec.rules"), &binary, workdir.join("sec.out"), Stdio::null())?;
    empty.exit(within).await?;
    let startup = started.elapsed();

    remove_actions()?;
    let started = Instant::now();
    let mut run = Running::spawn(sec_command(&binary, workdir, "sec.rules"), &binary, workdir.join("sec.out"), Stdio::piped())?;
    let mut stdin = run.child.stdin.take().expect("stdin is piped");
    let written = async {
        stdin.write_all(&input).await?;
        stdin.shutdown().await
    }
    .await;
    drop(stdin);
    if let Err(e) = written {
        // SEC stopped reading: its exit status and log say more than EPIPE.
        run.exit(Duration::from_secs(5)).await?;
        return Err(PeerError::Io { path: PathBuf::from(format!("standard input of {}", binary.display())), source: e });
    }
    run.exit(within).await?;
    let elapsed = started.elapsed();

    let a = read_actions(&actions)?;
    let seconds = elapsed.as_secs_f64();
    let note = format!(
        "Pair per ci+alert (open on first FIRING, repeats consumed, resolve on RESOLVED) + SingleWithThreshold {SEC_STORM_THRESHOLD} FIRING \
         lines/{SEC_STORM_WINDOW_SECS}s per site; {} open, {} resolve, {} storm actions; timed spawn -> exit of `sec --input=- --notail`, \
         including start-up of {:.3}s (empty input)",
        a.open,
        a.resolve,
        a.storm,
        startup.as_secs_f64()
    );
    Ok(PeerResult {
        system,
        events: alerts.len(),
        seconds,
        events_per_second: per_second(alerts.len() as u64, seconds),
        notifications: a.total(),
        note,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use chrono::DateTime;

    use super::*;
    use triaged_testkit::storm::StormParams;

    fn small() -> Storm {
        let p = StormParams { events: 5_000, cis: 2_000, fault_ratio: 0.01, span: Duration::from_secs(10) };
        Storm::generate(&p, DateTime::from_timestamp(1_800_000_000, 0).unwrap()).unwrap()
    }

    /// What the SEC rules must write for `alerts` fed within one window:
    /// (open, resolve, storm).
    fn sec_expected(storm: &Storm, alerts: &[Alert]) -> (u64, u64, u64) {
        let mut open = HashSet::new();
        let (mut opens, mut resolves) = (0, 0);
        let mut per_site: HashMap<&str, usize> = HashMap::new();
        for a in alerts {
            let l = storm.labels(a);
            let stream = (l.ci, l.alertname);
            if a.firing {
                opens += u64::from(open.insert(stream));
                *per_site.entry(l.site).or_default() += 1;
            } else {
                resolves += u64::from(open.remove(&stream));
            }
        }
        let storms = per_site.values().filter(|&&n| n >= SEC_STORM_THRESHOLD).count() as u64;
        (opens, resolves, storms)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sec_opens_and_resolves_each_stream_once_and_reports_storms() {
        let storm = small();
        let dir = tempfile::tempdir().unwrap();
        let all = storm.alerts.len();
        let r = sec(&storm, all, dir.path()).await.unwrap_or_else(|e| panic!("{e}"));
        println!("{}", serde_json::to_string(&r).unwrap());
        assert_eq!(r.events, all);
        assert!(r.seconds < SEC_STORM_WINDOW_SECS as f64, "the expectation assumes one storm window: {r:?}");
        let (opens, resolves, storms) = sec_expected(&storm, &storm.alerts);
        assert_eq!((opens, resolves), (storm.streams as u64, storm.streams as u64));
        assert!(storms > 0, "the small storm crosses the site threshold somewhere");
        let got = read_actions(&dir.path().join(SEC_ACTIONS)).unwrap();
        assert_eq!(got, Actions { open: opens, resolve: resolves, storm: storms, other: 0 }, "{r:?}");
        assert_eq!(r.notifications, opens + resolves + storms);

        // Capped: the recoveries (at the end) are not fed.
        let limit = all / 2;
        let r = sec(&storm, limit, dir.path()).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.events, limit);
        let (opens, resolves, storms) = sec_expected(&storm, &storm.alerts[..limit]);
        assert_eq!(resolves, 0);
        let got = read_actions(&dir.path().join(SEC_ACTIONS)).unwrap();
        assert_eq!(got, Actions { open: opens, resolve: 0, storm: storms, other: 0 }, "{r:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alertmanager_groups_the_storm_into_few_notifications() {
        let storm = small();
        let dir = tempfile::tempdir().unwrap();
        let all = storm.alerts.len();
        let (r, seen) = alertmanager_run(&storm, all, dir.path()).await.unwrap_or_else(|e| panic!("{e}"));
        println!("{}", serde_json::to_string(&r).unwrap());
        assert_eq!(r.events, all);
        assert!(r.system.starts_with("alertmanager "), "{r:?}");
        // One group per (site, alertname). A group of infrastructure alerts
        // (never inhibited) notifies its firing alerts and, once all recovered,
        // its recoveries; a group of inhibited symptoms may stay silent. While
        // alerts arrive a group notifies at most once per group_interval tick.
        let groups: HashSet<(&str, &str)> = storm.alerts.iter().map(|a| storm.labels(a)).map(|l| (l.site, l.alertname)).collect();
        let sources = groups.iter().filter(|(_, name)| ["HostDown", "IcmpUnreachable", "DatabaseDown"].contains(name)).count() as u64;
        assert!(sources > 0, "the storm has infrastructure faults");
        assert!(seen.firing >= sources && seen.resolved >= sources, "{sources} infrastructure groups: {seen:?}");
        assert!(seen.resolved <= groups.len() as u64, "{} groups: {seen:?}", groups.len());
        let ticks = (r.seconds / AM_GROUP_INTERVAL.as_secs_f64()).ceil() as u64;
        let most = groups.len() as u64 * (ticks + 2);
        assert!(r.notifications <= most, "{} notifications, {} groups: {r:?}", r.notifications, groups.len());
        assert!(r.notifications > 0 && r.notifications < r.events as u64);
        assert_eq!(r.notifications, seen.firing + seen.resolved, "every notification is firing or resolved");
    }

    #[test]
    fn a_missing_binary_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_in(dir.path().as_os_str(), &["sec"]), None);
        let e = PeerError::NotInstalled { binary: "sec", hint: "apt-get install sec" };
        assert_eq!(e.to_string(), "sec is not installed (not found in PATH); install it with `apt-get install sec`");
    }

    #[test]
    fn versions_are_read_from_the_banners() {
        assert_eq!(parse_version("alertmanager, version 0.25.0 (branch: debian/sid, revision: 0.25.0-1+b4)"), Some("0.25.0"));
        assert_eq!(parse_version("SEC (Simple Event Correlator) 2.9.1\nCopyright (C) 2000-2022 Risto Vaarandi"), Some("2.9.1"));
        assert_eq!(parse_version("no version here"), None);
    }
}
