//! A proxy-wasm host on wasmtime: loads a compiled proxy-wasm plugin, exposes its `proxy_on_*`
//! callbacks as Rust calls, routes every hostcall to a [`Hostcalls`] implementation, and counts
//! what each call costs. [`component`] runs the same plugins built as components of the
//! `plugin` world (`wit/`) with component-model async; [`twins`] runs both beside a plugin
//! under the SDK's testing API.
//!
//! ```no_run
//! use proxy_async_host::{Action, BufferType, Hostcalls, LogLevel, MapType, Plugin, Status};
//!
//! /// A host that serves a configuration and records the header changes.
//! #[derive(Default)]
//! struct Host {
//!     config: Vec<u8>,
//!     headers: Vec<(Vec<u8>, Vec<u8>)>,
//! }
//!
//! impl Hostcalls for Host {
//!     fn log(&mut self, level: LogLevel, message: &[u8]) -> Result<(), Status> {
//!         println!("[{level:?}] {}", String::from_utf8_lossy(message));
//!         Ok(())
//!     }
//!
//!     fn get_buffer_bytes(
//!         &mut self,
//!         buffer: BufferType,
//!         start: u32,
//!         max_size: u32,
//!     ) -> Result<Vec<u8>, Status> {
//!         match buffer {
//!             BufferType::PluginConfiguration => {
//!                 let start = (start as usize).min(self.config.len());
//!                 let end = start.saturating_add(max_size as usize).min(self.config.len());
//!                 Ok(self.config[start..end].to_vec())
//!             }
//!             _ => Err(Status::NotFound),
//!         }
//!     }
//!
//!     fn replace_header_map_value(
//!         &mut self,
//!         map: MapType,
//!         key: &[u8],
//!         value: &[u8],
//!     ) -> Result<(), Status> {
//!         if map != MapType::HttpRequestHeaders {
//!             return Err(Status::BadArgument);
//!         }
//!         self.headers.retain(|(name, _)| name != key);
//!         self.headers.push((key.to_vec(), value.to_vec()));
//!         Ok(())
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let wasm = std::fs::read("target/wasm32-wasip1/release/hello.wasm")?;
//! let config = br#"{"mockEnable": false}"#.to_vec();
//! let config_size = config.len() as u32;
//! let mut plugin = Plugin::load(&wasm, Host { config, ..Host::default() })?;
//!
//! plugin.on_context_create(1, 0)?; // the root context
//! assert!(plugin.on_vm_start(1, 0)?);
//! assert!(plugin.on_configure(1, config_size)?);
//! plugin.on_context_create(2, 1)?; // a stream
//! assert_eq!(plugin.on_request_headers(2, 0, true)?, Action::Continue);
//! println!(
//!     "on_request_headers: {} fuel, memory {} bytes, headers {:?}",
//!     plugin.last_call_fuel(),
//!     plugin.memory_size(),
//!     plugin.hostcalls().headers,
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # What is here, and what is not
//!
//! * The glue behind every `env.proxy_*` import of the ABI v0.2.1 (and Higress's Redis
//!   extension): bounds checks ([`Status::InvalidMemoryAccess`] for a bad guest pointer, never
//!   a host panic), header-map decoding and encoding, and copying results into guest memory
//!   through the guest's `proxy_on_memory_allocate` (or `malloc`). What each hostcall does is
//!   the [`Hostcalls`] implementation's (`proxy-async-abi`).
//! * [`PluginModule`] compiles a module once; [`Plugin`] is one instance of it, with its
//!   [`Hostcalls`] ([`Plugin::hostcalls`], [`Plugin::hostcalls_mut`]) and one method per
//!   `proxy_on_*` callback.
//! * A minimal WASI preview1: stdout and stderr become log lines, clocks and randomness work,
//!   everything else answers `NOTSUP`/`BADF` (see the [`wasi`] module).
//! * Cost: wasmtime fuel (about one unit per wasm instruction) per callback,
//!   [`Plugin::last_call_fuel`], and [`Plugin::memory_size`].
//! * Traps ([`PluginError::Trap`]) carry the panic message the plugin logged just before, and
//!   poison the plugin.
//! * Serve mode (`serve`, with the default `serve` feature): a compiled plugin in front of an
//!   upstream on a local HTTP/1.1 server, its HTTP calls made for real to named clusters mapped
//!   to local addresses (`cargo xtask run` runs plugins this way).
//!
//! Proxy state (header maps, bodies, streams, calls, shared data) is the [`Hostcalls`]
//! implementer's job; this crate keeps none. [`start_emulated`] runs a module against
//! `proxy-async-emulator`'s `ProxyState`, as the tests and serve mode do.

#![forbid(unsafe_code)]

pub mod component;
mod emulated;
mod guest;
mod hostcalls;
#[cfg(feature = "serve")]
pub mod middleware;
mod plugin;
#[cfg(feature = "serve")]
pub mod serve;
pub mod twins;
pub mod wasi;

pub use emulated::{EmulatedPlugin, PluginStartError, start_emulated, start_emulated_module};
pub use plugin::{DEFAULT_FUEL_BUDGET, Plugin, PluginError, PluginModule};
pub use proxy_async_abi::{
    Action, BufferType, HeaderPairs, Hostcalls, LogLevel, MapType, MetricType, PeerType, Status,
    StreamType,
};
pub use {proxy_async_abi, proxy_async_emulator};
