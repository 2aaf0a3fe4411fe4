//! Higress's `basic-auth` plugin (alibaba/higress `plugins/wasm-go/extensions/basic-auth`),
//! ported to `proxy-async`: a request carries `Authorization: Basic <user:password>`; the
//! credential names a consumer; the consumer must be allowed on the request's route.
//!
//! ```
//! use proxy_async::higress::Higress;
//! use proxy_async::testing::PluginTest;
//! use basic_auth::BasicAuth;
//!
//! let config = r#"{"global_auth": true,
//!     "consumers": [{"name": "alice", "credential": "alice:secret"}]}"#;
//! let test = PluginTest::<Higress<BasicAuth>>::new(config).unwrap();
//! let stream = test.stream();
//! // alice:secret
//! let headers = [(":path", "/"), (":authority", "a.com"), ("authorization", "Basic YWxpY2U6c2VjcmV0")];
//! stream.send_request_headers(&headers, true);
//! assert_eq!(stream.request_header("x-mse-consumer").as_deref(), Some("alice"));
//! ```
//!
//! Configuration, as Higress's (the global keys, and `_rules_` in Override mode):
//!
//! | key | meaning |
//! |---|---|
//! | `consumers` | `[{"name": .., "credential": "user:password"}]`: credentials are unique (required, not empty) |
//! | `global_auth` | `true`: every route needs credentials; `false`: only routes with rules; unset: every route when there are no rules, else only routes with rules |
//! | `_rules_[].allow` | the consumers allowed on the rule's routes (required, not empty) |
//!
//! No, empty or non-`Basic ` credentials get `401` (`basic-auth.no_auth_data`), wrong ones `401`
//! (`basic-auth.bad_credential`), a consumer not allowed `403` (`basic-auth.unauthorized`), each
//! with `WWW-Authenticate: Basic realm=MSE Gateway` and Higress's body. An accepted request goes
//! on with `X-Mse-Consumer: <name>`.
//!
//! Where this port differs from Higress's Go plugin, on purpose:
//! - `X-Mse-Consumer` replaces what the client sent (Go appends to it);
//! - an `allow` in the global configuration is ignored, as in Go, but said so with a warning;
//!   any other unknown key, in the configuration or in a rule, is refused at start, naming it.

use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine as _;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use proxy_async::higress::{GlobalConfig, HigressPlugin, LogFormat, Rules};
use proxy_async::{ConfigError, Error, Flow, LocalReply, Plugin, PluginConfig, Request, Root};
use serde_json::{Map, Value};

/// The header an accepted request carries its consumer's name in.
pub const CONSUMER_HEADER: &str = "x-mse-consumer";

const WWW_AUTHENTICATE: &str = "Basic realm=MSE Gateway";

/// Go's `base64.StdEncoding`: the standard alphabet with padding, trailing bits tolerated.
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// A consumer: a name and its `user:password`.
#[derive(serde::Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// The consumer's name.
    #[serde(default)]
    pub name: Option<String>,
    /// `user:password`.
    #[serde(default)]
    pub credential: Option<String>,
}

/// The configuration (the global one, or a rule's: the global one with the rule's `allow`).
#[derive(serde::Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The consumers.
    #[serde(default)]
    pub consumers: Option<Vec<Consumer>>,
    /// See the crate's documentation.
    #[serde(default)]
    pub global_auth: Option<bool>,
    /// Read and ignored in the global configuration, as Higress does (a rule's `allow` counts).
    #[serde(default, rename = "allow")]
    pub global_allow: Option<Vec<String>>,
    /// The consumers allowed (a rule's).
    #[serde(skip)]
    pub allow: Vec<String>,
    /// Whether the configuration has rules.
    #[serde(skip)]
    pub any_rule: bool,
}

impl PluginConfig for Config {
    /// Higress's checks, in its order and words (`parseGlobalConfig`).
    fn validate(&self) -> Result<(), ConfigError> {
        let consumers = match &self.consumers {
            None => return Err(ConfigError::field("consumers", "consumers is required")),
            Some(consumers) if consumers.is_empty() => {
                return Err(ConfigError::field("consumers", "consumers cannot be empty"));
            }
            Some(consumers) => consumers,
        };
        let mut seen = std::collections::HashSet::new();
        for (index, consumer) in consumers.iter().enumerate() {
            if consumer.name.as_deref().unwrap_or_default().is_empty() {
                return Err(ConfigError::field(
                    format!("consumers[{index}].name"),
                    "consumer name is required",
                ));
            }
            let credential = consumer.credential.as_deref().unwrap_or_default();
            let field = format!("consumers[{index}].credential");
            if credential.is_empty() {
                return Err(ConfigError::field(field, "consumer credential is required"));
            }
            if !seen.insert(credential) {
                return Err(ConfigError::field(
                    field,
                    format!("duplicate consumer credential: {credential}"),
                ));
            }
            if credential.split(':').count() != 2 {
                return Err(ConfigError::field(
                    field,
                    format!("invalid credential format: {credential}"),
                ));
            }
        }
        Ok(())
    }
}

/// A configuration ready for requests.
pub struct BasicAuthRoot {
    config: Config,
    credentials: HashMap<String, String>,
    passwords: HashMap<String, String>,
}

