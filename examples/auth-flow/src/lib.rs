//! A two-call authentication flow that fails closed.
//!
//! For every request, in `on_request_headers`:
//!
//! 1. Every client-supplied identity header is removed, first of all, so that no request
//!    (accepted or rejected) reaches anything with an identity the client made up. An identity
//!    header is one whose name starts with `x-user-` in any case, also with `_` in place of a
//!    `-` (`x_user_id`): CGI-style upstreams (PHP, WSGI, Rack) read `x_user_id` and `x-user-id`
//!    as the same variable, so either spelling could pose as the identity this plugin sets.
//!    Every value of a repeated one goes.
//! 2. The credential is read from the credential header (`authorization` by default), which
//!    must be there exactly once.
//! 3. The credential is exchanged for a token: `POST <auth.path>` to the auth cluster with the
//!    JSON body `{"credential": "<credential>"}`; the answer must be `200` with
//!    `content-type: application/json` and `{"token": "<token>"}`.
//! 4. The token is used to look up the user: `GET <users.path>` on the users cluster with
//!    `authorization: Bearer <token>`; the answer must be `200` with
//!    `content-type: application/json` and `{"id": "<id>", "name": "<name>"}`.
//! 5. The request goes on upstream with `x-user-id` and `x-user-name` set from that answer,
//!    once each.
//!
//! The second call is made only after the first one answered: the hook simply awaits one, then
//! the other, and the SDK holds the request meanwhile and resumes it once at the end.
//!
//! # Fail-closed rules
//!
//! The request reaches the upstream only when both calls succeeded. Otherwise the client gets a
//! local reply and the upstream never sees the request:
//!
//! | What happened | Reply |
//! |---|---|
//! | The credential header is missing, empty or not UTF-8 | `401`, `www-authenticate: Bearer`, details `auth_missing_credential`; no call is made |
//! | The credential header is there more than once (which one would the upstream believe?) | `401`, `www-authenticate: Bearer`, details `auth_ambiguous_credential`; no call is made |
//! | The auth cluster answered `401` or `403` | `403`, details `auth_denied` |
//! | The users cluster answered `401` or `403` | `403`, details `user_denied` |
//! | Any other status from either cluster (1xx, 204, 3xx, 404, 429, 5xx, ...), a `200` whose `content-type` is not `application/json` (parameters such as `; charset=utf-8` allowed, any case) or is missing or repeated, a body that is not the expected JSON, a missing or unusable token, id or name, a timeout, an unreachable cluster or a response broken off, a call the proxy refused to dispatch (e.g. an unknown cluster), a response without a valid `:status`, the proxy refusing to strip identity headers or to set them | `503` ([`AuthFlow::ERROR_STATUS`]) and an error log line naming the cluster and the cause |
//!
//! Envoy joins the values of a repeated `authorization` header into one (`a,b`): the plugin
//! then sees one credential, which the auth service has to judge (and should refuse).
//!
//! # Configuration
//!
//! ```json
//! {
//!   "auth":  {"cluster": "auth",  "authority": "auth.local",  "path": "/token", "timeout_ms": 500},
//!   "users": {"cluster": "users", "authority": "users.local", "path": "/me",    "timeout_ms": 500},
//!   "credential_header": "authorization"
//! }
//! ```
//!
//! In each upstream block only `cluster` is required; `authority` defaults to the cluster name,
//! `path` to `/token` (auth) or `/me` (users), `timeout_ms` to 500. `credential_header`
//! defaults to `authorization`; it may not be an identity header (those are removed before it
//! is read). Unknown keys inside an upstream block are rejected (they are most likely typos);
//! unknown top-level keys are ignored (Istio and Higress add their own). Errors name the field,
//! e.g. `auth.cluster`.

use std::rc::Rc;
use std::time::Duration;

use proxy_async::{
    CallError, CallResponse, ConfigError, Error, Flow, HttpClient, LocalReply, Plugin,
    PluginConfig, Request, ResponseFuture, Root, StatusCode,
};

/// The prefix of the identity headers this plugin owns; client-supplied ones are removed (see
/// [`is_identity_header`] for the spellings that count).
pub const USER_HEADER_PREFIX: &str = "x-user-";

