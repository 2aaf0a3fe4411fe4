//! Builds every plugin of the workspace to wasm, once, before the tests that run them compile
//! (see `proxy-async-guests`): the examples and the benchmark baselines as they ship
//! (release), the test fixtures with the quick `test-wasm` profile; proxy-wasm modules and,
//! for the plugins on the SDK, components.

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
];

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
/// the other awaits Redis, which the component world does not have).
const HOST_FIXTURES: &[&str] = &["raw-callbacks", "redis-plugin"];

fn main() {
    GuestBuild::new("../..")
        .modules("release", &[EXAMPLES, BASELINES].concat())
        .components("release", EXAMPLES)
        .modules("test-wasm", &[SDK_FIXTURES, HOST_FIXTURES].concat())
        .components("test-wasm", SDK_FIXTURES)
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
            "Cargo.toml",
            "Cargo.lock",
        ])
        .run();
}
