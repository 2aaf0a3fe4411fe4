//! The proxy-wasm ABI side: host imports, and the contexts registered with the `proxy-wasm`
//! crate's dispatcher (which owns the module's `proxy_on_*` exports).
//!
//! The SDK declares the hostcalls it reads through itself instead of using
//! `proxy_wasm::hostcalls`: those wrappers panic on statuses they do not expect and on header
//! maps they cannot decode, and a panic kills the VM. HTTP calls still go through
//! `proxy_wasm::hostcalls::dispatch_http_call`, because the crate's dispatcher only routes a
//! call's response to contexts for tokens it registered itself.

use std::cell::RefCell;
use std::ptr::null_mut;
use std::rc::{Rc, Weak};
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as AbiAction, ContextType};

use crate::driver::Driver;
use proxy_async_abi::map;

use crate::host::{
    Action, BufferType, Direction, GrpcRequest, Host, HostError, HostStatus, LogLevel, MapType,
    Pairs, check, tick_period_ms,
};
use crate::plugin::Plugin;
use crate::runtime::{Phase, Runtime};

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
/// `proxy_on_memory_allocate(size)` (the `proxy-wasm` crate's allocator, which leaks a
/// `Vec<u8>` of capacity `size`) and wrote `size` bytes to it, and nothing else owns it.
pub(crate) unsafe fn take_host_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller guarantees `data` is a leaked `Vec<u8>` allocation of capacity
    // `size` holding `size` initialized bytes, owned by no one else.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// The host is the proxy this module runs in.
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
        // SAFETY: `message` is valid for reads of its length during the call.
        unsafe { proxy_log(level.code(), message.as_ptr(), message.len()) };
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
        let body = (!body.is_empty()).then_some(body);
        // The crate casts the milliseconds to u32 with `as`: 2^32 ms would wrap to 0 (no
        // timeout at all in Envoy). Saturate instead, as the component build does.
        let timeout = timeout.min(Duration::from_millis(u64::from(u32::MAX)));
        proxy_wasm::hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            body,
            Vec::new(),
            timeout,
        )
        .map_err(|status| crate_error("proxy_http_call", status))
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
        headers: &[(&str, &[u8])],
    ) -> Result<(), HostError> {
        let headers = map::encode(headers);
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
}

/// gRPC and shared queues, called directly rather than through the `Host` trait object: its
/// vtable would link their imports (and the `proxy-wasm` crate's gRPC code) into every
/// plugin, while only plugins that use them should have them (see `host::optional`).
impl AbiHost {
    // gRPC goes through the `proxy-wasm` crate, whose dispatcher routes the callbacks only
    // for tokens it registered. Its wrappers panic on statuses they do not expect; the
    // upstream is given as an encoded `GrpcService` (see `grpc::upstream`), for which Envoy
    // answers none of those.
    pub(crate) fn grpc_call(
        &self,
        call: &GrpcRequest<'_>,
        message: &[u8],
    ) -> Result<u32, HostError> {
        let upstream = crate::grpc::upstream(call.cluster);
        proxy_wasm::hostcalls::dispatch_grpc_call(
            &upstream,
            call.service,
            call.method,
            call.metadata.to_vec(),
            Some(message),
            call.timeout.min(Duration::from_millis(u64::from(u32::MAX))),
        )
        .map_err(|status| crate_error("proxy_grpc_call", status))
    }

    pub(crate) fn grpc_stream(&self, call: &GrpcRequest<'_>) -> Result<u32, HostError> {
        let upstream = crate::grpc::upstream(call.cluster);
        proxy_wasm::hostcalls::open_grpc_stream(
            &upstream,
            call.service,
            call.method,
            call.metadata.to_vec(),
        )
        .map_err(|status| crate_error("proxy_grpc_stream", status))
    }

    pub(crate) fn grpc_send(
        &self,
        token: u32,
        message: &[u8],
        end_stream: bool,
    ) -> Result<(), HostError> {
        proxy_wasm::hostcalls::send_grpc_stream_message(token, Some(message), end_stream)
            .map_err(|status| crate_error("proxy_grpc_send", status))
    }

