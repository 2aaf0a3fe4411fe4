//! The workspace's example plugins, compiled to wasm32-wasip1, running in the host.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use crate::common::{Recorder, plugin_wasm};
use proxy_async_host::{Action, LogLevel, Plugin, PluginModule};

const ROOT: u32 = 1;
const STREAM: u32 = 2;

/// Loads `name`, creates the root context and configures it with `config`.
fn configured(name: &str, config: &str) -> (Plugin<Recorder>, bool) {
    let mut plugin = Plugin::load(&plugin_wasm(name), Recorder::with_config(config)).unwrap();
    println!(
        "{name}: load (_initialize) {} fuel",
        plugin.last_call_fuel()
    );
    plugin.on_context_create(ROOT, 0).unwrap();
    println!(
        "{name}: on_context_create(root) {} fuel",
        plugin.last_call_fuel()
    );
    assert!(plugin.on_vm_start(ROOT, 0).unwrap());
    println!("{name}: on_vm_start {} fuel", plugin.last_call_fuel());
    let size = u32::try_from(config.len()).unwrap();
    let configured = plugin.on_configure(ROOT, size).unwrap();
    println!("{name}: on_configure {} fuel", plugin.last_call_fuel());
    (plugin, configured)
}

#[test]
fn hello_loads_and_exports_the_abi() {
    let module = PluginModule::new(&plugin_wasm("hello")).unwrap();
    let imports = module.imports();
    assert!(imports.contains(&("env".into(), "proxy_log".into())));
    assert!(imports.contains(&("wasi_snapshot_preview1".into(), "fd_write".into())));
    let mut plugin = module.instantiate(Recorder::default()).unwrap();
    assert_eq!(plugin.abi_version(), Some("0_2_1"));
    assert!(plugin.has_export("proxy_on_request_headers"));
    assert!(plugin.last_call_fuel() > 0, "_initialize runs wasm");
    let memory = plugin.memory_size();
    println!(
        "hello: linear memory {memory} bytes ({} pages)",
        memory / 65536
    );
    assert!(memory >= 65536 && memory.is_multiple_of(65536));
}

/// The proxy-wasm hostcalls a plugin may or may not use: a module imports those it calls and
/// no others (a host refuses a module that imports what it lacks, and each import carries its
/// code into the module).
const OPTIONAL_HOSTCALLS: [&str; 17] = [
    "proxy_http_call",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_register_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_call_foreign_function",
    "proxy_redis_init",
    "proxy_redis_call",
];

fn optional_imports(plugin: &str) -> Vec<String> {
    let imports = PluginModule::new(&plugin_wasm(plugin)).unwrap().imports();
    OPTIONAL_HOSTCALLS
        .iter()
        .filter(|name| imports.contains(&("env".to_string(), name.to_string())))
        .map(|name| name.to_string())
        .collect()
}

#[test]
fn a_plugin_imports_only_the_optional_hostcalls_it_uses() {
    assert_eq!(optional_imports("hello"), Vec::<String>::new());
    assert_eq!(optional_imports("auth_flow"), ["proxy_http_call"]);
    // Metrics, shared data and properties: state_plugin uses each.
    assert_eq!(
        optional_imports("state_plugin"),
        [
            "proxy_http_call",
            "proxy_get_property",
            "proxy_set_property",
            "proxy_get_shared_data",
            "proxy_set_shared_data",
            "proxy_define_metric",
            "proxy_increment_metric",
            "proxy_record_metric",
            "proxy_get_metric",
        ]
    );
    // gRPC, shared queues and foreign functions: calls_plugin uses them, and no metrics.
    assert_eq!(
        optional_imports("calls_plugin"),
        [
            "proxy_http_call",
            "proxy_grpc_call",
            "proxy_grpc_stream",
            "proxy_register_shared_queue",
            "proxy_enqueue_shared_queue",
            "proxy_dequeue_shared_queue",
            "proxy_call_foreign_function",
        ]
    );
}

