//! CMDB topology: configuration items (CIs), their relations and the indexes the
//! correlation core needs (name/alias/IP binding, upstream closure, impacted
//! business services, maintenance windows).
//!
//! A [`Snapshot`] is built once from a CMDB export (YAML or JSON, chosen by the
//! file extension: `.json` is JSON, anything else YAML), validated as a whole
//! (every error is reported with the line of the offending CI), and then
//! shared read-only as `Arc<Snapshot>`; a reload builds a new snapshot.
//!
//! ```yaml
//! cis:
//!   - id: sw-core-par1-01          # unique, required
//!     name: sw-core-par1-01        # required (display + exact-name binding)
//!     type: switch                 # site | switch | router | firewall | load_balancer | hypervisor | vm
//!                                  # | host | database | application | business_service | storage | other
//!     aliases: [sw-core-par1-01.par1.example.net]
//!     ips: [10.1.0.1]
//!     site: par1
//!     owner_group: network-ops     # ITSM assignment group
//!     oncall: network-oncall
//!     runbook: https://runbooks.example.net/network/core-switch
//!     criticality: critical        # critical | high | medium | low (default medium)
//!     depends_on: []               # relations point from the dependent CI to the
//!     runs_on: []                  # CI it needs: the target is *upstream*
//!     connects_to: [sw-core-par1-02]
//!     maintenance:
//!       - { start: 2026-11-24T22:00:00Z, end: 2026-11-25T02:00:00Z, change_id: CHG0031337, reason: "firmware upgrade" }
//! redundancy_groups:               # optional: peers of which min_up must be up
//!   - id: core-par1                # unique, required
//!     members: [sw-core-par1-01, sw-core-par1-02]   # CI ids, at least two, each in one group only
//!     min_up: 1                    # default 1, fewer than the members
//! ```
//!
//! Relations are stored as CSR adjacency arrays in both directions; name
//! lookups go through one map of ASCII-lowercased keys (ids, names, aliases)
//! plus a small map of unambiguous FQDN short hosts. Dependency cycles (switch
//! meshes) are allowed; every traversal keeps a visited set.

mod build;
pub mod changes;
mod model;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

pub use model::{CiSpec, CiType, CmdbFile, Criticality, GroupSpec, MaintenanceWindow, RelKind};

/// Index of a CI inside one [`Snapshot`] (not stable across reloads: re-bind by id).
pub type CiIdx = u32;

/// Sentinel in the short-host map: more than one CI has this short host.
const AMBIGUOUS: CiIdx = CiIdx::MAX;

/// Sentinel in the group index: the CI is in no redundancy group.
const NO_GROUP: u32 = u32::MAX;

/// One configuration item as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ci {
    pub id: String,
    pub name: String,
    /// The CI type as written in the file (`switch`, `vm`, `business_service`, ...).
    pub kind: String,
    /// The same type as an enum.
    pub ci_type: CiType,
    pub aliases: Vec<String>,
    pub ips: Vec<String>,
    pub site: Option<String>,
    pub owner_group: Option<String>,
    pub oncall: Option<String>,
    pub runbook: Option<String>,
    pub criticality: Criticality,
    pub maintenance: Vec<MaintenanceWindow>,
}

/// A redundancy group as loaded: its members by index, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedundancyGroup {
    pub id: String,
    pub members: Vec<CiIdx>,
    pub min_up: usize,
}

impl RedundancyGroup {
    /// With `down` members down, fewer than `min_up` are up.
    pub fn fails_with(&self, down: usize) -> bool {
        self.members.len().saturating_sub(down) < self.min_up
    }
}

/// A CMDB load or validation error. Displays as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}", .file.display(), .line.map(|l| format!(":{l}")).unwrap_or_default(), .message)]
pub struct CmdbError {
    pub file: PathBuf,
    /// Line where the offending CI starts (or of the syntax error), when known.
    pub line: Option<usize>,
    pub message: String,
}

