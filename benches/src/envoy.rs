//! 4. Throughput and latency in real Envoy (one worker) under `wrk`, a fresh Envoy per run:
//!    - auth-flow with the demo auth and users services on loopback: SDK and baseline alternated
//!      A/B/A/B, the ratio taken per pair so that drift of the machine cancels out;
//!    - hello on a `direct_response` route, so that no upstream is involved and the filter's
//!      own cost shows: no wasm filter, the baseline and the SDK in rounds (which of the two
//!      runs first swaps every round), the ratios taken per round.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use e2e::{Envoy, EnvoyConfig, Response, Upstreams, WASM_FAILURE_SIGNS, send};

use crate::Settings;
use crate::plugins::{Built, Pair};
use crate::report::{Row, Table, Target};
use crate::scenarios::{AUTH_CONFIG, HELLO_HEADER_CONFIG};

/// What one `wrk` run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `wrk` load before each measured run of hello on the direct-response route (V8's lazy
/// compilation, the connections, Envoy's first allocations).
const WARMUP_SECONDS: u32 = 1;

/// The rounds of hello on the direct-response route: even, so that each plugin runs first in
/// half of them (see `HelloFilter::rotation`). More than auth-flow's pairs: the filter's cost
/// is a quarter of Envoy's time per request there, and round-to-round noise is as large.
const HELLO_ROUNDS: u32 = 6;

/// What the direct-response route answers, with status 200.
const DIRECT_RESPONSE_BODY: &str = "direct response\n";

/// A path answered directly too, with the request's `hello` header (as the filter left it)
/// copied into the [`HELLO_ECHO_HEADER`] response header: how the check sees, without an
/// upstream, that the plugin added `hello: world`. A route of its own, so that the measured
/// route formats nothing.
const HELLO_CHECK_PATH: &str = "/check-hello-header";

/// The response header of [`HELLO_CHECK_PATH`] carrying the request's `hello` header.
const HELLO_ECHO_HEADER: &str = "x-request-hello";

/// The stat of the V8 VMs alive in Envoy: none without a wasm filter.
const ACTIVE_V8_VMS: &str = "wasm.envoy.wasm.runtime.v8.active";

pub(crate) fn measure(built: &Built, settings: &Settings, table: &mut Table) -> Result<(), String> {
    let (pairs, hello_rounds, seconds) = if settings.quick {
        (1, 2, 1)
    } else {
        (4, HELLO_ROUNDS, 10)
    };
    let upstreams = Upstreams::start_unrecorded();
    auth_flow(&built.auth_flow, &upstreams, pairs, seconds, table)?;
    hello_direct_response(&built.hello, upstreams.echo, hello_rounds, seconds, table)
}

/// `proxy-async-bench envoy-hello [ROUNDS] [SECONDS]`: only the hello direct-response rows,
/// printed (the full `cargo xtask bench` takes twenty minutes; these rows are the noisiest).
pub(crate) fn hello_only(args: &[String]) -> Result<(), String> {
    let number = |index: usize, default: u32| -> Result<u32, String> {
        args.get(index).map_or(Ok(default), |arg| {
            arg.parse()
                .map_err(|_| format!("envoy-hello [ROUNDS] [SECONDS]: {arg:?} is not a number"))
        })
    };
    let (rounds, seconds) = (number(0, HELLO_ROUNDS)?, number(1, 10)?);
    let built = crate::plugins::load()?;
    let upstreams = Upstreams::start_unrecorded();
    let mut table = Table::default();
    hello_direct_response(&built.hello, upstreams.echo, rounds, seconds, &mut table)?;
    println!("{}", table.render());
    Ok(())
}

