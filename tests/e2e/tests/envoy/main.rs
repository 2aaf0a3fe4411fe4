//! The end-to-end tests, in one binary: the example plugins in a real Envoy (1.40, V8) on
//! loopback, with the upstreams and services they call in this process (see the `e2e`
//! library). No wasm runtime of ours here: Envoy runs the plugins, built by
//! `compiled-plugins` before this binary compiles.

#![cfg(not(target_arch = "wasm32"))]

mod auth_flow;
mod deploy;
mod fan_out;
mod jwt_auth;
mod resilience;
mod retry;
mod security;
mod simple_plugins;
mod soak;
mod stream_redact;
