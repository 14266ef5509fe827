//! An instance SIGSTOPped past the session timeout while its opens are being
//! retried (the ITSM answers 503), then SIGCONTed after the ITSM healed: the
//! mock cluster gave its partition to the other instance meanwhile (and
//! fences nothing), so the resumed instance, whose retries are due at once,
//! must not make a single sink call for it. The other instance rebuilds the
//! incidents from the log and carries them to their resolve.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rdkafka::mocking::MockCluster;

use triaged::config::Format;
use triaged::incident::ActionKind;
use triaged::topology::Snapshot;
use triaged_testkit::itsm::{opened_keys, IncidentReceiver, Received};

use crate::support::process::{
    all_resolved, assert_settled, free_port, log_tails, produce, wait_rekeyed_to_end, write_config_with, Daemon, Extra, LogDir,
};

const GROUP: &str = "triaged-stall";
const PARTITIONS: i32 = 2;
const REKEYED: &str = "triaged-rekeyed";
const MINUTE: Duration = Duration::from_secs(60);

fn events_in(messages: &[(String, Vec<u8>)]) -> usize {
    let now = chrono::Utc::now();
    messages.iter().map(|(_, p)| triaged::source::decode::decode(Format::Auto, p, now).map_or(0, |e| e.len())).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_instance_makes_no_call_for_the_partition_it_lost() {
    let log_dir = LogDir::new();
    let logs = log_dir.path();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", PARTITIONS, 1).unwrap();
    // One partition: whoever owns it does all the correlation.
    cluster.create_topic(REKEYED, 1, 1).unwrap();
    cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
    cluster.create_topic("triaged-state", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let receiver = IncidentReceiver::start().await.unwrap();
    let cmdb = Snapshot::load(&crate::repo().join("config/cmdb.yaml")).unwrap();
    let storm = triaged::demo::storm(&cmdb, 3, chrono::Utc::now()).unwrap();
    let fail = |what: &str, log: Vec<Received>| -> Vec<Received> {
        panic!("{what}: {} actions received\n{}", log.len(), log_tails(logs));
    };
    let config = |via: &str, port: u16| {
        let extra = Extra {
            file: Some(format!("{via}.toml")),
            // Sticky: the partition stays where it is when a member joins,
            // so the stopped instance does not get it back on its return.
            options: vec![("partition.assignment.strategy", "cooperative-sticky")],
            // Long enough to stop the instance with its incidents pending.
            group_wait: Some("8s"),
            sections: format!("[rekey]\ntopic = \"{REKEYED}\"\nscope = \"site\"\n"),
            ..Extra::default()
        };
        write_config_with(logs, &brokers, GROUP, 3000, &format!("{}/{via}", receiver.url()), port, &extra)
    };

    let (vport, sport) = (free_port(), free_port());
    let stopped = Daemon::start(&config("stopped", vport), logs, 1, vport);
    stopped.wait_metric("triaged_correlation_partitions", |v| v == 1.0, MINUTE).await;
    let other = Daemon::start(&config("other", sport), logs, 2, sport);
    let mut ends = BTreeMap::new();
    produce(&brokers, &storm.firing, &mut ends).await;
    let firing = events_in(&storm.firing) as f64;
    stopped.wait_metric("triaged_core_messages_handled_total", |v| v >= firing, MINUTE).await;
    assert!(receiver.log().is_empty(), "nothing sent within the group wait");

    // The ITSM fails; the instance's opens go into retry.
    receiver.fail_with(StatusCode::SERVICE_UNAVAILABLE, None);
    let deadline = Instant::now() + MINUTE;
    while receiver.rejected() < 2 {
        assert!(Instant::now() < deadline, "no open attempted\n{}", log_tails(logs));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Stopped past the session timeout: the group gives the partition to the
    // other instance, which replays it and opens the incidents once the ITSM
    // is back.
    stopped.signal(libc::SIGSTOP);
    receiver.heal();
    receiver
        .wait_for(MINUTE, |log| opened_keys(log).len() == 2)
        .await
        .unwrap_or_else(|l| fail("the other instance did not open the incidents", l));
    stopped.signal(libc::SIGCONT);
    let resumed = Instant::now();
    // Its group wait is long over: it would open them again at once. It
    // finds out it lost the partition instead.
    stopped.wait_metric("triaged_correlation_partitions", |v| v == 0.0, MINUTE).await;
    let released = resumed.elapsed();
    let disowned = stopped.metric("triaged_sink_actions_disowned_total").await.unwrap_or(0.0);

    produce(&brokers, &storm.recovery, &mut ends).await;
    let keys = opened_keys(&receiver.log());
    receiver.wait_for(MINUTE, |log| all_resolved(log, &keys)).await.unwrap_or_else(|l| fail("not resolved", l));
    wait_rekeyed_to_end(&brokers, GROUP, PARTITIONS, REKEYED, 1, logs, "after the resolves").await;
    let peak = (stopped.peak_rss_mib(), other.peak_rss_mib());
    stopped.sigterm(Duration::from_secs(15));
    other.sigterm(Duration::from_secs(15));

    let log = receiver.log();
    // A retry sent just before SIGSTOP may reach the ITSM once it healed:
    // that call was made while the partition was still this instance's.
    let from_stopped: Vec<&Received> = log.iter().filter(|r| r.via.as_deref() == Some("stopped") && r.at >= resumed).collect();
    assert!(from_stopped.is_empty(), "the resumed instance called the sink: {from_stopped:?}\n{}", log_tails(logs));
    let before_stop = log.iter().filter(|r| r.via.as_deref() == Some("stopped") && r.at < resumed).count();
    assert_settled(&log, &storm, &brokers, GROUP, PARTITIONS, &ends);
    eprintln!(
        "stall: {} events, SIGSTOP past the 3 s session timeout with opens in retry, {} incidents created, {} calls from the resumed instance ({before_stop} sent before the stop, {disowned} actions disowned, partition released {:.1} s after SIGCONT), {} open calls, peak RSS {:.0}/{:.0} MiB",
        storm.firing.len() + storm.recovery.len(),
        keys.len(),
        from_stopped.len(),
        released.as_secs_f64(),
        log.iter().filter(|r| r.kind == ActionKind::Open).count(),
        peak.0,
        peak.1
    );
}
