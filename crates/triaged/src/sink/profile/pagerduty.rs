//! The PagerDuty profile: Events API v2 trigger/resolve events, deduplicated
//! by the incident key (the Events API has no lookup).

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{member_line, truncate};
use crate::event::Severity;
use crate::incident::{Action, ActionKind, SinkError};
use crate::sink::RestSink;

/// PagerDuty `payload.summary` limit.
const PD_SUMMARY_MAX: usize = 1024;

impl RestSink {
    pub(in crate::sink) async fn pagerduty(&self, action: &Action) -> Result<(), SinkError> {
        // The key of the incident's on-call rotation, else the sink's default.
        let keys = self.inner.routing.as_ref().ok_or_else(|| SinkError::Permanent("pagerduty: no routing key configured".into()))?;
        let routing_key = keys.key(keys.index_for(&action.incident).map_err(SinkError::Permanent)?);
        let body = pagerduty_event(action, routing_key.expose());
        self.call("enqueue", Method::POST, self.url(&["v2", "enqueue"]), Some(&body)).await.map(drop)
    }
}

fn pd_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Major => "error",
        Severity::Minor | Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// PagerDuty Events API v2 event for `action`.
fn pagerduty_event(action: &Action, routing_key: &str) -> Value {
    let inc = &action.incident;
    if action.kind == ActionKind::Resolve {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": inc.key,
        });
    }
    let members: Vec<String> = inc.members.iter().map(member_line).collect();
    let mut details = Map::new();
    details.insert("priority".into(), format!("P{}", inc.priority).into());
    details.insert("impact".into(), inc.impact.into());
    details.insert("urgency".into(), inc.urgency.into());
    details.insert("impacted_services".into(), json!(inc.impacted_services));
    details.insert("members".into(), json!(members));
    details.insert("notes".into(), json!(action.notes));
    if let Some(runbook) = &inc.runbook {
        details.insert("runbook".into(), runbook.clone().into());
    }
    if let Some(oncall) = &inc.oncall {
        details.insert("oncall".into(), oncall.clone().into());
    }
    let mut payload = Map::new();
    // The key ends the summary: a PagerDuty v3 webhook carries the
    // incident's title, not its dedup key, and triaged finds it there.
    let keyed = format!(" [{}]", inc.key);
    let summary = truncate(&inc.title, PD_SUMMARY_MAX - keyed.chars().count()) + &keyed;
    payload.insert("summary".into(), summary.into());
    payload.insert("source".into(), inc.ci.as_ref().map_or("triaged", |c| c.name.as_str()).into());
    payload.insert("severity".into(), pd_severity(inc.severity).into());
    payload.insert("timestamp".into(), inc.opened_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into());
    if let Some(root) = &inc.root_cause {
        payload.insert("component".into(), root.name.clone().into());
    }
    if let Some(service) = inc.impacted_services.first() {
        payload.insert("group".into(), service.clone().into());
    }
    payload.insert("class".into(), inc.scope.clone().into());
    payload.insert("custom_details".into(), Value::Object(details));
    let mut event = Map::new();
    event.insert("routing_key".into(), routing_key.into());
    event.insert("event_action".into(), "trigger".into());
    event.insert("dedup_key".into(), inc.key.clone().into());
    event.insert("payload".into(), Value::Object(payload));
    if let Some(runbook) = &inc.runbook {
        event.insert("links".into(), json!([{ "href": runbook, "text": "Runbook" }]));
    }
    Value::Object(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_mapping() {
        assert_eq!(pd_severity(Severity::Critical), "critical");
        assert_eq!(pd_severity(Severity::Major), "error");
        assert_eq!(pd_severity(Severity::Minor), "warning");
        assert_eq!(pd_severity(Severity::Warning), "warning");
        assert_eq!(pd_severity(Severity::Info), "info");
    }
}
