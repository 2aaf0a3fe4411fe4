//! Serve mode: one or more compiled plugins in front of one upstream, on a local HTTP/1.1
//! server.
//!
//! Every request the server accepts becomes a stream of each plugin instance it reaches (one
//! VM per plugin, as in Envoy), driven through the same emulated proxy
//! ([`proxy_async_emulator::Proxy`] over its `ProxyState`) the host's tests use, so a plugin sees
//! the same hostcall semantics it sees there (deferred resume and local reply, call-response
//! maps readable only inside `on_http_call_response`, body callbacks held while the headers
//! are paused, 503 after a trap). What serve mode adds is real traffic:
//!
//! * the request's headers (with `:method`, `:path`, `:authority`, `:scheme`) go to
//!   `on_request_headers`; the whole request body (read first) to one `on_request_body`;
//! * while the plugin holds the request, every `proxy_http_call` it makes becomes a real
//!   HTTP/1.1 request to the address its cluster is mapped to, with the plugin's timeout; the
//!   answer is delivered to `on_http_call_response` with `x-envoy-upstream-service-time`
//!   added, and a failure as Envoy answers it: a timeout as Envoy's `504`, a connection
//!   refused or closed before the response as its `503`, a response that breaks off as the
//!   callback with 0 headers (see [`CallFailure`]). A cluster with no address is refused at dispatch with
//!   `BAD_ARGUMENT`, as Envoy does;
//! * once the plugin lets the request go on, it is forwarded, with the plugin's header changes
//!   and body, to the upstream; a local reply is sent to the client instead, and the upstream
//!   never sees the request;
//! * the upstream's response goes through `on_response_headers` and `on_response_body` to the
//!   client; an upstream that cannot be reached becomes a 502 (504 after
//!   [`ServeConfig::upstream_timeout`]), which also goes through the response callbacks, as
//!   Envoy's local replies do;
//! * then `on_log`, `on_done`, `on_delete`; a client that goes away ends the stream the same
//!   way, and cancels the calls it still had in flight.
//!
//! # Chains
//!
//! [`ServeConfig::then`] adds plugins after the first, like the HTTP filters of an Envoy
//! filter chain; each has its own module, configuration and VM (the clusters are shared).
//! The request goes through plugin 1, then (once plugin 1 lets it go on, with its changes)
//! plugin 2, and so on, then to the upstream; each plugin may pause it, make calls, or reply
//! locally. A local reply from plugin `k` answers the client: the plugins after `k` and the
//! upstream never see the request (their streams are not even opened, so they get no
//! callback at all for it), and the reply goes back through plugins `k - 1`, ..., 1. The
//! upstream's response goes through the plugins in reverse order, last plugin first, as
//! Envoy runs its encoder filters. When the request ends, each stream that was opened ends
//! (`on_log`, `on_done`, `on_delete`), in chain order. In a chain, a plugin's log lines are
//! written as `[plugin <n> <level>] <message>` (`n` from 1).
//!
//! A trap answers that client with 503 and logs the plugin's panic message; like Envoy
//! (`FAIL_CLOSED`), the broken VM answers every later request with 503 until the server is
//! restarted. The plugin's log lines are written as `[plugin <level>] <message>`, the server's
//! own as `[serve] <message>`, to stderr unless [`ServeConfig::log`] says otherwise.
//!
//! Ticks (`proxy_on_tick`) come at the period each plugin set, on the real clock, driving its
//! sleeps, timeouts and tick functions.
//!
//! Not served (yet): shared-queue notifications, trailers, gRPC
//! calls, streaming bodies (each body is delivered whole), HTTP/2.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use proxy_async_host::PluginModule;
//! use proxy_async_host::serve::{ServeConfig, Server};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let wasm = std::fs::read("target/wasm32-wasip1/release/auth_flow.wasm")?;
//! let config = ServeConfig::new(PluginModule::new(&wasm)?, "127.0.0.1:9000")
//!     .plugin_config(r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#)
//!     .cluster("auth", "127.0.0.1:9001")
//!     .cluster("users", "127.0.0.1:9002");
//! // Optional: a second plugin after auth-flow, with its own configuration.
//! let hello = std::fs::read("target/wasm32-wasip1/release/hello.wasm")?;
//! let config = config.then(PluginModule::new(&hello)?, r#"{"mockEnable": false}"#);
//! let server = Server::start(config, SocketAddr::from(([127, 0, 0, 1], 8080)))?;
//! println!("serving on http://{}", server.addr());
//! // ... send requests ...
//! server.shutdown();
//! # Ok(())
//! # }
//! ```

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::{AbortHandle, JoinSet, LocalSet};
use tokio::time::Instant;

use proxy_async_emulator::{
    Call, CallFailure, Callbacks, Direction, LogLevel, Proxy, ProxyConfig, ProxyState,
};

