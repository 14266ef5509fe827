//! Consumer lag: high watermarks of the assigned partitions, measured off the
//! runtime (the query blocks), one probe at a time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use tracing::debug;

use super::context::SourceConsumer;

/// Budget of one lag measurement (all assigned partitions).
const LAG_BUDGET: Duration = Duration::from_secs(3);

/// Longest one watermark query of a probe may block, so that a probe told to
/// stop (shutdown) ends this soon even when the broker does not answer. A
/// query can wait behind a fetch long poll on the same connection
/// (`fetch.wait.max.ms`, 500 ms by default), so this is twice that.
const LAG_CALL: Duration = Duration::from_secs(1);

/// Measures high watermarks off the runtime (the query blocks), one probe at a time.
#[derive(Default)]
pub(super) struct LagProbe {
    task: Option<tokio::task::JoinHandle<Vec<(String, i32, i64)>>>,
    /// Tells the probe in flight to stop before its next query.
    stop: Arc<AtomicBool>,
}

impl LagProbe {
    pub(super) fn start(&mut self, consumer: &Arc<SourceConsumer>) {
        if self.task.is_some() {
            return;
        }
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let parts: Vec<(String, i32)> = assignment.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        if parts.is_empty() {
            return;
        }
        let consumer = consumer.clone();
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        self.task = Some(tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + LAG_BUDGET;
            let mut highs = Vec::with_capacity(parts.len());
            for (topic, partition) in parts {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || stop.load(Ordering::Acquire) {
                    break;
                }
                match consumer.client().fetch_watermarks(&topic, partition, left.min(LAG_CALL)) {
                    Ok((_low, high)) => highs.push((topic, partition, high)),
                    Err(e) => debug!(topic, partition, error = %e, "watermark query failed"),
                }
            }
            highs
        }));
    }

    /// Stops the probe in flight, if any, within `LAG_CALL`, and waits for it.
    pub(super) async fn finish(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Resolves when a probe finishes; pending forever when none runs.
    pub(super) async fn wait(&mut self) -> Option<Vec<(String, i32, i64)>> {
        match &mut self.task {
            Some(handle) => {
                let r = handle.await;
                self.task = None;
                r.ok()
            }
            None => std::future::pending().await,
        }
    }
}
