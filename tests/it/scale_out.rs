//! Several `triaged` processes sharing the work through the re-key stage, on
//! the librdkafka mock cluster: scaled 1 -> 3 under load, one of the three
//! SIGKILLed, scaled back to 1. The incidents must be exactly those of a
//! single instance fed the same storm, and every partition of the input and
//! repartition topics must be consumed to its end. Partition state moves
//! between instances through the changelog topic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::mocking::MockCluster;

use triaged::incident::{ActionKind, IncidentState};
use triaged::topology::Snapshot;
use triaged_testkit::itsm::{latest, opened_keys, IncidentReceiver, Received};

use crate::support::process::{
    all_resolved, assert_settled, free_port, log_tails, produce, wait_rekeyed_to_end, write_config_with, Daemon, Extra, LogDir,
};

const GROUP: &str = "triaged-scale";
const PARTITIONS: i32 = 4;
const REKEYED: &str = "triaged-rekeyed";
const REKEYED_PARTITIONS: i32 = 4;
const CHANGELOG: &str = "triaged-state";
const MINUTE: Duration = Duration::from_secs(60);

/// One instance's config: its own metrics port and sink path (`/{via}`).
fn config(logs: &Path, brokers: &str, sink: &str, via: &str, port: u16) -> PathBuf {
    let extra = Extra {
        file: Some(format!("{via}.toml")),
        // The demo CMDB is one component (business services depend on
        // applications of every site); by site, the two faults land apart.
        // State moves between instances through the changelog.
        sections: format!("[rekey]\ntopic = \"{REKEYED}\"\nscope = \"site\"\n"),
        ..Extra::default()
    };
    write_config_with(logs, brokers, GROUP, 3000, &format!("{sink}/{via}"), port, &extra)
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", PARTITIONS, 1).unwrap();
    cluster.create_topic(REKEYED, REKEYED_PARTITIONS, 1).unwrap();
    cluster.create_topic(CHANGELOG, REKEYED_PARTITIONS, 1).unwrap();
    cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
    cluster
}

/// Key -> (root cause, members, state) of the last action of each incident.
fn outcome(log: &[Received]) -> BTreeMap<String, (Option<String>, usize, IncidentState)> {
    latest(log)
        .into_iter()
        .map(|r| {
            let i = &r.incident;
            (i.key.clone(), (i.root_cause.as_ref().map(|c| c.id.clone()), i.members.len(), i.state))
        })
        .collect()
}

