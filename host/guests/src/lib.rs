//! Builds plugin crates to wasm from a build script: the proxy-wasm modules
//! (`wasm32-wasip1`) and components (`wasm32-wasip2`) that a test runs beside the plugin
//! driven natively (`proxy-async-host`'s compiled twins), built once, before the test
//! compiles, and rebuilt when a source changes. A test never builds them itself.
//!
//! ```no_run
//! // build.rs of a test crate next to the plugin crate `my-plugin`:
//! let guests = proxy_async_guests::GuestBuild::new("..")
//!     .modules("test-wasm", &["my-plugin"])
//!     .components("test-wasm", &["my-plugin"])
//!     .watch(&["src", "Cargo.toml"])
//!     .run();
//! // The test reads `env!("PROXY_ASYNC_GUESTS")`: `modules/my_plugin.wasm` and
//! // `components/my_plugin.wasm` under it (`middlewares/` for `.middlewares(..)`).
//! # let _ = guests;
//! ```
//!
//! The builds run in their own target directory (`<target>/guests/build`): the cargo running
//! the build script holds the lock of the main one. The nested cargo rebuilds only what
//! changed; cargo reruns the build script when a watched path changes.
//!
//! With [`LINT_ENV`] set to the path of a `clippy-driver`, the builds lint the workspace's
//! crates as they compile them for wasm, every warning an error (what `cargo clippy --target
//! <wasm> -- -D warnings` checks, without compiling everything once more to check it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target of proxy-wasm modules.
pub const MODULE_TARGET: &str = "wasm32-wasip1";

/// The wasm target of components.
pub const COMPONENT_TARGET: &str = "wasm32-wasip2";

/// The SDK feature that builds a `wasm32-wasip2` plugin as a `wasi:http@0.3.0` middleware.
pub const MIDDLEWARE_FEATURE: &str = "proxy-async/wasi-http";

/// The variable that makes the builds lint what they compile: the path of a `clippy-driver`.
pub const LINT_ENV: &str = "PROXY_ASYNC_GUESTS_CLIPPY";

/// What a build makes of its packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Module,
    Component,
    Middleware,
}

impl Kind {
    fn target(self) -> &'static str {
        match self {
            Kind::Module => MODULE_TARGET,
            Kind::Component | Kind::Middleware => COMPONENT_TARGET,
        }
    }

    /// The folder of `<target>/guests` the files go to.
    fn folder(self) -> &'static str {
        match self {
            Kind::Module => "modules",
            Kind::Component => "components",
            Kind::Middleware => "middlewares",
        }
    }
}

/// One cargo build.
#[derive(Debug, Clone)]
struct Build {
    kind: Kind,
    profile: String,
    packages: Vec<String>,
}

/// What a build script builds: packages of a workspace, per target and profile.
#[derive(Debug, Clone)]
#[must_use = "nothing is built until `run`"]
pub struct GuestBuild {
    workspace: PathBuf,
    builds: Vec<Build>,
    watched: Vec<PathBuf>,
}

impl GuestBuild {
    /// Builds packages of the workspace (or crate) at `workspace`, relative to the build
    /// script's package (`CARGO_MANIFEST_DIR`) unless absolute.
    pub fn new(workspace: impl AsRef<Path>) -> GuestBuild {
        GuestBuild {
            workspace: manifest_dir().join(workspace),
            builds: Vec::new(),
            watched: Vec::new(),
        }
    }

    /// Builds `packages` as proxy-wasm modules with cargo profile `profile` (`release`, or
    /// a quicker one such as `test-wasm` for plugins only tests run).
    pub fn modules(self, profile: &str, packages: &[&str]) -> GuestBuild {
        self.build(Kind::Module, profile, packages)
    }

    /// Builds `packages` as components of the `plugin` world.
    pub fn components(self, profile: &str, packages: &[&str]) -> GuestBuild {
        self.build(Kind::Component, profile, packages)
    }

    /// Builds `packages` as `wasi:http@0.3.0` middleware components (the SDK's `wasi-http`
    /// feature), after the components of the `plugin` world, whose files they would replace.
    pub fn middlewares(self, profile: &str, packages: &[&str]) -> GuestBuild {
        self.build(Kind::Middleware, profile, packages)
    }

