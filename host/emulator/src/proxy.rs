//! The proxy's side of the conversation: it sends traffic to the plugin, one callback at a
//! time, and applies what the plugin asked for after each callback returns, as Envoy does.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::BTreeSet;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use proxy_async_abi::envoy_replies::{RESET_BEFORE_HEADERS, TIMEOUT_BODY, router_reply};
use proxy_async_abi::{Action, Callbacks, Direction, LogLevel, Phase, PluginFailure};

use crate::redis::RedisCall;
use crate::state::{
    Call, Effect, GrpcCall, LogRecord, Pairs, ProxyState, ROOT_CONTEXT, SentReply, StreamState,
};

/// The most Redis calls one [`Proxy::run_redis`] answers.
const MAX_REDIS_ROUNDS: usize = 100_000;

/// The plugin's configuration was rejected; holds the error lines it logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRejected {
    /// The error log lines (or the failure), one per entry.
    pub errors: Vec<String>,
}

impl fmt::Display for ConfigRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration rejected: {}", self.errors.join("; "))
    }
}

impl std::error::Error for ConfigRejected {}

/// How the emulated proxy is set up.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// The plugin configuration (`proxy_on_configure`'s buffer).
    pub plugin_config: Vec<u8>,
    /// The clusters the proxy knows; `None`: every cluster is known.
    pub clusters: Option<BTreeSet<String>>,
    /// The proxy's log level.
    pub log_level: Option<LogLevel>,
    /// Stops the proxy's clock at this time: it then moves only with
    /// [`Proxy::advance_time`], so timers are deterministic. `None`: the real clock.
    pub clock: Option<std::time::SystemTime>,
}

/// An emulated proxy with one plugin in it.
///
/// Protocol mistakes that break a real proxy (resuming a stream that is not paused, resuming
/// inside the callback that paused it, resuming after a local reply, two local replies,
/// pausing the response of the plugin's own local reply) panic: this is test support.
pub struct Proxy<B: Callbacks> {
    state: Rc<RefCell<ProxyState>>,
    plugin: RefCell<B>,
    next_context: Cell<u32>,
    failure: RefCell<Option<PluginFailure>>,
}

#[allow(
    clippy::panic,
    reason = "the emulated proxy reports protocol violations by panicking"
)]
impl<B: Callbacks> Proxy<B> {
    /// Starts the plugin as Envoy does: root context, `on_vm_start`, `on_configure`. `state` is
    /// the state the plugin's hostcalls act on (the plugin's host holds the same `Rc`).
    pub fn start(
        state: Rc<RefCell<ProxyState>>,
        plugin: B,
        config: ProxyConfig,
    ) -> Result<Self, ConfigRejected> {
        {
            let mut shared = state.borrow_mut();
            shared.plugin_config = config.plugin_config;
            shared.clusters = config.clusters;
            if let Some(level) = config.log_level {
                shared.log_level = level;
            }
            if let Some(clock) = config.clock {
                shared.clock = Some(clock);
            }
        }
        let proxy = Proxy {
            state,
            plugin: RefCell::new(plugin),
            next_context: Cell::new(ROOT_CONTEXT + 1),
            failure: RefCell::new(None),
        };
        let size = proxy.state.borrow().plugin_config.len();
        let started = proxy
            .callback(ROOT_CONTEXT, |plugin| {
                plugin.on_context_create(ROOT_CONTEXT, 0)?;
                let vm_size = 0;
                if !plugin.on_vm_start(ROOT_CONTEXT, vm_size)? {
                    return Ok(false);
                }
                plugin.on_configure(ROOT_CONTEXT, size)
            })
            .unwrap_or_else(|failure| {
                proxy
                    .state
                    .borrow_mut()
                    .log_line(LogLevel::Critical, failure.message.clone());
                false
            });
        if started {
            Ok(proxy)
        } else {
            let mut errors = proxy.logs_at(LogLevel::Error);
            errors.extend(proxy.logs_at(LogLevel::Critical));
            Err(ConfigRejected { errors })
        }
    }

