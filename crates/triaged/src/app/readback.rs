//! Reads the ITSM's records back: each sink that can is polled every
//! `read_back.poll_interval` for the incidents open there, and what people
//! did (acknowledged, closed, re-prioritised) goes to the core, like what a
//! signed webhook pushes (`server/webhook.rs`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::core::partitions::{Observed, PolledAt};
use crate::core::{Observation, RemoteOutcome, SeenState};
use crate::incident::SinkError;
use crate::metrics::Metrics;
use crate::sink::{Remote, RemoteRecord, RestSink};

use super::core_task::CoreLoop;

/// A poller's request for the incidents open at its ITSM: the sink's name
/// (only the incidents routed to it are read back there), and the reply.
pub(super) type PollRequest = (String, oneshot::Sender<Vec<(PolledAt, String)>>);

/// The observation a read-back gives, if it tells anything.
pub fn observation(sink: &str, key: &str, r: RemoteRecord, via: &'static str) -> Option<Observation> {
    let state = match r.state {
        Remote::Unknown => return None,
        Remote::Missing => SeenState::Missing,
        Remote::Closed => SeenState::Closed,
        Remote::Open if r.acknowledged => SeenState::Acknowledged,
        Remote::Open => SeenState::Open,
    };
    Some(Observation {
        sink: sink.to_owned(),
        key: key.to_owned(),
        state,
        assignee: r.assignee,
        priority: r.priority,
        group: r.group,
        closed_at: r.closed_at,
        via,
    })
}

/// Polls one sink's records, one at a time (each read takes a token of the
/// sink's rate limit), until `stop`.
pub(super) async fn poll(
    sink: Arc<RestSink>,
    every: Duration,
    requests: mpsc::Sender<PollRequest>,
    observed: mpsc::UnboundedSender<Observed>,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let name = sink.name().to_owned();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let (tx, rx) = oneshot::channel();
        if requests.send((name.clone(), tx)).await.is_err() {
            return;
        }
        let Ok(keys) = rx.await else { return };
        for (at, key) in keys {
            let record = tokio::select! {
                r = sink.read_back(&key, &stop) => r,
                _ = stop.cancelled() => return,
            };
            let record = match record {
                Ok(r) => r,
                Err(SinkError::Cancelled) => return,
                Err(e) => {
                    metrics.itsm_reads.with_label_values(&[&name, "error"]).inc();
                    warn!(sink = %name, %key, error = %e, "reading the record back failed; tried again at the next poll");
                    continue;
                }
            };
            metrics.itsm_reads.with_label_values(&[&name, "ok"]).inc();
            if let Some(observation) = observation(&name, &key, record, "poll") {
                if observed.send(Observed { at: Some(at), observation }).is_err() {
                    return;
                }
            }
        }
    }
}

/// Hands the core what was seen, and counts and logs what it changed.
pub(super) fn observed(l: &mut CoreLoop, o: Observed) {
    let now = Utc::now();
    let obs = &o.observation;
    for outcome in l.core.observe(o.at.as_ref(), obs, now) {
        l.metrics.itsm_readback.with_label_values(&[&obs.sink, outcome.as_str()]).inc();
        match &outcome {
            RemoteOutcome::Acknowledged { by, after } => {
                l.metrics.time_to_acknowledge.with_label_values(&[&obs.sink]).observe(after.num_milliseconds().max(0) as f64 / 1e3);
                info!(sink = %obs.sink, key = %obs.key, by = by.as_deref().unwrap_or("-"), after_s = after.num_seconds(), via = obs.via, "incident acknowledged at the ITSM");
            }
            RemoteOutcome::NewRecord { old, new } => {
                warn!(sink = %obs.sink, key = %old, new_key = %new, via = obs.via, "record closed by a person while its alerts fire; continued under a new key")
            }
            other => {
                warn!(sink = %obs.sink, key = %obs.key, outcome = other.as_str(), via = obs.via, "the ITSM's record changed by a person; acted on it")
            }
        }
    }
}
