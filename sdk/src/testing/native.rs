//! The SDK's driver run natively as the emulated proxy's plugin, and the SDK's hostcalls
//! answered by the emulated proxy's state.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_emulator::{
    BufferType, Callbacks, LogLevel, MapType, PluginFailure, ProxyState, Side, Status,
};

use crate::driver::Driver;
use crate::host::{
    Action, BufferKind, Direction, GrpcRequest, Host, HostError, HostStatus, MapKind, Pairs,
};
use crate::plugin::Plugin;
use crate::runtime::Phase;

fn to_emulator(action: Action) -> proxy_emulator::Action {
    match action {
        Action::Continue => proxy_emulator::Action::Continue,
        Action::Pause => proxy_emulator::Action::Pause,
    }
}

/// The SDK's driver, run natively, as the emulated proxy's plugin.
pub(super) struct NativePlugin<P: Plugin> {
    pub(super) driver: Rc<Driver<P>>,
}

impl<P: Plugin> NativePlugin<P> {
    fn hook(
        &self,
        context_id: u32,
        phase: Phase,
        size: usize,
        end_of_stream: bool,
    ) -> Result<proxy_emulator::Action, PluginFailure> {
        Ok(to_emulator(self.driver.on_hook(
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

    fn on_tick(&mut self, root_id: u32) -> Result<(), PluginFailure> {
        self.driver.runtime.on_tick(root_id);
        Ok(())
    }

    fn on_request_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<proxy_emulator::Action, PluginFailure> {
        self.hook(context_id, Phase::RequestTrailers, trailers, true)
    }

    fn on_response_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<proxy_emulator::Action, PluginFailure> {
        self.hook(context_id, Phase::ResponseTrailers, trailers, true)
    }

    fn on_queue_ready(&mut self, root_id: u32, queue_id: u32) -> Result<(), PluginFailure> {
        self.driver.runtime.on_queue_ready(root_id, queue_id);
        Ok(())
    }

    fn on_grpc_receive(
        &mut self,
        context_id: u32,
        token: u32,
        size: usize,
    ) -> Result<(), PluginFailure> {
        self.driver.runtime.on_grpc_receive(context_id, token, size);
        Ok(())
    }

    fn on_grpc_close(
        &mut self,
        context_id: u32,
        token: u32,
        status: u32,
    ) -> Result<(), PluginFailure> {
        self.driver.runtime.on_grpc_close(context_id, token, status);
        Ok(())
    }

    fn on_redis_call_response(
        &mut self,
        context_id: u32,
        token: u32,
        status: u32,
        response_size: usize,
    ) -> Result<(), PluginFailure> {
        self.driver
            .runtime
            .on_redis_response(context_id, token, status, response_size);
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
        self.driver.on_delete(context_id);
        Ok(())
    }
}

/// The SDK's hostcalls, answered by the emulated proxy's state.
pub(super) struct TestHost {
    pub(super) state: Rc<RefCell<ProxyState>>,
}

fn map_type(map: MapKind) -> MapType {
    match map {
        MapKind::RequestHeaders => MapType::RequestHeaders,
        MapKind::RequestTrailers => MapType::RequestTrailers,
        MapKind::ResponseHeaders => MapType::ResponseHeaders,
        MapKind::ResponseTrailers => MapType::ResponseTrailers,
        MapKind::CallResponseHeaders => MapType::CallResponseHeaders,
        MapKind::CallResponseTrailers => MapType::CallResponseTrailers,
    }
}

fn buffer_type(buffer: BufferKind) -> BufferType {
    match buffer {
        BufferKind::RequestBody => BufferType::RequestBody,
        BufferKind::ResponseBody => BufferType::ResponseBody,
        BufferKind::CallResponseBody => BufferType::CallResponseBody,
        BufferKind::GrpcReceive => BufferType::GrpcMessage,
        BufferKind::PluginConfiguration => BufferType::PluginConfiguration,
        BufferKind::RedisCallResponse => BufferType::RedisCallResponse,
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

    fn get_property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        match self.state.borrow().get_property(path.join("\0").as_bytes()) {
            Ok(value) => Ok(Some(value)),
            Err(Status::NotFound) => Ok(None),
            Err(status) => Err(refused("proxy_get_property")(status)),
        }
    }

    // Properties (writing), shared data and metrics, answered as the wasmtime host answers
    // the compiled twins' hostcalls (host/src/emulated.rs, host/src/component.rs), so that
    // the backends agree.

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .set_property(path.join("\0").as_bytes(), value);
        Ok(())
    }

    fn get_shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        match self.state.borrow().get_shared_data(key.as_bytes()) {
            Ok(entry) => Ok(Some(entry)),
            Err(Status::NotFound) => Ok(None),
            Err(status) => Err(refused("proxy_get_shared_data")(status)),
        }
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .set_shared_data(key.as_bytes(), value, cas)
            .map_err(refused("proxy_set_shared_data"))
    }

    fn define_metric(
        &self,
        kind: crate::metrics::MetricKind,
        name: &str,
    ) -> Result<u32, HostError> {
        let kind = match kind {
            crate::metrics::MetricKind::Counter => proxy_emulator::MetricType::Counter,
            crate::metrics::MetricKind::Gauge => proxy_emulator::MetricType::Gauge,
            crate::metrics::MetricKind::Histogram => proxy_emulator::MetricType::Histogram,
        };
        Ok(self.state.borrow_mut().define_metric(kind, name))
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .increment_metric(id, delta)
            .map_err(refused("proxy_increment_metric"))
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        self.state
            .borrow_mut()
            .record_metric(id, value)
            .map_err(refused("proxy_record_metric"))
    }

    fn get_metric(&self, id: u32) -> Result<u64, HostError> {
        let value = self
            .state
            .borrow()
            .get_metric(id)
            .map_err(refused("proxy_get_metric"))?;
        // A gauge below zero reads as 0, as `proxy_get_metric`'s u64 does in our host.
        Ok(u64::try_from(value).unwrap_or(0))
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

    fn redis_init(
        &self,
        upstream: &str,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .redis_init(upstream, username, password, timeout)
            .map_err(refused("proxy_redis_init"))
    }

    fn redis_call(&self, cluster: &str, query: &[u8]) -> Result<u32, HostError> {
        self.state
            .borrow_mut()
            .redis_call(cluster, query)
            .map_err(refused("proxy_redis_call"))
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

    fn now_nanos(&self) -> u64 {
        self.state.borrow().now_nanos()
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.state.borrow_mut().set_tick_period(period);
        Ok(())
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

    fn grpc_call(&self, call: &GrpcRequest<'_>, message: &[u8]) -> Result<u32, HostError> {
        self.state
            .borrow_mut()
            .grpc_call(
                &crate::grpc::upstream(call.cluster),
                call.service,
                call.method,
                owned(call.metadata),
                message,
                call.timeout,
            )
            .map_err(refused("proxy_grpc_call"))
    }

    fn grpc_stream(&self, call: &GrpcRequest<'_>) -> Result<u32, HostError> {
        self.state
            .borrow_mut()
            .grpc_stream(
                &crate::grpc::upstream(call.cluster),
                call.service,
                call.method,
                owned(call.metadata),
            )
            .map_err(refused("proxy_grpc_stream"))
    }

    fn grpc_send(&self, token: u32, message: &[u8], end_stream: bool) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .grpc_send(token, message, end_stream)
            .map_err(refused("proxy_grpc_send"))
    }

    fn grpc_cancel(&self, token: u32, _stream: bool) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .grpc_cancel(token)
            .map_err(refused("proxy_grpc_cancel"))
    }

    fn call_foreign_function(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, HostError> {
        self.state
            .borrow()
            .call_foreign_function(name, arguments)
            .map_err(refused("proxy_call_foreign_function"))
    }

    fn grpc_close(&self, token: u32) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .grpc_close(token)
            .map_err(refused("proxy_grpc_close"))
    }

    fn grpc_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        self.state
            .borrow()
            .get_status()
            .map_err(refused("proxy_get_status"))
    }

    fn register_queue(&self, name: &str) -> Result<u32, HostError> {
        Ok(self.state.borrow_mut().register_shared_queue(name))
    }

    fn resolve_queue(&self, vm_id: &str, name: &str) -> Result<u32, HostError> {
        self.state
            .borrow()
            .resolve_shared_queue(vm_id, name)
            .map_err(refused("proxy_resolve_shared_queue"))
    }

    fn enqueue(&self, queue: u32, message: &[u8]) -> Result<(), HostError> {
        self.state
            .borrow_mut()
            .enqueue_shared_queue(queue, message)
            .map_err(refused("proxy_enqueue_shared_queue"))
    }

    fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, HostError> {
        match self.state.borrow_mut().dequeue_shared_queue(queue) {
            Ok(message) => Ok(Some(message)),
            Err(Status::Empty) => Ok(None),
            Err(status) => Err(refused("proxy_dequeue_shared_queue")(status)),
        }
    }
}
