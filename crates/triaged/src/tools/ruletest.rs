//! Rule tests as files: a timeline of events with relative times, run through
//! the real correlation core on a virtual clock, and the exact incident actions
//! and decisions expected. `triaged test rules/` runs `rules/tests/*.yaml`
//! against the rules beside them; `tests/scenarios.rs` runs the core's own
//! scenarios, which carry their rules inline.
//!
//! ```yaml
//! description: a core switch storm becomes one incident
//! cmdb: ../../config/cmdb.yaml       # optional: relative to this file; else the suite's CMDB
//! changes: ../../config/changes.yaml # optional: a change calendar merged into the CMDB
//! rules: |                           # optional: inline rules; else the suite's rules
//!   rules: [...]
//! correlation: { group_wait: 30s }   # optional overrides of [correlation] (timers, flap_threshold)
//! start: 2030-03-14T23:00:00Z        # optional: the virtual clock's 0s (default 2026-11-24T12:00:00Z)
//! steps:
//!   - at: 0s                         # virtual time of the step
//!     events:
//!       - { source: zabbix, host: sw-core-par1-01, check: ICMP ping unreachable, severity: high }
//!       - { host: vm-1, check: Instance down, time: -5s, times: 3, resolved: false, labels: { job: node } }
//!       - { source: alertmanager, host: vm-2, check: HighLoad, ends: 120s }   # endsAt, relative to 0s
//!   - at: 30s                        # a step without events just advances the clock
//! expect:
//!   actions:                         # `<time> <kind> P<priority> <scope> root=<ci|-> members=<n> firing=<n>[ child][ group=<id>[ failed]]`
//!     - 30s open P1 topology:sw-core-par1-01 root=sw-core-par1-01 members=2 firing=2
//!   decisions: { new: 1, joined: 1 }
//!   safe_offset: 0                   # optional: the offset of partition 0 safe to commit at the end
//!   reasons: [under change CHG1]     # optional: texts each found in some decision's reason
//! ```
//!
//! Every action is acknowledged before the next step unless the step says
//! `ack: false` (a slow sink).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use crate::config::{CorrelationConfig, HumanDuration};
use crate::core::{Core, CoreConfig};
use crate::event::{CiHint, Event, Origin, Severity, Status};
use crate::incident::Action;
use crate::rules::RuleSet;
use crate::tools::diff::line_diff;
use crate::topology::Snapshot;

/// Why a rule test could not run (as opposed to ran and failed).
#[derive(Debug, thiserror::Error)]
pub enum RuleTestError {
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

fn invalid(file: &Path, message: impl Into<String>) -> RuleTestError {
    RuleTestError::Invalid { file: file.to_owned(), message: message.into() }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    correlation: BTreeMap<String, String>,
    /// The virtual clock's `0s`.
    #[serde(default)]
    start: Option<DateTime<Utc>>,
    /// CMDB file, relative to the test file.
    #[serde(default)]
    cmdb: Option<String>,
    /// Change calendar merged into the CMDB, relative to the test file.
    #[serde(default)]
    changes: Option<String>,
    /// Inline rule file text.
    #[serde(default)]
    rules: Option<String>,
    steps: Vec<Step>,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    at: String,
    #[serde(default)]
    events: Vec<FixtureEvent>,
    /// Acknowledge every action emitted so far before this step.
    #[serde(default = "yes")]
    ack: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureEvent {
    #[serde(default = "default_source")]
    source: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    ip: Option<String>,
    check: String,
    #[serde(default = "default_severity")]
    severity: String,
    #[serde(default)]
    resolved: bool,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Event time relative to the start, when it differs from the step's
    /// (events that arrive late: a backlog, or a replay after a restart).
    #[serde(default)]
    time: Option<String>,
    /// When the alert ends unless refreshed, relative to the start
    /// (Alertmanager's `endsAt`).
    #[serde(default)]
    ends: Option<String>,
    /// Repeat the event this many times (monitoring tools re-send).
    #[serde(default = "one")]
    times: u32,
}

fn default_source() -> String {
    "zabbix".into()
}
fn default_severity() -> String {
    "critical".into()
}
fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    actions: Vec<String>,
    decisions: BTreeMap<String, u64>,
    #[serde(default)]
    safe_offset: Option<i64>,
    /// Texts each found in at least one decision's reason.
    #[serde(default)]
    reasons: Vec<String>,
}

/// What a suite brings to tests that do not name their own rules or CMDB.
#[derive(Clone, Default)]
pub struct Defaults {
    pub rules: Option<Arc<RuleSet>>,
    pub cmdb: Option<Arc<Snapshot>>,
    pub correlation: CorrelationConfig,
}

/// The result of one test file.
#[derive(Debug)]
pub struct Outcome {
    pub file: PathBuf,
    /// Empty when the test passed; otherwise a readable diff.
    pub diff: String,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.diff.is_empty()
    }
}

