//! Components of the `plugin` world (`wit/`) in the emulated proxy: the SDK's component build
//! (`wasm32-wasip2`) run by wasmtime with component-model async.
//!
//! [`ComponentPlugin`] implements the proxy's [`Callbacks`], so a component runs against the
//! same [`ProxyState`] and the same traffic as a proxy-wasm module: the SDK's testing API runs
//! one scenario against the native plugin, its module and its component in lockstep, and
//! serve mode serves either.
//!
//! A hook is an `async func` export. Each proxy callback starts the hook's export call as a
//! task inside the store and runs the store until nothing can progress; the call either
//! finished (the callback answers `Continue`, or sends the local reply) or waits on an HTTP
//! call (the callback answers `Pause`). An `http-client.send` import dispatches the call into
//! the proxy state and parks the guest on a channel; the proxy's `on_http_call_response`
//! fills the channel in and runs the store again, and the hook goes on from its `.await`. When
//! a paused hook finishes, the stream is resumed (or answered) from that later callback, once.
//!
//! The store's data must be `Send` (wasmtime requires it for concurrent calls), and the proxy
//! state is an `Rc<RefCell<_>>` shared with the [`Proxy`](proxy_async_emulator::Proxy): the imports
//! reach it through a thread-local set for the length of each run of the store, on the thread
//! that runs it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::channel::oneshot;
use proxy_async_abi::gate::{
    Arrival, Event, Finish, GateSettings, HookRun, HookState, Outcome, Refusal, ReplyFate,
    StreamGate,
};
use proxy_async_abi::{
    Action, BufferType, Callbacks, Direction, HeaderPairs, Hostcalls, LogLevel, MapType,
    MetricType, Phase, PluginFailure, Status,
};
use proxy_async_emulator::ProxyState;
use wasmtime::component::{
    Access, Accessor, AccessorTask, Component, ComponentNamedList, GuestTaskId, HasSelf, Lift,
    Linker, Lower, ResourceTable, TypedFunc,
};
use wasmtime::{AsContextMut, Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::plugin::PluginError;

/// The generated bindings of the `plugin` world.
#[allow(missing_docs, unreachable_pub, reason = "generated code")]
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "plugin",
        // The store is async (it has concurrent imports), so even sync exports are called
        // with `call_async`.
        exports: { default: async },
        // What a proxy attributes to the calling context (the call's owner, the stream a
        // foreign function acts on): these see the store, to find the calling task's stream.
        imports: {
            "proxy-async:plugin/grpc@0.1.0.call": store,
            "proxy-async:plugin/grpc@0.1.0.open-stream": store,
            "proxy-async:plugin/redis@0.1.0.call": store,
            "proxy-async:plugin/foreign@0.1.0.call": store,
        },
    });
}

use bindings::exports::proxy_async::plugin::hooks::{Flow, Settings};
use bindings::proxy_async::plugin::{
    foreign, grpc, http_client, http_stream, logging, metrics, properties, redis, shared_data,
    shared_queue, timers, types,
};

/// The fuel each run of the store may burn: about a billion wasm instructions, as for modules.
const FUEL_PER_RUN: u64 = 1_000_000_000;

thread_local! {
    // The proxy state of the component running on this thread now (see the module docs).
    static PROXY: RefCell<Option<Rc<RefCell<ProxyState>>>> = const { RefCell::new(None) };
}

/// Makes `state` the one the imports act on, until dropped.
struct ProxyScope {
    previous: Option<Rc<RefCell<ProxyState>>>,
}

impl ProxyScope {
    fn enter(state: &Rc<RefCell<ProxyState>>) -> ProxyScope {
        let previous = PROXY.with(|slot| slot.replace(Some(Rc::clone(state))));
        ProxyScope { previous }
    }
}

impl Drop for ProxyScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        PROXY.with(|slot| *slot.borrow_mut() = previous);
    }
}

/// Runs `f` on the proxy state of the running component; `internal-failure` outside a run.
fn with_state<R>(f: impl FnOnce(&mut ProxyState) -> R) -> Result<R, types::HostError> {
    let state = PROXY
        .with(|slot| slot.borrow().clone())
        .ok_or(types::HostError::InternalFailure)?;
    let mut state = state.borrow_mut();
    Ok(f(&mut state))
}

fn wit_error(status: Status) -> types::HostError {
    match status {
        Status::NotFound => types::HostError::NotFound,
        Status::BadArgument => types::HostError::BadArgument,
        Status::CasMismatch => types::HostError::CasMismatch,
        Status::Unimplemented => types::HostError::Unimplemented,
        _ => types::HostError::InternalFailure,
    }
}

/// Runs a stream operation on `stream` of the proxy state.
fn on_stream<R>(
    stream: u32,
    f: impl FnOnce(&mut ProxyState) -> Result<R, Status>,
) -> Result<R, types::HostError> {
    with_state(|state| {
        state.set_effective_context(stream)?;
        f(state)
    })?
    .map_err(wit_error)
}

fn map_type(message: http_stream::Message, section: http_stream::Section) -> MapType {
    match section {
        http_stream::Section::Headers => direction(message).headers(),
        http_stream::Section::Trailers => direction(message).trailers(),
    }
}

fn direction(message: http_stream::Message) -> Direction {
    match message {
        http_stream::Message::Request => Direction::Request,
        http_stream::Message::Response => Direction::Response,
    }
}

