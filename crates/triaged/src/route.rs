//! Routes: which sinks an incident goes to. Pure, built from the config.
//!
//! Every route whose matchers all match contributes its sinks (a union, not
//! the first match), each sink once. A lone `[sink]` is one route matching
//! every incident. Priority matches `peak_priority`, the highest priority
//! the incident reached, so a P1 paged and then downgraded still gets its
//! updates and its resolve where it was paged.

use crate::config::{Config, RouteConfig};
use crate::incident::Incident;

/// One route with its sinks as indices into [`Routes::names`].
#[derive(Debug, Clone)]
struct Route {
    label: String,
    sinks: Vec<usize>,
    priority: Option<Vec<u8>>,
    owner_group: Option<Vec<String>>,
    oncall: Option<Vec<String>>,
    service: Option<Vec<String>>,
}

/// What a route matcher is judged against: the routed fields of an incident.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    pub peak_priority: u8,
    pub assignment_group: Option<&'a str>,
    pub oncall: Option<&'a str>,
    pub services: &'a [String],
}

impl<'a> From<&'a Incident> for Routed<'a> {
    fn from(i: &'a Incident) -> Self {
        // A snapshot from before peak_priority existed has it at 0.
        let peak = if i.peak_priority == 0 { i.priority } else { i.peak_priority.min(i.priority) };
        Routed {
            peak_priority: peak,
            assignment_group: i.assignment_group.as_deref(),
            oncall: i.oncall.as_deref(),
            services: &i.impacted_services,
        }
    }
}

fn any_of(want: &Option<Vec<String>>, got: Option<&str>) -> bool {
    want.as_ref().is_none_or(|w| got.is_some_and(|g| w.iter().any(|x| x == g)))
}

impl Route {
    fn matches(&self, i: &Routed<'_>) -> bool {
        self.priority.as_ref().is_none_or(|p| p.contains(&i.peak_priority))
            && any_of(&self.owner_group, i.assignment_group)
            && any_of(&self.oncall, i.oncall)
            && self.service.as_ref().is_none_or(|w| i.services.iter().any(|s| w.contains(s)))
    }
}

/// The routes of a config, and the names of its sinks.
#[derive(Debug, Clone)]
pub struct Routes {
    names: Vec<String>,
    routes: Vec<Route>,
}

impl Routes {
    /// The routes of `cfg` (validated: unknown sink names are skipped here,
    /// validation refuses them). Sinks are in `Config::sink_configs` order.
    pub fn new(cfg: &Config) -> Routes {
        let names: Vec<String> = cfg.sink_configs().iter().map(|s| s.name.clone()).collect();
        if cfg.sink.is_some() {
            let all = Route { label: "[sink]".into(), sinks: vec![0], priority: None, owner_group: None, oncall: None, service: None };
            return Routes { names, routes: vec![all] };
        }
        let routes = cfg.routes.iter().enumerate().map(|(i, r)| Route::of(r, i, &names)).collect();
        Routes { names, routes }
    }

    /// The sinks' names, by index.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Indices of the sinks `incident` goes to, ascending, each once; empty
    /// when no route matches.
    pub fn sinks_for(&self, incident: &Incident) -> Vec<usize> {
        self.sinks_for_fields(&Routed::from(incident))
    }

    /// [`Routes::sinks_for`] on the routed fields alone (used by `check`).
    pub fn sinks_for_fields(&self, i: &Routed<'_>) -> Vec<usize> {
        let mut out: Vec<usize> = self.routes.iter().filter(|r| r.matches(i)).flat_map(|r| r.sinks.iter().copied()).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Labels of the routes that match `i`, for messages.
    pub fn matching(&self, i: &Routed<'_>) -> Vec<&str> {
        self.routes.iter().filter(|r| r.matches(i)).map(|r| r.label.as_str()).collect()
    }
}

impl Route {
    fn of(r: &RouteConfig, i: usize, names: &[String]) -> Route {
        Route {
            label: r.label(i),
            sinks: r.sinks.iter().filter_map(|s| names.iter().position(|n| n == s)).collect(),
            priority: r.priority.clone(),
            owner_group: r.owner_group.clone(),
            oncall: r.oncall.clone(),
            service: r.service.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::tests::NO_SINK;
    use crate::incident::test_support::action;
    use crate::incident::ActionKind;

    const TWO_SINKS: &str = r#"
[sinks.servicenow]
profile = "servicenow"
endpoint = "https://example.service-now.com"
[sinks.pagerduty]
profile = "pagerduty"
endpoint = "https://events.pagerduty.com"
routing_key = { env = "PD_KEY_DEFAULT" }
[sinks.pagerduty.routing_keys]
"dba-oncall" = { env = "PD_KEY_DBA" }
[[routes]]
name = "everything to ServiceNow"
sinks = ["servicenow"]
[[routes]]
sinks = ["pagerduty"]
priority = [1, 2]
"#;

    fn config(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(Path::new("t.toml"), &format!("{NO_SINK}{text}"))
            .map_err(|e| e.iter().map(|e| format!("{}: {}", e.location, e.message)).collect())
    }

    fn incident(priority: u8, peak: u8, group: Option<&str>, oncall: Option<&str>, services: &[&str]) -> Incident {
        let mut i = action(1, ActionKind::Open, "trg-00000000000000aa").incident;
        i.priority = priority;
        i.peak_priority = peak;
        i.assignment_group = group.map(Into::into);
        i.oncall = oncall.map(Into::into);
        i.impacted_services = services.iter().map(|s| s.to_string()).collect();
        i
    }

    fn names<'a>(r: &'a Routes, i: &Incident) -> Vec<&'a str> {
        r.sinks_for(i).into_iter().map(|s| r.names()[s].as_str()).collect()
    }

