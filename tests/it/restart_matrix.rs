//! A restart never re-sends what the ITSM acknowledged. For each sink
//! profile, the `triaged` binary drives one incident per kill point from
//! firing to resolved on the librdkafka mock cluster, and is stopped at that
//! point of the delivery, then started again:
//!
//! 1. SIGKILL while the ITSM holds the open (received, not answered);
//! 2. SIGKILL right after the open's 2xx reached the daemon;
//! 3. SIGKILL while the ITSM holds the resolve;
//! 4. SIGKILL right after the resolve's 2xx reached the daemon;
//! 5. SIGKILL once a state checkpoint followed the resolve's 2xx;
//! 6. SIGTERM after the resolve's 2xx.
//!
//! Once the restarted daemon has settled, the ITSM must have acknowledged
//! one open for the key (one generic `open`, one ServiceNow record created,
//! one PagerDuty page), one resolve (at least one for PagerDuty, which
//! cannot be looked up) and nothing else after it, and hold the incident
//! resolved; the daemon must list nothing open. A 2xx has "reached the
//! daemon" once its `triaged_incident_actions_total` counts the action, so
//! the kill lands after the acknowledgement and, most often, before the
//! checkpoint that records it. What the daemon had not recorded it sends
//! again: the generic and ServiceNow profiles look it up first, PagerDuty
//! gets the trigger again while the incident is open (one page still). A
//! held request is abandoned with its daemon and never applied at the ITSM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::Offset;
use serde_json::{json, Value};

use triaged_testkit::mimic::{Exchange, Itsm, Meaning, Mimic, RecordState};

use crate::support::process::{committed, free_port, log_tails, produce, write_config_with, Daemon, Extra, LogDir, Sink};

const PARTITIONS: i32 = 4;
const CHECKPOINTS: &str = "triaged_state_checkpoints_total";
/// Bound of every step the test waits for.
const WAIT: Duration = Duration::from_secs(40);
/// `correlation.reopen_window` in the config `write_config_with` writes.
const REOPEN_WINDOW: Duration = Duration::from_secs(2);
const ROUTING_KEY_ENV: &str = "RESTART_MATRIX_ROUTING_KEY";
const ROUTING_KEY: &str = "restart-matrix-integration-key";
const TOKEN_ENV: &str = "RESTART_MATRIX_SN_TOKEN";
const TOKEN: &str = "restart-matrix-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_restarts_never_resend_what_the_itsm_acknowledged() {
    restart_matrix(Itsm::Generic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicenow_restarts_never_resend_what_the_itsm_acknowledged() {
    restart_matrix(Itsm::ServiceNow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_restarts_never_resend_what_the_itsm_acknowledged() {
    restart_matrix(Itsm::PagerDuty).await;
}

/// Where the daemon is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillPoint {
    OpenHeld,
    OpenAcknowledged,
    ResolveHeld,
    ResolveAcknowledged,
    ResolveCheckpointed,
    TermAfterResolve,
}

impl KillPoint {
    const ALL: [KillPoint; 6] = [
        KillPoint::OpenHeld,
        KillPoint::OpenAcknowledged,
        KillPoint::ResolveHeld,
        KillPoint::ResolveAcknowledged,
        KillPoint::ResolveCheckpointed,
        KillPoint::TermAfterResolve,
    ];

    fn name(self) -> &'static str {
        match self {
            KillPoint::OpenHeld => "1 kill, open held",
            KillPoint::OpenAcknowledged => "2 kill, open acknowledged",
            KillPoint::ResolveHeld => "3 kill, resolve held",
            KillPoint::ResolveAcknowledged => "4 kill, resolve acknowledged",
            KillPoint::ResolveCheckpointed => "5 kill, resolve checkpointed",
            KillPoint::TermAfterResolve => "6 term, resolve acknowledged",
        }
    }

    /// The alert's check, which the incident's title starts with; one per
    /// kill point, so each incident stands alone.
    fn check(self) -> String {
        format!("Restart matrix {}", self.name().replace([' ', ','], "-").replace("--", "-"))
    }

    fn host(self) -> String {
        format!("restart-matrix-{}", self.name().split(' ').next().unwrap())
    }
}

/// What the ITSM acknowledged for one incident.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    point: KillPoint,
    key: String,
    /// Generic `open`s and PagerDuty triggers answered 2xx, ServiceNow records created.
    opens: usize,
    resolves: usize,
    pages: usize,
    state: Option<RecordState>,
    actions: Vec<Meaning>,
}

