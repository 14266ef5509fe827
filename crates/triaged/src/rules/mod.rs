//! Rule files: YAML documents in `rules/`, loaded in file-name order.
//!
//! ```yaml
//! rules:
//!   - name: prometheus-instance-host          # unique across all files
//!     description: bind node alerts to the host part of `instance`
//!     match:                                   # every condition must hold
//!       source: alertmanager                   # equals
//!       labels.instance: { regex: '^(?P<host>[^:]+):\d+$' }   # named groups become template fields
//!       severity: { in: [critical, major] }
//!       labels.team: { exists: true }
//!       check: { not_regex: '^Watchdog$' }
//!     bind: "{host}"                           # CI name, alias or IP to bind the event to
//!     dedup_key: "{source}|{ci}|{check}"       # fingerprint template
//!     set: { severity: critical }              # override the event's severity
//!     drop: false                              # true: discard firing events (resolves still pass)
//!     suppress:
//!       in_maintenance: true                   # CI has an active CMDB maintenance window
//!       windows: [{ start: 2026-12-24T18:00:00Z, end: 2026-12-26T06:00:00Z, reason: "freeze" }]
//!     group: { by: [labels.alertname, labels.cluster], window: 10m }
//!     correlate: { topology: true, window: 5m, min_severity: minor }  # below min_severity: context only
//!     stop: false                              # true: later rules are not evaluated
//! ```
//! Every matching rule applies; for each setting the last matching rule that
//! sets it wins, and the decision remembers which rule that was (for
//! explanations). **Regexes are compiled once at load; every error names the
//! file and line.**

mod parse;
pub mod template;

use self::parse::parse_file;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use regex::Regex;

use crate::event::{Event, Severity, Status};
use crate::rules::template::Template;

/// A rule-file problem, located by file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}: {message}", file.display(), line.map_or_else(|| "-".to_string(), |l| l.to_string()))]
pub struct RuleError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// Where a rule lives, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLoc {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for RuleLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.file.file_name().map_or_else(|| self.file.display().to_string(), |n| n.to_string_lossy().into());
        write!(f, "{name}:{}", self.line)
    }
}

#[derive(Debug)]
enum Cond {
    Equals(String),
    Regex(Regex),
    NotRegex(Regex),
    OneOf(HashSet<String>),
    Exists(bool),
}

/// A planned suppression window from a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub reason: Option<String>,
}

/// Suppression settings of a rule.
#[derive(Debug, Clone, Default)]
pub struct Suppress {
    pub in_maintenance: bool,
    pub windows: Vec<Window>,
}

/// Time-window grouping of a rule.
#[derive(Debug, Clone)]
pub struct Group {
    pub by: Vec<String>,
    pub window: Duration,
    /// Applies only to events bound to no CI: a bound event is correlated
    /// by topology, or is an incident of its own.
    pub unbound_only: bool,
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub loc: RuleLoc,
    conds: Vec<(String, Cond)>,
    pub bind: Option<Template>,
    pub dedup_key: Option<Template>,
    pub set_severity: Option<Severity>,
    pub drop: bool,
    pub suppress: Option<Suppress>,
    pub group: Option<Group>,
    /// `Some(window)` when topology correlation is enabled; `None` window = core default.
    pub topology: Option<Option<Duration>>,
    /// `correlate.min_severity`: overrides `correlation.topology_min_severity`.
    pub topology_min_severity: Option<Severity>,
    pub stop: bool,
}

/// A value chosen by a rule, remembering which rule chose it.
#[derive(Debug, Clone, PartialEq)]
pub struct ByRule<T> {
    pub rule: String,
    pub value: T,
}

