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
//!     type Root = NoConfig;
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

mod native;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;

pub use proxy_async_emulator::{
    Call, CallFailure, ConfigRejected, GrpcCall, NativeOnly, ProxyConfig, RedisCall, RedisInit,
    RedisServer, SentReply, Twin, TwinKind, Twins,
};
use proxy_async_emulator::{Callbacks, Direction, Hostcalls, LogLevel, Pairs, Proxy, ProxyState};

use self::native::{NativeHost, NativePlugin};
use crate::driver::Driver;
pub use crate::host::Action;
use crate::logging;
use crate::plugin::Plugin;

/// Runs `$op` on the native proxy and on every twin still compared, and fails the test if
/// they disagree; evaluates to the native result.
macro_rules! lockstep {
    ($test:expr, $what:expr, |$proxy:ident| $op:expr) => {{
        let native = {
            let $proxy = &$test.proxy;
            $op
        };
        for twin in &$test.twins {
            let $proxy = &twin.proxy;
            let compiled = $op;
            agree(twin.kind.name(), $what, &native, &compiled, &twin.proxy);
        }
        native
    }};
}

/// Where the test proxy's clock starts, after the Unix epoch: 2026-01-01T00:00:00Z.
const TEST_CLOCK_START: std::time::Duration = std::time::Duration::from_secs(1_767_225_600);

/// One log line of the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level (the proxy's critical level is reported as error).
    pub level: log::Level,
    /// Its text.
    pub message: String,
}

/// Configures a [`PluginTest`].
pub struct PluginTestBuilder<P: Plugin, T: Twins = NativeOnly> {
    config: ProxyConfig,
    redis_servers: Vec<(String, SocketAddr)>,
    _plugin: PhantomData<(P, T)>,
}

impl<P: Plugin, T: Twins> PluginTestBuilder<P, T> {
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
        self.config.log_level = Some(
            level
                .to_level()
                .map_or(LogLevel::Critical, logging::proxy_level),
        );
        self
    }

    /// Sends the Redis calls to `cluster` to a real `redis-server` at `server` (e.g. a
    /// [`RedisServer`] the test started) when the test runs [`PluginTest::run_redis`].
    pub fn redis_server(mut self, cluster: &str, server: SocketAddr) -> Self {
        self.redis_servers.push((cluster.to_string(), server));
        self
    }

    /// Starts the plugin: creates the root context and runs `on_configure`, natively and
    /// in each twin.
    pub fn build(self) -> Result<PluginTest<P, T>, ConfigRejected> {
        let state = Rc::new(RefCell::new(ProxyState::default()));
        // Only the native proxy talks to the servers; the compiled twins get its replies.
        for (cluster, server) in &self.redis_servers {
            state.borrow_mut().set_redis_server(cluster, *server);
        }
        let host = Rc::new(NativeHost {
            hostcalls: Rc::clone(&state),
        });
        let driver = Driver::<P>::new(host);
        let twins = T::start(plugin_crate::<P>(), &self.config);
        let native = Proxy::start(
            state,
            NativePlugin {
                driver: Rc::clone(&driver),
            },
            self.config,
        );
        let twins = twins
            .into_iter()
            .filter_map(|twin| {
                agree_on_start(
                    twin.kind.name(),
                    &native.as_ref().err(),
                    &twin.started.as_ref().err(),
                );
                let proxy = twin.started.ok()?;
                Some(RunningTwin {
                    kind: twin.kind,
                    proxy,
                })
            })
            .collect();
        Ok(PluginTest {
            proxy: native?,
            driver,
            twins,
            _twins: PhantomData,
        })
    }
}

/// The crate a plugin type is defined in, as Rust names it (`hello::Hello` is `hello`'s; a
/// wrapped plugin, `proxy_async::higress::Higress<key_auth::KeyAuth>`, is the wrapped one's):
/// the name its compiled twins are found by.
fn plugin_crate<P>() -> &'static str {
    let name = std::any::type_name::<P>();
    let innermost = name.rsplit('<').next().unwrap_or(name);
    innermost.split("::").next().unwrap_or(innermost)
}

/// A twin of the plugin under test, running beside it.
struct RunningTwin {
    kind: TwinKind,
    proxy: Proxy<Box<dyn Callbacks>>,
}

