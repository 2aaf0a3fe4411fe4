//! Write proxy-wasm plugins (Envoy, Istio, Higress) whose HTTP hooks are plain `async fn`s.
//!
//! A hook that calls another service awaits the call; the SDK pauses the stream while it waits
//! and resumes it (or sends the local reply the hook chose) when the hook returns. No
//! `on_http_call_response`, no state machine, no `resume_http_request`.
//!
//! ```
//! use std::rc::Rc;
//! use proxy_async::{Error, Flow, HttpClient, LocalReply, Plugin, PluginConfig, Request};
//!
//! #[derive(serde::Deserialize, Default)]
//! struct Config {
//!     auth_cluster: String,
//! }
//!
//! impl PluginConfig for Config {}
//!
//! struct Auth {
//!     auth: HttpClient,
//! }
//!
//! impl Plugin for Auth {
//!     type Root = Config;
//!
//!     fn new(config: &Rc<Config>) -> Self {
//!         Auth { auth: HttpClient::new(config.auth_cluster.as_str()) }
//!     }
//!
//!     async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
//!         let Some(key) = req.header_str("x-api-key") else {
//!             return Ok(LocalReply::new(401).into());
//!         };
//!         let verdict = self.auth.get("/check").query("key", &key).send().await?;
//!         if verdict.status() != 200 {
//!             return Ok(LocalReply::new(403).into());
//!         }
//!         req.headers_mut().insert("x-user", verdict.header("x-user")?);
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! proxy_async::main!(Auth);
//!
//! // Natively, the same plugin runs under the testing API:
//! use proxy_async::testing::{Action, PluginTest};
//!
//! let test = PluginTest::<Auth>::new(r#"{"auth_cluster": "auth"}"#).unwrap();
//! let stream = test.stream();
//! assert_eq!(stream.send_request_headers(&[(":path", "/"), ("x-api-key", "k1")], true), Action::Pause);
//! let call = &test.calls()[0];
//! assert_eq!(call.path(), "/check?key=k1");
//! test.respond(call, 200, &[("x-user", "alice")], "");
//! assert_eq!(stream.resumed_requests(), 1);
//! assert_eq!(stream.request_header("x-user").as_deref(), Some("alice"));
//! ```
//!
//! # Design decisions
//! - **One task per stream.** The per-stream plugin value lives inside a task of the
//!   `proxy-async-executor`; each host callback delivers an event to it and drains the executor
//!   before returning to the host. Nothing is `Send`; nothing blocks.
//! - **Resume exactly once, never early.** A hook that finishes inside its own callback
//!   continues with no resume call; a hook that paused is resumed from a later callback, once.
//!   After a local reply the stream is never resumed and the plugin's response hooks are not
//!   run for its own reply.
//! - **Errors, not panics.** Hooks return `Result`; an `Err` becomes a local reply and a log
//!   line. Host input (header maps, statuses, configuration) is validated without panicking,
//!   because a panic kills the VM and every request on that worker with it.
//! - **Streams that end drop their futures.** When the client goes away mid-call, the stream's
//!   task is dropped at `on_done`; the call's late response is ignored.

#![cfg_attr(
    all(target_arch = "wasm32", target_env = "p2"),
    allow(
        dead_code,
        reason = "the component build drives hooks itself and leaves the callback driver unused"
    )
)]

mod background;
mod client;
mod config;
mod driver;
mod error;
mod foreign;
mod grpc;
mod headers;
pub mod higress;
mod host;
mod logging;
mod message;
pub mod metrics;
mod plugin;
pub mod properties;
mod queue;
pub mod redis;
mod root;
mod runtime;
pub mod shared_data;
mod stream_task;
mod timer;

// The proxy-wasm build (wasm32-wasip1, wasm32-unknown-unknown) and the component build
// (wasm32-wasip2) of the same plugin source.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
mod abi;
#[cfg(all(target_arch = "wasm32", target_env = "p2", not(feature = "wasi-http")))]
mod component;
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
mod exports;
#[cfg(all(target_arch = "wasm32", target_env = "p2", feature = "wasi-http"))]
mod middleware;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use background::BackgroundTask;
pub use client::{CallBuilder, CallResponse, Cluster, HttpClient, ResponseFuture};
pub use config::{NoConfig, PluginConfig};
pub use error::{CallError, ConfigError, Error};
pub use foreign::call_foreign_function;
pub use grpc::{GrpcClient, GrpcCode, GrpcError, GrpcStream};
pub use headers::{HeaderIter, Headers};
pub use host::{Action, HostError, HostStatus};
pub use http::{Method, StatusCode};
pub use message::{Done, HeaderValue, HeadersMut, Message, Request, Response};
pub use metrics::{Counter, Gauge, Histogram, MetricName};
pub use plugin::{Flow, LocalReply, Plugin, ReplyBody};
pub use queue::{QueueMessages, SharedQueue};
pub use redis::RedisClient;
pub use root::{Root, Settings};
pub use shared_data::{Cas, SharedData, SharedDataError};
pub use timer::{Elapsed, Sleep, TickFunction, Timeout, now, sleep, timeout};

