//! JWT authentication: verifies `Authorization: Bearer <jwt>` against the keys of a JWKS
//! document that a background task fetches from a cluster and refreshes, in the manner of
//! Envoy's `jwt_authn` filter with a `remote_jwks`.
//!
//! ```json
//! {
//!   "jwks": {"cluster": "idp", "path": "/.well-known/jwks.json"},
//!   "issuer": "https://idp.example",
//!   "audiences": ["api"],
//!   "refresh_interval_s": 60,
//!   "forward_claim_header": "x-jwt-sub"
//! }
//! ```
//!
//! # What a request goes through
//!
//! In `on_request_headers`:
//!
//! 1. The headers this plugin sets (`forward_claim_header`, `forward_payload_header`) are
//!    removed first, in every case: only a verified token may set them, never the client.
//! 2. The token is read from the one `Authorization` header, scheme `Bearer` in any case.
//! 3. It must be a JWS in compact form whose `alg` is `RS256`, `RS384`, `RS512` or `ES256`
//!    (`none` and the HMAC algorithms are refused: a key set has no shared secrets).
//! 4. Claims, as Envoy checks them, before any signature: `iss` must equal `issuer` (when
//!    configured); `nbf` and `exp`, when present, must hold on the proxy's clock within
//!    `clock_skew_s` (a token without `exp` is accepted unless `require_expiration`); one of
//!    the token's `aud` must be in `audiences` (when configured).
//! 5. The signature must verify with the key of the set whose `kid` is the token's (a token
//!    without `kid`: with any key that fits its `alg`).
//! 6. The request goes on with the token's `sub` in `forward_claim_header` (when the token has
//!    a `sub` that can be a header value) and its payload (base64url, as in the token) in
//!    `forward_payload_header`, each when configured, and without its `Authorization` header
//!    unless `forward` is true (Envoy's default too: the upstream gets the claims it needs,
//!    not a credential it could replay).
//!
//! A refused request gets a local reply and never reaches the upstream. The bodies and the
//! response code details are Envoy's (`jwt_authn_access_denied{Jwt_is_expired}`):
//!
//! | What is wrong | Reply |
//! |---|---|
//! | No token (no `Authorization`, another scheme, an empty token) | `401`, `www-authenticate: Bearer` |
//! | More than one `Authorization` header; a token that does not parse; an unsupported `alg`; the wrong issuer; expired or not yet valid; no key with its `kid` (or for its `alg`); a signature that does not verify | `401`, `www-authenticate: Bearer error="invalid_token"` |
//! | A valid token for another audience | `403`, `www-authenticate: Bearer error="invalid_token"` (as Envoy) |
//! | No key set could be fetched yet | `503`, `retry-after: <retry_interval_s>` (the token may be fine: retrying is right, discarding it is not) |
//!
//! # The key set
//!
//! A background task fetches the JWKS document (`GET jwks.path` on `jwks.cluster`) as soon as
//! the configuration is accepted, then every `refresh_interval_s`; after a failed fetch (a
//! timeout, a status other than 200, a document without a usable key) it tries again after
//! `retry_interval_s` instead, and the keys it had stay in use: a failed refresh logs a
//! warning, and only a successful one replaces the set. Keys the plugin cannot use (another
//! type or curve, `use` other than `sig`, RSA under 2048 bits) are skipped with a warning.
//!
//! A request that arrives before any key set is loaded waits for the fetch in flight (at most
//! `jwks.timeout_ms` and a second), then is judged with its outcome. When no fetch is in flight
//! (the first one failed), the request starts one itself, at most one per `retry_interval_s`;
//! between those it gets the `503` at once rather than piling up on a key server that is down.
//! A token whose `kid` the set lacks makes the request fetch the set again (a key rotated in
//! since the last refresh), at most once per 10 s ([`UNKNOWN_KID_REFETCH_GAP`]); otherwise it
//! is refused with `401`. All fetches are single-flight: at most one is in flight per worker.
//!
//! The set lives with the configuration: a new configuration starts with no keys and fetches
//! its own.
//!
//! # Configuration
//!
//! | Field | Default | Meaning |
//! |---|---|---|
//! | `jwks.cluster` | required | the proxy's cluster serving the JWKS document |
//! | `jwks.authority` | the cluster name | the `:authority` of the fetch |
//! | `jwks.path` | `/.well-known/jwks.json` | the path of the document |
//! | `jwks.timeout_ms` | `1000` | the timeout of one fetch |
//! | `issuer` | none (any) | the required `iss` |
//! | `audiences` | `[]` (any) | the accepted `aud` values |
//! | `refresh_interval_s` | `60` | the time between successful fetches |
//! | `retry_interval_s` | `1` | the time after a failed fetch before the next (Envoy's `failed_refetch_duration`) |
//! | `clock_skew_s` | `60` | the tolerance on `exp` and `nbf` (Envoy's `clock_skew_seconds`) |
//! | `require_expiration` | `false` | refuse tokens without `exp` |
//! | `forward_claim_header` | none | the request header receiving the token's `sub` |
//! | `forward_payload_header` | none | the request header receiving the token's payload (base64url) |
//! | `forward` | `false` | keep the `Authorization` header on the forwarded request |
//!
//! Unknown keys inside `jwks` are rejected (most likely typos); unknown top-level keys are
//! ignored (Istio and Higress add their own). An invalid configuration is rejected at
//! configuration time with a message naming the field, e.g. ``field `jwks.cluster`: must name a
//! cluster of the proxy``.
//!
//! The token is read from the `Authorization` header only, not from Envoy's default
//! `access_token` query parameter: query strings end up in access logs.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_async::{
    BackgroundTask, ConfigError, Error, Flow, LocalReply, Plugin, PluginConfig, Request, Root,
};

