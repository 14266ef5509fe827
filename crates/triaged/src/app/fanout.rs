//! Fan-out: the core emits one action per change; this sends a copy to the
//! workers of every sink its routes name, and acknowledges it to the core
//! only once every one of those sinks has (a dead-lettered or disowned
//! action counts as acknowledged, as it does with one sink). An action no
//! route matches is acknowledged at once, logged and counted.
//!
//! Within each sink an incident's actions always go to the same worker
//! (by key hash), so per-key order holds in every sink.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::incident::Action;
use crate::metrics::Metrics;
use crate::route::Routes;

/// The workers of one sink.
pub(super) struct Lane {
    pub(super) name: String,
    pub(super) workers: Vec<mpsc::Sender<Action>>,
}

/// Routes actions to the sinks' workers and counts their acknowledgements.
pub(super) struct Fanout {
    routes: Routes,
    /// By sink index, as [`Routes::names`].
    lanes: Vec<Lane>,
    /// Action id -> acknowledgements still owed by its sinks.
    pending: HashMap<u64, usize>,
    metrics: Metrics,
}

/// What became of an action handed to [`Fanout::send`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    /// Queued at these many sinks.
    Queued(usize),
    /// No route matches: acknowledge it now.
    Unrouted,
}

impl Fanout {
    pub(super) fn new(routes: Routes, lanes: Vec<Lane>, metrics: Metrics) -> Fanout {
        debug_assert_eq!(routes.names().len(), lanes.len());
        Fanout { routes, lanes, pending: HashMap::new(), metrics }
    }

    /// Queues a copy of `action` at each of its sinks' workers; a full
    /// worker queue waits here (backpressure up to the Kafka source).
    pub(super) async fn send(&mut self, action: Action) -> Sent {
        let sinks = self.routes.sinks_for(&action.incident);
        if sinks.is_empty() {
            self.metrics.actions_unrouted.inc();
            warn!(action = action.kind.as_str(), key = %action.incident.key, priority = action.incident.priority, peak_priority = action.incident.peak_priority, "no route matches the incident; the action is acknowledged without being sent");
            return Sent::Unrouted;
        }
        let mut queued = 0;
        let id = action.id;
        let last = sinks.len() - 1;
        let mut action = Some(action);
        for (n, s) in sinks.iter().enumerate() {
            let lane = &self.lanes[*s];
            let copy = if n == last { action.take().expect("sent once") } else { action.clone().expect("still held") };
            let w = worker_for(&copy.incident.key, lane.workers.len());
            if lane.workers[w].send(copy).await.is_err() {
                warn!(sink = %lane.name, "sink worker gone; action not delivered there, it stays owed in the state");
            } else {
                queued += 1;
            }
        }
        if queued > 0 {
            *self.pending.entry(id).or_default() += queued;
        }
        Sent::Queued(queued)
    }

    /// One sink acknowledged action `id`: `true` once every sink it was sent
    /// to has.
    pub(super) fn ack(&mut self, id: u64) -> bool {
        match self.pending.get_mut(&id) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.pending.remove(&id);
                true
            }
            // Not sent through here (cannot happen): pass it on.
            None => true,
        }
    }

    /// Whether `incident` is routed to the sink named `sink`.
    pub(super) fn routes_to(&self, incident: &crate::incident::Incident, sink: &str) -> bool {
        self.routes.sinks_for(incident).iter().any(|&s| self.lanes[s].name == sink)
    }

    /// Every worker of every sink is gone.
    pub(super) fn all_closed(&self) -> bool {
        self.lanes.iter().flat_map(|l| &l.workers).all(|w| w.is_closed())
    }
}

/// `true` while every one of `circuits` is closed: events are read only
/// then. One task per sink follows its breaker until `stop`.
pub(super) fn all_closed(circuits: Vec<watch::Receiver<bool>>, tracker: &TaskTracker, stop: &CancellationToken) -> watch::Receiver<bool> {
    if circuits.len() == 1 {
        return circuits.into_iter().next().expect("one");
    }
    let states: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(circuits.iter().map(|c| *c.borrow()).collect()));
    let (tx, rx) = watch::channel(states.lock().expect("not poisoned").iter().all(|c| *c));
    let tx = Arc::new(tx);
    for (i, mut c) in circuits.into_iter().enumerate() {
        let (states, tx, stop) = (states.clone(), tx.clone(), stop.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    changed = c.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let mut s = states.lock().expect("not poisoned");
                        s[i] = *c.borrow_and_update();
                        tx.send_replace(s.iter().all(|c| *c));
                    }
                    _ = stop.cancelled() => break,
                }
            }
        });
    }
    rx
}

