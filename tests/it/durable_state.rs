//! The correlation state outlives the process: it is checkpointed to the
//! `triaged-state` changelog, every action is in a checkpoint before it is
//! sent, and input offsets are stored only by checkpoints. Seen from
//! outside, with the `triaged` binary on the librdkafka mock cluster and
//! SIGKILLed between the steps, that means:
//!
//! 1. An alert's firing and its resolve on two partitions of `events` leave
//!    nothing open, whichever arrives first and with a restart between
//!    them: (a) firing first, opened at the ITSM, SIGKILL, resolve after the
//!    restart: one open and one resolve, nothing opened again; (b) the
//!    resolve first (its event time 10 s after the firing's), SIGKILL once a
//!    checkpoint covers it, the earlier firing after the restart: the
//!    resolve, kept through the restart, must clear the late firing, so
//!    nothing is left open at the ITSM nor in `/incidents` (nothing opened
//!    at all is the goal; opened and then resolved is let through, and the
//!    summary line says which happened).
//! 2. An incident that stays open does not make restarts read more: one
//!    firing alert that never resolves, and each round a few messages on
//!    every partition, ten rounds each ending in a SIGKILL. The committed
//!    offsets move past the open incident's first message every round, each
//!    restart reads again only what came after the committed offset (at
//!    most the last messages of its own round, never more as rounds add
//!    up), and the ITSM gets the incident's open exactly once.
//!
//! The committed offset trails a checkpoint by up to the commit interval,
//! so each round of 2 lets it catch up with the round's first messages, then
//! produces one more message per partition and kills the daemon as soon as
//! a checkpoint covers those: what the restart reads again is at most them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::mocking::MockCluster;
use rdkafka::Offset;
use serde_json::{json, Value};

use triaged_testkit::mimic::{Exchange, Itsm, Meaning, Mimic, RecordState};

use crate::support::process::{committed, free_port, log_tails, produce_to, write_config_with, Daemon, Extra, LogDir};

const PARTITIONS: i32 = 3;
const HANDLED: &str = "triaged_core_messages_handled_total";
/// Bound of every step the tests wait for.
const WAIT: Duration = Duration::from_secs(40);
/// `correlation.group_wait` in the tests' config.
const GROUP_WAIT: Duration = Duration::from_secs(1);
/// `correlation.resolve_hold_down` in the tests' config.
const HOLD_DOWN: Duration = Duration::from_secs(1);
/// `correlation.reopen_window` in the config `write_config_with` writes.
const REOPEN_WINDOW: Duration = Duration::from_secs(2);

/// One alert of a test: its own host (no CMDB CI) and check.
#[derive(Clone, Copy)]
struct Alert {
    host: &'static str,
    check: &'static str,
}

impl Alert {
    /// The alert as a native-format message, `firing` or resolved, of event time `time`.
    fn message(self, firing: bool, severity: &str, time: DateTime<Utc>) -> (String, Vec<u8>) {
        message(self.host, self.check, firing, severity, time)
    }

    /// Whether `x` is about this alert's incident (the incident title starts with the check).
    fn titles(self, x: &Exchange) -> bool {
        x.title.as_deref().is_some_and(|t| t.starts_with(&format!("{} on ", self.check)))
    }

    fn is_open(self, x: &Exchange) -> bool {
        x.meaning == Meaning::Open && self.titles(x)
    }
}

/// A native-format message (`time` given, so every event time is explicit).
fn message(host: &str, check: &str, firing: bool, severity: &str, time: DateTime<Utc>) -> (String, Vec<u8>) {
    let status = if firing { "firing" } else { "resolved" };
    let event = json!({
        "source": "durable-state",
        "source_id": format!("{host}-{status}"),
        "ci": { "host": host },
        "check": check,
        "severity": severity,
        "status": status,
        "summary": format!("{check} is {status}"),
        "time": time.to_rfc3339(),
    });
    (host.to_owned(), serde_json::to_vec(&event).unwrap())
}

