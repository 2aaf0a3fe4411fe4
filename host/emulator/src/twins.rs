//! Twins: other builds of the plugin under test (its compiled module, its component) that get
//! the same traffic as the plugin driven natively, step by step, so that a test can fail on the
//! first difference between them.
//!
//! The emulator only defines what a twin is; a wasm host provides them (it compiles and runs
//! the builds), and a testing API runs each step on every twin and compares.

use proxy_async_abi::Callbacks;

use crate::proxy::{ConfigRejected, Proxy, ProxyConfig};

/// A provider of twins for plugins under test.
pub trait Twins {
    /// The twins of the plugin whose crate is `plugin_crate` (the crate name as Rust spells it,
    /// e.g. `auth_flow`), each started with `config` in an emulated proxy of its own.
    fn start(plugin_crate: &str, config: &ProxyConfig) -> Vec<Twin>;
}

/// What a twin is a build of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwinKind {
    /// The plugin's proxy-wasm module (wasm32-wasip1).
    Module,
    /// The plugin's component of the `plugin` world (wasm32-wasip2).
    Component,
}

impl TwinKind {
    /// How failure messages name the twin.
    pub const fn name(self) -> &'static str {
        match self {
            TwinKind::Module => "compiled (wasm32-wasip1 module)",
            TwinKind::Component => "component (wasm32-wasip2)",
        }
    }
}

/// One twin of the plugin under test, started.
pub struct Twin {
    /// What it is a build of.
    pub kind: TwinKind,
    /// Its proxy, or the configuration it rejected.
    pub started: Result<Proxy<Box<dyn Callbacks>>, ConfigRejected>,
}

/// No twins: the plugin runs natively only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeOnly;

impl Twins for NativeOnly {
    fn start(_: &str, _: &ProxyConfig) -> Vec<Twin> {
        Vec::new()
    }
}
