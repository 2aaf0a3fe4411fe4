//! A compiled plugin inside the emulated proxy: the [`Abi`] answered by
//! [`proxy_emulator::ProxyState`], and the plugin's exports as the proxy's
//! [`Callbacks`](proxy_emulator::Callbacks).
//!
//! This is what runs the examples' scenarios against their `.wasm`: the same traffic and the
//! same proxy state as the SDK's native testing API, with the module's real hostcalls between.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_emulator::{
    Action as ProxyAction, Callbacks, Pairs, PluginFailure, Proxy, ProxyConfig, ProxyState,
};

use crate::abi::{Abi, BufferType, HeaderPairs, LogLevel, MapType, MetricType, Status, StreamType};
use crate::plugin::{Action, Plugin, PluginError, PluginModule};

/// The [`Abi`] of a plugin running in the emulated proxy: every hostcall acts on the proxy's
/// state, exactly as the SDK's native test host does.
#[derive(Clone, Default)]
pub struct EmulatedAbi {
    state: Rc<RefCell<ProxyState>>,
}

impl EmulatedAbi {
    /// An Abi acting on `state` (shared with the [`Proxy`] that drives the plugin).
    pub fn new(state: Rc<RefCell<ProxyState>>) -> Self {
        EmulatedAbi { state }
    }

    /// The proxy state.
    pub fn state(&self) -> &Rc<RefCell<ProxyState>> {
        &self.state
    }
}

/// Starts a compiled plugin in an emulated proxy: loads the module, runs `on_vm_start` and
/// `on_configure` with `config`.
pub fn start_emulated(
    wasm: &[u8],
    config: ProxyConfig,
) -> Result<Proxy<Plugin<EmulatedAbi>>, PluginStartError> {
    let module = PluginModule::new(wasm).map_err(PluginStartError::Load)?;
    start_emulated_module(&module, config)
}

/// Like [`start_emulated`], from a module compiled once (compiling is the slow part; a new
/// instance per test is cheap).
pub fn start_emulated_module(
    module: &PluginModule,
    config: ProxyConfig,
) -> Result<Proxy<Plugin<EmulatedAbi>>, PluginStartError> {
    let state = Rc::new(RefCell::new(ProxyState::default()));
    let plugin = module
        .instantiate(EmulatedAbi::new(Rc::clone(&state)))
        .map_err(PluginStartError::Load)?;
    Proxy::start(state, plugin, config).map_err(PluginStartError::Rejected)
}

