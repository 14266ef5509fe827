//! Next-expected offset bookkeeping per partition (pure, unit-tested): tells
//! a received message that is next from a redelivery, a gap to seek back
//! over, or a hole in the log.

/// Where a received message stands relative to its partition's next expected offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Position {
    /// The next message to hand to the core (or the first one seen).
    Next,
    /// Already handed over: a redelivery. Drop it.
    Redelivery { expected: i64 },
    /// Messages before it were not handed over (e.g. prefetched, then
    /// discarded by a pause): seek back to `expected` and drop it.
    Gap { expected: i64 },
    /// The first message since a seek back to `expected` is further on: the
    /// log has no messages in between (compaction, transaction markers).
    /// Hand it over.
    Hole { expected: i64 },
}

#[derive(Debug, Clone, Copy)]
struct PartState {
    expected: i64,
    /// A seek to `expected` was issued and no message has been handed over
    /// since. librdkafka discards everything fetched before a seek (version
    /// barrier), so the next message is the first one at or after `expected`.
    sought: bool,
}

/// `next_expected` per (topic index, partition): a dense table, since both
/// are small indexes, so the per-message lookups do not hash.
#[derive(Debug, Default)]
pub(super) struct PartitionTracker {
    parts: Vec<Vec<Option<PartState>>>,
}

impl PartitionTracker {
    fn get(&self, topic: usize, partition: i32) -> Option<&PartState> {
        let p = usize::try_from(partition).ok()?;
        self.parts.get(topic)?.get(p)?.as_ref()
    }

    fn get_mut(&mut self, topic: usize, partition: i32) -> Option<&mut PartState> {
        let p = usize::try_from(partition).ok()?;
        self.parts.get_mut(topic)?.get_mut(p)?.as_mut()
    }

    /// The slot of a partition, created empty on first use (`None` for a
    /// negative partition, which Kafka never delivers).
    fn slot(&mut self, topic: usize, partition: i32) -> Option<&mut Option<PartState>> {
        let p = usize::try_from(partition).ok()?;
        if self.parts.len() <= topic {
            self.parts.resize_with(topic + 1, Vec::new);
        }
        let parts = &mut self.parts[topic];
        if parts.len() <= p {
            parts.resize(p + 1, None);
        }
        Some(&mut parts[p])
    }

    pub(super) fn classify(&self, topic: usize, partition: i32, offset: i64) -> Position {
        match self.get(topic, partition) {
            None => Position::Next,
            Some(s) if offset == s.expected => Position::Next,
            Some(s) if offset < s.expected => Position::Redelivery { expected: s.expected },
            Some(s) if s.sought => Position::Hole { expected: s.expected },
            Some(s) => Position::Gap { expected: s.expected },
        }
    }

    /// The message at `offset` is handed over. Returns true when it is the
    /// first one of the partition since its assignment.
    pub(super) fn accept(&mut self, topic: usize, partition: i32, offset: i64) -> bool {
        let Some(slot) = self.slot(topic, partition) else {
            return false;
        };
        let first = slot.is_none();
        *slot = Some(PartState { expected: offset + 1, sought: false });
        first
    }

    /// A message received while paused is dropped; if nothing was handed over
    /// from its partition yet, it is where consumption must resume.
    pub(super) fn note_unhanded(&mut self, topic: usize, partition: i32, offset: i64) {
        if let Some(slot) = self.slot(topic, partition) {
            slot.get_or_insert(PartState { expected: offset, sought: false });
        }
    }

    /// A seek back to the expected offset was issued.
    pub(super) fn sought(&mut self, topic: usize, partition: i32) {
        if let Some(s) = self.get_mut(topic, partition) {
            s.sought = true;
        }
    }

    pub(super) fn expected(&self, topic: usize, partition: i32) -> Option<i64> {
        self.get(topic, partition).map(|s| s.expected)
    }

    pub(super) fn forget(&mut self, topic: usize, partition: i32) {
        if let Some(slot) = self.slot(topic, partition) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_sequences_each_partition() {
        let mut t = PartitionTracker::default();
        // The first message of a partition is accepted whatever its offset.
        assert_eq!(t.classify(0, 0, 42), Position::Next);
        assert!(t.accept(0, 0, 42));
        assert!(!t.accept(0, 0, 43));
        let cases = [
            (44, Position::Next),
            (43, Position::Redelivery { expected: 44 }),
            (10, Position::Redelivery { expected: 44 }),
            (45, Position::Gap { expected: 44 }),
            (100, Position::Gap { expected: 44 }),
        ];
        for (offset, want) in cases {
            assert_eq!(t.classify(0, 0, offset), want, "offset {offset}");
        }
        // Partitions and topics are independent.
        assert_eq!(t.classify(0, 1, 0), Position::Next);
        assert_eq!(t.classify(1, 0, 7), Position::Next);
        assert_eq!(t.expected(0, 0), Some(44));
        t.forget(0, 0);
        assert_eq!(t.classify(0, 0, 3), Position::Next);
        assert_eq!(t.expected(0, 0), None);
    }

    #[test]
    fn messages_seen_while_paused_set_the_resume_point_once() {
        let mut t = PartitionTracker::default();
        // Known partition: the resume point stays the next expected offset.
        t.accept(0, 0, 9);
        t.note_unhanded(0, 0, 10);
        t.note_unhanded(0, 0, 11);
        assert_eq!(t.expected(0, 0), Some(10));
        // Unknown partition: the first message seen is where to resume.
        t.note_unhanded(0, 1, 5);
        t.note_unhanded(0, 1, 6);
        assert_eq!(t.expected(0, 1), Some(5));
        assert_eq!(t.classify(0, 1, 5), Position::Next);
        assert_eq!(t.classify(0, 1, 6), Position::Gap { expected: 5 });
    }

    #[test]
    fn after_a_seek_the_next_message_is_authoritative() {
        let mut t = PartitionTracker::default();
        t.accept(0, 0, 4);
        // A gap before any seek: seek back, drop the message.
        assert_eq!(t.classify(0, 0, 9), Position::Gap { expected: 5 });
        t.sought(0, 0);
        // After the seek: the expected offset is handed over as usual...
        assert_eq!(t.classify(0, 0, 5), Position::Next);
        // ...and a later one means the log holds nothing in between.
        assert_eq!(t.classify(0, 0, 8), Position::Hole { expected: 5 });
        assert_eq!(t.classify(0, 0, 3), Position::Redelivery { expected: 5 });
        t.accept(0, 0, 8);
        // Handing over a message ends the post-seek state.
        assert_eq!(t.classify(0, 0, 12), Position::Gap { expected: 9 });
        // Seeking an unknown partition marks nothing.
        t.sought(0, 1);
        assert_eq!(t.expected(0, 1), None);
    }

    #[test]
    fn negative_partitions_are_never_tracked() {
        let mut t = PartitionTracker::default();
        assert!(!t.accept(0, -1, 5));
        t.note_unhanded(0, -1, 5);
        assert_eq!(t.expected(0, -1), None);
        assert_eq!(t.classify(0, -1, 0), Position::Next);
        t.forget(3, 7); // unknown: nothing to do
        assert_eq!(t.expected(3, 7), None);
    }
}
