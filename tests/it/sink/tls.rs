//! The sink's own CA bundle and client certificate (mutual TLS), against a
//! rustls HTTPS server on 127.0.0.1 that requires a client certificate
//! signed by the test CA: with `ca_file` and a client certificate the
//! incident is delivered; without the certificate, or trusting another CA,
//! the request is refused with an error that says why. `check`-time errors
//! name the field and file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use triaged::config::{SinkConfig, SinkProfile};
use triaged::incident::{ActionKind, SinkError};
use triaged::metrics::Metrics;
use triaged::sink::RestSink;

use super::{build, config, sample_action, KEY};
use crate::support::ca::{client_cert, make_ca, server_cert};

/// What the server saw on each connection: the request line, or why the
/// handshake or the read failed.
type Seen = Arc<Mutex<Vec<Result<String, String>>>>;

/// An HTTPS server requiring a client certificate signed by `client_ca`;
/// answers each request 200 and closes.
async fn mtls_server(cert: &Path, key: &Path, client_ca: &Path) -> (String, Seen) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(client_ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        // Bounded: the tests make a handful of connections.
        for _ in 0..32 {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let outcome = match acceptor.accept(tcp).await {
                    Err(e) => Err(format!("handshake: {e}")),
                    Ok(mut tls) => match read_request(&mut tls).await {
                        Err(e) => Err(format!("read: {e}")),
                        Ok(line) => {
                            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                            let _ = tls.shutdown().await;
                            Ok(line)
                        }
                    },
                };
                record.lock().unwrap().push(outcome);
            });
        }
    });
    (url, seen)
}

/// Reads a request's head and its `content-length` body; returns the request line.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if data.len() > 1 << 20 {
            return Err(std::io::Error::other("head too large"));
        }
        match s.read(&mut buf).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => data.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while data.len() < head_end + length {
        match s.read(&mut buf).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => data.extend_from_slice(&buf[..n]),
        }
    }
    Ok(head.lines().next().unwrap_or_default().to_owned())
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    client: (PathBuf, PathBuf),
    url: String,
    seen: Seen,
}

async fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_key, ca_path) = make_ca(dir.path(), "sink");
    let (_, _, other_ca) = make_ca(dir.path(), "other");
    let (cert, key) = server_cert(dir.path(), &ca, &ca_key);
    let client = client_cert(dir.path(), "triaged-client", &ca, &ca_key);
    let (url, seen) = mtls_server(&cert, &key, &ca_path).await;
    Pki { _dir: dir, ca: ca_path, other_ca, client, url, seen }
}

fn tls_config(url: &str, ca: Option<&Path>, client: Option<&(PathBuf, PathBuf)>) -> SinkConfig {
    SinkConfig {
        name: "default".into(),
        read_back: Default::default(),
        webhook: None,
        ca_file: ca.map(Path::to_owned),
        client_cert_file: client.map(|c| c.0.clone()),
        client_key_file: client.map(|c| c.1.clone()),
        ..config(SinkProfile::Generic, url)
    }
}

#[tokio::test]
async fn with_the_ca_bundle_and_a_client_certificate_the_incident_is_delivered() {
    let p = pki().await;
    let (sink, _) = build(&tls_config(&p.url, Some(&p.ca), Some(&p.client)));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    let seen = p.seen.lock().unwrap().clone();
    assert_eq!(seen, [Ok(format!("PUT /incidents/{KEY} HTTP/1.1"))]);
}

#[tokio::test]
async fn without_a_client_certificate_the_server_refuses_and_the_error_says_so() {
    let p = pki().await;
    let (sink, _) = build(&tls_config(&p.url, Some(&p.ca), None));
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    let SinkError::Retryable { message, .. } = &err else { panic!("a transport error expected: {err:?}") };
    println!("no client certificate: {message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert!(!message.contains("UnknownIssuer"), "the server's certificate was trusted; the client's was missing: {message}");
    assert!(!p.seen.lock().unwrap().iter().any(Result::is_ok), "no request was served");
}

#[tokio::test]
async fn trusting_another_ca_the_server_is_refused_with_a_clear_error() {
    let p = pki().await;
    let (sink, _) = build(&tls_config(&p.url, Some(&p.other_ca), Some(&p.client)));
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    let SinkError::Retryable { message, .. } = &err else { panic!("a transport error expected: {err:?}") };
    println!("another CA: {message}");
    assert!(message.contains("invalid peer certificate") && message.contains("UnknownIssuer"), "{message}");
    assert!(!p.seen.lock().unwrap().iter().any(Result::is_ok), "no request was served");
}

#[tokio::test]
async fn without_the_ca_bundle_a_private_ca_is_not_trusted() {
    // The built-in web roots alone do not know the test CA.
    let p = pki().await;
    let (sink, _) = build(&tls_config(&p.url, None, Some(&p.client)));
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
}

#[test]
fn unusable_tls_files_are_errors_naming_the_field_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM at all\n").unwrap();
    let (ca, ca_key, ca_path) = make_ca(dir.path(), "x");
    let client = client_cert(dir.path(), "c", &ca, &ca_key);
    let missing = dir.path().join("missing.pem");
    let cases: [(SinkConfig, &str); 5] = [
        (tls_config("https://127.0.0.1:1", Some(&missing), None), "sink.ca_file: cannot read"),
        (tls_config("https://127.0.0.1:1", Some(&junk), None), "sink.ca_file: "),
        (tls_config("https://127.0.0.1:1", Some(&ca_path), Some(&(client.0.clone(), junk.clone()))), "sink.client_key_file: "),
        (tls_config("https://127.0.0.1:1", Some(&ca_path), Some(&(junk.clone(), client.1.clone()))), "sink.client_cert_file: "),
        (
            SinkConfig { client_key_file: None, ..tls_config("https://127.0.0.1:1", None, Some(&client)) },
            "sink.client_cert_file and sink.client_key_file: set both or neither",
        ),
    ];
    for (cfg, want) in cases {
        let err = RestSink::new(&cfg, Metrics::new()).map(drop).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
        let named = [&cfg.ca_file, &cfg.client_cert_file, &cfg.client_key_file];
        if !want.contains("both or neither") {
            assert!(named.iter().any(|p| p.as_ref().is_some_and(|p| err.contains(&p.display().to_string()))), "names the file: {err}");
        }
    }
}
