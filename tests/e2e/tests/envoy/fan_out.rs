//! `fan-out` in a real Envoy (1.40, V8): both calls are in flight at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{Envoy, EnvoyConfig, Server, Upstreams, json, plugin_wasm};
use hyper::StatusCode;

/// Counts the requests being answered at once, across the profile and flags services.
#[derive(Debug, Default)]
struct Overlap {
    in_flight: AtomicUsize,
    most: AtomicUsize,
}

impl Overlap {
    /// Answers after the other service has a request in flight too, or after 400 ms (within the
    /// plugin's 500 ms call timeout), so that sequential calls are seen as such and still
    /// succeed.
    async fn answer(&self, body: serde_json::Value) -> e2e::HttpResponse {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let started = Instant::now();
        while self.in_flight.load(Ordering::SeqCst) < 2
            && started.elapsed() < Duration::from_millis(400)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Let the other one see this one before either leaves.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        json(StatusCode::OK, &body)
    }
}

#[test]
fn fan_out_calls_overlap() {
    let upstreams = Upstreams::start();
    let overlap = Arc::new(Overlap::default());
    let profile_overlap = Arc::clone(&overlap);
    let profile = Server::start(move |request| {
        let overlap = Arc::clone(&profile_overlap);
        async move {
            assert_eq!(request.target, "/profile?user=u-7");
            overlap.answer(serde_json::json!({"tier": "gold"})).await
        }
    });
    let flags_overlap = Arc::clone(&overlap);
    let flags = Server::start(move |request| {
        let overlap = Arc::clone(&flags_overlap);
        async move {
            assert_eq!(request.target, "/flags?user=u-7");
            overlap
                .answer(serde_json::json!({"flags": ["beta", "dark"]}))
                .await
        }
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("fan_out"), upstreams.echo)
            .plugin_config(r#"{"profile": {"cluster": "profile"}, "flags": {"cluster": "flags"}}"#)
            .cluster("profile", profile.addr())
            .cluster("flags", flags.addr()),
    );
    let response = envoy.send(
        "GET",
        "/home",
        &[("x-user-id", "u-7"), ("x-flags", "forged")],
        b"",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        overlap.most.load(Ordering::SeqCst),
        2,
        "the profile and flags calls were not in flight at once"
    );
    let recorded = upstreams.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].header("x-profile-tier"), Some("gold"));
    assert_eq!(recorded[0].header("x-flags"), Some("beta,dark"));
}
