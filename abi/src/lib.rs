//! The proxy-wasm ABI v0.2.1 as Rust types, with no dependencies: what a plugin, an emulated
//! proxy and a wasm host say to each other.
//!
//! ```
//! use proxy_async_abi::{Action, MapType, Phase, Status, map};
//!
//! // Codes keep what the ABI does not define.
//! assert_eq!(MapType::from_code(2), MapType::HttpResponseHeaders);
//! assert_eq!(Status::from_code(42), Status::Unknown(42));
//! assert_eq!(Status::check(2), Err(Status::BadArgument));
//! assert!(Action::from_code(1).pauses());
//!
//! // Header maps travel in the wire format, decoded without trusting the other side.
//! let bytes = map::encode(&[(":path", "/"), ("x-user", "alice")]);
//! let pairs = map::decode(&bytes).unwrap();
//! assert_eq!(pairs[1], (&b"x-user"[..], &b"alice"[..]));
//! assert!(map::decode(&bytes[..bytes.len() - 1]).is_err());
//!
//! // Stream callbacks know where they fall.
//! assert_eq!(Phase::ResponseBody.direction().headers(), MapType::HttpResponseHeaders);
//! ```
//!
//! - [`codes`]: the spec's enumerations ([`Status`], [`Action`], [`LogLevel`], [`MapType`],
//!   [`BufferType`], [`StreamType`], [`MetricType`], [`PeerType`]), each with an
//!   `Unknown(u32)` arm.
//! - [`map`]: the header-map wire format.
//! - [`Direction`] and [`Phase`]: where in an HTTP stream a callback falls.
//! - [`Hostcalls`]: the hostcalls a plugin makes, one method per import; an emulated proxy
//!   implements it, a wasm host routes a module's imports to it.
//! - [`Callbacks`]: the callbacks a host makes, one method per `proxy_on_*` export; a native
//!   plugin driver and a compiled plugin in a wasm host implement it.
//! - [`gate`]: the sequencing of one stream's `async` hooks (what to answer, what to run,
//!   when to resume) as a state machine with no I/O, shared by every driver of a plugin.

pub mod callbacks;
pub mod codes;
pub mod envoy_replies;
pub mod gate;
pub mod hostcalls;
pub mod map;
mod phase;

pub use callbacks::{Callbacks, PluginFailure};
pub use codes::{Action, BufferType, LogLevel, MapType, MetricType, PeerType, Status, StreamType};
pub use hostcalls::{HeaderPairs, Hostcalls};
pub use phase::{Direction, Phase};
