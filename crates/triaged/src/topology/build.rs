//! Parsing, validation and index construction for [`Snapshot`].

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;

use super::{
    short_host, with_lower, Ci, CiIdx, CiSpec, CiType, CmdbError, CmdbFile, FastMap, GroupSpec, RedundancyGroup, RelKind, Snapshot,
    AMBIGUOUS, NO_GROUP,
};

/// Parses CMDB text into the file model; syntax and schema errors carry their line.
pub(super) fn parse(path: &Path, text: &str, json: bool) -> Result<CmdbFile, Vec<CmdbError>> {
    let err = |line: Option<usize>, col: Option<usize>, msg: String| {
        let message = match col {
            Some(c) => format!("{msg} (column {c})"),
            None => msg,
        };
        vec![CmdbError { file: path.to_owned(), line, message }]
    };
    if json {
        serde_json::from_str(text).map_err(|e| {
            let msg = strip_location(e.to_string(), e.line(), e.column());
            if e.line() == 0 {
                err(None, None, msg)
            } else {
                err(Some(e.line()), Some(e.column()), msg)
            }
        })
    } else {
        yaml_serde::from_str(text).map_err(|e| match e.location() {
            Some(l) => err(Some(l.line()), Some(l.column()), strip_location(e.to_string(), l.line(), l.column())),
            None => err(None, None, e.to_string()),
        })
    }
}

/// Drops the ` at line L column C` suffix serde puts on its messages.
fn strip_location(msg: String, line: usize, col: usize) -> String {
    let suffix = format!(" at line {line} column {col}");
    match msg.strip_suffix(&suffix) {
        Some(m) => m.to_string(),
        None => msg,
    }
}

/// A validation error not yet tied to a line.
struct Pending {
    /// The entry it is about: a CI's index, or the CI count plus a group's index.
    ci: usize,
    message: String,
    /// Another CI the message refers to ("first defined at line N").
    other: Option<usize>,
}

fn label(specs: &[CiSpec], i: usize) -> String {
    if specs[i].id.is_empty() {
        format!("#{}", i + 1)
    } else {
        specs[i].id.clone()
    }
}

/// What a CI claims in the name index.
#[derive(Clone, Copy)]
enum NameKind {
    Id,
    Name,
    Alias,
}

impl NameKind {
    fn as_str(self) -> &'static str {
        match self {
            NameKind::Id => "id",
            NameKind::Name => "name",
            NameKind::Alias => "alias",
        }
    }
}

/// Finds the line of each entry (the CIs' ids, then the groups' ids) when
/// there are errors to report.
pub(super) type LineFinder<'a> = &'a dyn Fn(&[&str]) -> Vec<Option<usize>>;

