//! Retry policy of the sink: capped exponential backoff with full jitter,
//! `Retry-After` honoured, and a retry loop that only shutdown can end early.
//!
//! The maths is pure ([`Backoff::delay`] takes the jitter as a number in
//! `0.0..=1.0`) so it can be tested without clocks or randomness;
//! [`Backoff::next_delay`] draws the jitter from an injectable RNG.

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::RetryConfig;
use crate::incident::SinkError;

/// Capped exponential backoff with full jitter.
///
/// Retry number `attempt` (0 for the first retry) waits a uniformly random
/// time in `0 ..= min(max, initial * 2^attempt)`; a server's `Retry-After`
/// raises that to at least what the server asked, but never above `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    /// From the `sink.retry` configuration.
    pub fn new(cfg: &RetryConfig) -> Backoff {
        Backoff::from_bounds(cfg.initial_backoff.0, cfg.max_backoff.0)
    }

    /// From explicit bounds; an `initial` above `max` is lowered to `max`.
    pub fn from_bounds(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial: initial.min(max), max }
    }

    pub fn initial(&self) -> Duration {
        self.initial
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// Upper bound of the jittered delay for retry number `attempt`:
    /// `min(max, initial * 2^attempt)`, saturating instead of overflowing.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        2u32.checked_pow(attempt).and_then(|factor| self.initial.checked_mul(factor)).map_or(self.max, |d| d.min(self.max))
    }

    /// Delay before retry number `attempt` for a given `jitter` in `0.0..=1.0`
    /// (clamped; NaN counts as 0): `ceiling(attempt) * jitter`, raised to the
    /// server's `retry_after` capped at `max`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let jitter = if jitter >= 0.0 { jitter.min(1.0) } else { 0.0 };
        let ceiling = self.ceiling(attempt);
        // Float rounding must not push the delay above the ceiling (or panic
        // near `Duration::MAX`).
        let jittered = Duration::try_from_secs_f64(ceiling.as_secs_f64() * jitter).map_or(ceiling, |d| d.min(ceiling));
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max)),
            None => jittered,
        }
    }

    /// [`Backoff::delay`] with the jitter drawn uniformly from `rng`.
    pub fn next_delay<R: Rng + ?Sized>(&self, attempt: u32, retry_after: Option<Duration>, rng: &mut R) -> Duration {
        self.delay(attempt, retry_after, rng.gen_range(0.0..=1.0))
    }
}

