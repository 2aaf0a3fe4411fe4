//! Benchmark baseline: `examples/auth-flow` written by hand with raw callbacks on the plain
//! `proxy-wasm` crate, as it would be written without `proxy-async`. It exists only to measure
//! the SDK against (size, fuel per callback); it is not an example.
//!
//! The usual callback state machine: `on_http_request_headers` strips the client's `x-user-*`
//! headers, dispatches the token call and returns `Pause`; the stream context remembers which
//! call is out; `on_http_call_response` reads the answer, dispatches the users call (or
//! replies), and finally sets the identity headers and resumes the request by hand.
//!
//! Behaviour, configuration, fail-closed rules, local replies and log lines are those of
//! `examples/auth-flow` (see its crate documentation); `benches/identical` checks that they
//! are the same, request by request.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

const USER_HEADER_PREFIX: &str = "x-user-";
const USER_ID_HEADER: &str = "x-user-id";
const USER_NAME_HEADER: &str = "x-user-name";
/// Every failure that is not the caller's fault is a 503.
const ERROR_STATUS: u32 = 503;

// `proxy-wasm` 0.2.5's `send_http_response` cannot set the response code details (it passes
// none), so the local replies go through the ABI directly.
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

// ---------------------------------------------------------------------------------------------
// Configuration.

struct Services {
    auth: Upstream,
    users: Upstream,
    credential_header: String,
}

struct Upstream {
    cluster: String,
    authority: String,
    path: String,
    timeout: Duration,
}

/// The configuration as written. Named as in the SDK example: serde puts the names of these
/// types in some errors (`expected struct UpstreamConfig`).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Config {
    auth: UpstreamConfig,
    users: UpstreamConfig,
    credential_header: Option<String>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UpstreamConfig {
    cluster: String,
    authority: Option<String>,
    path: Option<String>,
    timeout_ms: Option<u64>,
}

impl UpstreamConfig {
    fn resolve(self, block: &str, default_path: &str) -> Result<Upstream, String> {
        let upstream = Upstream {
            authority: self.authority.unwrap_or_else(|| self.cluster.clone()),
            cluster: self.cluster,
            path: self.path.unwrap_or_else(|| default_path.to_string()),
            timeout: self
                .timeout_ms
                .map_or(Duration::from_millis(500), Duration::from_millis),
        };
        if upstream.cluster.trim().is_empty() {
            return Err(field_error(
                &format!("{block}.cluster"),
                "must name a cluster of the proxy",
            ));
        }
        if upstream.authority.trim().is_empty() {
            return Err(field_error(
                &format!("{block}.authority"),
                "must not be empty (leave it out to use the cluster name)",
            ));
        }
        if !upstream.path.starts_with('/') {
            return Err(field_error(&format!("{block}.path"), "must start with `/`"));
        }
        if upstream.timeout.is_zero() {
            return Err(field_error(
                &format!("{block}.timeout_ms"),
                "must be at least 1",
            ));
        }
        Ok(upstream)
    }
}

fn field_error(field: &str, message: &str) -> String {
    format!("invalid plugin configuration: field `{field}`: {message}")
}

/// Parses and checks the configuration: empty is the default, errors name the field.
fn parse_config(bytes: &[u8]) -> Result<Services, String> {
    let json = bytes.trim_ascii();
    let raw = if json.is_empty() {
        Config::default()
    } else {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let raw = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                format!(
                    "invalid plugin configuration: not valid JSON: {inner} (deliver the configuration as JSON, e.g. in a google.protobuf.StringValue)"
                )
            } else if path == "." {
                format!("invalid plugin configuration: {inner}")
            } else {
                field_error(&path, &inner.to_string())
            }
        })?;
        deserializer.end().map_err(|error| {
            format!("invalid plugin configuration: {error} (text after the JSON value)")
        })?;
        raw
    };
    let config = Services {
        auth: raw.auth.resolve("auth", "/token")?,
        users: raw.users.resolve("users", "/me")?,
        credential_header: raw
            .credential_header
            .unwrap_or_else(|| "authorization".to_string())
            .to_ascii_lowercase(),
    };
    let header = &config.credential_header;
    if header.is_empty() || !header.bytes().all(is_token_char) {
        return Err(field_error(
            "credential_header",
            "must be a header name (letters, digits, `-`, ...)",
        ));
    }
    if is_identity_header(header) {
        return Err(field_error(
            "credential_header",
            &format!(
                "must not be an identity header (`{USER_HEADER_PREFIX}*`, also with `_` for `-`): those headers are removed"
            ),
        ));
    }
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// The root context: configuration, and one `AuthFlow` per stream.

