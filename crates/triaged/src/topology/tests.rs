use std::path::Path;

use chrono::{DateTime, Utc};

use super::*;

const ESTATE: &str = r#"# test estate
cis:
  - id: site-a
    name: site-a
    type: site
  - id: core-1
    name: core-1
    type: switch
    criticality: critical
    aliases: [core1.par1.example.net]
    ips: [10.0.0.1]
    depends_on: [site-a]
    connects_to: [core-2]
  - id: core-2
    name: core-2
    type: switch
    connects_to: [core-1]
    ips: ["10.0.0.2"]
  - { id: acc-1, name: ACC-1, type: switch, connects_to: [core-1, core-2, core-1] }
  - { id: hv-1, name: hv-1, type: hypervisor, connects_to: [acc-1] }
  - { id: vm-1, name: vm-1, type: vm, runs_on: [hv-1], aliases: [web-01.par1.example.net], ips: [10.0.1.1, "FE80::1"] }
  - { id: db-1, name: db-1, type: database, runs_on: [vm-1], criticality: high }
  - { id: app-1, name: app-1, type: application, depends_on: [db-1], runs_on: [vm-1] }
  - { id: bs-a, name: bs-a, type: business_service, depends_on: [app-1] }
  - { id: bs-b, name: bs-b, type: business_service, depends_on: [bs-a] }
  - { id: other, name: other, type: other, criticality: low }
  - { id: mx-1, name: mx-1, type: host, aliases: [smtp.par1.example.net] }
  - { id: mx-2, name: mx-2, type: host, aliases: [smtp.fra1.example.net] }
  - id: vm-m
    name: vm-m
    type: vm
    maintenance:
      - { start: 2026-11-24T11:00:00Z, end: 2026-11-24T13:00:00Z, change_id: CHG0001, reason: "kernel patching" }
      - { start: 2030-01-01T00:00:00Z, end: 2030-01-02T00:00:00Z }
"#;

fn estate() -> Snapshot {
    Snapshot::from_str(Path::new("estate.yaml"), ESTATE, false).unwrap_or_else(|e| panic!("{e:?}"))
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn ids(s: &Snapshot, v: &[CiIdx]) -> Vec<String> {
    v.iter().map(|&i| s.ci(i).id.clone()).collect()
}

fn closure_ids(s: &Snapshot, v: Vec<(CiIdx, u32)>) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = v.into_iter().map(|(i, d)| (s.ci(i).id.clone(), d)).collect();
    out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    out
}

fn errors(text: &str, json: bool) -> Vec<(Option<usize>, String)> {
    match Snapshot::from_str(Path::new("cmdb.yaml"), text, json) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.into_iter().map(|e| (e.line, e.message)).collect(),
    }
}

#[test]
fn loads_fields_and_defaults() {
    let s = estate();
    assert_eq!(s.len(), 14);
    assert!(!s.is_empty());
    assert_eq!(s.source(), Some(Path::new("estate.yaml")));
    assert!(s.loaded_at() <= Utc::now());
    let core = s.ci(s.by_id("core-1").unwrap());
    assert_eq!(core.kind, "switch");
    assert_eq!(core.ci_type, CiType::Switch);
    assert_eq!(core.criticality, Criticality::Critical);
    assert_eq!(core.aliases, vec!["core1.par1.example.net"]);
    assert_eq!(s.ci(s.by_id("hv-1").unwrap()).criticality, Criticality::Medium, "default");
    assert_eq!(s.ci(s.by_id("bs-a").unwrap()).kind, "business_service");
    assert_eq!(s.count_by_type()["switch"], 3);
    // acc-1 lists core-1 twice: stored once.
    assert_eq!(s.relation_count(), 12);
    assert!(Snapshot::empty().is_empty());
}

