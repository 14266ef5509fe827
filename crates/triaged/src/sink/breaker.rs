//! Circuit breaker in front of the ITSM, shared by every sink worker.
//!
//! **After `failure_threshold` retryable failures in a row the circuit opens:
//! no request goes out for `open_for`; then one probe is let through (half
//! open). The probe's success closes the circuit; its failure opens it again.**
//! While the circuit is not closed the core stops reading events, so the Kafka
//! source pauses its partitions (and keeps polling) and no offset moves past
//! an event whose effect has not reached the ITSM. A permanent error (4xx)
//! proves the ITSM is up and counts as a success here.
//!
//! The state machine ([`Circuit`]) is pure and takes the time as an argument;
//! [`Breaker`] wraps it for the async workers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::config::CircuitConfig;
use crate::incident::SinkError;
use prometheus::{IntCounter, IntGauge};

use crate::metrics::Metrics;

/// Where the circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow; `failures` retryable failures in a row so far.
    Closed { failures: u32 },
    /// No request until `until`.
    Open { until: Instant },
    /// One probe may go; `probing` while it is out.
    HalfOpen { probing: bool },
}

impl State {
    /// Value of `triaged_sink_circuit_state`: 0 closed, 1 open, 2 half open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }
}

/// What a worker may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send the request.
    Go,
    /// Send the request as the half-open probe.
    Probe,
    /// Wait for a state change, at most this long.
    Wait(Duration),
}

/// How a request ended, as far as the circuit cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The ITSM answered (2xx, or a permanent 4xx).
    Answered,
    /// Timeout, refused connection, 429, 5xx.
    Failed,
    /// Abandoned (shutdown): says nothing about the ITSM.
    Abandoned,
}

impl Outcome {
    pub fn of<T>(result: &Result<T, SinkError>) -> Outcome {
        match result {
            Ok(_) | Err(SinkError::Permanent(_)) => Outcome::Answered,
            Err(SinkError::Retryable { .. }) => Outcome::Failed,
            Err(SinkError::Cancelled | SinkError::Disowned { .. }) => Outcome::Abandoned,
        }
    }
}

/// The pure state machine.
#[derive(Debug, Clone)]
pub struct Circuit {
    threshold: u32,
    open_for: Duration,
    state: State,
}

/// Longest a waiting worker sleeps before looking again; state changes wake
/// it earlier.
const RECHECK: Duration = Duration::from_secs(1);

impl Circuit {
    /// `threshold` 0 disables the breaker (it never opens).
    pub fn new(threshold: u32, open_for: Duration) -> Circuit {
        Circuit { threshold, open_for, state: State::Closed { failures: 0 } }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// May a request go out at `now`?
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Go,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probing: true };
                Admission::Probe
            }
            State::Open { until } => Admission::Wait((until - now).min(RECHECK)),
            State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Admission::Probe
            }
            State::HalfOpen { probing: true } => Admission::Wait(RECHECK),
        }
    }

    /// Records how an admitted request ended. `probe` says whether it was
    /// admitted as the probe. Returns the new state when it changed.
    pub fn record(&mut self, probe: bool, outcome: Outcome, now: Instant) -> Option<State> {
        let before = self.state;
        self.state = match (self.state, outcome) {
            (_, Outcome::Answered) if probe || matches!(self.state, State::Closed { .. }) => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, Outcome::Abandoned) if probe => State::HalfOpen { probing: false },
            (State::HalfOpen { .. }, Outcome::Failed) if probe => State::Open { until: now + self.open_for },
            (State::Closed { failures }, Outcome::Failed) => {
                let failures = failures.saturating_add(1);
                if self.threshold > 0 && failures >= self.threshold {
                    State::Open { until: now + self.open_for }
                } else {
                    State::Closed { failures }
                }
            }
            // A request admitted before the circuit opened, ending late, or
            // a non-probe answer while open: the probe decides, not it.
            (state, _) => state,
        };
        (self.state != before).then_some(self.state)
    }
}

/// Tokio's clock (which tests can pause), as a std `Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The breaker the sink workers share.
pub struct Breaker {
    circuit: Mutex<Circuit>,
    changed: Notify,
    closed_tx: watch::Sender<bool>,
    /// `sink_circuit_state{sink}` of this sink.
    state: IntGauge,
    /// `sink_circuit_opened_total{sink}` of this sink.
    opened: IntCounter,
}