use crate::component::ComponentModule;
use crate::emulated::PluginStartError;
use crate::plugin::{PluginError, PluginModule};

/// Where log lines go: the plugin's (`[plugin <level>] <message>`) and the server's own
/// (`[serve] <message>`), one line per call.
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// How a plugin (or a chain of plugins) is served: the modules, their configurations, where
/// their traffic goes.
///
/// The first plugin is [`module`](Self::module) with [`plugin_config`](Self::plugin_config);
/// [`then`](Self::then) adds more after it ([`more_plugins`](Self::more_plugins)), like the
/// HTTP filters of an Envoy filter chain. Each plugin has its own VM and its own
/// configuration; the clusters, the log level and the limits are the server's, shared by all.
#[derive(Clone)]
pub struct ServeConfig {
    /// The compiled plugin (the first of the chain).
    pub module: PluginCode,
    /// The plugin configuration (`proxy_on_configure`'s buffer) of the first plugin, usually
    /// JSON.
    pub plugin_config: Vec<u8>,
    /// The plugins after the first, in the order a request goes through them. Empty: one
    /// plugin.
    pub more_plugins: Vec<ChainedPlugin>,
    /// The upstream every request the plugins let through is forwarded to, as `host:port`.
    pub upstream: String,
    /// The clusters the plugins may call, by name, each with its `host:port`. A call to any
    /// other cluster is refused with `BAD_ARGUMENT`.
    pub clusters: BTreeMap<String, String>,
    /// The proxy's log level: the plugins are told it, and lines below it are not written.
    /// Default [`LogLevel::Info`].
    pub log_level: LogLevel,
    /// How long the upstream may take to answer (connect, headers and body) before the client
    /// gets a 504. Default 15 s, Envoy's default route timeout.
    pub upstream_timeout: Duration,
    /// How long a plugin may hold a request or a response (paused, waiting for its calls)
    /// before the client gets a 504. Default 60 s.
    pub hold_timeout: Duration,
    /// The largest request, response or call-response body read, in bytes; a larger request
    /// body gets a 413, a larger response a 502. Default 16 MiB.
    pub max_body: usize,
    /// Where log lines go. Default: stderr.
    pub log: LogSink,
}

/// A compiled plugin of either kind the host runs.
#[derive(Clone, Debug)]
pub enum PluginCode {
    /// A proxy-wasm module (the SDK's `wasm32-wasip1` build).
    Module(PluginModule),
    /// A component of the `plugin` world (the SDK's `wasm32-wasip2` build).
    Component(ComponentModule),
}

impl From<PluginModule> for PluginCode {
    fn from(module: PluginModule) -> Self {
        PluginCode::Module(module)
    }
}

impl From<ComponentModule> for PluginCode {
    fn from(module: ComponentModule) -> Self {
        PluginCode::Component(module)
    }
}

impl PluginCode {
    /// Compiles `wasm`: a component when it is one, else a proxy-wasm module.
    pub fn new(wasm: &[u8]) -> Result<PluginCode, PluginError> {
        // A component's preamble has layer 1 (bytes 6..8); a core module's has layer 0.
        if wasm.len() >= 8 && wasm[..4] == *b"\0asm" && wasm[6..8] == [1, 0] {
            ComponentModule::new(wasm).map(PluginCode::Component)
        } else {
            PluginModule::new(wasm).map(PluginCode::Module)
        }
    }

    /// A new instance acting on `state`.
    fn instantiate(
        &self,
        state: &Rc<RefCell<ProxyState>>,
    ) -> Result<Box<dyn Callbacks>, PluginError> {
        Ok(match self {
            PluginCode::Module(module) => Box::new(module.instantiate_shared(Rc::clone(state))?),
            PluginCode::Component(module) => Box::new(module.instantiate(Rc::clone(state))?),
        })
    }
}

/// A plugin of a chain after the first (see [`ServeConfig::then`]).
#[derive(Clone)]
pub struct ChainedPlugin {
    /// The compiled plugin.
    pub module: PluginCode,
    /// Its configuration (`proxy_on_configure`'s buffer), usually JSON.
    pub plugin_config: Vec<u8>,
}

