//! Building the example plugins to wasm, once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
}

/// Builds the example plugins (release, wasm32-wasip1) once per test process and returns the
/// directory holding the `.wasm` files.
///
/// The build uses its own target directory, so it never waits for the build-directory lock
/// of the `cargo test` that runs this process.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target_dir = workspace().join("target").join("plugin-wasm");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let started = Instant::now();
        let output = Command::new(cargo)
            .current_dir(workspace())
            .args(["build", "--release", "--target", "wasm32-wasip1"])
            .args(["-p", "hello", "-p", "hello-no-config", "-p", "http-call"])
            .args(["-p", "auth-flow", "-p", "fan-out"])
            .arg("--target-dir")
            .arg(&target_dir)
            .output()
            .expect("cannot run cargo");
        assert!(
            output.status.success(),
            "building the example plugins failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("example plugins built in {:.1?}", started.elapsed());
        target_dir.join("wasm32-wasip1").join("release")
    })
}

/// The path of the compiled example plugin `name` (e.g. `hello`, `auth_flow`).
pub fn plugin_wasm(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "the build left no {}", path.display());
    path
}
