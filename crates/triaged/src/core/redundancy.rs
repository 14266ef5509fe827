//! Redundancy groups in correlation (CMDB `redundancy_groups`, N of M). A
//! member that is down while at least `min_up` of its peers are up is
//! covered: its incident has no business-service impact (so a low
//! priority) and it explains none of its dependents, whose own alerts are
//! then separate faults. When the group falls below `min_up`, the group is
//! the root cause: the members' incidents become one, which absorbs the
//! dependents' incidents and takes the impact of every member. That stays
//! so for the rest of the incident's life (`Inc::failed_group`), also when a
//! member recovers first.

use chrono::{DateTime, Utc};

use super::{Core, Inc, Phase};
use crate::incident::GroupState;
use crate::topology::{CiIdx, RedundancyGroup};

impl Core {
    /// Whether member `m`'s topology alerts fire.
    fn is_down(&self, m: CiIdx) -> bool {
        self.ci_active.get(&m).is_some_and(|a| a.firing > 0)
    }

    /// Members of `g` whose topology alerts fire.
    fn down_members(&self, g: &RedundancyGroup) -> Vec<CiIdx> {
        g.members.iter().copied().filter(|&m| self.is_down(m)).collect()
    }

    /// `ci` is a member of a redundancy group whose peers still carry the
    /// load, and the incident it is in has not seen the group fail: it
    /// explains no dependent.
    pub(super) fn covered_by_peers(&self, ci: CiIdx) -> bool {
        self.covering_group(ci).is_some()
    }

    /// When `ci` is covered by its peers: its group and how many of its
    /// members are down.
    fn covering_group(&self, ci: CiIdx) -> Option<(&RedundancyGroup, usize)> {
        let g = self.cmdb.group_of(ci)?;
        let failed_here = self.ci_active.get(&ci).and_then(|a| self.incidents.get(&a.incident)).is_some_and(|i| i.failed_group.is_some());
        // Counted, not collected: this runs for every failing upstream candidate.
        let down = g.members.iter().filter(|&&m| self.is_down(m)).count();
        (!failed_here && !g.fails_with(down)).then_some((g, down))
    }

    /// A member CI of an incident that counts for its impact: not a member
    /// of a redundancy group, or one whose group failed in this incident.
    pub(super) fn counts_for_impact(&self, inc: &Inc, ci: CiIdx) -> bool {
        inc.failed_group.is_some() || self.cmdb.group_of(ci).is_none()
    }

    /// The impact of a failure above `ci` goes on below it: `ci` is in no
    /// redundancy group, or its group fails with `ci` counted as down (it
    /// is below the failure, alerting or not), or failed in this incident.
    pub(super) fn impact_passes(&self, inc: &Inc, ci: CiIdx) -> bool {
        let Some(g) = self.cmdb.group_of(ci) else { return true };
        let down = g.members.iter().filter(|&&m| m == ci || self.is_down(m)).count();
        inc.failed_group.is_some() || g.fails_with(down)
    }

    /// The reason a firing member `ci` of a group that still works adds to
    /// its decision, when it is one.
    pub(super) fn covered_reason(&self, ci: CiIdx) -> Option<String> {
        let (g, down) = self.covering_group(ci)?;
        Some(format!(
            "; redundancy group {}: {} of {} members up (needs {}): its peers carry the load, so it explains no dependent and impacts no business service",
            g.id,
            g.members.len() - down,
            g.members.len(),
            g.min_up
        ))
    }

    /// After `ci` fired into incident `inc_id`: when that takes its group
    /// below `min_up`, the group becomes the root cause. The incidents of
    /// its down members merge into one (the one the ITSM knew first, else the
    /// one that started first), which
    /// absorbs the incidents rooted below any member. Returns the incident
    /// that carries the group, and adds the reason.
    pub(super) fn after_member_fired(
        &mut self,
        ci: CiIdx,
        inc_id: u64,
        window: chrono::Duration,
        now: DateTime<Utc>,
        reason: &mut String,
    ) -> u64 {
        let cmdb = self.cmdb.clone();
        let Some(g) = cmdb.group_of(ci) else { return inc_id };
        let down = self.down_members(g);
        // Only an incident rooted at a member: one whose root is upstream of
        // the whole group (a site router) already explains it.
        let rooted_here = self.incidents.get(&inc_id).and_then(|i| i.root).is_some_and(|r| g.members.contains(&r));
        if !g.fails_with(down.len()) || !rooted_here {
            return inc_id;
        }
        // The incidents rooted at a member: a member down inside another
        // fault's incident (below a failed switch) stays there.
        let mut incs: Vec<u64> = down
            .iter()
            .filter_map(|m| self.ci_active.get(m).map(|a| a.incident))
            .filter(|i| {
                self.incidents.get(i).is_some_and(|inc| {
                    !inc.merged
                        && matches!(inc.phase, Phase::Pending | Phase::Open | Phase::Resolving { .. })
                        && inc.root.is_some_and(|r| g.members.contains(&r))
                })
            })
            .chain(std::iter::once(inc_id))
            .collect();
        incs.sort_unstable();
        incs.dedup();
        // The one the ITSM knew first; else, as in a dependency cycle, the
        // one of the member that failed first by event time (ties to the
        // lower id), so a replay names the same root.
        let survivor = incs
            .iter()
            .copied()
            .min_by_key(|i| {
                let inc = &self.incidents[i];
                let root = inc.root.expect("rooted at a member");
                let began =
                    inc.members.iter().filter_map(|m| self.fps.get(m)).filter(|f| f.ci == Some(root)).map(|f| f.episode_start).min();
                (inc.opened_at.is_none(), inc.opened_at, began, cmdb.ci(root).id.as_str(), *i)
            })
            .unwrap_or(inc_id);
        let what = format!("redundancy group {}", g.id);
        for loser in incs.into_iter().filter(|&i| i != survivor) {
            self.merge_into(loser, survivor, &what, now);
        }
        let mut carrier = survivor;
        for &m in &down {
            carrier = self.absorb_downstream(carrier, m, window, now);
        }
        let names: Vec<&str> = down.iter().map(|&m| cmdb.ci(m).id.as_str()).collect();
        let why = format!(
            "redundancy group {} failed: {} of {} members down ({}), fewer than {} up: the group is the root cause",
            g.id,
            down.len(),
            g.members.len(),
            names.join(", "),
            g.min_up
        );
        self.changes.incident(carrier);
        let inc = self.incidents.get_mut(&carrier).expect("live incident");
        if inc.failed_group.is_none() {
            inc.failed_group = Some(g.id.clone());
            if inc.opened_at.is_some() {
                inc.dirty = true;
                inc.notes.push(why.clone());
            }
            inc.reasons.push(why.clone());
        }
        reason.push_str("; ");
        reason.push_str(&why);
        carrier
    }

    /// The redundancy group of `inc`'s root cause, as the incident shows it.
    pub(super) fn group_state(&self, inc: &Inc) -> Option<GroupState> {
        let g = self.cmdb.group_of(inc.root?)?;
        let ids = |v: &[CiIdx]| v.iter().map(|&m| self.cmdb.ci(m).id.clone()).collect::<Vec<_>>();
        Some(GroupState {
            id: g.id.clone(),
            members: ids(&g.members),
            down: ids(&self.down_members(g)),
            min_up: g.min_up,
            failed: inc.failed_group.is_some(),
        })
    }
}
