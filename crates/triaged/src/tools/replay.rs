//! Replay: a recorded event stream through rules and a CMDB, without a sink.
//!
//! Messages come from a file (one raw payload per line, any supported format;
//! blank lines and `#` comments skipped) or from a Kafka topic's offset range.
//! They run through the real decoder and correlation core on a virtual clock
//! driven by the events' own times; every incident action is acknowledged at
//! once. The result lists the incidents that would open, update, resolve and
//! reopen (as text lines, and as records for `--output json`, see
//! `replay_json`); two rule sets are compared by replaying the same input
//! through each.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::{CorrelationConfig, Format};
use crate::core::clock::{steps, EventClock};
use crate::core::{Core, CoreConfig};
use crate::incident::Action;
use crate::rules::RuleSet;
use crate::source::decode::decode;
use crate::topology::Snapshot;

use super::replay_json::ActionRecord;

/// One recorded message: where it came from and its payload.
pub type Recorded = (String, Vec<u8>);

/// Replay failures (a message that does not decode is not one: it is reported).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("--offsets `{0}`: use A..B, A.. or ..B with offsets as integers")]
    Offsets(String),
    #[error("topic `{topic}`: {message}")]
    Topic { topic: String, message: String },
}

/// What a replay produced.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    pub messages: usize,
    pub events: usize,
    /// (origin, error) of every message that did not decode.
    pub undecodable: Vec<(String, String)>,
    pub decisions: BTreeMap<String, u64>,
    /// One line per incident action, in order.
    pub actions: Vec<String>,
    /// The same actions as records, in order (`replay --output json`).
    pub records: Vec<ActionRecord>,
    /// Per incident key: its last action (final state).
    pub incidents: BTreeMap<String, String>,
}

/// Reads a recording: one payload per line.
pub fn read_file(path: &Path) -> Result<Vec<Recorded>, ReplayError> {
    let text = std::fs::read(path).map_err(|source| ReplayError::Read { path: path.to_owned(), source })?;
    let name = path.display().to_string();
    Ok(text
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_ascii();
            !t.is_empty() && !t.starts_with(b"#")
        })
        .map(|(i, l)| (format!("{name}:{}", i + 1), l.to_vec()))
        .collect())
}

/// Parses `A..B`, `A..` or `..B` (half-open).
pub fn parse_offsets(s: &str) -> Result<(i64, Option<i64>), ReplayError> {
    let bad = || ReplayError::Offsets(s.to_string());
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let from = if a.is_empty() { 0 } else { a.parse().map_err(|_| bad())? };
    let to = if b.is_empty() { None } else { Some(b.parse().map_err(|_| bad())?) };
    if from < 0 || to.is_some_and(|t| t < from) {
        return Err(bad());
    }
    Ok((from, to))
}

/// Reads `[from, to)` of each partition of `topic` (all, or `partition`);
/// `to` defaults to the end of the partition when the read starts.
pub fn read_topic(brokers: &str, topic: &str, partition: Option<i32>, from: i64, to: Option<i64>) -> Result<Vec<Recorded>, ReplayError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "triaged-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let parts: Vec<i32> = match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => t.partitions().iter().map(|p| p.id()).collect(),
        _ => return Err(ReplayError::Topic { topic: topic.into(), message: "not found".into() }),
    };
    let parts: Vec<i32> = match partition {
        Some(p) if parts.contains(&p) => vec![p],
        Some(p) => return Err(ReplayError::Topic { topic: topic.into(), message: format!("has no partition {p}") }),
        None => parts,
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &p in &parts {
        let (_, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        let end = to.map_or(high, |t| t.min(high));
        if end > from {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
            ends.insert(p, end);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let mut next: BTreeMap<i32, i64> = ends.keys().map(|&p| (p, from)).collect();
    let mut idle_since = Instant::now();
    while next.iter().any(|(p, o)| *o < ends[p]) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                idle_since = Instant::now();
                let p = m.partition();
                if m.offset() < ends.get(&p).copied().unwrap_or(0) {
                    out.push((format!("{topic}/{p}@{}", m.offset()), m.payload().unwrap_or_default().to_vec()));
                }
                next.insert(p, m.offset() + 1);
            }
            Some(Err(e)) => return Err(e.into()),
            None if idle_since.elapsed() > timeout => {
                let stuck: Vec<String> =
                    next.iter().filter(|(p, o)| **o < ends[p]).map(|(p, o)| format!("{p} at {o} of {}", ends[p])).collect();
                return Err(ReplayError::Topic {
                    topic: topic.into(),
                    message: format!("no message for {timeout:?}; partitions {}", stuck.join(", ")),
                });
            }
            None => {}
        }
    }
    Ok(out)
}

