//! Higress's rule-level configuration (`_rules_`) as a plugin's user sees it: which
//! configuration each request gets, requests no rule matches left alone, and the
//! configurations that stop the plugin at start-up.

use std::rc::Rc;

use proxy_async::higress::{Higress, HigressPlugin, Rules};
use proxy_async::testing::{Action, PluginTest};
use proxy_async::{
    ConfigError, Done, Error, Flow, HttpClient, LocalReply, Plugin, PluginConfig, Request,
    Response, Root, Settings,
};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    greeting: String,
    #[serde(default)]
    deny: bool,
    #[serde(default)]
    cluster: Option<String>,
}

impl PluginConfig for Config {}

/// Tags the request and the response with its configuration's greeting; replies 403 when the
/// configuration says `deny`; calls `cluster` first when there is one.
struct Greeter {
    config: Rc<Config>,
}

impl HigressPlugin for Greeter {
    const RULES: Rules = Rules::Separate;
}

impl Plugin for Greeter {
    type Root = Config;

    fn new(config: &Rc<Config>) -> Self {
        Greeter {
            config: Rc::clone(config),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        if self.config.deny {
            return Ok(LocalReply::new(403)
                .body(self.config.greeting.clone())
                .into());
        }
        if let Some(cluster) = &self.config.cluster {
            HttpClient::new(cluster.as_str())
                .get("/check")
                .send()
                .await?;
        }
        req.headers_mut()
            .insert("x-greeting", self.config.greeting.as_str());
        Ok(Flow::Continue)
    }

    async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        resp.headers_mut()
            .insert("x-greeting", self.config.greeting.as_str());
        Ok(Flow::Continue)
    }

    async fn on_log(&mut self, _done: &Done<'_>) {
        log::info!("logged {}", self.config.greeting);
    }
}

/// The greeting a request with `authority` (and, when not empty, `route_name` and
/// `cluster_name`) gets; `None` when the plugin left it alone.
fn greeting(
    test: &PluginTest<Higress<Greeter>>,
    authority: &str,
    route: &str,
    cluster: &str,
) -> Option<String> {
    let stream = test.stream();
    if !route.is_empty() {
        stream.set_property(&["route_name"], route);
    }
    if !cluster.is_empty() {
        stream.set_property(&["cluster_name"], cluster);
    }
    let action = stream.send_request_headers(&[(":authority", authority), (":path", "/")], true);
    assert_eq!(action, Action::Continue, "{authority} {route} {cluster}");
    stream.request_header("x-greeting")
}

const CONFIG: &str = r#"{
    "greeting": "global",
    "_rules_": [
        {"_match_route_": ["default/admin"], "greeting": "admin route"},
        {"_match_domain_": ["*.example.com", "[::1]"], "greeting": "example domains"},
        {"_match_domain_": ["api.example.com"], "greeting": "never: a rule before it matches"},
        {"_match_service_": ["users.default.svc.cluster.local:8080"], "greeting": "users service"},
        {"_match_route_prefix_": ["shop-"], "greeting": "shop routes"}
    ]
}"#;

#[test]
fn each_request_gets_the_first_matching_rules_config_else_the_global_one() {
    let test = PluginTest::<Higress<Greeter>>::new(CONFIG).unwrap();
    for (authority, route, cluster, expected) in [
        ("api.example.com", "", "", "example domains"),
        ("api.example.com:8443", "", "", "example domains"),
        ("[::1]:8080", "", "", "example domains"),
        ("example.com", "", "", "global"),
        ("api.example.com", "default/admin", "", "admin route"),
        ("other.org", "default/admin", "", "admin route"),
        ("other.org", "default/admin2", "", "global"),
        (
            "other.org",
            "",
            "outbound|8080||users.default.svc.cluster.local",
            "users service",
        ),
        (
            "other.org",
            "",
            "outbound|9090||users.default.svc.cluster.local",
            "global",
        ),
        ("other.org", "shop-cart", "", "shop routes"),
        ("other.org", "my-shop-cart", "", "global"),
    ] {
        assert_eq!(
            greeting(&test, authority, route, cluster).as_deref(),
            Some(expected),
            "{authority} {route} {cluster}"
        );
    }
}

// Higress would skip the plugin for such a request; an auth plugin must not let it through.
#[test]
fn a_request_without_authority_or_route_still_gets_the_global_config() {
    let test = PluginTest::<Higress<Greeter>>::new(CONFIG).unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    assert_eq!(
        stream.request_header("x-greeting").as_deref(),
        Some("global")
    );
}

