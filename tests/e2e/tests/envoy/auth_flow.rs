//! `auth-flow` in a real Envoy (1.40, V8): the two awaited calls and every fail-closed case.

use std::net::SocketAddr;

use e2e::scenarios::{self, EnvoyBackend};
use e2e::{Envoy, EnvoyConfig, Server, Upstreams, json, plugin_wasm};
use hyper::StatusCode;

/// The auth-flow configuration of the demo.
const AUTH_FLOW_CONFIG: &str = r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#;

/// Envoy running `auth-flow` with `auth` as its auth service and the demo users service.
fn auth_flow_with_auth(upstreams: &Upstreams, auth: SocketAddr) -> Envoy {
    Envoy::start(
        &EnvoyConfig::new(plugin_wasm("auth_flow"), upstreams.echo)
            .plugin_config(AUTH_FLOW_CONFIG)
            .cluster("auth", auth)
            .cluster("users", upstreams.users),
    )
}

/// Sends the demo credential and checks that the client got `503` and the upstream nothing.
fn assert_fails_closed(envoy: &Envoy, upstreams: &Upstreams) {
    let response = envoy.send(
        "GET",
        "/orders",
        &[("authorization", "Bearer demo-token")],
        b"",
    );
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
}

#[test]
fn auth_flow_success_sets_the_identity() {
    scenarios::auth_flow_success_sets_the_identity(&EnvoyBackend);
}

#[test]
fn auth_flow_missing_credential_is_401() {
    scenarios::auth_flow_missing_credential_is_401(&EnvoyBackend);
}

#[test]
fn auth_flow_wrong_credential_is_403() {
    scenarios::auth_flow_wrong_credential_is_403(&EnvoyBackend);
}

#[test]
fn auth_flow_slow_auth_is_503() {
    scenarios::auth_flow_slow_auth_is_503(&EnvoyBackend);
}

#[test]
fn auth_flow_unreachable_auth_is_503() {
    scenarios::auth_flow_unreachable_auth_is_503(&EnvoyBackend);
}

#[test]
fn auth_flow_post_body_reaches_the_upstream() {
    scenarios::auth_flow_post_body_reaches_the_upstream(&EnvoyBackend);
}

#[test]
fn auth_flow_auth_5xx_is_503() {
    let upstreams = Upstreams::start();
    let auth = Server::start(|_| async {
        json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"token": "t-alice"}),
        )
    });
    let envoy = auth_flow_with_auth(&upstreams, auth.addr());
    assert_fails_closed(&envoy, &upstreams);
}

#[test]
fn auth_flow_malformed_token_json_is_503() {
    let upstreams = Upstreams::start();
    let auth = Server::start(|_| async {
        let mut response = json(StatusCode::OK, &serde_json::json!({}));
        *response.body_mut() = r#"{"token": "t-alice""#.into();
        response
    });
    let envoy = auth_flow_with_auth(&upstreams, auth.addr());
    assert_fails_closed(&envoy, &upstreams);
}

#[test]
fn auth_flow_cluster_missing_from_envoy_is_503() {
    let upstreams = Upstreams::start();
    // Only the users cluster exists: Envoy refuses to dispatch the call to `auth`.
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("auth_flow"), upstreams.echo)
            .plugin_config(AUTH_FLOW_CONFIG)
            .cluster("users", upstreams.users),
    );
    assert_fails_closed(&envoy, &upstreams);
    // Refused calls are plugin errors, not VM failures: the next request is handled the same.
    assert_fails_closed(&envoy, &upstreams);
    let log = envoy.log();
    assert!(
        log.contains("the proxy refused a call to cluster `auth`"),
        "no error naming the cluster in the log:\n{log}"
    );
}
