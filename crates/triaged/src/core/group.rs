//! Grouping, when topology does not apply: a `group` rule's key (rule name and
//! field values) scopes the incident within the rule's window; without one,
//! the fingerprint alone does, within the reopen window. A resolved (or
//! resolving) incident of the scope is rejoined; one whose window has passed
//! keeps its members and the scope starts afresh.

use chrono::{DateTime, Utc};

use super::keys::{group_key, group_values};
use super::{chrono_dur, Core, Decision, DecisionKind, Phase, Scope};
use crate::event::Event;
use crate::rules::Group;
use crate::topology::CiIdx;

impl Core {
    /// Joins or starts the incident of the group of the firing fingerprint `key`.
    pub(super) fn group(
        &mut self,
        key: String,
        group: Option<(&str, &Group)>,
        ev: &Event,
        ci: Option<CiIdx>,
        now: DateTime<Utc>,
        mut reason: String,
    ) -> Decision {
        // A bound event never takes a group meant for unbound ones.
        let group = group.filter(|(_, g)| !(g.unbound_only && ci.is_some()));
        let (scope, window) = match group {
            Some((rule, g)) => {
                let values = group_values(ev, g, ci.map(|i| self.cmdb.ci(i).id.as_str()));
                reason.push_str(&format!(
                    "; grouped by rule `{rule}` on {} = {:?} within {}",
                    g.by.join(","),
                    values,
                    crate::duration::format(g.window)
                ));
                (Scope::Group(group_key(rule, &values)), chrono_dur(g.window))
            }
            None => (Scope::Single(key.clone()), self.cfg.reopen_window),
        };
        if let Some(id) = self.by_scope.get(&scope).copied() {
            let inc = &self.incidents[&id];
            let reopenable = matches!(inc.phase, Phase::Resolved { .. } | Phase::Resolving { .. });
            if reopenable || now - inc.last_activity <= window {
                self.join(&key, id, now, &reason);
                return Decision { kind: DecisionKind::Joined, fingerprint: Some(key), incident: Some(id), reason };
            }
            // The window has passed: the old incident keeps its members, the scope starts afresh.
            self.by_scope.remove(&scope);
        }
        let id = self.create(scope, ci, &key, now, &reason);
        Decision { kind: DecisionKind::New, fingerprint: Some(key), incident: Some(id), reason }
    }
}
