//! `hello`, `hello-no-config` and `http-call` in a real Envoy (1.40, V8).

use e2e::scenarios::{self, EnvoyBackend};
use e2e::{Envoy, EnvoyConfig, Server, Upstreams, json, plugin_wasm};
use hyper::StatusCode;

#[test]
fn hello_adds_a_header() {
    scenarios::hello_adds_a_header(&EnvoyBackend);
}

#[test]
fn hello_mock_enable_replies_locally() {
    scenarios::hello_mock_enable_replies_locally(&EnvoyBackend);
}

#[test]
fn hello_without_configuration_adds_the_header() {
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(&EnvoyConfig::new(plugin_wasm("hello"), upstreams.echo));
    let response = envoy.send("GET", "/", &[], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(upstreams.recorded()[0].header("hello"), Some("world"));
}

#[test]
fn hello_no_config_replies_locally() {
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(&EnvoyConfig::new(
        plugin_wasm("hello_no_config"),
        upstreams.echo,
    ));
    for path in ["/", "/anything?x=1"] {
        let response = envoy.send("GET", path, &[], b"");
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "hello world");
    }
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
}

/// The token service `http-call` calls: `GET /token` answers 200 with `x-token: t-123`,
/// anything else 500.
fn token_service() -> Server {
    Server::start(|request| async move {
        if request.path == "/token" {
            let mut response = json(StatusCode::OK, &serde_json::json!({}));
            response
                .headers_mut()
                .insert("x-token", hyper::header::HeaderValue::from_static("t-123"));
            response
        } else {
            json(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({}))
        }
    })
}

/// Envoy running `http-call` against a static-IP service `token:8080` (the cluster is named as
/// Higress names it), calling `request_path`.
fn http_call(upstreams: &Upstreams, token: &Server, request_path: &str) -> Envoy {
    let config = serde_json::json!({
        "serviceSource": "ip",
        "serviceName": "token",
        "servicePort": 8080,
        "requestPath": request_path,
        "tokenHeader": "x-token",
    });
    Envoy::start(
        &EnvoyConfig::new(plugin_wasm("http_call"), upstreams.echo)
            .plugin_config(config.to_string())
            .cluster("outbound|8080||token.static", token.addr()),
    )
}

#[test]
fn http_call_copies_the_token() {
    let upstreams = Upstreams::start();
    let token = token_service();
    let envoy = http_call(&upstreams, &token, "/token");
    let response = envoy.send("GET", "/api", &[("x-token", "client-made")], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    let tokens: Vec<_> = recorded[0]
        .headers
        .iter()
        .filter(|(name, _)| name == "x-token")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(tokens, ["t-123"], "{:?}", recorded[0].headers);
}

#[test]
fn http_call_non_200_is_500() {
    let upstreams = Upstreams::start();
    let token = token_service();
    let envoy = http_call(&upstreams, &token, "/broken");
    let response = envoy.send("GET", "/api", &[], b"");
    assert_eq!(response.status, 500, "{}", response.text());
    assert_eq!(response.text(), "http call failed");
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
}