// Offsets and sizes of the world are u64; the ABI's are u32 (a wasm32 guest's).
fn u32_of(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

// Header maps as the world types them: names are text, values bytes.
fn fields(pairs: HeaderPairs) -> types::Fields {
    pairs
        .into_iter()
        .map(|(name, value)| (String::from_utf8_lossy(&name).into_owned(), value))
        .collect()
}

fn borrowed(fields: &[(String, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    fields
        .iter()
        .map(|(name, value)| (name.as_bytes(), value.as_slice()))
        .collect()
}

/// A call the guest awaits, by token.
struct PendingCall {
    stream: Option<u32>,
    reply: oneshot::Sender<Result<http_client::Response, http_client::CallError>>,
}

/// A hook export that returned (or trapped).
struct Finished {
    stream: u32,
    result: Result<Option<Flow>, String>,
}

/// The store's data: WASI, and what the running export calls and HTTP calls need.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The root task of each running hook export, to attribute its HTTP calls to its stream.
    task_streams: HashMap<GuestTaskId, u32>,
    calls: BTreeMap<u32, PendingCall>,
    /// Streams that ended while their hook ran: the hook's further calls and sleeps end at
    /// once (`cancelled`), so it returns without doing more.
    abandoned: HashSet<u32>,
    /// `timers.sleep` imports waiting, by (deadline in ns, serial); ended on the proxy's tick.
    sleeps: BTreeMap<(u64, u64), (Option<u32>, oneshot::Sender<()>)>,
    next_sleep: u64,
    /// The plugin's tick period (from its settings), started with the first sleep.
    tick_period: Duration,
    finished: Vec<Finished>,
    /// Each stream's hook sequencing (the same gate as the SDK's proxy-wasm driver); here,
    /// because `get-body`/`set-body` act on the running chunk only, which its window locates.
    gates: HashMap<u32, StreamGate>,
    /// The root context: what imports called outside any stream's hook act on.
    root_context: u32,
}

impl StoreState {
    /// Where `stream`'s running chunk of `direction` is: (offset, length) in the body buffer.
    fn window(&self, stream: u32, direction: Direction) -> (u64, u64) {
        let window = self
            .gates
            .get(&stream)
            .map(|gate| gate.window(direction))
            .unwrap_or_default();
        (u64_of(window.offset), u64_of(window.len))
    }
}

fn u64_of(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

fn usize_of(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for StoreState {}

impl http_stream::Host for StoreState {
    fn get_fields(
        &mut self,
        stream: u32,
        message: http_stream::Message,
        section: http_stream::Section,
    ) -> Result<types::Fields, types::HostError> {
        on_stream(stream, |state| {
            state
                .get_header_map_pairs(map_type(message, section))
                .map(fields)
        })
    }

    fn get_field(
        &mut self,
        stream: u32,
        message: http_stream::Message,
        section: http_stream::Section,
        name: String,
    ) -> Result<Option<types::FieldValue>, types::HostError> {
        on_stream(stream, |state| {
            match state.get_header_map_value(map_type(message, section), name.as_bytes()) {
                Ok(value) => Ok(Some(value)),
                Err(Status::NotFound) => Ok(None),
                Err(status) => Err(status),
            }
        })
    }

    fn set_fields(
        &mut self,
        stream: u32,
        message: http_stream::Message,
        section: http_stream::Section,
        fields: types::Fields,
    ) -> Result<(), types::HostError> {
        on_stream(stream, |state| {
            state.set_header_map_pairs(map_type(message, section), &borrowed(&fields))
        })
    }

    fn add_field(
        &mut self,
        stream: u32,
        message: http_stream::Message,
        section: http_stream::Section,
        name: String,
        value: types::FieldValue,
    ) -> Result<(), types::HostError> {
        on_stream(stream, |state| {
            state.add_header_map_value(map_type(message, section), name.as_bytes(), &value)
        })
    }

    fn replace_field(
        &mut self,
        stream: u32,
        message: http_stream::Message,
        section: http_stream::Section,
        name: String,
        value: types::FieldValue,
    ) -> Result<(), types::HostError> {
        on_stream(stream, |state| {
            state.replace_header_map_value(map_type(message, section), name.as_bytes(), &value)
        })
    }

    fn remove_field(
        &mut self,
        stream: u32,
        message: http_stream::Message,
        section: http_stream::Section,
        name: String,
    ) -> Result<(), types::HostError> {
        on_stream(stream, |state| {
            state.remove_header_map_value(map_type(message, section), name.as_bytes())
        })
    }

    fn get_body(
        &mut self,
        stream: u32,
        message: http_stream::Message,
        start: u64,
        max: u64,
    ) -> Result<Vec<u8>, types::HostError> {
        let (offset, len) = self.window(stream, direction(message));
        let max = max.min(len.saturating_sub(start));
        let start = offset.saturating_add(start);
        on_stream(stream, |state| {
            state.get_buffer_bytes(direction(message).body(), u32_of(start), u32_of(max))
        })
    }

    fn set_body(
        &mut self,
        stream: u32,
        message: http_stream::Message,
        start: u64,
        size: u64,
        data: Vec<u8>,
    ) -> Result<(), types::HostError> {
        // The guest's chunk is `[offset, offset + len)` of the proxy's buffer: the same edits
        // (prepend, append, replace) apply to that range.
        let (offset, len) = self.window(stream, direction(message));
        let (at, replaced) = if start == 0 && size == 0 {
            (offset, 0)
        } else if start >= len {
            (offset + len, 0)
        } else {
            (offset + start, size.min(len - start))
        };
        let added = u64::try_from(data.len()).unwrap_or(u64::MAX);
        on_stream(stream, |state| {
            state.set_buffer_bytes(
                direction(message).body(),
                u32_of(at),
                u32_of(replaced),
                &data,
            )
        })?;
        if let Some(gate) = self.gates.get_mut(&stream) {
            gate.resize_chunk(
                direction(message),
                usize_of((len + added).saturating_sub(replaced)),
            );
        }
        Ok(())
    }
}

impl http_client::Host for StoreState {}

impl http_client::HostWithStore<StoreState> for HasSelf<StoreState> {
    async fn send(
        accessor: &Accessor<StoreState, Self>,
        request: http_client::Request,
    ) -> Result<http_client::Response, http_client::CallError> {
        let receiver = accessor.with(|mut access| {
            let stream = calling_stream(&mut access);
            if stream.is_some_and(|stream| access.get().abandoned.contains(&stream)) {
                return Err(http_client::CallError::Cancelled);
            }
            let mut headers: Vec<(&[u8], &[u8])> = vec![
                (b":method", request.method.as_bytes()),
                (b":path", request.path.as_bytes()),
                (b":authority", request.authority.as_bytes()),
            ];
            headers.extend(borrowed(&request.headers));
            let root_context = access.get().root_context;
            let dispatched = with_state(|state| {
                // The call is the stream's (the root context's, from a background task), as in
                // proxy-wasm where the effective context makes it.
                let _ = state.set_effective_context(stream.unwrap_or(root_context));
                state.http_call(
                    request.cluster.as_bytes(),
                    &headers,
                    &request.body,
                    &[],
                    request.timeout_ms,
                )
            });
            match dispatched {
                Ok(Ok(token)) => {
                    let (reply, receiver) = oneshot::channel();
                    access
                        .get()
                        .calls
                        .insert(token, PendingCall { stream, reply });
                    Ok(receiver)
                }
                Ok(Err(status)) => Err(http_client::CallError::Refused(wit_error(status))),
                Err(error) => Err(http_client::CallError::Refused(error)),
            }
        })?;
        // Dropped without an answer: the host forgot the call (its stream ended).
        receiver
            .await
            .unwrap_or(Err(http_client::CallError::Cancelled))
    }
}

/// The stream whose hook export (the root of the task stack) made the import call running now.
fn calling_stream(access: &mut Access<'_, StoreState, HasSelf<StoreState>>) -> Option<u32> {
    let root = access
        .as_context_mut()
        .async_call_stack()
        .ok()
        .and_then(Iterator::last);
    root.and_then(|task| access.get().task_streams.get(&task).copied())
}

/// Runs `f` on the proxy state with the calling context effective: the stream whose hook made
/// the import call, else the root context (`root.run-background`, callbacks). A call from a
/// hook of a stream that ended is refused (`bad-argument`: the stream is gone).
fn on_caller<R>(
    access: &mut Access<'_, StoreState, HasSelf<StoreState>>,
    f: impl FnOnce(&mut ProxyState) -> Result<R, Status>,
) -> Result<R, types::HostError> {
    let stream = calling_stream(access);
    let data = access.get();
    if stream.is_some_and(|stream| data.abandoned.contains(&stream)) {
        return Err(types::HostError::BadArgument);
    }
    let context = stream.unwrap_or(data.root_context);
    with_state(|state| {
        state.set_effective_context(context)?;
        f(state)
    })?
    .map_err(wit_error)
}

/// A gRPC service naming `cluster`, as Envoy's `GrpcService` proto encodes it (field 1,
/// `envoy_grpc`, holding field 1, `cluster_name`): what `proxy_grpc_call` takes as upstream.
/// A name too long for one-byte lengths goes as it is (the proxy then checks it as a name).
fn grpc_service(cluster: &str) -> Vec<u8> {
    match (u8::try_from(cluster.len()), u8::try_from(cluster.len() + 2)) {
        (Ok(inner), Ok(outer)) if outer < 0x80 => {
            let mut encoded = vec![0x0a, outer, 0x0a, inner];
            encoded.extend_from_slice(cluster.as_bytes());
            encoded
        }
        _ => cluster.as_bytes().to_vec(),
    }
}

fn metadata(request: &grpc::GrpcRequest) -> Vec<(&[u8], &[u8])> {
    borrowed(&request.metadata)
}

impl grpc::Host for StoreState {
    fn send(
        &mut self,
        token: u32,
        message: Vec<u8>,
        end_of_stream: bool,
    ) -> Result<(), types::HostError> {
        with_state(|state| state.grpc_send(token, &message, end_of_stream))?.map_err(wit_error)
    }

    fn close(&mut self, token: u32) -> Result<(), types::HostError> {
        with_state(|state| state.grpc_close(token))?.map_err(wit_error)
    }

    fn cancel(&mut self, token: u32) -> Result<(), types::HostError> {
        with_state(|state| state.grpc_cancel(token))?.map_err(wit_error)
    }
}

impl grpc::HostWithStore<StoreState> for HasSelf<StoreState> {
    fn call(
        mut host: Access<'_, StoreState, Self>,
        request: grpc::GrpcRequest,
        message: Vec<u8>,
    ) -> Result<u32, types::HostError> {
        on_caller(&mut host, |state| {
            state.grpc_call(
                &grpc_service(&request.cluster),
                request.service.as_bytes(),
                request.method.as_bytes(),
                &metadata(&request),
                &message,
                request.timeout_ms,
            )
        })
    }

    fn open_stream(
        mut host: Access<'_, StoreState, Self>,
        request: grpc::GrpcRequest,
    ) -> Result<u32, types::HostError> {
        on_caller(&mut host, |state| {
            state.grpc_stream(
                &grpc_service(&request.cluster),
                request.service.as_bytes(),
                request.method.as_bytes(),
                &metadata(&request),
            )
        })
    }
}

impl shared_queue::Host for StoreState {
    fn register(&mut self, name: String) -> Result<u32, types::HostError> {
        with_state(|state| state.register_shared_queue(name.as_bytes()))?.map_err(wit_error)
    }

    fn resolve(&mut self, vm_id: String, name: String) -> Result<u32, types::HostError> {
        with_state(|state| state.resolve_shared_queue(vm_id.as_bytes(), name.as_bytes()))?
            .map_err(wit_error)
    }

    fn enqueue(&mut self, queue: u32, message: Vec<u8>) -> Result<(), types::HostError> {
        with_state(|state| state.enqueue_shared_queue(queue, &message))?.map_err(wit_error)
    }

    fn dequeue(&mut self, queue: u32) -> Result<Option<Vec<u8>>, types::HostError> {
        match with_state(|state| state.dequeue_shared_queue(queue))? {
            Ok(message) => Ok(Some(message)),
            Err(Status::Empty) => Ok(None),
            Err(status) => Err(wit_error(status)),
        }
    }
}

impl redis::Host for StoreState {
    fn init(
        &mut self,
        upstream: String,
        username: String,
        password: String,
        timeout_ms: u32,
    ) -> Result<(), types::HostError> {
        with_state(|state| {
            state.redis_init(
                upstream.as_bytes(),
                username.as_bytes(),
                password.as_bytes(),
                timeout_ms,
            )
        })?
        .map_err(wit_error)
    }
}

impl redis::HostWithStore<StoreState> for HasSelf<StoreState> {
    fn call(
        mut host: Access<'_, StoreState, Self>,
        cluster: String,
        query: Vec<u8>,
    ) -> Result<u32, types::HostError> {
        on_caller(&mut host, |state| {
            state.redis_call(cluster.as_bytes(), &query)
        })
    }
}

impl foreign::Host for StoreState {}

impl foreign::HostWithStore<StoreState> for HasSelf<StoreState> {
    fn call(
        mut host: Access<'_, StoreState, Self>,
        name: String,
        arguments: Vec<u8>,
    ) -> Result<Vec<u8>, types::HostError> {
        on_caller(&mut host, |state| {
            state.call_foreign_function(name.as_bytes(), &arguments)
        })
    }
}

impl timers::Host for StoreState {
    fn now(&mut self) -> u64 {
        with_state(|state| state.now_nanos()).unwrap_or(0)
    }
}

impl timers::HostWithStore<StoreState> for HasSelf<StoreState> {
    async fn sleep(accessor: &Accessor<StoreState, Self>, nanoseconds: u64) {
        let receiver = accessor.with(|mut access| {
            let stream = calling_stream(&mut access);
            let data = access.get();
            if stream.is_some_and(|stream| data.abandoned.contains(&stream)) {
                return None;
            }
            let now = with_state(|state| {
                // Like the proxy-wasm build, this host keeps time in ticks of the plugin's
                // period: start them with the first sleep.
                if state.tick_period().is_none() {
                    state.set_tick_period(data.tick_period);
                }
                state.now_nanos()
            })
            .unwrap_or(0);
            let serial = data.next_sleep;
            data.next_sleep = serial.wrapping_add(1);
            let (wake, receiver) = oneshot::channel();
            data.sleeps
                .insert((now.saturating_add(nanoseconds), serial), (stream, wake));
            Some(receiver)
        });
        // Dropped unsent: the host forgot the sleep (its stream ended); end it either way.
        if let Some(receiver) = receiver {
            let _ = receiver.await;
        }
    }
}

/// The world's log level for the ABI's: the world lists them in the ABI's order.
fn world_level(level: LogLevel) -> types::LogLevel {
    use types::LogLevel::{Critical, Debug, Error, Info, Trace, Warn};
    level.pick([Trace, Debug, Info, Warn, Error, Critical])
}

/// The ABI's log level for the world's.
fn abi_level(level: types::LogLevel) -> LogLevel {
    LogLevel::from_code(level as u32)
}

impl logging::Host for StoreState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        let _ = with_state(|state| state.log(abi_level(level), message.as_bytes()));
    }

    fn get_log_level(&mut self) -> types::LogLevel {
        world_level(with_state(|state| state.log_level()).unwrap_or(LogLevel::Critical))
    }
}

/// A property path as proxy-wasm encodes it: segments separated by NUL.
fn property_path(path: &[String]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

impl properties::Host for StoreState {
    fn get_property(&mut self, path: Vec<String>) -> Result<Option<Vec<u8>>, types::HostError> {
        match with_state(|state| state.get_property(&property_path(&path)))? {
            Ok(value) => Ok(Some(value)),
            Err(Status::NotFound) => Ok(None),
            Err(status) => Err(wit_error(status)),
        }
    }

    fn set_property(&mut self, path: Vec<String>, value: Vec<u8>) -> Result<(), types::HostError> {
        with_state(|state| state.set_property(&property_path(&path), &value))?.map_err(wit_error)
    }
}

impl metrics::Host for StoreState {
    fn define_metric(
        &mut self,
        kind: metrics::MetricKind,
        name: String,
    ) -> Result<u32, types::HostError> {
        let kind = match kind {
            metrics::MetricKind::Counter => MetricType::Counter,
            metrics::MetricKind::Gauge => MetricType::Gauge,
            metrics::MetricKind::Histogram => MetricType::Histogram,
        };
        with_state(|state| state.define_metric(kind, name.as_bytes()))?.map_err(wit_error)
    }

    fn increment_metric(&mut self, id: u32, delta: i64) -> Result<(), types::HostError> {
        with_state(|state| state.increment_metric(id, delta))?.map_err(wit_error)
    }

    fn record_metric(&mut self, id: u32, value: u64) -> Result<(), types::HostError> {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        with_state(|state| state.record_metric(id, value))?.map_err(wit_error)
    }

    fn get_metric(&mut self, id: u32) -> Result<u64, types::HostError> {
        with_state(|state| state.get_metric(id))?.map_err(wit_error)
    }
}

impl shared_data::Host for StoreState {
    fn get(&mut self, key: String) -> Result<Option<(Vec<u8>, u32)>, types::HostError> {
        match with_state(|state| state.get_shared_data(key.as_bytes()))? {
            Ok(entry) => Ok(Some(entry)),
            Err(Status::NotFound) => Ok(None),
            Err(status) => Err(wit_error(status)),
        }
    }

    fn set(&mut self, key: String, value: Vec<u8>, cas: u32) -> Result<(), types::HostError> {
        with_state(|state| state.set_shared_data(key.as_bytes(), &value, cas))?.map_err(wit_error)
    }
}

fn load_error(error: wasmtime::Error) -> PluginError {
    PluginError::Load(format!("{error:#}"))
}

/// A compiled component of the `plugin` world; instantiate it once per test or server.
#[derive(Clone)]
pub struct ComponentModule {
    engine: Engine,
    component: Component,
    linker: Arc<Linker<StoreState>>,
}

impl std::fmt::Debug for ComponentModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentModule").finish_non_exhaustive()
    }
}

impl ComponentModule {
    /// Compiles `wasm` (a component) and links the world's imports and WASI preview 2.
    pub fn new(wasm: &[u8]) -> Result<ComponentModule, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model_async(true);
        config.consume_fuel(true);
        let compile = |error: wasmtime::Error| PluginError::Compile(format!("{error:#}"));
        let engine = Engine::new(&config).map_err(compile)?;
        let component = Component::new(&engine, wasm).map_err(compile)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(load_error)?;
        bindings::Plugin::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut linker, |state| {
            state
        })
        .map_err(load_error)?;
        Ok(ComponentModule {
            engine,
            component,
            linker: Arc::new(linker),
        })
    }

    /// A new instance acting on `state` (shared with the [`Proxy`](proxy_async_emulator::Proxy)
    /// that drives it).
    pub fn instantiate(
        &self,
        state: Rc<RefCell<ProxyState>>,
    ) -> Result<ComponentPlugin, PluginError> {
        let data = StoreState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            task_streams: HashMap::new(),
            calls: BTreeMap::new(),
            abandoned: HashSet::new(),
            sleeps: BTreeMap::new(),
            next_sleep: 0,
            tick_period: Duration::from_millis(100),
            finished: Vec::new(),
            gates: HashMap::new(),
            root_context: proxy_async_emulator::ROOT_CONTEXT,
        };
        let mut store = Store::new(&self.engine, data);
        store.set_fuel(FUEL_PER_RUN).map_err(load_error)?;
        let _scope = ProxyScope::enter(&state);
        let instance = run_to_completion(bindings::Plugin::instantiate_async(
            &mut store,
            &self.component,
            &self.linker,
        ))
        .ok_or_else(|| PluginError::Load("instantiation did not complete".to_string()))?
        .map_err(load_error)?;
        Ok(ComponentPlugin {
            store,
            instance,
            state,
            settings: Settings {
                buffer_request_body: false,
                buffer_response_body: false,
                body_buffer_limit: u64::MAX,
                tick_period_ms: 100,
                tick_functions: false,
            },
            gate_settings: GateSettings::default(),
            last_run_fuel: 0,
            total_fuel: 0,
        })
    }
}

