//! The HTTP listener under connections that never finish: idle ones, bodies
//! stalled half way, slow headers, more connections than the cap. It keeps
//! answering `/healthz`, cuts each of them off at its timeout and keeps its
//! memory bounded. The listener is served in this process on 127.0.0.1
//! with a daemon's router (the ingest's producer points at no broker: no
//! request here gets as far as Kafka).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use triaged::config::Config;
use triaged::metrics::Metrics;
use triaged::server::explain::DecisionLog;
use triaged::server::ingest::Ingest;
use triaged::server::ready::Readiness;
use triaged::server::{Lifecycle, Listener, ServerState};

const TOKEN: &str = "s3cret";

/// A config whose `[http]` and `[ingest]` are tuned by `http`.
fn config(dir: &std::path::Path, http: &str) -> Config {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let text = format!(
        r#"
[kafka]
brokers = "127.0.0.1:1"
group_id = "t"
topics = [{{ name = "events" }}]
[cmdb]
path = "cmdb.yaml"
[rules]
dir = "rules"
[sink]
profile = "generic"
endpoint = "http://127.0.0.1:1"
[ingest]
token = {{ file = "token" }}
[http]
listen = "127.0.0.1:0"
token = {{ file = "token" }}
{http}
"#
    );
    let path = dir.join("triaged.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The senders behind the listener's state, kept while it serves.
type Senders = (
    watch::Sender<Lifecycle>,
    watch::Sender<Arc<Vec<triaged::incident::Incident>>>,
    watch::Sender<Arc<Vec<triaged::core::problems::ProblemCandidate>>>,
);

/// The listener of `cfg`, served until the token is cancelled.
struct Served {
    addr: std::net::SocketAddr,
    metrics: Metrics,
    stop: CancellationToken,
    _keep: Senders,
}

async fn serve(cfg: &Config) -> Served {
    let metrics = Metrics::new();
    let (phase_tx, phase) = watch::channel(Lifecycle::Running);
    let (inc_tx, incidents) = watch::channel(Arc::new(Vec::new()));
    let (prob_tx, problems) = watch::channel(Arc::new(Vec::new()));
    let state = ServerState {
        metrics: metrics.clone(),
        phase,
        readiness: Readiness::new(metrics.listener.kafka_broker_up.clone()),
        incidents,
        ingest: Ingest::new(cfg, metrics.clone()).unwrap().map(Arc::new),
        problems,
        decisions: DecisionLog::default(),
        listener: Listener::new(&cfg.http).unwrap(),
        webhooks: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(triaged::server::serve(listener, state, stop.clone()));
    Served { addr, metrics, stop, _keep: (phase_tx, inc_tx, prob_tx) }
}

/// One request on a fresh connection; the status line and how long it took.
async fn get(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.expect("answered within 10 s").unwrap();
    let text = String::from_utf8_lossy(&out);
    (text.lines().next().unwrap_or("").to_string(), started.elapsed())
}

/// Waits (bounded) until the peer closes `s`; true when it did within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Raises this process's soft file-descriptor limit to its hard limit; returns it.
fn raise_nofile() -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
    l.rlim_cur
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_connections_neither_starve_healthz_nor_grow_memory() {
    const STALLED: usize = 300;
    // Both ends of every connection live in this process: two descriptors each.
    let limit = raise_nofile();
    let idle = 10_000.min((limit as usize).saturating_sub(1_000) / 2 - STALLED);
    eprintln!("RLIMIT_NOFILE {limit}: {idle} idle and {STALLED} stalled connections");
    let dir = tempfile::tempdir().unwrap();
    let body_timeout = Duration::from_secs(3);
    let cfg = config(
        dir.path(),
        &format!("body_timeout = \"3s\"\nheader_timeout = \"60s\"\nidle_timeout = \"60s\"\nmax_connections = {}\n", idle + STALLED + 50),
    );
    let served = serve(&cfg).await;
    let rss_before = vm_rss_kib();

    let started = Instant::now();
    let mut idles = Vec::with_capacity(idle);
    for _ in 0..idle {
        idles.push(TcpStream::connect(served.addr).await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(60), "connecting took too long");
    }
    let mut stalled = Vec::with_capacity(STALLED);
    let sent_at = Instant::now();
    for _ in 0..STALLED {
        let mut s = TcpStream::connect(served.addr).await.unwrap();
        let head = format!(
            "POST /api/v2/alerts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 500000\r\n\r\n[{{\"labels\":"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    // While all of them are held, /healthz answers at once.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let (status, took) = get(served.addr, "/healthz", None).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        worst = worst.max(took);
    }
    let open = served.metrics.listener.connections_open.get();
    let rss_held = vm_rss_kib();
    eprintln!(
        "held {open} server connections; /healthz worst of 20: {worst:?}; VmRSS {} MiB -> {} MiB",
        rss_before / 1024,
        rss_held / 1024
    );
    assert!(open as usize >= idle + STALLED, "every connection is held: {open}");
    assert!(worst < Duration::from_millis(500), "/healthz took {worst:?}");

    // Every stalled body is answered 408 and closed at the body timeout.
    let mut answered = Vec::new();
    for mut s in stalled {
        answered.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
            (r.is_ok(), String::from_utf8_lossy(&out).lines().next().unwrap_or("").to_string())
        }));
    }
    for a in answered {
        let (closed, status) = a.await.unwrap();
        assert!(closed, "a stalled body was not cut off");
        assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    }
    let cut_after = sent_at.elapsed();
    eprintln!("stalled bodies cut off {cut_after:?} after they were sent (body_timeout {body_timeout:?})");
    assert!(cut_after >= body_timeout && cut_after < body_timeout + Duration::from_secs(10), "{cut_after:?}");
    let rss_after = vm_rss_kib();
    eprintln!("VmRSS after the stalled bodies: {} MiB", rss_after / 1024);
    assert!(rss_held.saturating_sub(rss_before) < 512 * 1024, "{} MiB more while held", (rss_held - rss_before) / 1024);
    let counted = served.metrics.render();
    assert!(counted.contains(&format!("triaged_ingest_requests_total{{code=\"408\"}} {STALLED}")), "408s are counted");
    drop(idles);
    served.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_the_reserve_serves_probes_and_the_rest_is_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "max_connections = 20\nreserve_connections = 2\nidle_timeout = \"60s\"\nheader_timeout = \"60s\"\n");
    let served = serve(&cfg).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(served.addr).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while served.metrics.listener.connections_open.get() < 20 {
        assert!(Instant::now() < deadline, "the 20 connections were not accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, took) = get(served.addr, "/healthz", None).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "a probe gets a reserve connection");
    eprintln!("/healthz through the reserve at the cap: {took:?}");
    // Two idle clients take the reserve; the next connection is closed at once.
    let mut reserve = vec![TcpStream::connect(served.addr).await.unwrap(), TcpStream::connect(served.addr).await.unwrap()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while served.metrics.listener.connections_open.get() < 22 {
        assert!(Instant::now() < deadline, "the reserve was not taken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut extra = TcpStream::connect(served.addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await, "past the reserve, a connection is closed");
    assert_eq!(served.metrics.listener.connections_refused.get(), 1);
    // The reserve's short header timeout frees it for the next probe.
    for r in &mut reserve {
        assert!(closed_within(r, Duration::from_secs(3)).await, "an idle reserve connection is cut after its header timeout");
    }
    let (status, _) = get(served.addr, "/healthz", None).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    for h in &mut held {
        assert!(!closed_within(h, Duration::from_millis(1)).await, "connections under the cap are kept");
    }
    served.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_slow_headers_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "idle_timeout = \"1s\"\nheader_timeout = \"2s\"\n");
    let served = serve(&cfg).await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(served.addr).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await, "an idle connection is closed");
    let idle_took = started.elapsed();
    assert!(idle_took >= Duration::from_millis(900), "closed before its idle timeout: {idle_took:?}");
    // A byte every 300 ms keeps it from being idle, but the headers must be complete within 2 s.
    let started = Instant::now();
    let mut slow = TcpStream::connect(served.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let mut cut = false;
    for _ in 0..30 {
        if slow.write_all(b"X-Slow: 1\r\n").await.is_err() || closed_within(&mut slow, Duration::from_millis(300)).await {
            cut = true;
            break;
        }
    }
    let slow_took = started.elapsed();
    eprintln!("idle connection closed after {idle_took:?}, slow headers after {slow_took:?}");
    assert!(cut, "slow headers were never cut off");
    assert!(slow_took >= Duration::from_millis(1900) && slow_took < Duration::from_secs(5), "{slow_took:?}");
    served.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_endpoints_take_the_token_before_anything_and_bodies_are_limited_while_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "token_covers_metrics = true\n");
    let served = serve(&cfg).await;
    for path in ["/incidents", "/problems", "/explain/x", "/metrics"] {
        assert_eq!(get(served.addr, path, None).await.0, "HTTP/1.1 401 Unauthorized", "{path}");
        assert_eq!(get(served.addr, path, Some("Bearer wrong")).await.0, "HTTP/1.1 401 Unauthorized", "{path}");
    }
    assert_eq!(get(served.addr, "/incidents", Some("bearer s3cret")).await.0, "HTTP/1.1 200 OK");
    assert_eq!(get(served.addr, "/metrics", Some("Bearer s3cret")).await.0, "HTTP/1.1 200 OK");
    assert_eq!(get(served.addr, "/explain/x", Some("BEARER s3cret")).await.0, "HTTP/1.1 404 Not Found");
    assert_eq!(get(served.addr, "/healthz", None).await.0, "HTTP/1.1 200 OK", "/healthz stays open");

    // Without the token, the body is never read: 401 at once though it is still coming.
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    s.write_all(b"POST /api/v2/alerts HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n[").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.expect("answered before the body").unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"), "{}", String::from_utf8_lossy(&buf[..n]));

    // A chunked body (no length announced) is refused once it passes max_body_bytes.
    let mut s = TcpStream::connect(served.addr).await.unwrap();
    s.write_all(
        format!("POST /api/v2/alerts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
    let mut answer = String::new();
    for _ in 0..40 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await {
            answer = String::from_utf8_lossy(&buf[..n]).to_string();
            break;
        }
    }
    if answer.is_empty() {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.expect("answered").unwrap();
        answer = String::from_utf8_lossy(&buf[..n]).to_string();
    }
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let text = served.metrics.render();
    for code in ["401", "413"] {
        assert!(text.contains(&format!("triaged_ingest_requests_total{{code=\"{code}\"}} 1")), "{code} counted:\n{text}");
    }
    served.stop.cancel();
}

#[test]
fn check_refuses_bad_listener_settings() {
    let dir = tempfile::tempdir().unwrap();
    let _ = config(dir.path(), "");
    let path = dir.path().join("triaged.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("[http]\n", "[http]\nidle_timeout = \"0s\"\nmax_connections = 0\n");
    let errs = Config::parse(&path, &text).unwrap_err();
    let locs: Vec<&str> = errs.iter().map(|e| e.location.as_str()).collect();
    assert_eq!(locs, ["http.idle_timeout", "http.max_connections"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let cfg = config(dir.path(), "tls = { cert = \"cert.pem\", key = \"key.pem\" }\n");
    let served = serve(&cfg).await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("cert.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let r = https.get(format!("https://{}/healthz", served.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = https.get(format!("https://{}/incidents", served.addr)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new().get(format!("http://{}/healthz", served.addr)).send().await;
    assert!(plain.is_err(), "plain HTTP was answered");
    served.stop.cancel();
}
