//! librdkafka's log, as the daemon's: each line once, at the level its
//! syslog level maps to (0-3 error, 4 warn, 5-6 info, 7 debug), and
//! rate-limited. With the brokers down librdkafka repeats the same few lines
//! (connect failed, all brokers down) many times a second and reports most of
//! them twice (as a log line and as an error event), and the consumer's
//! `recv` returns them again on every poll; here the first of a kind
//! is logged, its repeats within [`WINDOW`] are counted, and the next one
//! after the window is logged with "(repeated N times in 30s)".
//!
//! Lines are of a kind when they are equal once every run of digits is
//! collapsed (ports, durations and counts differ between repeats).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

/// How long repeats of a line are counted rather than logged.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Kinds of line tracked at once; past it, expired ones are forgotten, and a
/// new kind with none expired is logged untracked.
const MAX_KINDS: usize = 1024;

/// Counts repeats of each kind of line within the window.
pub struct Limiter {
    window: Duration,
    seen: HashMap<String, Seen>,
}

struct Seen {
    /// When the line that opened the current window was logged.
    since: Instant,
    /// Lines of this kind suppressed since.
    repeats: u64,
}

impl Limiter {
    pub fn new(window: Duration) -> Limiter {
        Limiter { window, seen: HashMap::new() }
    }

    /// Whether the line `message`, seen at `now`, is logged: `Some(n)` with
    /// the `n` repeats suppressed before it (0 for the first), or `None`
    /// when it is itself a repeat within the window.
    pub fn admit(&mut self, message: &str, now: Instant) -> Option<u64> {
        let kind = kind(message);
        if let Some(s) = self.seen.get_mut(&kind) {
            if now.saturating_duration_since(s.since) < self.window {
                s.repeats += 1;
                return None;
            }
            let repeats = s.repeats;
            *s = Seen { since: now, repeats: 0 };
            return Some(repeats);
        }
        if self.seen.len() >= MAX_KINDS {
            let window = self.window;
            // A kind whose window ended with repeats still owed a summary loses it.
            self.seen.retain(|_, s| now.saturating_duration_since(s.since) < window);
        }
        if self.seen.len() < MAX_KINDS {
            self.seen.insert(kind, Seen { since: now, repeats: 0 });
        }
        Some(0)
    }
}

/// `message` without librdkafka's thread prefix (`[thrd:host:port/id]: `,
/// which the error event of the same failure lacks), every run of ASCII
/// digits replaced by `#`, and without librdkafka's own ", N identical
/// error(s) suppressed".
fn kind(message: &str) -> String {
    let message = match message.strip_prefix("[thrd:").and_then(|rest| rest.split_once("]: ")) {
        Some((_, rest)) => rest,
        None => message,
    };
    let mut out = String::with_capacity(message.len());
    let mut in_digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    // librdkafka's own count of the repeats it held back.
    out.replace(", # identical error(s) suppressed", "")
}

/// The text logged for a line admitted after `repeats` repeats.
fn with_repeats(message: &str, repeats: u64, window: Duration) -> String {
    match repeats {
        0 => message.to_owned(),
        n => format!("{message} (repeated {n} times in {})", crate::duration::format(window)),
    }
}

/// One limiter for every client of the process: the consumer, the producers
/// and the broker probe meet the same broker failures.
static LIMITER: LazyLock<Mutex<Limiter>> = LazyLock::new(|| Mutex::new(Limiter::new(WINDOW)));

fn admit(message: &str) -> Option<u64> {
    LIMITER.lock().unwrap_or_else(|p| p.into_inner()).admit(message, Instant::now())
}

/// librdkafka's log callback.
pub fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    let Some(repeats) = admit(message) else { return };
    let message = with_repeats(message, repeats, WINDOW);
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(facility, "librdkafka: {message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(facility, "librdkafka: {message}"),
        RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {message}"),
    }
}

/// librdkafka's error callback: most errors are also log lines (the same
/// text), so they count as repeats of those; the others are logged once per
/// window as warnings (librdkafka retries them).
pub fn error(error: &KafkaError, reason: &str) {
    let Some(repeats) = admit(reason) else { return };
    let reason = with_repeats(reason, repeats, WINDOW);
    tracing::warn!(%error, "librdkafka: {reason}");
}

