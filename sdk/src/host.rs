//! The hostcalls the SDK makes, as one trait: the proxy-wasm ABI implements it inside a plugin,
//! and the testing API implements it natively. Everything above this module is host-agnostic.

use std::fmt;
use std::time::Duration;

use crate::headers::Headers;
use crate::runtime::ReplyParts;

pub use proxy_async_abi::Action;
/// A status the host returned instead of OK (`proxy_status_t`).
pub use proxy_async_abi::Status as HostStatus;
pub(crate) use proxy_async_abi::{BufferType, Direction, LogLevel, MapType, MetricType};

/// A hostcall the host refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostError {
    /// The hostcall, e.g. `proxy_http_call`.
    pub call: &'static str,
    /// What the host answered.
    pub status: HostStatus,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} returned {}", self.call, self.status)
    }
}

impl std::error::Error for HostError {}

/// Checks a raw status code returned by `call`.
#[cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "only the wasm ABI reads raw status codes")
)]
pub(crate) fn check(call: &'static str, code: u32) -> Result<(), HostError> {
    HostStatus::check(code).map_err(|status| HostError { call, status })
}

/// A duration in the ABI's milliseconds, saturating: 2^32 ms would wrap to 0 (no timeout at
/// all in Envoy).
pub(crate) fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// A tick period as `proxy_set_tick_period_milliseconds` takes it: whole milliseconds, at least
/// one (0 would stop the ticks).
#[cfg_attr(
    all(target_arch = "wasm32", target_env = "p2"),
    allow(
        dead_code,
        reason = "the component host ticks from the plugin's settings"
    )
)]
pub(crate) fn tick_period_ms(period: Duration) -> u32 {
    millis(period).max(1)
}

/// A call in flight on a host that answers calls as awaited values.
#[cfg(any(not(target_arch = "wasm32"), target_env = "p2"))]
pub(crate) type AwaitedCall =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<ReplyParts>, HostError>>>>;

/// A proxy-wasm host answers every call by callback: no awaited call exists there, and a
/// pending call (which every request paused on one keeps) has no room for one.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) type AwaitedCall = NoAwaitedCall;

/// The type of a value that cannot exist: an awaited call on a host that has none.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) enum NoAwaitedCall {}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
impl std::future::Future for NoAwaitedCall {
    type Output = Result<Option<ReplyParts>, HostError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match *self {}
    }
}

/// A sleep on a host that keeps time itself.
pub(crate) type AwaitedSleep = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Header pairs as the host holds them: names are text, values are bytes.
pub(crate) type Pairs = Vec<(String, Vec<u8>)>;

/// The host side of the proxy-wasm ABI, as far as the SDK uses it. Methods act on the host's
/// current ("effective") context, as the hostcalls do.
pub(crate) trait Host {
    fn log(&self, level: LogLevel, message: &str);
    /// The proxy's level: messages below it are dropped (and need not be formatted).
    fn log_level(&self) -> LogLevel;
    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError>;

