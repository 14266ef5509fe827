//! The changelog topic on the mock cluster: with incidents still open, the
//! committed offsets reach the end of the repartition topic (the state is in
//! the changelog, not held in the log); a SIGKILLed instance's successor
//! reads the state back, reconciles it with the ITSM (an incident the ITSM
//! lost is opened again) and resolves the incidents without opening the
//! others again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use triaged::incident::{ActionKind, IncidentState};
use triaged::topology::Snapshot;
use triaged_testkit::itsm::{latest, opened_keys, IncidentReceiver, Received};

use crate::support::process::{
    all_resolved, assert_settled, free_port, log_tails, produce, wait_rekeyed_to_end, write_config_with, Daemon, Extra, LogDir,
};

const GROUP: &str = "triaged-changelog";
const PARTITIONS: i32 = 4;
const REKEYED: &str = "triaged-rekeyed";
const CHANGELOG: &str = "triaged-state";
const REKEYED_PARTITIONS: i32 = 2;
const MINUTE: Duration = Duration::from_secs(60);

/// Whether the latest changelog record of each incident in `keys` says it is open.
fn changelog_says_open(brokers: &str, keys: &[String]) -> bool {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "changelog-reader-test").create().unwrap();
    let mut latest: BTreeMap<Vec<u8>, Option<serde_json::Value>> = BTreeMap::new();
    for p in 0..REKEYED_PARTITIONS {
        let (low, high) = consumer.fetch_watermarks(CHANGELOG, p, Duration::from_secs(10)).unwrap();
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(CHANGELOG, p, Offset::Offset(low)).unwrap();
        consumer.assign(&tpl).unwrap();
        let mut at = low;
        while at < high {
            if let Some(m) = consumer.poll(Duration::from_secs(10)) {
                let m = m.unwrap();
                at = m.offset() + 1;
                let value = m.payload().and_then(|v| serde_json::from_slice(v).ok());
                latest.insert(m.key().unwrap_or_default().to_vec(), value);
            }
        }
    }
    keys.iter().all(|k| {
        latest
            .values()
            .flatten()
            .any(|v| v["key"].as_str() == Some(k.as_str()) && v["phase"].as_str() == Some("Open") && v["pending"].is_null())
    })
}