#[test]
fn criticality_order_and_names() {
    assert!(Criticality::Critical < Criticality::High && Criticality::High < Criticality::Medium);
    assert!(Criticality::Medium < Criticality::Low);
    assert_eq!(Criticality::Low.min(Criticality::Critical), Criticality::Critical);
    assert_eq!(Criticality::High.as_str(), "high");
    assert_eq!(serde_json::to_string(&Criticality::Critical).unwrap(), "\"critical\"");
    assert_eq!(yaml_serde::from_str::<Criticality>("low").unwrap(), Criticality::Low);
    assert_eq!(Criticality::default(), Criticality::Medium);
    assert_eq!(RelKind::RunsOn.as_str(), "runs_on");
    assert_eq!(CiType::LoadBalancer.to_string(), "load_balancer");
    for t in CiType::ALL {
        assert_eq!(yaml_serde::from_str::<CiType>(t.as_str()).unwrap(), t);
    }
}

#[test]
fn lookup_by_id_name_alias_case_insensitive() {
    let s = estate();
    let core = s.by_id("core-1").unwrap();
    let acc = s.by_id("acc-1").unwrap();
    assert_eq!(s.lookup_name("core-1"), Some(core));
    assert_eq!(s.lookup_name("CORE-1"), Some(core));
    assert_eq!(s.lookup_name("core1.par1.example.net"), Some(core));
    assert_eq!(s.lookup_name("Core1.PAR1.example.net"), Some(core));
    assert_eq!(s.lookup_name(" core-1 "), Some(core));
    assert_eq!(s.lookup_name("core1.par1.example.net."), Some(core), "trailing root dot");
    assert_eq!(s.lookup_name("ACC-1"), Some(acc), "name");
    assert_eq!(s.lookup_name("acc-1"), Some(acc), "id and lowercased name");
    assert_eq!(s.lookup_name("nope"), None);
    assert_eq!(s.lookup_name(""), None);
    // by_id is exact.
    assert_eq!(s.by_id("acc-1"), Some(acc));
    assert_eq!(s.by_id("ACC-1"), None);
    assert_eq!(s.by_id("Core-1"), None);
    assert_eq!(s.by_id("core1.par1.example.net"), None);
    assert_eq!(s.by_id("missing"), None);
}

#[test]
fn lookup_by_fqdn_short_host() {
    let s = estate();
    let vm = s.by_id("vm-1").unwrap();
    // The query's short host is a CI name.
    assert_eq!(s.lookup_name("vm-1.par1.example.net"), Some(vm));
    assert_eq!(s.lookup_name("VM-1.anything.example.org"), Some(vm));
    // The query is the short host of one CI's FQDN alias.
    assert_eq!(s.lookup_name("web-01"), Some(vm));
    assert_eq!(s.lookup_name("WEB-01"), Some(vm));
    assert_eq!(s.lookup_name("web-01.lon1.example.net"), Some(vm));
    // Ambiguous short hosts bind to nothing; full aliases still do.
    assert_eq!(s.lookup_name("smtp"), None);
    assert_eq!(s.lookup_name("smtp.ams1.example.net"), None);
    assert_eq!(s.lookup_name("smtp.fra1.example.net"), s.by_id("mx-2"));
    // IPs are not FQDNs.
    assert_eq!(s.lookup_name("10.0.0.1"), None);
}

#[test]
fn lookup_by_ip() {
    let s = estate();
    assert_eq!(s.lookup_ip("10.0.0.1"), s.by_id("core-1"));
    assert_eq!(s.lookup_ip(" 10.0.0.2 "), s.by_id("core-2"));
    assert_eq!(s.lookup_ip("fe80::1"), s.by_id("vm-1"));
    assert_eq!(s.lookup_ip("fe80:0:0::1"), s.by_id("vm-1"), "canonical form");
    assert_eq!(s.lookup_ip("10.0.1.1:9100"), s.by_id("vm-1"));
    assert_eq!(s.lookup_ip("[fe80::1]:443"), s.by_id("vm-1"));
    assert_eq!(s.lookup_ip("10.9.9.9"), None);
    assert_eq!(s.lookup_ip("vm-1"), None);
}

