//! Every case of Higress's own tests for ext-auth (alibaba/higress 4e0d691,
//! `plugins/wasm-go/extensions/ext-auth/`): `main_test.go` (17: `TestParseConfig`,
//! `TestOnHttpRequestHeaders`, `TestOnHttpRequestBody`), `config/config_test.go` (15),
//! `expr/match_rules_test.go` (18), `expr/matcher_test.go` (11) and
//! `expr/repeated_string_matcher_test.go` (2), with their configurations, requests and the
//! auth service's answers. Where Go asserts only the callback's action, the call the plugin
//! made and the outcome are asserted too.
//!
//! What a test sees differently from Go's, and why (see the README): a call's pause is the
//! SDK's `Pause` (Go names `HeaderStopAllIterationAndWatermark`); with `with_request_body` the
//! request headers continue and the buffered body waits for the call (Go stops the headers);
//! a body sent while the call is out waits in Envoy until the headers resume, so it is sent
//! after the answer here.

use std::time::Duration;

use ext_auth::matcher::{MatchRules, Mode, RepeatedMatcher, Rule, StringMatcher};
use ext_auth::{EndpointMode, ExtAuth, ExtAuthConfig};
use proxy_async::higress::Higress;
use proxy_async::testing::{Action, Call, PluginTest, TestStream};
use proxy_async::{PluginConfig as _, Root as _};

const SERVICE: &str = r#""endpoint":{"path_prefix":"/auth","service_name":"ext-auth.backend.svc.cluster.local","service_port":8090}"#;
const CLUSTER: &str = "outbound|8090||ext-auth.backend.svc.cluster.local";
const AUTHORITY: &str = "ext-auth.backend.svc.cluster.local";

fn basic_envoy() -> String {
    format!(r#"{{"http_service":{{{SERVICE},"endpoint_mode":"envoy","timeout":1000}}}}"#)
}
const FORWARD_AUTH: &str = r#"{"http_service":{"endpoint":{"path":"/auth","request_method":"POST","service_name":"ext-auth.backend.svc.cluster.local","service_port":8090},"endpoint_mode":"forward_auth","timeout":1000}}"#;
fn headers_config() -> String {
    format!(
        r#"{{"http_service":{{"authorization_request":{{"allowed_headers":[{{"exact":"x-auth-version"}},{{"prefix":"x-custom"}}],"headers_to_add":{{"x-envoy-header":"true"}}}},"authorization_response":{{"allowed_client_headers":[{{"exact":"x-auth-failed"}}],"allowed_upstream_headers":[{{"exact":"x-user-id"}},{{"exact":"x-auth-version"}}]}},{SERVICE},"endpoint_mode":"envoy","timeout":1000}}}}"#
    )
}
fn with_request_body_config() -> String {
    format!(
        r#"{{"http_service":{{"authorization_request":{{"max_request_body_bytes":1024,"with_request_body":true}},{SERVICE},"endpoint_mode":"envoy","timeout":1000}}}}"#
    )
}
fn match_rules_config() -> String {
    format!(
        r#"{{"http_service":{{{SERVICE},"endpoint_mode":"envoy","timeout":1000}},"match_list":[{{"match_rule_domain":"api.example.com","match_rule_path":"/public","match_rule_type":"prefix"}},{{"match_rule_method":["GET"],"match_rule_path":"/health","match_rule_type":"exact"}}],"match_type":"whitelist"}}"#
    )
}
fn failure_mode() -> String {
    format!(
        r#"{{"failure_mode_allow":true,"failure_mode_allow_header_add":true,"http_service":{{{SERVICE},"endpoint_mode":"envoy","timeout":1000}},"status_on_error":500}}"#
    )
}

type Test = PluginTest<Higress<ExtAuth>>;

fn plugin(config: &str) -> Test {
    PluginTest::new(config).expect("the configuration is valid")
}

fn request<'a>(
    test: &'a Test,
    headers: &[(&str, &str)],
) -> (TestStream<'a, Higress<ExtAuth>>, Action) {
    let stream = test.stream();
    let action = stream.send_request_headers(headers, false);
    (stream, action)
}

