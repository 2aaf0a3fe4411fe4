//! The SDK's gRPC client in a real Envoy, against a real gRPC server behind an HTTP/2 cluster,
//! and the same scenarios in our emulator: the calls fixture (`grpc-unary`, `grpc-stream`)
//! must see the same thing in both, and the server what the emulator says the plugin sent.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e::{Envoy, EnvoyConfig, GrpcAnswer, GrpcServer, Upstreams};
use proxy_async_host::proxy_async_emulator::{Direction, Proxy, ProxyConfig, ProxyState};
use proxy_async_host::{Plugin, PluginModule, start_emulated_module};

type Emulated = Proxy<Plugin<ProxyState>>;

/// The fixture's unary calls time out after 300 ms.
const UNARY: &str = r#"{"mode": "grpc-unary", "timeout_ms": 300}"#;
const STREAM: &str = r#"{"mode": "grpc-stream"}"#;

const PATH: &str = "/orders";

/// What the client saw: the plugin's local reply (status, `x-grpc-status`), or the request
/// going on to the upstream with the plugin's header.
fn outcome_in_envoy(config: &str, answer: GrpcAnswer) -> (String, GrpcServer) {
    let server = GrpcServer::start(move |_| answer.clone());
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new(e2e::plugin_wasm("calls_plugin"), upstreams.echo)
            .plugin_config(config)
            .grpc_cluster("authz", server.addr())
            .grpc_cluster("chat", server.addr()),
    );
    let response = envoy.send("GET", PATH, &[], b"");
    let recorded = upstreams.recorded();
    let seen = match recorded.as_slice() {
        [] => format!(
            "replied {} x-grpc-status={} x-grpc-message={}",
            response.status,
            response.header("x-grpc-status").unwrap_or("none"),
            response.header("x-grpc-message").unwrap_or("none")
        ),
        [request] => format!(
            "forwarded x-verdict={} x-replies={}",
            request.header("x-verdict").unwrap_or("none"),
            request.header("x-replies").unwrap_or("none")
        ),
        more => format!("{} requests went on", more.len()),
    };
    (seen, server)
}

/// The calls fixture with `config`, in the emulator.
fn emulated(config: &str) -> Emulated {
    let wasm = std::fs::read(e2e::plugin_wasm("calls_plugin")).expect("the calls fixture");
    let module = PluginModule::new(&wasm).expect("the calls fixture loads");
    start_emulated_module(
        &module,
        ProxyConfig {
            plugin_config: config.as_bytes().to_vec(),
            // A stopped clock, which `advance_time` moves (and which ends calls at their
            // timeout, as Envoy does).
            clock: Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            ..ProxyConfig::default()
        },
    )
    .expect("the fixture starts")
}

/// A request to the emulated proxy; its stream.
fn request(proxy: &Emulated) -> u32 {
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
    stream
}

/// The same in the emulator: `act` answers the plugin's call.
fn outcome_in_emulator(config: &str, act: impl FnOnce(&Emulated)) -> (String, Vec<String>) {
    let proxy = emulated(config);
    let stream = request(&proxy);
    let calls: Vec<String> = proxy.grpc_calls().iter().map(describe_emulated).collect();
    act(&proxy);
    let seen = match proxy.local_reply(stream) {
        Some(reply) => format!(
            "replied {} x-grpc-status={} x-grpc-message={}",
            reply.status,
            reply.header("x-grpc-status").unwrap_or("none"),
            reply.header("x-grpc-message").unwrap_or("none")
        ),
        None => {
            assert_eq!(
                proxy.resumes(stream, Direction::Request),
                1,
                "{:?}",
                proxy.logs()
            );
            let header = |name: &str| {
                proxy
                    .headers(stream, Direction::Request)
                    .into_iter()
                    .find(|(key, _)| key == name)
                    .map_or("none".to_string(), |(_, value)| value)
            };
            format!(
                "forwarded x-verdict={} x-replies={}",
                header("x-verdict"),
                header("x-replies")
            )
        }
    };
    (seen, calls)
}

fn describe_emulated(call: &proxy_async_host::proxy_async_emulator::GrpcCall) -> String {
    let caller = call
        .metadata()
        .iter()
        .find(|(name, _)| name == "x-caller")
        .map_or("none", |(_, value)| value.as_str());
    let messages: Vec<String> = call
        .messages()
        .iter()
        .map(|message| String::from_utf8_lossy(message).into_owned())
        .collect();
    format!(
        "/{}/{} x-caller={caller} messages={messages:?}",
        call.service(),
        call.method()
    )
}

