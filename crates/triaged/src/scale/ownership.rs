//! Which input partitions this instance owns, and whether it may still act
//! for them.
//!
//! With a repartition topic (`[rekey]`), the correlation state of each
//! partition lives in a core of its own, and every sink action carries a
//! [`Claim`]: the partition and the assignment epoch its state was built
//! under. A sink worker sends an action only while that assignment still
//! holds. An action of a partition revoked (or revoked and assigned again,
//! which restarts it from its committed offset) is dropped: the partition's
//! new owner rebuilds the same incident from the log, under the same key.
//!
//! The group coordinator can also take partitions away while this process is
//! not running at all (SIGSTOP, a VM paused, a long swap storm): once the
//! session timeout passes without a heartbeat, another member gets them, and
//! this process only learns so after it resumes. A watch thread notices such
//! a stall, and every claim then waits until the consumer has been through a
//! rebalance, or a whole session timeout (and librdkafka's serve interval)
//! has passed without one: by then librdkafka has either kept the session
//! (a heartbeat answered) or declared the assignment lost itself.
//!
//! librdkafka declares a lost assignment (an atomic flag, see
//! [`Ownership::probe_consumer`]) before the revoke reaches the rebalance
//! callback, and that callback first waits for the revoked partitions'
//! drain (up to `DRAIN_WITHIN`). Under load that path can outlast the
//! stall's hold, so a claim is also lost as soon as the consumer reports its
//! assignment lost, whatever the hold and the callbacks say.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The partition and assignment epoch an action's state was built under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub topic: String,
    pub partition: i32,
    pub epoch: u64,
}

/// What a sink worker may do with a claim now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The assignment holds: send.
    Owned,
    /// Revoked, assigned again since, or the consumer reports its
    /// assignment lost: drop the action.
    Lost,
    /// The process stalled; ask again after this long.
    Wait(Duration),
}

#[derive(Default)]
struct Assignments {
    owned: HashMap<(String, i32), u64>,
    /// After a stall, claims wait until then, or until the next assignment.
    suspect_until: Option<Instant>,
}

/// Asks the consumer whether librdkafka considers its current assignment
/// lost (`rd_kafka_assignment_lost`): set the moment librdkafka gives the
/// session up, before the revoke is delivered to the application.
pub type LostProbe = Box<dyn Fn() -> bool + Send + Sync>;

/// Shared by the consumer's rebalance callbacks (writers) and the sink
/// workers (readers).
pub struct Ownership {
    inner: Mutex<Assignments>,
    next_epoch: AtomicU64,
    base: Instant,
    /// Milliseconds since `base` at the watch thread's last beat.
    beat: AtomicU64,
    /// A gap between beats longer than this is a stall.
    stall_limit: Duration,
    /// How long claims wait after a stall when no rebalance comes.
    hold: Duration,
    /// The consumer whose assignment the claims are of (see [`LostProbe`]).
    lost_probe: OnceLock<LostProbe>,
    stop: AtomicBool,
}

const BEAT: Duration = Duration::from_millis(50);

/// librdkafka's main thread judges the group session at least this often
/// (it wakes at least once a second). A session lost during a stall is
/// declared lost by librdkafka within the session timeout of the resume
/// (its own session timer, or the coordinator's answer to a heartbeat),
/// plus this: the stall's hold lasts that long.
const LIBRDKAFKA_SERVE: Duration = Duration::from_secs(1);

