//! The sink's rate limit: one token bucket per sink, shared by all its
//! workers. Every HTTP request the sink sends (look-ups and retries too)
//! takes a token; a request without one waits.
//!
//! The bucket is kept as a theoretical arrival time (GCRA): each token
//! moves it one interval (`60 s / per_minute`) into the future, and a
//! request conforms while it is at most `burst - 1` intervals ahead of now.
//! That is a bucket of `burst` tokens refilled at `per_minute`, in integer
//! durations (no drift), on `tokio::time::Instant` so that tests can pause
//! and advance the clock.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SinkConfig;

/// The pure bucket: the clock is passed in.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Time between two tokens.
    interval: Duration,
    /// How far ahead of now the arrival time may run: `(burst - 1) * interval`.
    tolerance: Duration,
    /// When the bucket would be full again (theoretical arrival time).
    tat: Instant,
}

impl Bucket {
    /// A full bucket of `burst` tokens refilled at `per_minute`; `None`
    /// when either is 0 (no limit).
    pub fn new(per_minute: u32, burst: u32, now: Instant) -> Option<Bucket> {
        if per_minute == 0 || burst == 0 {
            return None;
        }
        let interval = Duration::from_secs(60) / per_minute;
        Some(Bucket { interval, tolerance: interval * (burst - 1), tat: now })
    }

    /// How long until a token is there: zero when one is there now.
    pub fn ready_in(&self, now: Instant) -> Duration {
        let tat = self.tat.max(now);
        (tat - now).saturating_sub(self.tolerance)
    }

    /// Takes a token, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        match self.ready_in(now) {
            Duration::ZERO => {
                self.tat = self.tat.max(now) + self.interval;
                Ok(())
            }
            wait => Err(wait),
        }
    }
}

/// The sink's limiter: no bucket means no limit.
#[derive(Debug)]
pub struct RateLimit {
    bucket: Option<Mutex<Bucket>>,
}

impl RateLimit {
    /// No limit at all.
    pub fn unlimited() -> RateLimit {
        RateLimit { bucket: None }
    }

    /// `per_minute` requests a minute, bursts of `burst`; 0 in either is no limit.
    pub fn new(per_minute: u32, burst: u32) -> RateLimit {
        RateLimit { bucket: Bucket::new(per_minute, burst, Instant::now()).map(Mutex::new) }
    }

    /// The limit of `cfg` (with its profile's default).
    pub fn from_config(cfg: &SinkConfig) -> RateLimit {
        match cfg.rate_limit.resolved(cfg.profile) {
            Some((per_minute, burst)) => RateLimit::new(per_minute, burst),
            None => RateLimit::unlimited(),
        }
    }

    /// Whether requests are limited at all.
    pub fn is_limited(&self) -> bool {
        self.bucket.is_some()
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Bucket>> {
        // A panic while holding the lock cannot leave the bucket invalid.
        self.bucket.as_ref().map(|b| b.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How long until a token is there (zero now or without a limit).
    pub fn ready_in(&self) -> Duration {
        self.lock().map_or(Duration::ZERO, |b| b.ready_in(Instant::now()))
    }

    /// Waits for a token and takes it; returns how long it waited. Dropping
    /// the future (a shutdown) ends the wait and takes nothing.
    pub async fn take(&self) -> Duration {
        let started = Instant::now();
        loop {
            let wait = match self.lock() {
                None => return Duration::ZERO,
                Some(mut b) => match b.try_take(Instant::now()) {
                    Ok(()) => return started.elapsed(),
                    Err(wait) => wait,
                },
            };
            // Another worker may take the token first: then wait again.
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_gives_its_burst_then_one_token_per_interval() {
        let now = Instant::now();
        let mut b = Bucket::new(60, 5, now).unwrap();
        for i in 0..5 {
            assert_eq!(b.try_take(now), Ok(()), "token {i} of the burst");
        }
        assert_eq!(b.try_take(now), Err(secs(1)));
        assert_eq!(b.ready_in(now + Duration::from_millis(400)), Duration::from_millis(600));
        assert_eq!(b.try_take(now + secs(1)), Ok(()));
        assert_eq!(b.try_take(now + secs(1)), Err(secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_refills_up_to_its_burst_only() {
        let now = Instant::now();
        let mut b = Bucket::new(120, 3, now).unwrap();
        for _ in 0..3 {
            b.try_take(now).unwrap();
        }
        // An hour idle refills 3 tokens, not 7200.
        let later = now + secs(3600);
        let taken = (0..10).take_while(|_| b.try_take(later).is_ok()).count();
        assert_eq!(taken, 3);
        assert_eq!(b.try_take(later), Err(Duration::from_millis(500)));
    }

    #[test]
    fn zero_is_no_limit() {
        let now = Instant::now();
        assert!(Bucket::new(0, 5, now).is_none());
        assert!(Bucket::new(60, 0, now).is_none());
        assert!(!RateLimit::new(0, 20).is_limited());
    }

    #[tokio::test(start_paused = true)]
    async fn take_waits_for_the_next_token_on_the_paused_clock() {
        let limit = RateLimit::new(60, 2);
        assert_eq!(limit.take().await, Duration::ZERO);
        assert_eq!(limit.take().await, Duration::ZERO);
        assert_eq!(limit.ready_in(), secs(1));
        let started = Instant::now();
        // The paused clock moves only to the bucket's own deadline.
        assert_eq!(limit.take().await, secs(1));
        assert_eq!(started.elapsed(), secs(1));
        assert_eq!(limit.take().await, secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_holds_over_a_minute() {
        let limit = RateLimit::new(120, 20);
        let started = Instant::now();
        let mut taken = 0;
        while started.elapsed() < secs(60) {
            limit.take().await;
            taken += 1;
        }
        // The burst, then one every 500 ms: 20 + 120, give or take the last.
        assert!((139..=141).contains(&taken), "{taken}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_dropped_without_taking_a_token() {
        let limit = RateLimit::new(60, 1);
        limit.take().await;
        let gave_up = tokio::time::timeout(Duration::from_millis(500), limit.take()).await;
        assert!(gave_up.is_err());
        // The abandoned wait took nothing: the next token is due at 1 s.
        assert_eq!(limit.ready_in(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limit = RateLimit::unlimited();
        for _ in 0..10_000 {
            assert_eq!(limit.take().await, Duration::ZERO);
        }
        assert_eq!(limit.ready_in(), Duration::ZERO);
    }
}
