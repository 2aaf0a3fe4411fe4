//! End-to-end test support: the example plugins in a real Envoy (1.40, V8 runtime).
//!
//! - [`Envoy`] writes an Envoy configuration for one plugin into a fresh directory under
//!   `target/e2e/`, starts Envoy on loopback ports the kernel picks, waits until it is ready, and stops it
//!   when dropped.
//! - [`Upstreams`] starts, in this process, the services the requests and the plugins' calls
//!   go to: an echo upstream that records what it saw, and the demo auth and users services;
//!   [`Server`] starts one more with the behaviour a test needs, and [`RawServer`] one that
//!   writes bytes no HTTP library would (a status that is not a number, a slow trickle);
//!   [`GrpcServer`] is a gRPC service behind an HTTP/2 cluster.
//! - [`send`] is a plain HTTP/1.1 client (one request per connection).
//! - [`wasm_vm_stats`] and [`assert_no_wasm_failure_logged`] tell whether a wasm VM failed,
//!   from Envoy's stats and its log.
//! - [`scenarios`] are the examples' scenarios over HTTP, for Envoy and any other gateway.
//! - [`soak`] is the traffic of the soak tests, here and in the host's.
//! - [`plugin_wasm`] is where `compiled-plugins` built an example plugin (release).
//!
//! Envoy is `$ENVOY_BIN`, or `build/venv/bin/envoy` in the workspace, which `cargo xtask test`
//! installs. A missing Envoy fails the test; it never skips it.
//!
//! Native only: built for wasm (the workspace's wasm checks build every member), this crate
//! is empty.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test support: a panic is a failed test"
)]
#![cfg(not(target_arch = "wasm32"))]

mod client;
mod envoy;
mod grpc;
mod plugins;
mod raw;
pub mod scenarios;
pub mod soak;
mod upstream;
mod wasm_health;

pub use client::{Response, send};
pub use envoy::{Envoy, EnvoyConfig, Exited, envoy_bin, fresh_dir};
pub use grpc::{GrpcAnswer, GrpcCall, GrpcServer};
pub use plugins::{plugin_wasm, workspace};
pub use raw::{RawPart, RawServer, raw_bytes, raw_response};
pub use upstream::{DemoRequest, HttpResponse, Recorded, Server, Upstreams, json};
pub use wasm_health::{WASM_FAILURE_SIGNS, assert_no_wasm_failure_logged, wasm_vm_stats};
