//! Hand-written WAT modules: load errors, traps, poisoning, fuel, guest-memory handling.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use crate::common::Recorder;
use proxy_async_host::{Action, LogLevel, Plugin, PluginError};

/// A module with a memory, a bump allocator, and `body` (imports must come first, so they are
/// a separate argument).
fn module(imports: &str, body: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
             {imports}
             (memory (export "memory") 1)
             (global $heap (mut i32) (i32.const 4096))
             (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
               (local $ptr i32)
               (local.set $ptr (global.get $heap))
               (global.set $heap (i32.add (global.get $heap) (local.get $size)))
               (local.get $ptr))
             {body})"#
    );
    wat::parse_str(text).unwrap()
}

const LOG: &str = r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))"#;

#[test]
fn an_unknown_import_is_a_load_error_naming_it() {
    let wasm = module(
        r#"(import "env" "proxy_does_not_exist" (func (param i32) (result i32)))"#,
        "",
    );
    let error = Plugin::load(&wasm, Recorder::default()).unwrap_err();
    assert_eq!(
        error,
        PluginError::UnknownImport {
            module: "env".into(),
            name: "proxy_does_not_exist".into()
        }
    );
    println!("{error}");
    assert!(error.to_string().contains("env.proxy_does_not_exist"));
}

#[test]
fn a_wrong_import_signature_is_a_load_error_naming_it() {
    // proxy_log takes three i32s.
    let wasm = module(
        r#"(import "env" "proxy_log" (func (param i32) (result i32)))"#,
        "",
    );
    let error = Plugin::load(&wasm, Recorder::default()).unwrap_err();
    println!("{error}");
    assert!(matches!(error, PluginError::Load(_)));
    assert!(error.to_string().contains("proxy_log"), "{error}");
}

#[test]
fn a_module_without_allocator_or_memory_is_refused() {
    let no_allocator = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let error = Plugin::load(&no_allocator, Recorder::default()).unwrap_err();
    assert!(error.to_string().contains("malloc"), "{error}");

    let no_memory = wat::parse_str(
        r#"(module (func (export "malloc") (param i32) (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let error = Plugin::load(&no_memory, Recorder::default()).unwrap_err();
    assert!(error.to_string().contains("memory"), "{error}");

    let garbage = Plugin::load(b"not wasm", Recorder::default()).unwrap_err();
    assert!(matches!(garbage, PluginError::Compile(_)));
}

#[test]
fn a_trap_after_a_critical_log_reports_the_panic_and_poisons() {
    let wasm = module(
        LOG,
        r#"(data (i32.const 100) "panicked at src/lib.rs:7:5: boom")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $log (i32.const 5) (i32.const 100) (i32.const 32)))
             unreachable)"#,
    );
    let mut plugin = Plugin::load(&wasm, Recorder::default()).unwrap();
    let error = plugin.on_request_headers(2, 0, true).unwrap_err();
    println!("{error}");
    let PluginError::Trap {
        callback,
        message,
        panic,
        backtrace,
    } = &error
    else {
        panic!("not a trap: {error:?}");
    };
    assert_eq!(*callback, "proxy_on_request_headers");
    assert!(message.contains("unreachable"), "{message}");
    assert_eq!(panic.as_deref(), Some("panicked at src/lib.rs:7:5: boom"));
    println!("backtrace: {backtrace:?}");
    assert_eq!(
        plugin.hostcalls().logs_at(LogLevel::Critical),
        ["panicked at src/lib.rs:7:5: boom"]
    );
    assert_eq!(plugin.poisoned_by(), Some("proxy_on_request_headers"));

    let again = plugin.on_request_headers(3, 0, true).unwrap_err();
    println!("{again}");
    assert_eq!(
        again,
        PluginError::Poisoned {
            callback: "proxy_on_request_headers",
            trapped_in: "proxy_on_request_headers"
        }
    );
    assert!(again.to_string().contains("poisoned"));
    assert!(matches!(
        plugin.on_log(3),
        Err(PluginError::Poisoned { .. })
    ));
}

