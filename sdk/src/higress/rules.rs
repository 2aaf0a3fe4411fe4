//! Higress's rule-level configuration (`pkg/matcher/rule_matcher.go` of the Go SDK): parsing
//! `_rules_` at configure time, and choosing a request's configuration. No host access here:
//! the driver reads what a request is matched on and hands it in.

use std::rc::Rc;

use serde_json::{Map, Value};

use crate::config::PluginConfig;
use crate::error::ConfigError;
use crate::higress::Rules;
use crate::root::Root;

const RULES: &str = "_rules_";
const MATCH_ROUTE: &str = "_match_route_";
const MATCH_DOMAIN: &str = "_match_domain_";
const MATCH_SERVICE: &str = "_match_service_";
const MATCH_ROUTE_PREFIX: &str = "_match_route_prefix_";
/// Not a Higress match key: only an unmerged proposal (higress-group/wasm-go PR #22) had it.
const MATCH_CONSUMER: &str = "_match_consumer_";
const PLUGIN_ID: &str = "_plugin_id_";

/// Higress's error for a rule without match keys, word for word (its double space included),
/// so that operators find it in Higress's documentation and issues.
pub(crate) const NO_MATCH_KEYS: &str = "there is at least one of  '_match_route_', '_match_domain_', '_match_service_' and '_match_route_prefix_' can present in configuration.";

/// What a request is matched on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MatchInput<'a> {
    /// `:authority`, port included.
    pub(crate) authority: &'a str,
    /// The `route_name` property.
    pub(crate) route_name: &'a str,
    /// The `cluster_name` property (`outbound|port|subset|fqdn`).
    pub(crate) cluster_name: &'a str,
}