    fn get_map(&self, map: MapType) -> Result<Pairs, HostError>;
    /// [`get_map`](Host::get_map) as [`Headers`]: a proxy-wasm host hands the map over in
    /// the wire format, which is kept as it came (one buffer, no allocation per pair).
    fn get_headers(&self, map: MapType) -> Result<Headers, HostError> {
        self.get_map(map).map(|pairs| Headers::from_pairs(&pairs))
    }
    fn get_map_value(&self, map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError>;
    fn set_map(&self, map: MapType, pairs: &[(&str, &[u8])]) -> Result<(), HostError>;
    fn add_map_value(&self, map: MapType, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn replace_map_value(&self, map: MapType, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn remove_map_value(&self, map: MapType, name: &str) -> Result<(), HostError>;

    /// A property of the current stream or the proxy (`proxy_get_property`), e.g.
    /// `["route_name"]`; `Ok(None)` when the proxy has no such property. Hosts without
    /// properties answer UNIMPLEMENTED.
    fn get_property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let _ = path;
        Err(HostError {
            call: "proxy_get_property",
            status: HostStatus::Unimplemented,
        })
    }

    /// Bytes `[start, start + max)` of a buffer; empty when the host has no such buffer now.
    fn get_buffer(
        &self,
        buffer: BufferType,
        start: usize,
        max: usize,
    ) -> Result<Vec<u8>, HostError>;
    /// `start == 0 && size == 0` prepends; `start >= len` appends; otherwise replaces the range.
    fn set_buffer(
        &self,
        buffer: BufferType,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError>;

    /// Dispatches an HTTP call and returns its token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError>;
    /// Sends an HTTP call whose response the host hands back as an awaited value (component
    /// hosts): `Ok(None)` is no response (timeout, reset), `Err` the host's refusal. `None`
    /// when the host answers calls by callback instead (proxy-wasm): then `http_call` it is.
    fn send_awaited(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<AwaitedCall> {
        let _ = (cluster, headers, body, timeout);
        None
    }
    /// Higress's `proxy_redis_init`: sets up the proxy's Redis client for the cluster in
    /// `upstream` (`cluster?db=..&..`). Empty `username`/`password`: none. UNIMPLEMENTED by
    /// default: hosts without the extension. The proxy-wasm build calls the import directly
    /// instead (see `redis::abi`).
    #[cfg_attr(
        all(target_arch = "wasm32", not(target_env = "p2")),
        allow(dead_code, reason = "the proxy-wasm build calls the import directly")
    )]
    fn redis_init(
        &self,
        upstream: &str,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(), HostError> {
        let _ = (upstream, username, password, timeout);
        Err(HostError {
            call: "proxy_redis_init",
            status: HostStatus::Unimplemented,
        })
    }
    /// Higress's `proxy_redis_call`: sends a RESP `query` to `cluster` and returns the token
    /// its `proxy_on_redis_call_response` carries. UNIMPLEMENTED by default.
    #[cfg_attr(
        all(target_arch = "wasm32", not(target_env = "p2")),
        allow(dead_code, reason = "the proxy-wasm build calls the import directly")
    )]
    fn redis_call(&self, cluster: &str, query: &[u8]) -> Result<u32, HostError> {
        let _ = (cluster, query);
        Err(HostError {
            call: "proxy_redis_call",
            status: HostStatus::Unimplemented,
        })
    }
    fn continue_stream(&self, direction: Direction) -> Result<(), HostError>;
    /// A sleep the host keeps time for itself (component hosts); `None` when sleeps run on the
    /// root context's tick instead (proxy-wasm).
    fn sleep_awaited(&self, duration: Duration) -> Option<AwaitedSleep> {
        let _ = duration;
        None
    }
    /// The proxy's clock (`proxy_get_current_time_nanoseconds`), nanoseconds since the epoch.
    fn now_nanos(&self) -> u64;
    /// Sets the root context's tick period (`proxy_set_tick_period_milliseconds`).
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError>;
    fn send_local_response(
        &self,
        status: u16,
        details: &str,
        body: &[u8],
        headers: &Headers,
    ) -> Result<(), HostError>;

    // Properties (writing), shared data and metrics. UNIMPLEMENTED by default: hosts without
    // them.

    /// `proxy_set_property`: sets `path` (Envoy: in the current stream's filter state).
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        let _ = (path, value);
        Err(HostError {
            call: "proxy_set_property",
            status: HostStatus::Unimplemented,
        })
    }
    /// `proxy_get_shared_data`: the value of `key` and its CAS; `Ok(None)` when absent.
    fn get_shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        let _ = key;
        Err(HostError {
            call: "proxy_get_shared_data",
            status: HostStatus::Unimplemented,
        })
    }
    /// `proxy_set_shared_data`: with a non-zero `cas`, CAS_MISMATCH unless it is current.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        let _ = (key, value, cas);
        Err(HostError {
            call: "proxy_set_shared_data",
            status: HostStatus::Unimplemented,
        })
    }
    /// `proxy_define_metric`: the id of metric `name` of `kind`.
    fn define_metric(&self, kind: crate::host::MetricType, name: &str) -> Result<u32, HostError> {
        let _ = (kind, name);
        Err(HostError {
            call: "proxy_define_metric",
            status: HostStatus::Unimplemented,
        })
    }
    /// `proxy_increment_metric`: adds `delta` to a counter or gauge.
    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        let _ = (id, delta);
        Err(HostError {
            call: "proxy_increment_metric",
            status: HostStatus::Unimplemented,
        })
    }
    /// `proxy_record_metric`: sets a gauge, or records a value in a histogram.
    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        let _ = (id, value);
        Err(HostError {
            call: "proxy_record_metric",
            status: HostStatus::Unimplemented,
        })
    }
    /// `proxy_get_metric`: the value of a counter or gauge.
    fn get_metric(&self, id: u32) -> Result<u64, HostError> {
        let _ = id;
        Err(HostError {
            call: "proxy_get_metric",
            status: HostStatus::Unimplemented,
        })
    }

    // gRPC, shared queues and foreign functions. UNIMPLEMENTED by default: hosts without
    // them.

    /// `proxy_grpc_call`: a unary call; the token its callbacks carry.
    fn grpc_call(&self, call: &GrpcRequest<'_>, message: &[u8]) -> Result<u32, HostError> {
        let _ = (call, message);
        Err(unimplemented("proxy_grpc_call"))
    }
    /// `proxy_grpc_stream`: opens a stream; the token its callbacks carry.
    fn grpc_stream(&self, call: &GrpcRequest<'_>) -> Result<u32, HostError> {
        let _ = call;
        Err(unimplemented("proxy_grpc_stream"))
    }
    /// `proxy_grpc_send`: one message on a stream; `end_stream` half-closes it.
    fn grpc_send(&self, token: u32, message: &[u8], end_stream: bool) -> Result<(), HostError> {
        let _ = (token, message, end_stream);
        Err(unimplemented("proxy_grpc_send"))
    }
    /// `proxy_grpc_cancel`: abandons a call or resets a stream; no callback comes after.
    fn grpc_cancel(&self, token: u32, stream: bool) -> Result<(), HostError> {
        let _ = (token, stream);
        Err(unimplemented("proxy_grpc_cancel"))
    }
    /// `proxy_grpc_close`: half-closes a stream (replies still come), abandons a call.
    fn grpc_close(&self, token: u32) -> Result<(), HostError> {
        let _ = token;
        Err(unimplemented("proxy_grpc_close"))
    }
    /// `proxy_get_status`: the gRPC status (code, message) of the closing call, readable in
    /// its close callback only.
    fn grpc_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        Err(unimplemented("proxy_get_status"))
    }
    /// `proxy_register_shared_queue`: creates (or finds) this VM's queue `name`.
    fn register_queue(&self, name: &str) -> Result<u32, HostError> {
        let _ = name;
        Err(unimplemented("proxy_register_shared_queue"))
    }
    /// `proxy_resolve_shared_queue`: the queue `name` of VM `vm_id`; NOT_FOUND if none.
    fn resolve_queue(&self, vm_id: &str, name: &str) -> Result<u32, HostError> {
        let _ = (vm_id, name);
        Err(unimplemented("proxy_resolve_shared_queue"))
    }
    /// `proxy_enqueue_shared_queue`.
    fn enqueue(&self, queue: u32, message: &[u8]) -> Result<(), HostError> {
        let _ = (queue, message);
        Err(unimplemented("proxy_enqueue_shared_queue"))
    }
    /// `proxy_dequeue_shared_queue`: the oldest message; `Ok(None)` when the queue is empty.
    fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, HostError> {
        let _ = queue;
        Err(unimplemented("proxy_dequeue_shared_queue"))
    }
    /// `proxy_call_foreign_function`: the proxy's extension `name`; NOT_FOUND if it has none.
    fn call_foreign_function(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, HostError> {
        let _ = (name, arguments);
        Err(unimplemented("proxy_call_foreign_function"))
    }
}

