//! Which Kafka offsets may be stored.
//!
//! **An offset is stored only when every event before it in its partition has
//! a durable effect.** Live correlation state holds a reference on the offset
//! of the event that started it; the safe offset of a partition is the lowest
//! held reference, or one past the last handled message when nothing is held.
//! After a crash, consumption restarts at that offset and replaying the log
//! rebuilds the live state, while deterministic incident keys keep the sink
//! idempotent.

use std::collections::{BTreeMap, HashMap};

use crate::event::Origin;

/// Compact partition identity used inside the core.
pub type PartId = u32;

#[derive(Debug, Default)]
struct PartitionHolds {
    topic: String,
    partition: i32,
    /// offset -> number of holders.
    held: BTreeMap<i64, u32>,
    /// One past the highest offset handled.
    next: i64,
    /// Last value reported by `safe_offsets`, so unchanged partitions are skipped.
    reported: i64,
}

/// Reference counts on offsets, per partition.
#[derive(Debug, Default)]
pub struct OffsetBook {
    ids: HashMap<(String, i32), PartId>,
    parts: Vec<PartitionHolds>,
}

impl OffsetBook {
    fn part_id(&mut self, topic: &str, partition: i32) -> PartId {
        if let Some(id) = self.ids.get(&(topic.to_string(), partition)) {
            return *id;
        }
        let id = self.parts.len() as PartId;
        self.parts.push(PartitionHolds { topic: topic.into(), partition, next: -1, reported: -1, ..Default::default() });
        self.ids.insert((topic.to_string(), partition), id);
        id
    }

    /// Records that the message at `origin` has been handled (its effect is
    /// either held or complete). Returns its partition id.
    pub fn handled(&mut self, origin: &Origin) -> PartId {
        let id = self.part_id(&origin.topic, origin.partition);
        let p = &mut self.parts[id as usize];
        p.next = p.next.max(origin.offset + 1);
        id
    }

    /// One past the highest offset handled, per partition.
    pub fn handled_next(&self) -> Vec<(String, i32, i64)> {
        self.parts.iter().filter(|p| p.next >= 0).map(|p| (p.topic.clone(), p.partition, p.next)).collect()
    }

    /// Takes a reference on `offset` of partition `part`.
    pub fn hold(&mut self, part: PartId, offset: i64) {
        *self.parts[part as usize].held.entry(offset).or_insert(0) += 1;
    }

    /// Drops a reference taken with `hold`.
    pub fn release(&mut self, part: PartId, offset: i64) {
        let held = &mut self.parts[part as usize].held;
        match held.get_mut(&offset) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                held.remove(&offset);
            }
            None => debug_assert!(false, "release of an offset not held: {part}@{offset}"),
        }
    }

    /// The next offset to consume that is safe to store for one partition.
    pub fn safe(&self, part: PartId) -> i64 {
        let p = &self.parts[part as usize];
        p.held.keys().next().map_or(p.next, |&o| o.min(p.next))
    }

    /// Safe next offsets that changed since the last call, as
    /// `(topic, partition, next_offset)`.
    pub fn take_changed(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for i in 0..self.parts.len() {
            let safe = self.safe(i as PartId);
            let p = &mut self.parts[i];
            if safe > p.reported && safe >= 0 {
                p.reported = safe;
                out.push((p.topic.clone(), p.partition, safe));
            }
        }
        out
    }

    /// Number of held references across all partitions.
    pub fn held_count(&self) -> usize {
        self.parts.iter().map(|p| p.held.values().map(|n| *n as usize).sum::<usize>()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(p: i32, off: i64) -> Origin {
        Origin { topic: "events".into(), partition: p, offset: off }
    }

    #[test]
    fn safe_offset_is_lowest_hold_or_next() {
        let mut b = OffsetBook::default();
        let p0 = b.handled(&o(0, 0));
        b.hold(p0, 0);
        b.handled(&o(0, 1));
        b.handled(&o(0, 2));
        b.hold(p0, 2);
        let p1 = b.handled(&o(1, 7));
        assert_eq!(b.safe(p0), 0);
        assert_eq!(b.safe(p1), 8);
        assert_eq!(b.take_changed(), vec![("events".into(), 0, 0), ("events".into(), 1, 8)]);
        assert_eq!(b.take_changed(), vec![], "unchanged partitions are not reported again");
        b.release(p0, 0);
        assert_eq!(b.safe(p0), 2);
        b.release(p0, 2);
        assert_eq!(b.safe(p0), 3);
        assert_eq!(b.take_changed(), vec![("events".into(), 0, 3)]);
        assert_eq!(b.held_count(), 0);
    }

    #[test]
    fn shared_holds_need_every_release() {
        let mut b = OffsetBook::default();
        let p = b.handled(&o(0, 5));
        b.hold(p, 5);
        b.hold(p, 5);
        b.release(p, 5);
        assert_eq!(b.safe(p), 5);
        b.release(p, 5);
        assert_eq!(b.safe(p), 6);
    }
}
