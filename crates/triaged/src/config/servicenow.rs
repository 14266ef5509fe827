//! `[sink.servicenow]`: how the ServiceNow Table API profile names the
//! records an incident refers to, and how it closes one.

use serde::Deserialize;

use super::SinkProfile;

/// How `cmdb_ci` and `assignment_group` are written into an incident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceBy {
    /// By name, with `sysparm_input_display_value=true` on every create and
    /// PATCH, so ServiceNow resolves the names itself.
    #[default]
    DisplayValue,
    /// By sys_id: the sink looks each name up first (`cmdb_ci`,
    /// `sys_user_group` by `name`) and caches what it finds; a name not
    /// found is left out of the record (and logged once).
    SysId,
}

/// `[sink.servicenow]`, only for `profile = "servicenow"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicenowConfig {
    /// `display_value` (default) or `sys_id`.
    #[serde(default)]
    pub reference_by: ReferenceBy,
    /// `close_code` of a record resolved by triaged; must be one of the
    /// instance's resolution codes.
    #[serde(default = "default_close_code")]
    pub close_code: String,
}

impl Default for ServicenowConfig {
    fn default() -> Self {
        ServicenowConfig { reference_by: ReferenceBy::default(), close_code: default_close_code() }
    }
}

fn default_close_code() -> String {
    "Solved (Permanently)".into()
}

/// What `check` and `run` refuse of `[sink.servicenow]`: `(field, message)`.
pub(super) fn errors(profile: SinkProfile, sn: Option<&ServicenowConfig>) -> Vec<(&'static str, String)> {
    let Some(sn) = sn else { return Vec::new() };
    let mut out = Vec::new();
    if profile != SinkProfile::Servicenow {
        out.push(("sink.servicenow", format!("is only used by the servicenow profile (this sink's is {})", profile.as_str())));
    }
    if sn.close_code.trim().is_empty() {
        out.push(("sink.servicenow.close_code", "must not be empty (a resolution code of the instance)".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::MINIMAL;
    use super::*;
    use crate::config::Config;

    fn servicenow(table: &str) -> String {
        format!("{}{table}", MINIMAL.replace("profile = \"generic\"", "profile = \"servicenow\""))
    }

    #[test]
    fn defaults_and_both_reference_modes() {
        let cfg = Config::parse(Path::new("t.toml"), &servicenow("")).unwrap();
        assert_eq!(cfg.sink.as_ref().unwrap().servicenow, None);
        let cfg = Config::parse(Path::new("t.toml"), &servicenow("[sink.servicenow]\n")).unwrap();
        assert_eq!(cfg.sink.as_ref().unwrap().servicenow, Some(ServicenowConfig::default()));
        assert_eq!(ServicenowConfig::default().close_code, "Solved (Permanently)");
        assert_eq!(ServicenowConfig::default().reference_by, ReferenceBy::DisplayValue);
        let text = servicenow("[sink.servicenow]\nreference_by = \"sys_id\"\nclose_code = \"Resolved by caller\"\n");
        let sn = Config::parse(Path::new("t.toml"), &text).unwrap().sink.unwrap().servicenow.unwrap();
        assert_eq!((sn.reference_by, sn.close_code.as_str()), (ReferenceBy::SysId, "Resolved by caller"));
    }

    #[test]
    fn refused_fields_are_named() {
        let check = |text: &str| Config::parse(Path::new("t.toml"), text).unwrap_err();
        let errs = check(&servicenow("[sink.servicenow]\nclose_code = \" \"\n"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].location, "sink.servicenow.close_code");
        let errs = check(&format!("{MINIMAL}[sink.servicenow]\n"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].location, "sink.servicenow");
        assert!(errs[0].message.contains("only used by the servicenow profile"), "{}", errs[0]);
        let errs = check(&servicenow("[sink.servicenow]\nreference_by = \"name\"\n"));
        assert!(errs[0].message.contains("name"), "{}", errs[0]);
        let errs = check(&servicenow("[sink.servicenow]\nclose_notes_prefix = \"x\"\n"));
        assert!(errs[0].message.contains("close_notes_prefix"), "{}", errs[0]);
    }
}
