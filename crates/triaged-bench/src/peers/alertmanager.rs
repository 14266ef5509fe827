//! The Alertmanager driver: starts `prometheus-alertmanager` on loopback with a
//! webhook receiver of our own, posts the storm in batches and counts the
//! notifications once it is quiet.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use tokio::process::Command;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use triaged::sink::error_chain;
use triaged_testkit::storm::{Alert, Storm};

use crate::pipeline::per_second;

use super::{find_binary, io_err, system_name, PeerError, PeerResult, Running};

/// Alerts per `POST /api/v2/alerts` (Prometheus' notifier `DefaultMaxBatchSize`).
pub const AM_BATCH: usize = 256;

/// Alertmanager's `group_interval` in the benchmark configuration.
pub const AM_GROUP_INTERVAL: Duration = Duration::from_secs(5);

/// How long Alertmanager may take to answer `/-/ready`.
pub(super) const AM_READY_WITHIN: Duration = Duration::from_secs(20);

/// Notifications have settled when none came for this long...
pub(super) const AM_QUIET: Duration = Duration::from_secs(AM_GROUP_INTERVAL.as_secs() + 2);

/// ...or this long after the last alert was accepted.
pub(super) const AM_SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Notifications received by the webhook so far.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seen {
    pub(super) notifications: u64,
    pub(super) firing: u64,
    pub(super) resolved: u64,
    pub(super) last: Option<Instant>,
}

/// An in-process webhook receiver on 127.0.0.1; stops when dropped.
pub(super) struct Webhook {
    addr: SocketAddr,
    seen: watch::Receiver<Seen>,
    stop: CancellationToken,
}

pub(super) async fn notified(State(seen): State<Arc<watch::Sender<Seen>>>, body: Bytes) -> StatusCode {
    let status = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["status"].as_str().map(str::to_owned));
    seen.send_modify(|s| {
        s.notifications += 1;
        match status.as_deref() {
            Some("firing") => s.firing += 1,
            Some("resolved") => s.resolved += 1,
            _ => {}
        }
        s.last = Some(Instant::now());
    });
    StatusCode::OK
}

