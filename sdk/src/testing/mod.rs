//! Unit-test a plugin natively with `cargo test`, no wasm build, in the style of Go's
//! `proxytest`: describe traffic, not hostcalls.
//!
//! A [`PluginTest`] configures the plugin and plays the proxy. Open a stream, send it request
//! headers and bodies, look at the calls the plugin made, answer them (or let them fail), then
//! assert on what a user of the proxy would see: whether the stream went on or was resumed, the
//! headers and bodies after the plugin's changes, the local reply, the logs.
//!
//! The emulated proxy behaves like Envoy where it matters for async plugins: resumes and local
//! replies take effect after the callback returns; body callbacks are held while request
//! headers are paused; a paused body keeps buffering; a local reply runs the response
//! callbacks; calls of a stream that ended still get their responses. Protocol mistakes that
//! break a real proxy (resuming a stream that is not paused, resuming inside the callback that
//! paused it, resuming after a local reply, two local replies) fail the test with a panic.
//!
//! ```
//! use std::rc::Rc;
//! use proxy_async::{Error, Flow, NoConfig, Plugin, Request};
//! use proxy_async::testing::{Action, PluginTest};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     type Config = NoConfig;
//!     fn new(_: &Rc<NoConfig>) -> Self { Hello }
//!     async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
//!         req.headers_mut().insert("hello", "world");
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! let test = PluginTest::<Hello>::new("").unwrap();
//! let stream = test.stream();
//! assert_eq!(stream.send_request_headers(&[(":path", "/")], true), Action::Continue);
//! assert_eq!(stream.request_header("hello").as_deref(), Some("world"));
//! assert_eq!(stream.resumed_requests(), 0);
//! ```

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use proxy_emulator::{
    BufferType, Callbacks, LogLevel, MapType, PluginFailure, Proxy, ProxyConfig, ProxyState, Side,
    Status,
};
pub use proxy_emulator::{Call, ConfigRejected, SentReply};

use crate::driver::Driver;
pub use crate::host::Action;
use crate::host::{BufferKind, Direction, Host, HostError, HostStatus, MapKind, Pairs};
use crate::plugin::Plugin;
use crate::runtime::Phase;

/// One log line of the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level (the proxy's critical level is reported as error).
    pub level: log::Level,
    /// Its text.
    pub message: String,
}

/// Configures a [`PluginTest`].
pub struct PluginTestBuilder<P: Plugin> {
    config: ProxyConfig,
    _plugin: std::marker::PhantomData<P>,
}

impl<P: Plugin> PluginTestBuilder<P> {
    /// The plugin configuration (JSON; empty for none).
    pub fn config(mut self, json: &str) -> Self {
        self.config.plugin_config = json.as_bytes().to_vec();
        self
    }

    /// The clusters the proxy knows; calls to others are refused with `BAD_ARGUMENT`, as Envoy
    /// does. Without this, every cluster is known.
    pub fn clusters(mut self, clusters: &[&str]) -> Self {
        self.config.clusters = Some(
            clusters
                .iter()
                .map(|name| name.to_string())
                .collect::<BTreeSet<_>>(),
        );
        self
    }

    /// The proxy's log level (default: trace, so tests see every line).
    pub fn log_level(mut self, level: log::LevelFilter) -> Self {
        self.config.log_level = Some(match level {
            log::LevelFilter::Trace => LogLevel::Trace,
            log::LevelFilter::Debug => LogLevel::Debug,
            log::LevelFilter::Info => LogLevel::Info,
            log::LevelFilter::Warn => LogLevel::Warn,
            log::LevelFilter::Error => LogLevel::Error,
            log::LevelFilter::Off => LogLevel::Critical,
        });
        self
    }

    /// Starts the plugin: creates the root context and runs `on_configure`.
    pub fn build(self) -> Result<PluginTest<P>, ConfigRejected> {
        let state = Rc::new(RefCell::new(ProxyState::default()));
        let host = Rc::new(TestHost {
            state: Rc::clone(&state),
        });
        let driver = Driver::<P>::new(host);
        let proxy = Proxy::start(
            state,
            NativePlugin {
                driver: Rc::clone(&driver),
            },
            self.config,
        )?;
        Ok(PluginTest { proxy, driver })
    }
}

/// A plugin under test, with the proxy it runs in emulated.
pub struct PluginTest<P: Plugin> {
    proxy: Proxy<NativePlugin<P>>,
    driver: Rc<Driver<P>>,
}

impl<P: Plugin> PluginTest<P> {
    /// Starts the plugin with this configuration (JSON; empty for none).
    pub fn new(config: &str) -> Result<Self, ConfigRejected> {
        Self::builder().config(config).build()
    }

