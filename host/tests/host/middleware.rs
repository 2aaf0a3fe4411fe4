//! The examples built as `wasi:http@0.3` middleware components (`--features
//! proxy-async/wasi-http`), served by wasmtime-wasi-http in our host in front of real
//! upstreams: the same scenarios as in Envoy (`e2e::scenarios`), from the same plugin source.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use e2e::scenarios::{self, Backend, Gateway, Setup};
use proxy_async_host::middleware::{Middleware, MiddlewareOptions};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

/// Each middleware compiled once for the whole test binary.
fn compiled(plugin: &str) -> Arc<Middleware> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Arc<Middleware>>>> = OnceLock::new();
    let mut compiled = COMPILED.get_or_init(Mutex::default).lock().unwrap();
    let middleware = compiled.entry(plugin.to_string()).or_insert_with(|| {
        let path = compiled_plugins::middleware(plugin);
        let wasm = std::fs::read(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        Arc::new(Middleware::new(&wasm).unwrap_or_else(|error| panic!("{plugin}: {error}")))
    });
    Arc::clone(middleware)
}

/// The environment that configures a middleware for `setup`.
pub(crate) fn environment(setup: &Setup) -> Vec<(String, String)> {
    let clusters: serde_json::Map<String, serde_json::Value> = setup
        .clusters
        .iter()
        .map(|(name, addr)| (name.clone(), format!("http://{addr}").into()))
        .collect();
    vec![
        ("PROXY_ASYNC_CONFIG".to_string(), setup.config.clone()),
        (
            "PROXY_ASYNC_CLUSTERS".to_string(),
            serde_json::Value::Object(clusters).to_string(),
        ),
    ]
}

/// A middleware served by our host on its own thread; dropping it stops the server.
pub(crate) struct Served {
    port: u16,
    stderr: MemoryOutputPipe,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway for Served {
    fn port(&self) -> u16 {
        self.port
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).into_owned()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `plugin`'s middleware in front of `upstream` with `env`.
pub(crate) fn serve(plugin: &str, upstream: SocketAddr, env: &[(String, String)]) -> Served {
    let middleware = compiled(plugin);
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut options = MiddlewareOptions::new(upstream).stderr(stderr.clone());
    for (name, value) in env {
        options = options.env(name, value);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tokio::select! {
                served = middleware.serve(options, listener) => {
                    if let Err(error) = served {
                        eprintln!("the middleware server stopped: {error}");
                    }
                }
                _ = stopped => {}
            }
        });
    });
    Served {
        port,
        stderr,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Our host, with wasmtime-wasi-http's `wasi:http@0.3.0`.
struct OurHost;

impl Backend for OurHost {
    fn start(&self, setup: &Setup) -> Box<dyn Gateway> {
        Box::new(serve(setup.plugin, setup.upstream, &environment(setup)))
    }
}

#[test]
fn hello_adds_a_header() {
    scenarios::hello_adds_a_header(&OurHost);
}

#[test]
fn hello_mock_enable_replies_locally() {
    scenarios::hello_mock_enable_replies_locally(&OurHost);
}

#[test]
fn auth_flow_success_sets_the_identity() {
    scenarios::auth_flow_success_sets_the_identity(&OurHost);
}

#[test]
fn auth_flow_missing_credential_is_401() {
    scenarios::auth_flow_missing_credential_is_401(&OurHost);
}

#[test]
fn auth_flow_wrong_credential_is_403() {
    scenarios::auth_flow_wrong_credential_is_403(&OurHost);
}

#[test]
fn auth_flow_slow_auth_is_503() {
    scenarios::auth_flow_slow_auth_is_503(&OurHost);
}

#[test]
fn auth_flow_unreachable_auth_is_503() {
    scenarios::auth_flow_unreachable_auth_is_503(&OurHost);
}

#[test]
fn auth_flow_auth_5xx_is_503() {
    scenarios::auth_flow_auth_5xx_is_503(&OurHost);
}

#[test]
fn auth_flow_malformed_token_json_is_503() {
    scenarios::auth_flow_malformed_token_json_is_503(&OurHost);
}

#[test]
fn auth_flow_cluster_missing_is_503() {
    scenarios::auth_flow_cluster_missing_is_503(&OurHost);
}

#[test]
fn auth_flow_post_body_reaches_the_upstream() {
    scenarios::auth_flow_post_body_reaches_the_upstream(&OurHost);
}

#[test]
fn fan_out_calls_overlap() {
    scenarios::fan_out_calls_overlap(&OurHost);
}

#[test]
fn retry_waits_then_goes_on() {
    scenarios::retry_waits_then_goes_on(&OurHost);
}

#[test]
fn retry_deadline_replies_504() {
    scenarios::retry_deadline_replies_504(&OurHost);
}

#[test]
fn stream_redact_redacts_split_secrets() {
    let (upstream, requests) = scenarios::stream_redact_upstream();
    let gateway = scenarios::stream_redact(&OurHost, &upstream);
    scenarios::stream_redact_redacts_split_secrets(&*gateway, &requests);
}

#[test]
fn stream_redact_streams_the_body() {
    scenarios::stream_redact_streams_the_body(&OurHost);
}

#[test]
fn a_bad_configuration_fails_every_request_with_503_and_a_log_line() {
    let upstreams = e2e::Upstreams::start();
    let served = serve(
        "auth-flow",
        upstreams.echo,
        &[(
            "PROXY_ASYNC_CONFIG".to_string(),
            r#"{"auth": {"cluster": "auth", "timeout_ms": "soon"}}"#.to_string(),
        )],
    );
    for _ in 0..2 {
        let response = served.send("GET", "/orders", &[], b"");
        assert_eq!(response.status, 503, "{}", response.text());
        assert!(
            response.text().contains("invalid plugin configuration"),
            "{}",
            response.text()
        );
    }
    assert!(upstreams.recorded().is_empty(), "the upstream was called");
    let log = served.log();
    assert!(
        log.contains("invalid plugin configuration: field `auth.timeout_ms`"),
        "{log}"
    );
}
