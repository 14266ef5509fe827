//! After a restore, the incidents the state says are open are looked up at
//! the ITSM by key; one the ITSM lost is opened again.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::incident::SinkError;
use crate::sink::{Remote, RestSink};

use super::core_task::CoreLoop;

/// What the ITSM holds for a restored open incident.
pub(super) struct Reconciled {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) epoch: u64,
    pub(super) key: String,
    pub(super) remote: Result<Remote, String>,
}

/// Looks up, in the background, the incidents a restored state says are open.
pub(super) struct Reconcile {
    pub(super) sink: Arc<RestSink>,
    pub(super) tx: mpsc::UnboundedSender<Reconciled>,
    pub(super) stop: CancellationToken,
}

impl Reconcile {
    pub(super) fn start(&self, topic: &str, partition: i32, epoch: u64, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let (sink, tx, stop, topic) = (self.sink.clone(), self.tx.clone(), self.stop.clone(), topic.to_owned());
        tokio::spawn(async move {
            for key in keys {
                let remote = match sink.look_up(&key, &stop).await {
                    Err(SinkError::Cancelled) => return,
                    r => r.map_err(|e| e.to_string()),
                };
                if tx.send(Reconciled { topic: topic.clone(), partition, epoch, key, remote }).is_err() {
                    return;
                }
            }
        });
    }
}

/// Acts on what the ITSM holds for a restored open incident: one it lost is
/// opened again; one closed there is left to its alerts (triaged updates and
/// resolves it as they change).
pub(super) fn reconciled(l: &mut CoreLoop, r: Reconciled) {
    let Reconciled { topic, partition, epoch, key, remote } = r;
    let outcome = match remote {
        Ok(Remote::Open) => "open",
        Ok(Remote::Unknown) => return,
        Ok(Remote::Closed) => {
            warn!(%key, "incident closed at the ITSM while its state here says open; left to its alerts");
            "closed"
        }
        Ok(Remote::Missing) => {
            let why = "reconciled: the ITSM had no record under this key although the restored state said open; opened again";
            if l.core.open_again(&topic, partition, epoch, &key, why, Utc::now()) {
                warn!(%key, topic, partition, "incident missing at the ITSM; opened again");
            }
            "missing"
        }
        Err(e) => {
            warn!(%key, error = %e, "looking the incident up at the ITSM failed; not reconciled");
            "failed"
        }
    };
    l.metrics.reconciled.with_label_values(&[outcome]).inc();
}
