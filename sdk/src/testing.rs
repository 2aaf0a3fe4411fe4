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

// This module is test support: a test that drives it wrongly, or a plugin that breaks the
// proxy protocol, must fail loudly, so it panics on purpose.
#![allow(
    clippy::panic,
    reason = "the testing API reports test failures by panicking"
)]

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use crate::driver::Driver;
pub use crate::host::Action;
use crate::host::{BufferKind, Direction, Host, HostError, HostStatus, MapKind, Pairs};
use crate::plugin::Plugin;
use crate::runtime::Phase;

const ROOT_CONTEXT: u32 = 1;

/// The plugin's configuration was rejected; holds the error lines it logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRejected {
    /// The error log lines, one per line.
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration rejected: {}", self.errors.join("; "))
    }
}

impl std::error::Error for ConfigRejected {}

/// One log line of the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: log::Level,
    /// Its text.
    pub message: String,
}

/// An HTTP call the plugin made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    token: u32,
    context_id: u32,
    cluster: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

impl Call {
    /// The token the proxy returned for it.
    pub fn token(&self) -> u32 {
        self.token
    }

    /// The cluster it went to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// A header (pseudo-headers included), case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// `:method`.
    pub fn method(&self) -> &str {
        self.header(":method").unwrap_or_default()
    }

    /// `:path`, with the query string.
    pub fn path(&self) -> &str {
        self.header(":path").unwrap_or_default()
    }

    /// `:authority`.
    pub fn authority(&self) -> &str {
        self.header(":authority").unwrap_or_default()
    }

    /// Every header, in the order sent.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The timeout it was sent with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A local reply the plugin sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentReply {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The response code details.
    pub details: String,
}

impl SentReply {
    /// A header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Configures a [`PluginTest`].
pub struct PluginTestBuilder<P: Plugin> {
    config: String,
    clusters: Option<BTreeSet<String>>,
    log_level: log::LevelFilter,
    _plugin: std::marker::PhantomData<P>,
}

impl<P: Plugin> PluginTestBuilder<P> {
    /// The plugin configuration (JSON; empty for none).
    pub fn config(mut self, json: &str) -> Self {
        self.config = json.to_string();
        self
    }

    /// The clusters the proxy knows; calls to others are refused with `BAD_ARGUMENT`, as Envoy
    /// does. Without this, every cluster is known.
    pub fn clusters(mut self, clusters: &[&str]) -> Self {
        self.clusters = Some(clusters.iter().map(|name| name.to_string()).collect());
        self
    }

    /// The proxy's log level (default: trace, so tests see every line).
    pub fn log_level(mut self, level: log::LevelFilter) -> Self {
        self.log_level = level;
        self
    }

    /// Starts the plugin: creates the root context and runs `on_configure`.
    pub fn build(self) -> Result<PluginTest<P>, ConfigRejected> {
        let host = Rc::new(TestHost::new(
            self.config.into_bytes(),
            self.clusters,
            self.log_level,
        ));
        let test = PluginTest {
            driver: Driver::new(Rc::clone(&host) as Rc<dyn Host>),
            host,
            next_context: Cell::new(ROOT_CONTEXT + 1),
        };
        let size = test.host.state.borrow().config.len();
        let accepted = test.callback(ROOT_CONTEXT, |driver| driver.configure(ROOT_CONTEXT, size));
        if accepted {
            Ok(test)
        } else {
            Err(ConfigRejected {
                errors: test.logs_at(log::Level::Error),
            })
        }
    }
}

/// A plugin under test, with the proxy it runs in emulated.
pub struct PluginTest<P: Plugin> {
    driver: Rc<Driver<P>>,
    host: Rc<TestHost>,
    next_context: Cell<u32>,
}

impl<P: Plugin> PluginTest<P> {
    /// Starts the plugin with this configuration (JSON; empty for none).
    pub fn new(config: &str) -> Result<Self, ConfigRejected> {
        Self::builder().config(config).build()
    }