/// A component instance of the `plugin` world, as the proxy sees it: the [`Callbacks`] of a
/// plugin, on the same [`ProxyState`] as the proxy driving it.
pub struct ComponentPlugin {
    store: Store<StoreState>,
    instance: bindings::Plugin,
    state: Rc<RefCell<ProxyState>>,
    settings: Settings,
    /// What every stream's gate is told of the plugin (from its settings).
    gate_settings: GateSettings,
    last_run_fuel: u64,
    total_fuel: u64,
}

impl std::fmt::Debug for ComponentPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentPlugin")
            .field("running_hooks", &self.running_hooks())
            .field("pending_calls", &self.pending_calls())
            .finish_non_exhaustive()
    }
}

/// Polls a future until it is ready or can make no progress without outside input (it is
/// pending and woke nothing); `None` in the second case.
fn poll_until_stalled<F: Future>(future: F) -> Option<F::Output> {
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        flag.0.store(false, Ordering::SeqCst);
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        if !flag.0.load(Ordering::SeqCst) {
            return None;
        }
    }
}

/// Runs a future that needs nothing from outside (instantiation, a sync export).
fn run_to_completion<F: Future>(future: F) -> Option<F::Output> {
    poll_until_stalled(future)
}

/// One hook export call, run as a task inside the store.
struct HookTask<P, R> {
    stream: u32,
    func: TypedFunc<P, R>,
    params: P,
    result: fn(R) -> Option<Flow>,
}

