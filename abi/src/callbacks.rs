//! The callbacks a host makes, as the [`Callbacks`] trait: the `proxy_on_*` exports of a
//! plugin, called with decoded arguments.

use std::fmt;

use crate::codes::Action;

/// A callback the plugin could not complete: it trapped (a panic, in Rust), or was already
/// broken by an earlier trap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    /// What happened, with the plugin's panic message when it logged one.
    pub message: String,
}

impl fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginFailure {}

/// The plugin as the proxy sees it: the callbacks (`proxy_on_*` exports) the proxy makes.
/// A plugin driven natively and a compiled module or component in a wasm host all implement
/// it, so that one emulated proxy can drive any of them. The callbacks a plugin without some
/// feature ignores (trailers, ticks, queues, gRPC, Redis) default to doing nothing.
pub trait Callbacks {
    /// `proxy_on_context_create`.
    fn on_context_create(&mut self, context_id: u32, parent_id: u32) -> Result<(), PluginFailure>;
    /// `proxy_on_vm_start`.
    fn on_vm_start(&mut self, root_id: u32, vm_config_size: usize) -> Result<bool, PluginFailure>;
    /// `proxy_on_configure`.
    fn on_configure(&mut self, root_id: u32, config_size: usize) -> Result<bool, PluginFailure>;
    /// `proxy_on_request_headers`.
    fn on_request_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure>;
    /// `proxy_on_request_body`.
    fn on_request_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure>;
    /// `proxy_on_response_headers`.
    fn on_response_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure>;
    /// `proxy_on_response_body`.
    fn on_response_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure>;
    /// `proxy_on_request_trailers` (a plugin without trailer hooks continues).
    fn on_request_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<Action, PluginFailure> {
        let _ = (context_id, trailers);
        Ok(Action::Continue)
    }
    /// `proxy_on_response_trailers`.
    fn on_response_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<Action, PluginFailure> {
        let _ = (context_id, trailers);
        Ok(Action::Continue)
    }
    /// `proxy_on_http_call_response`.
    fn on_http_call_response(
        &mut self,
        context_id: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) -> Result<(), PluginFailure>;
    /// `proxy_on_tick` (a plugin that never sets a tick period ignores it).
    fn on_tick(&mut self, root_id: u32) -> Result<(), PluginFailure> {
        let _ = root_id;
        Ok(())
    }
    /// `proxy_on_queue_ready`.
    fn on_queue_ready(&mut self, root_id: u32, queue_id: u32) -> Result<(), PluginFailure> {
        let _ = (root_id, queue_id);
        Ok(())
    }
    /// `proxy_on_grpc_receive_initial_metadata` (a plugin without gRPC ignores it).
    fn on_grpc_receive_initial_metadata(
        &mut self,
        context_id: u32,
        token: u32,
        elements: usize,
    ) -> Result<(), PluginFailure> {
        let _ = (context_id, token, elements);
        Ok(())
    }
    /// `proxy_on_grpc_receive`.
    fn on_grpc_receive(
        &mut self,
        context_id: u32,
        token: u32,
        size: usize,
    ) -> Result<(), PluginFailure> {
        let _ = (context_id, token, size);
        Ok(())
    }
    /// `proxy_on_grpc_receive_trailing_metadata`.
    fn on_grpc_receive_trailing_metadata(
        &mut self,
        context_id: u32,
        token: u32,
        elements: usize,
    ) -> Result<(), PluginFailure> {
        let _ = (context_id, token, elements);
        Ok(())
    }
    /// `proxy_on_grpc_close`.
    fn on_grpc_close(
        &mut self,
        context_id: u32,
        token: u32,
        status_code: u32,
    ) -> Result<(), PluginFailure> {
        let _ = (context_id, token, status_code);
        Ok(())
    }
    /// `proxy_on_redis_call_response` (Higress): the reply to a `proxy_redis_call`, readable
    /// as buffer 9 during the callback; `status != 0` means there is none (a plugin that never
    /// calls Redis ignores it).
    fn on_redis_call_response(
        &mut self,
        context_id: u32,
        token: u32,
        status: u32,
        response_size: usize,
    ) -> Result<(), PluginFailure> {
        let _ = (context_id, token, status, response_size);
        Ok(())
    }
    /// `proxy_on_log`.
    fn on_log(&mut self, context_id: u32) -> Result<(), PluginFailure>;
    /// `proxy_on_done`.
    fn on_done(&mut self, context_id: u32) -> Result<bool, PluginFailure>;
    /// `proxy_on_delete`.
    fn on_delete(&mut self, context_id: u32) -> Result<(), PluginFailure>;
}