fn lock(m: &Mutex<Assignments>) -> MutexGuard<'_, Assignments> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Ownership {
    /// `session_timeout` is the consumer's `session.timeout.ms`: a stall
    /// of a third of it makes claims wait for up to the whole of it, and
    /// librdkafka's serve interval.
    pub fn new(session_timeout: Duration) -> Arc<Ownership> {
        Arc::new(Ownership {
            inner: Mutex::new(Assignments::default()),
            next_epoch: AtomicU64::new(1),
            base: Instant::now(),
            beat: AtomicU64::new(0),
            stall_limit: (session_timeout / 3).max(BEAT * 4),
            hold: session_timeout + LIBRDKAFKA_SERVE,
            lost_probe: OnceLock::new(),
            stop: AtomicBool::new(false),
        })
    }

    /// Consults `probe` at every check: while it says the assignment is
    /// lost, every claim is [`Verdict::Lost`]. Set once; later calls are
    /// ignored.
    pub fn probe_consumer(&self, probe: LostProbe) {
        let _ = self.lost_probe.set(probe);
    }

    /// Whether the consumer has declared its assignment lost.
    fn consumer_lost(&self) -> bool {
        self.lost_probe.get().is_some_and(|p| p())
    }

    /// Starts the watch thread; it ends with [`Ownership::stop`]. A plain
    /// thread, so that a busy async runtime is not taken for a stall.
    pub fn watch(self: &Arc<Ownership>) -> std::thread::JoinHandle<()> {
        let me = Arc::clone(self);
        me.beat_now();
        std::thread::Builder::new()
            .name("triaged-stall-watch".into())
            .spawn(move || {
                while !me.stop.load(Ordering::Acquire) {
                    std::thread::sleep(BEAT);
                    me.note_gap(Instant::now());
                }
            })
            .expect("spawning a thread")
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn beat_now(&self) {
        self.beat.store(self.base.elapsed().as_millis() as u64, Ordering::Release);
    }

    fn last_beat(&self) -> Instant {
        self.base + Duration::from_millis(self.beat.load(Ordering::Acquire))
    }

    /// Records a beat at `now`; a long gap since the previous one is a stall.
    fn note_gap(&self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_beat());
        if gap > self.stall_limit {
            self.stalled(now, gap);
        }
        self.beat.store(now.saturating_duration_since(self.base).as_millis() as u64, Ordering::Release);
    }

    fn stalled(&self, now: Instant, gap: Duration) {
        let mut inner = lock(&self.inner);
        if inner.suspect_until.is_none_or(|u| u < now + self.hold) {
            if inner.suspect_until.is_none() {
                warn!(stalled = ?gap, hold = ?self.hold, "the process was stalled; sink actions wait until the consumer group confirms the assignment");
            }
            inner.suspect_until = Some(now + self.hold);
        }
    }

    /// A partition was assigned: returns its new epoch. An assignment also
    /// proves membership, so claims no longer wait on an earlier stall.
    pub fn assigned(&self, topic: &str, partition: i32) -> u64 {
        let epoch = self.next_epoch.fetch_add(1, Ordering::AcqRel);
        let mut inner = lock(&self.inner);
        inner.owned.insert((topic.to_owned(), partition), epoch);
        inner.suspect_until = None;
        epoch
    }

    pub fn revoked(&self, topic: &str, partition: i32) {
        lock(&self.inner).owned.remove(&(topic.to_owned(), partition));
    }

    /// The current epoch of an owned partition.
    pub fn epoch(&self, topic: &str, partition: i32) -> Option<u64> {
        lock(&self.inner).owned.get(&(topic.to_owned(), partition)).copied()
    }

    /// Waits while a stall is being confirmed: `Some(true)` when `claim`
    /// holds, `Some(false)` when it is lost, `None` once `stop` is cancelled.
    pub async fn wait(&self, claim: &Claim, stop: &CancellationToken) -> Option<bool> {
        loop {
            match self.check(claim) {
                Verdict::Owned => return Some(true),
                Verdict::Lost => return Some(false),
                Verdict::Wait(d) => tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.cancelled() => return None,
                },
            }
        }
    }

    /// Resolves once `claim` is lost (checked every 100 ms).
    pub async fn lost(&self, claim: &Claim) {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            if self.check(claim) == Verdict::Lost {
                return;
            }
        }
    }

    /// Whether an action under `claim` may be sent now.
    pub fn check(&self, claim: &Claim) -> Verdict {
        self.check_at(claim, Instant::now())
    }

    fn check_at(&self, claim: &Claim, now: Instant) -> Verdict {
        // The watch thread may not have run yet since the process resumed.
        let gap = now.saturating_duration_since(self.last_beat());
        if gap > self.stall_limit {
            self.stalled(now, gap);
        }
        // Read before the assignments: the flag is cleared only once the
        // revoke it announces has been recorded here.
        let consumer_lost = self.consumer_lost();
        let inner = lock(&self.inner);
        if consumer_lost || inner.owned.get(&(claim.topic.clone(), claim.partition)) != Some(&claim.epoch) {
            return Verdict::Lost;
        }
        match inner.suspect_until {
            Some(until) if until > now => Verdict::Wait((until - now).min(BEAT * 2)),
            _ => Verdict::Owned,
        }
    }
}

impl Drop for Ownership {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(o: &Ownership, p: i32) -> Claim {
        Claim { topic: "t".into(), partition: p, epoch: o.epoch("t", p).unwrap() }
    }

    /// The watch thread's beats from `from` to `to`.
    fn beats(o: &Ownership, from: Instant, to: Instant) {
        let mut t = from;
        while t < to {
            t += BEAT;
            o.note_gap(t);
        }
    }

