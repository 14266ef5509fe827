//! State and the changelog: the single core is restored at start, assigned
//! partitions' cores when assigned, revoked ones are checkpointed before the
//! revoke completes, and every core is checkpointed before its actions are
//! sent and periodically (then its input offsets move).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::core::partitions::Checkpoint;
use crate::scale::changelog::Changelog;
use crate::scale::ownership::Verdict;
use crate::source::PartitionChange;

use super::core_task::{dispatch, CoreLoop};

/// Applies assignment changes; an assigned partition's state is read back
/// from the changelog first. `false` when that failed for good.
pub(super) async fn partitions_changed(l: &mut CoreLoop, changes: Vec<PartitionChange>) -> bool {
    // The single core's state covers every partition: on a new assignment
    // (a failover, a restart) it is read back whole from the changelog,
    // where the previous owner checkpointed it before its revoke completed.
    let changes_assigned = changes.iter().any(|c| matches!(c, PartitionChange::Assigned { .. }));
    let (assigned, revoked) = changes.iter().fold((0, 0), |(a, r), c| match c {
        PartitionChange::Assigned { .. } => (a + 1, r),
        PartitionChange::Revoked { .. } => (a, r + 1),
    });
    l.readiness.partitions_changed(assigned, revoked);
    if changes_assigned {
        l.readiness.set_restored(false);
    }
    if !l.core.has_partition_cores() && changes_assigned {
        checkpoint(l, None).await;
        if !restore_single(l).await {
            return false;
        }
    }
    for c in changes {
        match c {
            PartitionChange::Revoked { topic, partition } => l.core.revoke(&topic, partition),
            PartitionChange::Assigned { topic, partition, epoch } if l.core.has_partition_cores() => {
                let log = l.changelog.clone();
                let Some(records) = read_back(&log, partition).await else { return false };
                let started = Instant::now();
                let (incidents, bad) = l.core.assign_restored(&topic, partition, epoch, &records);
                for (key, why) in bad {
                    error!(changelog = log.topic(), partition, %key, error = %why, "changelog record left out");
                }
                info!(topic, partition, incidents, records = records.len(), elapsed = ?started.elapsed(), "partition state restored from the changelog");
                if let Some(r) = &l.reconcile {
                    r.start(&topic, partition, epoch, l.core.open_keys(&topic, partition, epoch));
                }
            }
            PartitionChange::Assigned { .. } => {}
        }
    }
    if changes_assigned {
        l.core.assigned(chrono::Utc::now());
    }
    l.readiness.set_restored(true);
    l.metrics.correlation_partitions.set(l.core.partitions() as i64);
    true
}

/// Restores the single core (no `[rekey]`) from changelog partition 0,
/// before any event is handled. `false` when the changelog cannot be read.
pub(super) async fn restore_single(l: &mut CoreLoop) -> bool {
    let log = l.changelog.clone();
    let started = Instant::now();
    let Some(records) = read_back(&log, 0).await else { return false };
    let (incidents, bad) = l.core.restore_single(&records);
    l.replay_since.clear();
    for (key, why) in bad {
        error!(changelog = log.topic(), partition = 0, %key, error = %why, "changelog record left out");
    }
    info!(changelog = log.topic(), incidents, records = records.len(), elapsed = ?started.elapsed(), "correlation state restored from the changelog");
    if let Some(r) = &l.reconcile {
        r.start("", 0, 0, l.core.open_keys_single());
    }
    true
}

