//! Response bodies are read up to `sink.max_response_bytes`: a success with
//! a larger body is a permanent error naming the cap, read no further (a
//! loopback server streams a 256 MiB body and counts what it could send).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use triaged::config::SinkProfile;
use triaged::incident::{ActionKind, SinkError};

use super::{build, config, sample_action};

/// Answers every request 200 with a chunked body of up to 256 MiB; returns
/// its URL and the bytes it managed to write.
async fn huge_body_server() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        let Ok((mut conn, _)) = listener.accept().await else { return };
        let mut buf = vec![0u8; 64 << 10];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        if conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").await.is_err() {
            return;
        }
        let chunk = [b'x'; 64 << 10];
        for _ in 0..4096 {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if conn.write_all(&framed).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = conn.write_all(b"0\r\n\r\n").await;
    });
    (url, sent)
}

#[tokio::test]
async fn a_success_with_a_body_over_the_cap_is_an_error_naming_it() {
    let (url, sent) = huge_body_server().await;
    let (sink, _) = build(&config(SinkProfile::Generic, &url));
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    let SinkError::Permanent(msg) = &err else { panic!("a permanent error expected: {err:?}") };
    assert!(msg.contains("sink.max_response_bytes (65536 bytes)"), "{msg}");
    drop(sink);
    let sent = sent.load(Ordering::Relaxed);
    println!("a 256 MiB body against a 64 KiB cap: {sent} bytes sent before the client stopped reading");
    assert!(sent < 64 << 20, "the body was read no further than the cap and the socket buffers: {sent} bytes sent");
}
