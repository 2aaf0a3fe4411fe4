//! Higress's `key-auth` plugin (alibaba/higress `plugins/wasm-go/extensions/key-auth`), ported
//! to `proxy-async`: a request carries an API key in a header or the query; the key names a
//! consumer; the consumer must be allowed on the request's route.
//!
//! ```
//! use proxy_async::higress::Higress;
//! use proxy_async::testing::PluginTest;
//! use key_auth::KeyAuth;
//!
//! let config = r#"{"global_auth": true, "in_header": true, "keys": ["x-api-key"],
//!     "consumers": [{"name": "alice", "credential": "k-1"}]}"#;
//! let test = PluginTest::<Higress<KeyAuth>>::new(config).unwrap();
//! let stream = test.stream();
//! stream.send_request_headers(&[(":path", "/"), (":authority", "a.com"), ("x-api-key", "k-1")], true);
//! assert_eq!(stream.request_header("x-mse-consumer").as_deref(), Some("alice"));
//! ```
//!
//! Configuration, as Higress's (the global keys, and `_rules_` in Override mode):
//!
//! | key | meaning |
//! |---|---|
//! | `keys` | the header or query parameter names a key is read from (required, not empty) |
//! | `in_header`, `in_query` | where keys are read (at least one must be given; with both `true`, only headers) |
//! | `consumers` | `[{"name": .., "credential": ..}]`: credentials are unique (required, not empty) |
//! | `global_auth` | `true`: every route needs a key; `false`: only routes with rules; unset: every route when there are no rules, else only routes with rules |
//! | `_rules_[].allow` | the consumers allowed on the rule's routes (required, not empty) |
//!
//! A request without a key gets `401`, with more than one `401`, with an unknown key or a
//! consumer not allowed `403`, each with `WWW-Authenticate: Key realm=MSE Gateway` and Higress's
//! body and response code details (`key-auth.no_key`, `key-auth.multi_key`,
//! `key-auth.unauthorized`). An accepted request goes on with `X-Mse-Consumer: <name>`.
//!
//! Where this port differs from Higress's Go plugin, on purpose:
//! - `X-Mse-Consumer` replaces what the client sent (Go appends to it, so an upstream reading
//!   the first value reads the client's);
//! - an unknown key in the configuration or in a rule (a typo, or `keys` in a rule, which Go
//!   ignores) is refused at start, naming it;
//! - a `:path` whose query does not parse reads as no key (Go's plugin panics there and the
//!   request goes on unauthenticated).

use std::collections::HashMap;
use std::rc::Rc;

use proxy_async::higress::{GlobalConfig, HigressPlugin, LogFormat, Rules};
use proxy_async::{ConfigError, Error, Flow, LocalReply, Plugin, PluginConfig, Request, Root};
use serde_json::{Map, Value};

/// The header an accepted request carries its consumer's name in.
pub const CONSUMER_HEADER: &str = "x-mse-consumer";

const WWW_AUTHENTICATE: &str = "Key realm=MSE Gateway";

/// A consumer: a name and its credential.
#[derive(serde::Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// The consumer's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its API key.
    #[serde(default)]
    pub credential: Option<String>,
}

/// The configuration (the global one, or a rule's: the global one with the rule's `allow`).
#[derive(serde::Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// See the crate's documentation.
    #[serde(default)]
    pub global_auth: Option<bool>,
    /// Where keys are read from.
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    /// Whether keys are read from the query.
    #[serde(default)]
    pub in_query: Option<bool>,
    /// Whether keys are read from headers.
    #[serde(default)]
    pub in_header: Option<bool>,
    /// The consumers.
    #[serde(default)]
    pub consumers: Option<Vec<Consumer>>,
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
        match &self.keys {
            None => return Err(ConfigError::field("keys", "keys is required")),
            Some(keys) if keys.is_empty() => {
                return Err(ConfigError::field("keys", "keys cannot be empty"));
            }
            Some(_) => {}
        }
        if self.in_query.is_none() && self.in_header.is_none() {
            return Err(ConfigError::new("must one of in_query/in_header required"));
        }
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
            if credential.is_empty() {
                return Err(ConfigError::field(
                    format!("consumers[{index}].credential"),
                    "consumer credential is required",
                ));
            }
            if !seen.insert(credential) {
                return Err(ConfigError::field(
                    format!("consumers[{index}].credential"),
                    format!("duplicate consumer credential: {credential}"),
                ));
            }
        }
        Ok(())
    }
}

/// A configuration ready for requests.
pub struct KeyAuthRoot {
    config: Config,
    credentials: HashMap<String, String>,
}

impl KeyAuthRoot {
    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

impl Root for KeyAuthRoot {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let credentials = config
            .consumers
            .iter()
            .flatten()
            .filter_map(|consumer| Some((consumer.credential.clone()?, consumer.name.clone()?)))
            .collect();
        Ok(KeyAuthRoot {
            config,
            credentials,
        })
    }
}

