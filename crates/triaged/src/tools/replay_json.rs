//! `replay --output json`: every incident action as one JSON object per
//! line, then one object per incident with `"final": true` giving its final
//! state, so scripts and scorers read what the ITSM would have been sent
//! without parsing the text lines.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Severity;
use crate::incident::{Action, ActionKind, IncidentState};

/// One incident action, as `replay --output json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// When the core decided it, on the replay's event-time clock.
    pub at: DateTime<Utc>,
    pub kind: ActionKind,
    pub key: String,
    /// The root-cause CI id, when topology correlation found one.
    pub root: Option<String>,
    pub priority: u8,
    pub severity: Severity,
    pub scope: String,
    pub title: String,
    pub state: IncidentState,
    pub impacted_services: Vec<String>,
    /// Member fingerprints.
    pub members: Vec<String>,
    /// The CI id of each member, in the order of `members` (`null`: unbound).
    pub member_cis: Vec<Option<String>>,
    /// The work notes sent with the action.
    pub notes: Vec<String>,
}

impl ActionRecord {
    /// The record of action `a`, decided at `at`.
    pub fn of(a: &Action, at: DateTime<Utc>) -> ActionRecord {
        let i = &a.incident;
        ActionRecord {
            at,
            kind: a.kind,
            key: i.key.clone(),
            root: i.root_cause.as_ref().map(|c| c.id.clone()),
            priority: i.priority,
            severity: i.severity,
            scope: i.scope.clone(),
            title: i.title.clone(),
            state: i.state,
            impacted_services: i.impacted_services.clone(),
            members: i.members.iter().map(|m| m.fingerprint.clone()).collect(),
            member_cis: i.members.iter().map(|m| m.ci.as_ref().map(|c| c.id.clone())).collect(),
            notes: a.notes.clone(),
        }
    }
}

/// The final state of one incident: its last action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalRecord {
    /// Always `true`: tells these lines from the actions.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub key: String,
    /// The kind of its last action.
    pub last_kind: ActionKind,
    /// When its last action was decided.
    pub at: DateTime<Utc>,
    pub state: IncidentState,
    pub root: Option<String>,
    pub priority: u8,
    /// How many actions it had.
    pub actions: usize,
    /// Its members as its last action carried them.
    pub members: Vec<String>,
    pub member_cis: Vec<Option<String>>,
}

/// One final record per incident key, in key order.
pub fn finals(records: &[ActionRecord]) -> Vec<FinalRecord> {
    let mut by_key: BTreeMap<&str, (usize, &ActionRecord)> = BTreeMap::new();
    for r in records {
        let e = by_key.entry(&r.key).or_insert((0, r));
        *e = (e.0 + 1, r);
    }
    by_key
        .into_values()
        .map(|(actions, r)| FinalRecord {
            is_final: true,
            key: r.key.clone(),
            last_kind: r.kind,
            at: r.at,
            state: r.state,
            root: r.root.clone(),
            priority: r.priority,
            actions,
            members: r.members.clone(),
            member_cis: r.member_cis.clone(),
        })
        .collect()
}

/// The output of `replay --output json`: one line per action, then one per incident.
pub fn json_lines(records: &[ActionRecord]) -> Vec<String> {
    let actions = records.iter().map(|r| serde_json::to_string(r).expect("an action record serializes"));
    let finals = finals(records).into_iter().map(|f| serde_json::to_string(&f).expect("a final record serializes"));
    actions.chain(finals).collect()
}

/// A line of `replay --output json` that is not one of its records.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {source}")]
pub struct ParseError {
    pub line: usize,
    pub source: serde_json::Error,
}