    /// The state the plugin's hostcalls act on.
    pub fn state(&self) -> RefMut<'_, ProxyState> {
        self.state.borrow_mut()
    }

    /// The plugin.
    pub fn plugin(&self) -> RefMut<'_, B> {
        self.plugin.borrow_mut()
    }

    /// The trap that broke the plugin, if one did; every stream after it gets a 503.
    pub fn failure(&self) -> Option<PluginFailure> {
        self.failure.borrow().clone()
    }

    /// Delivers a new plugin configuration (`proxy_on_configure` on the running root context,
    /// as Envoy does for a config update that keeps the VM); returns whether the plugin
    /// accepted it.
    pub fn reconfigure(&self, config: &[u8]) -> bool {
        self.state.borrow_mut().plugin_config = config.to_vec();
        let result = self.callback(ROOT_CONTEXT, |plugin| {
            plugin.on_configure(ROOT_CONTEXT, config.len())
        });
        match result {
            Ok(accepted) => accepted,
            Err(failure) => {
                self.record_failure(failure);
                false
            }
        }
    }

    /// Stops the plugin as Envoy does when its configuration is removed: `proxy_on_done` and
    /// `proxy_on_delete` on the root context. Streams still open are not touched.
    pub fn stop(&self) {
        let result = self.callback(ROOT_CONTEXT, |plugin| {
            plugin.on_done(ROOT_CONTEXT)?;
            plugin.on_delete(ROOT_CONTEXT)
        });
        if let Err(failure) = result {
            self.record_failure(failure);
        }
    }

    /// Opens an HTTP stream and returns its context id.
    pub fn open_stream(&self) -> u32 {
        let context_id = self.next_context.get();
        self.next_context.set(context_id + 1);
        self.state
            .borrow_mut()
            .streams
            .insert(context_id, StreamState::default());
        // A broken plugin fails the stream's first callback with a 503, as Envoy does.
        if let Err(failure) = self.callback(context_id, |plugin| {
            plugin.on_context_create(context_id, ROOT_CONTEXT)
        }) {
            self.record_failure(failure);
        }
        context_id
    }

    /// Delivers headers of one side of a stream (names are lower-cased, as proxies do).
    pub fn send_headers(
        &self,
        context_id: u32,
        direction: Direction,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Action {
        {
            let mut state = self.state.borrow_mut();
            let stream = stream_mut(&mut state, context_id);
            assert_open(stream, direction);
            stream.half(direction).headers = headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
                .collect();
        }
        self.stream_callback(
            context_id,
            Phase::headers(direction),
            headers.len(),
            end_of_stream,
        )
    }

    /// Delivers a body chunk of one side. Panics while that side's headers are paused: the
    /// proxy holds body callbacks until the plugin resumes.
    pub fn send_body(
        &self,
        context_id: u32,
        direction: Direction,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Action {
        let size = {
            let mut state = self.state.borrow_mut();
            let stream = stream_mut(&mut state, context_id);
            assert_open(stream, direction);
            let half = stream.half(direction);
            if half.headers_held {
                panic!(
                    "the {direction:?} headers are paused: the proxy holds body callbacks until the plugin resumes (answer its calls first)"
                );
            }
            half.body.extend_from_slice(chunk);
            half.body.len()
        };
        self.stream_callback(context_id, Phase::body(direction), size, end_of_stream)
    }

    /// Delivers the trailers of one side, which end it. Panics while that side's headers are
    /// paused, as for a body.
    pub fn send_trailers(
        &self,
        context_id: u32,
        direction: Direction,
        trailers: &[(&str, &str)],
    ) -> Action {
        {
            let mut state = self.state.borrow_mut();
            let stream = stream_mut(&mut state, context_id);
            assert_open(stream, direction);
            let half = stream.half(direction);
            if half.headers_held {
                panic!(
                    "the {direction:?} headers are paused: the proxy holds trailer callbacks until the plugin resumes (answer its calls first)"
                );
            }
            half.trailers = trailers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes().to_vec()))
                .collect();
        }
        self.stream_callback(context_id, Phase::trailers(direction), trailers.len(), true)
    }

    /// The trailers of one side, as the plugin left them.
    pub fn trailers(&self, context_id: u32, direction: Direction) -> Vec<(String, String)> {
        self.read(context_id, |stream| {
            let half = stream.half_ref(direction);
            half.trailers
                .iter()
                .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
                .collect()
        })
    }

    /// Ends a stream as the proxy does (`on_log`, `on_done`, `on_delete`): after a complete
    /// exchange, or when the client goes away mid-way.
    pub fn end_stream(&self, context_id: u32) {
        if self
            .state
            .borrow()
            .stream(context_id)
            .is_none_or(|stream| stream.deleted)
        {
            return;
        }
        let mut result = self.callback(context_id, |plugin| plugin.on_log(context_id));
        if result.is_ok() {
            result = self
                .callback(context_id, |plugin| plugin.on_done(context_id))
                .map(|_| ());
        }
        if let Some(stream) = self.state.borrow_mut().stream_mut(context_id) {
            stream.deleted = true;
        }
        if result.is_ok() {
            result = self.callback(context_id, |plugin| plugin.on_delete(context_id));
        }
        if let Err(failure) = result {
            self.record_failure(failure);
        }
    }

    /// Calls not answered yet, in the order they were made.
    pub fn calls(&self) -> Vec<Call> {
        let state = self.state.borrow();
        state
            .calls
            .iter()
            .filter(|record| !record.answered)
            .map(|record| record.call.clone())
            .collect()
    }

    /// Every call made, answered or not.
    pub fn all_calls(&self) -> Vec<Call> {
        let state = self.state.borrow();
        state
            .calls
            .iter()
            .map(|record| record.call.clone())
            .collect()
    }

    /// Fails a call as Envoy does when its upstream does not answer it (see [`CallFailure`]).
    pub fn fail_call(&self, call: &Call, failure: &CallFailure) {
        self.answer(call, failure.envoy_answer());
    }

    /// Answers a call: `Some((headers, body))` is a response, `None` a failure (timeout,
    /// reset: the callback gets no headers). As in Envoy 1.40 (seen in its wasm trace log), the
    /// callback names the root context, whichever stream made the call, and it still comes
    /// after that stream was deleted: calls belong to the plugin, not to the stream.
    pub fn answer(&self, call: &Call, response: Option<(Pairs, Vec<u8>)>) {
        {
            let mut state = self.state.borrow_mut();
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
        }
        self.deliver_call_response(call.token, response);
        self.fail_calling_stream(call.context_id);
    }

    /// After a call's reply: `deliver_*_response` records a trap as the plugin's failure;
    /// Envoy also fails the stream that made the call, if it still exists.
    fn fail_calling_stream(&self, context_id: u32) {
        if let Some(failure) = self.failure() {
            let alive = self
                .state
                .borrow()
                .stream(context_id)
                .is_some_and(|stream| !stream.deleted && stream.local_reply.is_none());
            if alive {
                self.fail_stream(context_id, failure);
            }
        }
    }

    /// Sends `proxy_on_http_call_response` for any token, without checking that the plugin
    /// made that call or that it is still unanswered: what a confused host (or a reply racing
    /// the end of its stream) presents to the plugin, which must ignore what it does not wait
    /// for.
    pub fn deliver_call_response(&self, token: u32, response: Option<(Pairs, Vec<u8>)>) {
        let (num_headers, body_size) = response
            .as_ref()
            .map_or((0, 0), |(headers, body)| (headers.len(), body.len()));
        self.state.borrow_mut().call_response =
            response.map(|(headers, body)| (headers, body, Vec::new()));
        let result = self.callback(ROOT_CONTEXT, |plugin| {
            plugin.on_http_call_response(ROOT_CONTEXT, token, num_headers, body_size, 0)
        });
        self.state.borrow_mut().call_response = None;
        if let Err(failure) = result {
            self.record_failure(failure);
        }
    }

    /// The tick period the plugin set, if it set one (0 stops the ticks).
    pub fn tick_period(&self) -> Option<std::time::Duration> {
        self.state.borrow().tick_period
    }

    /// One tick of the root context (`proxy_on_tick`), as the proxy sends every tick period;
    /// returns false, sending nothing, when the plugin has no tick period set.
    pub fn tick(&self) -> bool {
        if self.tick_period().is_none() {
            return false;
        }
        if let Err(failure) = self.callback(ROOT_CONTEXT, |plugin| plugin.on_tick(ROOT_CONTEXT)) {
            self.record_failure(failure);
        }
        true
    }

    /// Moves the proxy's clock forward by `by` and sends what falls in that time, in order,
    /// each with the clock at its exact instant: the ticks (on whole tick periods after the
    /// period was set, as Envoy's timer does), and Envoy's own `504` for every unanswered call
    /// whose timeout expires ([`CallFailure::Timeout`]). Returns how many ticks were sent.
    /// The clock stays stopped afterwards, so a test controls time completely.
    pub fn advance_time(&self, by: Duration) -> u32 {
        let start = self.state.borrow_mut().freeze_clock();
        let target = start + by;
        let mut ticks = 0;
        loop {
            let due = {
                let state = self.state.borrow();
                next_due(&state)
            };
            let Some((at, due)) = due.filter(|(at, _)| *at <= target) else {
                break;
            };
            self.state.borrow_mut().clock = Some(at);
            match due {
                Due::Call(call) => self.fail_call(&call, &CallFailure::Timeout),
                Due::Grpc(call) => {
                    let message = format!("{TIMEOUT_BODY}{{response_timeout}}");
                    self.grpc_close(&call, GRPC_UNAVAILABLE, &message);
                }
                Due::Tick => {
                    self.tick();
                    ticks += 1;
                }
            }
        }
        self.state.borrow_mut().clock = Some(target);
        ticks
    }

    /// Tells the plugin about every shared queue that received items since the last call
    /// (`proxy_on_queue_ready`, once per queue); returns how many it told.
    pub fn deliver_ready_queues(&self) -> usize {
        let ready = std::mem::take(&mut self.state.borrow_mut().ready_queues);
        for &queue in &ready {
            if let Err(failure) = self.callback(ROOT_CONTEXT, |plugin| {
                plugin.on_queue_ready(ROOT_CONTEXT, queue)
            }) {
                self.record_failure(failure);
            }
        }
        ready.len()
    }

    /// gRPC calls and streams still open (not finished, cancelled or closed), in order.
    pub fn grpc_calls(&self) -> Vec<GrpcCall> {
        self.state
            .borrow()
            .grpc_calls
            .iter()
            .filter(|call| !call.cancelled && !call.closed)
            .cloned()
            .collect()
    }

    /// Delivers a message on a gRPC call or stream (`proxy_on_grpc_receive`, the message
    /// readable as buffer 5 during the callback). Nothing happens for a cancelled or closed one.
    pub fn grpc_message(&self, call: &GrpcCall, message: &[u8]) {
        if !self.grpc_open(call) {
            return;
        }
        {
            let mut state = self.state.borrow_mut();
            state.grpc_stage.message = Some(message.to_vec());
            // A unary call's reply is its last callback (Envoy sends no close after it).
            if let Some(record) = state
                .grpc_calls
                .iter_mut()
                .find(|record| record.token == call.token && record.timeout.is_some())
            {
                record.closed = true;
            }
        }
        let result = self.callback(ROOT_CONTEXT, |plugin| {
            plugin.on_grpc_receive(ROOT_CONTEXT, call.token, message.len())
        });
        self.state.borrow_mut().grpc_stage = Default::default();
        self.grpc_result(call, result);
    }

    /// The service finishes a gRPC call or stream with a status (`proxy_on_grpc_close`;
    /// `proxy_get_status` answers `status` and, as Envoy 1.40 does, `message` followed by the
    /// response code details of a service's own status, `{via_upstream}`, during the callback).
    /// Nothing happens for a cancelled or closed one.
    pub fn grpc_finish(&self, call: &GrpcCall, status: u32, message: &str) {
        if status == 0 {
            self.grpc_close(call, status, message);
        } else {
            self.grpc_close(call, status, &format!("{message}{{via_upstream}}"));
        }
    }

    /// Closes a gRPC call with `status` and the status message exactly as given.
    fn grpc_close(&self, call: &GrpcCall, status: u32, message: &str) {
        if !self.grpc_open(call) {
            return;
        }
        {
            let mut state = self.state.borrow_mut();
            if let Some(record) = state
                .grpc_calls
                .iter_mut()
                .find(|record| record.token == call.token)
            {
                record.closed = true;
            }
            state.grpc_stage.status = Some((status, message.as_bytes().to_vec()));
        }
        let result = self.callback(ROOT_CONTEXT, |plugin| {
            plugin.on_grpc_close(ROOT_CONTEXT, call.token, status)
        });
        self.state.borrow_mut().grpc_stage = Default::default();
        self.grpc_result(call, result);
    }

    fn grpc_open(&self, call: &GrpcCall) -> bool {
        self.state
            .borrow()
            .grpc_calls
            .iter()
            .any(|record| record.token == call.token && !record.cancelled && !record.closed)
    }

    fn grpc_result(&self, call: &GrpcCall, result: Result<(), PluginFailure>) {
        if let Err(failure) = result {
            let alive = self
                .state
                .borrow()
                .stream(call.context_id)
                .is_some_and(|stream| !stream.deleted);
            if alive {
                self.fail_stream(call.context_id, failure);
            } else {
                self.record_failure(failure);
            }
        }
    }

    /// Redis calls not answered yet, in the order they were made.
    pub fn redis_calls(&self) -> Vec<RedisCall> {
        self.state
            .borrow()
            .redis
            .calls
            .iter()
            .filter(|record| !record.answered)
            .map(|record| record.call.clone())
            .collect()
    }

    /// Answers a Redis call: `Some(reply)` (RESP bytes) is the server's reply, `None` no reply
    /// (the server is unreachable: the callback's status is not 0). Like HTTP calls, the
    /// callback names the root context and comes even after the calling stream ended.
    pub fn answer_redis(&self, call: &RedisCall, reply: Option<Vec<u8>>) {
        {
            let mut state = self.state.borrow_mut();
            let Some(record) = state
                .redis
                .calls
                .iter_mut()
                .find(|record| record.call.token == call.token)
            else {
                panic!("Redis call {} was never made", call.token);
            };
            if record.answered {
                panic!("Redis call {} was already answered", call.token);
            }
            record.answered = true;
        }
        self.deliver_redis_response(call.token, reply);
        self.fail_calling_stream(call.context_id);
    }

    /// Sends `proxy_on_redis_call_response` for any token, made or not, answered or not: what
    /// a confused host presents to the plugin, which must ignore what it does not wait for.
    pub fn deliver_redis_response(&self, token: u32, reply: Option<Vec<u8>>) {
        let (status, size) = match &reply {
            Some(bytes) => (0, bytes.len()),
            None => (1, 0),
        };
        self.state.borrow_mut().redis.response = reply;
        let result = self.callback(ROOT_CONTEXT, |plugin| {
            plugin.on_redis_call_response(ROOT_CONTEXT, token, status, size)
        });
        self.state.borrow_mut().redis.response = None;
        if let Err(failure) = result {
            self.record_failure(failure);
        }
    }

    /// Real-Redis mode: answers every pending Redis call from the `redis-server` its cluster
    /// maps to ([`ProxyState::set_redis_server`]), one call at a time in the order they were
    /// made, until none is pending (a hook awaiting several commands in turn gets all of them
    /// answered). A call to a cluster without a server, or whose server does not answer, gets
    /// no reply. Returns how many calls were answered.
    pub fn run_redis(&self) -> usize {
        let mut answered = 0;
        loop {
            let pending = self.redis_calls();
            if pending.is_empty() {
                return answered;
            }
            for call in pending {
                if answered >= MAX_REDIS_ROUNDS {
                    panic!(
                        "the plugin sent more than {MAX_REDIS_ROUNDS} Redis calls in one run_redis: does it loop?"
                    );
                }
                let reply = self.state.borrow_mut().exchange_redis(&call);
                self.answer_redis(&call, reply);
                answered += 1;
            }
        }
    }

    /// Every log line, in order.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.state.borrow().logs.clone()
    }

    /// The log lines at `level`.
    pub fn logs_at(&self, level: LogLevel) -> Vec<String> {
        self.state
            .borrow()
            .logs
            .iter()
            .filter(|record| record.level == level)
            .map(|record| record.message.clone())
            .collect()
    }

    /// A side's headers as they are now (after the plugin's changes), lossy as text.
    pub fn headers(&self, context_id: u32, direction: Direction) -> Vec<(String, String)> {
        self.read(context_id, |stream| {
            let half = stream.half_ref(direction);
            half.headers
                .iter()
                .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
                .collect()
        })
    }

    /// A side's body as it goes on: what was passed on plus what the proxy holds.
    pub fn body(&self, context_id: u32, direction: Direction) -> Vec<u8> {
        self.read(context_id, |stream| {
            let half = stream.half_ref(direction);
            [half.forwarded.as_slice(), half.body.as_slice()].concat()
        })
    }

    /// The local reply the plugin sent on a stream, if any.
    pub fn local_reply(&self, context_id: u32) -> Option<SentReply> {
        self.read(context_id, |stream| stream.local_reply.clone())
    }

    /// How many times the plugin resumed a side of a stream.
    pub fn resumes(&self, context_id: u32, direction: Direction) -> u32 {
        self.read(context_id, |stream| stream.half_ref(direction).resumes)
    }

    /// Whether a side of a stream is held by the plugin now.
    pub fn is_paused(&self, context_id: u32, direction: Direction) -> bool {
        self.read(context_id, |stream| stream.half_ref(direction).paused)
    }

    /// Whether the plugin holds a side's headers now: the proxy sends none of that side's
    /// body until the plugin resumes (a paused body chunk does not stop later chunks).
    pub fn are_headers_held(&self, context_id: u32, direction: Direction) -> bool {
        self.read(context_id, |stream| stream.half_ref(direction).headers_held)
    }

    /// Whether the plugin closed (reset) the stream with `proxy_close_stream`.
    pub fn is_reset(&self, context_id: u32) -> bool {
        self.read(context_id, |stream| stream.reset)
    }

    fn read<T>(&self, context_id: u32, read: impl FnOnce(&StreamState) -> T) -> T {
        let state = self.state.borrow();
        match state.stream(context_id) {
            Some(stream) => read(stream),
            None => panic!("no stream {context_id}"),
        }
    }

    /// Runs one callback on `context_id`, then applies what the plugin asked the proxy to do
    /// during it.
    fn callback<R>(
        &self,
        context_id: u32,
        run: impl FnOnce(&mut B) -> Result<R, PluginFailure>,
    ) -> Result<R, PluginFailure> {
        if let Some(failure) = self.failure() {
            return Err(failure);
        }
        self.state.borrow_mut().current = context_id;
        let result = run(&mut self.plugin.borrow_mut());
        let deferred = std::mem::take(&mut self.state.borrow_mut().deferred);
        if result.is_ok() {
            for effect in deferred {
                self.apply(effect);
            }
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
        if let Some(failure) = self.failure() {
            self.fail_stream(context_id, failure);
            return Action::Pause;
        }
        self.state.borrow_mut().current = context_id;
        let result = {
            let mut plugin = self.plugin.borrow_mut();
            match phase {
                Phase::RequestHeaders => plugin.on_request_headers(context_id, size, end_of_stream),
                Phase::RequestBody => plugin.on_request_body(context_id, size, end_of_stream),
                Phase::RequestTrailers => plugin.on_request_trailers(context_id, size),
                Phase::ResponseHeaders => {
                    plugin.on_response_headers(context_id, size, end_of_stream)
                }
                Phase::ResponseBody => plugin.on_response_body(context_id, size, end_of_stream),
                Phase::ResponseTrailers => plugin.on_response_trailers(context_id, size),
                Phase::Log => plugin.on_log(context_id).map(|()| Action::Continue),
            }
        };
        let deferred = std::mem::take(&mut self.state.borrow_mut().deferred);
        let action = match result {
            Ok(action) => action,
            Err(failure) => {
                self.fail_stream(context_id, failure);
                return Action::Pause;
            }
        };
        let direction = phase.direction();
        {
            let mut state = self.state.borrow_mut();
            let half = stream_mut(&mut state, context_id).half(direction);
            half.paused = action.pauses();
            if phase.is_headers() {
                half.headers_held = action.pauses();
            } else if !action.pauses() {
                // Going on from a body chunk or the trailers releases the body held before.
                let held = std::mem::take(&mut half.body);
                half.forwarded.extend(held);
            }
        }
        for effect in deferred {
            if let Effect::Continue(target, resumed) = &effect
                && *target == context_id
                && *resumed == direction
                && action.pauses()
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
                let mut state = self.state.borrow_mut();
                let stream = stream_mut(&mut state, context_id);
                if stream.local_reply.is_some() {
                    panic!("the plugin resumed a stream after sending a local reply");
                }
                let half = stream.half(direction);
                if !half.paused {
                    panic!("the plugin resumed the {direction:?} of a stream that is not paused");
                }
                half.paused = false;
                half.headers_held = false;
                let held = std::mem::take(&mut half.body);
                half.forwarded.extend(held);
                half.resumes += 1;
            }
            Effect::Reply(context_id, reply) => self.deliver_reply(context_id, reply, true),
            // Envoy resets the stream and then finishes the context (on_log, on_done,
            // on_delete).
            Effect::Reset(context_id) => {
                if let Some(stream) = self.state.borrow_mut().stream_mut(context_id) {
                    stream.reset = true;
                    stream.request.paused = false;
                    stream.response.paused = false;
                }
                self.end_stream(context_id);
            }
        }
    }

    // Envoy sends a local reply through the response path: the plugin's response callbacks
    // run for it, and must let it through.
    fn deliver_reply(&self, context_id: u32, reply: SentReply, through_plugin: bool) {
        {
            let mut state = self.state.borrow_mut();
            let stream = stream_mut(&mut state, context_id);
            if stream.local_reply.is_some() {
                panic!("the plugin sent a second local reply on one stream");
            }
            stream.local_reply = Some(reply.clone());
            stream.request.paused = false;
            stream.request.headers_held = false;
            let mut headers: Pairs =
                vec![(":status".to_string(), reply.status.to_string().into_bytes())];
            headers.extend(
                reply
                    .headers
                    .iter()
                    .map(|(name, value)| (name.clone(), value.clone().into_bytes())),
            );
            stream.response.headers = headers;
            stream.response.body.clear();
            stream.response.forwarded.clear();
        }
        if !through_plugin {
            let mut state = self.state.borrow_mut();
            stream_mut(&mut state, context_id).response.forwarded = reply.body;
            return;
        }
        let end_of_stream = reply.body.is_empty();
        let action = self.stream_callback(context_id, Phase::ResponseHeaders, 0, end_of_stream);
        if action.pauses() && self.failure().is_none() {
            panic!("the plugin paused the response of its own local reply");
        }
        if !end_of_stream {
            stream_mut(&mut self.state.borrow_mut(), context_id)
                .response
                .body = reply.body.clone();
            let action =
                self.stream_callback(context_id, Phase::ResponseBody, reply.body.len(), true);
            if action.pauses() && self.failure().is_none() {
                panic!("the plugin paused the response body of its own local reply");
            }
        }
    }

    // A trap fails the stream with 503 (Envoy's FAIL_CLOSED), and the plugin stays broken.
    fn fail_stream(&self, context_id: u32, failure: PluginFailure) {
        self.record_failure(failure);
        let replied = self
            .state
            .borrow()
            .stream(context_id)
            .is_none_or(|stream| stream.local_reply.is_some() || stream.deleted);
        if !replied {
            let reply = SentReply {
                status: 503,
                headers: vec![("content-type".to_string(), "text/plain".to_string())],
                body: b"Service Unavailable".to_vec(),
                details: "wasm_fail_stream".to_string(),
            };
            self.deliver_reply(context_id, reply, false);
        }
    }

    fn record_failure(&self, failure: PluginFailure) {
        let mut slot = self.failure.borrow_mut();
        if slot.is_none() {
            self.state
                .borrow_mut()
                .log_line(LogLevel::Critical, format!("plugin failed: {failure}"));
            *slot = Some(failure);
        }
    }
}

