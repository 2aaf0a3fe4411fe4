//! A compiled plugin that awaits Redis commands (`host/fixtures/redis-plugin`, on our SDK)
//! in the emulated proxy, whose `proxy_redis_*` hostcalls go to a real `redis-server` each
//! test starts: Higress's Redis extension end to end through the module's imports and its
//! `proxy_on_redis_call_response` export.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use proxy_async_host::proxy_async_emulator::ProxyState;
use proxy_async_host::proxy_async_emulator::{Action, Direction, Proxy, ProxyConfig, RedisServer};
use proxy_async_host::{Plugin, PluginModule, start_emulated};

type WasmProxy = Proxy<Plugin<ProxyState>>;

const CLUSTER: &str = "outbound|6379||redis.static";

/// The fixture's module, built once per test process.
fn wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| crate::common::plugin_wasm("redis_plugin"))
}

fn start(server: Option<&RedisServer>, password: &str) -> WasmProxy {
    start_with(server, password, None)
}

fn start_with(
    server: Option<&RedisServer>,
    password: &str,
    clusters: Option<BTreeSet<String>>,
) -> WasmProxy {
    let config = format!(r#"{{"cluster": "{CLUSTER}", "password": "{password}"}}"#);
    let proxy = start_emulated(
        wasm(),
        ProxyConfig {
            plugin_config: config.into_bytes(),
            clusters,
            ..ProxyConfig::default()
        },
    )
    .expect("the plugin accepts its configuration");
    if let Some(server) = server {
        proxy.state().set_redis_server(CLUSTER, server.addr());
    }
    proxy
}

/// One request from `visitor`, its Redis calls answered by the server: the reply's status
/// and body.
fn visit(proxy: &WasmProxy, visitor: &str) -> (u16, String) {
    let stream = proxy.open_stream();
    let action = proxy.send_headers(
        stream,
        Direction::Request,
        &[(":path", "/"), ("x-visitor", visitor)],
        true,
    );
    assert_eq!(action, Action::Pause, "the hook awaits Redis");
    proxy.run_redis();
    let reply = proxy.local_reply(stream).expect("the plugin replies");
    proxy.end_stream(stream);
    assert_eq!(proxy.failure(), None);
    (reply.status, reply.body_str())
}

#[test]
fn a_compiled_plugin_awaits_redis_commands_on_a_real_server() {
    let server = RedisServer::start();
    let proxy = start(Some(&server), "");
    let visits = [
        visit(&proxy, "alice"),
        visit(&proxy, "bob"),
        visit(&proxy, "alice"),
    ];
    assert_eq!(
        visits.map(|(status, body)| format!("{status} {body}")),
        [
            "200 alice: 1, total: 1, first: alice",
            "200 bob: 1, total: 2, first: bob",
            "200 alice: 2, total: 3, first: alice",
        ]
    );
    assert_eq!(server.command(&["HGET", "visits", "alice"]), b"$1\r\n2\r\n");
    // The client was initialized once, by the first command, with Higress's default options.
    let inits = proxy.state().redis_inits();
    assert_eq!(inits.len(), 1);
    assert_eq!(
        inits[0].upstream(),
        format!("{CLUSTER}?buffer_flush_timeout=3&max_buffer_size_before_flush=1024")
    );
}

#[test]
fn redis_failures_reach_the_compiled_plugin_as_typed_errors() {
    let mut server = RedisServer::with_password("right");
    // A server error reply.
    let proxy = start(Some(&server), "right");
    server.command(&["SET", "visits", "not a hash"]);
    assert_eq!(visit(&proxy, "alice"), (502, "WRONGTYPE".to_string()));
    // A wrong password: NOAUTH, once more after a new init, then the error.
    let wrong = start(Some(&server), "wrong");
    assert_eq!(visit(&wrong, "alice"), (502, "NOAUTH".to_string()));
    assert_eq!(wrong.state().redis_inits().len(), 2);
    // A Redis that is down: no reply.
    server.stop();
    let (status, body) = visit(&proxy, "alice");
    assert_eq!(status, 502);
    assert!(
        body.starts_with("cannot connect to redis cluster"),
        "{body}"
    );
    // A cluster the proxy does not know: the init is refused and nothing is sent.
    let unknown = start_with(None, "", Some(BTreeSet::new()));
    let stream = unknown.open_stream();
    unknown.send_headers(stream, Direction::Request, &[(":path", "/")], true);
    let reply = unknown.local_reply(stream).expect("the plugin replies");
    assert!(reply.body_str().contains("is not ready"), "{reply:?}");
    assert!(unknown.redis_calls().is_empty());
}

#[test]
fn replies_that_are_not_resp_or_come_late_do_not_break_the_module() {
    let proxy = start(None, "");
    let stream = proxy.open_stream();
    proxy.send_headers(stream, Direction::Request, &[(":path", "/")], true);
    let call = &proxy.redis_calls()[0];
    assert_eq!(
        call.args(),
        Some(vec![
            "HINCRBY".into(),
            "visits".into(),
            String::new(),
            "1".into()
        ])
    );
    proxy.answer_redis(call, Some(b"$999\r\nshort".to_vec()));
    let reply = proxy.local_reply(stream).expect("the plugin replies");
    assert!(reply.body_str().contains("is not RESP"), "{reply:?}");
    proxy.end_stream(stream);

    // The client leaves mid-command; the reply comes after the stream is gone.
    let stream = proxy.open_stream();
    proxy.send_headers(stream, Direction::Request, &[(":path", "/")], true);
    proxy.end_stream(stream);
    let late = proxy.redis_calls();
    assert_eq!(late.len(), 1);
    proxy.answer_redis(&late[0], Some(b":1\r\n".to_vec()));
    proxy.deliver_redis_response(12_345, Some(b"+OK\r\n".to_vec()));
    assert_eq!(proxy.failure(), None);
    assert!(
        proxy.redis_calls().is_empty(),
        "nothing followed the late reply"
    );
}

#[test]
fn only_plugins_that_send_redis_commands_import_the_redis_hostcalls() {
    let redis_imports = |wasm: &[u8]| -> Vec<String> {
        PluginModule::new(wasm)
            .expect("the module compiles")
            .imports()
            .into_iter()
            .filter(|(_, name)| name.contains("redis"))
            .map(|(module, name)| format!("{module}.{name}"))
            .collect()
    };
    let mut imports = redis_imports(wasm());
    imports.sort();
    assert_eq!(imports, ["env.proxy_redis_call", "env.proxy_redis_init"]);
    // Envoy refuses a module with an import it does not provide: plugins without Redis must
    // not import it.
    assert!(redis_imports(&crate::common::plugin_wasm("hello")).is_empty());
}
