//! Sets `TRIAGED_COMMIT` (for `triaged_build_info`) from `git rev-parse`,
//! or `unknown` outside a git checkout.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TRIAGED_COMMIT={commit}");
    // HEAD names the branch; its reflog changes with every commit.
    for file in ["HEAD", "logs/HEAD"] {
        if let Ok(out) = Command::new("git").args(["rev-parse", "--git-path", file]).output() {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
