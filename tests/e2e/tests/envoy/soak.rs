//! The soak in Envoy (1.40, V8): `auth-flow` under a long run of mixed traffic (`e2e::soak`;
//! the same traffic runs in our host, in the host's tests).
//!
//! Of every 20 requests, 2 clients go away while a call is pending, 2 calls time out, 1 service
//! answers a 5xx and 15 succeed (10%, 10%, 5%), in an order drawn from a fixed seed so that a
//! failure reproduces; many requests are in flight at once. Every outcome must be the one the
//! plugin's fail-closed table specifies, the plugin must never fail, and (in our host, where it
//! can be read) its linear memory must not grow after warm-up.
//!
//! `cargo test` runs shortened soaks; `SOAK_FULL=1` runs the full ones (1,000,000 requests in
//! our host, 100,000 in Envoy): `cargo xtask soak` does, optimized, and prints the figures.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a panic is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use e2e::soak::{
    CALL_TIMEOUT, CONFIG, Fate, REFUSED_BODY, SEED, Service, credential, describe, mix, requests,
    token, user,
};
use e2e::{
    DemoRequest, Envoy, EnvoyConfig, HttpResponse, Server, Upstreams,
    assert_no_wasm_failure_logged, json, plugin_wasm, send, wasm_vm_stats,
};
use hyper::StatusCode;

// ---- in Envoy ----------------------------------------------------------------------------

/// Clients sending the requests that complete at once (successes, 5xx, aborts).
const CLIENTS: usize = 64;

/// Clients sending the requests whose call times out. Each waits [`CALL_TIMEOUT`] for its 503:
/// among the others, one client in ten would soon be waiting on a timeout, leaving few
/// requests actually moving through the plugin at once, so they get clients of their own.
const TIMEOUT_CLIENTS: usize = 128;

/// The auth and users services of the Envoy soak: each request's credential names its index,
/// and the services answer as that request's fate says.
struct Services {
    fates: Vec<Fate>,
    /// The calls each request made to auth, and to users.
    auth_calls: Vec<AtomicU32>,
    users_calls: Vec<AtomicU32>,
    /// Requests whose call a service is holding while their client leaves.
    holding: Mutex<HashSet<usize>>,
    held: Condvar,
    /// Calls the services could not tie to a request.
    strays: Mutex<Vec<String>>,
}

impl Services {
    fn new(fates: Vec<Fate>) -> Services {
        let counters = || (0..fates.len()).map(|_| AtomicU32::new(0)).collect();
        Services {
            auth_calls: counters(),
            users_calls: counters(),
            fates,
            holding: Mutex::new(HashSet::new()),
            held: Condvar::new(),
            strays: Mutex::new(Vec::new()),
        }
    }

    /// `POST /token` with `{"credential": "Bearer soak-<index>"}`.
    async fn auth(&self, request: DemoRequest) -> HttpResponse {
        let index = serde_json::from_slice::<serde_json::Value>(&request.body)
            .ok()
            .and_then(|body| {
                body["credential"]
                    .as_str()?
                    .strip_prefix("Bearer soak-")?
                    .parse::<usize>()
                    .ok()
            });
        match index.filter(|index| *index < self.fates.len()) {
            Some(index) => {
                self.auth_calls[index].fetch_add(1, Ordering::SeqCst);
                self.answer(Service::Auth, index).await
            }
            None => self.stray("auth", &request),
        }
    }