impl<P, R> AccessorTask<StoreState, HasSelf<StoreState>> for HookTask<P, R>
where
    P: ComponentNamedList + Lower + Send + Sync + 'static,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    async fn run(self, accessor: &Accessor<StoreState>) -> wasmtime::Result<()> {
        let stream = self.stream;
        let started = accessor.with(|mut access| {
            let call = self
                .func
                .start_call_concurrent(access.as_context_mut(), self.params)?;
            access.get().task_streams.insert(call.task(), stream);
            wasmtime::Result::Ok(call)
        });
        let outcome = match started {
            Ok(call) => self.func.finish_call_concurrent(accessor, call).await,
            Err(error) => Err(error),
        };
        let result = outcome
            .map(self.result)
            .map_err(|error| format!("{error:#}"));
        accessor.with(|mut access| {
            let data = access.get();
            data.task_streams.retain(|_, owner| *owner != stream);
            data.finished.push(Finished { stream, result });
        });
        // A trap is recorded per stream above; an `Err` here would fail every stream's call.
        Ok(())
    }
}

/// Calls the sync export `$call` of interface `$interface` (`hooks` or `root`) with the proxy
/// state current, then runs the store: what the export woke (a hook awaiting a gRPC reply)
/// goes on, and a paused hook that finishes has its stream resumed.
macro_rules! call_export {
    ($plugin:ident, $name:literal, $interface:ident, |$guest:ident, $store:ident| $call:expr) => {{
        let scope = ProxyScope::enter(&$plugin.state);
        $plugin
            .store
            .set_fuel(FUEL_PER_RUN)
            .map_err(|error| failure(format!("{error:#}")))?;
        let $guest = call_export!(@interface $plugin, $interface);
        let $store = &mut $plugin.store;
        let outcome = run_to_completion($call);
        drop(scope);
        outcome
            .ok_or_else(|| failure(concat!($name, " did not complete")))?
            .map_err(|error| failure(format!("{error:#}")))?;
        $plugin.resume_finished()
    }};
    (@interface $plugin:ident, hooks) => {
        $plugin.instance.proxy_async_plugin_hooks()
    };
    (@interface $plugin:ident, root) => {
        $plugin.instance.proxy_async_plugin_root()
    };
}