/// An admitted request; record its outcome with [`Breaker::record`]. Dropped
/// unrecorded (its future was cancelled), it counts as abandoned.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    /// The breaker of sink `sink`, counted in its series of `metrics`.
    pub fn new(cfg: &CircuitConfig, metrics: &Metrics, sink: &str) -> Breaker {
        let (closed_tx, _) = watch::channel(true);
        let state = metrics.sink_circuit_state.with_label_values(&[sink]);
        let opened = metrics.sink_circuit_opened.with_label_values(&[sink]);
        state.set(0);
        Breaker {
            circuit: Mutex::new(Circuit::new(cfg.failure_threshold, cfg.open_for.0)),
            changed: Notify::new(),
            closed_tx,
            state,
            opened,
        }
    }

    /// `true` while the circuit is closed; the core reads events only then.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed_tx.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.circuit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request may go out. Cancel-safe: dropping the future
    /// takes nothing.
    pub async fn admit(&self) -> Permit<'_> {
        loop {
            let notified = self.changed.notified();
            let admission = {
                let mut c = self.lock();
                let before = c.state();
                let a = c.admit(now());
                if c.state() != before {
                    self.publish(c.state());
                }
                a
            };
            match admission {
                Admission::Go => return Permit { breaker: self, probe: false, recorded: false },
                Admission::Probe => {
                    info!("sink circuit half open: sending one probe request");
                    return Permit { breaker: self, probe: true, recorded: false };
                }
                Admission::Wait(d) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(d) => {}
                    }
                }
            }
        }
    }

    /// Records how the request admitted by `permit` ended.
    pub fn record(&self, mut permit: Permit<'_>, outcome: Outcome) {
        permit.recorded = true;
        self.settle(permit.probe, outcome);
    }

    fn settle(&self, probe: bool, outcome: Outcome) {
        let mut c = self.lock();
        if let Some(state) = c.record(probe, outcome, now()) {
            match state {
                State::Open { until } => {
                    let for_ms = u64::try_from(until.saturating_duration_since(now()).as_millis()).unwrap_or(u64::MAX);
                    warn!(open_for_ms = for_ms, "sink circuit open: the ITSM keeps failing; events wait in Kafka");
                    self.opened.inc();
                }
                State::Closed { failures: 0 } if probe => info!("sink circuit closed: the ITSM answers again"),
                _ => {}
            }
            self.publish(state);
            self.changed.notify_waiters();
        }
    }

    fn publish(&self, state: State) {
        self.state.set(state.gauge());
        self.closed_tx.send_if_modified(|closed| {
            let now = matches!(state, State::Closed { .. });
            std::mem::replace(closed, now) != now
        });
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.settle(self.probe, Outcome::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Duration = Duration::from_secs(10);

    fn failed(c: &mut Circuit, n: u32, now: Instant) {
        for _ in 0..n {
            assert_eq!(c.admit(now), Admission::Go);
            c.record(false, Outcome::Failed, now);
        }
    }

    #[test]
    fn opens_after_threshold_failures_in_a_row() {
        let t0 = Instant::now();
        let mut c = Circuit::new(3, OPEN);
        failed(&mut c, 2, t0);
        assert_eq!(c.state(), State::Closed { failures: 2 });
        assert_eq!(c.record(false, Outcome::Failed, t0), Some(State::Open { until: t0 + OPEN }));
        assert_eq!(c.admit(t0 + Duration::from_secs(3)), Admission::Wait(RECHECK));
        assert_eq!(c.admit(t0 + OPEN - Duration::from_millis(300)), Admission::Wait(Duration::from_millis(300)));
    }

    #[test]
    fn an_answer_resets_the_count() {
        let t0 = Instant::now();
        let mut c = Circuit::new(3, OPEN);
        failed(&mut c, 2, t0);
        c.record(false, Outcome::Answered, t0);
        failed(&mut c, 2, t0);
        assert_eq!(c.state(), State::Closed { failures: 2 }, "two in a row, not four in all");
    }

    #[test]
    fn one_probe_after_the_open_period_and_its_answer_closes() {
        let t0 = Instant::now();
        let mut c = Circuit::new(1, OPEN);
        failed(&mut c, 1, t0);
        let later = t0 + OPEN;
        assert_eq!(c.admit(later), Admission::Probe);
        assert_eq!(c.admit(later), Admission::Wait(RECHECK), "only one probe at a time");
        assert_eq!(c.record(true, Outcome::Answered, later), Some(State::Closed { failures: 0 }));
        assert_eq!(c.admit(later), Admission::Go);
    }

    #[test]
    fn a_failed_probe_opens_again_for_the_full_period() {
        let t0 = Instant::now();
        let mut c = Circuit::new(1, OPEN);
        failed(&mut c, 1, t0);
        let later = t0 + OPEN + Duration::from_secs(1);
        assert_eq!(c.admit(later), Admission::Probe);
        assert_eq!(c.record(true, Outcome::Failed, later), Some(State::Open { until: later + OPEN }));
    }

    #[test]
    fn an_abandoned_probe_lets_another_worker_probe() {
        let t0 = Instant::now();
        let mut c = Circuit::new(1, OPEN);
        failed(&mut c, 1, t0);
        assert_eq!(c.admit(t0 + OPEN), Admission::Probe);
        c.record(true, Outcome::Abandoned, t0 + OPEN);
        assert_eq!(c.admit(t0 + OPEN), Admission::Probe);
    }

    #[test]
    fn late_answers_of_requests_sent_before_opening_do_not_close_it() {
        let t0 = Instant::now();
        let mut c = Circuit::new(2, OPEN);
        failed(&mut c, 2, t0);
        assert_eq!(c.record(false, Outcome::Answered, t0), None);
        assert_eq!(c.record(false, Outcome::Failed, t0), None, "nor push the reopening further");
        assert!(matches!(c.state(), State::Open { .. }));
    }

    #[test]
    fn threshold_zero_never_opens() {
        let t0 = Instant::now();
        let mut c = Circuit::new(0, OPEN);
        failed(&mut c, 1000, t0);
        assert!(matches!(c.state(), State::Closed { .. }));
    }

    #[test]
    fn outcomes_of_sink_results() {
        assert_eq!(Outcome::of(&Ok::<(), SinkError>(())), Outcome::Answered);
        assert_eq!(Outcome::of::<()>(&Err(SinkError::Permanent("400".into()))), Outcome::Answered);
        let retryable = SinkError::Retryable { message: "503".into(), retry_after: None, maybe_applied: false };
        assert_eq!(Outcome::of::<()>(&Err(retryable)), Outcome::Failed);
        assert_eq!(Outcome::of::<()>(&Err(SinkError::Cancelled)), Outcome::Abandoned);
    }

    fn breaker(threshold: u32, open_for: Duration) -> Breaker {
        let cfg = CircuitConfig { failure_threshold: threshold, open_for: crate::config::HumanDuration(open_for) };
        Breaker::new(&cfg, &Metrics::new(), "default")
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_workers_are_held_until_the_probe_answers() {
        let b = std::sync::Arc::new(breaker(1, Duration::from_secs(5)));
        let mut closed = b.closed();
        let p = b.admit().await;
        b.record(p, Outcome::Failed);
        assert!(!*closed.borrow_and_update(), "the core is told to stop reading");
        assert_eq!(b.state.get(), 1);
        assert_eq!(b.opened.get(), 1);

        // After the open period one worker probes; a second one waits for it.
        let probe = b.admit().await;
        assert!(probe.probe);
        assert_eq!(b.state.get(), 2);
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let p = b2.admit().await;
            let probe = p.probe;
            b2.record(p, Outcome::Answered);
            probe
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiter.is_finished(), "no second request while the probe is out");
        b.record(probe, Outcome::Answered);
        assert!(!waiter.await.unwrap(), "after the probe, requests flow normally");
        assert!(*closed.borrow_and_update());
        assert_eq!(b.state.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_permit_counts_as_abandoned() {
        let b = breaker(1, Duration::from_secs(5));
        let p = b.admit().await;
        b.record(p, Outcome::Failed);
        drop(b.admit().await);
        assert_eq!(b.lock().state(), State::HalfOpen { probing: false });
        assert!(b.admit().await.probe, "the next worker probes instead");
    }
}
