//! The middleware examples as `wasi:http@0.3` components under the standard CLI host:
//! `wasmtime serve` (wasmtime-cli 48) running the middleware composed by `wac plug` with
//! `forward-service`, a service that sends each request on to the test's upstream. The same
//! scenarios as in Envoy and in our host (`e2e::scenarios`).
//!
//! `wasmtime` and `wac` are `build/tools/bin/`'s, which `cargo xtask test` installs
//! (`$PROXY_ASYNC_WASMTIME`, `$PROXY_ASYNC_WAC` to use others). A missing tool fails the test.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use e2e::scenarios::{self, Backend, Gateway, Setup};

use crate::middleware::environment;

/// A tool `cargo xtask test` installs into `build/tools/bin`, or the one `$variable` names.
fn tool(name: &str, variable: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(
        || e2e::workspace().join("build/tools/bin").join(name),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: `cargo xtask test` installs it (or set ${variable})",
        path.display()
    );
    path
}

/// `plugin`'s middleware plugged into `forward-service` by `wac plug`, once per plugin.
fn composed(plugin: &str) -> PathBuf {
    static COMPOSED: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut composed = COMPOSED.get_or_init(Mutex::default).lock().unwrap();
    composed
        .entry(plugin.to_string())
        .or_insert_with(|| {
            let dir = e2e::fresh_dir("wac");
            let out = dir.join(format!("{}.wasm", plugin.replace('-', "_")));
            let output = Command::new(tool("wac", "PROXY_ASYNC_WAC"))
                .arg("plug")
                .arg(compiled_plugins::middleware(plugin))
                .arg("--plug")
                .arg(compiled_plugins::component("forward-service"))
                .arg("-o")
                .arg(&out)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "wac plug failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            out
        })
        .clone()
}

/// A `wasmtime serve` process; dropping it kills it.
struct WasmtimeServe {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Gateway for WasmtimeServe {
    fn port(&self) -> u16 {
        self.port
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wasmtime serve`, with the composition and the setup's environment.
struct StandardHost;

impl Backend for StandardHost {
    fn start(&self, setup: &Setup) -> Box<dyn Gateway> {
        let component = composed(setup.plugin);
        let dir = e2e::fresh_dir("wasmtime-serve");
        let log = dir.join("wasmtime.log");
        // A port the kernel picked a moment ago, free again for wasmtime to take.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let mut command = Command::new(tool("wasmtime", "PROXY_ASYNC_WASMTIME"));
        command
            .arg("serve")
            .arg(format!("--addr=127.0.0.1:{port}"))
            // The reduced build has no pooling allocator; `cli` gives the guests std's
            // environment and stderr.
            .args(["-Opooling-allocator=n", "-Scli"]);
        let mut env = environment(setup);
        env.push(("UPSTREAM".to_string(), setup.upstream.to_string()));
        for (name, value) in env {
            command.arg(format!("--env={name}={value}"));
        }
        let child = command
            .arg(&component)
            .stdout(Stdio::from(
                std::fs::File::create(dir.join("stdout")).unwrap(),
            ))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let served = WasmtimeServe { child, port, log };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "wasmtime serve did not listen within a minute:\n{}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Box::new(served)
    }
}

#[test]
fn hello_adds_a_header() {
    scenarios::hello_adds_a_header(&StandardHost);
}

#[test]
fn hello_mock_enable_replies_locally() {
    scenarios::hello_mock_enable_replies_locally(&StandardHost);
}

#[test]
fn auth_flow_success_sets_the_identity() {
    scenarios::auth_flow_success_sets_the_identity(&StandardHost);
}

#[test]
fn auth_flow_missing_credential_is_401() {
    scenarios::auth_flow_missing_credential_is_401(&StandardHost);
}

#[test]
fn auth_flow_wrong_credential_is_403() {
    scenarios::auth_flow_wrong_credential_is_403(&StandardHost);
}

#[test]
fn auth_flow_slow_auth_is_503() {
    scenarios::auth_flow_slow_auth_is_503(&StandardHost);
}

#[test]
fn auth_flow_auth_5xx_is_503() {
    scenarios::auth_flow_auth_5xx_is_503(&StandardHost);
}

#[test]
fn auth_flow_malformed_token_json_is_503() {
    scenarios::auth_flow_malformed_token_json_is_503(&StandardHost);
}

#[test]
fn auth_flow_cluster_missing_is_503() {
    scenarios::auth_flow_cluster_missing_is_503(&StandardHost);
}

#[test]
fn auth_flow_post_body_reaches_the_upstream() {
    scenarios::auth_flow_post_body_reaches_the_upstream(&StandardHost);
}

#[test]
fn auth_flow_unreachable_auth_is_503() {
    scenarios::auth_flow_unreachable_auth_is_503(&StandardHost);
}

#[test]
fn fan_out_calls_overlap() {
    scenarios::fan_out_calls_overlap(&StandardHost);
}

#[test]
fn retry_waits_then_goes_on() {
    scenarios::retry_waits_then_goes_on(&StandardHost);
}

#[test]
fn stream_redact_streams_the_body() {
    scenarios::stream_redact_streams_the_body(&StandardHost);
}
