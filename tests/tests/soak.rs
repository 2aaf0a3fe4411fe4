//! Soak tests: `auth-flow` under a long run of mixed traffic, in our host (the compiled module
//! in the emulated proxy) and in a real Envoy (1.40, V8).
//!
//! Of every 20 requests, 2 clients go away while a call is pending, 2 calls time out, 1 service
//! answers a 5xx and 15 succeed (10%, 10%, 5%), in an order drawn from a fixed seed so that a
//! failure reproduces; many requests are in flight at once. Every outcome must be the one the
//! plugin's fail-closed table specifies, the plugin must never fail, and (in our host, where it
//! can be read) its linear memory must not grow after warm-up.
//!
//! `cargo test` runs shortened soaks; `SOAK_FULL=1` runs the full ones (1,000,000 requests in
//! our host, 100,000 in Envoy): `cargo xtask soak` does, optimized, and prints the figures.

#![cfg(not(target_arch = "wasm32"))]
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

use e2e::{
    DemoRequest, Envoy, EnvoyConfig, HttpResponse, Server, Upstreams,
    assert_no_wasm_failure_logged, json, plugin_wasm, send, wasm_vm_stats,
};
use hyper::StatusCode;
use proxy_async_host::proxy_emulator::{
    Action, Call, LogLevel, LogRecord, Pairs, Proxy, ProxyConfig, Side,
};
use proxy_async_host::{EmulatedAbi, Plugin, start_emulated};

/// The seed of the mix and of the order in which the host soak answers calls.
const SEED: u64 = 0x5eed_a17f_1000_0007;

/// The plugin's call timeout, for both services. In Envoy a slow service must outlast it; a
/// call that succeeds must finish well within it, even on a loaded machine.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// The plugin configuration of both soaks (timeouts: [`CALL_TIMEOUT`]).
const CONFIG: &str = r#"{"auth":  {"cluster": "auth",  "timeout_ms": 1000},
                         "users": {"cluster": "users", "timeout_ms": 1000}}"#;

/// The body of the plugin's 503 (the SDK's error reply: the reason phrase).
const REFUSED_BODY: &str = "Service Unavailable";

/// `short` requests under `cargo test`, `full` when `SOAK_FULL` is set (to anything but `0`).
fn requests(short: usize, full: usize) -> usize {
    match std::env::var("SOAK_FULL") {
        Ok(value) if !value.is_empty() && value != "0" => full,
        _ => short,
    }
}

// ---- the mix -----------------------------------------------------------------------------

/// One of the two services the plugin calls, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Auth,
    Users,
}

impl Service {
    /// Its cluster in the plugin configuration.
    fn cluster(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Users => "users",
        }
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Both calls succeed: the request goes upstream with the user's identity.
    Success,
    /// The client goes away while the call to this service is pending.
    Abort(Service),
    /// The call to this service gets no response in time.
    Timeout(Service),
    /// This service answers this 5xx status.
    UpstreamError(Service, u16),
}

impl Fate {
    /// The service at whose call the request stops early, if it does.
    fn stops_at(self) -> Option<Service> {
        match self {
            Fate::Success => None,
            Fate::Abort(service) | Fate::Timeout(service) | Fate::UpstreamError(service, _) => {
                Some(service)
            }
        }
    }

    /// Whether the plugin must refuse the request with a 503.
    fn refused(self) -> bool {
        matches!(self, Fate::Timeout(_) | Fate::UpstreamError(..))
    }
}

/// The fates of `count` requests: in every run of 20, 2 aborts, 2 timeouts, 1 upstream error
/// and 15 successes, shuffled; the service each failure hits and the 5xx status are drawn too.
fn mix(count: usize, seed: u64) -> Vec<Fate> {
    const DECK: usize = 20;
    let mut rng = Rng(seed);
    let mut fates = Vec::with_capacity(count);
    while fates.len() < count {
        let mut deck = [Fate::Success; DECK];
        for (slot, kind) in deck.iter_mut().zip(0..5) {
            let service = if rng.below(2) == 0 {
                Service::Auth
            } else {
                Service::Users
            };
            *slot = match kind {
                0 | 1 => Fate::Abort(service),
                2 | 3 => Fate::Timeout(service),
                _ => Fate::UpstreamError(service, [500, 502, 503, 504][rng.below(4)]),
            };
        }
        for index in (1..DECK).rev() {
            deck.swap(index, rng.below(index + 1));
        }
        let missing = count - fates.len();
        fates.extend(deck.iter().take(missing));
    }
    fates
}

