//! The ServiceNow Event Management profile: every action is one event
//! record `POST`ed to `/api/global/em/jsonv2`. Event Management folds the
//! events of one `message_key` (the incident key) into one alert, so a
//! resend is absorbed there; a clear (resolve) is severity "0" and a reopen
//! sends the severity again under the same key. Events cannot be read back
//! by key, so the profile does not look up.

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::truncate;
use crate::event::Severity;
use crate::incident::SinkError;
use crate::incident::{Action, ActionKind, Incident, Member};
use crate::sink::RestSink;

/// `source` and `event_class` of every event.
const EM_SOURCE: &str = "triaged";
/// Longest `type` sent (the title stands in when no root check is known).
const EM_TYPE_MAX: usize = 100;

impl RestSink {
    pub(in crate::sink) async fn servicenow_em(&self, action: &Action) -> Result<(), SinkError> {
        let body = json!({ "records": [em_record(action)] });
        let url = self.url(&["api", "global", "em", "jsonv2"]);
        self.call("event", Method::POST, url, Some(&body)).await.map(drop)
    }
}

/// Event Management severity: 1 critical .. 5 info, and 0 for a clear.
fn em_severity(kind: ActionKind, s: Severity) -> &'static str {
    if kind == ActionKind::Resolve {
        return "0";
    }
    match s {
        Severity::Critical => "1",
        Severity::Major => "2",
        Severity::Minor => "3",
        Severity::Warning => "4",
        Severity::Info => "5",
    }
}

/// The member on the root cause CI, when one is known.
fn root_member(inc: &Incident) -> Option<&Member> {
    let root = inc.root_cause.as_ref()?;
    inc.members.iter().find(|m| m.ci.as_ref().is_some_and(|c| c.id == root.id))
}

/// The event record for `action`.
fn em_record(action: &Action) -> Value {
    let inc = &action.incident;
    let root = root_member(inc);
    let mut description = inc.title.clone();
    for note in &action.notes {
        description.push('\n');
        description.push_str(note);
    }
    let info = json!({
        "triaged_key": inc.key,
        "priority": format!("P{}", inc.priority),
        "impacted_services": inc.impacted_services,
        "root_cause": inc.root_cause.as_ref().map(|r| r.name.as_str()),
        "members": inc.members.len(),
        "parent": inc.parent,
        "scope": inc.scope,
        "assignment_group": inc.assignment_group,
    });
    let mut r = Map::new();
    r.insert("source".into(), EM_SOURCE.into());
    r.insert("event_class".into(), EM_SOURCE.into());
    r.insert("node".into(), inc.ci.as_ref().map_or("unknown", |c| c.name.as_str()).into());
    r.insert("type".into(), root.map_or_else(|| truncate(&inc.title, EM_TYPE_MAX), |m| m.check.clone()).into());
    if let Some(resource) = inc.root_cause.as_ref().or(inc.ci.as_ref()) {
        r.insert("resource".into(), resource.name.clone().into());
    }
    if let Some(m) = root {
        r.insert("metric_name".into(), format!("{}/{}", m.source, m.check).into());
    }
    r.insert("severity".into(), em_severity(action.kind, inc.severity).into());
    r.insert("message_key".into(), inc.key.clone().into());
    r.insert("description".into(), description.into());
    r.insert("additional_info".into(), info.to_string().into());
    Value::Object(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_mapping_and_clear() {
        let cases =
            [(Severity::Critical, "1"), (Severity::Major, "2"), (Severity::Minor, "3"), (Severity::Warning, "4"), (Severity::Info, "5")];
        for (s, expected) in cases {
            for kind in [ActionKind::Open, ActionKind::Update, ActionKind::Reopen] {
                assert_eq!(em_severity(kind, s), expected, "{kind:?} {s:?}");
            }
            assert_eq!(em_severity(ActionKind::Resolve, s), "0", "a clear whatever the severity");
        }
    }
}
