//! Serve mode end to end: the compiled auth-flow (and hello) example on a real local server,
//! in front of upstreams started by each test on free loopback ports, driven by real HTTP
//! requests.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod support {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use proxy_async_host::PluginModule;
    use proxy_async_host::component::ComponentModule;
    use proxy_async_host::serve::{PluginCode, ServeConfig, Server};
    use tokio::net::{TcpListener, TcpStream};

    /// A request one of the test's services received.
    #[derive(Debug, Clone)]
    pub(crate) struct Seen {
        pub(crate) method: String,
        pub(crate) path: String,
        pub(crate) headers: BTreeMap<String, String>,
        pub(crate) body: String,
    }

    impl Seen {
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).map(String::as_str)
        }
    }

    /// A response the test's client got.
    #[derive(Debug)]
    pub(crate) struct Got {
        pub(crate) status: StatusCode,
        pub(crate) headers: BTreeMap<String, String>,
        pub(crate) body: String,
    }

    /// The component build of the example `name`, compiled once per test process.
    pub(crate) fn component(name: &str) -> ComponentModule {
        static MODULES: OnceLock<Mutex<BTreeMap<String, ComponentModule>>> = OnceLock::new();
        let modules = MODULES.get_or_init(Mutex::default);
        let mut modules = modules.lock().unwrap();
        modules
            .entry(name.to_string())
            .or_insert_with(|| ComponentModule::new(&crate::common::component_wasm(name)).unwrap())
            .clone()
    }

    pub(crate) fn module(name: &str) -> PluginModule {
        static MODULES: OnceLock<Mutex<BTreeMap<String, PluginModule>>> = OnceLock::new();
        let modules = MODULES.get_or_init(Mutex::default);
        let mut modules = modules.lock().unwrap();
        modules
            .entry(name.to_string())
            .or_insert_with(|| PluginModule::new(&crate::common::plugin_wasm(name)).unwrap())
            .clone()
    }

    type Handler = Arc<dyn Fn(Seen) -> (StatusCode, String, Duration) + Send + Sync>;

    /// A service on a free loopback port, on the test's runtime: records every request, and
    /// answers `handler`'s status and body after its delay. `active`/`peak`: requests being
    /// answered now, and at most.
    pub(crate) struct Service {
        pub(crate) addr: SocketAddr,
        pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
        pub(crate) peak: Arc<AtomicUsize>,
    }

    impl Service {
        pub(crate) async fn start(
            handler: impl Fn(Seen) -> (StatusCode, String, Duration) + Send + Sync + 'static,
        ) -> Service {
            let handler: Handler = Arc::new(handler);
            let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let active = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let (seen_, peak_) = (Arc::clone(&seen), Arc::clone(&peak));
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let (handler, seen, active, peak) = (
                        Arc::clone(&handler),
                        Arc::clone(&seen_),
                        Arc::clone(&active),
                        Arc::clone(&peak_),
                    );
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            let (handler, seen, active, peak) = (
                                Arc::clone(&handler),
                                Arc::clone(&seen),
                                Arc::clone(&active),
                                Arc::clone(&peak),
                            );
                            async move {
                                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                let request = Seen {
                                    method: parts.method.to_string(),
                                    path: parts.uri.to_string(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(name, value)| {
                                            (name.to_string(), value.to_str().unwrap().to_string())
                                        })
                                        .collect(),
                                    body: String::from_utf8_lossy(&body).into_owned(),
                                };
                                seen.lock().unwrap().push(request.clone());
                                let (status, body, delay) = handler(request);
                                tokio::time::sleep(delay).await;
                                active.fetch_sub(1, Ordering::SeqCst);
                                // JSON answers say so: `auth-flow` refuses a 200 that is
                                // not `application/json`.
                                let json = body.starts_with('{');
                                let mut response = Response::new(Full::new(Bytes::from(body)));
                                *response.status_mut() = status;
                                if json {
                                    response.headers_mut().insert(
                                        hyper::header::CONTENT_TYPE,
                                        hyper::header::HeaderValue::from_static("application/json"),
                                    );
                                }
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Service { addr, seen, peak }
        }

        pub(crate) fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// The demo auth service: `Bearer demo-token` → `t-alice`; `Bearer slow` → the same after
    /// 2 s; anything else 401. Each answer takes `delay`.
    pub(crate) async fn auth_service(delay: Duration) -> Service {
        Service::start(move |request| {
            let credential = serde_json::from_str::<serde_json::Value>(&request.body)
                .ok()
                .and_then(|body| body.get("credential")?.as_str().map(str::to_string));
            let token = r#"{"token": "t-alice"}"#.to_string();
            match credential.as_deref() {
                _ if request.method != "POST" || request.path != "/token" => {
                    (StatusCode::NOT_FOUND, String::new(), delay)
                }
                Some("Bearer demo-token") => (StatusCode::OK, token, delay),
                Some("Bearer slow") => (StatusCode::OK, token, Duration::from_secs(2)),
                _ => (StatusCode::UNAUTHORIZED, String::new(), delay),
            }
        })
        .await
    }

    /// The demo users service: `Bearer t-alice` → u-1, alice; anything else 403.
    pub(crate) async fn users_service() -> Service {
        Service::start(|request| {
            if request.header("authorization") == Some("Bearer t-alice") {
                (
                    StatusCode::OK,
                    r#"{"id": "u-1", "name": "alice"}"#.to_string(),
                    Duration::ZERO,
                )
            } else {
                (StatusCode::FORBIDDEN, String::new(), Duration::ZERO)
            }
        })
        .await
    }

    /// The upstream: answers 200 `upstream saw <path>`.
    pub(crate) async fn upstream() -> Service {
        Service::start(|request| {
            (
                StatusCode::OK,
                format!("upstream saw {}", request.path),
                Duration::ZERO,
            )
        })
        .await
    }

    /// The auth-flow plugin served in front of the services, and what it logged.
    pub(crate) struct AuthDemo {
        pub(crate) server: Server,
        pub(crate) auth: Service,
        pub(crate) users: Service,
        pub(crate) upstream: Service,
        pub(crate) logs: Arc<Mutex<Vec<String>>>,
    }

    impl AuthDemo {
        pub(crate) async fn start(auth_delay: Duration) -> AuthDemo {
            AuthDemo::start_with(module("auth_flow").into(), auth_delay).await
        }

        /// The same demo with the plugin's component build.
        pub(crate) async fn start_component(auth_delay: Duration) -> AuthDemo {
            AuthDemo::start_with(component("auth_flow").into(), auth_delay).await
        }

        async fn start_with(code: PluginCode, auth_delay: Duration) -> AuthDemo {
            let auth = auth_service(auth_delay).await;
            let users = users_service().await;
            let upstream = upstream().await;
            let config = ServeConfig::new(code, upstream.addr.to_string())
                .plugin_config(r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#)
                .cluster("auth", auth.addr.to_string())
                .cluster("users", users.addr.to_string());
            let (server, logs) = start(config);
            AuthDemo {
                server,
                auth,
                users,
                upstream,
                logs,
            }
        }

        pub(crate) fn logs(&self) -> Vec<String> {
            self.logs.lock().unwrap().clone()
        }
    }

    /// Starts a server on a free port with its logs captured.
    pub(crate) fn start(config: ServeConfig) -> (Server, Arc<Mutex<Vec<String>>>) {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let config = config.log_sink(move |line| {
            eprintln!("{line}");
            sink.lock().unwrap().push(line.to_string());
        });
        let server = Server::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        (server, logs)
    }

    /// Sends one request on a new connection.
    pub(crate) async fn send(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Got {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Got {
            status: parts.status,
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

use std::time::{Duration, Instant};

use hyper::StatusCode;
use proxy_async_host::serve::ServeConfig;
use support::{AuthDemo, send};

const GOOD: (&str, &str) = ("authorization", "Bearer demo-token");

#[tokio::test]
async fn a_known_credential_reaches_the_upstream_with_the_user_headers() {
    let demo = AuthDemo::start(Duration::ZERO).await;
    let got = send(
        demo.server.addr(),
        "GET",
        "/orders?page=2",
        &[GOOD, ("x-user-admin", "1"), ("x-user-id", "forged")],
        "",
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert_eq!(got.body, "upstream saw /orders?page=2");

    let seen = demo.upstream.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/orders?page=2")
    );
    assert_eq!(request.header("x-user-id"), Some("u-1"));
    assert_eq!(request.header("x-user-name"), Some("alice"));
    assert_eq!(
        request.header("x-user-admin"),
        None,
        "client-sent x-user-* is stripped"
    );
    assert_eq!(
        request.header("host"),
        Some(demo.server.addr().to_string().as_str())
    );

    // The calls the plugin made, for real.
    let auth = demo.auth.seen();
    assert_eq!(auth.len(), 1);
    assert_eq!(
        (auth[0].method.as_str(), auth[0].path.as_str()),
        ("POST", "/token")
    );
    assert_eq!(auth[0].header("host"), Some("auth"));
    assert_eq!(auth[0].body, r#"{"credential":"Bearer demo-token"}"#);
    let users = demo.users.seen();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].header("authorization"), Some("Bearer t-alice"));
    demo.server.shutdown();
}

#[tokio::test]
async fn a_missing_credential_gets_401_and_no_call() {
    let demo = AuthDemo::start(Duration::ZERO).await;
    let got = send(demo.server.addr(), "GET", "/orders", &[], "").await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        got.headers.get("www-authenticate").map(String::as_str),
        Some("Bearer")
    );
    assert_eq!(got.body, "missing credential");
    assert!(demo.auth.seen().is_empty());
    assert!(demo.upstream.seen().is_empty());
    demo.server.shutdown();
}

#[tokio::test]
async fn a_wrong_credential_gets_403_and_never_reaches_the_upstream() {
    let demo = AuthDemo::start(Duration::ZERO).await;
    let got = send(
        demo.server.addr(),
        "GET",
        "/orders",
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(got.status, StatusCode::FORBIDDEN);
    assert_eq!(got.body, "forbidden");
    assert_eq!(demo.auth.seen().len(), 1);
    assert!(demo.users.seen().is_empty());
    assert!(demo.upstream.seen().is_empty());
    demo.server.shutdown();
}

#[tokio::test]
async fn a_slow_auth_service_times_out_into_503() {
    let demo = AuthDemo::start(Duration::ZERO).await;
    let started = Instant::now();
    let got = send(
        demo.server.addr(),
        "GET",
        "/orders",
        &[("authorization", "Bearer slow")],
        "",
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(1500),
        "the plugin's 500 ms timeout, not the service's 2 s: {elapsed:?}"
    );
    assert!(demo.upstream.seen().is_empty());
    let logs = demo.logs();
    assert!(
        logs.iter()
            .any(|line| line.starts_with("[serve] call POST /token to cluster `auth` failed")),
        "{logs:?}"
    );
    // As in Envoy (tests/e2e/tests/envoy/auth_flow.rs): its 504 reaches the plugin as the
    // timeout it is.
    assert!(
        logs.iter().any(|line| line.starts_with("[plugin error]")
            && line.contains(
                "auth: no response from cluster `auth` within the call's timeout (500 ms)"
            )),
        "{logs:?}"
    );
    demo.server.shutdown();
}

#[tokio::test]
async fn an_unreachable_auth_cluster_is_envoys_503_to_the_plugin() {
    let upstream = support::upstream().await;
    // A port nothing listens on: the connection is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap();
    let config = ServeConfig::new(support::module("auth_flow"), upstream.addr.to_string())
        .plugin_config(r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#)
        .cluster("auth", closed.to_string())
        .cluster("users", "127.0.0.1:9");
    let (server, logs) = support::start(config);
    let started = Instant::now();
    let got = send(server.addr(), "GET", "/", &[GOOD], "").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_millis(450),
        "refused at once, not after the call's timeout"
    );
    assert!(upstream.seen().is_empty());
    let logs = logs.lock().unwrap().clone();
    // The same line as in Envoy (tests/e2e/tests/envoy/auth_flow.rs).
    assert!(
        logs.iter().any(|line| line
            .contains("auth: cluster `auth` could not be reached (remote connection failure")),
        "{logs:?}"
    );
    server.shutdown();
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_stream_in_one_vm() {
    // Each token exchange takes 300 ms, so both requests are held by the plugin at once.
    let demo = AuthDemo::start(Duration::from_millis(300)).await;
    let addr = demo.server.addr();
    let started = Instant::now();
    let (first, second) = tokio::join!(
        send(addr, "GET", "/first", &[GOOD], ""),
        send(addr, "POST", "/second", &[GOOD], "two"),
    );
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert_eq!(first.body, "upstream saw /first");
    assert_eq!(second.body, "upstream saw /second");
    assert_eq!(demo.auth.peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    let mut seen = demo.upstream.seen();
    seen.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|request| request.header("x-user-id") == Some("u-1"))
    );
    demo.server.shutdown();
}

#[tokio::test]
async fn the_request_body_reaches_the_upstream_after_the_awaits() {
    let demo = AuthDemo::start(Duration::from_millis(50)).await;
    let body = r#"{"item": 42}"#;
    let got = send(
        demo.server.addr(),
        "POST",
        "/orders",
        &[GOOD, ("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    let seen = demo.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, body);
    assert_eq!(seen[0].header("content-length"), Some("12"));
    assert_eq!(seen[0].header("x-user-id"), Some("u-1"));
    demo.server.shutdown();
}

#[tokio::test]
async fn a_cluster_without_an_address_is_refused_at_dispatch() {
    let upstream = support::upstream().await;
    let config = ServeConfig::new(support::module("auth_flow"), upstream.addr.to_string())
        .plugin_config(r#"{"auth": {"cluster": "nowhere"}, "users": {"cluster": "users"}}"#)
        .cluster("users", "127.0.0.1:9");
    let (server, logs) = support::start(config);
    let got = send(server.addr(), "GET", "/", &[GOOD], "").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(upstream.seen().is_empty());
    let logs = logs.lock().unwrap().clone();
    assert!(
        logs.iter()
            .any(|line| line.contains("refused") && line.contains("nowhere")),
        "{logs:?}"
    );
    server.shutdown();
}

#[tokio::test]
async fn an_upstream_that_is_down_gets_502() {
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap();
    drop(closed);
    let config = ServeConfig::new(support::module("hello"), down.to_string())
        .plugin_config(r#"{"mockEnable": false}"#);
    let (server, logs) = support::start(config);
    let got = send(server.addr(), "GET", "/", &[], "").await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{got:?}");
    let logs = logs.lock().unwrap().clone();
    assert!(
        logs.iter().any(|line| line.starts_with("[serve] upstream")),
        "{logs:?}"
    );
    server.shutdown();
}

#[tokio::test]
async fn hello_adds_its_header_or_replies_itself() {
    let upstream = support::upstream().await;
    let config = ServeConfig::new(support::module("hello"), upstream.addr.to_string())
        .plugin_config(r#"{"mockEnable": false}"#);
    let (server, _) = support::start(config.clone());
    let got = send(server.addr(), "GET", "/hi", &[], "").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(upstream.seen()[0].header("hello"), Some("world"));
    server.shutdown();

    let (server, _) = support::start(config.plugin_config(r#"{"mockEnable": true}"#));
    let got = send(server.addr(), "GET", "/hi", &[], "").await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (StatusCode::OK, "hello world")
    );
    assert_eq!(
        upstream.seen().len(),
        1,
        "the local reply never reaches the upstream"
    );
    server.shutdown();
}

#[test]
fn a_rejected_configuration_fails_the_start() {
    let config = ServeConfig::new(support::module("auth_flow"), "127.0.0.1:9")
        .plugin_config(r#"{"auth": {"cluster": ""}}"#);
    let error = proxy_async_host::serve::Server::start(
        config.log_sink(|_| {}),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .unwrap_err();
    assert!(error.to_string().contains("auth.cluster"), "{error}");
}

/// A hand-written module: memory, a bump allocator, a configure that accepts anything, and
/// `on_request_headers`.
fn wat_plugin(imports: &str, on_request_headers: &str) -> proxy_async_host::PluginModule {
    let text = format!(
        r#"(module
             {imports}
             (memory (export "memory") 1)
             (data (i32.const 100) "boom")
             (global $heap (mut i32) (i32.const 4096))
             (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
               (local $ptr i32)
               (local.set $ptr (global.get $heap))
               (global.set $heap (i32.add (global.get $heap) (local.get $size)))
               (local.get $ptr))
             (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
               {on_request_headers}))"#
    );
    proxy_async_host::PluginModule::new(&wat::parse_str(text).unwrap()).unwrap()
}

#[tokio::test]
async fn a_trap_answers_503_and_logs_the_panic_message() {
    let upstream = support::upstream().await;
    let module = wat_plugin(
        r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))"#,
        "(drop (call $log (i32.const 5) (i32.const 100) (i32.const 4))) unreachable",
    );
    let (server, logs) = support::start(ServeConfig::new(module, upstream.addr.to_string()));
    for _ in 0..2 {
        // Like Envoy, the broken VM fails every later stream too.
        let got = send(server.addr(), "GET", "/", &[], "").await;
        assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE, "{got:?}");
    }
    assert!(upstream.seen().is_empty());
    let logs = logs.lock().unwrap().clone();
    assert!(
        logs.iter()
            .any(|line| line.starts_with("[plugin critical] plugin failed")
                && line.contains("proxy_on_request_headers")
                && line.contains("boom")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|line| line.starts_with("[serve] the plugin trapped")),
        "{logs:?}"
    );
    server.shutdown();
}

#[tokio::test]
async fn a_protocol_mistake_of_the_plugin_is_a_503_not_a_crash() {
    // Resuming inside the callback that pauses: Envoy asserts on this; the server answers 503
    // and goes on serving.
    let upstream = support::upstream().await;
    let module = wat_plugin(
        r#"(import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))"#,
        "(drop (call $continue (i32.const 0))) (i32.const 1)",
    );
    let (server, logs) = support::start(ServeConfig::new(module, upstream.addr.to_string()));
    for _ in 0..2 {
        let got = send(server.addr(), "GET", "/", &[], "").await;
        assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE, "{got:?}");
    }
    let logs = logs.lock().unwrap().clone();
    assert!(
        logs.iter()
            .any(|line| line.contains("resumed the stream inside the callback that paused it")),
        "{logs:?}"
    );
    server.shutdown();
}

#[tokio::test]
async fn a_client_that_goes_away_mid_call_ends_its_stream_only() {
    use tokio::io::AsyncWriteExt;

    let demo = AuthDemo::start(Duration::ZERO).await;
    let mut client = tokio::net::TcpStream::connect(demo.server.addr())
        .await
        .unwrap();
    client
        .write_all(b"GET /gone HTTP/1.1\r\nhost: x\r\nauthorization: Bearer slow\r\n\r\n")
        .await
        .unwrap();
    // The plugin is waiting for the (slow) auth service when the client leaves.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(demo.auth.seen().len(), 1);
    drop(client);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let got = send(demo.server.addr(), "GET", "/after", &[GOOD], "").await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    let paths: Vec<String> = demo
        .upstream
        .seen()
        .into_iter()
        .map(|seen| seen.path)
        .collect();
    assert_eq!(paths, ["/after"]);
    demo.server.shutdown();
}

/// hello (`hello: world`) then auth-flow, in front of the demo services.
async fn hello_then_auth_flow(
    hello_config: &str,
) -> (
    proxy_async_host::serve::Server,
    support::Service,
    support::Service,
) {
    let auth = support::auth_service(Duration::ZERO).await;
    let users = support::users_service().await;
    let upstream = support::upstream().await;
    let config = ServeConfig::new(support::module("hello"), upstream.addr.to_string())
        .plugin_config(hello_config.to_string())
        .then(
            support::module("auth_flow"),
            r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#,
        )
        .cluster("auth", auth.addr.to_string())
        .cluster("users", users.addr.to_string());
    assert_eq!(config.plugin_count(), 2);
    let (server, _) = support::start(config);
    (server, auth, upstream)
}

#[tokio::test]
async fn a_chain_of_hello_then_auth_flow_reaches_the_upstream_with_both_changes() {
    let (server, auth, upstream) = hello_then_auth_flow(r#"{"mockEnable": false}"#).await;
    let got = send(
        server.addr(),
        "POST",
        "/orders",
        &[GOOD, ("x-user-id", "forged")],
        r#"{"item": 42}"#,
    )
    .await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (StatusCode::OK, "upstream saw /orders"),
        "{got:?}"
    );
    assert_eq!(auth.seen().len(), 1);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("hello"), Some("world"));
    assert_eq!(seen[0].header("x-user-id"), Some("u-1"));
    assert_eq!(seen[0].header("x-user-name"), Some("alice"));
    assert_eq!(seen[0].body, r#"{"item": 42}"#);
    server.shutdown();
}

#[tokio::test]
async fn a_chain_of_hello_then_auth_flow_still_answers_401_without_a_credential() {
    // hello ran (it never replies), auth-flow replied: the upstream never sees the request.
    let (server, auth, upstream) = hello_then_auth_flow(r#"{"mockEnable": false}"#).await;
    let got = send(server.addr(), "GET", "/orders", &[], "").await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{got:?}");
    assert!(auth.seen().is_empty());
    assert!(upstream.seen().is_empty());
    server.shutdown();
}

/// auth-flow then hello (with `hello_config`), in front of the demo services.
async fn auth_flow_then_hello(hello_config: &str) -> (AuthDemo, proxy_async_host::serve::Server) {
    let demo = AuthDemo::start(Duration::ZERO).await;
    let config = ServeConfig::new(support::module("auth_flow"), demo.upstream.addr.to_string())
        .plugin_config(r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#)
        .then(support::module("hello"), hello_config.to_string())
        .cluster("auth", demo.auth.addr.to_string())
        .cluster("users", demo.users.addr.to_string());
    let (server, _) = support::start(config);
    (demo, server)
}

#[tokio::test]
async fn a_chain_of_auth_flow_then_hello_answers_401_before_hello_runs() {
    let (demo, server) = auth_flow_then_hello(r#"{"mockEnable": false}"#).await;
    let got = send(server.addr(), "GET", "/orders", &[], "").await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{got:?}");
    assert!(demo.auth.seen().is_empty());
    assert!(demo.users.seen().is_empty());
    assert!(
        demo.upstream.seen().is_empty(),
        "the local reply of plugin 1 ends the chain"
    );

    // The same chain lets a good request through both plugins.
    let got = send(server.addr(), "GET", "/orders", &[GOOD], "").await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    let seen = demo.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-user-id"), Some("u-1"));
    assert_eq!(seen[0].header("hello"), Some("world"));
    server.shutdown();
    demo.server.shutdown();
}

#[tokio::test]
async fn a_local_reply_of_the_second_plugin_answers_after_the_first_plugins_calls() {
    // hello replies itself: the request got through auth-flow (both calls), never upstream.
    let (demo, server) = auth_flow_then_hello(r#"{"mockEnable": true}"#).await;
    let got = send(server.addr(), "GET", "/orders", &[GOOD], "").await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (StatusCode::OK, "hello world"),
        "{got:?}"
    );
    assert_eq!(demo.auth.seen().len(), 1);
    assert_eq!(demo.users.seen().len(), 1);
    assert!(demo.upstream.seen().is_empty());

    // Without a credential, auth-flow replies first: hello's reply never comes.
    let got = send(server.addr(), "GET", "/orders", &[], "").await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{got:?}");
    server.shutdown();
    demo.server.shutdown();
}

#[test]
fn a_rejected_configuration_of_a_chained_plugin_fails_the_start() {
    let config = ServeConfig::new(support::module("hello"), "127.0.0.1:9")
        .then(support::module("auth_flow"), r#"{"auth": {"cluster": ""}}"#);
    let error = proxy_async_host::serve::Server::start(
        config.log_sink(|_| {}),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            proxy_async_host::serve::ServeError::ChainedPlugin { position: 2, .. }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("plugin 2"), "{error}");
    assert!(error.to_string().contains("auth.cluster"), "{error}");
}

#[tokio::test]
async fn the_auth_flow_component_calls_the_real_services() {
    let demo = AuthDemo::start_component(Duration::ZERO).await;
    let addr = demo.server.addr();
    let got = send(addr, "GET", "/orders", &[GOOD, ("x-user-admin", "1")], "").await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert_eq!(got.body, "upstream saw /orders");
    let seen = demo.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-user-id"), Some("u-1"));
    assert_eq!(seen[0].header("x-user-admin"), None);
    assert_eq!(demo.auth.seen().len(), 1);
    assert_eq!(demo.users.seen().len(), 1);

    let denied = send(
        addr,
        "GET",
        "/orders",
        &[("authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{denied:?}");
    let missing = send(addr, "GET", "/orders", &[], "").await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{missing:?}");
    assert_eq!(demo.upstream.seen().len(), 1);
    demo.server.shutdown();
}

#[tokio::test]
async fn the_auth_flow_component_holds_concurrent_requests_and_times_out_a_slow_auth() {
    let demo = AuthDemo::start_component(Duration::from_millis(300)).await;
    let addr = demo.server.addr();
    let started = Instant::now();
    let (first, second, slow) = tokio::join!(
        send(addr, "GET", "/first", &[GOOD], ""),
        send(addr, "POST", "/second", &[GOOD], "two"),
        send(
            addr,
            "GET",
            "/slow",
            &[("authorization", "Bearer slow")],
            ""
        ),
    );
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert_eq!(slow.status, StatusCode::SERVICE_UNAVAILABLE, "{slow:?}");
    assert_eq!(demo.auth.peak.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let mut paths: Vec<String> = demo
        .upstream
        .seen()
        .into_iter()
        .map(|seen| seen.path)
        .collect();
    paths.sort();
    assert_eq!(paths, ["/first", "/second"]);
    demo.server.shutdown();
}