pub mod jwks;
pub mod jwt;
pub mod store;

use jwt::{Checks, Rejection, Token};
use store::{JwksSource, KeyStore};

/// The shortest time between two fetches that tokens with an unknown `kid` cause: any client
/// can send such a token, and must not be able to make the plugin hammer the key server.
pub const UNKNOWN_KID_REFETCH_GAP: Duration = Duration::from_secs(10);

/// The plugin configuration as written; see the [crate documentation](crate) for the JSON.
#[derive(Debug, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the key set comes from.
    pub jwks: JwksConfig,
    /// The required `iss`, if any.
    pub issuer: Option<String>,
    /// The accepted audiences (any, when empty).
    pub audiences: Vec<String>,
    /// The seconds between successful fetches of the key set.
    pub refresh_interval_s: u64,
    /// The seconds after a failed fetch before the next.
    pub retry_interval_s: u64,
    /// The tolerance on `exp` and `nbf`, in seconds.
    pub clock_skew_s: u64,
    /// Whether a token without `exp` is refused.
    pub require_expiration: bool,
    /// The request header receiving `sub`, if any.
    pub forward_claim_header: Option<String>,
    /// The request header receiving the payload, if any.
    pub forward_payload_header: Option<String>,
    /// Whether `Authorization` stays on the forwarded request.
    pub forward: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            jwks: JwksConfig::default(),
            issuer: None,
            audiences: Vec::new(),
            refresh_interval_s: 60,
            retry_interval_s: 1,
            clock_skew_s: 60,
            require_expiration: false,
            forward_claim_header: None,
            forward_payload_header: None,
            forward: false,
        }
    }
}

/// `jwks` in the configuration: where the key set comes from.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwksConfig {
    /// The proxy's cluster serving the JWKS document.
    pub cluster: String,
    /// The `:authority` of the fetch (the cluster name when absent).
    pub authority: Option<String>,
    /// The path of the document (`/.well-known/jwks.json` when absent).
    pub path: Option<String>,
    /// The timeout of one fetch in milliseconds (1000 when absent).
    pub timeout_ms: Option<u64>,
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let jwks = &self.jwks;
        if jwks.cluster.trim().is_empty() {
            return Err(ConfigError::field(
                "jwks.cluster",
                "must name a cluster of the proxy",
            ));
        }
        if jwks
            .authority
            .as_deref()
            .is_some_and(|authority| authority.trim().is_empty())
        {
            return Err(ConfigError::field(
                "jwks.authority",
                "must not be empty (leave it out to use the cluster name)",
            ));
        }
        if jwks
            .path
            .as_deref()
            .is_some_and(|path| !path.starts_with('/'))
        {
            return Err(ConfigError::field("jwks.path", "must start with `/`"));
        }
        if jwks.timeout_ms == Some(0) {
            return Err(ConfigError::field("jwks.timeout_ms", "must be at least 1"));
        }
        if self.issuer.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::field(
                "issuer",
                "must not be empty (leave it out to accept any issuer)",
            ));
        }
        if let Some(index) = self.audiences.iter().position(String::is_empty) {
            return Err(ConfigError::field(
                format!("audiences[{index}]"),
                "must not be empty",
            ));
        }
        if self.refresh_interval_s == 0 {
            return Err(ConfigError::field(
                "refresh_interval_s",
                "must be at least 1",
            ));
        }
        if self.retry_interval_s == 0 {
            return Err(ConfigError::field("retry_interval_s", "must be at least 1"));
        }
        for (field, header) in [
            ("forward_claim_header", &self.forward_claim_header),
            ("forward_payload_header", &self.forward_payload_header),
        ] {
            if let Some(header) = header {
                validate_header_name(field, &header.to_ascii_lowercase())?;
            }
        }
        if self.forward_claim_header.as_deref().is_some_and(|claim| {
            self.forward_payload_header
                .as_deref()
                .is_some_and(|payload| claim.eq_ignore_ascii_case(payload))
        }) {
            return Err(ConfigError::field(
                "forward_payload_header",
                "must differ from forward_claim_header",
            ));
        }
        Ok(())
    }
}

