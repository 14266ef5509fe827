//! Data-driven correlation tests: each `tests/fixtures/scenarios/*.yaml` holds a
//! CMDB, rules, a timeline of events and ticks (relative times, the clock is
//! passed in) and the exact sink actions and decisions expected. The format is
//! documented in `src/ruletest.rs`; `triaged test` runs the same files.

use triaged::tools::ruletest::{run_file, test_files, Defaults};

#[test]
fn scenarios() {
    let dir = crate::repo().join("tests/fixtures/scenarios");
    let files = test_files(&dir).unwrap();
    assert!(files.len() >= 9, "expected scenario fixtures in {}", dir.display());
    let mut failures = Vec::new();
    for f in &files {
        let outcome = run_file(f, &Defaults::default()).unwrap_or_else(|e| panic!("{e}"));
        if !outcome.passed() {
            failures.push(format!("== {}\n{}", f.file_name().unwrap().to_string_lossy(), outcome.diff));
        }
    }
    assert!(failures.is_empty(), "{} of {} scenarios failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}

/// A wrong expectation must fail, with a diff naming the line.
#[test]
fn a_wrong_expectation_fails_with_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let src = crate::repo().join("tests/fixtures/scenarios/03-cleared-before-group-wait.yaml");
    let text = std::fs::read_to_string(src).unwrap().replace("cmdb: ../cmdb-small.yaml", "cmdb: cmdb.yaml");
    let text = text.replace("  actions: []", "  actions:\n    - 30s open P1 topology:vm-2 root=vm-2 members=1 firing=1");
    std::fs::copy(crate::repo().join("tests/fixtures/cmdb-small.yaml"), dir.path().join("cmdb.yaml")).unwrap();
    let file = dir.path().join("wrong.yaml");
    std::fs::write(&file, text).unwrap();
    let outcome = run_file(&file, &Defaults::default()).unwrap();
    assert!(!outcome.passed());
    assert!(outcome.diff.contains("  - 30s open P1 topology:vm-2 root=vm-2 members=1 firing=1"), "{}", outcome.diff);
}