impl Row {
    fn of(mimic: &Mimic, point: KillPoint, key: &str) -> Row {
        let actions = mimic.actions(key);
        let opens = match mimic.itsm() {
            Itsm::ServiceNow => mimic.created(key),
            itsm => actions.iter().filter(|m| **m == itsm.opening()).count(),
        };
        Row {
            point,
            key: key.to_owned(),
            opens,
            resolves: actions.iter().filter(|m| **m == Meaning::Resolve).count(),
            pages: mimic.pages_for(key),
            state: mimic.state(key),
            actions,
        }
    }

    /// What is wrong with it, if anything.
    fn faults(&self, itsm: Itsm) -> Vec<String> {
        let mut out = Vec::new();
        // PagerDuty cannot be looked up: a trigger whose answer was not yet
        // recorded when the daemon died is sent again, and PagerDuty folds a
        // trigger on an open dedup_key into that incident (no new page). So
        // there a repeated trigger is allowed before the resolve, and the
        // pages must be one.
        let repeat_ok = itsm == Itsm::PagerDuty && self.opens > 1 && self.pages == 1;
        if self.opens != 1 && !repeat_ok {
            out.push(format!("{} {}s acknowledged, expected one", self.opens, itsm.opening().as_str()));
        }
        if itsm == Itsm::PagerDuty && self.pages != 1 {
            out.push(format!("{} PagerDuty incidents (pages), expected one", self.pages));
        }
        // Once the ITSM acknowledged the resolve, the incident is done
        // there: at most a repeat resolve may follow.
        if let Some(first) = self.actions.iter().position(|m| *m == Meaning::Resolve) {
            let after: Vec<&str> = self.actions[first..].iter().filter(|m| **m != Meaning::Resolve).map(|m| m.as_str()).collect();
            if !after.is_empty() {
                out.push(format!("{} after an acknowledged resolve", after.join(", ")));
            }
        }
        if self.state != Some(RecordState::Resolved) {
            out.push(format!("the ITSM holds it as {:?}, expected resolved", self.state));
        }
        let resolves_ok = match itsm {
            // PagerDuty cannot be looked up: a repeat resolve is how the
            // daemon makes sure, and it is harmless there.
            Itsm::PagerDuty => self.resolves >= 1,
            Itsm::Generic | Itsm::ServiceNow => self.resolves == 1,
        };
        if !resolves_ok {
            out.push(format!("{} resolves acknowledged", self.resolves));
        }
        out.into_iter().map(|f| format!("{}: {f} (acknowledged: {})", self.point.name(), self.sequence())).collect()
    }

    fn sequence(&self) -> String {
        let names: Vec<&str> = self.actions.iter().map(|m| m.as_str()).collect();
        names.join(", ")
    }
}

/// One profile's run: the cluster, the ITSM and the daemon of the moment.
struct Matrix<'a> {
    itsm: Itsm,
    brokers: String,
    group: String,
    logs: &'a Path,
    config: PathBuf,
    port: u16,
    mimic: Mimic,
    daemon: Option<Daemon>,
    runs: u32,
    /// Per partition of `events`, the offset after the last message produced.
    ends: BTreeMap<i32, i64>,
    /// What came out wrong; reported together at the end.
    failures: Vec<String>,
}

