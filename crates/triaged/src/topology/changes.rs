//! The change calendar: planned changes from a YAML file, merged into the CMDB
//! snapshot as maintenance windows each time the CMDB is loaded.
//!
//! ```yaml
//! changes:
//!   - change_id: CHG0051234
//!     start: 2026-12-01T22:00:00Z          # RFC 3339, [start, end)
//!     end: 2026-12-02T02:00:00Z
//!     cis: [sw-core-par1-01]               # CI ids or names
//!     services: [bs-payments]              # optional: every CI the service depends on
//!     action: suppress                     # suppress (default; rules with `in_maintenance`) or annotate
//!     reason: core switch firmware upgrade
//! ```
//!
//! `suppress` windows silence firing events of rules that ask for it
//! (`suppress: { in_maintenance: true }`); `annotate` windows never suppress,
//! they add the change to the decision's reason and the incident's notes.
//! Resolves always pass.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::topology::{MaintenanceWindow, Snapshot};

/// A calendar error, with its file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}: {message}", file.display(), line.map_or_else(|| "-".to_string(), |l| l.to_string()))]
pub struct ChangeError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    changes: Vec<Change>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Action {
    #[default]
    Suppress,
    Annotate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    change_id: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    #[serde(default)]
    cis: Vec<String>,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    action: Action,
    #[serde(default)]
    reason: Option<String>,
}

/// Line (1-based) of the entry declaring `change_id`.
fn line_of(text: &str, change_id: &str) -> Option<usize> {
    text.lines().position(|l| l.contains("change_id") && l.contains(change_id)).map(|i| i + 1)
}

/// Reads the calendar at `path` and adds its windows to `cmdb`. Every error
/// is collected; on error nothing is added.
pub fn apply_calendar(path: &Path, cmdb: &mut Snapshot, max_depth: usize) -> Result<usize, Vec<ChangeError>> {
    let err = |line: Option<usize>, message: String| ChangeError { file: path.to_owned(), line, message };
    let text = std::fs::read_to_string(path).map_err(|e| vec![err(None, format!("cannot read the change calendar: {e}"))])?;
    let file: CalendarFile = yaml_serde::from_str(&text).map_err(|e| vec![err(e.location().map(|l| l.line()), e.to_string())])?;
    let mut errors = Vec::new();
    let mut windows = Vec::new();
    for (i, c) in file.changes.iter().enumerate() {
        let line = line_of(&text, &c.change_id);
        if c.change_id.trim().is_empty() {
            errors.push(err(line, format!("changes[{i}]: change_id is empty")));
        }
        if c.end <= c.start {
            errors.push(err(line, format!("{}: end {} is not after start {}", c.change_id, c.end.to_rfc3339(), c.start.to_rfc3339())));
        }
        if c.cis.is_empty() && c.services.is_empty() {
            errors.push(err(line, format!("{}: names no `cis` and no `services`", c.change_id)));
        }
        let window = MaintenanceWindow {
            start: c.start,
            end: c.end,
            change_id: Some(c.change_id.clone()),
            reason: c.reason.clone(),
            annotate: c.action == Action::Annotate,
        };
        let mut targets = Vec::new();
        for name in &c.cis {
            match cmdb.by_id(name).or_else(|| cmdb.lookup_name(name)) {
                Some(idx) => targets.push(idx),
                None => errors.push(err(line, format!("{}: CI `{name}` is not in the CMDB", c.change_id))),
            }
        }
        for name in &c.services {
            match cmdb.by_id(name).or_else(|| cmdb.lookup_name(name)) {
                Some(idx) => {
                    targets.push(idx);
                    targets.extend(cmdb.upstream_closure(idx, max_depth).into_iter().map(|(ci, _)| ci));
                }
                None => errors.push(err(line, format!("{}: service `{name}` is not in the CMDB", c.change_id))),
            }
        }
        targets.sort_unstable();
        targets.dedup();
        windows.extend(targets.into_iter().map(|t| (t, window.clone())));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let n = windows.len();
    for (ci, w) in windows {
        cmdb.add_maintenance(ci, w);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMDB: &str = "cis:\n  - { id: sw-1, name: sw-1, type: switch }\n  - { id: vm-1, name: vm-1, type: vm, connects_to: [sw-1] }\n  - { id: app-1, name: app-1, type: application, runs_on: [vm-1] }\n  - { id: bs-1, name: bs-1, type: business_service, depends_on: [app-1] }\n  - { id: other, name: other, type: vm }\n";

    fn cmdb() -> Snapshot {
        Snapshot::from_str(Path::new("cmdb.yaml"), CMDB, false).unwrap()
    }

    fn calendar(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("changes.yaml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn windows_land_on_cis_and_on_everything_a_service_depends_on() {
        let (_d, p) = calendar(
            "changes:\n  - change_id: CHG1\n    start: 2026-12-01T22:00:00Z\n    end: 2026-12-02T02:00:00Z\n    services: [bs-1]\n    action: annotate\n    reason: upgrade\n  - change_id: CHG2\n    start: 2026-12-01T22:00:00Z\n    end: 2026-12-01T23:00:00Z\n    cis: [other]\n",
        );
        let mut s = cmdb();
        assert_eq!(apply_calendar(&p, &mut s, 8).unwrap(), 5, "bs-1, app-1, vm-1, sw-1 and other");
        let inside = at("2026-12-01T22:30:00Z");
        let w = s.active_maintenance(s.by_id("sw-1").unwrap(), inside).expect("sw-1 under CHG1");
        assert_eq!((w.change_id.as_deref(), w.annotate), (Some("CHG1"), true));
        let w = s.active_maintenance(s.by_id("other").unwrap(), inside).expect("other under CHG2");
        assert!(!w.annotate, "suppress is the default");
        assert!(s.active_maintenance(s.by_id("other").unwrap(), at("2026-12-01T23:00:00Z")).is_none(), "end is exclusive");
    }

    #[test]
    fn errors_name_the_line_and_nothing_is_applied() {
        let (_d, p) = calendar(
            "changes:\n  - change_id: CHG1\n    start: 2026-12-01T22:00:00Z\n    end: 2026-12-02T02:00:00Z\n    cis: [sw-1]\n  - change_id: CHG2\n    start: 2026-12-02T02:00:00Z\n    end: 2026-12-01T02:00:00Z\n    cis: [nowhere]\n",
        );
        let mut s = cmdb();
        let errs = apply_calendar(&p, &mut s, 8).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].ends_with("changes.yaml:6: CHG2: end 2026-12-01T02:00:00+00:00 is not after start 2026-12-02T02:00:00+00:00"),
            "{text:?}"
        );
        assert!(text[1].ends_with("changes.yaml:6: CHG2: CI `nowhere` is not in the CMDB"), "{text:?}");
        assert!(s.active_maintenance(s.by_id("sw-1").unwrap(), at("2026-12-01T23:00:00Z")).is_none(), "all or nothing");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let (_d, p) = calendar("changes:\n  - change_id: CHG1\n    start: not-a-time\n");
        let errs = apply_calendar(&p, &mut cmdb(), 8).unwrap_err();
        assert_eq!(errs[0].line, Some(3), "{errs:?}");
    }
}