/// What the plugin keeps per configuration: the checks a token must pass, and the key set
/// that the background task and every stream of this configuration share.
#[derive(Debug)]
pub struct Verifier {
    /// Where the key set comes from.
    pub jwks: JwksSource,
    /// The required `iss`, if any.
    pub issuer: Option<String>,
    /// The accepted audiences (any, when empty).
    pub audiences: Vec<String>,
    /// The time between successful fetches of the key set.
    pub refresh_interval: Duration,
    /// The time after a failed fetch before the next.
    pub retry_interval: Duration,
    /// The tolerance on `exp` and `nbf`, in seconds.
    pub clock_skew_s: u64,
    /// Whether a token without `exp` is refused.
    pub require_expiration: bool,
    /// The request header receiving `sub` (lower case), if any.
    pub forward_claim_header: Option<String>,
    /// The request header receiving the payload (lower case), if any.
    pub forward_payload_header: Option<String>,
    /// Whether `Authorization` stays on the forwarded request.
    pub forward: bool,
    /// The key set.
    pub keys: KeyStore,
}

impl Root for Verifier {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let jwks = config.jwks;
        Ok(Verifier {
            jwks: JwksSource {
                authority: jwks.authority.unwrap_or_else(|| jwks.cluster.clone()),
                cluster: jwks.cluster,
                path: jwks
                    .path
                    .unwrap_or_else(|| "/.well-known/jwks.json".to_string()),
                timeout: Duration::from_millis(jwks.timeout_ms.unwrap_or(1000)),
            },
            issuer: config.issuer,
            audiences: config.audiences,
            refresh_interval: Duration::from_secs(config.refresh_interval_s),
            retry_interval: Duration::from_secs(config.retry_interval_s),
            clock_skew_s: config.clock_skew_s,
            require_expiration: config.require_expiration,
            forward_claim_header: config
                .forward_claim_header
                .map(|name| name.to_ascii_lowercase()),
            forward_payload_header: config
                .forward_payload_header
                .map(|name| name.to_ascii_lowercase()),
            forward: config.forward,
            keys: KeyStore::default(),
        })
    }

    fn background_tasks(self: &Rc<Self>) -> Vec<BackgroundTask> {
        vec![BackgroundTask::new(refresh_keys(Rc::clone(self)))]
    }
}

/// A header this plugin sets must be a plain header name, and not one the proxy or this plugin
/// gives another meaning.
fn validate_header_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return Err(ConfigError::field(
            field,
            "must be a header name (letters, digits, `-`, ...)",
        ));
    }
    if [
        "authorization",
        "host",
        "content-length",
        "transfer-encoding",
    ]
    .contains(&name)
    {
        return Err(ConfigError::field(
            field,
            format!("must not be `{name}`: that header has a meaning of its own"),
        ));
    }
    Ok(())
}

/// RFC 9110 `tchar`: what a header name may be made of.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The plugin: one value per HTTP stream.
pub struct JwtAuth {
    verifier: Rc<Verifier>,
}

impl Plugin for JwtAuth {
    type Root = Verifier;

