//! `cargo xtask bench`: the SDK's plugins measured side by side, in one run, against the same
//! plugins written by hand with raw callbacks on the `proxy-wasm` crate (`benches/baselines/`).
//!
//! ```text
//! proxy-async-bench [--quick] [--out FILE]
//! ```
//!
//! It takes `hello` and `auth-flow` and their baselines (release, wasm32-wasip1, built by
//! `compiled-plugins`), then measures:
//! 1. the size of each `.wasm`, raw and after `wasm-opt -Oz` (binaryen);
//! 2. wasm instructions per request (our host's fuel), summed over every callback of a request,
//!    on a success path and a failure path;
//! 3. linear memory per in-flight request with 10,000 requests paused on a call, and after
//!    100,000 completed requests compared with after the first 1,000;
//! 4. requests per second and p50/p99 latency in real Envoy (one worker) under `wrk`, SDK and
//!    baseline alternated A/B/A/B, with the ratio per pair; and `hello`'s requests per second
//!    on a direct-response route (no upstream), no filter, baseline and SDK alternated in
//!    rounds, with the ratios per round;
//! 5. one spawn→pend→wake→complete cycle of the executor, natively, next to
//!    `futures::executor::LocalPool`.
//!
//! It prints one table and writes it (with the machine, the versions and the command) to
//! `--out` (default `BENCHMARKS.md`). `--quick` shrinks every run so that CI can run the code
//! in a minute; its figures are not meant to be quoted. Nothing here asserts on timings.
//!
//! ```text
//! proxy-async-bench profile <example> <scenario>
//! ```
//!
//! (`cargo xtask profile`) breaks one request of a measured scenario down instead: the SDK
//! plugin and its baseline side by side, instructions per callback, per function and the
//! allocations by call site (`profile.rs`).

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[cfg(not(target_arch = "wasm32"))]
mod envoy;
#[cfg(not(target_arch = "wasm32"))]
mod executor_cycle;
#[cfg(not(target_arch = "wasm32"))]
mod fuel;
#[cfg(not(target_arch = "wasm32"))]
mod instrument;
#[cfg(not(target_arch = "wasm32"))]
mod lines;
#[cfg(not(target_arch = "wasm32"))]
mod memory;
#[cfg(not(target_arch = "wasm32"))]
mod plugins;
#[cfg(not(target_arch = "wasm32"))]
mod profile;
#[cfg(not(target_arch = "wasm32"))]
mod report;
#[cfg(not(target_arch = "wasm32"))]
mod scenarios;
#[cfg(not(target_arch = "wasm32"))]
mod size;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((command, rest)) if command == "profile" => profile::run(rest),
        Some((command, rest)) if command == "envoy-hello" => envoy::hello_only(rest),
        _ => run(args.into_iter()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Built for wasm (the workspace's wasm checks build every member) there is nothing to run.
#[cfg(target_arch = "wasm32")]
fn main() {}

/// The settings of one run.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Small runs, for CI.
    pub(crate) quick: bool,
    /// Where the table goes.
    pub(crate) out: std::path::PathBuf,
}

#[cfg(not(target_arch = "wasm32"))]
fn run(mut args: impl Iterator<Item = String>) -> Result<(), String> {
    let mut settings = Settings {
        quick: false,
        out: plugins::workspace().join("BENCHMARKS.md"),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => settings.quick = true,
            "--out" => {
                settings.out = args.next().ok_or("--out needs a file")?.into();
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: [--quick] [--out FILE] | profile <example> <scenario> | envoy-hello [ROUNDS] [SECONDS]"
                ));
            }
        }
    }
    let started = std::time::Instant::now();
    let built = plugins::load()?;
    let mut table = report::Table::default();

    println!("bench: sizes");
    size::measure(&built, &mut table)?;
    println!("bench: wasm instructions per request");
    fuel::measure(&built, &mut table)?;
    table.breakdown = fuel::breakdown(&built)?;
    println!("bench: linear memory");
    memory::measure(&built, &settings, &mut table)?;
    println!("bench: Envoy throughput (wrk)");
    envoy::measure(&built, &settings, &mut table)?;
    println!("bench: executor cycle");
    let cycle = executor_cycle::measure(settings.quick);
    table.executor(&cycle);

    let markdown = report::markdown(&table, &settings, started.elapsed());
    println!("\n{}", table.render());
    std::fs::write(&settings.out, markdown)
        .map_err(|error| format!("cannot write {}: {error}", settings.out.display()))?;
    println!("bench: wrote {}", settings.out.display());
    Ok(())
}