/// The `root.run-background` call, run as a task inside the store beside the hooks. Its
/// imports act on the root context (it is no stream's task).
struct BackgroundCall {
    func: TypedFunc<(), ()>,
}

impl AccessorTask<StoreState, HasSelf<StoreState>> for BackgroundCall {
    async fn run(self, accessor: &Accessor<StoreState>) -> wasmtime::Result<()> {
        let call = accessor
            .with(|mut access| self.func.start_call_concurrent(access.as_context_mut(), ()))?;
        // A trap fails the plugin, as a trap in a module's background task does.
        self.func.finish_call_concurrent(accessor, call).await?;
        Ok(())
    }
}

fn failure(message: impl Into<String>) -> PluginFailure {
    PluginFailure {
        message: message.into(),
    }
}

impl ComponentPlugin {
    /// Hook exports running now (started, not returned: typically awaiting a call).
    pub fn running_hooks(&self) -> usize {
        self.store.data().task_streams.len()
    }

    /// HTTP calls the guest is awaiting (`http-client.send` imports not yet answered).
    pub fn pending_calls(&self) -> usize {
        self.store.data().calls.len()
    }

    /// The fuel (wasm instructions) the last callback burned.
    pub fn last_call_fuel(&self) -> u64 {
        self.last_run_fuel
    }

    /// The fuel burned since instantiation.
    pub fn total_fuel(&self) -> u64 {
        self.total_fuel
    }

    /// Runs the store until every task waits on something from outside; a trap fails the
    /// plugin (as in the proxy, the instance cannot be entered again).
    fn run(&mut self) -> Result<(), PluginFailure> {
        let _scope = ProxyScope::enter(&self.state);
        self.store
            .set_fuel(FUEL_PER_RUN)
            .map_err(|error| failure(format!("{error:#}")))?;
        let outcome = poll_until_stalled(
            self.store
                .run_concurrent(async |_| std::future::pending::<()>().await),
        );
        let left = self.store.get_fuel().unwrap_or(0);
        let burned = FUEL_PER_RUN.saturating_sub(left);
        self.last_run_fuel = self.last_run_fuel.saturating_add(burned);
        self.total_fuel = self.total_fuel.saturating_add(burned);
        match outcome {
            // Stalled: the running tasks stay parked in the store until the next run.
            None => Ok(()),
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(failure(format!("{error:#}"))),
        }
    }