#[test]
fn a_stream_keeps_its_config_through_every_hook() {
    let test = PluginTest::<Higress<Greeter>>::new(CONFIG).unwrap();
    let matched = test.stream();
    let global = test.stream();
    matched.send_request_headers(&[(":authority", "a.example.com")], true);
    global.send_request_headers(&[(":authority", "a.org")], true);
    global.send_response_headers(&[(":status", "200")], true);
    matched.send_response_headers(&[(":status", "200")], true);
    assert_eq!(
        matched.response_header("x-greeting").as_deref(),
        Some("example domains")
    );
    assert_eq!(
        global.response_header("x-greeting").as_deref(),
        Some("global")
    );
    matched.end();
    global.end();
    let logged = test.logs_at(log::Level::Info);
    assert_eq!(logged, ["logged example domains", "logged global"]);
}

const RULES_ONLY: &str = r#"{
    "_plugin_id_": "greeter-1",
    "_rules_": [
        {"_match_domain_": "guarded.example.com", "greeting": "guarded", "deny": true},
        {"_match_domain_": "slow.example.com", "greeting": "slow", "cluster": "auth"}
    ]
}"#;

#[test]
fn without_a_global_config_a_request_no_rule_matches_is_untouched() {
    let test = PluginTest::<Higress<Greeter>>::new(RULES_ONLY).unwrap();

    let denied = test.stream();
    let action = denied.send_request_headers(&[(":authority", "guarded.example.com")], true);
    assert_eq!(action, Action::Pause);
    assert_eq!(denied.local_reply().map(|reply| reply.status), Some(403));

    let untouched = test.stream();
    let headers = [
        (":authority", "open.example.com"),
        (":path", "/upload"),
        ("content-length", "5"),
    ];
    assert_eq!(
        untouched.send_request_headers(&headers, false),
        Action::Continue
    );
    assert_eq!(untouched.send_request_body("hello", true), Action::Continue);
    assert_eq!(
        untouched.send_response_headers(&[(":status", "200")], true),
        Action::Continue
    );
    untouched.end();
    assert_eq!(untouched.request_header("x-greeting"), None);
    assert_eq!(
        untouched.request_header("content-length").as_deref(),
        Some("5")
    );
    assert_eq!(untouched.response_header("x-greeting"), None);
    assert_eq!(untouched.request_body(), b"hello");
    assert_eq!(untouched.local_reply(), None);
    assert!(test.calls().is_empty());
    assert!(
        !test
            .logs_at(log::Level::Info)
            .iter()
            .any(|line| line.starts_with("logged"))
    );
}

#[test]
fn a_matched_rule_can_await_calls_and_other_streams_go_on_meanwhile() {
    let test = PluginTest::<Higress<Greeter>>::new(RULES_ONLY).unwrap();
    let slow = test.stream();
    assert_eq!(
        slow.send_request_headers(&[(":authority", "slow.example.com")], true),
        Action::Pause
    );
    let other = test.stream();
    assert_eq!(
        other.send_request_headers(&[(":authority", "other.example.com")], true),
        Action::Continue
    );
    let calls = test.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster(), "auth");
    test.respond(&calls[0], 200, &[], "");
    assert_eq!(slow.resumed_requests(), 1);
    assert_eq!(slow.request_header("x-greeting").as_deref(), Some("slow"));
    other.end();
    slow.end();
    assert_eq!(test.live_streams(), 0);
}

/// Like [`Greeter`], but rules override the global keys.
struct Inheriting(Rc<BufferingConfig>);

/// A [`Config`] whose streams buffer the request body: a request no rule matches must not be
/// buffered either.
struct BufferingConfig(Config);

impl Root for BufferingConfig {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(BufferingConfig(config))
    }

    fn settings(&self) -> Settings {
        Settings::default().buffer_request_body(true)
    }
}

impl HigressPlugin for Inheriting {
    const RULES: Rules = Rules::Override;
}

impl Plugin for Inheriting {
    type Root = BufferingConfig;

    fn new(root: &Rc<BufferingConfig>) -> Self {
        Inheriting(Rc::clone(root))
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        if self.0.0.deny {
            return Ok(LocalReply::new(403).body(self.0.0.greeting.clone()).into());
        }
        req.headers_mut()
            .insert("x-greeting", self.0.0.greeting.as_str());
        Ok(Flow::Continue)
    }
}

#[test]
fn override_rules_inherit_the_global_keys_they_do_not_set() {
    let config = r#"{
        "greeting": "welcome",
        "_rules_": [
            {"_match_domain_": "admin.example.com", "deny": true},
            {"_match_domain_": "*.example.com", "greeting": "hi"}
        ]
    }"#;
    let test = PluginTest::<Higress<Inheriting>>::new(config).unwrap();
    let admin = test.stream();
    admin.send_request_headers(&[(":authority", "admin.example.com")], false);
    admin.send_request_body("x", true);
    let reply = admin.local_reply().unwrap();
    assert_eq!(
        (reply.status, reply.body_str()),
        (403, "welcome".to_string())
    );

    let shop = test.stream();
    shop.send_request_headers(&[(":authority", "shop.example.com")], false);
    shop.send_request_body("x", true);
    assert_eq!(shop.request_header("x-greeting").as_deref(), Some("hi"));
}

