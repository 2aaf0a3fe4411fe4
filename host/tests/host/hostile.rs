//! A hostile host against the compiled plugins: every example and fixture, built to
//! wasm32-wasip1 with the SDK, driven through whole streams while the host answers every
//! hostcall with an error the plugin does not expect, or with nonsense (more bytes than asked
//! for, undecodable text, a clock that runs backwards, the same call token twice), and calls
//! back with unknown contexts and tokens, twice-created contexts and replies for streams
//! that ended. A panic in a plugin aborts the VM in Envoy; here it is a trap, and every
//! callback must return without one.

#![allow(clippy::panic, reason = "tests")]

use proxy_async_host::{
    BufferType, HeaderPairs, Hostcalls, LogLevel, MapType, MetricType, PluginError, PluginModule,
    Status, StreamType,
};

use crate::common::plugin_wasm;

/// The plugins built with the SDK, as `compiled-plugins` names their modules.
const PLUGINS: &[&str] = &[
    "hello",
    "hello_no_config",
    "http_call",
    "auth_flow",
    "fan_out",
    "retry",
    "key_auth_redis",
    "stream_redact",
    "jwt_auth",
    "stream_plugin",
    "calls_plugin",
    "upload_plugin",
    "state_plugin",
];

/// A configuration every example accepts or rejects without a trap: the fields the examples
/// read, with cluster names the hostile host knows nothing of.
const CONFIG: &str = r#"{"mockEnable": true, "authCluster": "auth", "usersCluster": "users",
    "cluster": "upstream", "clusters": ["a", "b"], "redisCluster": "redis", "keys": ["k"],
    "jwksCluster": "jwks", "issuer": "me", "patterns": ["secret"], "attempts": 3}"#;

/// How the host answers the plugin's hostcalls.
#[derive(Debug, Clone, Copy)]
enum Answers {
    /// Every hostcall but `proxy_log` and the configuration read fails with this status.
    Failing(Status),
    /// Every hostcall succeeds with nonsense.
    Nonsense,
}

#[derive(Debug)]
struct Hostile {
    answers: Answers,
    config: Vec<u8>,
    /// The clock, which runs backwards.
    clock: u64,
}

impl Hostile {
    fn new(answers: Answers, config: &[u8]) -> Hostile {
        Hostile {
            answers,
            config: config.to_vec(),
            clock: u64::MAX,
        }
    }

    /// The answer of a hostcall that fails, or (nonsense) returns `nonsense`.
    fn answer<T>(&self, nonsense: T) -> Result<T, Status> {
        match self.answers {
            Answers::Failing(status) => Err(status),
            Answers::Nonsense => Ok(nonsense),
        }
    }
}