    /// Starts the export of `phase` for `stream` as a task of the store.
    fn start_hook(&mut self, stream: u32, run: HookRun) -> Result<(), PluginFailure> {
        let (phase, end_of_stream) = (run.phase, run.end_of_stream);
        let size = u64_of(run.size);
        let hooks = self.instance.proxy_async_plugin_hooks();
        let spawned = match phase {
            Phase::RequestHeaders => self.store.spawn(HookTask {
                stream,
                func: hooks.func_on_request_headers(),
                params: (stream, end_of_stream),
                result: |(flow,)| Some(flow),
            }),
            Phase::ResponseHeaders => self.store.spawn(HookTask {
                stream,
                func: hooks.func_on_response_headers(),
                params: (stream, end_of_stream),
                result: |(flow,)| Some(flow),
            }),
            Phase::RequestBody => self.store.spawn(HookTask {
                stream,
                func: hooks.func_on_request_body(),
                params: (stream, size, end_of_stream),
                result: |(flow,)| Some(flow),
            }),
            Phase::ResponseBody => self.store.spawn(HookTask {
                stream,
                func: hooks.func_on_response_body(),
                params: (stream, size, end_of_stream),
                result: |(flow,)| Some(flow),
            }),
            Phase::RequestTrailers => self.store.spawn(HookTask {
                stream,
                func: hooks.func_on_request_trailers(),
                params: (stream,),
                result: |(flow,)| Some(flow),
            }),
            Phase::ResponseTrailers => self.store.spawn(HookTask {
                stream,
                func: hooks.func_on_response_trailers(),
                params: (stream,),
                result: |(flow,)| Some(flow),
            }),
            Phase::Log => self.store.spawn(HookTask {
                stream,
                func: hooks.func_on_log(),
                params: (stream,),
                result: |()| None,
            }),
        };
        spawned.map_err(|error| failure(format!("{error:#}")))?;
        Ok(())
    }

    /// A stream callback: asks the stream's gate, and runs the hook it starts.
    fn callback(
        &mut self,
        phase: Phase,
        stream: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.last_run_fuel = 0;
        let settings = self.gate_settings;
        let Some(gate) = self.store.data_mut().gates.get_mut(&stream) else {
            return Ok(Action::Continue);
        };
        match gate.callback(&settings, Event::new(phase, size, end_of_stream)) {
            Arrival::Answer(action) => Ok(action),
            Arrival::Refuse { direction, size } => {
                self.refuse_oversized_body(direction, stream, size);
                Ok(Action::Pause)
            }
            Arrival::Run(run) => self.run_in_callback(stream, run),
        }
    }

    /// Runs `run`, which starts inside the callback running now, and what the gate starts
    /// after it in the same callback; returns the callback's answer. Hooks of other streams
    /// that finish meanwhile resume their streams.
    fn run_in_callback(&mut self, stream: u32, run: HookRun) -> Result<Action, PluginFailure> {
        let mut run = run;
        // Whether a hook started since the store last ran: only then can another run finish
        // anything.
        let mut started = false;
        loop {
            self.start_hook(stream, run)?;
            self.run()?;
            let finished = std::mem::take(&mut self.store.data_mut().finished);
            let mut own = None;
            for done in finished {
                if done.stream == stream && own.is_none() {
                    own = Some(done);
                } else {
                    started |= self.finish_paused(done)?;
                }
            }
            let Some(done) = own else {
                let action = self
                    .gate_mut(stream)
                    .and_then(StreamGate::awaiting)
                    .unwrap_or(Action::Pause);
                if started {
                    self.resume_finished()?;
                }
                return Ok(action);
            };
            let flow = done.result.map_err(failure)?;
            let settings = self.gate_settings;
            let Some(finish) = self
                .gate_mut(stream)
                .map(|gate| gate.returned(&settings, outcome_of(flow.as_ref())))
            else {
                return Ok(Action::Continue);
            };
            let answer = self.carry_out(stream, run.phase, flow, finish);
            match (finish.next, answer) {
                // The trailers' hook after the body hook they ended, in this callback.
                (Some(next), None) => run = next,
                (next, answer) => {
                    if let Some(next) = next {
                        // Its callback answered Pause already: it resumes its stream.
                        self.start_hook(stream, next)?;
                        started = true;
                    }
                    if started {
                        self.resume_finished()?;
                    }
                    return Ok(answer.unwrap_or(Action::Pause));
                }
            }
        }
    }

    fn gate_mut(&mut self, stream: u32) -> Option<&mut StreamGate> {
        self.store.data_mut().gates.get_mut(&stream)
    }