#[derive(Default)]
struct Root {
    config: Option<Rc<Services>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        proxy_wasm::set_log_level(hostcalls::get_log_level().unwrap_or(LogLevel::Info));
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match parse_config(&bytes) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                true
            }
            Err(message) => {
                // A rejected reconfiguration keeps the previous configuration.
                log::error!("{message}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AuthFlow {
            config: self.config.clone(),
            waiting: Waiting::Nothing,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// ---------------------------------------------------------------------------------------------
// The stream context: the state machine.

/// Which call the paused request waits for.
#[derive(Clone, Copy)]
enum Waiting {
    Nothing,
    Token,
    User,
}

struct AuthFlow {
    /// `None` only if the proxy creates streams for a rejected configuration: fail closed.
    config: Option<Rc<Services>>,
    waiting: Waiting,
}

#[derive(serde::Serialize)]
struct TokenRequest<'a> {
    credential: &'a str,
}

#[derive(serde::Deserialize)]
struct TokenReply {
    token: String,
}

#[derive(serde::Deserialize)]
struct UserReply {
    id: String,
    name: String,
}

impl Context for AuthFlow {
    fn on_http_call_response(
        &mut self,
        _token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let waiting = std::mem::replace(&mut self.waiting, Waiting::Nothing);
        let result = match waiting {
            Waiting::Nothing => return,
            Waiting::Token => self.on_token(&config, num_headers, body_size),
            Waiting::User => self.on_user(&config, num_headers, body_size),
        };
        if let Err(message) = result {
            fail(&message);
        }
    }
}

impl HttpContext for AuthFlow {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            fail("the plugin has no valid configuration");
            return Action::Pause;
        };
        // One read of the headers for the stripping and the credential.
        let mut spoofed: Vec<String> = Vec::new();
        let mut credentials: Vec<Vec<u8>> = Vec::new();
        for (name, value) in self.get_http_request_headers_bytes() {
            if is_identity_header(&name) {
                if !spoofed.contains(&name) {
                    spoofed.push(name);
                }
            } else if name.eq_ignore_ascii_case(&config.credential_header) {
                credentials.push(value);
            }
        }
        // First, before any return: only this plugin may set identity headers.
        for name in &spoofed {
            self.remove_http_request_header(name);
        }

        let credential = match credentials.as_slice() {
            [value] => std::str::from_utf8(value)
                .map(str::trim)
                .unwrap_or_default()
                .to_string(),
            [] => String::new(),
            [_, _, ..] => {
                unauthorized("auth_ambiguous_credential", "more than one credential");
                return Action::Pause;
            }
        };
        if credential.is_empty() {
            unauthorized("auth_missing_credential", "missing credential");
            return Action::Pause;
        }

        let auth = &config.auth;
        let dispatched = match serde_json::to_vec(&TokenRequest {
            credential: &credential,
        }) {
            Ok(body) => dispatch(
                "auth",
                auth,
                "POST",
                ("content-type", "application/json"),
                Some(&body),
            ),
            Err(error) => Err(format!(
                "auth: request to cluster `{}` could not be built: JSON body: {error}",
                auth.cluster
            )),
        };
        match dispatched {
            Ok(()) => self.waiting = Waiting::Token,
            Err(message) => fail(&message),
        }
        Action::Pause
    }
}

