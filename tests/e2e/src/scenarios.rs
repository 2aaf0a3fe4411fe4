//! The examples' scenarios over HTTP, for any gateway that runs a plugin in front of an
//! upstream: Envoy with the proxy-wasm module (`tests/envoy/`), and the `wasi:http@0.3`
//! middleware build served by wasmtime-wasi-http in our host and by `wasmtime serve`
//! (`proxy-async-host`'s tests). One source of truth for what each example does, whatever
//! runs it.
//!
//! A [`Backend`] starts a [`Gateway`] for a [`Setup`]: the plugin, its configuration, the
//! upstream requests go on to, and the clusters its calls go to.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::StatusCode;

use crate::{
    Envoy, EnvoyConfig, RawPart, RawServer, Response, Server, Upstreams, json, plugin_wasm,
    raw_response,
};

/// A plugin running in front of an upstream, taking requests on a loopback port.
pub trait Gateway {
    /// The port on 127.0.0.1.
    fn port(&self) -> u16;
    /// What the gateway (and the plugin) logged so far.
    fn log(&self) -> String;
    /// Sends a request; panics (with the log) when it fails.
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        crate::send(self.port(), method, path, headers, body)
            .unwrap_or_else(|error| panic!("{method} {path} failed: {error}\n{}", self.log()))
    }
}

/// What a scenario runs: a plugin crate, its configuration, its upstream and clusters.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The plugin's crate, e.g. `auth-flow`.
    pub plugin: &'static str,
    /// Its configuration (JSON).
    pub config: String,
    /// Where requests go on to.
    pub upstream: SocketAddr,
    /// The clusters its calls go to, by name.
    pub clusters: Vec<(String, SocketAddr)>,
}

impl Setup {
    fn new(plugin: &'static str, upstream: SocketAddr, config: &str) -> Setup {
        Setup {
            plugin,
            config: config.to_string(),
            upstream,
            clusters: Vec::new(),
        }
    }

    fn cluster(mut self, name: &str, addr: SocketAddr) -> Setup {
        self.clusters.push((name.to_string(), addr));
        self
    }
}

/// What starts gateways: one per scenario.
pub trait Backend {
    /// Starts `setup`'s plugin and waits until it takes requests.
    fn start(&self, setup: &Setup) -> Box<dyn Gateway>;
}

impl Gateway for Envoy {
    fn port(&self) -> u16 {
        Envoy::port(self)
    }

    fn log(&self) -> String {
        Envoy::log(self)
    }
}

/// Envoy 1.40 with the plugin's proxy-wasm module.
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBackend;

impl Backend for EnvoyBackend {
    fn start(&self, setup: &Setup) -> Box<dyn Gateway> {
        let mut config = EnvoyConfig::new(plugin_wasm(setup.plugin), setup.upstream)
            .plugin_config(&setup.config);
        for (name, addr) in &setup.clusters {
            config = config.cluster(name, *addr);
        }
        Box::new(Envoy::start(&config))
    }
}

// hello

/// `hello` adds `hello: world` to every request.
pub fn hello_adds_a_header(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let gateway = backend.start(&Setup::new(
        "hello",
        upstreams.echo,
        r#"{"mockEnable": false}"#,
    ));
    let response = gateway.send("GET", "/hi", &[], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["headers"]["hello"], "world");
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/hi");
    assert_eq!(recorded[0].header("hello"), Some("world"));
}

/// `hello` with `mockEnable` answers itself, and the upstream never sees the request.
pub fn hello_mock_enable_replies_locally(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let gateway = backend.start(&Setup::new(
        "hello",
        upstreams.echo,
        r#"{"mockEnable": true}"#,
    ));
    let response = gateway.send("GET", "/", &[], b"");
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hello world");
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
}

// auth-flow

/// The auth-flow configuration of the demo.
const AUTH_FLOW_CONFIG: &str = r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#;