impl fmt::Debug for ChainedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainedPlugin")
            .field("module", &self.module)
            .field(
                "plugin_config",
                &String::from_utf8_lossy(&self.plugin_config),
            )
            .finish()
    }
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("module", &self.module)
            .field(
                "plugin_config",
                &String::from_utf8_lossy(&self.plugin_config),
            )
            .field("more_plugins", &self.more_plugins)
            .field("upstream", &self.upstream)
            .field("clusters", &self.clusters)
            .field("log_level", &self.log_level)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("hold_timeout", &self.hold_timeout)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl ServeConfig {
    /// Serves `module` in front of `upstream` (`host:port`), with an empty plugin
    /// configuration, no clusters, and the defaults documented on each field.
    pub fn new(module: impl Into<PluginCode>, upstream: impl Into<String>) -> Self {
        ServeConfig {
            module: module.into(),
            plugin_config: Vec::new(),
            more_plugins: Vec::new(),
            upstream: upstream.into(),
            clusters: BTreeMap::new(),
            log_level: LogLevel::Info,
            upstream_timeout: Duration::from_secs(15),
            hold_timeout: Duration::from_secs(60),
            max_body: 16 << 20,
            log: Arc::new(|line| eprintln!("{line}")),
        }
    }

    /// Sets the configuration of the first plugin.
    pub fn plugin_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.plugin_config = config.into();
        self
    }

    /// Adds `module`, with its configuration `config`, at the end of the chain: requests reach
    /// it after the plugins before it let them go on, responses reach it first.
    pub fn then(mut self, module: impl Into<PluginCode>, config: impl Into<Vec<u8>>) -> Self {
        self.more_plugins.push(ChainedPlugin {
            module: module.into(),
            plugin_config: config.into(),
        });
        self
    }

    /// How many plugins the chain has (at least 1).
    pub fn plugin_count(&self) -> usize {
        1 + self.more_plugins.len()
    }

    /// Maps the cluster `name` to `address` (`host:port`).
    pub fn cluster(mut self, name: impl Into<String>, address: impl Into<String>) -> Self {
        self.clusters.insert(name.into(), address.into());
        self
    }

    /// Sets the proxy's log level.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// Sends the log lines to `sink` instead of stderr.
    pub fn log_sink(mut self, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.log = Arc::new(sink);
        self
    }
}

