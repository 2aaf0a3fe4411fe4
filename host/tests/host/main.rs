//! The host's tests, in one binary (one link of wasmtime): compiled plugins in the emulated
//! proxy (modules and components), the hostcall glue against hand-written modules (WAT), the
//! WIT package, Redis against a real `redis-server`, serve mode, the host soak, and a hostile
//! host that every compiled plugin must survive.

mod common;
mod component;
mod emulated_examples;
mod hostile;
mod middleware;
mod plugins;
mod raw_plugin;
mod redis;
mod serve;
mod soak;
mod wasmtime_serve;
mod wat;
mod wit;
