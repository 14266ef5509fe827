//! The command line: `triaged check` prints every error of the config, the
//! rules and the CMDB it names with its file and field or line (exit 2);
//! `triaged test` runs rule tests (exit 1 with a diff when one fails).

use std::path::Path;
use std::process::Command;

fn check(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triaged"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env("TRIAGED_SINK_TOKEN", "not-a-real-token")
        .env("TRIAGED_INGEST_TOKEN", "not-a-real-token")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn shipped_config_passes() {
    let root = crate::repo();
    let (code, stderr) = check(&root.join("config/triaged.toml"));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn every_error_is_reported_with_its_place() {
    let root = crate::repo();
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

fn rule_tests(rules_dir: &Path) -> (i32, String) {
    let root = crate::repo();
    let out = Command::new(env!("CARGO_BIN_EXE_triaged"))
        .args(["test", rules_dir.to_str().unwrap(), "--cmdb", root.join("config/cmdb.yaml").to_str().unwrap()])
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn shipped_rule_tests_pass() {
    let (code, stdout) = rule_tests(&crate::repo().join("rules"));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("0 failed, 0 invalid"), "{stdout}");
}

#[test]
fn a_failing_rule_test_exits_1_with_a_diff() {
    let root = crate::repo();
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root.join("rules")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    // Expects the heartbeat to open an incident: wrong, it is dropped.
    std::fs::write(
        dir.path().join("tests/wrong.yaml"),
        "description: wrong on purpose\nsteps:\n  - at: 0s\n    events:\n      - { source: alertmanager, check: Watchdog, severity: none }\n  - at: 30s\nexpect:\n  actions: [\"30s open P5 group:x root=- members=1 firing=1\"]\n  decisions: { new: 1 }\n",
    )
    .unwrap();
    let (code, stdout) = rule_tests(dir.path());
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAIL") && stdout.contains("  - 30s open P5 group:x root=- members=1 firing=1"), "{stdout}");
    assert!(stdout.contains("decisions:") && stdout.contains("\"dropped\": 1"), "{stdout}");
}

#[test]
fn a_closed_output_pipe_ends_a_report_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // The reader is gone before the first line is written, as with `| head`
    // once it has had enough.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out =
        Command::new(env!("CARGO_BIN_EXE_triaged")).current_dir(crate::repo()).args(["test", "rules"]).stdout(writer).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

/// A config directory whose rules and CMDB are both broken, and whose
/// config file is `config` with `rules` and `cmdb.yaml` beside it.
fn broken_rules_and_cmdb(config: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("bad.yaml"), "rules:\n  - name: x\n    match: { check: { regex: \"([\" } }\n").unwrap();
    std::fs::write(dir.path().join("cmdb.yaml"), "cis:\n  - { id: a, name: a, type: vm, runs_on: [nowhere] }\n").unwrap();
    let path = dir.path().join("triaged.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

const SMALL: &str = r#"
[kafka]
brokers = "127.0.0.1:1"
group_id = "g"
topics = [{ name = "events" }]
[cmdb]
path = "cmdb.yaml"
[rules]
dir = "rules"
[sink]
profile = "generic"
endpoint = "http://127.0.0.1:1"
"#;

#[test]
fn a_config_that_does_not_load_still_gets_its_rules_and_cmdb_checked() {
    let bad = SMALL.replace("profile = \"generic\"", "profile = \"generic\"\nauth = { kind = \"bearer\", token = \"abc\" }");
    let (_dir, config) = broken_rules_and_cmdb(&bad);
    let (code, stderr) = check(&config);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("triaged.toml: line 12")
            && stderr.contains("secrets are not written inline: use { env = \"VAR\" } or { file = \"/path\" }"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.yaml:3: rule `x`: match.check: invalid regex"), "{stderr}");
    assert!(stderr.contains("cmdb.yaml") && stderr.contains("nowhere"), "{stderr}");
    assert!(stderr.contains("3 error(s)"), "{stderr}");
}

#[test]
fn what_librdkafka_refuses_check_refuses_with_the_option() {
    let text = format!("{SMALL}[kafka.options]\n\"sesion.timeout.ms\" = \"6000\"\n");
    let (_dir, config) = broken_rules_and_cmdb(&text);
    let (code, stderr) = check(&config);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("triaged.toml: kafka.options.\"sesion.timeout.ms\": No such configuration property"), "{stderr}");
}

#[test]
fn a_rate_limit_with_a_burst_of_zero_is_refused_naming_the_field() {
    let root = crate::repo();
    let dir = tempfile::tempdir().unwrap();
    let base = SMALL
        .replace("cmdb.yaml", root.join("config/cmdb.yaml").to_str().unwrap())
        .replace("dir = \"rules\"", &format!("dir = \"{}\"", root.join("rules").display()));
    let config = dir.path().join("triaged.toml");
    std::fs::write(&config, format!("{base}[sink.rate_limit]\nper_minute = 60\nburst = 0\n")).unwrap();
    let (code, stderr) = check(&config);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("triaged.toml: sink.rate_limit.burst: must be at least 1"), "{stderr}");
    // A burst of 1 is a limit; per_minute = 0 is none, whatever the burst.
    for ok in ["per_minute = 60\nburst = 1\n", "per_minute = 0\nburst = 0\n"] {
        std::fs::write(&config, format!("{base}[sink.rate_limit]\n{ok}")).unwrap();
        let (code, stderr) = check(&config);
        assert_eq!(code, 0, "{ok}: {stderr}");
    }
}

#[test]
fn a_secret_file_others_can_read_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let root = crate::repo();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = SMALL
        .replace("profile = \"generic\"", "profile = \"generic\"\nauth = { kind = \"bearer\", token = { file = \"token\" } }")
        .replace("cmdb.yaml", root.join("config/cmdb.yaml").to_str().unwrap())
        .replace("dir = \"rules\"", &format!("dir = \"{}\"", root.join("rules").display()));
    let config = dir.path().join("triaged.toml");
    std::fs::write(&config, text).unwrap();
    let (code, stderr) = check(&config);
    assert_eq!(code, 0, "a warning only: {stderr}");
    assert!(
        stderr.contains("warning: sink.auth.token: secret file") && stderr.contains("readable by group or others (mode 644)"),
        "{stderr}"
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stderr) = check(&config);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// `run` with `args`, until its stderr shows `until` (bounded); returns
/// (stdout, stderr).
fn run_until(args: &[&str], until: &str) -> (String, String) {
    run_with(args, "", &[], until)
}

/// [`run_until`] with `sections` appended to the config and `env` set.
fn run_with(args: &[&str], sections: &str, env: &[(&str, &str)], until: &str) -> (String, String) {
    run_extra(args, crate::support::process::Extra { sections: sections.into(), ..Default::default() }, env, until)
}

/// [`run_until`] with the config changed by `extra` and `env` set.
fn run_extra(args: &[&str], extra: crate::support::process::Extra, env: &[(&str, &str)], until: &str) -> (String, String) {
    use crate::support::process::{free_port, write_config_with};
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_with(dir.path(), "127.0.0.1:1", "g", 6000, "http://127.0.0.1:1", free_port(), &extra);
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_triaged"))
        .args(["run", "--config", config.to_str().unwrap()])
        .args(args)
        .env_remove("TRIAGED_LOG")
        .env_remove("TRIAGED_LOG_FORMAT")
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&err).unwrap().contains(until) {
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    (std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&err).unwrap())
}

fn all_json(stderr: &str) -> bool {
    !stderr.is_empty() && stderr.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
}

#[test]
fn the_log_section_sets_format_and_level_and_given_flags_override_it() {
    const LOADED: &str = "rules and CMDB loaded";
    let json = "[log]\nformat = \"json\"\n";
    let (_, stderr) = run_with(&[], json, &[], LOADED);
    assert!(stderr.contains(LOADED) && all_json(&stderr), "[log] format = json: {stderr}");
    let (_, stderr) = run_with(&["--log-format", "text"], json, &[], LOADED);
    assert!(stderr.contains(LOADED) && !stderr.lines().any(|l| l.starts_with('{')), "--log-format overrides: {stderr}");
    let (_, stderr) = run_with(&[], json, &[("TRIAGED_LOG_FORMAT", "text")], LOADED);
    assert!(stderr.contains(LOADED) && !stderr.lines().any(|l| l.starts_with('{')), "TRIAGED_LOG_FORMAT overrides: {stderr}");

    // `warn` hides the info lines; the broker at 127.0.0.1:1 is down, so librdkafka warns.
    let warn = "[log]\nlevel = \"warn\"\n";
    let (_, stderr) = run_with(&[], warn, &[], "librdkafka");
    assert!(stderr.contains("librdkafka") && !stderr.contains(LOADED) && !stderr.contains(" INFO "), "[log] level = warn: {stderr}");
    let (_, stderr) = run_with(&["--log", "info"], warn, &[], LOADED);
    assert!(stderr.contains(LOADED), "--log overrides: {stderr}");
    let (_, stderr) = run_with(&[], warn, &[("TRIAGED_LOG", "info")], LOADED);
    assert!(stderr.contains(LOADED), "TRIAGED_LOG overrides: {stderr}");
}

#[test]
fn run_warns_of_a_secret_file_others_can_read_as_check_does() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sink = crate::support::process::Sink {
        profile: "generic",
        routing_key_env: None,
        auth: Some(format!("{{ kind = \"bearer\", token = {{ file = \"{}\" }} }}", token.display())),
    };
    let extra = crate::support::process::Extra { sink: Some(sink), ..Default::default() };
    let (_, stderr) = run_extra(&[], extra, &[], "Kafka consumer subscribed");
    assert!(stderr.contains("Kafka consumer subscribed"), "{stderr}");
    let warning = stderr.lines().find(|l| l.contains("readable by group or others")).unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(warning.contains(" WARN ") && warning.contains("sink.auth.token: secret file") && warning.contains("(mode 644)"), "{warning}");
    assert!(!stderr.contains("t0ken"), "the secret itself is not logged: {stderr}");
}

#[test]
fn check_names_an_invalid_log_level() {
    let text = format!("{SMALL}[log]\nlevel = \"info,[\"\n");
    let (_dir, config) = broken_rules_and_cmdb(&text);
    let (code, stderr) = check(&config);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("triaged.toml: log.level: `info,[` is not a log filter"), "{stderr}");
}