    fn build(mut self, kind: Kind, profile: &str, packages: &[&str]) -> GuestBuild {
        let packages = packages
            .iter()
            .map(|package| (*package).to_string())
            .collect();
        self.builds.push(Build {
            kind,
            profile: profile.to_string(),
            packages,
        });
        self
    }

    /// Reruns the build script when something under these paths (relative to the workspace)
    /// changes: the plugins' sources and everything they are built from.
    pub fn watch(mut self, paths: &[&str]) -> GuestBuild {
        self.watched
            .extend(paths.iter().map(|path| self.workspace.join(path)));
        self
    }

    /// Runs the builds, copies each `.wasm` to `<target>/guests/modules/` or
    /// `<target>/guests/components/` (named after its crate: `my_plugin.wasm`), tells cargo
    /// to set `PROXY_ASYNC_GUESTS` to `<target>/guests` for the crate being built, and
    /// returns that folder.
    ///
    /// # Panics
    /// When a build fails (with cargo's own messages above): a build script reports a failure
    /// by panicking.
    #[allow(
        clippy::panic,
        reason = "a build script reports a failure by panicking"
    )]
    pub fn run(self) -> PathBuf {
        let guests = target_dir(&self.workspace).join("guests");
        for path in &self.watched {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        // A missing stamp (the folder was deleted) reruns the script; one per package, as
        // several may build into one target directory.
        let stamp = guests.join(format!("built-{}", package_name()));
        println!("cargo:rerun-if-changed={}", stamp.display());
        println!("cargo:rerun-if-env-changed={LINT_ENV}");
        let build_dir = guests.join("build");
        for build in &self.builds {
            cargo_build(&self.workspace, &build_dir, build);
            let into = guests.join(build.kind.folder());
            create_dir(&into);
            for package in &build.packages {
                let file = format!("{}.wasm", package.replace('-', "_"));
                let built = build_dir
                    .join(build.kind.target())
                    .join(&build.profile)
                    .join(&file);
                if let Err(error) = std::fs::copy(&built, into.join(&file)) {
                    panic!("cannot copy {}: {error}", built.display());
                }
            }
        }
        create_dir(&guests);
        if let Err(error) = std::fs::write(&stamp, b"") {
            panic!("cannot write {}: {error}", stamp.display());
        }
        println!("cargo:rustc-env=PROXY_ASYNC_GUESTS={}", guests.display());
        guests
    }
}

#[allow(
    clippy::panic,
    reason = "a build script reports a failure by panicking"
)]
fn create_dir(dir: &Path) {
    if let Err(error) = std::fs::create_dir_all(dir) {
        panic!("cannot create {}: {error}", dir.display());
    }
}

/// The build script's package.
#[allow(
    clippy::panic,
    reason = "a build script reports a failure by panicking"
)]
fn manifest_dir() -> PathBuf {
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            panic!("proxy-async-guests runs in build scripts, where cargo sets CARGO_MANIFEST_DIR")
        }
    }
}

/// The build script's package name.
fn package_name() -> String {
    std::env::var("CARGO_PKG_NAME").unwrap_or_default()
}

/// The main target directory of the build: `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from)
}

/// `cargo build --profile <profile> --target <target> -p ...` in `target_dir`, with none of
/// the settings cargo gives the build script for the host build (flags, wrappers such as
/// clippy's) leaking into the wasm build; linted with clippy if [`LINT_ENV`] says so.
#[allow(
    clippy::panic,
    reason = "a build script reports a failure by panicking"
)]
fn cargo_build(workspace: &Path, target_dir: &Path, build: &Build) {
    let (target, profile, packages) = (build.kind.target(), &build.profile, &build.packages);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--profile", profile, "--target", target])
        .arg("--target-dir")
        .arg(target_dir);
    for package in packages {
        command.args(["-p", package]);
    }
    if build.kind == Kind::Middleware {
        command.args(["--features", MIDDLEWARE_FEATURE]);
    }
    for leaked in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(leaked);
    }
    if let Some(driver) = std::env::var_os(LINT_ENV) {
        command
            .env("RUSTC_WORKSPACE_WRAPPER", driver)
            // How `cargo clippy -- -D warnings` hands its arguments to the driver.
            .env(
                "CLIPPY_ARGS",
                "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
            );
    }
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "building {} for {target} ({profile}, {:?}) failed: {status}",
            packages.join(", "),
            build.kind
        ),
        Err(error) => panic!("cannot run cargo: {error}"),
    }
}
