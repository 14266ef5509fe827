//! Durations as operators write them in config, rule and test files
//! (`250ms`, `30s`, `5m`, `2h`, `1d`: a whole number and one unit), and as
//! reasons and work notes show them.
//!
//! The grammar is deliberately this narrow (no `5 minutes`, no `1h30m`, no
//! months): what a file says is what the daemon waits. A number too large
//! for its unit is an error, never a wrapped-around duration.

use std::time::Duration;

const UNITS: [(&str, u64); 5] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parses `250ms`, `30s`, `5m`, `2h` or `1d`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration (use e.g. 250ms, 30s, 5m, 2h, 1d)"))?;
    let Some(&(_, ms)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        return Err(format!("`{s}` has unknown unit `{unit}` (use ms, s, m, h or d)"));
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| format!("`{s}` is too long a duration"))
}

/// The largest unit that divides `d` exactly: `5m`, `90s`, `1d`, `250ms`.
pub fn format(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let (unit, per) = UNITS.iter().find(|(_, per)| ms % per == 0).copied().unwrap_or(("ms", 1));
    format!("{}{unit}", ms / per)
}

/// [`format`] for event-time spans; a negative span shows as zero.
pub fn format_span(d: chrono::Duration) -> String {
    format(d.to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_number_and_one_unit() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse(" 5m ").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86_400));
        for bad in ["5 minutes", "m", "", "1h30m", "-1s", "5x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn too_large_a_number_is_an_error_not_a_wrap() {
        let e = parse("307445734561825861m").unwrap_err();
        assert!(e.contains("too long"), "{e}");
        assert!(parse("213503982334601d").is_err());
        assert_eq!(parse("18446744073709551615ms").unwrap(), Duration::from_millis(u64::MAX));
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format(Duration::from_secs(300)), "5m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(7_200)), "2h");
        assert_eq!(format(Duration::from_secs(86_400)), "1d");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format_span(chrono::Duration::seconds(-3)), "0s");
        for s in ["250ms", "30s", "5m", "2h", "1d"] {
            assert_eq!(format(parse(s).unwrap()), s);
        }
    }
}
