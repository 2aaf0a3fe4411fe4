//! The hostcalls a plugin makes, as the [`Hostcalls`] trait.
//!
//! # Conventions
//!
//! * Data (keys, values, bodies, names) is bytes; nothing is assumed to be UTF-8.
//! * A map argument arrives decoded, as `&[(&[u8], &[u8])]` in the plugin's order; a map
//!   result is [`HeaderPairs`], in the host's order. Whoever carries them across a wasm
//!   boundary encodes and decodes them with [`map`](crate::map), and answers
//!   [`Status::BadArgument`] for a map that does not decode, without calling the method.
//! * Enum arguments are the [`codes`](crate::codes) enums; a code the ABI does not define
//!   arrives as their `Unknown(u32)` arm, and the implementer decides (usually
//!   [`Status::BadArgument`]).
//! * Every method but [`Hostcalls::log`] has a default: [`Status::Unimplemented`] for the calls
//!   that need proxy state, like the `ContextBase` defaults of Envoy's cpp-host, and the
//!   obvious answer for the clocks and the log level.
//! * A wasm host also routes WASI here: output on stdout to [`Hostcalls::log`] at
//!   [`LogLevel::Info`], on stderr at [`LogLevel::Error`]; the clocks to
//!   [`Hostcalls::get_current_time_nanoseconds`] and
//!   [`Hostcalls::get_monotonic_time_nanoseconds`].

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::codes::{BufferType, LogLevel, MapType, MetricType, Status, StreamType};

/// A decoded header (or metadata) map: `(name, value)` pairs in order, as bytes.
pub type HeaderPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The hostcalls a plugin makes: one method per `env.proxy_*` import of the proxy-wasm ABI
/// v0.2.1 (and Higress's Redis extension), named after the import without its `proxy_`
/// prefix, acting on the context the host applies hostcalls to now (the callback's, or the one
/// [`Hostcalls::set_effective_context`] chose).
///
/// An emulated proxy implements it; a wasm host routes a module's imports to it; a native
/// plugin driver calls it directly. See the [module documentation](self) for the conventions.
pub trait Hostcalls {
    /// `proxy_log(log_level, message_data, message_size)`: the plugin logs `message`.
    fn log(&mut self, level: LogLevel, message: &[u8]) -> Result<(), Status>;

    /// `proxy_get_log_level(return_log_level*)`: the proxy's current log level, so the plugin
    /// can skip formatting messages nobody sees. Default: [`LogLevel::Trace`].
    fn get_log_level(&mut self) -> Result<LogLevel, Status> {
        Ok(LogLevel::Trace)
    }

