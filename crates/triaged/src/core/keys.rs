//! The keys events and incidents are known by: the CI an event binds to, its
//! fingerprint (dedup key) and its `group` key, the text of a correlation
//! scope, and the deterministic incident key. `decide` computes an event's keys
//! once and hands them to each decision; [`route`] uses the same functions and
//! needs only the rules, the CMDB and the default dedup key, so the
//! repartition stage routes without a core and always agrees with it.

use super::{Core, Inc, Scope};
use crate::event::{Event, Status};
use crate::rules::template::Template;
use crate::rules::{Classification, Group, RuleSet};
use crate::topology::{CiIdx, Snapshot};

/// Where one event correlates: the CI it binds to (and how), and its fingerprint.
pub(super) struct Keys {
    pub(super) ci: Option<CiIdx>,
    pub(super) bind_reason: String,
    pub(super) fingerprint: String,
}

/// See [`route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub ci: Option<CiIdx>,
    pub group: Option<String>,
    pub fingerprint: String,
}

/// Where `ev` correlates, for the repartition stage: the CI it binds to in
/// `cmdb`, its `group` rule's scope, and its fingerprint (`dedup_key` unless a
/// rule sets one). The rules see it as firing, so that an alert and its
/// resolve route alike.
pub fn route(rules: &RuleSet, cmdb: &Snapshot, dedup_key: &Template, ev: &Event) -> Route {
    let firing;
    let ev = if ev.status == Status::Resolved {
        firing = Event { status: Status::Firing, ..ev.clone() };
        &firing
    } else {
        ev
    };
    let class = rules.classify(ev);
    let Keys { ci, fingerprint, .. } = keys(cmdb, dedup_key, ev, &class);
    let ci_id = ci.map(|i| cmdb.ci(i).id.as_str());
    let group = class.group.map(|(rule, g)| group_key(rule, &group_values(ev, g, ci_id)));
    Route { ci, group, fingerprint }
}

/// The CI and the fingerprint of `ev`, classified as `class`.
pub(super) fn keys(cmdb: &Snapshot, dedup_key: &Template, ev: &Event, class: &Classification) -> Keys {
    let (ci, bind_reason) = bind(cmdb, ev, class.bind.map(|(r, t)| (r, t.render(ev, None, &class.captures))));
    let ci_id = ci.map(|i| cmdb.ci(i).id.clone());
    let fingerprint = match class.dedup_key {
        Some((_, t)) => t.render(ev, ci_id.as_deref(), &class.captures),
        None => dedup_key.render(ev, ci_id.as_deref(), &class.captures),
    };
    Keys { ci, bind_reason, fingerprint }
}

/// The CI `ev` binds to, and how: a rule's binding, else the host or
/// service name, else the IP.
fn bind(cmdb: &Snapshot, ev: &Event, rule_bind: Option<(&str, String)>) -> (Option<CiIdx>, String) {
    if let Some((rule, name)) = rule_bind {
        if let Some(i) = cmdb.lookup_name(&name).or_else(|| cmdb.lookup_ip(&name)) {
            return (Some(i), format!("bound to CI {} by rule `{rule}` ({name})", cmdb.ci(i).id));
        }
    }
    let hints = [("host", ev.ci.host.as_deref()), ("service", ev.ci.service.as_deref())];
    for (what, hint) in hints {
        if let Some(i) = hint.and_then(|h| cmdb.lookup_name(h)) {
            return (Some(i), format!("bound to CI {} by {what} name", cmdb.ci(i).id));
        }
    }
    if let Some(i) = ev.ci.ip.as_deref().and_then(|ip| cmdb.lookup_ip(ip)) {
        return (Some(i), format!("bound to CI {} by IP", cmdb.ci(i).id));
    }
    (None, "not bound to a CI".into())
}

impl Core {
    /// Deterministic incident key: a hash of the scope and the earliest
    /// member's first-seen time, so replaying the same events gives the same key.
    pub(super) fn key_for(&self, inc: &Inc) -> String {
        let earliest = inc.members.iter().filter_map(|m| self.fps.get(m)).map(|f| f.episode_start).min().unwrap_or(inc.created);
        let text = format!("{}|{}", inc.scope.text(), earliest.timestamp_millis());
        format!("trg-{:016x}", fnv1a(text.as_bytes()))
    }
}

/// The values of the `by` fields of group `g` in `ev` (empty when absent);
/// `ci` is the bound CI's id, else the host or IP, as in a key template.
pub(super) fn group_values(ev: &Event, g: &Group, ci: Option<&str>) -> Vec<String> {
    g.by.iter()
        .map(|f| match f.as_str() {
            "ci" => ci.or(ev.ci.host.as_deref()).or(ev.ci.ip.as_deref()),
            f => ev.field(f),
        })
        .map(|v| v.unwrap_or("").to_owned())
        .collect()
}

/// The group key of rule `rule`: its name and the field values.
pub(super) fn group_key(rule: &str, values: &[String]) -> String {
    format!("{rule}:{}", values.join("|"))
}

impl Scope {
    /// The scope as text: `topology:<ci>`, `group:<key>` or `fingerprint:<fp>`.
    pub(super) fn text(&self) -> String {
        match self {
            Scope::Topology(ci) => format!("topology:{ci}"),
            Scope::Group(g) => format!("group:{g}"),
            Scope::Single(f) => format!("fingerprint:{f}"),
        }
    }
}

/// FNV-1a, 64 bit: stable across Rust releases, unlike `DefaultHasher`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