fn only_call(test: &Test) -> Call {
    let calls = test.calls();
    assert_eq!(calls.len(), 1, "one call to the auth service: {calls:?}");
    assert_eq!(
        (calls[0].cluster(), calls[0].authority()),
        (CLUSTER, AUTHORITY)
    );
    assert_eq!(calls[0].timeout(), Duration::from_millis(1000));
    calls[0].clone()
}

/// The call's headers but the pseudo-headers, in order.
fn call_headers(call: &Call) -> Vec<(String, String)> {
    call.headers()
        .iter()
        .filter(|(name, _)| !name.starts_with(':'))
        .cloned()
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn text(value: Option<Vec<u8>>) -> Option<String> {
    value.map(|bytes| String::from_utf8(bytes).expect("text"))
}

const POST_USERS: [(&str, &str); 4] = [
    (":authority", "example.com"),
    (":path", "/users"),
    (":method", "POST"),
    ("authorization", "Bearer token123"),
];

// main_test.go: TestParseConfig ---------------------------------------------------------------

#[test]
fn main_configs_start() {
    for config in [
        basic_envoy(),
        FORWARD_AUTH.to_string(),
        headers_config(),
        with_request_body_config(),
        match_rules_config(),
        failure_mode(),
    ] {
        plugin(&config);
    }
}

// main_test.go: TestOnHttpRequestHeaders ------------------------------------------------------

#[test]
fn basic_envoy_request_headers() {
    let test = plugin(&basic_envoy());
    let (stream, action) = request(
        &test,
        &[
            (":authority", "example.com"),
            (":path", "/users"),
            (":method", "POST"),
            ("authorization", "Bearer token123"),
            ("x-custom-header", "value"),
        ],
    );
    assert_eq!(action, Action::Pause);
    let call = only_call(&test);
    assert_eq!((call.method(), call.path()), ("POST", "/auth/users"));
    assert_eq!(
        call_headers(&call),
        pairs(&[("authorization", "Bearer token123")])
    );
    assert_eq!(call.body_str(), "");
    assert_eq!(
        text(stream.property(&["clear_route_cache"])).as_deref(),
        Some("off")
    );
    test.respond(
        &call,
        200,
        &[
            ("x-user-id", "user123"),
            ("x-auth-version", "1.0"),
            ("content-type", "application/json"),
        ],
        r#"{"authorized": true, "user": "user123"}"#,
    );
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.local_reply(), None);
    assert_eq!(
        stream.request_header("x-user-id"),
        None,
        "no allowed_upstream_headers"
    );
}