    /// Starts building a test with more settings.
    pub fn builder() -> PluginTestBuilder<P> {
        PluginTestBuilder {
            config: String::new(),
            clusters: None,
            log_level: log::LevelFilter::Trace,
            _plugin: std::marker::PhantomData,
        }
    }

    /// Opens a new HTTP stream.
    pub fn stream(&self) -> TestStream<'_, P> {
        let context_id = self.next_context.get();
        self.next_context.set(context_id + 1);
        self.host
            .state
            .borrow_mut()
            .streams
            .insert(context_id, StreamState::default());
        self.callback(context_id, |driver| driver.create_stream(context_id));
        TestStream {
            test: self,
            context_id,
        }
    }

    /// Calls not answered yet, in the order they were made.
    pub fn calls(&self) -> Vec<Call> {
        let state = self.host.state.borrow();
        state
            .calls
            .iter()
            .filter(|record| !record.answered)
            .map(|record| record.call.clone())
            .collect()
    }

    /// Every call made, answered or not.
    pub fn all_calls(&self) -> Vec<Call> {
        let state = self.host.state.borrow();
        state
            .calls
            .iter()
            .map(|record| record.call.clone())
            .collect()
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
        self.deliver(call, Some((pairs, body.as_ref().to_vec())));
    }

    /// Answers a call with raw header bytes (to test what the plugin does with odd responses,
    /// e.g. no `:status`).
    pub fn respond_raw(&self, call: &Call, headers: &[(&str, &[u8])], body: impl AsRef<[u8]>) {
        let pairs: Pairs = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_vec()))
            .collect();
        self.deliver(call, Some((pairs, body.as_ref().to_vec())));
    }

    /// Fails a call as a timeout or reset does: the response callback with no headers.
    pub fn fail(&self, call: &Call) {
        self.deliver(call, None);
    }

    fn deliver(&self, call: &Call, response: Option<(Pairs, Vec<u8>)>) {
        let context_id = {
            let mut state = self.host.state.borrow_mut();
            let Some(record) = state
                .calls
                .iter_mut()
                .find(|record| record.call.token == call.token)
            else {
                panic!("call {} was never made", call.token);
            };
            if record.answered {
                panic!("call {} was already answered", call.token);
            }
            record.answered = true;
            // The proxy answers on the context that made the call; once that stream is gone,
            // the answer still comes (calls belong to the plugin), on the root context.
            let alive = state
                .streams
                .get(&call.context_id)
                .is_some_and(|stream| !stream.deleted);
            let (num_headers, body_size) = response
                .as_ref()
                .map_or((0, 0), |(headers, body)| (headers.len(), body.len()));
            state.call_response = response;
            (
                if alive { call.context_id } else { ROOT_CONTEXT },
                num_headers,
                body_size,
            )
        };
        let (context_id, num_headers, body_size) = context_id;
        self.callback(context_id, |driver| {
            driver
                .runtime
                .on_call_response(context_id, call.token, num_headers, body_size, 0)
        });
        self.host.state.borrow_mut().call_response = None;
    }

    /// Every log line, in order.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.host.state.borrow().logs.clone()
    }

    /// The log lines at `level`.
    pub fn logs_at(&self, level: log::Level) -> Vec<String> {
        self.host
            .state
            .borrow()
            .logs
            .iter()
            .filter(|record| record.level == level)
            .map(|record| record.message.clone())
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

    /// Runs one host callback on `context_id` and then applies what the plugin asked the
    /// proxy to do during it, as Envoy does after the VM call returns.
    fn callback<R>(&self, context_id: u32, run: impl FnOnce(&Rc<Driver<P>>) -> R) -> R {
        self.host.state.borrow_mut().current = context_id;
        let result = run(&self.driver);
        let deferred = std::mem::take(&mut self.host.state.borrow_mut().deferred);
        for effect in deferred {
            self.apply(effect);
        }
        result
    }

    fn stream_callback(
        &self,
        context_id: u32,
        phase: Phase,
        size: usize,
        end_of_stream: bool,
    ) -> Action {
        self.host.state.borrow_mut().current = context_id;
        let action = self
            .driver
            .runtime
            .on_hook(context_id, phase, size, end_of_stream);
        let deferred = std::mem::take(&mut self.host.state.borrow_mut().deferred);
        let direction = match phase {
            Phase::RequestHeaders | Phase::RequestBody => Direction::Request,
            _ => Direction::Response,
        };
        {
            let mut state = self.host.state.borrow_mut();
            let stream = state.stream_mut(context_id);
            let (paused, body, forwarded) = stream.side(direction);
            *paused = action == Action::Pause;
            let body_phase = matches!(phase, Phase::RequestBody | Phase::ResponseBody);
            if action == Action::Continue && body_phase {
                forwarded.append(body);
            }
            if !body_phase {
                stream.set_headers_held(direction, action == Action::Pause);
            }
        }
        for effect in deferred {
            if let Effect::Continue(target, resumed) = &effect
                && *target == context_id
                && *resumed == direction
                && action == Action::Pause
            {
                panic!(
                    "the plugin resumed the stream inside the callback that paused it (Envoy asserts on this)"
                );
            }
            self.apply(effect);
        }
        action
    }

    fn apply(&self, effect: Effect) {
        match effect {
            Effect::Continue(context_id, direction) => {
                let mut state = self.host.state.borrow_mut();
                let stream = state.stream_mut(context_id);
                if stream.local_reply.is_some() {
                    panic!("the plugin resumed a stream after sending a local reply");
                }
                let (paused, body, forwarded) = stream.side(direction);
                if !*paused {
                    panic!("the plugin resumed the {direction:?} of a stream that is not paused");
                }
                *paused = false;
                forwarded.append(body);
                stream.set_headers_held(direction, false);
                match direction {
                    Direction::Request => stream.request_resumes += 1,
                    Direction::Response => stream.response_resumes += 1,
                }
            }
            Effect::Reply(context_id, reply) => {
                {
                    let mut state = self.host.state.borrow_mut();
                    let stream = state.stream_mut(context_id);
                    if stream.local_reply.is_some() {
                        panic!("the plugin sent a second local reply on one stream");
                    }
                    stream.local_reply = Some(reply.clone());
                    stream.request_paused = false;
                    let mut headers: Pairs =
                        vec![(":status".to_string(), reply.status.to_string().into_bytes())];
                    headers.extend(
                        reply
                            .headers
                            .iter()
                            .map(|(name, value)| (name.clone(), value.clone().into_bytes())),
                    );
                    stream.response_headers = headers;
                    stream.response_body.clear();
                    stream.response_forwarded.clear();
                }
                // Envoy sends the reply through the response path, so the plugin's response
                // callbacks run for it; the plugin must let it through.
                let end_of_stream = reply.body.is_empty();
                let action =
                    self.stream_callback(context_id, Phase::ResponseHeaders, 0, end_of_stream);
                if action == Action::Pause {
                    panic!("the plugin paused the response of its own local reply");
                }
                if !end_of_stream {
                    self.host
                        .state
                        .borrow_mut()
                        .stream_mut(context_id)
                        .response_body = reply.body.clone();
                    let action = self.stream_callback(
                        context_id,
                        Phase::ResponseBody,
                        reply.body.len(),
                        true,
                    );
                    if action == Action::Pause {
                        panic!("the plugin paused the response body of its own local reply");
                    }
                }
            }
        }
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
        self.send_headers(Direction::Request, headers, end_of_stream)
    }

    /// Delivers a chunk of the request body. Panics while the request headers are paused:
    /// the proxy holds the body until the plugin resumes.
    pub fn send_request_body(&self, chunk: impl AsRef<[u8]>, end_of_stream: bool) -> Action {
        self.send_body(Direction::Request, chunk.as_ref(), end_of_stream)
    }

    /// Delivers the response headers from upstream.
    pub fn send_response_headers(&self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        self.send_headers(Direction::Response, headers, end_of_stream)
    }

    /// Delivers a chunk of the response body.
    pub fn send_response_body(&self, chunk: impl AsRef<[u8]>, end_of_stream: bool) -> Action {
        self.send_body(Direction::Response, chunk.as_ref(), end_of_stream)
    }

    fn send_headers(
        &self,
        direction: Direction,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Action {
        {
            let mut state = self.test.host.state.borrow_mut();
            let stream = state.stream_mut(self.context_id);
            stream.assert_open(direction);
            let pairs: Pairs = headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
                .collect();
            match direction {
                Direction::Request => stream.request_headers = pairs,
                Direction::Response => stream.response_headers = pairs,
            }
        }
        let phase = match direction {
            Direction::Request => Phase::RequestHeaders,
            Direction::Response => Phase::ResponseHeaders,
        };
        self.test
            .stream_callback(self.context_id, phase, headers.len(), end_of_stream)
    }

    fn send_body(&self, direction: Direction, chunk: &[u8], end_of_stream: bool) -> Action {
        let size = {
            let mut state = self.test.host.state.borrow_mut();
            let stream = state.stream_mut(self.context_id);
            stream.assert_open(direction);
            if stream.headers_held(direction) {
                panic!(
                    "the {direction:?} headers are paused: the proxy holds body callbacks until the plugin resumes (answer its calls first)"
                );
            }
            let (_, body, _) = stream.side(direction);
            body.extend_from_slice(chunk);
            body.len()
        };
        let phase = match direction {
            Direction::Request => Phase::RequestBody,
            Direction::Response => Phase::ResponseBody,
        };
        self.test
            .stream_callback(self.context_id, phase, size, end_of_stream)
    }

    /// Ends the stream as the proxy does (`on_log`, `on_done`, `on_delete`): after a complete
    /// exchange, or when the client goes away mid-way.
    pub fn end(&self) {
        let context_id = self.context_id;
        if self.test.host.state.borrow().stream(context_id).deleted {
            return;
        }
        self.test
            .callback(context_id, |driver| driver.runtime.on_log(context_id));
        self.test
            .callback(context_id, |driver| driver.runtime.on_done(context_id));
        self.test
            .host
            .state
            .borrow_mut()
            .stream_mut(context_id)
            .deleted = true;
        self.test
            .callback(context_id, |driver| driver.runtime.on_delete(context_id));
    }

    /// The request headers as they are now (after the plugin's changes), lossy as text.
    pub fn request_headers(&self) -> Vec<(String, String)> {
        lossy(
            &self
                .test
                .host
                .state
                .borrow()
                .stream(self.context_id)
                .request_headers,
        )
    }

    /// One request header as it is now.
    pub fn request_header(&self, name: &str) -> Option<String> {
        find(&self.request_headers(), name)
    }

    /// The response headers as they are now (for a local reply, the reply's).
    pub fn response_headers(&self) -> Vec<(String, String)> {
        lossy(
            &self
                .test
                .host
                .state
                .borrow()
                .stream(self.context_id)
                .response_headers,
        )
    }

    /// One response header as it is now.
    pub fn response_header(&self, name: &str) -> Option<String> {
        find(&self.response_headers(), name)
    }

    /// The request body as the upstream gets it: what was forwarded plus what is buffered.
    pub fn request_body(&self) -> Vec<u8> {
        let state = self.test.host.state.borrow();
        let stream = state.stream(self.context_id);
        [
            stream.request_forwarded.as_slice(),
            stream.request_body.as_slice(),
        ]
        .concat()
    }

    /// The response body as the client gets it.
    pub fn response_body(&self) -> Vec<u8> {
        let state = self.test.host.state.borrow();
        let stream = state.stream(self.context_id);
        [
            stream.response_forwarded.as_slice(),
            stream.response_body.as_slice(),
        ]
        .concat()
    }

    /// The local reply the plugin sent, if any.
    pub fn local_reply(&self) -> Option<SentReply> {
        self.test
            .host
            .state
            .borrow()
            .stream(self.context_id)
            .local_reply
            .clone()
    }

    /// How many times the plugin resumed the request.
    pub fn resumed_requests(&self) -> u32 {
        self.test
            .host
            .state
            .borrow()
            .stream(self.context_id)
            .request_resumes
    }

    /// How many times the plugin resumed the response.
    pub fn resumed_responses(&self) -> u32 {
        self.test
            .host
            .state
            .borrow()
            .stream(self.context_id)
            .response_resumes
    }

    /// Whether the request is held by the plugin now.
    pub fn is_request_paused(&self) -> bool {
        self.test
            .host
            .state
            .borrow()
            .stream(self.context_id)
            .request_paused
    }

    /// Whether the response is held by the plugin now.
    pub fn is_response_paused(&self) -> bool {
        self.test
            .host
            .state
            .borrow()
            .stream(self.context_id)
            .response_paused
    }

    /// This stream's calls not answered yet.
    pub fn calls(&self) -> Vec<Call> {
        self.test
            .calls()
            .into_iter()
            .filter(|call| call.context_id == self.context_id)
            .collect()
    }
}

fn lossy(pairs: &Pairs) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
        .collect()
}