fn render(a: &Action, now: DateTime<Utc>) -> String {
    let i = &a.incident;
    format!(
        "{} {:<7} {} P{} {} root={} members={} {}",
        now.format("%Y-%m-%dT%H:%M:%SZ"),
        a.kind.as_str(),
        i.key,
        i.priority,
        i.scope,
        i.root_cause.as_ref().map_or("-", |c| c.id.as_str()),
        i.members.len(),
        i.title
    )
}

/// Replays `messages`, decoded as `format`, with the timers of `cc`;
/// `progress` prints to stderr on long inputs.
pub fn replay(
    messages: &[Recorded],
    rules: Arc<RuleSet>,
    cmdb: Arc<Snapshot>,
    cc: &CorrelationConfig,
    format: Format,
    progress: bool,
) -> ReplayReport {
    let mut core = Core::new(CoreConfig::from_config(cc), rules, cmdb);
    let mut report = ReplayReport { messages: messages.len(), ..ReplayReport::default() };
    let mut clock = EventClock::default();
    let wall = Utc::now();
    let second = chrono::Duration::seconds(1);
    let mut meter = Progress::new(messages.len(), progress);
    let drain = |core: &mut Core, report: &mut ReplayReport, at: DateTime<Utc>| {
        for a in core.take_actions() {
            let line = render(&a, at);
            report.incidents.insert(a.incident.key.clone(), line.clone());
            report.actions.push(line);
            report.records.push(ActionRecord::of(&a, at));
            core.ack(a.id);
        }
    };
    for (i, (origin, payload)) in messages.iter().enumerate() {
        meter.update(i);
        // Decoded as the daemon would have at the time reached.
        let received = clock.watermark(wall, false).unwrap_or(wall);
        let events = match decode(format, payload, received) {
            Ok(e) => e,
            Err(e) => {
                report.undecodable.push((origin.clone(), e.to_string()));
                continue;
            }
        };
        for mut ev in events {
            ev.cap_fields();
            report.events += 1;
            // The daemon's clock (`core::clock`) on a log read in one go: no
            // partition is ever idle, timers run as the event time passes.
            clock.observe(None, ev.time, wall);
            let own = ev.time.min(wall);
            let t = clock.watermark(wall, false).map_or(own, |w| w.max(own));
            for k in steps(core.last_tick(), t) {
                core.tick(k);
                drain(&mut core, &mut report, k);
            }
            let d = core.handle(&ev, t);
            *report.decisions.entry(d.kind.as_str().to_string()).or_default() += 1;
            drain(&mut core, &mut report, t);
        }
    }
    meter.done();
    // Let every timer run out: opens, updates, resolves and closes.
    if let Some(mut t) = clock.watermark(wall, false) {
        let d = |h: &crate::config::HumanDuration| chrono::Duration::from_std(h.0).unwrap_or(chrono::Duration::MAX);
        let end = t + d(&cc.group_wait) + d(&cc.resolve_hold_down) + d(&cc.reopen_window) + d(&cc.flap_window) + second;
        while t < end {
            t += second;
            core.tick(t);
            drain(&mut core, &mut report, t);
        }
    }
    report
}

/// Progress on stderr for long replays: rewritten in place on a terminal,
/// a line per 10% otherwise.
struct Progress {
    total: usize,
    on: bool,
    tty: bool,
    started: Instant,
    last: Instant,
    last_decile: usize,
}

impl Progress {
    fn new(total: usize, wanted: bool) -> Progress {
        let now = Instant::now();
        Progress { total, on: wanted && total > 10_000, tty: std::io::stderr().is_terminal(), started: now, last: now, last_decile: 0 }
    }

    fn update(&mut self, done: usize) {
        if !self.on {
            return;
        }
        let decile = done * 10 / self.total.max(1);
        let due = if self.tty { self.last.elapsed() >= Duration::from_millis(500) } else { decile > self.last_decile };
        if due {
            self.last = Instant::now();
            self.last_decile = decile;
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            let line = format!("replayed {done}/{} messages ({}%), {rate:.0} messages/s", self.total, done * 100 / self.total.max(1));
            if self.tty {
                eprint!("\r{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }

    fn done(&self) {
        if self.on && self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_ranges() {
        assert_eq!(parse_offsets("5..10").unwrap(), (5, Some(10)));
        assert_eq!(parse_offsets("5..").unwrap(), (5, None));
        assert_eq!(parse_offsets("..7").unwrap(), (0, Some(7)));
        for bad in ["5", "a..b", "10..5", "-1..3"] {
            assert!(parse_offsets(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_lines_keep_their_numbers_and_skip_comments() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(&p, "# recorded\n{\"a\":1}\n\n{\"b\":2}\n").unwrap();
        let m = read_file(&p).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[0].0.ends_with("r.jsonl:2") && m[1].0.ends_with("r.jsonl:4"), "{m:?}");
    }
}