    /// Starts building a test with more settings.
    pub fn builder() -> PluginTestBuilder<P> {
        PluginTestBuilder {
            config: ProxyConfig::default(),
            _plugin: std::marker::PhantomData,
        }
    }

    /// Opens a new HTTP stream.
    pub fn stream(&self) -> TestStream<'_, P> {
        TestStream {
            test: self,
            context_id: self.proxy.open_stream(),
        }
    }

    /// Calls not answered yet, in the order they were made.
    pub fn calls(&self) -> Vec<Call> {
        self.proxy.calls()
    }

    /// Every call made, answered or not.
    pub fn all_calls(&self) -> Vec<Call> {
        self.proxy.all_calls()
    }

    /// Answers a call with a response (`:status` is added from `status`).
    pub fn respond(
        &self,
        call: &Call,
        status: u16,
        headers: &[(&str, &str)],
        body: impl AsRef<[u8]>,
    ) {
        let mut pairs: Pairs = vec![(":status".to_string(), status.to_string().into_bytes())];
        pairs.extend(
            headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec())),
        );
        self.proxy
            .answer(call, Some((pairs, body.as_ref().to_vec())));
    }

    /// Answers a call with raw header bytes (to test what the plugin does with odd responses,
    /// e.g. no `:status`).
    pub fn respond_raw(&self, call: &Call, headers: &[(&str, &[u8])], body: impl AsRef<[u8]>) {
        let pairs: Pairs = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_vec()))
            .collect();
        self.proxy
            .answer(call, Some((pairs, body.as_ref().to_vec())));
    }

    /// Fails a call as a timeout or reset does: the response callback with no headers.
    pub fn fail(&self, call: &Call) {
        self.proxy.answer(call, None);
    }

    /// Every log line, in order.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.proxy
            .logs()
            .into_iter()
            .map(|record| LogRecord {
                level: to_log_level(record.level),
                message: record.message,
            })
            .collect()
    }

    /// The log lines at `level`.
    pub fn logs_at(&self, level: log::Level) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|record| record.level == level)
            .map(|record| record.message)
            .collect()
    }

    /// Tasks alive in the plugin's executor (one per open stream while it lives).
    pub fn live_tasks(&self) -> usize {
        self.driver.runtime.task_count()
    }

    /// Calls whose reply the plugin still waits for.
    pub fn awaited_calls(&self) -> usize {
        self.driver.runtime.pending_call_count()
    }

    /// Streams the plugin still holds.
    pub fn live_streams(&self) -> usize {
        self.driver.runtime.stream_count()
    }
}

/// One HTTP stream through the plugin.
pub struct TestStream<'t, P: Plugin> {
    test: &'t PluginTest<P>,
    context_id: u32,
}

