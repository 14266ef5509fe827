//! `[http]`: the listener of `/metrics`, `/healthz`, `/readyz`, the read
//! endpoints and the ingest, with the limits that keep unauthenticated
//! clients from exhausting the daemon.

use std::path::PathBuf;

use serde::Deserialize;

use super::{dur, HumanDuration, SecretSource};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the listener.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A client must send a request's headers within this (slow headers are cut off).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// A request body must arrive within this once its headers are read (408 after).
    #[serde(default = "default_body_timeout")]
    pub body_timeout: HumanDuration,
    /// A connection that moves no byte either way for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Connections served at once; above it only `reserve_connections` more
    /// are taken, each for one request with a short header timeout, and any
    /// further one is closed as soon as it is accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections taken above `max_connections` for one request each (so a
    /// health probe still gets through a full listener).
    #[serde(default = "default_reserve_connections")]
    pub reserve_connections: usize,
    /// Bearer token required on `/incidents`, `/explain`, `/problems` (and
    /// `/metrics` with `token_covers_metrics`); absent: they are open.
    /// `/healthz` and `/readyz` are always open.
    #[serde(default)]
    pub token: Option<SecretSource>,
    /// Whether `token` is also required on `/metrics`.
    #[serde(default)]
    pub token_covers_metrics: bool,
    /// Serve HTTPS with this certificate chain and key (PEM files); absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[http.tls]`: PEM files, relative paths resolve against the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            reserve_connections: default_reserve_connections(),
            token: None,
            token_covers_metrics: false,
            tls: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

fn default_header_timeout() -> HumanDuration {
    dur("10s")
}

fn default_body_timeout() -> HumanDuration {
    dur("30s")
}

fn default_idle_timeout() -> HumanDuration {
    dur("60s")
}

fn default_max_connections() -> usize {
    1024
}

fn default_reserve_connections() -> usize {
    16
}

/// Most connections `max_connections` may allow.
const MAX_CONNECTIONS: usize = 1 << 20;

impl HttpConfig {
    pub(super) fn validate(&self, err: &mut dyn FnMut(&str, String)) {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            err("http.listen", format!("`{}` is not an address:port", self.listen));
        }
        for (field, d) in [
            ("http.header_timeout", self.header_timeout),
            ("http.body_timeout", self.body_timeout),
            ("http.idle_timeout", self.idle_timeout),
        ] {
            if d.0.is_zero() {
                err(field, "must be greater than zero".into());
            }
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            err("http.max_connections", format!("must be between 1 and {MAX_CONNECTIONS}"));
        }
        if self.reserve_connections > 1024 {
            err("http.reserve_connections", "must be at most 1024".into());
        }
        if self.token.is_none() && self.token_covers_metrics {
            err("http.token_covers_metrics", "needs http.token".into());
        }
    }
}

/// Validation errors of `[http]` alone (for tests).
#[cfg(test)]
fn errors(h: &HttpConfig) -> Vec<String> {
    let mut v = Vec::new();
    h.validate(&mut |loc, msg| v.push(format!("{loc}: {msg}")));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_limits_are_named() {
        assert!(errors(&HttpConfig::default()).is_empty());
        let bad = HttpConfig {
            body_timeout: HumanDuration(std::time::Duration::ZERO),
            max_connections: 0,
            token_covers_metrics: true,
            ..HttpConfig::default()
        };
        assert_eq!(
            errors(&bad),
            [
                "http.body_timeout: must be greater than zero",
                "http.max_connections: must be between 1 and 1048576",
                "http.token_covers_metrics: needs http.token"
            ]
        );
    }
}