/// A boxed plugin is a plugin: a proxy can hold plugins of different kinds (a proxy-wasm
/// module, a component) behind `Box<dyn Callbacks>`.
impl<C: Callbacks + ?Sized> Callbacks for Box<C> {
    fn on_context_create(&mut self, context_id: u32, parent_id: u32) -> Result<(), PluginFailure> {
        (**self).on_context_create(context_id, parent_id)
    }
    fn on_vm_start(&mut self, root_id: u32, vm_config_size: usize) -> Result<bool, PluginFailure> {
        (**self).on_vm_start(root_id, vm_config_size)
    }
    fn on_configure(&mut self, root_id: u32, config_size: usize) -> Result<bool, PluginFailure> {
        (**self).on_configure(root_id, config_size)
    }
    fn on_request_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        (**self).on_request_headers(context_id, headers, end_of_stream)
    }
    fn on_request_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        (**self).on_request_body(context_id, size, end_of_stream)
    }
    fn on_response_headers(
        &mut self,
        context_id: u32,
        headers: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        (**self).on_response_headers(context_id, headers, end_of_stream)
    }
    fn on_response_body(
        &mut self,
        context_id: u32,
        size: usize,
        end_of_stream: bool,
    ) -> Result<Action, PluginFailure> {
        (**self).on_response_body(context_id, size, end_of_stream)
    }
    fn on_request_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<Action, PluginFailure> {
        (**self).on_request_trailers(context_id, trailers)
    }
    fn on_response_trailers(
        &mut self,
        context_id: u32,
        trailers: usize,
    ) -> Result<Action, PluginFailure> {
        (**self).on_response_trailers(context_id, trailers)
    }
    fn on_http_call_response(
        &mut self,
        context_id: u32,
        token: u32,
        headers: usize,
        body_size: usize,
        trailers: usize,
    ) -> Result<(), PluginFailure> {
        (**self).on_http_call_response(context_id, token, headers, body_size, trailers)
    }
    fn on_tick(&mut self, root_id: u32) -> Result<(), PluginFailure> {
        (**self).on_tick(root_id)
    }
    fn on_queue_ready(&mut self, root_id: u32, queue_id: u32) -> Result<(), PluginFailure> {
        (**self).on_queue_ready(root_id, queue_id)
    }
    fn on_grpc_receive_initial_metadata(
        &mut self,
        context_id: u32,
        token: u32,
        elements: usize,
    ) -> Result<(), PluginFailure> {
        (**self).on_grpc_receive_initial_metadata(context_id, token, elements)
    }
    fn on_grpc_receive(
        &mut self,
        context_id: u32,
        token: u32,
        size: usize,
    ) -> Result<(), PluginFailure> {
        (**self).on_grpc_receive(context_id, token, size)
    }
    fn on_grpc_receive_trailing_metadata(
        &mut self,
        context_id: u32,
        token: u32,
        elements: usize,
    ) -> Result<(), PluginFailure> {
        (**self).on_grpc_receive_trailing_metadata(context_id, token, elements)
    }
    fn on_grpc_close(
        &mut self,
        context_id: u32,
        token: u32,
        status_code: u32,
    ) -> Result<(), PluginFailure> {
        (**self).on_grpc_close(context_id, token, status_code)
    }
    fn on_redis_call_response(
        &mut self,
        context_id: u32,
        token: u32,
        status: u32,
        response_size: usize,
    ) -> Result<(), PluginFailure> {
        (**self).on_redis_call_response(context_id, token, status, response_size)
    }
    fn on_log(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        (**self).on_log(context_id)
    }
    fn on_done(&mut self, context_id: u32) -> Result<bool, PluginFailure> {
        (**self).on_done(context_id)
    }
    fn on_delete(&mut self, context_id: u32) -> Result<(), PluginFailure> {
        (**self).on_delete(context_id)
    }
}
