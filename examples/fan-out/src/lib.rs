//! Two calls in flight at once, their answers merged into the request.
//!
//! For every request, in `on_request_headers`:
//!
//! 1. Client-supplied `x-profile-tier` and `x-flags` headers are removed (only this plugin sets
//!    them; without this, a client could send its own `x-flags` and keep it whenever the flags
//!    service fails).
//! 2. The user is read from `x-user-id` (set by an authentication plugin that runs before this
//!    one, such as the `auth-flow` example).
//! 3. `GET <profile.path>?user=<id>` and `GET <flags.path>?user=<id>` are sent together and
//!    awaited with `futures::join!`: both are in flight at once, so the request waits as long as
//!    the slower one, not the sum of both. The answers may come in either order.
//! 4. The profile answer (`200`, `{"tier": "<tier>"}`) becomes `x-profile-tier`; the flags answer
//!    (`200`, `{"flags": ["a", "b"]}`) becomes `x-flags: a,b` (an empty list gives an empty
//!    `x-flags`: the service answered, and there are no flags).
//!
//! # Fail-closed rules
//!
//! | What happened | Result |
//! |---|---|
//! | `x-user-id` is missing, empty or not UTF-8 | local reply `401`, details `missing_user_id`; no call is made |
//! | The profile call failed: timeout or reset, refused by the proxy, a status other than 200, a body that is not `{"tier": "<non-empty string>"}` | local reply `503` ([`FanOut::ERROR_STATUS`]) and an error log line with the cause |
//! | The flags call failed in any of those ways, or a flag is empty or not a header token | a warning log line; the request goes on with `x-profile-tier` and **without** `x-flags` |
//!
//! The profile is required, the flags are optional. Since the calls are joined, a failed
//! profile call still waits for the flags call (at most its timeout) before replying.
//!
//! # Configuration
//!
//! ```json
//! {
//!   "profile": {"cluster": "profile", "path": "/profile"},
//!   "flags":   {"cluster": "flags",   "path": "/flags"}
//! }
//! ```
//!
//! In each block only `cluster` is required; `authority` defaults to the cluster name, `path` to
//! `/profile` resp. `/flags`, `timeout_ms` to 500. Unknown keys inside a block are rejected (they
//! are most likely typos); unknown top-level keys are ignored (Istio and Higress add their own).
//! Errors name the field, e.g. `profile.cluster`.

use std::rc::Rc;
use std::time::Duration;

use proxy_async::{
    CallError, CallResponse, ConfigError, Error, Flow, HttpClient, LocalReply, Plugin,
    PluginConfig, Request, Root,
};

/// The request header naming the user (read).
pub const USER_ID_HEADER: &str = "x-user-id";

/// The request header carrying the user's profile tier (set).
pub const TIER_HEADER: &str = "x-profile-tier";

/// The request header carrying the user's feature flags, comma-separated (set when known).
pub const FLAGS_HEADER: &str = "x-flags";

/// The plugin configuration as written; see the [crate documentation](crate) for the JSON.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Config {
    /// The profile service (required answer).
    pub profile: UpstreamConfig,
    /// The feature-flag service (optional answer).
    pub flags: UpstreamConfig,
}

/// One service in the configuration, as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The proxy's name for the cluster.
    pub cluster: String,
    /// The `:authority` of the calls (the cluster name when absent).
    pub authority: Option<String>,
    /// The path of the calls (`/profile` or `/flags` when absent).
    pub path: Option<String>,
    /// The timeout of the calls in milliseconds (the SDK's default when absent).
    pub timeout_ms: Option<u64>,
}

impl PluginConfig for Config {}

/// What the plugin keeps per configuration: the two services.
#[derive(Debug)]
pub struct Services {
    /// The profile service (required answer).
    pub profile: Upstream,
    /// The feature-flag service (optional answer).
    pub flags: Upstream,
}

impl Root for Services {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(Services {
            profile: Upstream::resolve(config.profile, "profile", "/profile")?,
            flags: Upstream::resolve(config.flags, "flags", "/flags")?,
        })
    }
}

/// One service the plugin calls, with its defaults filled in.
#[derive(Debug)]
pub struct Upstream {
    /// The proxy's name for the cluster.
    pub cluster: String,
    /// The path of the calls (the `user` query parameter is appended).
    pub path: String,
    /// The client of the calls: the cluster, its `:authority` and the timeout.
    pub client: HttpClient,
}

