//! The proxy's state, and the hostcalls that read and change it.
//!
//! Every method here is what one hostcall does, on the context the host currently applies
//! hostcalls to (the callback's context, or the one `set_effective_context` chose). Effects the
//! proxy defers until the callback returns (resume, local reply) are queued, as Envoy does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy_async_abi::hostcalls::{buffer_window, edit_buffer};
use proxy_async_abi::{
    BufferType, Direction, HeaderPairs, Hostcalls, LogLevel, MapType, MetricType, Status,
    StreamType,
};

use crate::redis::{RedisInit, RedisState};

/// Header pairs: names are text (lower-case), values bytes.
pub type Pairs = Vec<(String, Vec<u8>)>;

/// The id of the plugin's root context.
pub const ROOT_CONTEXT: u32 = 1;

/// One log line of the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: LogLevel,
    /// Its text.
    pub message: String,
}

/// An HTTP call the plugin made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub(crate) token: u32,
    pub(crate) context_id: u32,
    pub(crate) cluster: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) timeout: Duration,
}

impl Call {
    /// The token the proxy returned for it.
    pub fn token(&self) -> u32 {
        self.token
    }

    /// The context that was current when the call was made.
    pub fn context_id(&self) -> u32 {
        self.context_id
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

/// A gRPC call or stream the plugin opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    pub(crate) token: u32,
    pub(crate) context_id: u32,
    pub(crate) cluster: String,
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) messages: Vec<Vec<u8>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) half_closed: bool,
    pub(crate) cancelled: bool,
    pub(crate) closed: bool,
    /// When Envoy ends the unary call for its timeout, if nothing ended it before.
    pub(crate) deadline: Option<SystemTime>,
}

impl GrpcCall {
    /// The token the proxy returned for it.
    pub fn token(&self) -> u32 {
        self.token
    }

    /// The context that was current when it was opened.
    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    /// The cluster it went to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The gRPC service, e.g. `helloworld.Greeter`.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The gRPC method, e.g. `SayHello`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The initial metadata sent.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The messages sent, in order (one for a unary call).
    pub fn messages(&self) -> &[Vec<u8>] {
        &self.messages
    }

    /// The timeout of a unary call; `None` for a stream.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the plugin ended its side of a stream (`end_stream` on send).
    pub fn is_half_closed(&self) -> bool {
        self.half_closed
    }

    /// Whether the plugin cancelled it (`proxy_grpc_cancel`): no callbacks come after.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }

    /// Whether it is over: finished by the service (or the proxy), or its reply delivered.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// What the proxy stages for the gRPC callback running now: the message (buffer 5), the
/// metadata (maps 4 and 5), and the status `proxy_get_status` answers.
#[derive(Default)]
pub(crate) struct GrpcStage {
    pub(crate) message: Option<Vec<u8>>,
    pub(crate) initial_metadata: Option<Pairs>,
    pub(crate) trailing_metadata: Option<Pairs>,
    pub(crate) status: Option<(u32, Vec<u8>)>,
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

/// What the plugin asked the proxy to do during a callback; applied after it returns.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    Continue(u32, Direction),
    Reply(u32, SentReply),
    Reset(u32),
}

pub(crate) struct CallRecord {
    pub(crate) call: Call,
    pub(crate) answered: bool,
    /// When Envoy answers the call with its own timeout `504`, if nobody answered before:
    /// dispatch time plus the call's timeout (`None` for a timeout of 0, which Envoy's async
    /// client reads as none).
    pub(crate) deadline: Option<SystemTime>,
}

/// One side (request or response) of an HTTP stream.
#[derive(Default)]
pub(crate) struct Half {
    pub(crate) headers: Pairs,
    pub(crate) trailers: Pairs,
    // Body data the proxy holds (not yet passed on), and what it passed on.
    pub(crate) body: Vec<u8>,
    pub(crate) forwarded: Vec<u8>,
    // The last callback of this side answered Pause and no resume came yet.
    pub(crate) paused: bool,
    // The headers callback answered Pause: body callbacks are held until a resume.
    pub(crate) headers_held: bool,
    pub(crate) resumes: u32,
}

#[derive(Default)]
pub(crate) struct StreamState {
    pub(crate) request: Half,
    pub(crate) response: Half,
    pub(crate) local_reply: Option<SentReply>,
    // The plugin closed (reset) the stream with `proxy_close_stream`.
    pub(crate) reset: bool,
    pub(crate) deleted: bool,
    // Properties only this stream has (`route_name`, `cluster_name`: what the proxy knows
    // about the request), by path as `proxy_get_property` encodes it.
    pub(crate) properties: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl StreamState {
    pub(crate) fn half_ref(&self, direction: Direction) -> &Half {
        match direction {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }

    pub(crate) fn half(&mut self, direction: Direction) -> &mut Half {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }
}

struct Metric {
    name: String,
    kind: MetricType,
    value: i64,
}

struct Queue {
    vm_id: String,
    name: String,
    items: VecDeque<Vec<u8>>,
}

/// Everything the emulated proxy knows.
pub struct ProxyState {
    pub(crate) current: u32,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) vm_id: String,
    pub(crate) clusters: Option<BTreeSet<String>>,
    pub(crate) log_level: LogLevel,
    pub(crate) streams: BTreeMap<u32, StreamState>,
    pub(crate) calls: Vec<CallRecord>,
    next_token: u32,
    pub(crate) call_response: Option<(Pairs, Vec<u8>, Pairs)>,
    pub(crate) grpc_calls: Vec<GrpcCall>,
    pub(crate) grpc_stage: GrpcStage,
    pub(crate) logs: Vec<LogRecord>,
    pub(crate) deferred: Vec<Effect>,
    pub(crate) tick_period: Option<Duration>,
    // When the current tick period was set: ticks fall on whole periods after it.
    pub(crate) tick_origin: SystemTime,
    shared_data: BTreeMap<Vec<u8>, (Vec<u8>, u32)>,
    queues: Vec<Queue>,
    pub(crate) ready_queues: Vec<u32>,
    metrics: Vec<Metric>,
    properties: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) clock: Option<SystemTime>,
    foreign_functions: BTreeMap<String, ForeignFunction>,
    pub(crate) redis: RedisState,
}

/// A host function a plugin calls with `proxy_call_foreign_function`.
pub type ForeignFunction = Box<dyn Fn(&[u8]) -> Vec<u8>>;

impl Default for ProxyState {
    fn default() -> Self {
        ProxyState {
            current: ROOT_CONTEXT,
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            vm_id: String::new(),
            clusters: None,
            log_level: LogLevel::Trace,
            streams: BTreeMap::new(),
            calls: Vec::new(),
            next_token: 1,
            call_response: None,
            grpc_calls: Vec::new(),
            grpc_stage: GrpcStage::default(),
            logs: Vec::new(),
            deferred: Vec::new(),
            tick_period: None,
            tick_origin: UNIX_EPOCH,
            shared_data: BTreeMap::new(),
            queues: Vec::new(),
            ready_queues: Vec::new(),
            metrics: Vec::new(),
            properties: BTreeMap::new(),
            clock: None,
            foreign_functions: BTreeMap::new(),
            redis: RedisState::default(),
        }
    }
}

impl ProxyState {
    pub(crate) fn stream(&self, context_id: u32) -> Option<&StreamState> {
        self.streams.get(&context_id)
    }

