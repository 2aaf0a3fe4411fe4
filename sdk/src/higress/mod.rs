//! Higress compatibility: the cluster names Higress gives its services, and its rule-level
//! configuration (`_rules_`).
//!
//! **Clusters.** Higress names the proxy cluster of each service after the registry it came
//! from. The types here build those names (and the `:authority` a call to the service carries)
//! exactly as Higress's Go SDK does; pass one to [`HttpClient::new`](crate::HttpClient::new):
//!
//! ```
//! use proxy_async::HttpClient;
//! use proxy_async::higress::NacosCluster;
//!
//! let users = HttpClient::new(NacosCluster {
//!     service_name: "users".into(),
//!     namespace_id: "public".into(),
//!     port: 8080,
//!     ..NacosCluster::default()
//! });
//! assert_eq!(users.cluster(), "outbound|8080||users.DEFAULT-GROUP.public.nacos");
//! assert_eq!(users.authority(), "users");
//! ```
//!
//! **Rule-level configuration.** Higress renders a `WasmPlugin`'s `matchRules` into the
//! plugin configuration as `_rules_`: each rule names routes, domains or services and carries
//! the configuration for the requests they match. A plugin opts in by implementing
//! [`HigressPlugin`] and running as [`Higress<Self>`] (`proxy_async::main!(Higress<MyPlugin>)`);
//! its hooks do not change: [`Plugin::new`](crate::Plugin::new) gets the root of the rule the
//! request matched (the first, in order), else the global one, and a request that matches
//! neither is left alone (no hook runs for it, its bodies are not buffered). The SDK's core
//! knows nothing of this: [`Higress`] is a plugin wrapping the author's.
//!
//! ```
//! use std::rc::Rc;
//! use proxy_async::{Error, Flow, Plugin, PluginConfig, Request};
//! use proxy_async::higress::{Higress, HigressPlugin, Rules};
//!
//! #[derive(serde::Deserialize, Default)]
//! struct Config {
//!     greeting: String,
//! }
//!
//! impl PluginConfig for Config {}
//!
//! struct Greet(Rc<Config>);
//!
//! impl HigressPlugin for Greet {
//!     const RULES: Rules = Rules::Separate;
//! }
//!
//! impl Plugin for Greet {
//!     type Root = Config;
//!
//!     fn new(config: &Rc<Config>) -> Self {
//!         Greet(Rc::clone(config))
//!     }
//!
//!     async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
//!         req.headers_mut().insert("x-greeting", self.0.greeting.as_str());
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! // `hi` for *.example.com, `hello` for everything else.
//! let config = r#"{
//!     "greeting": "hello",
//!     "_rules_": [{"_match_domain_": ["*.example.com"], "greeting": "hi"}]
//! }"#;
//! # use proxy_async::testing::PluginTest;
//! # let test = PluginTest::<Higress<Greet>>::new(config).unwrap();
//! # let stream = test.stream();
//! # stream.send_request_headers(&[(":authority", "api.example.com:8443")], true);
//! # assert_eq!(stream.request_header("x-greeting").as_deref(), Some("hi"));
//! ```

mod clusters;
pub(crate) mod request;
pub(crate) mod rules;
mod stream;
mod wrapper;

pub use clusters::{
    ConsulCluster, DnsCluster, FqdnCluster, K8sCluster, NacosCluster, RouteCluster,
    StaticIpCluster, TargetCluster,
};
pub use rules::GlobalConfig;
pub use stream::{
    CUSTOM_LOG, UserAttributes, UserAttributesError, disable_reroute,
    set_request_body_buffer_limit, set_response_body_buffer_limit,
};
pub use wrapper::{Higress, HigressConfig, HigressPlugin, HigressRoot};