/// Which match keys decide a rule, by Higress's precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Route,
    RouteAndService,
    Host,
    Service,
    RoutePrefix,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com` (and `*`, the empty suffix).
    Suffix(String),
    /// `www.example.*`.
    Prefix(String),
}

impl HostPattern {
    fn new(domain: String) -> HostPattern {
        if let Some(suffix) = domain.strip_prefix('*') {
            HostPattern::Suffix(suffix.to_string())
        } else if let Some(prefix) = domain.strip_suffix('*') {
            HostPattern::Prefix(prefix.to_string())
        } else {
            HostPattern::Exact(domain)
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => host == exact,
            HostPattern::Suffix(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Prefix(prefix) => host.starts_with(prefix.as_str()),
        }
    }
}

struct Rule<C> {
    category: Category,
    routes: Vec<String>,
    hosts: Vec<HostPattern>,
    services: Vec<String>,
    route_prefixes: Vec<String>,
    config: Rc<C>,
}

impl<C> Rule<C> {
    fn matches(&self, input: &MatchInput<'_>) -> bool {
        let route = || self.routes.iter().any(|route| route == input.route_name);
        let service = || service_matches(&self.services, input.cluster_name);
        match self.category {
            Category::Route => route(),
            Category::RouteAndService => route() && service(),
            Category::Host => {
                let host = strip_port(input.authority);
                self.hosts.iter().any(|pattern| pattern.matches(host))
            }
            Category::Service => service(),
            Category::RoutePrefix => self
                .route_prefixes
                .iter()
                .any(|prefix| input.route_name.starts_with(prefix.as_str())),
        }
    }
}

/// `host[:port]` → `host`, IPv6-aware (`[::1]:8080` → `[::1]`, `[::1]` stays), as Envoy and
/// Higress strip it.
fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(colon) if authority.rfind(']').is_none_or(|bracket| bracket < colon) => {
            &authority[..colon]
        }
        _ => authority,
    }
}

/// `cluster_name` is `outbound|port|subset|fqdn`; an entry is `fqdn` or `fqdn:port`.
fn service_matches(services: &[String], cluster_name: &str) -> bool {
    let parts: Vec<&str> = cluster_name.split('|').collect();
    let &[_, port, _, fqdn] = parts.as_slice() else {
        return false;
    };
    services.iter().any(|service| {
        service
            .rsplit_once(':')
            .is_some_and(|(name, wanted)| name == fqdn && wanted == port)
            || service == fqdn
    })
}

/// The configurations of a plugin: its rules in order, and the global one.
pub(crate) struct RuleSet<C> {
    rules: Vec<Rule<C>>,
    global: Option<Rc<C>>,
}

impl<C> RuleSet<C> {
    /// One configuration for every request.
    pub(crate) fn global_only(config: C) -> Self {
        RuleSet {
            rules: Vec::new(),
            global: Some(Rc::new(config)),
        }
    }

    /// The configuration of every request when there are no rules to match.
    pub(crate) fn only_global(&self) -> Option<&Rc<C>> {
        if self.rules.is_empty() {
            self.global.as_ref()
        } else {
            None
        }
    }

    /// The configuration of a request: the first matching rule's, else the global one; `None`
    /// leaves the request alone.
    pub(crate) fn select(&self, input: &MatchInput<'_>) -> Option<&Rc<C>> {
        self.rules
            .iter()
            .find(|rule| rule.matches(input))
            .map(|rule| &rule.config)
            .or(self.global.as_ref())
    }

    /// Every configuration: the global one first, then each rule's.
    pub(crate) fn configs(&self) -> impl Iterator<Item = &Rc<C>> {
        self.global
            .iter()
            .chain(self.rules.iter().map(|rule| &rule.config))
    }
}

/// The global configuration, as a rule's configuration is built from it in
/// [`Rules::Override`] mode ([`HigressPlugin::override_config`](crate::higress::HigressPlugin::override_config)).
pub struct GlobalConfig<'a, C> {
    config: Option<&'a C>,
    keys: &'a Map<String, Value>,
}

impl<'a, C> GlobalConfig<'a, C> {
    /// The parsed global configuration; `None` when the configuration has no keys beside
    /// `_rules_`, or when they did not parse (Higress then builds every rule on an empty
    /// global configuration: `pkg/matcher/rule_matcher.go`, `ParseRuleConfig`).
    pub fn config(&self) -> Option<&'a C> {
        self.config
    }

    /// The global configuration's keys as written (`_rules_` and `_plugin_id_` removed);
    /// empty when [`config`](GlobalConfig::config) is `None`.
    pub fn keys(&self) -> &'a Map<String, Value> {
        self.keys
    }

    /// The rule's configuration as the global keys with the rule's keys over them: a key the
    /// rule sets replaces the global key's whole value (objects are not merged).
    pub fn overridden_by(&self, rule: Map<String, Value>) -> Result<C, ConfigError>
    where
        C: serde::de::DeserializeOwned,
    {
        let mut merged = self.keys.clone();
        merged.extend(rule);
        deserialize(&Value::Object(merged))
    }
}

/// Builds a rule's configuration in `Override` mode.
pub(crate) type RuleHook<C> = fn(GlobalConfig<'_, C>, Map<String, Value>) -> Result<C, ConfigError>;

/// What a plugin adds to building its configurations: the [`HigressPlugin`](crate::higress::HigressPlugin)
/// hooks.
pub(crate) struct Hooks<C> {
    /// The global configuration, told whether the configuration has rules.
    pub(crate) global: fn(C, bool) -> Result<C, ConfigError>,
    /// A rule's configuration in `Override` mode.
    pub(crate) rule: RuleHook<C>,
}

impl<C: serde::de::DeserializeOwned> Hooks<C> {
    /// No hook: the global configuration as parsed, a rule's as the global keys with its own
    /// over them.
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Hooks {
            global: |config, _| Ok(config),
            rule: |global, rule| global.overridden_by(rule),
        }
    }
}

/// The configuration's `_plugin_id_` as Higress reads it (gjson's `String()`: a string's text,
/// any other value's JSON); `None` when absent, `null` or empty, which Higress leaves in place.
pub(crate) fn plugin_id(keys: &Map<String, Value>) -> Option<String> {
    let id = match keys.get(PLUGIN_ID)? {
        Value::Null => return None,
        Value::String(id) => id.clone(),
        other => other.to_string(),
    };
    (!id.is_empty()).then_some(id)
}

/// Parses the configuration bytes the proxy delivered, reading `_rules_` as `mode` says.
/// `_plugin_id_` is taken out first in every mode, as Higress does before any parsing
/// (`pkg/wrapper/plugin_wrapper.go`, `OnPluginStart`): a configuration type that denies unknown
/// fields never sees it.
pub(crate) fn parse<R: Root>(
    bytes: &[u8],
    mode: Rules,
    hooks: &Hooks<R::Config>,
) -> Result<RuleSet<R>, ConfigError> {
    let global_only = |config: R::Config| {
        let config = (hooks.global)(config, false)?;
        R::configure(config).map(RuleSet::global_only)
    };
    // Anything but an object is a plain configuration, errors included.
    let Ok(Value::Object(mut global_keys)) = serde_json::from_slice::<Value>(bytes) else {
        return crate::config::parse::<R::Config>(bytes).and_then(global_only);
    };
    let has_id = plugin_id(&global_keys).is_some();
    if has_id {
        global_keys.remove(PLUGIN_ID);
    }
    let rules = match global_keys.remove(RULES) {
        Some(rules) if mode != Rules::Off => rules,
        // Without an ID to take out, the bytes as delivered: errors say where (line, column).
        _ if !has_id => return crate::config::parse::<R::Config>(bytes).and_then(global_only),
        other => {
            if let Some(rules) = other {
                global_keys.insert(RULES.to_string(), rules);
            }
            let config = deserialize::<R::Config>(&Value::Object(global_keys))?;
            config.validate()?;
            return global_only(config);
        }
    };
    let rules = match rules {
        Value::Array(rules) => rules,
        Value::Null => Vec::new(),
        _ => {
            return Err(ConfigError::field(
                RULES,
                "expected an array of rules (objects with `_match_route_`, `_match_domain_`, `_match_service_` or `_match_route_prefix_`)",
            ));
        }
    };
    let any_rule = !rules.is_empty();
    let global = (!global_keys.is_empty()).then(|| {
        deserialize::<R::Config>(&Value::Object(global_keys.clone()))
            .and_then(|config| config.validate().map(|()| config))
            .and_then(|config| (hooks.global)(config, any_rule))
    });
    if !any_rule {
        return match global {
            Some(global) => global.and_then(R::configure).map(RuleSet::global_only),
            None => Err(ConfigError::field(
                RULES,
                "parse config failed, no valid rules, and no global configuration beside them",
            )),
        };
    }
    let global = match global {
        Some(Ok(global)) => Some(global),
        Some(Err(error)) => {
            // As in Higress: with rules, a global configuration that does not parse is none,
            // and the rules are built without it.
            log::warn!(
                "the global configuration (the keys outside `_rules_`) is not used, so requests no rule matches are left alone: {error}"
            );
            global_keys.clear();
            None
        }
        None => None,
    };
    let scope = GlobalConfig {
        config: global.as_ref(),
        keys: &global_keys,
    };
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(index, rule)| parse_rule::<R>(index, rule, mode, &scope, hooks))
        .collect::<Result<Vec<_>, _>>()?;
    let global = match global.map(R::configure) {
        Some(Ok(root)) => Some(Rc::new(root)),
        Some(Err(error)) => {
            log::warn!(
                "the global configuration (the keys outside `_rules_`) is not used, so requests no rule matches are left alone: {error}"
            );
            None
        }
        None => None,
    };
    Ok(RuleSet { rules, global })
}

fn parse_rule<R: Root>(
    index: usize,
    rule: Value,
    mode: Rules,
    global: &GlobalConfig<'_, R::Config>,
    hooks: &Hooks<R::Config>,
) -> Result<Rule<R>, ConfigError> {
    let at = format!("{RULES}[{index}]");
    let Value::Object(mut keys) = rule else {
        return Err(ConfigError::field(
            at,
            "expected an object: a rule's match keys and its configuration",
        ));
    };
    if keys.contains_key(MATCH_CONSUMER) {
        // Higress would pass the key to the plugin as configuration and apply the rule to
        // every consumer: refused, rather than a rule that looks narrower than it is.
        return Err(ConfigError::field(
            format!("{at}.{MATCH_CONSUMER}"),
            "is not a Higress match key (released Higress has no consumer rules; only an unmerged proposal read the client-sent `x-mse-consumer` header), so the rule would apply to every consumer",
        ));
    }
    let mut names = |key: &str, keep_empty: bool| -> Result<Vec<String>, ConfigError> {
        let names = take_names(&mut keys, key, &at)?;
        Ok(names
            .into_iter()
            .filter(|name| keep_empty || !name.is_empty())
            .collect())
    };
    // Higress drops empty names, except domains (an empty one matches an empty :authority).
    let routes = names(MATCH_ROUTE, false)?;
    let hosts: Vec<HostPattern> = names(MATCH_DOMAIN, true)?
        .into_iter()
        .map(HostPattern::new)
        .collect();
    let services = names(MATCH_SERVICE, false)?;
    let route_prefixes = names(MATCH_ROUTE_PREFIX, false)?;
    let category = if !routes.is_empty() {
        if services.is_empty() {
            Category::Route
        } else {
            Category::RouteAndService
        }
    } else if !hosts.is_empty() {
        Category::Host
    } else if !services.is_empty() {
        Category::Service
    } else if !route_prefixes.is_empty() {
        Category::RoutePrefix
    } else {
        return Err(ConfigError::field(at, NO_MATCH_KEYS));
    };
    let config = match mode {
        Rules::Override => (hooks.rule)(
            GlobalConfig {
                config: global.config,
                keys: global.keys,
            },
            keys,
        ),
        Rules::Separate | Rules::Off => deserialize(&Value::Object(keys)),
    }
    .and_then(|config| config.validate().map(|()| config))
    .and_then(R::configure)
    .map_err(|error| within(&at, error))?;
    Ok(Rule {
        category,
        routes,
        hosts,
        services,
        route_prefixes,
        config: Rc::new(config),
    })
}

/// Removes match key `key` from a rule: a string or an array of strings (Higress reads a
/// single value as a list of one); absent or `null` is none.
fn take_names(
    keys: &mut Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Vec<String>, ConfigError> {
    let expected = "expected a string or an array of strings";
    match keys.remove(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(name)) => Ok(vec![name]),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(name) => Ok(name),
                _ => Err(ConfigError::field(
                    format!("{at}.{key}[{index}]"),
                    "expected a string",
                )),
            })
            .collect(),
        Some(_) => Err(ConfigError::field(format!("{at}.{key}"), expected)),
    }
}

/// Deserializes a configuration; errors name fields from its top (`timeout`).
fn deserialize<C: serde::de::DeserializeOwned>(json: &Value) -> Result<C, ConfigError> {
    serde_path_to_error::deserialize(json).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            ConfigError::new(inner)
        } else {
            ConfigError::field(path, inner)
        }
    })
}

/// `validate`'s error about field `f` (or the whole configuration) of rule `at`, as an error
/// about `at.f` (or `at`).
fn within(at: &str, error: ConfigError) -> ConfigError {
    if at.is_empty() {
        return error;
    }
    // `ConfigError` keeps its message to itself; its text is
    // "invalid plugin configuration: [field `f`: ]message".
    let text = error.to_string();
    let message = text
        .strip_prefix("invalid plugin configuration: ")
        .unwrap_or(&text);
    match error.field_name() {
        Some(field) => {
            let message = message
                .strip_prefix(&format!("field `{field}`: "))
                .unwrap_or(message);
            ConfigError::field(format!("{at}.{field}"), message)
        }
        None => ConfigError::field(at, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        name: String,
        #[serde(default)]
        timeout: u32,
        #[serde(default)]
        extra: Option<serde_json::Value>,
    }

    impl PluginConfig for Conf {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.name == "invalid" {
                return Err(ConfigError::field("name", "must not be `invalid`"));
            }
            if self.timeout == 13 {
                return Err(ConfigError::new("unlucky timeout"));
            }
            Ok(())
        }
    }

    fn rules(json: &str) -> RuleSet<Conf> {
        parse(json.as_bytes(), Rules::Separate, &Hooks::none())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn error(json: &str, mode: Rules) -> String {
        match parse::<Conf>(json.as_bytes(), mode, &Hooks::none()) {
            Ok(_) => panic!("accepted: {json}"),
            Err(error) => error.to_string(),
        }
    }

    /// The `name` of the configuration a request gets; `None` when it is left alone.
    fn pick(set: &RuleSet<Conf>, authority: &str, route: &str, cluster: &str) -> Option<String> {
        set.select(&MatchInput {
            authority,
            route_name: route,
            cluster_name: cluster,
        })
        .map(|config| config.name.clone())
    }

    #[test]
    fn a_configuration_without_rules_is_the_global_one_for_every_request() {
        let set = rules(r#" {"name": "g", "timeout": 1} "#);
        assert_eq!(set.only_global().map(|c| c.name.as_str()), Some("g"));
        assert_eq!(pick(&set, "a.com", "r", ""), Some("g".into()));
        // Empty is the default, as without rules.
        let set: RuleSet<Conf> = parse(b"", Rules::Separate, &Hooks::none()).unwrap();
        assert_eq!(set.only_global().map(|c| c.name.as_str()), Some(""));
        // `Off` leaves `_rules_` to serde, which refuses the unknown field.
        assert!(
            error(r#"{"name": "g", "_rules_": []}"#, Rules::Off)
                .contains("unknown field `_rules_`")
        );
        // Not JSON, or not an object: the plain parser's error.
        assert!(error("name: g", Rules::Separate).contains("not valid JSON"));
        assert!(error(r#""text""#, Rules::Separate).contains("expected struct Conf"));
    }

    #[test]
    fn the_first_matching_rule_wins_and_the_global_config_is_the_fallback() {
        let set = rules(
            r#"{
                "name": "global",
                "_rules_": [
                    {"_match_route_": ["r1"], "name": "route"},
                    {"_match_domain_": ["*.example.com"], "name": "wildcard"},
                    {"_match_domain_": ["api.example.com"], "name": "exact, but later"}
                ]
            }"#,
        );
        assert_eq!(set.only_global(), None);
        assert_eq!(
            pick(&set, "api.example.com", "r1", ""),
            Some("route".into())
        );
        assert_eq!(
            pick(&set, "api.example.com", "r2", ""),
            Some("wildcard".into())
        );
        assert_eq!(pick(&set, "other.com", "r2", ""), Some("global".into()));
    }

    #[test]
    fn without_a_global_config_a_request_no_rule_matches_is_left_alone() {
        let set = rules(r#"{"_rules_": [{"_match_domain_": "a.com", "name": "a"}]}"#);
        assert_eq!(pick(&set, "a.com", "", ""), Some("a".into()));
        assert_eq!(pick(&set, "b.com", "", ""), None);
        // The plugin ID is not a global configuration.
        let set = rules(
            r#"{"_plugin_id_": "p1", "_rules_": [{"_match_domain_": "a.com", "name": "a"}]}"#,
        );
        assert_eq!(pick(&set, "b.com", "", ""), None);
    }

    #[test]
    fn match_keys_take_precedence_in_higress_order() {
        let set = rules(
            r#"{"_rules_": [
                {"_match_route_": "r1", "_match_domain_": "a.com", "name": "route beats domain"},
                {"_match_domain_": "b.com", "_match_service_": "svc", "name": "domain beats service"},
                {"_match_service_": "svc", "_match_route_prefix_": "p", "name": "service beats prefix"},
                {"_match_route_prefix_": "q", "name": "prefix"}
            ]}"#,
        );
        // Route + domain: only the route counts.
        assert_eq!(
            pick(&set, "a.com", "r1", ""),
            Some("route beats domain".into())
        );
        assert_eq!(pick(&set, "a.com", "r9", ""), None);
        // Domain + service: only the domain counts.
        assert_eq!(
            pick(&set, "b.com", "", ""),
            Some("domain beats service".into())
        );
        assert_eq!(
            pick(&set, "c.com", "", "outbound|80||svc"),
            Some("service beats prefix".into())
        );
        // Service + prefix: only the service counts.
        assert_eq!(pick(&set, "c.com", "p1", "outbound|80||other"), None);
        assert_eq!(pick(&set, "c.com", "q1", ""), Some("prefix".into()));
    }

    #[test]
    fn route_and_service_must_both_match() {
        let set = rules(
            r#"{"_rules_": [{"_match_route_": ["r1"], "_match_service_": ["svc:8080"], "name": "both"}]}"#,
        );
        assert_eq!(
            pick(&set, "", "r1", "outbound|8080||svc"),
            Some("both".into())
        );
        assert_eq!(pick(&set, "", "r1", "outbound|9090||svc"), None);
        assert_eq!(pick(&set, "", "r2", "outbound|8080||svc"), None);
    }

    #[test]
    fn a_consumer_match_key_is_refused_naming_it() {
        // Released Higress has no `_match_consumer_` (higress-group/wasm-go v1.1.1,
        // pkg/matcher/rule_matcher.go:49-55 lists the match keys); it would hand the key to
        // the plugin as configuration and apply the rule to every consumer.
        for json in [
            r#"{"_rules_": [{"_match_route_prefix_": "api-", "_match_consumer_": ["bob"], "name": "bob"}]}"#,
            r#"{"_rules_": [{"_match_consumer_": ["bob"]}]}"#,
        ] {
            for mode in [Rules::Separate, Rules::Override] {
                assert!(
                    error(json, mode).contains(
                        "field `_rules_[0]._match_consumer_`: is not a Higress match key"
                    ),
                    "{json}"
                );
            }
        }
    }

    #[test]
    fn routes_match_exactly_and_prefixes_by_prefix() {
        let set = rules(
            r#"{"_rules_": [
                {"_match_route_": ["default/foo", ""], "name": "exact"},
                {"_match_route_prefix_": ["default/", ""], "name": "prefix"}
            ]}"#,
        );
        assert_eq!(pick(&set, "", "default/foo", ""), Some("exact".into()));
        assert_eq!(pick(&set, "", "default/foobar", ""), Some("prefix".into()));
        assert_eq!(pick(&set, "", "other/foo", ""), None);
        // Empty names are dropped, so a request without a route matches neither.
        assert_eq!(pick(&set, "", "", ""), None);
    }

    #[test]
    fn domains_match_exactly_by_suffix_prefix_or_all_without_the_port() {
        let set = rules(
            r#"{"_rules_": [
                {"_match_domain_": ["*.example.com"], "name": "suffix"},
                {"_match_domain_": ["www.test.*"], "name": "prefix"},
                {"_match_domain_": ["exact.org", "[::1]", "10.0.0.1"], "name": "exact"}
            ]}"#,
        );
        for (authority, expected) in [
            ("api.example.com", Some("suffix")),
            ("api.example.com:8443", Some("suffix")),
            ("a.b.example.com", Some("suffix")),
            // `*.example.com` is a suffix `.example.com`: not the bare domain.
            ("example.com", None),
            ("www.test.io", Some("prefix")),
            ("www.test.io:80", Some("prefix")),
            ("exact.org", Some("exact")),
            ("exact.org:", Some("exact")),
            ("exact.org.evil", None),
            ("Exact.org", None),
            ("[::1]:8080", Some("exact")),
            ("[::1]", Some("exact")),
            ("10.0.0.1:80", Some("exact")),
            ("", None),
        ] {
            assert_eq!(
                pick(&set, authority, "", "").as_deref(),
                expected,
                "{authority}"
            );
        }
        let all = rules(r#"{"_rules_": [{"_match_domain_": "*", "name": "all"}]}"#);
        assert_eq!(pick(&all, "anything:1", "", ""), Some("all".into()));
        assert_eq!(pick(&all, "", "", ""), Some("all".into()));
    }

    #[test]
    fn ports_are_stripped_as_envoy_does() {
        for (authority, host) in [
            ("a.com:80", "a.com"),
            ("a.com", "a.com"),
            ("a.com:", "a.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("[fe80::1%25eth0]:443", "[fe80::1%25eth0]"),
            // Unbracketed IPv6 is not an authority; Envoy cuts at the last colon too.
            ("::1", ":"),
            ("", ""),
        ] {
            assert_eq!(strip_port(authority), host, "{authority}");
        }
    }

    #[test]
    fn services_match_the_fqdn_and_optionally_the_port_of_the_cluster_name() {
        let set = rules(
            r#"{"_rules_": [
                {"_match_service_": ["users.default.svc.cluster.local:8080"], "name": "with port"},
                {"_match_service_": ["auth.default.svc.cluster.local"], "name": "any port"}
            ]}"#,
        );
        for (cluster, expected) in [
            (
                "outbound|8080||users.default.svc.cluster.local",
                Some("with port"),
            ),
            ("outbound|9090||users.default.svc.cluster.local", None),
            (
                "outbound|8080|v1|users.default.svc.cluster.local",
                Some("with port"),
            ),
            (
                "outbound|1||auth.default.svc.cluster.local",
                Some("any port"),
            ),
            (
                "outbound|1|v2|auth.default.svc.cluster.local",
                Some("any port"),
            ),
            // Not four parts: never a service.
            ("auth.default.svc.cluster.local", None),
            ("outbound|1||auth.default.svc.cluster.local|x", None),
            ("", None),
        ] {
            assert_eq!(
                pick(&set, "", "", cluster).as_deref(),
                expected,
                "{cluster}"
            );
        }
    }

    #[test]
    fn a_rule_without_match_keys_fails_with_higress_message() {
        for json in [
            r#"{"_rules_": [{"name": "x"}]}"#,
            r#"{"_rules_": [{"_match_route_": [], "name": "x"}]}"#,
            r#"{"_rules_": [{"_match_route_": [""], "_match_service_": "", "name": "x"}]}"#,
            r#"{"name": "g", "_rules_": [{"_match_domain_": "a", "name": "a"}, {"name": "b"}]}"#,
        ] {
            let message = error(json, Rules::Separate);
            assert!(
                message.starts_with("invalid plugin configuration: field `_rules_["),
                "{message}"
            );
            assert!(message.ends_with(NO_MATCH_KEYS), "{message}");
        }
        assert_eq!(
            error(
                r#"{"_rules_": [{"_match_domain_": "a", "name": "a"}, {}]}"#,
                Rules::Separate
            ),
            format!("invalid plugin configuration: field `_rules_[1]`: {NO_MATCH_KEYS}")
        );
    }

    #[test]
    fn no_rules_and_no_global_config_fails_start_and_a_bad_global_config_says_why() {
        for json in [
            r#"{"_rules_": []}"#,
            r#"{"_rules_": null}"#,
            r#"{"_rules_": [], "_plugin_id_": "p"}"#,
        ] {
            assert_eq!(
                error(json, Rules::Separate),
                "invalid plugin configuration: field `_rules_`: parse config failed, no valid rules, and no global configuration beside them"
            );
        }
        // Without rules, the global configuration's own error.
        assert_eq!(
            error(r#"{"name": 1, "_rules_": []}"#, Rules::Separate),
            "invalid plugin configuration: field `name`: invalid type: integer `1`, expected a string"
        );
        // Rules alone with an empty global configuration beside them is fine.
        assert!(
            parse::<Conf>(
                br#"{"_rules_": [], "name": "g"}"#,
                Rules::Separate,
                &Hooks::none()
            )
            .is_ok()
        );
    }

    #[test]
    fn with_rules_a_global_config_that_does_not_parse_is_none() {
        let set =
            rules(r#"{"name": "invalid", "_rules_": [{"_match_domain_": "a.com", "name": "a"}]}"#);
        assert_eq!(pick(&set, "a.com", "", ""), Some("a".into()));
        assert_eq!(pick(&set, "b.com", "", ""), None);
    }

    #[test]
    fn rule_errors_name_the_rule_and_the_field() {
        for (json, expected) in [
            (
                r#"{"_rules_": [{"_match_domain_": "a", "name": "a"}, {"_match_route_": "r", "name": 5}]}"#,
                "field `_rules_[1].name`: invalid type: integer `5`, expected a string",
            ),
            (
                r#"{"_rules_": [{"_match_route_": "r"}]}"#,
                "field `_rules_[0]`: missing field `name`",
            ),
            (
                r#"{"_rules_": [{"_match_route_": "r", "name": "a", "nmae": "b"}]}"#,
                "field `_rules_[0].nmae`: unknown field `nmae`",
            ),
            (
                r#"{"_rules_": [{"_match_route_": "r", "name": "invalid"}]}"#,
                "field `_rules_[0].name`: must not be `invalid`",
            ),
            (
                r#"{"_rules_": [{"_match_route_": "r", "name": "a", "timeout": 13}]}"#,
                "field `_rules_[0]`: unlucky timeout",
            ),
            (
                r#"{"_rules_": [{"_match_route_": 7, "name": "a"}]}"#,
                "field `_rules_[0]._match_route_`: expected a string or an array of strings",
            ),
            (
                r#"{"_rules_": [{"_match_domain_": ["a", 7], "name": "a"}]}"#,
                "field `_rules_[0]._match_domain_[1]`: expected a string",
            ),
            (
                r#"{"_rules_": ["a.com"]}"#,
                "field `_rules_[0]`: expected an object: a rule's match keys and its configuration",
            ),
            (
                r#"{"_rules_": {"_match_route_": "r"}}"#,
                "field `_rules_`: expected an array of rules",
            ),
        ] {
            let message = error(json, Rules::Separate);
            assert!(message.contains(expected), "{json}:\n  {message}");
        }
    }

    mod random {
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::*;

        /// Pieces of Higress configurations, in any order: mostly not JSON, sometimes rules.
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"_rules_\"",
            "\"_match_domain_\"",
            "\"_match_route_\"",
            "\"_match_service_\"",
            "\"_match_route_prefix_\"",
            "\"_match_consumer_\"",
            "\"_plugin_id_\"",
            "\"name\"",
            "\"timeout\"",
            "\"*.a.com\"",
            "\"a\"",
            "\"\"",
            "7",
            "null",
            "\"é:]\"",
            "\u{ff}",
        ];

        proptest! {
            #![proptest_config(Config {
                cases: if cfg!(miri) { 4 } else { 3000 },
                failure_persistence: None,
                ..Config::default()
            })]

            // Configurations are host input: they parse, or the error says where they are wrong.
            #[test]
            fn any_configuration_parses_or_names_what_is_wrong(
                pieces in prop::collection::vec(prop::sample::select(PIECES), 0..24),
                mode in prop::sample::select(&[Rules::Separate, Rules::Override][..]),
                authority in ".{0,12}",
            ) {
                let json = pieces.concat();
                match parse::<Conf>(json.as_bytes(), mode, &Hooks::none()) {
                    Ok(set) => {
                        let input = MatchInput {
                            authority: &authority,
                            route_name: &authority,
                            cluster_name: &authority,
                        };
                        let _ = set.select(&input);
                    }
                    Err(error) => {
                        let message = error.to_string();
                        prop_assert!(
                            message.contains("field `") || message.contains(" at line "),
                            "{json}: {message}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn separate_rules_stand_alone_and_override_rules_inherit_the_global_keys() {
        let json = r#"{
            "name": "global", "timeout": 100, "extra": {"a": 1, "b": 2},
            "_rules_": [
                {"_match_route_": "r1", "name": "r1"},
                {"_match_route_": "r2", "name": "r2", "timeout": 5, "extra": {"a": 9}}
            ]
        }"#;
        let separate: RuleSet<Conf> =
            parse(json.as_bytes(), Rules::Separate, &Hooks::none()).unwrap();
        let overridden: RuleSet<Conf> =
            parse(json.as_bytes(), Rules::Override, &Hooks::none()).unwrap();
        let config = |set: &RuleSet<Conf>, route: &str| {
            let input = MatchInput {
                route_name: route,
                ..MatchInput::default()
            };
            set.select(&input)
                .map(|config| (config.timeout, config.extra.clone()))
        };
        assert_eq!(config(&separate, "r1"), Some((0, None)));
        assert_eq!(
            config(&overridden, "r1"),
            Some((100, Some(serde_json::json!({"a": 1, "b": 2}))))
        );
        // A key the rule sets replaces the global value whole.
        assert_eq!(
            config(&overridden, "r2"),
            Some((5, Some(serde_json::json!({"a": 9}))))
        );
        assert_eq!(
            config(&overridden, "r3"),
            Some((100, Some(serde_json::json!({"a": 1, "b": 2}))))
        );
        assert_eq!(overridden.configs().count(), 3);
        // A rule that only overrides needs a global key it does not set: without one, the
        // global key's absence is the rule's error.
        assert!(
            error(
                r#"{"timeout": 1, "_rules_": [{"_match_route_": "r"}]}"#,
                Rules::Override
            )
            .contains("field `_rules_[0]`: missing field `name`")
        );
        // A global configuration that does not parse is none, and the rules are built on an
        // empty one, as in Higress (wasm-go v1.1.1 pkg/matcher/rule_matcher.go:199-207 keeps
        // the zero value when the global parse fails; l.250-254 builds each rule from it).
        let set: RuleSet<Conf> = parse(
            br#"{"timeout": 7, "_rules_": [{"_match_route_": "r", "name": "r"}]}"#,
            Rules::Override,
            &Hooks::none(),
        )
        .unwrap();
        assert_eq!(config(&set, "r"), Some((0, None)));
        assert_eq!(config(&set, "other"), None);
    }

    #[test]
    fn override_hooks_see_the_parsed_global_config_and_whether_there_are_rules() {
        // key-auth's shape: the global configuration knows whether any rule exists, a rule
        // copies the global one and sets only its own key (key-auth/main.go:133-225).
        fn global(mut config: Conf, any_rule: bool) -> Result<Conf, ConfigError> {
            config.extra = Some(serde_json::json!({ "any_rule": any_rule }));
            Ok(config)
        }
        fn rule(
            global: GlobalConfig<'_, Conf>,
            rule: Map<String, Value>,
        ) -> Result<Conf, ConfigError> {
            let Some(name) = rule.get("name").and_then(Value::as_str) else {
                return Err(ConfigError::field("name", "is required"));
            };
            let timeout = global.config().map_or(0, |global| global.timeout);
            Ok(Conf {
                name: name.to_string(),
                timeout,
                extra: None,
            })
        }
        let hooks = Hooks { global, rule };
        let parse_with = |json: &str| parse::<Conf>(json.as_bytes(), Rules::Override, &hooks);
        let set = parse_with(
            r#"{"name": "g", "timeout": 3, "_rules_": [{"_match_route_": "r", "name": "r", "ignored": 1}]}"#,
        )
        .unwrap();
        let extra = |route: &str| {
            set.select(&MatchInput {
                route_name: route,
                ..MatchInput::default()
            })
            .map(|config| (config.name.clone(), config.timeout, config.extra.clone()))
        };
        assert_eq!(extra("r"), Some(("r".into(), 3, None)));
        assert_eq!(
            extra("x"),
            Some(("g".into(), 3, Some(serde_json::json!({"any_rule": true}))))
        );
        let plain = parse_with(r#"{"name": "g"}"#).unwrap();
        assert_eq!(
            plain.only_global().map(|config| config.extra.clone()),
            Some(Some(serde_json::json!({"any_rule": false})))
        );
        // The hook's errors name the rule's field.
        assert_eq!(
            parse_with(r#"{"name": "g", "_rules_": [{"_match_route_": "r"}]}"#)
                .err()
                .map(|error| error.to_string()),
            Some("invalid plugin configuration: field `_rules_[0].name`: is required".into())
        );
    }

    #[test]
    fn the_plugin_id_is_taken_out_in_every_mode_at_the_top_level_only() {
        // wasm-go v1.1.1 pkg/wrapper/plugin_wrapper.go:693-697: read and deleted before any
        // parsing, whatever the mode, when its text is not empty; rule objects keep theirs.
        for mode in [Rules::Off, Rules::Separate, Rules::Override] {
            for json in [
                r#"{"_plugin_id_": "p-1", "name": "g"}"#,
                r#"{"_plugin_id_": 7, "name": "g"}"#,
            ] {
                let set = parse::<Conf>(json.as_bytes(), mode, &Hooks::none())
                    .unwrap_or_else(|error| panic!("{mode:?} {json}: {error}"));
                assert_eq!(set.only_global().map(|c| c.name.as_str()), Some("g"));
            }
            // An empty ID stays, a key like any other.
            assert!(
                error(r#"{"_plugin_id_": "", "name": "g"}"#, mode)
                    .contains("unknown field `_plugin_id_`")
            );
        }
        assert!(
            error(
                r#"{"_rules_": [{"_match_route_": "r", "name": "r", "_plugin_id_": "p"}]}"#,
                Rules::Separate
            )
            .contains("field `_rules_[0]._plugin_id_`: unknown field `_plugin_id_`")
        );
    }
}