fn find(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
}

// ---------------------------------------------------------------------------------------------
// The emulated proxy.

enum Effect {
    Continue(u32, Direction),
    Reply(u32, SentReply),
}

struct CallRecord {
    call: Call,
    answered: bool,
}

#[derive(Default)]
struct StreamState {
    request_headers: Pairs,
    // Body data the proxy holds (not yet passed upstream), and what it passed on.
    request_body: Vec<u8>,
    request_forwarded: Vec<u8>,
    // The headers callback returned Pause and no resume came yet: body callbacks are held.
    request_headers_held: bool,
    response_headers: Pairs,
    response_body: Vec<u8>,
    response_forwarded: Vec<u8>,
    response_headers_held: bool,
    request_paused: bool,
    response_paused: bool,
    request_resumes: u32,
    response_resumes: u32,
    local_reply: Option<SentReply>,
    deleted: bool,
}

impl StreamState {
    fn side(&mut self, direction: Direction) -> (&mut bool, &mut Vec<u8>, &mut Vec<u8>) {
        match direction {
            Direction::Request => (
                &mut self.request_paused,
                &mut self.request_body,
                &mut self.request_forwarded,
            ),
            Direction::Response => (
                &mut self.response_paused,
                &mut self.response_body,
                &mut self.response_forwarded,
            ),
        }
    }

