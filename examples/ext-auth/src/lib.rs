//! Higress's `ext-auth` plugin (alibaba/higress `plugins/wasm-go/extensions/ext-auth`), ported
//! to `proxy-async`: each request is authorized by an external HTTP service, whose answer the
//! request hook awaits (Go dispatches the call, pauses, and resumes in a callback).
//!
//! ```
//! use proxy_async::higress::Higress;
//! use proxy_async::testing::{Action, PluginTest};
//! use ext_auth::ExtAuth;
//!
//! let config = r#"{"http_service": {"endpoint_mode": "envoy", "endpoint":
//!     {"service_name": "authz.default.svc.cluster.local", "service_port": 8090, "path_prefix": "/check"}}}"#;
//! let test = PluginTest::<Higress<ExtAuth>>::new(config).unwrap();
//! let stream = test.stream();
//! let request = [(":method", "GET"), (":path", "/orders"), (":authority", "shop.example")];
//! assert_eq!(stream.send_request_headers(&request, true), Action::Pause);
//! let call = &test.calls()[0];
//! assert_eq!((call.cluster(), call.path()), ("outbound|8090||authz.default.svc.cluster.local", "/check/orders"));
//! test.respond(call, 200, &[], "");
//! assert_eq!(stream.resumed_requests(), 1);
//! ```
//!
//! Configuration, as Higress's (a `_rules_` item is a whole configuration of its own):
//!
//! | key | meaning |
//! |---|---|
//! | `http_service.endpoint_mode` | `envoy` (the default: the call's path is `path_prefix` + the request's path, its method the request's) or `forward_auth` (`path` and `request_method`, with `X-Forwarded-*`/`X-Original-*` headers) |
//! | `http_service.endpoint` | `service_name` (required), `service_port` (80), `service_host` (the call's `:authority`; `service_name` when empty), `path_prefix` (envoy, required), `path` (forward_auth, required), `request_method` (forward_auth, `GET`) |
//! | `http_service.timeout` | the call's timeout in ms (1000) |
//! | `http_service.authorization_request` | `allowed_headers` (request headers sent to the service; `authorization` always is), `headers_to_add`, `with_request_body`, `max_request_body_bytes` (10 MiB) |
//! | `http_service.authorization_response` | `allowed_upstream_headers` (service headers set on the request), `allowed_client_headers` (service headers on a denial; all when unset) |
//! | `match_type`, `match_list` | `whitelist`: requests a rule matches skip authorization; `blacklist`: only they are authorized. Rules: `match_rule_domain` (`*` wildcards), `match_rule_method`, `match_rule_path` with `match_rule_type` |
//! | `failure_mode_allow`, `failure_mode_allow_header_add` | let requests through when the service fails (a status of 500 or more, or no answer), adding `x-envoy-auth-failure-mode-allowed: true` |
//! | `status_on_error` | the status of a denial when the service failed (403) |
//!
//! The service's `200` lets the request go on; any other status below 500 is the client's
//! answer (the service's status, headers and body); a failure is `status_on_error`. Each denial
//! has the response code details `ext-auth.unauthorized`.
//!
//! Where this port differs from Higress's Go plugin, on purpose: see `README.md`.

pub mod matcher;

use std::rc::Rc;
use std::time::Duration;

use proxy_async::higress::{self, FqdnCluster, HigressPlugin, LogFormat, Rules};
use proxy_async::{
    CallResponse, ConfigError, Error, Flow, HttpClient, LocalReply, Plugin, PluginConfig, Request,
    Root, Settings,
};
use serde_json::{Map, Value};

use matcher::{MatchRules, Mode, RepeatedMatcher, Rule, StringMatcher};

/// The response code details of every denial.
pub const DETAILS: &str = "ext-auth.unauthorized";

/// The header a request let through by `failure_mode_allow_header_add` carries.
pub const FAILURE_MODE_HEADER: &str = "x-envoy-auth-failure-mode-allowed";

