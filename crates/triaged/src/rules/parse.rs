//! Reading one rule file: the YAML document as written (`*Spec`, every struct
//! `deny_unknown_fields`), checked and compiled into [`Rule`]s, every error
//! with the file and the line of the rule it is in.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::Deserialize;

use crate::config::HumanDuration;
use crate::event::{Event, Severity};
use crate::rules::template::Template;

use super::{Cond, Group, Rule, RuleError, RuleLoc, Suppress, Window};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSpec {
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "match")]
    matches: BTreeMap<String, CondSpec>,
    #[serde(default)]
    bind: Option<String>,
    #[serde(default)]
    dedup_key: Option<String>,
    #[serde(default)]
    set: Option<SetSpec>,
    #[serde(default)]
    drop: bool,
    #[serde(default)]
    suppress: Option<SuppressSpec>,
    #[serde(default)]
    group: Option<GroupSpec>,
    #[serde(default)]
    correlate: Option<CorrelateSpec>,
    #[serde(default)]
    stop: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum CondSpec {
    Equals(String),
    Op(OpSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OpSpec {
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    not_regex: Option<String>,
    #[serde(default, rename = "in")]
    one_of: Option<Vec<String>>,
    #[serde(default)]
    exists: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetSpec {
    #[serde(default)]
    severity: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct SuppressSpec {
    #[serde(default)]
    in_maintenance: bool,
    #[serde(default)]
    windows: Vec<WindowSpec>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct WindowSpec {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupSpec {
    by: Vec<String>,
    window: HumanDuration,
    #[serde(default)]
    unbound_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CorrelateSpec {
    #[serde(default)]
    topology: bool,
    #[serde(default)]
    window: Option<HumanDuration>,
    #[serde(default)]
    min_severity: Option<String>,
}

/// Line (1-based) of the first line at or after `from_line` containing `needle`.
pub(super) fn find_line(text: &str, from_line: usize, needle: &str) -> Option<usize> {
    text.lines().enumerate().skip(from_line.saturating_sub(1)).find(|(_, l)| l.contains(needle)).map(|(i, _)| i + 1)
}

/// Line where the `nth` (0-based) rule called `name` starts (its `name:` entry).
pub(super) fn rule_line(text: &str, name: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start().trim_start_matches('-').trim_start();
            t.strip_prefix("name:").is_some_and(|rest| rest.trim().trim_matches(|c| c == '"' || c == '\'') == name)
        })
        .nth(nth)
        .map_or(1, |(i, _)| i + 1)
}

pub(super) fn parse_file(path: &Path, text: &str, errors: &mut Vec<RuleError>) -> Vec<Rule> {
    let spec: FileSpec = match yaml_serde::from_str(text) {
        Ok(s) => s,
        Err(e) => {
            errors.push(RuleError { file: path.to_owned(), line: e.location().map(|l| l.line()), message: e.to_string() });
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for spec in spec.rules {
        let nth = seen.entry(spec.name.clone()).or_insert(0);
        let line = rule_line(text, &spec.name, *nth);
        *nth += 1;
        let mut err = |needle: Option<&str>, message: String| {
            let at = needle.and_then(|n| find_line(text, line, n)).unwrap_or(line);
            errors.push(RuleError { file: path.to_owned(), line: Some(at), message: format!("rule `{}`: {message}", spec.name) });
        };
        if spec.name.trim().is_empty() {
            err(None, "`name` must not be empty".into());
        }
        let mut conds = Vec::new();
        for (field, cond) in &spec.matches {
            if !Event::is_known_field(field) || field == "ci" {
                err(
                    Some(field),
                    format!(
                        "match: unknown field `{field}` (use source, check, severity, status, summary, host, service, ip, source_id, labels.<name>, annotations.<name>)"
                    ),
                );
                continue;
            }
            let compile = |re: &str| Regex::new(re).map_err(|e| format!("match.{field}: invalid regex: {e}"));
            let c = match cond {
                CondSpec::Equals(v) => Ok(Cond::Equals(v.clone())),
                CondSpec::Op(op) => {
                    let set = [op.regex.is_some(), op.not_regex.is_some(), op.one_of.is_some(), op.exists.is_some()];
                    if set.iter().filter(|b| **b).count() != 1 {
                        Err(format!("match.{field}: give exactly one of regex, not_regex, in, exists"))
                    } else if let Some(re) = &op.regex {
                        compile(re).map(Cond::Regex)
                    } else if let Some(re) = &op.not_regex {
                        compile(re).map(Cond::NotRegex)
                    } else if let Some(list) = &op.one_of {
                        Ok(Cond::OneOf(list.iter().cloned().collect()))
                    } else {
                        Ok(Cond::Exists(op.exists.unwrap_or(true)))
                    }
                }
            };
            match c {
                Ok(c) => conds.push((field.clone(), c)),
                Err(m) => err(Some(field), m),
            }
        }
        let mut template = |key: &str, t: &Option<String>| -> Option<Template> {
            let t = t.as_ref()?;
            match Template::parse(t) {
                Ok(t) => Some(t),
                Err(m) => {
                    err(Some(key), format!("{key}: {m}"));
                    None
                }
            }
        };
        let bind = template("bind", &spec.bind);
        let dedup_key = template("dedup_key", &spec.dedup_key);
        let mut severity = |needle: &str, key: &str, s: Option<&String>| -> Option<Severity> {
            let s = s?;
            let sev = Severity::parse(s);
            if sev.is_none() {
                err(Some(needle), format!("{key}: unknown severity `{s}`"));
            }
            sev
        };
        let set_severity = severity("severity", "set.severity", spec.set.as_ref().and_then(|s| s.severity.as_ref()));
        let topology_min_severity =
            severity("min_severity", "correlate.min_severity", spec.correlate.as_ref().and_then(|c| c.min_severity.as_ref()));
        let suppress = spec.suppress.as_ref().map(|s| {
            for w in &s.windows {
                if w.end <= w.start {
                    err(Some("windows"), format!("suppress.windows: end {} is not after start {}", w.end, w.start));
                }
            }
            Suppress {
                in_maintenance: s.in_maintenance,
                windows: s.windows.iter().map(|w| Window { start: w.start, end: w.end, reason: w.reason.clone() }).collect(),
            }
        });
        let group = spec.group.as_ref().map(|g| {
            if g.by.is_empty() {
                err(Some("group"), "group.by must list at least one field".into());
            }
            for f in &g.by {
                if !Event::is_known_field(f) {
                    err(Some(f), format!("group.by: {}", Event::unknown_field(f)));
                }
            }
            if g.unbound_only && g.by.iter().any(|f| f == "ci") {
                err(Some("group"), "group.by names `ci` but unbound_only is set: an unbound event has no CI".into());
            }
            Group { by: g.by.clone(), window: g.window.0, unbound_only: g.unbound_only }
        });
        let topology = spec.correlate.as_ref().filter(|c| c.topology).map(|c| c.window.map(|w| w.0));
        if spec.correlate.as_ref().is_some_and(|c| !c.topology && c.window.is_some()) {
            err(Some("correlate"), "correlate.window is set but topology is false".into());
        }
        out.push(Rule {
            name: spec.name.clone(),
            description: spec.description.clone(),
            loc: RuleLoc { file: path.to_owned(), line },
            conds,
            bind,
            dedup_key,
            set_severity,
            drop: spec.drop,
            suppress,
            group,
            topology,
            topology_min_severity,
            stop: spec.stop,
        });
    }
    out
}