/// auth-flow in front of the echo upstream, SDK and baseline alternated for `pairs` pairs.
fn auth_flow(
    pair: &Pair,
    upstreams: &Upstreams,
    pairs: u32,
    seconds: u32,
    table: &mut Table,
) -> Result<(), String> {
    let mut sdk_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    for round in 0..pairs {
        println!("bench:   auth-flow: pair {} of {pairs}", round + 1);
        sdk_runs.push(auth_flow_run(&pair.sdk_path, upstreams, seconds)?);
        baseline_runs.push(auth_flow_run(&pair.baseline_path, upstreams, seconds)?);
    }
    let ratios = per_run_ratios(&sdk_runs, &baseline_runs);
    let mut throughput = Row::new(
        format!(
            "auth-flow in Envoy: requests/s (1 worker, wrk 16 connections, {seconds} s × {pairs} pairs)"
        ),
        mean(&sdk_runs, |run| run.requests_per_second),
        mean(&baseline_runs, |run| run.requests_per_second),
        Target::RatioAtLeast(0.97),
    );
    throughput.ratio = average(&ratios);
    throughput.note = format!("per-pair ratios {}", list(&ratios));
    table.push(throughput);
    table.push(Row::new(
        "auth-flow in Envoy: p50 latency (ms)",
        mean(&sdk_runs, |run| run.p50_ms),
        mean(&baseline_runs, |run| run.p50_ms),
        Target::None,
    ));
    table.push(Row::new(
        "auth-flow in Envoy: p99 latency (ms)",
        mean(&sdk_runs, |run| run.p99_ms),
        mean(&baseline_runs, |run| run.p99_ms),
        Target::None,
    ));
    Ok(())
}

/// Starts Envoy with auth-flow's `wasm`, checks one request, and loads it with `wrk` for
/// `seconds`.
fn auth_flow_run(wasm: &Path, upstreams: &Upstreams, seconds: u32) -> Result<Run, String> {
    let envoy = Envoy::try_start(
        &EnvoyConfig::new(wasm, upstreams.echo)
            .plugin_config(AUTH_CONFIG)
            .cluster("auth", upstreams.auth)
            .cluster("users", upstreams.users),
    )
    .map_err(|exited| format!("Envoy did not start:\n{}", exited.log))?;
    let check = envoy.send(
        "GET",
        "/orders",
        &[("authorization", "Bearer demo-token")],
        b"",
    );
    if check.status != 200 {
        return Err(format!(
            "{}: a request got {}",
            wasm.display(),
            check.status
        ));
    }
    wrk(
        &format!("http://127.0.0.1:{}/orders", envoy.port()),
        &["authorization: Bearer demo-token"],
        seconds,
    )
}

/// What runs in front of hello's direct-response route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HelloFilter {
    /// No wasm filter: Envoy's own cost.
    NoFilter,
    /// `hello-baseline`, hand-written callbacks.
    Baseline,
    /// `hello`, the SDK example.
    Sdk,
}

impl HelloFilter {
    /// Every filter the rounds run.
    const ALL: [HelloFilter; 3] = [
        HelloFilter::NoFilter,
        HelloFilter::Baseline,
        HelloFilter::Sdk,
    ];

    /// The order of round `round`: the two plugins swap places every round, so that whatever
    /// favours a place in the round (what the previous Envoy left behind, the machine's drift
    /// over a round) favours each plugin equally often. With a fixed order the SDK always ran
    /// last, and its per-round ratios fell round after round.
    fn rotation(round: u32) -> [HelloFilter; 3] {
        if round.is_multiple_of(2) {
            HelloFilter::ALL
        } else {
            [
                HelloFilter::NoFilter,
                HelloFilter::Sdk,
                HelloFilter::Baseline,
            ]
        }
    }

