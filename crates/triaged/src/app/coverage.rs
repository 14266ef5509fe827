//! `check`'s route coverage: for every CI of the CMDB and every priority
//! 1..5, the incident that CI would give, and which of those no route
//! matches. The incident is approximated from the CI alone: its
//! `owner_group` as the assignment group, its `oncall`, and the business
//! services that depend on it (what the core computes for a lone CI that is
//! its own root cause; a grouped incident may add services).

use std::collections::BTreeMap;

use crate::route::{Routed, Routes};
use crate::topology::{CiIdx, Snapshot};

/// At most this many lines; the rest is counted in the last one.
const MAX_LINES: usize = 20;

/// One line per CI (grouped by the priorities no route matches), capped.
pub fn unrouted(routes: &Routes, cmdb: &Snapshot) -> Vec<String> {
    let mut gaps: BTreeMap<String, (Vec<u8>, String)> = BTreeMap::new();
    for (i, ci) in cmdb.cis().iter().enumerate() {
        let services: Vec<String> = cmdb.impacted_services(i as CiIdx).into_iter().map(|s| cmdb.ci(s).name.clone()).collect();
        let missed: Vec<u8> = (1..=5)
            .filter(|&p| {
                let r = Routed {
                    peak_priority: p,
                    assignment_group: ci.owner_group.as_deref(),
                    oncall: ci.oncall.as_deref(),
                    services: &services,
                };
                routes.sinks_for_fields(&r).is_empty()
            })
            .collect();
        if !missed.is_empty() {
            let who = format!("owner {}, oncall {}", ci.owner_group.as_deref().unwrap_or("none"), ci.oncall.as_deref().unwrap_or("none"));
            gaps.insert(ci.name.clone(), (missed, who));
        }
    }
    let total = gaps.len();
    let mut out: Vec<String> = gaps
        .into_iter()
        .take(MAX_LINES)
        .map(|(name, (ps, who))| {
            let ps = ps.iter().map(|p| format!("P{p}")).collect::<Vec<_>>().join("/");
            format!("routes: no route matches {ps} incidents on {name} ({who})")
        })
        .collect();
    if total > MAX_LINES {
        out.push(format!("routes: ... and {} more CIs with incidents no route matches", total - MAX_LINES));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const CMDB: &str = r#"
cis:
  - id: db-07
    name: db-07
    type: database
    owner_group: dba
    oncall: dba-oncall
  - id: web-01
    name: web-01
    type: host
    owner_group: web
    oncall: web-oncall
  - id: payments
    name: payments
    type: business_service
    owner_group: web
    oncall: web-oncall
    depends_on: [db-07]
"#;

    fn routes(text: &str) -> Routes {
        let base = "[kafka]\nbrokers = \"b\"\ngroup_id = \"g\"\ntopics = [{ name = \"e\" }]\n[cmdb]\npath = \"c\"\n[rules]\ndir = \"r\"\n";
        let sinks = "[sinks.a]\nprofile = \"generic\"\nendpoint = \"http://127.0.0.1:1\"\n";
        Routes::new(&Config::parse(Path::new("t.toml"), &format!("{base}{sinks}{text}")).unwrap())
    }

    fn cmdb() -> Snapshot {
        Snapshot::from_str(Path::new("c.yaml"), CMDB, false).unwrap()
    }

    #[test]
    fn gaps_are_reported_per_ci_and_priority() {
        let r = routes("[[routes]]\nsinks = [\"a\"]\npriority = [1, 2]\n[[routes]]\nsinks = [\"a\"]\noncall = \"web-oncall\"\n");
        assert_eq!(unrouted(&r, &cmdb()), ["routes: no route matches P3/P4/P5 incidents on db-07 (owner dba, oncall dba-oncall)"]);
        let all = routes("[[routes]]\nsinks = [\"a\"]\n");
        assert!(unrouted(&all, &cmdb()).is_empty());
        // db-07's incidents impact payments, which this route takes.
        let by_service =
            routes("[[routes]]\nsinks = [\"a\"]\nservice = \"payments\"\n[[routes]]\nsinks = [\"a\"]\nowner_group = \"web\"\n");
        assert!(unrouted(&by_service, &cmdb()).is_empty(), "{:?}", unrouted(&by_service, &cmdb()));
        let capped = routes("[[routes]]\nsinks = [\"a\"]\noncall = \"nobody\"\n");
        let big = Snapshot::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/cmdb.yaml")).unwrap();
        let lines = unrouted(&capped, &big);
        assert_eq!(lines.len(), MAX_LINES + 1, "{lines:?}");
        assert!(lines[MAX_LINES].contains("more CIs"), "{lines:?}");
    }
}
