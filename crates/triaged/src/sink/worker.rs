//! Sink workers: each delivers the actions of its queue in order, checks the
//! action's claim, dead-letters permanent failures and acknowledges to the core.
//! While the sink is rate-limited a worker gathers what is queued and lets
//! the latest state of each incident win (`coalesce.rs`).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::incident::{Action, ActionKind, SinkError};
use crate::kafka::DeadLetter;
use crate::metrics::Metrics;
use crate::scale::ownership::Ownership;
use crate::sink::coalesce::{Backlog, Queued};
use crate::sink::rate::RateLimit;
use crate::sink::retry::Backoff;
use crate::sink::{Remote, RestSink};

/// What a worker needs of its sink: the REST sink, or a fake in tests.
pub(crate) trait Deliver: Send + Sync + 'static {
    /// The sink's name, for its metrics and logs.
    fn name(&self) -> &str;
    /// The limit every request of the sink for `action` waits for.
    fn rate_limit(&self, action: &Action) -> &RateLimit;
    /// The backoff of dead-letter writes.
    fn backoff(&self) -> &Backoff;
    /// Whether the ITSM already reflects an action sent again after a restart.
    fn already_there(&self, action: &Action, stop: &CancellationToken) -> impl Future<Output = bool> + Send;
    /// Delivers with retries until success, a permanent error, a lost claim or `stop`.
    fn deliver(&self, action: &Action, stop: &CancellationToken) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl Deliver for RestSink {
    fn name(&self) -> &str {
        RestSink::name(self)
    }

    fn rate_limit(&self, action: &Action) -> &RateLimit {
        RestSink::rate_limit_for(self, action)
    }

    fn backoff(&self) -> &Backoff {
        RestSink::backoff(self)
    }

    async fn already_there(&self, action: &Action, stop: &CancellationToken) -> bool {
        // The look-up is a call too: it waits for the claim like the rest.
        already_there(&self.for_action(action, stop), action, stop).await
    }

    fn deliver(&self, action: &Action, stop: &CancellationToken) -> impl Future<Output = Result<(), SinkError>> + Send {
        RestSink::deliver(self, action, stop)
    }
}

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
pub(crate) struct SinkWorker<S = RestSink> {
    pub(crate) id: usize,
    pub(crate) sink: Arc<S>,
    pub(crate) dead_letter: Option<Arc<DeadLetter>>,
    pub(crate) ownership: Option<Arc<Ownership>>,
    pub(crate) acks: mpsc::UnboundedSender<u64>,
    pub(crate) metrics: Metrics,
}

/// Acknowledges `q`'s action and the updates it superseded, those first.
fn ack(acks: &mpsc::UnboundedSender<u64>, q: &Queued) {
    for id in q.ack_ids() {
        let _ = acks.send(id);
    }
}

