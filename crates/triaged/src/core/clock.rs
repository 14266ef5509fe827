//! The event-time clock of a core: every decision and every timer (group
//! wait, update interval, hold-down, reopen window, topology window, expiry)
//! runs on the events' own time, so a backlog read late (behind an open
//! circuit, after a restart) is decided as it would have been live, and the
//! daemon agrees with `replay` on the same log.
//!
//! Each input partition a core reads has a mark from its first event on:
//! the latest event time read from it, never ahead of the wall clock (a
//! producer's clock in the future cannot fire every timer at once). The
//! core's watermark is the lowest mark, so a partition still reading its
//! backlog holds the others' timers back. A partition that has delivered
//! nothing yet holds nothing back: an assigned partition may never deliver,
//! and the others' backlog must not wait for it. A partition with nothing to read for [`IDLE_AFTER`] (caught up, or
//! silent) follows the wall clock, so timers fire when no event comes. While
//! the core reads nothing at all (the sink's circuit is open, a checkpoint
//! cannot be written) no partition counts as idle: their backlog is unknown
//! and the watermark waits for it. The watermark never goes back.
//!
//! Events later than the watermark are still applied, with their own time
//! for the decisions that concern them alone (suppression, maintenance and
//! change windows, flapping); a resolve ahead of its firing is held for
//! `max_lateness` (`Core::clear`).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use crate::event::Origin;

/// How long a partition has nothing to read before its mark follows the
/// wall clock. Kafka answers a fetch with what it has within
/// `fetch.wait.max.ms` (500 ms by default), so a partition with a backlog is
/// never this quiet.
pub const IDLE_AFTER: Duration = Duration::seconds(1);

/// Timers run at least this far apart.
const MIN_TICK: Duration = Duration::milliseconds(250);

/// Through a gap between two watermarks the timers run once a second (so an
/// incident opened in the gap can also resolve in it, on time), for at most
/// this long; the rest of a longer gap is jumped.
const MAX_STEPPED: Duration = Duration::hours(1);

type Partition = Option<(String, i32)>;

#[derive(Debug, Clone)]
struct Mark {
    /// Latest event time read, capped by the wall clock; `None` before the
    /// first event.
    high: Option<DateTime<Utc>>,
    /// Wall time of the last message read.
    last_read: DateTime<Utc>,
}

/// The watermark over the partitions one core reads.
#[derive(Debug, Clone, Default)]
pub struct EventClock {
    marks: HashMap<Partition, Mark>,
    /// Wall time of the last assignment: with no partition read yet, the
    /// watermark follows the wall clock from `IDLE_AFTER` later (never
    /// before an assignment: the backlog has not even been asked for).
    assigned: Option<DateTime<Utc>>,
    now: Option<DateTime<Utc>>,
}

impl EventClock {
    /// Partitions were assigned (at start, at a failover).
    pub fn assigned(&mut self, wall: DateTime<Utc>) {
        self.assigned = Some(wall);
    }

    /// A partition is no longer read here.
    pub fn revoked(&mut self, topic: &str, partition: i32) {
        self.marks.remove(&Some((topic.to_owned(), partition)));
    }

    /// A message was read from `origin`'s partition (`None`: an event of no
    /// partition, as in tests).
    pub fn read(&mut self, origin: Option<&Origin>, wall: DateTime<Utc>) {
        let key = origin.map(|o| (o.topic.clone(), o.partition));
        self.marks.entry(key).or_insert(Mark { high: None, last_read: wall }).last_read = wall;
    }

    /// An event of time `time` was read from `origin`'s partition.
    pub fn observe(&mut self, origin: Option<&Origin>, time: DateTime<Utc>, wall: DateTime<Utc>) {
        let key = origin.map(|o| (o.topic.clone(), o.partition));
        let t = time.min(wall);
        let mark = self.marks.entry(key).or_insert(Mark { high: None, last_read: wall });
        mark.last_read = wall;
        mark.high = Some(mark.high.map_or(t, |h| h.max(t)));
    }

    /// The watermark at wall time `wall`; `reading` is false while the core
    /// reads nothing (then no partition is idle). `None` until some
    /// partition has a mark or the clock has been idle.
    pub fn watermark(&mut self, wall: DateTime<Utc>, reading: bool) -> Option<DateTime<Utc>> {
        let idle = |last: DateTime<Utc>| reading && wall - last >= IDLE_AFTER;
        let mut marks = self.marks.values().filter(|m| m.high.is_some()).peekable();
        let lowest = if marks.peek().is_none() {
            self.assigned.filter(|a| idle(*a)).map(|_| wall)
        } else {
            marks.filter_map(|m| if idle(m.last_read) { Some(wall) } else { m.high }).min()
        };
        if let Some(w) = lowest {
            self.now = Some(self.now.map_or(w, |n| n.max(w)));
        }
        self.now
    }
}

