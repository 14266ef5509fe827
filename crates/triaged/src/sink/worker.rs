//! Sink workers: each delivers the actions of its queue in order, checks the
//! action's claim, dead-letters permanent failures and acknowledges to the core.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::incident::{Action, ActionKind, SinkError};
use crate::kafka::DeadLetter;
use crate::metrics::Metrics;
use crate::scale::ownership::Ownership;
use crate::sink::{Remote, RestSink};

/// An action sent again after a restart (its acknowledgement was not
/// recorded) that the ITSM already reflects, looked up where the profile
/// can: a resolve of a record already resolved, an open of one already open.
async fn already_there(sink: &RestSink, action: &Action, stop: &CancellationToken) -> bool {
    if !action.resent || !sink.can_look_up() {
        return false;
    }
    match sink.look_up(&action.incident.key, stop).await {
        Ok(Remote::Closed) => action.kind == ActionKind::Resolve,
        Ok(Remote::Open) => matches!(action.kind, ActionKind::Open | ActionKind::Reopen),
        _ => false,
    }
}

/// Delivers the actions of one queue, in order.
pub(crate) struct SinkWorker {
    pub(crate) id: usize,
    pub(crate) sink: Arc<RestSink>,
    pub(crate) dead_letter: Option<Arc<DeadLetter>>,
    pub(crate) ownership: Option<Arc<Ownership>>,
    pub(crate) acks: mpsc::UnboundedSender<u64>,
    pub(crate) metrics: Metrics,
}

impl SinkWorker {
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Action>, stop: CancellationToken) {
        let SinkWorker { id, sink, dead_letter, ownership, acks, metrics } = self;
        loop {
            let action = tokio::select! {
                a = rx.recv() => match a { Some(a) => a, None => break },
                _ = stop.cancelled() => break,
            };
            // The look-up is a call too: it waits for the claim like the rest.
            if already_there(&sink.for_action(&action, &stop), &action, &stop).await {
                info!(worker = id, action = action.kind.as_str(), key = %action.incident.key, "owed after a restart, but the ITSM already has it; not sent again");
                let _ = acks.send(action.id);
                continue;
            }
            let delivered = match ownership.as_deref().zip(action.claim.as_ref()) {
                None => sink.deliver(&action, &stop).await,
                // The sink checks the claim before every request; a request in
                // flight or a retry waiting is dropped as soon as it is lost.
                Some((o, claim)) => tokio::select! {
                    r = sink.deliver(&action, &stop) => r,
                    () = o.lost(claim) => Err(SinkError::Disowned { topic: claim.topic.clone(), partition: claim.partition }),
                },
            };
            match delivered {
                Err(SinkError::Disowned { topic, partition }) => {
                    metrics.actions_disowned.inc();
                    info!(worker = id, action = action.kind.as_str(), key = %action.incident.key, %topic, partition, "partition revoked; action left to its new owner");
                    let _ = acks.send(action.id);
                }
                Ok(()) => {
                    metrics.incident_actions.with_label_values(&[action.kind.as_str()]).inc();
                    info!(worker = id, action = action.kind.as_str(), key = %action.incident.key, priority = action.incident.priority, title = %action.incident.title, "incident action delivered");
                    let _ = acks.send(action.id);
                }
                Err(SinkError::Cancelled) => break,
                Err(e) => {
                    error!(action = action.kind.as_str(), key = %action.incident.key, error = %e, "sink rejected the action permanently; dead-lettering it");
                    metrics.dead_letters.with_label_values(&["sink"]).inc();
                    if let Some(dl) = &dead_letter {
                        // The action is acknowledged only once it is in the dead-letter
                        // topic: a failed write is retried with the sink's backoff.
                        let payload = serde_json::to_vec(&action).unwrap_or_default();
                        let mut attempt = 0;
                        while let Err(de) = dl.send("sink", None, Some(&action.incident.key), &payload, &e.to_string()).await {
                            let delay = sink.backoff().next_delay(attempt, None, &mut rand::thread_rng());
                            attempt = attempt.saturating_add(1);
                            error!(error = %de, retry_in = ?delay, "dead-letter write failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = stop.cancelled() => return,
                            }
                        }
                    }
                    let _ = acks.send(action.id);
                }
            }
        }
    }
}