#[test]
fn direct_relations_both_ways() {
    let s = estate();
    let id = |x: &str| s.by_id(x).unwrap();
    assert_eq!(s.upstream(id("acc-1")), &[(id("core-1"), RelKind::ConnectsTo), (id("core-2"), RelKind::ConnectsTo)]);
    assert_eq!(s.upstream(id("app-1")), &[(id("db-1"), RelKind::DependsOn), (id("vm-1"), RelKind::RunsOn)]);
    assert_eq!(s.upstream(id("core-1")), &[(id("site-a"), RelKind::DependsOn), (id("core-2"), RelKind::ConnectsTo)]);
    assert_eq!(s.downstream(id("core-1")), &[(id("core-2"), RelKind::ConnectsTo), (id("acc-1"), RelKind::ConnectsTo)]);
    assert_eq!(s.downstream(id("vm-1")), &[(id("db-1"), RelKind::RunsOn), (id("app-1"), RelKind::RunsOn)]);
    assert!(s.upstream(id("site-a")).is_empty());
    assert!(s.downstream(id("other")).is_empty());
}

#[test]
fn upstream_closure_depth_and_cycles() {
    let s = estate();
    let id = |x: &str| s.by_id(x).unwrap();
    let full = closure_ids(&s, s.upstream_closure(id("app-1"), 32));
    let want: Vec<(String, u32)> = [("db-1", 1), ("vm-1", 1), ("hv-1", 2), ("acc-1", 3), ("core-1", 4), ("core-2", 4), ("site-a", 5)]
        .iter()
        .map(|(a, b)| (a.to_string(), *b))
        .collect();
    assert_eq!(full, want, "vm-1 once, at distance 1 (not 2 via db-1)");
    assert_eq!(closure_ids(&s, s.upstream_closure(id("app-1"), 2)), want[..3].to_vec());
    assert!(s.upstream_closure(id("app-1"), 0).is_empty());
    // BFS order: distances never decrease.
    let raw = s.upstream_closure(id("app-1"), 32);
    assert!(raw.windows(2).all(|w| w[0].1 <= w[1].1));
    // The core mesh is a cycle: the start CI is never part of its own closure.
    let c1 = closure_ids(&s, s.upstream_closure(id("core-1"), 32));
    assert_eq!(c1, vec![("core-2".to_string(), 1), ("site-a".to_string(), 1)]);
    let c2 = closure_ids(&s, s.upstream_closure(id("core-2"), usize::MAX));
    assert_eq!(c2, vec![("core-1".to_string(), 1), ("site-a".to_string(), 2)]);
    assert!(s.upstream_closure(id("site-a"), 5).is_empty());
}

#[test]
fn is_upstream_of_distances() {
    let s = estate();
    let id = |x: &str| s.by_id(x).unwrap();
    assert_eq!(s.is_upstream_of(id("core-1"), id("vm-1"), 10), Some(3));
    assert_eq!(s.is_upstream_of(id("core-1"), id("vm-1"), 3), Some(3));
    assert_eq!(s.is_upstream_of(id("core-1"), id("vm-1"), 2), None, "beyond max depth");
    assert_eq!(s.is_upstream_of(id("vm-1"), id("core-1"), 10), None, "wrong direction");
    assert_eq!(s.is_upstream_of(id("core-1"), id("core-1"), 10), None, "not its own upstream");
    assert_eq!(s.is_upstream_of(id("core-2"), id("core-1"), 10), Some(1), "cycle");
    assert_eq!(s.is_upstream_of(id("core-1"), id("core-2"), 10), Some(1), "cycle");
    assert_eq!(s.is_upstream_of(id("site-a"), id("bs-b"), 10), Some(7));
    assert_eq!(s.is_upstream_of(id("other"), id("bs-b"), 100), None);
    assert_eq!(s.is_upstream_of(id("db-1"), id("app-1"), 0), None);
}

#[test]
fn downstream_within_agrees_with_is_upstream_of() {
    let estate = estate();
    let example = Snapshot::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/cmdb.yaml"))).unwrap();
    for s in [&estate, &example] {
        for depth in [0, 1, 2, 3, 8] {
            for up in 0..s.len() as CiIdx {
                let below = s.downstream_within(up, depth);
                for down in 0..s.len() as CiIdx {
                    assert_eq!(below.get(&down).copied(), s.is_upstream_of(up, down, depth), "{up} -> {down} within {depth}");
                }
            }
        }
    }
}

