//! `stream-redact` in a real Envoy (1.40, V8): secrets split across chunks that leave the
//! upstream apart, redacted while the body streams on to the client.

use e2e::scenarios::{self, EnvoyBackend};
use e2e::{Envoy, EnvoyConfig, assert_no_wasm_failure_logged, plugin_wasm, wasm_vm_stats};

#[test]
fn secrets_split_across_chunks_are_redacted_in_envoy() {
    let (upstream, requests) = scenarios::stream_redact_upstream();
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("stream_redact"), upstream.addr())
            .plugin_config(scenarios::STREAM_REDACT_CONFIG),
    );
    envoy.send("GET", "/image", &[], b"");
    let vm_before = wasm_vm_stats(&envoy.stats());
    assert!(
        vm_before.keys().any(|name| name.contains("created")),
        "no wasm VM stats: {vm_before:?}"
    );
    requests.lock().unwrap().clear();
    scenarios::stream_redact_redacts_split_secrets(&envoy, &requests);
    assert_eq!(
        wasm_vm_stats(&envoy.stats()),
        vm_before,
        "a wasm VM failed or was replaced"
    );
    assert_no_wasm_failure_logged(&envoy);
}

#[test]
fn the_body_reaches_the_client_while_the_upstream_still_sends() {
    scenarios::stream_redact_streams_the_body(&EnvoyBackend);
}

#[test]
fn envoy_refuses_a_configuration_without_patterns() {
    let (upstream, _) = scenarios::stream_redact_upstream();
    let exited = Envoy::try_start(
        &EnvoyConfig::new(plugin_wasm("stream_redact"), upstream.addr())
            .plugin_config(r#"{"patterns": ["secret-token", ""]}"#),
    )
    .map(|_| "Envoy started")
    .expect_err("the configuration has an empty pattern");
    assert!(
        exited
            .log
            .contains("invalid plugin configuration: field `patterns[1]`: must not be empty"),
        "{}",
        exited.log
    );
}