impl<P: Plugin> TestStream<'_, P> {
    /// The stream's context id.
    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    /// Delivers the request headers (names are lower-cased, as proxies do).
    pub fn send_request_headers(&self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        self.proxy()
            .send_headers(self.context_id, Side::Request, headers, end_of_stream)
            .into()
    }

    /// Delivers a chunk of the request body. Panics while the request headers are paused:
    /// the proxy holds the body until the plugin resumes.
    pub fn send_request_body(&self, chunk: impl AsRef<[u8]>, end_of_stream: bool) -> Action {
        self.proxy()
            .send_body(
                self.context_id,
                Side::Request,
                chunk.as_ref(),
                end_of_stream,
            )
            .into()
    }

    /// Delivers the response headers from upstream.
    pub fn send_response_headers(&self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        self.proxy()
            .send_headers(self.context_id, Side::Response, headers, end_of_stream)
            .into()
    }

    /// Delivers a chunk of the response body.
    pub fn send_response_body(&self, chunk: impl AsRef<[u8]>, end_of_stream: bool) -> Action {
        self.proxy()
            .send_body(
                self.context_id,
                Side::Response,
                chunk.as_ref(),
                end_of_stream,
            )
            .into()
    }

    /// Ends the stream as the proxy does (`on_log`, `on_done`, `on_delete`): after a complete
    /// exchange, or when the client goes away mid-way.
    pub fn end(&self) {
        self.proxy().end_stream(self.context_id);
    }

    /// The request headers as they are now (after the plugin's changes), lossy as text.
    pub fn request_headers(&self) -> Vec<(String, String)> {
        self.proxy().headers(self.context_id, Side::Request)
    }

    /// One request header as it is now.
    pub fn request_header(&self, name: &str) -> Option<String> {
        find(&self.request_headers(), name)
    }

    /// The response headers as they are now (for a local reply, the reply's).
    pub fn response_headers(&self) -> Vec<(String, String)> {
        self.proxy().headers(self.context_id, Side::Response)
    }

    /// One response header as it is now.
    pub fn response_header(&self, name: &str) -> Option<String> {
        find(&self.response_headers(), name)
    }

    /// The request body as the upstream gets it: what was forwarded plus what is buffered.
    pub fn request_body(&self) -> Vec<u8> {
        self.proxy().body(self.context_id, Side::Request)
    }

    /// The response body as the client gets it.
    pub fn response_body(&self) -> Vec<u8> {
        self.proxy().body(self.context_id, Side::Response)
    }

    /// The local reply the plugin sent, if any.
    pub fn local_reply(&self) -> Option<SentReply> {
        self.proxy().local_reply(self.context_id)
    }

    /// How many times the plugin resumed the request.
    pub fn resumed_requests(&self) -> u32 {
        self.proxy().resumes(self.context_id, Side::Request)
    }

    /// How many times the plugin resumed the response.
    pub fn resumed_responses(&self) -> u32 {
        self.proxy().resumes(self.context_id, Side::Response)
    }

    /// Whether the request is held by the plugin now.
    pub fn is_request_paused(&self) -> bool {
        self.proxy().is_paused(self.context_id, Side::Request)
    }

    /// Whether the response is held by the plugin now.
    pub fn is_response_paused(&self) -> bool {
        self.proxy().is_paused(self.context_id, Side::Response)
    }

    /// This stream's calls not answered yet.
    pub fn calls(&self) -> Vec<Call> {
        self.test
            .calls()
            .into_iter()
            .filter(|call| call.context_id() == self.context_id)
            .collect()
    }

    fn proxy(&self) -> &Proxy<NativePlugin<P>> {
        &self.test.proxy
    }
}

fn find(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
}

fn to_log_level(level: LogLevel) -> log::Level {
    match level {
        LogLevel::Trace => log::Level::Trace,
        LogLevel::Debug => log::Level::Debug,
        LogLevel::Info => log::Level::Info,
        LogLevel::Warn => log::Level::Warn,
        LogLevel::Error | LogLevel::Critical => log::Level::Error,
    }
}

impl From<proxy_emulator::Action> for Action {
    fn from(action: proxy_emulator::Action) -> Self {
        match action {
            proxy_emulator::Action::Continue => Action::Continue,
            proxy_emulator::Action::Pause => Action::Pause,
        }
    }
}

fn to_emulator(action: Action) -> proxy_emulator::Action {
    match action {
        Action::Continue => proxy_emulator::Action::Continue,
        Action::Pause => proxy_emulator::Action::Pause,
    }
}

/// The SDK's driver, run natively, as the emulated proxy's plugin.
struct NativePlugin<P: Plugin> {
    driver: Rc<Driver<P>>,
}

impl<P: Plugin> NativePlugin<P> {
    fn hook(
        &self,
        context_id: u32,
        phase: Phase,
        size: usize,
        end_of_stream: bool,
    ) -> Result<proxy_emulator::Action, PluginFailure> {
        Ok(to_emulator(self.driver.runtime.on_hook(
            context_id,
            phase,
            size,
            end_of_stream,
        )))
    }
}