    /// A hook whose callback answered `Pause` finished: carry out what its gate decides, and
    /// start the hook queued behind it. Whether it started one.
    fn finish_paused(&mut self, done: Finished) -> Result<bool, PluginFailure> {
        let flow = done.result.map_err(failure)?;
        let settings = self.gate_settings;
        let Some(gate) = self.gate_mut(done.stream) else {
            return Ok(false);
        };
        let HookState::Paused(phase) = gate.hook() else {
            // The stream ended while the hook ran: its result has nothing left to act on.
            return Ok(false);
        };
        let finish = gate.returned(&settings, outcome_of(flow.as_ref()));
        self.carry_out(done.stream, phase, flow, finish);
        match finish.next {
            Some(next) => {
                self.start_hook(done.stream, next)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Runs the store and finishes every paused hook that returns, until none does.
    fn resume_finished(&mut self) -> Result<(), PluginFailure> {
        loop {
            self.run()?;
            let finished = std::mem::take(&mut self.store.data_mut().finished);
            if finished.is_empty() {
                return Ok(());
            }
            for done in finished {
                self.finish_paused(done)?;
            }
        }
    }

    /// Carries out what the gate decided for a finished hook of `phase`: its local reply, the
    /// resume. Returns the answer for the hook's callback, if it finished inside it.
    fn carry_out(
        &mut self,
        stream: u32,
        phase: Phase,
        flow: Option<Flow>,
        finish: Finish,
    ) -> Option<Action> {
        let mut state = self.state.borrow_mut();
        let sends_reply = finish.reply == ReplyFate::Send && matches!(flow, Some(Flow::Reply(_)));
        if sends_reply || finish.resume.is_some() || finish.strip_content_length.is_some() {
            let _ = state.set_effective_context(stream);
        }
        if let Some(direction) = finish.strip_content_length
            && let Err(status) =
                state.remove_header_map_value(direction.headers(), b"content-length")
        {
            // The body may change size: a stale content-length would make the upstream (or
            // client) read a truncated body, so the proxy must frame the body itself.
            state.log_line(
                LogLevel::Warn,
                format!("removing content-length before buffering the body: {status:?}"),
            );
        }
        if finish.reply == ReplyFate::Send
            && let Some(Flow::Reply(reply)) = flow
            && let Err(status) = state.send_local_response(
                u32::from(reply.status),
                reply.details.as_bytes(),
                &reply.body,
                &borrowed(&reply.headers),
                -1,
            )
        {
            state.log_line(
                LogLevel::Warn,
                format!("local reply on stream {stream}: {status:?}"),
            );
        }
        if let Some(direction) = finish.resume
            && let Err(status) = state.continue_stream(direction.stream_type())
        {
            state.log_line(
                LogLevel::Warn,
                format!(
                    "resuming stream {stream} after {}: {status:?}",
                    phase.callback_name()
                ),
            );
        }
        finish.answer
    }

    /// Refuses a buffered body past the plugin's limit, as Envoy does at its buffer limit:
    /// 413 for a request, 500 for a response. The hook does not run.
    fn refuse_oversized_body(&mut self, direction: Direction, stream: u32, size: usize) {
        let refusal = Refusal::of(direction);
        let mut state = self.state.borrow_mut();
        state.log_line(
            LogLevel::Warn,
            format!(
                "the buffered body has {size} bytes, over the limit of {} bytes; replying {}",
                self.gate_settings.body_buffer_limit, refusal.status
            ),
        );
        let _ = state.set_effective_context(stream);
        let headers: [(&[u8], &[u8]); 1] = [(b"content-type", b"text/plain")];
        if let Err(status) = state.send_local_response(
            u32::from(refusal.status),
            refusal.details.as_bytes(),
            refusal.body.as_bytes(),
            &headers,
            -1,
        ) {
            state.log_line(
                LogLevel::Warn,
                format!("local reply on stream {stream}: {status:?}"),
            );
        }
    }

    /// Ends `stream`'s gate; if a hook still runs, fails the calls it awaits with
    /// `cancelled`, lets it return, and drops its result.
    fn abandon(&mut self, stream: u32) -> Result<(), PluginFailure> {
        let Some(gate) = self.gate_mut(stream) else {
            return Ok(());
        };
        if gate.end().is_none() {
            return Ok(());
        }
        self.store.data_mut().abandoned.insert(stream);
        let calls = &mut self.store.data_mut().calls;
        let tokens: Vec<u32> = calls
            .iter()
            .filter(|(_, call)| call.stream == Some(stream))
            .map(|(token, _)| *token)
            .collect();
        for token in tokens {
            if let Some(call) = calls.remove(&token) {
                let _ = call.reply.send(Err(http_client::CallError::Cancelled));
            }
        }
        // Its sleeps end at once (dropped unsent), so the hook can return.
        self.store
            .data_mut()
            .sleeps
            .retain(|_, (owner, _)| *owner != Some(stream));
        self.resume_finished()
    }
}

/// What the gate needs to know of a hook export's result (`None`: `on-log`, which continues).
fn outcome_of(flow: Option<&Flow>) -> Outcome {
    match flow {
        Some(Flow::Reply(_)) => Outcome::Reply,
        None | Some(Flow::Continue) => Outcome::Continue,
    }
}

impl Callbacks for ComponentPlugin {
    fn on_context_create(&mut self, context_id: u32, parent_id: u32) -> Result<(), PluginFailure> {
        if parent_id == 0 {
            self.store.data_mut().root_context = context_id;
        } else {
            self.store
                .data_mut()
                .gates
                .insert(context_id, StreamGate::new());
        }
        Ok(())
    }

    fn on_vm_start(
        &mut self,
        _root_id: u32,
        _vm_config_size: usize,
    ) -> Result<bool, PluginFailure> {
        Ok(true)
    }

    fn on_configure(&mut self, _root_id: u32, config_size: usize) -> Result<bool, PluginFailure> {
        self.last_run_fuel = 0;
        let configuration = self
            .state
            .borrow_mut()
            .get_buffer_bytes(
                BufferType::PluginConfiguration,
                0,
                u32::try_from(config_size).unwrap_or(u32::MAX),
            )
            .unwrap_or_default();
        let _scope = ProxyScope::enter(&self.state);
        self.store
            .set_fuel(FUEL_PER_RUN)
            .map_err(|error| failure(format!("{error:#}")))?;
        let hooks = self.instance.proxy_async_plugin_hooks();
        let outcome = run_to_completion(hooks.call_configure(&mut self.store, &configuration))
            .ok_or_else(|| failure("configure did not complete"))?
            .map_err(|error| failure(format!("{error:#}")))?;
        self.last_run_fuel = FUEL_PER_RUN.saturating_sub(self.store.get_fuel().unwrap_or(0));
        self.total_fuel = self.total_fuel.saturating_add(self.last_run_fuel);
        match outcome {
            Ok(settings) => {
                let tick_period = Duration::from_millis(u64::from(settings.tick_period_ms));
                self.store.data_mut().tick_period = tick_period;
                if settings.tick_functions {
                    self.state.borrow_mut().set_tick_period(tick_period);
                }
                self.gate_settings = GateSettings {
                    buffer_request_body: settings.buffer_request_body,
                    buffer_response_body: settings.buffer_response_body,
                    body_buffer_limit: usize_of(settings.body_buffer_limit),
                    skipped: proxy_async_abi::gate::PhaseSet::EMPTY,
                };
                self.settings = settings;
                // The new configuration's background tasks (the previous ones end as they see
                // it replaced, in this run).
                let run_background = self
                    .instance
                    .proxy_async_plugin_root()
                    .func_run_background();
                self.store
                    .spawn(BackgroundCall {
                        func: run_background,
                    })
                    .map_err(|error| failure(format!("{error:#}")))?;
                self.resume_finished()?;
                Ok(true)
            }
            // The plugin logged the message naming the field.
            Err(_message) => Ok(false),
        }
    }

    fn on_request_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.callback(Phase::RequestHeaders, context_id, headers, end_of_stream)
    }

    fn on_request_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.callback(Phase::RequestBody, context_id, size, end_of_stream)
    }

    fn on_response_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.callback(Phase::ResponseHeaders, context_id, headers, end_of_stream)
    }