impl AuthFlow {
    /// The auth service answered: on to the users call, or a reply.
    fn on_token(
        &mut self,
        config: &Services,
        num_headers: usize,
        body_size: usize,
    ) -> Result<(), String> {
        let auth = &config.auth;
        let (status, body) = self.call_reply("auth", auth, num_headers, body_size)?;
        if check_status("auth", auth, status)? {
            log::debug!("the auth service denied the credential ({status})");
            denied("auth_denied");
            return Ok(());
        }
        self.check_content_type("auth", auth)?;
        let TokenReply { token } =
            serde_json::from_slice(&body).map_err(|error| invalid_json("auth", auth, &error))?;
        // RFC 6750 b64token characters are a subset of this; anything else cannot be sent on.
        if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(format!(
                "auth: cluster `{}` returned an empty token or one that is not a bearer token",
                auth.cluster
            ));
        }
        let bearer = format!("Bearer {token}");
        dispatch(
            "users",
            &config.users,
            "GET",
            ("authorization", &bearer),
            None,
        )?;
        self.waiting = Waiting::User;
        Ok(())
    }

    /// The users service answered: set the identity and resume, or a reply.
    fn on_user(
        &mut self,
        config: &Services,
        num_headers: usize,
        body_size: usize,
    ) -> Result<(), String> {
        let users = &config.users;
        let (status, body) = self.call_reply("users", users, num_headers, body_size)?;
        if check_status("users", users, status)? {
            log::debug!("the users service denied the token ({status})");
            denied("user_denied");
            return Ok(());
        }
        self.check_content_type("users", users)?;
        let user: UserReply =
            serde_json::from_slice(&body).map_err(|error| invalid_json("users", users, &error))?;
        if user.id.is_empty() || !is_header_value(&user.id) || !is_header_value(&user.name) {
            return Err(format!(
                "users: cluster `{}` returned an empty id, or an id or name that cannot be a header value",
                users.cluster
            ));
        }
        self.set_http_request_header(USER_ID_HEADER, Some(&user.id));
        self.set_http_request_header(USER_NAME_HEADER, Some(&user.name));
        self.resume_http_request();
        Ok(())
    }

    /// The status and body of the call response being delivered.
    fn call_reply(
        &self,
        block: &str,
        upstream: &Upstream,
        num_headers: usize,
        body_size: usize,
    ) -> Result<(u16, Vec<u8>), String> {
        if num_headers == 0 {
            return Err(format!(
                "{block}: the response from cluster `{}` broke off before it was whole (connection reset, or timeout after {} ms)",
                upstream.cluster,
                upstream.timeout.as_millis()
            ));
        }
        let status = self
            .get_http_call_response_header_bytes(":status")
            .and_then(|value| parse_status(&value))
            .ok_or_else(|| {
                format!(
                    "{block}: response from cluster `{}` has no valid :status",
                    upstream.cluster
                )
            })?;
        let body = if body_size == 0 {
            Vec::new()
        } else {
            self.get_http_call_response_body(0, body_size)
                .unwrap_or_default()
        };
        if status >= 502 {
            self.check_envoy_answer(block, upstream, status, &body)?;
        }
        Ok((status, body))
    }

    /// Envoy's router answers a call it could not complete itself: a plain-text `504` for a
    /// timeout, a `503` (`502`) for an upstream it could not reach or that reset before
    /// answering. An upstream's own answer carries `x-envoy-upstream-service-time`; these do
    /// not.
    fn check_envoy_answer(
        &self,
        block: &str,
        upstream: &Upstream,
        status: u16,
        body: &[u8],
    ) -> Result<(), String> {
        const TIMEOUT_BODY: &[u8] = b"upstream request timeout";
        const RESET_BEFORE_HEADERS: &[u8] =
            b"upstream connect error or disconnect/reset before headers. reset reason: ";
        if self
            .get_http_call_response_header_bytes("x-envoy-upstream-service-time")
            .is_some()
            || self
                .get_http_call_response_header_bytes("content-type")
                .as_deref()
                != Some(b"text/plain".as_slice())
            || std::str::from_utf8(body).is_err()
        {
            return Ok(());
        }
        if status == 504 && body == TIMEOUT_BODY {
            return Err(format!(
                "{block}: no response from cluster `{}` within the call's timeout ({} ms)",
                upstream.cluster,
                upstream.timeout.as_millis()
            ));
        }
        if let Some(reason) = body.strip_prefix(RESET_BEFORE_HEADERS)
            && status != 504
        {
            return Err(format!(
                "{block}: cluster `{}` could not be reached ({})",
                upstream.cluster,
                String::from_utf8_lossy(reason)
            ));
        }
        Ok(())
    }

    /// A `200` must say it is JSON, once.
    fn check_content_type(&self, block: &str, upstream: &Upstream) -> Result<(), String> {
        let headers = self.get_http_call_response_headers_bytes();
        let mut types = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_slice());
        let found = match (types.next(), types.next()) {
            (Some(value), None) if is_json_media_type(value) => return Ok(()),
            (Some(value), None) => format!("content-type {:?}", String::from_utf8_lossy(value)),
            (None, _) => "no content-type".to_string(),
            (Some(_), Some(_)) => "more than one content-type".to_string(),
        };
        Err(format!(
            "{block}: cluster `{}` answered 200 to {} with {found}, expected application/json",
            upstream.cluster, upstream.path
        ))
    }
}

