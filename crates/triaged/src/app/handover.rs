//! State that follows partitions: assigned partitions are restored from the
//! changelog, revoked ones are checkpointed before the revoke completes, and
//! settled partitions are checkpointed periodically (then their offsets move).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::scale::ownership::{Claim, Verdict};
use crate::source::PartitionChange;

use super::core_task::CoreLoop;

/// Applies assignment changes; an assigned partition's state is read back
/// from the changelog first. `false` when that failed for good.
pub(super) async fn partitions_changed(l: &mut CoreLoop, changes: Vec<PartitionChange>) -> bool {
    for c in changes {
        match c {
            PartitionChange::Revoked { topic, partition } => l.core.revoke(&topic, partition),
            PartitionChange::Assigned { topic, partition, epoch } => match &l.changelog {
                None => l.core.assign(&topic, partition, epoch),
                Some(log) => {
                    let started = Instant::now();
                    let mut attempt = 0;
                    let records = loop {
                        match log.read(partition).await {
                            Ok(r) => break r,
                            Err(e) if attempt < RESTORE_ATTEMPTS => {
                                attempt += 1;
                                warn!(error = %e, attempt, "reading the changelog back failed; retrying");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            Err(e) => {
                                error!(error = %e, topic, partition, "the changelog cannot be read; correlating without its state would open incidents twice or lose them");
                                return false;
                            }
                        }
                    };
                    let (incidents, bad) = l.core.assign_restored(&topic, partition, epoch, &records);
                    for (key, why) in bad {
                        error!(changelog = log.topic(), partition, %key, error = %why, "changelog record left out");
                    }
                    info!(topic, partition, incidents, records = records.len(), elapsed = ?started.elapsed(), "partition state restored from the changelog");
                    if let Some(r) = &l.reconcile {
                        r.start(&topic, partition, epoch, l.core.open_keys(&topic, partition, epoch));
                    }
                }
            },
        }
    }
    l.metrics.correlation_partitions.set(l.core.partitions() as i64);
    true
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
pub(super) fn drain_hook(tx: mpsc::UnboundedSender<Drain>) -> crate::source::RevokeHook {
    Box::new(move |parts| {
        let multi = tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi || parts.is_empty() {
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

/// Writes the checkpoints of settled partition cores (of `only` these
/// partitions, when given) to the changelog and then stores their input
/// offsets.
pub(super) async fn checkpoint(l: &mut CoreLoop, only: Option<&[(String, i32)]>) {
    let Some(log) = l.changelog.clone() else { return };
    for cp in l.core.checkpoints() {
        if only.is_some_and(|parts| !parts.iter().any(|(t, p)| *t == cp.topic && *p == cp.partition)) {
            continue;
        }
        let claim = Claim { topic: cp.topic.clone(), partition: cp.partition, epoch: cp.epoch };
        if l.ownership.as_ref().is_some_and(|o| o.check(&claim) != Verdict::Owned) {
            continue;
        }
        if !cp.records.is_empty() {
            match tokio::time::timeout(CHECKPOINT_WITHIN, log.write(cp.partition, &cp.records)).await {
                Ok(Ok(())) => debug!(partition = cp.partition, records = cp.records.len(), "checkpoint written"),
                Ok(Err(e)) => {
                    warn!(error = %e, "checkpoint not written; offsets stay where they are until the next one");
                    continue;
                }
                Err(_) => {
                    warn!(partition = cp.partition, within = ?CHECKPOINT_WITHIN, "checkpoint not acknowledged in time; tried again at the next one");
                    continue;
                }
            }
        }
        let offsets = cp.offsets.clone();
        l.core.checkpointed(cp);
        if let Err(e) = l.offsets.store(&offsets) {
            warn!(error = %e, "storing checkpointed offsets failed; they are retried with the next checkpoint");
        }
    }
}

/// Attempts at reading a changelog partition back before the daemon gives up.
pub(super) const RESTORE_ATTEMPTS: u32 = 5;

/// How long a checkpoint may take to be acknowledged.
pub(super) const CHECKPOINT_WITHIN: Duration = Duration::from_secs(5);
