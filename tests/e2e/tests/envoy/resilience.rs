//! What a gateway operator notices: clients that leave mid-call, bursts of concurrent
//! requests, and a bad plugin configuration, with `auth-flow` in a real Envoy (1.40, V8).

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{
    Envoy, EnvoyConfig, Server, Upstreams, assert_no_wasm_failure_logged, json, plugin_wasm, send,
    wasm_vm_stats,
};
use hyper::StatusCode;

/// The auth-flow configuration of the demo.
const AUTH_FLOW_CONFIG: &str = r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#;

#[test]
fn client_disconnect_mid_call_leaves_envoy_serving() {
    let upstreams = Upstreams::start();
    // An auth service that counts the requests it got, answers the demo credential at once
    // and `Bearer slow` after 1 s: the client is gone by then.
    let received = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let (auth_received, auth_answered) = (Arc::clone(&received), Arc::clone(&answered));
    let auth = Server::start(move |request| {
        let (received, answered) = (Arc::clone(&auth_received), Arc::clone(&auth_answered));
        async move {
            received.fetch_add(1, Ordering::SeqCst);
            if String::from_utf8_lossy(&request.body).contains("slow") {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            answered.fetch_add(1, Ordering::SeqCst);
            json(StatusCode::OK, &serde_json::json!({"token": "t-alice"}))
        }
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("auth_flow"), upstreams.echo)
            .plugin_config(
                r#"{"auth": {"cluster": "auth", "timeout_ms": 5000}, "users": {"cluster": "users"}}"#,
            )
            .cluster("auth", auth.addr())
            .cluster("users", upstreams.users),
    );
    let ok = envoy.send(
        "GET",
        "/before",
        &[("authorization", "Bearer demo-token")],
        b"",
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let vm_before = wasm_vm_stats(&envoy.stats());
    assert!(
        vm_before.keys().any(|name| name.contains("created")),
        "no wasm VM stats: {vm_before:?}"
    );

    // Three clients leave while the plugin awaits their auth call.
    for _ in 0..3 {
        let before = received.load(Ordering::SeqCst);
        let mut client = TcpStream::connect(("127.0.0.1", envoy.port())).unwrap();
        client
            .write_all(
                b"GET /left HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer slow\r\n\r\n",
            )
            .unwrap();
        let started = Instant::now();
        while received.load(Ordering::SeqCst) == before {
            assert!(started.elapsed() < Duration::from_secs(5), "no auth call");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(client);
        // The next request, while the call of the one that left is still pending.
        let next = envoy.send(
            "GET",
            "/after",
            &[("authorization", "Bearer demo-token")],
            b"",
        );
        assert_eq!(next.status, 200, "after a client left: {}", next.text());
    }
    // The auth service answers the calls of the streams that are gone.
    let started = Instant::now();
    while answered.load(Ordering::SeqCst) < received.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "auth did not answer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));

    for _ in 0..2 {
        let later = envoy.send(
            "GET",
            "/after",
            &[("authorization", "Bearer demo-token")],
            b"",
        );
        assert_eq!(later.status, 200, "{}", later.text());
    }
    let stats = envoy.stats();
    assert!(
        stats["http.ingress.downstream_cx_destroy_remote_active_rq"] >= 3,
        "the clients did not leave mid-request: {stats:?}"
    );
    assert_eq!(
        wasm_vm_stats(&stats),
        vm_before,
        "a wasm VM failed or was replaced"
    );
    assert_no_wasm_failure_logged(&envoy);
    let paths: Vec<_> = upstreams
        .recorded()
        .into_iter()
        .map(|seen| seen.path)
        .collect();
    assert_eq!(
        paths,
        ["/before", "/after", "/after", "/after", "/after", "/after"]
    );
}

#[test]
fn burst_of_concurrent_requests_through_auth_flow() {
    const CLIENTS: usize = 64;
    const REQUESTS_PER_CLIENT: usize = 16;
    let upstreams = Upstreams::start();
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("auth_flow"), upstreams.echo)
            .plugin_config(AUTH_FLOW_CONFIG)
            .cluster("auth", upstreams.auth)
            .cluster("users", upstreams.users),
    );
    let port = envoy.port();
    let wrong = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                scope.spawn(move || {
                    let mut wrong = Vec::new();
                    for index in 0..REQUESTS_PER_CLIENT {
                        // One request in four carries a wrong credential and must be refused.
                        let denied = (client + index) % 4 == 0;
                        let credential = if denied {
                            "Bearer wrong"
                        } else {
                            "Bearer demo-token"
                        };
                        let path = format!("/burst/{client}/{index}");
                        let result = send(
                            port,
                            "GET",
                            &path,
                            &[("authorization", credential), ("x-user-id", "forged")],
                            b"",
                        );
                        let correct = match &result {
                            Ok(response) if denied => response.status == 403,
                            Ok(response) => {
                                response.status == 200
                                    && response.json()["path"] == path.as_str()
                                    && response.json()["headers"]["x-user-id"] == "u-1"
                                    && response.json()["headers"]["x-user-name"] == "alice"
                            }
                            Err(_) => false,
                        };
                        if !correct {
                            wrong.push(format!("{path}: {result:?}"));
                        }
                    }
                    wrong
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(
        wrong.is_empty(),
        "{} of {} responses were wrong, e.g. {:?}",
        wrong.len(),
        CLIENTS * REQUESTS_PER_CLIENT,
        wrong.first()
    );
    let allowed = CLIENTS * REQUESTS_PER_CLIENT * 3 / 4;
    assert_eq!(upstreams.recorded().len(), allowed);
    assert_no_wasm_failure_logged(&envoy);
}

#[test]
fn bad_plugin_configuration_stops_envoy_with_the_field_named() {
    let upstreams = Upstreams::start();
    let config = EnvoyConfig::new(plugin_wasm("auth_flow"), upstreams.echo)
        .plugin_config(
            r#"{"auth": {"cluster": "auth", "timeout_ms": "soon"}, "users": {"cluster": "users"}}"#,
        )
        .cluster("auth", upstreams.auth)
        .cluster("users", upstreams.users);
    let exited = match Envoy::try_start(&config) {
        Ok(envoy) => panic!("Envoy started with a bad configuration:\n{}", envoy.log()),
        Err(exited) => exited,
    };
    assert!(!exited.status.success(), "{}", exited.log);
    assert!(
        exited
            .log
            .contains("invalid plugin configuration: field `auth.timeout_ms`"),
        "Envoy's log does not name the field:\n{}",
        exited.log
    );
}
