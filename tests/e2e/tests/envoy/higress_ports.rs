//! The configurations Higress's own tests refuse (key-auth, basic-auth and ext-auth, ported in
//! `examples/`), refused by Envoy running the ports: it does not start, and its log names the
//! reason in Higress's words.

use e2e::{Envoy, EnvoyConfig, Upstreams, plugin_wasm};

fn assert_refused(plugin: &str, cases: &[(&str, &str)]) {
    let upstreams = Upstreams::start_unrecorded();
    for (config, message) in cases {
        let exited = Envoy::try_start(
            &EnvoyConfig::new(plugin_wasm(plugin), upstreams.echo).plugin_config(*config),
        )
        .map(|_| "Envoy started")
        .expect_err("the configuration is refused");
        assert!(
            exited.log.contains(message),
            "{plugin} {config}: no {message:?} in\n{}",
            exited.log
        );
    }
}

#[test]
fn key_auth_refuses_what_higress_refuses() {
    let consumer = r#""consumers":[{"credential":"token1","name":"consumer1"}]"#;
    let cases = [
        (format!(r#"{{{consumer},"global_auth":true,"in_header":true,"in_query":false}}"#), "keys is required"),
        (format!(r#"{{{consumer},"global_auth":true,"in_header":true,"in_query":false,"keys":[]}}"#), "keys cannot be empty"),
        (r#"{"global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key"]}"#.to_string(), "consumers is required"),
        (r#"{"consumers":[],"global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key"]}"#.to_string(), "consumers cannot be empty"),
        (format!(r#"{{{consumer},"global_auth":true,"keys":["x-api-key"]}}"#), "must one of in_query/in_header required"),
        (r#"{"consumers":[{"credential":"token1","name":"consumer1"},{"credential":"token1","name":"consumer2"}],"global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key"]}"#.to_string(), "duplicate consumer credential: token1"),
        (format!(r#"{{"_rules_":[{{"_match_route_":["test-route"],"allow":[]}}],{consumer},"global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key"]}}"#), "allow cannot be empty"),
    ];
    let cases: Vec<(&str, &str)> = cases
        .iter()
        .map(|(config, message)| (config.as_str(), *message))
        .collect();
    assert_refused("key_auth", &cases);
}

#[test]
fn basic_auth_refuses_what_higress_refuses() {
    assert_refused(
        "basic_auth",
        &[
            (r#"{"global_auth":false}"#, "consumers is required"),
            (
                r#"{"consumers":[],"global_auth":false}"#,
                "consumers cannot be empty",
            ),
            (
                r#"{"consumers":[{"credential":"admin:123456","name":"consumer1"},{"credential":"admin:123456","name":"consumer2"}],"global_auth":false}"#,
                "duplicate consumer credential: admin:123456",
            ),
            (
                r#"{"consumers":[{"credential":"admin","name":"consumer1"}],"global_auth":false}"#,
                "invalid credential format: admin",
            ),
            (
                r#"{"consumers":[{"credential":"admin:123456"}],"global_auth":false}"#,
                "consumer name is required",
            ),
            (
                r#"{"consumers":[{"credential":"admin:123456","name":""}],"global_auth":false}"#,
                "consumer name is required",
            ),
            (
                r#"{"consumers":[{"credential":"","name":"consumer1"}],"global_auth":false}"#,
                "consumer credential is required",
            ),
            (r#"{"allow":[]}"#, "consumers is required"),
            (
                r#"{"consumers":[{"credential":"admin:123456","name":"consumer1"}],"global_auth":false,"_rules_":[{"allow":["consumer1"]}]}"#,
                "there is at least one of  '_match_route_'",
            ),
            (
                r#"{"consumers":[{"credential":"admin:123456","name":"consumer1"}],"global_auth":false,"_rules_":[{"_match_route_":[],"allow":["consumer1"]}]}"#,
                "there is at least one of  '_match_route_'",
            ),
        ],
    );
}

#[test]
fn ext_auth_refuses_what_higress_refuses() {
    let service = r#""http_service":{"endpoint_mode":"envoy","endpoint":{"service_name":"example.com","service_port":80,"path_prefix":"/auth"}}"#;
    let rule = r#""match_list":[{"match_rule_domain":"*.bar.com","match_rule_path":"/headers","match_rule_type":"prefix"}]"#;
    let cases = [
        ("{}".to_string(), "missing http_service in config"),
        (r#"{"http_service":{"endpoint_mode":"invalid_mode","endpoint":{"service_name":"example.com","service_port":80}}}"#.to_string(), "endpoint_mode invalid_mode is not supported"),
        (r#"{"http_service":{"endpoint_mode":"envoy"}}"#.to_string(), "missing endpoint in config"),
        (r#"{"http_service":{"endpoint_mode":"envoy","endpoint":{"service_name":"","service_port":80}}}"#.to_string(), "endpoint service name must not be empty"),
        (r#"{"http_service":{"endpoint_mode":"forward_auth","endpoint":{"service_name":"auth.example.com","service_port":8080,"request_method":"GET","path":"/auth"},"authorization_request":{"with_request_body":true}}}"#.to_string(), "requestMethod GET does not support with_request_body set to true"),
        (r#"{"http_service":{"endpoint_mode":"forward_auth","endpoint":{"service_name":"auth.example.com","service_port":8080,"service_host":"auth.example.com","request_method":"POST"}}}"#.to_string(), "when endpoint_mode is forward_auth, endpoint path must not be empty"),
        (r#"{"http_service":{"endpoint_mode":"envoy","endpoint":{"service_name":"example.com","service_port":80}}}"#.to_string(), "when endpoint_mode is envoy, endpoint path_prefix must not be empty"),
        (format!("{{{service},{rule}}}"), "missing match_type in config"),
        (format!(r#"{{{service},"match_type":"invalid_type",{rule}}}"#), "invalid match_type in config, must be 'whitelist' or 'blacklist'"),
        (
            format!(r#"{{{service},"match_type":"blacklist","match_list":[{{"match_rule_domain":"*.bar.com","match_rule_method":["POST","PUT","DELETE"],"match_rule_path":"/headers","match_rule_type":"invalid_type"}}]}}"#),
            "unknown string matcher type",
        ),
    ];
    let cases: Vec<(&str, &str)> = cases
        .iter()
        .map(|(config, message)| (config.as_str(), *message))
        .collect();
    assert_refused("ext_auth", &cases);
}