#[test]
fn stderr_output_is_logged_and_explains_a_trap() {
    let wasm = module(
        r#"(import "wasi_snapshot_preview1" "fd_write"
             (func $fd_write (param i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 100) "thread 'main' panicked at x.rs:1:1:\nbad")
           ;; iovec {ptr 100, len 39} at 200
           (data (i32.const 200) "\64\00\00\00\27\00\00\00")
           (func (export "proxy_on_log") (param i32)
             (drop (call $fd_write (i32.const 2) (i32.const 200) (i32.const 1) (i32.const 300)))
             unreachable)"#,
    );
    let mut plugin = Plugin::load(&wasm, Recorder::default()).unwrap();
    let PluginError::Trap { panic, .. } = plugin.on_log(2).unwrap_err() else {
        panic!("not a trap");
    };
    assert_eq!(
        panic.as_deref(),
        Some("thread 'main' panicked at x.rs:1:1:\nbad")
    );
    assert_eq!(
        plugin.hostcalls().logs_at(LogLevel::Error),
        ["thread 'main' panicked at x.rs:1:1:", "bad"]
    );
}

#[test]
fn running_out_of_fuel_is_a_trap_that_costs_the_budget() {
    let wasm = module(
        "",
        r#"(func (export "proxy_on_tick") (param i32) (loop $forever (br $forever)))
           (func (export "proxy_on_done") (param i32) (result i32) (i32.const 0))"#,
    );
    let mut plugin = Plugin::load(&wasm, Recorder::default()).unwrap();
    assert!(!plugin.on_done(1).unwrap());
    let done_fuel = plugin.last_call_fuel();
    println!("on_done (one constant): {done_fuel} fuel");
    assert!(done_fuel > 0 && done_fuel < 10);
    plugin.set_fuel_budget(1_000_000);
    let error = plugin.on_tick(1).unwrap_err();
    println!("{error}");
    let PluginError::Trap { message, .. } = &error else {
        panic!("not a trap");
    };
    assert!(message.contains("fuel"), "{message}");
    assert_eq!(plugin.last_call_fuel(), 1_000_000);
}

#[test]
fn proc_exit_traps_with_its_code() {
    let wasm = module(
        r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#,
        r#"(func (export "proxy_on_delete") (param i32) (call $exit (i32.const 3)))"#,
    );
    let mut plugin = Plugin::load(&wasm, Recorder::default()).unwrap();
    let PluginError::Trap { message, .. } = plugin.on_delete(1).unwrap_err() else {
        panic!("not a trap");
    };
    assert!(message.contains("proc_exit(3)"), "{message}");
}

#[test]
fn missing_callbacks_behave_as_the_spec_defaults() {
    let mut plugin = Plugin::load(&module("", ""), Recorder::default()).unwrap();
    plugin.on_context_create(1, 0).unwrap();
    assert!(plugin.on_vm_start(1, 0).unwrap());
    assert!(plugin.on_configure(1, 0).unwrap());
    assert_eq!(
        plugin.on_request_headers(2, 0, true).unwrap(),
        Action::Continue
    );
    assert_eq!(
        plugin.on_response_body(2, 10, false).unwrap(),
        Action::Continue
    );
    assert!(plugin.on_done(2).unwrap());
    plugin.on_http_call_response(1, 1, 0, 0, 0).unwrap();
    assert_eq!(plugin.last_call_fuel(), 0);
    assert_eq!(plugin.abi_version(), None);
}

#[test]
fn a_callback_with_the_wrong_signature_is_reported() {
    let wasm = module(
        "",
        r#"(func (export "proxy_on_request_headers") (param i32) (result i32) (i32.const 0))"#,
    );
    let mut plugin = Plugin::load(&wasm, Recorder::default()).unwrap();
    let error = plugin.on_request_headers(2, 0, true).unwrap_err();
    assert!(matches!(
        error,
        PluginError::BadExport {
            name: "proxy_on_request_headers",
            ..
        }
    ));
    // Not a trap: the plugin is still usable.
    assert_eq!(plugin.poisoned_by(), None);
}

