//! The parsers of operator-written input never panic, whatever they are given:
//! rule files, CMDB exports (YAML and JSON), key templates and the TOML config.
//! Every failure is an error value naming the file. Inputs are built from each
//! format's own vocabulary so the cases reach deep into the parsers.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use triaged::config::Config;
use triaged::rules::template::Template;
use triaged::rules::RuleSet;
use triaged::topology::Snapshot;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() }
}

/// Lines of rule-file vocabulary, assembled into documents.
fn rule_doc() -> impl Strategy<Value = String> {
    let line = prop::sample::select(vec![
        "rules:",
        "  - name: r",
        "  - name: \"{check}\"",
        "    match: {}",
        "    match:",
        "      source: zabbix",
        "      check: { regex: '(?P<h>[a-z]+' }",
        "      check: { regex: '^(?P<host>[^:]+):\\d+$' }",
        "      labels.instance: { in: [a, b] }",
        "      severity: { exists: true }",
        "    bind: \"{host}\"",
        "    bind: \"{unclosed\"",
        "    dedup_key: \"{source}|{ci}|{labels.job}\"",
        "    set: { severity: critical }",
        "    set: { severity: nonsense }",
        "    drop: true",
        "    stop: yes",
        "    suppress: { in_maintenance: true }",
        "    suppress: { windows: [{ start: 2026-01-01T00:00:00Z, end: 2025-01-01T00:00:00Z }] }",
        "    group: { by: [check], window: 10m }",
        "    group: { by: [], window: -1s }",
        "    correlate: { topology: true, window: 5m }",
        "    correlate: { topology: 3 }",
        "    unknown_key: 1",
        "  -",
        "- [",
        "\t\"",
        "&a *a",
        "",
    ]);
    prop::collection::vec(line, 0..24).prop_map(|l| l.join("\n"))
}

/// CMDB vocabulary, YAML.
fn cmdb_yaml() -> impl Strategy<Value = String> {
    let line = prop::sample::select(vec![
        "cis:",
        "  - id: a",
        "  - id: b",
        "  - { id: c, name: c, type: vm, runs_on: [a] }",
        "  - { id: a, name: dup, type: vm }",
        "    name: a",
        "    type: switch",
        "    type: 7",
        "    criticality: critical",
        "    criticality: extreme",
        "    depends_on: [b]",
        "    depends_on: [nowhere]",
        "    connects_to: [a]",
        "    ips: [10.0.0.1, not-an-ip]",
        "    aliases: [a.example.net]",
        "    maintenance:",
        "      - { start: 2026-01-01T00:00:00Z, end: 2026-01-02T00:00:00Z }",
        "      - { start: yesterday }",
        "    business_services: [x]",
        "  -",
        "{",
        "",
    ]);
    prop::collection::vec(line, 0..24).prop_map(|l| l.join("\n"))
}

/// Config vocabulary, TOML.
fn config_toml() -> impl Strategy<Value = String> {
    let line = prop::sample::select(vec![
        "[kafka]",
        "brokers = \"127.0.0.1:9092\"",
        "brokers = 5",
        "group_id = \"\"",
        "topics = [{ name = \"events\", format = \"auto\" }]",
        "topics = [{ name = \"\" }]",
        "commit_interval = \"0s\"",
        "[kafka.options]",
        "\"group.id\" = \"x\"",
        "[cmdb]",
        "path = \"cmdb.yaml\"",
        "[rules]",
        "dir = \"rules\"",
        "[sink]",
        "profile = \"servicenow\"",
        "profile = \"carrier-pigeon\"",
        "endpoint = \"http://127.0.0.1:1\"",
        "endpoint = \"::\"",
        "[sink.auth]",
        "kind = \"bearer\"",
        "token = { env = \"X\", file = \"y\" }",
        "[correlation]",
        "group_wait = \"30x\"",
        "dedup_key = \"{unclosed\"",
        "[ingest]",
        "max_body_bytes = 0",
        "[problems]",
        "threshold = -1",
        "[[",
        "",
    ]);
    prop::collection::vec(line, 0..24).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rule_files_never_panic(doc in rule_doc(), junk in ".{0,80}") {
        let file = PathBuf::from("rules/10-fuzz.yaml");
        for text in [doc.clone(), format!("{doc}\n{junk}")] {
            if let Err(errs) = RuleSet::from_texts(&[(file.clone(), text)]) {
                prop_assert!(!errs.is_empty());
                for e in errs {
                    prop_assert!(e.to_string().contains("10-fuzz.yaml"), "{e}");
                }
            }
        }
    }

    #[test]
    fn cmdb_exports_never_panic(doc in cmdb_yaml(), junk in ".{0,80}") {
        let path = Path::new("cmdb-fuzz.yaml");
        for text in [doc.clone(), format!("{doc}\n{junk}")] {
            if let Err(errs) = Snapshot::from_str(path, &text, false) {
                prop_assert!(!errs.is_empty());
                for e in errs {
                    prop_assert!(e.to_string().contains("cmdb-fuzz.yaml"), "{e}");
                }
            }
        }
        let _ = Snapshot::from_str(Path::new("cmdb-fuzz.json"), &junk, true);
    }

    #[test]
    fn templates_never_panic(s in "[{}a-z._|:-]{0,40}") {
        let _ = Template::parse(&s);
    }

    #[test]
    fn configs_never_panic(doc in config_toml()) {
        if let Err(errs) = Config::parse(Path::new("triaged-fuzz.toml"), &doc) {
            prop_assert!(!errs.is_empty());
            for e in errs {
                prop_assert!(e.to_string().starts_with("triaged-fuzz.toml: "), "{e}");
            }
        }
    }
}
