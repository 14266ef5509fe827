//! `triaged replay`: a recorded storm through the shipped rules and CMDB, from
//! a file and from a Kafka topic, and the comparison of two rule sets.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use triaged::config::{CorrelationConfig, Format};
use triaged::rules::RuleSet;
use triaged::tools::replay::{read_file, read_topic, replay, Recorded};
use triaged::topology::Snapshot;

use crate::repo;

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/replay/storm.jsonl")
}

/// The demo's storm at a fixed time, firing then recovery, one message per line.
fn storm_lines() -> String {
    let cmdb = Snapshot::load(&repo().join("config/cmdb.yaml")).unwrap();
    let at = chrono::Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    let storm = triaged::demo::storm(&cmdb, 2, at).unwrap();
    // The faults last ten minutes, well past the default group wait.
    let recovery = triaged::demo::storm(&cmdb, 2, at + chrono::Duration::minutes(10)).unwrap().recovery;
    let mut out =
        String::from("# triaged demo storm at 2026-11-24T12:00:00Z: sw-core-par1-01 and db-bank-fra1-01 fail, recover 10 min later\n");
    for (_, payload) in storm.firing.iter().chain(&recovery) {
        out.push_str(std::str::from_utf8(payload).unwrap());
        out.push('\n');
    }
    out
}

#[test]
fn the_recording_is_the_demo_storm() {
    let want = storm_lines();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(fixture(), &want).unwrap();
    }
    assert_eq!(std::fs::read_to_string(fixture()).unwrap(), want, "regenerate with UPDATE_EXPECT=1 cargo test --test it replay");
}

fn shipped() -> (Arc<RuleSet>, Arc<Snapshot>) {
    (Arc::new(RuleSet::load_dir(&repo().join("rules")).unwrap()), Arc::new(Snapshot::load(&repo().join("config/cmdb.yaml")).unwrap()))
}

