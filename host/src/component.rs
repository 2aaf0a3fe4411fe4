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
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::channel::oneshot;
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
    });
}

use bindings::exports::proxy_async::plugin::hooks::{Flow, Settings};
use bindings::proxy_async::plugin::{
    http_client, http_stream, logging, metrics, properties, shared_data, timers, types,
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
    /// Where each stream's running chunk hook finds its chunk in the body buffer, per side.
    windows: HashMap<u32, [BodyWindow; 2]>,
}

/// One side's body as chunk hooks see it (the SDK's proxy-wasm driver keeps the same): while
/// a chunk's hook runs, the proxy holds that chunk and buffers the ones after it; the buffer
/// holds the chunks already handled (`handled` bytes), the running chunk (`len` bytes at
/// `offset`), then the waiting chunks. `get-body`/`set-body` act on the running chunk only.
#[derive(Copy, Clone, Default, Debug)]
struct BodyWindow {
    known: u64,
    handled: u64,
    offset: u64,
    len: u64,
}

impl StoreState {
    fn window_mut(&mut self, stream: u32, direction: Direction) -> &mut BodyWindow {
        &mut self.windows.entry(stream).or_default()[direction as usize]
    }
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
        let window = *self.window_mut(stream, direction(message));
        let max = max.min(window.len.saturating_sub(start));
        let start = window.offset.saturating_add(start);
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
        let window = *self.window_mut(stream, direction(message));
        let (at, replaced) = if start == 0 && size == 0 {
            (window.offset, 0)
        } else if start >= window.len {
            (window.offset + window.len, 0)
        } else {
            (window.offset + start, size.min(window.len - start))
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
        let window = self.window_mut(stream, direction(message));
        window.len = (window.len + added).saturating_sub(replaced);
        window.known = (window.known + added).saturating_sub(replaced);
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
            let dispatched = with_state(|state| {
                if let Some(stream) = stream {
                    // The call is the stream's, as in proxy-wasm where the effective context
                    // makes it.
                    let _ = state.set_effective_context(stream);
                }
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
            windows: HashMap::new(),
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
            streams: BTreeMap::new(),
            last_run_fuel: 0,
            total_fuel: 0,
        })
    }
}

/// What the host knows of one stream's hooks.
#[derive(Default)]
struct StreamHooks {
    /// The phase whose hook export is running.
    running: Option<Phase>,
    /// The running hook's callback answered `Pause`: resume (or reply) when it finishes.
    paused: bool,
    /// Callbacks that came while a hook ran; each answered `Pause` and runs in turn.
    queued: VecDeque<(Phase, u64, bool)>,
    /// The plugin replied locally: its later hooks do not run.
    replied: bool,
    /// The stream ended while a hook ran: that hook's result is dropped, and `on-log` skipped.
    abandoned: bool,
    /// The size of a buffered body held whose hook has not run, per side (request,
    /// response): trailers end such a body, and its hook runs before theirs.
    held_body: [Option<u64>; 2],
}