    fn new(verifier: &Rc<Verifier>) -> Self {
        JwtAuth {
            verifier: Rc::clone(verifier),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let config = &*self.verifier;
        let all = req.headers();
        let mut spoofed: Vec<&str> = Vec::new();
        let mut authorizations: Vec<&[u8]> = Vec::new();
        for (name, value) in &all {
            if name.eq_ignore_ascii_case("authorization") {
                authorizations.push(value);
            } else if is_own_header(config, name) && !spoofed.contains(&name) {
                spoofed.push(name);
            }
        }
        // First, before any return: only a verified token sets these headers. Should the proxy
        // refuse to strip one, the request must not go on (a hook error is a local reply).
        let mut headers = req.headers_mut();
        for name in &spoofed {
            headers.try_remove(name)?;
        }

        let token = match authorizations.as_slice() {
            [] => return Ok(refuse(config, Rejection::Missing)),
            [value] => match std::str::from_utf8(value).ok().and_then(jwt::bearer_token) {
                Some(token) => token.to_string(),
                None => return Ok(refuse(config, Rejection::Missing)),
            },
            [_, _, ..] => return Ok(refuse(config, Rejection::Ambiguous)),
        };
        let token = match self.check(&token).await {
            Ok(token) => token,
            Err(rejection) => {
                log::debug!("request refused: {}", rejection.message());
                return Ok(refuse(config, rejection));
            }
        };

        let mut headers = req.headers_mut();
        if let Some(header) = &config.forward_claim_header {
            match token.sub.as_deref() {
                Some(sub) if is_header_value(sub) => headers.try_insert(header, sub)?,
                Some(_) => {
                    log::warn!("the token's `sub` cannot be a header value; {header} not set")
                }
                None => {}
            }
        }
        if let Some(header) = &config.forward_payload_header {
            headers.try_insert(header, token.payload_b64)?;
        }
        if !config.forward {
            headers.try_remove("authorization")?;
        }
        Ok(Flow::Continue)
    }
}

impl JwtAuth {
    /// Everything a token must pass; its claims once it has.
    async fn check<'t>(&self, compact: &'t str) -> Result<Token<'t>, Rejection> {
        let config = &*self.verifier;
        let token = Token::parse(compact)?;
        let now = proxy_async::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
            });
        token.check_claims(
            &Checks {
                issuer: config.issuer.as_deref(),
                audiences: &config.audiences,
                require_expiration: config.require_expiration,
                clock_skew_s: config.clock_skew_s,
            },
            now,
        )?;

        let keys = match config.keys.keys() {
            Some(keys) => keys,
            None => {
                // Before the first key set: wait for the fetch in flight, or start one (rate
                // limited). The extra second covers the tick the timeout itself runs on.
                let wait = config.jwks.timeout + Duration::from_secs(1);
                let fetch = config
                    .keys
                    .refresh_unless_recent(&config.jwks, config.retry_interval);
                if proxy_async::timeout(wait, fetch).await.is_err() {
                    log::warn!("no JWKS after waiting {} ms", wait.as_millis());
                }
                config.keys.keys().ok_or(Rejection::KeysUnavailable)?
            }
        };
        let keys = match &token.kid {
            Some(kid) if !keys.has_kid(kid) => {
                // A key rotated in since the last refresh? Look once more, rate limited.
                config
                    .keys
                    .refresh_unless_recent(&config.jwks, UNKNOWN_KID_REFETCH_GAP)
                    .await;
                config.keys.keys().unwrap_or(keys)
            }
            _ => keys,
        };
        token.verify(&keys)?;
        Ok(token)
    }
}

/// The background task: fetch the key set now, then every refresh interval (every retry
/// interval after a failure), for as long as the configuration is in force.
async fn refresh_keys(config: Rc<Verifier>) {
    loop {
        let loaded = config.keys.refresh(&config.jwks).await;
        let pause = if loaded {
            config.refresh_interval
        } else {
            config.retry_interval
        };
        proxy_async::sleep(pause).await;
    }
}

/// Whether `name` is a header this plugin sets (in any case).
fn is_own_header(config: &Verifier, name: &str) -> bool {
    [&config.forward_claim_header, &config.forward_payload_header]
        .into_iter()
        .flatten()
        .any(|own| own.eq_ignore_ascii_case(name))
}

/// The local reply for `rejection`.
fn refuse(config: &Verifier, rejection: Rejection) -> Flow {
    let mut reply = LocalReply::new(rejection.status());
    reply = match rejection {
        Rejection::Missing => reply.header("www-authenticate", "Bearer"),
        // The next fetch is due within a retry interval.
        Rejection::KeysUnavailable => reply.header(
            "retry-after",
            config.retry_interval.as_secs().max(1).to_string(),
        ),
        _ => reply.header("www-authenticate", r#"Bearer error="invalid_token""#),
    };
    reply
        .header("content-type", "text/plain")
        .body(rejection.message())
        .details(rejection.details())
        .into()
}

/// No control characters (tab aside): what a proxy accepts in a header value.
fn is_header_value(text: &str) -> bool {
    !text
        .bytes()
        .any(|byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f)
}

proxy_async::main!(JwtAuth);