#[allow(
    clippy::panic,
    reason = "a test naming a stream that does not exist is a test bug"
)]
fn stream_mut(state: &mut ProxyState, context_id: u32) -> &mut StreamState {
    match state.stream_mut(context_id) {
        Some(stream) => stream,
        None => panic!("no stream {context_id}"),
    }
}

#[allow(clippy::panic, reason = "sending on a finished stream is a test bug")]
fn assert_open(stream: &StreamState, direction: Direction) {
    if stream.deleted {
        panic!("the stream has ended");
    }
    if stream.local_reply.is_some() {
        panic!(
            "the plugin already replied locally on this stream; the proxy delivers no more {direction:?} data"
        );
    }
}

/// gRPC's `UNAVAILABLE`: what Envoy's router makes of its own `504` for a gRPC call whose
/// timeout passed (`Grpc::Utility::httpToGrpcStatus`), with the `504`'s body and the details
/// `{response_timeout}` as the message (seen in Envoy 1.40).
const GRPC_UNAVAILABLE: u32 = 14;

/// What falls due when the clock moves.
enum Due {
    /// The root context's tick.
    Tick,
    /// An HTTP call's timeout: Envoy's `504`.
    Call(Call),
    /// A unary gRPC call's timeout: Envoy closes it `UNAVAILABLE`, `upstream request timeout`.
    Grpc(GrpcCall),
}

