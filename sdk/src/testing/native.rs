//! The SDK's driver run natively as the emulated proxy's plugin, and the SDK's hostcalls made
//! through the ABI's [`Hostcalls`] trait, which the emulated proxy implements.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_async_emulator::{Action, Callbacks, Hostcalls, PluginFailure};

use crate::driver::Driver;
use crate::headers::Headers;
use crate::host::{
    BufferType, Direction, GrpcRequest, Host, HostError, HostStatus, LogLevel, MapType, MetricType,
    Pairs, millis, tick_period_ms,
};
use crate::plugin::Plugin;
use crate::runtime::Phase;

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
    ) -> Result<Action, PluginFailure> {
        Ok(self
            .driver
            .runtime
            .on_hook(context_id, phase, size, end_of_stream))
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
    ) -> Result<Action, PluginFailure> {
        self.hook(context_id, Phase::RequestHeaders, headers, end_of_stream)
    }

    fn on_request_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.hook(context_id, Phase::RequestBody, size, end_of_stream)
    }

    fn on_response_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        self.hook(context_id, Phase::ResponseHeaders, headers, end_of_stream)
    }

    fn on_response_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
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
    ) -> Result<Action, PluginFailure> {
        self.hook(context_id, Phase::RequestTrailers, trailers, true)
    }

    fn on_response_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<Action, PluginFailure> {
        self.hook(context_id, Phase::ResponseTrailers, trailers, true)
    }

    fn on_queue_ready(&mut self, root_id: u32, queue_id: u32) -> Result<(), PluginFailure> {
        crate::queue::on_ready(&self.driver.runtime, root_id, queue_id);
        Ok(())
    }

    fn on_grpc_receive(
        &mut self,
        context_id: u32,
        token: u32,
        size: usize,
    ) -> Result<(), PluginFailure> {
        crate::grpc::on_receive(&self.driver.runtime, context_id, token, size);
        Ok(())
    }

    fn on_grpc_close(
        &mut self,
        context_id: u32,
        token: u32,
        status: u32,
    ) -> Result<(), PluginFailure> {
        crate::grpc::on_close(&self.driver.runtime, context_id, token, status);
        Ok(())
    }

    fn on_redis_call_response(
        &mut self,
        context_id: u32,
        token: u32,
        status: u32,
        response_size: usize,
    ) -> Result<(), PluginFailure> {
        crate::redis::on_response(
            &self.driver.runtime,
            context_id,
            token,
            status,
            response_size,
        );
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
        self.driver.runtime.on_delete(context_id);
        Ok(())
    }
}

/// The SDK's hostcalls made natively: the same calls a plugin's module makes, on a
/// [`Hostcalls`] implementation (the emulated proxy's state, shared with the proxy).
pub(super) struct NativeHost<H: Hostcalls> {
    pub(super) hostcalls: Rc<RefCell<H>>,
}

impl<H: Hostcalls> NativeHost<H> {
    fn call<R>(
        &self,
        call: &'static str,
        hostcall: impl FnOnce(&mut H) -> Result<R, HostStatus>,
    ) -> Result<R, HostError> {
        hostcall(&mut self.hostcalls.borrow_mut()).map_err(|status| HostError { call, status })
    }

    /// A hostcall whose `absent` status means "nothing there", not a failure.
    fn lookup<R>(
        &self,
        call: &'static str,
        absent: HostStatus,
        hostcall: impl FnOnce(&mut H) -> Result<R, HostStatus>,
    ) -> Result<Option<R>, HostError> {
        match hostcall(&mut self.hostcalls.borrow_mut()) {
            Ok(found) => Ok(Some(found)),
            Err(status) if status == absent => Ok(None),
            Err(status) => Err(HostError { call, status }),
        }
    }
}

fn bytes<'a>(pairs: &'a [(&'a str, &'a [u8])]) -> Vec<(&'a [u8], &'a [u8])> {
    pairs
        .iter()
        .map(|(name, value)| (name.as_bytes(), *value))
        .collect()
}