impl Webhook {
    async fn start() -> Result<Webhook, PeerError> {
        let at = PathBuf::from("webhook receiver on 127.0.0.1:0");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(io_err(&at))?;
        let addr = listener.local_addr().map_err(io_err(&at))?;
        let (tx, seen) = watch::channel(Seen::default());
        let router = Router::new().route("/hook", post(notified)).with_state(Arc::new(tx));
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(async move { s.cancelled().await }).await;
        });
        Ok(Webhook { addr, seen, stop })
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Waits until no notification came for `quiet` (counting from `since` at
    /// the earliest), at most until `since + within`; returns what was seen and
    /// whether it settled.
    async fn settle(&mut self, since: Instant, quiet: Duration, within: Duration) -> (Seen, bool) {
        let deadline = since + within;
        loop {
            let last = self.seen.borrow_and_update().last.map_or(since, |l| l.max(since));
            let quiet_at = last + quiet;
            match tokio::time::timeout_at(quiet_at.min(deadline).into(), self.seen.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return (*self.seen.borrow(), true),
                Err(_) => return (*self.seen.borrow(), quiet_at <= deadline),
            }
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The Alertmanager configuration used by the benchmark, notifying `webhook`.
pub fn alertmanager_config(webhook: &str) -> String {
    format!(
        r#"# Written by triaged-bench (crates/triaged-bench/src/peers/alertmanager.rs).
route:
  receiver: bench
  group_by: ['site', 'alertname']
  group_wait: 2s
  group_interval: {}s
  repeat_interval: 4h
receivers:
  - name: bench
    webhook_configs:
      - url: '{webhook}'
        send_resolved: true
inhibit_rules:
  # Infrastructure down at a site inhibits the service symptoms at that site.
  - source_matchers: ['alertname=~"HostDown|IcmpUnreachable|DatabaseDown"']
    target_matchers: ['alertname=~"InstanceDown|HighErrorRate|ProbeFailure"']
    equal: ['site']
"#,
        AM_GROUP_INTERVAL.as_secs()
    )
}

/// A free loopback port for Alertmanager's API (it binds it itself).
pub(super) fn free_port() -> Result<u16, PeerError> {
    let at = PathBuf::from("127.0.0.1:0");
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err(&at))?;
    Ok(l.local_addr().map_err(io_err(&at))?.port())
}

pub(super) async fn wait_ready(client: &reqwest::Client, base: &str, am: &mut Running) -> Result<(), PeerError> {
    let deadline = Instant::now() + AM_READY_WITHIN;
    let url = format!("{base}/-/ready");
    loop {
        am.check_alive("before it was ready")?;
        let last = match client.get(&url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => error_chain(&e),
        };
        if Instant::now() >= deadline {
            return Err(PeerError::Timeout {
                what: format!("{} answering 200 on {url} (last: {last}; see {})", am.binary, am.log.display()),
                after: AM_READY_WITHIN,
            });
        }
        // Bounded polling of a readiness endpoint.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts `batches` with four requests in flight; every answer must be 200.
pub(super) async fn post_batches(client: &reqwest::Client, url: &str, storm: &Storm, batches: &[&[Alert]]) -> Result<(), PeerError> {
    let next = &AtomicUsize::new(0);
    let worker = || async move {
        while let Some(batch) = batches.get(next.fetch_add(1, Ordering::Relaxed)) {
            let now = Utc::now();
            let body: Vec<serde_json::Value> = batch.iter().map(|a| storm.alertmanager_alert(a, now)).collect();
            let what = || format!("POST {url} ({} alerts)", batch.len());
            let r = client.post(url).json(&body).send().await.map_err(|e| PeerError::Http { what: what(), message: error_chain(&e) })?;
            let status = r.status();
            if status != reqwest::StatusCode::OK {
                let text = r.text().await.unwrap_or_default();
                return Err(PeerError::Http { what: what(), message: format!("answered {status}: {}", text.trim()) });
            }
        }
        Ok::<(), PeerError>(())
    };
    tokio::try_join!(worker(), worker(), worker(), worker())?;
    Ok(())
}

/// The first `limit` alerts of `storm` through Alertmanager (see the module
/// documentation); `workdir` receives its configuration, data and log.
pub async fn alertmanager(storm: &Storm, limit: usize, workdir: &Path) -> Result<PeerResult, PeerError> {
    Ok(alertmanager_run(storm, limit, workdir).await?.0)
}

pub(super) async fn alertmanager_run(storm: &Storm, limit: usize, workdir: &Path) -> Result<(PeerResult, Seen), PeerError> {
    let binary =
        find_binary(&["prometheus-alertmanager", "alertmanager"], "prometheus-alertmanager", "apt-get install prometheus-alertmanager")?;
    let system = system_name(&binary, "alertmanager").await?;
    let alerts = &storm.alerts[..limit.min(storm.alerts.len())];
    std::fs::create_dir_all(workdir).map_err(io_err(workdir))?;

    let mut hook = Webhook::start().await?;
    let config = workdir.join("alertmanager.yml");
    std::fs::write(&config, alertmanager_config(&hook.url())).map_err(io_err(&config))?;
    // A fresh data directory: no notification log or silence from an earlier run.
    let data = workdir.join("am-data");
    if data.exists() {
        std::fs::remove_dir_all(&data).map_err(io_err(&data))?;
    }
    let port = free_port()?;
    let mut cmd = Command::new(&binary);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .arg("--log.level=warn");
    let mut am = Running::spawn(cmd, &binary, workdir.join("alertmanager.log"), Stdio::null())?;

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| PeerError::Http { what: "HTTP client".into(), message: error_chain(&e) })?;
    wait_ready(&client, &base, &mut am).await?;

    // Runs of one status (the firing repeats, then the recoveries) one after
    // the other, with the notifications of one run settled before the next
    // starts: in the storm the recoveries come after the firing phase, later
    // than group_wait, and fed back to back they would resolve every alert
    // before its group was first flushed (no notification at all). Only the
    // POSTs are timed.
    let url = format!("{base}/api/v2/alerts");
    let (mut posts, mut elapsed, mut runs) = (0, Duration::ZERO, 0);
    let mut seen = Seen::default();
    let mut unsettled = false;
    for run in alerts.chunk_by(|a, b| a.firing == b.firing) {
        let batches: Vec<&[Alert]> = run.chunks(AM_BATCH).collect();
        posts += batches.len();
        runs += 1;
        let started = Instant::now();
        post_batches(&client, &url, storm, &batches).await?;
        elapsed += started.elapsed();
        let settled;
        (seen, settled) = hook.settle(Instant::now(), AM_QUIET, AM_SETTLE_WITHIN).await;
        unsettled |= !settled;
    }
    am.check_alive("while notifications were awaited")?;
    am.stop().await;

    let seconds = elapsed.as_secs_f64();
    let note = format!(
        "group_by [site, alertname], group_wait 2s, group_interval {}s, repeat_interval 4h, inhibit {{HostDown,IcmpUnreachable,DatabaseDown}} \
         -> {{InstanceDown,HighErrorRate,ProbeFailure}} by site; {posts} POSTs of <= {AM_BATCH} alerts, 4 in flight, in {runs} run(s) \
         (firing, then recoveries once the firing notifications settled), timed first POST sent -> last answered, waits excluded; \
         {} firing + {} resolved notifications, each run's counted until {}s without one{}",
        AM_GROUP_INTERVAL.as_secs(),
        seen.firing,
        seen.resolved,
        AM_QUIET.as_secs(),
        if unsettled { format!(" (not settled {}s after a run)", AM_SETTLE_WITHIN.as_secs()) } else { String::new() },
    );
    let result = PeerResult {
        system,
        events: alerts.len(),
        seconds,
        events_per_second: per_second(alerts.len() as u64, seconds),
        notifications: seen.notifications,
        note,
    };
    Ok((result, seen))
}