impl<S: Deliver> SinkWorker<S> {
    pub(crate) async fn run(self, mut rx: mpsc::Receiver<Action>, stop: CancellationToken) {
        let SinkWorker { id, sink, dead_letter, ownership, acks, metrics } = self;
        let mut backlog = Backlog::new(rx.max_capacity());
        let name = sink.name().to_owned();
        let coalesced = metrics.sink_updates_coalesced.with_label_values(&[&name]);
        let disowned = metrics.actions_disowned.with_label_values(&[&name]);
        loop {
            let mut next = match backlog.pop() {
                Some(q) => q,
                None => tokio::select! {
                    a = rx.recv() => match a { Some(a) => Queued::new(a), None => break },
                    _ = stop.cancelled() => break,
                },
            };
            // No token now: this action waits anyway, so take what is queued
            // and send only the latest state of each incident. (The wait
            // itself is in the sink's requests, which end on `stop`.)
            if !sink.rate_limit(&next.action).ready_in().is_zero() {
                backlog.push_front(next);
                while !backlog.is_full() {
                    match rx.try_recv() {
                        Ok(a) => backlog.push_back(a),
                        Err(_) => break,
                    }
                }
                let dropped = backlog.coalesce();
                if dropped > 0 {
                    coalesced.inc_by(dropped);
                    debug!(sink = %name, worker = id, dropped, "rate-limited: updates superseded by a later action of their incident");
                }
                next = backlog.pop().expect("the action just put back");
            }
            let action = &next.action;
            if action.incident.owned_at(sink.name()).closed {
                // A person closed this record while its alerts fired, and it is
                // left closed: nothing more is written to it.
                info!(worker = id, sink = sink.name(), action = action.kind.as_str(), key = %action.incident.key, "record left closed at the ITSM by a person; not sent");
                metrics.sink_left_closed.inc();
                ack(&acks, &next);
                continue;
            }
            if sink.already_there(action, &stop).await {
                info!(worker = id, action = action.kind.as_str(), key = %action.incident.key, "owed after a restart, but the ITSM already has it; not sent again");
                ack(&acks, &next);
                continue;
            }
            let delivered = match ownership.as_deref().zip(action.claim.as_ref()) {
                None => sink.deliver(action, &stop).await,
                // The sink checks the claim before every request; a request in
                // flight or a retry waiting is dropped as soon as it is lost.
                Some((o, claim)) => tokio::select! {
                    r = sink.deliver(action, &stop) => r,
                    () = o.lost(claim) => Err(SinkError::Disowned { topic: claim.topic.clone(), partition: claim.partition }),
                },
            };
            match delivered {
                Err(SinkError::Disowned { topic, partition }) => {
                    disowned.inc();
                    info!(worker = id, action = action.kind.as_str(), key = %action.incident.key, %topic, partition, "partition revoked; action left to its new owner");
                    ack(&acks, &next);
                }
                Ok(()) => {
                    metrics.incident_actions.with_label_values(&[&name, action.kind.as_str()]).inc();
                    info!(sink = %name, worker = id, action = action.kind.as_str(), key = %action.incident.key, priority = action.incident.priority, title = %action.incident.title, "incident action delivered");
                    ack(&acks, &next);
                }
                Err(SinkError::Cancelled) => break,
                Err(e) => {
                    error!(sink = %name, action = action.kind.as_str(), key = %action.incident.key, error = %e, "sink rejected the action permanently; dead-lettering it");
                    metrics.dead_letters.with_label_values(&["sink"]).inc();
                    metrics.sink_dead_letters.with_label_values(&[&name]).inc();
                    if let Some(dl) = &dead_letter {
                        // The action is acknowledged only once it is in the dead-letter
                        // topic: a failed write is retried with the sink's backoff.
                        let payload = serde_json::to_vec(action).unwrap_or_default();
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
                    ack(&acks, &next);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::incident::test_support::action;
    use crate::sink::retry;

    /// A sink that takes a token per request through the real retry loop
    /// and records what it was sent: `(id, kind, event_count)`.
    struct Fake {
        rate: RateLimit,
        backoff: Backoff,
        sent: Mutex<Vec<(u64, ActionKind, u64)>>,
    }

    impl Fake {
        fn new(rate: RateLimit) -> Arc<Fake> {
            let backoff = Backoff::from_bounds(Duration::from_millis(1), Duration::from_millis(5));
            Arc::new(Fake { rate, backoff, sent: Mutex::new(Vec::new()) })
        }

        fn sent(&self) -> Vec<(u64, ActionKind, u64)> {
            self.sent.lock().unwrap().clone()
        }
    }

    impl Deliver for Fake {
        fn name(&self) -> &str {
            "fake"
        }

        fn rate_limit(&self, _: &Action) -> &RateLimit {
            &self.rate
        }

        fn backoff(&self) -> &Backoff {
            &self.backoff
        }

        async fn already_there(&self, _: &Action, _: &CancellationToken) -> bool {
            false
        }

        async fn deliver(&self, action: &Action, stop: &CancellationToken) -> Result<(), SinkError> {
            retry::retry(&self.backoff, stop, || async {
                self.rate.take().await;
                self.sent.lock().unwrap().push((action.id, action.kind, action.incident.event_count));
                Ok(())
            })
            .await
        }
    }

    struct Running {
        tx: mpsc::Sender<Action>,
        acks: mpsc::UnboundedReceiver<u64>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        metrics: Metrics,
    }

    fn start(sink: &Arc<Fake>, capacity: usize) -> Running {
        let (tx, rx) = mpsc::channel(capacity);
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let w = SinkWorker { id: 0, sink: sink.clone(), dead_letter: None, ownership: None, acks: ack_tx, metrics: metrics.clone() };
        let task = tokio::spawn(w.run(rx, stop.clone()));
        Running { tx, acks, stop, task, metrics }
    }

    fn drain(acks: &mut mpsc::UnboundedReceiver<u64>) -> Vec<u64> {
        std::iter::from_fn(|| acks.try_recv().ok()).collect()
    }

    const KEY: &str = "trg-00000000000000aa";

    #[tokio::test(start_paused = true)]
    async fn a_storm_of_updates_coalesces_while_limited_and_loses_nothing() {
        let sink = Fake::new(RateLimit::new(60, 5));
        let mut w = start(&sink, 32);
        let started = Instant::now();
        w.tx.send(action(1, ActionKind::Open, KEY)).await.unwrap();
        for id in 2..=201 {
            w.tx.send(action(id, ActionKind::Update, KEY)).await.unwrap();
        }
        w.tx.send(action(202, ActionKind::Resolve, KEY)).await.unwrap();
        drop(w.tx);
        tokio::time::timeout(Duration::from_secs(3600), w.task).await.expect("the worker drains its queue").unwrap();

        let sent = sink.sent();
        let requests = sent.len() as u64;
        assert_eq!(sent.first(), Some(&(1, ActionKind::Open, 1)), "{sent:?}");
        assert_eq!(sent.last(), Some(&(202, ActionKind::Resolve, 202)), "the last state sent is the latest: {sent:?}");
        assert!(sent.windows(2).all(|p| p[0].0 < p[1].0), "in order: {sent:?}");
        assert!(requests < 30, "{requests} requests for 202 actions: {sent:?}");
        // Every id acknowledged once, in order: a dropped update never ahead of the open.
        assert_eq!(drain(&mut w.acks), (1..=202).collect::<Vec<_>>());
        assert_eq!(w.metrics.sink_updates_coalesced.with_label_values(&["fake"]).get(), 202 - requests);
        // The bucket was the pace: 5 at once, then one a second.
        assert_eq!(started.elapsed(), Duration::from_secs(requests - 5));
        println!("rate 60/min burst 5: 202 actions, {requests} requests, {} updates coalesced", 202 - requests);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_to_a_record_left_closed_but_it_is_acknowledged() {
        let sink = Fake::new(RateLimit::unlimited());
        let mut w = start(&sink, 8);
        w.tx.send(action(1, ActionKind::Open, KEY)).await.unwrap();
        let mut closed = action(2, ActionKind::Update, KEY);
        closed.incident.human_owned.insert("fake".into(), crate::incident::HumanOwned { closed: true, ..Default::default() });
        w.tx.send(closed.clone()).await.unwrap();
        let mut elsewhere = action(3, ActionKind::Update, KEY);
        elsewhere.incident.human_owned.insert("other".into(), crate::incident::HumanOwned { closed: true, ..Default::default() });
        w.tx.send(elsewhere).await.unwrap();
        drop(w.tx);
        w.task.await.unwrap();
        assert_eq!(sink.sent().iter().map(|s| s.0).collect::<Vec<_>>(), [1, 3], "only this sink's closed record is skipped");
        assert_eq!(drain(&mut w.acks), [1, 2, 3]);
        assert_eq!(w.metrics.sink_left_closed.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_nothing_is_coalesced() {
        let sink = Fake::new(RateLimit::unlimited());
        let mut w = start(&sink, 8);
        for id in 1..=50 {
            let kind = if id == 1 { ActionKind::Open } else { ActionKind::Update };
            w.tx.send(action(id, kind, KEY)).await.unwrap();
        }
        drop(w.tx);
        w.task.await.unwrap();
        assert_eq!(sink.sent().len(), 50);
        assert_eq!(drain(&mut w.acks), (1..=50).collect::<Vec<_>>());
        assert_eq!(w.metrics.sink_updates_coalesced.with_label_values(&["fake"]).get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_waiting_for_a_token_stops_on_shutdown() {
        let sink = Fake::new(RateLimit::new(1, 1));
        let mut w = start(&sink, 8);
        w.tx.send(action(1, ActionKind::Open, KEY)).await.unwrap();
        w.tx.send(action(2, ActionKind::Resolve, KEY)).await.unwrap();
        for _ in 0..1000 {
            if !sink.sent().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(sink.sent().len(), 1, "the open went out at once");
        let started = Instant::now();
        w.stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), w.task).await.expect("stops without waiting the minute for its token").unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(sink.sent().len(), 1, "the resolve was not sent");
        assert_eq!(drain(&mut w.acks), [1], "nor acknowledged: it is sent again after the restart");
    }
}