fn auth_flow_with_auth(
    backend: &dyn Backend,
    upstreams: &Upstreams,
    auth: SocketAddr,
) -> Box<dyn Gateway> {
    backend.start(
        &Setup::new("auth-flow", upstreams.echo, AUTH_FLOW_CONFIG)
            .cluster("auth", auth)
            .cluster("users", upstreams.users),
    )
}

fn auth_flow(backend: &dyn Backend, upstreams: &Upstreams) -> Box<dyn Gateway> {
    auth_flow_with_auth(backend, upstreams, upstreams.auth)
}

/// A good credential: both calls awaited, the identity set, forged identity headers gone.
pub fn auth_flow_success_sets_the_identity(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let gateway = auth_flow(backend, &upstreams);
    let response = gateway.send(
        "GET",
        "/orders",
        &[
            ("authorization", "Bearer demo-token"),
            ("x-user-admin", "1"),
            ("x-user-id", "forged"),
        ],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    let seen = &recorded[0];
    assert_eq!(seen.path, "/orders");
    assert_eq!(seen.header("x-user-id"), Some("u-1"));
    assert_eq!(seen.header("x-user-name"), Some("alice"));
    assert_eq!(seen.header("x-user-admin"), None, "{:?}", seen.headers);
    let ids = seen
        .headers
        .iter()
        .filter(|(name, _)| name == "x-user-id")
        .count();
    assert_eq!(ids, 1, "{:?}", seen.headers);
}

/// No credential: 401 with `www-authenticate`, nothing upstream.
pub fn auth_flow_missing_credential_is_401(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let gateway = auth_flow(backend, &upstreams);
    let response = gateway.send("GET", "/orders", &[], b"");
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
}

/// A credential the auth service refuses: 403, nothing upstream.
pub fn auth_flow_wrong_credential_is_403(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let gateway = auth_flow(backend, &upstreams);
    let response = gateway.send("GET", "/orders", &[("authorization", "Bearer wrong")], b"");
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
}

/// An auth service slower than the call's timeout: 503, and the plugin saw a timeout.
pub fn auth_flow_slow_auth_is_503(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let gateway = auth_flow(backend, &upstreams);
    let response = gateway.send("GET", "/orders", &[("authorization", "Bearer slow")], b"");
    // The auth service would let this credential in, after 2 s: the 503 is the timeout's.
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
    let log = gateway.log();
    assert!(
        log.contains("auth: no response from cluster `auth` within the call's timeout (500 ms)"),
        "no timeout of the auth call in the log:\n{log}"
    );
}

/// An auth service nothing listens for: 503, and the plugin saw it unreachable.
pub fn auth_flow_unreachable_auth_is_503(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    // A port nothing listens on: the connection to it is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let gateway = auth_flow_with_auth(backend, &upstreams, closed);
    assert_fails_closed(&*gateway, &upstreams);
    let log = gateway.log();
    assert!(
        log.contains("auth: cluster `auth` could not be reached (remote connection failure"),
        "no unreachable auth cluster in the log:\n{log}"
    );
}

/// Sends the demo credential and checks that the client got `503` and the upstream nothing.
fn assert_fails_closed(gateway: &dyn Gateway, upstreams: &Upstreams) {
    let response = gateway.send(
        "GET",
        "/orders",
        &[("authorization", "Bearer demo-token")],
        b"",
    );
    assert_eq!(response.status, 503, "{}", response.text());
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
}

/// An auth service that answers 500 (with a token, even): 503, nothing upstream.
pub fn auth_flow_auth_5xx_is_503(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let auth = Server::start(|_| async {
        json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({"token": "t-alice"}),
        )
    });
    let gateway = auth_flow_with_auth(backend, &upstreams, auth.addr());
    assert_fails_closed(&*gateway, &upstreams);
}

