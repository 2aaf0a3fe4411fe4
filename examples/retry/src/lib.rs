//! Retries with backoff inside a deadline: an admission check that survives a flaky service.
//!
//! For every request, in `on_request_headers`, the plugin asks the `check` service
//! (`GET <check.path>` with the request's `:path` in `x-original-path`) whether the request may
//! go on:
//!
//! 1. `200`: the request goes on, with `x-check-attempts: <n>` (how many calls it took).
//! 2. `403`: local reply `403`, details `check_denied`.
//! 3. `503`, `504`, a timeout or a reset (the service is overloaded or restarting): wait, then ask
//!    again. The waits double from `backoff_ms` (100, 200, 400, ... ms), at most `attempts`
//!    calls in all.
//! 4. The whole exchange, waits included, has `deadline_ms`: when it runs out, the call in
//!    flight is dropped and the client gets `504`, details `check_deadline`.
//! 5. Anything else (another status, the service giving up after `attempts` calls, a cluster
//!    the proxy does not know): `503`, details `check_unavailable`. The plugin fails closed.
//!
//! Every `report_ms` a tick function logs how many retries the plugin made since the last
//! report (at `info`, only when there were some).
//!
//! Waits and the deadline run on the root context's tick ([`proxy_async::sleep`],
//! [`proxy_async::timeout`]): they end on the first tick (every 100 ms) at or after their time.
//!
//! # Configuration
//!
//! ```json
//! {"check": {"cluster": "check", "path": "/check", "timeout_ms": 300},
//!  "attempts": 3, "backoff_ms": 100, "deadline_ms": 1500, "report_ms": 10000}
//! ```
//!
//! Only `check.cluster` is required; the values above are the defaults (`check.authority`
//! defaults to the cluster name). Errors name the field, e.g. `attempts`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use proxy_async::{
    CallError, ConfigError, Error, Flow, HttpClient, LocalReply, Plugin, PluginConfig, Request,
    Root, StatusCode, TickFunction, sleep, timeout,
};

/// The request header telling the upstream how many calls the check took.
pub const ATTEMPTS_HEADER: &str = "x-check-attempts";

/// The plugin configuration; see the [crate documentation](crate).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The admission service.
    pub check: Check,
    /// Calls in all, the first included.
    pub attempts: u32,
    /// The first wait between calls, in ms; each later wait doubles.
    pub backoff_ms: u64,
    /// The time for the whole exchange, waits included, in ms.
    pub deadline_ms: u64,
    /// How often the retry count is logged, in ms.
    pub report_ms: u64,
}

/// The admission service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Check {
    /// The proxy's name for its cluster.
    pub cluster: String,
    /// The `:authority` of the calls (the cluster name when empty).
    pub authority: String,
    /// The path of the calls.
    pub path: String,
    /// The timeout of each call, in ms.
    pub timeout_ms: u64,
}