/// Parses a duration such as `30s`, `-5s` or `2m` into a signed offset.
fn offset(file: &Path, s: &str) -> Result<chrono::Duration, RuleTestError> {
    let (neg, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
    let d = HumanDuration::parse(body).map_err(|e| invalid(file, format!("time `{s}`: {e}")))?;
    let d = chrono::Duration::from_std(d).map_err(|e| invalid(file, format!("time `{s}`: {e}")))?;
    Ok(if neg { -d } else { d })
}

fn fmt_at(t0: DateTime<Utc>, t: DateTime<Utc>) -> String {
    format!("{}s", (t - t0).num_milliseconds() as f64 / 1000.0)
}

/// One action as the expectations spell it.
pub fn render(t0: DateTime<Utc>, now: DateTime<Utc>, a: &Action) -> String {
    let i = &a.incident;
    let firing = i.members.iter().filter(|m| m.status == Status::Firing).count();
    format!(
        "{} {} P{} {} root={} members={} firing={}{}{}",
        fmt_at(t0, now),
        a.kind.as_str(),
        i.priority,
        i.scope,
        i.root_cause.as_ref().map_or("-", |c| c.id.as_str()),
        i.members.len(),
        firing,
        if i.parent.is_some() { " child" } else { "" },
        match &i.redundancy_group {
            Some(g) if g.failed => format!(" group={} failed", g.id),
            Some(g) => format!(" group={}", g.id),
            None => String::new(),
        }
    )
}

/// Runs the test in `path`.
pub fn run_file(path: &Path, defaults: &Defaults) -> Result<Outcome, RuleTestError> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e.to_string()))?;
    let sc: Scenario = yaml_serde::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
    let cmdb = match &sc.cmdb {
        Some(rel) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(rel);
            let errs = |e: Vec<crate::topology::CmdbError>| e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
            Arc::new(Snapshot::load(&p).map_err(|e| invalid(path, format!("cmdb: {}", errs(e))))?)
        }
        None => defaults.cmdb.clone().ok_or_else(|| invalid(path, "no `cmdb:` in the test and no CMDB for the suite"))?,
    };
    let cmdb = match &sc.changes {
        Some(rel) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(rel);
            let mut snapshot = (*cmdb).clone();
            crate::topology::changes::apply_calendar(&p, &mut snapshot, defaults.correlation.max_upstream_depth)
                .map_err(|e| invalid(path, format!("changes: {}", e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))))?;
            Arc::new(snapshot)
        }
        None => cmdb,
    };
    let rules = match &sc.rules {
        Some(text) => {
            let rs = RuleSet::from_texts(&[(path.with_extension("rules.yaml"), text.clone())])
                .map_err(|e| invalid(path, e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))?;
            Arc::new(rs)
        }
        None => defaults.rules.clone().ok_or_else(|| invalid(path, "no `rules:` in the test and no rules for the suite"))?,
    };
    let mut cc = defaults.correlation.clone();
    for (k, v) in &sc.correlation {
        if k == "flap_threshold" {
            cc.flap_threshold = v.parse().map_err(|_| invalid(path, format!("correlation.flap_threshold: `{v}` is not a count")))?;
            continue;
        }
        if k == "max_fingerprints" {
            cc.max_fingerprints = v.parse().map_err(|_| invalid(path, format!("correlation.max_fingerprints: `{v}` is not a count")))?;
            continue;
        }
        let d = HumanDuration(HumanDuration::parse(v).map_err(|e| invalid(path, format!("correlation.{k}: {e}")))?);
        match k.as_str() {
            "group_wait" => cc.group_wait = d,
            "update_interval" => cc.update_interval = d,
            "resolve_hold_down" => cc.resolve_hold_down = d,
            "reopen_window" => cc.reopen_window = d,
            "topology_window" => cc.topology_window = d,
            "topology_wait" => cc.topology_wait = d,
            "flap_window" => cc.flap_window = d,
            "max_lateness" => cc.max_lateness = d,
            "stale_after" => cc.stale_after = d,
            other => return Err(invalid(path, format!("unknown correlation setting `{other}`"))),
        }
    }

    let mut core = Core::new(CoreConfig::from_config(&cc), rules, cmdb);
    let t0 = sc.start.unwrap_or_else(|| Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).single().expect("valid start"));
    let mut next_offset = 0i64;
    let mut actions = Vec::new();
    let mut decisions: BTreeMap<String, u64> = BTreeMap::new();
    let mut reasons: Vec<String> = Vec::new();
    let mut unacked: Vec<u64> = Vec::new();
    for (i, step) in sc.steps.iter().enumerate() {
        let now = t0 + offset(path, &step.at)?;
        if step.ack {
            for id in unacked.drain(..) {
                core.ack(id);
            }
        }
        for fe in &step.events {
            let severity =
                Severity::parse(&fe.severity).ok_or_else(|| invalid(path, format!("steps[{i}]: unknown severity `{}`", fe.severity)))?;
            let time = match &fe.time {
                Some(t) => t0 + offset(path, t)?,
                None => now,
            };
            let ends_at = match &fe.ends {
                Some(t) => Some(t0 + offset(path, t)?),
                None => None,
            };
            for _ in 0..fe.times {
                let ev = Event {
                    source: fe.source.clone(),
                    source_id: None,
                    ci: CiHint { host: fe.host.clone(), service: fe.service.clone(), ip: fe.ip.clone() },
                    check: fe.check.clone(),
                    severity,
                    status: if fe.resolved { Status::Resolved } else { Status::Firing },
                    summary: fe.summary.clone(),
                    labels: fe.labels.clone(),
                    annotations: Default::default(),
                    time,
                    origin: Some(Origin { topic: "events".into(), partition: 0, offset: next_offset }),
                    ends_at,
                };
                next_offset += 1;
                let d = core.handle(&ev, now);
                *decisions.entry(d.kind.as_str().to_string()).or_default() += 1;
                reasons.push(d.reason);
            }
        }
        core.tick(now);
        for a in core.take_actions() {
            actions.push(render(t0, now, &a));
            unacked.push(a.id);
        }
    }

    let mut diff = String::new();
    if actions != sc.expect.actions {
        diff.push_str("actions (- expected, + actual):\n");
        diff.push_str(&line_diff(&sc.expect.actions, &actions));
    }
    if decisions != sc.expect.decisions {
        diff.push_str(&format!("decisions:\n  - {:?}\n  + {:?}\n", sc.expect.decisions, decisions));
    }
    for want in &sc.expect.reasons {
        if !reasons.iter().any(|r| r.contains(want.as_str())) {
            diff.push_str(&format!("no decision reason contains `{want}`; reasons:\n"));
            reasons.iter().for_each(|r| diff.push_str(&format!("  {r}\n")));
        }
    }
    if let Some(want) = sc.expect.safe_offset {
        let got = core.take_offsets().into_iter().find(|(_, p, _)| *p == 0).map(|(_, _, o)| o);
        if got != Some(want) {
            diff.push_str(&format!("safe offset: - {want}, + {got:?}\n"));
        }
    }
    Ok(Outcome { file: path.to_owned(), diff })
}

/// Every `*.yaml` file in `dir`, sorted.
pub fn test_files(dir: &Path) -> Result<Vec<PathBuf>, RuleTestError> {
    let entries = std::fs::read_dir(dir).map_err(|e| invalid(dir, format!("cannot read the test directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_positive_offsets() {
        let p = Path::new("t.yaml");
        assert_eq!(offset(p, "-5s").unwrap(), chrono::Duration::seconds(-5));
        assert_eq!(offset(p, "2m").unwrap(), chrono::Duration::seconds(120));
        assert!(offset(p, "soon").unwrap_err().to_string().contains("t.yaml: time `soon`"));
    }
}