/// An auth service whose token JSON breaks off: 503, nothing upstream.
pub fn auth_flow_malformed_token_json_is_503(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let auth = Server::start(|_| async {
        let mut response = json(StatusCode::OK, &serde_json::json!({}));
        *response.body_mut() = r#"{"token": "t-alice""#.into();
        response
    });
    let gateway = auth_flow_with_auth(backend, &upstreams, auth.addr());
    assert_fails_closed(&*gateway, &upstreams);
}

/// No `auth` cluster at all: the gateway refuses the call, every time (the plugin goes on
/// serving), and the log names the cluster.
pub fn auth_flow_cluster_missing_is_503(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let gateway = backend.start(
        &Setup::new("auth-flow", upstreams.echo, AUTH_FLOW_CONFIG)
            .cluster("users", upstreams.users),
    );
    assert_fails_closed(&*gateway, &upstreams);
    assert_fails_closed(&*gateway, &upstreams);
    let log = gateway.log();
    assert!(
        log.contains("the proxy refused a call to cluster `auth`"),
        "no error naming the cluster in the log:\n{log}"
    );
}

/// A request body reaches the upstream after the two awaited calls.
pub fn auth_flow_post_body_reaches_the_upstream(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let gateway = auth_flow(backend, &upstreams);
    let body = br#"{"item": 42, "note": "after two awaited calls"}"#;
    let response = gateway.send(
        "POST",
        "/orders",
        &[
            ("authorization", "Bearer demo-token"),
            ("content-type", "application/json"),
        ],
        body,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].body, body);
    assert_eq!(recorded[0].header("x-user-id"), Some("u-1"));
    assert_eq!(
        response.json()["body"],
        String::from_utf8_lossy(body).as_ref()
    );
}

// fan-out

/// Counts the requests being answered at once, across the profile and flags services.
#[derive(Debug, Default)]
struct Overlap {
    in_flight: AtomicUsize,
    most: AtomicUsize,
}

impl Overlap {
    /// Answers after the other service has a request in flight too, or after 400 ms (within the
    /// plugin's 500 ms call timeout), so that sequential calls are seen as such and still
    /// succeed.
    async fn answer(&self, body: serde_json::Value) -> crate::HttpResponse {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let started = Instant::now();
        while self.in_flight.load(Ordering::SeqCst) < 2
            && started.elapsed() < Duration::from_millis(400)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Let the other one see this one before either leaves.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        json(StatusCode::OK, &body)
    }
}

/// `fan-out`'s two calls are in flight at once, and both answers reach the upstream.
pub fn fan_out_calls_overlap(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let overlap = Arc::new(Overlap::default());
    let profile_overlap = Arc::clone(&overlap);
    let profile = Server::start(move |request| {
        let overlap = Arc::clone(&profile_overlap);
        async move {
            assert_eq!(request.target, "/profile?user=u-7");
            overlap.answer(serde_json::json!({"tier": "gold"})).await
        }
    });
    let flags_overlap = Arc::clone(&overlap);
    let flags = Server::start(move |request| {
        let overlap = Arc::clone(&flags_overlap);
        async move {
            assert_eq!(request.target, "/flags?user=u-7");
            overlap
                .answer(serde_json::json!({"flags": ["beta", "dark"]}))
                .await
        }
    });
    let gateway = backend.start(
        &Setup::new(
            "fan-out",
            upstreams.echo,
            r#"{"profile": {"cluster": "profile"}, "flags": {"cluster": "flags"}}"#,
        )
        .cluster("profile", profile.addr())
        .cluster("flags", flags.addr()),
    );
    let response = gateway.send(
        "GET",
        "/home",
        &[("x-user-id", "u-7"), ("x-flags", "forged")],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        overlap.most.load(Ordering::SeqCst),
        2,
        "the profile and flags calls were not in flight at once"
    );
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].header("x-profile-tier"), Some("gold"));
    assert_eq!(recorded[0].header("x-flags"), Some("beta,dark"));
}

// retry

