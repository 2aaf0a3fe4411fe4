//! The plugins under measurement: each SDK example next to its hand-written baseline.

use std::path::{Path, PathBuf};

use proxy_async_host::plugin_build::build_plugins;

/// The workspace root.
pub(crate) fn workspace() -> &'static Path {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench.parent().unwrap_or(bench)
}

/// One plugin in two versions.
#[derive(Debug, Clone)]
pub(crate) struct Pair {
    /// The example's name, e.g. `auth-flow`.
    pub(crate) name: &'static str,
    /// Its SDK build (release, wasm32-wasip1).
    pub(crate) sdk: Vec<u8>,
    /// The hand-written callback version.
    pub(crate) baseline: Vec<u8>,
    /// Where the two files are.
    pub(crate) sdk_path: PathBuf,
    pub(crate) baseline_path: PathBuf,
}

/// The plugins, built.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub(crate) hello: Pair,
    pub(crate) auth_flow: Pair,
}

/// Builds the two examples and their baselines (release, wasm32-wasip1).
pub(crate) fn build() -> Result<Built, String> {
    println!("bench: building hello, auth-flow and their baselines (release, wasm32-wasip1)");
    let dir = build_plugins(
        workspace(),
        [
            "-p",
            "hello",
            "-p",
            "auth-flow",
            "-p",
            "hello-baseline",
            "-p",
            "auth-flow-baseline",
        ],
    )?;
    let pair = |name: &'static str| -> Result<Pair, String> {
        let file = name.replace('-', "_");
        let sdk_path = dir.join(format!("{file}.wasm"));
        let baseline_path = dir.join(format!("{file}_baseline.wasm"));
        let read = |path: &Path| {
            std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
        };
        Ok(Pair {
            name,
            sdk: read(&sdk_path)?,
            baseline: read(&baseline_path)?,
            sdk_path,
            baseline_path,
        })
    };
    Ok(Built {
        hello: pair("hello")?,
        auth_flow: pair("auth-flow")?,
    })
}