    fn headers_held(&self, direction: Direction) -> bool {
        match direction {
            Direction::Request => self.request_headers_held,
            Direction::Response => self.response_headers_held,
        }
    }

    fn set_headers_held(&mut self, direction: Direction, held: bool) {
        match direction {
            Direction::Request => self.request_headers_held = held,
            Direction::Response => self.response_headers_held = held,
        }
    }

    fn assert_open(&self, direction: Direction) {
        if self.deleted {
            panic!("the stream has ended");
        }
        if self.local_reply.is_some() {
            panic!(
                "the plugin already replied locally on this stream; the proxy delivers no more {direction:?} data"
            );
        }
    }
}

struct HostState {
    current: u32,
    config: Vec<u8>,
    clusters: Option<BTreeSet<String>>,
    log_level: log::LevelFilter,
    streams: BTreeMap<u32, StreamState>,
    calls: Vec<CallRecord>,
    next_token: u32,
    call_response: Option<(Pairs, Vec<u8>)>,
    logs: Vec<LogRecord>,
    deferred: Vec<Effect>,
}

impl HostState {
    fn stream(&self, context_id: u32) -> &StreamState {
        match self.streams.get(&context_id) {
            Some(stream) => stream,
            None => panic!("no stream {context_id}"),
        }
    }

