//! Expiry: a firing alert that is no longer refreshed resolves. Alertmanager
//! alerts carry `endsAt` (Alertmanager itself resolves them then); other
//! sources expire `stale_after` (per source, or the default) after their
//! last event, by event time. The clear goes the way of any resolve, with a
//! work note that says why.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};

use super::Core;
use crate::event::{Event, Status};

impl Core {
    /// When a firing fingerprint refreshed by `ev` expires, if ever.
    pub(super) fn expires_of(&self, ev: &Event) -> Option<DateTime<Utc>> {
        if let Some(end) = ev.ends_at {
            return Some(end);
        }
        let stale = self.cfg.stale_after_by_source.get(&ev.source).copied().unwrap_or(self.cfg.stale_after);
        (stale > chrono::Duration::zero()).then(|| ev.time.checked_add_signed(stale).unwrap_or(DateTime::<Utc>::MAX_UTC))
    }

    /// A new firing episode of `key` expires at `at`.
    pub(super) fn set_expiry(&mut self, key: &str, at: Option<DateTime<Utc>>) {
        if let Some(fp) = self.fps.get_mut(key) {
            fp.expires = at;
            if let Some(t) = at {
                self.expiry.push(Reverse((t, key.to_owned())));
            }
        }
    }

    /// Resolves the firing fingerprints whose expiry time has passed at `now`.
    pub(super) fn expire_due(&mut self, now: DateTime<Utc>) {
        while let Some(Reverse((t, _))) = self.expiry.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, key))) = self.expiry.pop() else { break };
            let Some(fp) = self.fps.get(&key).filter(|f| f.firing) else { continue };
            match fp.expires {
                // Refreshed since: due later.
                Some(e) if e > t => self.expiry.push(Reverse((e, key))),
                Some(e) => self.expire(&key, e, now),
                None => {}
            }
        }
    }

    fn expire(&mut self, key: &str, at: DateTime<Utc>, now: DateTime<Utc>) {
        let Some(fp) = self.fps.get(key) else { return };
        let why = format!(
            "{key} resolved by expiry: no event since {} (its endsAt or stale_after passed at {})",
            fp.last_seen.to_rfc3339(),
            at.to_rfc3339()
        );
        let ev = Event {
            source: fp.source.clone(),
            source_id: None,
            ci: Default::default(),
            check: fp.check.clone(),
            severity: fp.severity,
            status: Status::Resolved,
            summary: fp.summary.clone(),
            labels: Default::default(),
            annotations: Default::default(),
            time: at,
            origin: None,
            ends_at: None,
        };
        let inc = fp.incident;
        self.clear(key, &ev, now, None);
        self.changes.fingerprint(key);
        if let Some(inc) = inc.and_then(|i| self.incidents.get_mut(&i)) {
            inc.notes.push(why.clone());
            inc.dirty = true;
            inc.reasons.push(why);
        }
        *self.stats.decisions.entry("expired").or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::CorrelationConfig;
    use crate::core::CoreConfig;
    use crate::incident::ActionKind;
    use crate::rules::RuleSet;
    use crate::topology::Snapshot;

    #[test]
    fn an_alert_not_refreshed_resolves_at_ends_at_with_a_note_saying_so() {
        let t0 = Utc::now();
        let s = chrono::Duration::seconds;
        let cfg = CoreConfig::from_config(&CorrelationConfig::default());
        let hold = cfg.hold_down;
        let mut core = Core::new(cfg, Arc::new(RuleSet::default()), Arc::new(Snapshot::empty()));
        let ev = Event { ends_at: Some(t0 + s(120)), ..Event::host_down("web-1", Status::Firing, t0) };
        core.handle(&ev, t0);
        core.tick(t0 + s(60));
        let opened = core.take_actions();
        assert_eq!(opened.iter().map(|a| a.kind).collect::<Vec<_>>(), [ActionKind::Open]);
        core.ack(opened[0].id);
        core.tick(t0 + s(119));
        core.tick(t0 + s(121));
        assert!(core.take_actions().is_empty(), "cleared at endsAt, resolving after the hold-down");
        core.tick(t0 + s(121) + hold);
        let resolved = core.take_actions();
        assert_eq!(resolved.iter().map(|a| a.kind).collect::<Vec<_>>(), [ActionKind::Resolve]);
        assert!(resolved[0].notes.iter().any(|n| n.contains("resolved by expiry")), "{:?}", resolved[0].notes);
    }
}
