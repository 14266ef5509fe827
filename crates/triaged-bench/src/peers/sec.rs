//! The SEC (Simple Event Correlator) driver: writes rules that pair each
//! stream's firing and resolve and report storms, feeds the storm on stdin
//! and counts the actions it wrote.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use triaged_testkit::storm::Storm;

use crate::pipeline::per_second;

use super::{find_binary, io_err, system_name, PeerError, PeerResult, Running};

/// FIRING lines from one site that make SEC report a storm there.
pub const SEC_STORM_THRESHOLD: usize = 50;

/// Window of [`SEC_STORM_THRESHOLD`], seconds.
pub const SEC_STORM_WINDOW_SECS: u64 = 60;

/// File SEC's `write` actions append to, in the work directory.
pub(super) const SEC_ACTIONS: &str = "sec-actions.log";

/// The SEC rules used by the benchmark; actions are appended to `actions`
/// (relative to SEC's working directory; no whitespace).
pub fn sec_rules(actions: &str) -> String {
    format!(
        r#"# Written by triaged-bench (crates/triaged-bench/src/peers/sec.rs).
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
pub(super) struct Actions {
    pub(super) open: u64,
    pub(super) resolve: u64,
    pub(super) storm: u64,
    pub(super) other: u64,
}

impl Actions {
    fn total(&self) -> u64 {
        self.open + self.resolve + self.storm + self.other
    }
}

pub(super) fn read_actions(path: &Path) -> Result<Actions, PeerError> {
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

pub(super) fn sec_command(binary: &Path, workdir: &Path, rules: &str) -> Command {
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