/// What falls due first, and when: on a tie a call's timeout (the first made) before a gRPC
/// call's before a tick.
fn next_due(state: &ProxyState) -> Option<(std::time::SystemTime, Due)> {
    let call = state
        .calls
        .iter()
        .filter(|record| !record.answered)
        .filter_map(|record| {
            Some((
                record.deadline?,
                record.call.token,
                Due::Call(record.call.clone()),
            ))
        })
        .min_by_key(|(at, token, _)| (*at, *token))
        .map(|(at, _, due)| (at, 0, due));
    let grpc = state
        .grpc_calls
        .iter()
        .filter(|call| !call.cancelled && !call.closed)
        .filter_map(|call| Some((call.deadline?, call.token, Due::Grpc(call.clone()))))
        .min_by_key(|(at, token, _)| (*at, *token))
        .map(|(at, _, due)| (at, 1, due));
    let tick = next_tick(state).map(|at| (at, 2, Due::Tick));
    [call, grpc, tick]
        .into_iter()
        .flatten()
        .min_by_key(|(at, order, _)| (*at, *order))
        .map(|(at, _, due)| (at, due))
}

/// When the next tick falls: the first whole tick period after the origin that is later than
/// now; `None` without a tick period.
fn next_tick(state: &ProxyState) -> Option<std::time::SystemTime> {
    let period = state.tick_period?;
    let since = state
        .now()
        .duration_since(state.tick_origin)
        .unwrap_or_default();
    let periods = since.as_nanos() / period.as_nanos().max(1) + 1;
    let offset = period.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
    Some(state.tick_origin + offset)
}