/// An error the consumer's `recv` returned: librdkafka's error events on
/// the consumer queue (all brokers down, a transport failure), the same
/// conditions again, one per poll. Logged as a warning, rate-limited like
/// the lines above.
pub fn consume_error(e: &KafkaError) {
    let text = e.to_string();
    let Some(repeats) = admit(&text) else { return };
    tracing::warn!(error = %text, "{}", with_repeats("Kafka consume error", repeats, WINDOW));
}

/// The client context of the daemon's Kafka clients that need no other:
/// librdkafka's log and errors through [`log`] and [`error`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaLog;

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log(level, fac, log_message);
    }

    fn error(&self, e: KafkaError, reason: &str) {
        error(&e, reason);
    }
}

impl ConsumerContext for KafkaLog {}

/// A producer logging through [`KafkaLog`].
pub type Producer = FutureProducer<KafkaLog>;

/// A consumer logging through [`KafkaLog`].
pub type Consumer = BaseConsumer<KafkaLog>;

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: &str = "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms in state CONNECT)";

    #[test]
    fn repeats_within_the_window_are_counted_and_summarised_after_it() {
        let t0 = Instant::now();
        let mut l = Limiter::new(WINDOW);
        assert_eq!(l.admit(DOWN, t0), Some(0), "the first is logged");
        for s in 1..30 {
            assert_eq!(l.admit(DOWN, t0 + Duration::from_secs(s)), None, "a repeat at {s}s");
        }
        assert_eq!(l.admit(DOWN, t0 + WINDOW), Some(29), "the first after the window carries the count");
        assert_eq!(l.admit(DOWN, t0 + WINDOW + Duration::from_secs(1)), None, "a new window began");
        assert_eq!(l.admit(DOWN, t0 + 3 * WINDOW), Some(1));
        assert_eq!(l.admit(DOWN, t0 + 5 * WINDOW), Some(0), "nothing suppressed in between");
    }

    #[test]
    fn lines_differing_only_in_numbers_are_one_kind() {
        let t0 = Instant::now();
        let mut l = Limiter::new(WINDOW);
        assert_eq!(l.admit(DOWN, t0), Some(0));
        let later = DOWN.replace("after 0ms", "after 12ms").replace(":9", ":19092");
        assert_eq!(l.admit(&later, t0 + Duration::from_millis(500)), None);
        assert_eq!(l.admit("1/1 brokers are down", t0), Some(0), "another kind");
        assert_eq!(l.admit("2/2 brokers are down", t0), None);
        assert_eq!(kind("a 10.0.0.1:9092 b"), "a #.#.#.#:# b");
        let logged = format!("[thrd:127.0.0.1:9/bootstrap]: {DOWN}");
        assert_eq!(l.admit(&logged, t0), None, "the log line and the error event of one failure are one kind");
        let held_back = DOWN.replace("CONNECT)", "CONNECT, 3 identical error(s) suppressed)");
        assert_eq!(l.admit(&held_back, t0), None, "librdkafka's own suppression count is a number too");
    }

    #[test]
    fn the_summary_names_the_count_and_the_window() {
        assert_eq!(with_repeats("x", 0, WINDOW), "x");
        assert_eq!(with_repeats("x", 7, WINDOW), "x (repeated 7 times in 30s)");
    }

    #[test]
    fn the_kinds_tracked_are_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::new(WINDOW);
        for i in 0..MAX_KINDS {
            assert_eq!(l.admit(&format!("line {}", "x".repeat(i % 50) + &"y".repeat(i / 50)), t0), Some(0));
        }
        assert_eq!(l.seen.len(), MAX_KINDS);
        assert_eq!(l.admit("one more", t0), Some(0), "logged, untracked");
        assert_eq!(l.seen.len(), MAX_KINDS);
        assert_eq!(l.admit("one more", t0 + WINDOW), Some(0), "expired kinds make room");
        assert_eq!(l.seen.len(), 1);
    }
}