impl<P: Plugin> Callbacks for NativePlugin<P> {
    fn on_context_create(&mut self, context_id: u32, parent_id: u32) -> Result<(), PluginFailure> {
        if parent_id != 0 {
            self.driver.create_stream(context_id);
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

    fn on_configure(&mut self, root_id: u32, config_size: usize) -> Result<bool, PluginFailure> {
        Ok(self.driver.configure(root_id, config_size))
    }

    fn on_request_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<proxy_emulator::Action, PluginFailure> {
        self.hook(context_id, Phase::RequestHeaders, headers, end_of_stream)
    }

    fn on_request_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<proxy_emulator::Action, PluginFailure> {
        self.hook(context_id, Phase::RequestBody, size, end_of_stream)
    }

    fn on_response_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<proxy_emulator::Action, PluginFailure> {
        self.hook(context_id, Phase::ResponseHeaders, headers, end_of_stream)
    }

    fn on_response_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<proxy_emulator::Action, PluginFailure> {
        self.hook(context_id, Phase::ResponseBody, size, end_of_stream)
    }

    fn on_http_call_response(
        &mut self,
        context_id: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) -> Result<(), PluginFailure> {
        self.driver
            .runtime
            .on_call_response(context_id, token, headers, body_size, trailers);
        Ok(())
    }

    fn on_log(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        self.driver.runtime.on_log(context_id);
        Ok(())
    }

    fn on_done(&mut self, context_id: u32) -> Result<bool, PluginFailure> {
        Ok(self.driver.runtime.on_done(context_id))
    }

    fn on_delete(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        self.driver.runtime.on_delete(context_id);
        Ok(())
    }
}

/// The SDK's hostcalls, answered by the emulated proxy's state.
struct TestHost {
    state: Rc<RefCell<ProxyState>>,
}

fn map_type(map: MapKind) -> MapType {
    match map {
        MapKind::RequestHeaders => MapType::RequestHeaders,
        MapKind::ResponseHeaders => MapType::ResponseHeaders,
        MapKind::CallResponseHeaders => MapType::CallResponseHeaders,
        MapKind::CallResponseTrailers => MapType::CallResponseTrailers,
    }
}

fn buffer_type(buffer: BufferKind) -> BufferType {
    match buffer {
        BufferKind::RequestBody => BufferType::RequestBody,
        BufferKind::ResponseBody => BufferType::ResponseBody,
        BufferKind::CallResponseBody => BufferType::CallResponseBody,
        BufferKind::PluginConfiguration => BufferType::PluginConfiguration,
    }
}

fn refused(call: &'static str) -> impl Fn(Status) -> HostError {
    move |status| HostError {
        call,
        status: HostStatus::from_code(status as u32).unwrap_or(HostStatus::InternalFailure),
    }
}

fn owned(pairs: &[(&str, &[u8])]) -> Pairs {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_vec()))
        .collect()
}

impl Host for TestHost {
    fn log(&self, level: log::Level, message: &str) {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.state.borrow_mut().log(level, message);
    }

    fn log_level(&self) -> log::LevelFilter {
        match self.state.borrow().log_level() {
            LogLevel::Trace => log::LevelFilter::Trace,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error | LogLevel::Critical => log::LevelFilter::Error,
        }
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .set_effective_context(context_id)
            .map_err(refused("proxy_set_effective_context"))
    }

    fn get_map(&self, map: MapKind) -> Result<Pairs, HostError> {
        self.state
            .borrow_mut()
            .get_map(map_type(map))
            .map_err(refused("proxy_get_header_map_pairs"))
    }

    fn get_map_value(&self, map: MapKind, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        match self.state.borrow_mut().get_map_value(map_type(map), name) {
            Ok(value) => Ok(Some(value)),
            Err(Status::NotFound) => Ok(None),
            Err(status) => Err(refused("proxy_get_header_map_value")(status)),
        }
    }

    fn set_map(&self, map: MapKind, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .set_map(map_type(map), owned(pairs))
            .map_err(refused("proxy_set_header_map_pairs"))
    }

    fn add_map_value(&self, map: MapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .add_map_value(map_type(map), name, value)
            .map_err(refused("proxy_add_header_map_value"))
    }

    fn replace_map_value(&self, map: MapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .replace_map_value(map_type(map), name, value)
            .map_err(refused("proxy_replace_header_map_value"))
    }

    fn remove_map_value(&self, map: MapKind, name: &str) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .remove_map_value(map_type(map), name)
            .map_err(refused("proxy_remove_header_map_value"))
    }

    fn get_buffer(
        &self,
        buffer: BufferKind,
        start: usize,
        max: usize,
    ) -> Result<Vec<u8>, HostError> {
        match self
            .state
            .borrow_mut()
            .get_buffer(buffer_type(buffer), start, max)
        {
            Ok(bytes) => Ok(bytes),
            Err(Status::NotFound) => Ok(Vec::new()),
            Err(status) => Err(refused("proxy_get_buffer_bytes")(status)),
        }
    }

    fn set_buffer(
        &self,
        buffer: BufferKind,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .set_buffer(buffer_type(buffer), start, size, data)
            .map_err(refused("proxy_set_buffer_bytes"))
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let headers: Pairs = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect();
        self.state
            .borrow_mut()
            .http_call(cluster, headers, body, timeout)
            .map_err(refused("proxy_http_call"))
    }

    fn continue_stream(&self, direction: Direction) -> Result<(), HostError> {
        let side = match direction {
            Direction::Request => Side::Request,
            Direction::Response => Side::Response,
        };
        self.state
            .borrow_mut()
            .continue_stream(side)
            .map_err(refused("proxy_continue_stream"))
    }

    fn send_local_response(
        &self,
        status: u16,
        details: &str,
        body: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .send_local_response(status, details, body, owned(headers))
            .map_err(refused("proxy_send_local_response"))
    }
}
