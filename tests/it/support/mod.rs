//! What the integration tests share: the repository root, a polling wait,
//! the daemon in this process (`in_process`) and as a child process
//! (`process`), and a Request Tracker of a test's own (`rt`).

pub mod ca;
pub mod in_process;
pub mod process;
pub mod rt;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository root: `config/`, `rules/`, `docs/` and `tests/fixtures/`.
pub fn repo() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.join("../..").canonicalize().expect("the repository root exists")
    })
}

/// Polls `cond` every 20 ms; fails the test naming `what` after `within`.
pub async fn wait_until(what: &str, within: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
