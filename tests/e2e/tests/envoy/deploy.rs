//! The Envoy configuration the README points users to, `examples/auth-flow/envoy.yaml`, runs
//! as written: only its ports and the path of the `.wasm` are changed for the test.

use e2e::{Envoy, Upstreams, fresh_dir, plugin_wasm, workspace};

/// Replaces `from`, which must occur exactly once, with `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "examples/auth-flow/envoy.yaml should hold `{from}` once"
    );
    text.replacen(from, to, 1)
}

#[test]
fn example_envoy_config_runs_auth_flow() {
    let upstreams = Upstreams::start();
    let example = std::fs::read_to_string(workspace().join("examples/auth-flow/envoy.yaml"))
        .expect("examples/auth-flow/envoy.yaml");
    let wasm = plugin_wasm("auth_flow");
    let mut config = replace_once(
        &example,
        "target/wasm32-wasip1/release/auth_flow.wasm",
        &wasm.to_string_lossy(),
    );
    // Ports the kernel picks for the listener and the admin; the test upstreams' ports.
    for (port, to) in [
        (10000, 0),
        (9901, 0),
        (8000, upstreams.echo.port()),
        (8001, upstreams.auth.port()),
        (8002, upstreams.users.port()),
    ] {
        config = replace_once(
            &config,
            &format!("port_value: {port}}}"),
            &format!("port_value: {to}}}"),
        );
    }
    let dir = fresh_dir("example-config");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, config).unwrap();
    let envoy = Envoy::spawn(&path, dir)
        .unwrap_or_else(|exited| panic!("Envoy rejected the example config:\n{}", exited.log));

    let response = envoy.send(
        "GET",
        "/orders",
        &[("authorization", "Bearer demo-token")],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstreams.recorded()[0].header("x-user-id"), Some("u-1"));
    let denied = envoy.send("GET", "/orders", &[("authorization", "Bearer wrong")], b"");
    assert_eq!(denied.status, 403, "{}", denied.text());
}
