//! Compiling, instantiating and calling a proxy-wasm module.

use std::cell::{Ref, RefCell, RefMut};
use std::fmt;
use std::rc::Rc;
use std::sync::OnceLock;

use wasmtime::{
    Config, Engine, Global, Instance, Linker, Memory, Module, Store, Trap, TypedFunc, Val,
    WasmBacktrace, WasmParams, WasmResults,
};

use crate::guest::HostState;
use crate::wasi::ProcExit;
use crate::{hostcalls, wasi};
use proxy_async_abi::{Action, Hostcalls, PeerType};

/// The fuel a callback may burn before it traps, unless changed with
/// [`Plugin::set_fuel_budget`]: about a billion wasm instructions, far more than any sane
/// callback needs, and about a second of CPU for a runaway loop.
pub const DEFAULT_FUEL_BUDGET: u64 = 1_000_000_000;

/// Why a plugin could not be loaded or a callback failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PluginError {
    /// The bytes are not a valid wasm module (or the engine could not be built).
    Compile(String),
    /// The module imports a function this host does not provide.
    UnknownImport {
        /// The import's module, e.g. `env`.
        module: String,
        /// The import's name, e.g. `proxy_foo`.
        name: String,
    },
    /// The module could not be instantiated: an import with the wrong signature, no exported
    /// `memory`, no allocator (`proxy_on_memory_allocate` or `malloc`), a trapping start
    /// section.
    Load(String),
    /// The guest trapped: `unreachable` (a Rust panic with `panic = "abort"`), out of fuel,
    /// `proc_exit`, a memory fault, a trapping hostcall. The plugin is poisoned afterwards.
    Trap {
        /// The export that was called, e.g. `proxy_on_request_headers` or `_initialize`.
        callback: &'static str,
        /// What trapped, e.g. ``wasm trap: wasm `unreachable` instruction executed``,
        /// `all fuel consumed by WebAssembly`, `the plugin called proc_exit(1)`.
        message: String,
        /// What the plugin said just before: its critical (level 5) log lines in this
        /// callback (our SDK's panic hook), else its stderr lines (Rust std's panic hook).
        panic: Option<String>,
        /// The wasm backtrace, when wasmtime captured one.
        backtrace: Option<String>,
    },
    /// An earlier callback trapped, so the instance's state can no longer be trusted.
    Poisoned {
        /// The export this call would have called.
        callback: &'static str,
        /// The export that trapped.
        trapped_in: &'static str,
    },
    /// The module exports the callback with a signature other than the ABI's.
    BadExport {
        /// The export.
        name: &'static str,
        /// Wasmtime's description of the mismatch.
        message: String,
    },
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::Compile(message) => write!(f, "invalid wasm module: {message}"),
            PluginError::UnknownImport { module, name } => write!(
                f,
                "the module imports `{module}.{name}`, which this host does not provide"
            ),
            PluginError::Load(message) => write!(f, "cannot load the module: {message}"),
            PluginError::Trap {
                callback,
                message,
                panic,
                ..
            } => {
                write!(f, "the plugin trapped in {callback}: {message}")?;
                if let Some(panic) = panic {
                    write!(f, " (it said: {panic})")?;
                }
                Ok(())
            }
            PluginError::Poisoned {
                callback,
                trapped_in,
            } => write!(
                f,
                "cannot call {callback}: the plugin trapped earlier in {trapped_in} and is poisoned"
            ),
            PluginError::BadExport { name, message } => {
                write!(
                    f,
                    "the module exports {name} with the wrong signature: {message}"
                )
            }
        }
    }
}

impl std::error::Error for PluginError {}

/// The engine every module is compiled with: Cranelift, fuel metering on.
fn shared_engine() -> Result<&'static Engine, PluginError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.consume_fuel(true);
            Engine::new(&config).map_err(|error| format!("{error:#}"))
        })
        .as_ref()
        .map_err(|message| PluginError::Compile(message.clone()))
}

