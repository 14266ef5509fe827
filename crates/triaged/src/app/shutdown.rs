//! The shutdown order, after SIGTERM or after the core failed: stop
//! consuming, let the core finish what was received, give in-flight sink
//! actions the rest of the deadline, then commit offsets and close the
//! consumers within what is left of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::scale::ownership::Ownership;
use crate::server::Lifecycle;
use crate::source::OffsetHandle;

use super::Summary;

/// Time the Kafka consumer gets to close (leave its group) even when the
/// shutdown deadline is spent.
const CLOSE_AT_LEAST: Duration = Duration::from_secs(1);
/// What a close leaves of the deadline for the rest of the shutdown.
const CLOSE_MARGIN: Duration = Duration::from_millis(100);

/// How long the last offset commit may take: what is left of the deadline
/// once the consumers' close is set aside, and at least `COMMIT_AT_LEAST`.
fn commit_budget(deadline: Duration, started: Instant) -> Duration {
    deadline.saturating_sub(started.elapsed() + CLOSE_AT_LEAST + CLOSE_MARGIN).max(COMMIT_AT_LEAST)
}

/// Time the last offset commit gets even when the deadline is spent.
const COMMIT_AT_LEAST: Duration = Duration::from_millis(200);

/// How long a consumer may take to close: what is left of the deadline,
/// less a margin, and at least `CLOSE_AT_LEAST`.
fn close_budget(deadline: Duration, started: Instant) -> Duration {
    deadline.saturating_sub(started.elapsed()).saturating_sub(CLOSE_MARGIN).max(CLOSE_AT_LEAST)
}

/// What a running daemon stops, in order.
pub(super) struct Stopping {
    pub(super) shutdown: CancellationToken,
    pub(super) phase_tx: watch::Sender<Lifecycle>,
    pub(super) core_task: tokio::task::JoinHandle<Summary>,
    pub(super) deadline: Duration,
    pub(super) source_stop: CancellationToken,
    pub(super) source_task: tokio::task::JoinHandle<()>,
    /// The re-key stage's input consumer task, its producer task and its offsets.
    pub(super) rekey_stage: Option<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>, OffsetHandle)>,
    pub(super) sink_stop: CancellationToken,
    pub(super) http_stop: CancellationToken,
    pub(super) tracker: TaskTracker,
    pub(super) offsets: OffsetHandle,
    pub(super) ownership: Option<Arc<Ownership>>,
    pub(super) watch_thread: Option<std::thread::JoinHandle<()>>,
}

impl Stopping {
    /// Waits for SIGTERM (or a failed core), then stops everything; returns
    /// what the run did.
    pub(super) async fn run(self) -> Summary {
        let Stopping {
            shutdown,
            phase_tx,
            core_task,
            deadline,
            source_stop,
            source_task,
            rekey_stage,
            sink_stop,
            http_stop,
            tracker,
            offsets,
            ownership,
            watch_thread,
        } = self;
        let _ = phase_tx.send(Lifecycle::Running);
        let mut core_task = core_task;
        // The core ends on its own only when something failed: a panic, or
        // the source gone on a fatal error. Then the daemon stops and exits
        // non-zero (its supervisor restarts it and the log is replayed)
        // instead of idling with nothing consuming.
        let ended = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = &mut core_task => Some(r),
        };
        let failure = ended.as_ref().map(|r| match r {
            Ok(s) => s
                .failure
                .clone()
                .unwrap_or_else(|| "the correlation core stopped: its event source ended (see the errors above)".to_string()),
            // Names the panic message too.
            Err(e) => format!("the correlation core failed: {e}"),
        });
        match &failure {
            Some(f) => {
                error!("{f}; shutting down");
                // Everything else (reloader, HTTP) stops as after SIGTERM.
                shutdown.cancel();
            }
            None => info!("shutting down: consumption stops, in-flight work drains for up to {deadline:?}"),
        }
        let _ = phase_tx.send(Lifecycle::Draining);
        // The deadline counts from here: stopping the source (a broker that
        // does not answer) comes out of it too.
        let started = Instant::now();
        let sink_deadline = tokio::spawn({
            let sink_stop = sink_stop.clone();
            async move {
                tokio::time::sleep(deadline).await;
                sink_stop.cancel();
            }
        });
        source_stop.cancel();
        let _ = source_task.await;
        if let Some((input_task, rekey_task, input_offsets)) = rekey_stage {
            // What was read is produced and confirmed (up to the deadline),
            // then the input offsets are committed.
            let _ = input_task.await;
            let _ = rekey_task.await;
            if let Err(e) = input_offsets.commit_within(commit_budget(deadline, started)).await {
                warn!(error = %e, "final input offset commit failed; the next start re-keys from the last committed offsets");
            }
            input_offsets.close(close_budget(deadline, started)).await;
        }
        let core_result = match ended {
            Some(r) => r,
            None => core_task.await,
        };
        let (summary, clean) = match core_result {
            Ok(s) => (s, true),
            Err(e) => {
                if failure.is_none() {
                    error!("the correlation core failed while draining: {e}");
                }
                (Summary::default(), false)
            }
        };
        sink_stop.cancel();
        sink_deadline.abort();
        http_stop.cancel();
        tracker.wait().await;
        if let Err(e) = offsets.commit_within(commit_budget(deadline, started)).await {
            warn!(error = %e, "final offset commit failed; the next start replays from the last committed offsets");
        }
        offsets.close(close_budget(deadline, started)).await;
        if let (Some(o), Some(t)) = (&ownership, watch_thread) {
            o.stop();
            let _ = t.join();
        }
        info!(elapsed = ?started.elapsed(), "shutdown complete");
        Summary { clean_shutdown: clean && summary.clean_shutdown, failure, ..summary }
    }
}
