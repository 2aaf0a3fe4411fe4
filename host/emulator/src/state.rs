//! The proxy's state, and the hostcalls that read and change it.
//!
//! Every method here is what one hostcall does, on the context the host currently applies
//! hostcalls to (the callback's context, or the one `set_effective_context` chose). Effects the
//! proxy defers until the callback returns (resume, local reply) are queued, as Envoy does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::abi::{BufferType, LogLevel, MapType, MetricType, Side, Status};
use crate::redis::RedisState;

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
    Continue(u32, Side),
    Reply(u32, SentReply),
    Reset(u32),
}

pub(crate) struct CallRecord {
    pub(crate) call: Call,
    pub(crate) answered: bool,
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
    pub(crate) fn half(&mut self, side: Side) -> &mut Half {
        match side {
            Side::Request => &mut self.request,
            Side::Response => &mut self.response,
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
            MapType::RequestHeaders => Ok(&mut stream.request.headers),
            MapType::RequestTrailers => Ok(&mut stream.request.trailers),
            MapType::ResponseHeaders => Ok(&mut stream.response.headers),
            MapType::ResponseTrailers => Ok(&mut stream.response.trailers),
            _ => Err(Status::BadArgument),
        }
    }

    fn map(&mut self, map: MapType) -> Result<Pairs, Status> {
        match map {
            // Envoy answers OK with an empty map when there is no call response (a failed
            // call's callback, or outside the callback); plugins on the plain proxy-wasm crate
            // read it that way and would panic on anything else.
            MapType::CallResponseHeaders => Ok(self
                .call_response
                .as_ref()
                .map(|(headers, _, _)| headers.clone())
                .unwrap_or_default()),
            MapType::CallResponseTrailers => Ok(self
                .call_response
                .as_ref()
                .map(|(_, _, trailers)| trailers.clone())
                .unwrap_or_default()),
            MapType::GrpcInitialMetadata => {
                Ok(self.grpc_stage.initial_metadata.clone().unwrap_or_default())
            }
            MapType::GrpcTrailingMetadata => Ok(self
                .grpc_stage
                .trailing_metadata
                .clone()
                .unwrap_or_default()),
            _ => self.map_mut(map).cloned(),
        }
    }

    // ---- hostcalls --------------------------------------------------------------------------