#[test]
fn bad_guest_pointers_get_invalid_memory_access() {
    // proxy_on_request_headers returns the status of a proxy_log with a pointer past the end
    // of memory, as its action; proxy_on_response_headers the status of a get_header_map_pairs
    // whose out-pointer is out of bounds.
    let wasm = module(
        r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
           (import "env" "proxy_get_header_map_pairs"
             (func $pairs (param i32 i32 i32) (result i32)))"#,
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (call $log (i32.const 2) (i32.const 65530) (i32.const 100)))
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
             (call $pairs (i32.const 0) (i32.const -4) (i32.const 16)))"#,
    );
    let mut plugin = Plugin::load(&wasm, Recorder::default()).unwrap();
    assert_eq!(
        plugin.on_request_headers(2, 0, true).unwrap(),
        Action::Unknown(6)
    );
    assert_eq!(
        plugin.on_response_headers(2, 0, true).unwrap(),
        Action::Unknown(6)
    );
    assert!(plugin.hostcalls().logs.is_empty());
    assert_eq!(plugin.poisoned_by(), None);
}

#[test]
fn header_maps_round_trip_through_guest_memory() {
    // Reads the request headers (the host allocates them in the guest) and writes them back
    // as the response headers; returns the status of the second call.
    let wasm = module(
        r#"(import "env" "proxy_get_header_map_pairs"
             (func $get (param i32 i32 i32) (result i32)))
           (import "env" "proxy_set_header_map_pairs"
             (func $set (param i32 i32 i32) (result i32)))
           (import "env" "proxy_get_header_map_value"
             (func $value (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 64) "missing")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (if (call $get (i32.const 0) (i32.const 16) (i32.const 20))
               (then (return (i32.const 100))))
             (call $set (i32.const 2) (i32.load (i32.const 16)) (i32.load (i32.const 20))))
           (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
             (call $value (i32.const 0) (i32.const 64) (i32.const 7)
                          (i32.const 16) (i32.const 20)))"#,
    );
    let recorder = Recorder {
        request_headers: vec![
            (b":path".to_vec(), b"/".to_vec()),
            (b"x-empty".to_vec(), Vec::new()),
            (b"accept".to_vec(), b"*/*".to_vec()),
        ],
        ..Recorder::default()
    };
    let mut plugin = Plugin::load(&wasm, recorder).unwrap();
    assert_eq!(
        plugin.on_request_headers(2, 3, true).unwrap(),
        Action::Continue
    );
    let host = plugin.hostcalls();
    assert_eq!(host.response_headers, host.request_headers);
    drop(host);
    // A missing header: NOT_FOUND (1), straight from the hostcalls.
    assert_eq!(plugin.on_request_body(2, 0, true).unwrap(), Action::Pause);
}

