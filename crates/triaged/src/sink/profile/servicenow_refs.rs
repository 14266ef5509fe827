//! ServiceNow references by name or by sys_id (`[sink.servicenow]
//! reference_by`), and the options of the profile the sink keeps.
//!
//! By name (the default) the name is sent as is and the create or PATCH
//! carries `sysparm_input_display_value=true`. By sys_id the name is looked
//! up in its table first (`name=<n>`, one row, `sys_id` only) and the
//! sys_id found is cached; a name not found there, or a table the sink may
//! not read, leaves the field out of the record (warned once per name):
//! an incident is never lost over a missing CI or group.

use moka::sync::Cache;
use reqwest::Method;
use serde_json::Value;
use tracing::{debug, warn};

use super::servicenow::{sn_escape, sn_field};
use crate::config::{ReferenceBy, ServicenowConfig};
use crate::incident::SinkError;
use crate::sink::{RestSink, SYS_ID_CACHE_CAPACITY, SYS_ID_CACHE_IDLE};

/// A reference field of an incident that triaged fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum SnRef {
    /// `cmdb_ci`, a row of `cmdb_ci`.
    Ci,
    /// `assignment_group`, a row of `sys_user_group`.
    Group,
}

impl SnRef {
    /// The incident field.
    pub(super) fn field(self) -> &'static str {
        match self {
            SnRef::Ci => "cmdb_ci",
            SnRef::Group => "assignment_group",
        }
    }

    /// The table its names are looked up in.
    fn table(self) -> &'static str {
        match self {
            SnRef::Ci => "cmdb_ci",
            SnRef::Group => "sys_user_group",
        }
    }
}

/// What the servicenow profile keeps of `[sink.servicenow]`, and the names
/// it looked up.
pub(in crate::sink) struct SnOptions {
    pub(super) reference_by: ReferenceBy,
    /// `close_code` of a resolve.
    pub(super) close_code: String,
    /// (field, name) -> sys_id found for it.
    found: Cache<(SnRef, String), String>,
    /// (field, name) not found, already warned about.
    warned: Cache<(SnRef, String), ()>,
}

impl SnOptions {
    pub(in crate::sink) fn new(cfg: Option<&ServicenowConfig>) -> SnOptions {
        let cfg = cfg.cloned().unwrap_or_default();
        SnOptions { reference_by: cfg.reference_by, close_code: cfg.close_code, found: bounded(), warned: bounded() }
    }
}

/// A name cache bounded like the sink's sys_ids.
fn bounded<V: Clone + Send + Sync + 'static>() -> Cache<(SnRef, String), V> {
    Cache::builder().max_capacity(SYS_ID_CACHE_CAPACITY).time_to_idle(SYS_ID_CACHE_IDLE).build()
}

impl RestSink {
    /// What to write into `r` for `name`: the name itself (by display
    /// value), the sys_id looked up (by sys_id), or `None` to leave the field
    /// out. Only a retryable failure (or a lost claim, a shutdown) of the
    /// look-up is an error: the create is then tried again.
    pub(super) async fn sn_reference(&self, r: SnRef, name: &str) -> Result<Option<String>, SinkError> {
        let opts = &self.inner.servicenow;
        if opts.reference_by == ReferenceBy::DisplayValue {
            return Ok(Some(name.to_owned()));
        }
        let key = (r, name.to_owned());
        if let Some(id) = opts.found.get(&key) {
            return Ok(Some(id));
        }
        let why = match self.sn_name_to_sys_id(r, name).await {
            Ok(Some(id)) => {
                opts.found.insert(key, id.clone());
                return Ok(Some(id));
            }
            Ok(None) => format!("no row of {} has this name", r.table()),
            Err(SinkError::Permanent(e)) => e,
            Err(e) => return Err(e),
        };
        if opts.warned.contains_key(&key) {
            debug!(field = r.field(), name = %name, reason = %why, "ServiceNow reference left out");
        } else {
            opts.warned.insert(key, ());
            warn!(field = r.field(), name = %name, reason = %why, "ServiceNow reference not found by name; the incident is written without it");
        }
        Ok(None)
    }

    /// `GET /api/now/table/{table}?sysparm_query=name=<name>`: the sys_id of
    /// the first row, if any.
    async fn sn_name_to_sys_id(&self, r: SnRef, name: &str) -> Result<Option<String>, SinkError> {
        let mut url = self.url(&["api", "now", "table", r.table()]);
        url.query_pairs_mut()
            .append_pair("sysparm_query", &format!("name={}", sn_escape(name)))
            .append_pair("sysparm_fields", "sys_id")
            .append_pair("sysparm_limit", "1");
        let body = self.call("reference", Method::GET, url, None).await?;
        let value: Value = serde_json::from_slice(&body).map_err(|_| self.unusable("reference", &body))?;
        let rows = value.get("result").and_then(Value::as_array).ok_or_else(|| self.unusable("reference", &body))?;
        Ok(rows.first().map(|row| sn_field(row, "sys_id").0).filter(|id| !id.is_empty()))
    }
}