#[test]
fn impacted_services_transitive_sorted_cycle_safe() {
    let s = estate();
    let id = |x: &str| s.by_id(x).unwrap();
    assert_eq!(ids(&s, &s.impacted_services(id("core-1"))), vec!["bs-a", "bs-b"]);
    assert_eq!(ids(&s, &s.impacted_services(id("core-2"))), vec!["bs-a", "bs-b"]);
    assert_eq!(ids(&s, &s.impacted_services(id("site-a"))), vec!["bs-a", "bs-b"]);
    assert_eq!(ids(&s, &s.impacted_services(id("db-1"))), vec!["bs-a", "bs-b"]);
    assert_eq!(ids(&s, &s.impacted_services(id("bs-a"))), vec!["bs-a", "bs-b"], "itself included");
    assert_eq!(ids(&s, &s.impacted_services(id("bs-b"))), vec!["bs-b"]);
    assert!(s.impacted_services(id("other")).is_empty());
    assert!(s.impacted_services(id("mx-1")).is_empty());
    let v = s.impacted_services(id("core-1"));
    assert!(v.windows(2).all(|w| w[0] < w[1]));
    // Several roots at once: the union, each service once.
    assert_eq!(ids(&s, &s.impacted_services_of([id("bs-b"), id("db-1"), id("db-1")])), vec!["bs-a", "bs-b"]);
    assert_eq!(ids(&s, &s.impacted_services_of([id("bs-b"), id("other")])), vec!["bs-b"]);
    assert!(s.impacted_services_of([]).is_empty());
}

#[test]
fn maintenance_windows() {
    let s = estate();
    let vm = s.by_id("vm-m").unwrap();
    let w = s.active_maintenance(vm, at("2026-11-24T12:00:00Z")).expect("inside");
    assert_eq!(w.change_id.as_deref(), Some("CHG0001"));
    assert_eq!(w.reason.as_deref(), Some("kernel patching"));
    assert!(s.active_maintenance(vm, at("2026-11-24T11:00:00Z")).is_some(), "start is inclusive");
    assert!(s.active_maintenance(vm, at("2026-11-24T13:00:00Z")).is_none(), "end is exclusive");
    assert!(s.active_maintenance(vm, at("2026-11-24T10:59:59Z")).is_none());
    let w = s.active_maintenance(vm, at("2030-01-01T05:00:00Z")).expect("second window");
    assert_eq!(w.change_id, None);
    assert!(s.active_maintenance(s.by_id("vm-1").unwrap(), at("2026-11-24T12:00:00Z")).is_none());
    assert_eq!(s.ci(vm).maintenance.len(), 2);
}

#[test]
fn long_cycles_do_not_hang() {
    let n = 5_000;
    let cis = (0..n)
        .map(|i| {
            let mut c = CiSpec::new(format!("n{i}"), format!("n{i}"), CiType::Switch);
            c.connects_to = vec![format!("n{}", (i + 1) % n), format!("n{}", (i + 7) % n)];
            c
        })
        .chain(std::iter::once({
            let mut c = CiSpec::new("svc", "svc", CiType::BusinessService);
            c.depends_on = vec!["n0".into()];
            c
        }))
        .collect();
    let s = Snapshot::from_file_model(CmdbFile { cis, ..Default::default() }).unwrap();
    let cl = s.upstream_closure(0, usize::MAX);
    assert_eq!(cl.len(), n - 1);
    assert_eq!(s.impacted_services(1234), vec![n as CiIdx]);
    assert_eq!(s.is_upstream_of(1, 0, usize::MAX), Some(1));
    assert_eq!(s.is_upstream_of(0, 1, usize::MAX).map(|d| d > 1), Some(true));
}

