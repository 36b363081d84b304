//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/data` beside the repository (or `$DNN2GP_SHARED_DATA`). Returns `None` with a
/// message when absent, unless `DNN2GP_REQUIRE_SHARED` is set (CI), where it panics.
pub fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("DNN2GP_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
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