/// What the rules say about one event. References point into the `RuleSet`.
#[derive(Debug, Default)]
pub struct Classification<'r> {
    /// Names of matching rules, in evaluation order.
    pub matched: Vec<&'r str>,
    /// Named regex captures from matching conditions.
    pub captures: HashMap<String, String>,
    pub drop: Option<&'r str>,
    pub severity: Option<ByRule<Severity>>,
    pub bind: Option<(&'r str, &'r Template)>,
    pub dedup_key: Option<(&'r str, &'r Template)>,
    pub suppress: Vec<(&'r str, &'r Suppress)>,
    pub group: Option<(&'r str, &'r Group)>,
    pub topology: Option<(&'r str, Option<Duration>)>,
    /// The lowest severity the topology rule correlates, when it says.
    pub topology_min_severity: Option<Severity>,
}

impl Rule {
    /// Names of the regex captures this rule's conditions set.
    fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.conds
            .iter()
            .filter_map(|(_, c)| if let Cond::Regex(re) = c { Some(re) } else { None })
            .flat_map(|re| re.capture_names().flatten())
    }

    fn matches(&self, ev: &Event, captures: &mut HashMap<String, String>) -> bool {
        let mut local: Vec<(String, String)> = Vec::new();
        for (field, cond) in &self.conds {
            let value = ev.field(field);
            let ok = match cond {
                Cond::Equals(want) => value == Some(want.as_str()),
                Cond::OneOf(set) => value.is_some_and(|v| set.contains(v)),
                Cond::Exists(want) => value.is_some() == *want,
                Cond::NotRegex(re) => !value.is_some_and(|v| re.is_match(v)),
                Cond::Regex(re) => match value {
                    None => false,
                    Some(v) => {
                        if re.captures_len() > 1 {
                            match re.captures(v) {
                                None => false,
                                Some(c) => {
                                    for name in re.capture_names().flatten() {
                                        if let Some(m) = c.name(name) {
                                            local.push((name.to_string(), m.as_str().to_string()));
                                        }
                                    }
                                    true
                                }
                            }
                        } else {
                            re.is_match(v)
                        }
                    }
                },
            };
            if !ok {
                return false;
            }
        }
        captures.extend(local);
        true
    }
}

/// Template placeholders that are neither an event field nor a capture of
/// some rule's regex: they would render empty and fold unrelated alerts
/// into one fingerprint.
fn unknown_template_fields(rules: &[Rule], files: &[(PathBuf, String)]) -> Vec<RuleError> {
    let captures: HashSet<&str> = rules.iter().flat_map(|r| r.capture_names()).collect();
    let mut errors = Vec::new();
    for rule in rules {
        let text = files.iter().find(|(p, _)| *p == rule.loc.file).map_or("", |(_, t)| t.as_str());
        for (key, template) in [("bind", &rule.bind), ("dedup_key", &rule.dedup_key)] {
            for f in template.iter().flat_map(|t| t.fields()) {
                if !Event::is_known_field(f) && !captures.contains(f) {
                    errors.push(RuleError {
                        file: rule.loc.file.clone(),
                        line: Some(parse::find_line(text, rule.loc.line, key).unwrap_or(rule.loc.line)),
                        message: format!("rule `{}`: {key}: {}, nor a capture of any rule's regex", rule.name, Event::unknown_field(f)),
                    });
                }
            }
        }
    }
    errors
}

/// All rules, in evaluation order.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    files: Vec<PathBuf>,
}

