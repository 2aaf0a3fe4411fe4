//! An emulated proxy for proxy-wasm plugins, with Envoy's behaviour where it matters to them.
//!
//! [`ProxyState`] is what the proxy knows (streams with their header maps and bodies, HTTP calls,
//! logs, shared data, queues, metrics, properties) and what each hostcall does to it.
//! [`Proxy`] sends traffic to a plugin through its [`Callbacks`] and applies what the plugin
//! asked for after each callback returns, as Envoy does: resumes and local replies are
//! deferred; body callbacks wait while request headers are paused; a paused body keeps
//! buffering; a local reply runs the response callbacks; calls of an ended stream still get
//! their answers; a trap fails the stream with 503 and breaks the plugin.
//!
//! The plugin can be our SDK's driver running natively (the SDK's testing API) or a compiled
//! module in our wasmtime host: the same traffic, the same state, two backends.
//!
//! Higress's Redis extension is emulated too: `proxy_redis_init` and `proxy_redis_call` are
//! recorded, and a test answers the calls itself or lets [`Proxy::run_redis`] perform them on a
//! real `redis-server` ([`RedisServer`] starts one).
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use proxy_async_emulator::{
//!     Action, Callbacks, Direction, PluginFailure, Proxy, ProxyConfig, ProxyState,
//! };
//!
//! /// A plugin that pauses every request and never resumes it.
//! struct Stubborn;
//!
//! impl Callbacks for Stubborn {
//!     fn on_context_create(&mut self, _: u32, _: u32) -> Result<(), PluginFailure> { Ok(()) }
//!     fn on_vm_start(&mut self, _: u32, _: usize) -> Result<bool, PluginFailure> { Ok(true) }
//!     fn on_configure(&mut self, _: u32, _: usize) -> Result<bool, PluginFailure> { Ok(true) }
//!     fn on_request_headers(&mut self, _: u32, _: usize, _: bool) -> Result<Action, PluginFailure> {
//!         Ok(Action::Pause)
//!     }
//!     fn on_request_body(&mut self, _: u32, _: usize, _: bool) -> Result<Action, PluginFailure> { Ok(Action::Continue) }
//!     fn on_response_headers(&mut self, _: u32, _: usize, _: bool) -> Result<Action, PluginFailure> { Ok(Action::Continue) }
//!     fn on_response_body(&mut self, _: u32, _: usize, _: bool) -> Result<Action, PluginFailure> { Ok(Action::Continue) }
//!     fn on_http_call_response(&mut self, _: u32, _: u32, _: usize, _: usize, _: usize) -> Result<(), PluginFailure> { Ok(()) }
//!     fn on_log(&mut self, _: u32) -> Result<(), PluginFailure> { Ok(()) }
//!     fn on_done(&mut self, _: u32) -> Result<bool, PluginFailure> { Ok(true) }
//!     fn on_delete(&mut self, _: u32) -> Result<(), PluginFailure> { Ok(()) }
//! }
//!
//! let state = Rc::new(RefCell::new(ProxyState::default()));
//! let proxy = Proxy::start(state, Stubborn, ProxyConfig::default()).unwrap();
//! let stream = proxy.open_stream();
//! assert_eq!(proxy.send_headers(stream, Direction::Request, &[(":path", "/")], true), Action::Pause);
//! assert!(proxy.is_paused(stream, Direction::Request));
//! ```

mod proxy;
mod redis;
mod redis_server;
mod state;
mod twins;

pub use proxy::{CallFailure, ConfigRejected, Proxy, ProxyConfig};
pub use proxy_async_abi as abi;
pub use proxy_async_abi::{
    Action, BufferType, Callbacks, Direction, Hostcalls, LogLevel, MapType, MetricType, Phase,
    PluginFailure, Status,
};
pub use redis::{RedisCall, RedisInit};
pub use redis_server::RedisServer;
pub use state::{
    Call, ForeignFunction, GrpcCall, LogRecord, Pairs, ProxyState, ROOT_CONTEXT, SentReply,
};
pub use twins::{NativeOnly, Twin, TwinKind, Twins};
