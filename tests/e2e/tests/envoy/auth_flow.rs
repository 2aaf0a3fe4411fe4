//! `auth-flow` in a real Envoy (1.40, V8): the two awaited calls and every fail-closed case.

use std::net::SocketAddr;

use e2e::{Envoy, EnvoyConfig, Server, Upstreams, json, plugin_wasm};
use hyper::StatusCode;

/// The auth-flow configuration of the demo.
const AUTH_FLOW_CONFIG: &str = r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#;

/// Envoy running `auth-flow` with the demo auth and users services.
fn auth_flow(upstreams: &Upstreams) -> Envoy {
    Envoy::start(
        &EnvoyConfig::new(plugin_wasm("auth_flow"), upstreams.echo)
            .plugin_config(AUTH_FLOW_CONFIG)
            .cluster("auth", upstreams.auth)
            .cluster("users", upstreams.users),
    )
}

/// Envoy running `auth-flow` with `auth` as the auth cluster and the demo users service.
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
    let upstreams = Upstreams::start();
    let envoy = auth_flow(&upstreams);
    let response = envoy.send(
        "GET",
        "/orders",
        &[
            ("authorization", "Bearer demo-token"),
            ("x-user-admin", "1"),
            ("x-user-id", "forged"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    let seen = &recorded[0];
    assert_eq!(seen.path, "/orders");
    assert_eq!(seen.header("x-user-id"), Some("u-1"));
    assert_eq!(seen.header("x-user-name"), Some("alice"));
    assert_eq!(seen.header("x-user-admin"), None, "{:?}", seen.headers);
    let ids: Vec<_> = seen
        .headers
        .iter()
        .filter(|(name, _)| name == "x-user-id")
        .collect();
    assert_eq!(ids.len(), 1, "{:?}", seen.headers);
}

#[test]
fn auth_flow_missing_credential_is_401() {
    let upstreams = Upstreams::start();
    let envoy = auth_flow(&upstreams);
    let response = envoy.send("GET", "/orders", &[], b"");
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
}

#[test]
fn auth_flow_wrong_credential_is_403() {
    let upstreams = Upstreams::start();
    let envoy = auth_flow(&upstreams);
    let response = envoy.send("GET", "/orders", &[("authorization", "Bearer wrong")], b"");
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
}

#[test]
fn auth_flow_slow_auth_is_503() {
    let upstreams = Upstreams::start();
    let envoy = auth_flow(&upstreams);
    let response = envoy.send("GET", "/orders", &[("authorization", "Bearer slow")], b"");
    // The auth service would let this credential in, after 2 s: the 503 is the timeout's.
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
    // Envoy ends a call that outlives its timeout (the plugin's 500 ms) with its own 504,
    // which the plugin gets as the timeout it is (the same line as in the emulator's test).
    let log = envoy.log();
    assert!(
        log.contains("auth: no response from cluster `auth` within the call's timeout (500 ms)"),
        "no timeout of the auth call in Envoy's log:\n{log}"
    );
}

#[test]
fn auth_flow_unreachable_auth_is_503() {
    let upstreams = Upstreams::start();
    // A port nothing listens on: Envoy's connection to it is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let envoy = auth_flow_with_auth(&upstreams, closed);
    assert_fails_closed(&envoy, &upstreams);
    let log = envoy.log();
    assert!(
        log.contains("auth: cluster `auth` could not be reached (remote connection failure"),
        "no unreachable auth cluster in Envoy's log:\n{log}"
    );
}

#[test]
fn auth_flow_post_body_reaches_the_upstream() {
    let upstreams = Upstreams::start();
    let envoy = auth_flow(&upstreams);
    let body = br#"{"item": 42, "note": "after two awaited calls"}"#;
    let response = envoy.send(
        "POST",
        "/orders",
        &[
            ("authorization", "Bearer demo-token"),
            ("content-type", "application/json"),
        ],
        body,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].body, body);
    assert_eq!(recorded[0].header("x-user-id"), Some("u-1"));
    assert_eq!(
        response.json()["body"],
        String::from_utf8_lossy(body).as_ref()
    );
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