    fn name(self) -> &'static str {
        match self {
            HelloFilter::NoFilter => "no wasm filter",
            HelloFilter::Baseline => "hello-baseline",
            HelloFilter::Sdk => "hello",
        }
    }

    /// Envoy with this filter (with hello's default configuration: the header added, no local
    /// reply) before a route that answers every request itself; `upstream` is never reached.
    fn envoy_config(self, hello: &Pair, upstream: SocketAddr) -> EnvoyConfig {
        let config = match self {
            HelloFilter::NoFilter => EnvoyConfig::without_plugin(upstream),
            HelloFilter::Baseline => EnvoyConfig::new(&hello.baseline_path, upstream),
            HelloFilter::Sdk => EnvoyConfig::new(&hello.sdk_path, upstream),
        };
        let direct_response = serde_json::json!({
            "status": 200,
            "body": {"inline_string": DIRECT_RESPONSE_BODY},
        });
        config
            .plugin_config(HELLO_HEADER_CONFIG)
            .route(serde_json::json!({
                "match": {"path": HELLO_CHECK_PATH},
                "direct_response": direct_response,
                "response_headers_to_add": [{"header": {
                    "key": HELLO_ECHO_HEADER,
                    "value": "%REQ(hello)%",
                }}],
            }))
            .route(serde_json::json!({
                "match": {"prefix": "/"},
                "direct_response": direct_response,
            }))
    }
}

/// hello on a direct-response route: no filter, baseline and SDK alternated for `rounds`
/// rounds, each run warmed up first.
fn hello_direct_response(
    hello: &Pair,
    upstream: SocketAddr,
    rounds: u32,
    seconds: u32,
    table: &mut Table,
) -> Result<(), String> {
    let mut no_filter_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    let mut sdk_runs = Vec::new();
    for round in 0..rounds {
        println!(
            "bench:   hello, direct response: round {} of {rounds}",
            round + 1
        );
        for filter in HelloFilter::rotation(round) {
            let run = hello_run(filter, hello, upstream, seconds)?;
            match filter {
                HelloFilter::NoFilter => no_filter_runs.push(run),
                HelloFilter::Baseline => baseline_runs.push(run),
                HelloFilter::Sdk => sdk_runs.push(run),
            }
        }
    }
    let requests_per_second = |runs: &[Run]| mean(runs, |run| run.requests_per_second);
    let sdk_vs_baseline = per_run_ratios(&sdk_runs, &baseline_runs);
    let baseline_vs_none = per_run_ratios(&baseline_runs, &no_filter_runs);
    let sdk_vs_none = per_run_ratios(&sdk_runs, &no_filter_runs);
    // With one worker kept busy by wrk, 1/throughput is Envoy's time per request: what the
    // filter adds to it is the filter's own cost.
    let added_microseconds = |runs: &[Run]| {
        let per_round: Vec<f64> = runs
            .iter()
            .zip(&no_filter_runs)
            .map(|(with, without)| {
                1e6 / with.requests_per_second - 1e6 / without.requests_per_second
            })
            .collect();
        average(&per_round)
    };
    let label = |comparison: &str| {
        format!(
            "hello in Envoy, direct response: requests/s, {comparison} (1 worker, wrk 16 connections, {seconds} s × {rounds} rounds)"
        )
    };
    let mut sdk_row = Row::new(
        label("SDK vs baseline"),
        requests_per_second(&sdk_runs),
        requests_per_second(&baseline_runs),
        Target::RatioAtLeast(0.97),
    );
    sdk_row.ratio = average(&sdk_vs_baseline);
    sdk_row.note = format!(
        "per-round ratios {}; time the filter adds per request: SDK {:.2} µs, baseline {:.2} µs",
        list(&sdk_vs_baseline),
        added_microseconds(&sdk_runs),
        added_microseconds(&baseline_runs)
    );
    table.push(sdk_row);
    for (comparison, plugin, runs, ratios) in [
        (
            "baseline vs no filter",
            "hello-baseline",
            &baseline_runs,
            &baseline_vs_none,
        ),
        ("SDK vs no filter", "hello (SDK)", &sdk_runs, &sdk_vs_none),
    ] {
        let mut row = Row::new(
            label(comparison),
            requests_per_second(runs),
            requests_per_second(&no_filter_runs),
            Target::None,
        );
        row.ratio = average(ratios);
        row.note = format!(
            "SDK column: {plugin}; baseline column: Envoy without a wasm filter; per-round ratios {}",
            list(ratios)
        );
        table.push(row);
    }
    Ok(())
}