/// Fails the test when the native and a twin disagree, with what the twin logged and whether
/// it trapped.
#[allow(
    clippy::panic,
    reason = "the testing API reports test failures by panicking"
)]
fn agree<T: PartialEq + std::fmt::Debug>(
    twin: &str,
    what: &str,
    native: &T,
    compiled: &T,
    proxy: &Proxy<Box<dyn Callbacks>>,
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

/// Fails the test when only one of the native plugin and a twin accepted the configuration.
#[allow(
    clippy::panic,
    reason = "the testing API reports test failures by panicking"
)]
fn agree_on_start(
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

/// A plugin under test, with the proxy it runs in emulated.
///
/// `T` says which twins run beside the native plugin: other builds of the same crate (its
/// proxy-wasm module, its component) that get the same traffic step by step, each in its own
/// emulated proxy, so that the test fails on the first difference. By default there are none
/// and nothing but the plugin's own crate is built: an ordinary `cargo test` needs no wasm
/// build and no wasm runtime. `proxy-async-host`'s [`Guests`] provides the compiled twins (see
/// its `twins` module, and the repository's `tests/lockstep`, which runs every example's
/// scenarios on all three backends).
///
/// [`Guests`]: https://docs.rs/proxy-async-host/latest/proxy_async_host/twins/struct.Guests.html
pub struct PluginTest<P: Plugin, T: Twins = NativeOnly> {
    proxy: Proxy<NativePlugin<P>>,
    driver: Rc<Driver<P>>,
    twins: Vec<RunningTwin>,
    _twins: PhantomData<T>,
}

impl<P: Plugin, T: Twins> PluginTest<P, T> {
    /// Starts the plugin with this configuration (JSON; empty for none).
    pub fn new(config: &str) -> Result<Self, ConfigRejected> {
        Self::builder().config(config).build()
    }

    /// Starts building a test with more settings.
    pub fn builder() -> PluginTestBuilder<P, T> {
        PluginTestBuilder {
            config: ProxyConfig {
                // Time moves only when the test moves it (`advance_time`): timers are exact.
                clock: Some(std::time::UNIX_EPOCH + TEST_CLOCK_START),
                ..ProxyConfig::default()
            },
            redis_servers: Vec::new(),
            _plugin: PhantomData,
        }
    }

    /// Delivers a new configuration to the running plugin (`on_configure` again, as Envoy
    /// does on a configuration update that keeps the VM); returns whether the plugin accepted
    /// it. Background tasks of the old configuration are dropped, the new one's started.
    pub fn reconfigure(&self, json: &str) -> bool {
        lockstep!(self, "reconfiguring", |proxy| proxy
            .reconfigure(json.as_bytes()))
    }

    /// Stops the plugin, as Envoy does when its configuration is removed (`on_done` and
    /// `on_delete` on the root context): its background tasks end.
    pub fn stop(&self) {
        lockstep!(self, "stopping the plugin", |proxy| proxy.stop());
    }

    /// The root the plugin's configuration built (the global configuration's, or the first
    /// rule's without one), as its streams get it; `None` before a configuration was
    /// accepted. For asserting on per-configuration state (a cache, a counter), natively.
    pub fn root(&self) -> Option<Rc<P::Root>> {
        self.driver.root()
    }

    /// Opens a new HTTP stream.
    pub fn stream(&self) -> TestStream<'_, P, T> {
        TestStream {
            test: self,
            context_id: lockstep!(self, "opening a stream", |proxy| proxy.open_stream()),
        }
    }

    /// Calls not answered yet, in the order they were made.
    pub fn calls(&self) -> Vec<Call> {
        lockstep!(self, "the pending calls", |proxy| proxy.calls())
    }

    /// Every call made, answered or not.
    pub fn all_calls(&self) -> Vec<Call> {
        lockstep!(self, "the calls made", |proxy| proxy.all_calls())
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
        let response = Some((pairs, body.as_ref().to_vec()));
        lockstep!(self, "answering a call", |proxy| proxy
            .answer(call, response.clone()));
    }

    /// Answers a call with raw header bytes (to test what the plugin does with odd responses,
    /// e.g. no `:status`).
    pub fn respond_raw(&self, call: &Call, headers: &[(&str, &[u8])], body: impl AsRef<[u8]>) {
        let pairs: Pairs = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_vec()))
            .collect();
        let response = Some((pairs, body.as_ref().to_vec()));
        lockstep!(self, "answering a call", |proxy| proxy
            .answer(call, response.clone()));
    }

    /// Fails a call as Envoy does when its response breaks off (a reset mid-response, or the
    /// timeout after the headers): the response callback with no headers, which the plugin
    /// sees as [`CallError::NoResponse`](crate::CallError::NoResponse). For the other ways a
    /// call fails, see [`fail_call`](PluginTest::fail_call).
    pub fn fail(&self, call: &Call) {
        self.fail_call(call, &CallFailure::ResetMidResponse);
    }

    /// Fails a call as Envoy 1.40 does for `failure`: a timeout or an unreachable upstream is
    /// Envoy's own `504` or `503` answer, which the plugin sees as
    /// [`CallError::Timeout`](crate::CallError::Timeout) or
    /// [`CallError::Unreachable`](crate::CallError::Unreachable).
    pub fn fail_call(&self, call: &Call, failure: &CallFailure) {
        lockstep!(self, "failing a call", |proxy| proxy
            .fail_call(call, failure));
    }

    /// Delivers a response (`status`, empty body) for `token` whether or not the plugin made
    /// that call or already had its answer: what a confused host, or a reply racing the end of
    /// its stream, presents. A plugin must ignore a reply nobody waits for.
    pub fn respond_to_token(&self, token: u32, status: u16) {
        let pairs: Pairs = vec![(":status".to_string(), status.to_string().into_bytes())];
        let response = Some((pairs, Vec::new()));
        lockstep!(self, "answering a token", |proxy| proxy
            .deliver_call_response(token, response.clone()));
    }

    /// Moves the proxy's clock forward by `by`, sending what falls in that time, in order: the
    /// root context's ticks (see [`Settings::tick_period`](crate::Settings::tick_period)), so
    /// sleeps whose deadline passed end and due tick functions run; and, for every call still
    /// unanswered when its timeout expires, Envoy's own timeout answer, which the call's future
    /// returns as [`CallError::Timeout`](crate::CallError::Timeout). Returns how many ticks were
    /// sent. From the first call on, the test's clock moves only when the test moves it.
    pub fn advance_time(&self, by: std::time::Duration) -> u32 {
        lockstep!(self, "advancing the clock", |proxy| proxy.advance_time(by))
    }

    /// The value of the metric named `name` (as the proxy got it: with tags, the
    /// [`MetricName`](crate::MetricName)'s string), `None` if the plugin never defined it. A
    /// histogram reads as the last value recorded.
    pub fn metric(&self, name: &str) -> Option<i64> {
        lockstep!(self, "a metric", |proxy| proxy.state().metric(name))
    }

    /// The shared data under `key` (see [`SharedData`](crate::SharedData)), `None` if none.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        lockstep!(self, "shared data", |proxy| proxy
            .state()
            .get_shared_data(key.as_bytes())
            .ok()
            .map(|(value, _cas)| value))
    }

    /// Writes shared data as another worker of the proxy would: unconditionally, giving it a
    /// new version, so that a plugin's write with the version it read before fails.
    pub fn set_shared_data(&self, key: &str, value: impl AsRef<[u8]>) {
        let set = lockstep!(self, "writing shared data", |proxy| proxy
            .state()
            .set_shared_data(key.as_bytes(), value.as_ref(), 0)
            .is_ok());
        assert!(set, "the proxy refused to write shared data {key:?}");
    }

    /// Gives the proxy a property every stream and the plugin itself read, e.g.
    /// `&["plugin_name"]` or `&["node", "id"]` (a stream's own, set with
    /// [`TestStream::set_property`], comes first). Values are the bytes Envoy would hand the
    /// plugin: strings as they are, `int`s as 8 bytes little-endian (`7i64.to_le_bytes()`),
    /// `bool`s as one byte.
    pub fn set_property(&self, path: &[&str], value: impl AsRef<[u8]>) {
        let path = path.join("\0");
        let set = lockstep!(self, "setting a property", |proxy| proxy
            .state()
            .set_property(path.as_bytes(), value.as_ref())
            .is_ok());
        assert!(set, "the proxy refused to set the property {path:?}");
    }

    /// Sleeps (and timeouts) the plugin is waiting on.
    pub fn live_timers(&self) -> usize {
        self.driver.runtime.timers().pending()
    }

    /// gRPC calls and streams still open (not answered, finished, cancelled or closed), in
    /// the order they were made.
    pub fn grpc_calls(&self) -> Vec<GrpcCall> {
        lockstep!(self, "the open gRPC calls", |proxy| proxy.grpc_calls())
    }

    /// Delivers a message on a gRPC call (its reply: the call is then answered) or stream.
    pub fn grpc_message(&self, call: &GrpcCall, message: impl AsRef<[u8]>) {
        lockstep!(self, "a gRPC message", |proxy| proxy
            .grpc_message(call, message.as_ref()));
    }

    /// Ends a gRPC call or stream with status `code` (0 is OK) and `message`, as the service
    /// (or the proxy: 14 UNAVAILABLE for an unreachable cluster, 4 DEADLINE_EXCEEDED for a
    /// timeout) does.
    pub fn grpc_finish(&self, call: &GrpcCall, code: u32, message: &str) {
        lockstep!(self, "finishing a gRPC call", |proxy| proxy
            .grpc_finish(call, code, message));
    }

    /// Tells the plugin about the shared queues that received messages since the last time
    /// (`on_queue_ready`, as the proxy does after an enqueue); returns how many queues.
    pub fn deliver_ready_queues(&self) -> usize {
        lockstep!(self, "delivering ready queues", |proxy| proxy
            .deliver_ready_queues())
    }

    /// Adds a message to the shared queue `name` of this plugin's VM, as another plugin
    /// would; `false` when no one registered that queue. Deliver it with
    /// [`deliver_ready_queues`](PluginTest::deliver_ready_queues).
    pub fn enqueue(&self, name: &str, message: impl AsRef<[u8]>) -> bool {
        lockstep!(self, "enqueueing", |proxy| {
            let mut state = proxy.state();
            match state.resolve_shared_queue(b"", name.as_bytes()) {
                Ok(queue) => state.enqueue_shared_queue(queue, message.as_ref()).is_ok(),
                Err(_) => false,
            }
        })
    }

    /// Gives the proxy an extension function `name` (`proxy_call_foreign_function`), as
    /// Envoy and Higress register theirs; `function` maps the arguments to the result.
    pub fn register_foreign_function(
        &self,
        name: &str,
        function: impl Fn(&[u8]) -> Vec<u8> + Clone + 'static,
    ) {
        lockstep!(self, "registering a foreign function", |proxy| proxy
            .state()
            .register_foreign_function(name, Box::new(function.clone())));
    }

    /// Redis calls not answered yet, in the order they were made.
    pub fn redis_calls(&self) -> Vec<RedisCall> {
        lockstep!(self, "the pending Redis calls", |proxy| proxy.redis_calls())
    }

    /// Every `proxy_redis_init` the plugin made that the proxy accepted.
    pub fn redis_inits(&self) -> Vec<RedisInit> {
        lockstep!(self, "the Redis inits", |proxy| proxy.state().redis_inits())
    }

    /// Answers a Redis call with a reply in RESP (e.g. `b"+OK\r\n"`, or
    /// [`RedisValue::to_resp`](crate::redis::RedisValue::to_resp)).
    pub fn respond_redis(&self, call: &RedisCall, reply: impl AsRef<[u8]>) {
        let reply = Some(reply.as_ref().to_vec());
        lockstep!(self, "answering a Redis call", |proxy| proxy
            .answer_redis(call, reply.clone()));
    }

    /// Fails a Redis call as an unreachable Redis does: the callback's status is not 0.
    pub fn fail_redis(&self, call: &RedisCall) {
        lockstep!(self, "failing a Redis call", |proxy| proxy
            .answer_redis(call, None));
    }

    /// Delivers a Redis reply for `token` whether or not the plugin made that call or already
    /// had its answer: the plugin must ignore a reply nobody waits for.
    pub fn respond_redis_to_token(&self, token: u32, reply: impl AsRef<[u8]>) {
        let reply = Some(reply.as_ref().to_vec());
        lockstep!(self, "answering a Redis token", |proxy| proxy
            .deliver_redis_response(token, reply.clone()));
    }

    /// While `refuse` holds, the proxy refuses `proxy_redis_init` (BAD_ARGUMENT): a Redis it
    /// cannot set up a client for yet.
    pub fn refuse_redis_init(&self, refuse: bool) {
        lockstep!(self, "refusing Redis inits", |proxy| proxy
            .state()
            .refuse_redis_init(refuse));
    }

    /// Answers every pending Redis call from the real `redis-server` its cluster maps to
    /// ([`PluginTestBuilder::redis_server`]), one at a time in the order they were made,
    /// until none is pending: a hook that awaits several commands in turn runs to its end.
    /// A call to a cluster without a server, or whose server is down, gets no reply. The
    /// compiled twins get the native plugin's replies, so each command reaches Redis once.
    /// Returns how many calls were answered.
    pub fn run_redis(&self) -> usize {
        let mut answered = 0;
        loop {
            let pending = self.redis_calls();
            if pending.is_empty() {
                return answered;
            }
            for call in pending {
                assert!(
                    answered < MAX_REDIS_CALLS,
                    "the plugin sent more than {MAX_REDIS_CALLS} Redis calls in one run_redis: does it loop?"
                );
                let reply = self.proxy.state().exchange_redis(&call);
                lockstep!(self, "answering a Redis call", |proxy| proxy
                    .answer_redis(&call, reply.clone()));
                answered += 1;
            }
        }
    }

    /// Every log line, in order, of the native run. (The compiled twins' lines are shown when a
    /// twin disagrees, not compared: a component's host logs some events itself.)
    pub fn logs(&self) -> Vec<LogRecord> {
        self.proxy
            .logs()
            .into_iter()
            .map(|record| LogRecord {
                level: logging::log_level(record.level),
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

    /// The twins each step is compared with (see [`PluginTest`]).
    pub fn twins(&self) -> Vec<TwinKind> {
        self.twins.iter().map(|twin| twin.kind).collect()
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

/// The most Redis calls one [`PluginTest::run_redis`] answers.
const MAX_REDIS_CALLS: usize = 100_000;

/// One HTTP stream through the plugin.
pub struct TestStream<'t, P: Plugin, T: Twins = NativeOnly> {
    test: &'t PluginTest<P, T>,
    context_id: u32,
}

impl<P: Plugin, T: Twins> TestStream<'_, P, T> {
    /// The stream's context id.
    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    /// Gives this stream a property the proxy knows per request, e.g. `&["route_name"]` (the
    /// route the request took, `default/foo` in Higress) or `&["cluster_name"]` (its upstream,
    /// `outbound|8080||foo.default.svc.cluster.local`). Set it before the request headers:
    /// that is when the proxy knows it and Higress matches `_rules_` on it.
    pub fn set_property(&self, path: &[&str], value: impl AsRef<[u8]>) {
        let path = path.join("\0");
        let set = lockstep!(self.test, "setting a property", |proxy| proxy
            .state()
            .set_stream_property(self.context_id, path.as_bytes(), value.as_ref())
            .is_ok());
        assert!(set, "stream {} is unknown to the proxy", self.context_id);
    }

    /// Property `path` as this stream reads it: one the plugin set in this stream's hooks (a
    /// Higress span tag, `custom_log`), one the test gave it, else the proxy's; `None` if none.
    pub fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let path = path.join("\0");
        lockstep!(self.test, "a property", |proxy| proxy
            .state()
            .stream_property(self.context_id, path.as_bytes()))
    }

    /// Delivers the request headers (names are lower-cased, as proxies do).
    pub fn send_request_headers(&self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        lockstep!(self.test, "send_headers", |proxy| proxy.send_headers(
            self.context_id,
            Direction::Request,
            headers,
            end_of_stream
        ))
    }

    /// Delivers a chunk of the request body. Panics while the request headers are paused:
    /// the proxy holds the body until the plugin resumes.
    pub fn send_request_body(&self, chunk: impl AsRef<[u8]>, end_of_stream: bool) -> Action {
        lockstep!(self.test, "the action for a request body chunk", |proxy| {
            proxy.send_body(
                self.context_id,
                Direction::Request,
                chunk.as_ref(),
                end_of_stream,
            )
        })
    }

    /// Delivers the response headers from upstream.
    pub fn send_response_headers(&self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        lockstep!(self.test, "send_headers", |proxy| proxy.send_headers(
            self.context_id,
            Direction::Response,
            headers,
            end_of_stream
        ))
    }

    /// Delivers a chunk of the response body.
    pub fn send_response_body(&self, chunk: impl AsRef<[u8]>, end_of_stream: bool) -> Action {
        lockstep!(self.test, "the action for a response body chunk", |proxy| {
            proxy.send_body(
                self.context_id,
                Direction::Response,
                chunk.as_ref(),
                end_of_stream,
            )
        })
    }

    /// Delivers the request trailers (they end the request).
    pub fn send_request_trailers(&self, trailers: &[(&str, &str)]) -> Action {
        lockstep!(self.test, "the action for request trailers", |proxy| proxy
            .send_trailers(self.context_id, Direction::Request, trailers))
    }

    /// Delivers the response trailers (they end the response).
    pub fn send_response_trailers(&self, trailers: &[(&str, &str)]) -> Action {
        lockstep!(self.test, "the action for response trailers", |proxy| proxy
            .send_trailers(self.context_id, Direction::Response, trailers))
    }

    /// The request trailers as they are now (after the plugin's changes), lossy as text.
    pub fn request_trailers(&self) -> Vec<(String, String)> {
        lockstep!(self.test, "trailers", |proxy| proxy
            .trailers(self.context_id, Direction::Request))
    }

    /// The response trailers as they are now.
    pub fn response_trailers(&self) -> Vec<(String, String)> {
        lockstep!(self.test, "trailers", |proxy| proxy
            .trailers(self.context_id, Direction::Response))
    }

    /// Ends the stream as the proxy does (`on_log`, `on_done`, `on_delete`): after a complete
    /// exchange, or when the client goes away mid-way.
    pub fn end(&self) {
        lockstep!(self.test, "ending the stream", |proxy| proxy
            .end_stream(self.context_id));
    }

    /// The request headers as they are now (after the plugin's changes), lossy as text.
    pub fn request_headers(&self) -> Vec<(String, String)> {
        lockstep!(self.test, "headers", |proxy| proxy
            .headers(self.context_id, Direction::Request))
    }

    /// One request header as it is now.
    pub fn request_header(&self, name: &str) -> Option<String> {
        find(&self.request_headers(), name)
    }

    /// The response headers as they are now (for a local reply, the reply's).
    pub fn response_headers(&self) -> Vec<(String, String)> {
        lockstep!(self.test, "headers", |proxy| proxy
            .headers(self.context_id, Direction::Response))
    }

    /// One response header as it is now.
    pub fn response_header(&self, name: &str) -> Option<String> {
        find(&self.response_headers(), name)
    }

    /// The request body as the upstream gets it: what was forwarded plus what is buffered.
    pub fn request_body(&self) -> Vec<u8> {
        lockstep!(self.test, "body", |proxy| proxy
            .body(self.context_id, Direction::Request))
    }

    /// The response body as the client gets it.
    pub fn response_body(&self) -> Vec<u8> {
        lockstep!(self.test, "body", |proxy| proxy
            .body(self.context_id, Direction::Response))
    }

    /// The local reply the plugin sent, if any.
    pub fn local_reply(&self) -> Option<SentReply> {
        lockstep!(self.test, "the local reply", |proxy| proxy
            .local_reply(self.context_id))
    }

    /// How many times the plugin resumed the request.
    pub fn resumed_requests(&self) -> u32 {
        lockstep!(self.test, "resumes", |proxy| proxy
            .resumes(self.context_id, Direction::Request))
    }

    /// How many times the plugin resumed the response.
    pub fn resumed_responses(&self) -> u32 {
        lockstep!(self.test, "resumes", |proxy| proxy
            .resumes(self.context_id, Direction::Response))
    }

    /// Whether the request is held by the plugin now.
    pub fn is_request_paused(&self) -> bool {
        lockstep!(self.test, "is_paused", |proxy| proxy
            .is_paused(self.context_id, Direction::Request))
    }

    /// Whether the plugin holds the request headers now: until it resumes, the proxy sends
    /// no request body (a paused body chunk, by contrast, does not stop later chunks).
    pub fn are_request_headers_held(&self) -> bool {
        lockstep!(self.test, "are_headers_held", |proxy| proxy
            .are_headers_held(self.context_id, Direction::Request))
    }

    /// Whether the response is held by the plugin now.
    pub fn is_response_paused(&self) -> bool {
        lockstep!(self.test, "is_paused", |proxy| proxy
            .is_paused(self.context_id, Direction::Response))
    }

    /// This stream's calls not answered yet.
    pub fn calls(&self) -> Vec<Call> {
        self.test
            .calls()
            .into_iter()
            .filter(|call| call.context_id() == self.context_id)
            .collect()
    }
}

fn find(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
}
