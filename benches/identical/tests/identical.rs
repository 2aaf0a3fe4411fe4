//! The benchmark baselines (`benches/baselines`, hand-written on the plain `proxy-wasm` crate)
//! behave exactly as the SDK examples they are measured against.
//!
//! Every scenario drives the SDK example's release `.wasm` and its baseline's `.wasm`, each in
//! its own emulated proxy, through the same traffic, and after every step compares everything
//! the proxy can observe: the action each callback returned, every HTTP call (cluster, headers
//! with `:method`/`:path`/`:authority`, body, timeout, token, context), which calls are still
//! pending, every stream's request and response headers and bodies as they go on, local
//! replies (status, headers, body, details), resumes and pauses of each direction, resets,
//! traps, and every log line at info level and above. Rejected configurations must be rejected
//! by both with the same error lines.
//!
//! Debug and trace lines are not compared: the SDK's runtime logs a few of its own at debug
//! level (a late call response it ignores), which the baselines have no reason to log.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed assertion is how it reports"
)]

use std::cell::RefCell;
use std::sync::OnceLock;
use std::time::Duration;

use proxy_async_host::proxy_async_emulator::{
    Action, Call, CallFailure, Direction, LogLevel, LogRecord, Pairs, PluginFailure, Proxy,
    ProxyConfig, ProxyState, SentReply,
};
use proxy_async_host::{Plugin, PluginModule, PluginStartError, start_emulated_module};

type WasmProxy = Proxy<Plugin<ProxyState>>;

// ---------------------------------------------------------------------------------------------
// The compiled plugins.

/// An SDK example and its baseline.
#[derive(Clone, Copy, Debug)]
enum Example {
    Hello,
    AuthFlow,
}

struct Modules {
    hello: PluginModule,
    hello_baseline: PluginModule,
    auth_flow: PluginModule,
    auth_flow_baseline: PluginModule,
}

/// The two examples and the two baselines (release, wasm32-wasip1, built by
/// `compiled-plugins`), compiled once per process.
fn modules() -> &'static Modules {
    static MODULES: OnceLock<Modules> = OnceLock::new();
    MODULES.get_or_init(|| {
        let load = |name: &str| {
            let path = compiled_plugins::module(name);
            let wasm = std::fs::read(&path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            PluginModule::new(&wasm).unwrap_or_else(|error| panic!("{name}.wasm: {error}"))
        };
        Modules {
            hello: load("hello"),
            hello_baseline: load("hello_baseline"),
            auth_flow: load("auth_flow"),
            auth_flow_baseline: load("auth_flow_baseline"),
        }
    })
}

impl Example {
    /// (SDK example, baseline).
    fn modules(self) -> (&'static PluginModule, &'static PluginModule) {
        let modules = modules();
        match self {
            Example::Hello => (&modules.hello, &modules.hello_baseline),
            Example::AuthFlow => (&modules.auth_flow, &modules.auth_flow_baseline),
        }
    }
}

fn proxy_config(config: &str, clusters: Option<&[&str]>) -> ProxyConfig {
    ProxyConfig {
        plugin_config: config.as_bytes().to_vec(),
        clusters: clusters.map(|names| names.iter().map(|name| name.to_string()).collect()),
        ..ProxyConfig::default()
    }
}