/// Registers the plugin type with the proxy: `proxy_async::main!(MyPlugin);` once, at the top
/// level of a `cdylib` crate. Built for `wasm32-wasip1` it exports the proxy-wasm ABI; built
/// for `wasm32-wasip2` it exports the `plugin` world of `wit/` (a component), or, with the
/// SDK's `wasi-http` feature, the `wasi:http@0.3.0` middleware world (a `wasi:http/handler`
/// that calls the next one). In native builds (tests) it expands to nothing.
#[macro_export]
macro_rules! main {
    ($plugin:ty) => {
        // Inside an anonymous const: the exported functions stay out of the crate's public
        // items (and its `missing_docs` lint).
        #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
        const _: () = {
            use $crate::__private::module as glue;

            ::std::thread_local! {
                static MODULE: glue::Module<$plugin> = const { glue::Module::new() };
            }

            #[unsafe(no_mangle)]
            extern "C" fn _initialize() {
                glue::initialize();
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_abi_version_0_2_1() {}
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
                glue::memory_allocate(size)
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
                MODULE.with(|module| module.on_context_create(context_id, parent_id));
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_vm_start(_context_id: u32, _size: usize) -> u32 {
                1
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_configure(context_id: u32, size: usize) -> u32 {
                MODULE.with(|module| module.on_configure(context_id, size))
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_tick(context_id: u32) {
                MODULE.with(|module| module.on_tick(context_id));
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_queue_ready(context_id: u32, queue: u32) {
                MODULE.with(|module| module.on_queue_ready(context_id, queue));
            }
            fn hook(context_id: u32, phase: glue::Phase, size: usize, end: u32) -> u32 {
                MODULE.with(|module| module.on_hook(context_id, phase, size, end))
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_request_headers(context_id: u32, size: usize, end: u32) -> u32 {
                hook(context_id, glue::Phase::RequestHeaders, size, end)
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_request_body(context_id: u32, size: usize, end: u32) -> u32 {
                hook(context_id, glue::Phase::RequestBody, size, end)
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_request_trailers(context_id: u32, size: usize) -> u32 {
                hook(context_id, glue::Phase::RequestTrailers, size, 1)
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_response_headers(context_id: u32, size: usize, end: u32) -> u32 {
                hook(context_id, glue::Phase::ResponseHeaders, size, end)
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_response_body(context_id: u32, size: usize, end: u32) -> u32 {
                hook(context_id, glue::Phase::ResponseBody, size, end)
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_response_trailers(context_id: u32, size: usize) -> u32 {
                hook(context_id, glue::Phase::ResponseTrailers, size, 1)
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_log(context_id: u32) {
                MODULE.with(|module| module.on_log(context_id));
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_done(context_id: u32) -> u32 {
                MODULE.with(|module| module.on_done(context_id))
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_delete(context_id: u32) {
                MODULE.with(|module| module.on_delete(context_id));
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_http_call_response(
                context_id: u32,
                token: u32,
                headers: usize,
                body_size: usize,
                trailers: usize,
            ) {
                MODULE.with(|module| {
                    module.on_http_call_response(context_id, token, headers, body_size, trailers)
                });
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_grpc_receive(context_id: u32, token: u32, size: usize) {
                MODULE.with(|module| module.on_grpc_receive(context_id, token, size));
            }
            #[unsafe(no_mangle)]
            extern "C" fn proxy_on_grpc_close(context_id: u32, token: u32, status: u32) {
                MODULE.with(|module| module.on_grpc_close(context_id, token, status));
            }
        };
        // The component world is the SDK's choice (its `wasi-http` feature), not the plugin
        // crate's: a `cfg` written here would be read in the plugin crate.
        #[cfg(all(target_arch = "wasm32", target_env = "p2"))]
        $crate::__component_main!($plugin);
    };
}

/// The `plugin` world's exports of [`main!`]; not part of the API.
#[cfg(not(feature = "wasi-http"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __component_main {
    ($plugin:ty) => {
        const _: () = {
            use $crate::__private::component as glue;

            struct Component;

            impl glue::Guest for Component {
                fn configure(
                    configuration: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<glue::Settings, ::std::string::String> {
                    glue::configure::<$plugin>(&configuration)
                }
                async fn on_request_headers(stream: u32, end_of_stream: bool) -> glue::Flow {
                    glue::request_headers::<$plugin>(stream, end_of_stream).await
                }
                async fn on_request_body(
                    stream: u32,
                    body_size: u64,
                    end_of_stream: bool,
                ) -> glue::Flow {
                    glue::request_body::<$plugin>(stream, body_size, end_of_stream).await
                }
                async fn on_response_headers(stream: u32, end_of_stream: bool) -> glue::Flow {
                    glue::response_headers::<$plugin>(stream, end_of_stream).await
                }
                async fn on_response_body(
                    stream: u32,
                    body_size: u64,
                    end_of_stream: bool,
                ) -> glue::Flow {
                    glue::response_body::<$plugin>(stream, body_size, end_of_stream).await
                }
                async fn on_request_trailers(stream: u32) -> glue::Flow {
                    glue::request_trailers::<$plugin>(stream).await
                }
                async fn on_response_trailers(stream: u32) -> glue::Flow {
                    glue::response_trailers::<$plugin>(stream).await
                }
                async fn on_log(stream: u32) {
                    glue::log::<$plugin>(stream).await;
                }
                fn on_stream_end(stream: u32) {
                    glue::stream_end::<$plugin>(stream);
                }
                fn on_tick() {
                    glue::tick::<$plugin>();
                }
                fn on_grpc_receive(token: u32, message: ::std::vec::Vec<u8>) {
                    glue::grpc_receive::<$plugin>(token, message);
                }
                fn on_grpc_close(token: u32, code: u32, message: ::std::string::String) {
                    glue::grpc_close::<$plugin>(token, code, message);
                }
                fn on_queue_ready(queue: u32) {
                    glue::queue_ready::<$plugin>(queue);
                }
                fn on_redis_reply(
                    token: u32,
                    reply: ::std::result::Result<::std::vec::Vec<u8>, u32>,
                ) {
                    glue::redis_reply::<$plugin>(token, reply);
                }
            }

            impl glue::RootGuest for Component {
                async fn run_background() {
                    glue::run_background::<$plugin>().await;
                }
                fn stop() {
                    glue::stop::<$plugin>();
                }
            }

            $crate::__private::component::bindings::export_plugin!(
                Component with_types_in $crate::__private::component::bindings
            );
        };
    };
}

/// The `wasi:http` middleware's export of [`main!`] (the `wasi-http` feature); not part of
/// the API.
#[cfg(feature = "wasi-http")]
#[doc(hidden)]
#[macro_export]
macro_rules! __component_main {
    ($plugin:ty) => {
        const _: () = {
            struct Middleware;

            impl $crate::__private::middleware::Guest for Middleware {
                async fn handle(
                    request: $crate::__private::middleware::Request,
                ) -> ::std::result::Result<
                    $crate::__private::middleware::Response,
                    $crate::__private::middleware::ErrorCode,
                > {
                    $crate::__private::middleware::handle::<$plugin>(request).await
                }
            }

            $crate::__private::middleware::bindings::export_middleware!(
                Middleware with_types_in $crate::__private::middleware::bindings
            );
        };
    };
}

/// What [`main!`] expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    /// The proxy-wasm module's glue.
    #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
    pub mod module {
        pub use crate::exports::{Module, initialize, memory_allocate};
        pub use proxy_async_abi::Phase;
    }

    /// The component build's glue.
    #[cfg(all(target_arch = "wasm32", target_env = "p2", not(feature = "wasi-http")))]
    pub mod component {
        pub use crate::component::bindings;
        pub use crate::component::bindings::exports::proxy_async::plugin::hooks::{
            Flow, Guest, Settings,
        };
        pub use crate::component::bindings::exports::proxy_async::plugin::root::Guest as RootGuest;
        pub use crate::component::{
            configure, grpc_close, grpc_receive, log, queue_ready, redis_reply, request_body,
            request_headers, request_trailers, response_body, response_headers, response_trailers,
            run_background, stop, stream_end, tick,
        };
    }

    /// The `wasi:http` middleware build's glue.
    #[cfg(all(target_arch = "wasm32", target_env = "p2", feature = "wasi-http"))]
    pub mod middleware {
        pub use crate::middleware::bindings;
        pub use crate::middleware::bindings::exports::wasi::http::handler::Guest;
        pub use crate::middleware::bindings::wasi::http::types::{ErrorCode, Request, Response};
        pub use crate::middleware::handle;
    }
}