/// One test's cluster, ITSM and the daemon of the moment.
/// Fields drop in order: the daemon goes before the ITSM, the cluster and its logs.
struct Harness {
    daemon: Option<Daemon>,
    mimic: Mimic,
    logs: PathBuf,
    brokers: String,
    group: String,
    config: PathBuf,
    port: u16,
    runs: u32,
    /// Per partition of `events`, the offset after the last message produced.
    ends: BTreeMap<i32, i64>,
    _cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    _log_dir: LogDir,
}

impl Harness {
    async fn new(group: &str) -> Harness {
        let log_dir = LogDir::new();
        let logs = log_dir.path().to_owned();
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("events", PARTITIONS, 1).unwrap();
        cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
        cluster.create_topic("triaged-state", 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let mimic = Mimic::start(Itsm::Generic).await.unwrap();
        let port = free_port();
        let extra = Extra { group_wait: Some("1s"), resolve_hold_down: Some("1s"), ..Extra::default() };
        // The mock cluster makes a member that joins after a crash wait for
        // the session timeout: 3 s keeps each restart short.
        let config = write_config_with(&logs, &brokers, group, 3000, &mimic.url(), port, &extra);
        Harness {
            _cluster: cluster,
            _log_dir: log_dir,
            logs,
            brokers,
            group: group.to_owned(),
            config,
            port,
            mimic,
            daemon: None,
            runs: 0,
            ends: BTreeMap::new(),
        }
    }

    fn start(&mut self) {
        self.runs += 1;
        self.daemon = Some(Daemon::start(&self.config, &self.logs, self.runs, self.port));
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("a daemon runs")
    }

    fn sigkill(&mut self) {
        self.daemon.take().expect("a daemon runs").sigkill();
    }

    /// A step the test needs did not happen: stop here.
    fn fail(&self, what: &str) -> ! {
        let log: String = self.mimic.log().iter().map(|x| format!("  {x}\n")).collect();
        panic!("{what}\nITSM log:\n{log}{}", log_tails(&self.logs));
    }

    async fn produce(&mut self, partition: i32, messages: &[(String, Vec<u8>)]) {
        produce_to(&self.brokers, partition, messages, &mut self.ends).await;
    }

    async fn metric(&self, name: &str) -> f64 {
        self.daemon().metric(name).await.unwrap_or(0.0)
    }

    /// Waits until a checkpoint of the running daemon covers every message
    /// produced to `partitions`: its depended offset reached their end.
    async fn wait_checkpointed(&self, partitions: impl IntoIterator<Item = i32>) {
        for p in partitions {
            let end = self.ends.get(&p).copied().unwrap_or(0);
            let name = format!("triaged_state_depended_offset{{topic=\"events\",partition=\"{p}\"}}");
            self.daemon().wait_metric(&name, |v| v >= end as f64, WAIT).await;
        }
    }

    /// What the running daemon decided, per decision kind it took (`new`, `cleared`, ...).
    async fn decided(&self) -> BTreeMap<&'static str, f64> {
        const KINDS: [&str; 7] = ["dropped", "suppressed", "new", "joined", "deduplicated", "cleared", "resolve_unknown"];
        let mut out = BTreeMap::new();
        for kind in KINDS {
            let n = self.metric(&format!("triaged_decisions_total{{decision=\"{kind}\"}}")).await;
            if n > 0.0 {
                out.insert(kind, n);
            }
        }
        out
    }

    /// The incidents the daemon's `/incidents` lists; `None` while it does not answer.
    async fn listed(&self) -> Option<Vec<Value>> {
        let url = format!("http://127.0.0.1:{}/incidents", self.port);
        reqwest::get(&url).await.ok()?.json().await.ok()
    }

