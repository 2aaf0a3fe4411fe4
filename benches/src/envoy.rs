//! 4. Throughput and latency in real Envoy (one worker) under `wrk`, with the demo auth and
//!    users services on loopback: SDK and baseline alternated A/B/A/B, each run in a fresh
//!    Envoy, the ratio taken per pair so that drift of the machine cancels out.

use std::path::Path;
use std::process::Command;

use e2e::{Envoy, EnvoyConfig, Upstreams};

use crate::Settings;
use crate::plugins::Built;
use crate::report::{Row, Table, Target};
use crate::scenarios::AUTH_CONFIG;

/// What one `wrk` run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub(crate) fn measure(built: &Built, settings: &Settings, table: &mut Table) -> Result<(), String> {
    let (pairs, seconds) = if settings.quick { (1, 1) } else { (4, 10) };
    let upstreams = Upstreams::start_unrecorded();
    let pair = &built.auth_flow;
    let mut sdk_runs = Vec::new();
    let mut baseline_runs = Vec::new();
    for round in 0..pairs {
        println!("bench:   pair {} of {pairs}", round + 1);
        sdk_runs.push(run(&pair.sdk_path, &upstreams, seconds)?);
        baseline_runs.push(run(&pair.baseline_path, &upstreams, seconds)?);
    }
    let ratios: Vec<f64> = sdk_runs
        .iter()
        .zip(&baseline_runs)
        .map(|(sdk, baseline)| sdk.requests_per_second / baseline.requests_per_second)
        .collect();
    let mean = |runs: &[Run], field: fn(&Run) -> f64| {
        runs.iter().map(field).sum::<f64>() / runs.len() as f64
    };
    let spread = format!(
        "per-pair ratios {}",
        ratios
            .iter()
            .map(|ratio| format!("{ratio:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut throughput = Row::new(
        format!(
            "auth-flow in Envoy: requests/s (1 worker, wrk 16 connections, {seconds} s × {pairs} pairs)"
        ),
        mean(&sdk_runs, |run| run.requests_per_second),
        mean(&baseline_runs, |run| run.requests_per_second),
        Target::RatioAtLeast(0.97),
    );
    throughput.ratio = ratios.iter().sum::<f64>() / ratios.len() as f64;
    throughput.note = spread;
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

/// Starts Envoy with `wasm`, checks one request, and loads it with `wrk` for `seconds`.
fn run(wasm: &Path, upstreams: &Upstreams, seconds: u32) -> Result<Run, String> {
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
    let output = Command::new("wrk")
        .args(["-t1", "-c16", "--latency", "-d"])
        .arg(format!("{seconds}s"))
        .args(["-H", "authorization: Bearer demo-token"])
        .arg(format!("http://127.0.0.1:{}/orders", envoy.port()))
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
}