impl RuleSet {
    /// Loads every `*.yaml` / `*.yml` file of `dir` in name order. All errors
    /// of all files are returned together.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, Vec<RuleError>> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| vec![RuleError { file: dir.to_owned(), line: None, message: format!("cannot read rules directory: {e}") }])?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for f in &files {
            match std::fs::read_to_string(f) {
                Ok(t) => texts.push((f.clone(), t)),
                Err(e) => errors.push(RuleError { file: f.clone(), line: None, message: e.to_string() }),
            }
        }
        match RuleSet::from_texts(&texts) {
            Ok(rs) if errors.is_empty() => Ok(rs),
            Ok(_) => Err(errors),
            Err(mut e) => {
                errors.append(&mut e);
                Err(errors)
            }
        }
    }

    /// Builds a rule set from `(path, text)` pairs, in the given order.
    pub fn from_texts(files: &[(PathBuf, String)]) -> Result<RuleSet, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut rules: Vec<Rule> = Vec::new();
        let mut names: HashMap<String, RuleLoc> = HashMap::new();
        for (path, text) in files {
            for rule in parse_file(path, text, &mut errors) {
                if let Some(prev) = names.get(&rule.name) {
                    errors.push(RuleError {
                        file: path.clone(),
                        line: Some(rule.loc.line),
                        message: format!("rule `{}` is already defined at {prev}", rule.name),
                    });
                    continue;
                }
                names.insert(rule.name.clone(), rule.loc.clone());
                rules.push(rule);
            }
        }
        errors.extend(unknown_template_fields(&rules, files));
        if errors.is_empty() {
            Ok(RuleSet { rules, files: files.iter().map(|(p, _)| p.clone()).collect() })
        } else {
            Err(errors)
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Evaluates every rule against `ev`.
    pub fn classify(&self, ev: &Event) -> Classification<'_> {
        let mut c = Classification::default();
        for r in &self.rules {
            if !r.matches(ev, &mut c.captures) {
                continue;
            }
            c.matched.push(&r.name);
            if r.drop {
                c.drop = Some(&r.name);
            }
            if let Some(s) = r.set_severity {
                c.severity = Some(ByRule { rule: r.name.clone(), value: s });
            }
            if let Some(t) = &r.bind {
                c.bind = Some((&r.name, t));
            }
            if let Some(t) = &r.dedup_key {
                c.dedup_key = Some((&r.name, t));
            }
            if let Some(s) = &r.suppress {
                c.suppress.push((&r.name, s));
            }
            if let Some(g) = &r.group {
                c.group = Some((&r.name, g));
            }
            if let Some(w) = r.topology {
                c.topology = Some((&r.name, w));
                c.topology_min_severity = r.topology_min_severity;
            }
            if r.stop {
                break;
            }
        }
        c
    }
}

