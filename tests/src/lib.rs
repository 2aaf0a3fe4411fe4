//! End-to-end test support: the example plugins in a real Envoy (1.40, V8 runtime).
//!
//! - [`Envoy`] writes an Envoy configuration for one plugin into a fresh directory under
//!   `target/e2e/`, starts Envoy on loopback ports the kernel picks, waits until it is ready, and stops it
//!   when dropped.
//! - [`Upstreams`] starts, in this process, the services the requests and the plugins' calls
//!   go to: an echo upstream that records what it saw, and the demo auth and users services;
//!   [`Server`] starts one more with the behaviour a test needs.
//! - [`send`] is a plain HTTP/1.1 client (one request per connection).
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
mod plugins;
mod upstream;

pub use client::{Response, send};
pub use envoy::{Envoy, EnvoyConfig, Exited, envoy_bin, fresh_dir};
pub use plugins::{plugin_wasm, workspace};
pub use upstream::{DemoRequest, HttpResponse, Recorded, Server, Upstreams, json};