#[test]
fn logs_go_to_stderr_one_json_object_a_line_without_colour() {
    let (stdout, stderr) = run_until(&["--log-format", "json"], "rules and CMDB loaded");
    assert!(stderr.contains("rules and CMDB loaded"), "{stderr}");
    assert_eq!(stdout, "", "nothing on stdout");
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
    }
    let (_, text) = run_until(&[], "rules and CMDB loaded");
    assert!(text.contains("rules and CMDB loaded"), "{text}");
    assert!(!text.contains('\u{1b}'), "no ANSI codes when stderr is a file: {text}");
}

/// `check` on the shipped routes example, its secrets in the environment.
fn check_routes(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triaged"))
        .args(["check", "--config", config.to_str().unwrap()])
        .env("TRIAGED_SN_PASSWORD", "not-a-real-password")
        .env("PD_KEY_DEFAULT", "not-a-real-key-0")
        .env("PD_KEY_DBA", "not-a-real-key-1")
        .env("PD_KEY_NETWORK", "not-a-real-key-2")
        .env("TRIAGED_INGEST_TOKEN", "not-a-real-token")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn shipped_routes_example_passes_and_gaps_are_reported() {
    let root = crate::repo();
    let (code, out) = check_routes(&root.join("config/routes-example.toml"));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("no route matches"), "ServiceNow takes every incident: {out}");
    assert!(!out.contains("not-a-real"), "no secret in the report: {out}");

    // Without the ServiceNow route, P3-P5 incidents go nowhere, and it is said
    // per CI with its owner and rotation; the unused sink is warned about.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root.join("config/routes-example.toml")).unwrap();
    // The shipped files, from a copy elsewhere.
    let absolute = |t: &str| {
        t.replace("\"cmdb.yaml\"", &format!("\"{}\"", root.join("config/cmdb.yaml").display()))
            .replace("\"changes.yaml\"", &format!("\"{}\"", root.join("config/changes.yaml").display()))
            .replace("\"../rules\"", &format!("\"{}\"", root.join("rules").display()))
    };
    let paging_only =
        text.replace("name = \"everything to ServiceNow\"\nsinks = [\"servicenow\"]", "sinks = [\"pagerduty\"]\npriority = 1");
    std::fs::write(dir.path().join("paging.toml"), absolute(&paging_only)).unwrap();
    let (code, out) = check_routes(&dir.path().join("paging.toml"));
    assert_eq!(code, 0, "gaps are warnings: {out}");
    assert!(out.contains("routes: no route names the sink `servicenow`"), "{out}");
    assert!(out.contains("routes: no route matches P3/P4/P5 incidents on"), "{out}");
    assert!(out.contains("more CIs with incidents no route matches"), "capped: {out}");

    // A route naming an unknown sink is an error.
    let unknown = text.replace("sinks = [\"pagerduty\"]", "sinks = [\"pagerdty\"]");
    let path = dir.path().join("unknown.toml");
    std::fs::write(&path, absolute(&unknown)).unwrap();
    let (code, out) = check_routes(&path);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("routes[1].sinks: route `page P1-P2` names the unknown sink `pagerdty`"), "{out}");
}
