//! What a plugin sees when its call fails, in Envoy and in our emulator: the same plugin (the
//! calls fixture's `http-probe`, which answers with one line saying what its call returned)
//! meets each failure in a real Envoy and then in the emulated proxy, and the two lines must
//! be equal. The emulator is what plugin authors test against: where it differs from Envoy,
//! it is wrong.

use std::net::SocketAddr;
use std::time::Duration;

use e2e::{Envoy, EnvoyConfig, RawServer, Server, Upstreams};
use hyper::StatusCode;
use hyper::header::HeaderValue;
use proxy_async_host::proxy_async_emulator::{CallFailure, Direction, Pairs, ProxyConfig};
use proxy_async_host::{PluginModule, start_emulated_module};

/// The probe's configuration: its call has a 300 ms timeout.
const PROBE_CONFIG: &str = r#"{"mode": "http-probe", "timeout_ms": 300}"#;

/// The path the probe asks for.
const PATH: &str = "/probe";

/// What the upstream of the `target` cluster does, and what that looks like in the emulator.
struct Scenario {
    name: &'static str,
    /// Where Envoy's `target` cluster points (`None`: Envoy has no such cluster). The guard
    /// keeps the upstream alive.
    envoy_target: fn() -> (Option<SocketAddr>, Box<dyn Send>),
    /// What the emulator does with the probe's call.
    emulated: Emulated,
    /// What the plugin must see.
    expected: &'static str,
}

enum Emulated {
    /// The upstream's own answer, as Envoy hands it over (with the header Envoy adds).
    Answer(u16, &'static str, &'static str),
    /// A failure, as the emulator's Envoy reports it.
    Fail(CallFailure),
    /// The proxy has no `target` cluster: the call is refused, there is nothing to answer.
    NoCluster,
}

/// The probe's module, run by the emulator.
fn probe_module() -> PluginModule {
    let wasm = std::fs::read(e2e::plugin_wasm("calls_plugin")).expect("the calls fixture");
    PluginModule::new(&wasm).expect("the calls fixture loads")
}

/// What the probe answered to one request through Envoy.
fn seen_in_envoy(target: Option<SocketAddr>) -> String {
    let upstreams = Upstreams::start();
    let mut config = EnvoyConfig::new(e2e::plugin_wasm("calls_plugin"), upstreams.echo)
        .plugin_config(PROBE_CONFIG);
    if let Some(target) = target {
        config = config.cluster("target", target);
    }
    let envoy = Envoy::start(&config);
    let response = envoy.send("GET", PATH, &[], b"");
    assert_eq!(
        response.status,
        200,
        "the probe's own reply: {}",
        response.text()
    );
    assert!(upstreams.recorded().is_empty(), "the probe answers locally");
    response.text()
}

/// What the probe answered to one request through the emulator.
fn seen_in_emulator(module: &PluginModule, emulated: &Emulated) -> String {
    let clusters = match emulated {
        Emulated::NoCluster => Some(Default::default()),
        Emulated::Answer(..) | Emulated::Fail(_) => None,
    };
    let proxy = start_emulated_module(
        module,
        ProxyConfig {
            plugin_config: PROBE_CONFIG.as_bytes().to_vec(),
            clusters,
            ..ProxyConfig::default()
        },
    )
    .expect("the probe starts in the emulator");
    let stream = proxy.open_stream();
    proxy.send_headers(
        stream,
        Direction::Request,
        &[
            (":method", "GET"),
            (":path", PATH),
            (":authority", "shop.example"),
        ],
        true,
    );
    match emulated {
        Emulated::Answer(status, content_type, body) => {
            let calls = proxy.calls();
            let headers: Pairs = [
                (":status", status.to_string()),
                ("content-type", content_type.to_string()),
                ("content-length", body.len().to_string()),
                ("x-envoy-upstream-service-time", "1".to_string()),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.into_bytes()))
            .collect();
            proxy.answer(&calls[0], Some((headers, body.as_bytes().to_vec())));
        }
        Emulated::Fail(failure) => {
            let calls = proxy.calls();
            proxy.fail_call(&calls[0], failure);
        }
        Emulated::NoCluster => assert!(proxy.calls().is_empty(), "a refused call is not made"),
    }
    let reply = proxy.local_reply(stream);
    assert!(
        reply.is_some(),
        "the probe did not answer in the emulator: {:?}",
        proxy.logs()
    );
    let reply = reply.expect("the probe's reply");
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body).expect("the probe's line is text")
}