#[test]
fn a_buffering_plugin_does_not_buffer_a_request_it_leaves_alone() {
    let test = PluginTest::<Higress<Inheriting>>::new(
        r#"{"_rules_": [{"_match_domain_": "a.example.com", "greeting": "a"}]}"#,
    )
    .unwrap();
    let matched = test.stream();
    let headers = [(":authority", "a.example.com"), ("content-length", "2")];
    assert_eq!(
        matched.send_request_headers(&headers, false),
        Action::Continue
    );
    assert_eq!(matched.send_request_body("x", false), Action::Pause);
    assert_eq!(matched.request_header("content-length"), None);

    let untouched = test.stream();
    let headers = [(":authority", "b.example.com"), ("content-length", "2")];
    assert_eq!(
        untouched.send_request_headers(&headers, false),
        Action::Continue
    );
    assert_eq!(untouched.send_request_body("x", false), Action::Continue);
    assert_eq!(untouched.send_request_body("y", true), Action::Continue);
    assert_eq!(
        untouched.request_header("content-length").as_deref(),
        Some("2")
    );
}

#[test]
fn bad_rules_stop_the_plugin_at_start_up_with_higress_messages() {
    for (config, expected) in [
        (
            r#"{"greeting": "g", "_rules_": [{"greeting": "x"}]}"#,
            "invalid plugin configuration: field `_rules_[0]`: there is at least one of  '_match_route_', '_match_domain_', '_match_service_' and '_match_route_prefix_' can present in configuration.",
        ),
        (
            r#"{"_rules_": []}"#,
            "invalid plugin configuration: field `_rules_`: parse config failed, no valid rules, and no global configuration beside them",
        ),
        (
            r#"{"greeting": "g", "_rules_": [{"_match_route_": "r", "greeting": 1}]}"#,
            "invalid plugin configuration: field `_rules_[0].greeting`: invalid type: integer `1`, expected a string",
        ),
        (
            r#"{"greeting": "g", "_rules_": [{"_match_route_": "r", "greeting": "r", "greting": "typo"}]}"#,
            "invalid plugin configuration: field `_rules_[0].greting`: unknown field `greting`, expected one of `greeting`, `deny`, `cluster`",
        ),
    ] {
        let rejected = PluginTest::<Higress<Greeter>>::new(config)
            .err()
            .unwrap_or_else(|| panic!("accepted {config}"));
        assert_eq!(rejected.errors, [expected], "{config}");
    }
}

#[test]
fn with_rules_a_global_config_that_does_not_parse_is_dropped_with_a_warning() {
    let test = PluginTest::<Higress<Greeter>>::new(
        r#"{"greeting": 7, "_rules_": [{"_match_domain_": "a.com", "greeting": "a"}]}"#,
    )
    .unwrap();
    assert!(
        test.logs_at(log::Level::Warn)
            .iter()
            .any(|line| line.contains("the global configuration")
                && line.contains("field `greeting`")),
        "{:?}",
        test.logs()
    );
    assert_eq!(greeting(&test, "a.com", "", "").as_deref(), Some("a"));
    assert_eq!(greeting(&test, "b.com", "", ""), None);
}

/// A plugin not wrapped in `Higress`: `_rules_` is a key like any other.
struct Plain;

impl Plugin for Plain {
    type Root = proxy_async::NoConfig;

    fn new(_: &Rc<proxy_async::NoConfig>) -> Self {
        Plain
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        req.headers_mut().insert("x-plain", "1");
        Ok(Flow::Continue)
    }
}