fn describe_received(server: &GrpcServer) -> Vec<String> {
    server
        .calls()
        .iter()
        .map(|call| {
            let messages: Vec<String> = call
                .messages
                .iter()
                .map(|message| String::from_utf8_lossy(message).into_owned())
                .collect();
            format!(
                "{} x-caller={} messages={messages:?}",
                call.path,
                call.metadata("x-caller").unwrap_or("none")
            )
        })
        .collect()
}

/// Runs one scenario both ways and checks both against `expected`.
fn same_in_both(config: &str, answer: GrpcAnswer, act: impl FnOnce(&Emulated), expected: &str) {
    let (in_envoy, server) = outcome_in_envoy(config, answer);
    let (in_emulator, sent) = outcome_in_emulator(config, act);
    assert_eq!(
        (in_envoy.as_str(), in_emulator.as_str()),
        (expected, expected),
        "(Envoy, emulator)"
    );
    assert_eq!(
        describe_received(&server),
        sent,
        "what the server got, what the emulator saw sent"
    );
}

#[test]
fn a_unary_reply_reaches_the_hook() {
    same_in_both(
        UNARY,
        GrpcAnswer::ok(&["allow"]),
        |proxy| proxy.grpc_message(&proxy.grpc_calls()[0], b"allow"),
        "forwarded x-verdict=allow x-replies=none",
    );
}

#[test]
fn a_non_ok_status_is_a_typed_error() {
    same_in_both(
        UNARY,
        GrpcAnswer::status(7, "not yours"),
        |proxy| proxy.grpc_finish(&proxy.grpc_calls()[0], 7, "not yours"),
        "replied 403 x-grpc-status=7 x-grpc-message=not yours",
    );
}

#[test]
fn a_call_past_its_deadline_is_a_timeout() {
    same_in_both(
        UNARY,
        GrpcAnswer {
            delay: Duration::from_secs(2),
            ..GrpcAnswer::ok(&["late"])
        },
        |proxy| {
            proxy.advance_time(Duration::from_millis(300));
        },
        "replied 504 x-grpc-status=none x-grpc-message=none",
    );
}

#[test]
fn a_server_stream_is_read_to_its_end() {
    same_in_both(
        STREAM,
        GrpcAnswer::ok(&["hello", "goodbye"]),
        |proxy| {
            let chat = &proxy.grpc_calls()[0];
            proxy.grpc_message(chat, b"hello");
            proxy.grpc_message(chat, b"goodbye");
            proxy.grpc_finish(chat, 0, "");
        },
        "forwarded x-verdict=none x-replies=hello,goodbye",
    );
}

#[test]
fn a_failed_stream_reports_its_status() {
    same_in_both(
        STREAM,
        GrpcAnswer::status(14, "no healthy upstream"),
        |proxy| proxy.grpc_finish(&proxy.grpc_calls()[0], 14, "no healthy upstream"),
        "replied 502 x-grpc-status=14 x-grpc-message=no healthy upstream",
    );
}

#[test]
fn a_call_whose_client_leaves_is_cancelled() {
    // The server would answer after 2 s; the client leaves once the call reached it.
    let server = GrpcServer::start(|_| GrpcAnswer {
        delay: Duration::from_secs(2),
        ..GrpcAnswer::ok(&["late"])
    });
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new(e2e::plugin_wasm("calls_plugin"), upstreams.echo)
            .plugin_config(r#"{"mode": "grpc-unary", "timeout_ms": 5000}"#)
            .grpc_cluster("authz", server.addr()),
    );
    let mut client = TcpStream::connect(("127.0.0.1", envoy.port())).expect("connects");
    client
        .write_all(b"GET /orders HTTP/1.1\r\nhost: shop.example\r\n\r\n")
        .expect("sends");
    let started = Instant::now();
    while server.calls().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no gRPC call came"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(client);
    // The stream's end drops the hook and its call future, which cancels the call: the server
    // sees its stream reset long before it would answer.
    while server.cancelled() == 0 {
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "the call was not cancelled:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(upstreams.recorded().is_empty());

    // The emulator: the stream's end cancels the call.
    let proxy = emulated(r#"{"mode": "grpc-unary", "timeout_ms": 5000}"#);
    let stream = request(&proxy);
    let sent: Vec<String> = proxy.grpc_calls().iter().map(describe_emulated).collect();
    proxy.end_stream(stream);
    assert!(proxy.grpc_calls().is_empty(), "cancelled in the emulator");
    assert_eq!(describe_received(&server), sent);
}
