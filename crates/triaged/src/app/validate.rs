//! `triaged check`: builds every component the daemon would start (config,
//! rules, CMDB and change calendar, ingest token, sink) without starting any,
//! and reports every error with its file and field or line.

use std::path::{Path, PathBuf};

use crate::config::{AuthConfig, Config, SecretSource};

/// How long `check` waits for the brokers to describe the changelog topic.
const TOPIC_CHECK_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// One line of the report, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Ok(String),
    /// Accepted, but worth fixing (a secret file others can read).
    Warning(String),
    Error(String),
}

/// What `check` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub lines: Vec<Line>,
    /// Errors among the lines (the closing count line is not one).
    pub errors: usize,
}

impl Report {
    fn ok(&mut self, l: String) {
        self.lines.push(Line::Ok(l));
    }

    fn error(&mut self, l: impl ToString) {
        self.errors += 1;
        self.lines.push(Line::Error(l.to_string()));
    }

    fn warning(&mut self, l: String) {
        self.lines.push(Line::Warning(l));
    }

    fn error_each<E: ToString>(&mut self, errs: &[E]) {
        errs.iter().for_each(|e| self.error(e.to_string()));
    }
}

/// Validates the config, then the rules and CMDB it names; a config that
/// fails validation, or does not even deserialize, does not stop the rest
/// from being checked.
pub fn check(path: &Path) -> Report {
    let mut r = Report::default();
    let (cfg, config_errors) = match Config::load_checked(path) {
        Ok(c) => c,
        Err(errs) => {
            r.error_each(&errs);
            let (rules, cmdb) = named_files(path);
            if let Some(dir) = rules {
                check_rules(&mut r, &dir);
            }
            if let Some(cmdb) = cmdb {
                match crate::topology::Snapshot::load(&cmdb) {
                    Ok(s) => r.ok(format!("cmdb: {} CIs from {} OK", s.len(), cmdb.display())),
                    Err(errs) => r.error_each(&errs),
                }
            }
            let n = r.errors;
            r.lines.push(Line::Error(format!(
                "{n} error(s); {} did not load, so only the rules and CMDB it names were checked",
                path.display()
            )));
            return r;
        }
    };
    r.error_each(&config_errors);
    check_rules(&mut r, &cfg.rules.dir);
    match super::load_cmdb(&cfg) {
        Ok(s) => match &cfg.changes {
            Some(ch) => {
                r.ok(format!("cmdb: {} CIs from {} with the change calendar {} OK", s.len(), cfg.cmdb.path.display(), ch.path.display()))
            }
            None => r.ok(format!("cmdb: {} CIs from {} OK", s.len(), cfg.cmdb.path.display())),
        },
        Err(errs) => r.error_each(&errs),
    }
    if !config_errors.iter().any(|e| e.location.starts_with("http")) {
        if let Err(e) = crate::server::Listener::new(&cfg.http) {
            r.error(format!("{}: {e}", path.display()));
        }
    }
    for w in secret_file_warnings(&cfg) {
        r.warning(format!("{}: warning: {w}", path.display()));
    }
    // The sink's secrets and endpoint are only worth checking on a valid sink section.
    let sink_valid = !config_errors.iter().any(|e| e.location.starts_with("sink"));
    if let Some(ic) = cfg.ingest.as_ref().filter(|_| !config_errors.iter().any(|e| e.location.starts_with("ingest"))) {
        if let Err(e) = crate::server::ingest::check_token(ic) {
            r.error(format!("{}: {e}", path.display()));
        }
    }
    if sink_valid {
        let metrics = crate::metrics::Metrics::new();
        for (at, sink) in cfg.sink_tables() {
            if let Err(e) = crate::sink::RestSink::new(sink, metrics.clone()) {
                r.error(format!("{}: {at}: {e}", path.display()));
            }
        }
    }
    let routes_valid = !config_errors.iter().any(|e| e.location.starts_with("sink") || e.location.starts_with("routes"));
    if routes_valid && cfg.sink.is_none() {
        for w in crate::config::unused_sinks(&cfg.sinks, &cfg.routes) {
            r.warning(format!("{}: warning: routes: no route names the sink `{w}`: it gets no incident", path.display()));
        }
        if let Ok(cmdb) = super::load_cmdb(&cfg) {
            let routes = crate::route::Routes::new(&cfg);
            for w in super::coverage::unrouted(&routes, &cmdb) {
                r.warning(format!("{}: warning: {w}", path.display()));
            }
        }
    }
    // librdkafka's own refusals (TLS files, mechanisms), as `run` would meet them.
    let kafka_valid = !config_errors.iter().any(|e| e.location.starts_with("kafka"));
    if kafka_valid {
        if let Err(e) = crate::kafka::build_clients(&cfg.kafka) {
            r.error(format!("{}: kafka: {e}", path.display()));
        } else if let Some(reason) = crate::kafka::refused_by_brokers(&cfg.kafka, TOPIC_CHECK_WITHIN) {
            r.error(format!("{}: kafka: the brokers refused this client: {reason}", path.display()));
        }
    }
    // The changelog topic is the one broker-side thing `run` refuses to start without.
    if config_errors.is_empty() && r.errors == 0 {
        let topic = &cfg.state.changelog_topic;
        match crate::scale::changelog::check_topic(&cfg.kafka, &cfg.state, cfg.rekey.as_ref(), TOPIC_CHECK_WITHIN) {
            Ok(true) => r.ok(format!("changelog: topic `{topic}` OK")),
            Ok(false) => r.ok(format!(
                "changelog: topic `{topic}` not checked: the brokers did not answer within {}",
                crate::duration::format(TOPIC_CHECK_WITHIN)
            )),
            Err(e) => r.error(format!("{}: {e}", path.display())),
        }
    }
    if r.errors > 0 {
        let n = r.errors;
        r.lines.push(Line::Error(format!("{n} error(s)")));
    } else {
        r.ok(format!("config: {} OK", path.display()));
    }
    r
}