fn count(log: &[Received], kind: ActionKind) -> usize {
    log.iter().filter(|r| r.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_resumes_from_the_changelog_without_reopening() {
    let log_dir = LogDir::new();
    let logs = log_dir.path();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", PARTITIONS, 1).unwrap();
    cluster.create_topic(REKEYED, REKEYED_PARTITIONS, 1).unwrap();
    cluster.create_topic(CHANGELOG, REKEYED_PARTITIONS, 1).unwrap();
    cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let receiver = IncidentReceiver::start().await.unwrap();
    let port = free_port();
    let extra = Extra { sections: format!("[rekey]\ntopic = \"{REKEYED}\"\nscope = \"site\"\n"), ..Extra::default() };
    let config = write_config_with(logs, &brokers, GROUP, 3000, &receiver.url(), port, &extra);
    let cmdb = Snapshot::load(&crate::repo().join("config/cmdb.yaml")).unwrap();
    let storm = triaged::demo::storm(&cmdb, 3, chrono::Utc::now()).unwrap();
    let fail = |what: &str, log: Vec<Received>| -> Vec<Received> {
        panic!("{what}: {} actions received\n{}", log.len(), log_tails(logs));
    };
    let wait_end = |what: &'static str| wait_rekeyed_to_end(&brokers, GROUP, PARTITIONS, REKEYED, REKEYED_PARTITIONS, logs, what);

    let mut ends = BTreeMap::new();
    let first = Daemon::start(&config, logs, 1, port);
    produce(&brokers, &storm.firing, &mut ends).await;
    let log = receiver.wait_for(MINUTE, |log| opened_keys(log).len() == 2).await.unwrap_or_else(|l| fail("no two opens", l));
    let keys = opened_keys(&log);
    // Both incidents are open, yet every offset is committed: their state
    // is in the changelog. (A checkpoint taken while they waited out their
    // group wait also lets the offsets reach the end: wait for the one that
    // says they are open and acknowledged, or the successor rightly sends
    // the open it still owes instead of looking the incident up.)
    wait_end("with the incidents open").await;
    let deadline = Instant::now() + MINUTE;
    while !changelog_says_open(&brokers, &keys) {
        assert!(Instant::now() < deadline, "the changelog never said both incidents are open and acknowledged\n{}", log_tails(logs));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!all_resolved(&receiver.log(), &keys));
    let peak_first = first.peak_rss_mib();
    first.sigkill();

    // The ITSM loses one of them.
    receiver.forget(&keys[0]);
    produce(&brokers, &storm.recovery, &mut ends).await;
    let second = Daemon::start(&config, logs, 2, port);
    second.wait_metric("triaged_reconciled_incidents_total", |v| v >= 2.0, MINUTE).await;
    receiver.wait_for(MINUTE, |log| all_resolved(log, &keys)).await.unwrap_or_else(|l| fail("not resolved", l));
    wait_end("after the resolves").await;
    let peak_second = second.peak_rss_mib();
    second.sigterm(Duration::from_secs(15));

    let log = receiver.log();
    let opens = |k: &str| log.iter().filter(|r| r.kind == ActionKind::Open && r.incident.key == k).count();
    assert_eq!((opens(&keys[0]), opens(&keys[1])), (2, 1), "the lost one opened again, the other known to be open");
    assert_eq!(opened_keys(&log), keys);
    assert_settled(&log, &storm, &brokers, GROUP, PARTITIONS, &ends);
    eprintln!(
        "changelog: {} events, 1 SIGKILL with 2 incidents open and every offset committed, 1 incident lost by the ITSM, {} open and {} resolve calls, peak RSS {:.0}/{:.0} MiB",
        storm.firing.len() + storm.recovery.len(),
        count(&log, ActionKind::Open),
        count(&log, ActionKind::Resolve),
        peak_first,
        peak_second
    );
}

/// `triaged run` on a cluster with `topics` (name, partitions): its exit
/// status and standard error.
fn run_with_topics(topics: &[(&str, i32)]) -> (std::process::ExitStatus, String) {
    run_with(topics, &format!("[rekey]\ntopic = \"{REKEYED}\"\n"), "run")
}

/// `triaged <command>` (run or check) with `sections` appended to the config.
fn run_with(topics: &[(&str, i32)], sections: &str, command: &str) -> (std::process::ExitStatus, String) {
    let log_dir = LogDir::new();
    let cluster = MockCluster::new(1).unwrap();
    for (t, n) in topics {
        cluster.create_topic(t, *n, 1).unwrap();
    }
    let extra = Extra {
        // Its own file: with TRIAGED_E2E_LOGS the tests share one directory.
        file: Some("refused.toml".into()),
        sections: sections.to_owned(),
        ..Extra::default()
    };
    let config = write_config_with(log_dir.path(), &cluster.bootstrap_servers(), GROUP, 3000, "http://127.0.0.1:9", free_port(), &extra);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_triaged"))
        .args([command, "--config", config.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + MINUTE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("triaged kept running with topics {topics:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn missing_or_mismatched_topics_are_refused_at_start() {
    let (status, stderr) = run_with_topics(&[("events", 1), (REKEYED, 2), (CHANGELOG, 3)]);
    assert!(!status.success());
    assert!(stderr.contains("state.changelog_topic: `triaged-state` has 3 partitions and rekey.topic `triaged-rekeyed` 2"), "{stderr}");
    let (status, stderr) = run_with_topics(&[("events", 1), (CHANGELOG, 2)]);
    assert!(!status.success());
    assert!(stderr.contains("rekey.topic: topic `triaged-rekeyed` does not exist"), "{stderr}");
    let (status, stderr) = run_with_topics(&[("events", 1), (REKEYED, 2)]);
    assert!(!status.success());
    assert!(
        stderr.contains("state.changelog_topic: topic `triaged-state` does not exist; create it, compacted, with 2 partition(s): kafka-topics.sh --bootstrap-server"),
        "{stderr}"
    );
    assert!(stderr.contains("--create --topic triaged-state --partitions 2 --config cleanup.policy=compact"), "{stderr}");
}

#[test]
fn without_rekey_a_missing_changelog_is_named_by_check_and_run() {
    for command in ["check", "run"] {
        let (status, stderr) = run_with(&[("events", 1), ("triaged-dead-letter", 1)], "", command);
        assert!(!status.success(), "{command} succeeded");
        assert!(
            stderr.contains("state.changelog_topic: topic `triaged-state` does not exist; create it, compacted, with 1 partition(s)"),
            "{command}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partition_hands_its_state_over() {
    let log_dir = LogDir::new();
    let logs = log_dir.path();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", 2, 1).unwrap();
    cluster.create_topic(REKEYED, REKEYED_PARTITIONS, 1).unwrap();
    cluster.create_topic(CHANGELOG, REKEYED_PARTITIONS, 1).unwrap();
    cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let receiver = IncidentReceiver::start().await.unwrap();
    let config = |name: &str, port: u16| {
        let extra = Extra {
            file: Some(format!("{name}.toml")),
            // No periodic checkpoint within the test: only the revoke's can
            // hand the state over.
            commit_interval: Some("10m"),
            sections: format!("[rekey]\ntopic = \"{REKEYED}\"\nscope = \"site\"\n"),
            ..Extra::default()
        };
        write_config_with(logs, &brokers, GROUP, 3000, &receiver.url(), port, &extra)
    };
    let cmdb = Snapshot::load(&crate::repo().join("config/cmdb.yaml")).unwrap();
    let storm = triaged::demo::storm(&cmdb, 3, chrono::Utc::now()).unwrap();
    let fail = |what: &str, log: Vec<Received>| -> Vec<Received> {
        panic!("{what}: {} actions received\n{}", log.len(), log_tails(logs));
    };

    let mut ends = BTreeMap::new();
    let (pa, pb) = (free_port(), free_port());
    let a = Daemon::start(&config("a", pa), logs, 1, pa);
    a.wait_metric("triaged_correlation_partitions", |v| v == REKEYED_PARTITIONS as f64, MINUTE).await;
    produce(&brokers, &storm.firing, &mut ends).await;
    let log = receiver.wait_for(MINUTE, |log| opened_keys(log).len() == 2).await.unwrap_or_else(|l| fail("no two opens", l));
    let keys = opened_keys(&log);
    // A second member: every partition is revoked from the first (eager
    // rebalance), checkpointed on the way out, and restored by its owner.
    let b = Daemon::start(&config("b", pb), logs, 2, pb);
    b.wait_metric("triaged_correlation_partitions", |v| v >= 1.0, MINUTE).await;
    produce(&brokers, &storm.recovery, &mut ends).await;
    receiver.wait_for(MINUTE, |log| all_resolved(log, &keys)).await.unwrap_or_else(|l| fail("not resolved", l));
    b.sigterm(Duration::from_secs(15));
    a.sigterm(Duration::from_secs(15));

    let log = receiver.log();
    assert_eq!(count(&log, ActionKind::Open), 2, "the new owners knew the incidents were open: {:?}", opened_keys(&log));
    assert_eq!(opened_keys(&log), keys);
    // Offsets are not checked: with a 10 minute commit interval they are
    // committed only on the way out, and the mock broker refuses commits
    // during a rebalance. The checkpoint's own offset keeps the next owner
    // from applying them twice.
    let last = latest(&log);
    assert!(last.iter().all(|r| r.kind == ActionKind::Resolve && r.incident.state == IncidentState::Resolved), "{last:?}");
    let storm_members = last.iter().map(|r| r.incident.members.len()).max();
    assert_eq!(storm_members, Some(storm.downstream + 1), "every downstream alert in the storm incident");
}