    /// `GET /me` with `authorization: Bearer t-<index>`.
    async fn users(&self, request: DemoRequest) -> HttpResponse {
        let index = request
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok()?.strip_prefix("Bearer t-")?.parse().ok());
        match index.filter(|index: &usize| *index < self.fates.len()) {
            Some(index) => {
                self.users_calls[index].fetch_add(1, Ordering::SeqCst);
                self.answer(Service::Users, index).await
            }
            None => self.stray("users", &request),
        }
    }

    async fn answer(&self, service: Service, index: usize) -> HttpResponse {
        let fate = self.fates[index];
        if fate.stops_at() == Some(service) {
            match fate {
                Fate::Abort(_) => {
                    self.holding.lock().unwrap().insert(index);
                    self.held.notify_all();
                    tokio::time::sleep(CALL_TIMEOUT * 2).await;
                }
                Fate::Timeout(_) => tokio::time::sleep(CALL_TIMEOUT * 2).await,
                Fate::UpstreamError(_, status) => {
                    return json(
                        StatusCode::from_u16(status).unwrap(),
                        &serde_json::json!({"error": "unavailable"}),
                    );
                }
                Fate::Success => {}
            }
        }
        // Also what a held call finally gets, after the plugin gave up on it: a success that
        // would take the request on if the plugin had not.
        match service {
            Service::Auth => json(StatusCode::OK, &serde_json::json!({"token": token(index)})),
            Service::Users => {
                let (id, name) = user(index);
                json(StatusCode::OK, &serde_json::json!({"id": id, "name": name}))
            }
        }
    }

    fn stray(&self, service: &str, request: &DemoRequest) -> HttpResponse {
        self.strays.lock().unwrap().push(format!(
            "{service}: {} {} {:?} {}",
            request.method,
            request.target,
            request.headers,
            String::from_utf8_lossy(&request.body)
        ));
        json(StatusCode::BAD_REQUEST, &serde_json::json!({}))
    }

    /// Waits until a service holds request `index`'s call.
    fn wait_held(&self, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut holding = self.holding.lock().unwrap();
        while !holding.remove(&index) {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("request {index}: its call never reached a service"));
            holding = self.held.wait_timeout(holding, left).unwrap().0;
        }
    }
}

/// One client: takes the next request of `queue` until none is left, sends it, and checks
/// what comes back; returns what was wrong.
fn client(port: u16, services: &Services, queue: &[usize], next: &AtomicUsize) -> Vec<String> {
    let mut wrong = Vec::new();
    loop {
        let Some(&index) = queue.get(next.fetch_add(1, Ordering::SeqCst)) else {
            return wrong;
        };
        let fate = services.fates[index];
        let path = format!("/soak/{index}");
        let credential = credential(index);
        if let Fate::Abort(_) = fate {
            // Leave once the plugin awaits the call.
            let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let request = format!(
                "GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: {credential}\r\n\
                 x-user-id: forged\r\n\r\n"
            );
            connection.write_all(request.as_bytes()).unwrap();
            services.wait_held(index);
            drop(connection);
            continue;
        }
        let result = send(
            port,
            "GET",
            &path,
            &[
                ("authorization", credential.as_str()),
                ("x-user-id", "forged"),
                ("x-user-name", "mallory"),
            ],
            b"",
        );
        let correct = match &result {
            Ok(response) if fate == Fate::Success => {
                let (id, name) = user(index);
                response.status == 200 && {
                    let echoed = response.json();
                    echoed["path"] == path.as_str()
                        && echoed["headers"]["x-user-id"] == id.as_str()
                        && echoed["headers"]["x-user-name"] == name.as_str()
                }
            }
            Ok(response) => response.status == 503 && response.text() == REFUSED_BODY,
            Err(_) => false,
        };
        if !correct {
            wrong.push(format!("request {index} ({fate:?}): {result:?}"));
        }
    }
}

