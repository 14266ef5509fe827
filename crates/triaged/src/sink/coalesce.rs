//! A sink worker's backlog while its sink is rate-limited: the actions it
//! has taken off its queue, in order, where an update followed by a later
//! action of the same incident is dropped (every action carries the whole
//! incident, so the later one has the latest state).
//!
//! **Opens, reopens and resolves are never dropped, and the actions of one
//! incident keep their order.** A dropped update is acknowledged with the
//! action that superseded it, right before that action's own id, so the
//! core never sees an update acknowledged ahead of an earlier open, nor the
//! incident's last acknowledged kind go back to `update`.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::incident::{Action, ActionKind};

/// An action and the ids of the updates it superseded.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) action: Action,
    /// Ids acknowledged with this action, before its own, ascending.
    pub(crate) superseded: Vec<u64>,
}

impl Queued {
    pub(crate) fn new(action: Action) -> Queued {
        Queued { action, superseded: Vec::new() }
    }

    /// Every id this delivery acknowledges, in the order to send them.
    pub(crate) fn ack_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.superseded.iter().copied().chain(std::iter::once(self.action.id))
    }
}

/// The worker's own queue, bounded by `cap` (its channel's capacity, so a
/// worker never holds more than twice what its channel does).
#[derive(Debug)]
pub(crate) struct Backlog {
    items: VecDeque<Queued>,
    cap: usize,
}

impl Backlog {
    pub(crate) fn new(cap: usize) -> Backlog {
        Backlog { items: VecDeque::new(), cap: cap.max(1) }
    }

    pub(crate) fn pop(&mut self) -> Option<Queued> {
        self.items.pop_front()
    }

    /// Puts back the action about to be sent, ahead of the rest.
    pub(crate) fn push_front(&mut self, q: Queued) {
        self.items.push_front(q);
    }

    pub(crate) fn push_back(&mut self, action: Action) {
        self.items.push_back(Queued::new(action));
    }

    pub(crate) fn is_full(&self) -> bool {
        self.items.len() >= self.cap
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Drops every update followed by a later action of the same incident,
    /// handing its id (and those it carried) to the nearest later action of
    /// that incident that stays. Returns how many updates were dropped.
    pub(crate) fn coalesce(&mut self) -> u64 {
        // From the back: the nearest later action kept, per incident key.
        let mut later: FxHashMap<String, usize> = FxHashMap::default();
        let mut keep = vec![true; self.items.len()];
        let mut handed: Vec<(usize, Vec<u64>)> = Vec::new();
        for i in (0..self.items.len()).rev() {
            let q = &self.items[i];
            match later.get(&q.action.incident.key) {
                Some(&successor) if q.action.kind == ActionKind::Update => {
                    keep[i] = false;
                    handed.push((successor, q.ack_ids().collect()));
                }
                _ => {
                    later.insert(q.action.incident.key.clone(), i);
                }
            }
        }
        let dropped = handed.len() as u64;
        for (successor, ids) in handed {
            self.items[successor].superseded.extend(ids);
        }
        let mut i = 0;
        self.items.retain_mut(|q| {
            q.superseded.sort_unstable();
            i += 1;
            keep[i - 1]
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::test_support::action;

    fn backlog(actions: &[(u64, ActionKind, &str)]) -> Backlog {
        let mut b = Backlog::new(1000);
        for &(id, kind, key) in actions {
            b.push_back(action(id, kind, key));
        }
        b
    }

    /// `(id, kind, key, superseded)` left, in order.
    fn left(mut b: Backlog) -> Vec<(u64, &'static str, String, Vec<u64>)> {
        std::iter::from_fn(|| b.pop()).map(|q| (q.action.id, q.action.kind.as_str(), q.action.incident.key, q.superseded)).collect()
    }

    use ActionKind::{Open, Reopen, Resolve, Update};

    #[test]
    fn updates_before_a_later_action_of_their_incident_go_to_it() {
        let mut b = backlog(&[(1, Open, "a"), (2, Update, "a"), (3, Update, "a"), (4, Update, "a"), (5, Resolve, "a")]);
        assert_eq!(b.coalesce(), 3);
        assert_eq!(left(b), [(1, "open", "a".into(), vec![]), (5, "resolve", "a".into(), vec![2, 3, 4])]);
    }

    #[test]
    fn the_last_update_of_an_incident_stays() {
        let mut b = backlog(&[(1, Update, "a"), (2, Update, "a"), (3, Update, "a")]);
        assert_eq!(b.coalesce(), 2);
        assert_eq!(left(b), [(3, "update", "a".into(), vec![1, 2])]);
    }

    #[test]
    fn opens_reopens_and_resolves_are_never_dropped_and_keep_their_order() {
        let seq = [(1, Open, "a"), (2, Resolve, "a"), (3, Reopen, "a"), (4, Update, "a"), (5, Resolve, "a"), (6, Open, "a")];
        let mut b = backlog(&seq);
        assert_eq!(b.coalesce(), 1);
        let kinds: Vec<_> = left(b).into_iter().map(|(id, kind, _, sup)| (id, kind, sup)).collect();
        assert_eq!(
            kinds,
            [(1, "open", vec![]), (2, "resolve", vec![]), (3, "reopen", vec![]), (5, "resolve", vec![4]), (6, "open", vec![])]
        );
    }

    #[test]
    fn incidents_do_not_supersede_each_other() {
        let mut b = backlog(&[(1, Update, "a"), (2, Update, "b"), (3, Update, "a"), (4, Open, "c"), (5, Update, "b")]);
        assert_eq!(b.coalesce(), 2);
        assert_eq!(left(b), [(3, "update", "a".into(), vec![1]), (4, "open", "c".into(), vec![]), (5, "update", "b".into(), vec![2])]);
    }

    #[test]
    fn a_second_pass_hands_on_what_was_carried() {
        let mut b = backlog(&[(1, Update, "a"), (2, Update, "a")]);
        assert_eq!(b.coalesce(), 1);
        b.push_back(action(3, Update, "a"));
        b.push_back(action(4, Resolve, "a"));
        assert_eq!(b.coalesce(), 2);
        let q = b.pop().unwrap();
        assert_eq!(q.ack_ids().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(b.pop().is_none());
    }

    #[test]
    fn nothing_to_drop_leaves_the_backlog_as_it_was() {
        let mut b = backlog(&[(1, Open, "a"), (2, Open, "b"), (3, Update, "c")]);
        assert_eq!(b.coalesce(), 0);
        assert_eq!(b.len(), 3);
        assert!(!b.is_full());
    }
}