#[test]
fn replaying_the_storm_gives_its_two_incidents() {
    let (rules, cmdb) = shipped();
    let messages = read_file(&fixture()).unwrap();
    let r = replay(&messages, rules, cmdb, &CorrelationConfig::default(), Format::Auto, false);
    let opens: Vec<&String> = r.actions.iter().filter(|l| l.contains(" open ")).collect();
    assert_eq!(opens.len(), 2, "{:#?}", r.actions);
    assert!(opens.iter().any(|l| l.contains("root=sw-core-par1-01")), "{opens:?}");
    assert!(opens.iter().any(|l| l.contains("root=db-bank-fra1-01")), "{opens:?}");
    assert_eq!(r.incidents.len(), 2);
    assert!(r.incidents.values().all(|l| l.contains(" resolve ")), "both end resolved: {:?}", r.incidents);
    assert_eq!(r.undecodable.len(), 1, "the storm's malformed message");
    assert!(r.undecodable[0].0.contains("storm.jsonl:"), "named by its line: {:?}", r.undecodable);
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_triaged")).current_dir(repo()).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn comparing_rule_sets() {
    let (code, out) = cli(&["replay", "--from", fixture().to_str().unwrap(), "--against", "rules"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("no difference"), "{out}");

    // A candidate without topology correlation: the storm falls apart.
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(repo().join("rules")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && !p.ends_with("40-correlate.yaml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let (code, out) = cli(&["replay", "--from", fixture().to_str().unwrap(), "--against", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let added = out.lines().filter(|l| l.starts_with("  + ") && l.contains(" open ")).count();
    assert!(added > 2, "many more incidents without topology: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_replays_like_the_file() {
    let messages = read_file(&fixture()).unwrap();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("recorded", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for (_, payload) in &messages {
        producer.send(FutureRecord::<(), _>::to("recorded").payload(payload), Duration::from_secs(5)).await.map_err(|(e, _)| e).unwrap();
    }
    let b = brokers.clone();
    let from_topic: Vec<Recorded> = tokio::task::spawn_blocking(move || read_topic(&b, "recorded", None, 0, None)).await.unwrap().unwrap();
    assert_eq!(from_topic.len(), messages.len());
    let (rules, cmdb) = shipped();
    let cc = CorrelationConfig::default();
    let a = replay(&messages, rules.clone(), cmdb.clone(), &cc, Format::Auto, false);
    let b = replay(&from_topic, rules, cmdb, &cc, Format::Auto, false);
    assert_eq!(a.actions, b.actions);
    assert_eq!(a.decisions, b.decisions);
    assert!(b.undecodable[0].0.starts_with("recorded/0@"), "named by its origin: {:?}", b.undecodable);
    drop(producer);
}

/// `replay --config` takes the daemon's timers and its topic's format: the
/// storm's incidents open after the config's group wait (5 s), not the
/// default 30 s, and a topic declared `native` does not decode the storm's
/// Alertmanager and Zabbix messages, as the daemon would not.
#[test]
fn replay_takes_the_config_timers_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    let config = |format: &str| {
        let path = dir.path().join(format!("{format}.toml"));
        let text = format!(
            "[kafka]\nbrokers = \"127.0.0.1:9\"\ngroup_id = \"g\"\ntopics = [{{ name = \"events\", format = \"{format}\" }}]\n\
             [cmdb]\npath = \"{}\"\n[rules]\ndir = \"{}\"\n[sink]\nprofile = \"generic\"\nendpoint = \"http://127.0.0.1:9\"\n\
             [correlation]\ngroup_wait = \"5s\"\ntopology_wait = \"5s\"\n",
            repo().join("config/cmdb.yaml").display(),
            repo().join("rules").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let opened_at = |out: &str| out.lines().filter(|l| l.contains(" open ")).map(|l| l.split(' ').next().unwrap().to_owned()).min();
    let (code, default) = cli(&["replay", "--from", fixture().to_str().unwrap()]);
    assert_eq!(code, 0, "{default}");
    let (code, with) = cli(&["replay", "--from", fixture().to_str().unwrap(), "--config", config("auto").to_str().unwrap()]);
    assert_eq!(code, 0, "{with}");
    // By default the storm's incidents, on CIs that depend on others, wait
    // the topology wait (3m).
    assert_eq!(opened_at(&default).as_deref(), Some("2026-11-24T12:03:00Z"), "{default}");
    assert_eq!(opened_at(&with).as_deref(), Some("2026-11-24T12:00:05Z"), "{with}");
    let (_, native) = cli(&["replay", "--from", fixture().to_str().unwrap(), "--config", config("native").to_str().unwrap()]);
    assert!(opened_at(&native).is_none(), "{native}");
}

/// `replay --output json`: one object per action, then one final record per
/// incident; the same actions and incidents as the text output.
#[test]
fn replay_prints_actions_as_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_triaged"))
        .current_dir(repo())
        .args(["replay", "--from", fixture().to_str().unwrap(), "--output", "json"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("263 messages, 262 events"), "the summary goes to stderr: {stderr}");
    let values: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let (actions, finals): (Vec<_>, Vec<_>) = values.iter().partition(|v| v.get("final").is_none());
    assert!(values.iter().rev().take(finals.len()).all(|v| v["final"] == true), "the final records come last: {stdout}");
    for a in &actions {
        for field in ["at", "kind", "key", "root", "priority", "severity", "scope", "title", "members", "member_cis"] {
            assert!(a.get(field).is_some(), "{field} missing: {a}");
        }
        assert!(chrono::DateTime::parse_from_rfc3339(a["at"].as_str().unwrap()).is_ok(), "{a}");
        assert_eq!(a["members"].as_array().unwrap().len(), a["member_cis"].as_array().unwrap().len(), "{a}");
    }

    // The text replay of the same log: the same actions in the same order.
    let (rules, cmdb) = shipped();
    let text = replay(&read_file(&fixture()).unwrap(), rules, cmdb, &CorrelationConfig::default(), Format::Auto, false);
    let kinds_keys = |a: &serde_json::Value| format!("{} {}", a["kind"].as_str().unwrap(), a["key"].as_str().unwrap());
    let from_text: Vec<String> = text.actions.iter().map(|l| l.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(actions.iter().map(|a| kinds_keys(a)).collect::<Vec<_>>(), from_text);

    let switch = actions.iter().find(|a| a["kind"] == "open" && a["root"] == "sw-core-par1-01").expect("the switch storm opens");
    assert_eq!(switch["members"].as_array().unwrap().len(), 86, "{switch}");
    let cis = switch["member_cis"].as_array().unwrap();
    assert!(cis.iter().any(|c| c == "sw-core-par1-01") && cis.iter().any(|c| c == "sw-acc-par1-01"), "{switch}");
    assert!(switch["members"].as_array().unwrap().iter().any(|m| m == "zabbix|sw-core-par1-01|ICMP ping unreachable"), "{switch}");

    let final_keys: Vec<&str> = finals.iter().map(|f| f["key"].as_str().unwrap()).collect();
    assert_eq!(final_keys, text.incidents.keys().map(String::as_str).collect::<Vec<_>>());
    for f in &finals {
        assert_eq!((f["last_kind"].as_str(), f["state"].as_str()), (Some("resolve"), Some("resolved")), "{f}");
        let root = f["root"].as_str().unwrap();
        assert!(["sw-core-par1-01", "db-bank-fra1-01"].contains(&root), "{f}");
        let last = actions.iter().rev().find(|a| a["key"] == f["key"]).unwrap();
        assert_eq!((&f["members"], f["priority"].as_u64()), (&last["members"], last["priority"].as_u64()), "{f}");
    }
    let db = finals.iter().find(|f| f["root"] == "db-bank-fra1-01").unwrap();
    assert_eq!(db["member_cis"], serde_json::json!(["db-bank-fra1-01"]), "{db}");
}

#[test]
fn replay_output_refuses_unknown_values() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_triaged")).current_dir(repo()).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let from = fixture();
    let (code, err) = run(&["replay", "--from", from.to_str().unwrap(), "--output", "yaml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("invalid value 'yaml' for '--output <OUTPUT>'") && err.contains("[possible values: text, json]"), "{err}");
    let (code, err) = run(&["replay", "--from", from.to_str().unwrap(), "--output", "json", "--against", "rules"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("'--output <OUTPUT>' cannot be used with '--against <AGAINST>'"), "{err}");
}