/// The request header carrying the user's id, set after a successful lookup.
pub const USER_ID_HEADER: &str = "x-user-id";

/// The request header carrying the user's name, set after a successful lookup.
pub const USER_NAME_HEADER: &str = "x-user-name";

/// The plugin configuration as written; see the [crate documentation](crate) for the JSON.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// The service that exchanges the credential for a token.
    pub auth: UpstreamConfig,
    /// The service that maps a token to a user.
    pub users: UpstreamConfig,
    /// The request header holding the client's credential (`authorization` when absent).
    pub credential_header: Option<String>,
}

/// One service in the configuration, as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The proxy's name for the cluster.
    pub cluster: String,
    /// The `:authority` of the calls (the cluster name when absent).
    pub authority: Option<String>,
    /// The path of the calls (`/token` for `auth`, `/me` for `users`, when absent).
    pub path: Option<String>,
    /// The timeout of the calls in milliseconds (the SDK's default when absent).
    pub timeout_ms: Option<u64>,
}

impl UpstreamConfig {
    fn resolve(self, default_path: &str) -> Upstream {
        let timeout = self
            .timeout_ms
            .map_or(HttpClient::DEFAULT_TIMEOUT, Duration::from_millis);
        let authority = self.authority.unwrap_or_else(|| self.cluster.clone());
        Upstream {
            client: HttpClient::new(self.cluster.as_str())
                .with_authority(authority.as_str())
                .with_timeout(timeout),
            cluster: self.cluster,
            authority,
            path: self.path.unwrap_or_else(|| default_path.to_string()),
            timeout,
        }
    }
}

impl PluginConfig for Config {}

/// What the plugin keeps per configuration: the two services, each with its client, and the
/// credential header.
#[derive(Debug)]
pub struct Services {
    /// The service that exchanges the credential for a token.
    pub auth: Upstream,
    /// The service that maps a token to a user.
    pub users: Upstream,
    /// The request header holding the client's credential (lower case).
    pub credential_header: String,
}

impl Root for Services {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let auth = config.auth.resolve("/token");
        auth.validate("auth")?;
        let users = config.users.resolve("/me");
        users.validate("users")?;
        let header = config
            .credential_header
            .unwrap_or_else(|| "authorization".to_string())
            .to_ascii_lowercase();
        if header.is_empty() || !header.bytes().all(is_token_char) {
            return Err(ConfigError::field(
                "credential_header",
                "must be a header name (letters, digits, `-`, ...)",
            ));
        }
        if is_identity_header(&header) {
            return Err(ConfigError::field(
                "credential_header",
                format!(
                    "must not be an identity header (`{USER_HEADER_PREFIX}*`, also with `_` for `-`): those headers are removed"
                ),
            ));
        }
        Ok(Services {
            auth,
            users,
            credential_header: header,
        })
    }
}

/// One service the plugin calls, with its defaults filled in.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The proxy's name for the cluster.
    pub cluster: String,
    /// The `:authority` of the calls.
    pub authority: String,
    /// The path of the calls.
    pub path: String,
    /// The timeout of the calls.
    pub timeout: Duration,
    // Made once, with the configuration: every stream's calls share it.
    client: HttpClient,
}

