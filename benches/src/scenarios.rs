//! The requests the benchmark measures and `profile` breaks down, one function each, and the
//! configurations they run with.
//!
//! Generic over the plugin behind the emulated proxy, so that the profiler can put a recorder
//! between the proxy and the plugin and still drive exactly the traffic the benchmark does.
//! Only external crates are used here: `tests/profile.rs` includes this file as well.

use proxy_async_host::proxy_async_abi::Callbacks;
use proxy_async_host::proxy_async_emulator::{Direction, Pairs, Proxy};

/// Requests run before measuring (lazy initialisation, first allocations).
pub(crate) const WARMUP: u32 = 20;

/// `hello` adding its header (`x-hello`) to the request.
pub(crate) const HELLO_HEADER_CONFIG: &str = r#"{"mockEnable": false}"#;

/// `hello` answering every request itself (`hello world`).
pub(crate) const HELLO_REPLY_CONFIG: &str = r#"{"mockEnable": true}"#;

/// The auth-flow configuration of the measurements.
pub(crate) const AUTH_CONFIG: &str =
    r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#;

/// A call's answer as the emulated proxy delivers it.
pub(crate) fn response(status: u16, body: &str) -> Option<(Pairs, Vec<u8>)> {
    // JSON answers say so: `auth-flow` refuses a 200 that is not `application/json`.
    let mut headers = vec![(":status".to_string(), status.to_string().into_bytes())];
    if body.starts_with('{') {
        headers.push(("content-type".to_string(), b"application/json".to_vec()));
    }
    Some((headers, body.as_bytes().to_vec()))
}

/// One request to `hello`: request headers, response headers (unless the plugin replied
/// itself), end.
pub(crate) fn hello_request<B: Callbacks>(proxy: &Proxy<B>) {
    let stream = proxy.open_stream();
    proxy.send_headers(
        stream,
        Direction::Request,
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "example.com"),
        ],
        true,
    );
    if proxy.local_reply(stream).is_none() {
        proxy.send_headers(stream, Direction::Response, &[(":status", "200")], true);
    }
    proxy.end_stream(stream);
}

/// The request headers of an auth-flow request with `authorization`.
pub(crate) fn auth_request(authorization: &str) -> [(&str, &str); 4] {
    [
        (":method", "GET"),
        (":path", "/orders"),
        (":authority", "example.com"),
        ("authorization", authorization),
    ]
}

/// Opens a stream and sends it an auth-flow request with `authorization`; the stream.
pub(crate) fn open_auth_request<B: Callbacks>(proxy: &Proxy<B>, authorization: &str) -> u32 {
    let stream = proxy.open_stream();
    proxy.send_headers(
        stream,
        Direction::Request,
        &auth_request(authorization),
        true,
    );
    stream
}

/// One successful auth-flow request: both calls answered, the response goes back.
pub(crate) fn auth_success<B: Callbacks>(proxy: &Proxy<B>) {
    let stream = open_auth_request(proxy, "Bearer demo-token");
    answer_last(proxy, response(200, r#"{"token": "t-alice"}"#));
    answer_last(proxy, response(200, r#"{"id": "u-1", "name": "alice"}"#));
    proxy.send_headers(stream, Direction::Response, &[(":status", "200")], true);
    proxy.end_stream(stream);
}

/// One refused auth-flow request: the auth service answers 401, the plugin replies 403.
pub(crate) fn auth_denied<B: Callbacks>(proxy: &Proxy<B>) {
    let stream = open_auth_request(proxy, "Bearer wrong");
    answer_last(proxy, response(401, r#"{"error": "unknown credential"}"#));
    proxy.end_stream(stream);
}

/// Answers the most recent pending call.
pub(crate) fn answer_last<B: Callbacks>(proxy: &Proxy<B>, response: Option<(Pairs, Vec<u8>)>) {
    if let Some(call) = proxy.calls().pop() {
        proxy.answer(&call, response);
    }
}
