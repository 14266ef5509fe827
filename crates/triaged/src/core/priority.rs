//! Priority, ITIL style: impact (the criticality of the CIs and the services
//! they impact) x urgency (the severity of the members still firing, or the
//! worst the incident had once none is).

use std::collections::BTreeSet;

use super::{Core, Inc};
use crate::event::Severity;
use crate::topology::{CiIdx, Criticality};

/// How an incident is assessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Priority {
    /// 1 (highest) .. 3.
    pub(super) impact: u8,
    /// 1 (highest) .. 3.
    pub(super) urgency: u8,
    /// 1 (highest) .. 5, from impact + urgency.
    pub(super) priority: u8,
    /// Names of the business services impacted.
    pub(super) impacted_services: Vec<String>,
    /// The severity urgency follows.
    pub(super) severity: Severity,
}

impl Core {
    /// ITIL priority of `inc`: impact (criticality and impacted services) x urgency (severity).
    pub(super) fn assess(&self, inc: &Inc) -> Priority {
        // Urgency follows the members still firing; once none is, the worst
        // the incident had (a resolve keeps the priority it was worked at).
        let (mut firing_sev, mut any_sev) = (None::<Severity>, Severity::Info);
        let mut crit = Criticality::Low;
        let mut services: BTreeSet<CiIdx> = BTreeSet::new();
        let mut cis: BTreeSet<CiIdx> = BTreeSet::new();
        for m in &inc.members {
            if let Some(f) = self.fps.get(m) {
                any_sev = any_sev.max(f.severity);
                if f.firing {
                    firing_sev = Some(firing_sev.map_or(f.severity, |s| s.max(f.severity)));
                }
                if let Some(c) = f.ci {
                    cis.insert(c);
                }
            }
        }
        if let Some(r) = inc.root {
            cis.insert(r);
        }
        // A redundancy group member whose peers carry the load impacts
        // nothing, nor does the impact of a failure above it go through it.
        let counted: Vec<CiIdx> = cis.into_iter().filter(|&c| self.counts_for_impact(inc, c)).collect();
        for &c in &counted {
            crit = crit.min(self.cmdb.ci(c).criticality);
        }
        services.extend(self.cmdb.impacted_services_through(counted, |d| self.impact_passes(inc, d)));
        for s in &services {
            crit = crit.min(self.cmdb.ci(*s).criticality);
        }
        let impact = if crit == Criticality::Critical || services.len() >= 3 {
            1
        } else if crit == Criticality::High || !services.is_empty() {
            2
        } else {
            3
        };
        let severity = firing_sev.unwrap_or(any_sev);
        let urgency = match severity {
            Severity::Critical => 1,
            Severity::Major | Severity::Minor => 2,
            Severity::Warning | Severity::Info => 3,
        };
        let priority = match impact + urgency {
            2 => 1,
            3 => 2,
            4 => 3,
            5 => 4,
            _ => 5,
        };
        let impacted_services = services.into_iter().map(|s| self.cmdb.ci(s).name.clone()).collect();
        Priority { impact, urgency, priority, impacted_services, severity }
    }
}
