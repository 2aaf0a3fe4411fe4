//! A plugin written on the plain `proxy-wasm` crate (callback style, not our SDK), from
//! `host/fixtures/raw-callbacks`, in the emulated proxy: the host is not tuned to our SDK.

use std::sync::OnceLock;
use std::time::Duration;

use proxy_async_host::proxy_async_emulator::ProxyState;
use proxy_async_host::proxy_async_emulator::{
    Action, Direction, LogLevel, Pairs, Proxy, ProxyConfig,
};
use proxy_async_host::{Plugin, start_emulated};

type WasmProxy = Proxy<Plugin<ProxyState>>;

/// The counter the fixture increments once per request.
const REQUESTS_METRIC: &str = "raw_callbacks.requests";

/// The fixture's module, built once per test process.
fn wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| crate::common::plugin_wasm("raw_callbacks"))
}

fn start() -> WasmProxy {
    start_with(r#"{"cluster": "auth"}"#)
}

fn start_with(config: &str) -> WasmProxy {
    start_emulated(
        wasm(),
        ProxyConfig {
            plugin_config: config.as_bytes().to_vec(),
            ..ProxyConfig::default()
        },
    )
    .expect("the plugin accepts its configuration")
}

fn response(status: u16) -> Option<(Pairs, Vec<u8>)> {
    Some((
        vec![(":status".to_string(), status.to_string().into_bytes())],
        b"ok".to_vec(),
    ))
}

fn header(proxy: &WasmProxy, stream: u32, side: Direction, name: &str) -> Option<String> {
    proxy
        .headers(stream, side)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// Opens a stream and sends its request headers; the plugin pauses and calls `auth`.
fn request(proxy: &WasmProxy, path: &str) -> u32 {
    let stream = proxy.open_stream();
    assert_eq!(
        proxy.send_headers(
            stream,
            Direction::Request,
            &[
                (":method", "GET"),
                (":path", path),
                (":authority", "example")
            ],
            true,
        ),
        Action::Pause
    );
    stream
}

#[test]
fn the_abi_marker_and_the_configuration_are_accepted() {
    let proxy = start();
    assert_eq!(proxy.plugin().abi_version(), Some("0_2_1"));
    assert!(
        proxy
            .logs_at(LogLevel::Info)
            .iter()
            .any(|line| line == "raw-callbacks: configured, cluster `auth`"),
        "{:?}",
        proxy.logs()
    );
    assert_eq!(proxy.state().metric(REQUESTS_METRIC), Some(0));
    assert!(proxy.failure().is_none());
}

#[test]
fn an_allowed_request_is_checked_then_resumed_once() {
    let proxy = start();
    let stream = request(&proxy, "/orders?id=7");
    let fuel = proxy.plugin().last_call_fuel();
    println!("raw-callbacks on_request_headers (dispatches the check): {fuel} fuel");
    assert!(fuel > 0);

    let calls = proxy.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.cluster(), "auth");
    assert_eq!(call.context_id(), stream);
    assert_eq!(
        call.headers(),
        [
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), "/check".to_string()),
            (":authority".to_string(), "auth".to_string()),
            ("x-forwarded-path".to_string(), "/orders?id=7".to_string()),
        ]
    );
    assert!(call.body().is_empty());
    assert_eq!(call.timeout(), Duration::from_secs(1));
    assert!(proxy.is_paused(stream, Direction::Request));
    assert_eq!(proxy.resumes(stream, Direction::Request), 0);

    proxy.answer(call, response(200));
    assert_eq!(proxy.resumes(stream, Direction::Request), 1);
    assert!(!proxy.is_paused(stream, Direction::Request));
    assert_eq!(
        header(&proxy, stream, Direction::Request, "x-checked").as_deref(),
        Some("yes")
    );
    assert!(proxy.calls().is_empty());

    assert_eq!(
        proxy.send_headers(stream, Direction::Response, &[(":status", "200")], true),
        Action::Continue
    );
    assert_eq!(
        header(&proxy, stream, Direction::Response, "x-raw-plugin").as_deref(),
        Some("1")
    );
    proxy.end_stream(stream);
    assert_eq!(proxy.local_reply(stream), None);
    assert_eq!(proxy.resumes(stream, Direction::Request), 1);
    assert_eq!(proxy.state().metric(REQUESTS_METRIC), Some(1));
    assert!(
        proxy
            .logs_at(LogLevel::Info)
            .iter()
            .any(|line| line.starts_with("raw-callbacks: #2 checking /orders?id=7 (call ")),
        "{:?}",
        proxy.logs()
    );
    assert!(proxy.failure().is_none(), "{:?}", proxy.failure());
}

