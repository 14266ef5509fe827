//! Where and when the faults and the warnings of a scenario happen: fault
//! CIs chosen so that no two faults touch through the topology, onsets and
//! recoveries, the symptoms that stay silent or come late, and the
//! warnings, some on CIs upstream of a fault.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use triaged::topology::{CiIdx, Snapshot};

use super::{Fault, Noise, ScenarioParams, Truth, DEPTH};

/// Symptoms a fault raises at most, nearest first.
pub const MAX_SYMPTOMS: usize = 12;
/// CIs below a fault that could alert, at least (but on a redundant pair member).
const MIN_BELOW: usize = 2;
/// Share of the symptoms that stay silent (missing symptoms).
const MISSING: f64 = 0.3;
/// Share of the faults whose root alerts after its symptoms (late roots).
const LATE_ROOT: f64 = 0.5;
/// Share of the faults placed next to the previous one (overlapping faults).
const OVERLAP: f64 = 0.3;
/// Share of the faults on a member of a redundant pair.
const REDUNDANT: f64 = 0.15;
/// Share of the faults that recover before the end.
const RECOVER: f64 = 0.8;
/// Share of the symptoms of a long fault that start late (slow symptoms).
const SLOW: f64 = 0.25;
/// Warnings per fault (warning noise); every other one upstream of a fault.
const NOISE_PER_FAULT: f64 = 1.5;
/// Share of the warnings that never clear.
const NOISE_STAYS: f64 = 0.4;
/// Tries to find room for one fault.
const ATTEMPTS: usize = 1_000;

/// Kinds of CIs that fail, with their weights.
/// (Bare-metal hosts carry nothing in these estates: they would fail alone.)
const FAULT_KINDS: [(&str, u32); 6] =
    [("switch", 2), ("hypervisor", 3), ("vm", 3), ("application", 2), ("load_balancer", 1), ("storage", 1)];

/// CIs that alert: not sites and business services, which have no monitor of their own here.
fn alerts(cmdb: &Snapshot, c: CiIdx) -> bool {
    !matches!(cmdb.ci(c).kind.as_str(), "site" | "business_service")
}

fn is_core(cmdb: &Snapshot, c: CiIdx) -> bool {
    let ci = cmdb.ci(c);
    ci.kind == "switch" && ci.name.starts_with("sw-core-")
}

/// A member of a redundancy group: a core switch or a database (primary and
/// standby), as the estate declares them.
fn redundant_member(cmdb: &Snapshot, c: CiIdx) -> bool {
    cmdb.group_of(c).is_some()
}

/// What the faults placed so far occupy.
#[derive(Default)]
struct Claims {
    /// Alerting CIs.
    alerting: HashSet<CiIdx>,
    /// Everything upstream of them.
    upstream: HashSet<CiIdx>,
    /// Everything downstream of them (no warning goes there).
    downstream: HashSet<CiIdx>,
    /// Redundancy peers of a redundant fault's CI: they stay up, so no
    /// fault may make them alert.
    peers: HashSet<CiIdx>,
}

impl Claims {
    /// `cis` would alert without touching what is claimed: none of them
    /// alerts already or is upstream of an alerting CI, and none of the
    /// alerting CIs is upstream of them.
    fn admits(&self, cis: &[CiIdx], up: &HashSet<CiIdx>) -> bool {
        cis.iter().all(|c| !self.alerting.contains(c) && !self.upstream.contains(c) && !self.peers.contains(c))
            && up.is_disjoint(&self.alerting)
    }

    fn claim(&mut self, cmdb: &Snapshot, cis: &[CiIdx], up: HashSet<CiIdx>) {
        self.alerting.extend(cis);
        self.upstream.extend(up);
        for &c in cis {
            self.downstream.extend(triaged::demo::downstream(cmdb, c));
        }
    }
}

/// The other members of `c`'s redundancy group.
fn peers_of(cmdb: &Snapshot, c: CiIdx) -> Vec<CiIdx> {
    cmdb.group_of(c).map(|g| g.members.iter().copied().filter(|&m| m != c).collect()).unwrap_or_default()
}

fn upstream_of(cmdb: &Snapshot, cis: &[CiIdx]) -> HashSet<CiIdx> {
    cis.iter().flat_map(|&c| cmdb.upstream_closure(c, DEPTH)).map(|(u, _)| u).collect()
}

fn secs(rng: &mut ChaCha8Rng, from: i64, to: i64) -> Duration {
    Duration::seconds(rng.gen_range(from..=to))
}

/// The CIs of a fault on `root`: `(alerting symptoms, silent ones)`, at
/// least one alerting; `None` when fewer than [`MIN_BELOW`] CIs below it alert.
fn symptoms_of(cmdb: &Snapshot, root: CiIdx, missing: bool, rng: &mut ChaCha8Rng) -> Option<(Vec<CiIdx>, Vec<CiIdx>)> {
    let below: Vec<CiIdx> = triaged::demo::downstream(cmdb, root).into_iter().filter(|&c| alerts(cmdb, c)).take(MAX_SYMPTOMS).collect();
    if below.len() < MIN_BELOW {
        return None;
    }
    if !missing {
        return Some((below, Vec::new()));
    }
    let (mut alerting, mut silent): (Vec<CiIdx>, Vec<CiIdx>) = below.into_iter().partition(|_| !rng.gen_bool(MISSING));
    if alerting.is_empty() {
        alerting.push(silent.remove(0));
    }
    Some((alerting, silent))
}

