//! Incidents as the core decides them and the sink delivers them.
//!
//! The core emits [`Action`]s carrying a full [`Incident`] snapshot; the sink
//! (`sink/`, in one of three API profiles) applies them.
//! **Every incident has a deterministic correlation key**: the sink uses it to
//! make creation idempotent (look up before create, or an idempotent PUT).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Severity, Status};

/// What the sink is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Open,
    Update,
    Resolve,
    Reopen,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Open => "open",
            ActionKind::Update => "update",
            ActionKind::Resolve => "resolve",
            ActionKind::Reopen => "reopen",
        }
    }
}

/// Incident state as last decided by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    Open,
    Resolved,
}

/// A configuration item as shown on an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiRef {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One event stream (fingerprint) that belongs to an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub fingerprint: String,
    pub source: String,
    pub check: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci: Option<CiRef>,
    pub severity: Severity,
    pub status: Status,
    pub count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub summary: String,
}

/// Full incident snapshot sent with every action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Deterministic correlation key (`trg-` + 16 hex digits).
    pub key: String,
    /// Human-readable scope the key was derived from (`topology:sw-core-01`).
    pub scope: String,
    pub title: String,
    pub state: IncidentState,
    /// ITIL priority 1 (critical) .. 5 (planning), from impact x urgency.
    pub priority: u8,
    /// The highest priority (lowest number) the incident has been sent
    /// with: a route that paged it at P1 keeps getting its updates and its
    /// resolve after it is downgraded. Equal to `priority` in a first action.
    #[serde(default)]
    pub peak_priority: u8,
    /// ITIL impact 1 (high) .. 3 (low).
    pub impact: u8,
    /// ITIL urgency 1 (high) .. 3 (low).
    pub urgency: u8,
    pub severity: Severity,
    /// Deepest failing upstream CI, when topology correlation found one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<CiRef>,
    /// CI the incident is assigned against (root cause, else first bound member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci: Option<CiRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignment_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oncall: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    pub impacted_services: Vec<String>,
    pub opened_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Total events folded into this incident (including deduplicated repeats).
    pub event_count: u64,
    pub members: Vec<Member>,
    /// Why the incident looks the way it does (grouping, root cause, ...).
    pub reasons: Vec<String>,
    /// Key of the incident this one was merged into (a root found upstream
    /// after it opened): the record becomes that one's child where the ITSM
    /// links incidents (ServiceNow `parent_incident`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The redundancy group of the root cause, when it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redundancy_group: Option<GroupState>,
    /// Per sink name: the fields a person changed at that ITSM, which the
    /// sink no longer writes (field ownership).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub human_owned: BTreeMap<String, HumanOwned>,
    /// When someone first took the incident at an ITSM (read back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
}

/// Fields of an ITSM record that a person changed there: from then on they
/// are the person's, and triaged stops writing them to that record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HumanOwned {
    /// Priority (ServiceNow urgency and impact, the ticket's priority).
    #[serde(default)]
    pub priority: bool,
    /// Assignment group (queue) and assignee.
    #[serde(default)]
    pub assignment: bool,
    /// The record itself: a person closed it while its alerts fired and it
    /// is left closed (policy `note`, or closed again after triaged reopened
    /// it). The sink sends nothing more to it.
    #[serde(default)]
    pub closed: bool,
}

/// The first acknowledgement of an incident read back from an ITSM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// The sink whose record was acknowledged.
    pub sink: String,
    /// Who took it, when the ITSM says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub at: DateTime<Utc>,
}

impl Incident {
    /// What a person owns of this incident's record at sink `sink`.
    pub fn owned_at(&self, sink: &str) -> HumanOwned {
        self.human_owned.get(sink).copied().unwrap_or_default()
    }
}

/// A redundancy group as an incident shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub id: String,
    /// Member CI ids.
    pub members: Vec<String>,
    /// Members whose alerts fire.
    pub down: Vec<String>,
    /// Members that must be up for the group to work.
    pub min_up: usize,
    /// The group fell below `min_up` while the incident lived: it is the root
    /// cause. Otherwise its peers carry the load and the incident has no
    /// business-service impact.
    pub failed: bool,
}

/// One instruction to the sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Sequence number assigned by the core; acknowledgements refer to it.
    pub id: u64,
    pub kind: ActionKind,
    pub incident: Incident,
    /// Work notes explaining what changed since the previous action.
    pub notes: Vec<String>,
    /// The priority differs from the one sent before (or none was): a sink
    /// that re-rates a record when its urgency or impact is written (ServiceNow
    /// recomputes its priority) writes them only then, so a priority a person
    /// set there between two reads is not overwritten by an unchanged value.
    #[serde(default)]
    pub priority_changed: bool,
    /// The partition assignment the incident's state was built under, when
    /// state follows partitions (see `ownership.rs`). Not part of the payload.
    #[serde(skip)]
    pub claim: Option<crate::scale::ownership::Claim>,
    /// Sent again after a restart because its acknowledgement was not
    /// recorded; the sink may look the incident up first. Not in the payload.
    #[serde(skip)]
    pub resent: bool,
}

/// Why a sink call failed, and whether it may be retried.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Timeouts, connection errors, 408, 429, 5xx other than 501.
    #[error("retryable sink error: {message}")]
    Retryable {
        message: String,
        /// Server-requested delay (`Retry-After`).
        retry_after: Option<Duration>,
        /// The request may have been applied (timeout after sending): look the
        /// incident up by key before creating it again.
        maybe_applied: bool,
    },
    /// 4xx other than 408/429, 501, or an unusable response: never retried.
    #[error("permanent sink error: {0}")]
    Permanent(String),
    /// Shutdown arrived while waiting to retry.
    #[error("sink call abandoned for shutdown")]
    Cancelled,
    /// The action's partition was revoked: its new owner acts on it.
    #[error("partition {topic}/{partition} is no longer assigned here")]
    Disowned { topic: String, partition: i32 },
}

impl SinkError {
    /// Short label for metrics (`sink_errors_total{class}`).
    pub fn class(&self) -> &'static str {
        match self {
            SinkError::Retryable { .. } => "retryable",
            SinkError::Permanent(_) => "permanent",
            SinkError::Cancelled => "cancelled",
            SinkError::Disowned { .. } => "disowned",
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use chrono::TimeZone;

    /// An action of incident `key` whose snapshot says which action it is:
    /// `event_count` is `id`, the title `state {id}`.
    pub(crate) fn action(id: u64, kind: ActionKind, key: &str) -> Action {
        let t = Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap();
        let resolved = kind == ActionKind::Resolve;
        Action {
            id,
            kind,
            incident: Incident {
                key: key.into(),
                scope: format!("topology:{key}"),
                title: format!("state {id}"),
                state: if resolved { IncidentState::Resolved } else { IncidentState::Open },
                priority: 2,
                impact: 2,
                urgency: 2,
                severity: Severity::Major,
                root_cause: None,
                ci: None,
                assignment_group: None,
                oncall: None,
                runbook: None,
                impacted_services: vec![],
                opened_at: t,
                resolved_at: resolved.then_some(t),
                event_count: id,
                members: vec![],
                reasons: vec![],
                parent: None,
                redundancy_group: None,
                human_owned: Default::default(),
                acknowledged: None,
                peak_priority: 2,
            },
            notes: vec![],
            claim: None,
            resent: false,
            priority_changed: true,
        }
    }
}