    fn stream_mut(&mut self, context_id: u32) -> &mut StreamState {
        match self.streams.get_mut(&context_id) {
            Some(stream) => stream,
            None => panic!("no stream {context_id}"),
        }
    }

    // The stream the current hostcall acts on; the stream must be alive.
    fn current_stream(&mut self, call: &'static str) -> Result<&mut StreamState, HostError> {
        match self.streams.get_mut(&self.current) {
            Some(stream) if !stream.deleted => Ok(stream),
            _ => Err(HostError {
                call,
                status: HostStatus::BadArgument,
            }),
        }
    }

    fn map_mut(&mut self, map: MapKind, call: &'static str) -> Result<&mut Pairs, HostError> {
        match map {
            MapKind::RequestHeaders => Ok(&mut self.current_stream(call)?.request_headers),
            MapKind::ResponseHeaders => Ok(&mut self.current_stream(call)?.response_headers),
            MapKind::CallResponseHeaders | MapKind::CallResponseTrailers => Err(HostError {
                call,
                status: HostStatus::BadArgument,
            }),
        }
    }

    fn map(&mut self, map: MapKind, call: &'static str) -> Result<Pairs, HostError> {
        match map {
            MapKind::CallResponseHeaders => match &self.call_response {
                Some((headers, _)) => Ok(headers.clone()),
                None => Err(HostError {
                    call,
                    status: HostStatus::NotFound,
                }),
            },
            MapKind::CallResponseTrailers => Ok(Vec::new()),
            _ => self.map_mut(map, call).map(|pairs| pairs.clone()),
        }
    }
}

