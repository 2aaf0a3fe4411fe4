//! Where the example plugins are: built to wasm by `compiled-plugins` (release, as they ship)
//! before the tests compile.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/e2e is two levels inside the workspace")
}

/// The path of the compiled example plugin `name` (e.g. `hello`, `auth_flow`).
pub fn plugin_wasm(name: &str) -> PathBuf {
    let path = compiled_plugins::module(name);
    assert!(
        path.is_file(),
        "the guests build left no {}",
        path.display()
    );
    path
}
