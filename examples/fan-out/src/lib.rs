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
    PluginConfig, Request,
};

/// The request header naming the user (read).
pub const USER_ID_HEADER: &str = "x-user-id";

/// The request header carrying the user's profile tier (set).
pub const TIER_HEADER: &str = "x-profile-tier";

/// The request header carrying the user's feature flags, comma-separated (set when known).
pub const FLAGS_HEADER: &str = "x-flags";

/// The plugin configuration; see the [crate documentation](crate) for the JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "RawConfig")]
pub struct Config {
    /// The profile service (required answer).
    pub profile: Upstream,
    /// The feature-flag service (optional answer).
    pub flags: Upstream,
}

/// One service the plugin calls, with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The proxy's name for the cluster.
    pub cluster: String,
    /// The `:authority` of the calls.
    pub authority: String,
    /// The path of the calls (the `user` query parameter is appended).
    pub path: String,
    /// The timeout of the calls.
    pub timeout: Duration,
}

impl Upstream {
    /// A client for this service.
    pub fn client(&self) -> HttpClient {
        HttpClient::new(self.cluster.as_str())
            .with_authority(self.authority.as_str())
            .with_timeout(self.timeout)
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

impl Default for Config {
    fn default() -> Self {
        RawConfig::default().into()
    }
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.profile.validate("profile")?;
        self.flags.validate("flags")
    }
}

/// The configuration as written, before the defaults are filled in.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct RawConfig {
    profile: RawUpstream,
    flags: RawUpstream,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawUpstream {
    cluster: String,
    authority: Option<String>,
    path: Option<String>,
    timeout_ms: Option<u64>,
}

impl RawUpstream {
    fn resolve(self, default_path: &str) -> Upstream {
        Upstream {
            authority: self.authority.unwrap_or_else(|| self.cluster.clone()),
            cluster: self.cluster,
            path: self.path.unwrap_or_else(|| default_path.to_string()),
            timeout: self
                .timeout_ms
                .map_or(HttpClient::DEFAULT_TIMEOUT, Duration::from_millis),
        }
    }
}

impl From<RawConfig> for Config {
    fn from(raw: RawConfig) -> Self {
        Config {
            profile: raw.profile.resolve("/profile"),
            flags: raw.flags.resolve("/flags"),
        }
    }
}

/// The plugin: one value per HTTP stream.
pub struct FanOut {
    config: Rc<Config>,
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
    type Config = Config;

    /// The profile is required: when it cannot be had, the request is refused with 503.
    const ERROR_STATUS: u16 = 503;

    fn new(config: &Rc<Config>) -> Self {
        FanOut {
            config: Rc::clone(config),
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
        let config = &self.config;
        let (profile, flags) =
            futures::join!(fetch(&config.profile, &user), fetch(&config.flags, &user));

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
        .client()
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
