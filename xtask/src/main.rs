//! Project tasks, run as `cargo xtask <task>`.
//!
//! `cargo xtask test` installs what the tests need (the pinned toolchain's wasm targets, a
//! nightly toolchain with Miri), then runs every check CI runs: formatting, clippy (native and
//! wasm), the workspace's tests, the release wasm build of every example, and Miri over the
//! executor, the SDK (its stream driver) and the emulated proxy. It stops at the first failure and says which step failed.

use std::process::{Command, ExitCode};

/// The wasm target plugins are built for.
const PLUGIN_TARGET: &str = "wasm32-wasip1";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("test") => test(),
        _ => {
            eprintln!(
                "usage: cargo xtask test\n\n  test   install what the tests need, then run every check CI runs"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn test() -> Result<(), String> {
    // The pinned toolchain comes from rust-toolchain.toml; make sure its wasm targets are there
    // even on a rustup that did not install them with it.
    run(
        "install the wasm targets",
        Command::new("rustup").args(["target", "add", PLUGIN_TARGET, "wasm32-wasip2"]),
    )?;
    run(
        "install nightly with Miri",
        Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "miri,rust-src",
        ]),
    )?;
    run(
        "check formatting",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        "clippy (native)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "clippy (wasm)",
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "xtask",
            "--exclude",
            "proxy-async-host",
            "--target",
            PLUGIN_TARGET,
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run("tests", cargo().args(["test", "--workspace"]))?;
    run(
        "release wasm build of the examples",
        cargo().args([
            "build",
            "--release",
            "--target",
            PLUGIN_TARGET,
            "--workspace",
            "--exclude",
            "xtask",
            "--exclude",
            "proxy-async-host",
        ]),
    )?;
    run(
        "Miri over the executor, the SDK's stream driver and the emulated proxy",
        Command::new("cargo").args([
            "+nightly",
            "miri",
            "test",
            "-p",
            "proxy-async-executor",
            "-p",
            "proxy-async",
            "-p",
            "proxy-emulator",
        ]),
    )?;
    println!("xtask: every check passed");
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}

fn run(step: &str, command: &mut Command) -> Result<(), String> {
    println!("xtask: {step}");
    let status = command
        .status()
        .map_err(|error| format!("{step}: could not start {command:?}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status}): {command:?}"))
    }
}
