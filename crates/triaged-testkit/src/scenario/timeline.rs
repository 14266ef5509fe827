//! A scenario's timeline: every alert stream's sends (Alertmanager repeats
//! while firing, Zabbix and Nagios send once), then the partitions they go
//! to and the order a consumer reads them in.
//!
//! Delivery: a message is produced after a delay of up to a minute (a
//! bridge's batching), never before an earlier message of its stream (a
//! tool sends in order), and read after its partition's lag of up to a
//! minute. Messages keyed by CI keep each alert's order; unkeyed ones do not.

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use triaged::topology::{CiIdx, Snapshot};

use super::{faults, render, Message, ScenarioParams, Truth};

/// How often Alertmanager sends a firing alert again.
const RESEND_EVERY: Duration = Duration::minutes(5);
/// Producer delay and partition lag, each at most this (out-of-order delivery).
const MAX_DELAY: Duration = Duration::minutes(1);

/// One alert stream.
struct Stream {
    ci: CiIdx,
    warning: bool,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
}

/// One message before it is rendered.
struct Send {
    at: DateTime<Utc>,
    /// The time its payload carries.
    stamp: DateTime<Utc>,
    stream: usize,
    firing: bool,
}

fn streams(cmdb: &Snapshot, truth: &Truth, rng: &mut ChaCha8Rng) -> Vec<Stream> {
    let idx = |id: &str| cmdb.by_id(id).expect("the truth names CIs of its estate");
    let mut out = Vec::new();
    for f in &truth.faults {
        for (i, (ci, start)) in faults::starts(f, rng).into_iter().enumerate() {
            // The root recovers first, its symptoms within half a minute.
            let end = f.recovery.map(|r| if i == 0 { r } else { r + Duration::seconds(rng.gen_range(0..=30)) });
            out.push(Stream { ci: idx(&ci), warning: false, start, end });
        }
    }
    for n in &truth.noise {
        out.push(Stream { ci: idx(&n.ci), warning: true, start: n.onset, end: n.clears });
    }
    out
}

/// The messages of `truth` in delivery order.
pub(super) fn render(cmdb: &Snapshot, truth: &Truth, p: &ScenarioParams, rng: &mut ChaCha8Rng) -> Vec<Message> {
    let streams = streams(cmdb, truth, rng);
    // Streams that never end resend until well after the last onset.
    let horizon = p.start + p.span + Duration::minutes(30);
    let mut sends = Vec::new();
    for (s, st) in streams.iter().enumerate() {
        let until = st.end.unwrap_or(horizon);
        let mut at = st.start;
        while at < until {
            sends.push(Send { at, stamp: st.start, stream: s, firing: true });
            if !render::resends(&cmdb.ci(st.ci).kind) {
                break;
            }
            at += RESEND_EVERY;
        }
        if let Some(end) = st.end {
            sends.push(Send { at: end, stamp: end, stream: s, firing: false });
        }
    }
    sends.sort_by_key(|x| (x.at, x.stream, !x.firing));

    let d = p.difficulties;
    let parts = p.partitions.max(1);
    let delay = |rng: &mut ChaCha8Rng| {
        if d.out_of_order {
            Duration::milliseconds(rng.gen_range(0..=MAX_DELAY.num_milliseconds()))
        } else {
            Duration::zero()
        }
    };
    let lags: Vec<Duration> = (0..parts).map(|_| delay(rng)).collect();
    let mut produced: Vec<Option<DateTime<Utc>>> = vec![None; streams.len()];
    let mut out: Vec<(DateTime<Utc>, usize, Message)> = Vec::with_capacity(sends.len());
    for (seq, x) in sends.iter().enumerate() {
        let st = &streams[x.stream];
        let partition = if d.unkeyed_partitions { rng.gen_range(0..parts) } else { st.ci % parts };
        let at_least = produced[x.stream].unwrap_or(x.at);
        let produce = (x.at + delay(rng)).max(at_least);
        produced[x.stream] = Some(produce);
        let delivered = produce + lags[partition as usize];
        let payload = if st.warning {
            render::warning(cmdb, st.ci, x.firing, x.stamp, seq as u64)
        } else {
            render::fault(cmdb, st.ci, x.firing, x.stamp, seq as u64)
        };
        let m = Message { at: x.at, delivered, partition, ci: cmdb.ci(st.ci).id.clone(), firing: x.firing, payload };
        out.push((delivered, seq, m));
    }
    out.sort_by_key(|(t, seq, _)| (*t, *seq));
    out.into_iter().map(|(_, _, m)| m).collect()
}

/// Sets each fault's [`super::Fault::root_read_lag`] from the read order of `messages`.
pub(super) fn note_read_lags(truth: &mut Truth, messages: &[Message]) {
    let mut first_read: std::collections::HashMap<&str, DateTime<Utc>> = std::collections::HashMap::new();
    for m in messages.iter().filter(|m| m.firing) {
        first_read.entry(m.ci.as_str()).or_insert(m.delivered);
    }
    for f in &mut truth.faults {
        let root = first_read.get(f.root.as_str()).copied();
        let symptom = f.symptoms.iter().filter_map(|s| first_read.get(s.as_str()).copied()).min();
        f.root_read_lag = match (root, symptom) {
            (Some(r), Some(s)) if r > s => Some(r - s),
            _ => None,
        };
    }
}