#[test]
fn wasi_basics() {
    // clock_time_get(realtime) must be after 2020; random_get must fill the buffer;
    // args_sizes_get reports 0/0; fd_prestat_get says BADF.
    let wasm = module(
        r#"(import "wasi_snapshot_preview1" "clock_time_get"
             (func $clock (param i32 i64 i32) (result i32)))
           (import "wasi_snapshot_preview1" "random_get"
             (func $random (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "args_sizes_get"
             (func $args (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "fd_prestat_get"
             (func $prestat (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "environ_sizes_get"
             (func $environ (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "sched_yield" (func $yield (result i32)))
           (import "wasi_snapshot_preview1" "path_open"
             (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#,
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (if (call $clock (i32.const 0) (i64.const 1) (i32.const 8)) (then (return (i32.const 10))))
             ;; 2020-01-01 in ns
             (if (i64.lt_u (i64.load (i32.const 8)) (i64.const 1577836800000000000))
               (then (return (i32.const 11))))
             (if (call $random (i32.const 32) (i32.const 13)) (then (return (i32.const 12))))
             (if (i32.and (i64.eqz (i64.load (i32.const 32)))
                          (i64.eqz (i64.load (i32.const 37))))
               (then (return (i32.const 13))))
             (i32.store (i32.const 48) (i32.const 7))
             (if (call $args (i32.const 48) (i32.const 52)) (then (return (i32.const 14))))
             (if (i32.load (i32.const 48)) (then (return (i32.const 15))))
             (if (call $environ (i32.const 48) (i32.const 52)) (then (return (i32.const 16))))
             (if (i32.ne (call $prestat (i32.const 3) (i32.const 48)) (i32.const 8))
               (then (return (i32.const 17))))
             (if (call $yield) (then (return (i32.const 18))))
             (if (i32.ne (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0)
                                     (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0)
                                     (i32.const 48))
                         (i32.const 58))
               (then (return (i32.const 19))))
             (i32.const 0))"#,
    );
    let mut plugin = Plugin::load(&wasm, Recorder::default()).unwrap();
    assert_eq!(
        plugin.on_request_headers(2, 0, true).unwrap(),
        Action::Continue
    );
    println!("wasi_basics: {} fuel", plugin.last_call_fuel());
}

#[test]
fn start_functions_run_in_order() {
    let wasm = module(
        LOG,
        r#"(data (i32.const 100) "init")
           (data (i32.const 110) "main")
           (func (export "_initialize")
             (drop (call $log (i32.const 2) (i32.const 100) (i32.const 4))))
           (func (export "main") (param i32 i32) (result i32)
             (drop (call $log (i32.const 2) (i32.const 110) (i32.const 4)))
             (i32.const 0))"#,
    );
    let plugin = Plugin::load(&wasm, Recorder::default()).unwrap();
    assert_eq!(plugin.hostcalls().logs_at(LogLevel::Info), ["init", "main"]);
    assert!(plugin.last_call_fuel() > 0);

    let trapping = module("", r#"(func (export "_initialize") unreachable)"#);
    let error = Plugin::load(&trapping, Recorder::default()).unwrap_err();
    assert!(
        matches!(
            error,
            PluginError::Trap {
                callback: "_initialize",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn unknown_unknown_modules_use_malloc() {
    // No proxy_on_memory_allocate, only `malloc` (a wasm32-unknown-unknown build); the
    // host copies a header value into memory it allocates there.
    let wasm = wat::parse_str(
        r#"(module
             (import "env" "proxy_get_header_map_value"
               (func $value (param i32 i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 64) "accept")
             (func (export "malloc") (param i32) (result i32) (i32.const 1000))
             (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
               (if (call $value (i32.const 0) (i32.const 64) (i32.const 6)
                                (i32.const 16) (i32.const 20))
                 (then (return (i32.const 100))))
               ;; Returns ptr + len + first byte: 1000 + 3 + '*' (42).
               (i32.add (i32.add (i32.load (i32.const 16)) (i32.load (i32.const 20)))
                        (i32.load8_u (i32.load (i32.const 16))))))"#,
    )
    .unwrap();
    let recorder = Recorder {
        request_headers: vec![(b"accept".to_vec(), b"*/*".to_vec())],
        ..Recorder::default()
    };
    let mut plugin = Plugin::load(&wasm, recorder).unwrap();
    assert_eq!(
        plugin.on_request_headers(2, 1, true).unwrap(),
        Action::Unknown(1000 + 3 + 42)
    );
}

#[test]
fn a_command_module_may_exit_with_zero_from_start() {
    let wasm = module(
        r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#,
        r#"(func (export "_start") (call $exit (i32.const 0)))
           (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))"#,
    );
    let mut plugin = Plugin::load(&wasm, Recorder::default()).unwrap();
    assert!(plugin.on_vm_start(1, 0).unwrap());

    let failing = module(
        r#"(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))"#,
        r#"(func (export "_start") (call $exit (i32.const 2)))"#,
    );
    let error = Plugin::load(&failing, Recorder::default()).unwrap_err();
    assert!(error.to_string().contains("proc_exit(2)"), "{error}");
}

/// Hostcalls that keep the lines logged.
#[derive(Default)]
struct LineLog(Vec<String>);

impl proxy_async_host::Hostcalls for LineLog {
    fn log(&mut self, _: LogLevel, message: &[u8]) -> Result<(), proxy_async_host::Status> {
        self.0.push(String::from_utf8_lossy(message).into_owned());
        Ok(())
    }
}

#[test]
fn the_hostcalls_may_be_shared_with_the_driver() {
    let wasm = module(
        LOG,
        r#"(data (i32.const 100) "hi")
           (func (export "proxy_on_tick") (param i32)
             (drop (call $log (i32.const 2) (i32.const 100) (i32.const 2))))"#,
    );
    // Shared through an `Rc` (not `Send`): the host does not require `Send`.
    let shared = std::rc::Rc::new(std::cell::RefCell::new(LineLog::default()));
    let mut plugin = proxy_async_host::PluginModule::new(&wasm)
        .unwrap()
        .instantiate_shared(std::rc::Rc::clone(&shared))
        .unwrap();
    plugin.on_tick(1).unwrap();
    plugin.on_tick(1).unwrap();
    assert_eq!(shared.borrow().0, ["hi", "hi"]);
    assert_eq!(plugin.hostcalls().0.len(), 2);
}
