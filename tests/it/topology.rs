//! The shipped example CMDB (`config/cmdb.yaml`) loads, validates and has the
//! topology the correlation core and the demo rely on; JSON exports load the same.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use triaged::topology::{CiType, CmdbFile, Criticality, Snapshot};
use triaged_testkit::cmdb::{example_yaml, synthetic, write_yaml, GenParams};

fn example_path() -> PathBuf {
    crate::repo().join("config/cmdb.yaml")
}

fn example() -> Snapshot {
    Snapshot::load(&example_path())
        .unwrap_or_else(|errs| panic!("config/cmdb.yaml: {}", errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")))
}

#[test]
fn example_cmdb_validates_and_is_realistic() {
    let s = example();
    assert!(s.len() > 200, "{} CIs", s.len());
    assert_eq!(s.source(), Some(example_path().as_path()));
    let counts = s.count_by_type();
    assert_eq!(counts.get("site"), Some(&3));
    assert_eq!(counts.get("business_service"), Some(&8));
    for kind in ["switch", "router", "firewall", "load_balancer", "storage", "hypervisor", "vm", "host", "database", "application"] {
        assert!(counts.get(kind).is_some_and(|&n| n > 0), "no {kind}: {counts:?}");
    }
    // Every CI has an owner, an on-call rotation and a runbook.
    for c in s.cis() {
        assert!(c.owner_group.is_some() && c.oncall.is_some(), "{}", c.id);
        assert!(c.runbook.as_deref().is_some_and(|r| r.starts_with("https://runbooks.example.net/")), "{}", c.id);
    }
    // The file on disk is what the generator produces.
    assert_eq!(std::fs::read_to_string(example_path()).unwrap(), example_yaml());
}

#[test]
fn core_switch_failure_impacts_several_business_services() {
    let s = example();
    let core = s.by_id("sw-core-par1-01").expect("core switch");
    assert_eq!(s.ci(core).kind, "switch");
    assert_eq!(s.ci(core).criticality, Criticality::Critical);
    let services: Vec<&str> = s.impacted_services(core).iter().map(|&i| s.ci(i).id.as_str()).collect();
    assert!(services.len() >= 4, "{services:?}");
    assert!(services.contains(&"bs-payments"), "{services:?}");
    assert!(services.iter().all(|id| id.starts_with("bs-")));
    // The cores of a site are meshed (a cycle) and hang off the site.
    let other = s.by_id("sw-core-par1-02").unwrap();
    assert_eq!(s.is_upstream_of(other, core, 8), Some(1));
    assert_eq!(s.is_upstream_of(core, other, 8), Some(1));
    assert_eq!(s.is_upstream_of(s.by_id("site-par1").unwrap(), core, 8), Some(1));
    // A VM's closure reaches its hypervisor, access switch and the cores.
    let vm = s.by_id("vm-par1-0001").unwrap();
    let up: Vec<(String, u32)> = s.upstream_closure(vm, 3).into_iter().map(|(i, d)| (s.ci(i).id.clone(), d)).collect();
    assert!(up.contains(&("hv-par1-01".to_string(), 1)), "{up:?}");
    assert!(up.contains(&("sw-acc-par1-01".to_string(), 2)), "{up:?}");
    assert!(up.contains(&("sw-core-par1-01".to_string(), 3)), "{up:?}");
    // A database in another site is unrelated to the par1 core.
    let db = (0..s.len() as u32).find(|&i| s.ci(i).ci_type == CiType::Database && s.ci(i).site.as_deref() != Some("par1"));
    assert!(db.is_some());
}

#[test]
fn example_bindings_and_maintenance() {
    let s = example();
    let core = s.by_id("sw-core-par1-01").unwrap();
    assert_eq!(s.lookup_name("SW-CORE-PAR1-01.par1.example.net"), Some(core));
    assert_eq!(s.lookup_name("sw-core-par1-01.par1.example.net."), Some(core));
    assert_eq!(s.lookup_ip(&s.ci(core).ips[0]), Some(core));
    assert_eq!(s.lookup_name("payments.example.net"), s.by_id("bs-payments"));
    let windows: Vec<(String, &triaged::topology::MaintenanceWindow)> =
        s.cis().iter().flat_map(|c| c.maintenance.iter().map(move |w| (c.id.clone(), w))).collect();
    assert_eq!(windows.len(), 2, "one expired, one in the future");
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    assert!(windows.iter().any(|(_, w)| w.end < now));
    let (vm, future) = windows.iter().find(|(_, w)| w.start > now).expect("future window");
    let idx = s.by_id(vm).unwrap();
    assert_eq!(s.ci(idx).kind, "vm");
    assert!(s.active_maintenance(idx, now).is_none());
    assert_eq!(s.active_maintenance(idx, future.start).map(|w| w.change_id.clone()), Some(future.change_id.clone()));
}

#[test]
fn json_export_loads_the_same_topology() {
    let yaml = example();
    let model: CmdbFile = yaml_serde::from_str(&std::fs::read_to_string(example_path()).unwrap()).unwrap();
    let text = serde_json::to_string_pretty(&model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cmdb.json");
    std::fs::write(&path, &text).unwrap();
    let json = Snapshot::load(&path).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(json.len(), yaml.len());
    assert_eq!(json.relation_count(), yaml.relation_count());
    for i in 0..yaml.len() as u32 {
        assert_eq!(json.ci(i), yaml.ci(i));
        assert_eq!(json.upstream(i), yaml.upstream(i));
        assert_eq!(json.downstream(i), yaml.downstream(i));
    }
    let core = json.by_id("sw-core-par1-01").unwrap();
    assert_eq!(json.impacted_services(core), yaml.impacted_services(core));

    // Errors in a JSON export point at the CI's line.
    let mut broken = model.clone();
    let last = broken.cis.len() - 1;
    broken.cis[last].depends_on.push("app-missing".into());
    let text = serde_json::to_string_pretty(&broken).unwrap();
    let errs = Snapshot::from_str(&path, &text, true).unwrap_err();
    assert_eq!(errs.len(), 1);
    let want_line = text.lines().position(|l| l.contains(&format!("\"id\": \"{}\"", broken.cis[last].id))).unwrap() + 1;
    assert_eq!(errs[0].line, Some(want_line));
    assert_eq!(errs[0].message, format!("ci {}: depends_on target app-missing does not exist", broken.cis[last].id));
}

#[test]
fn generated_topologies_load_from_yaml_and_model() {
    let p = GenParams::scaled(5_000);
    let file = synthetic(&p);
    let text = write_yaml(&file);
    let from_text = Snapshot::from_str(Path::new("gen.yaml"), &text, false).unwrap_or_else(|e| panic!("{:?}", &e[..1]));
    let from_model = Snapshot::from_file_model(file).unwrap();
    assert_eq!(from_text.len(), from_model.len());
    assert!((4_500..5_500).contains(&from_model.len()), "{}", from_model.len());
    assert_eq!(from_model.source(), None);
}