/// A validated CMDB topology, immutable once shared (a change calendar is merged in before).
#[derive(Debug, Clone)]
pub struct Snapshot {
    cis: Vec<Ci>,
    /// `cis[i].ci_type`, packed: traversals test types without touching `Ci`s.
    types: Vec<CiType>,
    /// CSR: upstream of CI `i` is `up[up_off[i]..up_off[i + 1]]`.
    up_off: Vec<u32>,
    up: Vec<(CiIdx, RelKind)>,
    /// CSR: direct dependents, sorted by dependent index.
    down_off: Vec<u32>,
    down: Vec<(CiIdx, RelKind)>,
    /// ASCII-lowercased ids, names and aliases.
    names: FastMap<String, CiIdx>,
    /// Lowercased short hosts of FQDN keys that are not keys themselves.
    short_names: FastMap<String, CiIdx>,
    ips: FastMap<IpAddr, CiIdx>,
    groups: Vec<RedundancyGroup>,
    /// `group_of[ci]`: index in `groups`, or [`NO_GROUP`].
    group_of: Vec<u32>,
    loaded_at: DateTime<Utc>,
    source: Option<PathBuf>,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Snapshot>();
};

impl Snapshot {
    /// Reads, parses and validates a CMDB file (`.json` as JSON, otherwise YAML).
    pub fn load(path: &Path) -> Result<Snapshot, Vec<CmdbError>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![CmdbError { file: path.to_owned(), line: None, message: format!("cannot read CMDB file: {e}") }])?;
        let json = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let model = build::parse(path, &text, json)?;
        drop(text); // a big export is not kept while the indexes are built
                    // Only when there are errors: read the text again to locate them.
        let lines = |ids: &[&str]| match std::fs::read_to_string(path) {
            Ok(text) => build::entry_lines(&text, ids),
            Err(_) => vec![None; ids.len()],
        };
        build::build(model, Some(path), &lines)
    }

    /// Parses and validates CMDB text; `path_for_errors` only names the file in errors.
    pub fn from_str(path_for_errors: &Path, text: &str, json: bool) -> Result<Snapshot, Vec<CmdbError>> {
        let model = build::parse(path_for_errors, text, json)?;
        build::build(model, Some(path_for_errors), &|ids| build::entry_lines(text, ids))
    }

    /// Validates an in-memory model (generated topologies); errors carry no line.
    pub fn from_file_model(model: CmdbFile) -> Result<Snapshot, Vec<CmdbError>> {
        build::build(model, None, &|ids| vec![None; ids.len()])
    }

    /// A snapshot without CIs.
    pub fn empty() -> Snapshot {
        Snapshot::from_file_model(CmdbFile::default()).expect("an empty CMDB is valid")
    }

    pub fn len(&self) -> usize {
        self.cis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cis.is_empty()
    }

    /// The CI at `idx`. Panics when `idx` is out of range.
    pub fn ci(&self, idx: CiIdx) -> &Ci {
        &self.cis[idx as usize]
    }

    /// All CIs, indexed by [`CiIdx`].
    pub fn cis(&self) -> &[Ci] {
        &self.cis
    }

    /// When this snapshot was built.
    pub fn loaded_at(&self) -> DateTime<Utc> {
        self.loaded_at
    }

    /// The file it was loaded from (`None` for in-memory models).
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Number of CIs per type (`switch` -> 24, ...).
    pub fn count_by_type(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for c in &self.cis {
            *m.entry(c.ci_type.as_str()).or_insert(0) += 1;
        }
        m
    }

    /// The redundancy groups.
    pub fn groups(&self) -> &[RedundancyGroup] {
        &self.groups
    }

    /// The redundancy group `idx` is a member of.
    pub fn group_of(&self, idx: CiIdx) -> Option<&RedundancyGroup> {
        match self.group_of.get(idx as usize) {
            Some(&g) if g != NO_GROUP => self.groups.get(g as usize),
            _ => None,
        }
    }

    /// Number of relations (edges).
    pub fn relation_count(&self) -> usize {
        self.up.len()
    }

    /// Exact (case-sensitive) id lookup.
    pub fn by_id(&self, id: &str) -> Option<CiIdx> {
        let idx = with_lower(id, |k| self.names.get(k).copied())?;
        (self.cis[idx as usize].id == id).then_some(idx)
    }

    /// Binds a monitoring name to a CI: exact id, name or alias (ASCII
    /// case-insensitive); else the short host of an FQDN
    /// (`web-01.par1.example.net` -> `web-01`); else a short name that is the
    /// short host of exactly one CI's FQDN id/name/alias.
    pub fn lookup_name(&self, name: &str) -> Option<CiIdx> {
        let name = name.trim();
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return None;
        }
        with_lower(name, |key| {
            if let Some(&i) = self.names.get(key) {
                return Some(i);
            }
            if let Some(short) = short_host(key) {
                if let Some(&i) = self.names.get(short) {
                    return Some(i);
                }
                return self.short_names.get(short).copied().filter(|&i| i != AMBIGUOUS);
            }
            self.short_names.get(key).copied().filter(|&i| i != AMBIGUOUS)
        })
    }

    /// Binds an IP address (also accepts `ip:port` and `[v6]:port`).
    pub fn lookup_ip(&self, ip: &str) -> Option<CiIdx> {
        let ip = ip.trim();
        let addr = ip.parse::<IpAddr>().ok().or_else(|| ip.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))?;
        self.ips.get(&addr).copied()
    }

    /// Direct upstream CIs (what `idx` depends on, runs on, connects to).
    pub fn upstream(&self, idx: CiIdx) -> &[(CiIdx, RelKind)] {
        let i = idx as usize;
        &self.up[self.up_off[i] as usize..self.up_off[i + 1] as usize]
    }

    /// Direct dependents of `idx`.
    pub fn downstream(&self, idx: CiIdx) -> &[(CiIdx, RelKind)] {
        let i = idx as usize;
        &self.down[self.down_off[i] as usize..self.down_off[i + 1] as usize]
    }

    /// Everything upstream of `idx` within `max_depth` hops, breadth first:
    /// `(ci, distance >= 1)`, each CI once at its shortest distance, `idx` itself
    /// excluded (even on a cycle).
    pub fn upstream_closure(&self, idx: CiIdx, max_depth: usize) -> Vec<(CiIdx, u32)> {
        let mut out = Vec::new();
        self.bfs_up(idx, max_depth, |_, _| false, &mut out);
        out
    }

    /// Distance from `down` up to `up` if `up` is in `down`'s upstream closure.
    pub fn is_upstream_of(&self, up: CiIdx, down: CiIdx, max_depth: usize) -> Option<u32> {
        if up == down {
            return None;
        }
        let mut out = Vec::new();
        self.bfs_up(down, max_depth, |c, _| c == up, &mut out).map(|(_, d)| d)
    }

    /// Everything downstream of `idx` within `max_depth` hops with its
    /// shortest distance, `idx` itself excluded: for every `down` in it,
    /// `is_upstream_of(idx, down, max_depth)` is that distance. One walk
    /// answers the question for many candidates at once.
    pub(crate) fn downstream_within(&self, idx: CiIdx, max_depth: usize) -> FastMap<CiIdx, u32> {
        let mut dist: FastMap<CiIdx, u32> = FastMap::default();
        let mut frontier = vec![idx];
        for d in 1..=max_depth as u32 {
            let mut next = Vec::new();
            for &c in &frontier {
                for &(down, _) in self.downstream(c) {
                    if down != idx && !dist.contains_key(&down) {
                        dist.insert(down, d);
                        next.push(down);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        dist
    }

    /// Breadth-first walk upstream of `start`, appending `(ci, distance)` to
    /// `out`; stops early and returns the first CI for which `stop` is true.
    fn bfs_up(
        &self,
        start: CiIdx,
        max_depth: usize,
        mut stop: impl FnMut(CiIdx, u32) -> bool,
        out: &mut Vec<(CiIdx, u32)>,
    ) -> Option<(CiIdx, u32)> {
        if max_depth == 0 {
            return None;
        }
        let mut seen: rustc_hash::FxHashSet<CiIdx> = rustc_hash::FxHashSet::with_capacity_and_hasher(16, Default::default());
        seen.insert(start);
        let mut head = out.len();
        let mut cur = (start, 0u32);
        loop {
            let (c, d) = cur;
            for &(u, _) in self.upstream(c) {
                if seen.insert(u) {
                    out.push((u, d + 1));
                    if stop(u, d + 1) {
                        return Some((u, d + 1));
                    }
                }
            }
            loop {
                if head >= out.len() {
                    return None;
                }
                cur = out[head];
                head += 1;
                if (cur.1 as usize) < max_depth {
                    break;
                }
            }
        }
    }

    /// Business services that transitively depend on `idx` (including `idx`
    /// itself when it is one), sorted by index.
    pub fn impacted_services(&self, idx: CiIdx) -> Vec<CiIdx> {
        self.impacted_services_of([idx])
    }

    /// Business services impacted by any of `cis` (one traversal for all of
    /// them, cheaper than a union of [`Snapshot::impacted_services`] calls), sorted.
    pub fn impacted_services_of(&self, cis: impl IntoIterator<Item = CiIdx>) -> Vec<CiIdx> {
        self.impacted_services_through(cis, |_| true)
    }

    /// Business services impacted by any of `cis`, where the impact goes
    /// on below a CI only when `passes` it (a redundancy group member whose
    /// peers carry the load stops it), sorted.
    pub fn impacted_services_through(&self, cis: impl IntoIterator<Item = CiIdx>, passes: impl Fn(CiIdx) -> bool) -> Vec<CiIdx> {
        let mut seen = BitSet::new(self.cis.len());
        let mut queue: Vec<CiIdx> = cis.into_iter().filter(|&c| seen.insert(c)).collect();
        let starts = queue.len();
        let mut head = 0;
        let mut out = Vec::new();
        while head < queue.len() {
            let c = queue[head];
            head += 1;
            if self.types[c as usize] == CiType::BusinessService {
                out.push(c);
            }
            if head > starts && !passes(c) {
                continue;
            }
            for &(d, _) in self.downstream(c) {
                if seen.insert(d) {
                    queue.push(d);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Adds a planned window to `idx` (from a change calendar).
    pub fn add_maintenance(&mut self, idx: CiIdx, window: MaintenanceWindow) {
        self.cis[idx as usize].maintenance.push(window);
    }

    /// The maintenance window of `idx` that contains `now`, if any.
    pub fn active_maintenance(&self, idx: CiIdx, now: DateTime<Utc>) -> Option<&MaintenanceWindow> {
        self.cis[idx as usize].maintenance.iter().find(|w| w.contains(now))
    }
}

/// Runs `f` on the ASCII-lowercased `s`, allocating only when needed.
fn with_lower<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        f(&s.to_ascii_lowercase())
    } else {
        f(s)
    }
}

/// The short host of an FQDN-looking key (`web-01.par1.example.net` -> `web-01`);
/// `None` for keys without a dot and for IP addresses.
fn short_host(key: &str) -> Option<&str> {
    let dot = key.find('.')?;
    if dot == 0 || key.parse::<IpAddr>().is_ok() {
        return None;
    }
    Some(&key[..dot])
}

/// Hash maps keyed by CMDB content (trusted input, so no DoS-resistant
/// hashing): rustc's FxHash, several times faster than SipHash on short names,
/// which matters with millions of keys.
pub(crate) type FastMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// A fixed-size visited set.
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(n: usize) -> BitSet {
        BitSet(vec![0; n.div_ceil(64)])
    }

    /// True when `i` was not yet in the set.
    fn insert(&mut self, i: CiIdx) -> bool {
        let (w, b) = (i as usize / 64, 1u64 << (i % 64));
        let fresh = self.0[w] & b == 0;
        self.0[w] |= b;
        fresh
    }
}
