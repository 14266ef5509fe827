//! Read-backs of ITSM records routed to the core that holds the incident:
//! the incidents to read back, with the core each lives in, and the
//! observations handed back.

use chrono::{DateTime, Utc};

use super::Cores;

/// The core an incident read back belongs to: its partition and the epoch
/// of the claim it was read under (`""`, 0, 0 for the single core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolledAt {
    pub topic: String,
    pub partition: i32,
    pub epoch: u64,
}

/// An observation of an ITSM record, and the core it is for (`None`:
/// whichever holds the key, for a webhook, which cannot know).
#[derive(Debug, Clone)]
pub struct Observed {
    pub at: Option<PolledAt>,
    pub observation: crate::core::Observation,
}

impl Cores {
    /// See [`Core::observe`]; with a core per partition, only while the
    /// partition's core is the one of `at`'s epoch. Without `at` (a webhook),
    /// every core this instance owns is asked; the one holding the key acts.
    pub fn observe(&mut self, at: Option<&PolledAt>, o: &crate::core::Observation, now: DateTime<Utc>) -> Vec<crate::core::RemoteOutcome> {
        let Some(at) = at else {
            let per_partition = self.per_partition;
            return self
                .slots
                .values_mut()
                .filter(|s| !per_partition || s.claim.is_some())
                .map(|s| s.core.observe(o, now))
                .find(|out| !out.is_empty())
                .unwrap_or_default();
        };
        let slot = if self.per_partition {
            self.slots.get_mut(&Some((at.topic.clone(), at.partition))).filter(|s| s.claim.as_ref().is_some_and(|c| c.epoch == at.epoch))
        } else {
            self.slots.get_mut(&None)
        };
        slot.map(|s| s.core.observe(o, now)).unwrap_or_default()
    }

    /// Every incident open at the ITSM, with the core it lives in, to read
    /// back there (the snapshot says which sinks it is routed to).
    pub fn polled(&self) -> Vec<(PolledAt, crate::incident::Incident)> {
        let mut out = Vec::new();
        for (slot_key, slot) in &self.slots {
            let (topic, partition) = slot_key.clone().unwrap_or_default();
            let epoch = slot.claim.as_ref().map_or(0, |c| c.epoch);
            if self.per_partition && slot.claim.is_none() {
                continue;
            }
            for incident in slot.core.open_incidents() {
                out.push((PolledAt { topic: topic.clone(), partition, epoch }, incident));
            }
        }
        out
    }
}
