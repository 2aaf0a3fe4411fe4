//! A compiled plugin inside the emulated proxy: the module's hostcalls answered by
//! [`ProxyState`] itself, and the module's exports as the proxy's [`Callbacks`].
//!
//! This is what runs the examples' scenarios against their `.wasm`: the same traffic and the
//! same proxy state as the SDK's native testing API, with the module's real hostcalls between.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_async_abi::{Action, Callbacks, Hostcalls, PluginFailure};
use proxy_async_emulator::{ConfigRejected, Proxy, ProxyConfig, ProxyState};

use crate::plugin::{Plugin, PluginError, PluginModule};

/// A compiled plugin in an emulated proxy.
pub type EmulatedPlugin = Proxy<Plugin<ProxyState>>;

/// Starts a compiled plugin in an emulated proxy: loads the module, runs `on_vm_start` and
/// `on_configure` with `config`.
pub fn start_emulated(
    wasm: &[u8],
    config: ProxyConfig,
) -> Result<EmulatedPlugin, PluginStartError> {
    let module = PluginModule::new(wasm).map_err(PluginStartError::Load)?;
    start_emulated_module(&module, config)
}

/// Like [`start_emulated`], from a module compiled once (compiling is the slow part; a new
/// instance per test is cheap).
pub fn start_emulated_module(
    module: &PluginModule,
    config: ProxyConfig,
) -> Result<EmulatedPlugin, PluginStartError> {
    let state = Rc::new(RefCell::new(ProxyState::default()));
    let plugin = module
        .instantiate_shared(Rc::clone(&state))
        .map_err(PluginStartError::Load)?;
    Proxy::start(state, plugin, config).map_err(PluginStartError::Rejected)
}

/// Why [`start_emulated`] failed.
#[derive(Debug)]
pub enum PluginStartError {
    /// The module could not be loaded.
    Load(PluginError),
    /// The plugin refused its configuration (or trapped while starting).
    Rejected(ConfigRejected),
}

impl std::fmt::Display for PluginStartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginStartError::Load(error) => write!(f, "loading the plugin: {error}"),
            PluginStartError::Rejected(rejected) => write!(f, "{rejected}"),
        }
    }
}

impl std::error::Error for PluginStartError {}

fn failure(error: PluginError) -> PluginFailure {
    PluginFailure {
        message: error.to_string(),
    }
}

impl<H: Hostcalls + 'static> Callbacks for Plugin<H> {
    fn on_context_create(&mut self, context_id: u32, parent_id: u32) -> Result<(), PluginFailure> {
        Plugin::on_context_create(self, context_id, parent_id).map_err(failure)
    }

    fn on_vm_start(&mut self, root_id: u32, vm_config_size: usize) -> Result<bool, PluginFailure> {
        let size = u32::try_from(vm_config_size).unwrap_or(u32::MAX);
        Plugin::on_vm_start(self, root_id, size).map_err(failure)
    }

    fn on_configure(&mut self, root_id: u32, config_size: usize) -> Result<bool, PluginFailure> {
        let size = u32::try_from(config_size).unwrap_or(u32::MAX);
        Plugin::on_configure(self, root_id, size).map_err(failure)
    }

    fn on_request_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        let count = u32::try_from(headers).unwrap_or(u32::MAX);
        Plugin::on_request_headers(self, context_id, count, end_of_stream).map_err(failure)
    }

    fn on_request_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        Plugin::on_request_body(self, context_id, size, end_of_stream).map_err(failure)
    }

    fn on_response_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        let count = u32::try_from(headers).unwrap_or(u32::MAX);
        Plugin::on_response_headers(self, context_id, count, end_of_stream).map_err(failure)
    }

    fn on_response_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        Plugin::on_response_body(self, context_id, size, end_of_stream).map_err(failure)
    }

    fn on_request_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<Action, PluginFailure> {
        let trailers = u32::try_from(trailers).unwrap_or(u32::MAX);
        Plugin::on_request_trailers(self, context_id, trailers).map_err(failure)
    }

    fn on_response_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<Action, PluginFailure> {
        let trailers = u32::try_from(trailers).unwrap_or(u32::MAX);
        Plugin::on_response_trailers(self, context_id, trailers).map_err(failure)
    }

    fn on_http_call_response(
        &mut self,
        context_id: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) -> Result<(), PluginFailure> {
        let count = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
        Plugin::on_http_call_response(
            self,
            context_id,
            token,
            count(headers),
            count(body_size),
            count(trailers),
        )
        .map_err(failure)
    }

    fn on_tick(&mut self, root_id: u32) -> Result<(), PluginFailure> {
        Plugin::on_tick(self, root_id).map_err(failure)
    }

    fn on_queue_ready(&mut self, root_id: u32, queue_id: u32) -> Result<(), PluginFailure> {
        Plugin::on_queue_ready(self, root_id, queue_id).map_err(failure)
    }

    fn on_grpc_receive_initial_metadata(
        &mut self,
        context_id: u32,
        token: u32,
        elements: usize,
    ) -> Result<(), PluginFailure> {
        let elements = u32::try_from(elements).unwrap_or(u32::MAX);
        Plugin::on_grpc_receive_initial_metadata(self, context_id, token, elements).map_err(failure)
    }

    fn on_grpc_receive(
        &mut self,
        context_id: u32,
        token: u32,
        size: usize,
    ) -> Result<(), PluginFailure> {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        Plugin::on_grpc_receive(self, context_id, token, size).map_err(failure)
    }

    fn on_grpc_receive_trailing_metadata(
        &mut self,
        context_id: u32,
        token: u32,
        elements: usize,
    ) -> Result<(), PluginFailure> {
        let elements = u32::try_from(elements).unwrap_or(u32::MAX);
        Plugin::on_grpc_receive_trailing_metadata(self, context_id, token, elements)
            .map_err(failure)
    }

    fn on_grpc_close(
        &mut self,
        context_id: u32,
        token: u32,
        status_code: u32,
    ) -> Result<(), PluginFailure> {
        Plugin::on_grpc_close(self, context_id, token, status_code).map_err(failure)
    }

    fn on_redis_call_response(
        &mut self,
        context_id: u32,
        token: u32,
        status: u32,
        response_size: usize,
    ) -> Result<(), PluginFailure> {
        let size = u32::try_from(response_size).unwrap_or(u32::MAX);
        Plugin::on_redis_call_response(self, context_id, token, status, size).map_err(failure)
    }

    fn on_log(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        Plugin::on_log(self, context_id).map_err(failure)
    }

    fn on_done(&mut self, context_id: u32) -> Result<bool, PluginFailure> {
        Plugin::on_done(self, context_id).map_err(failure)
    }

    fn on_delete(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        Plugin::on_delete(self, context_id).map_err(failure)
    }
}