#[test]
fn forward_auth_request_headers() {
    let test = plugin(FORWARD_AUTH);
    let (stream, action) = request(
        &test,
        &[
            (":authority", "example.com"),
            (":path", "/users"),
            (":method", "GET"),
            ("authorization", "Bearer token123"),
            ("x-custom-header", "value"),
        ],
    );
    assert_eq!(action, Action::Pause);
    let call = only_call(&test);
    assert_eq!((call.method(), call.path()), ("POST", "/auth"));
    assert_eq!(
        call_headers(&call),
        pairs(&[
            ("authorization", "Bearer token123"),
            ("x-forwarded-host", "example.com"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", ""),
            ("x-forwarded-uri", "/users"),
            ("x-original-method", "GET"),
            ("x-original-uri", "/users"),
        ])
    );
    test.respond(
        &call,
        200,
        &[
            ("x-user-id", "user456"),
            ("x-auth-version", "1.0"),
            ("content-type", "application/json"),
        ],
        r#"{"authorized": true, "user": "user456"}"#,
    );
    assert_eq!(stream.resumed_requests(), 1);
}

#[test]
fn headers_filtered_request_headers() {
    let test = plugin(&headers_config());
    let (_stream, action) = request(
        &test,
        &[
            (":authority", "example.com"),
            (":path", "/users"),
            (":method", "POST"),
            ("authorization", "Bearer token123"),
            ("x-auth-version", "1.0"),
            ("x-custom-header", "value"),
            ("x-ignored-header", "ignored"),
        ],
    );
    assert_eq!(action, Action::Pause);
    let call = only_call(&test);
    assert_eq!(
        call_headers(&call),
        pairs(&[
            ("authorization", "Bearer token123"),
            ("x-auth-version", "1.0"),
            ("x-custom-header", "value"),
            ("x-envoy-header", "true")
        ])
    );
}

#[test]
fn with_request_body_request_headers() {
    let test = plugin(&with_request_body_config());
    let (stream, action) = request(
        &test,
        &[
            (":authority", "example.com"),
            (":path", "/users"),
            (":method", "POST"),
            ("authorization", "Bearer token123"),
            ("content-type", "application/json"),
        ],
    );
    // Go stops the headers (HeaderStopIteration); here they continue and the body waits.
    assert_eq!(action, Action::Continue);
    assert!(test.calls().is_empty(), "the call waits for the body");
    assert_eq!(
        text(stream.property(&["clear_route_cache"])).as_deref(),
        Some("off")
    );
    assert_eq!(
        text(stream.property(&["set_decoder_buffer_limit"])).as_deref(),
        Some("1024")
    );
}

#[test]
fn match_rules_request_headers() {
    let test = plugin(&match_rules_config());
    let (stream, action) = request(
        &test,
        &[
            (":authority", "api.example.com"),
            (":path", "/public/users"),
            (":method", "GET"),
        ],
    );
    assert_eq!(action, Action::Continue);
    assert!(test.calls().is_empty());
    assert_eq!(stream.property(&["clear_route_cache"]), None);
}

#[test]
fn match_rules_no_match_request_headers() {
    let test = plugin(&match_rules_config());
    let (stream, action) = request(
        &test,
        &[
            (":authority", "api.example.com"),
            (":path", "/private/users"),
            (":method", "POST"),
        ],
    );
    assert_eq!(action, Action::Pause);
    let call = only_call(&test);
    assert_eq!(
        (call.method(), call.path()),
        ("POST", "/auth/private/users")
    );
    assert!(call_headers(&call).is_empty());
    test.respond(
        &call,
        401,
        &[
            ("x-auth-failed", "true"),
            ("content-type", "application/json"),
        ],
        r#"{"authorized": false, "message": "Invalid token"}"#,
    );
    let reply = stream.local_reply().expect("the service's denial");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (401, "ext-auth.unauthorized")
    );
    assert_eq!(reply.header("x-auth-failed"), Some("true"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.body_str(),
        r#"{"authorized": false, "message": "Invalid token"}"#
    );
}

#[test]
fn authentication_failed() {
    let test = plugin(&basic_envoy());
    let (stream, action) = request(
        &test,
        &[
            (":authority", "example.com"),
            (":path", "/users"),
            (":method", "POST"),
            ("authorization", "Bearer invalid-token"),
        ],
    );
    assert_eq!(action, Action::Pause);
    test.respond(
        &only_call(&test),
        403,
        &[
            ("x-auth-failed", "true"),
            ("content-type", "application/json"),
        ],
        r#"{"authorized": false, "message": "Access denied"}"#,
    );
    let reply = stream.local_reply().expect("the service's denial");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (403, "ext-auth.unauthorized")
    );
    assert_eq!(reply.header("x-auth-failed"), Some("true"));
    assert_eq!(
        reply.body_str(),
        r#"{"authorized": false, "message": "Access denied"}"#
    );
    assert_eq!(stream.resumed_requests(), 0);
}

#[test]
fn authentication_service_error() {
    let test = plugin(&basic_envoy());
    let (stream, action) = request(&test, &POST_USERS);
    assert_eq!(action, Action::Pause);
    test.respond(
        &only_call(&test),
        500,
        &[
            ("x-auth-error", "true"),
            ("content-type", "application/json"),
        ],
        r#"{"error": "Internal server error"}"#,
    );
    let reply = stream.local_reply().expect("status_on_error");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (403, "ext-auth.unauthorized")
    );
    assert_eq!(reply.header("x-auth-error"), Some("true"));
    assert_eq!(reply.body_str(), r#"{"error": "Internal server error"}"#);
    assert_eq!(stream.resumed_requests(), 0);
}

#[test]
fn failure_mode_allow() {
    let test = plugin(&failure_mode());
    let (stream, action) = request(&test, &POST_USERS);
    assert_eq!(action, Action::Pause);
    test.respond(
        &only_call(&test),
        500,
        &[
            ("x-auth-error", "true"),
            ("content-type", "application/json"),
        ],
        r#"{"error": "Internal server error"}"#,
    );
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.local_reply(), None);
    assert_eq!(
        stream
            .request_header("x-envoy-auth-failure-mode-allowed")
            .as_deref(),
        Some("true")
    );
}