    pub(crate) fn stream_mut(&mut self, context_id: u32) -> Option<&mut StreamState> {
        self.streams.get_mut(&context_id)
    }

    // The stream the current hostcall acts on; it must be alive.
    fn current_stream(&mut self) -> Result<&mut StreamState, Status> {
        match self.streams.get_mut(&self.current) {
            Some(stream) if !stream.deleted => Ok(stream),
            _ => Err(Status::BadArgument),
        }
    }

    fn map_mut(&mut self, map: MapType) -> Result<&mut Pairs, Status> {
        let stream = self.current_stream()?;
        match map {
            MapType::HttpRequestHeaders => Ok(&mut stream.request.headers),
            MapType::HttpRequestTrailers => Ok(&mut stream.request.trailers),
            MapType::HttpResponseHeaders => Ok(&mut stream.response.headers),
            MapType::HttpResponseTrailers => Ok(&mut stream.response.trailers),
            _ => Err(Status::BadArgument),
        }
    }

    fn map(&mut self, map: MapType) -> Result<Pairs, Status> {
        match map {
            // Envoy answers OK with an empty map when there is no call response (a failed
            // call's callback, or outside the callback); plugins on the plain proxy-wasm crate
            // read it that way and would panic on anything else.
            MapType::HttpCallResponseHeaders => Ok(self
                .call_response
                .as_ref()
                .map(|(headers, _, _)| headers.clone())
                .unwrap_or_default()),
            MapType::HttpCallResponseTrailers => Ok(self
                .call_response
                .as_ref()
                .map(|(_, _, trailers)| trailers.clone())
                .unwrap_or_default()),
            MapType::GrpcCallInitialMetadata => {
                Ok(self.grpc_stage.initial_metadata.clone().unwrap_or_default())
            }
            MapType::GrpcCallTrailingMetadata => Ok(self
                .grpc_stage
                .trailing_metadata
                .clone()
                .unwrap_or_default()),
            _ => self.map_mut(map).cloned(),
        }
    }

    // The bytes of `buffer` now; NOT_FOUND when the proxy has no such buffer now.
    fn buffer(&mut self, buffer: BufferType) -> Result<&[u8], Status> {
        Ok(match buffer {
            BufferType::PluginConfiguration => &self.plugin_config,
            BufferType::VmConfiguration => &self.vm_config,
            BufferType::HttpCallResponseBody => match &self.call_response {
                Some((_, body, _)) => body,
                None => return Err(Status::NotFound),
            },
            BufferType::GrpcCallMessage => match &self.grpc_stage.message {
                Some(message) => message,
                None => return Err(Status::NotFound),
            },
            BufferType::RedisCallResponse => match &self.redis.response {
                Some(reply) => reply,
                None => return Err(Status::NotFound),
            },
            BufferType::HttpRequestBody => &self.current_stream()?.request.body,
            BufferType::HttpResponseBody => &self.current_stream()?.response.body,
            _ => return Err(Status::NotFound),
        })
    }

