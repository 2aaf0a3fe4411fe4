//! Every case of Higress's own tests for key-auth (alibaba/higress 4e0d691,
//! `plugins/wasm-go/extensions/key-auth/main_test.go`: `TestParseGlobalConfig`,
//! `TestParseRuleConfig`, `TestOnHTTPRequestHeaders`), with their configurations and requests.
//! Where Go asserts only that the callback returned `Continue`, the denial Go's plugin sends is
//! asserted too (status, `WWW-Authenticate`, body, details).
//!
//! One difference in what a test sees: Go's plugin returns `Continue` after its local reply;
//! here the hook returns the reply and the SDK answers the callback `Pause`, as Envoy expects
//! after a local reply. The request never reaches the upstream either way.

use key_auth::{Config, KeyAuth};
use proxy_async::PluginConfig;
use proxy_async::higress::Higress;
use proxy_async::testing::{Action, PluginTest, TestStream};

const BASIC: &str = r#"{"consumers":[{"credential":"token1","name":"consumer1"},{"credential":"token2","name":"consumer2"}],
    "global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key","apikey"]}"#;
const GLOBAL_AUTH_FALSE: &str = r#"{"consumers":[{"credential":"token1","name":"consumer1"}],"global_auth":false,"in_header":true,"in_query":false,"keys":["x-api-key"]}"#;
const QUERY_KEY: &str = r#"{"consumers":[{"credential":"token1","name":"consumer1"}],"global_auth":true,"in_header":false,"in_query":true,"keys":["apikey"]}"#;
const MULTIPLE_KEYS: &str = r#"{"consumers":[{"credential":"token1","name":"consumer1"}],"global_auth":true,"in_header":true,"in_query":true,"keys":["x-api-key","apikey","authorization"]}"#;
const RULES: &str = r#"{"_rules_":[{"_match_route_":["test-route"],"allow":["consumer1"]}],
    "consumers":[{"credential":"token1","name":"consumer1"},{"credential":"token2","name":"consumer2"}],
    "global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key"]}"#;

fn plugin(config: &str) -> PluginTest<Higress<KeyAuth>> {
    PluginTest::new(config).expect("the configuration is valid")
}

/// The configuration as the plugin reads it (natively; the start itself runs on every backend).
fn parsed(config: &str) -> Config {
    let config: Config = serde_json::from_str(config).expect("it parses");
    config.validate().expect("it is valid");
    config
}

/// The start-up error of a configuration Higress refuses.
fn refused(config: &str) -> String {
    let rejected = PluginTest::<Higress<KeyAuth>>::new(config)
        .err()
        .expect("the configuration is refused");
    rejected.errors.join("\n")
}

/// A request on Go's test host (route `test-route-default`, as `test.NewTestHost` sets it).
fn request<'a>(
    test: &'a PluginTest<Higress<KeyAuth>>,
    headers: &[(&str, &str)],
) -> (TestStream<'a, Higress<KeyAuth>>, Action) {
    let stream = test.stream();
    stream.set_property(&["route_name"], "test-route-default");
    let action = stream.send_request_headers(headers, false);
    (stream, action)
}