/// How a plugin reads Higress's rule-level configuration, the `_rules_` key
/// ([`HigressPlugin::RULES`]).
///
/// With `Separate` or `Override`, a configuration with `_rules_` is read as Higress reads it
/// (higress-group/wasm-go v1.1.1, `pkg/matcher/rule_matcher.go`):
/// - the keys outside `_rules_` (if any) are the global configuration; when they do not parse
///   and there are rules, there is no global configuration (a warning says why) and the rules
///   are built without it, as in Higress;
/// - each rule is an object with at least one of `_match_route_` (route names),
///   `_match_domain_` (`example.com`, `*.example.com`, `www.example.*`, `*`),
///   `_match_service_` (`fqdn` or `fqdn:port`) and `_match_route_prefix_`, each a string or an
///   array of strings, plus the rule's configuration. When a rule has several, the first of
///   route (with service, both must match), domain, service, route prefix decides;
/// - a rule without match keys, or whose configuration does not parse, rejects the whole
///   configuration, with an error naming the rule (`_rules_[1]`);
/// - per request, the first rule that matches gives the configuration, else the global one;
///   with neither the plugin leaves the request alone.
///
/// A configuration without `_rules_` is read as with `Off`. The `_match_*` keys and `_rules_`
/// are removed before serde sees a configuration, and `_plugin_id_` (when not empty) from every
/// configuration, in every mode, as Higress does: configuration types may deny unknown fields.
///
/// Where Higress is silent or unsafe: a request without `:authority` (or properties the proxy
/// does not have) reads as empty and still gets the global configuration, where Higress would
/// skip the plugin (an auth plugin would then let it through); a rule's errors name the rule;
/// a global configuration dropped because it does not parse is logged; `_match_consumer_`
/// (never released: only an unmerged proposal had it, reading the client-sent `x-mse-consumer`
/// header) is refused naming the rule, where Higress would pass it to the plugin as
/// configuration and apply the rule to every consumer. Matching happens once per request, on
/// its first callback (the request headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// `_rules_` means nothing special: the whole JSON is the configuration of every request
    /// (for a [`HigressPlugin`] that wants only Higress's log format).
    Off,
    /// Each rule's configuration is its own keys alone (Higress's `ParseConfig`).
    Separate,
    /// Each rule's configuration is built from the global one and the rule's keys (Higress's
    /// `ParseOverrideConfig`), by [`HigressPlugin::override_config`]: by default the global
    /// keys with the rule's keys over them, so a rule says only what differs (a key the rule
    /// sets replaces the global key's whole value; objects are not merged).
    Override,
}

/// How log lines are written ([`HigressPlugin::LOG_FORMAT`]).
///
/// ```
/// use std::rc::Rc;
/// use proxy_async::{Error, Flow, NoConfig, Plugin, Request};
/// use proxy_async::higress::{Higress, HigressPlugin, LogFormat, Rules};
/// use proxy_async::testing::PluginTest;
///
/// struct Audit;
///
/// impl HigressPlugin for Audit {
///     const RULES: Rules = Rules::Off;
///     const LOG_FORMAT: LogFormat = LogFormat::Higress { plugin_name: "audit" };
/// }
///
/// impl Plugin for Audit {
///     type Root = NoConfig;
///     fn new(_: &Rc<NoConfig>) -> Self { Audit }
///     async fn on_request_headers(&mut self, _req: &mut Request<'_>) -> Result<Flow, Error> {
///         log::info!("checked");
///         Ok(Flow::Continue)
///     }
/// }
///
/// let test = PluginTest::<Higress<Audit>>::new(r#"{"_plugin_id_": "p-7"}"#).unwrap();
/// test.stream().send_request_headers(&[("x-request-id", "r-1")], true);
/// assert_eq!(test.logs_at(log::Level::Info), ["[audit] [p-7] [r-1] checked"]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// The message as the plugin wrote it.
    Plain,
    /// Higress's `[<plugin_name>] [<_plugin_id_ or nil>] [<x-request-id or nil>] <message>`.
    Higress {
        /// The plugin's name, as Higress's `SetCtx` gets it.
        plugin_name: &'static str,
    },
}