impl Upstream {
    /// The client for this service.
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    fn validate(&self, block: &str) -> Result<(), ConfigError> {
        if self.cluster.trim().is_empty() {
            return Err(ConfigError::field(
                format!("{block}.cluster"),
                "must name a cluster of the proxy",
            ));
        }
        if self.authority.trim().is_empty() {
            return Err(ConfigError::field(
                format!("{block}.authority"),
                "must not be empty (leave it out to use the cluster name)",
            ));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::field(
                format!("{block}.path"),
                "must start with `/`",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::field(
                format!("{block}.timeout_ms"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The plugin: one value per HTTP stream.
pub struct AuthFlow {
    services: Rc<Services>,
}

/// The body of the call to the auth cluster.
#[derive(serde::Serialize)]
struct TokenRequest<'a> {
    credential: &'a str,
}

/// The answer of the auth cluster.
#[derive(serde::Deserialize)]
struct TokenReply {
    token: String,
}

/// The answer of the users cluster.
#[derive(serde::Deserialize)]
struct UserReply {
    id: String,
    name: String,
}

/// What a service said about the caller.
enum Verdict<T> {
    Granted(T),
    Denied(StatusCode),
}

impl Plugin for AuthFlow {
    type Root = Services;

    /// Every failure that is not the caller's fault (the auth or users service is down, slow,
    /// or answers nonsense) is a 503: the request is refused, never let through.
    const ERROR_STATUS: u16 = 503;

    fn new(services: &Rc<Services>) -> Self {
        AuthFlow {
            services: Rc::clone(services),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        // One read of the headers serves both the stripping and the credential. Should the
        // read fail, it yields no headers: no credential either, so the request is refused
        // with a 401 and goes nowhere, identity headers or not.
        // The headers are read in this block, which ends once the credential is sent: a
        // request paused on the call keeps none of them.
        let sent = {
            let all = req.headers();
            let mut spoofed: Vec<&str> = Vec::new();
            let mut credentials: Vec<&[u8]> = Vec::new();
            for (name, value) in &all {
                if is_identity_header(name) {
                    if !spoofed.contains(&name) {
                        spoofed.push(name);
                    }
                } else if name.eq_ignore_ascii_case(&self.services.credential_header) {
                    credentials.push(value);
                }
            }
            // First, before any return: only this plugin may set identity headers. If the
            // proxy refused to strip one, the request must not go on (the error is a 503).
            let mut headers = req.headers_mut();
            for name in &spoofed {
                headers.try_remove(name)?;
            }

            let credential = match credentials.as_slice() {
                [value] => std::str::from_utf8(value)
                    .map(str::trim)
                    .unwrap_or_default(),
                [] => "",
                // Whichever value we checked, the upstream might believe another.
                [_, _, ..] => {
                    return Ok(unauthorized(
                        "auth_ambiguous_credential",
                        "more than one credential",
                    ));
                }
            };
            if credential.is_empty() {
                return Ok(unauthorized(
                    "auth_missing_credential",
                    "missing credential",
                ));
            }
            self.send_credential(credential)
        };

        // Sent, the token is not needed while the users service answers: scoped to the block,
        // it is not kept in the hook's future across that await (a `drop` would not free its
        // place there).
        let sent = match self.token(sent.await)? {
            Verdict::Granted(token) => self.send_token(&token),
            Verdict::Denied(status) => {
                log::debug!(
                    "the auth service denied the credential ({})",
                    status.as_u16()
                );
                return Ok(denied("auth_denied"));
            }
        };
        let user = match self.user(sent.await)? {
            Verdict::Granted(user) => user,
            Verdict::Denied(status) => {
                log::debug!("the users service denied the token ({})", status.as_u16());
                return Ok(denied("user_denied"));
            }
        };

        let mut headers = req.headers_mut();
        headers.try_insert(USER_ID_HEADER, &user.id)?;
        headers.try_insert(USER_NAME_HEADER, &user.name)?;
        Ok(Flow::Continue)
    }
}

impl AuthFlow {
    /// Sends the credential to the auth service, to exchange it for a token.
    fn send_credential(&self, credential: &str) -> ResponseFuture {
        let upstream = &self.services.auth;
        upstream
            .client()
            .post(&upstream.path)
            .json(&TokenRequest { credential })
            .send()
    }

    /// The auth service's answer: a token, or a denial. (Not `async`: awaited by the caller,
    /// the call is all a paused request keeps.)
    fn token(&self, answer: Result<CallResponse, CallError>) -> Result<Verdict<String>, Error> {
        let upstream = &self.services.auth;
        let reply = answer.map_err(|error| Error::new(format_args!("auth: {error}")))?;
        if let Some(denied) = check_status("auth", upstream, reply.status())? {
            return Ok(Verdict::Denied(denied));
        }
        check_content_type("auth", upstream, &reply)?;
        let TokenReply { token } = reply
            .json()
            .map_err(|error| Error::new(format_args!("auth: {error}")))?;
        // RFC 6750 b64token characters are a subset of this; anything else cannot be sent on.
        if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(Error::new(format_args!(
                "auth: cluster `{}` returned an empty token or one that is not a bearer token",
                upstream.cluster
            )));
        }
        Ok(Verdict::Granted(token))
    }

    /// Sends the token to the users service, to look up its user.
    fn send_token(&self, token: &str) -> ResponseFuture {
        let upstream = &self.services.users;
        upstream.client().get(&upstream.path).bearer(token).send()
    }

    /// The users service's answer: the user, or a denial.
    fn user(&self, answer: Result<CallResponse, CallError>) -> Result<Verdict<UserReply>, Error> {
        let upstream = &self.services.users;
        let reply = answer.map_err(|error| Error::new(format_args!("users: {error}")))?;
        if let Some(denied) = check_status("users", upstream, reply.status())? {
            return Ok(Verdict::Denied(denied));
        }
        check_content_type("users", upstream, &reply)?;
        let user: UserReply = reply
            .json()
            .map_err(|error| Error::new(format_args!("users: {error}")))?;
        if user.id.is_empty() || !is_header_value(&user.id) || !is_header_value(&user.name) {
            return Err(Error::new(format_args!(
                "users: cluster `{}` returned an empty id, or an id or name that cannot be a header value",
                upstream.cluster
            )));
        }
        Ok(Verdict::Granted(user))
    }
}

/// `Ok(None)` for 200, `Ok(Some(status))` for a denial (401, 403), `Err` for anything else.
fn check_status(
    block: &str,
    upstream: &Upstream,
    status: StatusCode,
) -> Result<Option<StatusCode>, Error> {
    match status {
        StatusCode::OK => Ok(None),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(Some(status)),
        other => Err(Error::new(format_args!(
            "{block}: cluster `{}` answered {} to {}, expected 200, 401 or 403",
            upstream.cluster,
            other.as_u16(),
            upstream.path
        ))),
    }
}

/// A `200` must say it is JSON, once: a service answering HTML, or anything it did not mean as
/// an answer to this API (an error page of a gateway in front of it, say), is not trusted even
/// when its body happens to parse.
fn check_content_type(block: &str, upstream: &Upstream, reply: &CallResponse) -> Result<(), Error> {
    let mut types = reply.headers().get_all("content-type");
    let found = match (types.next(), types.next()) {
        (Some(value), None) if is_json_media_type(value) => return Ok(()),
        (Some(value), None) => format!("content-type {:?}", String::from_utf8_lossy(value)),
        (None, _) => "no content-type".to_string(),
        (Some(_), Some(_)) => "more than one content-type".to_string(),
    };
    Err(Error::new(format_args!(
        "{block}: cluster `{}` answered 200 to {} with {found}, expected application/json",
        upstream.cluster, upstream.path
    )))
}

/// `application/json`, in any case, with or without parameters (`; charset=utf-8`).
fn is_json_media_type(value: &[u8]) -> bool {
    let media_type = value.split(|&byte| byte == b';').next().unwrap_or_default();
    media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// Whether the client may not send a header named `name`: it starts with `x-user-` in any
/// case, with `_` in place of any `-` of that prefix.
pub fn is_identity_header(name: &str) -> bool {
    let prefix = USER_HEADER_PREFIX.as_bytes();
    name.len() >= prefix.len()
        && name.bytes().zip(prefix).all(|(byte, &expected)| {
            byte.to_ascii_lowercase() == expected || (byte == b'_' && expected == b'-')
        })
}

fn unauthorized(details: &'static str, body: &str) -> Flow {
    LocalReply::new(401)
        .header("www-authenticate", "Bearer")
        .header("content-type", "text/plain")
        .body(body.to_string())
        .details(details)
        .into()
}

fn denied(details: &'static str) -> Flow {
    LocalReply::new(403)
        .header("content-type", "text/plain")
        .body("forbidden")
        .details(details)
        .into()
}

/// RFC 9110 `tchar`: what a header name may be made of.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// No control characters (tab aside): what a proxy accepts in a header value.
fn is_header_value(text: &str) -> bool {
    !text
        .bytes()
        .any(|byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f)
}

proxy_async::main!(AuthFlow);
