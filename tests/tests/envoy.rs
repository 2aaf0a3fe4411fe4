//! The example plugins in a real Envoy (1.40, V8): each test starts its own Envoy and test
//! upstreams on free loopback ports, sends real HTTP requests, and checks what the client and
//! the upstream saw.

#![cfg(not(target_arch = "wasm32"))]

use e2e::{Envoy, EnvoyConfig, Upstreams, plugin_wasm};

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

#[test]
fn hello_adds_a_header() {
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("hello"), upstreams.echo)
            .plugin_config(r#"{"mockEnable": false}"#),
    );
    let response = envoy.send("GET", "/hi", &[], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["headers"]["hello"], "world");
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/hi");
    assert_eq!(recorded[0].header("hello"), Some("world"));
}

#[test]
fn hello_mock_enable_replies_locally() {
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("hello"), upstreams.echo)
            .plugin_config(r#"{"mockEnable": true}"#),
    );
    let response = envoy.send("GET", "/", &[], b"");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hello world");
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
    let started = std::time::Instant::now();
    let response = envoy.send("GET", "/orders", &[("authorization", "Bearer slow")], b"");
    assert_eq!(response.status, 503, "{}", response.text());
    // The plugin's timeout is 500 ms; the auth service answers after 2 s.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1800),
        "took {:?}",
        started.elapsed()
    );
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
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
