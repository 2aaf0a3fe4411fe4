//! `http-call`: the "send requests to external services" example of the Higress Go guide,
//! rewritten with `async`/`await`.
//!
//! On every request the plugin sends `GET {requestPath}` to a configured service and waits for
//! the answer (the SDK pauses the request meanwhile, with the default 500 ms call timeout):
//!
//! - status 200: the response header named `tokenHeader`, when present and non-empty, is copied
//!   into the request header of the same name (replacing any value the client sent), and the
//!   request goes on to its upstream;
//! - any other status, no response (timeout, reset) or a call the proxy refuses (unknown
//!   cluster): an error is logged and the client gets a local reply `500 http call failed`.
//!
//! The Go original needs a callback, `types.ActionPause` and `proxywasm.ResumeHttpRequest()`;
//! here the hook awaits the call and returns, and the SDK resumes the request.
//!
//! # Configuration
//!
//! ```json
//! {
//!   "serviceSource": "k8s",
//!   "serviceName": "token-server",
//!   "servicePort": 8080,
//!   "namespace": "auth",
//!   "requestPath": "/token",
//!   "tokenHeader": "x-token"
//! }
//! ```
//!
//! | field           | required             | meaning                                                        |
//! |-----------------|----------------------|----------------------------------------------------------------|
//! | `serviceSource` | yes                  | `k8s`, `nacos`, `ip` or `dns`: how Higress registered the service |
//! | `serviceName`   | yes                  | the service's name in that registry                            |
//! | `servicePort`   | yes                  | its port (1-65535)                                             |
//! | `namespace`     | `nacos`; `k8s` (default `default`) | the Kubernetes namespace or the Nacos namespace ID |
//! | `domain`        | `dns`                | the domain, sent as the call's `:authority`                    |
//! | `requestPath`   | yes                  | the path (and query) to GET, starting with `/`                 |
//! | `tokenHeader`   | no                   | the header copied from the response into the request           |
//!
//! The service is called through the cluster Higress creates for it ([`ServiceSource`] lists
//! the names). A missing or invalid field rejects the configuration with an error naming it.

use std::fmt;
use std::rc::Rc;

use proxy_async::{
    ConfigError, Error, Flow, HttpClient, LocalReply, Plugin, PluginConfig, Request,
};

/// The body of the local reply sent when the call fails.
pub const FAILURE_BODY: &str = "http call failed";

/// How Higress knows the service, which decides the name of its cluster in the proxy and the
/// `:authority` of the call (as the Higress Go SDK's cluster types do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceSource {
    /// A Kubernetes service: cluster `outbound|{port}||{name}.{namespace}.svc.cluster.local`,
    /// authority `{name}.{namespace}.svc.cluster.local` (namespace `default` when not set).
    K8s,
    /// A Nacos service: cluster `outbound|{port}||{name}.DEFAULT-GROUP.{namespace}.nacos`,
    /// authority `{name}`.
    Nacos,
    /// A service with static IP addresses: cluster `outbound|{port}||{name}.static`,
    /// authority `{name}`.
    Ip,
    /// A service resolved by DNS: cluster `outbound|{port}||{name}.dns`, authority `{domain}`.
    Dns,
}

impl fmt::Display for ServiceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceSource::K8s => "k8s",
            ServiceSource::Nacos => "nacos",
            ServiceSource::Ip => "ip",
            ServiceSource::Dns => "dns",
        })
    }
}

/// The plugin configuration (camelCase JSON; see the crate documentation).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpCallConfig {
    /// How Higress knows the service (`serviceSource`); required.
    pub service_source: Option<ServiceSource>,
    /// The service's name in its registry (`serviceName`).
    pub service_name: String,
    /// The service's port (`servicePort`); 0 is rejected.
    pub service_port: u16,
    /// The Kubernetes namespace (default `default`) or the Nacos namespace ID (required).
    pub namespace: String,
    /// The domain of a `dns` service, sent as the call's `:authority` (`domain`).
    pub domain: String,
    /// The path (and query string) to GET, starting with `/` (`requestPath`).
    pub request_path: String,
    /// The header copied from the call's response into the request (`tokenHeader`); empty
    /// copies nothing.
    pub token_header: String,
}

/// Where the calls go: a proxy cluster and the `:authority` to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The cluster name, exactly as Higress names it.
    pub cluster: String,
    /// The `:authority` of the calls.
    pub authority: String,
}