/// Places the faults, then the warnings.
pub(super) fn place(cmdb: &Snapshot, p: &ScenarioParams, rng: &mut ChaCha8Rng) -> Truth {
    let d = p.difficulties;
    let pool = |pred: &dyn Fn(CiIdx) -> bool| -> Vec<CiIdx> { (0..cmdb.len() as CiIdx).filter(|&c| pred(c)).collect() };
    let by_kind: Vec<(Vec<CiIdx>, u32)> = FAULT_KINDS
        .iter()
        .map(|&(kind, w)| (pool(&|c| cmdb.ci(c).kind == kind && !is_core(cmdb, c)), w))
        .filter(|(v, _)| !v.is_empty())
        .collect();
    let redundant_pool = pool(&|c| redundant_member(cmdb, c));
    let total: u32 = by_kind.iter().map(|(_, w)| w).sum();

    let mut claims = Claims::default();
    let mut faults: Vec<Fault> = Vec::new();
    let mut ups: Vec<HashSet<CiIdx>> = Vec::new();
    for _ in 0..p.faults {
        // When and how long first: the site it may take depends on who else is failing then.
        let partner = (d.overlapping_faults && rng.gen_bool(OVERLAP)).then(|| faults.len().checked_sub(1)).flatten();
        let partner = partner.filter(|&k| faults[k].overlaps.is_none());
        let redundant = d.redundant_pairs && partner.is_none() && !redundant_pool.is_empty() && rng.gen_bool(REDUNDANT);
        // As drawn, else a plain fault at any free time and place.
        let mut placed = None;
        for (partner, redundant) in [(partner, redundant), (None, false)] {
            let onset = match partner {
                Some(k) => faults[k].onset + secs(rng, 0, 60),
                None => p.start + secs(rng, 0, p.span.num_seconds().max(1)),
            };
            let recovery = rng.gen_bool(RECOVER).then(|| onset + secs(rng, 4 * 60, 20 * 60));
            let plan = Plan { onset, recovery, partner, redundant };
            let pools = Pools { by_kind: &by_kind, total, redundant: &redundant_pool };
            if let Some(found) = find_room(cmdb, &plan, &pools, &faults, &claims, d, rng) {
                placed = Some((plan, found));
                break;
            }
        }
        let Some((plan, (root, symptoms, missing, alerting, up))) = placed else { continue };
        claims.claim(cmdb, &alerting, up.clone());
        if plan.redundant {
            claims.peers.extend(peers_of(cmdb, root));
        }
        let recovery = plan.recovery;
        let long = recovery.is_none_or(|r| r - plan.onset >= Duration::minutes(10));
        let slow: Vec<String> =
            symptoms.iter().filter(|_| d.slow_symptoms && long && rng.gen_bool(SLOW)).map(|&c| cmdb.ci(c).id.clone()).collect();
        let id = |v: &[CiIdx]| v.iter().map(|&c| cmdb.ci(c).id.clone()).collect::<Vec<_>>();
        faults.push(Fault {
            root: cmdb.ci(root).id.clone(),
            site: cmdb.ci(root).site.clone(),
            symptoms: id(&symptoms),
            missing: id(&missing),
            onset: plan.onset,
            recovery,
            late_root: d.late_roots && !symptoms.is_empty() && rng.gen_bool(LATE_ROOT),
            slow,
            redundant: plan.redundant,
            overlaps: plan.partner,
            root_read_lag: None,
        });
        ups.push(up);
    }
    let noise = if d.warning_noise { place_noise(cmdb, p, &faults, &ups, &claims, rng) } else { Vec::new() };
    Truth { faults, noise }
}

/// When a fault starts and recovers, next to which earlier fault, and
/// whether on a redundant pair.
struct Plan {
    onset: DateTime<Utc>,
    recovery: Option<DateTime<Utc>>,
    partner: Option<usize>,
    redundant: bool,
}

/// The CIs that can fail: per kind with its weight, and the redundant pairs' members.
struct Pools<'a> {
    by_kind: &'a [(Vec<CiIdx>, u32)],
    total: u32,
    redundant: &'a [CiIdx],
}

/// A fault's root, alerting symptoms, silent symptoms, alerting CIs and their upstream.
type Room = (CiIdx, Vec<CiIdx>, Vec<CiIdx>, Vec<CiIdx>, HashSet<CiIdx>);