/// Parses a `Retry-After` header value: delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, relative to `now`; a date in the past
/// means no wait). Anything else gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Runs `attempt` until it succeeds or fails permanently, waiting per
/// `backoff` between retryable failures, for as long as it takes (nothing is
/// dropped while the far end is down). Shutdown ends both an attempt in flight
/// and the wait with [`SinkError::Cancelled`]. Each retry is logged at warn
/// with the attempt number and the delay; run it inside a span that says what
/// is being delivered.
pub async fn retry<T, F, Fut>(backoff: &Backoff, shutdown: &CancellationToken, mut attempt: F) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SinkError>>,
{
    let mut failures: u32 = 0;
    loop {
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(SinkError::Cancelled),
            r = attempt() => r,
        };
        let (message, retry_after, maybe_applied) = match result {
            Err(SinkError::Retryable { message, retry_after, maybe_applied }) => (message, retry_after, maybe_applied),
            other => return other,
        };
        let delay = backoff.next_delay(failures, retry_after, &mut rand::thread_rng());
        failures = failures.saturating_add(1);
        warn!(
            attempt = failures,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            retry_after_ms = retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            maybe_applied,
            error = %message,
            "sink attempt failed; retrying"
        );
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(SinkError::Cancelled),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn retryable(retry_after: Option<Duration>) -> SinkError {
        SinkError::Retryable { message: "HTTP 503".into(), retry_after, maybe_applied: false }
    }

    #[test]
    fn built_from_config() {
        let b = Backoff::new(&RetryConfig::default());
        assert_eq!(b.initial(), ms(200));
        assert_eq!(b.max(), Duration::from_secs(30));
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff::from_bounds(ms(100), ms(1000));
        let ceilings: Vec<_> = (0..6).map(|a| b.ceiling(a)).collect();
        assert_eq!(ceilings, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
    }

    #[test]
    fn ceiling_saturates_for_huge_attempts() {
        let b = Backoff::from_bounds(ms(200), Duration::from_secs(30));
        for attempt in [31, 32, 40, 63, 64, 1000, u32::MAX] {
            assert_eq!(b.ceiling(attempt), Duration::from_secs(30), "attempt {attempt}");
        }
        let huge = Backoff::from_bounds(Duration::MAX, Duration::MAX);
        assert_eq!(huge.ceiling(5), Duration::MAX);
        assert_eq!(huge.delay(5, None, 1.0), Duration::MAX);
        assert!(huge.delay(5, Some(Duration::MAX), 0.3) == Duration::MAX);
    }

    #[test]
    fn initial_above_max_is_lowered() {
        let b = Backoff::from_bounds(ms(500), ms(100));
        assert_eq!(b.ceiling(0), ms(100));
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let b = Backoff::from_bounds(ms(100), ms(1000));
        assert_eq!(b.delay(2, None, 0.0), Duration::ZERO);
        assert_eq!(b.delay(2, None, 1.0), ms(400));
        assert_eq!(b.delay(2, None, 0.5), ms(200));
        // Out-of-range jitter is clamped.
        assert_eq!(b.delay(2, None, 7.0), ms(400));
        assert_eq!(b.delay(2, None, -1.0), Duration::ZERO);
        assert_eq!(b.delay(2, None, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn random_delays_stay_in_range_and_spread() {
        let b = Backoff::from_bounds(ms(100), ms(1000));
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..8 {
            let ceiling = b.ceiling(attempt);
            let samples: Vec<_> = (0..500).map(|_| b.next_delay(attempt, None, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter: both halves of the range are used.
            assert!(samples.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
            assert!(samples.iter().any(|d| *d > ceiling * 3 / 4), "attempt {attempt}");
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let b = Backoff::from_bounds(ms(100), Duration::from_secs(30));
        // Jitter would give almost nothing; the server asked for 5s.
        assert_eq!(b.delay(0, Some(Duration::from_secs(5)), 0.0), Duration::from_secs(5));
        assert_eq!(b.delay(0, Some(Duration::from_secs(1)), 1.0), Duration::from_secs(1));
        // A jittered delay above what the server asked is kept.
        assert_eq!(b.delay(10, Some(Duration::from_secs(1)), 1.0), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert!(b.next_delay(0, Some(Duration::from_secs(2)), &mut rng) >= Duration::from_secs(2));
        }
    }

    #[test]
    fn retry_after_is_capped_at_max() {
        let b = Backoff::from_bounds(ms(100), Duration::from_secs(30));
        assert_eq!(b.delay(0, Some(Duration::from_secs(3600)), 0.0), Duration::from_secs(30));
        assert_eq!(b.delay(0, Some(Duration::from_secs(3600)), 1.0), Duration::from_secs(30));
    }

    #[test]
    fn parses_retry_after_forms() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[tokio::test]
    async fn retries_until_success() {
        let b = Backoff::from_bounds(ms(1), ms(2));
        let calls = AtomicU32::new(0);
        let token = CancellationToken::new();
        let r = retry(&b, &token, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=2 => Err(retryable(None)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_error_is_not_retried() {
        let b = Backoff::from_bounds(ms(1), ms(2));
        let calls = AtomicU32::new(0);
        let token = CancellationToken::new();
        let r: Result<(), _> = retry(&b, &token, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(SinkError::Permanent("HTTP 400".into()))
        })
        .await;
        assert!(matches!(r, Err(SinkError::Permanent(_))), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn shutdown_ends_the_backoff_wait() {
        // An hour of backoff: only the cancellation can end this quickly.
        let b = Backoff::from_bounds(Duration::from_secs(3600), Duration::from_secs(3600));
        let token = CancellationToken::new();
        let calls = AtomicU32::new(0);
        let started = std::time::Instant::now();
        let r: Result<(), _> = retry(&b, &token, || {
            calls.fetch_add(1, Ordering::SeqCst);
            // The attempt fails and shutdown arrives: the loop is then waiting.
            let token = token.clone();
            async move {
                token.cancel();
                Err(retryable(Some(Duration::from_secs(3600))))
            }
        })
        .await;
        assert!(matches!(r, Err(SinkError::Cancelled)), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn shutdown_before_start_makes_no_attempt() {
        let b = Backoff::from_bounds(ms(1), ms(2));
        let token = CancellationToken::new();
        token.cancel();
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(&b, &token, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await;
        assert!(matches!(r, Err(SinkError::Cancelled)));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
