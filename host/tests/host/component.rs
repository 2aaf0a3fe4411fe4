//! The examples' component build (`wasm32-wasip2`, the `plugin` world of `wit/`) in the
//! emulated proxy: hooks are async exports, calls are awaited host imports.

#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use std::rc::Rc;

use proxy_async_host::component::{ComponentModule, ComponentPlugin};
use proxy_async_host::proxy_async_emulator::{
    Action, Direction, Pairs, Proxy, ProxyConfig, ProxyState,
};

type ComponentProxy = Proxy<ComponentPlugin>;

const AUTH_CONFIG: &str = r#"{"auth": {"cluster": "auth", "authority": "auth.local"},
                              "users": {"cluster": "users"}}"#;

fn start(plugin: &str, config: &str) -> ComponentProxy {
    let wasm = crate::common::component_wasm(plugin);
    let module = ComponentModule::new(&wasm).expect("the component compiles");
    let state = Rc::new(std::cell::RefCell::new(ProxyState::default()));
    let plugin = module
        .instantiate(Rc::clone(&state))
        .expect("the component instantiates");
    Proxy::start(
        state,
        plugin,
        ProxyConfig {
            plugin_config: config.as_bytes().to_vec(),
            ..ProxyConfig::default()
        },
    )
    .expect("the component accepts its configuration")
}

fn response(status: u16, body: &str) -> Option<(Pairs, Vec<u8>)> {
    // JSON answers say so: `auth-flow` refuses a 200 that is not `application/json`.
    let mut headers = vec![(":status".to_string(), status.to_string().into_bytes())];
    if body.starts_with('{') {
        headers.push(("content-type".to_string(), b"application/json".to_vec()));
    }
    Some((headers, body.as_bytes().to_vec()))
}

