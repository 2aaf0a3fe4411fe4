//! 1. Binary size: the release `.wasm`, raw and after `wasm-opt -Oz` (binaryen).

use std::process::Command;

use crate::plugins::{Built, Pair};
use crate::report::{Row, Table, Target};

pub(crate) fn measure(built: &Built, table: &mut Table) -> Result<(), String> {
    for pair in [&built.hello, &built.auth_flow] {
        table.push(Row::new(
            format!("{}: size, raw (bytes)", pair.name),
            pair.sdk.len() as f64,
            pair.baseline.len() as f64,
            Target::RatioAtMost(1.15),
        ));
        let sdk = optimized_size(pair, true)?;
        let baseline = optimized_size(pair, false)?;
        table.push(Row::new(
            format!("{}: size, wasm-opt -Oz (bytes)", pair.name),
            sdk as f64,
            baseline as f64,
            Target::RatioAtMost(1.15),
        ));
    }
    Ok(())
}

/// Runs `wasm-opt -Oz` (with the features rustc enables for wasm32-wasip1) on one version.
fn optimized_size(pair: &Pair, sdk: bool) -> Result<u64, String> {
    let input = if sdk {
        &pair.sdk_path
    } else {
        &pair.baseline_path
    };
    let output = input.with_extension("oz.wasm");
    let status = Command::new("wasm-opt")
        .args([
            "-Oz",
            "--strip-debug",
            "--strip-producers",
            "--enable-bulk-memory",
            "--enable-sign-ext",
            "--enable-mutable-globals",
            "--enable-nontrapping-float-to-int",
            "--enable-multivalue",
            "--enable-reference-types",
        ])
        .arg(input)
        .arg("-o")
        .arg(&output)
        .status()
        .map_err(|error| {
            format!("cannot run wasm-opt ({error}): `cargo xtask bench` installs binaryen")
        })?;
    if !status.success() {
        return Err(format!("wasm-opt -Oz {} failed: {status}", input.display()));
    }
    std::fs::metadata(&output)
        .map(|metadata| metadata.len())
        .map_err(|error| format!("cannot read {}: {error}", output.display()))
}