/// Starts Envoy with `filter` before the direct-response route, checks it, warms it up and
/// loads it with `wrk` for `seconds`.
fn hello_run(
    filter: HelloFilter,
    hello: &Pair,
    upstream: SocketAddr,
    seconds: u32,
) -> Result<Run, String> {
    let name = filter.name();
    let envoy = Envoy::try_start(&filter.envoy_config(hello, upstream))
        .map_err(|exited| format!("Envoy with {name} did not start:\n{}", exited.log))?;
    check_direct_response(&envoy, filter)?;
    let url = format!("http://127.0.0.1:{}/", envoy.port());
    wrk(&url, &[], WARMUP_SECONDS)?;
    let run = wrk(&url, &[], seconds)?;
    let log = envoy.log();
    if let Some(sign) = WASM_FAILURE_SIGNS.iter().find(|sign| log.contains(*sign)) {
        return Err(format!("Envoy with {name} logged `{sign}`:\n{log}"));
    }
    Ok(run)
}

/// Checks that Envoy answers with the direct response, that the request reached the route
/// with `hello: world` exactly when a plugin runs, and that a V8 VM runs exactly then.
fn check_direct_response(envoy: &Envoy, filter: HelloFilter) -> Result<(), String> {
    let name = filter.name();
    let direct_response = |path: &str| -> Result<Response, String> {
        let response = send(envoy.port(), "GET", path, &[], b"")
            .map_err(|error| format!("{name}: GET {path} failed: {error}\n{}", envoy.log()))?;
        if response.status != 200 || response.body != DIRECT_RESPONSE_BODY.as_bytes() {
            return Err(format!(
                "{name}: GET {path} got {} {:?}, not the direct response 200 {DIRECT_RESPONSE_BODY:?}",
                response.status,
                response.text()
            ));
        }
        Ok(response)
    };
    let plugin_runs = filter != HelloFilter::NoFilter;
    direct_response("/")?;
    let check = direct_response(HELLO_CHECK_PATH)?;
    let hello = check.header(HELLO_ECHO_HEADER);
    if (hello == Some("world")) != plugin_runs {
        return Err(format!(
            "{name}: the request reached the route with `hello: {}`",
            hello.unwrap_or("(none)")
        ));
    }
    let active_vms = envoy.stats().get(ACTIVE_V8_VMS).copied().unwrap_or(0);
    if (active_vms > 0) != plugin_runs {
        return Err(format!("{name}: Envoy's {ACTIVE_V8_VMS} is {active_vms}"));
    }
    Ok(())
}

