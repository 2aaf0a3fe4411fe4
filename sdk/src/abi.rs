//! The proxy-wasm ABI's hostcalls: the host imports the SDK calls, each checked and safe to
//! call with anything (a status the ABI does not define is an error, a map that does not decode
//! is reported, never a panic). The module's exports are in `exports`.

use std::ptr::null_mut;
use std::time::Duration;

use proxy_async_abi::map;

use crate::headers::Headers;

use crate::host::{
    BufferType, Direction, GrpcRequest, Host, HostError, HostStatus, LogLevel, MapType, MetricType,
    Pairs, check, tick_period_ms,
};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, data: *const u8, size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_call_foreign_function(
        name_data: *const u8,
        name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        return_results_data: *mut *mut u8,
        return_results_size: *mut usize,
    ) -> u32;
    fn proxy_get_status(
        return_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    ) -> u32;
    fn proxy_register_shared_queue(
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_resolve_shared_queue(
        vm_id_data: *const u8,
        vm_id_size: usize,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_milliseconds: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_grpc_call(
        upstream_data: *const u8,
        upstream_size: usize,
        service_name_data: *const u8,
        service_name_size: usize,
        method_name_data: *const u8,
        method_name_size: usize,
        initial_metadata_data: *const u8,
        initial_metadata_size: usize,
        message_data: *const u8,
        message_size: usize,
        timeout_milliseconds: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_grpc_stream(
        upstream_data: *const u8,
        upstream_size: usize,
        service_name_data: *const u8,
        service_name_size: usize,
        method_name_data: *const u8,
        method_name_size: usize,
        initial_metadata_data: *const u8,
        initial_metadata_size: usize,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_grpc_send(
        token: u32,
        message_data: *const u8,
        message_size: usize,
        end_stream: u32,
    ) -> u32;
    fn proxy_grpc_cancel(token: u32) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_metric_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    // Envoy (proxy-wasm-cpp-host) reads the value as a u64; the wasm type is i64 either way.
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    fn proxy_grpc_close(token: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

/// Takes ownership of bytes the host wrote into guest memory for a `return_data` out-parameter.
///
/// # Safety
/// `data` is null, or was returned by the host for this call: the host allocated it with
/// `proxy_on_memory_allocate(size)` (`exports::memory_allocate`: an allocation of the layout of
/// a `Vec<u8>` of capacity `size`) and wrote `size` bytes to it, and nothing else owns it.
pub(crate) unsafe fn take_host_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `data` is a leaked `Vec<u8>` allocation of capacity
    // `size` holding `size` initialized bytes, owned by no one else.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// The host is the proxy this module runs in.
#[derive(Clone)]
pub(crate) struct AbiHost;

impl AbiHost {
    fn get_map_raw(map: MapType) -> Result<Vec<u8>, HostError> {
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: the out-pointers are valid for writes for the duration of the call.
        let code = unsafe { proxy_get_header_map_pairs(map.code(), &mut data, &mut size) };
        check("proxy_get_header_map_pairs", code)?;
        // SAFETY: on OK the host wrote an allocation of `size` bytes made through
        // `proxy_on_memory_allocate` into `data`, and hands it over to us.
        Ok(unsafe { take_host_bytes(data, size) })
    }
}

impl Host for AbiHost {
    fn log(&self, level: LogLevel, message: &str) {
        log_message(level, message);
    }

    fn log_level(&self) -> LogLevel {
        let mut level = 0;
        // SAFETY: the out-pointer is valid for a write during the call.
        let code = unsafe { proxy_get_log_level(&mut level) };
        if code != 0 {
            return LogLevel::Info;
        }
        LogLevel::from_code(level)
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        // SAFETY: plain value argument.
        let code = unsafe { proxy_set_effective_context(context_id) };
        check("proxy_set_effective_context", code)
    }

    fn get_map(&self, map: MapType) -> Result<Pairs, HostError> {
        let raw = Self::get_map_raw(map)?;
        match map::decode(&raw) {
            // Names that are not UTF-8 are decoded lossily (proxies only emit token
            // characters); values stay bytes.
            Ok(pairs) => Ok(pairs
                .into_iter()
                .map(|(name, value)| (String::from_utf8_lossy(name).into_owned(), value.to_vec()))
                .collect()),
            Err(error) => {
                log::warn!("{error}");
                Err(HostError {
                    call: "proxy_get_header_map_pairs",
                    status: HostStatus::SerializationFailure,
                })
            }
        }
    }

    fn get_headers(&self, map: MapType) -> Result<Headers, HostError> {
        let raw = Self::get_map_raw(map)?;
        match map::EncodedMap::new(raw) {
            Ok(map) => Ok(Headers::from_map(map)),
            Err(error) => {
                log::warn!("{error}");
                Err(HostError {
                    call: "proxy_get_header_map_pairs",
                    status: HostStatus::SerializationFailure,
                })
            }
        }
    }

    fn get_map_value(&self, map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: `name` is valid for reads and the out-pointers for writes during the call.
        let code = unsafe {
            proxy_get_header_map_value(map.code(), name.as_ptr(), name.len(), &mut data, &mut size)
        };
        match HostStatus::from_code(code) {
            // SAFETY: on OK the host handed us an allocation of `size` bytes (see `take_host_bytes`).
            HostStatus::Ok => Ok(Some(unsafe { take_host_bytes(data, size) })),
            HostStatus::NotFound => Ok(None),
            status => Err(HostError {
                call: "proxy_get_header_map_value",
                status,
            }),
        }
    }

    fn get_property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        // The ABI's path: the segments, each followed by NUL but the last.
        let path = path.join("\0");
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: `path` is valid for reads and the out-pointers for writes during the call.
        let code = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
        match HostStatus::from_code(code) {
            // SAFETY: on OK the host handed us an allocation of `size` bytes (see `take_host_bytes`).
            HostStatus::Ok => Ok(Some(unsafe { take_host_bytes(data, size) })),
            HostStatus::NotFound => Ok(None),
            status => Err(HostError {
                call: "proxy_get_property",
                status,
            }),
        }
    }

    fn set_map(&self, map: MapType, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        let encoded = map::encode(pairs);
        // SAFETY: `encoded` is valid for reads of its length during the call.
        let code =
            unsafe { proxy_set_header_map_pairs(map.code(), encoded.as_ptr(), encoded.len()) };
        check("proxy_set_header_map_pairs", code)
    }

    fn add_map_value(&self, map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
        // SAFETY: `name` and `value` are valid for reads of their lengths during the call.
        let code = unsafe {
            proxy_add_header_map_value(
                map.code(),
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        };
        check("proxy_add_header_map_value", code)
    }

    fn replace_map_value(&self, map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
        // SAFETY: `name` and `value` are valid for reads of their lengths during the call.
        let code = unsafe {
            proxy_replace_header_map_value(
                map.code(),
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        };
        check("proxy_replace_header_map_value", code)
    }

    fn remove_map_value(&self, map: MapType, name: &str) -> Result<(), HostError> {
        // SAFETY: `name` is valid for reads of its length during the call.
        let code = unsafe { proxy_remove_header_map_value(map.code(), name.as_ptr(), name.len()) };
        check("proxy_remove_header_map_value", code)
    }

    fn get_buffer(
        &self,
        buffer: BufferType,
        start: usize,
        max: usize,
    ) -> Result<Vec<u8>, HostError> {
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: the out-pointers are valid for writes during the call.
        let code =
            unsafe { proxy_get_buffer_bytes(buffer.code(), start, max, &mut data, &mut size) };
        match HostStatus::from_code(code) {
            // SAFETY: on OK the host handed us an allocation of `size` bytes (see `take_host_bytes`).
            HostStatus::Ok => Ok(unsafe { take_host_bytes(data, size) }),
            // No such buffer now (e.g. no body): that is an empty body, not an error.
            HostStatus::NotFound => Ok(Vec::new()),
            status => Err(HostError {
                call: "proxy_get_buffer_bytes",
                status,
            }),
        }
    }

    fn set_buffer(
        &self,
        buffer: BufferType,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError> {
        // SAFETY: `data` is valid for reads of its length during the call.
        let code = unsafe {
            proxy_set_buffer_bytes(buffer.code(), start, size, data.as_ptr(), data.len())
        };
        check("proxy_set_buffer_bytes", code)
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let headers = map::encode(headers);
        let trailers = map::encode::<&str, &str>(&[]);
        let mut token = 0;
        // SAFETY: every pointer is valid for reads of its length, `token` for a write, during
        // the call.
        let code = unsafe {
            proxy_http_call(
                cluster.as_ptr(),
                cluster.len(),
                headers.as_ptr(),
                headers.len(),
                body.as_ptr(),
                body.len(),
                trailers.as_ptr(),
                trailers.len(),
                timeout_ms(timeout),
                &mut token,
            )
        };
        check("proxy_http_call", code).map(|()| token)
    }

    fn continue_stream(&self, direction: Direction) -> Result<(), HostError> {
        // SAFETY: plain value argument.
        let code = unsafe { proxy_continue_stream(direction.stream_type().code()) };
        check("proxy_continue_stream", code)
    }

    fn now_nanos(&self) -> u64 {
        let mut now = 0u64;
        // SAFETY: `now` is a valid, writable u64 for the call.
        let code = unsafe { proxy_get_current_time_nanoseconds(&mut now) };
        if code != 0 {
            log::warn!("proxy_get_current_time_nanoseconds returned {code}");
        }
        now
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        // SAFETY: plain value argument.
        let code = unsafe { proxy_set_tick_period_milliseconds(tick_period_ms(period)) };
        check("proxy_set_tick_period_milliseconds", code)
    }

    fn send_local_response(
        &self,
        status: u16,
        details: &str,
        body: &[u8],
        headers: &Headers,
    ) -> Result<(), HostError> {
        // Kept encoded by the reply (an empty map is zero bytes, spec §3.4).
        let headers = headers.encoded();
        // SAFETY: every pointer is valid for reads of its length during the call.
        let code = unsafe {
            proxy_send_local_response(
                u32::from(status),
                details.as_ptr(),
                details.len(),
                body.as_ptr(),
                body.len(),
                headers.as_ptr(),
                headers.len(),
                -1,
            )
        };
        check("proxy_send_local_response", code)
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        // The ABI's path: the segments, each followed by NUL but the last.
        let path = path.join("\0");
        // SAFETY: `path` and `value` are valid for reads of their lengths during the call.
        let code =
            unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) };
        check("proxy_set_property", code)
    }

    fn get_shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        let mut data = null_mut();
        let mut size = 0;
        let mut cas = 0;
        // SAFETY: `key` is valid for reads of its length and the out-pointers for writes
        // during the call.
        let code = unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        match code {
            // SAFETY: on OK the host handed us an allocation of `size` bytes made through
            // `proxy_on_memory_allocate` (see `take_host_bytes`).
            0 => Ok(Some((unsafe { take_host_bytes(data, size) }, cas))),
            1 => Ok(None),
            other => check("proxy_get_shared_data", other).map(|()| None),
        }
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        // SAFETY: `key` and `value` are valid for reads of their lengths during the call.
        let code = unsafe {
            proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
        };
        check("proxy_set_shared_data", code)
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, HostError> {
        let mut id = 0;
        // SAFETY: `name` is valid for reads of its length and `id` for a write during the call.
        let code = unsafe { proxy_define_metric(kind.code(), name.as_ptr(), name.len(), &mut id) };
        check("proxy_define_metric", code).map(|()| id)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        // SAFETY: plain value arguments.
        let code = unsafe { proxy_increment_metric(id, delta) };
        check("proxy_increment_metric", code)
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        // SAFETY: plain value arguments.
        let code = unsafe { proxy_record_metric(id, value) };
        check("proxy_record_metric", code)
    }

    fn get_metric(&self, id: u32) -> Result<u64, HostError> {
        let mut value = 0;
        // SAFETY: `value` is valid for a write during the call.
        let code = unsafe { proxy_get_metric(id, &mut value) };
        check("proxy_get_metric", code).map(|()| value)
    }

    // gRPC and shared queues.

    // The upstream is given as an encoded `GrpcService` (see `grpc::upstream`).
    fn grpc_call(&self, call: &GrpcRequest<'_>, message: &[u8]) -> Result<u32, HostError> {
        let upstream = crate::grpc::upstream(call.cluster);
        let metadata = map::encode(call.metadata);
        let mut token = 0;
        // SAFETY: every pointer is valid for reads of its length, `token` for a write, during
        // the call.
        let code = unsafe {
            proxy_grpc_call(
                upstream.as_ptr(),
                upstream.len(),
                call.service.as_ptr(),
                call.service.len(),
                call.method.as_ptr(),
                call.method.len(),
                metadata.as_ptr(),
                metadata.len(),
                message.as_ptr(),
                message.len(),
                timeout_ms(call.timeout),
                &mut token,
            )
        };
        check("proxy_grpc_call", code).map(|()| token)
    }

    fn grpc_stream(&self, call: &GrpcRequest<'_>) -> Result<u32, HostError> {
        let upstream = crate::grpc::upstream(call.cluster);
        let metadata = map::encode(call.metadata);
        let mut token = 0;
        // SAFETY: every pointer is valid for reads of its length, `token` for a write, during
        // the call.
        let code = unsafe {
            proxy_grpc_stream(
                upstream.as_ptr(),
                upstream.len(),
                call.service.as_ptr(),
                call.service.len(),
                call.method.as_ptr(),
                call.method.len(),
                metadata.as_ptr(),
                metadata.len(),
                &mut token,
            )
        };
        check("proxy_grpc_stream", code).map(|()| token)
    }

    fn grpc_send(&self, token: u32, message: &[u8], end_stream: bool) -> Result<(), HostError> {
        // SAFETY: `message` is valid for reads of its length during the call.
        let code = unsafe {
            proxy_grpc_send(
                token,
                message.as_ptr(),
                message.len(),
                u32::from(end_stream),
            )
        };
        check("proxy_grpc_send", code)
    }

    /// Cancels a gRPC call or stream (one hostcall for both, whichever `_stream` says).
    fn grpc_cancel(&self, token: u32, _stream: bool) -> Result<(), HostError> {
        // SAFETY: plain value argument.
        let code = unsafe { proxy_grpc_cancel(token) };
        check("proxy_grpc_cancel", code)
    }

    fn call_foreign_function(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, HostError> {
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: `name` and `arguments` are valid for reads, the out-pointers for writes,
        // during the call.
        let code = unsafe {
            proxy_call_foreign_function(
                name.as_ptr(),
                name.len(),
                arguments.as_ptr(),
                arguments.len(),
                &mut data,
                &mut size,
            )
        };
        check("proxy_call_foreign_function", code)?;
        // SAFETY: on OK the host handed us an allocation of `size` bytes (see `take_host_bytes`).
        Ok(unsafe { take_host_bytes(data, size) })
    }

    fn grpc_close(&self, token: u32) -> Result<(), HostError> {
        // SAFETY: plain value argument.
        let code = unsafe { proxy_grpc_close(token) };
        check("proxy_grpc_close", code)
    }

    fn grpc_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        let mut code = 0;
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: the out-pointers are valid for writes during the call.
        let result = unsafe { proxy_get_status(&mut code, &mut data, &mut size) };
        check("proxy_get_status", result)?;
        // SAFETY: on OK the host handed us an allocation of `size` bytes (see `take_host_bytes`).
        Ok((code, unsafe { take_host_bytes(data, size) }))
    }

    fn register_queue(&self, name: &str) -> Result<u32, HostError> {
        let mut id = 0;
        // SAFETY: `name` is valid for reads and `id` for a write during the call.
        let code = unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) };
        check("proxy_register_shared_queue", code).map(|()| id)
    }

    fn resolve_queue(&self, vm_id: &str, name: &str) -> Result<u32, HostError> {
        let mut id = 0;
        // SAFETY: both strings are valid for reads and `id` for a write during the call.
        let code = unsafe {
            proxy_resolve_shared_queue(
                vm_id.as_ptr(),
                vm_id.len(),
                name.as_ptr(),
                name.len(),
                &mut id,
            )
        };
        check("proxy_resolve_shared_queue", code).map(|()| id)
    }

    fn enqueue(&self, queue: u32, message: &[u8]) -> Result<(), HostError> {
        // SAFETY: `message` is valid for reads of its length during the call.
        let code = unsafe { proxy_enqueue_shared_queue(queue, message.as_ptr(), message.len()) };
        check("proxy_enqueue_shared_queue", code)
    }

    fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, HostError> {
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: the out-pointers are valid for writes during the call.
        let code = unsafe { proxy_dequeue_shared_queue(queue, &mut data, &mut size) };
        match HostStatus::from_code(code) {
            // SAFETY: on OK the host handed us an allocation of `size` bytes (see `take_host_bytes`).
            HostStatus::Ok => Ok(Some(unsafe { take_host_bytes(data, size) })),
            HostStatus::Empty => Ok(None),
            status => Err(HostError {
                call: "proxy_dequeue_shared_queue",
                status,
            }),
        }
    }
}

/// Writes `message` to the proxy's log at `level`.
pub(crate) fn log_message(level: LogLevel, message: &str) {
    // SAFETY: `message` is valid for reads of its length during the call.
    unsafe { proxy_log(level.code(), message.as_ptr(), message.len()) };
}

/// A timeout in the ABI's milliseconds, saturated: 2^32 ms cast with `as` would wrap to 0, no
/// timeout at all in Envoy.
fn timeout_ms(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)
}