/// Dispatches a call; the dispatcher routes its response to the current stream context.
fn dispatch(
    block: &str,
    upstream: &Upstream,
    method: &str,
    header: (&str, &str),
    body: Option<&[u8]>,
) -> Result<(), String> {
    let headers = vec![
        (":method", method),
        (":path", upstream.path.as_str()),
        (":authority", upstream.authority.as_str()),
        header,
    ];
    hostcalls::dispatch_http_call(
        &upstream.cluster,
        headers,
        body,
        Vec::new(),
        upstream.timeout,
    )
    .map(drop)
    .map_err(|status| {
        let status = match status {
            Status::BadArgument => "BAD_ARGUMENT",
            _ => "INTERNAL_FAILURE",
        };
        format!(
            "{block}: the proxy refused a call to cluster `{}` ({status}): is the cluster configured in the proxy?",
            upstream.cluster
        )
    })
}

/// `Ok(false)` for 200, `Ok(true)` for a denial (401, 403), `Err` for anything else.
fn check_status(block: &str, upstream: &Upstream, status: u16) -> Result<bool, String> {
    match status {
        200 => Ok(false),
        401 | 403 => Ok(true),
        other => Err(format!(
            "{block}: cluster `{}` answered {other} to {}, expected 200, 401 or 403",
            upstream.cluster, upstream.path
        )),
    }
}

fn invalid_json(block: &str, upstream: &Upstream, error: &serde_json::Error) -> String {
    format!(
        "{block}: response from cluster `{}` is invalid: body is not the expected JSON: {error}",
        upstream.cluster
    )
}

/// An HTTP status: three digits, 100 to 999 (what the SDK accepts as `:status`).
fn parse_status(value: &[u8]) -> Option<u16> {
    match *value {
        [
            first @ b'1'..=b'9',
            second @ b'0'..=b'9',
            third @ b'0'..=b'9',
        ] => Some(
            u16::from(first - b'0') * 100 + u16::from(second - b'0') * 10 + u16::from(third - b'0'),
        ),
        _ => None,
    }
}

/// `application/json`, in any case, with or without parameters (`; charset=utf-8`).
fn is_json_media_type(value: &[u8]) -> bool {
    let media_type = value.split(|&byte| byte == b';').next().unwrap_or_default();
    media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// `x-user-*` in any case, with `_` in place of any `-` of the prefix.
fn is_identity_header(name: &str) -> bool {
    let prefix = USER_HEADER_PREFIX.as_bytes();
    name.len() >= prefix.len()
        && name.bytes().zip(prefix).all(|(byte, &expected)| {
            byte.to_ascii_lowercase() == expected || (byte == b'_' && expected == b'-')
        })
}

fn unauthorized(details: &str, body: &str) {
    send_reply(
        401,
        details,
        body,
        &[
            ("www-authenticate", "Bearer"),
            ("content-type", "text/plain"),
        ],
    );
}

fn denied(details: &str) {
    send_reply(403, details, "forbidden", &[("content-type", "text/plain")]);
}

/// Fails closed: a 503 and an error log line saying why.
fn fail(message: &str) {
    log::error!("on_request_headers failed: {message}; replying {ERROR_STATUS}");
    send_reply(
        ERROR_STATUS,
        "plugin_error",
        "Service Unavailable",
        &[("content-type", "text/plain")],
    );
}

/// `proxy_send_local_response` with response code details; the request is never resumed after.
fn send_reply(status: u32, details: &str, body: &str, headers: &[(&str, &str)]) {
    // The proxy-wasm header map: count, then (name size, value size) pairs, then each name
    // and value followed by a NUL.
    let mut map = Vec::with_capacity(64);
    map.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        map.extend_from_slice(&(name.len() as u32).to_le_bytes());
        map.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in headers {
        map.extend_from_slice(name.as_bytes());
        map.push(0);
        map.extend_from_slice(value.as_bytes());
        map.push(0);
    }
    // SAFETY: every pointer is valid for reads of its length for the duration of the call.
    let code = unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    };
    if code != 0 {
        log::warn!(
            "local reply {status} from on_request_headers: proxy_send_local_response returned status {code}"
        );
    }
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

const _: () = {
    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
    }}
};