/// Why the server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// The listening address could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The (first) plugin could not be loaded, or rejected its configuration.
    Plugin(PluginStartError),
    /// A plugin of the chain after the first could not be loaded, or rejected its
    /// configuration.
    ChainedPlugin {
        /// Its place in the chain, from 1 (the first plugin's errors are
        /// [`ServeError::Plugin`]).
        position: usize,
        /// Why.
        error: PluginStartError,
    },
    /// The runtime or the server's thread could not be started.
    Io(std::io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::Bind { addr, error } => write!(f, "cannot listen on {addr}: {error}"),
            ServeError::Plugin(error) => write!(f, "the plugin did not start: {error}"),
            ServeError::ChainedPlugin { position, error } => {
                write!(f, "plugin {position} of the chain did not start: {error}")
            }
            ServeError::Io(error) => write!(f, "cannot start the server: {error}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// A running server on its own thread (with its own current-thread runtime, since a plugin
/// instance cannot move between threads). Stops on [`Server::shutdown`] or when dropped:
/// open connections are closed, calls in flight cancelled, the port released.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` (port 0 picks a free port), loads and configures the plugin, and serves
    /// on a new thread. Returns once the plugin is configured and the port is open.
    pub fn start(config: ServeConfig, listen: SocketAddr) -> Result<Server, ServeError> {
        let listener = std::net::TcpListener::bind(listen).map_err(|error| ServeError::Bind {
            addr: listen,
            error,
        })?;
        listener.set_nonblocking(true).map_err(ServeError::Io)?;
        let addr = listener.local_addr().map_err(ServeError::Io)?;
        let (ready, started) = std::sync::mpsc::channel::<Result<(), ServeError>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-async-serve {addr}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(ServeError::Io(error)));
                        return;
                    }
                };
                let gateway = match Gateway::new(config) {
                    Ok(gateway) => gateway,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            let _ = ready.send(Err(ServeError::Io(error)));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    gateway
                        .serve(listener, async {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .map_err(ServeError::Io)?;
        match started.recv() {
            Ok(Ok(())) => Ok(Server {
                addr,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => {
                let _ = thread.join();
                Err(ServeError::Io(std::io::Error::other(
                    "the server thread ended before it started serving",
                )))
            }
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until its thread has ended.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// A configured plugin, ready to serve: the async API under [`Server`], for a caller that
/// runs its own current-thread runtime (the plugin instance is not `Send`).
pub struct Gateway {
    shared: Rc<Shared>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Instantiates each plugin of the chain (each in its own VM) and starts it as Envoy does
    /// (root context, `on_vm_start`, `on_configure` with its configuration), in chain order.
    /// Their start-up log lines are written.
    pub fn new(config: ServeConfig) -> Result<Gateway, ServeError> {
        let chained = config.plugin_count() > 1;
        let plugins = std::iter::once((&config.module, &config.plugin_config)).chain(
            config
                .more_plugins
                .iter()
                .map(|plugin| (&plugin.module, &plugin.plugin_config)),
        );
        let mut filters = Vec::with_capacity(config.plugin_count());
        for (index, (module, plugin_config)) in plugins.enumerate() {
            let failed = |error: PluginStartError| {
                if index == 0 {
                    ServeError::Plugin(error)
                } else {
                    ServeError::ChainedPlugin {
                        position: index + 1,
                        error,
                    }
                }
            };
            let state = Rc::new(RefCell::new(ProxyState::default()));
            let plugin = module
                .instantiate(&state)
                .map_err(|error| failed(PluginStartError::Load(error)))?;
            let started = Proxy::start(
                state,
                plugin,
                ProxyConfig {
                    plugin_config: plugin_config.clone(),
                    clusters: Some(config.clusters.keys().cloned().collect()),
                    log_level: Some(config.log_level),
                    clock: None,
                },
            );
            let name = if chained {
                format!("plugin {}", index + 1)
            } else {
                "plugin".to_string()
            };
            let proxy = match started {
                Ok(proxy) => proxy,
                Err(rejected) => {
                    // The plugins started before it: their start-up lines are written.
                    for filter in &filters {
                        flush_filter_logs(&config, filter);
                    }
                    return Err(failed(PluginStartError::Rejected(rejected)));
                }
            };
            filters.push(Filter {
                proxy,
                name,
                reported_trap: Cell::new(false),
            });
        }
        let shared = Rc::new(Shared {
            filters,
            config,
            in_flight: RefCell::new(HashMap::new()),
            broken_streams: RefCell::new(HashMap::new()),
            changed: Notify::new(),
        });
        for index in 0..shared.filters.len() {
            shared.flush_logs(index);
        }
        Ok(Gateway { shared })
    }

    /// Serves the connections `listener` accepts until `shutdown` completes, then closes them
    /// all and cancels the calls in flight. Must run on a current-thread runtime (it runs its
    /// tasks on a [`LocalSet`] of its own).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let shared = self.shared;
        let tasks = LocalSet::new();
        tasks
            .run_until(async move {
                let mut connections = JoinSet::new();
                let ticker = tokio::task::spawn_local(tick(Rc::clone(&shared)));
                let mut shutdown = std::pin::pin!(shutdown);
                loop {
                    tokio::select! {
                        () = &mut shutdown => break,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _peer)) => {
                                connections.spawn_local(connection(Rc::clone(&shared), stream));
                            }
                            Err(error) => {
                                shared.log(&format!("accepting a connection failed: {error}"));
                                // E.g. out of file descriptors: do not spin.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        },
                        Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    }
                }
                drop(listener);
                ticker.abort();
                connections.shutdown().await;
                shared.cancel_all_calls();
            })
            .await;
    }
}

/// Sends each plugin its ticks, at the period it set, for as long as the server runs.
async fn tick(shared: Rc<Shared>) {
    // Resolution of the ticks: a plugin's tick comes at most this late.
    const GRANULARITY: Duration = Duration::from_millis(5);
    let mut due: Vec<Option<Instant>> = vec![None; shared.filters.len()];
    loop {
        tokio::time::sleep(GRANULARITY).await;
        for (index, next) in due.iter_mut().enumerate() {
            let Some(period) = shared.filters[index].proxy.tick_period() else {
                *next = None;
                continue;
            };
            let now = Instant::now();
            let at = *next.get_or_insert(now + period);
            if now >= at {
                *next = Some(at + period);
                // A trap is reported by `drive` (the VM is broken from then on).
                let _ = shared.drive(index, "on_tick", |proxy| {
                    proxy.tick();
                });
            }
        }
    }
}

/// Serves one client connection.
async fn connection(shared: Rc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Rc::clone(&shared);
        async move { Ok::<_, Infallible>(shared.handle(request).await) }
    });
    // A client that sends garbage or goes away mid-request: hyper answers or closes; there is
    // nothing to tell anyone.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The served plugins and what the server tracks between callbacks. Lives on one thread; no
/// `RefCell` borrow is held across an `.await`.
struct Shared {
    /// The chain, in request order.
    filters: Vec<Filter>,
    config: ServeConfig,
    /// Calls being made, by plugin and token: their stream, and the task making them.
    in_flight: RefCell<HashMap<(usize, u32), (u32, AbortHandle)>>,
    /// Streams (by plugin and context id) the emulated proxy could not go on with outside
    /// their request's task (while answering a call), with why.
    broken_streams: RefCell<HashMap<(usize, u32), String>>,
    /// Woken after every callback: the requests waiting on a plugin look again.
    changed: Notify,
}

/// One plugin of the chain: its own VM in its own emulated proxy.
struct Filter {
    proxy: Proxy<Box<dyn Callbacks>>,
    /// How log lines name it: `plugin` alone, `plugin <n>` (from 1) in a chain.
    name: String,
    reported_trap: Cell<bool>,
}

/// Writes the plugin's log lines.
fn flush_filter_logs(config: &ServeConfig, filter: &Filter) {
    let records = filter.proxy.state().take_logs();
    for record in records {
        if record.level >= config.log_level {
            (config.log)(&format!(
                "[{} {}] {}",
                filter.name,
                record.level.name(),
                record.message
            ));
        }
    }
}

/// A request that ends with a response the server makes up, and a log line.
struct Abort {
    status: StatusCode,
    message: String,
}

impl Abort {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Abort {
            status,
            message: message.into(),
        }
    }
}

/// The streams of one request, one per plugin it reached (index: the plugin's place in the
/// chain): ends them (`on_log`, `on_done`, `on_delete`, in chain order) when dropped, also
/// when the client goes away and the request's task is dropped mid-way.
struct StreamGuard {
    shared: Rc<Shared>,
    streams: RefCell<Vec<u32>>,
    ended: bool,
}

impl StreamGuard {
    fn end(mut self) {
        self.ended = true;
        self.end_all(true);
    }

    fn end_all(&self, live: bool) {
        let streams = std::mem::take(&mut *self.streams.borrow_mut());
        for (index, context_id) in streams.into_iter().enumerate() {
            self.shared.end_stream(index, context_id, live);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.ended {
            self.end_all(false);
        }
    }
}

/// What a panic said.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Headers and body of one side, as they go from one plugin to the next.
type Message = (Vec<(String, String)>, Bytes);

impl Shared {
    fn log(&self, message: &str) {
        (self.config.log)(&format!("[serve] {message}"));
    }

    fn chained(&self) -> bool {
        self.filters.len() > 1
    }

    /// `the plugin` alone, `plugin <n>` in a chain: for the server's messages.
    fn the_plugin(&self, index: usize) -> String {
        if self.chained() {
            format!("plugin {}", index + 1)
        } else {
            "the plugin".to_string()
        }
    }

    fn flush_logs(&self, index: usize) {
        let filter = &self.filters[index];
        flush_filter_logs(&self.config, filter);
        if filter.proxy.failure().is_some() && !filter.reported_trap.replace(true) {
            self.log(&format!(
                "{} trapped: like Envoy, the broken VM answers every request with 503 \
                 from now on; restart the server",
                self.the_plugin(index)
            ));
        }
    }

    /// Runs `drive` (one or more callbacks) on the emulated proxy of plugin `index`, then
    /// dispatches the calls the plugin made, writes its logs and wakes the waiting requests.
    /// The emulated proxy panics on a protocol mistake of the plugin (e.g. resuming a stream
    /// that is not paused): that becomes an [`Abort`] with a 503, never a crash of the server.
    fn drive<T>(
        self: &Rc<Self>,
        index: usize,
        what: &str,
        drive: impl FnOnce(&Proxy<Box<dyn Callbacks>>) -> T,
    ) -> Result<T, Abort> {
        let result = catch_unwind(AssertUnwindSafe(|| drive(&self.filters[index].proxy)));
        self.dispatch_calls(index);
        self.flush_logs(index);
        self.changed.notify_waiters();
        result.map_err(|payload| {
            let of = if self.chained() {
                format!(" of plugin {}", index + 1)
            } else {
                String::new()
            };
            Abort::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the emulated proxy stopped the stream in {what}{of}: {}",
                    panic_message(payload.as_ref())
                ),
            )
        })
    }

    /// Reads the emulated proxy's state of plugin `index`, without running the plugin.
    fn peek<T>(
        &self,
        index: usize,
        read: impl FnOnce(&Proxy<Box<dyn Callbacks>>) -> T,
    ) -> Result<T, Abort> {
        catch_unwind(AssertUnwindSafe(|| read(&self.filters[index].proxy))).map_err(|payload| {
            Abort::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the emulated proxy lost the stream: {}",
                    panic_message(payload.as_ref())
                ),
            )
        })
    }

    /// Starts a task for every call plugin `index` made that is not under way yet.
    fn dispatch_calls(self: &Rc<Self>, index: usize) {
        for call in self.filters[index].proxy.calls() {
            let key = (index, call.token());
            if self.in_flight.borrow().contains_key(&key) {
                continue;
            }
            let context_id = call.context_id();
            let task = tokio::task::spawn_local(Rc::clone(self).make_call(index, call));
            self.in_flight
                .borrow_mut()
                .insert(key, (context_id, task.abort_handle()));
        }
    }

    /// Makes one call of plugin `index` for real, then delivers its answer to the plugin.
    async fn make_call(self: Rc<Self>, index: usize, call: Call) {
        let sent = std::time::Instant::now();
        let outcome = match self.config.clusters.get(call.cluster()) {
            None => Err(Failed {
                failure: CallFailure::ConnectionRefused,
                detail: format!("cluster `{}` has no address", call.cluster()),
            }),
            Some(address) => {
                let headers: Vec<(String, String)> = call.headers().to_vec();
                let exchange = async {
                    let request = build_request(&headers, Bytes::copy_from_slice(call.body()))
                        .map_err(|detail| Failed {
                            failure: CallFailure::ConnectionClosed,
                            detail,
                        })?;
                    send(address, request, self.config.max_body).await
                };
                if call.timeout().is_zero() {
                    exchange.await
                } else {
                    match tokio::time::timeout(call.timeout(), exchange).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(Failed {
                            failure: CallFailure::Timeout,
                            detail: format!("no answer within {:?}", call.timeout()),
                        }),
                    }
                }
            }
        };
        let response = match outcome {
            Ok((status, headers, body)) => {
                let mut pairs = vec![(":status".to_string(), status.as_str().as_bytes().to_vec())];
                pairs.extend(
                    headers.iter().map(|(name, value)| {
                        (name.as_str().to_string(), value.as_bytes().to_vec())
                    }),
                );
                // What Envoy's router adds to every answer of an upstream, and never to its
                // own: how a plugin tells the two apart.
                pairs.push((
                    "x-envoy-upstream-service-time".to_string(),
                    sent.elapsed().as_millis().to_string().into_bytes(),
                ));
                Some((pairs, body.to_vec()))
            }
            Err(Failed { failure, detail }) => {
                let of = if self.chained() {
                    format!(" of plugin {}", index + 1)
                } else {
                    String::new()
                };
                let answer = match failure {
                    CallFailure::Timeout => "Envoy's 504 for a timeout",
                    CallFailure::ConnectionRefused | CallFailure::ConnectionClosed => {
                        "Envoy's 503 for an unreachable upstream"
                    }
                    CallFailure::ResetMidResponse => "a failed call (0 headers)",
                };
                self.log(&format!(
                    "call {} {} to cluster `{}`{of} failed: {detail}; the plugin gets {answer}",
                    call.method(),
                    call.path(),
                    call.cluster()
                ));
                failure.envoy_answer()
            }
        };
        self.in_flight.borrow_mut().remove(&(index, call.token()));
        if let Err(abort) = self.drive(index, "on_http_call_response", |proxy| {
            proxy.answer(&call, response);
        }) {
            self.broken_streams
                .borrow_mut()
                .insert((index, call.context_id()), abort.message);
            self.changed.notify_waiters();
        }
    }

    /// Ends the stream of plugin `index`: cancels its calls, runs `on_log`, `on_done`,
    /// `on_delete`, forgets it. `live`: the server goes on (the request finished), so calls
    /// the plugin made in those callbacks are dispatched; otherwise (the client went away, or
    /// the server is stopping) nothing new is started.
    fn end_stream(self: &Rc<Self>, index: usize, context_id: u32, live: bool) {
        self.in_flight
            .borrow_mut()
            .retain(|&(plugin, _), (owner, task)| {
                let keep = plugin != index || *owner != context_id;
                if !keep {
                    task.abort();
                }
                keep
            });
        self.broken_streams
            .borrow_mut()
            .remove(&(index, context_id));
        let proxy = &self.filters[index].proxy;
        let ended = catch_unwind(AssertUnwindSafe(|| proxy.end_stream(context_id)));
        proxy.state().forget_stream(context_id);
        if let Err(payload) = ended {
            self.log(&format!(
                "ending stream {context_id} of {}: {}",
                self.the_plugin(index),
                panic_message(payload.as_ref())
            ));
        }
        if live {
            self.dispatch_calls(index);
        }
        self.flush_logs(index);
    }

    fn cancel_all_calls(&self) {
        for (_, (_, task)) in self.in_flight.borrow_mut().drain() {
            task.abort();
        }
    }

    /// Waits until the last of `watched` (plugin index, context id) lets `side` of its stream
    /// go on (`Ok(None)`), or one of `watched` replied locally (`Ok(Some(index))`, the first
    /// in chain order that did).
    async fn wait(
        &self,
        watched: &[(usize, u32)],
        side: Direction,
    ) -> Result<Option<usize>, Abort> {
        let Some(&(index, context_id)) = watched.last() else {
            return Ok(None);
        };
        let deadline = Instant::now() + self.config.hold_timeout;
        loop {
            let changed = self.changed.notified();
            for key in watched {
                if let Some(message) = self.broken_streams.borrow_mut().remove(key) {
                    return Err(Abort::new(StatusCode::SERVICE_UNAVAILABLE, message));
                }
            }
            for &(plugin, stream) in watched {
                if self.replied(plugin, stream)? {
                    return Ok(Some(plugin));
                }
            }
            if !self.peek(index, |proxy| proxy.is_paused(context_id, side))? {
                return Ok(None);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(Abort::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "{} held the {side:?} of stream {context_id} for {:?} without \
                         resuming it or replying",
                        self.the_plugin(index),
                        self.config.hold_timeout
                    ),
                ));
            }
        }
    }

    fn replied(&self, index: usize, context_id: u32) -> Result<bool, Abort> {
        self.peek(index, |proxy| proxy.local_reply(context_id).is_some())
    }

    /// Serves one request.
    async fn handle(self: Rc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, self.config.max_body).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let status = if error.is::<http_body_util::LengthLimitError>() {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                self.log(&format!("reading the request body failed: {error}"));
                return plain(status, "cannot read the request body");
            }
        };
        let guard = StreamGuard {
            shared: Rc::clone(&self),
            streams: RefCell::new(Vec::new()),
            ended: false,
        };
        let response = match self.exchange(&guard.streams, &parts, body).await {
            Ok(response) => response,
            Err(abort) => {
                self.log(&format!(
                    "{} {}: {} ({})",
                    parts.method,
                    parts.uri,
                    abort.message,
                    abort.status.as_u16()
                ));
                plain(abort.status, &abort.message)
            }
        };
        guard.end();
        response
    }

    /// The proxy's work on one request, from its headers to the client's response: the
    /// request through each plugin in chain order (each plugin's stream is opened when the
    /// request reaches it), the upstream, the response through the plugins in reverse order.
    async fn exchange(
        self: &Rc<Self>,
        streams: &RefCell<Vec<u32>>,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Full<Bytes>>, Abort> {
        let mut request: Message = (request_headers(parts), body);
        let mut watched: Vec<(usize, u32)> = Vec::with_capacity(self.filters.len());
        for index in 0..self.filters.len() {
            let context_id = self.drive(index, "on_context_create", |proxy| proxy.open_stream())?;
            streams.borrow_mut().push(context_id);
            watched.push((index, context_id));
            let (headers, body) = &request;
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            self.drive(index, "on_request_headers", |proxy| {
                proxy.send_headers(context_id, Direction::Request, &pairs, body.is_empty());
            })?;
            if let Some(replier) = self.wait(&watched, Direction::Request).await? {
                return self.respond_through(&watched, replier, None).await;
            }
            if !body.is_empty() {
                self.drive(index, "on_request_body", |proxy| {
                    proxy.send_body(context_id, Direction::Request, body, true);
                })?;
                if let Some(replier) = self.wait(&watched, Direction::Request).await? {
                    return self.respond_through(&watched, replier, None).await;
                }
            }
            request = self.peek(index, |proxy| {
                (
                    proxy.headers(context_id, Direction::Request),
                    Bytes::from(proxy.body(context_id, Direction::Request)),
                )
            })?;
        }

        let (headers, body) = request;
        let exchange = async {
            let request =
                build_request(&headers, body).map_err(|error| (StatusCode::BAD_GATEWAY, error))?;
            send(&self.config.upstream, request, self.config.max_body)
                .await
                .map_err(|failed| (StatusCode::BAD_GATEWAY, failed.detail))
        };
        let upstream = match tokio::time::timeout(self.config.upstream_timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err((
                StatusCode::GATEWAY_TIMEOUT,
                format!("no answer within {:?}", self.config.upstream_timeout),
            )),
        };
        let (status, headers, body) = match upstream {
            Ok((status, headers, body)) => {
                let headers: Vec<(String, String)> = headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_string(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                (status, headers, body)
            }
            Err((status, error)) => {
                // Like Envoy's local reply for an upstream failure: it goes through the
                // plugins' response callbacks.
                self.log(&format!(
                    "upstream {} for {} {}: {error} ({})",
                    self.config.upstream,
                    parts.method,
                    parts.uri,
                    status.as_u16()
                ));
                let text = format!("upstream {}: {error}", self.config.upstream);
                (
                    status,
                    vec![("content-type".to_string(), "text/plain".to_string())],
                    Bytes::from(text),
                )
            }
        };
        // A call answered meanwhile may have replied already.
        for &(index, context_id) in &watched {
            if self.replied(index, context_id)? {
                return self.respond_through(&watched, index, None).await;
            }
        }
        let mut response_headers = vec![(":status".to_string(), status.as_str().to_string())];
        response_headers.extend(headers);
        let last = watched.len() - 1;
        self.respond_through(&watched, last, Some((response_headers, body)))
            .await
    }

    /// Sends the response through the plugins `from`, `from - 1`, ..., the first (Envoy runs
    /// the encoder filters in reverse order), and makes the client's response of what the
    /// first plugin left. `response`: the upstream's, for plugin `from`; `None`: plugin
    /// `from` replied locally, its reply (already through its own response callbacks) is the
    /// response. A plugin that replied locally meanwhile replaces the response with its reply.
    async fn respond_through(
        self: &Rc<Self>,
        watched: &[(usize, u32)],
        from: usize,
        response: Option<Message>,
    ) -> Result<Response<Full<Bytes>>, Abort> {
        let mut response = response.unwrap_or_default();
        for &(index, context_id) in watched[..=from].iter().rev() {
            if !self.replied(index, context_id)? {
                let (headers, body) = &response;
                let pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str()))
                    .collect();
                self.drive(index, "on_response_headers", |proxy| {
                    proxy.send_headers(context_id, Direction::Response, &pairs, body.is_empty());
                })?;
                let one = [(index, context_id)];
                if self.wait(&one, Direction::Response).await?.is_none() && !body.is_empty() {
                    self.drive(index, "on_response_body", |proxy| {
                        proxy.send_body(context_id, Direction::Response, body, true);
                    })?;
                    self.wait(&one, Direction::Response).await?;
                }
            }
            response = self.peek(index, |proxy| {
                (
                    proxy.headers(context_id, Direction::Response),
                    Bytes::from(proxy.body(context_id, Direction::Response)),
                )
            })?;
        }
        self.respond(response)
    }

    /// The client's response, from the headers and body the first plugin left.
    fn respond(&self, (headers, body): Message) -> Result<Response<Full<Bytes>>, Abort> {
        let mut status = None;
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            if name == ":status" {
                status = value.parse::<u16>().ok();
                continue;
            }
            if name.starts_with(':') || is_hop_by_hop(name) || name == "content-length" {
                continue;
            }
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => {
                    map.append(name, value);
                }
                _ => self.log(&format!(
                    "dropping the response header {name:?}: not a valid header"
                )),
            }
        }
        let status = status
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or_else(|| {
                Abort::new(StatusCode::BAD_GATEWAY, "the response has no valid :status")
            })?;
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = map;
        Ok(response)
    }
}