    #[test]
    fn claims_hold_only_for_their_assignment() {
        let o = Ownership::new(Duration::from_secs(3));
        o.assigned("t", 0);
        let c = claim(&o, 0);
        o.beat_now();
        assert_eq!(o.check(&c), Verdict::Owned);
        o.revoked("t", 0);
        assert_eq!(o.check(&c), Verdict::Lost);
        // Assigned again: the old state was dropped with the revoke, and
        // its actions stay dropped.
        o.assigned("t", 0);
        assert_eq!(o.check(&c), Verdict::Lost);
        assert_eq!(o.check(&claim(&o, 0)), Verdict::Owned);
    }

    #[test]
    fn a_stall_holds_claims_until_a_rebalance_or_the_session_timeout() {
        let o = Ownership::new(Duration::from_secs(3));
        o.assigned("t", 0);
        let c = claim(&o, 0);
        o.beat_now();
        let t0 = o.last_beat();
        // No beat for 2 s (over a third of the session timeout): a stall.
        let resumed = t0 + Duration::from_secs(2);
        assert!(matches!(o.check_at(&c, resumed), Verdict::Wait(_)));
        o.note_gap(resumed);
        assert!(matches!(o.check_at(&c, resumed + Duration::from_secs(1)), Verdict::Wait(_)));
        // A session timeout after the stall, librdkafka may not have judged
        // its session yet: still waiting.
        beats(&o, resumed, resumed + Duration::from_millis(3_500));
        assert!(matches!(o.check_at(&c, resumed + Duration::from_millis(3_500)), Verdict::Wait(_)));
        // And its serve interval more with no rebalance: the session held.
        beats(&o, resumed + Duration::from_millis(3_500), resumed + Duration::from_millis(3_950));
        assert_eq!(o.check_at(&c, resumed + Duration::from_millis(4_001)), Verdict::Owned);

        // Another stall, then a rebalance that keeps the partition: the new
        // epoch is owned at once, the old one is lost.
        let again = resumed + Duration::from_secs(6);
        o.note_gap(again);
        assert!(matches!(o.check_at(&c, again), Verdict::Wait(_)));
        o.assigned("t", 0);
        assert_eq!(o.check_at(&c, again), Verdict::Lost);
        assert_eq!(o.check_at(&claim(&o, 0), again), Verdict::Owned);
    }

    /// The stopped instance of `tests/it/stall.rs`: librdkafka gives the
    /// session up at once on resume, but the revoke reaches the rebalance
    /// callback only after the drain of the revoked partitions, which can
    /// take longer than the stall's hold.
    #[test]
    fn a_claim_is_lost_once_the_consumer_reports_its_assignment_lost() {
        let o = Ownership::new(Duration::from_secs(3));
        let lost = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&lost);
        o.probe_consumer(Box::new(move || flag.load(Ordering::Acquire)));
        o.assigned("t", 0);
        let c = claim(&o, 0);
        o.beat_now();
        assert_eq!(o.check(&c), Verdict::Owned);
        // Stopped past the session timeout; on resume librdkafka declares
        // the assignment lost, and no revoke is recorded yet.
        let resumed = o.last_beat() + Duration::from_secs(5);
        o.note_gap(resumed);
        lost.store(true, Ordering::Release);
        assert_eq!(o.check_at(&c, resumed), Verdict::Lost);
        // However long the revoke takes to arrive, the claim never comes back.
        beats(&o, resumed, resumed + Duration::from_secs(10));
        assert_eq!(o.check_at(&c, resumed + Duration::from_secs(10)), Verdict::Lost);
        // The revoke is recorded, then librdkafka clears its flag; a later
        // assignment's claim is owned at once.
        o.revoked("t", 0);
        lost.store(false, Ordering::Release);
        assert_eq!(o.check_at(&c, resumed + Duration::from_secs(10)), Verdict::Lost);
        o.assigned("t", 0);
        assert_eq!(o.check_at(&claim(&o, 0), resumed + Duration::from_secs(10)), Verdict::Owned);
    }

    #[test]
    fn short_gaps_are_not_stalls() {
        let o = Ownership::new(Duration::from_secs(3));
        o.assigned("t", 1);
        let c = claim(&o, 1);
        o.beat_now();
        let t = o.last_beat() + Duration::from_millis(900);
        o.note_gap(t);
        assert_eq!(o.check_at(&c, t), Verdict::Owned);
    }
}