/// Validates the model and builds the snapshot. `file` names the source in
/// errors (and in [`Snapshot::source`]); `lines` locates CIs for error messages.
pub(super) fn build(model: CmdbFile, file: Option<&Path>, lines: LineFinder<'_>) -> Result<Snapshot, Vec<CmdbError>> {
    let specs = model.cis;
    let group_specs = model.redundancy_groups;
    let n = specs.len();
    if n >= AMBIGUOUS as usize {
        return Err(vec![CmdbError { file: file_of(file), line: None, message: format!("{n} CIs exceed the supported maximum") }]);
    }
    let mut errors: Vec<Pending> = Vec::new();
    let mut err = |ci: usize, message: String| errors.push(Pending { ci, message, other: None });

    // Pass 1: the name and IP indexes.
    let alias_count: usize = specs.iter().map(|c| c.aliases.len()).sum();
    let mut names: FastMap<String, CiIdx> = FastMap::with_capacity_and_hasher(2 * n + alias_count, Default::default());
    let mut ips: FastMap<IpAddr, CiIdx> = FastMap::with_capacity_and_hasher(n, Default::default());
    let mut dup_ids: Vec<(usize, usize)> = Vec::new();
    for (i, c) in specs.iter().enumerate() {
        let idx = i as CiIdx;
        if c.id.trim().is_empty() {
            err(i, format!("ci #{}: empty id", i + 1));
        }
        if c.name.trim().is_empty() {
            err(i, format!("ci {}: empty name", label(&specs, i)));
        }
        let mut dup = false;
        let claims = std::iter::once((NameKind::Id, &c.id))
            .chain(std::iter::once((NameKind::Name, &c.name)))
            .chain(c.aliases.iter().map(|a| (NameKind::Alias, a)));
        for (k, (what, s)) in claims.enumerate() {
            // The same key again within this CI (name == id, alias == name): nothing to claim.
            let again = match k {
                _ if s.trim().is_empty() => false,
                0 => false,
                1 => s.eq_ignore_ascii_case(&c.id),
                _ => s.eq_ignore_ascii_case(&c.id) || s.eq_ignore_ascii_case(&c.name),
            };
            if again {
                continue;
            }
            if s.trim().is_empty() {
                if matches!(what, NameKind::Alias) {
                    err(i, format!("ci {}: empty alias", label(&specs, i)));
                }
                continue;
            }
            match names.entry(s.to_ascii_lowercase()) {
                Entry::Vacant(v) => {
                    v.insert(idx);
                }
                Entry::Occupied(o) => {
                    let j = *o.get() as usize;
                    if j == i {
                        continue;
                    }
                    if matches!(what, NameKind::Id) && specs[j].id == *s {
                        dup_ids.push((i, j));
                        dup = true;
                        break; // the rest of a duplicate CI would only repeat the conflict
                    }
                    let key = o.key();
                    let theirs = if specs[j].id.eq_ignore_ascii_case(key) {
                        NameKind::Id
                    } else if specs[j].name.eq_ignore_ascii_case(key) {
                        NameKind::Name
                    } else {
                        NameKind::Alias
                    };
                    err(
                        i,
                        format!(
                            "ci {}: {} {s} is already claimed as {} of ci {}",
                            label(&specs, i),
                            what.as_str(),
                            theirs.as_str(),
                            specs[j].id
                        ),
                    );
                }
            }
        }
        if dup {
            continue;
        }
        for ip in &c.ips {
            let Ok(addr) = ip.trim().parse::<IpAddr>() else {
                err(i, format!("ci {}: invalid ip {ip:?}", label(&specs, i)));
                continue;
            };
            match ips.entry(addr) {
                Entry::Vacant(v) => {
                    v.insert(idx);
                }
                Entry::Occupied(o) if *o.get() as usize != i => {
                    let j = *o.get() as usize;
                    err(i, format!("ci {}: ip {ip} is already claimed by ci {}", label(&specs, i), specs[j].id));
                }
                Entry::Occupied(_) => {}
            }
        }
    }
    for (i, j) in dup_ids {
        errors.push(Pending { ci: i, message: format!("duplicate ci id {}", specs[i].id), other: Some(j) });
    }

    // Pass 2: relations (CSR, upstream direction), resolved by exact id.
    let resolve = |t: &str| -> Option<usize> {
        let j = with_lower(t, |k| names.get(k).copied())? as usize;
        (specs[j].id == t).then_some(j)
    };
    let rel_count: usize = specs.iter().map(|c| c.depends_on.len() + c.runs_on.len() + c.connects_to.len()).sum();
    if rel_count >= u32::MAX as usize {
        return Err(vec![CmdbError {
            file: file_of(file),
            line: None,
            message: format!("{rel_count} relations exceed the supported maximum"),
        }]);
    }
    let mut up_off: Vec<u32> = Vec::with_capacity(n + 1);
    let mut up: Vec<(CiIdx, RelKind)> = Vec::with_capacity(rel_count);
    up_off.push(0);
    let mut rel_errors = Vec::new();
    for (i, c) in specs.iter().enumerate() {
        let start = up.len();
        for kind in RelKind::ALL {
            for t in c.relations(kind) {
                match resolve(t) {
                    None => rel_errors.push((i, format!("ci {}: {kind} target {t} does not exist", label(&specs, i)))),
                    Some(j) if j == i => rel_errors.push((i, format!("ci {}: {kind} {t} points to itself", label(&specs, i)))),
                    Some(j) => {
                        let e = (j as CiIdx, kind);
                        if !up[start..].contains(&e) {
                            up.push(e);
                        }
                    }
                }
            }
        }
        up_off.push(up.len() as u32);
    }
    for (i, m) in rel_errors {
        errors.push(Pending { ci: i, message: m, other: None });
    }

    // Maintenance windows.
    for (i, c) in specs.iter().enumerate() {
        for (k, w) in c.maintenance.iter().enumerate() {
            if w.end <= w.start {
                let what = match &w.change_id {
                    Some(chg) => format!("maintenance window {} ({chg})", k + 1),
                    None => format!("maintenance window {}", k + 1),
                };
                errors.push(Pending {
                    ci: i,
                    message: format!(
                        "ci {}: {what} ends at {} which is not after its start {}",
                        label(&specs, i),
                        w.end.to_rfc3339(),
                        w.start.to_rfc3339()
                    ),
                    other: None,
                });
            }
        }
    }

    let (groups, group_of) = redundancy_groups(&group_specs, &specs, &resolve, &mut errors);

    if !errors.is_empty() {
        return Err(locate(errors, &specs, &group_specs, file, lines));
    }

    // Downstream CSR: dependents in ascending index order.
    let mut down_off = vec![0u32; n + 1];
    for &(t, _) in &up {
        down_off[t as usize + 1] += 1;
    }
    for i in 0..n {
        down_off[i + 1] += down_off[i];
    }
    let mut fill: Vec<u32> = down_off[..n].to_vec();
    let mut down = vec![(0 as CiIdx, RelKind::DependsOn); up.len()];
    for i in 0..n {
        for &(t, kind) in &up[up_off[i] as usize..up_off[i + 1] as usize] {
            let slot = &mut fill[t as usize];
            down[*slot as usize] = (i as CiIdx, kind);
            *slot += 1;
        }
    }
    drop(fill);

    // Short hosts of FQDN keys that are not keys themselves, when unambiguous.
    let mut short_names: FastMap<String, CiIdx> = FastMap::default();
    for (i, c) in specs.iter().enumerate() {
        let keys = std::iter::once(&c.id).chain(std::iter::once(&c.name)).chain(&c.aliases);
        for key in keys {
            let Some(short) = short_host(key) else {
                continue;
            };
            // Usual case: `<name>.<domain>`, the short host is this CI's own key.
            if short.eq_ignore_ascii_case(&c.name) || short.eq_ignore_ascii_case(&c.id) {
                continue;
            }
            let short = short.to_ascii_lowercase();
            if names.contains_key(&short) {
                continue;
            }
            match short_names.get_mut(&short) {
                None => {
                    short_names.insert(short, i as CiIdx);
                }
                Some(v) if *v != i as CiIdx => *v = AMBIGUOUS,
                Some(_) => {}
            }
        }
    }

    let types: Vec<CiType> = specs.iter().map(|c| c.kind).collect();
    let cis: Vec<Ci> = specs
        .into_iter()
        .map(|c| Ci {
            kind: c.kind.as_str().to_string(),
            ci_type: c.kind,
            id: c.id,
            name: c.name,
            aliases: c.aliases,
            ips: c.ips,
            site: c.site,
            owner_group: c.owner_group,
            oncall: c.oncall,
            runbook: c.runbook,
            criticality: c.criticality.unwrap_or_default(),
            maintenance: c.maintenance,
        })
        .collect();

    Ok(Snapshot {
        cis,
        types,
        up_off,
        up,
        down_off,
        down,
        names,
        short_names,
        ips,
        groups,
        group_of,
        loaded_at: chrono::Utc::now(),
        source: file.map(Path::to_path_buf),
    })
}

