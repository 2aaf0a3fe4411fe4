//! The quick benchmark run (`proxy-async-bench --quick`), as CI runs it: every measurement is
//! made and lands in the table with a figure. Its figures are printed, never asserted on.
//!
//! A test rather than an xtask step so that the benchmark binary is the one `cargo test
//! --workspace` builds: run on its own, with the benchmark's features alone, cargo would
//! compile wasmtime and its dependencies again (2 minutes and 0.3 GB on 2 cores).

use std::path::Path;
use std::process::Command;

/// The rows of the table, by the start of their first column.
const MEASUREMENTS: [&str; 17] = [
    "hello: size, raw",
    "hello: size, wasm-opt -Oz",
    "auth-flow: size, raw",
    "auth-flow: size, wasm-opt -Oz",
    "hello: instructions/request, header added",
    "hello: instructions/request, local reply",
    "auth-flow: instructions/request, success",
    "auth-flow: instructions/request, denied",
    "auth-flow: linear memory per paused request",
    "auth-flow: linear memory growth",
    "auth-flow in Envoy: requests/s",
    "auth-flow in Envoy: p50 latency",
    "auth-flow in Envoy: p99 latency",
    "hello in Envoy, direct response: requests/s, SDK vs baseline",
    "hello in Envoy, direct response: requests/s, baseline vs no filter",
    "hello in Envoy, direct response: requests/s, SDK vs no filter",
    "executor: spawn→pend→wake→complete",
];

#[test]
fn the_quick_run_measures_everything() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("BENCHMARKS.quick.md");
    let _ = std::fs::remove_file(&out);
    // The benchmark's output goes to the terminal (the test harness captures only its own).
    let status = Command::new(env!("CARGO_BIN_EXE_proxy-async-bench"))
        .args(["--quick", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "proxy-async-bench --quick: {status}");
    let table = std::fs::read_to_string(&out).unwrap();
    for measurement in MEASUREMENTS {
        let row = table
            .lines()
            .find(|line| line.starts_with(&format!("| {measurement}")))
            .unwrap_or_else(|| panic!("no row for {measurement} in:\n{table}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for (column, cell) in [("SDK", cells[2]), ("baseline", cells[3])] {
            let figure: f64 = cell
                .parse()
                .unwrap_or_else(|_| panic!("{measurement}: the {column} figure is {cell:?}"));
            assert!(
                figure.is_finite() && figure >= 0.0,
                "{measurement}: {column} {figure}"
            );
        }
    }
}
