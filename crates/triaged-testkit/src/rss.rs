//! Resident memory of a process, from `/proc/PID/status`.

/// (VmRSS, VmHWM) of this process in MiB.
pub fn rss_mib() -> (f64, f64) {
    status_rss_mib("/proc/self/status")
}

/// (VmRSS, VmHWM) of process `pid` in MiB; zeros once it is gone.
pub fn rss_mib_of(pid: u32) -> (f64, f64) {
    status_rss_mib(&format!("/proc/{pid}/status"))
}

fn status_rss_mib(path: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_resident_set() {
        let (rss, peak) = super::rss_mib();
        assert!(rss > 0.0 && peak >= rss, "{rss} {peak}");
        assert_eq!(super::rss_mib_of(u32::MAX), (0.0, 0.0));
    }
}
