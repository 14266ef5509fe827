//! `[sinks.NAME]` and `[[routes]]`: several named sinks, and which incidents
//! go to which. A lone `[sink]` is one sink named `default` that every
//! incident is routed to; the two forms do not mix.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::SinkConfig;

/// One `[[routes]]` entry: the incidents it matches go to its `sinks`.
/// Every matcher given must match; a list matches any of its values.
/// Every route that matches contributes its sinks (not the first only).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// For messages only.
    #[serde(default)]
    pub name: Option<String>,
    /// Names of `[sinks.NAME]` tables.
    pub sinks: Vec<String>,
    /// Matches the highest priority the incident reached (`peak_priority`),
    /// so a page keeps getting its updates and its resolve after a downgrade.
    #[serde(default, deserialize_with = "one_or_many")]
    pub priority: Option<Vec<u8>>,
    /// Matches the incident's assignment group (the CI's `owner_group`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub owner_group: Option<Vec<String>>,
    /// Matches the incident's on-call rotation (the CI's `oncall`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub oncall: Option<Vec<String>>,
    /// Matches when any impacted business service is one of these.
    #[serde(default, deserialize_with = "one_or_many")]
    pub service: Option<Vec<String>>,
}

impl RouteConfig {
    /// `name`, else `routes[i]`, for messages.
    pub fn label(&self, i: usize) -> String {
        match &self.name {
            Some(n) => format!("route `{n}`"),
            None => format!("routes[{i}]"),
        }
    }
}

/// A value or a list of values.
fn one_or_many<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    }))
}

/// Whether `name` is a valid sink name: `[a-z0-9_-]+`.
pub fn valid_sink_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// What `check` and `run` refuse in the sinks and routes: `(field, message)`.
pub fn errors(sink: Option<&SinkConfig>, sinks: &BTreeMap<String, SinkConfig>, routes: &[RouteConfig]) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    let mut err = |field: String, message: String| errs.push((field, message));
    match (sink.is_some(), sinks.is_empty()) {
        (true, false) => {
            err("sinks".into(), "[sink] and [sinks.NAME] are both set: use one form (a lone [sink] is the sink `default`)".into())
        }
        (false, true) => err("sink".into(), "no sink: set [sink], or [sinks.NAME] with [[routes]]".into()),
        _ => {}
    }
    if sink.is_some() && !routes.is_empty() {
        err("routes".into(), "[[routes]] need [sinks.NAME]: a lone [sink] gets every incident".into());
    }
    if !sinks.is_empty() && routes.is_empty() {
        err("routes".into(), "[sinks.NAME] need [[routes]] saying which incidents go to which sink".into());
    }
    for name in sinks.keys().filter(|n| !valid_sink_name(n)) {
        err(format!("sinks.{name}"), "a sink name is lowercase letters, digits, `_` and `-`".into());
    }
    for (i, r) in routes.iter().enumerate() {
        if r.sinks.is_empty() {
            err(format!("routes[{i}].sinks"), format!("{} names no sink", r.label(i)));
        }
        for s in r.sinks.iter().filter(|s| !sinks.contains_key(*s)) {
            let known = sinks.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            err(format!("routes[{i}].sinks"), format!("{} names the unknown sink `{s}` (sinks: {known})", r.label(i)));
        }
        if let Some(p) = r.priority.as_ref().and_then(|p| p.iter().find(|p| !(1..=5).contains(*p))) {
            err(format!("routes[{i}].priority"), format!("{p} is not a priority 1..5"));
        }
        let empty = [
            ("priority", r.priority.as_ref().is_some_and(Vec::is_empty)),
            ("owner_group", r.owner_group.as_ref().is_some_and(Vec::is_empty)),
            ("oncall", r.oncall.as_ref().is_some_and(Vec::is_empty)),
            ("service", r.service.as_ref().is_some_and(Vec::is_empty)),
        ];
        for (field, _) in empty.iter().filter(|(_, e)| *e) {
            err(format!("routes[{i}].{field}"), "an empty list matches nothing: leave the matcher out to match every incident".into());
        }
    }
    errs
}

/// Sinks no route names: accepted, but they never get an incident.
pub fn unused_sinks<'a>(sinks: &'a BTreeMap<String, SinkConfig>, routes: &[RouteConfig]) -> Vec<&'a str> {
    sinks.keys().filter(|n| !routes.iter().any(|r| r.sinks.contains(n))).map(String::as_str).collect()
}
