//! Redis commands awaited from hooks, on Higress's extension to proxy-wasm
//! (`proxy_redis_init`, `proxy_redis_call`, `proxy_on_redis_call_response`).
//!
//! ```no_run
//! use std::rc::Rc;
//! use proxy_async::redis::RedisClient;
//! use proxy_async::{Error, Flow, LocalReply, NoConfig, Plugin, Request};
//!
//! struct RateLimit {
//!     redis: RedisClient,
//! }
//!
//! impl Plugin for RateLimit {
//!     type Root = NoConfig;
//!
//!     fn new(_: &Rc<NoConfig>) -> Self {
//!         RateLimit { redis: RedisClient::new("outbound|6379||redis.static") }
//!     }
//!
//!     async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
//!         let key = format!("rate:{}", req.header_str("x-api-key").unwrap_or_default());
//!         let count = self.redis.incr(&key).await?;
//!         if count == 1 {
//!             self.redis.expire(&key, 60).await?;
//!         }
//!         if count > 100 {
//!             return Ok(LocalReply::new(429).into());
//!         }
//!         Ok(Flow::Continue)
//!     }
//! }
//! ```
//!
//! A command's future is the hook's like an HTTP call's: the stream waits while it is
//! pending, and a stream that ends drops it (the late reply is ignored). Failures are
//! [`RedisError`]s, never panics: replies are decoded by a RESP2 parser that takes any bytes.

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) mod abi;
mod client;
mod commands;
mod error;
mod resp;

pub use client::RedisClient;
/// `hooks.on-redis-reply` of the component build routes the reply as proxy-wasm's callback.
#[cfg(all(target_arch = "wasm32", target_env = "p2", not(feature = "wasi-http")))]
pub(crate) use client::on_response as on_reply;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use client::on_response;
pub use error::RedisError;
pub use resp::{MAX_DEPTH, RedisValue, RespError, encode_command};