const DEFAULT_TIMEOUT_MS: u64 = 1000;
const DEFAULT_MAX_BODY: u32 = 10 * 1024 * 1024;
const DEFAULT_STATUS_ON_ERROR: u16 = 403;

/// The configuration as written.
#[derive(serde::Deserialize, Clone, Debug, Default)]
pub struct Config {
    /// The authorization service.
    #[serde(default)]
    pub http_service: Option<HttpServiceConfig>,
    /// `whitelist` or `blacklist` (required with `match_list`).
    #[serde(default)]
    pub match_type: Option<String>,
    /// The rules that decide which requests are authorized.
    #[serde(default)]
    pub match_list: Option<Vec<MatchRuleConfig>>,
    /// Let requests through when the service fails.
    #[serde(default)]
    pub failure_mode_allow: bool,
    /// With `failure_mode_allow`, mark them with `x-envoy-auth-failure-mode-allowed: true`.
    #[serde(default)]
    pub failure_mode_allow_header_add: bool,
    /// The status of a denial when the service fails (403; 0 reads as 403).
    #[serde(default)]
    pub status_on_error: Option<u16>,
    /// Keys Higress does not read either: ignored, with a warning.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

/// `http_service`.
#[derive(serde::Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpServiceConfig {
    /// `envoy` (the default) or `forward_auth`.
    #[serde(default)]
    pub endpoint_mode: Option<String>,
    /// Where the service is.
    #[serde(default)]
    pub endpoint: Option<EndpointConfig>,
    /// The call's timeout in ms (1000; 0 reads as 1000).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// What the call carries.
    #[serde(default)]
    pub authorization_request: Option<AuthorizationRequestConfig>,
    /// What the service's answer gives the request or the client.
    #[serde(default)]
    pub authorization_response: Option<AuthorizationResponseConfig>,
}

/// `http_service.endpoint`.
#[derive(serde::Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// The service's FQDN.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Its port (80; 0 reads as 80).
    #[serde(default)]
    pub service_port: Option<u16>,
    /// The call's `:authority` (`service_name` when empty).
    #[serde(default)]
    pub service_host: Option<String>,
    /// Envoy mode: the prefix of the call's path.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Forward-auth mode: the call's method (`GET`).
    #[serde(default)]
    pub request_method: Option<String>,
    /// Forward-auth mode: the call's path.
    #[serde(default)]
    pub path: Option<String>,
}

/// `http_service.authorization_request`.
#[derive(serde::Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRequestConfig {
    /// Request headers sent to the service (string matchers, case-insensitive).
    #[serde(default)]
    pub allowed_headers: Option<Vec<Map<String, Value>>>,
    /// Headers added to the call.
    #[serde(default)]
    pub headers_to_add: Option<Map<String, Value>>,
    /// Send the request body too (not with `GET`, `HEAD` or `OPTIONS` in forward-auth mode).
    #[serde(default)]
    pub with_request_body: bool,
    /// The most body bytes buffered for the call (10 MiB; 0 reads as 10 MiB).
    #[serde(default)]
    pub max_request_body_bytes: Option<u32>,
}

/// `http_service.authorization_response`.
#[derive(serde::Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationResponseConfig {
    /// Service headers set on the request it allowed.
    #[serde(default)]
    pub allowed_upstream_headers: Option<Vec<Map<String, Value>>>,
    /// Service headers on a denial (all when unset).
    #[serde(default)]
    pub allowed_client_headers: Option<Vec<Map<String, Value>>>,
}

/// One item of `match_list`.
#[derive(serde::Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchRuleConfig {
    /// A domain, `*` for any run of characters.
    #[serde(default)]
    pub match_rule_domain: Option<String>,
    /// Methods.
    #[serde(default)]
    pub match_rule_method: Option<Vec<String>>,
    /// A path (without the query).
    #[serde(default)]
    pub match_rule_path: Option<String>,
    /// How the path matches: `exact`, `prefix`, `suffix`, `contains` or `regex`.
    #[serde(default)]
    pub match_rule_type: Option<String>,
}

impl PluginConfig for Config {}