impl Matrix<'_> {
    fn start(&mut self) {
        self.runs += 1;
        let env = [(ROUTING_KEY_ENV, ROUTING_KEY), (TOKEN_ENV, TOKEN)];
        self.daemon = Some(Daemon::start_with_env(&self.config, self.logs, self.runs, self.port, &env));
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("a daemon runs")
    }

    /// Stops the daemon (SIGKILL, or SIGTERM and a clean exit) and starts the next.
    fn restart(&mut self, term: bool) {
        let d = self.daemon.take().expect("a daemon runs");
        if term {
            d.sigterm(Duration::from_secs(15));
        } else {
            d.sigkill();
        }
        // The sender of a held request is gone: it is never answered.
        self.mimic.abandon();
        self.start();
    }

    /// A step the test needs did not happen: stop here.
    fn fail(&self, what: &str) -> ! {
        let log: String = self.mimic.log().iter().map(|x| format!("  {x}\n")).collect();
        panic!("{} {what}\nITSM log:\n{log}{}", self.itsm.profile(), log_tails(self.logs));
    }

    async fn produce(&mut self, point: KillPoint, firing: bool) {
        let status = if firing { "firing" } else { "resolved" };
        let event = json!({
            "source": "restart-matrix",
            "source_id": format!("{}-{status}", point.host()),
            "ci": { "host": point.host() },
            "check": point.check(),
            "severity": "major",
            "status": status,
            "summary": format!("{} is {status}", point.check()),
            "time": chrono::Utc::now().to_rfc3339(),
        });
        produce(&self.brokers, &[(point.host(), serde_json::to_vec(&event).unwrap())], &mut self.ends).await;
    }

    /// Actions of `kind` the running daemon counted as acknowledged by the sink.
    async fn acknowledged(&self, kind: &str) -> f64 {
        self.daemon().metric(&format!("triaged_incident_actions_total{{action=\"{kind}\"}}")).await.unwrap_or(0.0)
    }

    /// Waits until the daemon counts one more acknowledged action of `kind` than `before`.
    async fn wait_acknowledged(&self, kind: &str, before: f64) {
        let name = format!("triaged_incident_actions_total{{action=\"{kind}\"}}");
        self.daemon().wait_metric(&name, |v| v > before, WAIT).await;
    }

    /// Keys the daemon's `/incidents` lists; `None` while it does not answer.
    async fn listed(&self) -> Option<Vec<String>> {
        let url = format!("http://127.0.0.1:{}/incidents", self.port);
        let list: Vec<Value> = reqwest::get(&url).await.ok()?.json().await.ok()?;
        Some(list.iter().filter_map(|i| i["key"].as_str().map(str::to_owned)).collect())
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

    fn committed_to_end(&self) -> bool {
        // A blocking broker round trip: keep the mimic's tasks running meanwhile.
        let at = tokio::task::block_in_place(|| committed(&self.brokers, &self.group, "events", PARTITIONS));
        self.ends.iter().all(|(p, end)| at[p] == Offset::Offset(*end))
    }

    /// Drives one incident through `point` and returns its key.
    async fn drive(&mut self, point: KillPoint) -> String {
        let opening = self.itsm.opening();
        let title = format!("{} on ", point.check());
        let is_open = move |x: &Exchange| x.meaning == opening && x.title.as_deref().is_some_and(|t| t.starts_with(&title));

        // Firing, group wait, open.
        let opens_before = self.acknowledged("open").await;
        if point == KillPoint::OpenHeld {
            self.mimic.hold(is_open.clone());
        }
        self.produce(point, true).await;
        let open = if point == KillPoint::OpenHeld {
            let held = self.mimic.held(WAIT).await.unwrap_or_else(|| self.fail("the open never reached the ITSM"));
            self.restart(false);
            held
        } else {
            let open = self.mimic.answered(WAIT, &is_open).await.unwrap_or_else(|| self.fail("the open was never acknowledged"));
            if point == KillPoint::OpenAcknowledged {
                self.wait_acknowledged("open", opens_before).await;
                self.restart(false);
            }
            open
        };
        let key = open.key.clone().expect("an open names its incident");
        if point == KillPoint::OpenHeld && self.mimic.answered(WAIT, |x| x.is(opening, &key)).await.is_none() {
            self.failures.push(format!("{}: the restarted daemon did not open {key} within {WAIT:?}", point.name()));
        }
        // The recovery is sent once the daemon holds the incident open again.
        if !self.poll(WAIT, async |m| m.listed().await.is_some_and(|l| l.contains(&key))).await {
            self.failures.push(format!("{}: {key} not listed open by the daemon within {WAIT:?}", point.name()));
        }

        // Recovery, hold-down, resolve.
        let resolves_before = self.acknowledged("resolve").await;
        if point == KillPoint::ResolveHeld {
            let key = key.clone();
            self.mimic.hold(move |x| x.is(Meaning::Resolve, &key));
        }
        self.produce(point, false).await;
        match point {
            KillPoint::OpenHeld | KillPoint::OpenAcknowledged => {}
            KillPoint::ResolveHeld => {
                self.mimic.held(WAIT).await.unwrap_or_else(|| self.fail("the resolve never reached the ITSM"));
                self.restart(false);
            }
            KillPoint::ResolveAcknowledged | KillPoint::ResolveCheckpointed | KillPoint::TermAfterResolve => {
                self.mimic
                    .answered(WAIT, |x| x.is(Meaning::Resolve, &key))
                    .await
                    .unwrap_or_else(|| self.fail("the resolve was never acknowledged"));
                self.wait_acknowledged("resolve", resolves_before).await;
                if point == KillPoint::ResolveCheckpointed {
                    let before = self.daemon().metric(CHECKPOINTS).await.unwrap_or(0.0);
                    let within = Duration::from_secs(20);
                    if !self.poll(within, async |m| m.daemon().metric(CHECKPOINTS).await.is_some_and(|v| v > before)).await {
                        self.failures.push(format!("{}: {CHECKPOINTS} did not grow within {within:?} of the resolve", point.name()));
                    }
                }
                self.restart(point == KillPoint::TermAfterResolve);
            }
        }
        self.settle(point, &key).await;
        key
    }

    /// Waits until the daemon is done with `key`: not listed open, nothing
    /// sent about it for longer than the reopen window, every offset
    /// committed.
    async fn settle(&mut self, point: KillPoint, key: &str) {
        let quiet_for = REOPEN_WINDOW + Duration::from_secs(1);
        let mut state = String::new();
        let settled = self
            .poll(Duration::from_secs(60), async |m| {
                let listed = m.listed().await.map(|l| l.iter().any(|k| k == key));
                let last =
                    m.mimic.log().iter().filter(|x| x.key.as_deref() == Some(key)).filter_map(|x| x.answered_at.or(Some(x.at))).max();
                let quiet = last.is_none_or(|t| m.mimic.elapsed() >= t + quiet_for);
                let committed = m.committed_to_end();
                state = format!("listed {listed:?}, quiet {quiet}, committed to the end {committed}");
                listed == Some(false) && quiet && committed
            })
            .await;
        if !settled {
            self.failures.push(format!("{}: did not settle within 60s ({state})", point.name()));
        }
    }
}

