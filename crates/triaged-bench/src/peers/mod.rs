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

mod alertmanager;
mod sec;

pub use self::alertmanager::{alertmanager, alertmanager_config};
pub use self::sec::{sec, sec_rules};

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

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

// ---------------------------------------------------------------------------
// SEC

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use chrono::DateTime;

    use super::alertmanager::{alertmanager_run, AM_GROUP_INTERVAL};
    use super::sec::{read_actions, Actions, SEC_ACTIONS, SEC_STORM_THRESHOLD, SEC_STORM_WINDOW_SECS};
    use super::*;
    use triaged_testkit::storm::{Alert, Storm, StormParams};

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