async fn wait_committed(brokers: &str, logs: &Path, what: &str) {
    wait_rekeyed_to_end(brokers, GROUP, PARTITIONS, REKEYED, REKEYED_PARTITIONS, logs, what).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_1_3_1_with_a_kill_gives_the_single_instance_incidents() {
    let log_dir = LogDir::new();
    let logs = log_dir.path();
    let cmdb = Snapshot::load(&crate::repo().join("config/cmdb.yaml")).unwrap();
    let storm = triaged::demo::storm(&cmdb, 3, chrono::Utc::now()).unwrap();
    let receiver = IncidentReceiver::start().await.unwrap();
    let fail = |what: &str, log: Vec<Received>| -> Vec<Received> {
        panic!("{what}: {} actions received\n{}", log.len(), log_tails(logs));
    };

    // The reference: one instance, the same storm, on a cluster of its own.
    let reference = {
        let cluster = cluster();
        let brokers = cluster.bootstrap_servers();
        let port = free_port();
        let one = Daemon::start(&config(logs, &brokers, &receiver.url(), "ref", port), logs, 0, port);
        let mut ends = BTreeMap::new();
        produce(&brokers, &storm.firing, &mut ends).await;
        receiver.wait_for(MINUTE, |log| opened_keys(log).len() == 2).await.unwrap_or_else(|l| fail("reference: no two opens", l));
        produce(&brokers, &storm.recovery, &mut ends).await;
        let keys = opened_keys(&receiver.log());
        receiver.wait_for(MINUTE, |log| all_resolved(log, &keys)).await.unwrap_or_else(|l| fail("reference: not resolved", l));
        wait_committed(&brokers, logs, "reference").await;
        one.sigterm(Duration::from_secs(15));
        let log = receiver.log();
        assert_settled(&log, &storm, &brokers, GROUP, PARTITIONS, &ends);
        outcome(&log)
    };
    let seen = receiver.log().len();

    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let configs: Vec<PathBuf> =
        ports.iter().enumerate().map(|(i, p)| config(logs, &brokers, &receiver.url(), &format!("i{}", i + 1), *p)).collect();
    let mut ends = BTreeMap::new();
    let (first, second) = storm.firing.split_at(storm.firing.len() / 2);

    // 1 instance, then 3 while the storm arrives.
    let mut instances: Vec<Option<Daemon>> = Vec::new();
    let i1 = Daemon::start(&configs[0], logs, 1, ports[0]);
    i1.wait_metric("triaged_correlation_partitions", |v| v == REKEYED_PARTITIONS as f64, MINUTE).await;
    produce(&brokers, first, &mut ends).await;
    instances.push(Some(i1));
    for i in 1..3 {
        instances.push(Some(Daemon::start(&configs[i], logs, i as u32 + 1, ports[i])));
    }
    produce(&brokers, second, &mut ends).await;
    let after = |log: &[Received]| log[seen..].to_vec();
    let log = receiver
        .wait_for(MINUTE, |log| opened_keys(&after(log)).len() == 2)
        .await
        .unwrap_or_else(|l| fail("three instances: no two opens", l));

    // The instance that opened the storm's incident dies; the faults recover
    // meanwhile, so another instance must take its partition over.
    let mut peak = [0f64; 3];
    let opener = after(&log).iter().rev().find(|r| r.kind == ActionKind::Open).and_then(|r| r.via.clone()).unwrap();
    let killed: usize = opener.trim_start_matches('i').parse::<usize>().unwrap() - 1;
    let victim = instances[killed].take().unwrap();
    peak[killed] = victim.peak_rss_mib();
    victim.sigkill();
    produce(&brokers, &storm.recovery, &mut ends).await;
    let keys = opened_keys(&after(&receiver.log()));
    let log =
        receiver.wait_for(MINUTE, |log| all_resolved(&after(log), &keys)).await.unwrap_or_else(|l| fail("after the kill: not resolved", l));
    let resolver = after(&log).iter().rev().find(|r| r.kind == ActionKind::Resolve).and_then(|r| r.via.clone()).unwrap();
    assert_ne!(resolver, opener, "a surviving instance resolved the incidents");

    // Back to one instance, which settles everything.
    let mut survivors: Vec<(usize, Daemon)> = instances.into_iter().enumerate().filter_map(|(i, d)| d.map(|d| (i, d))).collect();
    let (i, stopped) = survivors.pop().unwrap();
    peak[i] = stopped.peak_rss_mib();
    stopped.sigterm(Duration::from_secs(15));
    wait_committed(&brokers, logs, "back to one").await;
    let (i, last) = survivors.pop().unwrap();
    peak[i] = last.peak_rss_mib();
    last.sigterm(Duration::from_secs(15));

    let log = after(&receiver.log());
    assert_eq!(outcome(&log), reference, "the same incidents as a single instance");
    assert_settled(&log, &storm, &brokers, GROUP, PARTITIONS, &ends);
    let by: BTreeMap<String, usize> = log.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.via.clone().unwrap_or_default()).or_default() += 1;
        m
    });
    eprintln!(
        "scale out: {} events, 1 -> 3 -> 1 instances, SIGKILL of {opener} (opened), {resolver} resolved, {} incidents expected, {} created, {} open calls, calls per instance {by:?}, peak RSS {:.0}/{:.0}/{:.0} MiB",
        storm.firing.len() + storm.recovery.len(),
        reference.len(),
        keys.len(),
        log.iter().filter(|r| r.kind == ActionKind::Open).count(),
        peak[0],
        peak[1],
        peak[2]
    );
}