/// How the call is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointMode {
    /// Envoy's ext_authz HTTP service: the request's method, `path_prefix` + its path.
    Envoy {
        /// The prefix.
        path_prefix: String,
    },
    /// Forward auth: a fixed method and path, with the request in `X-Forwarded-*` headers.
    ForwardAuth {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
}

/// A configuration ready for requests (what Go's `ParseConfig` builds).
pub struct ExtAuthConfig {
    /// The call's client (cluster `outbound|<port>||<service_name>`).
    pub client: HttpClient,
    /// How the call is made.
    pub mode: EndpointMode,
    /// The call's timeout.
    pub timeout: Duration,
    /// Request headers sent to the service.
    pub allowed_headers: Option<RepeatedMatcher>,
    /// Headers added to the call, sorted.
    pub headers_to_add: Vec<(String, String)>,
    /// Whether the body goes to the service.
    pub with_request_body: bool,
    /// The most body bytes buffered for it.
    pub max_request_body_bytes: u32,
    /// Service headers set on an allowed request.
    pub allowed_upstream_headers: Option<RepeatedMatcher>,
    /// Service headers on a denial.
    pub allowed_client_headers: Option<RepeatedMatcher>,
    /// Which requests skip authorization.
    pub match_rules: MatchRules,
    /// Let requests through when the service fails.
    pub failure_mode_allow: bool,
    /// Mark them.
    pub failure_mode_allow_header_add: bool,
    /// The status of a denial when the service fails.
    pub status_on_error: u16,
}

fn matchers(
    items: Option<&Vec<Map<String, Value>>>,
    field: &str,
) -> Result<Option<RepeatedMatcher>, ConfigError> {
    items
        .map(|items| {
            RepeatedMatcher::build(items, true).map_err(|error| ConfigError::field(field, error))
        })
        .transpose()
}

impl Root for ExtAuthConfig {
    type Config = Config;