/// The request headers as the plugin sees them: the pseudo-headers first, then every header
/// but `host` (which is `:authority`), names lower case, values lossy text.
fn request_headers(parts: &Parts) -> Vec<(String, String)> {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_string();
    let authority = parts
        .headers
        .get(header::HOST)
        .map(|host| String::from_utf8_lossy(host.as_bytes()).into_owned())
        .or_else(|| parts.uri.authority().map(|authority| authority.to_string()))
        .unwrap_or_default();
    let mut headers = vec![
        (":method".to_string(), parts.method.as_str().to_string()),
        (":path".to_string(), path),
        (":authority".to_string(), authority),
        (":scheme".to_string(), "http".to_string()),
    ];
    headers.extend(
        parts
            .headers
            .iter()
            .filter(|(name, _)| *name != header::HOST)
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            }),
    );
    headers
}

/// Headers of one connection, not of the message: never forwarded.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
    )
}

/// An HTTP/1.1 request from proxy-style headers (`:method`, `:path`, `:authority`, then the
/// rest); `host` is `:authority`, hop-by-hop headers and `content-length` are left out (the
/// body's length is sent).
fn build_request(
    headers: &[(String, String)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let find = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, value)| value.as_str())
    };
    let method = find(":method").ok_or("no :method")?;
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("invalid :method {method:?}"))?;
    let path = find(":path").ok_or("no :path")?;
    let uri = path
        .parse::<Uri>()
        .map_err(|_| format!("invalid :path {path:?}"))?;
    let authority = find(":authority").unwrap_or_default();
    let mut map = HeaderMap::new();
    if !authority.is_empty() {
        let host = HeaderValue::from_str(authority)
            .map_err(|_| format!("invalid :authority {authority:?}"))?;
        map.insert(header::HOST, host);
    }
    for (name, value) in headers {
        if name.starts_with(':')
            || is_hop_by_hop(name)
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("host")
        {
            continue;
        }
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let header_value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value of header {name}"))?;
        map.append(header_name, header_value);
    }
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = map;
    Ok(request)
}

/// Sends `request` on a new connection to `address` and reads the whole response.
/// Why a call or request to an upstream got no whole answer: what Envoy would hand a plugin
/// for it, and the details for the log.
struct Failed {
    failure: CallFailure,
    detail: String,
}

async fn send(
    address: &str,
    request: Request<Full<Bytes>>,
    max_body: usize,
) -> Result<(StatusCode, HeaderMap, Bytes), Failed> {
    let closed = |detail: String| Failed {
        failure: CallFailure::ConnectionClosed,
        detail,
    };
    let stream = TcpStream::connect(address).await.map_err(|error| Failed {
        failure: CallFailure::ConnectionRefused,
        detail: format!("cannot connect to {address}: {error}"),
    })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| closed(format!("{address}: {error}")))?;
    // The connection ends when the response is read and `sender` dropped, or when the peer
    // closes it.
    tokio::task::spawn_local(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| closed(format!("{address}: {error}")))?;
    let (parts, body) = response.into_parts();
    // The response began: Envoy hands a plugin no part of one that breaks off (or outgrows
    // its buffer) now.
    let body = Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|error| Failed {
            failure: CallFailure::ResetMidResponse,
            detail: format!("{address}: reading the response body: {error}"),
        })?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// A response the server makes up.
fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
