//! The examples' compiled `.wasm` in the emulated proxy: the same traffic the native tests send,
//! through the module's real hostcalls.

use proxy_async_host::proxy_async_emulator::ProxyState;
use proxy_async_host::proxy_async_emulator::{
    Action, CallFailure, Direction, LogLevel, Pairs, Proxy, ProxyConfig,
};
use proxy_async_host::{Plugin, start_emulated};

type WasmProxy = Proxy<Plugin<ProxyState>>;

const AUTH_CONFIG: &str = r#"{"auth": {"cluster": "auth", "authority": "auth.local"},
                              "users": {"cluster": "users"}}"#;

fn start(plugin: &str, config: &str) -> WasmProxy {
    let wasm = crate::common::plugin_wasm(plugin);
    start_emulated(
        &wasm,
        ProxyConfig {
            plugin_config: config.as_bytes().to_vec(),
            ..ProxyConfig::default()
        },
    )
    .expect("the plugin starts")
}

fn response(status: u16, body: &str) -> Option<(Pairs, Vec<u8>)> {
    // JSON answers say so: `auth-flow` refuses a 200 that is not `application/json`.
    let mut headers = vec![(":status".to_string(), status.to_string().into_bytes())];
    if body.starts_with('{') {
        headers.push(("content-type".to_string(), b"application/json".to_vec()));
    }
    Some((headers, body.as_bytes().to_vec()))
}

