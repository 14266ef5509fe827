//! The sink's six API profiles, one module each, and the functions their
//! request bodies and read-backs share (member lines, the long description,
//! truncation, priorities read back).

mod generic;
mod jsm;
mod pagerduty;
mod rt;
mod servicenow;
mod servicenow_em;
mod servicenow_refs;

pub(super) use servicenow_refs::SnOptions;

use serde_json::Value;

/// A priority an ITSM record holds, as P1..P5: a number, `"3"` or `"P3"`;
/// anything else (or out of range) is none.
pub(crate) fn parse_priority(v: &Value) -> Option<u8> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().trim_start_matches(['P', 'p']).parse().ok()?,
        _ => return None,
    };
    (1..=5).contains(&n).then_some(n as u8)
}

pub(super) use rt::RtSettings;

/// At most `max` characters, the last one an ellipsis when cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `source/check on ci: severity status, N events: summary`
fn member_line(m: &crate::incident::Member) -> String {
    let on = m.ci.as_ref().map(|c| format!(" on {}", c.name)).unwrap_or_default();
    format!("{}/{}{on}: {} {}, {} event(s): {}", m.source, m.check, m.severity.as_str(), m.status.as_str(), m.count, m.summary)
}

/// A long description (ServiceNow `description`, JSM alert `description`):
/// what an operator needs without opening triaged.
fn description(inc: &crate::incident::Incident) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    match &inc.root_cause {
        Some(rc) => line(format!("Root cause: {} ({}, {})", rc.name, rc.kind, rc.id)),
        None => line("Root cause: not determined".into()),
    }
    if inc.impacted_services.is_empty() {
        line("Impacted services: none known".into());
    } else {
        line(format!("Impacted services: {}", inc.impacted_services.join(", ")));
    }
    line(format!("Priority: P{} (impact {}, urgency {}), severity {}", inc.priority, inc.impact, inc.urgency, inc.severity.as_str()));
    line(format!("Scope: {}", inc.scope));
    if let Some(runbook) = &inc.runbook {
        line(format!("Runbook: {runbook}"));
    }
    if let Some(oncall) = &inc.oncall {
        line(format!("On-call: {oncall}"));
    }
    line(format!("Members ({}, {} events in total):", inc.members.len(), inc.event_count));
    for m in &inc.members {
        line(format!("- {}", member_line(m)));
    }
    if !inc.reasons.is_empty() {
        line("Reasons:".into());
        for r in &inc.reasons {
            line(format!("- {r}"));
        }
    }
    line(format!("Correlation key: {} (triaged)", inc.key));
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_read_back() {
        use serde_json::json;
        let read: Vec<_> = [json!(1), json!("5"), json!("P2"), json!(" p3 "), json!(0), json!(6), json!("high"), json!(null), json!(2.5)]
            .iter()
            .map(parse_priority)
            .collect();
        assert_eq!(read, [Some(1), Some(5), Some(2), Some(3), None, None, None, None, None]);
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("short", 160), "short");
        let long = "é".repeat(200);
        let t = truncate(&long, 160);
        assert_eq!(t.chars().count(), 160);
        assert!(t.ends_with('…'));
    }
}
