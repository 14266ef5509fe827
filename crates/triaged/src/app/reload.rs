//! Rules and CMDB: loaded at start, reloaded on SIGHUP and on the CMDB refresh
//! interval; a reload that fails validation keeps the running state.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::config::Config;
use crate::core::CoreConfig;
use crate::metrics::Metrics;
use crate::rules::RuleSet;
use crate::scale::rekey::Router;
use crate::topology::Snapshot;

use super::AppError;

/// Loads rules and CMDB as configured (also used by `check` and reloads).
pub fn load_rules_and_cmdb(cfg: &Config) -> Result<(RuleSet, Snapshot), AppError> {
    let rules = RuleSet::load_dir(&cfg.rules.dir).map_err(AppError::Rules)?;
    let cmdb = load_cmdb(cfg).map_err(AppError::Cmdb)?;
    Ok((rules, cmdb))
}

/// The CMDB snapshot with the change calendar, if any, merged in.
pub fn load_cmdb(cfg: &Config) -> Result<Snapshot, Vec<String>> {
    fn strings<E: std::fmt::Display>(errs: Vec<E>) -> Vec<String> {
        errs.iter().map(E::to_string).collect()
    }
    let mut cmdb = Snapshot::load(&cfg.cmdb.path).map_err(strings)?;
    if let Some(ch) = &cfg.changes {
        crate::topology::changes::apply_calendar(&ch.path, &mut cmdb, cfg.correlation.max_upstream_depth).map_err(strings)?;
    }
    Ok(cmdb)
}

/// A request to swap rules and/or CMDB, already validated.
pub enum Reload {
    Rules(Arc<RuleSet>),
    Cmdb(Arc<Snapshot>),
}

/// What the reloader needs to rebuild the re-key stage's router.
pub(super) struct RouterFeed {
    pub(super) tx: watch::Sender<Arc<Router>>,
    pub(super) scope: crate::config::RekeyScope,
    pub(super) core: CoreConfig,
    pub(super) rules: Arc<RuleSet>,
    pub(super) cmdb: Arc<Snapshot>,
}

impl RouterFeed {
    pub(super) async fn publish(&mut self) {
        let (core, rules, cmdb, scope) = (self.core.clone(), self.rules.clone(), self.cmdb.clone(), self.scope);
        match tokio::task::spawn_blocking(move || Router::new(core, rules, cmdb, scope)).await {
            Ok(r) => {
                let _ = self.tx.send(Arc::new(r));
            }
            Err(e) => error!(error = %e, "rebuilding the re-key router failed; the old one stays"),
        }
    }
}

/// Reloads rules and CMDB on request (SIGHUP) and on the CMDB refresh
/// interval. A reload that fails validation keeps the old state and says why.
pub(super) async fn reloader(
    cfg: Config,
    mut requests: mpsc::Receiver<()>,
    swaps: mpsc::Sender<Reload>,
    mut router: Option<RouterFeed>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let period = cfg.cmdb.refresh_interval.map(|d| d.0).unwrap_or(Duration::from_secs(365 * 86400));
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let rules_too = tokio::select! {
            r = requests.recv() => match r { Some(()) => true, None => break },
            _ = refresh.tick() => false,
            _ = shutdown.cancelled() => break,
        };
        if rules_too {
            let dir: PathBuf = cfg.rules.dir.clone();
            if let Some(r) = load_for_reload("rules", &metrics, move || RuleSet::load_dir(&dir)).await {
                let r = Arc::new(r);
                if let Some(f) = &mut router {
                    f.rules = r.clone();
                }
                let _ = swaps.send(Reload::Rules(r)).await;
            }
        }
        let c = cfg.clone();
        if let Some(s) = load_for_reload("cmdb", &metrics, move || load_cmdb(&c)).await {
            let s = Arc::new(s);
            if let Some(f) = &mut router {
                f.cmdb = s.clone();
            }
            let _ = swaps.send(Reload::Cmdb(s)).await;
        }
        if let Some(f) = &mut router {
            f.publish().await;
        }
    }
}

/// Loads and validates `kind` off the async threads. On failure every error is
/// logged and counted, and `None` keeps the running state.
pub(super) async fn load_for_reload<T, E>(
    kind: &'static str,
    metrics: &Metrics,
    load: impl FnOnce() -> Result<T, Vec<E>> + Send + 'static,
) -> Option<T>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(load).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(errs)) => {
            metrics.reloads.with_label_values(&[kind, "error"]).inc();
            for e in errs {
                error!(kind, error = %e, "reload rejected; keeping the running state");
            }
            None
        }
        Err(e) => {
            metrics.reloads.with_label_values(&[kind, "error"]).inc();
            error!(kind, error = %e, "reload task failed; keeping the running state");
            None
        }
    }
}