/// A check service that answers `503` to its first `failures` calls, then `200`.
fn flaky(failures: usize) -> (Server, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let server = Server::start(move |request| {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            assert_eq!(request.target, "/check");
            let status = if call < failures {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            json(status, &serde_json::json!({}))
        }
    });
    (server, calls)
}

fn retry(
    backend: &dyn Backend,
    upstreams: &Upstreams,
    check: &Server,
    config: &str,
) -> Box<dyn Gateway> {
    backend.start(&Setup::new("retry", upstreams.echo, config).cluster("check", check.addr()))
}

/// `retry` waits its backoff (never less) between attempts, then lets the request on.
pub fn retry_waits_then_goes_on(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let (check, calls) = flaky(2);
    let gateway = retry(
        backend,
        &upstreams,
        &check,
        r#"{"check": {"cluster": "check"}, "backoff_ms": 100}"#,
    );
    let started = Instant::now();
    let response = gateway.send("GET", "/orders", &[], b"");
    let took = started.elapsed();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].header("x-check-attempts"), Some("3"));
    // Waits of 100 and 200 ms: at least 300 ms, never early.
    assert!(
        took >= Duration::from_millis(300),
        "answered after {took:?}"
    );
}

/// `retry`'s deadline ends the retries with its 504, and later requests are served too.
pub fn retry_deadline_replies_504(backend: &dyn Backend) {
    let upstreams = Upstreams::start();
    let (check, calls) = flaky(usize::MAX);
    let gateway = retry(
        backend,
        &upstreams,
        &check,
        r#"{"check": {"cluster": "check"}, "attempts": 10, "backoff_ms": 100, "deadline_ms": 500}"#,
    );
    let started = Instant::now();
    let response = gateway.send("GET", "/orders", &[], b"");
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(response.text(), "check deadline exceeded");
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "it retried before the deadline"
    );
    assert!(upstreams.recorded().is_empty());
    assert!(
        took >= Duration::from_millis(500),
        "answered after {took:?}"
    );
    let again = gateway.send("GET", "/orders", &[], b"");
    assert_eq!(again.status, 504);
}

// stream-redact

/// `stream-redact`'s patterns.
pub const STREAM_REDACT_CONFIG: &str = r#"{"patterns": ["secret-token", "sk_live_"]}"#;

/// The upstream's pause between two writes: long enough that the gateway reads each chunk
/// apart and hands it to the plugin alone.
pub const GAP: Duration = Duration::from_millis(200);

/// The data chunks of `/split`: both secrets are cut, and the body ends in what could be the
/// start of one, which the plugin holds until the body ends.
const SPLIT: [&str; 4] = [
    "the token is secr",
    "et-to",
    "ken; the key is sk_li",
    "ve_abc; not a secr",
];

/// What the client gets for `/split`.
const SPLIT_REDACTED: &str = "the token is [REDACTED]; the key is [REDACTED]abc; not a secr";

/// One HTTP/1.1 chunk.
fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

/// A chunked `text/plain` response: the head with the first chunk, then each later chunk and
/// the last (empty) one after `gap`.
fn chunked(chunks: &[&str], gap: Duration) -> Vec<RawPart> {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
                transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let mut parts = Vec::new();
    let mut first = head.as_bytes().to_vec();
    if let Some(data) = chunks.first() {
        first.extend_from_slice(&chunk(data));
    }
    parts.push((Duration::ZERO, first));
    for data in chunks.iter().skip(1) {
        parts.push((gap, chunk(data)));
    }
    parts.push((gap, b"0\r\n\r\n".to_vec()));
    parts
}