    pub(crate) fn grpc_cancel(&self, token: u32, stream: bool) -> Result<(), HostError> {
        let result = if stream {
            proxy_wasm::hostcalls::cancel_grpc_stream(token)
        } else {
            proxy_wasm::hostcalls::cancel_grpc_call(token)
        };
        result.map_err(|status| crate_error("proxy_grpc_cancel", status))
    }

    pub(crate) fn call_foreign_function(
        &self,
        name: &str,
        arguments: &[u8],
    ) -> Result<Vec<u8>, HostError> {
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

    pub(crate) fn grpc_close(&self, token: u32) -> Result<(), HostError> {
        proxy_wasm::hostcalls::close_grpc_stream(token)
            .map_err(|status| crate_error("proxy_grpc_close", status))
    }

    pub(crate) fn grpc_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        let mut code = 0;
        let mut data = null_mut();
        let mut size = 0;
        // SAFETY: the out-pointers are valid for writes during the call.
        let result = unsafe { proxy_get_status(&mut code, &mut data, &mut size) };
        check("proxy_get_status", result)?;
        // SAFETY: on OK the host handed us an allocation of `size` bytes (see `take_host_bytes`).
        Ok((code, unsafe { take_host_bytes(data, size) }))
    }

    pub(crate) fn register_queue(&self, name: &str) -> Result<u32, HostError> {
        let mut id = 0;
        // SAFETY: `name` is valid for reads and `id` for a write during the call.
        let code = unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) };
        check("proxy_register_shared_queue", code).map(|()| id)
    }

    pub(crate) fn resolve_queue(&self, vm_id: &str, name: &str) -> Result<u32, HostError> {
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

    pub(crate) fn enqueue(&self, queue: u32, message: &[u8]) -> Result<(), HostError> {
        // SAFETY: `message` is valid for reads of its length during the call.
        let code = unsafe { proxy_enqueue_shared_queue(queue, message.as_ptr(), message.len()) };
        check("proxy_enqueue_shared_queue", code)
    }

    pub(crate) fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, HostError> {
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

/// A status the `proxy-wasm` crate's wrappers returned, as the SDK reports it (they never
/// fail with OK; if one did, that is an internal failure).
fn crate_error(call: &'static str, status: proxy_wasm::types::Status) -> HostError {
    let status = match HostStatus::from_code(status as u32) {
        HostStatus::Ok => HostStatus::InternalFailure,
        status => status,
    };
    HostError { call, status }
}

/// Registers plugin `P` with the `proxy-wasm` dispatcher; called from `_initialize` by
/// [`main!`](crate::main).
pub fn register<P: Plugin>() {
    std::panic::set_hook(Box::new(|info| {
        // A panic aborts the VM (panic = "abort"); say why where the operator looks.
        let message = info.to_string();
        // SAFETY: `message` is valid for reads of its length during the call.
        unsafe { proxy_log(LogLevel::Critical.code(), message.as_ptr(), message.len()) };
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        let driver = Driver::<P>::new(Rc::new(AbiHost));
        ROOTS.with(|roots| {
            roots
                .borrow_mut()
                .push((context_id, Rc::downgrade(&driver.runtime)));
        });
        Box::new(Root::<P> { context_id, driver })
    });
}

thread_local! {
    // The runtime of each root context, for callbacks the `proxy-wasm` crate's dispatcher does
    // not route (Higress's `proxy_on_redis_call_response`).
    static ROOTS: RefCell<Vec<(u32, Weak<Runtime>)>> = const { RefCell::new(Vec::new()) };
}

/// The runtime of root context `context_id`; if there is none, the first whose `claims`
/// (e.g. "waits for this token") holds.
pub(crate) fn runtime_for(
    context_id: u32,
    claims: impl Fn(&Runtime) -> bool,
) -> Option<Rc<Runtime>> {
    let runtimes: Vec<(u32, Rc<Runtime>)> = ROOTS.with(|roots| {
        roots
            .borrow()
            .iter()
            .filter_map(|(id, runtime)| Some((*id, runtime.upgrade()?)))
            .collect()
    });
    let position = runtimes
        .iter()
        .position(|(id, _)| *id == context_id)
        .or_else(|| runtimes.iter().position(|(_, runtime)| claims(runtime)))?;
    runtimes
        .into_iter()
        .nth(position)
        .map(|(_, runtime)| runtime)
}

/// The callbacks of calls (HTTP and gRPC), the same on the root context (background tasks'
/// calls) and on streams: the `proxy-wasm` crate's dispatcher delivers each to the context
/// that made the call, and both hand it to the runtime, which knows the waiting future.
macro_rules! call_response_callbacks {
    () => {
        fn on_http_call_response(
            &mut self,
            token_id: u32,
            num_headers: usize,
            body_size: usize,
            num_trailers: usize,
        ) {
            self.driver.runtime.on_call_response(
                self.context_id,
                token_id,
                num_headers,
                body_size,
                num_trailers,
            );
        }

        fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
            grpc_call_response(
                &self.driver.runtime,
                self.context_id,
                token_id,
                status_code,
                response_size,
            );
        }

        fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
            self.driver
                .runtime
                .on_grpc_receive(self.context_id, token_id, message_size);
        }

        fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
            self.driver
                .runtime
                .on_grpc_close(self.context_id, token_id, status_code);
        }
    };
}