/// A compiled proxy-wasm module (wasm32-wasip1 or wasm32-unknown-unknown), ready to be
/// instantiated any number of times (Envoy runs one instance per worker thread).
///
/// Cheap to clone. Compilation is the expensive step; instantiation is fast.
#[derive(Clone)]
pub struct PluginModule {
    module: Module,
}

impl fmt::Debug for PluginModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginModule")
            .field("name", &self.module.name())
            .finish_non_exhaustive()
    }
}

impl PluginModule {
    /// Compiles a wasm binary (not WAT text).
    pub fn new(wasm: &[u8]) -> Result<PluginModule, PluginError> {
        let module = Module::new(shared_engine()?, wasm)
            .map_err(|error| PluginError::Compile(format!("{error:#}")))?;
        Ok(PluginModule { module })
    }

    /// The `(module, name)` of every function the module imports.
    pub fn imports(&self) -> Vec<(String, String)> {
        self.module
            .imports()
            .map(|import| (import.module().to_string(), import.name().to_string()))
            .collect()
    }

    /// Instantiates the module with `hostcalls` serving its hostcalls, and runs its start
    /// functions (see [`Plugin::load`]).
    pub fn instantiate<H: Hostcalls + 'static>(
        &self,
        hostcalls: H,
    ) -> Result<Plugin<H>, PluginError> {
        self.instantiate_shared(Rc::new(RefCell::new(hostcalls)))
    }

    /// Like [`PluginModule::instantiate`], with hostcalls shared with whoever drives the
    /// plugin: an emulated proxy holds the same state, and reads it between callbacks.
    pub fn instantiate_shared<H: Hostcalls + 'static>(
        &self,
        hostcalls: Rc<RefCell<H>>,
    ) -> Result<Plugin<H>, PluginError> {
        let engine = self.module.engine();
        let mut linker = Linker::new(engine);
        hostcalls::add_to_linker(&mut linker)
            .and_then(|()| wasi::add_to_linker(&mut linker))
            .map_err(|error| {
                PluginError::Load(format!("cannot define the hostcalls: {error:#}"))
            })?;
        let mut store = Store::new(engine, HostState::new(hostcalls));

        for import in self.module.imports() {
            if linker
                .get(&mut store, import.module(), import.name())
                .is_err()
            {
                return Err(PluginError::UnknownImport {
                    module: import.module().to_string(),
                    name: import.name().to_string(),
                });
            }
        }

        store
            .set_fuel(DEFAULT_FUEL_BUDGET)
            .map_err(|error| PluginError::Load(format!("{error:#}")))?;
        let instance = linker
            .instantiate(&mut store, &self.module)
            .map_err(|error| PluginError::Load(format!("{error:#}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| PluginError::Load("the module exports no `memory`".to_string()))?;
        let allocate = allocator(&instance, &mut store)?;
        store.data_mut().memory = Some(memory);
        store.data_mut().allocate = Some(allocate);

        let mut plugin = Plugin {
            store,
            instance,
            memory,
            fuel_budget: DEFAULT_FUEL_BUDGET,
            last_call_fuel: 0,
            total_fuel: 0,
            poisoned: None,
            last_exit: None,
        };
        plugin.start()?;
        Ok(plugin)
    }
}

/// The guest's allocator: `proxy_on_memory_allocate`, or `malloc` for modules built without
/// it (wasm32-unknown-unknown). Like cpp-host, a module without either cannot be loaded.
fn allocator<H: 'static>(
    instance: &Instance,
    store: &mut Store<HostState<H>>,
) -> Result<TypedFunc<u32, u32>, PluginError> {
    for name in ["proxy_on_memory_allocate", "malloc"] {
        if instance.get_func(&mut *store, name).is_some() {
            return instance
                .get_typed_func::<u32, u32>(&mut *store, name)
                .map_err(|error| PluginError::Load(format!("`{name}`: {error:#}")));
        }
    }
    Err(PluginError::Load(
        "the module is missing a malloc function: it exports neither \
         `proxy_on_memory_allocate` nor `malloc`"
            .to_string(),
    ))
}

/// A running proxy-wasm plugin: one instance of a module, the [`Hostcalls`] serving it, and
/// what its calls cost.
///
/// Each `on_*` method calls the `proxy_on_*` export of the same name. A missing export
/// behaves as the spec's default: `Continue`, `true`, or nothing. Each call gets a fresh fuel
/// budget ([`Plugin::set_fuel_budget`]); [`Plugin::last_call_fuel`] tells what it used. A
/// trap poisons the plugin: every later call returns [`PluginError::Poisoned`].
pub struct Plugin<H: Hostcalls + 'static> {
    store: Store<HostState<H>>,
    instance: Instance,
    memory: Memory,
    fuel_budget: u64,
    last_call_fuel: u64,
    total_fuel: u64,
    poisoned: Option<&'static str>,
    /// The `proc_exit` that ended the last call, if any.
    last_exit: Option<ProcExit>,
}