impl Classification<'_> {
    /// True if a `drop` rule matched and the event is firing (resolves always pass).
    pub fn drops(&self, status: Status) -> Option<&str> {
        match status {
            Status::Firing => self.drop,
            Status::Resolved => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::CiHint;

    fn ev(source: &str, check: &str, labels: &[(&str, &str)]) -> Event {
        Event {
            source: source.into(),
            source_id: None,
            ci: CiHint::default(),
            check: check.into(),
            severity: Severity::Warning,
            status: Status::Firing,
            summary: String::new(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: Default::default(),
            time: Utc::now(),
            origin: None,
            ends_at: None,
        }
    }

    fn set(text: &str) -> Result<RuleSet, Vec<RuleError>> {
        RuleSet::from_texts(&[(PathBuf::from("rules/t.yaml"), text.to_string())])
    }

    #[test]
    fn later_rules_override_and_captures_flow() {
        let rs = set(r#"
rules:
  - name: bind-instance
    match:
      source: alertmanager
      labels.instance: { regex: '^(?P<host>[^:]+):\d+$' }
    bind: "{host}"
    dedup_key: "{source}|{host}|{check}"
  - name: crit-disk
    match: { check: { in: [DiskFull, DiskReadOnly] } }
    set: { severity: critical }
  - name: topo
    match: {}
    correlate: { topology: true, window: 5m }
    stop: true
  - name: never-reached
    match: {}
    drop: true
"#)
        .unwrap();
        let e = ev("alertmanager", "DiskFull", &[("instance", "db-01:9100")]);
        let c = rs.classify(&e);
        assert_eq!(c.matched, ["bind-instance", "crit-disk", "topo"]);
        assert_eq!(c.captures.get("host").map(String::as_str), Some("db-01"));
        assert_eq!(c.severity.as_ref().map(|s| s.value), Some(Severity::Critical));
        assert_eq!(c.topology, Some(("topo", Some(Duration::from_secs(300)))));
        assert!(c.drop.is_none());
        let (rule, t) = c.dedup_key.unwrap();
        assert_eq!(rule, "bind-instance");
        assert_eq!(t.render(&e, None, &c.captures), "alertmanager|db-01|DiskFull");
    }

    #[test]
    fn conditions() {
        let rs = set(r#"
rules:
  - name: r
    match:
      labels.team: { exists: true }
      labels.env: { exists: false }
      check: { not_regex: '^Watchdog$' }
"#)
        .unwrap();
        assert_eq!(rs.classify(&ev("x", "Up", &[("team", "a")])).matched.len(), 1);
        assert!(rs.classify(&ev("x", "Watchdog", &[("team", "a")])).matched.is_empty());
        assert!(rs.classify(&ev("x", "Up", &[("team", "a"), ("env", "p")])).matched.is_empty());
        assert!(rs.classify(&ev("x", "Up", &[])).matched.is_empty());
    }

    #[test]
    fn drop_never_applies_to_resolves() {
        let rs = set("rules:\n  - name: d\n    match: {}\n    drop: true\n").unwrap();
        let c = rs.classify(&ev("x", "y", &[]));
        assert_eq!(c.drops(Status::Firing), Some("d"));
        assert_eq!(c.drops(Status::Resolved), None);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("rules:\n  - name: a\n    match:\n      check: { regex: '(' }\n", 4, "invalid regex"),
            ("rules:\n  - name: a\n    match:\n      hostname: x\n", 4, "unknown field `hostname`"),
            ("rules:\n  - name: a\n    bogus: 1\n", 3, "unknown field `bogus`"),
            ("rules:\n  - name: a\n    set: { severity: huge }\n", 3, "unknown severity"),
            ("rules:\n  - name: a\n    dedup_key: '{x'\n", 3, "unclosed"),
            ("rules:\n  - name: a\n  - name: a\n", 3, "already defined"),
            ("rules:\n  - name: a\n    match: { check: { regex: a, in: [b] } }\n", 3, "exactly one"),
            ("rules:\n  - name: a\n    group: { by: [], window: 5m }\n", 3, "at least one"),
            ("rules:\n  - name: a\n    group: { by: [check], window: 5x }\n", 3, "unknown unit"),
            ("rules:\n  - name: a\n    group: { by: [chek], window: 5m }\n", 3, "did you mean `check`"),
            ("rules:\n  - name: a\n    group: { by: [ci], window: 5m, unbound_only: true }\n", 3, "an unbound event has no CI"),
            (
                "rules:\n  - name: a\n    correlate: { topology: true, min_severity: huge }\n",
                3,
                "correlate.min_severity: unknown severity `huge`",
            ),
            // A typo renders empty and folds unrelated alerts together.
            ("rules:\n  - name: a\n    match: { source: zabbix }\n    dedup_key: '{source}|{chek}'\n", 4, "`chek` is not an event field"),
            ("rules:\n  - name: a\n    bind: '{hots}'\n", 3, "did you mean `host`"),
            (
                "rules:\n  - name: a\n    suppress:\n      windows: [{ start: 2026-01-02T00:00:00Z, end: 2026-01-01T00:00:00Z }]\n",
                4,
                "not after start",
            ),
        ];
        for (text, line, msg) in cases {
            let errs = set(text).unwrap_err();
            assert_eq!(errs.len(), 1, "{text}: {errs:?}");
            assert_eq!(errs[0].line, Some(*line), "{text}: {}", errs[0]);
            assert!(errs[0].message.contains(msg), "{text}: {}", errs[0]);
            assert!(errs[0].to_string().starts_with(&format!("rules/t.yaml:{line}: ")), "{}", errs[0]);
        }
    }

    #[test]
    fn a_template_may_use_any_rules_capture_and_the_bound_ci() {
        let text = "rules:\n  - name: k\n    dedup_key: '{ci}|{labels.job}|{port}'\n  - name: p\n    match:\n      check: { regex: 'port (?P<port>[0-9]+)' }\n";
        set(text).unwrap_or_else(|e| panic!("{e:?}"));
    }

    #[test]
    fn shipped_rules_load() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("rules");
        let rs = RuleSet::load_dir(&dir).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(rs.len() >= 5);
    }
}
