//! The traffic of the soak tests (`auth-flow` under a long run of mixed traffic), shared by
//! the soak in our host (`host/tests/host/soak.rs`) and the one in Envoy (`tests/envoy/soak.rs`).
//!
//! Of every 20 requests, 2 clients go away while a call is pending, 2 calls time out, 1 service
//! answers a 5xx and 15 succeed (10%, 10%, 5%), in an order drawn from a fixed seed so that a
//! failure reproduces. `cargo test` runs shortened soaks; `SOAK_FULL=1` runs the full ones
//! (1,000,000 requests in our host, 100,000 in Envoy): `cargo xtask soak` does, optimized.

use std::collections::BTreeMap;
use std::time::Duration;

/// The seed of the mix and of the order in which the host soak answers calls.
pub const SEED: u64 = 0x5eed_a17f_1000_0007;

/// The plugin's call timeout, for both services. In Envoy a slow service must outlast it; a
/// call that succeeds must finish well within it, even on a loaded machine.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// The plugin configuration of both soaks (timeouts: [`CALL_TIMEOUT`]).
pub const CONFIG: &str = r#"{"auth":  {"cluster": "auth",  "timeout_ms": 1000},
                         "users": {"cluster": "users", "timeout_ms": 1000}}"#;

/// The body of the plugin's 503 (the SDK's error reply: the reason phrase).
pub const REFUSED_BODY: &str = "Service Unavailable";

/// `short` requests under `cargo test`, `full` when `SOAK_FULL` is set (to anything but `0`).
pub fn requests(short: usize, full: usize) -> usize {
    match std::env::var("SOAK_FULL") {
        Ok(value) if !value.is_empty() && value != "0" => full,
        _ => short,
    }
}

// ---- the mix -----------------------------------------------------------------------------

/// One of the two services the plugin calls, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The auth service (`auth`), called first.
    Auth,
    /// The users service (`users`), called with the token.
    Users,
}

impl Service {
    /// Its cluster in the plugin configuration.
    pub fn cluster(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Users => "users",
        }
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
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
    pub fn stops_at(self) -> Option<Service> {
        match self {
            Fate::Success => None,
            Fate::Abort(service) | Fate::Timeout(service) | Fate::UpstreamError(service, _) => {
                Some(service)
            }
        }
    }

    /// Whether the plugin must refuse the request with a 503.
    pub fn refused(self) -> bool {
        matches!(self, Fate::Timeout(_) | Fate::UpstreamError(..))
    }
}

/// The fates of `count` requests: in every run of 20, 2 aborts, 2 timeouts, 1 upstream error
/// and 15 successes, shuffled; the service each failure hits and the 5xx status are drawn too.
pub fn mix(count: usize, seed: u64) -> Vec<Fate> {
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
pub fn describe(fates: &[Fate]) -> String {
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
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (the modulo bias is irrelevant here).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// The credential request `index` sends.
pub fn credential(index: usize) -> String {
    format!("Bearer soak-{index}")
}

/// The token the auth service gives request `index`.
pub fn token(index: usize) -> String {
    format!("t-{index}")
}

/// The id and the name the users service gives request `index`'s user: one per request, so
/// that an identity set on the wrong one of many concurrent requests shows.
pub fn user(index: usize) -> (String, String) {
    (format!("u-{index}"), format!("user-{index}"))
}