/// How many requests of a mix meet each fate, for the figures.
fn describe(fates: &[Fate]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for fate in fates {
        let name = match fate {
            Fate::Success => "success".to_string(),
            Fate::Abort(service) => format!("abort mid-{}", service.cluster()),
            Fate::Timeout(service) => format!("timeout of {}", service.cluster()),
            Fate::UpstreamError(service, _) => format!("5xx from {}", service.cluster()),
        };
        *counts.entry(name).or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SplitMix64: small and seeded, so that the soak is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (the modulo bias is irrelevant here).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// The credential request `index` sends.
fn credential(index: usize) -> String {
    format!("Bearer soak-{index}")
}

/// The token the auth service gives request `index`.
fn token(index: usize) -> String {
    format!("t-{index}")
}

/// The id and the name the users service gives request `index`'s user: one per request, so
/// that an identity set on the wrong one of many concurrent requests shows.
fn user(index: usize) -> (String, String) {
    (format!("u-{index}"), format!("user-{index}"))
}

// ---- in our host -------------------------------------------------------------------------

type WasmProxy = Proxy<Plugin<EmulatedAbi>>;

/// Requests in flight at once in the host soak, each paused on a call.
const WINDOW: usize = 128;

/// A request whose call is pending.
struct Pending {
    index: usize,
    stream: u32,
    fate: Fate,
    waiting_on: Service,
    call: Call,
}

/// The pending call of a request whose client went away: the proxy still answers it, as
/// Envoy does (calls belong to the plugin's root context, not to the stream).
struct Orphan {
    index: usize,
    stream: u32,
    service: Service,
    call: Call,
}

/// What the host soak saw.
#[derive(Default)]
struct HostTally {
    forwarded: usize,
    refused: usize,
    aborted: usize,
    orphans_answered: usize,
}

/// The soak's proxy and the requests in it.
struct HostSoak {
    proxy: WasmProxy,
    in_flight: Vec<Pending>,
    orphans: Vec<Orphan>,
    tally: HostTally,
}

fn response(status: u16, body: &str) -> Option<(Pairs, Vec<u8>)> {
    Some((
        vec![
            (":status".to_string(), status.to_string().into_bytes()),
            ("content-type".to_string(), b"application/json".to_vec()),
        ],
        body.as_bytes().to_vec(),
    ))
}

/// What `service` answers request `index` when it succeeds.
fn success(service: Service, index: usize) -> Option<(Pairs, Vec<u8>)> {
    let body = match service {
        Service::Auth => serde_json::json!({"token": token(index)}),
        Service::Users => {
            let (id, name) = user(index);
            serde_json::json!({"id": id, "name": name})
        }
    };
    response(200, &body.to_string())
}

impl HostSoak {
    fn finished(&self) -> usize {
        self.tally.forwarded + self.tally.refused + self.tally.aborted
    }

    fn memory(&self) -> usize {
        self.proxy.plugin().memory_size()
    }

    /// The plugin's log lines since the last look.
    fn logs(&self) -> Vec<LogRecord> {
        self.proxy.state().take_logs()
    }

    /// Checks that the calls still unanswered are exactly those of the requests in flight and
    /// of the orphans, and returns the newest.
    fn calls(&self, context: &str) -> Option<Call> {
        let mut calls = self.proxy.calls();
        assert_eq!(
            calls.len(),
            self.in_flight.len() + self.orphans.len() + 1,
            "{context}: unexpected calls pending (one more expected: the one just made)"
        );
        calls.pop()
    }

    /// Checks that no call was made since the last look.
    fn assert_no_new_call(&self, context: &str) {
        let pending = self.proxy.calls().len();
        assert_eq!(
            pending,
            self.in_flight.len() + self.orphans.len(),
            "{context}: the plugin made a call it should not have"
        );
    }

    /// Checks the call the plugin just made for request `index`, and holds the request on it.
    fn hold_on_new_call(&mut self, index: usize, stream: u32, fate: Fate, service: Service) {
        let context = format!("request {index} ({fate:?})");
        let call = self
            .calls(&context)
            .unwrap_or_else(|| panic!("{context}: no call to {}", service.cluster()));
        assert_eq!(call.context_id(), stream, "{context}: {call:?}");
        assert_eq!(call.cluster(), service.cluster(), "{context}: {call:?}");
        assert_eq!(call.timeout(), CALL_TIMEOUT, "{context}");
        match service {
            Service::Auth => {
                let body: serde_json::Value = serde_json::from_slice(call.body()).unwrap();
                assert_eq!(body["credential"], credential(index), "{context}");
            }
            Service::Users => {
                let bearer = format!("Bearer {}", token(index));
                assert_eq!(call.header("authorization"), Some(bearer.as_str()));
            }
        }
        self.in_flight.push(Pending {
            index,
            stream,
            fate,
            waiting_on: service,
            call,
        });
    }

    /// Request `index` arrives, with an identity of its own making; it pauses on the auth call.
    fn start(&mut self, index: usize, fate: Fate) {
        let stream = self.proxy.open_stream();
        let path = format!("/soak/{index}");
        let credential = credential(index);
        let action = self.proxy.send_headers(
            stream,
            Side::Request,
            &[
                (":method", "GET"),
                (":path", &path),
                (":authority", "shop.example"),
                ("authorization", &credential),
                ("x-user-id", "forged"),
                ("x-user-name", "mallory"),
            ],
            true,
        );
        assert_eq!(action, Action::Pause, "request {index}");
        self.hold_on_new_call(index, stream, fate, Service::Auth);
    }

    /// Moves a pending request on: its client leaves, or its call is answered as its fate says.
    fn advance(&mut self, pending: Pending) {
        let Pending {
            index,
            stream,
            fate,
            waiting_on,
            call,
        } = pending;
        let context = format!("request {index} ({fate:?}, waiting on {waiting_on:?})");
        if fate.stops_at() != Some(waiting_on) {
            // Its call succeeds: auth leads to the users call, users to the request going on.
            self.proxy.answer(&call, success(waiting_on, index));
            match waiting_on {
                Service::Auth => self.hold_on_new_call(index, stream, fate, Service::Users),
                Service::Users => self.assert_forwarded(index, stream, &context),
            }
            return;
        }
        match fate {
            Fate::Abort(_) => {
                self.proxy.end_stream(stream);
                self.tally.aborted += 1;
                self.orphans.push(Orphan {
                    index,
                    stream,
                    service: waiting_on,
                    call,
                });
                self.assert_no_new_call(&context);
                self.assert_quiet(&context);
            }
            Fate::Timeout(_) => {
                self.proxy.answer(&call, None);
                self.assert_refused(stream, waiting_on, &context);
            }
            Fate::UpstreamError(_, status) => {
                self.proxy
                    .answer(&call, response(status, r#"{"error": "unavailable"}"#));
                self.assert_refused(stream, waiting_on, &context);
            }
            Fate::Success => unreachable!("a success stops nowhere"),
        }
    }

    /// The call of a request whose client left is answered (a success three times in four,
    /// which would take a live request on, else a timeout): nothing may come of it.
    fn answer_orphan(&mut self, orphan: Orphan, rng: &mut Rng) {
        let Orphan {
            index,
            stream,
            service,
            call,
        } = orphan;
        let context = format!("request {index}, whose client left waiting on {service:?}");
        let answer = if rng.below(4) == 0 {
            None
        } else {
            success(service, index)
        };
        self.proxy.answer(&call, answer);
        self.assert_no_new_call(&context);
        assert_eq!(self.proxy.local_reply(stream), None, "{context}");
        assert_eq!(self.proxy.resumes(stream, Side::Request), 0, "{context}");
        self.assert_quiet(&context);
        self.proxy.state().forget_stream(stream);
        self.tally.orphans_answered += 1;
    }

    /// The request went on upstream, once, with the identity of its own user and no other.
    fn assert_forwarded(&mut self, index: usize, stream: u32, context: &str) {
        self.assert_no_new_call(context);
        assert_eq!(self.proxy.local_reply(stream), None, "{context}");
        assert_eq!(self.proxy.resumes(stream, Side::Request), 1, "{context}");
        assert!(!self.proxy.is_paused(stream, Side::Request), "{context}");
        let (id, name) = user(index);
        let headers = self.proxy.headers(stream, Side::Request);
        let identity: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(header, _)| header.starts_with("x-user-"))
            .map(|(header, value)| (header.as_str(), value.as_str()))
            .collect();
        assert_eq!(
            identity,
            [("x-user-id", id.as_str()), ("x-user-name", name.as_str())],
            "{context}"
        );
        self.assert_quiet(context);
        let action = self
            .proxy
            .send_headers(stream, Side::Response, &[(":status", "200")], true);
        assert_eq!(action, Action::Continue, "{context}");
        self.proxy.end_stream(stream);
        self.proxy.state().forget_stream(stream);
        self.tally.forwarded += 1;
    }

    /// The client got a 503 from the plugin, the request never went on, and one error line
    /// names the service that failed.
    fn assert_refused(&mut self, stream: u32, service: Service, context: &str) {
        self.assert_no_new_call(context);
        let reply = self
            .proxy
            .local_reply(stream)
            .unwrap_or_else(|| panic!("{context}: no local reply"));
        assert_eq!(reply.status, 503, "{context}: {reply:?}");
        assert_eq!(reply.body_str(), REFUSED_BODY, "{context}");
        assert_eq!(self.proxy.resumes(stream, Side::Request), 0, "{context}");
        let logs = self.logs();
        let cluster = format!("cluster `{}`", service.cluster());
        let errors: Vec<&LogRecord> = logs
            .iter()
            .filter(|record| record.level >= LogLevel::Warn)
            .collect();
        assert!(
            errors.len() == 1
                && errors[0].level == LogLevel::Error
                && errors[0].message.contains(&cluster),
            "{context}: expected one error line naming {cluster}, got {errors:?}"
        );
        self.proxy.end_stream(stream);
        self.proxy.state().forget_stream(stream);
        self.tally.refused += 1;
    }

    /// The plugin logged nothing at warning level or above (and did not fail).
    fn assert_quiet(&self, context: &str) {
        let loud: Vec<LogRecord> = self
            .logs()
            .into_iter()
            .filter(|record| record.level >= LogLevel::Warn)
            .collect();
        assert!(loud.is_empty(), "{context}: {loud:?}");
        assert_eq!(self.proxy.failure(), None, "{context}");
    }
}

#[test]
fn host_soak_auth_flow() {
    let count = requests(20_000, 1_000_000);
    // The window fills, the allocator reaches its working size, the first aborts' calls are
    // answered: after this many requests the plugin's memory must not grow any more.
    let warm_up = count / 10;
    let wasm = std::fs::read(plugin_wasm("auth_flow")).unwrap();
    let proxy = start_emulated(
        &wasm,
        ProxyConfig {
            plugin_config: CONFIG.as_bytes().to_vec(),
            // As Envoy's default: the plugin's debug lines are not even formatted.
            log_level: Some(LogLevel::Info),
            ..ProxyConfig::default()
        },
    )
    .unwrap_or_else(|error| panic!("auth-flow did not start: {error}"));
    let fates = mix(count, SEED);
    let mut soak = HostSoak {
        proxy,
        in_flight: Vec::with_capacity(WINDOW),
        orphans: Vec::new(),
        tally: HostTally::default(),
    };
    // The order in which the proxy answers calls and clients leave.
    let mut rng = Rng(SEED.rotate_left(17));
    let mut memory_after_warm_up = None;
    let mut checkpoints = Vec::new();
    let mut next = 0;
    let started = Instant::now();
    while next < count || !soak.in_flight.is_empty() || !soak.orphans.is_empty() {
        while next < count && soak.in_flight.len() < WINDOW {
            soak.start(next, fates[next]);
            next += 1;
        }
        let pick = rng.below(soak.in_flight.len() + soak.orphans.len());
        if pick < soak.in_flight.len() {
            let pending = soak.in_flight.swap_remove(pick);
            soak.advance(pending);
        } else {
            let orphan = soak.orphans.swap_remove(pick - soak.in_flight.len());
            soak.answer_orphan(orphan, &mut rng);
        }
        let finished = soak.finished();
        if memory_after_warm_up.is_none() && finished == warm_up {
            memory_after_warm_up = Some(soak.memory());
        }
        if finished.is_multiple_of(count / 10)
            && checkpoints.last() != Some(&(finished, soak.memory()))
        {
            checkpoints.push((finished, soak.memory()));
        }
    }
    let elapsed = started.elapsed();

    assert_eq!(soak.proxy.failure(), None);
    assert!(soak.proxy.calls().is_empty(), "calls left pending");
    let tally = &soak.tally;
    let expected = |matches: fn(&Fate) -> bool| fates.iter().filter(|fate| matches(fate)).count();
    assert_eq!(tally.forwarded, expected(|fate| *fate == Fate::Success));
    assert_eq!(tally.refused, expected(|fate| fate.refused()));
    assert_eq!(
        tally.aborted,
        expected(|fate| matches!(fate, Fate::Abort(_)))
    );
    assert_eq!(tally.orphans_answered, tally.aborted);
    let warm = memory_after_warm_up.unwrap();
    let end = soak.memory();
    println!(
        "host soak: {count} requests in {elapsed:.1?} ({:.0} requests/s), {WINDOW} in flight at \
         once; {}; forwarded {}, refused 503 {}, aborted {} (their calls answered later: {}); \
         linear memory {warm} bytes ({} pages) after {warm_up} requests, {end} bytes ({} pages) \
         at the end; by tenths: {}; {:.0} wasm instructions (fuel) per request",
        count as f64 / elapsed.as_secs_f64(),
        describe(&fates),
        tally.forwarded,
        tally.refused,
        tally.aborted,
        tally.orphans_answered,
        warm / 65536,
        end / 65536,
        checkpoints
            .iter()
            .map(|(finished, memory)| format!("{finished}: {}", memory / 65536))
            .collect::<Vec<_>>()
            .join(", "),
        soak.proxy.plugin().total_fuel() as f64 / count as f64,
    );
    // Linear memory never shrinks, so the size at the end is the most the plugin ever needed.
    // Equal to the size after warm-up: the other 90% of the requests, with as many in flight,
    // took no new page; a leak of a few bytes per request (of anything: a task, a call, a
    // stream's state) would have.
    assert_eq!(
        end, warm,
        "linear memory grew after warm-up: {warm} → {end} bytes"
    );
}

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
