//! The accept loop: every connection gets the header timeout (hyper), the
//! idle timeout (`idle::Idle`) and a slot under `max_connections`. Past the
//! cap, `reserve_connections` more are taken for one request each with a
//! header timeout of at most `RESERVE_HEADER_TIMEOUT`, so a health probe
//! still gets through a listener full of idle clients; any connection past
//! the reserve is closed as soon as it is accepted, which gives its file
//! descriptor straight back. Body limits and the body timeout are the
//! handlers' (`ingest.rs`), which read a body only after its auth.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::idle::Idle;
use crate::config::HttpConfig;

/// Header timeout of a connection taken into the reserve.
const RESERVE_HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long open connections may finish their request once the listener stops.
const DRAIN_WITHIN: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener's limits, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub reserve_connections: usize,
}

impl Limits {
    pub fn from_config(c: &HttpConfig) -> Limits {
        Limits {
            header_timeout: c.header_timeout.0,
            body_timeout: c.body_timeout.0,
            idle_timeout: c.idle_timeout.0,
            max_connections: c.max_connections,
            reserve_connections: c.reserve_connections,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::from_config(&HttpConfig::default())
    }
}

/// Where a connection was admitted.
enum Slot {
    Regular(#[allow(dead_code)] OwnedSemaphorePermit),
    Reserve(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// Accepts and serves connections until `stop` is cancelled, then lets open
/// ones finish their request for at most `DRAIN_WITHIN`.
pub(super) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: crate::metrics::Metrics,
    stop: CancellationToken,
) {
    let regular = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(limits.reserve_connections));
    let conns = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (tcp, _peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let slot = match regular.clone().try_acquire_owned() {
            Ok(p) => Slot::Regular(p),
            Err(_) => match reserve.clone().try_acquire_owned() {
                Ok(p) => Slot::Reserve(p),
                Err(_) => {
                    metrics.listener.connections_refused.inc();
                    drop(tcp);
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (app, stop, tls, open) = (app.clone(), stop.clone(), tls.clone(), metrics.listener.connections_open.clone());
        open.inc();
        conns.spawn(async move {
            let io = Idle::new(tcp, limits.idle_timeout);
            match tls {
                None => serve_connection(io, app, &limits, &slot, stop).await,
                Some(acceptor) => {
                    // The handshake is bounded by the header timeout.
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => serve_connection(tls, app, &limits, &slot, stop).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
            open.dec();
        });
    }
    drop(listener);
    conns.close();
    let _ = tokio::time::timeout(DRAIN_WITHIN, conns.wait()).await;
}

async fn serve_connection<I>(io: I, app: Router, limits: &Limits, slot: &Slot, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    match slot {
        Slot::Regular(_) => builder.header_read_timeout(limits.header_timeout),
        Slot::Reserve(_) => builder.header_read_timeout(limits.header_timeout.min(RESERVE_HEADER_TIMEOUT)).keep_alive(false),
    };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_WITHIN, conn).await;
        }
    }
}
