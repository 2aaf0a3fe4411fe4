//! Builds every plugin of the workspace to wasm, once, before the tests that run them compile
//! (see `proxy-async-guests`): proxy-wasm modules and, for the plugins on the SDK, components.
//!
//! Everything is built in release, the test fixtures too. The examples and baselines must be
//! (they ship and are measured), so the release dependency graph (SDK, executor, `proxy-wasm`,
//! `wit-bindgen`) is compiled anyway; a fixture then costs one more LTO link. Measured on 2
//! cores: fixtures in a separate quick `test-wasm` profile took 336 s CPU for all guests (the
//! dependency graph compiled twice per target), all-release 223 s.

use proxy_async_guests::GuestBuild;

/// The example plugins: they ship, so they are tested as they ship (release).
const EXAMPLES: &[&str] = &[
    "hello",
    "hello-no-config",
    "http-call",
    "auth-flow",
    "fan-out",
    "retry",
    "key-auth-redis",
    "stream-redact",
    "jwt-auth",
    "key-auth",
    "basic-auth",
    "ext-auth",
];

/// The examples also built as `wasi:http@0.3.0` middleware components.
const MIDDLEWARES: &[&str] = &["hello", "auth-flow", "fan-out", "retry", "stream-redact"];

/// `wasi:http` services a middleware is composed with (`wac plug`) for `wasmtime serve`.
const SERVICES: &[&str] = &["forward-service"];

/// The hand-written callback versions of two examples (`benches/baselines`): release too, as
/// they are measured.
const BASELINES: &[&str] = &["hello-baseline", "auth-flow-baseline"];

/// Plugins that exist only for tests: the SDK's fixtures (every backend) ...
const SDK_FIXTURES: &[&str] = &[
    "stream-plugin",
    "calls-plugin",
    "upload-plugin",
    "state-plugin",
];

/// ... and the host's (proxy-wasm modules only: one is written on the plain `proxy-wasm` crate,
/// the other tests the modules' Redis imports and export against a real server; components
/// send Redis commands in `key-auth-redis`'s lockstep scenarios).
const HOST_FIXTURES: &[&str] = &["raw-callbacks", "redis-plugin"];

fn main() {
    GuestBuild::new("../..")
        .modules(
            "release",
            &[EXAMPLES, BASELINES, SDK_FIXTURES, HOST_FIXTURES].concat(),
        )
        .components("release", &[EXAMPLES, SDK_FIXTURES].concat())
        .components("release", SERVICES)
        .middlewares("release", MIDDLEWARES)
        // What the plugins are built from: a change here rebuilds them.
        .watch(&[
            "abi",
            "executor",
            "sdk/src",
            "sdk/fixtures",
            "sdk/Cargo.toml",
            "examples",
            "benches/baselines",
            "host/fixtures",
            "wit",
            "sdk/wit-http",
            "Cargo.toml",
            "Cargo.lock",
        ])
        .run();
}