struct TestHost {
    state: RefCell<HostState>,
}

impl TestHost {
    fn new(
        config: Vec<u8>,
        clusters: Option<BTreeSet<String>>,
        log_level: log::LevelFilter,
    ) -> Self {
        TestHost {
            state: RefCell::new(HostState {
                current: ROOT_CONTEXT,
                config,
                clusters,
                log_level,
                streams: BTreeMap::new(),
                calls: Vec::new(),
                next_token: 1,
                call_response: None,
                logs: Vec::new(),
                deferred: Vec::new(),
            }),
        }
    }
}

impl Host for TestHost {
    fn log(&self, level: log::Level, message: &str) {
        self.state.borrow_mut().logs.push(LogRecord {
            level,
            message: message.to_string(),
        });
    }

    fn log_level(&self) -> log::LevelFilter {
        self.state.borrow().log_level
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        let mut state = self.state.borrow_mut();
        let known = context_id == ROOT_CONTEXT
            || state
                .streams
                .get(&context_id)
                .is_some_and(|stream| !stream.deleted);
        if !known {
            return Err(HostError {
                call: "proxy_set_effective_context",
                status: HostStatus::BadArgument,
            });
        }
        state.current = context_id;
        Ok(())
    }

    fn get_map(&self, map: MapKind) -> Result<Pairs, HostError> {
        self.state
            .borrow_mut()
            .map(map, "proxy_get_header_map_pairs")
    }

