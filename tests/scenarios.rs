//! Data-driven correlation tests: each `tests/fixtures/scenarios/*.yaml` holds a
//! CMDB, rules, a timeline of events and ticks (relative times, the clock is
//! passed in) and the exact sink actions and decisions expected.
//!
//! An action renders as `<time> <kind> P<priority> <scope> root=<ci|-> members=<n> firing=<n>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use triaged::config::{CorrelationConfig, HumanDuration};
use triaged::correlate::{Core, CoreConfig};
use triaged::event::{CiHint, Event, Origin, Severity, Status};
use triaged::incident::Action;
use triaged::rules::RuleSet;
use triaged::topology::Snapshot;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    correlation: BTreeMap<String, String>,
    /// CMDB file, relative to `tests/fixtures/`.
    cmdb: String,
    /// Rule file text.
    rules: String,
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
    ip: Option<String>,
    check: String,
    #[serde(default = "default_severity")]
    severity: String,
    #[serde(default)]
    resolved: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Event time relative to the start, when it differs from the step's
    /// (events that arrive late: a backlog, or a replay after a restart).
    #[serde(default)]
    time: Option<String>,
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
    /// Offsets (next offset of partition 0) safe to store at the end.
    #[serde(default)]
    safe_offset: Option<i64>,
}

fn secs(s: &str) -> chrono::Duration {
    chrono::Duration::from_std(HumanDuration::parse(s).unwrap_or_else(|e| panic!("{e}"))).unwrap()
}

fn fmt_at(t0: DateTime<Utc>, t: DateTime<Utc>) -> String {
    format!("{}s", (t - t0).num_milliseconds() as f64 / 1000.0)
}

fn render(t0: DateTime<Utc>, now: DateTime<Utc>, a: &Action) -> String {
    let i = &a.incident;
    let firing = i.members.iter().filter(|m| m.status == Status::Firing).count();
    format!(
        "{} {} P{} {} root={} members={} firing={}",
        fmt_at(t0, now),
        a.kind.as_str(),
        i.priority,
        i.scope,
        i.root_cause.as_ref().map_or("-", |c| c.id.as_str()),
        i.members.len(),
        firing
    )
}

fn run(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let sc: Scenario = serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let cmdb_path = path.parent().and_then(Path::parent).expect("fixtures dir").join(&sc.cmdb);
    let cmdb = Snapshot::load(&cmdb_path).map_err(|e| format!("{e:?}"))?;
    let rules = RuleSet::from_texts(&[(PathBuf::from("inline-rules.yaml"), sc.rules.clone())]).map_err(|e| format!("{e:?}"))?;
    let mut cc = CorrelationConfig::default();
    for (k, v) in &sc.correlation {
        let d = HumanDuration(HumanDuration::parse(v)?);
        match k.as_str() {
            "group_wait" => cc.group_wait = d,
            "update_interval" => cc.update_interval = d,
            "resolve_hold_down" => cc.resolve_hold_down = d,
            "reopen_window" => cc.reopen_window = d,
            "topology_window" => cc.topology_window = d,
            other => return Err(format!("unknown correlation setting {other}")),
        }
    }
    let mut core = Core::new(CoreConfig::from_config(&cc), Arc::new(rules), Arc::new(cmdb));
    let t0 = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    let mut offset = 0i64;
    let mut actions = Vec::new();
    let mut decisions: BTreeMap<String, u64> = BTreeMap::new();
    let mut unacked: Vec<u64> = Vec::new();
    for step in &sc.steps {
        let now = t0 + secs(&step.at);
        if step.ack {
            for id in unacked.drain(..) {
                core.ack(id);
            }
        }
        for fe in &step.events {
            for _ in 0..fe.times {
                let ev = Event {
                    source: fe.source.clone(),
                    source_id: None,
                    ci: CiHint { host: fe.host.clone(), service: None, ip: fe.ip.clone() },
                    check: fe.check.clone(),
                    severity: Severity::parse(&fe.severity).ok_or_else(|| format!("bad severity {}", fe.severity))?,
                    status: if fe.resolved { Status::Resolved } else { Status::Firing },
                    summary: String::new(),
                    labels: fe.labels.clone(),
                    annotations: Default::default(),
                    time: fe.time.as_deref().map_or(now, |t| t0 + secs(t)),
                    origin: Some(Origin { topic: "events".into(), partition: 0, offset }),
                };
                offset += 1;
                let d = core.handle(&ev, now);
                *decisions.entry(d.kind.as_str().to_string()).or_default() += 1;
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
        diff.push_str(&format!("actions:\n  expected: {:#?}\n  actual:   {:#?}\n", sc.expect.actions, actions));
    }
    if decisions != sc.expect.decisions {
        diff.push_str(&format!("decisions:\n  expected: {:?}\n  actual:   {:?}\n", sc.expect.decisions, decisions));
    }
    if let Some(want) = sc.expect.safe_offset {
        let got = core.take_offsets().into_iter().find(|(_, p, _)| *p == 0).map(|(_, _, o)| o);
        if got != Some(want) {
            diff.push_str(&format!("safe offset: expected {want}, actual {got:?}\n"));
        }
    }
    if diff.is_empty() {
        Ok(())
    } else {
        Err(diff)
    }
}

#[test]
fn scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    assert!(files.len() >= 5, "expected scenario fixtures in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        if let Err(e) = run(f) {
            failures.push(format!("== {}\n{e}", f.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(failures.is_empty(), "{} of {} scenarios failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}