/// A component instance of the `plugin` world, as the proxy sees it: the [`Callbacks`] of a
/// plugin, on the same [`ProxyState`] as the proxy driving it.
pub struct ComponentPlugin {
    store: Store<StoreState>,
    instance: bindings::Plugin,
    state: Rc<RefCell<ProxyState>>,
    settings: Settings,
    streams: BTreeMap<u32, StreamHooks>,
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

fn failure(message: impl Into<String>) -> PluginFailure {
    PluginFailure {
        message: message.into(),
    }
}

impl ComponentPlugin {
    /// Hook exports running now (started, not returned: typically awaiting a call).
    pub fn running_hooks(&self) -> usize {
        self.streams
            .values()
            .filter(|hooks| hooks.running.is_some())
            .count()
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
    fn start_hook(
        &mut self,
        phase: Phase,
        stream: u32,
        size: u64,
        end_of_stream: bool,
    ) -> Result<(), PluginFailure> {
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
        if let Some(hooks) = self.streams.get_mut(&stream) {
            hooks.running = Some(phase);
        }
        if matches!(phase, Phase::RequestBody | Phase::ResponseBody) {
            let window = self.store.data_mut().window_mut(stream, phase.direction());
            window.offset = window.handled;
            window.len = size;
        }
        Ok(())
    }

    /// A hook callback: runs the hook, or holds the event while another hook of the stream
    /// runs.
    fn hook(
        &mut self,
        phase: Phase,
        stream: u32,
        size: u64,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.last_run_fuel = 0;
        let Some(hooks) = self.streams.get_mut(&stream) else {
            return Ok(Action::Continue);
        };
        if hooks.replied || hooks.abandoned {
            return Ok(Action::Continue);
        }
        if hooks.running.is_some() {
            hooks.queued.push_back((phase, size, end_of_stream));
            return Ok(Action::Pause);
        }
        self.start_hook(phase, stream, size, end_of_stream)?;
        self.run()?;
        // The hook of this callback, if it returned, is answered in place; any other finished
        // hook resumes its stream.
        let mut action = None;
        let finished = std::mem::take(&mut self.store.data_mut().finished);
        for done in finished {
            if done.stream == stream && action.is_none() {
                action = Some(self.apply(done, false)?);
            } else {
                self.apply(done, true)?;
            }
        }
        self.start_queued()?;
        match action {
            Some(action) => Ok(action),
            None => {
                if let Some(hooks) = self.streams.get_mut(&stream) {
                    hooks.paused = true;
                }
                Ok(Action::Pause)
            }
        }
    }

    /// A body callback: with `buffered` (the plugin wants the whole body) the proxy holds the
    /// chunks until the last, and the hook runs once.
    fn body_hook(
        &mut self,
        phase: Phase,
        buffered: bool,
        stream: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        let size = u64::try_from(size).unwrap_or(u64::MAX);
        if buffered && size > self.settings.body_buffer_limit {
            return Ok(self.refuse_oversized_body(phase, stream, size));
        }
        let side = phase.direction() as usize;
        if buffered && !end_of_stream {
            if let Some(hooks) = self.streams.get_mut(&stream) {
                hooks.held_body[side] = Some(size);
            }
            return Ok(Action::Pause);
        }
        if let Some(hooks) = self.streams.get_mut(&stream) {
            hooks.held_body[side] = None;
        }
        // The callback reports every byte the proxy buffers for the side; the hook gets the
        // new chunk only.
        let window = self.store.data_mut().window_mut(stream, phase.direction());
        let chunk = size.saturating_sub(window.known);
        window.known = size;
        let action = self.hook(phase, stream, chunk, end_of_stream)?;
        if action == Action::Continue {
            *self.store.data_mut().window_mut(stream, phase.direction()) = BodyWindow::default();
        }
        Ok(action)
    }

    /// A trailers callback: they end a body the plugin buffers, whose hook runs first.
    fn trailers_hook(
        &mut self,
        body: Phase,
        trailers: Phase,
        stream: u32,
    ) -> Result<Action, PluginFailure> {
        let side = trailers.direction() as usize;
        let held = self
            .streams
            .get_mut(&stream)
            .and_then(|hooks| hooks.held_body[side].take());
        if let Some(size) = held
            && self.hook(body, stream, size, true)? == Action::Pause
        {
            if let Some(hooks) = self.streams.get_mut(&stream)
                && hooks.running.is_some()
            {
                hooks.queued.push_back((trailers, 0, true));
            }
            return Ok(Action::Pause);
        }
        self.hook(trailers, stream, 0, true)
    }

    /// Refuses a buffered body past the plugin's limit, as Envoy does at its buffer limit:
    /// 413 for a request, 500 for a response. The hook does not run.
    fn refuse_oversized_body(&mut self, phase: Phase, stream: u32, size: u64) -> Action {
        let (status, body, details) = match phase.direction() {
            Direction::Request => (413, "Payload Too Large", "request_payload_too_large"),
            Direction::Response => (500, "Internal Server Error", "response_payload_too_large"),
        };
        if let Some(hooks) = self.streams.get_mut(&stream) {
            // The response of a local reply (the plugin's or ours) passes untouched.
            if hooks.replied || hooks.abandoned {
                return Action::Continue;
            }
            hooks.replied = true;
            hooks.queued.clear();
        }
        let mut state = self.state.borrow_mut();
        state.log_line(
            LogLevel::Warn,
            format!(
                "the buffered body has {size} bytes, over the limit of {} bytes; replying {status}",
                self.settings.body_buffer_limit
            ),
        );
        let _ = state.set_effective_context(stream);
        let headers: [(&[u8], &[u8]); 1] = [(b"content-type", b"text/plain")];
        if let Err(status) =
            state.send_local_response(status, details.as_bytes(), body.as_bytes(), &headers, -1)
        {
            state.log_line(
                LogLevel::Warn,
                format!("local reply on stream {stream}: {status:?}"),
            );
        }
        Action::Pause
    }

    /// Applies a finished hook: nothing more for `Continue` inside its own callback, a resume
    /// for a paused one, the local reply for `reply`.
    fn apply(&mut self, done: Finished, resume: bool) -> Result<Action, PluginFailure> {
        let flow = done.result.map_err(failure)?;
        let Some(hooks) = self.streams.get_mut(&done.stream) else {
            return Ok(Action::Continue);
        };
        let phase = hooks.running.take();
        let resume = resume && std::mem::take(&mut hooks.paused);
        // Ended, or refused by the host (an oversized body) while this hook ran: nothing to
        // act on.
        if hooks.abandoned || hooks.replied {
            return Ok(Action::Continue);
        }
        let Some(phase) = phase else {
            return Ok(Action::Continue);
        };
        let mut state = self.state.borrow_mut();
        match flow {
            None | Some(Flow::Continue) => {
                // A later event of the same side waits with its callback paused too: resuming
                // now would pass its data on before its hook ran. The side is resumed once,
                // when the last held hook is done.
                let held_next = hooks
                    .queued
                    .front()
                    .is_some_and(|(next, _, _)| next.direction() == phase.direction());
                let windows = self
                    .store
                    .data_mut()
                    .windows
                    .entry(done.stream)
                    .or_default();
                let window = &mut windows[phase.direction() as usize];
                if held_next {
                    window.handled = window.offset + window.len;
                    window.len = 0;
                } else if resume {
                    *window = BodyWindow::default();
                }
                if resume && phase != Phase::Log && !held_next {
                    let _ = state.set_effective_context(done.stream);
                    if let Err(status) = state.continue_stream(phase.direction().stream_type()) {
                        state.log_line(
                            LogLevel::Warn,
                            format!("resuming stream {}: {status:?}", done.stream),
                        );
                    }
                }
                Ok(Action::Continue)
            }
            Some(Flow::Reply(reply)) => {
                hooks.replied = true;
                hooks.queued.clear();
                let _ = state.set_effective_context(done.stream);
                if let Err(status) = state.send_local_response(
                    u32::from(reply.status),
                    reply.details.as_bytes(),
                    &reply.body,
                    &borrowed(&reply.headers),
                    -1,
                ) {
                    state.log_line(
                        LogLevel::Warn,
                        format!("local reply on stream {}: {status:?}", done.stream),
                    );
                }
                Ok(Action::Pause)
            }
        }
    }

    /// Runs the store, then resumes (or answers) the stream of every hook that finished: their
    /// callbacks answered `Pause` earlier.
    fn run_and_resume(&mut self) -> Result<(), PluginFailure> {
        self.run()?;
        let finished = std::mem::take(&mut self.store.data_mut().finished);
        for done in finished {
            self.apply(done, true)?;
        }
        Ok(())
    }

    /// Starts the next held event of each stream whose hook finished, and applies what
    /// finishes, until nothing more does.
    fn start_queued(&mut self) -> Result<(), PluginFailure> {
        loop {
            let next = self.streams.iter_mut().find_map(|(stream, hooks)| {
                if hooks.running.is_some() || hooks.replied || hooks.abandoned {
                    return None;
                }
                hooks.queued.pop_front().map(|event| (*stream, event))
            });
            let Some((stream, (phase, size, end_of_stream))) = next else {
                return Ok(());
            };
            // Its callback answered `Pause`, so it is resumed when it finishes.
            self.start_hook(phase, stream, size, end_of_stream)?;
            if let Some(hooks) = self.streams.get_mut(&stream) {
                hooks.paused = true;
            }
            self.run_and_resume()?;
        }
    }

    /// Fails the calls `stream`'s running hook awaits with `cancelled`, lets the hook return,
    /// and drops its result.
    fn abandon(&mut self, stream: u32) -> Result<(), PluginFailure> {
        let Some(hooks) = self.streams.get_mut(&stream) else {
            return Ok(());
        };
        if hooks.running.is_none() {
            return Ok(());
        }
        hooks.abandoned = true;
        hooks.queued.clear();
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
        self.run_and_resume()?;
        self.start_queued()
    }
}

impl Callbacks for ComponentPlugin {
    fn on_context_create(&mut self, context_id: u32, parent_id: u32) -> Result<(), PluginFailure> {
        if parent_id != 0 {
            self.streams.insert(context_id, StreamHooks::default());
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
                self.settings = settings;
                Ok(true)
            }
            // The plugin logged the message naming the field.
            Err(_message) => Ok(false),
        }
    }