impl<H: Hostcalls + 'static> fmt::Debug for Plugin<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("memory_size", &self.memory_size())
            .field("fuel_budget", &self.fuel_budget)
            .field("last_call_fuel", &self.last_call_fuel)
            .field("total_fuel", &self.total_fuel)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// The trap message and backtrace of a failed call.
fn describe(error: &wasmtime::Error) -> (String, Option<String>) {
    let message = if let Some(trap) = error.downcast_ref::<Trap>() {
        trap.to_string()
    } else if let Some(exit) = error.downcast_ref::<ProcExit>() {
        exit.to_string()
    } else {
        error.root_cause().to_string()
    };
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(ToString::to_string);
    (message, backtrace)
}

impl<H: Hostcalls + 'static> Plugin<H> {
    /// Compiles `wasm` and instantiates it with `hostcalls` serving its hostcalls:
    /// [`PluginModule::new`] then [`PluginModule::instantiate`].
    ///
    /// Instantiation runs the module's start functions as cpp-host does: `_initialize` (a
    /// reactor, what Rust's wasm32-wasip1 cdylibs export) followed by `main(0, 0)` or
    /// `__main_void()` if exported; or `_start` (a command) when there is no `_initialize`,
    /// where `proc_exit(0)` counts as success. Their fuel is [`Plugin::last_call_fuel`]
    /// afterwards.
    pub fn load(wasm: &[u8], hostcalls: H) -> Result<Plugin<H>, PluginError> {
        PluginModule::new(wasm)?.instantiate(hostcalls)
    }

    fn start(&mut self) -> Result<(), PluginError> {
        if self.has_export("_initialize") {
            self.invoke::<(), ()>("_initialize", ())?;
            let initialize_fuel = self.last_call_fuel;
            if self.has_export("main") {
                self.invoke::<(u32, u32), u32>("main", (0, 0))?;
            } else if self.has_export("__main_void") {
                self.invoke::<(), u32>("__main_void", ())?;
            }
            self.last_call_fuel += initialize_fuel;
        } else if self.has_export("_start") {
            match self.invoke::<(), ()>("_start", ()) {
                // A command that exits with 0 has finished normally.
                Err(PluginError::Trap { .. }) if self.last_exit == Some(ProcExit(0)) => {
                    self.poisoned = None;
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Whether the module exports a function `name`.
    pub fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    /// The ABI version the module declares with its `proxy_abi_version_*` marker export, e.g.
    /// `"0_2_1"`, if any.
    pub fn abi_version(&mut self) -> Option<&'static str> {
        ["0_2_1", "0_2_0", "0_1_0"]
            .into_iter()
            .find(|version| self.has_export(&format!("proxy_abi_version_{version}")))
    }

    /// The hostcall implementation (for one look: no callback may run while it is held).
    pub fn hostcalls(&self) -> Ref<'_, H> {
        self.store.data().hostcalls.borrow()
    }

    /// The hostcall implementation, mutably (e.g. to set up the next callback's state).
    pub fn hostcalls_mut(&self) -> RefMut<'_, H> {
        self.store.data().hostcalls.borrow_mut()
    }

    /// The fuel (about one unit per wasm instruction, including the guest allocator's work on
    /// behalf of hostcalls) the last call consumed; 0 if the export was missing. After
    /// [`Plugin::load`], the start functions' fuel. A call that ran out of fuel reports the
    /// whole budget.
    pub fn last_call_fuel(&self) -> u64 {
        self.last_call_fuel
    }

    /// The fuel consumed by every call so far, start functions included.
    pub fn total_fuel(&self) -> u64 {
        self.total_fuel
    }

    /// The fuel each call starts with.
    pub fn fuel_budget(&self) -> u64 {
        self.fuel_budget
    }

    /// Sets the fuel each later call starts with (default [`DEFAULT_FUEL_BUDGET`]); a call
    /// that needs more traps with `all fuel consumed by WebAssembly`.
    pub fn set_fuel_budget(&mut self, fuel: u64) {
        self.fuel_budget = fuel;
    }

    /// The size of the guest's linear memory, in bytes.
    pub fn memory_size(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// The name and value of every `i64` global the module exports, in export order.
    ///
    /// Plugins export none; a module instrumented with counters does (`proxy-async-bench
    /// profile` adds one per function and per allocator call site and reads them between
    /// callbacks): counters in globals need no import that the linker would have to provide.
    pub fn exported_i64_globals(&mut self) -> Vec<(String, i64)> {
        let globals: Vec<(String, Global)> = self
            .instance
            .exports(&mut self.store)
            .filter_map(|export| {
                let name = export.name().to_string();
                export.into_global().map(|global| (name, global))
            })
            .collect();
        globals
            .into_iter()
            .filter_map(|(name, global)| match global.get(&mut self.store) {
                Val::I64(value) => Some((name, value)),
                _ => None,
            })
            .collect()
    }

    /// The export that trapped, if the plugin is poisoned.
    pub fn poisoned_by(&self) -> Option<&'static str> {
        self.poisoned
    }

    /// Calls the export `name`; `Ok(None)` if the module does not export it.
    fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        params: P,
    ) -> Result<Option<R>, PluginError> {
        if let Some(trapped_in) = self.poisoned {
            return Err(PluginError::Poisoned {
                callback: name,
                trapped_in,
            });
        }
        self.last_call_fuel = 0;
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let func = func
            .typed::<P, R>(&self.store)
            .map_err(|error| PluginError::BadExport {
                name,
                message: format!("{error:#}"),
            })?;
        self.store.data_mut().captured.clear();
        // Fuel is enabled on the shared engine, so setting and reading it cannot fail.
        let _ = self.store.set_fuel(self.fuel_budget);
        let result = func.call(&mut self.store, params);
        let remaining = self.store.get_fuel().unwrap_or(0);
        self.last_call_fuel = self.fuel_budget.saturating_sub(remaining);
        self.total_fuel = self.total_fuel.saturating_add(self.last_call_fuel);
        let state = self.store.data_mut();
        state.flush_output();
        match result {
            Ok(results) => Ok(Some(results)),
            Err(error) => {
                self.poisoned = Some(name);
                self.last_exit = error.downcast_ref::<ProcExit>().copied();
                let (message, backtrace) = describe(&error);
                Err(PluginError::Trap {
                    callback: name,
                    message,
                    panic: state.captured.panic_message(),
                    backtrace,
                })
            }
        }
    }

    fn call_void<P: WasmParams>(
        &mut self,
        name: &'static str,
        params: P,
    ) -> Result<(), PluginError> {
        self.invoke::<P, ()>(name, params).map(|_| ())
    }

    fn call_bool<P: WasmParams>(
        &mut self,
        name: &'static str,
        params: P,
    ) -> Result<bool, PluginError> {
        Ok(self
            .invoke::<P, u32>(name, params)?
            .is_none_or(|value| value != 0))
    }

    fn call_action<P: WasmParams>(
        &mut self,
        name: &'static str,
        params: P,
    ) -> Result<Action, PluginError> {
        Ok(self
            .invoke::<P, u32>(name, params)?
            .map_or(Action::Continue, Action::from))
    }

    /// `proxy_on_context_create(context_id, parent_context_id)`: creates a context; a parent
    /// of 0 makes it a root (plugin) context, otherwise a stream context of that root.
    pub fn on_context_create(
        &mut self,
        context_id: u32,
        parent_context_id: u32,
    ) -> Result<(), PluginError> {
        self.call_void("proxy_on_context_create", (context_id, parent_context_id))
    }

    /// `proxy_on_vm_start(root_context_id, vm_configuration_size)`: the VM started; its
    /// configuration is buffer `VM_CONFIGURATION`. `false` fails the VM. Default `true`.
    pub fn on_vm_start(
        &mut self,
        root_context_id: u32,
        vm_configuration_size: u32,
    ) -> Result<bool, PluginError> {
        self.call_bool(
            "proxy_on_vm_start",
            (root_context_id, vm_configuration_size),
        )
    }

    /// `proxy_on_configure(root_context_id, plugin_configuration_size)`: the plugin
    /// configuration is buffer `PLUGIN_CONFIGURATION`. `false` rejects it. Default `true`.
    pub fn on_configure(
        &mut self,
        root_context_id: u32,
        plugin_configuration_size: u32,
    ) -> Result<bool, PluginError> {
        self.call_bool(
            "proxy_on_configure",
            (root_context_id, plugin_configuration_size),
        )
    }

    /// `proxy_on_tick(root_context_id)`: the tick period set with
    /// `proxy_set_tick_period_milliseconds` elapsed.
    pub fn on_tick(&mut self, root_context_id: u32) -> Result<(), PluginError> {
        self.call_void("proxy_on_tick", (root_context_id,))
    }

    /// `proxy_on_queue_ready(root_context_id, queue_id)`: a shared queue the root context
    /// registered has data.
    pub fn on_queue_ready(
        &mut self,
        root_context_id: u32,
        queue_id: u32,
    ) -> Result<(), PluginError> {
        self.call_void("proxy_on_queue_ready", (root_context_id, queue_id))
    }

    /// `proxy_on_new_connection(context_id)`: a new TCP connection (network filters).
    /// Default `Continue`.
    pub fn on_new_connection(&mut self, context_id: u32) -> Result<Action, PluginError> {
        self.call_action("proxy_on_new_connection", (context_id,))
    }

    /// `proxy_on_downstream_data(context_id, data_size, end_of_stream)`: data from the
    /// client, in buffer `DOWNSTREAM_DATA`. Default `Continue`.
    pub fn on_downstream_data(
        &mut self,
        context_id: u32,
        data_size: u32,
        end_of_stream: bool,
    ) -> Result<Action, PluginError> {
        self.call_action(
            "proxy_on_downstream_data",
            (context_id, data_size, u32::from(end_of_stream)),
        )
    }

    /// `proxy_on_downstream_connection_close(context_id, peer_type)`.
    pub fn on_downstream_connection_close(
        &mut self,
        context_id: u32,
        peer: PeerType,
    ) -> Result<(), PluginError> {
        self.call_void(
            "proxy_on_downstream_connection_close",
            (context_id, peer.code()),
        )
    }

    /// `proxy_on_upstream_data(context_id, data_size, end_of_stream)`: data from the
    /// upstream, in buffer `UPSTREAM_DATA`. Default `Continue`.
    pub fn on_upstream_data(
        &mut self,
        context_id: u32,
        data_size: u32,
        end_of_stream: bool,
    ) -> Result<Action, PluginError> {
        self.call_action(
            "proxy_on_upstream_data",
            (context_id, data_size, u32::from(end_of_stream)),
        )
    }

    /// `proxy_on_upstream_connection_close(context_id, peer_type)`.
    pub fn on_upstream_connection_close(
        &mut self,
        context_id: u32,
        peer: PeerType,
    ) -> Result<(), PluginError> {
        self.call_void(
            "proxy_on_upstream_connection_close",
            (context_id, peer.code()),
        )
    }

    /// `proxy_on_request_headers(context_id, num_headers, end_of_stream)`: the request
    /// headers are in map `HTTP_REQUEST_HEADERS`. Default `Continue`.
    pub fn on_request_headers(
        &mut self,
        context_id: u32,
        num_headers: u32,
        end_of_stream: bool,
    ) -> Result<Action, PluginError> {
        self.call_action(
            "proxy_on_request_headers",
            (context_id, num_headers, u32::from(end_of_stream)),
        )
    }

    /// `proxy_on_request_body(context_id, body_size, end_of_stream)`: the body (chunk) is in
    /// buffer `HTTP_REQUEST_BODY`. Default `Continue`.
    pub fn on_request_body(
        &mut self,
        context_id: u32,
        body_size: u32,
        end_of_stream: bool,
    ) -> Result<Action, PluginError> {
        self.call_action(
            "proxy_on_request_body",
            (context_id, body_size, u32::from(end_of_stream)),
        )
    }

    /// `proxy_on_request_trailers(context_id, num_trailers)`: the trailers are in map
    /// `HTTP_REQUEST_TRAILERS`. Default `Continue`.
    pub fn on_request_trailers(
        &mut self,
        context_id: u32,
        num_trailers: u32,
    ) -> Result<Action, PluginError> {
        self.call_action("proxy_on_request_trailers", (context_id, num_trailers))
    }

    /// `proxy_on_response_headers(context_id, num_headers, end_of_stream)`: the response
    /// headers are in map `HTTP_RESPONSE_HEADERS`. Default `Continue`.
    pub fn on_response_headers(
        &mut self,
        context_id: u32,
        num_headers: u32,
        end_of_stream: bool,
    ) -> Result<Action, PluginError> {
        self.call_action(
            "proxy_on_response_headers",
            (context_id, num_headers, u32::from(end_of_stream)),
        )
    }

    /// `proxy_on_response_body(context_id, body_size, end_of_stream)`: the body (chunk) is in
    /// buffer `HTTP_RESPONSE_BODY`. Default `Continue`.
    pub fn on_response_body(
        &mut self,
        context_id: u32,
        body_size: u32,
        end_of_stream: bool,
    ) -> Result<Action, PluginError> {
        self.call_action(
            "proxy_on_response_body",
            (context_id, body_size, u32::from(end_of_stream)),
        )
    }

    /// `proxy_on_response_trailers(context_id, num_trailers)`: the trailers are in map
    /// `HTTP_RESPONSE_TRAILERS`. Default `Continue`.
    pub fn on_response_trailers(
        &mut self,
        context_id: u32,
        num_trailers: u32,
    ) -> Result<Action, PluginError> {
        self.call_action("proxy_on_response_trailers", (context_id, num_trailers))
    }

    /// `proxy_on_http_call_response(context_id, call_id, num_headers, body_size,
    /// num_trailers)`: the answer to `proxy_http_call` `call_id`, delivered to the context
    /// that dispatched it. Its parts are in map `HTTP_CALL_RESPONSE_HEADERS`, buffer
    /// `HTTP_CALL_RESPONSE_BODY` and map `HTTP_CALL_RESPONSE_TRAILERS`; `num_headers == 0`
    /// means the call failed (timeout, reset).
    pub fn on_http_call_response(
        &mut self,
        context_id: u32,
        call_id: u32,
        num_headers: u32,
        body_size: u32,
        num_trailers: u32,
    ) -> Result<(), PluginError> {
        self.call_void(
            "proxy_on_http_call_response",
            (context_id, call_id, num_headers, body_size, num_trailers),
        )
    }

    /// `proxy_on_redis_call_response(plugin_context_id, call_id, status, response_size)`,
    /// Higress's extension: the reply to `proxy_redis_call` `call_id`, in buffer 9
    /// (`REDIS_CALL_RESPONSE`) during the callback; `status != 0` means there is none.
    pub fn on_redis_call_response(
        &mut self,
        context_id: u32,
        call_id: u32,
        status: u32,
        response_size: u32,
    ) -> Result<(), PluginError> {
        self.call_void(
            "proxy_on_redis_call_response",
            (context_id, call_id, status, response_size),
        )
    }

    /// `proxy_on_grpc_receive_initial_metadata(context_id, call_id, num_elements)`: in map
    /// `GRPC_CALL_INITIAL_METADATA`.
    pub fn on_grpc_receive_initial_metadata(
        &mut self,
        context_id: u32,
        call_id: u32,
        num_elements: u32,
    ) -> Result<(), PluginError> {
        self.call_void(
            "proxy_on_grpc_receive_initial_metadata",
            (context_id, call_id, num_elements),
        )
    }

    /// `proxy_on_grpc_receive(context_id, call_id, message_size)`: a message, in buffer
    /// `GRPC_CALL_MESSAGE`.
    pub fn on_grpc_receive(
        &mut self,
        context_id: u32,
        call_id: u32,
        message_size: u32,
    ) -> Result<(), PluginError> {
        self.call_void("proxy_on_grpc_receive", (context_id, call_id, message_size))
    }

    /// `proxy_on_grpc_receive_trailing_metadata(context_id, call_id, num_elements)`: in map
    /// `GRPC_CALL_TRAILING_METADATA`.
    pub fn on_grpc_receive_trailing_metadata(
        &mut self,
        context_id: u32,
        call_id: u32,
        num_elements: u32,
    ) -> Result<(), PluginError> {
        self.call_void(
            "proxy_on_grpc_receive_trailing_metadata",
            (context_id, call_id, num_elements),
        )
    }

    /// `proxy_on_grpc_close(context_id, call_id, status_code)`: the gRPC call or stream
    /// ended; the message is available through `proxy_get_status`.
    pub fn on_grpc_close(
        &mut self,
        context_id: u32,
        call_id: u32,
        status_code: u32,
    ) -> Result<(), PluginError> {
        self.call_void("proxy_on_grpc_close", (context_id, call_id, status_code))
    }

    /// `proxy_on_foreign_function(context_id, function_id, arguments_size)`: the host calls
    /// the plugin back; the arguments are in buffer `FOREIGN_FUNCTION_ARGUMENTS`.
    pub fn on_foreign_function(
        &mut self,
        context_id: u32,
        function_id: u32,
        arguments_size: u32,
    ) -> Result<(), PluginError> {
        self.call_void(
            "proxy_on_foreign_function",
            (context_id, function_id, arguments_size),
        )
    }

    /// `proxy_on_log(context_id)`: the stream is complete; everything is readable.
    pub fn on_log(&mut self, context_id: u32) -> Result<(), PluginError> {
        self.call_void("proxy_on_log", (context_id,))
    }

    /// `proxy_on_done(context_id)`: the proxy is done with the context. `true` lets it be
    /// deleted now; `false` means the plugin will call `proxy_done` later. Default `true`.
    pub fn on_done(&mut self, context_id: u32) -> Result<bool, PluginError> {
        self.call_bool("proxy_on_done", (context_id,))
    }

    /// `proxy_on_delete(context_id)`: the context is gone; the plugin frees its state.
    pub fn on_delete(&mut self, context_id: u32) -> Result<(), PluginError> {
        self.call_void("proxy_on_delete", (context_id,))
    }
}
