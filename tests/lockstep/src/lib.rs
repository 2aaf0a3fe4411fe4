//! The SDK as the lockstep test sees it: `proxy-async` itself, with a testing API whose
//! `PluginTest` also runs the plugin's compiled module and component.
//!
//! The test (`tests/lockstep.rs`) includes every plugin crate's scenario file, which a
//! plugin's own `cargo test` runs natively. This library is named `proxy_async`, so the files'
//! `use proxy_async::testing::PluginTest` finds this one: the same source, every backend, each
//! step compared. The `.wasm` files come from `compiled-plugins`, built by its build script
//! before this crate compiles, and are found by each plugin's crate name.

#![cfg(not(target_arch = "wasm32"))]

proxy_async_host::sdk_with_twins!(sdk, compiled_plugins::dir());
