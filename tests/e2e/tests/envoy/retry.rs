//! `retry` in a real Envoy (1.40, V8): waits and deadlines on Envoy's root-context tick.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{Envoy, EnvoyConfig, Server, Upstreams, json, plugin_wasm};
use hyper::StatusCode;

/// A check service that answers `503` to its first `failures` calls, then `200`.
fn flaky(failures: usize) -> (Server, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let server = Server::start(move |request| {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            assert_eq!(request.target, "/check");
            let status = if call < failures {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            json(status, &serde_json::json!({}))
        }
    });
    (server, calls)
}

fn envoy(upstreams: &Upstreams, check: &Server, config: &str) -> Envoy {
    Envoy::start(
        &EnvoyConfig::new(plugin_wasm("retry"), upstreams.echo)
            .plugin_config(config)
            .cluster("check", check.addr()),
    )
}

#[test]
fn retry_waits_on_envoys_tick_then_goes_on() {
    let upstreams = Upstreams::start();
    let (check, calls) = flaky(2);
    let envoy = envoy(
        &upstreams,
        &check,
        r#"{"check": {"cluster": "check"}, "backoff_ms": 100}"#,
    );
    let started = Instant::now();
    let response = envoy.send("GET", "/orders", &[], b"");
    let took = started.elapsed();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].header("x-check-attempts"), Some("3"));
    // Waits of 100 and 200 ms, each ended by a tick: at least 300 ms, never early.
    assert!(
        took >= Duration::from_millis(300),
        "answered after {took:?}"
    );
}

#[test]
fn the_deadline_replies_504_in_envoy() {
    let upstreams = Upstreams::start();
    let (check, calls) = flaky(usize::MAX);
    let envoy = envoy(
        &upstreams,
        &check,
        r#"{"check": {"cluster": "check"}, "attempts": 10, "backoff_ms": 100, "deadline_ms": 500}"#,
    );
    let started = Instant::now();
    let response = envoy.send("GET", "/orders", &[], b"");
    let took = started.elapsed();
    assert_eq!(response.status, 504, "{}", response.text());
    assert_eq!(response.text(), "check deadline exceeded");
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "it retried before the deadline"
    );
    assert!(upstreams.recorded().is_empty());
    assert!(
        took >= Duration::from_millis(500),
        "answered after {took:?}"
    );
    // Later requests are served as well: the VM is fine.
    let again = envoy.send("GET", "/orders", &[], b"");
    assert_eq!(again.status, 504);
}
