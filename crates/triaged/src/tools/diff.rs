//! A line diff for `triaged test` failures and `replay --against`: Myers,
//! linear in memory however long the replay.

/// A line diff (Myers, linear in memory): `  ` kept, `- ` only
/// expected, `+ ` only actual.
pub fn line_diff(expected: &[String], actual: &[String]) -> String {
    use similar::{capture_diff_slices, Algorithm, ChangeTag};
    let mut out = String::new();
    for op in capture_diff_slices(Algorithm::Myers, expected, actual) {
        for change in op.iter_changes(expected, actual) {
            let mark = match change.tag() {
                ChangeTag::Equal => "    ",
                ChangeTag::Delete => "  - ",
                ChangeTag::Insert => "  + ",
            };
            out.push_str(mark);
            out.push_str(change.value_ref());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn diff_marks_missing_and_extra_lines() {
        let d = line_diff(&lines(&["a", "b", "c"]), &lines(&["a", "x", "c"]));
        assert_eq!(d, "    a\n  - b\n  + x\n    c\n");
        assert_eq!(line_diff(&lines(&["a"]), &lines(&["a"])), "    a\n");
        assert_eq!(line_diff(&[], &lines(&["n"])), "  + n\n");
    }
}
