//! The compiled twins of a plugin under the SDK's testing API: its proxy-wasm module and its
//! component, each in an emulated proxy of its own, given the same traffic as the plugin
//! running natively (`proxy_async::testing::PluginTest<P, T>` with a [`Twins`] provider).
//!
//! The `.wasm` files are built before the tests run (by a build script with
//! `proxy-async-guests`; never by a nested cargo inside a test), and found by the plugin's
//! crate name in the folders [`Compiled`] names. Each file is compiled once per process however
//! many tests use it.
//!
//! A test crate gets the twins for its scenarios with [`sdk_with_twins!`](crate::sdk_with_twins):
//! a library named `proxy_async` that is the SDK with a twin-running `PluginTest`, so that the
//! plugin's own test files compile against it unchanged (the repository's `tests/lockstep`, and
//! the `twins` crate of `cargo xtask new`, are built this way).
//!
//! [`Twins`]: proxy_async_emulator::Twins

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};

use proxy_async_abi::Callbacks;
use proxy_async_emulator::{Proxy, ProxyConfig, ProxyState, Twin, TwinKind};

use crate::component::ComponentModule;
use crate::plugin::PluginModule;

/// Where the compiled plugins are: `<crate>.wasm` files, modules in one folder and components
/// in another.
#[derive(Debug, Clone)]
pub struct Compiled {
    modules: PathBuf,
    components: PathBuf,
}

impl Compiled {
    /// The folders holding the modules and the components.
    pub fn new(modules: impl Into<PathBuf>, components: impl Into<PathBuf>) -> Compiled {
        Compiled {
            modules: modules.into(),
            components: components.into(),
        }
    }

    /// The folders `proxy-async-guests` fills: `modules/` and `components/` under `guests`
    /// (its `PROXY_ASYNC_GUESTS`).
    pub fn in_guests(guests: impl AsRef<Path>) -> Compiled {
        let guests = guests.as_ref();
        Compiled::new(guests.join("modules"), guests.join("components"))
    }

    /// The proxy-wasm module of `plugin_crate` (e.g. `auth_flow`).
    pub fn module_path(&self, plugin_crate: &str) -> PathBuf {
        self.modules.join(format!("{plugin_crate}.wasm"))
    }

    /// The component of `plugin_crate`.
    pub fn component_path(&self, plugin_crate: &str) -> PathBuf {
        self.components.join(format!("{plugin_crate}.wasm"))
    }

    /// Starts the twins of `plugin_crate` with `config`: its module and its component.
    ///
    /// # Panics
    /// When a `.wasm` is missing or does not load: its build is broken, and a test
    /// must not quietly run on fewer backends than it claims.
    #[allow(
        clippy::panic,
        reason = "test support: a twin that cannot start must fail the test"
    )]
    pub fn start(&self, plugin_crate: &str, config: &ProxyConfig) -> Vec<Twin> {
        let module = compiled(&MODULES, &self.module_path(plugin_crate), PluginModule::new);
        let state = Rc::new(RefCell::new(ProxyState::default()));
        let plugin = module
            .instantiate_shared(Rc::clone(&state))
            .unwrap_or_else(|error| {
                panic!("the compiled plugin {plugin_crate} does not load in the host: {error}")
            });
        let mut twins = vec![Twin {
            kind: TwinKind::Module,
            started: Proxy::start(
                state,
                Box::new(plugin) as Box<dyn Callbacks>,
                config.clone(),
            ),
        }];
        let component = compiled(
            &COMPONENTS,
            &self.component_path(plugin_crate),
            ComponentModule::new,
        );
        let state = Rc::new(RefCell::new(ProxyState::default()));
        let plugin = component
            .instantiate(Rc::clone(&state))
            .unwrap_or_else(|error| {
                panic!("the component of {plugin_crate} does not instantiate: {error}")
            });
        twins.push(Twin {
            kind: TwinKind::Component,
            started: Proxy::start(
                state,
                Box::new(plugin) as Box<dyn Callbacks>,
                config.clone(),
            ),
        });
        twins
    }
}

/// Compiled code by path: each `.wasm` is compiled once per process (compiling is the slow
/// part; tests on several threads share it).
type Cache<M> = LazyLock<Mutex<HashMap<PathBuf, Arc<OnceLock<M>>>>>;

static MODULES: Cache<PluginModule> = LazyLock::new(Mutex::default);
static COMPONENTS: Cache<ComponentModule> = LazyLock::new(Mutex::default);

/// The module or component at `path`, from `cache` or compiled with `compile`.
#[allow(
    clippy::panic,
    reason = "test support: a twin that cannot be built must fail the test"
)]
fn compiled<M: Clone, E: std::fmt::Display>(
    cache: &Cache<M>,
    path: &Path,
    compile: fn(&[u8]) -> Result<M, E>,
) -> M {
    let slot = Arc::clone(
        cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(path.to_path_buf())
            .or_default(),
    );
    slot.get_or_init(|| {
        let wasm = std::fs::read(path).unwrap_or_else(|error| {
            panic!(
                "no compiled twin at {}: {error} (a build script with proxy-async-guests makes it)",
                path.display()
            )
        });
        compile(&wasm).unwrap_or_else(|error| {
            panic!("{} does not compile in the host: {error}", path.display())
        })
    })
    .clone()
}

/// Declares the SDK with compiled twins, in the library (named `proxy_async`) of a test crate:
/// everything of the SDK crate `$sdk`, and a `testing` module whose `PluginTest` and
/// `TestStream` run the plugin's module and component (from the folder `$guests`, the
/// `PROXY_ASYNC_GUESTS` of `proxy-async-guests`) beside the native plugin. The plugin's own
/// scenario files, included by the crate's test, then run on every backend unchanged.
///
/// ```ignore
/// // src/lib.rs of a test crate whose Cargo.toml says `[lib] name = "proxy_async"` and
/// // depends on the SDK as `sdk = { package = "proxy-async", .. }`:
/// proxy_async_host::sdk_with_twins!(sdk, env!("PROXY_ASYNC_GUESTS"));
/// ```
#[macro_export]
macro_rules! sdk_with_twins {
    ($sdk:ident, $guests:expr) => {
        pub use $sdk::*;

        /// The SDK's testing API, whose tests also run the plugin's compiled twins.
        pub mod testing {
            pub use $sdk::testing::*;

            /// The compiled twins of the plugins: their modules and components.
            #[derive(Debug, Clone, Copy)]
            pub struct Compiled;

            impl Twins for Compiled {
                fn start(plugin_crate: &str, config: &ProxyConfig) -> Vec<Twin> {
                    $crate::twins::Compiled::in_guests($guests).start(plugin_crate, config)
                }
            }

            /// A test of `P`, natively and as its compiled twins.
            pub type PluginTest<P> = $sdk::testing::PluginTest<P, Compiled>;

            /// A stream of such a test.
            pub type TestStream<'t, P> = $sdk::testing::TestStream<'t, P, Compiled>;
        }
    };
}