#[test]
fn hello_configures_and_adds_the_header() {
    let (mut plugin, configured) = configured("hello", r#"{"mockEnable": false}"#);
    assert!(configured, "logs: {:?}", plugin.hostcalls().logs);

    plugin.on_context_create(STREAM, ROOT).unwrap();
    plugin.hostcalls_mut().request_headers = vec![
        (b":method".to_vec(), b"GET".to_vec()),
        (b":path".to_vec(), b"/".to_vec()),
    ];
    let action = plugin.on_request_headers(STREAM, 2, true).unwrap();
    let fuel = plugin.last_call_fuel();
    println!("hello: on_request_headers {fuel} fuel");
    assert_eq!(action, Action::Continue);
    assert!(fuel > 0);
    let host = plugin.hostcalls();
    assert!(
        host.calls
            .contains(&"replace_header_map_value(HttpRequestHeaders, hello, world)".to_string()),
        "calls: {:?}",
        host.calls
    );
    assert_eq!(host.header("hello").as_deref(), Some("world"));
    assert!(host.local_responses.is_empty());
    assert!(host.logs_at(LogLevel::Critical).is_empty());
    drop(host);

    // The rest of the stream's life.
    assert_eq!(
        plugin.on_response_headers(STREAM, 0, true).unwrap(),
        Action::Continue
    );
    println!(
        "hello: on_response_headers {} fuel",
        plugin.last_call_fuel()
    );
    plugin.on_log(STREAM).unwrap();
    assert!(plugin.on_done(STREAM).unwrap());
    plugin.on_delete(STREAM).unwrap();
    println!(
        "hello: total {} fuel, memory {} bytes",
        plugin.total_fuel(),
        plugin.memory_size()
    );
}

#[test]
fn hello_mock_enable_replies_locally() {
    let (mut plugin, configured) = configured("hello", r#"{"mockEnable": true}"#);
    assert!(configured);
    plugin.on_context_create(STREAM, ROOT).unwrap();
    let action = plugin.on_request_headers(STREAM, 0, true).unwrap();
    assert_eq!(action, Action::Pause);
    let host = plugin.hostcalls();
    let reply = &host.local_responses;
    assert_eq!(reply.len(), 1, "calls: {:?}", host.calls);
    assert_eq!(reply[0].status, 200);
    assert_eq!(reply[0].body, b"hello world");
}

#[test]
fn hello_rejects_a_bad_config_naming_the_field() {
    let (plugin, configured) = configured("hello", r#"{"mockEnable": "x"}"#);
    assert!(!configured);
    let errors = plugin.hostcalls().logs_at(LogLevel::Error);
    println!("hello: bad config logged {errors:?}");
    assert!(
        errors.iter().any(|line| line.contains("mockEnable")),
        "logs: {:?}",
        plugin.hostcalls().logs
    );
}

#[test]
fn auth_flow_dispatches_the_token_call_and_pauses() {
    let config = r#"{"auth": {"cluster": "auth", "authority": "auth.local"},
                     "users": {"cluster": "users"}}"#;
    let (mut plugin, configured) = configured("auth_flow", config);
    assert!(configured, "logs: {:?}", plugin.hostcalls().logs);

    plugin.on_context_create(STREAM, ROOT).unwrap();
    plugin.hostcalls_mut().request_headers = vec![
        (b":method".to_vec(), b"GET".to_vec()),
        (b":path".to_vec(), b"/resource".to_vec()),
        (b":authority".to_vec(), b"example.com".to_vec()),
        (b"authorization".to_vec(), b"secret-credential".to_vec()),
        (b"x-user-id".to_vec(), b"forged".to_vec()),
    ];
    let action = plugin.on_request_headers(STREAM, 5, true).unwrap();
    println!(
        "auth_flow: on_request_headers {} fuel",
        plugin.last_call_fuel()
    );
    assert_eq!(action, Action::Pause);

    let host = plugin.hostcalls();
    assert_eq!(host.http_calls.len(), 1, "calls: {:?}", host.calls);
    let call = &host.http_calls[0];
    assert_eq!(call.upstream, "auth");
    let header = |name: &str| {
        call.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":method"), Some("POST"));
    assert_eq!(header(":path"), Some("/token"));
    assert_eq!(header(":authority"), Some("auth.local"));
    assert_eq!(call.timeout_ms, 500);
    let body: String = String::from_utf8(call.body.clone()).unwrap();
    assert!(body.contains("secret-credential"), "body: {body}");
    // The forged identity header was stripped before anything else.
    assert_eq!(host.header("x-user-id"), None);
    assert!(host.local_responses.is_empty());
}

#[test]
fn auth_flow_without_credential_replies_401() {
    let config = r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#;
    let (mut plugin, configured) = configured("auth_flow", config);
    assert!(configured);
    plugin.on_context_create(STREAM, ROOT).unwrap();
    plugin.hostcalls_mut().request_headers = vec![(b":path".to_vec(), b"/".to_vec())];
    assert_eq!(
        plugin.on_request_headers(STREAM, 1, true).unwrap(),
        Action::Pause
    );
    let host = plugin.hostcalls();
    assert!(host.http_calls.is_empty());
    assert_eq!(host.local_responses.len(), 1);
    assert_eq!(host.local_responses[0].status, 401);
    assert_eq!(host.local_responses[0].details, "auth_missing_credential");
}