/// The value of pseudo-header `name` (`:method`, `:path`, ...) of a call's headers; empty when
/// absent. Component hosts take them apart from the other headers.
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
pub(crate) fn pseudo_header<'a>(headers: &[(&str, &'a str)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(key, _)| *key == name)
        .map_or("", |(_, value)| value)
}

/// What opens a gRPC call or stream.
pub(crate) struct GrpcRequest<'a> {
    pub(crate) cluster: &'a str,
    pub(crate) service: &'a str,
    pub(crate) method: &'a str,
    pub(crate) metadata: &'a [(&'a str, &'a [u8])],
    pub(crate) timeout: Duration,
}

/// The error of a hostcall the host does not offer.
pub(crate) fn unimplemented(call: &'static str) -> HostError {
    HostError {
        call,
        status: HostStatus::Unimplemented,
    }
}

/// The host the plugin runs on, as the build target decides it, in this one place: in a
/// proxy-wasm module, the proxy's imports themselves (a unit type, so that every hostcall is a
/// direct call and a stream keeps no handle); in the component build and natively (the test
/// host), the host given at run time.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) type HostHandle = crate::abi::AbiHost;

/// The host the plugin runs on (see the proxy-wasm build's twin).
#[cfg(not(all(target_arch = "wasm32", not(target_env = "p2"))))]
pub(crate) type HostHandle = std::rc::Rc<dyn Host>;

/// The host behind `host`, for code that serves every build alike: generic over it, that code
/// calls the proxy-wasm imports directly (no vtable, which would link every import into every
/// plugin).
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn backend(host: &HostHandle) -> &crate::abi::AbiHost {
    host
}

/// The host behind `host` (see the proxy-wasm build's twin).
#[cfg(not(all(target_arch = "wasm32", not(target_env = "p2"))))]
pub(crate) fn backend(host: &HostHandle) -> &dyn Host {
    &**host
}

/// The host behind `runtime`, for the features outside the core (gRPC, shared queues, foreign
/// functions).
pub(crate) fn host_of(runtime: &crate::runtime::Runtime) -> &(impl Host + ?Sized) {
    backend(&runtime.host)
}