#[test]
fn error_display() {
    let e = CmdbError { file: "config/cmdb.yaml".into(), line: Some(12), message: "ci x: bad".into() };
    assert_eq!(e.to_string(), "config/cmdb.yaml:12: ci x: bad");
    let e = CmdbError { file: "config/cmdb.yaml".into(), line: None, message: "cannot read".into() };
    assert_eq!(e.to_string(), "config/cmdb.yaml: cannot read");
}

const INVALID: &str = r#"cis:
  - id: a
    name: a
    type: host
    aliases: [shared.example.net]
    ips: [10.0.0.1]
  - id: a
    name: a2
    type: host
  - id: b
    name: ""
    type: host
    aliases: [Shared.example.net, ""]
    ips: [10.0.0.1, not-an-ip]
  - id: c
    name: c
    type: vm
    runs_on: [vm-x]
    depends_on: [c]
  - id: ""
    name: d
    type: host
  - id: e
    name: e
    type: host
    maintenance:
      - { start: 2026-01-02T00:00:00Z, end: 2026-01-01T00:00:00Z, change_id: CHG9 }
      - { start: 2026-01-02T00:00:00Z, end: 2026-01-02T00:00:00Z }
  - { id: f, name: A, type: host, connects_to: [A, e] }
  - { id: g, name: g, type: host, aliases: [e] }
"#;

#[test]
fn every_validation_error_is_reported_with_its_line() {
    let got = errors(INVALID, false);
    let want: Vec<(Option<usize>, String)> = vec![
        (Some(7), "duplicate ci id a (first defined at line 2)".into()),
        (Some(10), "ci b: empty name".into()),
        (Some(10), "ci b: alias Shared.example.net is already claimed as alias of ci a".into()),
        (Some(10), "ci b: empty alias".into()),
        (Some(10), "ci b: ip 10.0.0.1 is already claimed by ci a".into()),
        (Some(10), "ci b: invalid ip \"not-an-ip\"".into()),
        (Some(15), "ci c: depends_on c points to itself".into()),
        (Some(15), "ci c: runs_on target vm-x does not exist".into()),
        (Some(20), "ci #5: empty id".into()),
        (
            Some(23),
            "ci e: maintenance window 1 (CHG9) ends at 2026-01-01T00:00:00+00:00 which is not after its start \
             2026-01-02T00:00:00+00:00"
                .into(),
        ),
        (
            Some(23),
            "ci e: maintenance window 2 ends at 2026-01-02T00:00:00+00:00 which is not after its start \
             2026-01-02T00:00:00+00:00"
                .into(),
        ),
        (Some(29), "ci f: name A is already claimed as id of ci a".into()),
        (Some(29), "ci f: connects_to target A does not exist".into()),
        (Some(30), "ci g: alias e is already claimed as id of ci e".into()),
    ];
    assert_eq!(got, want);
    // Display carries file and line.
    let e = Snapshot::from_str(Path::new("x/cmdb.yaml"), INVALID, false).unwrap_err();
    assert_eq!(e[0].to_string(), "x/cmdb.yaml:7: duplicate ci id a (first defined at line 2)");
    assert!(e.iter().all(|e| e.file == Path::new("x/cmdb.yaml")));
}

#[test]
fn validation_errors_in_json_carry_lines() {
    let text = r#"{
  "cis": [
    {"id": "x", "name": "x", "type": "vm", "runs_on": ["nope"]},
    {
      "id": "y",
      "name": "y",
      "type": "host",
      "depends_on": ["y"],
      "ips": ["10.0.0.1"]
    },
    {"id":"z","name":"z","type":"host","ips":["10.0.0.1"]}
  ]
}"#;
    assert_eq!(
        errors(text, true),
        vec![
            (Some(3), "ci x: runs_on target nope does not exist".to_string()),
            (Some(5), "ci y: depends_on y points to itself".to_string()),
            (Some(11), "ci z: ip 10.0.0.1 is already claimed by ci y".to_string()),
        ]
    );
}