const GET_TEST: [(&str, &str); 3] = [
    (":authority", "example.com"),
    (":path", "/test"),
    (":method", "GET"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    GET_TEST
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

fn assert_denied(
    stream: &TestStream<'_, Higress<KeyAuth>>,
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
        Some("Key realm=MSE Gateway")
    );
    assert_eq!(reply.body_str(), body);
}

fn assert_accepted(
    stream: &TestStream<'_, Higress<KeyAuth>>,
    action: Action,
    consumer: Option<&str>,
) {
    assert_eq!(action, Action::Continue);
    assert_eq!(stream.local_reply(), None);
    assert_eq!(stream.request_header("x-mse-consumer").as_deref(), consumer);
}

const NO_KEY: &str = "Request denied by Key Auth check. No Key Authentication information found.";
const MULTI_KEY: &str =
    "Request denied by Key Auth check. Multi Key Authentication information found.";
const UNAUTHORIZED: &str = "Request denied by Key Auth check. Unauthorized consumer.";

// TestParseGlobalConfig ----------------------------------------------------------------------

#[test]
fn basic_key_auth_config() {
    plugin(BASIC);
    let config = parsed(BASIC);
    assert_eq!(
        config.keys.as_deref(),
        Some(&["x-api-key".to_string(), "apikey".to_string()][..])
    );
    assert_eq!(
        (config.in_header, config.in_query),
        (Some(true), Some(false))
    );
}

#[test]
fn global_auth_false_config() {
    plugin(GLOBAL_AUTH_FALSE);
    assert_eq!(
        parsed(GLOBAL_AUTH_FALSE).keys.as_deref(),
        Some(&["x-api-key".to_string()][..])
    );
}

#[test]
fn query_key_config() {
    plugin(QUERY_KEY);
    let config = parsed(QUERY_KEY);
    assert_eq!(
        (config.in_header, config.in_query),
        (Some(false), Some(true))
    );
    assert_eq!(config.keys.as_deref(), Some(&["apikey".to_string()][..]));
}

#[test]
fn multiple_keys_config() {
    plugin(MULTIPLE_KEYS);
    let config = parsed(MULTIPLE_KEYS);
    assert_eq!(
        (config.in_header, config.in_query),
        (Some(true), Some(true))
    );
    assert_eq!(config.keys.map(|keys| keys.len()), Some(3));
}

#[test]
fn invalid_configs_are_refused_with_higress_messages() {
    let consumer = r#""consumers":[{"credential":"token1","name":"consumer1"}]"#;
    for (name, config, message) in [
        ("invalid no keys config", format!(r#"{{{consumer},"global_auth":true,"in_header":true,"in_query":false}}"#), "field `keys`: keys is required"),
        ("invalid empty keys config", format!(r#"{{{consumer},"global_auth":true,"in_header":true,"in_query":false,"keys":[]}}"#), "field `keys`: keys cannot be empty"),
        ("invalid no consumers config", r#"{"global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key"]}"#.to_string(), "field `consumers`: consumers is required"),
        ("invalid empty consumers config", r#"{"consumers":[],"global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key"]}"#.to_string(), "field `consumers`: consumers cannot be empty"),
        ("invalid no source config", format!(r#"{{{consumer},"global_auth":true,"keys":["x-api-key"]}}"#), "must one of in_query/in_header required"),
        ("invalid duplicate credential config", r#"{"consumers":[{"credential":"token1","name":"consumer1"},{"credential":"token1","name":"consumer2"}],"global_auth":true,"in_header":true,"in_query":false,"keys":["x-api-key"]}"#.to_string(), "duplicate consumer credential: token1"),
    ] {
        let error = refused(&config);
        assert!(error.contains(message), "{name}: {error}");
    }
}

// TestParseRuleConfig ------------------------------------------------------------------------

#[test]
fn valid_rule_config() {
    let test = plugin(RULES);
    // Go's test host's route is not `test-route`: the global configuration, any consumer.
    let (stream, action) = request(&test, &with(&[("x-api-key", "token2")]));
    assert_accepted(&stream, action, Some("consumer2"));
    // On `test-route`, only consumer1.
    let stream = test.stream();
    stream.set_property(&["route_name"], "test-route");
    let action = stream.send_request_headers(&with(&[("x-api-key", "token2")]), false);
    assert_denied(&stream, action, 403, "key-auth.unauthorized", UNAUTHORIZED);
    let stream = test.stream();
    stream.set_property(&["route_name"], "test-route");
    let action = stream.send_request_headers(&with(&[("x-api-key", "token1")]), false);
    assert_accepted(&stream, action, Some("consumer1"));
}

#[test]
fn invalid_rule_config_empty_allow() {
    let error = refused(&RULES.replace(r#""allow":["consumer1"]"#, r#""allow":[]"#));
    assert!(
        error.contains("field `_rules_[0].allow`: allow cannot be empty"),
        "{error}"
    );
}

// TestOnHTTPRequestHeaders -------------------------------------------------------------------

#[test]
fn global_auth_true_valid_api_key() {
    let test = plugin(BASIC);
    let (stream, action) = request(&test, &with(&[("x-api-key", "token1")]));
    assert_accepted(&stream, action, Some("consumer1"));
}

#[test]
fn global_auth_true_invalid_api_key() {
    let test = plugin(BASIC);
    let (stream, action) = request(&test, &with(&[("x-api-key", "invalid-token")]));
    assert_denied(&stream, action, 403, "key-auth.unauthorized", UNAUTHORIZED);
    assert!(
        test.logs_at(log::Level::Warn)
            .iter()
            .any(|line| line.contains(r#"credential "invalid-token" is not configured"#)),
        "{:?}",
        test.logs()
    );
}

#[test]
fn global_auth_true_missing_api_key() {
    let test = plugin(BASIC);
    let (stream, action) = request(&test, &GET_TEST);
    assert_denied(&stream, action, 401, "key-auth.no_key", NO_KEY);
}

#[test]
fn global_auth_true_multiple_api_keys() {
    let test = plugin(BASIC);
    let (stream, action) = request(
        &test,
        &with(&[("x-api-key", "token1"), ("apikey", "token2")]),
    );
    assert_denied(&stream, action, 401, "key-auth.multi_key", MULTI_KEY);
}

#[test]
fn global_auth_false_no_allow_list() {
    let test = plugin(GLOBAL_AUTH_FALSE);
    let (stream, action) = request(&test, &GET_TEST);
    assert_accepted(&stream, action, None);
}

#[test]
fn query_api_key() {
    let test = plugin(QUERY_KEY);
    let (stream, action) = request(
        &test,
        &[
            (":authority", "example.com"),
            (":path", "/test?apikey=token1"),
            (":method", "GET"),
        ],
    );
    assert_accepted(&stream, action, Some("consumer1"));
}

#[test]
fn query_api_key_invalid() {
    let test = plugin(QUERY_KEY);
    let (stream, action) = request(
        &test,
        &[
            (":authority", "example.com"),
            (":path", "/test?apikey=invalid-token"),
            (":method", "GET"),
        ],
    );
    assert_denied(&stream, action, 403, "key-auth.unauthorized", UNAUTHORIZED);
}

#[test]
fn query_api_key_missing() {
    let test = plugin(QUERY_KEY);
    let (stream, action) = request(&test, &GET_TEST);
    assert_denied(&stream, action, 401, "key-auth.no_key", NO_KEY);
}

// Beyond Go's tests: what this port does on purpose.

#[test]
fn a_client_sent_consumer_header_is_replaced() {
    let test = plugin(BASIC);
    let (stream, action) = request(
        &test,
        &with(&[("x-mse-consumer", "admin"), ("x-api-key", "token1")]),
    );
    assert_accepted(&stream, action, Some("consumer1"));
}

#[test]
fn unknown_keys_are_refused_naming_them() {
    assert!(refused(&BASIC.replace("in_query", "in_qeury")).contains("unknown field `in_qeury`"));
    let rule_with_keys = RULES.replace(
        r#""allow":["consumer1"]"#,
        r#""allow":["consumer1"],"keys":["x"]"#,
    );
    assert!(
        refused(&rule_with_keys)
            .contains("field `_rules_[0].keys`: a key-auth rule sets only `allow`")
    );
}
