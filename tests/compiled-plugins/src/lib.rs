//! The workspace's plugins compiled to wasm, once, by this crate's build script (see
//! `build.rs`), in release (the test fixtures too: see there why); proxy-wasm modules and, for
//! plugins on the SDK, components.
//!
//! A test that runs compiled plugins depends on this crate and finds each file by the plugin's
//! crate name; building it is cargo's business, before the test compiles, never the test's.
//!
//! ```no_run
//! let hello = std::fs::read(compiled_plugins::module("hello")).unwrap();
//! assert!(hello.starts_with(b"\0asm"));
//! ```

use std::path::{Path, PathBuf};

/// `<target>/guests`, where the build script put the files.
pub fn dir() -> &'static Path {
    Path::new(env!("PROXY_ASYNC_GUESTS"))
}

/// The folder of the proxy-wasm modules (wasm32-wasip1).
pub fn modules() -> PathBuf {
    dir().join("modules")
}

/// The folder of the components (wasm32-wasip2).
pub fn components() -> PathBuf {
    dir().join("components")
}

/// The folder of the `wasi:http@0.3.0` middleware components (wasm32-wasip2, the SDK's
/// `wasi-http` feature).
pub fn middlewares() -> PathBuf {
    dir().join("middlewares")
}

/// The `wasi:http@0.3.0` middleware component of the plugin crate `name`.
pub fn middleware(name: &str) -> PathBuf {
    middlewares().join(file_name(name))
}

/// The proxy-wasm module of the plugin crate `name` (`auth-flow` or `auth_flow`).
pub fn module(name: &str) -> PathBuf {
    modules().join(file_name(name))
}

/// The component of the plugin crate `name`.
pub fn component(name: &str) -> PathBuf {
    components().join(file_name(name))
}

/// What cargo names a crate's `.wasm`.
fn file_name(name: &str) -> String {
    format!("{}.wasm", name.replace('-', "_"))
}