fn file_of(file: Option<&Path>) -> PathBuf {
    file.map_or_else(|| PathBuf::from("<cmdb model>"), Path::to_path_buf)
}

/// Checks the redundancy groups against the CIs and indexes them: every
/// member exists, is listed once and is in one group only; a group has at
/// least two members and `min_up` between 1 and one fewer than its members.
fn redundancy_groups(
    specs: &[GroupSpec],
    cis: &[CiSpec],
    resolve: &dyn Fn(&str) -> Option<usize>,
    errors: &mut Vec<Pending>,
) -> (Vec<RedundancyGroup>, Vec<u32>) {
    let n = cis.len();
    let mut group_of = vec![NO_GROUP; if specs.is_empty() { 0 } else { n }];
    let mut groups = Vec::with_capacity(specs.len());
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (g, spec) in specs.iter().enumerate() {
        let mut err = |message: String, other: Option<usize>| errors.push(Pending { ci: n + g, message, other });
        let name = if spec.id.trim().is_empty() { format!("#{}", g + 1) } else { spec.id.clone() };
        if spec.id.trim().is_empty() {
            err(format!("redundancy group #{}: empty id", g + 1), None);
        } else if let Some(&first) = ids.get(spec.id.as_str()) {
            err(format!("duplicate redundancy group id {}", spec.id), Some(n + first));
        } else {
            ids.insert(&spec.id, g);
        }
        let mut members: Vec<CiIdx> = Vec::with_capacity(spec.members.len());
        for m in &spec.members {
            match resolve(m) {
                None => err(format!("redundancy group {name}: member {m} is not a CI"), None),
                Some(i) if members.contains(&(i as CiIdx)) => err(format!("redundancy group {name}: member {m} is listed twice"), None),
                Some(i) => {
                    if group_of[i] != NO_GROUP {
                        let other = &specs[group_of[i] as usize].id;
                        err(format!("redundancy group {name}: member {m} is already in redundancy group {other}"), None);
                    } else {
                        group_of[i] = g as u32;
                    }
                    members.push(i as CiIdx);
                }
            }
        }
        if spec.members.len() < 2 {
            err(format!("redundancy group {name}: needs at least two members, has {}", spec.members.len()), None);
        } else if spec.min_up == 0 || spec.min_up >= spec.members.len() {
            err(
                format!(
                    "redundancy group {name}: min_up {} must be at least 1 and fewer than its {} members",
                    spec.min_up,
                    spec.members.len()
                ),
                None,
            );
        }
        members.sort_unstable();
        groups.push(RedundancyGroup { id: spec.id.clone(), members, min_up: spec.min_up });
    }
    (groups, group_of)
}