pub(super) fn worker_for(key: &str, n: usize) -> usize {
    let h = key.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (h % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::tests::NO_SINK;
    use crate::config::Config;
    use crate::incident::test_support::action;
    use crate::incident::ActionKind;

    const SINKS: &str = r#"
[sinks.pd]
profile = "generic"
endpoint = "http://127.0.0.1:1"
[sinks.sn]
profile = "generic"
endpoint = "http://127.0.0.1:2"
[[routes]]
sinks = ["sn"]
priority = [1, 2, 3]
[[routes]]
sinks = ["pd", "sn"]
priority = 1
"#;

    struct Setup {
        fanout: Fanout,
        pd: mpsc::Receiver<Action>,
        sn: mpsc::Receiver<Action>,
    }

    fn setup() -> Setup {
        let cfg = Config::parse(Path::new("t.toml"), &format!("{NO_SINK}{SINKS}")).unwrap();
        let (pd_tx, pd) = mpsc::channel(8);
        let (sn_tx, sn) = mpsc::channel(8);
        let lanes = vec![Lane { name: "pd".into(), workers: vec![pd_tx] }, Lane { name: "sn".into(), workers: vec![sn_tx] }];
        Setup { fanout: Fanout::new(Routes::new(&cfg), lanes, Metrics::new()), pd, sn }
    }

    fn at(id: u64, peak: u8) -> Action {
        let mut a = action(id, ActionKind::Open, "trg-00000000000000aa");
        a.incident.priority = peak;
        a.incident.peak_priority = peak;
        a
    }

    #[tokio::test]
    async fn an_action_is_acknowledged_once_every_routed_sink_has() {
        let mut s = setup();
        assert_eq!(s.fanout.send(at(1, 1)).await, Sent::Queued(2));
        assert_eq!((s.pd.try_recv().unwrap().id, s.sn.try_recv().unwrap().id), (1, 1), "one copy each, even though sn is named twice");
        assert!(s.sn.try_recv().is_err());
        assert!(!s.fanout.ack(1), "ServiceNow alone is not enough");
        assert!(s.fanout.ack(1), "then PagerDuty");
        assert_eq!(s.fanout.send(at(2, 3)).await, Sent::Queued(1));
        assert!(s.pd.try_recv().is_err());
        assert!(s.fanout.ack(2));
    }

    #[tokio::test]
    async fn events_are_read_only_while_every_circuit_is_closed() {
        let (a_tx, a) = watch::channel(true);
        let (b_tx, b) = watch::channel(true);
        let (tracker, stop) = (TaskTracker::new(), CancellationToken::new());
        let mut all = all_closed(vec![a, b], &tracker, &stop);
        assert!(*all.borrow_and_update());
        b_tx.send_replace(false);
        let seen = tokio::time::timeout(std::time::Duration::from_secs(5), all.changed()).await;
        assert!(matches!(seen, Ok(Ok(()))), "one sink opening is seen");
        assert!(!*all.borrow_and_update(), "one sink open stops the reading");
        // b closes while a opens: still not every circuit closed.
        a_tx.send_replace(false);
        b_tx.send_replace(true);
        let changed = tokio::time::timeout(std::time::Duration::from_millis(100), async {
            loop {
                all.changed().await.unwrap();
                if *all.borrow_and_update() {
                    return;
                }
            }
        });
        assert!(changed.await.is_err(), "never all closed while a is open");
        a_tx.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !*all.borrow_and_update() {
                all.changed().await.unwrap();
            }
        })
        .await
        .expect("closed again once both are");
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn a_sink_reads_back_only_what_is_routed_to_it() {
        let s = setup();
        let (p1, p3) = (at(1, 1).incident, at(2, 3).incident);
        assert!(s.fanout.routes_to(&p1, "pd") && s.fanout.routes_to(&p1, "sn"));
        assert!(!s.fanout.routes_to(&p3, "pd"), "a P3 is not PagerDuty's to read back");
        assert!(s.fanout.routes_to(&p3, "sn"));
    }

    #[tokio::test]
    async fn an_unrouted_action_is_counted_and_not_sent() {
        let mut s = setup();
        assert_eq!(s.fanout.send(at(3, 5)).await, Sent::Unrouted);
        assert!(s.pd.try_recv().is_err() && s.sn.try_recv().is_err());
        assert_eq!(s.fanout.metrics.actions_unrouted.get(), 1);
    }
}