impl Upstream {
    /// The service of configuration block `block`, its defaults filled in; the error names the
    /// field.
    fn resolve(
        config: UpstreamConfig,
        block: &str,
        default_path: &str,
    ) -> Result<Upstream, ConfigError> {
        if config.cluster.trim().is_empty() {
            return Err(ConfigError::field(
                format!("{block}.cluster"),
                "must name a cluster of the proxy",
            ));
        }
        let authority = config.authority.unwrap_or_else(|| config.cluster.clone());
        if authority.trim().is_empty() {
            return Err(ConfigError::field(
                format!("{block}.authority"),
                "must not be empty (leave it out to use the cluster name)",
            ));
        }
        let path = config.path.unwrap_or_else(|| default_path.to_string());
        if !path.starts_with('/') {
            return Err(ConfigError::field(
                format!("{block}.path"),
                "must start with `/`",
            ));
        }
        let timeout = config
            .timeout_ms
            .map_or(HttpClient::DEFAULT_TIMEOUT, Duration::from_millis);
        if timeout.is_zero() {
            return Err(ConfigError::field(
                format!("{block}.timeout_ms"),
                "must be at least 1",
            ));
        }
        Ok(Upstream {
            client: HttpClient::new(config.cluster.as_str())
                .with_authority(authority)
                .with_timeout(timeout),
            cluster: config.cluster,
            path,
        })
    }
}

/// The plugin: one value per HTTP stream.
pub struct FanOut {
    services: Rc<Services>,
}

/// The answer of the profile service.
#[derive(serde::Deserialize)]
struct ProfileReply {
    tier: String,
}

/// The answer of the flags service.
#[derive(serde::Deserialize)]
struct FlagsReply {
    flags: Vec<String>,
}

impl Plugin for FanOut {
    type Root = Services;

    /// The profile is required: when it cannot be had, the request is refused with 503.
    const ERROR_STATUS: u16 = 503;

    fn new(services: &Rc<Services>) -> Self {
        FanOut {
            services: Rc::clone(services),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        req.headers_mut().remove(TIER_HEADER).remove(FLAGS_HEADER);

        let user = req.header_str(USER_ID_HEADER).unwrap_or_default();
        if user.is_empty() {
            return Ok(LocalReply::new(401)
                .header("content-type", "text/plain")
                .body("missing user")
                .details("missing_user_id")
                .into());
        }

        // Both calls go out when `join!` first polls them, before either is answered.
        let services = &self.services;
        let (profile, flags) = futures::join!(
            fetch(&services.profile, &user),
            fetch(&services.flags, &user)
        );

        let tier = tier(profile).map_err(|error| Error::new(format_args!("profile: {error}")))?;
        let flags = match flag_list(flags) {
            Ok(flags) => Some(flags),
            Err(error) => {
                log::warn!("flags: {error}; going on without {FLAGS_HEADER}");
                None
            }
        };

        let mut headers = req.headers_mut();
        headers.insert(TIER_HEADER, &tier);
        if let Some(flags) = flags {
            headers.insert(FLAGS_HEADER, flags.join(","));
        }
        Ok(Flow::Continue)
    }
}

/// `GET <path>?user=<user>` on `upstream`; any status is `Ok`.
async fn fetch(upstream: &Upstream, user: &str) -> Result<CallResponse, CallError> {
    upstream
        .client
        .get(&upstream.path)
        .query("user", user)
        .send()
        .await
}

/// The tier from a profile answer.
fn tier(reply: Result<CallResponse, CallError>) -> Result<String, Error> {
    let reply = expect_200(reply?)?;
    let ProfileReply { tier } = reply.json()?;
    if tier.is_empty() || !is_header_value(&tier) {
        return Err(Error::new(format_args!(
            "cluster `{}` returned an empty tier or one that cannot be a header value",
            reply.cluster()
        )));
    }
    Ok(tier)
}

/// The flags from a flags answer.
fn flag_list(reply: Result<CallResponse, CallError>) -> Result<Vec<String>, Error> {
    let reply = expect_200(reply?)?;
    let FlagsReply { flags } = reply.json()?;
    if flags
        .iter()
        .any(|flag| flag.is_empty() || !flag.bytes().all(is_token_char))
    {
        return Err(Error::new(format_args!(
            "cluster `{}` returned a flag that is empty or not a header token",
            reply.cluster()
        )));
    }
    Ok(flags)
}

fn expect_200(reply: CallResponse) -> Result<CallResponse, Error> {
    if reply.status() == 200 {
        Ok(reply)
    } else {
        Err(Error::new(format_args!(
            "cluster `{}` answered {}, expected 200",
            reply.cluster(),
            reply.status()
        )))
    }
}

/// RFC 9110 `tchar`; keeps `,` out of a flag, since flags are joined with it.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// No control characters (tab aside): what a proxy accepts in a header value.
fn is_header_value(text: &str) -> bool {
    !text
        .bytes()
        .any(|byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f)
}

proxy_async::main!(FanOut);