#[test]
fn stray_id_text_does_not_shift_lines() {
    // A reason mentioning `, id: a` adds a bogus id entry; lines still match CIs by id.
    let text = r#"cis:
  - id: a
    name: a
    type: vm
    maintenance:
      - { start: 2026-01-01T00:00:00Z, end: 2026-01-02T00:00:00Z, reason: "moved, id: a" }
  - id: b
    name: b
    type: vm
    runs_on: [zz]
"#;
    assert_eq!(errors(text, false), vec![(Some(7), "ci b: runs_on target zz does not exist".to_string())]);
}

#[test]
fn model_errors_have_no_line() {
    let mut a = CiSpec::new("a", "a", CiType::Vm);
    a.runs_on = vec!["hv".into()];
    let e = Snapshot::from_file_model(CmdbFile { cis: vec![a], ..Default::default() }).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, None);
    assert_eq!(e[0].message, "ci a: runs_on target hv does not exist");
}

#[test]
fn schema_and_syntax_errors_carry_their_line() {
    let e = errors("cis:\n  - id: a\n    name: a\n    type: swich\n", false);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, Some(4));
    assert!(e[0].1.contains("unknown variant `swich`"), "{}", e[0].1);
    assert!(!e[0].1.contains("at line"), "location is not repeated: {}", e[0].1);

    let e = errors("cis:\n  - id: a\n    name: a\n    type: vm\n    criticality: urgent\n", false);
    assert_eq!(e[0].0, Some(5));
    assert!(e[0].1.contains("unknown variant `urgent`"), "{}", e[0].1);

    let e = errors("cis:\n  - id: a\n    name: a\n    type: vm\n    colour: red\n", false);
    assert_eq!(e[0].0, Some(5));
    assert!(e[0].1.contains("unknown field `colour`"), "{}", e[0].1);

    let e = errors("cis:\n  - id: a\n    type: vm\n", false);
    assert_eq!(e[0].0, Some(2));
    assert!(e[0].1.contains("missing field `name`"), "{}", e[0].1);

    let e = errors("cis:\n  - id: a\n    name: [oops\n", false);
    assert!(e[0].0.is_some(), "{e:?}");

    let e =
        errors("cis:\n  - id: a\n    name: a\n    type: vm\n    maintenance: [{ start: tomorrow, end: 2026-01-01T00:00:00Z }]\n", false);
    assert_eq!(e[0].0, Some(5), "{e:?}");

    let e = errors("{\n  \"cis\": [\n    {\"id\": \"a\", \"name\": \"a\", \"type\": \"vm\",}\n  ]\n}", true);
    assert_eq!(e[0].0, Some(3), "{e:?}");
    assert!(e[0].1.contains("(column"), "{e:?}");

    let e = errors("{\"cis\": [{\"id\": \"a\", \"name\": \"a\",\n \"type\": \"laptop\"}]}", true);
    assert_eq!(e[0].0, Some(2));
    assert!(e[0].1.contains("unknown variant `laptop`"), "{}", e[0].1);
}

#[test]
fn load_picks_the_format_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let file = Snapshot::from_str(Path::new("x.yaml"), ESTATE, false).map(|s| s.len()).unwrap();
    let model: CmdbFile = yaml_serde::from_str(ESTATE).unwrap();
    let json_path = dir.path().join("cmdb.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&model).unwrap()).unwrap();
    let s = Snapshot::load(&json_path).unwrap();
    assert_eq!(s.len(), file);
    assert_eq!(s.source(), Some(json_path.as_path()));
    let yaml_path = dir.path().join("cmdb.yml");
    std::fs::write(&yaml_path, ESTATE).unwrap();
    assert_eq!(Snapshot::load(&yaml_path).unwrap().len(), file);
    // YAML content in a .json file is a JSON syntax error.
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, ESTATE).unwrap();
    let e = Snapshot::load(&wrong).unwrap_err();
    assert_eq!(e[0].file, wrong);
    assert!(e[0].line.is_some());
    let missing = dir.path().join("missing.yaml");
    let e = Snapshot::load(&missing).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, None);
    assert!(e[0].message.starts_with("cannot read CMDB file"), "{}", e[0].message);
}