fn no_guard() -> Box<dyn Send> {
    Box::new(())
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

const UNREACHABLE_TEXT: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "the upstream answers",
            envoy_target: || {
                let server = Server::start(|_| async {
                    let mut response = hyper::Response::new("hello".into());
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("text/plain"));
                    response
                });
                (Some(server.addr()), Box::new(server))
            },
            emulated: Emulated::Answer(200, "text/plain", "hello"),
            expected: "answered 200 hello",
        },
        Scenario {
            // An upstream's 5xx that reads like Envoy's own: it is still the upstream's answer.
            name: "the upstream answers 503 in Envoy's words",
            envoy_target: || {
                let server = Server::start(|_| async {
                    let mut response = hyper::Response::new(UNREACHABLE_TEXT.into());
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    response
                        .headers_mut()
                        .insert("content-type", HeaderValue::from_static("text/plain"));
                    response
                });
                (Some(server.addr()), Box::new(server))
            },
            emulated: Emulated::Answer(503, "text/plain", UNREACHABLE_TEXT),
            expected: "answered 503 upstream connect error or disconnect/reset before headers. reset reason: overflow",
        },
        Scenario {
            name: "the upstream answers after the call's timeout",
            envoy_target: || {
                let server = Server::start(|_| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    hyper::Response::new("late".into())
                });
                (Some(server.addr()), Box::new(server))
            },
            emulated: Emulated::Fail(CallFailure::Timeout),
            expected: "failed timeout: no response from cluster `target` within the call's timeout (300 ms)",
        },
        Scenario {
            name: "nothing listens at the upstream's address",
            envoy_target: || (Some(closed_port()), no_guard()),
            emulated: Emulated::Fail(CallFailure::ConnectionRefused),
            expected: "failed unreachable: cluster `target` could not be reached (remote connection failure)",
        },
        Scenario {
            name: "the upstream closes the connection without answering",
            envoy_target: || {
                let server = RawServer::start(|_| Vec::new());
                (Some(server.addr()), Box::new(server))
            },
            emulated: Emulated::Fail(CallFailure::ConnectionClosed),
            expected: "failed unreachable: cluster `target` could not be reached (connection termination)",
        },
        Scenario {
            name: "the upstream's answer breaks off mid-body",
            envoy_target: || {
                // Promises 100 bytes, sends 5, closes.
                let server = RawServer::start(|_| {
                    let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello";
                    vec![(Duration::ZERO, partial.to_vec())]
                });
                (Some(server.addr()), Box::new(server))
            },
            emulated: Emulated::Fail(CallFailure::ResetMidResponse),
            expected: "failed no-response: the response from cluster `target` broke off before it was whole (connection reset, or timeout after 300 ms)",
        },
        Scenario {
            name: "the proxy has no such cluster",
            envoy_target: || (None, no_guard()),
            emulated: Emulated::NoCluster,
            expected: "failed refused: the proxy refused a call to cluster `target` (BAD_ARGUMENT): is the cluster configured in the proxy?",
        },
    ]
}

#[test]
fn a_failed_call_looks_the_same_in_envoy_and_in_the_emulator() {
    let module = probe_module();
    let mut differences = Vec::new();
    for scenario in scenarios() {
        let (target, guard) = (scenario.envoy_target)();
        let in_envoy = seen_in_envoy(target);
        drop(guard);
        let in_emulator = seen_in_emulator(&module, &scenario.emulated);
        if in_envoy != scenario.expected || in_emulator != scenario.expected {
            differences.push(format!(
                "{}:\n  expected: {}\n  Envoy:    {in_envoy}\n  emulator: {in_emulator}",
                scenario.name, scenario.expected
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
