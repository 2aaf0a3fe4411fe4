//! The key-auth port (Higress's key-auth, `examples/key-auth`) in a real Envoy: the request
//! cases of Higress's `main_test.go` end to end, and a rule by domain.

use e2e::{Envoy, EnvoyConfig, Upstreams, plugin_wasm};

const BASIC: &str = r#"{"consumers":[{"credential":"token1","name":"consumer1"},{"credential":"token2","name":"consumer2"}],
    "global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key","apikey"]}"#;
const QUERY_KEY: &str = r#"{"consumers":[{"credential":"token1","name":"consumer1"}],"global_auth":true,"in_header":false,"in_query":true,"keys":["apikey"]}"#;
const GLOBAL_AUTH_FALSE: &str = r#"{"consumers":[{"credential":"token1","name":"consumer1"}],"global_auth":false,"in_header":true,"in_query":false,"keys":["x-api-key"]}"#;

fn key_auth(upstreams: &Upstreams, config: &str) -> Envoy {
    Envoy::start(&EnvoyConfig::new(plugin_wasm("key_auth"), upstreams.echo).plugin_config(config))
}

/// Sends a request; `Ok(consumer header the upstream saw)` or `Err((status, www-authenticate,
/// body))`.
fn send(
    envoy: &Envoy,
    upstreams: &Upstreams,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Option<String>, (u16, String, String)> {
    let before = upstreams.recorded().len();
    let response = envoy.send("GET", path, headers, b"");
    if response.status == 200 {
        let recorded = upstreams.recorded();
        assert_eq!(recorded.len(), before + 1);
        let consumers: Vec<_> = recorded[before]
            .headers
            .iter()
            .filter(|(name, _)| name == "x-mse-consumer")
            .map(|(_, value)| value.clone())
            .collect();
        assert!(consumers.len() <= 1, "one consumer header: {consumers:?}");
        return Ok(consumers.into_iter().next());
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
        "Key realm=MSE Gateway".to_string(),
        body.to_string(),
    ))
}

#[test]
fn key_auth_cases_of_higress_in_envoy() {
    let upstreams = Upstreams::start();
    let envoy = key_auth(&upstreams, BASIC);
    let consumer1 = Ok(Some("consumer1".to_string()));
    assert_eq!(
        send(&envoy, &upstreams, "/test", &[("x-api-key", "token1")]),
        consumer1
    );
    // A consumer the client names itself is replaced.
    assert_eq!(
        send(
            &envoy,
            &upstreams,
            "/test",
            &[("x-mse-consumer", "admin"), ("x-api-key", "token1")]
        ),
        consumer1
    );
    assert_eq!(
        send(
            &envoy,
            &upstreams,
            "/test",
            &[("x-api-key", "invalid-token")]
        ),
        denied(
            403,
            "Request denied by Key Auth check. Unauthorized consumer."
        )
    );
    assert_eq!(
        send(&envoy, &upstreams, "/test", &[]),
        denied(
            401,
            "Request denied by Key Auth check. No Key Authentication information found."
        )
    );
    assert_eq!(
        send(
            &envoy,
            &upstreams,
            "/test",
            &[("x-api-key", "token1"), ("apikey", "token2")]
        ),
        denied(
            401,
            "Request denied by Key Auth check. Multi Key Authentication information found."
        )
    );
    drop(envoy);

    let envoy = key_auth(&upstreams, QUERY_KEY);
    assert_eq!(
        send(&envoy, &upstreams, "/test?apikey=token1", &[]),
        consumer1
    );
    assert_eq!(
        send(&envoy, &upstreams, "/test?apikey=invalid-token", &[]),
        denied(
            403,
            "Request denied by Key Auth check. Unauthorized consumer."
        )
    );
    assert_eq!(
        send(&envoy, &upstreams, "/test", &[]),
        denied(
            401,
            "Request denied by Key Auth check. No Key Authentication information found."
        )
    );
    drop(envoy);

    let envoy = key_auth(&upstreams, GLOBAL_AUTH_FALSE);
    assert_eq!(send(&envoy, &upstreams, "/test", &[]), Ok(None));
}

#[test]
fn key_auth_rules_allow_consumers_per_domain_in_envoy() {
    let upstreams = Upstreams::start();
    let config = BASIC.replacen(
        '{',
        r#"{"_rules_":[{"_match_domain_":["admin.example.com"],"allow":["consumer1"]}],"#,
        1,
    );
    let envoy = key_auth(&upstreams, &config);
    // Envoy takes the `:authority` from the absolute-form request target.
    let admin = "http://admin.example.com/";
    assert_eq!(
        send(&envoy, &upstreams, admin, &[("x-api-key", "token1")]),
        Ok(Some("consumer1".to_string()))
    );
    assert_eq!(
        send(&envoy, &upstreams, admin, &[("x-api-key", "token2")]),
        denied(
            403,
            "Request denied by Key Auth check. Unauthorized consumer."
        )
    );
    // Elsewhere, `global_auth: true`: any consumer.
    assert_eq!(
        send(&envoy, &upstreams, "/", &[("x-api-key", "token2")]),
        Ok(Some("consumer2".to_string()))
    );
}
