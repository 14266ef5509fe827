//! `triaged check`: every error of the config, the rules and the CMDB it names
//! is printed with its file and field or line, and the exit code is 2.

use std::path::Path;
use std::process::Command;

fn check(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triaged"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env("TRIAGED_SINK_TOKEN", "not-a-real-token")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn shipped_config_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, stderr) = check(&root.join("config/triaged.toml"));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn every_error_is_reported_with_its_place() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("bad.yaml"), "rules:\n  - name: x\n    match: { check: { regex: \"([\" } }\n").unwrap();
    std::fs::write(dir.path().join("cmdb.yaml"), "cis:\n  - { id: a, name: a, type: vm, runs_on: [nowhere] }\n").unwrap();
    let text = std::fs::read_to_string(root.join("config/triaged.toml")).unwrap();
    let mut out = String::new();
    let mut section = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            section = line.to_string();
        }
        let key = line.split('=').next().unwrap_or("").trim();
        match (section.as_str(), key) {
            ("[kafka]", "brokers") => out.push_str("brokers = \"\""),
            ("[rules]", "dir") => out.push_str("dir = \"rules\""),
            ("[cmdb]", "path") => out.push_str("path = \"cmdb.yaml\""),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    let config = dir.path().join("triaged.toml");
    std::fs::write(&config, out).unwrap();

    let (code, stderr) = check(&config);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("triaged.toml: kafka.brokers: must name at least one broker"), "{stderr}");
    assert!(stderr.contains("bad.yaml:3: rule `x`: match.check: invalid regex"), "{stderr}");
    assert!(stderr.contains("cmdb.yaml") && stderr.contains("nowhere"), "{stderr}");
    assert!(stderr.contains("3 error(s)"), "{stderr}");
}

#[test]
fn unparsable_config_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("triaged.toml");
    std::fs::write(&config, "[kafka]\nbrokers = \"a\"\nnot_a_key = 1\n").unwrap();
    let (code, stderr) = check(&config);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("triaged.toml: line 3"), "{stderr}");
}