/// `stream-redact`'s upstream: `/split` (above), `/bytewise` (a secret one byte per chunk),
/// `/image` (a secret in a PNG, with a `content-length`). Records each request's raw head.
pub fn stream_redact_upstream() -> (RawServer, Arc<Mutex<Vec<String>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    let server = RawServer::start(move |request| {
        let request = String::from_utf8_lossy(request).into_owned();
        let path = request.split(' ').nth(1).unwrap_or_default().to_string();
        if let Ok(mut seen) = seen.lock() {
            seen.push(request);
        }
        match path.as_str() {
            "/split" => chunked(&SPLIT, GAP),
            "/bytewise" => {
                let body = "<p>secret-token</p>";
                let bytes: Vec<String> = body.chars().map(String::from).collect();
                let bytes: Vec<&str> = bytes.iter().map(String::as_str).collect();
                chunked(&bytes, Duration::from_millis(20))
            }
            "/image" => raw_response(
                "HTTP/1.1 200 OK",
                &[("content-type", "image/png")],
                "PNG secret-token",
            ),
            _ => raw_response("HTTP/1.1 404 Not Found", &[], ""),
        }
    });
    (server, requests)
}

/// `stream-redact` on `upstream`.
pub fn stream_redact(backend: &dyn Backend, upstream: &RawServer) -> Box<dyn Gateway> {
    backend.start(&Setup::new(
        "stream-redact",
        upstream.addr(),
        STREAM_REDACT_CONFIG,
    ))
}

/// Secrets cut across chunks, or sent a byte at a time, are redacted; a body the plugin does
/// not scan keeps its framing and bytes; the upstream is asked for uncompressed bodies.
pub fn stream_redact_redacts_split_secrets(gateway: &dyn Gateway, requests: &Mutex<Vec<String>>) {
    let response = gateway.send("GET", "/split", &[("accept-encoding", "gzip")], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), SPLIT_REDACTED);
    assert_eq!(response.header("content-length"), None);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    let bytewise = gateway.send("GET", "/bytewise", &[], b"");
    assert_eq!(bytewise.status, 200, "{}", bytewise.text());
    assert_eq!(bytewise.text(), "<p>[REDACTED]</p>");
    let image = gateway.send("GET", "/image", &[], b"");
    assert_eq!(image.status, 200, "{}", image.text());
    assert_eq!(image.text(), "PNG secret-token");
    assert_eq!(image.header("content-length"), Some("16"));
    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    assert!(
        !requests[0].to_ascii_lowercase().contains("accept-encoding"),
        "{}",
        requests[0]
    );
}

/// The redacted body reaches the client while the upstream still sends: nothing buffers it.
pub fn stream_redact_streams_the_body(backend: &dyn Backend) {
    let (upstream, _) = stream_redact_upstream();
    let gateway = stream_redact(backend, &upstream);
    let mut client = TcpStream::connect(("127.0.0.1", gateway.port())).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    client
        .write_all(b"GET /split HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    // Every read, with when it came.
    let mut raw = Vec::new();
    let mut reads = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match client.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                raw.extend_from_slice(&buffer[..read]);
                reads.push((Instant::now(), raw.len()));
            }
            Err(error) => panic!("reading the response: {error}\n{}", gateway.log()),
        }
    }
    let ended = Instant::now();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let first = "the token is ";
    let first_end = text
        .find(first)
        .map(|at| at + first.len())
        .unwrap_or_else(|| panic!("no `{first}` in {text}"));
    let (first_came, _) = reads
        .iter()
        .find(|(_, len)| *len >= first_end)
        .copied()
        .unwrap();
    // The upstream sent three more chunks and the end, a gap apart, after the first one: the
    // client had the first chunk's text long before the end.
    assert!(
        ended.duration_since(first_came) >= GAP * 2,
        "the first chunk came {:?} before the end",
        ended.duration_since(first_came)
    );
    // The part of a secret held back between chunks never reached the client.
    for leak in ["secret-", "et-to", "sk_li", "ve_abc"] {
        assert!(!text.contains(leak), "`{leak}` reached the client: {text}");
    }
    assert!(text.contains("[REDACTED]"), "{text}");
}
