//! `[log]`: how the daemon logs. `--log` / `TRIAGED_LOG` and `--log-format` /
//! `TRIAGED_LOG_FORMAT`, when given, override these.

use serde::Deserialize;

use crate::logs::LogFormat;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (the default: one line per entry, coloured only on a terminal)
    /// or `json` (one object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// Which entries are written, in tracing's EnvFilter syntax: `info` (the
    /// default), `warn`, `info,triaged::sink=debug`.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::default(), level: default_level() }
    }
}

fn default_level() -> String {
    "info".into()
}

impl LogConfig {
    pub(super) fn validate(&self, err: &mut impl FnMut(&str, String)) {
        if let Err(e) = crate::logs::filter(&self.level) {
            err("log.level", e.to_string());
        }
    }
}
