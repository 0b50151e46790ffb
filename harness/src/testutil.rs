//! Helpers shared by the unit tests of several modules.

use std::path::PathBuf;

/// insta settings that keep snapshots under the workspace's `snapshots/<area>/`, so that
/// every accepted byte is reviewed in one place rather than next to the code.
pub(crate) fn snapshot_settings(area: &str) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "snapshots", area]
        .iter()
        .collect();
    settings.set_snapshot_path(path);
    settings.set_prepend_module_to_snapshot(false);
    settings
}