fn u32_of(value: usize) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl<H: Hostcalls> Host for NativeHost<H> {
    fn log(&self, level: LogLevel, message: &str) {
        let _ = self.hostcalls.borrow_mut().log(level, message.as_bytes());
    }

    fn log_level(&self) -> LogLevel {
        self.hostcalls
            .borrow_mut()
            .get_log_level()
            .unwrap_or(LogLevel::Info)
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        self.call("proxy_set_effective_context", |host| {
            host.set_effective_context(context_id)
        })
    }

    fn get_map(&self, map: MapType) -> Result<Pairs, HostError> {
        let pairs = self.call("proxy_get_header_map_pairs", |host| {
            host.get_header_map_pairs(map)
        })?;
        Ok(pairs
            .into_iter()
            .map(|(name, value)| (String::from_utf8_lossy(&name).into_owned(), value))
            .collect())
    }

    fn get_map_value(&self, map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        self.lookup("proxy_get_header_map_value", HostStatus::NotFound, |host| {
            host.get_header_map_value(map, name.as_bytes())
        })
    }

    fn get_property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
        let path = path.join("\0");
        self.lookup("proxy_get_property", HostStatus::NotFound, |host| {
            host.get_property(path.as_bytes())
        })
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostError> {
        let path = path.join("\0");
        self.call("proxy_set_property", |host| {
            host.set_property(path.as_bytes(), value)
        })
    }

    fn get_shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        self.lookup("proxy_get_shared_data", HostStatus::NotFound, |host| {
            host.get_shared_data(key.as_bytes())
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        self.call("proxy_set_shared_data", |host| {
            host.set_shared_data(key.as_bytes(), value, cas)
        })
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, HostError> {
        self.call("proxy_define_metric", |host| {
            host.define_metric(kind, name.as_bytes())
        })
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        self.call("proxy_increment_metric", |host| {
            host.increment_metric(id, delta)
        })
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        // The ABI's value is an i64 (the proxy-wasm build passes the same bits).
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        self.call("proxy_record_metric", |host| host.record_metric(id, value))
    }

    fn get_metric(&self, id: u32) -> Result<u64, HostError> {
        self.call("proxy_get_metric", |host| host.get_metric(id))
    }

    fn set_map(&self, map: MapType, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        self.call("proxy_set_header_map_pairs", |host| {
            host.set_header_map_pairs(map, &bytes(pairs))
        })
    }

    fn add_map_value(&self, map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.call("proxy_add_header_map_value", |host| {
            host.add_header_map_value(map, name.as_bytes(), value)
        })
    }

    fn replace_map_value(&self, map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.call("proxy_replace_header_map_value", |host| {
            host.replace_header_map_value(map, name.as_bytes(), value)
        })
    }

    fn remove_map_value(&self, map: MapType, name: &str) -> Result<(), HostError> {
        self.call("proxy_remove_header_map_value", |host| {
            host.remove_header_map_value(map, name.as_bytes())
        })
    }

    fn get_buffer(
        &self,
        buffer: BufferType,
        start: usize,
        max: usize,
    ) -> Result<Vec<u8>, HostError> {
        // No such buffer now (e.g. no body) is an empty body, as in the proxy-wasm build.
        let bytes = self.lookup("proxy_get_buffer_bytes", HostStatus::NotFound, |host| {
            host.get_buffer_bytes(buffer, u32_of(start), u32_of(max))
        })?;
        Ok(bytes.unwrap_or_default())
    }

    fn set_buffer(
        &self,
        buffer: BufferType,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError> {
        self.call("proxy_set_buffer_bytes", |host| {
            host.set_buffer_bytes(buffer, u32_of(start), u32_of(size), data)
        })
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let headers: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes()))
            .collect();
        self.call("proxy_http_call", |host| {
            host.http_call(cluster.as_bytes(), &headers, body, &[], millis(timeout))
        })
    }

    fn redis_init(
        &self,
        upstream: &str,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<(), HostError> {
        self.call("proxy_redis_init", |host| {
            host.redis_init(
                upstream.as_bytes(),
                username.as_bytes(),
                password.as_bytes(),
                millis(timeout),
            )
        })
    }

    fn redis_call(&self, cluster: &str, query: &[u8]) -> Result<u32, HostError> {
        self.call("proxy_redis_call", |host| {
            host.redis_call(cluster.as_bytes(), query)
        })
    }

    fn continue_stream(&self, direction: Direction) -> Result<(), HostError> {
        self.call("proxy_continue_stream", |host| {
            host.continue_stream(direction.stream_type())
        })
    }

    fn now_nanos(&self) -> u64 {
        self.hostcalls
            .borrow_mut()
            .get_current_time_nanoseconds()
            .unwrap_or(0)
    }

    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.call("proxy_set_tick_period_milliseconds", |host| {
            host.set_tick_period_milliseconds(tick_period_ms(period))
        })
    }

    fn send_local_response(
        &self,
        status: u16,
        details: &str,
        body: &[u8],
        headers: &Headers,
    ) -> Result<(), HostError> {
        let headers: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(name, value)| (name.as_bytes(), value))
            .collect();
        self.call("proxy_send_local_response", |host| {
            host.send_local_response(u32::from(status), details.as_bytes(), body, &headers, -1)
        })
    }

    fn grpc_call(&self, call: &GrpcRequest<'_>, message: &[u8]) -> Result<u32, HostError> {
        let upstream = crate::grpc::upstream(call.cluster);
        self.call("proxy_grpc_call", |host| {
            host.grpc_call(
                upstream.as_bytes(),
                call.service.as_bytes(),
                call.method.as_bytes(),
                &bytes(call.metadata),
                message,
                millis(call.timeout),
            )
        })
    }

    fn grpc_stream(&self, call: &GrpcRequest<'_>) -> Result<u32, HostError> {
        let upstream = crate::grpc::upstream(call.cluster);
        self.call("proxy_grpc_stream", |host| {
            host.grpc_stream(
                upstream.as_bytes(),
                call.service.as_bytes(),
                call.method.as_bytes(),
                &bytes(call.metadata),
            )
        })
    }

    fn grpc_send(&self, token: u32, message: &[u8], end_stream: bool) -> Result<(), HostError> {
        self.call("proxy_grpc_send", |host| {
            host.grpc_send(token, message, end_stream)
        })
    }

    fn grpc_cancel(&self, token: u32, _stream: bool) -> Result<(), HostError> {
        self.call("proxy_grpc_cancel", |host| host.grpc_cancel(token))
    }

    fn grpc_close(&self, token: u32) -> Result<(), HostError> {
        self.call("proxy_grpc_close", |host| host.grpc_close(token))
    }

    fn grpc_status(&self) -> Result<(u32, Vec<u8>), HostError> {
        self.call("proxy_get_status", |host| host.get_status())
    }

    fn register_queue(&self, name: &str) -> Result<u32, HostError> {
        self.call("proxy_register_shared_queue", |host| {
            host.register_shared_queue(name.as_bytes())
        })
    }

    fn resolve_queue(&self, vm_id: &str, name: &str) -> Result<u32, HostError> {
        self.call("proxy_resolve_shared_queue", |host| {
            host.resolve_shared_queue(vm_id.as_bytes(), name.as_bytes())
        })
    }

    fn enqueue(&self, queue: u32, message: &[u8]) -> Result<(), HostError> {
        self.call("proxy_enqueue_shared_queue", |host| {
            host.enqueue_shared_queue(queue, message)
        })
    }

    fn dequeue(&self, queue: u32) -> Result<Option<Vec<u8>>, HostError> {
        self.lookup("proxy_dequeue_shared_queue", HostStatus::Empty, |host| {
            host.dequeue_shared_queue(queue)
        })
    }

    fn call_foreign_function(&self, name: &str, arguments: &[u8]) -> Result<Vec<u8>, HostError> {
        self.call("proxy_call_foreign_function", |host| {
            host.call_foreign_function(name.as_bytes(), arguments)
        })
    }
}
