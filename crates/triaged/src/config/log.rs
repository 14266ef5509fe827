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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::MINIMAL;
    use super::super::Config;
    use super::*;

    #[test]
    fn the_log_section_has_defaults_and_a_checked_filter() {
        let cfg = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!((cfg.log.format, cfg.log.level.as_str()), (LogFormat::Text, "info"));
        let json = format!("{MINIMAL}[log]\nformat = \"json\"\nlevel = \"warn,triaged::sink=debug\"\n");
        let cfg = Config::parse(Path::new("t.toml"), &json).unwrap();
        assert_eq!((cfg.log.format, cfg.log.level.as_str()), (LogFormat::Json, "warn,triaged::sink=debug"));
        let bad = format!("{MINIMAL}[log]\nlevel = \"info,[\"\n");
        let errs = Config::parse(Path::new("t.toml"), &bad).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].location, "log.level");
        assert!(errs[0].message.contains("`info,[`"), "{}", errs[0]);
        let unknown = format!("{MINIMAL}[log]\nformat = \"xml\"\n");
        assert!(Config::parse(Path::new("t.toml"), &unknown).unwrap_err()[0].message.contains("xml"));
        let typo = format!("{MINIMAL}[log]\nlevle = \"info\"\n");
        assert!(Config::parse(Path::new("t.toml"), &typo).unwrap_err()[0].message.contains("levle"));
    }
}