/// Changelog partition `partition` up to its high watermark, retried a few
/// times; `None` when it cannot be read.
async fn read_back(log: &Changelog, partition: i32) -> Option<Vec<(String, Vec<u8>)>> {
    let mut attempt = 0;
    loop {
        match log.read(partition).await {
            Ok(r) => return Some(r),
            Err(e) if attempt < RESTORE_ATTEMPTS => {
                attempt += 1;
                warn!(error = %e, attempt, "reading the changelog back failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                error!(error = %e, partition, "the changelog cannot be read; correlating without its state would open incidents twice or lose them");
                return None;
            }
        }
    }
}

/// A revoke waiting for its partitions' checkpoint.
pub(super) type Drain = (Vec<(String, i32)>, std::sync::mpsc::SyncSender<()>);

/// How long a revoke waits for the checkpoint of its partitions.
pub(super) const DRAIN_WITHIN: Duration = Duration::from_secs(3);

/// The rebalance callback's side of a drain: hands the revoked partitions to
/// the core task and waits (up to `DRAIN_WITHIN`) for their checkpoint. Only
/// on a multi-threaded runtime, where the core task runs meanwhile; at
/// shutdown (the consumer closes on a thread of its own) the core task has
/// checkpointed already.
pub(super) fn drain_hook(tx: mpsc::UnboundedSender<Drain>, stopping: CancellationToken) -> crate::source::RevokeHook {
    Box::new(move |parts| {
        let multi = tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        // At shutdown the core task takes the last checkpoint itself.
        if !multi || parts.is_empty() || stopping.is_cancelled() {
            return;
        }
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        if tx.send((parts.to_vec(), done_tx)).is_ok() {
            let started = Instant::now();
            let drained = tokio::task::block_in_place(|| done_rx.recv_timeout(DRAIN_WITHIN).is_ok());
            if drained {
                info!(partitions = parts.len(), elapsed = ?started.elapsed(), "revoked partitions checkpointed before the revoke");
            } else {
                warn!(within = ?DRAIN_WITHIN, "revoked partitions not checkpointed in time; their next owner reads them from the last checkpoint");
            }
        }
    })
}

/// Writes the checkpoint of every core with changes (of the cores of
/// `only` these partitions, when given) to the changelog, then sends the
/// actions it covers and stores its input offsets. `false` when a
/// checkpoint with actions waiting was not written: they stay decided and
/// unsent, and the next call tries again.
pub(super) async fn checkpoint(l: &mut CoreLoop, only: Option<&[(String, i32)]>) -> bool {
    if l.stopping.is_cancelled() && !l.closing && l.core.waiting_actions() == 0 {
        return true;
    }
    let log = l.changelog.clone();
    let mut all = true;
    for cp in l.core.checkpoints() {
        if let Some(parts) = only {
            // The single core (no claim) holds state of every partition.
            let wanted = cp.claim.as_ref().is_none_or(|c| parts.iter().any(|(t, p)| *t == c.topic && *p == c.partition));
            if !wanted {
                continue;
            }
        }
        // A partition no longer owned is not written: a late write would
        // overwrite what its new owner restored. Its actions go to the sink
        // workers, which refuse the actions of a lost claim.
        let Some(mut cp) = still_owned(l, cp, &mut all).await else { continue };
        if !cp.records.is_empty() {
            // Once shutdown began, only the last checkpoint is waited for: an
            // earlier one is dropped (no offset moves) rather than hold the stop.
            // One without actions waiting is dropped then (no offset moves).
            let stopping = l.stopping.clone();
            let may_abandon = !l.closing && cp.actions == 0;
            let abandon = async {
                if may_abandon {
                    stopping.cancelled().await
                } else {
                    std::future::pending::<()>().await
                }
            };
            let written = tokio::select! {
                r = tokio::time::timeout(l.checkpoint_within, log.write(cp.partition, &cp.records)) => r,
                () = abandon => continue,
            };
            match written {
                Ok(Ok(())) => debug!(partition = cp.partition, records = cp.records.len(), actions = cp.actions, "checkpoint written"),
                Ok(Err(e)) => {
                    warn!(error = %e, actions = cp.actions, "checkpoint not written; its actions wait and its offsets stay where they are");
                    l.metrics.state_checkpoints.with_label_values(&["failed"]).inc();
                    l.changelog_failing = true;
                    all &= cp.actions == 0;
                    continue;
                }
                Err(_) => {
                    l.changelog_failing = true;
                    warn!(partition = cp.partition, within = ?l.checkpoint_within, actions = cp.actions, "checkpoint not acknowledged in time; tried again");
                    l.metrics.state_checkpoints.with_label_values(&["failed"]).inc();
                    all &= cp.actions == 0;
                    continue;
                }
            }
            l.metrics.state_checkpoints.with_label_values(&["written"]).inc();
            l.changelog_failing = false;
            // The write may have spanned a stall (acknowledged after the
            // process resumed, the partition gone meanwhile): the claim is
            // judged again with a fresh clock reading before anything is
            // sent or stored.
            // In doubt, it is written again (same keys, same values) with the next try.
            let Some(back) = still_owned(l, cp, &mut all).await else { continue };
            cp = back;
        }
        let offsets = cp.offsets.clone();
        let actions = l.core.checkpointed(cp);
        dispatch(l, actions).await;
        if !offsets.is_empty() {
            for (t, p, next) in &offsets {
                l.replay_since.remove(&(t.clone(), *p));
                l.metrics.state_depended_offset.with_label_values(&[t, &p.to_string()]).set(*next);
            }
            if let Err(e) = l.offsets.store(&offsets) {
                warn!(error = %e, "storing checkpointed offsets failed; they are retried with the next checkpoint");
            }
        }
    }
    l.metrics.state_actions_waiting.set(l.core.waiting_actions() as i64);
    all
}

/// `cp` while its partition is still this instance's, judged now. Else
/// `None`: lost, its actions go to the sink workers, which refuse them; in
/// doubt after a stall (until the consumer confirms the assignment or gives
/// it up), it is neither written nor sent, its actions wait in the core for
/// the next call, and `all` says so.
async fn still_owned(l: &mut CoreLoop, cp: Checkpoint, all: &mut bool) -> Option<Checkpoint> {
    match ownership_of(l, &cp) {
        Verdict::Owned => Some(cp),
        Verdict::Lost => {
            let actions = l.core.disowned(cp);
            dispatch(l, actions).await;
            None
        }
        Verdict::Wait(_) => {
            *all &= cp.actions == 0;
            None
        }
    }
}

/// Whether the partition of `cp` is still this instance's, judged now
/// (always, for the single core: it has no claim).
fn ownership_of(l: &CoreLoop, cp: &Checkpoint) -> Verdict {
    match (&cp.claim, &l.ownership) {
        (Some(claim), Some(o)) => o.check(claim),
        _ => Verdict::Owned,
    }
}

/// Attempts at reading a changelog partition back before the daemon gives up.
pub(super) const RESTORE_ATTEMPTS: u32 = 5;

/// How long a checkpoint may take to be acknowledged.
pub(super) const CHECKPOINT_WITHIN: Duration = Duration::from_secs(5);
