//! The `triaged` binary SIGKILLed six times through a storm on the librdkafka
//! mock cluster: before any incident opened, right after an open and a
//! resolve were acknowledged by the ITSM, mid-recovery and after the
//! recovery. The exact incident set must come out, under the first run's
//! keys, each incident opened once and resolved once (what the ITSM
//! acknowledged is never sent again), and the committed offsets at the end
//! of every partition.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::Offset;

use triaged::incident::ActionKind;
use triaged::topology::Snapshot;
use triaged_testkit::itsm::{opened_keys, IncidentReceiver, Received};

use crate::support::process::{all_resolved, assert_settled, committed, free_port, log_tails, produce, write_config, Daemon, LogDir};

const GROUP: &str = "triaged-kills";
const PARTITIONS: i32 = 4;
const HANDLED: &str = "triaged_core_messages_handled_total";

fn count(log: &[Received], kind: ActionKind) -> usize {
    log.iter().filter(|r| r.kind == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_kills_through_a_storm_leave_the_exact_incidents() {
    let log_dir = LogDir::new();
    let logs = log_dir.path();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", PARTITIONS, 1).unwrap();
    cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
    cluster.create_topic("triaged-state", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let receiver = IncidentReceiver::start().await.unwrap();
    let metrics_port = free_port();
    // The mock cluster makes a member that joins after a crash wait for the
    // session timeout less 1 s: 3 s keeps each restart short.
    let config = write_config(logs, &brokers, GROUP, 3000, &receiver.url(), metrics_port);

    let cmdb = Snapshot::load(&crate::repo().join("config/cmdb.yaml")).unwrap();
    let storm = triaged::demo::storm(&cmdb, 3, chrono::Utc::now()).unwrap();
    let mut ends = BTreeMap::new();
    produce(&brokers, &storm.firing, &mut ends).await;
    let firing = storm.firing.len() as f64;
    let minute = Duration::from_secs(60);
    let mut peak_mib = 0f64;
    let mut kill = |d: Daemon| {
        peak_mib = peak_mib.max(d.peak_rss_mib());
        d.sigkill();
    };
    let fail = |what: &str, log: Vec<Received>| -> Vec<Received> {
        panic!("{what}: {} actions received\n{}", log.len(), log_tails(logs));
    };

    // Kill 1: mid-storm, while the incidents are still in their group wait.
    let d = Daemon::start(&config, logs, 1, metrics_port);
    d.wait_metric(HANDLED, |v| v >= firing / 2.0, minute).await;
    assert!(receiver.log().is_empty(), "nothing sent within the group wait");
    kill(d);

    // Kill 2: right after the first open is acknowledged.
    let d = Daemon::start(&config, logs, 2, metrics_port);
    receiver.wait_for(minute, |log| !opened_keys(log).is_empty()).await.unwrap_or_else(|l| fail("run 2: no open", l));
    kill(d);

    // Kill 3: once both incidents are open.
    let d = Daemon::start(&config, logs, 3, metrics_port);
    let log = receiver.wait_for(minute, |log| opened_keys(log).len() >= 2).await.unwrap_or_else(|l| fail("run 3: not both open", l));
    kill(d);
    let keys = opened_keys(&log);
    assert_eq!(keys.len(), 2, "{keys:?}");

    // The faults recover. Kill 4: right after the first resolve is acknowledged.
    produce(&brokers, &storm.recovery, &mut ends).await;
    let d = Daemon::start(&config, logs, 4, metrics_port);
    receiver.wait_for(minute, |log| count(log, ActionKind::Resolve) >= 1).await.unwrap_or_else(|l| fail("run 4: no resolve", l));
    kill(d);

    // Kill 5: as soon as it serves metrics. It had only what came after the
    // last checkpoint to read again, never the storm.
    let d = Daemon::start(&config, logs, 5, metrics_port);
    d.wait_metric(HANDLED, |_| true, minute).await;
    let reread = d.metric(HANDLED).await.unwrap_or_default();
    kill(d);
    assert!(reread < firing, "run 5 read the storm again: {reread} messages");

    // Kill 6: once both incidents stand resolved, before they close.
    let d = Daemon::start(&config, logs, 6, metrics_port);
    receiver.wait_for(minute, |log| all_resolved(log, &keys)).await.unwrap_or_else(|l| fail("run 6: not resolved", l));
    kill(d);

    // Run 7 settles: the incidents close, every offset is stored and
    // committed; then SIGTERM.
    let d = Daemon::start(&config, logs, 7, metrics_port);
    let deadline = std::time::Instant::now() + minute;
    while ends.iter().any(|(p, end)| committed(&brokers, GROUP, "events", PARTITIONS)[p] != Offset::Offset(*end)) {
        assert!(std::time::Instant::now() < deadline, "run 7: offsets not committed to the end\n{}", log_tails(logs));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    peak_mib = peak_mib.max(d.peak_rss_mib());
    d.sigterm(Duration::from_secs(15));
    let log = receiver.log();

    assert_eq!(opened_keys(&log), keys, "no incident key other than the first ones");
    assert_settled(&log, &storm, &brokers, GROUP, PARTITIONS, &ends);
    for key in &keys {
        let of = |kind| log.iter().filter(|r| &r.incident.key == key && r.kind == kind).count();
        assert_eq!((of(ActionKind::Open), of(ActionKind::Reopen), of(ActionKind::Resolve)), (1, 0, 1), "{key}: opened and resolved once");
    }
    eprintln!(
        "kill storm: {} events, 6 SIGKILLs, 2 incidents expected, {} created, {} open and {} resolve calls, peak RSS {:.0} MiB",
        storm.firing.len() + storm.recovery.len(),
        keys.len(),
        count(&log, ActionKind::Open),
        count(&log, ActionKind::Resolve),
        peak_mib
    );
    drop(cluster);
}
