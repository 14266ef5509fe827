//! Memory and load-time figures, each measured in a child process of its own
//! (`triaged-bench --phase ...`) so one phase's heap does not inflate the next.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use triaged::app::join;
use triaged::core::{Core, CoreConfig};
use triaged::rules::RuleSet;
use triaged::topology::Snapshot;
use triaged_testkit::cmdb::{synthetic, GenParams};
use triaged_testkit::storm::estate;

use crate::BenchError;

/// One memory figure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryFigure {
    pub what: String,
    /// Fingerprints held, or CIs loaded.
    pub items: u64,
    /// Time to build the state (feed the events, load the file).
    pub seconds: f64,
    /// Resident set before the state was built, after, and at its peak (MiB).
    pub baseline_rss_mib: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

pub use triaged_testkit::rss::{rss_mib, rss_mib_of};

/// Feeds `n` distinct firing alerts (100 checks per CI over a synthetic estate
/// of `n / 100` CIs) to a core and reports the memory the live fingerprints take.
pub fn fingerprints(rules_dir: &Path, n: u64) -> Result<MemoryFigure, BenchError> {
    const CHECKS_PER_CI: u64 = 100;
    let rules = Arc::new(RuleSet::load_dir(rules_dir).map_err(|e| BenchError::Setup(join(&e)))?);
    let cis = (n / CHECKS_PER_CI).max(1) as usize;
    let cmdb = estate(cis).map_err(BenchError::Setup)?;
    let vms: Vec<String> = cmdb.cis().iter().filter(|c| c.kind == "vm").map(|c| c.name.clone()).collect();
    if vms.is_empty() {
        return Err(BenchError::Setup("the synthetic estate has no VM".into()));
    }
    let mut core = Core::new(CoreConfig::from_config(&Default::default()), rules, Arc::new(cmdb));
    let (baseline, _) = rss_mib();
    let now = Utc::now();
    let start = Instant::now();
    let per_vm = n.div_ceil(vms.len() as u64);
    let mut fed = 0u64;
    'outer: for k in 0..per_vm {
        for vm in &vms {
            if fed == n {
                break 'outer;
            }
            let payload = format!(
                r#"{{"status":"firing","alerts":[{{"status":"firing","labels":{{"alertname":"Check{k}","severity":"warning","instance":"{vm}:9100","job":"node"}},"annotations":{{"summary":"check {k} failing"}},"startsAt":"{}"}}]}}"#,
                now.to_rfc3339()
            );
            let events = triaged::source::decode::decode(triaged::config::Format::Alertmanager, payload.as_bytes(), now)
                .map_err(|e| BenchError::Setup(format!("generated alert does not decode: {e}")))?;
            for ev in &events {
                core.handle(ev, now);
            }
            fed += 1;
            if fed.is_multiple_of(4096) {
                drop(core.take_actions());
            }
        }
    }
    drop(core.take_actions());
    let seconds = start.elapsed().as_secs_f64();
    let held = core.fingerprint_count() as u64;
    if held < n {
        return Err(BenchError::Setup(format!("the core holds {held} fingerprints after {n} distinct alerts")));
    }
    let (rss, peak) = rss_mib();
    std::hint::black_box(&core);
    Ok(MemoryFigure {
        what: "live fingerprints".into(),
        items: held,
        seconds,
        baseline_rss_mib: baseline,
        rss_mib: rss,
        peak_rss_mib: peak,
    })
}