/// Bytes that are no text: invalid UTF-8, a NUL, and control characters.
fn junk(len: usize) -> Vec<u8> {
    [0xff, 0xfe, 0x00, 0xc3, b'\n', b':', 0x80]
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

/// A header map no proxy sends: empty and undecodable names, pseudo-headers with values that
/// are no status, method or path, the same name many times.
fn junk_pairs() -> HeaderPairs {
    let mut pairs = vec![
        (Vec::new(), Vec::new()),
        (b":status".to_vec(), b"abc".to_vec()),
        (b":method".to_vec(), junk(3)),
        (b":path".to_vec(), junk(9)),
        (junk(5), junk(7)),
        (b"content-length".to_vec(), b"-1".to_vec()),
        (b"authorization".to_vec(), junk(40)),
    ];
    pairs.extend((0..200).map(|_| (b"x-many".to_vec(), junk(2))));
    pairs
}

impl Hostcalls for Hostile {
    fn log(&mut self, _: LogLevel, _: &[u8]) -> Result<(), Status> {
        Ok(())
    }
    fn get_log_level(&mut self) -> Result<LogLevel, Status> {
        self.answer(LogLevel::Unknown(77))
    }
    fn get_current_time_nanoseconds(&mut self) -> Result<u64, Status> {
        self.clock = self.clock.wrapping_sub(1_000_000_007);
        self.answer(self.clock)
    }
    fn get_monotonic_time_nanoseconds(&mut self) -> Result<u64, Status> {
        self.get_current_time_nanoseconds()
    }
    fn set_tick_period_milliseconds(&mut self, _: u32) -> Result<(), Status> {
        self.answer(())
    }
    fn set_effective_context(&mut self, _: u32) -> Result<(), Status> {
        self.answer(())
    }
    fn done(&mut self) -> Result<(), Status> {
        self.answer(())
    }
    fn get_buffer_bytes(
        &mut self,
        buffer: BufferType,
        start: u32,
        max_size: u32,
    ) -> Result<Vec<u8>, Status> {
        if buffer == BufferType::PluginConfiguration {
            let start = (start as usize).min(self.config.len());
            return Ok(self.config[start..].to_vec());
        }
        // More than was asked for.
        self.answer(junk((max_size as usize).min(1 << 16) + 100))
    }
    fn set_buffer_bytes(&mut self, _: BufferType, _: u32, _: u32, _: &[u8]) -> Result<(), Status> {
        self.answer(())
    }
    fn get_buffer_status(&mut self, _: BufferType) -> Result<(u32, u32), Status> {
        self.answer((u32::MAX, u32::MAX))
    }
    fn get_header_map_pairs(&mut self, _: MapType) -> Result<HeaderPairs, Status> {
        self.answer(junk_pairs())
    }
    fn set_header_map_pairs(&mut self, _: MapType, _: &[(&[u8], &[u8])]) -> Result<(), Status> {
        self.answer(())
    }
    fn get_header_map_value(&mut self, _: MapType, _: &[u8]) -> Result<Vec<u8>, Status> {
        self.answer(junk(33))
    }
    fn add_header_map_value(&mut self, _: MapType, _: &[u8], _: &[u8]) -> Result<(), Status> {
        self.answer(())
    }
    fn replace_header_map_value(&mut self, _: MapType, _: &[u8], _: &[u8]) -> Result<(), Status> {
        self.answer(())
    }
    fn remove_header_map_value(&mut self, _: MapType, _: &[u8]) -> Result<(), Status> {
        self.answer(())
    }
    fn continue_stream(&mut self, _: StreamType) -> Result<(), Status> {
        self.answer(())
    }
    fn close_stream(&mut self, _: StreamType) -> Result<(), Status> {
        self.answer(())
    }
    fn send_local_response(
        &mut self,
        _: u32,
        _: &[u8],
        _: &[u8],
        _: &[(&[u8], &[u8])],
        _: i32,
    ) -> Result<(), Status> {
        self.answer(())
    }
    fn get_status(&mut self) -> Result<(u32, Vec<u8>), Status> {
        self.answer((999, junk(12)))
    }
    fn http_call(
        &mut self,
        _: &[u8],
        _: &[(&[u8], &[u8])],
        _: &[u8],
        _: &[(&[u8], &[u8])],
        _: u32,
    ) -> Result<u32, Status> {
        // The same token for every call.
        self.answer(7)
    }
    fn redis_init(&mut self, _: &[u8], _: &[u8], _: &[u8], _: u32) -> Result<(), Status> {
        self.answer(())
    }
    fn redis_call(&mut self, _: &[u8], _: &[u8]) -> Result<u32, Status> {
        self.answer(7)
    }
    fn grpc_call(
        &mut self,
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: &[(&[u8], &[u8])],
        _: &[u8],
        _: u32,
    ) -> Result<u32, Status> {
        self.answer(7)
    }
    fn grpc_stream(
        &mut self,
        _: &[u8],
        _: &[u8],
        _: &[u8],
        _: &[(&[u8], &[u8])],
    ) -> Result<u32, Status> {
        self.answer(7)
    }
    fn grpc_send(&mut self, _: u32, _: &[u8], _: bool) -> Result<(), Status> {
        self.answer(())
    }
    fn grpc_cancel(&mut self, _: u32) -> Result<(), Status> {
        self.answer(())
    }
    fn grpc_close(&mut self, _: u32) -> Result<(), Status> {
        self.answer(())
    }
    fn get_shared_data(&mut self, _: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        self.answer((junk(21), 0))
    }
    fn set_shared_data(&mut self, _: &[u8], _: &[u8], _: u32) -> Result<(), Status> {
        self.answer(())
    }
    fn register_shared_queue(&mut self, _: &[u8]) -> Result<u32, Status> {
        self.answer(0)
    }
    fn resolve_shared_queue(&mut self, _: &[u8], _: &[u8]) -> Result<u32, Status> {
        self.answer(0)
    }
    fn enqueue_shared_queue(&mut self, _: u32, _: &[u8]) -> Result<(), Status> {
        self.answer(())
    }
    fn dequeue_shared_queue(&mut self, _: u32) -> Result<Vec<u8>, Status> {
        self.answer(junk(10))
    }
    fn define_metric(&mut self, _: MetricType, _: &[u8]) -> Result<u32, Status> {
        self.answer(0)
    }
    fn record_metric(&mut self, _: u32, _: i64) -> Result<(), Status> {
        self.answer(())
    }
    fn increment_metric(&mut self, _: u32, _: i64) -> Result<(), Status> {
        self.answer(())
    }
    fn get_metric(&mut self, _: u32) -> Result<u64, Status> {
        self.answer(u64::MAX)
    }
    fn get_property(&mut self, _: &[u8]) -> Result<Vec<u8>, Status> {
        self.answer(junk(17))
    }
    fn set_property(&mut self, _: &[u8], _: &[u8]) -> Result<(), Status> {
        self.answer(())
    }
    fn call_foreign_function(&mut self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, Status> {
        self.answer(junk(5))
    }
}

const ROOT: u32 = 1;

/// The trap, if a callback trapped, naming the plugin, the host's answers and the step.
fn survive<T>(
    name: &str,
    answers: Answers,
    step: &str,
    result: Result<T, PluginError>,
) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(error) => Err(format!(
            "{name} with a host answering {answers:?}: {step} trapped: {error}"
        )),
    }
}

