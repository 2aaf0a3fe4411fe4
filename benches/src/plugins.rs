//! The plugins under measurement: each SDK example next to its hand-written baseline.

use std::path::{Path, PathBuf};

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

/// The two examples and their baselines (release, wasm32-wasip1), as `compiled-plugins`
/// built them before this binary compiled.
pub(crate) fn load() -> Result<Built, String> {
    let pair = |name: &'static str| -> Result<Pair, String> {
        let sdk_path = compiled_plugins::module(name);
        let baseline_path = compiled_plugins::module(&format!("{name}-baseline"));
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