async fn restart_matrix(itsm: Itsm) {
    let log_dir = LogDir::new();
    let logs = log_dir.path();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("events", PARTITIONS, 1).unwrap();
    cluster.create_topic("triaged-dead-letter", 1, 1).unwrap();
    cluster.create_topic("triaged-state", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let group = format!("triaged-restart-matrix-{}", itsm.profile());
    let mimic = Mimic::start(itsm).await.unwrap();
    let sink = match itsm {
        Itsm::Generic => Sink { profile: "generic", routing_key_env: None, auth: None },
        Itsm::ServiceNow => {
            mimic.expect_authorization(&format!("Bearer {TOKEN}"));
            Sink {
                profile: "servicenow",
                routing_key_env: None,
                auth: Some(format!("{{ kind = \"bearer\", token = {{ env = \"{TOKEN_ENV}\" }} }}")),
            }
        }
        Itsm::PagerDuty => {
            mimic.expect_routing_key(ROUTING_KEY);
            Sink { profile: "pagerduty", routing_key_env: Some(ROUTING_KEY_ENV), auth: None }
        }
    };
    let port = free_port();
    let extra =
        Extra { group_wait: Some("1s"), resolve_hold_down: Some("1s"), commit_interval: Some("5s"), sink: Some(sink), ..Extra::default() };
    // The mock cluster makes a member that joins after a crash wait for the
    // session timeout: 3 s keeps each restart short.
    let config = write_config_with(logs, &brokers, &group, 3000, &mimic.url(), port, &extra);
    let mut m =
        Matrix { itsm, brokers, group, logs, config, port, mimic, daemon: None, runs: 0, ends: BTreeMap::new(), failures: Vec::new() };
    m.start();

    let mut rows = Vec::new();
    for point in KillPoint::ALL {
        let key = m.drive(point).await;
        let row = Row::of(&m.mimic, point, &key);
        m.failures.extend(row.faults(itsm));
        rows.push(row);
    }

    // Later restarts must not have changed what an earlier incident got.
    let listed = m.listed().await;
    if listed.as_ref().is_none_or(|l| !l.is_empty()) {
        m.failures.push(format!("the daemon lists open incidents at the end: {listed:?}"));
    }
    m.daemon.take().expect("a daemon runs").sigterm(Duration::from_secs(15));
    for row in &rows {
        let now = Row::of(&m.mimic, row.point, &row.key);
        if &now != row {
            m.failures.push(format!("{}: changed after later restarts: {} -> {}", row.point.name(), row.sequence(), now.sequence()));
        }
    }

    let summary: Vec<String> = rows
        .iter()
        .map(|r| {
            let now = Row::of(&m.mimic, r.point, &r.key);
            let pages = if itsm == Itsm::PagerDuty { now.pages.to_string() } else { "-".into() };
            format!("[{}] opens {} resolves {} pages {pages}", r.point.name(), now.opens, now.resolves)
        })
        .collect();
    eprintln!("restart matrix, {}: {}", itsm.profile(), summary.join("; "));
    if !m.failures.is_empty() {
        let transcripts: String = rows.iter().map(|r| format!("{} ({}):\n{}", r.point.name(), r.key, m.mimic.transcript(&r.key))).collect();
        panic!(
            "{}: {} failure(s)\n- {}\nITSM requests per incident:\n{transcripts}{}",
            itsm.profile(),
            m.failures.len(),
            m.failures.join("\n- "),
            log_tails(logs)
        );
    }
    drop(cluster);
}
