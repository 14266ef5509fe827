//! The sink's four API profiles, one module each, and the text helpers
//! their request bodies share (member lines, truncation).

mod generic;
mod pagerduty;
mod servicenow;
mod servicenow_em;

/// At most `max` characters, the last one an ellipsis when cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `source/check on ci: severity status, N events: summary`
fn member_line(m: &crate::incident::Member) -> String {
    let on = m.ci.as_ref().map(|c| format!(" on {}", c.name)).unwrap_or_default();
    format!("{}/{}{on}: {} {}, {} event(s): {}", m.source, m.check, m.severity.as_str(), m.status.as_str(), m.count, m.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("short", 160), "short");
        let long = "é".repeat(200);
        let t = truncate(&long, 160);
        assert_eq!(t.chars().count(), 160);
        assert!(t.ends_with('…'));
    }
}