/// The error lines of a rejected configuration; `None` when it is accepted.
fn start_errors(
    module: &PluginModule,
    config: ProxyConfig,
) -> Result<WasmProxy, Option<Vec<String>>> {
    match start_emulated_module(module, config) {
        Ok(proxy) => Ok(proxy),
        Err(PluginStartError::Rejected(rejected)) => Err(Some(rejected.errors)),
        Err(error) => panic!("the plugin could not be loaded: {error}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The lockstep runner.

/// Everything the proxy observes about one stream.
#[derive(Debug, PartialEq)]
struct StreamView {
    id: u32,
    request_headers: Vec<(String, String)>,
    request_body: Vec<u8>,
    response_headers: Vec<(String, String)>,
    response_body: Vec<u8>,
    local_reply: Option<SentReply>,
    request_resumes: u32,
    response_resumes: u32,
    request_paused: bool,
    response_paused: bool,
    reset: bool,
}

/// Everything the proxy observes about the plugin.
#[derive(Debug, PartialEq)]
struct View {
    streams: Vec<StreamView>,
    all_calls: Vec<Call>,
    pending_calls: Vec<u32>,
    logs: Vec<LogRecord>,
    failure: Option<PluginFailure>,
}

fn view(proxy: &WasmProxy, streams: &[u32]) -> View {
    View {
        streams: streams
            .iter()
            .map(|&id| StreamView {
                id,
                request_headers: proxy.headers(id, Direction::Request),
                request_body: proxy.body(id, Direction::Request),
                response_headers: proxy.headers(id, Direction::Response),
                response_body: proxy.body(id, Direction::Response),
                local_reply: proxy.local_reply(id),
                request_resumes: proxy.resumes(id, Direction::Request),
                response_resumes: proxy.resumes(id, Direction::Response),
                request_paused: proxy.is_paused(id, Direction::Request),
                response_paused: proxy.is_paused(id, Direction::Response),
                reset: proxy.is_reset(id),
            })
            .collect(),
        all_calls: proxy.all_calls(),
        pending_calls: proxy.calls().iter().map(Call::token).collect(),
        logs: proxy
            .logs()
            .into_iter()
            .filter(|record| record.level >= LogLevel::Info)
            .collect(),
        failure: proxy.failure(),
    }
}

/// The SDK example and its baseline, driven through the same traffic. Every method does the
/// step on both, checks that both answered the same, and compares the full [`View`]s.
struct Twin {
    example: Example,
    sdk: WasmProxy,
    baseline: WasmProxy,
    streams: RefCell<Vec<u32>>,
}

impl Twin {
    fn start(example: Example, config: &str) -> Twin {
        Twin::start_with(example, config, None)
    }

    fn start_with(example: Example, config: &str, clusters: Option<&[&str]>) -> Twin {
        let (sdk, baseline) = example.modules();
        let sdk = start_errors(sdk, proxy_config(config, clusters))
            .unwrap_or_else(|errors| panic!("{example:?} (SDK) rejected {config}: {errors:?}"));
        let baseline =
            start_errors(baseline, proxy_config(config, clusters)).unwrap_or_else(|errors| {
                panic!("{example:?} (baseline) rejected {config}: {errors:?}")
            });
        let twin = Twin {
            example,
            sdk,
            baseline,
            streams: RefCell::new(Vec::new()),
        };
        twin.check("start");
        twin
    }

    fn check(&self, step: &str) {
        let streams = self.streams.borrow();
        let sdk = view(&self.sdk, &streams);
        let baseline = view(&self.baseline, &streams);
        assert_eq!(
            sdk, baseline,
            "{:?}: the baseline (right) differs from the SDK example (left) after {step}",
            self.example
        );
        assert!(
            sdk.failure.is_none(),
            "the plugin trapped: {:?}",
            sdk.failure
        );
    }

    fn open(&self) -> u32 {
        let id = self.sdk.open_stream();
        assert_eq!(self.baseline.open_stream(), id, "stream ids");
        self.streams.borrow_mut().push(id);
        self.check(&format!("opening stream {id}"));
        id
    }

    fn send_headers(
        &self,
        stream: u32,
        side: Direction,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Action {
        let step = format!("{side:?} headers {headers:?} on stream {stream}");
        let action = self.sdk.send_headers(stream, side, headers, end_of_stream);
        let baseline = self
            .baseline
            .send_headers(stream, side, headers, end_of_stream);
        assert_eq!(action, baseline, "{:?}: action of {step}", self.example);
        self.check(&step);
        action
    }

    fn request(&self, stream: u32, headers: &[(&str, &str)]) -> Action {
        self.send_headers(stream, Direction::Request, headers, true)
    }

    fn send_body(&self, stream: u32, side: Direction, chunk: &[u8], end_of_stream: bool) -> Action {
        let step = format!("{side:?} body {chunk:?} on stream {stream}");
        let action = self.sdk.send_body(stream, side, chunk, end_of_stream);
        let baseline = self.baseline.send_body(stream, side, chunk, end_of_stream);
        assert_eq!(action, baseline, "{:?}: action of {step}", self.example);
        self.check(&step);
        action
    }

    /// The pending calls (the same on both sides).
    fn calls(&self) -> Vec<Call> {
        let calls = self.sdk.calls();
        assert_eq!(
            calls,
            self.baseline.calls(),
            "{:?}: pending calls",
            self.example
        );
        calls
    }

    /// The one pending call, checked to go to `cluster`.
    fn only_call(&self, cluster: &str) -> Call {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "exactly one call in flight: {calls:?}");
        assert_eq!(calls[0].cluster(), cluster);
        calls[0].clone()
    }

    /// Answers `call` on both sides: `Some((headers, body))`, or `None` (timeout, reset).
    fn answer(&self, call: &Call, response: Option<(Pairs, Vec<u8>)>) {
        self.sdk.answer(call, response.clone());
        self.baseline.answer(call, response);
        self.check(&format!(
            "answering call {} to {}",
            call.token(),
            call.cluster()
        ));
    }

    /// Fails `call` on both sides as Envoy 1.40 reports `failure` to the plugin.
    fn fail(&self, call: &Call, failure: &CallFailure) {
        self.sdk.fail_call(call, failure);
        self.baseline.fail_call(call, failure);
        self.check(&format!(
            "failing call {} to {} ({failure:?})",
            call.token(),
            call.cluster()
        ));
    }

    fn respond(&self, call: &Call, status: u16, body: &str) {
        self.answer(
            call,
            Some((
                vec![
                    (":status".to_string(), status.to_string().into_bytes()),
                    ("content-type".to_string(), b"application/json".to_vec()),
                ],
                body.as_bytes().to_vec(),
            )),
        );
    }

    fn end(&self, stream: u32) {
        self.sdk.end_stream(stream);
        self.baseline.end_stream(stream);
        self.check(&format!("ending stream {stream}"));
    }

    // What the scenarios assert beyond equality (read from the SDK side: they are equal).

    fn reply(&self, stream: u32) -> Option<SentReply> {
        self.sdk.local_reply(stream)
    }

    fn header(&self, stream: u32, side: Direction, name: &str) -> Option<String> {
        self.sdk
            .headers(stream, side)
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    fn resumes(&self, stream: u32) -> u32 {
        self.sdk.resumes(stream, Direction::Request)
    }

    fn errors(&self) -> Vec<String> {
        self.sdk.logs_at(LogLevel::Error)
    }
}

/// Both reject `config`, with the same error lines; returns them.
fn rejected(example: Example, config: &str) -> String {
    let (sdk, baseline) = example.modules();
    let sdk = start_errors(sdk, proxy_config(config, None));
    let baseline = start_errors(baseline, proxy_config(config, None));
    match (sdk, baseline) {
        (Err(Some(sdk)), Err(Some(baseline))) => {
            assert_eq!(
                sdk, baseline,
                "{example:?}: rejections of {config:?} differ"
            );
            assert!(!sdk.is_empty(), "{example:?}: {config:?} rejected silently");
            sdk.join("\n")
        }
        (Ok(_), Ok(_)) => panic!("{example:?}: both accepted {config:?}"),
        (sdk, baseline) => panic!(
            "{example:?}: {config:?} accepted by one only (SDK rejected: {:?}, baseline rejected: {:?})",
            sdk.err(),
            baseline.err()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// hello.

const HELLO_REQUEST: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/"),
    (":authority", "example.com"),
];

#[test]
fn hello_adds_the_header_and_continues() {
    let twin = Twin::start(Example::Hello, r#"{"mockEnable": false}"#);
    let stream = twin.open();
    assert_eq!(twin.request(stream, HELLO_REQUEST), Action::Continue);
    assert_eq!(
        twin.header(stream, Direction::Request, "hello").as_deref(),
        Some("world")
    );
    assert_eq!((twin.resumes(stream), twin.reply(stream)), (0, None));
    assert_eq!(
        twin.send_headers(stream, Direction::Response, &[(":status", "204")], true),
        Action::Continue
    );
    twin.end(stream);
}

#[test]
fn hello_passes_a_body_through() {
    let twin = Twin::start(Example::Hello, "");
    let stream = twin.open();
    let post = [(":method", "POST"), (":path", "/upload")];
    assert_eq!(
        twin.send_headers(stream, Direction::Request, &post, false),
        Action::Continue
    );
    assert_eq!(
        twin.send_body(stream, Direction::Request, b"part one, ", false),
        Action::Continue
    );
    assert_eq!(
        twin.send_body(stream, Direction::Request, b"part two", true),
        Action::Continue
    );
    assert_eq!(
        twin.send_headers(stream, Direction::Response, &[(":status", "200")], false),
        Action::Continue
    );
    assert_eq!(
        twin.send_body(stream, Direction::Response, b"ok", true),
        Action::Continue
    );
    twin.end(stream);
}

#[test]
fn hello_mock_enable_replies_hello_world() {
    let twin = Twin::start(Example::Hello, r#"{"mockEnable": true}"#);
    for _ in 0..3 {
        let stream = twin.open();
        assert_eq!(twin.request(stream, HELLO_REQUEST), Action::Pause);
        let reply = twin.reply(stream).expect("a local reply");
        assert_eq!(
            (
                reply.status,
                reply.body_str().as_str(),
                reply.details.as_str()
            ),
            (200, "hello world", "")
        );
        assert!(reply.headers.is_empty(), "{reply:?}");
        assert_eq!(twin.resumes(stream), 0);
        twin.end(stream);
    }
}

#[test]
fn hello_without_mock_enable_is_mock_disabled() {
    for config in ["", "  \n", "{}", r#"{"_rules_": [], "other": 1}"#] {
        let twin = Twin::start(Example::Hello, config);
        let stream = twin.open();
        assert_eq!(
            twin.request(stream, HELLO_REQUEST),
            Action::Continue,
            "{config:?}"
        );
        assert_eq!(twin.reply(stream), None, "{config:?}");
        twin.end(stream);
    }
}

#[test]
fn hello_replaces_the_hello_headers_of_the_client() {
    for config in [r#"{"mockEnable": false}"#, r#"{"mockEnable": true}"#] {
        let twin = Twin::start(Example::Hello, config);
        let stream = twin.open();
        twin.request(
            stream,
            &[(":path", "/"), ("hello", "client"), ("Hello", "again")],
        );
        let hello: Vec<_> = twin
            .sdk
            .headers(stream, Direction::Request)
            .into_iter()
            .filter(|(name, _)| name == "hello")
            .collect();
        assert_eq!(hello, [("hello".to_string(), "world".to_string())]);
    }
}

#[test]
fn hello_bad_configurations_are_rejected_alike() {
    let message = rejected(Example::Hello, r#"{"mockEnable": "yes"}"#);
    assert!(message.contains("`mockEnable`"), "{message}");
    assert!(message.contains("expected a boolean"), "{message}");
    for config in [
        r#"{"mockEnable": 1}"#,
        r#"{"mockEnable": null}"#,
        "mockEnable: true",
        r#"{"mockEnable": true} x"#,
        r#"{"mockEnable": true"#,
        r#"["yes"]"#,
        "42",
    ] {
        rejected(Example::Hello, config);
    }
}

// ---------------------------------------------------------------------------------------------
// auth-flow.

const AUTH_CONFIG: &str = r#"{
    "auth":  {"cluster": "auth",  "authority": "auth.local",  "path": "/token", "timeout_ms": 500},
    "users": {"cluster": "users", "authority": "users.local", "path": "/me",    "timeout_ms": 250},
    "credential_header": "authorization"
}"#;

const TOKEN_OK: &str = r#"{"token": "tok-123"}"#;
const USER_OK: &str = r#"{"id": "u-42", "name": "Alice"}"#;

/// A request with a credential and identity headers a client must not be able to set.
const AUTH_REQUEST: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/orders"),
    (":authority", "shop.example"),
    ("authorization", "secret-credential"),
    ("x-user-id", "admin"),
    ("X-User-Admin", "true"),
    ("x-USER-name", "Mallory"),
    ("x-request-id", "r1"),
    ("x-user-id", "root"),
    ("x_user_id", "underscored"),
    ("X_User-Role", "admin"),
];

fn auth_flow() -> Twin {
    Twin::start(Example::AuthFlow, AUTH_CONFIG)
}

/// Sends [`AUTH_REQUEST`] on a new stream and answers the auth call.
fn after_auth(twin: &Twin, status: u16, body: &str) -> u32 {
    let stream = twin.open();
    assert_eq!(twin.request(stream, AUTH_REQUEST), Action::Pause);
    let auth = twin.only_call("auth");
    twin.respond(&auth, status, body);
    stream
}

/// Sends [`AUTH_REQUEST`], lets auth succeed and answers the users call.
fn after_users(twin: &Twin, status: u16, body: &str) -> u32 {
    let stream = after_auth(twin, 200, TOKEN_OK);
    let users = twin.only_call("users");
    twin.respond(&users, status, body);
    stream
}

fn assert_no_identity_headers(twin: &Twin, stream: u32) {
    let leaked: Vec<_> = twin
        .sdk
        .headers(stream, Direction::Request)
        .into_iter()
        .filter(|(name, _)| {
            name.to_ascii_lowercase()
                .replace('_', "-")
                .starts_with("x-user-")
        })
        .collect();
    assert!(leaked.is_empty(), "identity headers: {leaked:?}");
}

/// A local reply with `status` and `details`, no resume, no call left, no identity header.
fn assert_rejected(twin: &Twin, stream: u32, status: u16, details: &str) -> SentReply {
    let reply = twin.reply(stream).expect("a local reply");
    assert_eq!((reply.status, reply.details.as_str()), (status, details));
    assert_eq!(
        twin.resumes(stream),
        0,
        "a rejected request is never resumed"
    );
    assert!(twin.calls().is_empty(), "no call is left pending");
    assert_no_identity_headers(twin, stream);
    reply
}

/// Failed closed with 503, and the latest error line (this stream's, when the scenario drives
/// one stream at a time) contains every one of `words`.
fn assert_failed_closed(twin: &Twin, stream: u32, words: &[&str]) {
    let reply = assert_rejected(twin, stream, 503, "plugin_error");
    assert_eq!(reply.body_str(), "Service Unavailable");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    let errors = twin.errors();
    let last = errors.last().map_or("", String::as_str);
    assert!(
        words.iter().all(|word| last.contains(word)),
        "the last error line lacks one of {words:?}: {errors:?}"
    );
}

#[test]
fn auth_flow_success() {
    let twin = auth_flow();
    let stream = twin.open();
    assert_eq!(twin.request(stream, AUTH_REQUEST), Action::Pause);

    let auth = twin.only_call("auth");
    assert_eq!(
        (auth.method(), auth.path(), auth.authority()),
        ("POST", "/token", "auth.local")
    );
    assert_eq!(auth.timeout(), Duration::from_millis(500));
    assert_eq!(auth.header("content-type"), Some("application/json"));
    assert_eq!(auth.body_str(), r#"{"credential":"secret-credential"}"#);
    assert_no_identity_headers(&twin, stream);
    twin.respond(&auth, 200, TOKEN_OK);

    let users = twin.only_call("users");
    assert_eq!(
        (users.method(), users.path(), users.authority()),
        ("GET", "/me", "users.local")
    );
    assert_eq!(users.timeout(), Duration::from_millis(250));
    assert_eq!(users.header("authorization"), Some("Bearer tok-123"));
    assert!(users.body().is_empty());
    assert_eq!(twin.resumes(stream), 0);
    twin.respond(&users, 200, USER_OK);

    assert_eq!(twin.resumes(stream), 1);
    assert_eq!(twin.reply(stream), None);
    let identity: Vec<_> = twin
        .sdk
        .headers(stream, Direction::Request)
        .into_iter()
        .filter(|(name, _)| name.starts_with("x-user-"))
        .collect();
    assert_eq!(
        identity,
        [
            ("x-user-id".to_string(), "u-42".to_string()),
            ("x-user-name".to_string(), "Alice".to_string())
        ]
    );
    assert_eq!(
        twin.header(stream, Direction::Request, "x-request-id")
            .as_deref(),
        Some("r1")
    );
    assert!(twin.errors().is_empty());

    assert_eq!(
        twin.send_headers(stream, Direction::Response, &[(":status", "200")], false),
        Action::Continue
    );
    assert_eq!(
        twin.send_body(stream, Direction::Response, b"orders", true),
        Action::Continue
    );
    twin.end(stream);
    assert_eq!(twin.resumes(stream), 1);
}

#[test]
fn auth_flow_post_body_passes_through_after_the_calls() {
    let twin = auth_flow();
    let stream = twin.open();
    let post = [
        (":method", "POST"),
        (":path", "/orders"),
        ("content-length", "7"),
        ("authorization", "c"),
        ("X-User-Role", "admin"),
    ];
    assert_eq!(
        twin.send_headers(stream, Direction::Request, &post, false),
        Action::Pause
    );
    twin.respond(&twin.only_call("auth"), 200, TOKEN_OK);
    twin.respond(&twin.only_call("users"), 200, USER_OK);
    assert_eq!(twin.resumes(stream), 1);
    assert_eq!(
        twin.send_body(stream, Direction::Request, b"pay", false),
        Action::Continue
    );
    assert_eq!(
        twin.send_body(stream, Direction::Request, b"load", true),
        Action::Continue
    );
    assert_eq!(twin.sdk.body(stream, Direction::Request), b"payload");
    assert_eq!(
        twin.header(stream, Direction::Request, "x-user-id")
            .as_deref(),
        Some("u-42")
    );
    assert_eq!(twin.header(stream, Direction::Request, "x-user-role"), None);
    twin.end(stream);
}

#[test]
fn auth_flow_missing_or_empty_credential_is_401_without_a_call() {
    let twin = auth_flow();
    for headers in [
        &[(":path", "/"), ("x-user-id", "admin")][..],
        &[(":path", "/"), ("authorization", ""), ("X-User-Admin", "1")][..],
        &[(":path", "/"), ("authorization", "  \t ")][..],
        &[(":path", "/"), ("proxy-authorization", "c")][..],
    ] {
        let stream = twin.open();
        assert_eq!(twin.request(stream, headers), Action::Pause);
        let reply = assert_rejected(&twin, stream, 401, "auth_missing_credential");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert_eq!(reply.header("content-type"), Some("text/plain"));
        assert_eq!(reply.body_str(), "missing credential");
        twin.end(stream);
    }
    assert!(twin.sdk.all_calls().is_empty());
}

#[test]
fn auth_flow_a_repeated_credential_is_401_without_a_call() {
    let twin = auth_flow();
    for headers in [
        &[
            (":path", "/"),
            ("authorization", "a"),
            ("Authorization", "b"),
        ][..],
        &[
            (":path", "/"),
            ("authorization", "a"),
            ("authorization", "a"),
        ][..],
        &[
            (":path", "/"),
            ("AUTHORIZATION", ""),
            ("x-user-id", "1"),
            ("authorization", "a"),
        ][..],
    ] {
        let stream = twin.open();
        assert_eq!(twin.request(stream, headers), Action::Pause);
        let reply = assert_rejected(&twin, stream, 401, "auth_ambiguous_credential");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert_eq!(reply.body_str(), "more than one credential");
        twin.end(stream);
    }
    assert!(twin.sdk.all_calls().is_empty());
}

#[test]
fn auth_flow_trims_the_credential_and_sends_it_as_json() {
    for (credential, json) in [
        ("  c1 \t", r#"{"credential":"c1"}"#),
        // Unicode whitespace too (`str::trim`).
        ("\u{3000}c2 \u{a0}", r#"{"credential":"c2"}"#),
        // Quotes, backslashes and non-ASCII are escaped the same way.
        (r#"a"b\c"#, r#"{"credential":"a\"b\\c"}"#),
        ("d\u{e9}j\u{e0}", "{\"credential\":\"d\u{e9}j\u{e0}\"}"),
    ] {
        let twin = auth_flow();
        let stream = twin.open();
        twin.request(stream, &[(":path", "/"), ("authorization", credential)]);
        assert_eq!(twin.only_call("auth").body_str(), json);
        twin.end(stream);
    }
    // A credential of Unicode whitespace only is missing.
    let twin = auth_flow();
    let stream = twin.open();
    twin.request(stream, &[(":path", "/"), ("authorization", "\u{2003}")]);
    assert_rejected(&twin, stream, 401, "auth_missing_credential");
}

#[test]
fn auth_flow_auth_401_and_403_are_403() {
    for (status, body) in [(401, ""), (403, r#"{"error": "revoked"}"#)] {
        let twin = auth_flow();
        let stream = after_auth(&twin, status, body);
        let reply = assert_rejected(&twin, stream, 403, "auth_denied");
        assert_eq!(reply.body_str(), "forbidden");
        assert_eq!(
            twin.sdk.all_calls().len(),
            1,
            "no users call after a denial"
        );
        twin.end(stream);
    }
}

#[test]
fn auth_flow_users_401_and_403_are_403() {
    for status in [401, 403] {
        let twin = auth_flow();
        let stream = after_users(&twin, status, "");
        assert_rejected(&twin, stream, 403, "user_denied");
        twin.end(stream);
    }
}

#[test]
fn auth_flow_auth_failures_are_503() {
    let cases: &[(u16, &str, &[&str])] = &[
        (500, TOKEN_OK, &["auth", "500"]),
        (302, "", &["auth", "302"]),
        (204, TOKEN_OK, &["auth", "204"]),
        (404, "", &["auth", "404"]),
        (200, "{not json", &["auth", "not the expected JSON"]),
        (200, "", &["auth", "not the expected JSON"]),
        (200, r#"{"user": "x"}"#, &["auth", "missing field `token`"]),
        (200, r#"{"token": 42}"#, &["auth", "invalid type"]),
        (200, r#"{"token": ""}"#, &["auth", "empty token"]),
        (200, r#"{"token": "a b"}"#, &["auth", "not a bearer token"]),
        (
            200,
            r#"{"token": "t\u00e9"}"#,
            &["auth", "not a bearer token"],
        ),
    ];
    for &(status, body, words) in cases {
        let twin = auth_flow();
        let stream = after_auth(&twin, status, body);
        assert_failed_closed(&twin, stream, words);
        assert_eq!(twin.sdk.all_calls().len(), 1, "{body}: no users call");
        twin.end(stream);
    }
}

#[test]
fn auth_flow_users_failures_are_503() {
    let cases: &[(u16, &str, &[&str])] = &[
        (500, USER_OK, &["users", "500"]),
        (201, USER_OK, &["users", "201"]),
        (
            200,
            "<html>oops</html>",
            &["users", "not the expected JSON"],
        ),
        (200, r#"{"id": "u-42"}"#, &["users", "missing field `name`"]),
        (
            200,
            r#"{"id": "", "name": "Alice"}"#,
            &["users", "empty id"],
        ),
        (
            200,
            r#"{"id": "u-42\r\nx-user-admin: true", "name": "Alice"}"#,
            &["users", "header value"],
        ),
        (
            200,
            r#"{"id": "u-42", "name": "A\u0000"}"#,
            &["users", "header value"],
        ),
    ];
    for &(status, body, words) in cases {
        let twin = auth_flow();
        let stream = after_users(&twin, status, body);
        assert_failed_closed(&twin, stream, words);
        twin.end(stream);
    }
}

#[test]
fn auth_flow_a_response_without_status_is_503() {
    let twin = auth_flow();
    let stream = twin.open();
    twin.request(stream, AUTH_REQUEST);
    let headers = vec![("content-type".to_string(), b"application/json".to_vec())];
    twin.answer(
        &twin.only_call("auth"),
        Some((headers.clone(), TOKEN_OK.as_bytes().to_vec())),
    );
    assert_failed_closed(&twin, stream, &["auth", ":status"]);

    let stream = after_auth(&twin, 200, TOKEN_OK);
    let bad_status = vec![(":status".to_string(), b"two hundred".to_vec())];
    twin.answer(
        &twin.only_call("users"),
        Some((bad_status, USER_OK.as_bytes().to_vec())),
    );
    assert_failed_closed(&twin, stream, &["users", ":status"]);
}

#[test]
fn auth_flow_statuses_that_are_not_three_digits_are_503() {
    let twin = auth_flow();
    for status in ["+200", "0200", "2000", "65736", "099", "20", "", " 200"] {
        let stream = twin.open();
        twin.request(stream, AUTH_REQUEST);
        let headers = vec![
            (":status".to_string(), status.as_bytes().to_vec()),
            ("content-type".to_string(), b"application/json".to_vec()),
        ];
        twin.answer(
            &twin.only_call("auth"),
            Some((headers, TOKEN_OK.as_bytes().to_vec())),
        );
        assert_failed_closed(&twin, stream, &["auth", "no valid :status"]);
        twin.end(stream);
    }
}

#[test]
fn auth_flow_unexpected_statuses_are_503() {
    let twin = auth_flow();
    for status in [100, 101, 199, 206, 299, 304, 418, 429, 502, 504, 999] {
        let stream = after_auth(&twin, status, TOKEN_OK);
        assert_failed_closed(&twin, stream, &["auth", &format!("answered {status}")]);
        twin.end(stream);
        let stream = after_users(&twin, status, USER_OK);
        assert_failed_closed(&twin, stream, &["users", &format!("answered {status}")]);
        twin.end(stream);
    }
}

/// Answers `call` with `200`, these content types and `body`.
fn answer_200(twin: &Twin, call: &Call, content_types: &[&[u8]], body: &str) {
    let headers: Pairs = std::iter::once((":status".to_string(), b"200".to_vec()))
        .chain(
            content_types
                .iter()
                .map(|value| ("content-type".to_string(), value.to_vec())),
        )
        .collect();
    twin.answer(call, Some((headers, body.as_bytes().to_vec())));
}

#[test]
fn auth_flow_a_200_that_does_not_say_json_is_503() {
    let cases: &[(&[&[u8]], &str)] = &[
        (
            &[b"text/html"],
            r#"with content-type "text/html", expected"#,
        ),
        (&[b"application/jsonp"], "application/jsonp"),
        (&[b"application/problem+json"], "application/problem+json"),
        (&[b""], r#"content-type """#),
        (&[b"application/\xffjson"], "content-type"),
        (&[], "with no content-type"),
        (
            &[b"application/json", b"application/json"],
            "more than one content-type",
        ),
    ];
    let twin = auth_flow();
    for &(content_types, words) in cases {
        let stream = twin.open();
        twin.request(stream, AUTH_REQUEST);
        answer_200(&twin, &twin.only_call("auth"), content_types, TOKEN_OK);
        assert_failed_closed(&twin, stream, &["auth", "answered 200 to /token", words]);
        twin.end(stream);

        let stream = after_auth(&twin, 200, TOKEN_OK);
        answer_200(&twin, &twin.only_call("users"), content_types, USER_OK);
        assert_failed_closed(&twin, stream, &["users", "answered 200 to /me", words]);
        twin.end(stream);
    }
}

#[test]
fn auth_flow_json_content_types_with_parameters_or_in_another_case_pass() {
    let twin = auth_flow();
    for content_type in [
        &b"application/json; charset=utf-8"[..],
        b"Application/JSON",
        b" APPLICATION/json;charset=UTF-8 ",
    ] {
        let stream = twin.open();
        twin.request(stream, AUTH_REQUEST);
        answer_200(&twin, &twin.only_call("auth"), &[content_type], TOKEN_OK);
        answer_200(&twin, &twin.only_call("users"), &[content_type], USER_OK);
        assert_eq!(twin.resumes(stream), 1);
        assert_eq!(
            twin.header(stream, Direction::Request, "x-user-id")
                .as_deref(),
            Some("u-42")
        );
        twin.end(stream);
    }
    assert!(twin.errors().is_empty());
}

#[test]
fn auth_flow_timeouts_are_503() {
    let twin = auth_flow();
    let stream = twin.open();
    twin.request(stream, AUTH_REQUEST);
    twin.fail(&twin.only_call("auth"), &CallFailure::Timeout);
    assert_failed_closed(&twin, stream, &["auth", "no response", "timeout (500 ms)"]);
    assert_eq!(twin.sdk.all_calls().len(), 1);

    let stream = after_auth(&twin, 200, TOKEN_OK);
    twin.fail(&twin.only_call("users"), &CallFailure::Timeout);
    assert_failed_closed(&twin, stream, &["users", "no response", "timeout (250 ms)"]);
}

#[test]
fn auth_flow_unreachable_services_and_broken_answers_are_503() {
    let cases = [
        (
            CallFailure::ConnectionRefused,
            "could not be reached (remote connection failure",
        ),
        (
            CallFailure::ConnectionClosed,
            "could not be reached (connection termination)",
        ),
        (
            CallFailure::ResetMidResponse,
            "broke off before it was whole",
        ),
    ];
    for (failure, words) in &cases {
        let twin = auth_flow();
        let stream = twin.open();
        twin.request(stream, AUTH_REQUEST);
        twin.fail(&twin.only_call("auth"), failure);
        assert_failed_closed(&twin, stream, &["auth: ", words]);

        let stream = after_auth(&twin, 200, TOKEN_OK);
        twin.fail(&twin.only_call("users"), failure);
        assert_failed_closed(&twin, stream, &["users: ", words]);
    }
}

#[test]
fn auth_flow_an_upstreams_own_5xx_is_not_taken_for_envoys() {
    // The same status and body as Envoy's timeout reply, but sent by the upstream: Envoy adds
    // x-envoy-upstream-service-time, and the plugin reports an unexpected status.
    let twin = auth_flow();
    let stream = twin.open();
    twin.request(stream, AUTH_REQUEST);
    let headers: Pairs = vec![
        (":status".to_string(), b"504".to_vec()),
        ("content-type".to_string(), b"text/plain".to_vec()),
        ("x-envoy-upstream-service-time".to_string(), b"3".to_vec()),
    ];
    twin.answer(
        &twin.only_call("auth"),
        Some((headers, b"upstream request timeout".to_vec())),
    );
    assert_failed_closed(&twin, stream, &["auth: ", "answered 504 to /token"]);
}

#[test]
fn auth_flow_unknown_clusters_are_503() {
    // The auth call is refused at once: the reply is sent inside the request callback.
    let twin = Twin::start_with(Example::AuthFlow, AUTH_CONFIG, Some(&["users"]));
    let stream = twin.open();
    assert_eq!(twin.request(stream, AUTH_REQUEST), Action::Pause);
    assert!(twin.sdk.all_calls().is_empty());
    assert_failed_closed(
        &twin,
        stream,
        &["cluster `auth`", "refused", "BAD_ARGUMENT"],
    );
    twin.end(stream);

    // The users call is refused inside the auth call's response callback.
    let twin = Twin::start_with(Example::AuthFlow, AUTH_CONFIG, Some(&["auth"]));
    let stream = after_auth(&twin, 200, TOKEN_OK);
    assert_failed_closed(&twin, stream, &["cluster `users`", "refused"]);
    twin.end(stream);
}

#[test]
fn auth_flow_streams_that_end_mid_call_ignore_the_late_answer() {
    let twin = auth_flow();

    // The client leaves while the auth call is out; its answer comes later.
    let gone = twin.open();
    twin.request(gone, AUTH_REQUEST);
    let auth = twin.only_call("auth");
    twin.end(gone);
    twin.respond(&auth, 200, TOKEN_OK);
    assert_eq!(
        twin.sdk.all_calls().len(),
        1,
        "no users call for a gone stream"
    );
    assert_eq!((twin.resumes(gone), twin.reply(gone)), (0, None));

    // Again, during the users call, with a late failure.
    let gone = after_auth(&twin, 200, TOKEN_OK);
    let users = twin.only_call("users");
    twin.end(gone);
    twin.answer(&users, None);
    assert_eq!((twin.resumes(gone), twin.reply(gone)), (0, None));
    assert!(twin.errors().is_empty());

    // And once more with a late denial, then a stream served normally.
    let gone = twin.open();
    twin.request(gone, AUTH_REQUEST);
    let auth = twin.only_call("auth");
    twin.end(gone);
    twin.respond(&auth, 401, "");
    assert_eq!(twin.reply(gone), None);

    let next = after_users(&twin, 200, USER_OK);
    assert_eq!(twin.resumes(next), 1);
}

#[test]
fn auth_flow_interleaved_streams_stay_apart() {
    let twin = auth_flow();
    let first = twin.open();
    let second = twin.open();
    twin.request(first, &[(":path", "/a"), ("authorization", "one")]);
    twin.request(second, &[(":path", "/b"), ("authorization", "two")]);
    let calls = twin.calls();
    assert_eq!(calls.len(), 2);
    // Answered in the opposite order.
    twin.respond(&calls[1], 200, r#"{"token": "t2"}"#);
    twin.respond(&calls[0], 403, "");
    let users = twin.only_call("users");
    assert_eq!(users.header("authorization"), Some("Bearer t2"));
    twin.respond(&users, 200, r#"{"id": "u2", "name": "Bob"}"#);
    assert_eq!(twin.reply(first).map(|reply| reply.status), Some(403));
    assert_eq!(twin.resumes(second), 1);
    assert_eq!(
        twin.header(second, Direction::Request, "x-user-name")
            .as_deref(),
        Some("Bob")
    );
    twin.end(first);
    twin.end(second);
}

#[test]
fn auth_flow_configuration_defaults_and_credential_header() {
    let twin = Twin::start(
        Example::AuthFlow,
        r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "X-Api-Key", "_plugin_id_": "x"}"#,
    );
    let stream = twin.open();
    twin.request(stream, &[(":path", "/"), ("authorization", "c")]);
    assert_rejected(&twin, stream, 401, "auth_missing_credential");

    let stream = twin.open();
    twin.request(stream, &[(":path", "/"), ("x-api-key", "key-1")]);
    let auth = twin.only_call("a");
    assert_eq!((auth.path(), auth.authority()), ("/token", "a"));
    assert_eq!(auth.timeout(), Duration::from_millis(500));
    assert_eq!(auth.body_str(), r#"{"credential":"key-1"}"#);
    twin.respond(&auth, 200, TOKEN_OK);
    let users = twin.only_call("u");
    assert_eq!((users.path(), users.authority()), ("/me", "u"));
    assert_eq!(users.timeout(), Duration::from_millis(500));
    twin.respond(&users, 200, USER_OK);
    assert_eq!(twin.resumes(stream), 1);
}

#[test]
fn auth_flow_bad_configurations_are_rejected_alike() {
    let cases = [
        ("", "`auth.cluster`"),
        ("{}", "`auth.cluster`"),
        (r#"{"users": {"cluster": "u"}}"#, "`auth.cluster`"),
        (r#"{"auth": {"cluster": "a"}}"#, "`users.cluster`"),
        (
            r#"{"auth": {"cluster": "  "}, "users": {"cluster": "u"}}"#,
            "`auth.cluster`",
        ),
        (
            r#"{"auth": {"cluster": "a", "timeout_ms": 0}, "users": {"cluster": "u"}}"#,
            "`auth.timeout_ms`",
        ),
        (
            r#"{"auth": {"cluster": "a", "timeout_ms": -5}, "users": {"cluster": "u"}}"#,
            "`auth.timeout_ms`",
        ),
        (
            r#"{"auth": {"cluster": "a", "timeout_ms": "soon"}, "users": {"cluster": "u"}}"#,
            "`auth.timeout_ms`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u", "authority": ""}}"#,
            "`users.authority`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u", "path": "me"}}"#,
            "`users.path`",
        ),
        (
            r#"{"auth": {"cluster": "a", "path": ""}, "users": {"cluster": "u"}}"#,
            "`auth.path`",
        ),
        (
            r#"{"auth": {"cluster": "a", "timeout": 5}, "users": {"cluster": "u"}}"#,
            "unknown field `timeout`",
        ),
        (r#"{"auth": "a", "users": {"cluster": "u"}}"#, "`auth`"),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "x-user-key"}"#,
            "`credential_header`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "X-User-Key"}"#,
            "`credential_header`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "x_user-key"}"#,
            "`credential_header`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": ""}"#,
            "`credential_header`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "api key"}"#,
            "`credential_header`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": 7}"#,
            "`credential_header`",
        ),
        ("auth: {cluster: a}", "not valid JSON"),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}} {}"#,
            "text after the JSON value",
        ),
        ("[]", "`auth.cluster`"),
        ("true", "invalid type"),
    ];
    for (config, expected) in cases {
        let message = rejected(Example::AuthFlow, config);
        assert!(message.contains(expected), "{config}: {message}");
    }
}

#[test]
fn the_runner_sees_a_difference() {
    // The comparison itself: two different plugins must not look the same.
    let hello = Twin {
        example: Example::Hello,
        sdk: start_errors(
            &modules().hello,
            proxy_config(r#"{"mockEnable": true}"#, None),
        )
        .unwrap_or_else(|_| panic!("accepted")),
        baseline: start_errors(&modules().hello_baseline, proxy_config("", None))
            .unwrap_or_else(|_| panic!("accepted")),
        streams: RefCell::new(Vec::new()),
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let stream = hello.open();
        hello.request(stream, HELLO_REQUEST);
    }));
    assert!(
        outcome.is_err(),
        "a mock reply and a forwarded request compared equal"
    );
}
