//! The basic-auth port (Higress's basic-auth, `examples/basic-auth`) in a real Envoy: the
//! request cases of Higress's `main_test.go` end to end, and a rule by domain.

use e2e::{Envoy, EnvoyConfig, Upstreams, plugin_wasm};

const GLOBAL_AUTH_TRUE: &str = r#"{"consumers":[{"credential":"admin:123456","name":"consumer1"},{"credential":"guest:abc","name":"consumer2"}],"global_auth":true}"#;

const NO_AUTH_DATA: &str =
    "Request denied by Basic Auth check. No Basic Authentication information found.";
const BAD_CREDENTIAL: &str =
    "Request denied by Basic Auth check. Invalid username and/or password.";

/// `Ok(the consumer header the upstream saw)`, or `Err((status, www-authenticate, body))`.
fn send(
    envoy: &Envoy,
    upstreams: &Upstreams,
    path: &str,
    authorization: Option<&str>,
) -> Result<Option<String>, (u16, String, String)> {
    let before = upstreams.recorded().len();
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    let response = envoy.send("GET", path, &headers, b"");
    if response.status == 200 {
        let recorded = upstreams.recorded();
        return Ok(recorded[before]
            .header("x-mse-consumer")
            .map(str::to_string));
    }
    assert_eq!(
        upstreams.recorded().len(),
        before,
        "a denied request reached the upstream"
    );
    Err((
        response.status,
        response
            .header("www-authenticate")
            .unwrap_or_default()
            .to_string(),
        response.text(),
    ))
}

fn denied(status: u16, body: &str) -> Result<Option<String>, (u16, String, String)> {
    Err((
        status,
        "Basic realm=MSE Gateway".to_string(),
        body.to_string(),
    ))
}

#[test]
fn basic_auth_cases_of_higress_in_envoy() {
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("basic_auth"), upstreams.echo)
            .plugin_config(GLOBAL_AUTH_TRUE),
    );
    let send = |authorization| send(&envoy, &upstreams, "/api/test", authorization);
    assert_eq!(send(None), denied(401, NO_AUTH_DATA));
    assert_eq!(send(Some("Bearer token123")), denied(401, NO_AUTH_DATA));
    assert_eq!(
        send(Some("Basic invalid-base64")),
        denied(401, BAD_CREDENTIAL)
    );
    assert_eq!(send(Some("Basic YWRtaW4=")), denied(401, BAD_CREDENTIAL));
    assert_eq!(
        send(Some("Basic dW5rbm93bjpwYXNzd29yZA==")),
        denied(401, BAD_CREDENTIAL)
    );
    assert_eq!(
        send(Some("Basic YWRtaW46d3JvbmdwYXNzd29yZA==")),
        denied(401, BAD_CREDENTIAL)
    );
    assert_eq!(
        send(Some("Basic YWRtaW46MTIzNDU2")),
        Ok(Some("consumer1".to_string()))
    );
}

#[test]
fn basic_auth_rules_allow_consumers_per_domain_in_envoy() {
    let upstreams = Upstreams::start();
    let config = GLOBAL_AUTH_TRUE.replacen(
        '{',
        r#"{"_rules_":[{"_match_domain_":["admin.example.com"],"allow":["consumer1"]}],"#,
        1,
    );
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("basic_auth"), upstreams.echo).plugin_config(config),
    );
    // Envoy takes the `:authority` from the absolute-form request target.
    let admin = "http://admin.example.com/";
    assert_eq!(
        send(&envoy, &upstreams, admin, Some("Basic YWRtaW46MTIzNDU2")),
        Ok(Some("consumer1".to_string()))
    );
    assert_eq!(
        send(&envoy, &upstreams, admin, Some("Basic Z3Vlc3Q6YWJj")),
        denied(
            403,
            "Request denied by Basic Auth check. Unauthorized consumer."
        )
    );
    assert_eq!(
        send(&envoy, &upstreams, "/", Some("Basic Z3Vlc3Q6YWJj")),
        Ok(Some("consumer2".to_string()))
    );
}

#[test]
fn basic_auth_bypass_cases_of_higress_in_envoy() {
    // main_test.go `missing authorization header`, `empty authorization header` (global_auth
    // false: not authenticated), and the two `routeAuthConfig` cases (a global `allow` is
    // ignored: not authenticated either).
    let consumers = r#""consumers":[{"credential":"admin:123456","name":"consumer1"},{"credential":"guest:abc","name":"consumer2"}]"#;
    for (config, authorization) in [
        (format!(r#"{{{consumers},"global_auth":false}}"#), None),
        (format!(r#"{{{consumers},"global_auth":false}}"#), Some("")),
        (
            format!(r#"{{{consumers},"allow":["consumer1"],"global_auth":false}}"#),
            Some("Basic YWRtaW46MTIzNDU2"),
        ),
        (
            format!(r#"{{{consumers},"allow":["consumer1"],"global_auth":false}}"#),
            Some("Basic Z3Vlc3Q6YWJj"),
        ),
    ] {
        let upstreams = Upstreams::start();
        let envoy = Envoy::start(
            &EnvoyConfig::new(plugin_wasm("basic_auth"), upstreams.echo)
                .plugin_config(config.as_str()),
        );
        assert_eq!(
            send(&envoy, &upstreams, "/api/test", authorization),
            Ok(None),
            "{config} {authorization:?}"
        );
    }
}