/// Polls Envoy's stats until `ready` holds for them (30 s at most); returns them.
fn wait_for_stats(
    envoy: &Envoy,
    what: &str,
    ready: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    let started = Instant::now();
    loop {
        let stats = envoy.stats();
        if ready(&stats) {
            return stats;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Envoy never got to {what}: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn envoy_soak_auth_flow() {
    let count = requests(3_000, 100_000);
    // Two more, which succeed: one before the soak, one after it.
    let mut fates = mix(count, SEED);
    fates.extend([Fate::Success, Fate::Success]);
    let (first, last) = (count, count + 1);
    let services = Arc::new(Services::new(fates));
    let upstreams = Upstreams::start();
    let auth_services = Arc::clone(&services);
    let auth = Server::start(move |request| {
        let services = Arc::clone(&auth_services);
        async move { services.auth(request).await }
    });
    let users_services = Arc::clone(&services);
    let users = Server::start(move |request| {
        let services = Arc::clone(&users_services);
        async move { services.users(request).await }
    });
    let envoy = Envoy::start(
        &EnvoyConfig::new(plugin_wasm("auth_flow"), upstreams.echo)
            .plugin_config(CONFIG)
            .cluster("auth", auth.addr())
            .cluster("users", users.addr()),
    );
    let port = envoy.port();
    let request = |index: usize| {
        envoy.send(
            "GET",
            &format!("/soak/{index}"),
            &[("authorization", credential(index).as_str())],
            b"",
        )
    };
    let before = request(first);
    assert_eq!(before.status, 200, "{}", before.text());
    let vm_before = wasm_vm_stats(&envoy.stats());
    assert!(
        vm_before.keys().any(|name| name.contains("created")),
        "no wasm VM stats: {vm_before:?}"
    );

    let (slow, quick): (Vec<usize>, Vec<usize>) =
        (0..count).partition(|index| matches!(services.fates[*index], Fate::Timeout(_)));
    let started = Instant::now();
    let (next_slow, next_quick) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let wrong: Vec<String> = std::thread::scope(|scope| {
        let services = &services;
        let clients: Vec<_> = [
            (&slow, &next_slow, TIMEOUT_CLIENTS),
            (&quick, &next_quick, CLIENTS),
        ]
        .into_iter()
        .flat_map(|(queue, next, clients)| (0..clients).map(move |_| (queue, next)))
        .map(|(queue, next)| scope.spawn(move || client(port, services, queue, next)))
        .collect();
        clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed();
    assert!(
        wrong.is_empty(),
        "{} of {count} outcomes were wrong, e.g.:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(5)].join("\n")
    );

    // Envoy has seen every client leave, and the calls of those clients ran to their timeout:
    // the plugin had to shrug them off before the final checks.
    let aborted = services.fates[..count]
        .iter()
        .filter(|fate| matches!(fate, Fate::Abort(_)))
        .count() as u64;
    let left = "http.ingress.downstream_cx_destroy_remote_active_rq";
    let stats = wait_for_stats(&envoy, "every client gone, no call in flight", |stats| {
        stats[left] >= aborted
            && ["auth", "users"]
                .iter()
                .all(|cluster| stats[&format!("cluster.{cluster}.upstream_rq_active")] == 0)
    });
    assert_eq!(stats[left], aborted, "clients that left mid-request");
    let after = request(last);
    assert_eq!(after.status, 200, "after the soak: {}", after.text());

    let fates = &services.fates;
    let strays = services.strays.lock().unwrap().clone();
    assert!(strays.is_empty(), "calls tied to no request: {strays:?}");
    for (index, fate) in fates.iter().enumerate() {
        let auth_calls = services.auth_calls[index].load(Ordering::SeqCst);
        let users_calls = services.users_calls[index].load(Ordering::SeqCst);
        let users_expected = u32::from(fate.stops_at() != Some(Service::Auth));
        assert_eq!(
            (auth_calls, users_calls),
            (1, users_expected),
            "request {index} ({fate:?}): calls to auth and users"
        );
    }
    let forwarded: BTreeSet<String> = upstreams
        .recorded()
        .into_iter()
        .map(|seen| seen.path)
        .collect();
    let successes: BTreeSet<String> = (0..fates.len())
        .filter(|index| fates[*index] == Fate::Success)
        .map(|index| format!("/soak/{index}"))
        .collect();
    assert_eq!(
        upstreams.recorded().len(),
        successes.len(),
        "requests the upstream got"
    );
    assert!(forwarded == successes, "the upstream got other requests");
    let vm_after = wasm_vm_stats(&envoy.stats());
    assert_eq!(vm_after, vm_before, "a wasm VM failed or was replaced");
    assert_no_wasm_failure_logged(&envoy);
    println!(
        "Envoy soak: {count} requests in {elapsed:.1?} ({:.0} requests/s), {CLIENTS} clients \
         + {TIMEOUT_CLIENTS} for the timeouts; \
         {}; upstream got {}; calls timed out (Envoy): auth {}, users {}; clients that left \
         mid-request {aborted}; wasm VM stats unchanged: {vm_after:?}",
        count as f64 / elapsed.as_secs_f64(),
        describe(&fates[..count]),
        successes.len(),
        stats["cluster.auth.upstream_rq_timeout"],
        stats["cluster.users.upstream_rq_timeout"],
    );
}