impl Root for BasicAuthRoot {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let mut credentials = HashMap::new();
        let mut passwords = HashMap::new();
        for consumer in config.consumers.iter().flatten() {
            let (Some(name), Some(credential)) = (&consumer.name, &consumer.credential) else {
                continue;
            };
            if let Some((user, password)) = credential.split_once(':') {
                // As in Go, a later consumer with the same user name replaces the password.
                passwords.insert(user.to_string(), password.to_string());
            }
            credentials.insert(credential.clone(), name.clone());
        }
        Ok(BasicAuthRoot {
            config,
            credentials,
            passwords,
        })
    }
}

/// The plugin, per request.
pub struct BasicAuth {
    root: Rc<BasicAuthRoot>,
}

impl HigressPlugin for BasicAuth {
    const RULES: Rules = Rules::Override;
    const LOG_FORMAT: LogFormat = LogFormat::Higress {
        plugin_name: "basic-auth",
    };

    fn global_config(mut config: Config, any_rule: bool) -> Result<Config, ConfigError> {
        if config.global_allow.take().is_some() {
            log::warn!(
                "`allow` in the global configuration is ignored, as Higress ignores it: put it in a rule (`_rules_`)"
            );
        }
        config.any_rule = any_rule;
        Ok(config)
    }

    /// `parseOverrideRuleConfig`: the global configuration, with the rule's `allow`.
    fn override_config(
        global: GlobalConfig<'_, Config>,
        mut rule: Map<String, Value>,
    ) -> Result<Config, ConfigError> {
        let allow = match rule.remove("allow") {
            None => return Err(ConfigError::field("allow", "allow is required")),
            Some(allow) => serde_json::from_value::<Vec<String>>(allow)
                .map_err(|error| ConfigError::field("allow", error))?,
        };
        if allow.is_empty() {
            return Err(ConfigError::field("allow", "allow cannot be empty"));
        }
        if let Some(key) = rule.keys().next() {
            return Err(ConfigError::field(
                key.as_str(),
                "a basic-auth rule sets only `allow` (the rest comes from the global configuration)",
            ));
        }
        let mut config = global.config().cloned().unwrap_or_default();
        config.allow = allow;
        config.any_rule = true;
        Ok(config)
    }
}

/// Why a request is refused.
enum Denial {
    NoAuthData,
    BadCredential,
    Unauthorized,
}

impl Denial {
    fn reply(&self) -> LocalReply {
        let (status, details, body) = match self {
            Denial::NoAuthData => (
                401,
                "basic-auth.no_auth_data",
                "Request denied by Basic Auth check. No Basic Authentication information found.",
            ),
            Denial::BadCredential => (
                401,
                "basic-auth.bad_credential",
                "Request denied by Basic Auth check. Invalid username and/or password.",
            ),
            Denial::Unauthorized => (
                403,
                "basic-auth.unauthorized",
                "Request denied by Basic Auth check. Unauthorized consumer.",
            ),
        };
        LocalReply::new(status)
            .header("www-authenticate", WWW_AUTHENTICATE)
            .body(body)
            .details(details)
    }
}

impl Plugin for BasicAuth {
    type Root = BasicAuthRoot;

    fn new(root: &Rc<BasicAuthRoot>) -> Self {
        BasicAuth {
            root: Rc::clone(root),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let config = &self.root.config;
        let no_allow = config.allow.is_empty();
        let unset = config.global_auth.is_none();
        if (config.global_auth == Some(false) || (unset && config.any_rule)) && no_allow {
            log::info!("authorization is not required");
            return Ok(Flow::Continue);
        }
        let name = match self.consumer(req) {
            Ok(name) => name,
            Err(denial) => return Ok(denial.reply().into()),
        };
        let any_consumer =
            (config.global_auth == Some(true) && no_allow) || (unset && !config.any_rule);
        if !any_consumer && !config.allow.contains(&name) {
            log::warn!("consumer {name:?} is not allowed");
            return Ok(Denial::Unauthorized.reply().into());
        }
        log::info!("consumer {name:?} authenticated");
        req.headers_mut().insert(CONSUMER_HEADER, name);
        Ok(Flow::Continue)
    }
}

impl BasicAuth {
    /// The consumer the request's credentials name, or why there is none (Go's checks, in
    /// its order).
    fn consumer(&self, req: &Request<'_>) -> Result<String, Denial> {
        let Some(authorization) = req.header_str("authorization") else {
            log::warn!("failed to get authorization: no header");
            return Err(Denial::NoAuthData);
        };
        if authorization.is_empty() {
            log::warn!("authorization is empty");
            return Err(Denial::NoAuthData);
        }
        let Some(encoded) = authorization.strip_prefix("Basic ") else {
            log::warn!("authorization has no prefix 'Basic '");
            return Err(Denial::NoAuthData);
        };
        let credential = match STANDARD.decode(encoded) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => {
                log::warn!("failed to decode authorization {encoded:?}: {error}");
                return Err(Denial::BadCredential);
            }
        };
        let parts: Vec<&str> = credential.split(':').collect();
        let &[user, password] = parts.as_slice() else {
            log::warn!("invalid credential format: {credential}");
            return Err(Denial::BadCredential);
        };
        match self.root.passwords.get(user) {
            None => {
                log::warn!("credential username {user:?} is not configured");
                return Err(Denial::BadCredential);
            }
            Some(expected) if expected != password => {
                log::warn!("credential password is not correct for username {user:?}");
                return Err(Denial::BadCredential);
            }
            Some(_) => {}
        }
        match self.root.credentials.get(&credential) {
            Some(name) => Ok(name.clone()),
            None => {
                log::warn!("credential {credential:?} is not configured");
                Err(Denial::Unauthorized)
            }
        }
    }
}

proxy_async::main!(proxy_async::higress::Higress<BasicAuth>);