// main_test.go: TestOnHttpRequestBody ---------------------------------------------------------

#[test]
fn with_request_body() {
    let test = plugin(&with_request_body_config());
    let mut headers = POST_USERS.to_vec();
    headers.push(("content-type", "application/json"));
    let (stream, _) = request(&test, &headers);
    let body = r#"{"username": "test", "password": "password123"}"#;
    assert_eq!(stream.send_request_body(body, true), Action::Pause);
    let call = only_call(&test);
    assert_eq!((call.method(), call.path()), ("POST", "/auth/users"));
    assert_eq!(
        call_headers(&call),
        pairs(&[("authorization", "Bearer token123")])
    );
    assert_eq!(call.body_str(), body);
}

#[test]
fn without_request_body() {
    let test = plugin(&basic_envoy());
    let (stream, action) = request(&test, &POST_USERS);
    assert_eq!(action, Action::Pause);
    test.respond(&only_call(&test), 200, &[], "");
    assert_eq!(
        stream.send_request_body(r#"{"username": "test", "password": "password123"}"#, true),
        Action::Continue
    );
    assert_eq!(test.all_calls().len(), 1, "no second call");
}

// config/config_test.go: TestParseConfig ------------------------------------------------------

/// The configuration natively; its start-up (on every backend) must agree.
fn parse(json: &str) -> Result<ExtAuthConfig, String> {
    let started = PluginTest::<Higress<ExtAuth>>::new(json)
        .map(|_| ())
        .map_err(|rejected| rejected.errors.join("\n"));
    let config: ext_auth::Config = serde_json::from_str(json).map_err(|error| error.to_string())?;
    config.validate().map_err(|error| error.to_string())?;
    let parsed = ExtAuthConfig::configure(config).map_err(|error| error.to_string());
    assert_eq!(
        started.is_ok(),
        parsed.is_ok(),
        "the plugin's start agrees: {started:?}"
    );
    parsed
}

const DEFAULT_SERVICE: &str = r#""http_service":{"endpoint_mode":"envoy","endpoint":{"service_name":"example.com","service_port":80,"path_prefix":"/auth"}}"#;

#[test]
fn valid_config_with_default_values() {
    let config = parse(&format!("{{{DEFAULT_SERVICE}}}")).expect("valid");
    assert_eq!(config.client.cluster(), "outbound|80||example.com");
    assert_eq!(config.client.authority(), "example.com");
    assert_eq!(
        config.mode,
        EndpointMode::Envoy {
            path_prefix: "/auth".into()
        }
    );
    assert_eq!(config.timeout, Duration::from_millis(1000));
    assert_eq!(
        (config.match_rules.mode, config.match_rules.rules.len()),
        (Mode::Whitelist, 0)
    );
    assert_eq!(
        (
            config.failure_mode_allow,
            config.failure_mode_allow_header_add,
            config.status_on_error
        ),
        (false, false, 403)
    );
    assert_eq!(
        (config.with_request_body, config.max_request_body_bytes),
        (false, 10 * 1024 * 1024)
    );
    assert!(config.headers_to_add.is_empty() && config.allowed_headers.is_none());
}

#[test]
fn valid_config_with_custom_values() {
    let config = parse(r#"{"http_service":{"endpoint_mode":"forward_auth","endpoint":{"service_name":"auth.example.com","service_port":8080,"service_host":"auth.example.com","request_method":"POST","path":"/auth"},"timeout":2000,"authorization_request":{"headers_to_add":{"X-Auth-Source":"wasm"},"with_request_body":true,"max_request_body_bytes":1048576}},"skipped_path_prefixes":["/health","/metrics"],"failure_mode_allow":true,"failure_mode_allow_header_add":true,"status_on_error":500}"#).expect("valid");
    assert_eq!(config.client.cluster(), "outbound|8080||auth.example.com");
    assert_eq!(
        config.mode,
        EndpointMode::ForwardAuth {
            method: "POST".into(),
            path: "/auth".into()
        }
    );
    assert_eq!(config.timeout, Duration::from_millis(2000));
    assert_eq!(
        config.headers_to_add,
        [("X-Auth-Source".to_string(), "wasm".to_string())]
    );
    assert_eq!(
        (config.with_request_body, config.max_request_body_bytes),
        (true, 1_048_576)
    );
    assert_eq!(
        (
            config.failure_mode_allow,
            config.failure_mode_allow_header_add,
            config.status_on_error
        ),
        (true, true, 500)
    );
}

#[test]
fn invalid_configs_are_refused_with_higress_messages() {
    for (name, json, message) in [
        ("Missing HttpService Configuration", "{}".to_string(), "missing http_service in config"),
        ("Invalid Endpoint Mode", r#"{"http_service":{"endpoint_mode":"invalid_mode","endpoint":{"service_name":"example.com","service_port":80}}}"#.to_string(), "endpoint_mode invalid_mode is not supported"),
        ("Missing Endpoint Configuration", r#"{"http_service":{"endpoint_mode":"envoy"}}"#.to_string(), "missing endpoint in config"),
        ("Empty Service Name", r#"{"http_service":{"endpoint_mode":"envoy","endpoint":{"service_name":"","service_port":80}}}"#.to_string(), "endpoint service name must not be empty"),
        ("Invalid Request Method with Request Body", r#"{"http_service":{"endpoint_mode":"forward_auth","endpoint":{"service_name":"auth.example.com","service_port":8080,"request_method":"GET","path":"/auth"},"authorization_request":{"with_request_body":true}}}"#.to_string(), "requestMethod GET does not support with_request_body set to true"),
        ("Missing Path for Forward Auth", r#"{"http_service":{"endpoint_mode":"forward_auth","endpoint":{"service_name":"auth.example.com","service_port":8080,"service_host":"auth.example.com","request_method":"POST"}}}"#.to_string(), "when endpoint_mode is forward_auth, endpoint path must not be empty"),
        ("Missing Path Prefix for Envoy", r#"{"http_service":{"endpoint_mode":"envoy","endpoint":{"service_name":"example.com","service_port":80}}}"#.to_string(), "when endpoint_mode is envoy, endpoint path_prefix must not be empty"),
        ("Missing Match Type", format!(r#"{{{DEFAULT_SERVICE},"match_list":[{{"match_rule_domain":"*.bar.com","match_rule_path":"/headers","match_rule_type":"prefix"}}]}}"#), "missing match_type in config"),
        ("Invalid Match Type", format!(r#"{{{DEFAULT_SERVICE},"match_type":"invalid_type","match_list":[{{"match_rule_domain":"*.bar.com","match_rule_path":"/headers","match_rule_type":"prefix"}}]}}"#), "invalid match_type in config, must be 'whitelist' or 'blacklist'"),
        ("Invalid Match Rule Type", format!(r#"{{{DEFAULT_SERVICE},"match_type":"blacklist","match_list":[{{"match_rule_domain":"*.bar.com","match_rule_method":["POST","PUT","DELETE"],"match_rule_path":"/headers","match_rule_type":"invalid_type"}}]}}"#), r#"failed to build string matcher for rule with domain "*.bar.com", method [POST PUT DELETE], path "/headers", type "invalid_type": unknown string matcher type"#),
    ] {
        let error = parse(&json).err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(error.contains(message), "{name}: {error}");
    }
}

#[test]
fn valid_match_rules() {
    let config = parse(&format!(r#"{{{DEFAULT_SERVICE},"match_type":"blacklist","match_list":[{{"match_rule_domain":"*.bar.com","match_rule_path":"/headers","match_rule_type":"prefix"}}]}}"#)).expect("blacklist");
    let rules = &config.match_rules;
    assert_eq!((rules.mode, rules.rules.len()), (Mode::Blacklist, 1));
    assert_eq!(
        (rules.rules[0].domain.as_str(), rules.rules[0].methods.len()),
        ("*.bar.com", 0)
    );
    assert!(
        rules.rules[0]
            .path
            .as_ref()
            .is_some_and(|path| path.matches("/headers/x") && !path.matches("/Headers"))
    );

    let config = parse(&format!(r#"{{{DEFAULT_SERVICE},"match_type":"whitelist","match_list":[{{"match_rule_domain":"*.foo.com","match_rule_method":["GET"],"match_rule_path":"/api","match_rule_type":"exact"}}]}}"#)).expect("whitelist");
    let rule = &config.match_rules.rules[0];
    assert_eq!(
        (
            config.match_rules.mode,
            rule.domain.as_str(),
            rule.methods.as_slice()
        ),
        (Mode::Whitelist, "*.foo.com", &["GET".to_string()][..])
    );
    assert!(
        rule.path
            .as_ref()
            .is_some_and(|path| path.matches("/api") && !path.matches("/api/x"))
    );

    let config = parse(&format!(r#"{{{DEFAULT_SERVICE},"match_type":"whitelist","match_list":[{{"match_rule_method":["GET"]}}]}}"#)).expect("only method");
    let rule = &config.match_rules.rules[0];
    assert_eq!(
        (rule.domain.as_str(), rule.methods.as_slice()),
        ("", &["GET".to_string()][..])
    );
    assert!(rule.path.is_none());
}

// expr/match_rules_test.go: TestIsAllowedByMode ------------------------------------------------

fn rule(domain: &str, methods: &[&str], path: Option<&str>) -> Rule {
    Rule {
        domain: domain.to_string(),
        methods: methods.iter().map(|method| method.to_string()).collect(),
        path: path.map(|path| StringMatcher::build("exact", path, true).expect("a matcher")),
    }
}

/// A case of `TestIsAllowedByMode`: name, mode, rules, (domain, method, path), expected.
type ModeCase = (
    &'static str,
    Mode,
    Vec<Rule>,
    (&'static str, &'static str, &'static str),
    bool,
);

#[test]
fn is_allowed_by_mode() {
    let foo = || vec![rule("example.com", &["GET"], Some("/foo"))];
    let generic = || vec![rule("*.example.com", &["GET"], Some("/foo"))];
    let cases: Vec<ModeCase> = vec![
        (
            "Whitelist mode, rule matches",
            Mode::Whitelist,
            foo(),
            ("example.com", "GET", "/foo"),
            true,
        ),
        (
            "Whitelist mode, rule does not match",
            Mode::Whitelist,
            foo(),
            ("example.com", "POST", "/foo"),
            false,
        ),
        (
            "Blacklist mode, rule matches",
            Mode::Blacklist,
            foo(),
            ("example.com", "GET", "/foo"),
            false,
        ),
        (
            "Blacklist mode, rule does not match",
            Mode::Blacklist,
            foo(),
            ("example.com", "POST", "/foo"),
            true,
        ),
        (
            "Domain matches, Path is empty",
            Mode::Whitelist,
            vec![rule("example.com", &[], None)],
            ("example.com", "GET", "/foo"),
            true,
        ),
        (
            "Domain is empty, Path matches",
            Mode::Whitelist,
            vec![rule("", &[], Some("/foo"))],
            ("example.com", "GET", "/foo"),
            true,
        ),
        (
            "All fields (Domain, Method, Path) are empty",
            Mode::Whitelist,
            vec![rule("", &[], None)],
            ("example.com", "GET", "/foo"),
            false,
        ),
        (
            "Invalid mode",
            Mode::Other,
            foo(),
            ("example.com", "GET", "/foo"),
            false,
        ),
        (
            "Whitelist mode, generic domain matches",
            Mode::Whitelist,
            generic(),
            ("sub.example.com", "GET", "/foo"),
            true,
        ),
        (
            "Whitelist mode, generic domain does not match",
            Mode::Whitelist,
            generic(),
            ("example.com", "GET", "/foo"),
            false,
        ),
        (
            "Whitelist mode, only method matches",
            Mode::Whitelist,
            vec![rule("", &["GET"], None)],
            ("example.com", "GET", "/foo"),
            true,
        ),
        (
            "Whitelist mode, only domain matches",
            Mode::Whitelist,
            vec![rule("example.com", &[], None)],
            ("example.com", "GET", "/foo"),
            true,
        ),
        (
            "Blacklist mode, generic domain matches",
            Mode::Blacklist,
            generic(),
            ("sub.example.com", "GET", "/foo"),
            false,
        ),
        (
            "Blacklist mode, generic domain does not match",
            Mode::Blacklist,
            generic(),
            ("example.com", "GET", "/foo"),
            true,
        ),
        (
            "Domain with special characters",
            Mode::Whitelist,
            vec![rule("example-*.com", &["GET"], Some("/foo"))],
            ("example-test.com", "GET", "/foo"),
            true,
        ),
        (
            "Path with special characters",
            Mode::Whitelist,
            vec![rule("example.com", &["GET"], Some("/foo-bar"))],
            ("example.com", "GET", "/foo-bar"),
            true,
        ),
        (
            "Multiple methods, one matches",
            Mode::Whitelist,
            vec![rule("example.com", &["GET", "POST"], Some("/foo"))],
            ("example.com", "POST", "/foo"),
            true,
        ),
        (
            "Multiple methods, none match",
            Mode::Whitelist,
            vec![rule("example.com", &["GET", "POST"], Some("/foo"))],
            ("example.com", "PUT", "/foo"),
            false,
        ),
    ];
    assert_eq!(cases.len(), 18);
    for (name, mode, rules, (domain, method, path), expected) in cases {
        let rules = MatchRules { mode, rules };
        assert_eq!(rules.is_allowed(domain, method, path), expected, "{name}");
    }
}

// expr/matcher_test.go: TestStringMatcher ------------------------------------------------------

/// A case of `TestStringMatcher`: type, target, ignore case, matched, mismatched.
type MatcherCase = (
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
);

#[test]
fn string_matchers() {
    let cases: &[MatcherCase] = &[
        ("exact", "foo", false, &["foo"], &["fo", "fooo"]),
        ("exact", "foo", true, &["Foo", "foo"], &[]),
        ("prefix", "/p", false, &["/p", "/pa"], &["/P"]),
        ("prefix", "/p", true, &["/P", "/p", "/pa", "/Pa"], &["/"]),
        (
            "suffix",
            "foo",
            false,
            &["foo", "0foo"],
            &["fo", "fooo", "aFoo"],
        ),
        ("suffix", "foo", true, &["aFoo", "foo"], &["fo", "fooo"]),
        (
            "contains",
            "foo",
            false,
            &["foo", "0foo", "fooo"],
            &["fo", "aFoo"],
        ),
        ("contains", "foo", true, &["aFoo", "foo", "FoO"], &["fo"]),
        (
            "regex",
            "fo{2}",
            false,
            &["foo", "0foo", "fooo"],
            &["aFoo", "fo"],
        ),
        (
            "regex",
            "fo{2}",
            true,
            &["foo", "0foo", "fooo", "aFoo"],
            &["fo"],
        ),
        (
            "regex",
            "(?i)fo{2}",
            true,
            &["foo", "0foo", "fooo", "aFoo"],
            &["fo"],
        ),
    ];
    assert_eq!(cases.len(), 11);
    for (kind, target, ignore_case, matched, mismatched) in cases {
        let matcher = StringMatcher::build(kind, target, *ignore_case).expect("a matcher");
        for input in *matched {
            assert!(
                matcher.matches(input),
                "{kind} {target:?} (ignore case {ignore_case}) should match {input:?}"
            );
        }
        for input in *mismatched {
            assert!(
                !matcher.matches(input),
                "{kind} {target:?} (ignore case {ignore_case}) should not match {input:?}"
            );
        }
    }
}

// expr/repeated_string_matcher_test.go --------------------------------------------------------

fn items(json: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_str(json).expect("matcher items")
}

#[test]
fn build_repeated_string_matcher_ignore_case() {
    let matcher = RepeatedMatcher::build(
        &items(r#"[{"exact":"foo"},{"prefix":"pre"},{"regex":"^Cache"}]"#),
        true,
    )
    .expect("valid");
    for input in [
        "Foo",
        "foO",
        "foo",
        "PreA",
        "cache-control",
        "Cache-Control",
    ] {
        assert!(matcher.matches(input), "{input}");
    }
    for input in ["afoo", "fo"] {
        assert!(!matcher.matches(input), "{input}");
    }
}

#[test]
fn pass_out_regex_compile_err() {
    assert!(RepeatedMatcher::build(&items(r#"[{"regex":"(?!)aa"}]"#), false).is_err());
}