#[test]
fn a_refused_or_failed_check_replies_403() {
    let proxy = start();

    let refused = request(&proxy, "/admin");
    proxy.answer(&proxy.calls()[0], response(500));

    let failed = request(&proxy, "/slow");
    proxy.answer(&proxy.calls()[0], None);

    for stream in [refused, failed] {
        let reply = proxy.local_reply(stream).expect("a local reply");
        assert_eq!(reply.status, 403);
        assert_eq!(reply.body_str(), "denied");
        assert_eq!(reply.header("x-denied-by"), Some("raw"));
        assert_eq!(proxy.resumes(stream, Direction::Request), 0);
        assert_eq!(
            header(&proxy, stream, Direction::Request, "x-checked"),
            None
        );
        // The reply goes through the plugin's response callback like any response.
        assert_eq!(
            header(&proxy, stream, Direction::Response, "x-raw-plugin").as_deref(),
            Some("1")
        );
        assert_eq!(
            header(&proxy, stream, Direction::Response, ":status").as_deref(),
            Some("403")
        );
        proxy.end_stream(stream);
    }
    let warnings = proxy.logs_at(LogLevel::Warn);
    assert!(
        warnings.contains(&format!("raw-callbacks: #{refused} denied: status 500")),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(&format!("raw-callbacks: #{failed} denied: no response")),
        "{warnings:?}"
    );
    assert_eq!(proxy.state().metric(REQUESTS_METRIC), Some(2));
    assert!(proxy.failure().is_none(), "{:?}", proxy.failure());
}

/// `http_auth_random` style: the plugin reads all the call's response headers, even when the
/// call failed. Envoy answers `proxy_get_header_map_pairs(HttpCallResponseHeaders)` with OK and
/// an empty map when there is no response (`Context::getHeaderMapPairs` serializes a null map as
/// empty); anything else makes the `proxy-wasm` crate panic ("unexpected status"), and the
/// stream would get a 503 instead of the plugin's 403.
#[test]
fn a_failed_call_read_through_all_headers_replies_403() {
    let proxy = start_with(r#"{"cluster": "auth", "read": "all-headers"}"#);

    let allowed = request(&proxy, "/");
    proxy.answer(&proxy.calls()[0], response(200));
    assert_eq!(proxy.resumes(allowed, Direction::Request), 1);

    let failed = request(&proxy, "/slow");
    proxy.answer(&proxy.calls()[0], None);
    assert!(proxy.failure().is_none(), "{:?}", proxy.failure());
    let reply = proxy.local_reply(failed).expect("a local reply");
    assert_eq!((reply.status, reply.body_str().as_str()), (403, "denied"));
}

/// A real Rust panic in a hook (the `proxy-wasm` crate's panic hook logs it at critical level,
/// then `panic = "abort"` traps): the host reports the trap with the panic message, the stream
/// gets Envoy's FAIL_CLOSED 503, and the broken VM answers 503 from then on.
#[test]
fn a_panic_in_a_hook_is_reported_with_its_message() {
    let proxy = start_with(r#"{"cluster": "auth"}"#);
    let stream = proxy.open_stream();
    assert_eq!(
        proxy.send_headers(stream, Direction::Request, &[(":path", "/panic")], true),
        Action::Pause
    );
    let reply = proxy.local_reply(stream).expect("a 503");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (503, "wasm_fail_stream")
    );
    let failure = proxy.failure().expect("the plugin trapped");
    println!("{failure}");
    assert!(
        failure.message.contains("raw-callbacks was asked to panic"),
        "{failure}"
    );
    let next = proxy.open_stream();
    proxy.send_headers(next, Direction::Request, &[(":path", "/")], true);
    assert_eq!(proxy.local_reply(next).map(|reply| reply.status), Some(503));
}
