//! The compiled twins: the test's plugin crate built to wasm32-wasip1 (a proxy-wasm module)
//! and to wasm32-wasip2 (a component of the `plugin` world), each run in our wasmtime host in
//! lockstep with the native plugin.

// Test support: a difference between the backends, or a plugin that cannot be built, must
// fail the test loudly.
#![allow(
    clippy::panic,
    reason = "the testing API reports test failures by panicking"
)]

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_async_host::component::{ComponentModule, ComponentPlugin};
use proxy_async_host::plugin_build::{build_components, build_plugins};
use proxy_async_host::{
    EmulatedAbi, Plugin as WasmPlugin, PluginModule, PluginStartError, start_emulated_module,
};
use proxy_emulator::{Callbacks, ConfigRejected, Proxy, ProxyConfig, ProxyState};

/// The compiled plugin in the emulated proxy.
pub(super) type CompiledProxy = Proxy<WasmPlugin<EmulatedAbi>>;

/// The plugin's component in the emulated proxy.
pub(super) type ComponentProxy = Proxy<ComponentPlugin>;

/// The name of the proxy-wasm twin in failure messages.
pub(super) const MODULE: &str = "compiled (wasm32-wasip1 module)";

/// The name of the component twin in failure messages.
pub(super) const COMPONENT: &str = "component (wasm32-wasip2)";

/// Starts the compiled twin of the plugin under test, or `None` when the test does not run in
/// a plugin crate (a `cdylib`), or `PROXY_ASYNC_TEST_NATIVE_ONLY` is set.
pub(super) fn start(config: &ProxyConfig) -> Option<Result<CompiledProxy, ConfigRejected>> {
    let module = plugin_module()?;
    match start_emulated_module(module, config.clone()) {
        Ok(proxy) => Some(Ok(proxy)),
        Err(PluginStartError::Rejected(rejected)) => Some(Err(rejected)),
        Err(PluginStartError::Load(error)) => {
            panic!("the compiled plugin does not load in the host: {error}")
        }
    }
}

/// Starts the component twin of the plugin under test; `None` as for [`start`].
pub(super) fn start_component(
    config: &ProxyConfig,
) -> Option<Result<ComponentProxy, ConfigRejected>> {
    // The `plugin` world has no Redis (a component's commands fail as unsupported): a plugin
    // that sends Redis commands, as its module's imports show, runs natively and as a module.
    // (gRPC and shared queues are imported by every module, through the `proxy-wasm` crate's
    // context traits: the testing API stops the component twin when the plugin uses them.)
    if plugin_module().is_some_and(|module| {
        module
            .imports()
            .iter()
            .any(|(_, name)| name.starts_with("proxy_redis_"))
    }) {
        return None;
    }
    let module = component_module()?;
    let state = Rc::new(RefCell::new(ProxyState::default()));
    let plugin = module
        .instantiate(Rc::clone(&state))
        .unwrap_or_else(|error| panic!("the plugin's component does not instantiate: {error}"));
    Some(Proxy::start(state, plugin, config.clone()))
}

/// Fails the test when the native and a compiled plugin (`twin`) disagree, with what the
/// compiled plugin logged and whether it trapped.
pub(super) fn agree<T: PartialEq + Debug, B: Callbacks>(
    twin: &str,
    what: &str,
    native: &T,
    compiled: &T,
    proxy: &Proxy<B>,
) {
    if native != compiled {
        let logs: Vec<String> = proxy
            .logs()
            .iter()
            .map(|record| format!("    {:?} {}", record.level, record.message))
            .collect();
        panic!(
            "the native and the {twin} plugin disagree on {what}:\n  native:   {native:?}\n  {twin}: {compiled:?}\n  {twin} failure: {:?}\n  {twin} logs:\n{}",
            proxy.failure(),
            logs.join("\n")
        );
    }
}

/// Fails the test when only one of the two plugins accepted the configuration.
pub(super) fn agree_on_start(
    twin: &str,
    native: &Option<&ConfigRejected>,
    compiled: &Option<&ConfigRejected>,
) {
    if native != compiled {
        panic!(
            "the native and the {twin} plugin disagree on the configuration:\n  native:   {native:?}\n  {twin}: {compiled:?}"
        );
    }
}

/// The crate under test, built to wasm and compiled once per test process.
fn plugin_module() -> Option<&'static PluginModule> {
    static MODULE: OnceLock<Option<PluginModule>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let wasm = build()?;
            match PluginModule::new(&wasm) {
                Ok(module) => Some(module),
                Err(error) => panic!("the compiled plugin does not compile in the host: {error}"),
            }
        })
        .as_ref()
}

/// The crate under test, built as a component and compiled once per test process.
fn component_module() -> Option<&'static ComponentModule> {
    static MODULE: OnceLock<Option<ComponentModule>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let wasm = build_component()?;
            match ComponentModule::new(&wasm) {
                Ok(module) => Some(module),
                Err(error) => {
                    panic!("the plugin's component does not compile in the host: {error}")
                }
            }
        })
        .as_ref()
}

fn build() -> Option<Vec<u8>> {
    let (root, package) = plugin_crate()?;
    let dir = build_plugins(&root, ["-p", package.as_str()])
        .unwrap_or_else(|error| panic!("building {package} to wasm32-wasip1 failed:\n{error}"));
    Some(read_wasm(&dir, &package))
}

fn build_component() -> Option<Vec<u8>> {
    let (root, package) = plugin_crate()?;
    let dir = build_components(&root, ["-p", package.as_str()])
        .unwrap_or_else(|error| panic!("building {package} to wasm32-wasip2 failed:\n{error}"));
    Some(read_wasm(&dir, &package))
}

fn read_wasm(dir: &Path, package: &str) -> Vec<u8> {
    let path = dir.join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// The workspace and package of the plugin crate under test; `None` when the test does not
/// run in a plugin crate (a `cdylib`), or `PROXY_ASYNC_TEST_NATIVE_ONLY` is set.
fn plugin_crate() -> Option<(PathBuf, String)> {
    if std::env::var_os("PROXY_ASYNC_TEST_NATIVE_ONLY").is_some_and(|value| value != "0") {
        return None;
    }
    // Cargo sets these for the test processes it runs.
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let package = std::env::var("CARGO_PKG_NAME").ok()?;
    let manifest = std::fs::read_to_string(manifest_dir.join("Cargo.toml")).ok()?;
    if !manifest.contains("cdylib") {
        return None;
    }
    Some((workspace_root(&manifest_dir), package))
}

fn workspace_root(manifest_dir: &Path) -> PathBuf {
    manifest_dir
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.contains("[workspace]"))
        })
        .unwrap_or(manifest_dir)
        .to_path_buf()
}