impl Default for Check {
    fn default() -> Self {
        Check {
            cluster: String::new(),
            authority: String::new(),
            path: "/check".to_string(),
            timeout_ms: 300,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            check: Check::default(),
            attempts: 3,
            backoff_ms: 100,
            deadline_ms: 1_500,
            report_ms: 10_000,
        }
    }
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.check.cluster.trim().is_empty() {
            return Err(ConfigError::field(
                "check.cluster",
                "must name a cluster of the proxy",
            ));
        }
        if !self.check.path.starts_with('/') {
            return Err(ConfigError::field("check.path", "must start with `/`"));
        }
        for (field, value) in [
            ("check.timeout_ms", self.check.timeout_ms),
            ("attempts", u64::from(self.attempts)),
            ("deadline_ms", self.deadline_ms),
            ("report_ms", self.report_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::field(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// What the plugin keeps per configuration: the check service's client, the retry policy,
/// and the retries since the last report.
pub struct Checker {
    client: HttpClient,
    path: String,
    attempts: u32,
    backoff: Duration,
    deadline: Duration,
    report_every: Duration,
    retries: Cell<u64>,
}

impl Root for Checker {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        let check = config.check;
        let authority = if check.authority.is_empty() {
            check.cluster.clone()
        } else {
            check.authority
        };
        Ok(Checker {
            client: HttpClient::new(check.cluster)
                .with_authority(authority)
                .with_timeout(Duration::from_millis(check.timeout_ms)),
            path: check.path,
            attempts: config.attempts,
            backoff: Duration::from_millis(config.backoff_ms),
            deadline: Duration::from_millis(config.deadline_ms),
            report_every: Duration::from_millis(config.report_ms),
            retries: Cell::new(0),
        })
    }

    fn tick_functions(self: &Rc<Self>) -> Vec<TickFunction> {
        let checker = Rc::clone(self);
        vec![TickFunction::new(self.report_every, move || {
            let retries = checker.retries.replace(0);
            if retries > 0 {
                log::info!("{retries} retries of the check service since the last report");
            }
        })]
    }
}

/// The plugin: one value per HTTP stream.
pub struct Retry {
    checker: Rc<Checker>,
}

/// How one call went.
enum Verdict {
    Admit,
    Deny,
    TryAgain(String),
    Fail(String),
}

impl Plugin for Retry {
    type Root = Checker;

    /// The check service is unavailable: refuse, never let the request through unchecked.
    const ERROR_STATUS: u16 = 503;

    fn new(checker: &Rc<Checker>) -> Self {
        Retry {
            checker: Rc::clone(checker),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let path = req.header_str(":path").unwrap_or_default();
        match timeout(self.checker.deadline, self.admit(&path)).await {
            Ok(Ok(attempts)) => {
                req.headers_mut()
                    .insert(ATTEMPTS_HEADER, attempts.to_string());
                Ok(Flow::Continue)
            }
            Ok(Err(reply)) => Ok(reply.into()),
            Err(elapsed) => {
                log::warn!("check: no answer within the deadline ({elapsed})");
                Ok(LocalReply::new(504)
                    .body("check deadline exceeded")
                    .details("check_deadline")
                    .into())
            }
        }
    }
}

impl Retry {
    /// Asks the check service until it admits or denies; `Ok(attempts)` when admitted.
    async fn admit(&self, path: &str) -> Result<u32, LocalReply> {
        let checker = &*self.checker;
        let mut backoff = checker.backoff;
        let mut last = String::new();
        for attempt in 1..=checker.attempts {
            if attempt > 1 {
                checker.retries.set(checker.retries.get() + 1);
                sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            match self.ask(path).await {
                Verdict::Admit => return Ok(attempt),
                Verdict::Deny => {
                    return Err(LocalReply::new(403).body("denied").details("check_denied"));
                }
                Verdict::TryAgain(why) => {
                    log::debug!("check: attempt {attempt} failed ({why})");
                    last = why;
                }
                Verdict::Fail(why) => {
                    last = why;
                    break;
                }
            }
        }
        log::error!("check: unavailable ({last})");
        Err(LocalReply::new(503)
            .body("check unavailable")
            .details("check_unavailable"))
    }

    async fn ask(&self, path: &str) -> Verdict {
        let answer = self
            .checker
            .client
            .get(&self.checker.path)
            .header("x-original-path", path)
            .send()
            .await;
        match answer {
            Ok(response) => match response.status() {
                StatusCode::OK => Verdict::Admit,
                StatusCode::FORBIDDEN => Verdict::Deny,
                // The checker itself (or a proxy in front of it) is busy.
                status @ (StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT) => {
                    Verdict::TryAgain(format!("status {}", status.as_u16()))
                }
                other => Verdict::Fail(format!("status {}", other.as_u16())),
            },
            // No answer, or half of one: another try may get one.
            Err(
                error @ (CallError::Timeout { .. }
                | CallError::Unreachable { .. }
                | CallError::NoResponse { .. }),
            ) => Verdict::TryAgain(error.to_string()),
            Err(error) => Verdict::Fail(error.to_string()),
        }
    }
}

proxy_async::main!(Retry);