fn check_rules(r: &mut Report, dir: &Path) {
    match crate::rules::RuleSet::load_dir(dir) {
        Ok(rules) => r.ok(format!("rules: {} rules in {} files OK", rules.len(), rules.files().len())),
        Err(errs) => r.error_each(&errs),
    }
}

/// `rules.dir` and `cmdb.path` of a config that does not deserialize, when
/// it is TOML at all (relative paths against its directory).
fn named_files(path: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    let Some(table) = std::fs::read_to_string(path).ok().and_then(|t| t.parse::<toml::Table>().ok()) else { return (None, None) };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let get = |section: &str, key: &str| table.get(section)?.get(key)?.as_str().map(|p| base.join(p));
    (get("rules", "dir"), get("cmdb", "path"))
}

/// A warning for each secret file (and the sink's client key) that its
/// group or others can read; `check` prints them and `run` logs them at
/// startup.
pub fn secret_file_warnings(cfg: &Config) -> Vec<String> {
    let client_keys: Vec<_> = cfg
        .sink_tables()
        .into_iter()
        .filter_map(|(at, s)| {
            s.client_key_file.clone().map(|f| (format!("{at}.client_key_file"), SecretSource { env: None, file: Some(f) }))
        })
        .collect();
    let keys = client_keys.iter().map(|(f, k)| (f.clone(), k));
    secret_sources(cfg).into_iter().chain(keys).filter_map(|(field, secret)| crate::sink::loose_permissions(&field, secret)).collect()
}

/// Every secret of the config, with its field.
fn secret_sources(cfg: &Config) -> Vec<(String, &SecretSource)> {
    let mut out = Vec::new();
    for (at, sink) in cfg.sink_tables() {
        match &sink.auth {
            AuthConfig::None => {}
            AuthConfig::Bearer { token } | AuthConfig::GenieKey { token } | AuthConfig::Token { token } => {
                out.push((format!("{at}.auth.token"), token))
            }
            AuthConfig::Basic { password, .. } => out.push((format!("{at}.auth.password"), password)),
        }
        out.extend(sink.routing_key.as_ref().map(|s| (format!("{at}.routing_key"), s)));
        out.extend(sink.routing_keys.iter().map(|(rot, s)| (format!("{at}.routing_keys.\"{rot}\""), s)));
        out.extend(sink.webhook.as_ref().map(|w| (format!("{at}.webhook.secret"), &w.secret)));
    }
    out.extend(cfg.ingest.as_ref().and_then(|i| i.token.as_ref()).map(|s| ("ingest.token".to_string(), s)));
    out.extend(cfg.kafka.sasl_password.as_ref().map(|s| ("kafka.sasl_password".to_string(), s)));
    out.extend(cfg.kafka.ssl_key_password.as_ref().map(|s| ("kafka.ssl_key_password".to_string(), s)));
    out
}
