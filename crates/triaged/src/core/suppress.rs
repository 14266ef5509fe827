//! Suppression: a rule's suppression window, or maintenance of the event's CI
//! under a rule that suppresses in maintenance, suppresses an event that
//! would start something new. Maintenance that does not suppress (annotating
//! changes, or no such rule) is named in the reason instead.

use chrono::{DateTime, Utc};

use super::{Core, Decision, DecisionKind};
use crate::rules::Suppress;
use crate::topology::CiIdx;

impl Core {
    /// The decision for an event with fingerprint `key` that a suppression
    /// window or maintenance suppresses; None when nothing does.
    pub(super) fn suppress(&self, rules: &[(&str, &Suppress)], ci: Option<CiIdx>, key: &str, now: DateTime<Utc>) -> Option<Decision> {
        let reason = self.suppression(rules, ci, now)?;
        Some(Decision { kind: DecisionKind::Suppressed, fingerprint: Some(key.to_string()), incident: None, reason })
    }

    fn suppression(&self, rules: &[(&str, &Suppress)], ci: Option<CiIdx>, now: DateTime<Utc>) -> Option<String> {
        for (rule, s) in rules {
            if let Some(w) = s.windows.iter().find(|w| w.start <= now && now < w.end) {
                return Some(format!(
                    "suppressed by rule `{rule}`: window {} .. {}{}",
                    w.start.to_rfc3339(),
                    w.end.to_rfc3339(),
                    w.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                ));
            }
            if s.in_maintenance {
                if let Some(m) = ci.and_then(|c| self.cmdb.active_maintenance(c, now)).filter(|m| !m.annotate) {
                    return Some(format!(
                        "suppressed by rule `{rule}`: CI {} in maintenance until {}{}{}",
                        self.cmdb.ci(ci.unwrap()).id,
                        m.end.to_rfc3339(),
                        m.change_id.as_deref().map(|c| format!(", change {c}")).unwrap_or_default(),
                        m.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                    ));
                }
            }
        }
        None
    }

    /// `reason`, noting the maintenance `ci` is under at `now`, if any.
    pub(super) fn maintenance_note(&self, mut reason: String, ci: Option<CiIdx>, now: DateTime<Utc>) -> String {
        if let Some(m) = ci.and_then(|c| self.cmdb.active_maintenance(c, now)) {
            reason.push_str(&format!(
                "; under {} until {}{}",
                m.change_id.as_deref().map_or_else(|| "planned maintenance".to_string(), |c| format!("change {c}")),
                m.end.to_rfc3339(),
                m.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ));
        }
        reason
    }
}