/// A root for `plan` whose alerting CIs touch no other fault's, at a site
/// allowed then: the partner's, or (without overlapping faults) one where
/// no other fault is under way.
fn find_room(
    cmdb: &Snapshot,
    plan: &Plan,
    pools: &Pools<'_>,
    faults: &[Fault],
    claims: &Claims,
    d: super::Difficulties,
    rng: &mut ChaCha8Rng,
) -> Option<Room> {
    let margin = Duration::minutes(5);
    let busy: HashSet<Option<&str>> = faults
        .iter()
        .filter(|f| {
            let (end, plan_end) = (f.recovery.unwrap_or(DateTime::<Utc>::MAX_UTC), plan.recovery.unwrap_or(DateTime::<Utc>::MAX_UTC));
            f.onset - margin < plan_end && plan.onset - margin < end
        })
        .map(|f| f.site.as_deref())
        .collect();
    if pools.by_kind.is_empty() && !plan.redundant {
        return None;
    }
    for _ in 0..ATTEMPTS {
        let list = if plan.redundant {
            pools.redundant
        } else {
            let mut pick = rng.gen_range(0..pools.total.max(1));
            let mut list: &[CiIdx] = &pools.by_kind[0].0;
            for (v, w) in pools.by_kind {
                if pick < *w {
                    list = v;
                    break;
                }
                pick -= w;
            }
            list
        };
        let &root = list.choose(rng)?;
        let site = cmdb.ci(root).site.as_deref();
        let site_ok = match plan.partner {
            Some(k) => site.is_some() && site == faults[k].site.as_deref(),
            None => d.overlapping_faults || !busy.contains(&site),
        };
        if !site_ok {
            continue;
        }
        let below = if plan.redundant { Some((Vec::new(), Vec::new())) } else { symptoms_of(cmdb, root, d.missing_symptoms, rng) };
        let Some((symptoms, missing)) = below else { continue };
        let alerting: Vec<CiIdx> = std::iter::once(root).chain(symptoms.iter().copied()).collect();
        let up = upstream_of(cmdb, &alerting);
        // A redundant fault's peers carry the load: none of them alerts.
        let peers_up = !plan.redundant || peers_of(cmdb, root).iter().all(|p| !claims.alerting.contains(p));
        if peers_up && claims.admits(&alerting, &up) {
            return Some((root, symptoms, missing, alerting, up));
        }
    }
    None
}

/// Warnings on CIs that alert for no fault and are below none: every other
/// one upstream of a fault, around its onset; the others anywhere, any time.
fn place_noise(
    cmdb: &Snapshot,
    p: &ScenarioParams,
    faults: &[Fault],
    ups: &[HashSet<CiIdx>],
    claims: &Claims,
    rng: &mut ChaCha8Rng,
) -> Vec<Noise> {
    let free = |c: &CiIdx, taken: &HashSet<CiIdx>| {
        alerts(cmdb, *c) && !claims.alerting.contains(c) && !claims.downstream.contains(c) && !taken.contains(c)
    };
    let wanted = (faults.len() as f64 * NOISE_PER_FAULT).round() as usize;
    let mut taken = HashSet::new();
    let mut out = Vec::new();
    for n in 0..wanted {
        let upstream = (n % 2 == 0 && !faults.is_empty()).then(|| rng.gen_range(0..faults.len()));
        let (ci, onset) = match upstream {
            Some(k) => {
                let mut near: Vec<CiIdx> = ups[k].iter().copied().filter(|c| free(c, &taken)).collect();
                near.sort_unstable();
                let Some(&c) = near.choose(rng) else { continue };
                (c, (faults[k].onset + secs(rng, -180, 120)).max(p.start))
            }
            None => {
                let Some(c) = (0..ATTEMPTS).map(|_| rng.gen_range(0..cmdb.len() as CiIdx)).find(|c| free(c, &taken)) else { continue };
                (c, p.start + secs(rng, 0, p.span.num_seconds().max(1)))
            }
        };
        taken.insert(ci);
        let clears = (!rng.gen_bool(NOISE_STAYS)).then(|| onset + secs(rng, 2 * 60, 15 * 60));
        out.push(Noise { ci: cmdb.ci(ci).id.clone(), upstream_of: upstream, onset, clears });
    }
    out
}

/// Event times of a fault's streams: `(ci, first firing)`, root first.
pub(super) fn starts(f: &Fault, rng: &mut ChaCha8Rng) -> Vec<(String, DateTime<Utc>)> {
    let mut out = Vec::with_capacity(1 + f.symptoms.len());
    let mut first_symptom: Option<DateTime<Utc>> = None;
    let mut symptoms = Vec::with_capacity(f.symptoms.len());
    for s in &f.symptoms {
        let at = if f.slow.contains(s) { f.onset + secs(rng, 6 * 60, 9 * 60) } else { f.onset + secs(rng, 1, 20) };
        first_symptom = Some(first_symptom.map_or(at, |t| t.min(at)));
        symptoms.push((s.clone(), at));
    }
    let root_at = match first_symptom {
        Some(t) if f.late_root => t + secs(rng, 20, 120),
        _ => f.onset,
    };
    out.push((f.root.clone(), root_at));
    out.extend(symptoms);
    out
}