    #[test]
    fn a_lone_sink_gets_every_incident() {
        let r = Routes::new(&config("[sink]\nprofile = \"generic\"\nendpoint = \"http://127.0.0.1:1\"\n").unwrap());
        assert_eq!(r.names(), ["default"]);
        assert_eq!(names(&r, &incident(5, 5, None, None, &[])), ["default"]);
    }

    #[test]
    fn routes_are_a_union_by_peak_priority() {
        let r = Routes::new(&config(TWO_SINKS).unwrap());
        assert_eq!(names(&r, &incident(3, 3, None, None, &[])), ["servicenow"]);
        assert_eq!(names(&r, &incident(1, 1, None, None, &[])), ["pagerduty", "servicenow"]);
        // Paged at P1, downgraded to P3: still routed where it was paged.
        assert_eq!(names(&r, &incident(3, 1, None, None, &[])), ["pagerduty", "servicenow"]);
    }

    #[test]
    fn every_matcher_given_must_match_and_a_list_is_any_of() {
        let text = r#"
[sinks.a]
profile = "generic"
endpoint = "http://127.0.0.1:1"
[sinks.b]
profile = "generic"
endpoint = "http://127.0.0.1:2"
[[routes]]
sinks = ["a"]
owner_group = ["dba", "network-ops"]
oncall = "dba-oncall"
[[routes]]
sinks = ["b", "a"]
service = ["payments"]
priority = 2
"#;
        let r = Routes::new(&config(text).unwrap());
        assert_eq!(names(&r, &incident(4, 4, Some("dba"), Some("dba-oncall"), &[])), ["a"]);
        assert!(names(&r, &incident(4, 4, Some("dba"), Some("other"), &[])).is_empty(), "oncall must match too");
        assert!(names(&r, &incident(4, 4, None, Some("dba-oncall"), &[])).is_empty(), "no group matches no group list");
        assert_eq!(names(&r, &incident(2, 2, None, None, &["web", "payments"])), ["a", "b"], "any service, sinks once each");
        assert!(names(&r, &incident(3, 3, None, None, &["payments"])).is_empty());
    }

    #[test]
    fn validation_names_the_field() {
        let both = format!("[sink]\nprofile = \"generic\"\nendpoint = \"http://127.0.0.1:1\"\n{TWO_SINKS}");
        let errs = config(&both).unwrap_err();
        assert!(errs.iter().any(|e| e.starts_with("sinks: [sink] and [sinks.NAME] are both set")), "{errs:?}");
        let no_routes = TWO_SINKS.split("[[routes]]").next().unwrap();
        assert_eq!(config(no_routes).unwrap_err(), ["routes: [sinks.NAME] need [[routes]] saying which incidents go to which sink"]);
        let unknown = TWO_SINKS.replace("sinks = [\"pagerduty\"]", "sinks = [\"pagerdty\"]");
        let errs = config(&unknown).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("routes[1].sinks: routes[1] names the unknown sink `pagerdty`"), "{errs:?}");
        let bad_name = TWO_SINKS.replace("sinks.servicenow]", "sinks.Service_Now]").replace("[\"servicenow\"]", "[\"Service_Now\"]");
        assert!(config(&bad_name).unwrap_err()[0].starts_with("sinks.Service_Now: a sink name is lowercase"));
        let elsewhere = TWO_SINKS.replace(
            "endpoint = \"https://example.service-now.com\"",
            "endpoint = \"https://example.service-now.com\"\nrouting_keys = { x = { env = \"X\" } }",
        );
        assert_eq!(config(&elsewhere).unwrap_err(), ["sinks.servicenow.routing_keys: is only used by the pagerduty profile"]);
        let bad_priority = TWO_SINKS.replace("priority = [1, 2]", "priority = [0, 6]");
        assert_eq!(config(&bad_priority).unwrap_err(), ["routes[1].priority: 0 is not a priority 1..5"]);
        let per_sink = TWO_SINKS.replace("endpoint = \"https://events.pagerduty.com\"", "endpoint = \"ftp://x\"");
        assert!(config(&per_sink).unwrap_err()[0].starts_with("sinks.pagerduty.endpoint: scheme `ftp`"));
    }

    #[test]
    fn named_sinks_take_their_table_name() {
        let cfg = config(TWO_SINKS).unwrap();
        let names: Vec<_> = cfg.sink_configs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pagerduty", "servicenow"]);
        assert_eq!(cfg.sinks["pagerduty"].routing_keys.len(), 1);
    }
}
