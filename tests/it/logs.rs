//! The daemon's log with the broker down: librdkafka repeats the same few
//! errors (connect failed, all brokers down) many times a second, through its
//! log, its error events and the consumer's `recv`. The `triaged` binary runs
//! against a closed 127.0.0.1 port, and once it is up (consuming) its stderr
//! is counted over a fixed window (the rate is what is measured): each kind
//! of librdkafka line appears once, and a handful in all.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::{free_port, write_config};

/// How long the rate is observed, once the daemon serves (and consumes).
const WINDOW: Duration = Duration::from_secs(5);

fn is_librdkafka(line: &str) -> bool {
    line.contains("librdkafka") || line.contains("Kafka client error") || line.contains("Kafka consume error")
}

/// The message with every run of digits collapsed (ports and durations differ).
fn kind(line: &str) -> String {
    let msg = line.split_once("librdkafka: ").or_else(|| line.split_once(" WARN ")).map_or(line, |(_, m)| m);
    let mut out = String::new();
    for c in msg.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('#') {
            out.push('#');
        }
    }
    out
}

#[test]
fn with_the_broker_down_each_librdkafka_line_is_logged_once_and_rarely() {
    let dir = tempfile::tempdir().unwrap();
    // Bound then released: nothing listens there.
    let down = free_port();
    let config = write_config(dir.path(), &format!("127.0.0.1:{down}"), "g", 6000, "http://127.0.0.1:1", free_port());
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_triaged"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("TRIAGED_LOG", "info")
        .env_remove("TRIAGED_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&err_path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The daemon serves once it has started consuming (after the changelog
    // check gives up on the broker).
    while !(read().contains("serving /metrics") && read().lines().any(is_librdkafka)) {
        assert!(Instant::now() < deadline, "not serving, or no librdkafka line, within 30 s:\n{}", read());
        assert!(child.try_wait().unwrap().is_none(), "triaged exited:\n{}", read());
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let before = read().lines().filter(|l| is_librdkafka(l)).count();
    std::thread::sleep(WINDOW);
    let stderr = read();
    let elapsed = started.elapsed();
    assert!(child.try_wait().unwrap().is_none(), "triaged exited:\n{stderr}");
    let _ = child.kill();
    let _ = child.wait();

    let lines: Vec<&str> = stderr.lines().filter(|l| is_librdkafka(l)).collect();
    let in_window = lines.len() - before;
    println!(
        "broker down: {} librdkafka lines in the run, {in_window} in the {:.1} s window ({:.1} lines/s)",
        lines.len(),
        elapsed.as_secs_f64(),
        in_window as f64 / elapsed.as_secs_f64()
    );
    for l in &lines {
        println!("  {l}");
    }
    assert!(lines.len() <= 10, "{} librdkafka lines:\n{stderr}", lines.len());
    let mut kinds: Vec<String> = lines.iter().map(|l| kind(l)).collect();
    kinds.sort();
    let total = kinds.len();
    kinds.dedup();
    assert_eq!(kinds.len(), total, "a librdkafka line was logged twice within the window:\n{stderr}");
}
