//! The HTTP side of the sink: the reqwest client, sending a request,
//! classifying the reply (retryable or permanent), and secret-free excerpts.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::Value;

use super::profile::truncate;
use super::retry;
use super::{RestSink, SinkBuildError};
use crate::config::SinkConfig;
use crate::incident::SinkError;

/// Longest response-body excerpt carried in an error.
const EXCERPT_MAX: usize = 200;

/// The client every request goes through: `sink.timeout` per request (and
/// to connect), redirects not followed, the sink's CA bundle and client
/// certificate when set.
pub(super) fn client(cfg: &SinkConfig) -> Result<reqwest::Client, SinkBuildError> {
    let builder = reqwest::Client::builder()
        .timeout(cfg.timeout.0)
        .connect_timeout(cfg.timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("triaged/", env!("CARGO_PKG_VERSION")));
    super::tls::configure(builder, cfg)?.build().map_err(|e| SinkBuildError::Client(error_chain(&e)))
}

/// Why a request got no usable reply.
enum Failed {
    Transport(reqwest::Error),
    /// A success whose body is over the cap.
    TooLarge(StatusCode),
}

/// A response that arrived (any status), body read.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl RestSink {
    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut().expect("http(s) URLs have a path").pop_if_empty().extend(segments);
        url
    }

    /// Sends and classifies: `Ok(body)` for 2xx.
    pub(super) async fn call(&self, op: &'static str, method: Method, url: Url, body: Option<&Value>) -> Result<Vec<u8>, SinkError> {
        let reply = self.send(op, method, url, body).await?;
        self.check(op, reply)
    }

    /// A look-up by GET: `None` for a 404 (no such record), else the 2xx
    /// body; other statuses are classified as by [`RestSink::check`].
    pub(super) async fn get_or_missing(&self, url: Url) -> Result<Option<Vec<u8>>, SinkError> {
        let reply = self.send("lookup", Method::GET, url, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.check("lookup", reply).map(Some)
    }

    /// Sends one request and reads the response; transport failures become
    /// [`SinkError`]s, any status is returned. The duration is observed in
    /// `sink_request_duration_seconds{sink, profile, operation}`. For an action
    /// with a claim, the claim is judged last, right before the request goes
    /// out (see [`RestSink::for_action`]), after the token of the sink's rate
    /// limit (the wait is observed in `sink_rate_limited_seconds`).
    pub(super) async fn send(&self, op: &'static str, method: Method, url: Url, body: Option<&Value>) -> Result<Reply, SinkError> {
        let mut req: RequestBuilder = self.inner.client.request(method, url).header(ACCEPT, "application/json");
        if let Some(auth) = &self.inner.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let rate = self.rate_limit();
        if rate.is_limited() {
            let waited = rate.take().await;
            self.inner.metrics.sink_rate_limited.with_label_values(&[&self.inner.name]).observe(waited.as_secs_f64());
        }
        self.claim_holds().await?;
        let started = Instant::now();
        let cap = self.inner.max_response_bytes;
        let result = async {
            let mut resp = req.send().await.map_err(Failed::Transport)?;
            let status = resp.status();
            let retry_after = retry_after(resp.headers());
            // Read at most `cap` bytes, chunk by chunk: a larger body is never buffered.
            let mut body = Vec::new();
            let over = loop {
                match resp.chunk().await {
                    Ok(None) => break false,
                    Ok(Some(chunk)) if body.len() + chunk.len() > cap => {
                        body.extend_from_slice(&chunk[..cap - body.len()]);
                        break true;
                    }
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    // The status decides for a failure; a success needs its body.
                    Err(_) if !status.is_success() => break false,
                    Err(e) => return Err(Failed::Transport(e)),
                }
            };
            // An error reply's body is only an excerpt; a success's must be whole.
            if over && status.is_success() {
                return Err(Failed::TooLarge(status));
            }
            Ok(Reply { status, retry_after, body })
        }
        .await;
        self.inner
            .metrics
            .sink_request_duration
            .with_label_values(&[&self.inner.name, self.inner.profile.as_str(), op])
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|e| match e {
            Failed::Transport(e) => self.transport_error(op, e),
            Failed::TooLarge(status) => SinkError::Permanent(format!(
                "{} {op}: HTTP {status} with a response body over sink.max_response_bytes ({} bytes); not read further",
                self.inner.profile.as_str(),
                cap
            )),
        })
    }

    /// Status classification shared by all profiles.
    pub(super) fn check(&self, op: &'static str, reply: Reply) -> Result<Vec<u8>, SinkError> {
        let status = reply.status;
        if status.is_success() {
            return Ok(reply.body);
        }
        let profile = self.inner.profile.as_str();
        let excerpt = self.excerpt(&reply.body);
        let detail = if excerpt.is_empty() { String::new() } else { format!(": {excerpt}") };
        if is_retryable_status(status) {
            Err(SinkError::Retryable {
                message: format!("{profile} {op}: HTTP {status}{detail}"),
                retry_after: reply.retry_after,
                maybe_applied: false,
            })
        } else {
            Err(SinkError::Permanent(format!("{profile} {op}: HTTP {status}{detail}")))
        }
    }

    fn transport_error(&self, op: &'static str, e: reqwest::Error) -> SinkError {
        let profile = self.inner.profile.as_str();
        let what = if e.is_builder() {
            return SinkError::Permanent(self.scrubbed(format!("{profile} {op}: cannot build request: {}", error_chain(&e))));
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_timeout() {
            "timed out"
        } else {
            "request failed"
        };
        // Only a failure to connect proves nothing reached the server.
        let maybe_applied = !e.is_connect();
        SinkError::Retryable {
            message: self.scrubbed(format!("{profile} {op}: {what}: {}", error_chain(&e.without_url()))),
            retry_after: None,
            maybe_applied,
        }
    }

    pub(super) fn unusable(&self, op: &'static str, body: &[u8]) -> SinkError {
        let profile = self.inner.profile.as_str();
        SinkError::Permanent(format!("{profile} {op}: unusable response: {}", self.excerpt(body)))
    }

    /// A short, single-line, secret-free excerpt of a response body.
    fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        truncate(&self.scrubbed(text), EXCERPT_MAX)
    }

    fn scrubbed(&self, mut text: String) -> String {
        for secret in &self.inner.scrub {
            if !secret.expose().is_empty() && text.contains(secret.expose()) {
                text = text.replace(secret.expose(), "[redacted]");
            }
        }
        text
    }
}

/// 408, 429 and 5xx other than 501 are worth retrying.
fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429) || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    retry::parse_retry_after(value, SystemTime::now())
}

/// An error and its causes, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        for code in [408, 429, 500, 502, 503, 504, 507, 599] {
            assert!(is_retryable_status(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 501] {
            assert!(!is_retryable_status(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
