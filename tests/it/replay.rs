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
        String::from("# triaged demo storm at 2026-11-24T12:00:00Z: sw-core-par1-01 and db-pay-fra1-01 fail, recover 10 min later\n");
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
    assert!(opens.iter().any(|l| l.contains("root=db-pay-fra1-01")), "{opens:?}");
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
             [correlation]\ngroup_wait = \"5s\"\n",
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
    assert_eq!(opened_at(&default).as_deref(), Some("2026-11-24T12:00:30Z"), "{default}");
    assert_eq!(opened_at(&with).as_deref(), Some("2026-11-24T12:00:05Z"), "{with}");
    let (_, native) = cli(&["replay", "--from", fixture().to_str().unwrap(), "--config", config("native").to_str().unwrap()]);
    assert!(opened_at(&native).is_none(), "{native}");
}