/// The plugin, per request.
pub struct KeyAuth {
    root: Rc<KeyAuthRoot>,
}

impl HigressPlugin for KeyAuth {
    const RULES: Rules = Rules::Override;
    const LOG_FORMAT: LogFormat = LogFormat::Higress {
        plugin_name: "key-auth",
    };

    fn global_config(mut config: Config, any_rule: bool) -> Result<Config, ConfigError> {
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
                "a key-auth rule sets only `allow` (the rest comes from the global configuration)",
            ));
        }
        let mut config = global.config().cloned().unwrap_or_default();
        config.allow = allow;
        // A rule's configuration is checked as the global one is (Go copies the global one,
        // zero-valued when it did not parse).
        config.any_rule = true;
        Ok(config)
    }
}

/// Why a request is refused.
enum Denial {
    NoKey,
    MultiKey,
    Unauthorized,
}

impl Denial {
    fn reply(&self) -> LocalReply {
        let (status, details, body) = match self {
            Denial::NoKey => (
                401,
                "key-auth.no_key",
                "Request denied by Key Auth check. No Key Authentication information found.",
            ),
            Denial::MultiKey => (
                401,
                "key-auth.multi_key",
                "Request denied by Key Auth check. Multi Key Authentication information found.",
            ),
            Denial::Unauthorized => (
                403,
                "key-auth.unauthorized",
                "Request denied by Key Auth check. Unauthorized consumer.",
            ),
        };
        LocalReply::new(status)
            .header("www-authenticate", WWW_AUTHENTICATE)
            .body(body)
            .details(details)
    }
}

impl Plugin for KeyAuth {
    type Root = KeyAuthRoot;

    fn new(root: &Rc<KeyAuthRoot>) -> Self {
        KeyAuth {
            root: Rc::clone(root),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let config = &self.root.config;
        let no_allow = config.allow.is_empty();
        let (global_true, global_false) = (
            config.global_auth == Some(true),
            config.global_auth == Some(false),
        );
        let unset = config.global_auth.is_none();
        if (global_false || (unset && config.any_rule)) && no_allow {
            log::info!("authorization is not required");
            return Ok(Flow::Continue);
        }
        let tokens = self.tokens(req);
        let token = match tokens.as_slice() {
            [] => return Ok(Denial::NoKey.reply().into()),
            [token] => token,
            _ => return Ok(Denial::MultiKey.reply().into()),
        };
        let Some(name) = self.root.credentials.get(token) else {
            log::warn!("credential {token:?} is not configured");
            return Ok(Denial::Unauthorized.reply().into());
        };
        req.headers_mut().insert(CONSUMER_HEADER, name.as_str());
        let any_consumer = (global_true && no_allow) || (unset && !config.any_rule);
        if any_consumer {
            log::info!("consumer {name:?} authenticated");
            return Ok(Flow::Continue);
        }
        if !config.allow.iter().any(|allowed| allowed == name) {
            log::warn!("consumer {name:?} is not allowed");
            return Ok(Denial::Unauthorized.reply().into());
        }
        Ok(Flow::Continue)
    }
}

impl KeyAuth {
    /// The keys the request carries: in the named headers (the first value of each, when not
    /// empty), else in the query (every value of each name, empty ones too), as Higress reads
    /// them.
    fn tokens(&self, req: &Request<'_>) -> Vec<String> {
        let config = &self.root.config;
        let keys = config.keys.as_deref().unwrap_or_default();
        if config.in_header == Some(true) {
            return keys
                .iter()
                .filter_map(|key| req.header_str(key))
                .filter(|value| !value.is_empty())
                .collect();
        }
        if config.in_query == Some(true) {
            let path = req.path().unwrap_or_default();
            let query = path.split_once('?').map_or("", |(_, query)| query);
            let query = query.split_once('#').map_or(query, |(query, _)| query);
            let pairs = query_pairs(query);
            return keys
                .iter()
                .flat_map(|key| {
                    pairs
                        .iter()
                        .filter(move |(name, _)| name == key)
                        .map(|(_, value)| value.clone())
                })
                .collect();
        }
        Vec::new()
    }
}

/// A query's `name=value` pairs as Go's `url.ParseQuery` reads them: `&`-separated, `+` a space,
/// percent-decoded; a pair with `;` or a bad escape is dropped.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((unescape(name)?, unescape(value)?))
        })
        .collect()
}

fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(index + 1..index + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 2;
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8(out).ok()
}

proxy_async::main!(proxy_async::higress::Higress<KeyAuth>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_read_as_go_reads_them() {
        assert_eq!(
            query_pairs("apikey=a%20b&apikey=&x=1+2&bad=%zz&semi=1;2"),
            [
                ("apikey".to_string(), "a b".to_string()),
                ("apikey".to_string(), String::new()),
                ("x".to_string(), "1 2".to_string()),
            ]
        );
    }
}