    // ---- what the proxy knows, for tests and hosts ----------------------------------------

    /// Records a log line as if the plugin had logged it (the proxy's own notes about the
    /// plugin, such as a trap, go where the plugin's lines go).
    pub fn log_line(&mut self, level: LogLevel, message: String) {
        self.logs.push(LogRecord { level, message });
    }

    /// The proxy's log level.
    pub fn log_level(&self) -> LogLevel {
        self.log_level
    }

    /// Starts (or, with zero, stops) the root context's ticks.
    pub fn set_tick_period(&mut self, period: Duration) {
        self.tick_period = (!period.is_zero()).then_some(period);
        self.tick_origin = self.now();
    }

    /// The tick period the plugin set, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        self.tick_period
    }

    /// Stops the clock at its current reading: from now on it moves only when a test moves it
    /// (see `Proxy::advance_time`).
    pub fn freeze_clock(&mut self) -> SystemTime {
        let now = self.now();
        self.clock = Some(now);
        now
    }

    /// When a call made now with `timeout` times out, on the stopped clock of a test (which
    /// only `Proxy::advance_time` moves, and which ends the call then); `None` on the real
    /// clock or for a timeout of 0, which Envoy reads as none.
    fn deadline(&self, timeout: Duration) -> Option<SystemTime> {
        let now = self.clock?;
        (!timeout.is_zero()).then(|| now + timeout)
    }

    /// `proxy_get_current_time_nanoseconds` (and WASI's realtime clock).
    pub fn now(&self) -> SystemTime {
        self.clock.unwrap_or_else(SystemTime::now)
    }

    /// The current time as nanoseconds since the Unix epoch.
    pub fn now_nanos(&self) -> u64 {
        self.now().duration_since(UNIX_EPOCH).map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
    }

    /// Offers a foreign function to plugins, as Envoy offers its built-in ones.
    pub fn register_foreign_function(&mut self, name: &str, function: ForeignFunction) {
        self.foreign_functions.insert(name.to_string(), function);
    }

    /// The value of the metric named `name`, for tests.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metrics
            .iter()
            .find(|metric| metric.name == name)
            .map(|metric| metric.value)
    }

    /// Gives stream `context_id` a property of its own, as the proxy knows per request what
    /// `route_name` or `cluster_name` are; `path` as `proxy_get_property` takes it (segments
    /// joined with `\0`). BAD_ARGUMENT for an unknown stream.
    pub fn set_stream_property(
        &mut self,
        context_id: u32,
        path: &[u8],
        value: &[u8],
    ) -> Result<(), Status> {
        let stream = self
            .streams
            .get_mut(&context_id)
            .ok_or(Status::BadArgument)?;
        stream.properties.insert(path.to_vec(), value.to_vec());
        Ok(())
    }

    /// Property `path` (segments joined with `\0`) as stream `context_id` reads it: its own
    /// (set by the test or by the plugin in one of its callbacks), else the proxy's.
    pub fn stream_property(&self, context_id: u32, path: &[u8]) -> Option<Vec<u8>> {
        self.streams
            .get(&context_id)
            .and_then(|stream| stream.properties.get(path))
            .or_else(|| self.properties.get(path))
            .cloned()
    }

    pub(crate) fn known_cluster(&self, cluster: &str) -> Result<(), Status> {
        match &self.clusters {
            Some(known) if !known.contains(cluster) => Err(Status::BadArgument),
            _ => Ok(()),
        }
    }

    pub(crate) fn next_token(&mut self) -> u32 {
        let token = self.next_token;
        self.next_token += 1;
        token
    }

    fn open_grpc(
        &mut self,
        upstream: &[u8],
        service: &[u8],
        method: &[u8],
        metadata: &[(&[u8], &[u8])],
        messages: Vec<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<u32, Status> {
        // An encoded `GrpcService` names its cluster; Envoy opens it without checking the
        // cluster (an unknown one fails the call later, UNAVAILABLE). A bare name is checked.
        let cluster = match grpc_service_cluster(upstream) {
            Some(name) => name,
            None => {
                let cluster = text(upstream);
                self.known_cluster(&cluster)?;
                cluster
            }
        };
        let token = self.next_token();
        self.grpc_calls.push(GrpcCall {
            token,
            context_id: self.current,
            cluster,
            service: text(service),
            method: text(method),
            metadata: text_pairs(metadata),
            messages,
            timeout,
            half_closed: false,
            cancelled: false,
            closed: false,
            deadline: self.deadline(timeout.unwrap_or_default()),
        });
        Ok(token)
    }

    fn grpc_mut(&mut self, token: u32) -> Result<&mut GrpcCall, Status> {
        self.grpc_calls
            .iter_mut()
            .find(|call| call.token == token && !call.cancelled && !call.closed)
            .ok_or(Status::NotFound)
    }

    fn queue_mut(&mut self, queue: u32) -> Result<&mut Queue, Status> {
        let index = usize::try_from(queue.wrapping_sub(1)).map_err(|_| Status::NotFound)?;
        self.queues.get_mut(index).ok_or(Status::NotFound)
    }

    fn metric_mut(&mut self, id: u32) -> Result<&mut Metric, Status> {
        let index = usize::try_from(id.wrapping_sub(1)).map_err(|_| Status::NotFound)?;
        self.metrics.get_mut(index).ok_or(Status::NotFound)
    }

    // ---- for long-running hosts -------------------------------------------------------------

    /// Takes the log lines recorded so far, leaving none: a host that prints the plugin's logs
    /// as they come (serve mode) drains them after each callback instead of keeping them all.
    pub fn take_logs(&mut self) -> Vec<LogRecord> {
        std::mem::take(&mut self.logs)
    }

    /// Forgets an ended stream: removes its state and every call it made, answered or not (a
    /// call of an ended stream is cancelled: it must not be answered afterwards). A host that
    /// serves many streams calls it after [`Proxy::end_stream`](crate::Proxy::end_stream) so
    /// that the state does not grow with every request. Does nothing for an unknown stream or
    /// the root context.
    pub fn forget_stream(&mut self, context_id: u32) {
        if context_id == ROOT_CONTEXT {
            return;
        }
        self.streams.remove(&context_id);
        self.calls
            .retain(|record| record.call.context_id != context_id);
        self.redis
            .calls
            .retain(|record| record.call.context_id != context_id);
    }
}