/// Feeds `n` distinct firing alerts as a stream over event time (1,000 a
/// second) to a core with expiry on (`stale_after` 60 s, reopen window
/// 60 s), ticking each second and acknowledging every action, and reports
/// the peak: expired alerts resolve and their state goes, so the live set
/// stays about a minute and a half of the stream whatever `n` is.
pub fn fingerprints_expiring(rules_dir: &Path, n: u64) -> Result<MemoryFigure, BenchError> {
    const PER_SECOND: u64 = 1_000;
    let rules = Arc::new(RuleSet::load_dir(rules_dir).map_err(|e| BenchError::Setup(join(&e)))?);
    let d = |s: &str| triaged::config::HumanDuration(triaged::config::HumanDuration::parse(s).expect("valid"));
    let cc = triaged::config::CorrelationConfig { stale_after: d("60s"), reopen_window: d("60s"), ..Default::default() };
    let mut core = Core::new(CoreConfig::from_config(&cc), rules, Arc::new(Snapshot::empty()));
    let (baseline, _) = rss_mib();
    let t0 = Utc::now();
    let start = Instant::now();
    let mut most = 0usize;
    for i in 0..n {
        let at = t0 + chrono::Duration::milliseconds((i * 1000 / PER_SECOND) as i64);
        let payload = format!(
            r#"{{"status":"firing","alerts":[{{"status":"firing","labels":{{"alertname":"Check{i}","severity":"warning","instance":"host-{}:9100","job":"node"}},"annotations":{{"summary":"check {i} failing"}},"startsAt":"{}"}}]}}"#,
            i % 10_000,
            at.to_rfc3339()
        );
        let events = triaged::source::decode::decode(triaged::config::Format::Alertmanager, payload.as_bytes(), at)
            .map_err(|e| BenchError::Setup(format!("generated alert does not decode: {e}")))?;
        for ev in &events {
            core.handle(ev, at);
        }
        if (i + 1) % PER_SECOND == 0 {
            core.tick(at);
            for a in core.take_actions() {
                core.ack(a.id);
            }
            most = most.max(core.fingerprint_count());
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let (rss, peak) = rss_mib();
    std::hint::black_box(&core);
    Ok(MemoryFigure {
        what: format!("{n} distinct fingerprints, expiring (at most {most} live)"),
        items: n,
        seconds,
        baseline_rss_mib: baseline,
        rss_mib: rss,
        peak_rss_mib: peak,
    })
}

/// Feeds `n` alerts, each with one 900 KB field (the check, a label or the
/// summary, in turn; the decoder takes messages up to 1 MiB), through
/// what the daemon does with an event (field caps, the core, the explain
/// caches) and reports the memory they added.
pub fn oversized_events(rules_dir: &Path, n: u64) -> Result<MemoryFigure, BenchError> {
    let rules = Arc::new(RuleSet::load_dir(rules_dir).map_err(|e| BenchError::Setup(join(&e)))?);
    let mut core = Core::new(CoreConfig::from_config(&Default::default()), rules, Arc::new(Snapshot::empty()));
    let log = triaged::server::explain::DecisionLog::default();
    let big = "x".repeat(900_000);
    let (baseline, _) = rss_mib();
    let now = Utc::now();
    let start = Instant::now();
    for i in 0..n {
        let (check, blob, summary) = match i % 3 {
            0 => (big.as_str(), "", ""),
            1 => ("", big.as_str(), ""),
            _ => ("", "", big.as_str()),
        };
        let payload = format!(
            r#"{{"status":"firing","alerts":[{{"status":"firing","labels":{{"alertname":"Big{i}{check}","severity":"warning","instance":"host-{i}:9100","blob":"{blob}"}},"annotations":{{"summary":"s{summary}"}},"startsAt":"{}"}}]}}"#,
            now.to_rfc3339()
        );
        let events = triaged::source::decode::decode(triaged::config::Format::Alertmanager, payload.as_bytes(), now)
            .map_err(|e| BenchError::Setup(format!("generated alert does not decode: {e}")))?;
        for mut ev in events {
            ev.cap_fields();
            let d = core.handle(&ev, now);
            log.record(&ev, &d, now);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let (rss, peak) = rss_mib();
    std::hint::black_box((&core, &log));
    Ok(MemoryFigure {
        what: "events with 900 KB fields".into(),
        items: n,
        seconds,
        baseline_rss_mib: baseline,
        rss_mib: rss,
        peak_rss_mib: peak,
    })
}

/// Loads a CMDB file and reports the time and memory it took.
pub fn cmdb_load(path: &Path) -> Result<MemoryFigure, BenchError> {
    let (baseline, _) = rss_mib();
    let start = Instant::now();
    let cmdb = Snapshot::load(path).map_err(|e| BenchError::Setup(format!("{}: {}", path.display(), join(&e))))?;
    let seconds = start.elapsed().as_secs_f64();
    let (rss, peak) = rss_mib();
    Ok(MemoryFigure {
        what: "CMDB load".into(),
        items: cmdb.len() as u64,
        seconds,
        baseline_rss_mib: baseline,
        rss_mib: rss,
        peak_rss_mib: peak,
    })
}

/// Writes a synthetic CMDB of about `n` CIs as JSON (the format for big
/// estates); returns its size in bytes.
pub fn write_cmdb(path: &Path, n: usize) -> Result<u64, BenchError> {
    let text = serde_json::to_string(&synthetic(&GenParams::scaled(n))).map_err(|e| BenchError::Setup(e.to_string()))?;
    std::fs::write(path, &text).map_err(|e| BenchError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
    Ok(text.len() as u64)
}

/// Runs `exe --phase <phase> <args>` and reads the figure it prints.
pub fn in_child(exe: &Path, phase: &str, args: &[String]) -> Result<MemoryFigure, BenchError> {
    let out = std::process::Command::new(exe)
        .arg("--phase")
        .arg(phase)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| BenchError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", exe.display()))))?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!("phase {phase} failed ({})", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| BenchError::Setup(format!("phase {phase} printed {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_alerts_become_live_fingerprints() {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let f = fingerprints(&root.join("rules"), 2_000).unwrap();
        assert_eq!(f.items, 2_000);
        assert!(f.rss_mib >= f.baseline_rss_mib && f.peak_rss_mib >= f.rss_mib, "{f:?}");
    }

    #[test]
    fn a_written_cmdb_loads_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmdb.json");
        assert!(write_cmdb(&path, 2_000).unwrap() > 0);
        let f = cmdb_load(&path).unwrap();
        assert!((1_800..2_200).contains(&f.items), "{f:?}");
    }
}