/// Loads `url` with `wrk -t1 -c16 --latency` for `seconds`, sending `headers`; a failed
/// request is an error.
fn wrk(url: &str, headers: &[&str], seconds: u32) -> Result<Run, String> {
    let mut command = Command::new("wrk");
    command
        .args(["-t1", "-c16", "--latency", "-d"])
        .arg(format!("{seconds}s"));
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(url)
        .output()
        .map_err(|error| format!("cannot run wrk ({error}): `cargo xtask bench` installs it"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk saw failed requests:\n{text}"));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

/// The mean of `field` over `runs`.
fn mean(runs: &[Run], field: fn(&Run) -> f64) -> f64 {
    runs.iter().map(field).sum::<f64>() / runs.len() as f64
}

/// `numerators[i]`'s throughput over `denominators[i]`'s, run by run.
fn per_run_ratios(numerators: &[Run], denominators: &[Run]) -> Vec<f64> {
    numerators
        .iter()
        .zip(denominators)
        .map(|(numerator, denominator)| {
            numerator.requests_per_second / denominator.requests_per_second
        })
        .collect()
}

fn average(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// `0.964, 0.907, ...`
fn list(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|ratio| format!("{ratio:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads `Requests/sec:` and the 50% and 99% lines of `--latency`.
fn parse_wrk(text: &str) -> Option<Run> {
    let mut requests_per_second = None;
    let mut p50_ms = None;
    let mut p99_ms = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("Requests/sec:") => requests_per_second = words.next()?.parse().ok(),
            Some("50%") => p50_ms = milliseconds(words.next()?),
            Some("99%") => p99_ms = milliseconds(words.next()?),
            _ => {}
        }
    }
    Some(Run {
        requests_per_second: requests_per_second?,
        p50_ms: p50_ms?,
        p99_ms: p99_ms?,
    })
}

/// `635.00us`, `1.38ms`, `2.01s` → milliseconds.
fn milliseconds(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(number) = value.strip_suffix("us") {
        (number, 0.001)
    } else if let Some(number) = value.strip_suffix("ms") {
        (number, 1.0)
    } else if let Some(number) = value.strip_suffix('s') {
        (number, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|number| number * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_plugin_runs_first_in_half_the_rounds() {
        let rounds = 0..HELLO_ROUNDS;
        let sdk_first = rounds
            .clone()
            .filter(|&round| HelloFilter::rotation(round)[1] == HelloFilter::Sdk)
            .count();
        let baseline_first = rounds
            .clone()
            .filter(|&round| HelloFilter::rotation(round)[1] == HelloFilter::Baseline)
            .count();
        assert_eq!(sdk_first, baseline_first);
        for round in rounds {
            let order = HelloFilter::rotation(round);
            assert_eq!(order[0], HelloFilter::NoFilter, "round {round}");
            for filter in HelloFilter::ALL {
                assert!(
                    order.contains(&filter),
                    "round {round} leaves out {filter:?}"
                );
            }
        }
    }

    #[test]
    fn reads_wrk_output() {
        let text = "Running 1s test @ http://127.0.0.1:1/orders
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  301.44us   6.13ms   88.00%
  Latency Distribution
     50%  950.00us
     75%    1.10ms
     90%    1.30ms
     99%    2.01s
  15000 requests in 1.00s, 5.00MB read
Requests/sec:  14999.50
Transfer/sec:      5.00MB
";
        let run = parse_wrk(text).unwrap();
        assert_eq!(run.requests_per_second, 14999.5);
        assert!((run.p50_ms - 0.95).abs() < 1e-9);
        assert!((run.p99_ms - 2010.0).abs() < 1e-9);
        assert!(parse_wrk("Requests/sec: 1").is_none());
    }

    #[test]
    fn the_direct_response_configurations_differ_only_in_the_wasm_filter() {
        let hello = Pair {
            name: "hello",
            sdk: Vec::new(),
            baseline: Vec::new(),
            sdk_path: "sdk/hello.wasm".into(),
            baseline_path: "baseline/hello_baseline.wasm".into(),
        };
        let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let manager = |filter: HelloFilter| {
            filter.envoy_config(&hello, upstream).bootstrap(0, 0)["static_resources"]["listeners"]
                [0]["filter_chains"][0]["filters"][0]["typed_config"]
                .clone()
        };
        let filter_names = |filter: HelloFilter| -> Vec<String> {
            manager(filter)["http_filters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|filter| filter["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            filter_names(HelloFilter::NoFilter),
            ["envoy.filters.http.router"]
        );
        for (filter, wasm) in [
            (HelloFilter::Baseline, "baseline/hello_baseline.wasm"),
            (HelloFilter::Sdk, "sdk/hello.wasm"),
        ] {
            assert_eq!(
                filter_names(filter),
                ["envoy.filters.http.wasm", "envoy.filters.http.router"]
            );
            let config = &manager(filter)["http_filters"][0]["typed_config"]["config"];
            assert_eq!(config["vm_config"]["code"]["local"]["filename"], wasm);
            assert_eq!(config["configuration"]["value"], HELLO_HEADER_CONFIG);
        }
        for filter in HelloFilter::ALL {
            let routes = manager(filter)["route_config"]["virtual_hosts"][0]["routes"].clone();
            // The check route, the measured one, then the catch-all to the upstream, which
            // the measured one shadows.
            assert_eq!(routes[0]["match"]["path"], HELLO_CHECK_PATH);
            assert_eq!(routes[1]["match"]["prefix"], "/");
            assert_eq!(
                routes[1]["direct_response"]["body"]["inline_string"],
                DIRECT_RESPONSE_BODY
            );
            assert!(routes[1].get("response_headers_to_add").is_none());
        }
    }
}
