//! Building the example plugins to wasm, once per test process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use proxy_async_host::plugin_build::build_plugins;

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
}

/// Builds the example plugins (release, wasm32-wasip1) once per test process and returns the
/// directory holding the `.wasm` files.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let started = Instant::now();
        let examples = [
            "hello",
            "hello-no-config",
            "http-call",
            "auth-flow",
            "fan-out",
            "retry",
            "stream-redact",
            "jwt-auth",
        ];
        let args = examples.iter().flat_map(|example| ["-p", example]);
        let dir = build_plugins(workspace(), args)
            .unwrap_or_else(|error| panic!("building the example plugins failed:\n{error}"));
        eprintln!("example plugins built in {:.1?}", started.elapsed());
        dir
    })
}

/// The path of the compiled example plugin `name` (e.g. `hello`, `auth_flow`).
pub fn plugin_wasm(name: &str) -> PathBuf {
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "the build left no {}", path.display());
    path
}
