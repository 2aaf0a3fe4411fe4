//! Building plugin crates to wasm from inside a test process: the one way the SDK's compiled
//! twin, the host's tests and the end-to-end tests get their `.wasm`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target plugins are built for (proxy-wasm modules).
pub const PLUGIN_TARGET: &str = "wasm32-wasip1";

/// The wasm target the component build of a plugin is built for (the `plugin` world).
pub const COMPONENT_TARGET: &str = "wasm32-wasip2";

/// Where test processes build plugins: `<target dir>/plugin-wasm` (honouring
/// `CARGO_TARGET_DIR`). It is its own target directory because the `cargo test` running the
/// process holds the lock of the normal one, and a nested build there would wait forever.
pub fn plugin_target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), PathBuf::from)
        .join("plugin-wasm")
}

/// Runs `cargo build --release --target wasm32-wasip1 <args>` in `workspace` into
/// [`plugin_target_dir`], with the cargo that runs the tests (`CARGO`), and returns the directory
/// holding the `.wasm` files; the error holds cargo's output. `args` names what to build: `-p`
/// packages of the workspace, or `--manifest-path` of a crate outside it.
pub fn build_plugins<I, S>(workspace: &Path, args: I) -> Result<PathBuf, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    build_for(PLUGIN_TARGET, workspace, args)
}

/// Like [`build_plugins`], for [`COMPONENT_TARGET`]: the same plugin crates as components.
pub fn build_components<I, S>(workspace: &Path, args: I) -> Result<PathBuf, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    build_for(COMPONENT_TARGET, workspace, args)
}

fn build_for<I, S>(target: &str, workspace: &Path, args: I) -> Result<PathBuf, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let target_dir = plugin_target_dir(workspace);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--release", "--target", target])
        .args(args)
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(target_dir.join(target).join("release"))
}
