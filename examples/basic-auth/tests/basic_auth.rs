//! Every case of Higress's own tests for basic-auth (alibaba/higress 4e0d691,
//! `plugins/wasm-go/extensions/basic-auth/main_test.go`: `TestParseGlobalConfig`,
//! `TestParseOverrideRuleConfig`, `TestParseRuleConfig`, `TestOnHttpRequestHeaders`,
//! `TestCompleteFlow`), with their configurations and requests. Where Go asserts only that the
//! callback returned `Continue` (true of every path there, denials included), the outcome Go's
//! plugin produces is asserted: the bypass, the denial (status, `WWW-Authenticate`, body,
//! details) or the consumer header. A local reply's callback answers `Pause` here.

use basic_auth::BasicAuth;
use proxy_async::higress::Higress;
use proxy_async::testing::{Action, PluginTest, TestStream};

const CONSUMERS: &str = r#""consumers":[{"credential":"admin:123456","name":"consumer1"},{"credential":"guest:abc","name":"consumer2"}]"#;

fn config(rest: &str) -> String {
    format!("{{{CONSUMERS},{rest}}}")
}

fn basic_global() -> String {
    config(r#""global_auth":false"#)
}

fn global_auth_true() -> String {
    config(r#""global_auth":true"#)
}

fn route_auth() -> String {
    config(r#""allow":["consumer1"],"global_auth":false"#)
}

type Test = PluginTest<Higress<BasicAuth>>;

fn plugin(config: &str) -> Test {
    PluginTest::new(config).expect("the configuration is valid")
}

fn refused(config: &str) -> String {
    PluginTest::<Higress<BasicAuth>>::new(config)
        .err()
        .expect("the configuration is refused")
        .errors
        .join("\n")
}

/// A request as Go's tests send it (`:authority=example.com, :path=/api/test, :method=GET`),
/// on Go's test host's route and cluster.
fn request<'a>(
    test: &'a Test,
    authorization: Option<&str>,
) -> (TestStream<'a, Higress<BasicAuth>>, Action) {
    let stream = test.stream();
    stream.set_property(&["route_name"], "test-route-default");
    stream.set_property(&["cluster_name"], "test-cluster-default");
    let mut headers = vec![
        (":authority", "example.com"),
        (":path", "/api/test"),
        (":method", "GET"),
    ];
    if let Some(authorization) = authorization {
        headers.push(("authorization", authorization));
    }
    let action = stream.send_request_headers(&headers, false);
    (stream, action)
}

const NO_AUTH_DATA: &str =
    "Request denied by Basic Auth check. No Basic Authentication information found.";
const BAD_CREDENTIAL: &str =
    "Request denied by Basic Auth check. Invalid username and/or password.";

fn assert_denied(
    stream: &TestStream<'_, Higress<BasicAuth>>,
    action: Action,
    status: u16,
    details: &str,
    body: &str,
) {
    assert_eq!(action, Action::Pause, "a local reply");
    let reply = stream.local_reply().expect("a denial");
    assert_eq!((reply.status, reply.details.as_str()), (status, details));
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=MSE Gateway")
    );
    assert_eq!(reply.body_str(), body);
    assert_eq!(stream.request_header("x-mse-consumer"), None);
}

fn assert_passed(
    stream: &TestStream<'_, Higress<BasicAuth>>,
    action: Action,
    consumer: Option<&str>,
) {
    assert_eq!(action, Action::Continue);
    assert_eq!(stream.local_reply(), None);
    assert_eq!(stream.request_header("x-mse-consumer").as_deref(), consumer);
}

// TestParseGlobalConfig ----------------------------------------------------------------------

#[test]
fn basic_global_config() {
    plugin(&basic_global());
}

#[test]
fn global_auth_true_config() {
    plugin(&global_auth_true());
}

#[test]
fn invalid_global_configs_are_refused_with_higress_messages() {
    for (name, config, message) in [
        (
            "missing consumers",
            r#"{"global_auth":false}"#,
            "consumers is required",
        ),
        (
            "empty consumers",
            r#"{"consumers":[],"global_auth":false}"#,
            "consumers cannot be empty",
        ),
        (
            "duplicate credential",
            r#"{"consumers":[{"credential":"admin:123456","name":"consumer1"},{"credential":"admin:123456","name":"consumer2"}],"global_auth":false}"#,
            "duplicate consumer credential: admin:123456",
        ),
        (
            "invalid credential format",
            r#"{"consumers":[{"credential":"admin","name":"consumer1"}],"global_auth":false}"#,
            "invalid credential format: admin",
        ),
        (
            "missing consumer name",
            r#"{"consumers":[{"credential":"admin:123456"}],"global_auth":false}"#,
            "consumer name is required",
        ),
        (
            "empty consumer name",
            r#"{"consumers":[{"credential":"admin:123456","name":""}],"global_auth":false}"#,
            "consumer name is required",
        ),
        (
            "empty credential",
            r#"{"consumers":[{"credential":"","name":"consumer1"}],"global_auth":false}"#,
            "consumer credential is required",
        ),
    ] {
        let error = refused(config);
        assert!(error.contains(message), "{name}: {error}");
    }
}

// TestParseOverrideRuleConfig ----------------------------------------------------------------

#[test]
fn route_auth_config() {
    let test = plugin(&route_auth());
    assert!(
        test.logs_at(log::Level::Warn)
            .iter()
            .any(|line| line.contains("`allow` in the global configuration is ignored")),
        "{:?}",
        test.logs()
    );
}

#[test]
fn domain_auth_config() {
    plugin(&config(r#""allow":["consumer2"],"global_auth":false"#));
}

#[test]
fn invalid_config_empty_allow_list() {
    assert!(refused(r#"{"allow":[]}"#).contains("consumers is required"));
}

// TestParseRuleConfig ------------------------------------------------------------------------

#[test]
fn rule_configs_of_every_level_start() {
    let mixed = r#"{"consumers":[{"credential":"admin:123456","name":"consumer1"},{"credential":"guest:abc","name":"consumer2"},{"credential":"user:def","name":"consumer3"}],"global_auth":false,
        "_rules_":[{"_match_route_":["api-route"],"allow":["consumer1"]},{"_match_domain_":["*.example.com"],"allow":["consumer2"]},{"_match_service_":["internal-service:8080"],"allow":["consumer3"]},{"_match_route_prefix_":["web-"],"allow":["consumer1","consumer2"]}]}"#;
    for (name, config) in [
        (
            "route level",
            config(
                r#""global_auth":false,"_rules_":[{"_match_route_":["route-a","route-b"],"allow":["consumer1"]},{"_match_route_":["route-c"],"allow":["consumer2"]}]"#,
            ),
        ),
        (
            "domain level",
            config(
                r#""global_auth":false,"_rules_":[{"_match_domain_":["*.example.com","test.com"],"allow":["consumer2"]},{"_match_domain_":["api.example.com"],"allow":["consumer1"]}]"#,
            ),
        ),
        (
            "service level",
            config(
                r#""global_auth":false,"_rules_":[{"_match_service_":["service-a:8080","service-b"],"allow":["consumer1"]},{"_match_service_":["service-c:9090"],"allow":["consumer2"]}]"#,
            ),
        ),
        (
            "route prefix level",
            config(
                r#""global_auth":false,"_rules_":[{"_match_route_prefix_":["api-","web-"],"allow":["consumer1"]},{"_match_route_prefix_":["admin-","internal-"],"allow":["consumer2"]}]"#,
            ),
        ),
        (
            "route and service level",
            config(
                r#""global_auth":false,"_rules_":[{"_match_route_":["route-a"],"_match_service_":["service-a:8080"],"allow":["consumer1"]},{"_match_route_":["route-b"],"_match_service_":["service-b:9090"],"allow":["consumer2"]}]"#,
            ),
        ),
        ("mixed level", mixed.to_string()),
    ] {
        let test = PluginTest::<Higress<BasicAuth>>::new(&config)
            .unwrap_or_else(|rejected| panic!("{name}: {:?}", rejected.errors));
        // Go's test host matches no rule: the global configuration, global_auth false, no
        // allow: the request passes unauthenticated.
        let (stream, action) = request(&test, None);
        assert_passed(&stream, action, None);
    }
}

#[test]
fn invalid_rule_configs_are_refused_with_higress_messages() {
    let no_match = "there is at least one of  '_match_route_', '_match_domain_', '_match_service_' and '_match_route_prefix_' can present in configuration.";
    for config in [
        r#"{"consumers":[{"credential":"admin:123456","name":"consumer1"}],"global_auth":false,"_rules_":[{"allow":["consumer1"]}]}"#,
        r#"{"consumers":[{"credential":"admin:123456","name":"consumer1"}],"global_auth":false,"_rules_":[{"_match_route_":[],"allow":["consumer1"]}]}"#,
    ] {
        let error = refused(config);
        assert!(error.contains(no_match), "{error}");
    }
}

// TestOnHttpRequestHeaders -------------------------------------------------------------------

#[test]
fn missing_authorization_header() {
    let test = plugin(&basic_global());
    let (stream, action) = request(&test, None);
    assert_passed(&stream, action, None);
}

#[test]
fn empty_authorization_header() {
    let test = plugin(&basic_global());
    let (stream, action) = request(&test, Some(""));
    assert_passed(&stream, action, None);
}

#[test]
fn invalid_authorization_format_missing_basic_prefix() {
    let test = plugin(&global_auth_true());
    let (stream, action) = request(&test, Some("Bearer token123"));
    assert_denied(
        &stream,
        action,
        401,
        "basic-auth.no_auth_data",
        NO_AUTH_DATA,
    );
}

#[test]
fn invalid_authorization_format_invalid_base64() {
    let test = plugin(&global_auth_true());
    let (stream, action) = request(&test, Some("Basic invalid-base64"));
    assert_denied(
        &stream,
        action,
        401,
        "basic-auth.bad_credential",
        BAD_CREDENTIAL,
    );
}

#[test]
fn invalid_credential_format_missing_password() {
    let test = plugin(&global_auth_true());
    let (stream, action) = request(&test, Some("Basic YWRtaW4="));
    assert_denied(
        &stream,
        action,
        401,
        "basic-auth.bad_credential",
        BAD_CREDENTIAL,
    );
}

#[test]
fn invalid_username_not_configured() {
    let test = plugin(&global_auth_true());
    let (stream, action) = request(&test, Some("Basic dW5rbm93bjpwYXNzd29yZA=="));
    assert_denied(
        &stream,
        action,
        401,
        "basic-auth.bad_credential",
        BAD_CREDENTIAL,
    );
}

#[test]
fn invalid_password_wrong_password() {
    let test = plugin(&global_auth_true());
    let (stream, action) = request(&test, Some("Basic YWRtaW46d3JvbmdwYXNzd29yZA=="));
    assert_denied(
        &stream,
        action,
        401,
        "basic-auth.bad_credential",
        BAD_CREDENTIAL,
    );
}

#[test]
fn valid_credentials_global_auth_true_no_allow_config() {
    let test = plugin(&global_auth_true());
    let (stream, action) = request(&test, Some("Basic YWRtaW46MTIzNDU2"));
    assert_passed(&stream, action, Some("consumer1"));
}

#[test]
fn valid_credentials_global_auth_false_with_allow_config() {
    // The global `allow` is ignored and global_auth is false: not authenticated at all.
    let test = plugin(&route_auth());
    let (stream, action) = request(&test, Some("Basic YWRtaW46MTIzNDU2"));
    assert_passed(&stream, action, None);
}

#[test]
fn valid_credentials_but_not_in_allow_list() {
    // As Go's plugin does: the global `allow` is ignored, so no 403 (despite the test's name).
    let test = plugin(&route_auth());
    let (stream, action) = request(&test, Some("Basic Z3Vlc3Q6YWJj"));
    assert_passed(&stream, action, None);
}

// TestCompleteFlow ---------------------------------------------------------------------------

#[test]
fn complete_basic_auth_flow() {
    let test = plugin(&global_auth_true());
    let (stream, action) = request(&test, None);
    assert_denied(
        &stream,
        action,
        401,
        "basic-auth.no_auth_data",
        NO_AUTH_DATA,
    );
    stream.end();
    let (stream, action) = request(&test, Some("Basic YWRtaW46MTIzNDU2"));
    assert_passed(&stream, action, Some("consumer1"));
    stream.end();
}

// Beyond Go's tests.

#[test]
fn a_rule_allows_its_consumers_only() {
    let test = plugin(&config(
        r#""global_auth":false,"_rules_":[{"_match_route_":["route-a"],"allow":["consumer1"]}]"#,
    ));
    let on_route_a = |authorization| {
        let stream = test.stream();
        stream.set_property(&["route_name"], "route-a");
        let headers = [
            (":authority", "example.com"),
            (":path", "/"),
            ("authorization", authorization),
        ];
        let action = stream.send_request_headers(&headers, false);
        (stream, action)
    };
    let (stream, action) = on_route_a("Basic YWRtaW46MTIzNDU2");
    assert_passed(&stream, action, Some("consumer1"));
    let (stream, action) = on_route_a("Basic Z3Vlc3Q6YWJj");
    assert_denied(
        &stream,
        action,
        403,
        "basic-auth.unauthorized",
        "Request denied by Basic Auth check. Unauthorized consumer.",
    );
    // A client-sent consumer never survives an accepted request.
    let stream = test.stream();
    stream.set_property(&["route_name"], "route-a");
    stream.send_request_headers(
        &[
            (":authority", "example.com"),
            (":path", "/"),
            ("x-mse-consumer", "consumer2"),
            ("authorization", "Basic YWRtaW46MTIzNDU2"),
        ],
        false,
    );
    assert_eq!(
        stream.request_header("x-mse-consumer").as_deref(),
        Some("consumer1")
    );
}