/// Why [`start_emulated`] failed.
#[derive(Debug)]
pub enum PluginStartError {
    /// The module could not be loaded.
    Load(PluginError),
    /// The plugin refused its configuration (or trapped while starting).
    Rejected(proxy_emulator::ConfigRejected),
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn owned_pairs(pairs: &[(&[u8], &[u8])]) -> Pairs {
    pairs
        .iter()
        .map(|(name, value)| (text(name), value.to_vec()))
        .collect()
}

fn byte_pairs(pairs: Pairs) -> HeaderPairs {
    pairs
        .into_iter()
        .map(|(name, value)| (name.into_bytes(), value))
        .collect()
}

fn map(map: MapType) -> Result<proxy_emulator::MapType, Status> {
    proxy_emulator::MapType::from_code(u32::from(map)).ok_or(Status::BadArgument)
}

fn buffer(buffer: BufferType) -> Result<proxy_emulator::BufferType, Status> {
    proxy_emulator::BufferType::from_code(u32::from(buffer)).ok_or(Status::BadArgument)
}

fn usize_of(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

impl Abi for EmulatedAbi {
    fn log(&mut self, level: LogLevel, message: &[u8]) -> Result<(), Status> {
        let level = proxy_emulator::LogLevel::from_code(u32::from(level));
        self.state.borrow_mut().log(level, &text(message));
        Ok(())
    }

    fn get_log_level(&mut self) -> Result<LogLevel, Status> {
        Ok(LogLevel::from(self.state.borrow().log_level().code()))
    }

    fn get_current_time_nanoseconds(&mut self) -> Result<u64, Status> {
        Ok(self.state.borrow().now_nanos())
    }

    fn set_tick_period_milliseconds(&mut self, period_ms: u32) -> Result<(), Status> {
        self.state
            .borrow_mut()
            .set_tick_period(Duration::from_millis(u64::from(period_ms)));
        Ok(())
    }

    fn set_effective_context(&mut self, context_id: u32) -> Result<(), Status> {
        self.state.borrow_mut().set_effective_context(context_id)
    }

    fn done(&mut self) -> Result<(), Status> {
        // Contexts are finalized by the proxy right after `on_done`; nothing is pending.
        Ok(())
    }

    fn get_buffer_bytes(
        &mut self,
        kind: BufferType,
        start: u32,
        max_size: u32,
    ) -> Result<Vec<u8>, Status> {
        self.state
            .borrow_mut()
            .get_buffer(buffer(kind)?, usize_of(start), usize_of(max_size))
    }

    fn set_buffer_bytes(
        &mut self,
        kind: BufferType,
        start: u32,
        size: u32,
        value: &[u8],
    ) -> Result<(), Status> {
        self.state
            .borrow_mut()
            .set_buffer(buffer(kind)?, usize_of(start), usize_of(size), value)
    }

    fn get_buffer_status(&mut self, kind: BufferType) -> Result<(u32, u32), Status> {
        let bytes = self
            .state
            .borrow_mut()
            .get_buffer(buffer(kind)?, 0, usize::MAX)?;
        Ok((u32::try_from(bytes.len()).unwrap_or(u32::MAX), 0))
    }

    fn get_header_map_pairs(&mut self, kind: MapType) -> Result<HeaderPairs, Status> {
        self.state.borrow_mut().get_map(map(kind)?).map(byte_pairs)
    }

    fn set_header_map_pairs(
        &mut self,
        kind: MapType,
        pairs: &[(&[u8], &[u8])],
    ) -> Result<(), Status> {
        self.state
            .borrow_mut()
            .set_map(map(kind)?, owned_pairs(pairs))
    }

    fn get_header_map_value(&mut self, kind: MapType, key: &[u8]) -> Result<Vec<u8>, Status> {
        self.state
            .borrow_mut()
            .get_map_value(map(kind)?, &text(key))
    }

    fn add_header_map_value(
        &mut self,
        kind: MapType,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Status> {
        self.state
            .borrow_mut()
            .add_map_value(map(kind)?, &text(key), value)
    }

    fn replace_header_map_value(
        &mut self,
        kind: MapType,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Status> {
        self.state
            .borrow_mut()
            .replace_map_value(map(kind)?, &text(key), value)
    }

    fn remove_header_map_value(&mut self, kind: MapType, key: &[u8]) -> Result<(), Status> {
        self.state
            .borrow_mut()
            .remove_map_value(map(kind)?, &text(key))
    }

    fn continue_stream(&mut self, stream: StreamType) -> Result<(), Status> {
        let side = proxy_emulator::Side::from_code(u32::from(stream)).ok_or(Status::BadArgument)?;
        self.state.borrow_mut().continue_stream(side)
    }

    fn close_stream(&mut self, stream: StreamType) -> Result<(), Status> {
        // Either side closes the whole HTTP stream; TCP streams are not emulated.
        proxy_emulator::Side::from_code(u32::from(stream)).ok_or(Status::BadArgument)?;
        self.state.borrow_mut().close_stream()
    }

    fn grpc_call(
        &mut self,
        upstream: &[u8],
        service: &[u8],
        method: &[u8],
        initial_metadata: &[(&[u8], &[u8])],
        message: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        self.state.borrow_mut().grpc_call(
            &text(upstream),
            &text(service),
            &text(method),
            owned_pairs(initial_metadata),
            message,
            Duration::from_millis(u64::from(timeout_ms)),
        )
    }

    fn grpc_stream(
        &mut self,
        upstream: &[u8],
        service: &[u8],
        method: &[u8],
        initial_metadata: &[(&[u8], &[u8])],
    ) -> Result<u32, Status> {
        self.state.borrow_mut().grpc_stream(
            &text(upstream),
            &text(service),
            &text(method),
            owned_pairs(initial_metadata),
        )
    }

    fn grpc_send(
        &mut self,
        stream_id: u32,
        message: &[u8],
        end_stream: bool,
    ) -> Result<(), Status> {
        self.state
            .borrow_mut()
            .grpc_send(stream_id, message, end_stream)
    }

    fn grpc_cancel(&mut self, id: u32) -> Result<(), Status> {
        self.state.borrow_mut().grpc_cancel(id)
    }

    fn grpc_close(&mut self, id: u32) -> Result<(), Status> {
        self.state.borrow_mut().grpc_close(id)
    }

    fn get_status(&mut self) -> Result<(u32, Vec<u8>), Status> {
        self.state.borrow().get_status()
    }

    fn call_foreign_function(&mut self, name: &[u8], arguments: &[u8]) -> Result<Vec<u8>, Status> {
        self.state
            .borrow()
            .call_foreign_function(&text(name), arguments)
    }

    fn send_local_response(
        &mut self,
        status_code: u32,
        details: &[u8],
        body: &[u8],
        headers: &[(&[u8], &[u8])],
        _grpc_status: i32,
    ) -> Result<(), Status> {
        let code = u16::try_from(status_code).map_err(|_| Status::BadArgument)?;
        self.state.borrow_mut().send_local_response(
            code,
            &text(details),
            body,
            owned_pairs(headers),
        )
    }

    fn http_call(
        &mut self,
        upstream: &[u8],
        headers: &[(&[u8], &[u8])],
        body: &[u8],
        _trailers: &[(&[u8], &[u8])],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        self.state.borrow_mut().http_call(
            &text(upstream),
            owned_pairs(headers),
            body,
            Duration::from_millis(u64::from(timeout_ms)),
        )
    }

    fn redis_init(
        &mut self,
        upstream: &[u8],
        username: &[u8],
        password: &[u8],
        timeout_ms: u32,
    ) -> Result<(), Status> {
        self.state.borrow_mut().redis_init(
            &text(upstream),
            &text(username),
            &text(password),
            Duration::from_millis(u64::from(timeout_ms)),
        )
    }

    fn redis_call(&mut self, upstream: &[u8], query: &[u8]) -> Result<u32, Status> {
        self.state.borrow_mut().redis_call(&text(upstream), query)
    }

    fn get_shared_data(&mut self, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        self.state.borrow().get_shared_data(key)
    }

    fn set_shared_data(&mut self, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
        self.state.borrow_mut().set_shared_data(key, value, cas)
    }

    fn register_shared_queue(&mut self, name: &[u8]) -> Result<u32, Status> {
        Ok(self.state.borrow_mut().register_shared_queue(&text(name)))
    }

    fn resolve_shared_queue(&mut self, vm_id: &[u8], name: &[u8]) -> Result<u32, Status> {
        self.state
            .borrow()
            .resolve_shared_queue(&text(vm_id), &text(name))
    }

    fn enqueue_shared_queue(&mut self, queue_id: u32, value: &[u8]) -> Result<(), Status> {
        self.state
            .borrow_mut()
            .enqueue_shared_queue(queue_id, value)
    }

    fn dequeue_shared_queue(&mut self, queue_id: u32) -> Result<Vec<u8>, Status> {
        self.state.borrow_mut().dequeue_shared_queue(queue_id)
    }

    fn define_metric(&mut self, metric_type: MetricType, name: &[u8]) -> Result<u32, Status> {
        let kind = proxy_emulator::MetricType::from_code(u32::from(metric_type))
            .ok_or(Status::BadArgument)?;
        Ok(self.state.borrow_mut().define_metric(kind, &text(name)))
    }

    fn record_metric(&mut self, metric_id: u32, value: i64) -> Result<(), Status> {
        self.state.borrow_mut().record_metric(metric_id, value)
    }

    fn increment_metric(&mut self, metric_id: u32, delta: i64) -> Result<(), Status> {
        self.state.borrow_mut().increment_metric(metric_id, delta)
    }

    fn get_metric(&mut self, metric_id: u32) -> Result<u64, Status> {
        let value = self.state.borrow().get_metric(metric_id)?;
        Ok(u64::try_from(value).unwrap_or(0))
    }

    fn get_property(&mut self, path: &[u8]) -> Result<Vec<u8>, Status> {
        self.state.borrow().get_property(path)
    }

    fn set_property(&mut self, path: &[u8], value: &[u8]) -> Result<(), Status> {
        self.state.borrow_mut().set_property(path, value);
        Ok(())
    }
}

fn failure(error: PluginError) -> PluginFailure {
    PluginFailure {
        message: error.to_string(),
    }
}

fn action(action: Action) -> ProxyAction {
    match action {
        Action::Pause => ProxyAction::Pause,
        _ => ProxyAction::Continue,
    }
}

impl<A: Abi + 'static> Callbacks for Plugin<A> {
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
    ) -> Result<ProxyAction, PluginFailure> {
        let count = u32::try_from(headers).unwrap_or(u32::MAX);
        Plugin::on_request_headers(self, context_id, count, end_of_stream)
            .map(action)
            .map_err(failure)
    }

    fn on_request_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<ProxyAction, PluginFailure> {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        Plugin::on_request_body(self, context_id, size, end_of_stream)
            .map(action)
            .map_err(failure)
    }

    fn on_response_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<ProxyAction, PluginFailure> {
        let count = u32::try_from(headers).unwrap_or(u32::MAX);
        Plugin::on_response_headers(self, context_id, count, end_of_stream)
            .map(action)
            .map_err(failure)
    }

    fn on_response_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<ProxyAction, PluginFailure> {
        let size = u32::try_from(size).unwrap_or(u32::MAX);
        Plugin::on_response_body(self, context_id, size, end_of_stream)
            .map(action)
            .map_err(failure)
    }

    fn on_request_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<ProxyAction, PluginFailure> {
        let trailers = u32::try_from(trailers).unwrap_or(u32::MAX);
        Plugin::on_request_trailers(self, context_id, trailers)
            .map(action)
            .map_err(failure)
    }

    fn on_response_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<ProxyAction, PluginFailure> {
        let trailers = u32::try_from(trailers).unwrap_or(u32::MAX);
        Plugin::on_response_trailers(self, context_id, trailers)
            .map(action)
            .map_err(failure)
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
