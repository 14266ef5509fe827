//! Fingerprint state: a repeat of a firing fingerprint is deduplicated, a new
//! firing episode starts (or renews) its state, state changes are counted for
//! flap detection, and cleared state is released with the offsets it held.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::offset_book::{OffsetBook, PartId};
use super::{Core, Decision, DecisionKind, Fp};
use crate::event::{Event, Severity};
use crate::topology::CiIdx;

/// Records a state change of `fp` at event time `t`; true when it has just
/// started flapping. Keeps at most `threshold` change times.
pub(super) fn note_change(fp: &mut Fp, t: DateTime<Utc>, threshold: usize, window: chrono::Duration) -> bool {
    if threshold == 0 {
        return false;
    }
    if fp.flapping && fp.changes.back().is_some_and(|last| t - *last >= window) {
        fp.flapping = false;
        fp.flap_noted = false;
    }
    fp.changes.push_back(t);
    while fp.changes.front().is_some_and(|c| t - *c > window) || fp.changes.len() > threshold {
        fp.changes.pop_front();
    }
    if !fp.flapping && fp.changes.len() >= threshold {
        fp.flapping = true;
        return true;
    }
    false
}

/// Holds the offset of `part` for `fp`, unless `fp` already holds one in that partition.
pub(super) fn hold(fp: &mut Fp, offsets: &mut OffsetBook, part: Option<(PartId, i64)>) {
    if let Some((p, off)) = part {
        if !fp.holds.iter().any(|(hp, _)| *hp == p) {
            fp.holds.push((p, off));
            offsets.hold(p, off);
        }
    }
}

impl Core {
    /// A firing of the cleared fingerprint `key` that happened before its
    /// latest resolve, read after it (out of order across partitions): it
    /// starts nothing, or the incident would be reopened with no resolve to
    /// follow.
    pub(super) fn stale_firing(&self, key: &str, ev: &Event) -> Option<Decision> {
        let fp = self.fps.get(key).filter(|f| !f.firing)?;
        let cleared = fp.cleared_at.filter(|c| ev.time <= *c)?;
        Some(Decision {
            kind: DecisionKind::Deduplicated,
            fingerprint: Some(key.to_string()),
            incident: fp.incident,
            reason: format!(
                "fired at {}, before its resolve at {} that was read first (out of order): ignored",
                ev.time.to_rfc3339(),
                cleared.to_rfc3339()
            ),
        })
    }

    /// A repeat of the firing fingerprint `key`: counted, its severity raised
    /// if higher, its incident touched. None when `key` is not firing.
    pub(super) fn dedup(
        &mut self,
        key: &str,
        ev: &Event,
        severity: Severity,
        now: DateTime<Utc>,
        part: Option<(PartId, i64)>,
    ) -> Option<Decision> {
        let expires = self.expires_of(ev);
        let fp = self.fps.get_mut(key).filter(|f| f.firing)?;
        fp.count += 1;
        fp.last_seen = ev.time.max(fp.last_seen);
        fp.expires = expires.max(fp.expires);
        hold(fp, &mut self.offsets, part);
        let raised = severity > fp.severity;
        if raised {
            fp.severity = severity;
        }
        let (inc_id, ci, topo) = (fp.incident, fp.ci, fp.topology);
        if topo {
            self.ci_seen(ci, now);
        }
        if let Some(inc) = inc_id.and_then(|i| self.incidents.get_mut(&i)) {
            inc.last_activity = now;
            if raised {
                inc.dirty = true;
                inc.notes.push(format!("{key}: severity raised to {severity}"));
            }
        }
        Some(Decision {
            kind: DecisionKind::Deduplicated,
            fingerprint: Some(key.to_string()),
            incident: inc_id,
            reason: "repeat of a firing fingerprint".into(),
        })
    }

    /// A new firing episode of fingerprint `key`: starts its state, or renews
    /// the state of a cleared one.
    pub(super) fn start_episode(
        &mut self,
        key: &str,
        ev: &Event,
        severity: Severity,
        ci: Option<CiIdx>,
        topology: bool,
        part: Option<(PartId, i64)>,
    ) {
        let fp = self.fps.entry(key.to_string()).or_insert_with(|| Fp {
            source: ev.source.clone(),
            check: ev.check.clone(),
            summary: String::new(),
            severity,
            firing: false,
            ci,
            count: 0,
            first_seen: ev.time,
            last_seen: ev.time,
            episode_start: ev.time,
            incident: None,
            topology,
            holds: Vec::new(),
            changes: VecDeque::new(),
            flapping: false,
            flap_noted: false,
            expires: None,
            cleared_at: None,
        });
        fp.firing = true;
        note_change(fp, ev.time, self.cfg.flap_threshold, self.cfg.flap_window);
        fp.count += 1;
        fp.severity = severity;
        fp.summary = ev.summary.clone();
        fp.ci = ci;
        fp.topology = topology;
        fp.episode_start = ev.time;
        fp.last_seen = ev.time;
        hold(fp, &mut self.offsets, part);
        let expires = self.expires_of(ev);
        self.set_expiry(key, expires);
    }

    /// Forgets a cleared fingerprint and releases its offsets.
    pub(super) fn release_fp(&mut self, key: &str) {
        self.changes.fingerprint(key);
        if let Some(fp) = self.fps.remove(key) {
            for (p, off) in fp.holds {
                self.offsets.release(p, off);
            }
        }
    }
}
