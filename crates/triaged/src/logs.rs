//! The log subscriber: entries on stderr, as text (coloured only on a
//! terminal) or as JSON objects, one line per entry either way. A text entry
//! whose message or fields hold line breaks (error chains, librdkafka's
//! messages) has them escaped as `\n` and `\r`, so that one line is one entry
//! for journald, grep and log shippers.

use std::io::{self, Write};

use serde::Deserialize;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How a log entry is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `timestamp LEVEL message key=value...`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("`{filter}` is not a log filter (EnvFilter syntax, e.g. `info` or `info,triaged::source=debug`): {source}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a log subscriber is already installed")]
    Installed(#[source] tracing_subscriber::util::TryInitError),
}

/// Parses `filter` (tracing's EnvFilter syntax).
pub fn filter(filter: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(filter).map_err(|source| LogError::Filter { filter: filter.to_owned(), source })
}

/// The subscriber writing `format` entries that pass `filter` to `writer`.
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, ansi: bool, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match format {
        LogFormat::Text => Box::new(logs.with_ansi(ansi).with_writer(OneLine(writer)).finish()),
        // JSON strings escape line breaks already.
        LogFormat::Json => Box::new(logs.json().with_ansi(false).flatten_event(true).with_writer(writer).finish()),
    }
}

/// Installs the process's subscriber: `format` entries passing `filter`, on
/// stderr, coloured only when stderr is a terminal. Records of the `log`
/// crate are passed to it too.
pub fn init(format: LogFormat, filter_text: &str) -> Result<(), LogError> {
    let ansi = io::IsTerminal::is_terminal(&io::stderr());
    subscriber(format, filter(filter_text)?, ansi, io::stderr).try_init().map_err(LogError::Installed)
}

/// A [`MakeWriter`] whose writers keep each entry on one line.
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter { inner: self.0.make_writer(), entry: Vec::new() }
    }
}

/// Collects one entry (the formatter takes one writer per entry) and writes
/// it to `inner` when dropped or flushed, line breaks inside it escaped.
pub struct OneLineWriter<W: Write> {
    inner: W,
    entry: Vec<u8>,
}

impl<W: Write> OneLineWriter<W> {
    fn emit(&mut self) -> io::Result<()> {
        if self.entry.is_empty() {
            return Ok(());
        }
        let line = one_line(&self.entry);
        self.entry.clear();
        self.inner.write_all(&line)
    }
}

impl<W: Write> Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.entry.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for OneLineWriter<W> {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

/// `entry` with its line breaks escaped (`\n`, `\r`) and one newline at the end.
fn one_line(entry: &[u8]) -> Vec<u8> {
    let body = entry.strip_suffix(b"\n").unwrap_or(entry);
    let mut out = Vec::with_capacity(body.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn render(format: LogFormat, log: impl FnOnce()) -> String {
        let out = Buffer::default();
        let sub = subscriber(format, filter("info").unwrap(), false, out.clone());
        tracing::subscriber::with_default(sub, log);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn a_multi_line_text_entry_is_one_line() {
        let text = render(LogFormat::Text, || {
            let chain = "invalid configuration:\nt.toml: sink.endpoint: not a URL\r\nt.toml: kafka.brokers: empty";
            tracing::error!(error = chain, "cannot start:\n{chain}");
        });
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(text.ends_with('\n'), "{text:?}");
        assert!(text.contains(r"cannot start:\ninvalid configuration:\nt.toml: sink.endpoint: not a URL\r\nt.toml"), "{text:?}");
        assert!(text.contains(r#"error="invalid configuration:\nt.toml"#), "{text:?}");
    }

    #[test]
    fn each_entry_gets_its_own_line() {
        let text = render(LogFormat::Text, || {
            tracing::info!("one");
            tracing::warn!("two\nlines");
            tracing::debug!("filtered out");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert!(lines[0].ends_with("INFO one"), "{text:?}");
        assert!(lines[1].ends_with(r"WARN two\nlines"), "{text:?}");
    }

    #[test]
    fn a_multi_line_json_entry_is_one_line() {
        let text = render(LogFormat::Json, || tracing::error!(detail = "a\nb", "first\nsecond"));
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!((v["message"].as_str(), v["detail"].as_str()), (Some("first\nsecond"), Some("a\nb")));
    }

    #[test]
    fn an_invalid_filter_is_an_error_naming_it() {
        let e = filter("info,[").unwrap_err();
        assert!(e.to_string().contains("`info,[`"), "{e}");
    }
}
