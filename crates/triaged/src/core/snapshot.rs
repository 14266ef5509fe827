//! The incident as an action carries it to the sink: members, title, root
//! cause, CI and its owners, impacted services and priority.

use std::collections::BTreeSet;

use super::priority::Priority;
use super::{Core, Phase};
use crate::event::Status;
use crate::incident::{CiRef, Incident, IncidentState, Member};
use crate::topology::CiIdx;

impl Core {
    pub(super) fn ci_ref(&self, idx: CiIdx) -> CiRef {
        let c = self.cmdb.ci(idx);
        CiRef { id: c.id.clone(), name: c.name.clone(), kind: c.kind.clone() }
    }

    /// Incident `id` as the sink sees it (it must have a key: opened).
    pub(super) fn snapshot(&self, id: u64) -> Incident {
        let inc = &self.incidents[&id];
        if let Some(frozen) = &inc.frozen {
            let resolved_at = match inc.phase {
                Phase::Resolved { at } => Some(at),
                _ => None,
            };
            let state = if resolved_at.is_some() { IncidentState::Resolved } else { frozen.state };
            return Incident { state, resolved_at, ..(**frozen).clone() };
        }
        let Priority { impact, urgency, priority, impacted_services, severity } = self.assess(inc);
        let members: Vec<Member> = inc
            .members
            .iter()
            .filter_map(|m| self.fps.get(m).map(|f| (m, f)))
            .map(|(m, f)| Member {
                fingerprint: m.clone(),
                source: f.source.clone(),
                check: f.check.clone(),
                ci: f.ci.map(|c| self.ci_ref(c)),
                severity: f.severity,
                status: if f.firing { Status::Firing } else { Status::Resolved },
                count: f.count,
                first_seen: f.first_seen,
                last_seen: f.last_seen,
                summary: f.summary.clone(),
            })
            .collect();
        let event_count = members.iter().map(|m| m.count).sum();
        let ci = inc.root.or_else(|| members.iter().find_map(|m| m.ci.as_ref()).and_then(|c| self.cmdb.by_id(&c.id)));
        let ci_cmdb = ci.map(|c| self.cmdb.ci(c));
        let bound: BTreeSet<&str> = members.iter().filter_map(|m| m.ci.as_ref().map(|c| c.id.as_str())).collect();
        let title = match (inc.root, &inc.scope) {
            (Some(r), _) => {
                let c = self.cmdb.ci(r);
                if members.len() > 1 {
                    format!("{} {} failure: {} alerts on {} CIs", c.kind.replace('_', " "), c.name, members.len(), bound.len().max(1))
                } else {
                    format!("{} on {}", members.first().map_or("alert", |m| m.check.as_str()), c.name)
                }
            }
            (None, _) => {
                let first = members.first();
                let check = first.map_or("alert", |m| m.check.as_str());
                let on = ci_cmdb.map(|c| c.name.as_str()).unwrap_or("unbound CI");
                if members.len() > 1 {
                    format!("{check} on {} event streams ({on})", members.len())
                } else {
                    format!("{check} on {on}")
                }
            }
        };
        let state = match inc.phase {
            Phase::Resolved { .. } => IncidentState::Resolved,
            _ => IncidentState::Open,
        };
        Incident {
            key: inc.key.clone().expect("incident has a key once opened"),
            scope: inc.scope.text(),
            title,
            state,
            priority,
            peak_priority: inc.peak_priority.map_or(priority, |p| p.min(priority)),
            impact,
            urgency,
            severity,
            root_cause: inc.root.map(|r| self.ci_ref(r)),
            ci: ci.map(|c| self.ci_ref(c)),
            assignment_group: ci_cmdb.and_then(|c| c.owner_group.clone()),
            oncall: ci_cmdb.and_then(|c| c.oncall.clone()),
            runbook: ci_cmdb.and_then(|c| c.runbook.clone()),
            impacted_services,
            opened_at: inc.opened_at.unwrap_or(inc.created),
            resolved_at: match inc.phase {
                Phase::Resolved { at } => Some(at),
                _ => None,
            },
            event_count,
            members,
            reasons: inc.reasons.clone(),
            parent: None,
            redundancy_group: self.group_state(inc),
            human_owned: inc.human_owned(),
            acknowledged: inc.first_ack(),
        }
    }
}
