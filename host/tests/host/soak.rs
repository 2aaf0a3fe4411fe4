//! The soak in our host: `auth-flow`'s compiled module in the emulated proxy under a long run
//! of mixed traffic (`e2e::soak`: aborts, timeouts, 5xx), every outcome checked, and its linear
//! memory flat after warm-up. `cargo xtask soak` runs the full count, optimized.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a panic is a failed test"
)]

use std::time::Instant;

use e2e::soak::{
    CALL_TIMEOUT, CONFIG, Fate, REFUSED_BODY, Rng, SEED, Service, credential, describe, mix,
    requests, token, user,
};
use proxy_async_host::proxy_async_emulator::{
    Action, Call, Direction, LogLevel, LogRecord, Pairs, Proxy, ProxyConfig, ProxyState,
};
use proxy_async_host::{Plugin, start_emulated};

type WasmProxy = Proxy<Plugin<ProxyState>>;

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
            Direction::Request,
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
        assert_eq!(
            self.proxy.resumes(stream, Direction::Request),
            0,
            "{context}"
        );
        self.assert_quiet(&context);
        self.proxy.state().forget_stream(stream);
        self.tally.orphans_answered += 1;
    }

    /// The request went on upstream, once, with the identity of its own user and no other.
    fn assert_forwarded(&mut self, index: usize, stream: u32, context: &str) {
        self.assert_no_new_call(context);
        assert_eq!(self.proxy.local_reply(stream), None, "{context}");
        assert_eq!(
            self.proxy.resumes(stream, Direction::Request),
            1,
            "{context}"
        );
        assert!(
            !self.proxy.is_paused(stream, Direction::Request),
            "{context}"
        );
        let (id, name) = user(index);
        let headers = self.proxy.headers(stream, Direction::Request);
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
        let action =
            self.proxy
                .send_headers(stream, Direction::Response, &[(":status", "200")], true);
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
        assert_eq!(
            self.proxy.resumes(stream, Direction::Request),
            0,
            "{context}"
        );
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
    let wasm = crate::common::plugin_wasm("auth_flow");
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