/// Every hostcall, acting on the proxy's state as Envoy 1.40 does.
impl Hostcalls for ProxyState {
    fn log(&mut self, level: LogLevel, message: &[u8]) -> Result<(), Status> {
        self.log_line(level, text(message));
        Ok(())
    }

    fn get_log_level(&mut self) -> Result<LogLevel, Status> {
        Ok(self.log_level)
    }

    fn get_current_time_nanoseconds(&mut self) -> Result<u64, Status> {
        Ok(self.now_nanos())
    }

    /// 0 stops the ticks.
    fn set_tick_period_milliseconds(&mut self, period_ms: u32) -> Result<(), Status> {
        self.set_tick_period(Duration::from_millis(u64::from(period_ms)));
        Ok(())
    }

    /// BAD_ARGUMENT for a context that does not exist (any more).
    fn set_effective_context(&mut self, context_id: u32) -> Result<(), Status> {
        let alive = context_id == ROOT_CONTEXT
            || self
                .streams
                .get(&context_id)
                .is_some_and(|stream| !stream.deleted);
        if !alive {
            return Err(Status::BadArgument);
        }
        self.current = context_id;
        Ok(())
    }

    /// Contexts are finalized by the proxy right after `on_done`; nothing is pending.
    fn done(&mut self) -> Result<(), Status> {
        Ok(())
    }

    /// NOT_FOUND when there is no such buffer now.
    fn get_buffer_bytes(
        &mut self,
        buffer: BufferType,
        start: u32,
        max_size: u32,
    ) -> Result<Vec<u8>, Status> {
        let bytes = self.buffer(buffer)?;
        let window = buffer_window(bytes.len(), usize_of(start), usize_of(max_size));
        Ok(bytes[window].to_vec())
    }

    /// `start == 0 && size == 0` prepends, `start >= len` appends, anything else replaces
    /// `[start, start + size)`.
    fn set_buffer_bytes(
        &mut self,
        buffer: BufferType,
        start: u32,
        size: u32,
        value: &[u8],
    ) -> Result<(), Status> {
        let stream = self.current_stream()?;
        let body = match buffer {
            BufferType::HttpRequestBody => &mut stream.request.body,
            BufferType::HttpResponseBody => &mut stream.response.body,
            _ => return Err(Status::BadArgument),
        };
        edit_buffer(body, usize_of(start), usize_of(size), value);
        Ok(())
    }

    fn get_buffer_status(&mut self, buffer: BufferType) -> Result<(u32, u32), Status> {
        let size = self.buffer(buffer)?.len();
        Ok((u32::try_from(size).unwrap_or(u32::MAX), 0))
    }

    fn get_header_map_pairs(&mut self, map: MapType) -> Result<HeaderPairs, Status> {
        Ok(self
            .map(map)?
            .into_iter()
            .map(|(name, value)| (name.into_bytes(), value))
            .collect())
    }

    fn set_header_map_pairs(
        &mut self,
        map: MapType,
        pairs: &[(&[u8], &[u8])],
    ) -> Result<(), Status> {
        *self.map_mut(map)? = pairs
            .iter()
            .map(|(name, value)| (lower(name), value.to_vec()))
            .collect();
        Ok(())
    }