    fn on_request_headers(
        &mut self,
        context_id: u32,
        _headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.hook(Phase::RequestHeaders, context_id, 0, end_of_stream)
    }

    fn on_request_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        let buffered = self.settings.buffer_request_body;
        self.body_hook(
            Phase::RequestBody,
            buffered,
            context_id,
            size,
            end_of_stream,
        )
    }

    fn on_response_headers(
        &mut self,
        context_id: u32,
        _headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.hook(Phase::ResponseHeaders, context_id, 0, end_of_stream)
    }

    fn on_response_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        let buffered = self.settings.buffer_response_body;
        self.body_hook(
            Phase::ResponseBody,
            buffered,
            context_id,
            size,
            end_of_stream,
        )
    }

    fn on_request_trailers(
        &mut self,
        context_id: u32,
        _trailers: usize,
    ) -> Result<Action, PluginFailure> {
        self.trailers_hook(Phase::RequestBody, Phase::RequestTrailers, context_id)
    }

    fn on_response_trailers(
        &mut self,
        context_id: u32,
        _trailers: usize,
    ) -> Result<Action, PluginFailure> {
        self.trailers_hook(Phase::ResponseBody, Phase::ResponseTrailers, context_id)
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
        self.run_and_resume()?;
        self.start_queued()
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
        self.run_and_resume()?;
        self.start_queued()
    }

    fn on_log(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        let runnable = self
            .streams
            .get(&context_id)
            .is_some_and(|hooks| hooks.running.is_none() && !hooks.abandoned);
        if runnable {
            self.hook(Phase::Log, context_id, 0, true)?;
        }
        Ok(())
    }

    fn on_done(&mut self, context_id: u32) -> Result<bool, PluginFailure> {
        self.abandon(context_id)?;
        Ok(true)
    }

    fn on_delete(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        self.abandon(context_id)?;
        // Context ids are not reused; forgetting it keeps the set from growing.
        self.store.data_mut().abandoned.remove(&context_id);
        self.store.data_mut().windows.remove(&context_id);
        if self.streams.remove(&context_id).is_none() {
            return Ok(());
        }
        let _scope = ProxyScope::enter(&self.state);
        let hooks = self.instance.proxy_async_plugin_hooks();
        run_to_completion(hooks.call_on_stream_end(&mut self.store, context_id))
            .ok_or_else(|| failure("on-stream-end did not complete"))?
            .map_err(|error| failure(format!("{error:#}")))
    }
}