    fn get_map_value(&self, map: MapKind, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        let pairs = self
            .state
            .borrow_mut()
            .map(map, "proxy_get_header_map_value")?;
        Ok(pairs
            .into_iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value))
    }

    fn set_map(&self, map: MapKind, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        let mut state = self.state.borrow_mut();
        let target = state.map_mut(map, "proxy_set_header_map_pairs")?;
        *target = pairs
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_vec()))
            .collect();
        Ok(())
    }

    fn add_map_value(&self, map: MapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        let mut state = self.state.borrow_mut();
        let target = state.map_mut(map, "proxy_add_header_map_value")?;
        target.push((name.to_ascii_lowercase(), value.to_vec()));
        Ok(())
    }

    fn replace_map_value(&self, map: MapKind, name: &str, value: &[u8]) -> Result<(), HostError> {
        let mut state = self.state.borrow_mut();
        let target = state.map_mut(map, "proxy_replace_header_map_value")?;
        match target
            .iter()
            .position(|(key, _)| key.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                target[first].1 = value.to_vec();
                let mut index = 0;
                target.retain(|(key, _)| {
                    let keep = index <= first || !key.eq_ignore_ascii_case(name);
                    index += 1;
                    keep
                });
            }
            None => target.push((name.to_ascii_lowercase(), value.to_vec())),
        }
        Ok(())
    }

    fn remove_map_value(&self, map: MapKind, name: &str) -> Result<(), HostError> {
        let mut state = self.state.borrow_mut();
        let target = state.map_mut(map, "proxy_remove_header_map_value")?;
        target.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        Ok(())
    }

    fn get_buffer(
        &self,
        buffer: BufferKind,
        start: usize,
        max: usize,
    ) -> Result<Vec<u8>, HostError> {
        let mut state = self.state.borrow_mut();
        let call = "proxy_get_buffer_bytes";
        let bytes: &[u8] = match buffer {
            BufferKind::PluginConfiguration => &state.config,
            BufferKind::CallResponseBody => match &state.call_response {
                Some((_, body)) => body,
                None => return Ok(Vec::new()),
            },
            BufferKind::RequestBody => &state.current_stream(call)?.request_body,
            BufferKind::ResponseBody => &state.current_stream(call)?.response_body,
        };
        let start = start.min(bytes.len());
        let end = start.saturating_add(max).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }

    fn set_buffer(
        &self,
        buffer: BufferKind,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError> {
        let mut state = self.state.borrow_mut();
        let call = "proxy_set_buffer_bytes";
        let stream = state.current_stream(call)?;
        let body = match buffer {
            BufferKind::RequestBody => &mut stream.request_body,
            BufferKind::ResponseBody => &mut stream.response_body,
            _ => {
                return Err(HostError {
                    call,
                    status: HostStatus::BadArgument,
                });
            }
        };
        if start == 0 && size == 0 {
            body.splice(0..0, data.iter().copied());
        } else if start >= body.len() {
            body.extend_from_slice(data);
        } else {
            let end = start.saturating_add(size).min(body.len());
            body.splice(start..end, data.iter().copied());
        }
        Ok(())
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let mut state = self.state.borrow_mut();
        let refused = HostError {
            call: "proxy_http_call",
            status: HostStatus::BadArgument,
        };
        let has = |name: &str| headers.iter().any(|(key, _)| *key == name);
        if !(has(":method") && has(":path") && has(":authority")) {
            return Err(refused);
        }
        if let Some(known) = &state.clusters
            && !known.contains(cluster)
        {
            return Err(refused);
        }
        let token = state.next_token;
        state.next_token += 1;
        let context_id = state.current;
        state.calls.push(CallRecord {
            call: Call {
                token,
                context_id,
                cluster: cluster.to_string(),
                headers: headers
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.to_string()))
                    .collect(),
                body: body.to_vec(),
                timeout,
            },
            answered: false,
        });
        Ok(token)
    }

    fn continue_stream(&self, direction: Direction) -> Result<(), HostError> {
        let mut state = self.state.borrow_mut();
        let context_id = state.current;
        state.current_stream("proxy_continue_stream")?;
        state.deferred.push(Effect::Continue(context_id, direction));
        Ok(())
    }

    fn send_local_response(
        &self,
        status: u16,
        details: &str,
        body: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), HostError> {
        let mut state = self.state.borrow_mut();
        let context_id = state.current;
        state.current_stream("proxy_send_local_response")?;
        state.deferred.push(Effect::Reply(
            context_id,
            SentReply {
                status,
                headers: headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.to_string(),
                            String::from_utf8_lossy(value).into_owned(),
                        )
                    })
                    .collect(),
                body: body.to_vec(),
                details: details.to_string(),
            },
        ));
        Ok(())
    }
}