/// The compiled module of `name`.
fn module(name: &str) -> PluginModule {
    PluginModule::new(&plugin_wasm(name))
        .unwrap_or_else(|error| panic!("{name}: compiling failed: {error}"))
}

/// One plugin through everything a hostile host can do to it; the first trap, if any.
fn drive(name: &str, module: &PluginModule, answers: Answers, config: &[u8]) -> Result<(), String> {
    let mut plugin = match module.instantiate(Hostile::new(answers, config)) {
        Ok(plugin) => plugin,
        Err(error) => panic!("{name}: instantiating failed: {error}"),
    };
    let size = u32::try_from(config.len()).unwrap_or(u32::MAX);
    survive(
        name,
        answers,
        "root create",
        plugin.on_context_create(ROOT, 0),
    )?;
    survive(
        name,
        answers,
        "root created twice",
        plugin.on_context_create(ROOT, 0),
    )?;
    survive(name, answers, "vm start", plugin.on_vm_start(ROOT, 0))?;
    survive(name, answers, "configure", plugin.on_configure(ROOT, size))?;
    survive(
        name,
        answers,
        "configure of an unknown root",
        plugin.on_configure(99, size),
    )?;
    survive(name, answers, "tick", plugin.on_tick(ROOT))?;
    for stream in [2, 3, 4] {
        survive(
            name,
            answers,
            "stream create",
            plugin.on_context_create(stream, ROOT),
        )?;
        survive(
            name,
            answers,
            "request headers",
            plugin.on_request_headers(stream, 207, false),
        )?;
        survive(
            name,
            answers,
            "request body",
            plugin.on_request_body(stream, 4096, false),
        )?;
        survive(
            name,
            answers,
            "last request body",
            plugin.on_request_body(stream, 8192, true),
        )?;
        survive(
            name,
            answers,
            "request trailers",
            plugin.on_request_trailers(stream, 3),
        )?;
        // A reply to the token every call got, and to one no call got, then a failed call.
        survive(
            name,
            answers,
            "call response",
            plugin.on_http_call_response(stream, 7, 207, 100, 2),
        )?;
        survive(
            name,
            answers,
            "response to an unknown token",
            plugin.on_http_call_response(stream, 12345, 1, 0, 0),
        )?;
        survive(
            name,
            answers,
            "failed call",
            plugin.on_http_call_response(stream, 7, 0, 0, 0),
        )?;
        survive(
            name,
            answers,
            "redis reply",
            plugin.on_redis_call_response(ROOT, 7, 0, 64),
        )?;
        survive(
            name,
            answers,
            "grpc message",
            plugin.on_grpc_receive(stream, 7, 64),
        )?;
        survive(
            name,
            answers,
            "grpc close",
            plugin.on_grpc_close(stream, 7, 14),
        )?;
        survive(
            name,
            answers,
            "response headers",
            plugin.on_response_headers(stream, 207, false),
        )?;
        survive(
            name,
            answers,
            "response body",
            plugin.on_response_body(stream, 100, true),
        )?;
        survive(
            name,
            answers,
            "response trailers",
            plugin.on_response_trailers(stream, 2),
        )?;
        survive(name, answers, "log", plugin.on_log(stream))?;
        survive(name, answers, "done", plugin.on_done(stream))?;
        survive(name, answers, "delete", plugin.on_delete(stream))?;
        // Everything again, for the stream that is gone.
        survive(
            name,
            answers,
            "call response after delete",
            plugin.on_http_call_response(stream, 7, 1, 0, 0),
        )?;
        survive(
            name,
            answers,
            "request headers after delete",
            plugin.on_request_headers(stream, 1, true),
        )?;
        survive(name, answers, "done after delete", plugin.on_done(stream))?;
        survive(name, answers, "delete twice", plugin.on_delete(stream))?;
    }
    survive(
        name,
        answers,
        "stream of an unknown root",
        plugin.on_context_create(50, 999),
    )?;
    survive(
        name,
        answers,
        "headers of an unknown context",
        plugin.on_request_headers(51, 3, true),
    )?;
    survive(name, answers, "log of a root", plugin.on_log(ROOT))?;
    survive(name, answers, "queue ready", plugin.on_queue_ready(ROOT, 5))?;
    survive(
        name,
        answers,
        "tick of an unknown root",
        plugin.on_tick(777),
    )?;
    survive(name, answers, "root done", plugin.on_done(ROOT))?;
    survive(name, answers, "root delete", plugin.on_delete(ROOT))?;
    survive(
        name,
        answers,
        "headers after the root is gone",
        plugin.on_context_create(60, ROOT),
    )?;
    Ok(())
}