    /// Go's `ParseConfig`, its checks in its order and words.
    fn configure(config: Config) -> Result<Self, ConfigError> {
        for key in config.unknown.keys() {
            log::warn!("`{key}` is not an ext-auth setting; ignored, as Higress ignores it");
        }
        let Some(service) = config.http_service else {
            return Err(ConfigError::new("missing http_service in config"));
        };
        let mode = match service.endpoint_mode.as_deref().unwrap_or("") {
            "" | "envoy" => "envoy",
            "forward_auth" => "forward_auth",
            other => {
                return Err(ConfigError::field(
                    "http_service.endpoint_mode",
                    format!("endpoint_mode {other} is not supported"),
                ));
            }
        };
        let Some(endpoint) = service.endpoint else {
            return Err(ConfigError::new("missing endpoint in config"));
        };
        let service_name = endpoint.service_name.clone().unwrap_or_default();
        if service_name.is_empty() {
            return Err(ConfigError::field(
                "http_service.endpoint.service_name",
                "endpoint service name must not be empty",
            ));
        }
        let port = match endpoint.service_port {
            None | Some(0) => 80,
            Some(port) => port,
        };
        let mode = if mode == "envoy" {
            if endpoint.request_method.is_some() || endpoint.path.is_some() {
                log::warn!(
                    "when endpoint_mode is envoy, endpoint request_method and path will be ignored"
                );
            }
            let Some(path_prefix) = endpoint.path_prefix.clone() else {
                return Err(ConfigError::field(
                    "http_service.endpoint.path_prefix",
                    "when endpoint_mode is envoy, endpoint path_prefix must not be empty",
                ));
            };
            EndpointMode::Envoy { path_prefix }
        } else {
            if endpoint.path_prefix.is_some() {
                log::warn!(
                    "when endpoint_mode is forward_auth, endpoint path_prefix will be ignored"
                );
            }
            let method = endpoint
                .request_method
                .as_deref()
                .filter(|method| !method.is_empty())
                .map_or_else(|| "GET".to_string(), str::to_uppercase);
            let Some(path) = endpoint.path.clone() else {
                return Err(ConfigError::field(
                    "http_service.endpoint.path",
                    "when endpoint_mode is forward_auth, endpoint path must not be empty",
                ));
            };
            EndpointMode::ForwardAuth { method, path }
        };
        let timeout = match service.timeout {
            None | Some(0) => DEFAULT_TIMEOUT_MS,
            Some(ms) => ms,
        };
        let request = service.authorization_request.unwrap_or_default();
        let allowed_headers = matchers(
            request.allowed_headers.as_ref(),
            "http_service.authorization_request.allowed_headers",
        )?;
        let mut headers_to_add: Vec<(String, String)> = request
            .headers_to_add
            .iter()
            .flatten()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (name.clone(), value)
            })
            .collect();
        headers_to_add.sort();
        if request.with_request_body
            && let EndpointMode::ForwardAuth { method, .. } = &mode
            && matches!(method.as_str(), "GET" | "OPTIONS" | "HEAD")
        {
            return Err(ConfigError::field(
                "http_service.authorization_request.with_request_body",
                format!("requestMethod {method} does not support with_request_body set to true"),
            ));
        }
        let max_request_body_bytes = match request.max_request_body_bytes {
            None | Some(0) => DEFAULT_MAX_BODY,
            Some(bytes) => bytes,
        };
        let response = service.authorization_response.unwrap_or_default();
        let allowed_upstream_headers = matchers(
            response.allowed_upstream_headers.as_ref(),
            "http_service.authorization_response.allowed_upstream_headers",
        )?;
        let allowed_client_headers = matchers(
            response.allowed_client_headers.as_ref(),
            "http_service.authorization_response.allowed_client_headers",
        )?;
        let match_rules = match_rules(config.match_type.as_deref(), config.match_list.as_deref())?;
        let client = HttpClient::new(FqdnCluster {
            fqdn: service_name,
            port,
            host: endpoint.service_host.unwrap_or_default(),
        })
        .with_timeout(Duration::from_millis(timeout));
        Ok(ExtAuthConfig {
            client,
            mode,
            timeout: Duration::from_millis(timeout),
            allowed_headers,
            headers_to_add,
            with_request_body: request.with_request_body,
            max_request_body_bytes,
            allowed_upstream_headers,
            allowed_client_headers,
            match_rules,
            failure_mode_allow: config.failure_mode_allow,
            failure_mode_allow_header_add: config.failure_mode_allow_header_add,
            status_on_error: match config.status_on_error {
                None | Some(0) => DEFAULT_STATUS_ON_ERROR,
                Some(status) => status,
            },
        })
    }

    fn settings(&self) -> Settings {
        Settings::default()
            .buffer_request_body(self.with_request_body)
            .body_buffer_limit(usize::try_from(self.max_request_body_bytes).unwrap_or(usize::MAX))
    }
}

/// Go's `parseMatchRules`.
pub fn match_rules(
    match_type: Option<&str>,
    list: Option<&[MatchRuleConfig]>,
) -> Result<MatchRules, ConfigError> {
    let Some(list) = list else {
        return Ok(MatchRules {
            mode: Mode::Whitelist,
            rules: Vec::new(),
        });
    };
    let mode = match match_type {
        None => return Err(ConfigError::new("missing match_type in config")),
        Some("whitelist") => Mode::Whitelist,
        Some("blacklist") => Mode::Blacklist,
        Some(_) => {
            return Err(ConfigError::field(
                "match_type",
                "invalid match_type in config, must be 'whitelist' or 'blacklist'",
            ));
        }
    };
    let mut rules = Vec::with_capacity(list.len());
    for item in list {
        let domain = item.match_rule_domain.clone().unwrap_or_default();
        let methods = item.match_rule_method.clone().unwrap_or_default();
        let kind = item.match_rule_type.as_deref().unwrap_or("");
        let path = item.match_rule_path.as_deref().unwrap_or("");
        let matcher = if kind.is_empty() && path.is_empty() {
            None
        } else {
            Some(StringMatcher::build(kind, path, false).map_err(|error| {
                ConfigError::field(
                    "match_list",
                    format!(
                        "failed to build string matcher for rule with domain {domain:?}, method [{}], path {path:?}, type {kind:?}: {error}",
                        methods.join(" ")
                    ),
                )
            })?)
        };
        rules.push(Rule {
            domain,
            methods,
            path: matcher,
        });
    }
    Ok(MatchRules { mode, rules })
}