impl HttpCallConfig {
    /// The cluster and authority of the configured service, or the error naming the field that
    /// is missing to know them.
    pub fn target(&self) -> Result<Target, ConfigError> {
        let Some(source) = self.service_source else {
            return Err(ConfigError::field(
                "serviceSource",
                "missing; one of `k8s`, `nacos`, `ip`, `dns`",
            ));
        };
        let name = &self.service_name;
        let port = self.service_port;
        let target = match source {
            ServiceSource::K8s => {
                let namespace = if self.namespace.is_empty() {
                    "default"
                } else {
                    &self.namespace
                };
                let host = format!("{name}.{namespace}.svc.cluster.local");
                Target {
                    cluster: format!("outbound|{port}||{host}"),
                    authority: host,
                }
            }
            ServiceSource::Nacos => {
                if self.namespace.is_empty() {
                    return Err(ConfigError::field(
                        "namespace",
                        "required when serviceSource is `nacos` (the Nacos namespace ID, e.g. `public`)",
                    ));
                }
                Target {
                    cluster: format!(
                        "outbound|{port}||{name}.DEFAULT-GROUP.{}.nacos",
                        self.namespace
                    ),
                    authority: name.clone(),
                }
            }
            ServiceSource::Ip => Target {
                cluster: format!("outbound|{port}||{name}.static"),
                authority: name.clone(),
            },
            ServiceSource::Dns => {
                if self.domain.is_empty() {
                    return Err(ConfigError::field(
                        "domain",
                        "required when serviceSource is `dns` (it is the calls' :authority)",
                    ));
                }
                Target {
                    cluster: format!("outbound|{port}||{name}.dns"),
                    authority: self.domain.clone(),
                }
            }
        };
        Ok(target)
    }

    /// A client for the configured service, with the default 500 ms timeout.
    pub fn client(&self) -> Result<HttpClient, ConfigError> {
        let target = self.target()?;
        Ok(HttpClient::new(target.cluster).with_authority(target.authority))
    }
}

impl PluginConfig for HttpCallConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.request_path.is_empty() {
            return Err(ConfigError::field("requestPath", "missing or empty"));
        }
        if !self.request_path.starts_with('/') {
            return Err(ConfigError::field(
                "requestPath",
                format!(
                    "`{}` is not a path; it must start with `/`",
                    self.request_path
                ),
            ));
        }
        if self.service_name.is_empty() {
            return Err(ConfigError::field("serviceName", "missing or empty"));
        }
        if self.service_port == 0 {
            return Err(ConfigError::field("servicePort", "missing or 0"));
        }
        self.target().map(|_| ())
    }
}

/// The per-stream plugin value: the configuration and a client for the configured service.
#[derive(Debug)]
pub struct HttpCall {
    config: Rc<HttpCallConfig>,
    // `None` only if the configuration was not validated, which the SDK never allows.
    client: Option<HttpClient>,
}

impl HttpCall {
    fn failed() -> Flow {
        LocalReply::new(500)
            .body(FAILURE_BODY)
            .details("http_call_failed")
            .into()
    }
}

impl Plugin for HttpCall {
    type Root = HttpCallConfig;

    fn new(config: &Rc<HttpCallConfig>) -> Self {
        HttpCall {
            config: Rc::clone(config),
            client: config.client().ok(),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let Some(client) = &self.client else {
            return Err(Error::new("http-call has no valid service configuration"));
        };
        let response = match client.get(&self.config.request_path).send().await {
            Ok(response) => response,
            Err(error) => {
                log::error!("http call failed: {error}");
                return Ok(Self::failed());
            }
        };
        if response.status() != 200 {
            log::error!(
                "http call failed, status: {} (cluster `{}`)",
                response.status().as_u16(),
                response.cluster()
            );
            return Ok(Self::failed());
        }
        log::debug!(
            "http call status: {}, response body: {} bytes",
            response.status().as_u16(),
            response.body().len()
        );
        let name = &self.config.token_header;
        if !name.is_empty()
            && let Some(token) = response.header_bytes(name)
            && !token.is_empty()
        {
            req.headers_mut().insert(name, token);
        }
        Ok(Flow::Continue)
    }
}

proxy_async::main!(HttpCall);
