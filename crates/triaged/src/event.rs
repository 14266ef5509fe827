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

impl Event {
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

    /// True if `path` names a field `field()` understands (used to validate rules).
    pub fn is_known_field(path: &str) -> bool {
        matches!(path, "source" | "check" | "severity" | "status" | "summary" | "host" | "service" | "ip" | "source_id" | "ci")
            || path.strip_prefix("labels.").is_some_and(|n| !n.is_empty())
            || path.strip_prefix("annotations.").is_some_and(|n| !n.is_empty())
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