    /// NOT_FOUND when absent.
    fn get_header_map_value(&mut self, map: MapType, key: &[u8]) -> Result<Vec<u8>, Status> {
        self.map(map)?
            .into_iter()
            .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(key))
            .map(|(_, value)| value)
            .ok_or(Status::NotFound)
    }

    fn add_header_map_value(
        &mut self,
        map: MapType,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Status> {
        self.map_mut(map)?.push((lower(key), value.to_vec()));
        Ok(())
    }

    /// Replaces the first value, drops the others, adds the header when missing.
    fn replace_header_map_value(
        &mut self,
        map: MapType,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Status> {
        let pairs = self.map_mut(map)?;
        match pairs
            .iter()
            .position(|(name, _)| name.as_bytes().eq_ignore_ascii_case(key))
        {
            Some(first) => {
                pairs[first].1 = value.to_vec();
                let mut index = 0;
                pairs.retain(|(name, _)| {
                    let keep = index <= first || !name.as_bytes().eq_ignore_ascii_case(key);
                    index += 1;
                    keep
                });
            }
            None => pairs.push((lower(key), value.to_vec())),
        }
        Ok(())
    }

    /// OK when missing.
    fn remove_header_map_value(&mut self, map: MapType, key: &[u8]) -> Result<(), Status> {
        self.map_mut(map)?
            .retain(|(name, _)| !name.as_bytes().eq_ignore_ascii_case(key));
        Ok(())
    }

    /// Deferred until the callback returns.
    fn continue_stream(&mut self, stream: StreamType) -> Result<(), Status> {
        let direction = Direction::of_stream(stream).ok_or(Status::BadArgument)?;
        let context_id = self.current;
        self.current_stream()?;
        self.deferred.push(Effect::Continue(context_id, direction));
        Ok(())
    }

    /// The proxy resets the stream after the callback returns (the client sees the connection
    /// reset; nothing more reaches the upstream). Either direction closes the whole HTTP
    /// stream; TCP streams are not emulated.
    fn close_stream(&mut self, stream: StreamType) -> Result<(), Status> {
        Direction::of_stream(stream).ok_or(Status::BadArgument)?;
        let context_id = self.current;
        self.current_stream()?;
        self.deferred.push(Effect::Reset(context_id));
        Ok(())
    }

    /// Deferred until the callback returns.
    fn send_local_response(
        &mut self,
        status_code: u32,
        details: &[u8],
        body: &[u8],
        headers: &[(&[u8], &[u8])],
        _grpc_status: i32,
    ) -> Result<(), Status> {
        let status = u16::try_from(status_code).map_err(|_| Status::BadArgument)?;
        let context_id = self.current;
        self.current_stream()?;
        self.deferred.push(Effect::Reply(
            context_id,
            SentReply {
                status,
                headers: text_pairs(headers),
                body: body.to_vec(),
                details: text(details),
            },
        ));
        Ok(())
    }

    /// The gRPC status of the callback running now; NOT_FOUND outside.
    fn get_status(&mut self) -> Result<(u32, Vec<u8>), Status> {
        self.grpc_stage.status.clone().ok_or(Status::NotFound)
    }

    /// BAD_ARGUMENT for a cluster the proxy does not know or a request without `:method`,
    /// `:path` or `:authority`, as Envoy.
    fn http_call(
        &mut self,
        upstream: &[u8],
        headers: &[(&[u8], &[u8])],
        body: &[u8],
        _trailers: &[(&[u8], &[u8])],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        let has = |wanted: &[u8]| {
            headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(wanted))
        };
        if !(has(b":method") && has(b":path") && has(b":authority")) {
            return Err(Status::BadArgument);
        }
        let cluster = text(upstream);
        self.known_cluster(&cluster)?;
        let token = self.next_token();
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        self.calls.push(CallRecord {
            call: Call {
                token,
                context_id: self.current,
                cluster,
                headers: text_pairs(headers),
                body: body.to_vec(),
                timeout,
            },
            answered: false,
            deadline: self.deadline(timeout),
        });
        Ok(token)
    }

    /// Higress's extension: creates the client of the upstream's cluster (replacing the one
    /// before). BAD_ARGUMENT for a cluster the proxy does not know, or while the test refuses
    /// inits ([`refuse_redis_init`](ProxyState::refuse_redis_init)).
    fn redis_init(
        &mut self,
        upstream: &[u8],
        username: &[u8],
        password: &[u8],
        timeout_ms: u32,
    ) -> Result<(), Status> {
        self.init_redis_client(RedisInit {
            upstream: text(upstream),
            username: text(username),
            password: text(password),
            timeout: Duration::from_millis(u64::from(timeout_ms)),
        })
    }

    /// Higress's extension: queues a command for `upstream` (the plain cluster name) and
    /// returns its token. BAD_ARGUMENT for a cluster without a client (never initialized).
    fn redis_call(&mut self, upstream: &[u8], query: &[u8]) -> Result<u32, Status> {
        self.queue_redis_call(&text(upstream), query)
    }

    /// A unary call; BAD_ARGUMENT for a cluster the proxy does not know.
    fn grpc_call(
        &mut self,
        upstream: &[u8],
        service: &[u8],
        method: &[u8],
        initial_metadata: &[(&[u8], &[u8])],
        message: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        self.open_grpc(
            upstream,
            service,
            method,
            initial_metadata,
            vec![message.to_vec()],
            Some(Duration::from_millis(u64::from(timeout_ms))),
        )
    }

    /// Opens a stream; messages follow with `proxy_grpc_send`.
    fn grpc_stream(
        &mut self,
        upstream: &[u8],
        service: &[u8],
        method: &[u8],
        initial_metadata: &[(&[u8], &[u8])],
    ) -> Result<u32, Status> {
        self.open_grpc(
            upstream,
            service,
            method,
            initial_metadata,
            Vec::new(),
            None,
        )
    }

    /// NOT_FOUND for an unknown, cancelled or closed stream; BAD_ARGUMENT for a unary call or
    /// a stream already half-closed.
    fn grpc_send(
        &mut self,
        stream_id: u32,
        message: &[u8],
        end_stream: bool,
    ) -> Result<(), Status> {
        let call = self.grpc_mut(stream_id)?;
        if call.timeout.is_some() || call.half_closed {
            return Err(Status::BadArgument);
        }
        call.messages.push(message.to_vec());
        call.half_closed = end_stream;
        Ok(())
    }

    /// No callback comes for it afterwards.
    fn grpc_cancel(&mut self, id: u32) -> Result<(), Status> {
        self.grpc_mut(id)?.cancelled = true;
        Ok(())
    }

    /// As Envoy 1.40: half-closes a stream (its replies still come) and abandons a unary call
    /// (no callback comes for it).
    fn grpc_close(&mut self, id: u32) -> Result<(), Status> {
        let call = self.grpc_mut(id)?;
        if call.timeout.is_some() {
            call.cancelled = true;
        } else {
            call.half_closed = true;
        }
        Ok(())
    }

    /// The value and its CAS; NOT_FOUND when absent.
    fn get_shared_data(&mut self, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        self.shared_data.get(key).cloned().ok_or(Status::NotFound)
    }

    /// With a non-zero `cas`, CAS_MISMATCH unless it is the current one.
    fn set_shared_data(&mut self, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
        let current = self.shared_data.get(key).map_or(0, |(_, cas)| *cas);
        if cas != 0 && cas != current {
            return Err(Status::CasMismatch);
        }
        self.shared_data.insert(
            key.to_vec(),
            (value.to_vec(), current.wrapping_add(1).max(1)),
        );
        Ok(())
    }

    /// The queue's id (the same for the same name).
    fn register_shared_queue(&mut self, name: &[u8]) -> Result<u32, Status> {
        let name = text(name);
        let vm_id = self.vm_id.clone();
        let index = match self
            .queues
            .iter()
            .position(|queue| queue.vm_id == vm_id && queue.name == name)
        {
            Some(index) => index,
            None => {
                self.queues.push(Queue {
                    vm_id,
                    name,
                    items: VecDeque::new(),
                });
                self.queues.len() - 1
            }
        };
        Ok(queue_id(index))
    }

    /// NOT_FOUND when no VM registered it.
    fn resolve_shared_queue(&mut self, vm_id: &[u8], name: &[u8]) -> Result<u32, Status> {
        self.queues
            .iter()
            .position(|queue| queue.vm_id.as_bytes() == vm_id && queue.name.as_bytes() == name)
            .map(queue_id)
            .ok_or(Status::NotFound)
    }

    /// The queue becomes ready (`on_queue_ready` follows).
    fn enqueue_shared_queue(&mut self, queue_id: u32, value: &[u8]) -> Result<(), Status> {
        self.queue_mut(queue_id)?.items.push_back(value.to_vec());
        if !self.ready_queues.contains(&queue_id) {
            self.ready_queues.push(queue_id);
        }
        Ok(())
    }

    /// EMPTY when there is nothing.
    fn dequeue_shared_queue(&mut self, queue_id: u32) -> Result<Vec<u8>, Status> {
        self.queue_mut(queue_id)?
            .items
            .pop_front()
            .ok_or(Status::Empty)
    }

    /// The metric's id (the same for the same name and type).
    fn define_metric(&mut self, metric_type: MetricType, name: &[u8]) -> Result<u32, Status> {
        if matches!(metric_type, MetricType::Unknown(_)) {
            return Err(Status::BadArgument);
        }
        let name = text(name);
        let index = match self
            .metrics
            .iter()
            .position(|metric| metric.name == name && metric.kind == metric_type)
        {
            Some(index) => index,
            None => {
                self.metrics.push(Metric {
                    name,
                    kind: metric_type,
                    value: 0,
                });
                self.metrics.len() - 1
            }
        };
        Ok(queue_id(index))
    }

    fn record_metric(&mut self, metric_id: u32, value: i64) -> Result<(), Status> {
        self.metric_mut(metric_id)?.value = value;
        Ok(())
    }

    /// Counters may not go down, histograms only record (BAD_ARGUMENT).
    fn increment_metric(&mut self, metric_id: u32, delta: i64) -> Result<(), Status> {
        let metric = self.metric_mut(metric_id)?;
        match metric.kind {
            MetricType::Counter if delta < 0 => Err(Status::BadArgument),
            MetricType::Histogram => Err(Status::BadArgument),
            _ => {
                metric.value = metric.value.saturating_add(delta);
                Ok(())
            }
        }
    }

    /// A gauge below zero reads as 0: the ABI's value is unsigned.
    fn get_metric(&mut self, metric_id: u32) -> Result<u64, Status> {
        let value = self.metric_mut(metric_id)?.value;
        Ok(u64::try_from(value).unwrap_or(0))
    }

    /// The path's segments joined with `\0`; NOT_FOUND when unset. On a stream, the stream's
    /// own properties come first (see [`set_stream_property`](ProxyState::set_stream_property)),
    /// then the proxy's.
    fn get_property(&mut self, path: &[u8]) -> Result<Vec<u8>, Status> {
        self.stream_property(self.current, path)
            .ok_or(Status::NotFound)
    }

    /// In a stream's callback, the property is the stream's (Envoy keeps it in the request's
    /// filter state, where the stream reads it back and no other stream sees it); outside one,
    /// the plugin's.
    fn set_property(&mut self, path: &[u8], value: &[u8]) -> Result<(), Status> {
        let properties = match self.streams.get_mut(&self.current) {
            Some(stream) => &mut stream.properties,
            None => &mut self.properties,
        };
        properties.insert(path.to_vec(), value.to_vec());
        Ok(())
    }

    /// NOT_FOUND for a name nobody registered, as in Envoy.
    fn call_foreign_function(&mut self, name: &[u8], arguments: &[u8]) -> Result<Vec<u8>, Status> {
        let function = self
            .foreign_functions
            .get(&text(name))
            .ok_or(Status::NotFound)?;
        Ok(function(arguments))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// Header names as proxies keep them: lower case.
fn lower(name: &[u8]) -> String {
    text(name).to_ascii_lowercase()
}

// Pairs a plugin hands over (a call's headers, a local reply's, gRPC metadata): Envoy builds
// its header maps from them with lower-cased names (`Http::LowerCaseString`), so do we.
fn text_pairs(pairs: &[(&[u8], &[u8])]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (lower(name), text(value)))
        .collect()
}

fn usize_of(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

// Ids handed out for queues and metrics start at 1, so that 0 is never valid.
fn queue_id(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// The cluster of an encoded `envoy.config.core.v3.GrpcService { envoy_grpc { cluster_name } }`
/// (one-byte lengths, as plugins encode it); `None` for anything else (a bare cluster name).
fn grpc_service_cluster(upstream: &[u8]) -> Option<String> {
    match upstream {
        [0x0a, outer, 0x0a, inner, name @ ..]
            if usize::from(*outer) == usize::from(*inner) + 2
                && usize::from(*inner) == name.len() =>
        {
            String::from_utf8(name.to_vec()).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_data_compare_and_swap() {
        let mut state = ProxyState::default();
        assert_eq!(state.get_shared_data(b"k"), Err(Status::NotFound));
        state.set_shared_data(b"k", b"1", 0).unwrap();
        let (value, cas) = state.get_shared_data(b"k").unwrap();
        assert_eq!(value, b"1");
        assert_eq!(
            state.set_shared_data(b"k", b"2", cas + 7),
            Err(Status::CasMismatch)
        );
        state.set_shared_data(b"k", b"2", cas).unwrap();
        assert_eq!(
            state.set_shared_data(b"k", b"3", cas),
            Err(Status::CasMismatch)
        );
        assert_eq!(state.get_shared_data(b"k").unwrap().0, b"2");
    }

    #[test]
    fn shared_queues_and_metrics() {
        let mut state = ProxyState::default();
        let queue = state.register_shared_queue(b"jobs").unwrap();
        assert_eq!(state.register_shared_queue(b"jobs"), Ok(queue));
        assert_eq!(state.resolve_shared_queue(b"", b"jobs"), Ok(queue));
        assert_eq!(
            state.resolve_shared_queue(b"", b"other"),
            Err(Status::NotFound)
        );
        assert_eq!(state.dequeue_shared_queue(queue), Err(Status::Empty));
        state.enqueue_shared_queue(queue, b"a").unwrap();
        assert_eq!(state.ready_queues, [queue]);
        assert_eq!(state.dequeue_shared_queue(queue), Ok(b"a".to_vec()));
        assert_eq!(state.enqueue_shared_queue(99, b"x"), Err(Status::NotFound));

        let counter = state
            .define_metric(MetricType::Counter, b"requests")
            .unwrap();
        state.increment_metric(counter, 2).unwrap();
        assert_eq!(
            state.increment_metric(counter, -1),
            Err(Status::BadArgument)
        );
        assert_eq!(state.get_metric(counter), Ok(2));
        let gauge = state.define_metric(MetricType::Gauge, b"inflight").unwrap();
        state.record_metric(gauge, 5).unwrap();
        state.increment_metric(gauge, -2).unwrap();
        assert_eq!(state.metric("inflight"), Some(3));
        state.increment_metric(gauge, -5).unwrap();
        assert_eq!(
            state.get_metric(gauge),
            Ok(0),
            "a gauge below zero reads as 0"
        );
        assert_eq!(
            state.define_metric(MetricType::Unknown(7), b"odd"),
            Err(Status::BadArgument)
        );
    }

    #[test]
    fn grpc_calls_and_streams_keep_their_state() {
        let mut state = ProxyState::default();
        let unary = state
            .grpc_call(b"grpc", b"svc.S", b"M", &[], b"m", 1000)
            .unwrap();
        assert_eq!(
            state.grpc_send(unary, b"x", false),
            Err(Status::BadArgument)
        );
        let stream = state.grpc_stream(b"grpc", b"svc.S", b"Watch", &[]).unwrap();
        assert_ne!(unary, stream);
        state.grpc_send(stream, b"a", false).unwrap();
        state.grpc_send(stream, b"b", true).unwrap();
        assert_eq!(
            state.grpc_send(stream, b"c", false),
            Err(Status::BadArgument)
        );
        assert_eq!(
            state.grpc_calls[1].messages(),
            [b"a".to_vec(), b"b".to_vec()]
        );
        state.grpc_cancel(stream).unwrap();
        assert_eq!(state.grpc_cancel(stream), Err(Status::NotFound));
        assert_eq!(state.get_status(), Err(Status::NotFound));
        state.clusters = Some(BTreeSet::new());
        assert_eq!(
            state.grpc_stream(b"grpc", b"svc.S", b"M", &[]),
            Err(Status::BadArgument)
        );
    }

    #[test]
    fn foreign_functions_answer_what_was_registered() {
        let mut state = ProxyState::default();
        assert_eq!(
            state.call_foreign_function(b"reverse", b"ab"),
            Err(Status::NotFound)
        );
        state.register_foreign_function(
            "reverse",
            Box::new(|arguments: &[u8]| arguments.iter().rev().copied().collect()),
        );
        assert_eq!(
            state.call_foreign_function(b"reverse", b"ab"),
            Ok(b"ba".to_vec())
        );
    }

    #[test]
    fn a_stream_sees_its_own_properties_before_the_proxys() {
        let mut state = ProxyState::default();
        state.streams.insert(2, StreamState::default());
        state.streams.insert(3, StreamState::default());
        state.set_property(b"route_name", b"global").unwrap();
        state.set_stream_property(2, b"route_name", b"r2").unwrap();
        state.current = 2;
        assert_eq!(state.get_property(b"route_name"), Ok(b"r2".to_vec()));
        state.current = 3;
        assert_eq!(state.get_property(b"route_name"), Ok(b"global".to_vec()));
        assert_eq!(state.get_property(b"cluster_name"), Err(Status::NotFound));
        assert_eq!(
            state.set_stream_property(9, b"route_name", b"x"),
            Err(Status::BadArgument)
        );
    }

    #[test]
    fn hostcalls_on_a_missing_stream_are_bad_arguments() {
        let mut state = ProxyState::default();
        assert_eq!(state.set_effective_context(9), Err(Status::BadArgument));
        assert_eq!(
            state.add_header_map_value(MapType::HttpRequestHeaders, b"a", b"b"),
            Err(Status::BadArgument)
        );
        assert_eq!(
            state.get_header_map_pairs(MapType::HttpCallResponseHeaders),
            Ok(Vec::new())
        );
        assert_eq!(
            state.continue_stream(StreamType::HttpRequest),
            Err(Status::BadArgument)
        );
        assert_eq!(
            state.get_buffer_bytes(BufferType::HttpCallResponseBody, 0, 10),
            Err(Status::NotFound)
        );
    }

    #[test]
    fn header_names_are_case_insensitive_and_kept_lower_case() {
        let mut state = ProxyState::default();
        state.streams.insert(2, StreamState::default());
        state.set_effective_context(2).unwrap();
        let map = MapType::HttpRequestHeaders;
        state.add_header_map_value(map, b"X-A", b"1").unwrap();
        state.add_header_map_value(map, b"x-a", b"2").unwrap();
        assert_eq!(state.get_header_map_value(map, b"X-a"), Ok(b"1".to_vec()));
        state.replace_header_map_value(map, b"X-A", b"3").unwrap();
        assert_eq!(
            state.get_header_map_pairs(map),
            Ok(vec![(b"x-a".to_vec(), b"3".to_vec())])
        );
        state.remove_header_map_value(map, b"X-A").unwrap();
        assert_eq!(
            state.get_header_map_value(map, b"x-a"),
            Err(Status::NotFound)
        );
        assert_eq!(
            state.get_header_map_pairs(MapType::Unknown(42)),
            Err(Status::BadArgument)
        );
    }
}
