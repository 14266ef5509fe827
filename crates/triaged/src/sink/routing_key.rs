//! PagerDuty routing keys: one per on-call rotation (`routing_keys`, by the
//! incident's `oncall`), else the sink's `routing_key`. PagerDuty limits
//! events per routing key, so each distinct key has its own token bucket
//! (`rate_limit`), shared by the rotations that use the same key.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::SinkConfig;
use crate::incident::Incident;
use crate::sink::rate::RateLimit;
use crate::sink::{read_secret, Secret, SinkBuildError};

/// The keys of a pagerduty sink, each with its bucket.
pub(crate) struct RoutingKeys {
    /// Distinct keys, each with the rate limit of the sink's config.
    keys: Vec<(Secret, RateLimit)>,
    /// Rotation -> index into `keys`.
    by_rotation: BTreeMap<String, usize>,
    /// `routing_key`: for incidents of no rotation listed.
    default: Option<usize>,
}

impl fmt::Debug for RoutingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingKeys").field("keys", &self.keys.len()).field("rotations", &self.by_rotation.keys()).finish()
    }
}

impl RoutingKeys {
    /// Reads every key of `cfg` now (a missing one fails at startup); each
    /// joins `scrub`. For the pagerduty profile only.
    pub(crate) fn new(cfg: &SinkConfig, scrub: &mut Vec<Secret>) -> Result<RoutingKeys, SinkBuildError> {
        let mut keys: Vec<(Secret, RateLimit)> = Vec::new();
        let mut index = |key: Secret, scrub: &mut Vec<Secret>| match keys.iter().position(|(k, _)| k.expose() == key.expose()) {
            Some(i) => i,
            None => {
                scrub.push(key.clone());
                keys.push((key, RateLimit::from_config(cfg)));
                keys.len() - 1
            }
        };
        let default = match &cfg.routing_key {
            Some(src) => Some(index(read_secret("sink.routing_key", src)?, scrub)),
            None => None,
        };
        let mut by_rotation = BTreeMap::new();
        for (rotation, src) in &cfg.routing_keys {
            by_rotation.insert(rotation.clone(), index(read_secret("sink.routing_keys", src)?, scrub));
        }
        if default.is_none() && by_rotation.is_empty() {
            return Err(SinkBuildError::MissingRoutingKey);
        }
        Ok(RoutingKeys { keys, by_rotation, default })
    }

    /// Index of the key for `incident`: its rotation's, else the default;
    /// `Err` with a message naming the rotation when there is neither.
    pub(crate) fn index_for(&self, incident: &Incident) -> Result<usize, String> {
        let rotation = incident.oncall.as_deref();
        match rotation.and_then(|r| self.by_rotation.get(r)).copied().or(self.default) {
            Some(i) => Ok(i),
            None => Err(format!(
                "pagerduty: no routing key for the on-call rotation `{}`: add it to routing_keys or set routing_key",
                rotation.unwrap_or("(none)")
            )),
        }
    }

    pub(crate) fn key(&self, i: usize) -> &Secret {
        &self.keys[i].0
    }

    pub(crate) fn rate(&self, i: usize) -> &RateLimit {
        &self.keys[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SecretSource, SinkProfile};
    use crate::incident::test_support::action;
    use crate::incident::ActionKind;

    /// A pagerduty sink whose keys are files of `dir` holding their name.
    fn cfg(dir: &std::path::Path, default: Option<&str>, rotations: &[(&str, &str)]) -> SinkConfig {
        let text = "profile = \"pagerduty\"\nendpoint = \"http://127.0.0.1:1\"\n";
        let mut c: SinkConfig = toml::from_str(text).unwrap();
        assert_eq!(c.profile, SinkProfile::Pagerduty);
        let file = |v: &str| {
            let p = dir.join(v.replace(' ', "_"));
            std::fs::write(&p, format!("{v}\n")).unwrap();
            SecretSource { env: None, file: Some(p) }
        };
        c.routing_key = default.map(file);
        c.routing_keys = rotations.iter().map(|(r, v)| (r.to_string(), file(v))).collect();
        c
    }

    fn on(oncall: Option<&str>) -> Incident {
        let mut i = action(1, ActionKind::Open, "trg-00000000000000aa").incident;
        i.oncall = oncall.map(Into::into);
        i
    }

    #[test]
    fn the_rotation_picks_the_key_else_the_default_and_one_bucket_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), Some("key-default"), &[("dba-oncall", "key-dba"), ("dba-backup", "key-dba")]);
        let mut scrub = Vec::new();
        let keys = RoutingKeys::new(&c, &mut scrub).unwrap();
        let key = |o| keys.key(keys.index_for(&on(o)).unwrap()).expose().to_string();
        assert_eq!(key(Some("dba-oncall")), "key-dba");
        assert_eq!(key(Some("network-oncall")), "key-default");
        assert_eq!(key(None), "key-default");
        assert_eq!(keys.index_for(&on(Some("dba-oncall"))), keys.index_for(&on(Some("dba-backup"))), "one key, one bucket");
        assert_eq!(scrub.len(), 2, "each distinct key scrubbed once");
        assert!(!format!("{keys:?}").contains("key-"), "Debug hides the keys");

        let only = RoutingKeys::new(&cfg(dir.path(), None, &[("dba-oncall", "key-dba")]), &mut Vec::new()).unwrap();
        let err = only.index_for(&on(Some("network-oncall"))).unwrap_err();
        assert!(err.contains("`network-oncall`"), "{err}");
        assert!(matches!(RoutingKeys::new(&cfg(dir.path(), None, &[]), &mut Vec::new()), Err(SinkBuildError::MissingRoutingKey)));
    }
}