fn header(proxy: &WasmProxy, stream: u32, side: Direction, name: &str) -> Option<String> {
    proxy
        .headers(stream, side)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

#[test]
fn auth_flow_wasm_awaits_both_calls_and_resumes_once() {
    let proxy = start("auth_flow", AUTH_CONFIG);
    let stream = proxy.open_stream();
    let request = [
        (":method", "POST"),
        (":path", "/orders"),
        ("authorization", "Bearer good"),
        ("x-user-admin", "1"),
    ];
    assert_eq!(
        proxy.send_headers(stream, Direction::Request, &request, false),
        Action::Pause
    );
    let calls = proxy.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].cluster(), calls[0].method(), calls[0].path()),
        ("auth", "POST", "/token")
    );
    assert_eq!(calls[0].authority(), "auth.local");
    assert_eq!(calls[0].body_str(), r#"{"credential":"Bearer good"}"#);

    proxy.answer(&calls[0], response(200, r#"{"token": "t1"}"#));
    let calls = proxy.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster(), "users");
    assert_eq!(calls[0].header("authorization"), Some("Bearer t1"));
    assert_eq!(proxy.resumes(stream, Direction::Request), 0);

    proxy.answer(&calls[0], response(200, r#"{"id": "u1", "name": "alice"}"#));
    assert_eq!(proxy.resumes(stream, Direction::Request), 1);
    assert_eq!(
        header(&proxy, stream, Direction::Request, "x-user-id").as_deref(),
        Some("u1")
    );
    assert_eq!(
        header(&proxy, stream, Direction::Request, "x-user-name").as_deref(),
        Some("alice")
    );
    assert_eq!(
        header(&proxy, stream, Direction::Request, "x-user-admin"),
        None
    );

    // The body, held while the plugin awaited, reaches the upstream intact.
    assert_eq!(
        proxy.send_body(stream, Direction::Request, b"payload", true),
        Action::Continue
    );
    assert_eq!(proxy.body(stream, Direction::Request), b"payload");
    proxy.end_stream(stream);
    assert_eq!(proxy.local_reply(stream), None);
    assert_eq!(proxy.resumes(stream, Direction::Request), 1);
    assert!(proxy.failure().is_none());
}

#[test]
fn auth_flow_wasm_fails_closed() {
    let proxy = start("auth_flow", AUTH_CONFIG);

    let missing = proxy.open_stream();
    proxy.send_headers(missing, Direction::Request, &[(":path", "/")], true);
    assert_eq!(
        proxy.local_reply(missing).map(|reply| reply.status),
        Some(401)
    );
    assert!(proxy.calls().is_empty());

    let denied = proxy.open_stream();
    proxy.send_headers(
        denied,
        Direction::Request,
        &[("authorization", "Bearer bad")],
        true,
    );
    proxy.answer(&proxy.calls()[0], response(401, "no"));
    assert_eq!(
        proxy.local_reply(denied).map(|reply| reply.status),
        Some(403)
    );

    let down = proxy.open_stream();
    proxy.send_headers(
        down,
        Direction::Request,
        &[("authorization", "Bearer x")],
        true,
    );
    proxy.fail_call(&proxy.calls()[0], &CallFailure::Timeout);
    let reply = proxy.local_reply(down).expect("a reply");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (503, "plugin_error")
    );
    assert!(
        proxy
            .logs_at(LogLevel::Error)
            .iter()
            .any(|line| line.contains("no response from cluster `auth` within the call's timeout"))
    );

    let malformed = proxy.open_stream();
    proxy.send_headers(
        malformed,
        Direction::Request,
        &[("authorization", "Bearer x")],
        true,
    );
    proxy.answer(&proxy.calls()[0], response(200, "{not json"));
    assert_eq!(
        proxy.local_reply(malformed).map(|reply| reply.status),
        Some(503)
    );

    for stream in [missing, denied, down, malformed] {
        assert_eq!(proxy.resumes(stream, Direction::Request), 0);
    }
}

#[test]
fn auth_flow_wasm_survives_a_client_that_goes_away_mid_call() {
    let proxy = start("auth_flow", AUTH_CONFIG);
    let gone = proxy.open_stream();
    proxy.send_headers(
        gone,
        Direction::Request,
        &[("authorization", "Bearer good")],
        true,
    );
    let call = proxy.calls()[0].clone();
    proxy.end_stream(gone);
    // The proxy still answers the call, on the root context; the plugin ignores it.
    proxy.answer(&call, response(200, r#"{"token": "t1"}"#));
    assert!(proxy.calls().is_empty());
    assert!(proxy.failure().is_none());

    // And the next request is served normally.
    let next = proxy.open_stream();
    proxy.send_headers(
        next,
        Direction::Request,
        &[("authorization", "Bearer good")],
        true,
    );
    proxy.answer(&proxy.calls()[0], response(200, r#"{"token": "t1"}"#));
    proxy.answer(
        &proxy.calls()[0],
        response(200, r#"{"id": "u2", "name": "bob"}"#),
    );
    assert_eq!(proxy.resumes(next, Direction::Request), 1);
}

#[test]
fn hello_and_fan_out_wasm_behave_as_natively() {
    let hello = start("hello", r#"{"mockEnable": true}"#);
    let stream = hello.open_stream();
    assert_eq!(
        hello.send_headers(stream, Direction::Request, &[(":path", "/")], true),
        Action::Pause
    );
    let reply = hello.local_reply(stream).expect("a reply");
    assert_eq!(
        (reply.status, reply.body_str().as_str()),
        (200, "hello world")
    );

    let fan_out = start(
        "fan_out",
        r#"{"profile": {"cluster": "profile", "path": "/profile"},
            "flags": {"cluster": "flags", "path": "/flags"}}"#,
    );
    let stream = fan_out.open_stream();
    fan_out.send_headers(stream, Direction::Request, &[("x-user-id", "u1")], true);
    let calls = fan_out.calls();
    assert_eq!(calls.len(), 2, "both calls are in flight at once");
    fan_out.answer(&calls[1], response(200, r#"{"flags": ["a", "b"]}"#));
    fan_out.answer(&calls[0], response(200, r#"{"tier": "gold"}"#));
    assert_eq!(fan_out.resumes(stream, Direction::Request), 1);
    assert_eq!(
        header(&fan_out, stream, Direction::Request, "x-profile-tier").as_deref(),
        Some("gold")
    );
    assert_eq!(
        header(&fan_out, stream, Direction::Request, "x-flags").as_deref(),
        Some("a,b")
    );
}

#[test]
fn a_bad_configuration_is_rejected_naming_the_field() {
    let wasm = crate::common::plugin_wasm("http_call");
    let error = start_emulated(
        &wasm,
        ProxyConfig {
            plugin_config: br#"{"serviceSource": "k8s", "serviceName": "a", "servicePort": 80}"#
                .to_vec(),
            ..ProxyConfig::default()
        },
    )
    .err()
    .expect("rejected");
    assert!(error.to_string().contains("requestPath"), "{error}");
}

#[test]
fn a_trap_fails_the_stream_with_503_and_every_stream_after_it() {
    let wasm = wat::parse_str(
        r#"(module
             (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (global $heap (mut i32) (i32.const 4096))
             (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
               (local $ptr i32)
               (local.set $ptr (global.get $heap))
               (global.set $heap (i32.add (global.get $heap) (local.get $size)))
               (local.get $ptr))
             (data (i32.const 100) "panicked at src/lib.rs:7:5: boom")
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
               (drop (call $log (i32.const 5) (i32.const 100) (i32.const 32)))
               unreachable))"#,
    )
    .unwrap();
    let proxy = start_emulated(&wasm, ProxyConfig::default()).unwrap();
    let first = proxy.open_stream();
    assert_eq!(
        proxy.send_headers(first, Direction::Request, &[(":path", "/")], true),
        Action::Pause
    );
    let reply = proxy.local_reply(first).expect("a 503");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (503, "wasm_fail_stream")
    );
    let failure = proxy.failure().expect("the plugin failed");
    assert!(failure.message.contains("boom"), "{failure}");

    // Like Envoy's FAIL_CLOSED: the VM is broken, every later request gets 503.
    let second = proxy.open_stream();
    proxy.send_headers(second, Direction::Request, &[(":path", "/")], true);
    assert_eq!(
        proxy.local_reply(second).map(|reply| reply.status),
        Some(503)
    );
}

/// Prints the wasm instructions (fuel) each step of one auth-flow request consumed (a step is
/// one proxy event and every callback it caused), on the success path and on a failure path.
/// `cargo test -p proxy-async-host --test host -- --nocapture fuel` shows the table.
#[test]
fn fuel_per_callback_of_an_auth_flow_request() {
    let proxy = start("auth_flow", AUTH_CONFIG);
    let total = |proxy: &WasmProxy| proxy.plugin().total_fuel();
    let mut rows: Vec<(&str, u64)> = Vec::new();

    let before = total(&proxy);
    let stream = proxy.open_stream();
    rows.push(("on_context_create", total(&proxy) - before));
    let before = total(&proxy);
    proxy.send_headers(
        stream,
        Direction::Request,
        &[(":path", "/"), ("authorization", "Bearer good")],
        true,
    );
    rows.push((
        "on_request_headers (dispatches auth)",
        total(&proxy) - before,
    ));
    let before = total(&proxy);
    proxy.answer(&proxy.calls()[0], response(200, r#"{"token": "t1"}"#));
    rows.push((
        "on_http_call_response (auth; dispatches users)",
        total(&proxy) - before,
    ));
    let before = total(&proxy);
    proxy.answer(
        &proxy.calls()[0],
        response(200, r#"{"id": "u1", "name": "alice"}"#),
    );
    rows.push((
        "on_http_call_response (users; resumes)",
        total(&proxy) - before,
    ));
    let before = total(&proxy);
    proxy.send_headers(stream, Direction::Response, &[(":status", "200")], true);
    rows.push(("on_response_headers", total(&proxy) - before));
    let before = total(&proxy);
    proxy.end_stream(stream);
    rows.push(("on_log, on_done, on_delete", total(&proxy) - before));
    let success: u64 = rows.iter().map(|(_, spent)| spent).sum();

    let before = total(&proxy);
    let failing = proxy.open_stream();
    proxy.send_headers(
        failing,
        Direction::Request,
        &[("authorization", "Bearer x")],
        true,
    );
    proxy.answer(&proxy.calls()[0], None);
    proxy.end_stream(failing);
    let failure = total(&proxy) - before;

    println!("auth-flow, wasm instructions (fuel) per step of one request:");
    for (callback, spent) in &rows {
        println!("  {callback:<50} {spent:>8}");
    }
    println!("  {:<50} {success:>8}", "success path, whole request");
    println!(
        "  {:<50} {failure:>8}",
        "failure path (auth timeout -> 503), whole request"
    );
    println!("  linear memory: {} bytes", proxy.plugin().memory_size());
    assert!(rows.iter().all(|(_, spent)| *spent > 0));
    assert!(failure > 0);
}

#[test]
fn close_stream_resets_the_stream_after_the_callback() {
    let wasm = wat::parse_str(
        r#"(module
             (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
               (drop (call $close (i32.const 0)))
               (i32.const 1)))"#,
    )
    .unwrap();
    let proxy = start_emulated(&wasm, ProxyConfig::default()).unwrap();
    let stream = proxy.open_stream();
    assert_eq!(
        proxy.send_headers(stream, Direction::Request, &[(":path", "/")], false),
        Action::Pause
    );
    // Like Envoy: the reset takes effect after the callback, and the context is finished.
    assert!(proxy.is_reset(stream));
    assert_eq!(proxy.local_reply(stream), None);
    assert_eq!(proxy.resumes(stream, Direction::Request), 0);
    assert!(proxy.failure().is_none());
}

#[test]
fn a_grpc_call_is_recorded_answered_and_its_status_readable_in_the_callback() {
    let wasm = wat::parse_str(
        r#"(module
             (import "env" "proxy_grpc_call" (func $grpc_call
               (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
             (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
             (import "env" "proxy_set_effective_context" (func $enter (param i32) (result i32)))
             (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
             (memory (export "memory") 1)
             (global $heap (mut i32) (i32.const 4096))
             (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
               (local $ptr i32)
               (local.set $ptr (global.get $heap))
               (global.set $heap (i32.add (global.get $heap) (local.get $size)))
               (local.get $ptr))
             (data (i32.const 100) "grpc")
             (data (i32.const 110) "svc.S")
             (data (i32.const 120) "M")
             (data (i32.const 130) "hi")
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
               (drop (call $grpc_call (i32.const 100) (i32.const 4) (i32.const 110) (i32.const 5)
                 (i32.const 120) (i32.const 1) (i32.const 0) (i32.const 0)
                 (i32.const 130) (i32.const 2) (i32.const 1000) (i32.const 200)))
               (i32.const 1))
             ;; Resumes the stream only when proxy_get_status answers OK with code 0.
             (func (export "proxy_on_grpc_close") (param i32 i32 i32)
               (if (i32.eqz (call $get_status (i32.const 300) (i32.const 304) (i32.const 308)))
                 (then (if (i32.eqz (i32.load (i32.const 300)))
                   (then
                     (drop (call $enter (i32.const 2)))
                     (drop (call $continue (i32.const 0)))))))))"#,
    )
    .unwrap();
    let proxy = start_emulated(&wasm, ProxyConfig::default()).unwrap();
    let stream = proxy.open_stream();
    assert_eq!(
        proxy.send_headers(stream, Direction::Request, &[(":path", "/")], true),
        Action::Pause
    );
    let calls = proxy.grpc_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        (call.cluster(), call.service(), call.method()),
        ("grpc", "svc.S", "M")
    );
    assert_eq!(call.messages(), [b"hi".to_vec()]);
    assert_eq!(call.timeout(), Some(std::time::Duration::from_secs(1)));

    // A unary call ends with its reply (`proxy_on_grpc_receive`) or with a close carrying
    // the status; this module acts on the close.
    proxy.grpc_finish(call, 0, "ok");
    assert_eq!(proxy.resumes(stream, Direction::Request), 1);
    assert!(proxy.grpc_calls().is_empty());
    assert!(proxy.failure().is_none());
}

#[test]
fn ticks_and_shared_queues_reach_the_root_context() {
    let wasm = wat::parse_str(
        r#"(module
             (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
             (import "env" "proxy_set_tick_period_milliseconds" (func $tick_period (param i32) (result i32)))
             (import "env" "proxy_register_shared_queue" (func $register (param i32 i32 i32) (result i32)))
             (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
             (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (global $heap (mut i32) (i32.const 4096))
             (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
               (local $ptr i32)
               (local.set $ptr (global.get $heap))
               (global.set $heap (i32.add (global.get $heap) (local.get $size)))
               (local.get $ptr))
             (data (i32.const 100) "jobs")
             (data (i32.const 110) "tick!")
             (func (export "proxy_on_configure") (param i32 i32) (result i32)
               (drop (call $tick_period (i32.const 100)))
               (drop (call $register (i32.const 100) (i32.const 4) (i32.const 200)))
               (i32.const 1))
             (func (export "proxy_on_tick") (param i32)
               (drop (call $enqueue (i32.load (i32.const 200)) (i32.const 110) (i32.const 5))))
             ;; Logs what it dequeues.
             (func (export "proxy_on_queue_ready") (param i32 i32)
               (if (i32.eqz (call $dequeue (local.get 1) (i32.const 300) (i32.const 304)))
                 (then (drop (call $log (i32.const 2)
                   (i32.load (i32.const 300)) (i32.load (i32.const 304))))))))"#,
    )
    .unwrap();
    let proxy = start_emulated(&wasm, ProxyConfig::default()).unwrap();
    assert_eq!(
        proxy.tick_period(),
        Some(std::time::Duration::from_millis(100))
    );
    assert_eq!(proxy.deliver_ready_queues(), 0);
    assert!(proxy.tick());
    assert!(proxy.tick());
    // Two items, one queue: one notification; the plugin drains one item per notification.
    assert_eq!(proxy.deliver_ready_queues(), 1);
    assert_eq!(proxy.logs_at(LogLevel::Info), ["tick!"]);
    assert!(proxy.failure().is_none());
}
