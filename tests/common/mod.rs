//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/data` beside the repository. Returns `None` with a message when absent, unless
/// `DNN2GP_REQUIRE_SHARED` is set (CI), where it panics.
pub fn shared_data() -> Option<PathBuf> {
    shared("data")
}

/// The peers' baseline files, `../shared/baselines/data`.
pub fn shared_baselines() -> Option<PathBuf> {
    shared("baselines/data")
}

/// A folder of `../shared` beside the repository (`$DNN2GP_SHARED` overrides the root).
fn shared(sub: &str) -> Option<PathBuf> {
    let root = std::env::var_os("DNN2GP_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let dir = root.join(sub);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("DNN2GP_REQUIRE_SHARED").is_some() {
        panic!(
            "shared data folder {} is missing (required in CI)",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: shared data folder {} not found; this test did not run",
        dir.display()
    );
    None
}

/// A fresh temporary folder.
pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary folder")
}
