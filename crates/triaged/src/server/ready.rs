//! What `/readyz` waits for besides the lifecycle phase: a reachable broker,
//! at least one assigned partition, and the state of the assigned partitions
//! restored from the changelog. The Kafka side (`source/context.rs`,
//! `app/handover.rs`) sets it; `/readyz` reads it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntGauge;

#[derive(Clone)]
pub struct Readiness(Arc<Inner>);

struct Inner {
    broker_up: AtomicBool,
    assigned: AtomicUsize,
    restored: AtomicBool,
    /// `triaged_kafka_broker_up`.
    gauge: IntGauge,
}

impl Readiness {
    /// Nothing is ready yet; `gauge` follows the broker state.
    pub fn new(gauge: IntGauge) -> Readiness {
        gauge.set(0);
        Readiness(Arc::new(Inner {
            broker_up: AtomicBool::new(false),
            assigned: AtomicUsize::new(0),
            restored: AtomicBool::new(false),
            gauge,
        }))
    }

    pub fn set_broker_up(&self, up: bool) {
        self.0.broker_up.store(up, Ordering::Relaxed);
        self.0.gauge.set(i64::from(up));
    }

    /// `assigned` partitions came, `revoked` went.
    pub fn partitions_changed(&self, assigned: usize, revoked: usize) {
        let a = &self.0.assigned;
        let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some((n + assigned).saturating_sub(revoked)));
    }

    /// Whether the state of every assigned partition has been restored.
    pub fn set_restored(&self, done: bool) {
        self.0.restored.store(done, Ordering::Relaxed);
    }

    /// What is still missing, in the order it is usually reached.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.0.broker_up.load(Ordering::Relaxed) {
            m.push("no Kafka broker reachable");
        }
        if self.0.assigned.load(Ordering::Relaxed) == 0 {
            m.push("no partition assigned");
        }
        if !self.0.restored.load(Ordering::Relaxed) {
            m.push("state not restored from the changelog");
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_broker_assignment_and_state() {
        let gauge = IntGauge::new("kafka_broker_up", "test").unwrap();
        let r = Readiness::new(gauge.clone());
        assert_eq!(r.missing().len(), 3);
        r.set_broker_up(true);
        assert_eq!(gauge.get(), 1);
        r.partitions_changed(2, 0);
        assert_eq!(r.missing(), ["state not restored from the changelog"]);
        r.set_restored(true);
        assert!(r.missing().is_empty());
        r.set_broker_up(false);
        assert_eq!((r.missing(), gauge.get()), (vec!["no Kafka broker reachable"], 0));
        r.set_broker_up(true);
        r.partitions_changed(0, 2);
        assert_eq!(r.missing(), ["no partition assigned"]);
    }
}