    /// `proxy_log`.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        self.logs.push(LogRecord {
            level,
            message: message.to_string(),
        });
    }

    /// `proxy_get_log_level`.
    pub fn log_level(&self) -> LogLevel {
        self.log_level
    }

    /// `proxy_set_effective_context`: BAD_ARGUMENT for a context that does not exist (any more).
    pub fn set_effective_context(&mut self, context_id: u32) -> Result<(), Status> {
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

    /// `proxy_get_header_map_pairs`.
    pub fn get_map(&mut self, map: MapType) -> Result<Pairs, Status> {
        self.map(map)
    }

    /// `proxy_get_header_map_value`: NOT_FOUND when absent.
    pub fn get_map_value(&mut self, map: MapType, name: &str) -> Result<Vec<u8>, Status> {
        self.map(map)?
            .into_iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
            .ok_or(Status::NotFound)
    }

    /// `proxy_set_header_map_pairs`.
    pub fn set_map(&mut self, map: MapType, pairs: Pairs) -> Result<(), Status> {
        *self.map_mut(map)? = pairs
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        Ok(())
    }

    /// `proxy_add_header_map_value`.
    pub fn add_map_value(&mut self, map: MapType, name: &str, value: &[u8]) -> Result<(), Status> {
        self.map_mut(map)?
            .push((name.to_ascii_lowercase(), value.to_vec()));
        Ok(())
    }

    /// `proxy_replace_header_map_value`: replaces the first value, drops the others, adds the
    /// header when missing.
    pub fn replace_map_value(
        &mut self,
        map: MapType,
        name: &str,
        value: &[u8],
    ) -> Result<(), Status> {
        let pairs = self.map_mut(map)?;
        match pairs
            .iter()
            .position(|(key, _)| key.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                pairs[first].1 = value.to_vec();
                let mut index = 0;
                pairs.retain(|(key, _)| {
                    let keep = index <= first || !key.eq_ignore_ascii_case(name);
                    index += 1;
                    keep
                });
            }
            None => pairs.push((name.to_ascii_lowercase(), value.to_vec())),
        }
        Ok(())
    }

    /// `proxy_remove_header_map_value`: OK when missing.
    pub fn remove_map_value(&mut self, map: MapType, name: &str) -> Result<(), Status> {
        self.map_mut(map)?
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        Ok(())
    }

    /// `proxy_get_buffer_bytes`: bytes `[start, start + max)`; NOT_FOUND when there is no such
    /// buffer now.
    pub fn get_buffer(
        &mut self,
        buffer: BufferType,
        start: usize,
        max: usize,
    ) -> Result<Vec<u8>, Status> {
        let bytes: &[u8] = match buffer {
            BufferType::PluginConfiguration => &self.plugin_config,
            BufferType::VmConfiguration => &self.vm_config,
            BufferType::CallResponseBody => match &self.call_response {
                Some((_, body, _)) => body,
                None => return Err(Status::NotFound),
            },
            BufferType::GrpcMessage => match &self.grpc_stage.message {
                Some(message) => message,
                None => return Err(Status::NotFound),
            },
            BufferType::RedisCallResponse => match &self.redis.response {
                Some(reply) => reply,
                None => return Err(Status::NotFound),
            },
            BufferType::RequestBody => &self.current_stream()?.request.body,
            BufferType::ResponseBody => &self.current_stream()?.response.body,
            _ => return Err(Status::NotFound),
        };
        let start = start.min(bytes.len());
        let end = start.saturating_add(max).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }

    /// `proxy_set_buffer_bytes`: `start == 0 && size == 0` prepends, `start >= len` appends,
    /// anything else replaces `[start, start + size)`.
    pub fn set_buffer(
        &mut self,
        buffer: BufferType,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), Status> {
        let stream = self.current_stream()?;
        let body = match buffer {
            BufferType::RequestBody => &mut stream.request.body,
            BufferType::ResponseBody => &mut stream.response.body,
            _ => return Err(Status::BadArgument),
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

    /// `proxy_http_call`: BAD_ARGUMENT for a cluster the proxy does not know or a request
    /// without `:method`, `:path` or `:authority`, as Envoy.
    pub fn http_call(
        &mut self,
        cluster: &str,
        headers: Pairs,
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, Status> {
        let has = |name: &str| headers.iter().any(|(key, _)| key == name);
        if !(has(":method") && has(":path") && has(":authority")) {
            return Err(Status::BadArgument);
        }
        self.known_cluster(cluster)?;
        let token = self.next_token();
        self.calls.push(CallRecord {
            call: Call {
                token,
                context_id: self.current,
                cluster: cluster.to_string(),
                headers: headers
                    .into_iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                    .collect(),
                body: body.to_vec(),
                timeout,
            },
            answered: false,
        });
        Ok(token)
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

    /// `proxy_grpc_call`: a unary call; BAD_ARGUMENT for a cluster the proxy does not know.
    pub fn grpc_call(
        &mut self,
        cluster: &str,
        service: &str,
        method: &str,
        metadata: Pairs,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, Status> {
        self.open_grpc(
            cluster,
            service,
            method,
            metadata,
            vec![message.to_vec()],
            Some(timeout),
        )
    }

    /// `proxy_grpc_stream`: opens a stream; messages follow with `proxy_grpc_send`.
    pub fn grpc_stream(
        &mut self,
        cluster: &str,
        service: &str,
        method: &str,
        metadata: Pairs,
    ) -> Result<u32, Status> {
        self.open_grpc(cluster, service, method, metadata, Vec::new(), None)
    }

    fn open_grpc(
        &mut self,
        cluster: &str,
        service: &str,
        method: &str,
        metadata: Pairs,
        messages: Vec<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<u32, Status> {
        // An encoded `GrpcService` names its cluster; Envoy opens it without checking the
        // cluster (an unknown one fails the call later, UNAVAILABLE). A bare name is checked.
        let cluster = match grpc_service_cluster(cluster.as_bytes()) {
            Some(name) => name,
            None => {
                self.known_cluster(cluster)?;
                cluster.to_string()
            }
        };
        let token = self.next_token();
        self.grpc_calls.push(GrpcCall {
            token,
            context_id: self.current,
            cluster,
            service: service.to_string(),
            method: method.to_string(),
            metadata: metadata
                .into_iter()
                .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                .collect(),
            messages,
            timeout,
            half_closed: false,
            cancelled: false,
            closed: false,
        });
        Ok(token)
    }

    fn grpc_mut(&mut self, token: u32) -> Result<&mut GrpcCall, Status> {
        self.grpc_calls
            .iter_mut()
            .find(|call| call.token == token && !call.cancelled && !call.closed)
            .ok_or(Status::NotFound)
    }

    /// `proxy_grpc_send`: NOT_FOUND for an unknown, cancelled or closed stream; BAD_ARGUMENT
    /// for a unary call or a stream already half-closed.
    pub fn grpc_send(
        &mut self,
        token: u32,
        message: &[u8],
        end_stream: bool,
    ) -> Result<(), Status> {
        let call = self.grpc_mut(token)?;
        if call.timeout.is_some() || call.half_closed {
            return Err(Status::BadArgument);
        }
        call.messages.push(message.to_vec());
        call.half_closed = end_stream;
        Ok(())
    }

    /// `proxy_grpc_cancel`: no callback comes for it afterwards.
    pub fn grpc_cancel(&mut self, token: u32) -> Result<(), Status> {
        self.grpc_mut(token)?.cancelled = true;
        Ok(())
    }

    /// `proxy_grpc_close`: as Envoy 1.40, half-closes a stream (its replies still come) and
    /// abandons a unary call (no callback comes for it).
    pub fn grpc_close(&mut self, token: u32) -> Result<(), Status> {
        let call = self.grpc_mut(token)?;
        if call.timeout.is_some() {
            call.cancelled = true;
        } else {
            call.half_closed = true;
        }
        Ok(())
    }

    /// `proxy_get_status`: the gRPC status of the callback running now; NOT_FOUND outside.
    pub fn get_status(&self) -> Result<(u32, Vec<u8>), Status> {
        self.grpc_stage.status.clone().ok_or(Status::NotFound)
    }

    /// `proxy_continue_stream`: deferred until the callback returns.
    pub fn continue_stream(&mut self, side: Side) -> Result<(), Status> {
        let context_id = self.current;
        self.current_stream()?;
        self.deferred.push(Effect::Continue(context_id, side));
        Ok(())
    }

    /// `proxy_send_local_response`: deferred until the callback returns.
    pub fn send_local_response(
        &mut self,
        status: u16,
        details: &str,
        body: &[u8],
        headers: Pairs,
    ) -> Result<(), Status> {
        let context_id = self.current;
        self.current_stream()?;
        self.deferred.push(Effect::Reply(
            context_id,
            SentReply {
                status,
                headers: headers
                    .into_iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                    .collect(),
                body: body.to_vec(),
                details: details.to_string(),
            },
        ));
        Ok(())
    }

    /// `proxy_close_stream`: the proxy resets the stream after the callback returns (the client
    /// sees the connection reset; nothing more reaches the upstream).
    pub fn close_stream(&mut self) -> Result<(), Status> {
        let context_id = self.current;
        self.current_stream()?;
        self.deferred.push(Effect::Reset(context_id));
        Ok(())
    }

    /// Offers a foreign function to plugins, as Envoy offers its built-in ones.
    pub fn register_foreign_function(&mut self, name: &str, function: ForeignFunction) {
        self.foreign_functions.insert(name.to_string(), function);
    }

    /// `proxy_call_foreign_function`: NOT_FOUND for a name nobody registered, as in Envoy.
    pub fn call_foreign_function(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, Status> {
        let function = self.foreign_functions.get(name).ok_or(Status::NotFound)?;
        Ok(function(arguments))
    }

    /// `proxy_set_tick_period_milliseconds`: 0 stops the ticks.
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

    /// `proxy_get_shared_data`: the value and its CAS; NOT_FOUND when absent.
    pub fn get_shared_data(&self, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        self.shared_data.get(key).cloned().ok_or(Status::NotFound)
    }

    /// `proxy_set_shared_data`: with a non-zero `cas`, CAS_MISMATCH unless it is the current one.
    pub fn set_shared_data(&mut self, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
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

    /// `proxy_register_shared_queue`: the queue's id (the same for the same name).
    pub fn register_shared_queue(&mut self, name: &str) -> u32 {
        let vm_id = self.vm_id.clone();
        match self
            .queues
            .iter()
            .position(|queue| queue.vm_id == vm_id && queue.name == name)
        {
            Some(index) => queue_id(index),
            None => {
                self.queues.push(Queue {
                    vm_id,
                    name: name.to_string(),
                    items: VecDeque::new(),
                });
                queue_id(self.queues.len() - 1)
            }
        }
    }

    /// `proxy_resolve_shared_queue`: NOT_FOUND when no VM registered it.
    pub fn resolve_shared_queue(&self, vm_id: &str, name: &str) -> Result<u32, Status> {
        self.queues
            .iter()
            .position(|queue| queue.vm_id == vm_id && queue.name == name)
            .map(queue_id)
            .ok_or(Status::NotFound)
    }

    /// `proxy_enqueue_shared_queue`: the queue becomes ready (`on_queue_ready` follows).
    pub fn enqueue_shared_queue(&mut self, queue: u32, value: &[u8]) -> Result<(), Status> {
        let entry = self.queue_mut(queue)?;
        entry.items.push_back(value.to_vec());
        if !self.ready_queues.contains(&queue) {
            self.ready_queues.push(queue);
        }
        Ok(())
    }

    /// `proxy_dequeue_shared_queue`: EMPTY when there is nothing.
    pub fn dequeue_shared_queue(&mut self, queue: u32) -> Result<Vec<u8>, Status> {
        self.queue_mut(queue)?
            .items
            .pop_front()
            .ok_or(Status::Empty)
    }

    fn queue_mut(&mut self, queue: u32) -> Result<&mut Queue, Status> {
        let index = usize::try_from(queue.wrapping_sub(1)).map_err(|_| Status::NotFound)?;
        self.queues.get_mut(index).ok_or(Status::NotFound)
    }

    /// `proxy_define_metric`: the metric's id (the same for the same name and type).
    pub fn define_metric(&mut self, kind: MetricType, name: &str) -> u32 {
        match self
            .metrics
            .iter()
            .position(|metric| metric.name == name && metric.kind == kind)
        {
            Some(index) => queue_id(index),
            None => {
                self.metrics.push(Metric {
                    name: name.to_string(),
                    kind,
                    value: 0,
                });
                queue_id(self.metrics.len() - 1)
            }
        }
    }

    /// `proxy_increment_metric`: counters may not go down (BAD_ARGUMENT).
    pub fn increment_metric(&mut self, id: u32, delta: i64) -> Result<(), Status> {
        let metric = self.metric_mut(id)?;
        match metric.kind {
            MetricType::Counter if delta < 0 => Err(Status::BadArgument),
            MetricType::Histogram => Err(Status::BadArgument),
            _ => {
                metric.value = metric.value.saturating_add(delta);
                Ok(())
            }
        }
    }

    /// `proxy_record_metric`.
    pub fn record_metric(&mut self, id: u32, value: i64) -> Result<(), Status> {
        self.metric_mut(id)?.value = value;
        Ok(())
    }

    /// `proxy_get_metric`.
    pub fn get_metric(&self, id: u32) -> Result<i64, Status> {
        let index = usize::try_from(id.wrapping_sub(1)).map_err(|_| Status::NotFound)?;
        self.metrics
            .get(index)
            .map(|metric| metric.value)
            .ok_or(Status::NotFound)
    }

    /// The value of the metric named `name`, for tests.
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.metrics
            .iter()
            .find(|metric| metric.name == name)
            .map(|metric| metric.value)
    }

    fn metric_mut(&mut self, id: u32) -> Result<&mut Metric, Status> {
        let index = usize::try_from(id.wrapping_sub(1)).map_err(|_| Status::NotFound)?;
        self.metrics.get_mut(index).ok_or(Status::NotFound)
    }

    /// `proxy_get_property`: the path's segments joined with `\0`; NOT_FOUND when unset. On a
    /// stream, the stream's own properties come first (see
    /// [`set_stream_property`](ProxyState::set_stream_property)), then the proxy's.
    pub fn get_property(&self, path: &[u8]) -> Result<Vec<u8>, Status> {
        self.streams
            .get(&self.current)
            .and_then(|stream| stream.properties.get(path))
            .or_else(|| self.properties.get(path))
            .cloned()
            .ok_or(Status::NotFound)
    }

    /// Gives stream `context_id` a property of its own, as the proxy knows per request what
    /// `route_name` or `cluster_name` are; `path` as in [`get_property`](ProxyState::get_property).
    /// BAD_ARGUMENT for an unknown stream.
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

    /// `proxy_set_property`.
    pub fn set_property(&mut self, path: &[u8], value: &[u8]) {
        self.properties.insert(path.to_vec(), value.to_vec());
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
        let queue = state.register_shared_queue("jobs");
        assert_eq!(state.register_shared_queue("jobs"), queue);
        assert_eq!(state.resolve_shared_queue("", "jobs"), Ok(queue));
        assert_eq!(
            state.resolve_shared_queue("", "other"),
            Err(Status::NotFound)
        );
        assert_eq!(state.dequeue_shared_queue(queue), Err(Status::Empty));
        state.enqueue_shared_queue(queue, b"a").unwrap();
        assert_eq!(state.ready_queues, [queue]);
        assert_eq!(state.dequeue_shared_queue(queue), Ok(b"a".to_vec()));
        assert_eq!(state.enqueue_shared_queue(99, b"x"), Err(Status::NotFound));

        let counter = state.define_metric(MetricType::Counter, "requests");
        state.increment_metric(counter, 2).unwrap();
        assert_eq!(
            state.increment_metric(counter, -1),
            Err(Status::BadArgument)
        );
        assert_eq!(state.get_metric(counter), Ok(2));
        let gauge = state.define_metric(MetricType::Gauge, "inflight");
        state.record_metric(gauge, 5).unwrap();
        state.increment_metric(gauge, -2).unwrap();
        assert_eq!(state.metric("inflight"), Some(3));
    }

    #[test]
    fn grpc_calls_and_streams_keep_their_state() {
        let mut state = ProxyState::default();
        let unary = state
            .grpc_call(
                "grpc",
                "svc.S",
                "M",
                Vec::new(),
                b"m",
                Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!(
            state.grpc_send(unary, b"x", false),
            Err(Status::BadArgument)
        );
        let stream = state
            .grpc_stream("grpc", "svc.S", "Watch", Vec::new())
            .unwrap();
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
            state.grpc_stream("grpc", "svc.S", "M", Vec::new()),
            Err(Status::BadArgument)
        );
    }

    #[test]
    fn foreign_functions_answer_what_was_registered() {
        let mut state = ProxyState::default();
        assert_eq!(
            state.call_foreign_function("reverse", b"ab"),
            Err(Status::NotFound)
        );
        state.register_foreign_function(
            "reverse",
            Box::new(|arguments: &[u8]| arguments.iter().rev().copied().collect()),
        );
        assert_eq!(
            state.call_foreign_function("reverse", b"ab"),
            Ok(b"ba".to_vec())
        );
    }

    #[test]
    fn a_stream_sees_its_own_properties_before_the_proxys() {
        let mut state = ProxyState::default();
        state.streams.insert(2, StreamState::default());
        state.streams.insert(3, StreamState::default());
        state.set_property(b"route_name", b"global");
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
            state.add_map_value(MapType::RequestHeaders, "a", b"b"),
            Err(Status::BadArgument)
        );
        assert_eq!(state.get_map(MapType::CallResponseHeaders), Ok(Vec::new()));
        assert_eq!(
            state.continue_stream(Side::Request),
            Err(Status::BadArgument)
        );
    }
}