    /// Keys of the listed incidents of `alert`.
    async fn listed_of(&self, alert: Alert) -> Option<Vec<String>> {
        let prefix = format!("{} on ", alert.check);
        let list = self.listed().await?;
        Some(
            list.iter()
                .filter(|i| i["title"].as_str().is_some_and(|t| t.starts_with(&prefix)))
                .filter_map(|i| i["key"].as_str().map(str::to_owned))
                .collect(),
        )
    }

    /// Polls `check` every 50 ms until it holds; `false` after `within`.
    async fn poll(&self, within: Duration, mut check: impl AsyncFnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if check(self).await {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The group's committed offsets on `events` (0 where none is committed:
    /// the daemon starts there).
    fn committed(&self) -> BTreeMap<i32, i64> {
        // A blocking broker round trip: keep the mimic's tasks running meanwhile.
        let at = tokio::task::block_in_place(|| committed(&self.brokers, &self.group, "events", PARTITIONS));
        at.into_iter().map(|(p, o)| (p, if let Offset::Offset(o) = o { o } else { 0 })).collect()
    }

    fn committed_to_end(&self) -> bool {
        let at = self.committed();
        self.ends.iter().all(|(p, end)| at.get(p) == Some(end))
    }

    /// Keys of the incidents of `alert` the ITSM heard of.
    fn keys_of(&self, alert: Alert) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for x in self.mimic.log().iter().filter(|x| alert.titles(x)) {
            if let Some(k) = &x.key {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        keys
    }

    /// What the ITSM acknowledged for `key`, in order.
    fn sequence(&self, key: &str) -> String {
        let names: Vec<&str> = self.mimic.actions(key).iter().map(|m| m.as_str()).collect();
        names.join(", ")
    }

    fn count(&self, key: &str, meaning: Meaning) -> usize {
        self.mimic.actions(key).iter().filter(|m| **m == meaning).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_and_its_resolve_on_two_partitions_leave_nothing_open_across_a_restart() {
    let mut h = Harness::new("triaged-durable-two-partitions").await;
    let mut failures: Vec<String> = Vec::new();
    let mut summary: Vec<String> = Vec::new();
    h.start();

    // (a) Firing on partition 0, opened; SIGKILL; the resolve on partition 1.
    let a = Alert { host: "durable-firing-first", check: "Durable firing first" };
    let fired_at = Utc::now();
    h.produce(0, &[a.message(true, "major", fired_at)]).await;
    let open = h.mimic.answered(WAIT, |x| a.is_open(x)).await.unwrap_or_else(|| h.fail("a: the open never reached the ITSM"));
    let key = open.key.clone().expect("an open names its incident");
    h.sigkill();
    h.start();
    let resolved_at = Utc::now().max(fired_at + chrono::Duration::seconds(1));
    h.produce(1, &[a.message(false, "major", resolved_at)]).await;
    if h.mimic.answered(WAIT, |x| x.is(Meaning::Resolve, &key)).await.is_none() {
        failures.push(format!("a: {key} not resolved at the ITSM within {WAIT:?} of its resolve"));
    }
    // Settled: not listed, nothing about it for longer than the reopen
    // window (nothing opened again), every offset committed.
    let quiet_for = REOPEN_WINDOW + Duration::from_secs(1);
    let mut state = String::new();
    let settled = h
        .poll(Duration::from_secs(60), async |h| {
            let listed = h.listed_of(a).await;
            let last = h.mimic.log().iter().filter(|x| x.key.as_deref() == Some(key.as_str())).filter_map(|x| x.answered_at).max();
            let quiet = last.is_none_or(|t| h.mimic.elapsed() >= t + quiet_for);
            let committed = h.committed_to_end();
            state = format!("listed {listed:?}, quiet {quiet}, committed to the end {committed}");
            listed.is_some_and(|l| l.is_empty()) && quiet && committed
        })
        .await;
    if !settled {
        failures.push(format!("a: did not settle within 60s ({state})"));
    }
    let (opens, resolves, reopens) = (h.count(&key, Meaning::Open), h.count(&key, Meaning::Resolve), h.count(&key, Meaning::Reopen));
    let held = h.mimic.state(&key);
    if (opens, resolves, reopens) != (1, 1, 0) || held != Some(RecordState::Resolved) {
        failures.push(format!("a: {key} acknowledged {} (expected one open, one resolve); the ITSM holds it {held:?}", h.sequence(&key)));
    }
    let others: Vec<String> = h.keys_of(a).into_iter().filter(|k| *k != key).collect();
    if !others.is_empty() {
        failures.push(format!("a: other incidents opened for the alert: {others:?}"));
    }
    summary.push(format!("[a firing first] {key}: {}", h.sequence(&key)));

    // (b) The resolve on partition 1 first, 10 s later in event time than
    // the firing; SIGKILL once a checkpoint covers it; then the firing on
    // partition 0. Both event times lie in the past, within a minute.
    let b = Alert { host: "durable-resolve-first", check: "Durable resolve first" };
    let fired_at = Utc::now() - chrono::Duration::seconds(15);
    let before = h.metric(HANDLED).await;
    let decided_before = h.decided().await;
    h.produce(1, &[b.message(false, "major", fired_at + chrono::Duration::seconds(10))]).await;
    h.daemon().wait_metric(HANDLED, |v| v > before, WAIT).await;
    h.wait_checkpointed([1]).await;
    let resolve_decided: Vec<&str> =
        h.decided().await.into_iter().filter(|(k, n)| decided_before.get(k) != Some(n)).map(|(k, _)| k).collect();
    h.sigkill();
    h.start();
    h.produce(0, &[b.message(true, "major", fired_at)]).await;
    h.wait_checkpointed([0]).await;
    // The only event this daemon decides (what it read again is in the restored state).
    let firing_decided: Vec<&str> = h.decided().await.into_keys().collect();
    // An open would come a group wait after the firing: watch past that.
    let watch = GROUP_WAIT + HOLD_DOWN + Duration::from_secs(3);
    let opened = h.mimic.wait_for(watch, |m| m.log().into_iter().find(|x| b.is_open(x))).await;
    let outcome = match opened.and_then(|x| x.key) {
        None => "nothing opened".to_owned(),
        Some(key) => {
            let within = Duration::from_secs(20);
            let resolved = h
                .poll(within, async |h| {
                    h.mimic.state(&key) == Some(RecordState::Resolved) && h.listed_of(b).await.is_some_and(|l| l.is_empty())
                })
                .await;
            if resolved {
                format!("opened and resolved ({key}: {})", h.sequence(&key))
            } else {
                let listed = h.listed_of(b).await;
                failures.push(format!(
                    "b: {key} opened and left open: the ITSM holds it {:?} ({}), the daemon lists {listed:?} \
                     {within:?} later; the resolve that came before its firing was lost",
                    h.mimic.state(&key),
                    h.sequence(&key)
                ));
                format!("opened and left open ({key}: {})", h.sequence(&key))
            }
        }
    };
    for key in h.keys_of(b) {
        if h.mimic.state(&key) == Some(RecordState::Open) && !failures.iter().any(|f| f.contains(&key)) {
            failures.push(format!("b: the ITSM holds {key} open ({})", h.sequence(&key)));
        }
    }
    match h.listed_of(b).await {
        Some(l) if l.is_empty() => {}
        listed => {
            if !failures.iter().any(|f| f.starts_with("b:")) {
                failures.push(format!("b: the daemon lists {listed:?}"));
            }
        }
    }
    summary.push(format!(
        "[b resolve first] {outcome} (the resolve decided {}, the firing after the restart {})",
        resolve_decided.join("+"),
        firing_decided.join("+")
    ));

    h.daemon.take().expect("a daemon runs").sigterm(Duration::from_secs(15));
    eprintln!("durable state, firing and resolve on two partitions: {}", summary.join("; "));
    if !failures.is_empty() {
        let log: String = h.mimic.log().iter().map(|x| format!("  {x}\n")).collect();
        panic!("{} failure(s)\n- {}\nITSM log:\n{log}{}", failures.len(), failures.join("\n- "), log_tails(&h.logs));
    }
}

/// What one round of the never-resolving test saw.
struct Round {
    /// Messages produced in the round.
    produced: usize,
    /// The committed offsets once the round's daemon was SIGKILLed.
    committed: BTreeMap<i32, i64>,
    /// Messages produced before the kill and not committed: where the
    /// restart starts reading.
    uncommitted: i64,
    /// Messages the next daemon read again (handled less the next round's new ones).
    reread: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_never_resolves_does_not_make_restarts_read_more() {
    const ROUNDS: usize = 10;
    /// Messages per partition a round lets the commit catch up with.
    const SETTLED: usize = 2;
    /// Messages per partition a round produces after that, just before its kill.
    const LAST: usize = 1;
    let mut h = Harness::new("triaged-durable-never-resolves").await;
    let stuck = Alert { host: "durable-never-resolves", check: "Durable never resolves" };
    // Informational, on a host of each partition: dropped by the shipped
    // rules, so they hold no state of their own.
    let noise = |p: i32| message(&format!("durable-noise-{p}"), "Durable noise", true, "info", Utc::now());
    let mut rounds: Vec<Round> = Vec::new();
    let mut key: Option<String> = None;
    let mut firing_offset = 0;
    let mut failures: Vec<String> = Vec::new();
    let mut commit_stuck = false;
    h.start();
    // Round ROUNDS + 1 only measures what the last restart read again.
    for r in 1..=ROUNDS + 1 {
        if r > 1 {
            h.start();
        }
        let mut produced = 0;
        if r == 1 {
            h.produce(0, &[stuck.message(true, "major", Utc::now())]).await;
            firing_offset = h.ends[&0] - 1;
            produced += 1;
        }
        for p in 0..PARTITIONS {
            let batch: Vec<_> = (0..SETTLED).map(|_| noise(p)).collect();
            h.produce(p, &batch).await;
            produced += batch.len();
        }
        // Caught up: a checkpoint covers everything produced so far, so the
        // handled count is what the daemon read again plus this round's.
        h.wait_checkpointed(0..PARTITIONS).await;
        let handled = h.metric(HANDLED).await as i64;
        let measured = rounds.len();
        if let Some(last) = rounds.last_mut() {
            let reread = handled - produced as i64;
            last.reread = Some(reread);
            eprintln!("round {}: re-read {reread} (of {} not committed), committed {:?}", measured, last.uncommitted, last.committed);
        }
        if r == 1 {
            let open = h.mimic.answered(WAIT, |x| stuck.is_open(x)).await.unwrap_or_else(|| h.fail("the open never reached the ITSM"));
            let k = open.key.clone().expect("an open names its incident");
            let listed = h.poll(WAIT, async |h| h.listed_of(stuck).await.is_some_and(|l| l.contains(&k))).await;
            if !listed {
                h.fail(&format!("{k} not listed open by the daemon"));
            }
            key = Some(k);
        }
        if r == ROUNDS + 1 {
            break;
        }
        // The commit catches up with the checkpoint, past the open
        // incident's first message. If it does not, that is a failure, and
        // the later rounds go on without waiting for it, to show what the
        // restarts then read again.
        let within = Duration::from_secs(20);
        if !commit_stuck && !h.poll(within, async |h| h.committed_to_end()).await {
            failures.push(format!(
                "round {r}: committed offsets {:?} did not reach the end {:?} within {within:?} \
                 (the open incident's firing is at partition 0 offset {firing_offset})",
                h.committed(),
                h.ends
            ));
            commit_stuck = true;
        }
        for p in 0..PARTITIONS {
            let batch: Vec<_> = (0..LAST).map(|_| noise(p)).collect();
            h.produce(p, &batch).await;
            produced += batch.len();
        }
        h.wait_checkpointed(0..PARTITIONS).await;
        h.sigkill();
        let committed = h.committed();
        let uncommitted = h.ends.iter().map(|(p, end)| end - committed.get(p).copied().unwrap_or(0)).sum();
        rounds.push(Round { produced, committed, uncommitted, reread: None });
    }
    let key = key.expect("the incident opened");
    // `/incidents` is refreshed every 2 s: give the last daemon that long to list it.
    let listed_open = async |h: &Harness| h.listed_of(stuck).await.is_some_and(|l| l.as_slice() == std::slice::from_ref(&key));
    h.poll(Duration::from_secs(10), listed_open).await;
    let listed = h.listed_of(stuck).await;
    let held = h.mimic.state(&key);
    h.daemon.take().expect("a daemon runs").sigterm(Duration::from_secs(15));

    let mut lines: Vec<String> = Vec::new();
    let mut before: Option<&BTreeMap<i32, i64>> = None;
    for (i, round) in rounds.iter().enumerate() {
        let r = i + 1;
        let reread = round.reread.expect("measured by the next round");
        lines.push(format!("{r}: {reread}"));
        // Reading starts at the committed offset (or later, if a commit
        // landed after it was read here), never before it.
        if reread > round.uncommitted {
            failures.push(format!("round {r}: re-read {reread} messages, only {} were not committed", round.uncommitted));
        }
        let bound = (LAST * PARTITIONS as usize) as i64;
        if reread < 0 || reread > bound || reread > round.produced as i64 {
            failures.push(format!("round {r}: re-read {reread} messages, at most {bound} (the round's last messages) expected"));
        }
        if round.committed.get(&0).is_none_or(|&o| o <= firing_offset) {
            failures.push(format!(
                "round {r}: partition 0 committed at {:?}, not past the open incident's firing ({firing_offset})",
                round.committed.get(&0)
            ));
        }
        if let Some(prev) = before {
            for p in 0..PARTITIONS {
                if round.committed.get(&p) <= prev.get(&p) {
                    failures.push(format!(
                        "round {r}: partition {p} committed at {:?}, not past {:?}",
                        round.committed.get(&p),
                        prev.get(&p)
                    ));
                }
            }
        }
        before = Some(&round.committed);
    }
    let (opens, others) =
        (h.count(&key, Meaning::Open), h.mimic.actions(&key).iter().filter(|m| **m != Meaning::Open && **m != Meaning::Update).count());
    if opens != 1 || others != 0 {
        failures.push(format!("{key} acknowledged {} (expected one open and nothing closing it)", h.sequence(&key)));
    }
    let extra_keys: Vec<String> = h.keys_of(stuck).into_iter().filter(|k| *k != key).collect();
    if !extra_keys.is_empty() {
        failures.push(format!("other incidents opened for the alert: {extra_keys:?}"));
    }
    if held != Some(RecordState::Open) {
        failures.push(format!("the ITSM holds {key} {held:?}, expected open"));
    }
    if listed.as_ref().is_none_or(|l| l.as_slice() != std::slice::from_ref(&key)) {
        failures.push(format!("the last daemon lists {listed:?}, expected {key} open"));
    }
    eprintln!(
        "durable state, an incident open over {ROUNDS} restarts ({key}: {}); messages re-read per round: {}; committed at the end {:?}",
        h.sequence(&key),
        lines.join(", "),
        rounds.last().map(|r| &r.committed)
    );
    if !failures.is_empty() {
        let log: String = h.mimic.log().iter().map(|x| format!("  {x}\n")).collect();
        panic!("{} failure(s)\n- {}\nITSM log:\n{log}{}", failures.len(), failures.join("\n- "), log_tails(&h.logs));
    }
}