#[test]
fn snapshot_is_shareable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Snapshot>();
    let s = std::sync::Arc::new(estate());
    let t = {
        let s = s.clone();
        std::thread::spawn(move || s.lookup_name("web-01"))
    };
    assert_eq!(t.join().unwrap(), s.by_id("vm-1"));
}

const GROUPS: &str = r#"cis:
  - { id: core-1, name: core-1, type: switch }
  - { id: core-2, name: core-2, type: switch }
  - { id: db-1, name: db-1, type: database }
  - { id: db-2, name: db-2, type: database }
  - { id: db-3, name: db-3, type: database }
redundancy_groups:
  - id: core
    members: [core-1, core-2]
  - { id: db, members: [db-1, db-2, db-3], min_up: 2 }
"#;

#[test]
fn redundancy_groups_load_with_their_members() {
    let s = Snapshot::from_str(Path::new("g.yaml"), GROUPS, false).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(s.groups().len(), 2);
    let core = s.group_of(s.by_id("core-2").unwrap()).unwrap();
    assert_eq!((core.id.as_str(), ids(&s, &core.members), core.min_up), ("core", vec!["core-1".to_string(), "core-2".into()], 1));
    let db = s.group_of(s.by_id("db-1").unwrap()).unwrap();
    assert_eq!(db.min_up, 2);
    assert!(!db.fails_with(1) && db.fails_with(2));
    assert!(!core.fails_with(1) && core.fails_with(2));
    assert!(estate().group_of(0).is_none(), "a CMDB without groups");
}

#[test]
fn every_redundancy_group_error_is_reported_with_its_line() {
    let text = r#"cis:
  - { id: a, name: a, type: switch }
  - { id: b, name: b, type: switch }
  - { id: c, name: c, type: switch }
redundancy_groups:
  - id: g1
    members: [a, b, nope]
  - id: g1
    members: [c, c]
  - id: g3
    members: [a, c]
    min_up: 2
  - id: g4
    members: [b]
  - { id: "", members: [] }
"#;
    let got = errors(text, false);
    let want: Vec<(Option<usize>, String)> = vec![
        (Some(6), "redundancy group g1: member nope is not a CI".into()),
        (Some(8), "duplicate redundancy group id g1 (first defined at line 6)".into()),
        (Some(8), "redundancy group g1: member c is listed twice".into()),
        (Some(10), "redundancy group g3: member a is already in redundancy group g1".into()),
        (Some(10), "redundancy group g3: member c is already in redundancy group g1".into()),
        (Some(10), "redundancy group g3: min_up 2 must be at least 1 and fewer than its 2 members".into()),
        (Some(13), "redundancy group g4: member b is already in redundancy group g1".into()),
        (Some(13), "redundancy group g4: needs at least two members, has 1".into()),
        (Some(15), "redundancy group #5: empty id".into()),
        (Some(15), "redundancy group #5: needs at least two members, has 0".into()),
    ];
    assert_eq!(got, want);
}

#[test]
fn impact_stops_where_the_walk_may_not_pass() {
    let s = Snapshot::from_str(Path::new("g.yaml"), GROUPS_BELOW, false).unwrap_or_else(|e| panic!("{e:?}"));
    let vm = s.by_id("vm-a").unwrap();
    let db_a = s.by_id("db-a").unwrap();
    assert_eq!(ids(&s, &s.impacted_services_through([vm], |_| true)), ["bs-shop"]);
    assert!(s.impacted_services_through([vm], |c| c != db_a).is_empty(), "only through db-a");
    assert_eq!(ids(&s, &s.impacted_services_through([db_a], |c| c != db_a)), ["bs-shop"], "a start always passes");
}

const GROUPS_BELOW: &str = r#"cis:
  - { id: vm-a, name: vm-a, type: vm }
  - { id: db-a, name: db-a, type: database, runs_on: [vm-a] }
  - { id: db-b, name: db-b, type: database }
  - { id: app, name: app, type: application, depends_on: [db-a, db-b] }
  - { id: bs-shop, name: bs-shop, type: business_service, depends_on: [app] }
redundancy_groups:
  - { id: db, members: [db-a, db-b] }
"#;