#[test]
fn no_plugin_traps_on_any_error_status_from_the_host() {
    let statuses = [
        Status::NotFound,
        Status::BadArgument,
        Status::SerializationFailure,
        Status::ParseFailure,
        Status::InvalidMemoryAccess,
        Status::Empty,
        Status::CasMismatch,
        Status::InternalFailure,
        Status::Unimplemented,
        Status::Unknown(42),
    ];
    for name in PLUGINS {
        let module = module(name);
        for status in statuses {
            if let Err(trap) = drive(name, &module, Answers::Failing(status), CONFIG.as_bytes()) {
                panic!("{trap}");
            }
        }
    }
}

#[test]
fn no_plugin_traps_on_nonsense_from_the_host() {
    for name in PLUGINS {
        let module = module(name);
        // A configuration that is no JSON too: rejected, and the streams the proxy still
        // creates are refused without a trap.
        for config in [CONFIG.as_bytes(), &junk(64)] {
            if let Err(trap) = drive(name, &module, Answers::Nonsense, config) {
                panic!("{trap}");
            }
        }
    }
}

#[test]
fn a_plugin_on_the_proxy_wasm_crate_traps_where_ours_do_not() {
    // The same hostile host, against the fixture written by hand on the `proxy-wasm` crate,
    // whose hostcall wrappers panic on statuses they do not expect: what the test catches.
    let module = module("raw_callbacks");
    let trap = drive(
        "raw_callbacks",
        &module,
        Answers::Failing(Status::Unknown(42)),
        CONFIG.as_bytes(),
    );
    let Err(trap) = trap else {
        panic!("the proxy-wasm crate's wrappers no longer panic on an unknown status");
    };
    assert!(trap.contains("unreachable"), "{trap}");
}