/// The plugin, per request.
pub struct ExtAuth {
    config: Rc<ExtAuthConfig>,
    /// The call, made from the request headers, for the body hook to send: Envoy hands a body
    /// hook no request headers once they went on.
    pending: Option<AuthCall>,
}

/// The call to the authorization service, as the request headers make it.
struct AuthCall {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl HigressPlugin for ExtAuth {
    const RULES: Rules = Rules::Separate;
    const LOG_FORMAT: LogFormat = LogFormat::Higress {
        plugin_name: "ext-auth",
    };
}

impl Plugin for ExtAuth {
    type Root = ExtAuthConfig;

    fn new(config: &Rc<ExtAuthConfig>) -> Self {
        ExtAuth {
            config: Rc::clone(config),
            pending: None,
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let config = Rc::clone(&self.config);
        let authority = req.authority().unwrap_or_default();
        let method = req.header_str(":method").unwrap_or_default();
        let path = path_without_query(&req.path().unwrap_or_default());
        if config.match_rules.is_allowed(&authority, &method, &path) {
            req.skip_body();
            return Ok(Flow::Continue);
        }
        higress::disable_reroute()?;
        if config.with_request_body && has_request_body(req) {
            higress::set_request_body_buffer_limit(req, config.max_request_body_bytes)?;
            // The body hook makes the call, with the whole body.
            self.pending = Some(self.auth_call(req));
            return Ok(Flow::Continue);
        }
        req.skip_body();
        let call = self.auth_call(req);
        self.check(req, call, None).await
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let Some(call) = self.pending.take() else {
            return Ok(Flow::Continue);
        };
        let body = req.body();
        self.check(req, call, Some(body)).await
    }
}

impl ExtAuth {
    /// The call the request makes (Go's `checkExtAuth`, before it sends).
    fn auth_call(&self, req: &Request<'_>) -> AuthCall {
        let original_method = req.header_str(":method").unwrap_or_default();
        let original_path = req.path().unwrap_or_default();
        let (method, path) = match &self.config.mode {
            EndpointMode::Envoy { path_prefix } => (
                original_method.clone(),
                join_path(path_prefix, &original_path),
            ),
            EndpointMode::ForwardAuth { method, path } => (method.clone(), path.clone()),
        };
        AuthCall {
            headers: self.call_headers(req, &original_method, &original_path),
            method,
            path,
        }
    }

    /// Go's `checkExtAuth`: the call, and what its answer does to the request.
    async fn check(
        &self,
        req: &mut Request<'_>,
        auth: AuthCall,
        body: Option<Vec<u8>>,
    ) -> Result<Flow, Error> {
        let config = &self.config;
        let mut call = config.client.request(&auth.method, &auth.path);
        for (name, value) in &auth.headers {
            call = call.header(name, value);
        }
        if let Some(body) = body {
            call = call.body(body);
        }
        let response = match call.send().await {
            Ok(response) => response,
            Err(error) => {
                log::error!("failed to call ext auth server: {error}");
                return Ok(self.failed(req, None));
            }
        };
        let status = response.status().as_u16();
        if status == 200 {
            if let Some(allowed) = &config.allowed_upstream_headers {
                for (name, value) in response.headers().iter() {
                    if allowed.matches(name) {
                        req.headers_mut().insert(name, value);
                    }
                }
            }
            return Ok(Flow::Continue);
        }
        log::error!("failed to call ext auth server, status: {status}");
        Ok(self.failed(req, Some(&response)))
    }