/// Reads `replay --output json` back: the actions, then the final records.
/// Blank lines are skipped.
pub fn parse_lines(text: &str) -> Result<(Vec<ActionRecord>, Vec<FinalRecord>), ParseError> {
    let (mut actions, mut finals) = (Vec::new(), Vec::new());
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let err = |source| ParseError { line: i + 1, source };
        let v: serde_json::Value = serde_json::from_str(l).map_err(err)?;
        if v.get("final").and_then(serde_json::Value::as_bool) == Some(true) {
            finals.push(serde_json::from_value(v).map_err(err)?);
        } else {
            actions.push(serde_json::from_value(v).map_err(err)?);
        }
    }
    Ok((actions, finals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Status;
    use crate::incident::{CiRef, Incident, Member};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn member(fp: &str, ci: Option<&str>) -> Member {
        Member {
            fingerprint: fp.into(),
            source: "zabbix".into(),
            check: "ICMP ping unreachable".into(),
            ci: ci.map(|c| CiRef { id: c.into(), name: c.into(), kind: "switch".into() }),
            severity: Severity::Critical,
            status: Status::Firing,
            count: 1,
            first_seen: at("2026-11-24T12:00:00Z"),
            last_seen: at("2026-11-24T12:00:00Z"),
            summary: "down".into(),
        }
    }

    fn action(kind: ActionKind, key: &str, members: Vec<Member>) -> Action {
        let root = CiRef { id: "sw-1".into(), name: "sw-1".into(), kind: "switch".into() };
        let incident = Incident {
            key: key.into(),
            scope: "topology:sw-1".into(),
            title: "switch sw-1 failure".into(),
            state: if kind == ActionKind::Resolve { IncidentState::Resolved } else { IncidentState::Open },
            priority: 2,
            impact: 2,
            urgency: 1,
            severity: Severity::Critical,
            root_cause: Some(root.clone()),
            ci: Some(root),
            assignment_group: None,
            oncall: None,
            runbook: None,
            impacted_services: vec!["bs-payments".into()],
            opened_at: at("2026-11-24T12:00:30Z"),
            resolved_at: None,
            event_count: 2,
            members,
            reasons: vec!["why".into()],
            parent: None,
            redundancy_group: None,
            human_owned: Default::default(),
            acknowledged: None,
            peak_priority: 2,
        };
        Action { id: 1, kind, incident, notes: vec!["a note".into()], claim: None, resent: false, priority_changed: true }
    }

    #[test]
    fn an_action_serializes_with_every_field() {
        let a = action(ActionKind::Open, "trg-1", vec![member("zabbix|sw-1|x", Some("sw-1")), member("native|?|y", None)]);
        let r = ActionRecord::of(&a, at("2026-11-24T12:00:30Z"));
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "at": "2026-11-24T12:00:30Z", "kind": "open", "key": "trg-1", "root": "sw-1", "priority": 2,
                "severity": "critical", "scope": "topology:sw-1", "title": "switch sw-1 failure", "state": "open",
                "impacted_services": ["bs-payments"], "members": ["zabbix|sw-1|x", "native|?|y"],
                "member_cis": ["sw-1", null], "notes": ["a note"]
            })
        );
        let mut unrooted = a.clone();
        unrooted.incident.root_cause = None;
        assert_eq!(serde_json::to_value(ActionRecord::of(&unrooted, r.at)).unwrap()["root"], serde_json::Value::Null);
    }

    #[test]
    fn finals_follow_the_last_action_of_each_incident_and_parse_back() {
        let t = at("2026-11-24T12:00:30Z");
        let records = vec![
            ActionRecord::of(&action(ActionKind::Open, "trg-b", vec![member("f1", Some("sw-1")), member("f2", Some("vm-1"))]), t),
            ActionRecord::of(&action(ActionKind::Open, "trg-a", vec![member("f3", Some("sw-1"))]), t),
            ActionRecord::of(&action(ActionKind::Resolve, "trg-b", vec![]), t + chrono::Duration::minutes(5)),
        ];
        let lines = json_lines(&records);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        let (actions, finals) = parse_lines(&lines.join("\n")).unwrap();
        assert_eq!(actions, records);
        let got: Vec<_> = finals.iter().map(|f| (f.key.as_str(), f.last_kind, f.state, f.actions, f.members.len())).collect();
        assert_eq!(
            got,
            [("trg-a", ActionKind::Open, IncidentState::Open, 1, 1), ("trg-b", ActionKind::Resolve, IncidentState::Resolved, 2, 0)]
        );
        assert!(finals.iter().all(|f| f.is_final));
        assert!(lines[3].contains("\"final\":true"), "{}", lines[3]);
        let bad = parse_lines("{\"final\": true}\n").unwrap_err();
        assert_eq!(bad.line, 1, "{bad}");
    }
}