    fn on_response_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.callback(Phase::ResponseBody, context_id, size, end_of_stream)
    }

    fn on_request_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<Action, PluginFailure> {
        self.callback(Phase::RequestTrailers, context_id, trailers, true)
    }

    fn on_response_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<Action, PluginFailure> {
        self.callback(Phase::ResponseTrailers, context_id, trailers, true)
    }

    fn on_http_call_response(
        &mut self,
        _context_id: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        _trailers: usize,
    ) -> Result<(), PluginFailure> {
        self.last_run_fuel = 0;
        // A late answer (its stream ended, and the call was cancelled) is ignored.
        let Some(call) = self.store.data_mut().calls.remove(&token) else {
            return Ok(());
        };
        let response = if headers == 0 {
            Err(http_client::CallError::NoResponse)
        } else {
            let mut state = self.state.borrow_mut();
            let headers = fields(
                state
                    .get_header_map_pairs(MapType::HttpCallResponseHeaders)
                    .unwrap_or_default(),
            );
            let body = state
                .get_buffer_bytes(
                    BufferType::HttpCallResponseBody,
                    0,
                    u32::try_from(body_size).unwrap_or(u32::MAX),
                )
                .unwrap_or_default();
            let trailers = fields(
                state
                    .get_header_map_pairs(MapType::HttpCallResponseTrailers)
                    .unwrap_or_default(),
            );
            let status = headers
                .iter()
                .find(|(name, _)| name == ":status")
                .and_then(|(_, value)| std::str::from_utf8(value).ok())
                .and_then(|value| value.parse::<u16>().ok());
            match status {
                Some(status) => Ok(http_client::Response {
                    status,
                    headers,
                    body,
                    trailers,
                }),
                None => Err(http_client::CallError::InvalidStatus),
            }
        };
        // The guest may have given up on the call meanwhile; nothing to deliver then.
        let _ = call.reply.send(response);
        self.resume_finished()
    }

    fn on_grpc_receive(
        &mut self,
        _context_id: u32,
        token: u32,
        size: usize,
    ) -> Result<(), PluginFailure> {
        self.last_run_fuel = 0;
        let message = self
            .state
            .borrow_mut()
            .get_buffer_bytes(
                BufferType::GrpcCallMessage,
                0,
                u32::try_from(size).unwrap_or(u32::MAX),
            )
            .unwrap_or_default();
        call_export!(self, "on-grpc-receive", hooks, |guest, store| guest
            .call_on_grpc_receive(store, token, &message))
    }

    fn on_grpc_close(
        &mut self,
        _context_id: u32,
        token: u32,
        status_code: u32,
    ) -> Result<(), PluginFailure> {
        self.last_run_fuel = 0;
        let message = self
            .state
            .borrow_mut()
            .get_status()
            .map(|(_, message)| String::from_utf8_lossy(&message).into_owned())
            .unwrap_or_default();
        call_export!(self, "on-grpc-close", hooks, |guest, store| guest
            .call_on_grpc_close(store, token, status_code, &message))
    }

    fn on_queue_ready(&mut self, _root_id: u32, queue_id: u32) -> Result<(), PluginFailure> {
        self.last_run_fuel = 0;
        call_export!(self, "on-queue-ready", hooks, |guest, store| guest
            .call_on_queue_ready(store, queue_id))
    }

    fn on_redis_call_response(
        &mut self,
        _context_id: u32,
        token: u32,
        status: u32,
        response_size: usize,
    ) -> Result<(), PluginFailure> {
        self.last_run_fuel = 0;
        let reply = if status == 0 {
            Ok(self
                .state
                .borrow_mut()
                .get_buffer_bytes(
                    BufferType::RedisCallResponse,
                    0,
                    u32::try_from(response_size).unwrap_or(u32::MAX),
                )
                .unwrap_or_default())
        } else {
            Err(status)
        };
        call_export!(self, "on-redis-reply", hooks, |guest, store| guest
            .call_on_redis_reply(
                store,
                token,
                reply.as_deref().map_err(|status| *status)
            ))
    }

    fn on_tick(&mut self, _root_id: u32) -> Result<(), PluginFailure> {
        self.last_run_fuel = 0;
        let now = self.state.borrow().now_nanos();
        let due = {
            let sleeps = &mut self.store.data_mut().sleeps;
            let later = sleeps.split_off(&(now.saturating_add(1), 0));
            std::mem::replace(sleeps, later)
        };
        for (_, wake) in due.into_values() {
            let _ = wake.send(());
        }
        if self.settings.tick_functions {
            let _scope = ProxyScope::enter(&self.state);
            self.store
                .set_fuel(FUEL_PER_RUN)
                .map_err(|error| failure(format!("{error:#}")))?;
            let hooks = self.instance.proxy_async_plugin_hooks();
            run_to_completion(hooks.call_on_tick(&mut self.store))
                .ok_or_else(|| failure("on-tick did not complete"))?
                .map_err(|error| failure(format!("{error:#}")))?;
        }
        self.resume_finished()
    }

    fn on_log(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        self.last_run_fuel = 0;
        let settings = self.gate_settings;
        let run = self
            .gate_mut(context_id)
            .and_then(|gate| gate.log(&settings));
        if let Some(run) = run {
            self.run_in_callback(context_id, run)?;
        }
        Ok(())
    }

    fn on_done(&mut self, context_id: u32) -> Result<bool, PluginFailure> {
        if context_id == self.store.data().root_context {
            // The plugin stops: its background tasks end (their `run-background` call
            // returns in the run after the export).
            return call_export!(self, "stop", root, |guest, store| guest.call_stop(store))
                .map(|()| true);
        }
        self.abandon(context_id)?;
        Ok(true)
    }

    fn on_delete(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        self.abandon(context_id)?;
        // Context ids are not reused; forgetting it keeps the set from growing.
        self.store.data_mut().abandoned.remove(&context_id);
        if self.store.data_mut().gates.remove(&context_id).is_none() {
            return Ok(());
        }
        // A hook still awaiting by token (gRPC, Redis) ends in the run after the export.
        call_export!(self, "on-stream-end", hooks, |guest, store| guest
            .call_on_stream_end(store, context_id))
    }
}