    /// The headers of the call, sorted by name (Go sorts its header map).
    fn call_headers(&self, req: &Request<'_>, method: &str, path: &str) -> Vec<(String, String)> {
        let config = &self.config;
        let mut headers: std::collections::BTreeMap<String, String> = Default::default();
        if let Some(allowed) = &config.allowed_headers {
            for (name, value) in req.headers().iter() {
                if allowed.matches(name) && !name.starts_with(':') {
                    headers.insert(
                        name.to_ascii_lowercase(),
                        String::from_utf8_lossy(value).into_owned(),
                    );
                }
            }
        }
        for (name, value) in &config.headers_to_add {
            headers.insert(name.to_ascii_lowercase(), value.clone());
        }
        if let Some(authorization) = req.header_str("authorization") {
            let authorization = authorization.trim();
            if !authorization.is_empty() {
                headers.insert("authorization".to_string(), authorization.to_string());
            }
        }
        if let EndpointMode::ForwardAuth { .. } = config.mode {
            let authority = req.authority().unwrap_or_default();
            let scheme = req.header_str(":scheme").unwrap_or_default();
            for (name, value) in [
                ("x-original-method", method),
                ("x-original-uri", path),
                ("x-forwarded-proto", scheme.as_str()),
                ("x-forwarded-method", method),
                ("x-forwarded-uri", path),
                ("x-forwarded-host", authority.as_str()),
            ] {
                headers.insert(name.to_string(), value.to_string());
            }
        }
        headers.into_iter().collect()
    }

    /// The service failed or denied: let the request through (failure mode), or answer the
    /// client (the service's status below 500, else `status_on_error`).
    fn failed(&self, req: &mut Request<'_>, response: Option<&CallResponse>) -> Flow {
        let config = &self.config;
        let status = response.map_or(500, |response| response.status().as_u16());
        if status >= 500 && config.failure_mode_allow {
            if config.failure_mode_allow_header_add {
                req.headers_mut().insert(FAILURE_MODE_HEADER, "true");
            }
            return Flow::Continue;
        }
        let mut reply = LocalReply::new(if status >= 500 {
            config.status_on_error
        } else {
            status
        })
        .details(DETAILS);
        if let Some(response) = response {
            let mut headers: Vec<(&str, &[u8])> = response
                .headers()
                .iter()
                .filter(|(name, _)| !name.starts_with(':'))
                .filter(|(name, _)| {
                    config
                        .allowed_client_headers
                        .as_ref()
                        .is_none_or(|allowed| allowed.matches(name))
                })
                .collect();
            headers.sort_by(|a, b| a.0.cmp(b.0));
            for (name, value) in headers {
                reply = reply.header(name, String::from_utf8_lossy(value).as_ref());
            }
            reply = reply.body(response.body().to_vec());
        }
        reply.into()
    }
}

/// Go's `HasRequestBody`: a `content-length` other than 0, else a `content-type`, else a
/// chunked `transfer-encoding`.
fn has_request_body(req: &Request<'_>) -> bool {
    if let Some(length) = req
        .header_str("content-length")
        .and_then(|value| value.parse::<i64>().ok())
    {
        return length != 0;
    }
    if req
        .header_str("content-type")
        .is_some_and(|value| !value.is_empty())
    {
        return true;
    }
    req.header_str("transfer-encoding")
        .is_some_and(|value| value.contains("chunked"))
}

/// The request's path without its query or fragment, percent-decoded as Go's `url.Parse(..).Path`
/// gives it (undecodable input reads as empty, as Go's parse error does).
pub fn path_without_query(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    percent_decode(path).unwrap_or_default()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Go's `path.Join(prefix, path)` as ext-auth builds the call's path in envoy mode: the query
/// kept as written, the path cleaned (`//` collapsed, `.` and `..` resolved, no trailing `/`).
pub fn join_path(prefix: &str, path: &str) -> String {
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let joined = format!("{prefix}/{path}");
    let mut parts: Vec<&str> = Vec::new();
    for segment in joined.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let cleaned = format!("/{}", parts.join("/"));
    match query {
        Some(query) => format!("{cleaned}?{query}"),
        None => cleaned,
    }
}

proxy_async::main!(proxy_async::higress::Higress<ExtAuth>);