fn header(proxy: &ComponentProxy, stream: u32, name: &str) -> Option<String> {
    proxy
        .headers(stream, Direction::Request)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

#[test]
fn auth_flow_component_is_suspended_between_its_two_awaited_calls() {
    let proxy = start("auth_flow", AUTH_CONFIG);
    let stream = proxy.open_stream();
    let request = [
        (":method", "GET"),
        (":path", "/orders"),
        ("authorization", "Bearer good"),
        ("x-user-admin", "1"),
    ];
    assert_eq!(
        proxy.send_headers(stream, Direction::Request, &request, true),
        Action::Pause
    );
    // The hook export is running, suspended in its first `http-client.send`.
    assert_eq!(proxy.plugin().running_hooks(), 1);
    assert_eq!(proxy.plugin().pending_calls(), 1);
    let calls = proxy.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].cluster(), calls[0].path()), ("auth", "/token"));
    assert_eq!(calls[0].authority(), "auth.local");

    proxy.answer(&calls[0], response(200, r#"{"token": "t1"}"#));
    // The first import returned into the guest, which went on to the second call and is
    // suspended again inside the same export call: no resume, the second call pending.
    assert_eq!(proxy.plugin().running_hooks(), 1);
    assert_eq!(proxy.plugin().pending_calls(), 1);
    assert_eq!(proxy.resumes(stream, Direction::Request), 0);
    let calls = proxy.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster(), "users");
    assert_eq!(calls[0].header("authorization"), Some("Bearer t1"));

    proxy.answer(&calls[0], response(200, r#"{"id": "u1", "name": "alice"}"#));
    assert_eq!(proxy.plugin().running_hooks(), 0);
    assert_eq!(proxy.plugin().pending_calls(), 0);
    assert_eq!(proxy.resumes(stream, Direction::Request), 1);
    assert_eq!(header(&proxy, stream, "x-user-id").as_deref(), Some("u1"));
    assert_eq!(
        header(&proxy, stream, "x-user-name").as_deref(),
        Some("alice")
    );
    assert_eq!(header(&proxy, stream, "x-user-admin"), None);
    assert!(proxy.failure().is_none());
}

#[test]
fn auth_flow_component_streams_interleave() {
    let proxy = start("auth_flow", AUTH_CONFIG);
    let request = |credential: &'static str| {
        [
            (":method", "GET"),
            (":path", "/"),
            ("authorization", credential),
        ]
    };
    let first = proxy.open_stream();
    let second = proxy.open_stream();
    proxy.send_headers(first, Direction::Request, &request("Bearer one"), true);
    proxy.send_headers(second, Direction::Request, &request("Bearer two"), true);
    assert_eq!(proxy.plugin().running_hooks(), 2);
    let calls = proxy.calls();
    assert_eq!(calls.len(), 2);
    // The second stream's auth answers first and is denied; the first goes on.
    proxy.answer(&calls[1], response(401, "{}"));
    assert_eq!(
        proxy.local_reply(second).map(|reply| reply.status),
        Some(403)
    );
    assert_eq!(proxy.plugin().running_hooks(), 1);
    proxy.answer(&calls[0], response(200, r#"{"token": "t1"}"#));
    let users = proxy.calls();
    assert_eq!(users.len(), 1);
    proxy.answer(&users[0], response(200, r#"{"id": "u1", "name": "alice"}"#));
    assert_eq!(proxy.resumes(first, Direction::Request), 1);
    assert_eq!(proxy.resumes(second, Direction::Request), 0);
}

#[test]
fn client_gone_mid_call_cancels_the_hook_and_ignores_the_late_answer() {
    let proxy = start("auth_flow", AUTH_CONFIG);
    let stream = proxy.open_stream();
    proxy.send_headers(
        stream,
        Direction::Request,
        &[
            (":method", "GET"),
            (":path", "/"),
            ("authorization", "Bearer x"),
        ],
        true,
    );
    let calls = proxy.calls();
    proxy.end_stream(stream);
    assert_eq!(proxy.plugin().running_hooks(), 0);
    assert_eq!(proxy.plugin().pending_calls(), 0);
    proxy.answer(&calls[0], response(200, r#"{"token": "t1"}"#));
    assert!(proxy.failure().is_none());
    assert_eq!(proxy.resumes(stream, Direction::Request), 0);
    // The plugin still serves the next stream.
    let next = proxy.open_stream();
    assert_eq!(
        proxy.send_headers(
            next,
            Direction::Request,
            &[(":method", "GET"), (":path", "/")],
            true
        ),
        Action::Pause
    );
    assert_eq!(proxy.local_reply(next).map(|reply| reply.status), Some(401));
}

#[test]
fn fan_out_component_has_both_calls_in_flight() {
    let proxy = start(
        "fan_out",
        r#"{"profile": {"cluster": "profile"}, "flags": {"cluster": "flags"}}"#,
    );
    let stream = proxy.open_stream();
    proxy.send_headers(
        stream,
        Direction::Request,
        &[(":method", "GET"), (":path", "/"), ("x-user-id", "u7")],
        true,
    );
    assert_eq!(proxy.plugin().pending_calls(), 2);
    let calls = proxy.calls();
    proxy.answer(&calls[1], response(200, r#"{"flags": ["a"]}"#));
    proxy.answer(&calls[0], response(200, r#"{"tier": "gold"}"#));
    assert_eq!(proxy.resumes(stream, Direction::Request), 1);
    assert_eq!(
        header(&proxy, stream, "x-profile-tier").as_deref(),
        Some("gold")
    );
    assert_eq!(header(&proxy, stream, "x-flags").as_deref(), Some("a"));
}

#[test]
fn hello_component_rejects_a_bad_configuration_naming_the_field() {
    let wasm = crate::common::component_wasm("hello");
    let module = ComponentModule::new(&wasm).unwrap();
    let state = Rc::new(std::cell::RefCell::new(ProxyState::default()));
    let plugin = module.instantiate(Rc::clone(&state)).unwrap();
    let rejected = Proxy::start(
        state,
        plugin,
        ProxyConfig {
            plugin_config: br#"{"mockEnable": "yes"}"#.to_vec(),
            ..ProxyConfig::default()
        },
    )
    .err()
    .expect("the configuration is rejected");
    assert!(rejected.to_string().contains("mockEnable"), "{rejected}");
}

#[test]
fn auth_flow_component_fuel_per_request() {
    let proxy = start("auth_flow", AUTH_CONFIG);
    let stream = proxy.open_stream();
    let before = proxy.plugin().total_fuel();
    proxy.send_headers(
        stream,
        Direction::Request,
        &[
            (":method", "GET"),
            (":path", "/"),
            ("authorization", "Bearer good"),
        ],
        true,
    );
    let calls = proxy.calls();
    proxy.answer(&calls[0], response(200, r#"{"token": "t1"}"#));
    let calls = proxy.calls();
    proxy.answer(&calls[0], response(200, r#"{"id": "u1", "name": "alice"}"#));
    proxy.end_stream(stream);
    let used = proxy.plugin().total_fuel() - before;
    println!("auth-flow component: {used} wasm instructions per successful request");
    assert!(used > 0);
}
