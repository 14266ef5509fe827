//! The normalized monitoring event every decoder produces and the core consumes.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an event came from in Kafka. The core tracks these to know which
/// offsets may be stored (see `core/offset_book.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// Event severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Minor,
    Major,
    Critical,
}

impl Severity {
    /// Parses the many spellings monitoring tools use. Unknown words give `None`.
    pub fn parse(s: &str) -> Option<Severity> {
        let s = s.trim().to_ascii_lowercase();
        Some(match s.as_str() {
            "info" | "information" | "informational" | "ok" | "none" | "not classified" | "notice" | "debug" | "unknown" => Severity::Info,
            "warning" | "warn" | "low" => Severity::Warning,
            "minor" | "average" | "medium" | "error" => Severity::Minor,
            "major" | "high" | "page" => Severity::Major,
            "critical" | "crit" | "disaster" | "fatal" | "emergency" | "alert" | "down" | "unreachable" => Severity::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the condition is active or has cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// Hints that let the core bind an event to a configuration item.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CiHint {
    /// Host name or CI name as the monitoring tool knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Service / application name (Nagios service description, app label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// IP address of the monitored object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// One normalized monitoring event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Monitoring system: `alertmanager`, `zabbix`, `nagios`, `icinga`, or the
    /// native producer's own name.
    pub source: String,
    /// Identifier the source gave this event, if any (Zabbix event id, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(default)]
    pub ci: CiHint,
    /// Check / alert name (`alertname`, trigger name, service check).
    pub check: String,
    pub severity: Severity,
    pub status: Status,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the monitoring system saw the condition.
    pub time: DateTime<Utc>,
    /// Kafka position, set by the source; absent for events fed from files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// When the source says a firing alert ends unless it is refreshed
    /// (Alertmanager's `endsAt` in the future).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
}

/// Largest `check` kept, in bytes.
pub const MAX_CHECK: usize = 512;
/// Largest `summary`, label or annotation value kept, in bytes.
pub const MAX_TEXT: usize = 4096;
/// Most labels, and most annotations, kept per event.
pub const MAX_ENTRIES: usize = 64;

/// `s` cut to at most `max` bytes (at a character boundary), with a marker
/// saying how much was cut. True when it was cut.
fn cap(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let cut = s.len();
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(&format!("…[truncated from {cut} bytes]"));
    true
}

fn cap_map(m: &mut BTreeMap<String, String>) -> usize {
    let mut n = 0;
    if m.len() > MAX_ENTRIES {
        let extra: Vec<String> = m.keys().skip(MAX_ENTRIES).cloned().collect();
        n += extra.len();
        for k in extra {
            m.remove(&k);
        }
        m.insert("triaged_truncated".into(), format!("{n} more entries dropped"));
    }
    for v in m.values_mut() {
        n += usize::from(cap(v, MAX_TEXT));
    }
    n
}

impl Event {
    /// Caps the sizes of the fields state keeps (check, summary, labels,
    /// annotations), so one oversized alert cannot hold much memory; what is
    /// cut is marked in the field. Returns how many fields were cut.
    pub fn cap_fields(&mut self) -> usize {
        usize::from(cap(&mut self.check, MAX_CHECK))
            + usize::from(cap(&mut self.summary, MAX_TEXT))
            + cap_map(&mut self.labels)
            + cap_map(&mut self.annotations)
    }

    /// Looks up a field by the path used in rules and key templates:
    /// `source`, `check`, `severity`, `status`, `summary`, `host`, `service`,
    /// `ip`, `source_id`, `labels.<name>`, `annotations.<name>`.
    pub fn field(&self, path: &str) -> Option<&str> {
        match path {
            "source" => Some(&self.source),
            "check" => Some(&self.check),
            "severity" => Some(self.severity.as_str()),
            "status" => Some(self.status.as_str()),
            "summary" => Some(&self.summary),
            "host" => self.ci.host.as_deref(),
            "service" => self.ci.service.as_deref(),
            "ip" => self.ci.ip.as_deref(),
            "source_id" => self.source_id.as_deref(),
            _ => {
                if let Some(name) = path.strip_prefix("labels.") {
                    self.labels.get(name).map(String::as_str)
                } else if let Some(name) = path.strip_prefix("annotations.") {
                    self.annotations.get(name).map(String::as_str)
                } else {
                    None
                }
            }
        }
    }

    /// The plain field names: `field()`'s, and `ci` (the bound CI id).
    pub const FIELDS: [&'static str; 10] = ["source", "check", "severity", "status", "summary", "host", "service", "ip", "source_id", "ci"];

    /// True if `path` names a field `field()` understands, or `ci` (used to
    /// validate rules).
    pub fn is_known_field(path: &str) -> bool {
        Event::FIELDS.contains(&path)
            || path.strip_prefix("labels.").is_some_and(|n| !n.is_empty())
            || path.strip_prefix("annotations.").is_some_and(|n| !n.is_empty())
    }

    /// Why `path` is no field, with the closest field name when one is near
    /// (a typo such as `chek`).
    pub fn unknown_field(path: &str) -> String {
        let near = Event::FIELDS.iter().map(|f| (strsim::damerau_levenshtein(f, path), *f)).filter(|(d, _)| *d <= 2).min();
        let hint = near.map_or(String::new(), |(_, f)| format!("; did you mean `{f}`?"));
        format!("`{path}` is not an event field (fields: {}, labels.<name>, annotations.<name>){hint}", Event::FIELDS.join(", "))
    }
}

#[cfg(test)]
impl Event {
    /// A critical `down` alert on `host` from the native source, for tests.
    pub(crate) fn host_down(host: &str, status: Status, at: DateTime<Utc>) -> Event {
        Event {
            source: "native".into(),
            source_id: None,
            ci: CiHint { host: Some(host.into()), ..Default::default() },
            check: "down".into(),
            severity: Severity::Critical,
            status,
            summary: format!("{host} down"),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            time: at,
            origin: None,
            ends_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_fields_are_cut_with_a_marker() {
        let mut e = Event::host_down("h", Status::Firing, Utc::now());
        e.check = "é".repeat(900_000);
        e.summary = "s".repeat(10);
        e.labels = (0..100).map(|i| (format!("l{i:03}"), "v".repeat(5000))).collect();
        let cut = e.cap_fields();
        assert!(e.check.len() < MAX_CHECK + 40 && e.check.ends_with("[truncated from 1800000 bytes]"), "{}", e.check.len());
        assert_eq!(e.summary, "ssssssssss");
        assert_eq!(e.labels.len(), MAX_ENTRIES + 1);
        assert_eq!(cut, 1 + 36 + MAX_ENTRIES, "the check, 36 labels dropped and 64 kept but cut");
    }

    #[test]
    fn severity_spellings() {
        let cases = [
            ("Disaster", Some(Severity::Critical)),
            ("HIGH", Some(Severity::Major)),
            ("average", Some(Severity::Minor)),
            ("warning", Some(Severity::Warning)),
            ("information", Some(Severity::Info)),
            ("bogus", None),
        ];
        for (input, want) in cases {
            assert_eq!(Severity::parse(input), want, "{input}");
        }
        assert!(Severity::Critical > Severity::Major && Severity::Warning > Severity::Info);
    }

    #[test]
    fn field_paths() {
        let mut e = Event {
            source: "zabbix".into(),
            source_id: None,
            ci: CiHint { host: Some("db-01".into()), service: None, ip: None },
            check: "Disk full".into(),
            severity: Severity::Major,
            status: Status::Firing,
            summary: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            time: Utc::now(),
            origin: None,
            ends_at: None,
        };
        e.labels.insert("team".into(), "dba".into());
        assert_eq!(e.field("host"), Some("db-01"));
        assert_eq!(e.field("labels.team"), Some("dba"));
        assert_eq!(e.field("labels.nope"), None);
        assert_eq!(e.field("severity"), Some("major"));
        assert!(Event::is_known_field("labels.x"));
        assert!(!Event::is_known_field("labels."));
        assert!(!Event::is_known_field("hostname"));
    }
}