/// When the timers run to go from `last` (the last tick) to `to`: nothing
/// when less than [`MIN_TICK`] has passed; else every whole second of the
/// gap (up to [`MAX_STEPPED`] of it), then `to`.
pub fn steps(last: Option<DateTime<Utc>>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let Some(mut k) = last else { return vec![to] };
    if to - k < MIN_TICK {
        return Vec::new();
    }
    let second = Duration::seconds(1);
    let stop = to.min(k + MAX_STEPPED);
    let mut out = Vec::new();
    while k + second < stop {
        k += second;
        out.push(k);
    }
    out.push(to);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn origin(p: i32) -> Origin {
        Origin { topic: "events".into(), partition: p, offset: 0 }
    }

    #[test]
    fn a_backlog_is_decided_at_its_own_time_not_the_wall_clock() {
        let mut c = EventClock::default();
        c.observe(Some(&origin(0)), at(10), at(1000));
        assert_eq!(c.watermark(at(1000), true), Some(at(10)));
        c.observe(Some(&origin(0)), at(70), at(1000));
        assert_eq!(c.watermark(at(1000), true), Some(at(70)));
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark() {
        let mut c = EventClock::default();
        c.observe(Some(&origin(0)), at(100), at(1000));
        c.observe(Some(&origin(1)), at(100), at(1000));
        assert_eq!(c.watermark(at(1000), true), Some(at(100)));
        c.observe(Some(&origin(0)), at(500), at(1000));
        assert_eq!(c.watermark(at(1000), true), Some(at(100)));
        c.observe(Some(&origin(0)), at(510), at(1000));
        assert_eq!(c.watermark(at(1000), true), Some(at(100)));
    }

    #[test]
    fn an_idle_partition_follows_the_wall_clock_only_while_reading() {
        let mut c = EventClock::default();
        c.observe(Some(&origin(0)), at(990), at(1000));
        assert_eq!(c.watermark(at(1000) + Duration::milliseconds(500), true), Some(at(990)));
        assert_eq!(c.watermark(at(1005), false), Some(at(990)), "nothing is read: the backlog is unknown");
        assert_eq!(c.watermark(at(1005), true), Some(at(1005)));
        // A late event does not move the watermark back.
        c.observe(Some(&origin(0)), at(995), at(1005));
        assert_eq!(c.watermark(at(1005), true), Some(at(1005)));
    }

    #[test]
    fn with_nothing_read_the_clock_follows_the_wall_once_assigned_and_idle() {
        let mut c = EventClock::default();
        assert_eq!(c.watermark(at(1000), true), None, "nothing assigned: the backlog is not asked for yet");
        c.assigned(at(1010));
        assert_eq!(c.watermark(at(1010), true), None);
        assert_eq!(c.watermark(at(1012), true), Some(at(1012)));
    }

    #[test]
    fn an_event_from_the_future_is_capped_by_the_wall_clock() {
        let mut c = EventClock::default();
        c.observe(Some(&origin(0)), at(90_000), at(1000));
        assert_eq!(c.watermark(at(1000), true), Some(at(1000)));
    }

    #[test]
    fn a_revoked_partition_holds_nothing_back() {
        let mut c = EventClock::default();
        c.observe(Some(&origin(0)), at(500), at(1000));
        c.observe(Some(&origin(1)), at(100), at(1000));
        c.revoked("events", 1);
        assert_eq!(c.watermark(at(1000), true), Some(at(500)));
    }

    #[test]
    fn a_partition_that_delivered_nothing_holds_nothing_back() {
        let mut c = EventClock::default();
        c.read(Some(&origin(1)), at(1000));
        c.observe(Some(&origin(0)), at(500), at(1000));
        assert_eq!(c.watermark(at(1000), true), Some(at(500)));
    }

    #[test]
    fn timers_step_through_a_gap_once_a_second_then_jump() {
        assert_eq!(steps(None, at(5)), vec![at(5)]);
        assert!(steps(Some(at(5)), at(5) + Duration::milliseconds(100)).is_empty());
        assert_eq!(steps(Some(at(5)), at(8)), vec![at(6), at(7), at(8)]);
        let long = steps(Some(at(0)), at(86_400));
        assert_eq!(long.len(), 3600);
        assert_eq!(long[long.len() - 2], at(3599));
        assert_eq!(*long.last().unwrap(), at(86_400));
    }
}