/// The `proxy-wasm` crate's dispatcher reports a unary call's reply (status 0) and its failure
/// (a non-zero status, no message) through one method.
fn grpc_call_response(
    runtime: &Rc<Runtime>,
    context_id: u32,
    token: u32,
    status: u32,
    size: usize,
) {
    if status == 0 {
        runtime.on_grpc_receive(context_id, token, size);
    } else {
        runtime.on_grpc_close(context_id, token, status);
    }
}

struct Root<P: Plugin> {
    context_id: u32,
    driver: Rc<Driver<P>>,
}

impl<P: Plugin> Drop for Root<P> {
    // The dispatcher drops a root context in its `proxy_on_delete`.
    fn drop(&mut self) {
        ROOTS.with(|roots| {
            roots.borrow_mut().retain(|(id, _)| *id != self.context_id);
        });
    }
}

impl<P: Plugin> Context for Root<P> {
    // The plugin stops (its configuration is removed, or the VM shuts down): its background
    // tasks end here.
    fn on_done(&mut self) -> bool {
        self.driver.runtime.on_done(self.context_id)
    }

    call_response_callbacks!();
}

impl<P: Plugin> RootContext for Root<P> {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        self.driver
            .configure(self.context_id, plugin_configuration_size)
    }

    fn on_tick(&mut self) {
        self.driver.runtime.on_tick(self.context_id);
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        self.driver
            .runtime
            .on_queue_ready(self.context_id, queue_id);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.driver.create_stream(context_id);
        Some(Box::new(Stream {
            context_id,
            driver: Rc::clone(&self.driver),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream<P: Plugin> {
    context_id: u32,
    driver: Rc<Driver<P>>,
}

impl<P: Plugin> Stream<P> {
    fn hook(&self, phase: Phase, size: usize, end_of_stream: bool) -> AbiAction {
        match self
            .driver
            .on_hook(self.context_id, phase, size, end_of_stream)
        {
            Action::Pause => AbiAction::Pause,
            _ => AbiAction::Continue,
        }
    }
}

impl<P: Plugin> Context for Stream<P> {
    call_response_callbacks!();

    fn on_done(&mut self) -> bool {
        self.driver.runtime.on_done(self.context_id)
    }
}

impl<P: Plugin> HttpContext for Stream<P> {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> AbiAction {
        self.hook(Phase::RequestHeaders, num_headers, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> AbiAction {
        self.hook(Phase::RequestBody, body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> AbiAction {
        self.hook(Phase::RequestTrailers, num_trailers, true)
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> AbiAction {
        self.hook(Phase::ResponseTrailers, num_trailers, true)
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> AbiAction {
        self.hook(Phase::ResponseHeaders, num_headers, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> AbiAction {
        self.hook(Phase::ResponseBody, body_size, end_of_stream)
    }

    fn on_log(&mut self) {
        self.driver.runtime.on_log(self.context_id);
    }
}

impl<P: Plugin> Drop for Stream<P> {
    // The dispatcher drops the context in `proxy_on_delete`.
    fn drop(&mut self) {
        self.driver.on_delete(self.context_id);
    }
}
