//! A plugin as Higress runs it: its rule-level configuration chooses each stream's root, and its
//! log lines carry Higress's prefix. The core knows nothing of either: [`Higress`] is a plugin
//! that wraps the author's.

use std::rc::Rc;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::background::BackgroundTask;
use crate::config::PluginConfig;
use crate::error::{ConfigError, Error};
use crate::higress::rules::{self, GlobalConfig, Hooks, RuleSet};
use crate::higress::{LogFormat, Rules, request};
use crate::message::{Done, Message, Request, Response};
use crate::plugin::{Flow, Plugin};
use crate::root::{Root, Settings};
use crate::runtime::{Phase, Runtime};
use crate::timer::TickFunction;
use proxy_async_abi::Direction;

/// A plugin written for Higress: how it reads Higress's rule-level configuration (`_rules_`)
/// and how its log lines look. It runs as [`Higress<Self>`]:
/// `proxy_async::main!(Higress<MyPlugin>)`, `PluginTest::<Higress<MyPlugin>>::new(..)`.
pub trait HigressPlugin: Plugin {
    /// How `_rules_` is read: [`Rules::Separate`] (Higress's `ParseConfig`, the default) or
    /// [`Rules::Override`] (`ParseOverrideConfig`); [`Rules::Off`] reads the whole JSON as one
    /// configuration.
    const RULES: Rules = Rules::Separate;

    /// How log lines are written: as the hooks wrote them (the default), or in Higress's
    /// format `[<plugin name>] [<plugin id>] [<x-request-id>] <message>` (the id from the
    /// configuration's `_plugin_id_`, `nil` when absent or outside a request), which
    /// Higress's log tooling and its operators expect.
    const LOG_FORMAT: LogFormat = LogFormat::Plain;

    /// Whether the body hooks see bodies Higress does not read. Higress's wrapper skips, for a
    /// request that got a configuration and before the plugin's own headers hook
    /// (higress-group/wasm-go v1.1.1, `pkg/wrapper/plugin_wrapper.go:991-1013, 1076-1082,
    /// 1137-1139`): the request body when the request's `content-type` contains `octet-stream`
    /// or `grpc` or it has a `content-encoding`; both bodies of a websocket upgrade
    /// (`connection: upgrade`, `upgrade: websocket`); the response body on the same test of
    /// the response's headers. A skipped body passes through unseen and is not buffered (see
    /// [`Request::skip_body`]). `false` (the default) does as Higress; `true` runs the body
    /// hooks on every body, which Higress's Go SDK cannot.
    const READ_BINARY_BODIES: bool = false;

    /// The global configuration (the keys beside `_rules_`, or the whole configuration without
    /// rules), told whether the configuration has any rule. Higress's consumer-auth plugins
    /// need this: with `global_auth` unset, a route that no rule matches is authenticated only
    /// when there are no rules at all (key-auth and basic-auth keep a flag their rule parser
    /// sets, `plugins/wasm-go/extensions/key-auth/main.go`). By default the configuration as
    /// parsed; an error rejects the configuration (without rules) or drops the global one (with
    /// rules), as a parse error does.
    fn global_config(
        config: <Self::Root as Root>::Config,
        any_rule: bool,
    ) -> Result<<Self::Root as Root>::Config, ConfigError> {
        let _ = any_rule;
        Ok(config)
    }

    /// With [`Rules::Override`], a rule's configuration from the global configuration and the
    /// rule's own keys (its `_match_*` keys taken out), as Higress's `ParseOverrideConfig`
    /// hands the parsed global configuration and the rule's JSON to the plugin's rule parser
    /// (`pkg/wrapper/plugin_wrapper.go`, `ParseRuleConfigFunc`). By default the global keys
    /// with the rule's over them ([`GlobalConfig::overridden_by`]); a plugin that must see the
    /// parsed global configuration (copy it, then require the rule's `allow`) overrides this.
    /// Errors name fields from the rule (`_rules_[1].allow`).
    fn override_config(
        global: GlobalConfig<'_, <Self::Root as Root>::Config>,
        rule: Map<String, Value>,
    ) -> Result<<Self::Root as Root>::Config, ConfigError> {
        global.overridden_by(rule)
    }
}

/// The configuration JSON as Higress delivers it (global keys, `_rules_`, `_plugin_id_`),
/// kept as written for [`HigressRoot`] to read.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct HigressConfig(Option<Box<RawValue>>);

impl PluginConfig for HigressConfig {}

/// The root of a [`Higress`] plugin: the root of its global configuration and of each rule.
/// The settings (buffering, limits, tick period) are the global root's, or the first rule's
/// without one; every root's background tasks and tick functions run.
pub struct HigressRoot<P: HigressPlugin> {
    rules: RuleSet<P::Root>,
}

impl<P: HigressPlugin> Root for HigressRoot<P> {
    type Config = HigressConfig;

    fn configure(config: HigressConfig) -> Result<Self, ConfigError> {
        let json = config.0.as_deref().map_or("", RawValue::get).as_bytes();
        let runtime = Runtime::current();
        if let (LogFormat::Higress { plugin_name }, Some(runtime)) = (P::LOG_FORMAT, &runtime) {
            let id = plugin_id(json).unwrap_or_else(|| "nil".to_string());
            runtime.set_log_prefix(Some(format!("[{plugin_name}] [{id}]")));
        }
        let hooks = Hooks {
            global: P::global_config,
            rule: P::override_config,
        };
        let rules = rules::parse::<P::Root>(json, P::RULES, &hooks)?;
        if rules.only_global().is_none()
            && let Some(runtime) = &runtime
        {
            // Rules are matched in the request headers' hook, the plugin's own or not.
            runtime.always_run(Phase::RequestHeaders);
        }
        Ok(HigressRoot { rules })
    }

