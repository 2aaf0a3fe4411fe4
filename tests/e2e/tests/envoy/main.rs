//! The end-to-end tests, in one binary: the example plugins in a real Envoy (1.40, V8) on
//! loopback, with the upstreams and services they call in this process (see the `e2e`
//! library). Envoy runs the plugins, built by `compiled-plugins` before this binary compiles;
//! only `call_failures` and `grpc` also run one in our emulator, to compare what the plugin saw.

#![cfg(not(target_arch = "wasm32"))]

mod auth_flow;
mod basic_auth;
mod call_failures;
mod deploy;
mod ext_auth;
mod fan_out;
mod grpc;
mod higress_ports;
mod jwt_auth;
mod key_auth;
mod resilience;
mod retry;
mod security;
mod simple_plugins;
mod soak;
mod stream_redact;
