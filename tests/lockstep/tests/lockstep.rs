//! Every scenario of every plugin crate, run three times at once: natively, against the
//! plugin's proxy-wasm module and against its component, each in its own emulated proxy,
//! failing on the first step where they disagree (see this crate's library).

#[path = "../../../examples/hello/tests/hello.rs"]
mod hello_scenarios;

#[path = "../../../examples/hello-no-config/tests/hello_no_config.rs"]
mod hello_no_config_scenarios;

#[path = "../../../examples/http-call/tests/http_call.rs"]
mod http_call_scenarios;

#[path = "../../../examples/auth-flow/tests/auth_flow.rs"]
mod auth_flow_scenarios;

#[path = "../../../examples/fan-out/tests/fan_out.rs"]
mod fan_out_scenarios;

#[path = "../../../examples/retry/tests/retry.rs"]
mod retry_scenarios;

#[path = "../../../examples/key-auth-redis/tests/key_auth_redis.rs"]
mod key_auth_redis_scenarios;

#[path = "../../../examples/stream-redact/tests/stream_redact.rs"]
mod stream_redact_scenarios;

#[path = "../../../examples/jwt-auth/tests/jwt_auth.rs"]
mod jwt_auth_scenarios;

#[path = "../../../examples/key-auth/tests/key_auth.rs"]
mod key_auth_scenarios;

#[path = "../../../examples/basic-auth/tests/basic_auth.rs"]
mod basic_auth_scenarios;

#[path = "../../../examples/ext-auth/tests/ext_auth.rs"]
mod ext_auth_scenarios;

#[path = "../../../sdk/fixtures/stream-plugin/tests/streams.rs"]
mod stream_plugin_scenarios;

#[path = "../../../sdk/fixtures/calls-plugin/tests/calls.rs"]
mod calls_plugin_scenarios;

#[path = "../../../sdk/fixtures/upload-plugin/tests/uploads.rs"]
mod upload_plugin_scenarios;

#[path = "../../../sdk/fixtures/state-plugin/tests/state.rs"]
mod state_plugin_scenarios;

mod backends;