    fn settings(&self) -> Settings {
        self.rules
            .configs()
            .next()
            .map_or_else(Settings::default, |root| root.settings())
    }

    fn background_tasks(self: &Rc<Self>) -> Vec<BackgroundTask> {
        self.rules
            .configs()
            .flat_map(Root::background_tasks)
            .collect()
    }

    fn tick_functions(self: &Rc<Self>) -> Vec<TickFunction> {
        // Higress registers tick functions from every configuration it parses.
        self.rules
            .configs()
            .flat_map(Root::tick_functions)
            .collect()
    }
}

/// The configuration's `_plugin_id_`, which Higress injects to name the plugin instance.
fn plugin_id(configuration: &[u8]) -> Option<String> {
    match serde_json::from_slice(configuration).ok()? {
        Value::Object(keys) => rules::plugin_id(&keys),
        _ => None,
    }
}

/// Higress's `IsBinaryRequestBody` / `IsBinaryResponseBody`: a `content-type` containing
/// `octet-stream` or `grpc` (as written: the test is case-sensitive), or any `content-encoding`.
fn is_binary_body(message: &Message<'_>) -> bool {
    let content_type = message.header("content-type");
    let content_type = content_type
        .as_ref()
        .map_or(&[][..], |value| value.as_bytes());
    let contains = |needle: &[u8]| {
        content_type
            .windows(needle.len())
            .any(|window| window == needle)
    };
    contains(b"octet-stream")
        || contains(b"grpc")
        || message
            .header("content-encoding")
            .is_some_and(|value| !value.as_bytes().is_empty())
}

/// Higress's `IsWebsocket`: `connection` is `upgrade` and `upgrade` is `websocket`, each the
/// whole value, in any case.
fn is_websocket(message: &Message<'_>) -> bool {
    let is = |name: &str, wanted: &str| {
        message
            .header(name)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(wanted.as_bytes()))
    };
    is("connection", "upgrade") && is("upgrade", "websocket")
}

/// Plugin `P` as Higress runs it (see [`HigressPlugin`]): each stream gets the root of the
/// first rule its request matches, else the global one; a request that matches neither is
/// left alone (no hook runs for it, its bodies are not buffered).
pub struct Higress<P: HigressPlugin> {
    stream: Stream<P>,
}

enum Stream<P: HigressPlugin> {
    // The rules are matched at the stream's first hook, which has its request headers.
    Choosing(Rc<HigressRoot<P>>),
    Running(P),
    LeftAlone,
}

impl<P: HigressPlugin> Higress<P> {
    /// The plugin value of this stream, made at its first hook from the root its request
    /// matched; `None` for a stream the plugin leaves alone.
    fn plugin(&mut self, message: &Message<'_>) -> Option<&mut P> {
        if let Stream::Choosing(root) = &self.stream {
            let selected = Runtime::current().and_then(|runtime| {
                request::select(crate::host::backend(&runtime.host), &root.rules)
            });
            self.stream = match selected {
                Some(root) => Stream::Running(P::new(&root)),
                None => {
                    message.pass_stream();
                    Stream::LeftAlone
                }
            };
        }
        match &mut self.stream {
            Stream::Running(plugin) => Some(plugin),
            Stream::Choosing(_) | Stream::LeftAlone => None,
        }
    }
}

impl<P: HigressPlugin> Plugin for Higress<P> {
    type Root = HigressRoot<P>;

    const ERROR_STATUS: u16 = P::ERROR_STATUS;

    fn new(root: &Rc<HigressRoot<P>>) -> Self {
        let stream = match root.rules.only_global() {
            Some(global) => Stream::Running(P::new(global)),
            None => Stream::Choosing(Rc::clone(root)),
        };
        Higress { stream }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        // Higress's wrapper gives every request the property `x_request_id`, before matching
        // (`pkg/wrapper/plugin_wrapper.go:1033-1034`); its log lines, and other plugins', read it.
        let request_id = req.header("x-request-id");
        let request_id = request_id.as_ref().map_or(&[][..], |id| id.as_bytes());
        if let Err(error) = crate::properties::set_property(&["x_request_id"], request_id) {
            log::debug!("setting the property x_request_id: {error}");
        }
        let Some(plugin) = self.plugin(req) else {
            return Ok(Flow::Continue);
        };
        if !P::READ_BINARY_BODIES {
            if is_websocket(req) {
                req.skip_body_of(Direction::Request);
                req.skip_body_of(Direction::Response);
            } else if is_binary_body(req) {
                req.skip_body_of(Direction::Request);
            }
        }
        plugin.on_request_headers(req).await
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        match self.plugin(req) {
            Some(plugin) => plugin.on_request_body(req).await,
            None => Ok(Flow::Continue),
        }
    }

    async fn on_request_trailers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        match self.plugin(req) {
            Some(plugin) => plugin.on_request_trailers(req).await,
            None => Ok(Flow::Continue),
        }
    }

    async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        let Some(plugin) = self.plugin(resp) else {
            return Ok(Flow::Continue);
        };
        if !P::READ_BINARY_BODIES && is_binary_body(resp) {
            resp.skip_body_of(Direction::Response);
        }
        plugin.on_response_headers(resp).await
    }

    async fn on_response_body(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        match self.plugin(resp) {
            Some(plugin) => plugin.on_response_body(resp).await,
            None => Ok(Flow::Continue),
        }
    }

    async fn on_response_trailers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        match self.plugin(resp) {
            Some(plugin) => plugin.on_response_trailers(resp).await,
            None => Ok(Flow::Continue),
        }
    }

    async fn on_log(&mut self, done: &Done<'_>) {
        if let Stream::Running(plugin) = &mut self.stream {
            plugin.on_log(done).await;
        }
    }
}