    /// `proxy_get_current_time_nanoseconds(return_time*)` (and WASI's realtime clock): the
    /// wall-clock time in nanoseconds since the Unix epoch. Default: the system clock.
    fn get_current_time_nanoseconds(&mut self) -> Result<u64, Status> {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Status::InternalFailure)?;
        u64::try_from(since_epoch.as_nanos()).map_err(|_| Status::InternalFailure)
    }

    /// Not a proxy-wasm hostcall: WASI's monotonic clock (`clock_time_get` with clock 1, 2 or
    /// 3), in nanoseconds from an arbitrary origin. Override it to give the plugin an emulated
    /// clock. Default: nanoseconds since the first call in this process.
    fn get_monotonic_time_nanoseconds(&mut self) -> Result<u64, Status> {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let elapsed = ORIGIN.get_or_init(Instant::now).elapsed();
        u64::try_from(elapsed.as_nanos()).map_err(|_| Status::InternalFailure)
    }

    /// `proxy_set_tick_period_milliseconds(tick_period)`: call `proxy_on_tick` on the current
    /// root context every `period_ms` milliseconds; 0 disables the timer.
    fn set_tick_period_milliseconds(&mut self, period_ms: u32) -> Result<(), Status> {
        let _ = period_ms;
        Err(Status::Unimplemented)
    }

    /// `proxy_set_effective_context(context_id)`: the following hostcalls act on
    /// `context_id` (e.g. a stream resumed from a root context's call response).
    /// [`Status::BadArgument`] if there is no such context.
    fn set_effective_context(&mut self, context_id: u32) -> Result<(), Status> {
        let _ = context_id;
        Err(Status::Unimplemented)
    }

    /// `proxy_done()`: the current context, which returned `false` from `proxy_on_done`, is now
    /// done and may be deleted.
    fn done(&mut self) -> Result<(), Status> {
        Err(Status::Unimplemented)
    }

    /// `proxy_get_buffer_bytes(buffer_id, start, max_size, return_data**, return_size*)`: up
    /// to `max_size` bytes of `buffer` from `start`. [`Status::NotFound`] if the buffer is not
    /// available in the current callback.
    fn get_buffer_bytes(
        &mut self,
        buffer: BufferType,
        start: u32,
        max_size: u32,
    ) -> Result<Vec<u8>, Status> {
        let _ = (buffer, start, max_size);
        Err(Status::Unimplemented)
    }

    /// `proxy_set_buffer_bytes(buffer_id, start, size, value_data, value_size)`: replaces
    /// `size` bytes of `buffer` from `start` with `value`. `start == 0 && size == 0` prepends;
    /// `start` at or past the end appends.
    fn set_buffer_bytes(
        &mut self,
        buffer: BufferType,
        start: u32,
        size: u32,
        value: &[u8],
    ) -> Result<(), Status> {
        let _ = (buffer, start, size, value);
        Err(Status::Unimplemented)
    }

    /// `proxy_get_buffer_status(buffer_id, return_buffer_size*, return_unused*)`: the size of
    /// `buffer` and a flags word (unused by the spec; 0).
    fn get_buffer_status(&mut self, buffer: BufferType) -> Result<(u32, u32), Status> {
        let _ = buffer;
        Err(Status::Unimplemented)
    }

    /// `proxy_get_header_map_size(map_id, return_serialized_pairs_size*)`: the size of `map`
    /// serialized. Default: serializes [`Hostcalls::get_header_map_pairs`] and measures it.
    fn get_header_map_size(&mut self, map: MapType) -> Result<u32, Status> {
        let pairs = self.get_header_map_pairs(map)?;
        u32::try_from(crate::map::encoded_len(&pairs)).map_err(|_| Status::SerializationFailure)
    }

    /// `proxy_get_header_map_pairs(map_id, return_data**, return_size*)`: every pair of `map`,
    /// in order (the glue serializes them).
    fn get_header_map_pairs(&mut self, map: MapType) -> Result<HeaderPairs, Status> {
        let _ = map;
        Err(Status::Unimplemented)
    }

    /// `proxy_set_header_map_pairs(map_id, pairs_data, pairs_size)`: replaces every pair of
    /// `map` with `pairs` (decoded by the glue).
    fn set_header_map_pairs(
        &mut self,
        map: MapType,
        pairs: &[(&[u8], &[u8])],
    ) -> Result<(), Status> {
        let _ = (map, pairs);
        Err(Status::Unimplemented)
    }

    /// `proxy_get_header_map_value(map_id, key_data, key_size, return_data**, return_size*)`:
    /// the value of `key` in `map`; [`Status::NotFound`] if absent.
    fn get_header_map_value(&mut self, map: MapType, key: &[u8]) -> Result<Vec<u8>, Status> {
        let _ = (map, key);
        Err(Status::Unimplemented)
    }

    /// `proxy_add_header_map_value(map_id, key_data, key_size, value_data, value_size)`: adds
    /// a `key: value` pair to `map`, keeping existing values of `key`.
    fn add_header_map_value(
        &mut self,
        map: MapType,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Status> {
        let _ = (map, key, value);
        Err(Status::Unimplemented)
    }

    /// `proxy_replace_header_map_value(map_id, key_data, key_size, value_data, value_size)`:
    /// sets `key` to `value` in `map`, replacing existing values, adding it if missing.
    fn replace_header_map_value(
        &mut self,
        map: MapType,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Status> {
        let _ = (map, key, value);
        Err(Status::Unimplemented)
    }

    /// `proxy_remove_header_map_value(map_id, key_data, key_size)`: removes every value of
    /// `key` from `map`; `Ok` even if it was missing.
    fn remove_header_map_value(&mut self, map: MapType, key: &[u8]) -> Result<(), Status> {
        let _ = (map, key);
        Err(Status::Unimplemented)
    }

    /// `proxy_continue_stream(stream_type)`: resumes a paused stream direction.
    fn continue_stream(&mut self, stream: StreamType) -> Result<(), Status> {
        let _ = stream;
        Err(Status::Unimplemented)
    }

    /// `proxy_close_stream(stream_type)`: closes (resets) a stream direction.
    fn close_stream(&mut self, stream: StreamType) -> Result<(), Status> {
        let _ = stream;
        Err(Status::Unimplemented)
    }

    /// `proxy_send_local_response(status_code, details_data, details_size, body_data,
    /// body_size, headers_data, headers_size, grpc_status)`: answers the current stream
    /// locally. `grpc_status` is -1 for a plain HTTP reply.
    fn send_local_response(
        &mut self,
        status_code: u32,
        details: &[u8],
        body: &[u8],
        headers: &[(&[u8], &[u8])],
        grpc_status: i32,
    ) -> Result<(), Status> {
        let _ = (status_code, details, body, headers, grpc_status);
        Err(Status::Unimplemented)
    }

    /// `proxy_get_status(return_status_code*, return_message_data**, return_message_size*)`:
    /// the status code and message of the last gRPC call or stream callback.
    fn get_status(&mut self) -> Result<(u32, Vec<u8>), Status> {
        Err(Status::Unimplemented)
    }

    /// `proxy_http_call(upstream_data, upstream_size, headers_data, headers_size, body_data,
    /// body_size, trailers_data, trailers_size, timeout_ms, return_call_id*)`: dispatches an
    /// HTTP call to the cluster `upstream`; returns the call id that
    /// `proxy_on_http_call_response` will carry. Envoy answers [`Status::BadArgument`] for an
    /// unknown cluster or a missing `:authority`, `:method` or `:path`.
    fn http_call(
        &mut self,
        upstream: &[u8],
        headers: &[(&[u8], &[u8])],
        body: &[u8],
        trailers: &[(&[u8], &[u8])],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        let _ = (upstream, headers, body, trailers, timeout_ms);
        Err(Status::Unimplemented)
    }

    /// `proxy_redis_init(upstream_data, upstream_size, username_data, username_size,
    /// password_data, password_size, timeout_ms)`, Higress's extension: sets up the Redis
    /// client of the cluster in `upstream` (`cluster?db=N&buffer_flush_timeout=..&..`).
    /// Empty `username`/`password`: none.
    fn redis_init(
        &mut self,
        upstream: &[u8],
        username: &[u8],
        password: &[u8],
        timeout_ms: u32,
    ) -> Result<(), Status> {
        let _ = (upstream, username, password, timeout_ms);
        Err(Status::Unimplemented)
    }

    /// `proxy_redis_call(upstream_data, upstream_size, query_data, query_size,
    /// return_call_id*)`, Higress's extension: sends a RESP `query` to the cluster
    /// `upstream`; returns the id `proxy_on_redis_call_response` will carry.
    fn redis_call(&mut self, upstream: &[u8], query: &[u8]) -> Result<u32, Status> {
        let _ = (upstream, query);
        Err(Status::Unimplemented)
    }

    /// `proxy_grpc_call(upstream…, service…, method…, initial_metadata…, message…, timeout,
    /// return_call_id*)`: starts a unary gRPC call; returns its id.
    #[allow(clippy::too_many_arguments, reason = "one argument per ABI parameter")]
    fn grpc_call(
        &mut self,
        upstream: &[u8],
        service: &[u8],
        method: &[u8],
        initial_metadata: &[(&[u8], &[u8])],
        message: &[u8],
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        let _ = (
            upstream,
            service,
            method,
            initial_metadata,
            message,
            timeout_ms,
        );
        Err(Status::Unimplemented)
    }

    /// `proxy_grpc_stream(upstream…, service…, method…, initial_metadata…,
    /// return_stream_id*)`: opens a gRPC stream; returns its id.
    fn grpc_stream(
        &mut self,
        upstream: &[u8],
        service: &[u8],
        method: &[u8],
        initial_metadata: &[(&[u8], &[u8])],
    ) -> Result<u32, Status> {
        let _ = (upstream, service, method, initial_metadata);
        Err(Status::Unimplemented)
    }

    /// `proxy_grpc_send(stream_id, message_data, message_size, end_stream)`: sends a message
    /// on a gRPC stream.
    fn grpc_send(
        &mut self,
        stream_id: u32,
        message: &[u8],
        end_stream: bool,
    ) -> Result<(), Status> {
        let _ = (stream_id, message, end_stream);
        Err(Status::Unimplemented)
    }

    /// `proxy_grpc_cancel(call_or_stream_id)`: cancels a gRPC call or stream.
    fn grpc_cancel(&mut self, id: u32) -> Result<(), Status> {
        let _ = id;
        Err(Status::Unimplemented)
    }

    /// `proxy_grpc_close(call_or_stream_id)`: closes a gRPC call or stream.
    fn grpc_close(&mut self, id: u32) -> Result<(), Status> {
        let _ = id;
        Err(Status::Unimplemented)
    }

    /// `proxy_get_shared_data(key_data, key_size, return_value_data**, return_value_size*,
    /// return_cas*)`: the value of `key` in the VM-wide shared store and its CAS value;
    /// [`Status::NotFound`] if absent.
    fn get_shared_data(&mut self, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        let _ = key;
        Err(Status::Unimplemented)
    }

    /// `proxy_set_shared_data(key_data, key_size, value_data, value_size, cas)`: sets `key`
    /// to `value`; with `cas != 0`, only if the current CAS value is `cas`
    /// ([`Status::CasMismatch`] otherwise).
    fn set_shared_data(&mut self, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
        let _ = (key, value, cas);
        Err(Status::Unimplemented)
    }

    /// `proxy_register_shared_queue(name_data, name_size, return_queue_id*)`: creates (or
    /// finds) this VM's queue `name`; returns its id.
    fn register_shared_queue(&mut self, name: &[u8]) -> Result<u32, Status> {
        let _ = name;
        Err(Status::Unimplemented)
    }

    /// `proxy_resolve_shared_queue(vm_id_data, vm_id_size, name_data, name_size,
    /// return_queue_id*)`: the id of queue `name` of VM `vm_id`; [`Status::NotFound`] if none.
    fn resolve_shared_queue(&mut self, vm_id: &[u8], name: &[u8]) -> Result<u32, Status> {
        let _ = (vm_id, name);
        Err(Status::Unimplemented)
    }

    /// `proxy_enqueue_shared_queue(queue_id, value_data, value_size)`: appends `value` to a
    /// queue.
    fn enqueue_shared_queue(&mut self, queue_id: u32, value: &[u8]) -> Result<(), Status> {
        let _ = (queue_id, value);
        Err(Status::Unimplemented)
    }

    /// `proxy_dequeue_shared_queue(queue_id, return_value_data**, return_value_size*)`: takes
    /// the oldest value of a queue; [`Status::Empty`] if there is none.
    fn dequeue_shared_queue(&mut self, queue_id: u32) -> Result<Vec<u8>, Status> {
        let _ = queue_id;
        Err(Status::Unimplemented)
    }

    /// `proxy_define_metric(metric_type, name_data, name_size, return_metric_id*)`: defines
    /// (or finds) a metric; returns its id.
    fn define_metric(&mut self, metric_type: MetricType, name: &[u8]) -> Result<u32, Status> {
        let _ = (metric_type, name);
        Err(Status::Unimplemented)
    }

    /// `proxy_record_metric(metric_id, i64 value)`: sets a gauge or records a histogram
    /// value. The guest passes an i64 (the Rust SDK casts its `u64`).
    fn record_metric(&mut self, metric_id: u32, value: i64) -> Result<(), Status> {
        let _ = (metric_id, value);
        Err(Status::Unimplemented)
    }

    /// `proxy_increment_metric(metric_id, i64 delta)`: adds `delta` to a counter or gauge.
    fn increment_metric(&mut self, metric_id: u32, delta: i64) -> Result<(), Status> {
        let _ = (metric_id, delta);
        Err(Status::Unimplemented)
    }

    /// `proxy_get_metric(metric_id, return_value*)`: the current value of a metric.
    fn get_metric(&mut self, metric_id: u32) -> Result<u64, Status> {
        let _ = metric_id;
        Err(Status::Unimplemented)
    }

    /// `proxy_get_property(path_data, path_size, return_value_data**, return_value_size*)`:
    /// the value of a property. `path` is raw: its segments joined with `\0` (split it with
    /// `path.split(|byte| *byte == 0)`). [`Status::NotFound`] if absent.
    fn get_property(&mut self, path: &[u8]) -> Result<Vec<u8>, Status> {
        let _ = path;
        Err(Status::Unimplemented)
    }

    /// `proxy_set_property(path_data, path_size, value_data, value_size)`: sets a property;
    /// `path` as in [`Hostcalls::get_property`].
    fn set_property(&mut self, path: &[u8], value: &[u8]) -> Result<(), Status> {
        let _ = (path, value);
        Err(Status::Unimplemented)
    }

    /// `proxy_call_foreign_function(name_data, name_size, arguments_data, arguments_size,
    /// return_results_data**, return_results_size*)`: calls a host extension function;
    /// [`Status::NotFound`] if the host has no function `name`.
    fn call_foreign_function(&mut self, name: &[u8], arguments: &[u8]) -> Result<Vec<u8>, Status> {
        let _ = (name, arguments);
        Err(Status::Unimplemented)
    }
}

/// The bytes `[start, start + max)` of a buffer of `len` bytes that exist, as
/// `proxy_get_buffer_bytes` hands them over: cut at the end, empty past it.
pub fn buffer_window(len: usize, start: usize, max: usize) -> core::ops::Range<usize> {
    let start = start.min(len);
    start..start.saturating_add(max).min(len)
}

/// `proxy_set_buffer_bytes` on `buffer`: `start == 0 && size == 0` prepends `data`,
/// `start >= len` appends it, anything else replaces `[start, start + size)` with it.
pub fn edit_buffer(buffer: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) {
    if start == 0 && size == 0 {
        buffer.splice(0..0, data.iter().copied());
    } else if start >= buffer.len() {
        buffer.extend_from_slice(data);
    } else {
        let end = start.saturating_add(size).min(buffer.len());
        buffer.splice(start..end, data.iter().copied());
    }
}