#[test]
fn a_plugin_that_does_not_opt_in_applies_to_every_request() {
    let test = PluginTest::<Plain>::new(r#"{"_rules_": [{"_match_domain_": "a.com"}]}"#).unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":authority", "b.com")], true);
    assert_eq!(stream.request_header("x-plain").as_deref(), Some("1"));
}

#[test]
fn a_client_sent_x_mse_consumer_never_selects_a_rule() {
    // Released Higress matches on route, domain, service and route prefix only
    // (higress-group/wasm-go v1.1.1, pkg/matcher/rule_matcher.go:49-55): a header the client
    // sends itself never chooses the configuration, and a rule that names consumers is refused.
    let test = PluginTest::<Higress<Greeter>>::new(
        r#"{"_rules_": [{"_match_route_prefix_": "shop-", "greeting": "shop"}]}"#,
    )
    .unwrap();
    for consumer in ["bob", "admin", ""] {
        for (route, expected) in [("shop-cart", Some("shop")), ("other", None)] {
            let stream = test.stream();
            stream.set_property(&["route_name"], route);
            stream.send_request_headers(
                &[
                    (":authority", "a.com"),
                    (":path", "/"),
                    ("x-mse-consumer", consumer),
                ],
                true,
            );
            assert_eq!(
                stream.request_header("x-greeting").as_deref(),
                expected,
                "route {route}, client-sent consumer {consumer:?}"
            );
        }
    }
    let rejected = PluginTest::<Higress<Greeter>>::new(
        r#"{"greeting": "g", "_rules_": [{"_match_route_prefix_": "shop-", "_match_consumer_": ["bob"], "greeting": "bob"}]}"#,
    )
    .err()
    .expect("a consumer rule is refused");
    assert!(
        rejected.errors[0].starts_with(
            "invalid plugin configuration: field `_rules_[0]._match_consumer_`: is not a Higress match key"
        ),
        "{:?}",
        rejected.errors
    );
}

/// An Override-mode plugin like Higress's key-auth: a rule copies the global configuration and
/// adds its `allow` list, which it must have; the global one knows whether any rule exists.
struct Allowing {
    config: Rc<AllowConfig>,
}

#[derive(serde::Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct AllowConfig {
    consumers: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(skip)]
    any_rule: bool,
}

impl PluginConfig for AllowConfig {}

impl HigressPlugin for Allowing {
    const RULES: Rules = Rules::Override;

    fn global_config(mut config: AllowConfig, any_rule: bool) -> Result<AllowConfig, ConfigError> {
        config.any_rule = any_rule;
        Ok(config)
    }

    fn override_config(
        global: proxy_async::higress::GlobalConfig<'_, AllowConfig>,
        mut rule: serde_json::Map<String, serde_json::Value>,
    ) -> Result<AllowConfig, ConfigError> {
        let allow: Vec<String> = match rule.remove("allow") {
            Some(allow) => {
                serde_json::from_value(allow).map_err(|error| ConfigError::field("allow", error))?
            }
            None => return Err(ConfigError::field("allow", "allow is required")),
        };
        if allow.is_empty() {
            return Err(ConfigError::field("allow", "allow cannot be empty"));
        }
        let mut config = global.config().cloned().unwrap_or_default();
        config.allow = allow;
        Ok(config)
    }
}

impl Plugin for Allowing {
    type Root = AllowConfig;

    fn new(config: &Rc<AllowConfig>) -> Self {
        Allowing {
            config: Rc::clone(config),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let config = &self.config;
        let summary = format!(
            "consumers={} allow={} any_rule={}",
            config.consumers.join(","),
            config.allow.join(","),
            config.any_rule
        );
        req.headers_mut().insert("x-seen", summary);
        Ok(Flow::Continue)
    }
}

#[test]
fn override_rules_are_built_from_the_parsed_global_config_by_the_plugin() {
    // key-auth/main.go:206-225 (alibaba/higress 4e0d691): `*config = global`, then `allow`.
    let seen = |config: &str, route: &str| {
        let test = PluginTest::<Higress<Allowing>>::new(config).unwrap();
        let stream = test.stream();
        stream.set_property(&["route_name"], route);
        stream.send_request_headers(&[(":authority", "a.com"), (":path", "/")], true);
        stream.request_header("x-seen")
    };
    let config =
        r#"{"consumers": ["alice", "bob"], "_rules_": [{"_match_route_": "r", "allow": ["bob"]}]}"#;
    assert_eq!(
        seen(config, "r").as_deref(),
        Some("consumers=alice,bob allow=bob any_rule=true")
    );
    assert_eq!(
        seen(config, "other").as_deref(),
        Some("consumers=alice,bob allow= any_rule=true")
    );
    assert_eq!(
        seen(r#"{"consumers": ["alice"]}"#, "r").as_deref(),
        Some("consumers=alice allow= any_rule=false")
    );
    // A global configuration that does not parse: the rules are built without it, and a
    // request no rule matches is left alone (rule_matcher.go:199-207, 176-179).
    let broken = r#"{"consumers": "alice", "_rules_": [{"_match_route_": "r", "allow": ["bob"]}]}"#;
    assert_eq!(
        seen(broken, "r").as_deref(),
        Some("consumers= allow=bob any_rule=false")
    );
    assert_eq!(seen(broken, "other"), None);
    // The rule parser's own errors name the rule.
    let rejected = PluginTest::<Higress<Allowing>>::new(
        r#"{"consumers": ["alice"], "_rules_": [{"_match_route_": "r", "allow": []}]}"#,
    )
    .err()
    .expect("an empty allow list is refused");
    assert_eq!(
        rejected.errors,
        ["invalid plugin configuration: field `_rules_[0].allow`: allow cannot be empty"]
    );
}