/// Turns pending errors into [`CmdbError`]s with the line where each CI or group starts.
fn locate(errors: Vec<Pending>, specs: &[CiSpec], groups: &[GroupSpec], file: Option<&Path>, lines: LineFinder<'_>) -> Vec<CmdbError> {
    let ids: Vec<&str> = specs.iter().map(|c| c.id.as_str()).chain(groups.iter().map(|g| g.id.as_str())).collect();
    let lines = lines(&ids);
    let file = file_of(file);
    let mut out: Vec<(usize, CmdbError)> = errors
        .into_iter()
        .enumerate()
        .map(|(seq, p)| {
            let mut message = p.message;
            if let Some(l) = p.other.and_then(|o| lines[o]) {
                message.push_str(&format!(" (first defined at line {l})"));
            }
            (seq, CmdbError { file: file.clone(), line: lines[p.ci], message })
        })
        .collect();
    // By position in the file; errors of one CI keep their order.
    out.sort_by_key(|(seq, e)| (e.line.unwrap_or(usize::MAX), *seq));
    out.into_iter().map(|(_, e)| e).collect()
}

/// `id:` entries of the text (YAML block or flow style, or JSON `"id": "..."`),
/// in order: (value, line).
fn id_entries(text: &str) -> Vec<(String, usize)> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r#"(?m)(?:^|[\s{,])(?:id|"id"|'id')[ \t]*:[ \t]*(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\n]|'')*)'|([^\s,}\]#'"][^,}\]\n]*))"#)
            .expect("valid regex")
    });
    let mut out = Vec::new();
    let (mut line, mut last) = (1usize, 0usize);
    for caps in re.captures_iter(text) {
        let pos = caps.get(0).map_or(0, |m| m.end());
        line += text.as_bytes()[last..pos].iter().filter(|&&b| b == b'\n').count();
        last = pos;
        let value = if let Some(m) = caps.get(1) {
            serde_json::from_str::<String>(&format!("\"{}\"", m.as_str())).unwrap_or_else(|_| m.as_str().to_string())
        } else if let Some(m) = caps.get(2) {
            m.as_str().replace("''", "'")
        } else {
            let v = caps.get(3).map_or("", |m| m.as_str());
            let v = v.find(" #").map_or(v, |p| &v[..p]);
            v.trim().to_string()
        };
        out.push((value, line));
    }
    out
}

/// The line of each `id` entry of `ids` (the CIs', then the groups'), when it can be found.
pub(super) fn entry_lines(text: &str, ids: &[&str]) -> Vec<Option<usize>> {
    let found = id_entries(text);
    if found.len() == ids.len() && found.iter().zip(ids).all(|((v, _), s)| v == s) {
        return found.into_iter().map(|(_, l)| Some(l)).collect();
    }
    // Stray `id:` text (in a reason, say): match by value, k-th occurrence to k-th CI.
    let mut by_value: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (v, l) in &found {
        by_value.entry(v.as_str()).or_default().push_back(*l);
    }
    ids.iter().map(|s| by_value.get_mut(s).and_then(|q| q.pop_front())).collect()
}