/// Why a call's upstream did not answer it, and so what Envoy 1.40 hands the plugin instead
/// (`source/common/router/router.cc`: the router answers for the upstream before the response
/// began; `source/extensions/common/wasm/context.cc`, `onHttpCallFailure`: a callback with no
/// headers after it began).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallFailure {
    /// The call's timeout expired before the response began: a `504`, `upstream request
    /// timeout`.
    Timeout,
    /// Nothing listens at the upstream's address: a `503` with the reset reason `remote
    /// connection failure`. (Envoy 1.40 on loopback, where the refusal is immediate; a refusal
    /// reported later by the socket adds `, transport failure reason: delayed connect error:
    /// Connection refused`.)
    ConnectionRefused,
    /// The upstream accepted the connection and closed it before answering: a `503` with the
    /// reset reason `connection termination`.
    ConnectionClosed,
    /// The response began and then broke off (reset, or the timeout after the headers): the
    /// callback with no headers.
    ResetMidResponse,
}

impl CallFailure {
    /// What `on_http_call_response` reads: Envoy's own response (headers, body), or `None`
    /// for the callback with no headers.
    pub fn envoy_answer(&self) -> Option<(Pairs, Vec<u8>)> {
        let (status, body) = match self {
            CallFailure::Timeout => (504, TIMEOUT_BODY.to_string()),
            CallFailure::ConnectionRefused => (
                503,
                format!("{RESET_BEFORE_HEADERS}remote connection failure"),
            ),
            CallFailure::ConnectionClosed => {
                (503, format!("{RESET_BEFORE_HEADERS}connection termination"))
            }
            CallFailure::ResetMidResponse => return None,
        };
        Some(router_reply(status, body))
    }
}
