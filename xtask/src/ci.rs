//! `cargo xtask test`, what CI runs, and `cargo xtask bench`, `profile` and `soak`.
//!
//! The order is chosen for a 2-core machine: the installs that wait on the network run in a
//! thread beside the build, and Miri, which interprets on one core for minutes, runs in its own
//! process (and target folder) beside the rest. Every crate is compiled once: clippy's driver
//! compiles the tests (natively) and the plugins (to wasm, by `compiled-plugins`' build
//! script), so no step compiles anything again only to lint it.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::install;
use crate::process::{Timings, cargo, disk_usage, exited_cpu, minutes, run, target_dir, workspace};
use crate::scaffold;

/// The crates a plugin author depends on: what `cargo package` must accept and `cargo doc`
/// document without a warning.
const PUBLISHED: [&str; 5] = [
    "proxy-async-abi",
    "proxy-async-executor",
    "proxy-async-emulator",
    "proxy-async",
    "proxy-async-guests",
];

/// The crates Miri runs the tests of: the executor, the SDK (its stream driver), the emulated
/// proxy and the ABI (its codec and stream gate).
const UNDER_MIRI: [&str; 4] = [
    "proxy-async-executor",
    "proxy-async",
    "proxy-async-emulator",
    "proxy-async-abi",
];

/// The test targets of [`UNDER_MIRI`] that Miri runs: those that drive the executor's unsafe
/// waker code and the stream driver's shared state (its unit tests, the executor's tests, the
/// hook, timer and schedule tests, the gate). The parser tests (`fuzz`, `resp`, `higress_*`,
/// `redis`) and the doc examples reach no unsafe code natively, so Miri would only repeat the
/// native run of them at a hundred times its cost (2 of Miri's 5:40 here); they run natively.
const MIRI_TESTS: [&str; 5] = ["executor", "schedules", "hooks", "timers", "gate"];

/// `cargo xtask test`.
pub(crate) fn test() -> Result<(), String> {
    let started = Instant::now();
    let mut timings = Timings::default();
    timings.step("install the wasm targets", install::wasm_targets)?;
    timings.step("install nightly with Miri", install::miri)?;
    // Miri interprets on one core for minutes: it starts first, so that it is not what the
    // run waits for at the end.
    let miri = Miri::start()?;
    yield_to_miri();
    // Envoy and the Debian packages arrive while the checks compile.
    let installing = Instant::now();
    let installs = std::thread::spawn(install::for_tests);
    timings.step("check formatting", || {
        run(
            "check formatting",
            cargo().args(["fmt", "--all", "--", "--check"]),
        )
    })?;
    timings.step(
        "clippy, native and wasm, and the tests' build (every plugin to wasm first)",
        || {
            run(
                "clippy and the build of the tests",
                clippy_and_tests()?.arg("--no-run"),
            )
        },
    )?;
    installs
        .join()
        .map_err(|_| "installing the tools panicked".to_string())??;
    timings.record(
        "installs (beside the steps above)",
        installing.elapsed(),
        None,
    );
    timings.step(
        "the tests (those that wait on Envoy beside the others)",
        tests,
    )?;
    timings.step("a plugin crate outside the workspace", scaffold::check)?;
    timings.step("cargo package", package)?;
    timings.step("cargo doc", docs)?;
    let (miri_took, miri_cpu) = miri.finish()?;
    timings.record(
        "Miri (beside every step since its install)",
        miri_took,
        miri_cpu,
    );
    let took = started.elapsed();
    let size = disk_usage(&target_dir());
    println!("xtask: every check passed");
    for line in timings.lines() {
        println!("  {line}");
    }
    println!(
        "xtask: cargo xtask test took {} (wall); target/ holds {:.2} GB",
        minutes(took),
        size as f64 / 1e9
    );
    Ok(())
}

/// Lowers this process's priority, and with it that of every step it starts from now on, below
/// Miri's. Miri interprets on one thread; at equal priority the builds' compiler processes (the
/// tests' and the nested wasm builds') left it a third of a core, so that it ran the whole 13
/// minutes and ended last, alone, with the other core idle. Ahead of them it needs 4 minutes
/// of its core, and the builds have the other core meanwhile and both after: same work, less
/// waiting. Speed only: a failure to lower it is reported and the run goes on.
fn yield_to_miri() {
    let pid = std::process::id().to_string();
    let lowered = Command::new("renice")
        .args(["-n", "10", "-p", &pid])
        .stdout(Stdio::null())
        .status();
    if !matches!(lowered, Ok(status) if status.success()) {
        println!("xtask: could not lower this process's priority below Miri's ({lowered:?})");
    }
}

/// The test targets that spend their time waiting on Envoy, wrk and sockets rather than
/// computing: the end-to-end suite and the quick benchmark (whose figures are counts, and ratios
/// of runs taken side by side). They run beside the other tests, so that their waiting overlaps
/// work (cargo runs one test binary at a time).
const WAITING_TESTS: [&str; 2] = ["envoy", "quick"];

/// Runs every test the build made: [`WAITING_TESTS`] and then the doc tests (whose compiling
/// fills the waits) in one thread, their output in `target/waiting-tests.log` (printed when
/// they end), the other tests beside them. Each `cargo test` selects its targets by name across
/// the whole workspace, so that the features, and with them the binaries, are those of the
/// build: nothing compiles again.
fn tests() -> Result<(), String> {
    let log_path = target_dir().join("waiting-tests.log");
    let log = File::create(&log_path)
        .map_err(|error| format!("cannot create {}: {error}", log_path.display()))?;
    let mut waiting = clippy_and_tests()?;
    for name in WAITING_TESTS {
        waiting.args(["--test", name]);
    }
    let mut docs = clippy_and_tests()?;
    docs.arg("--doc");
    println!(
        "xtask: the tests {} and the doc tests (beside the others; output in {})",
        WAITING_TESTS.join(", "),
        log_path.display()
    );
    let beside = std::thread::spawn(move || -> Result<(), String> {
        for (what, mut command) in [("the waiting tests", waiting), ("the doc tests", docs)] {
            let out = log.try_clone().map_err(|error| error.to_string())?;
            let errors = log.try_clone().map_err(|error| error.to_string())?;
            let status = command
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(errors))
                .status()
                .map_err(|error| format!("cannot start {what}: {error}"))?;
            if !status.success() {
                return Err(format!("{what} failed ({status}); their output is above"));
            }
        }
        Ok(())
    });
    let mut others = clippy_and_tests()?;
    others.args(["--lib", "--bins"]);
    for name in other_test_targets()? {
        others.args(["--test", &name]);
    }
    let others = run("the other tests", &mut others);
    println!("xtask: wait for the tests beside");
    let beside = beside
        .join()
        .map_err(|_| "the tests beside panicked".to_string())?;
    print!("{}", std::fs::read_to_string(&log_path).unwrap_or_default());
    others?;
    beside
}

/// The names of the workspace's integration tests, but [`WAITING_TESTS`].
fn other_test_targets() -> Result<Vec<String>, String> {
    let output = cargo()
        .current_dir(workspace())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|error| format!("cannot run cargo metadata: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("cargo metadata: {error}"))?;
    let mut names: Vec<String> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|package| package["targets"].as_array().into_iter().flatten())
        .filter(|target| {
            target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "test"))
        })
        .filter_map(|target| target["name"].as_str())
        .filter(|name| !WAITING_TESTS.contains(name))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// `cargo test --workspace` with clippy's lints, every warning an error: clippy's driver
/// compiles the workspace's crates (what `cargo clippy --workspace --all-targets -- -D
/// warnings` checks), so that their dependencies are compiled once, for the tests, rather than
/// once more in check mode for clippy. The plugins' wasm builds (`proxy-async-guests`, run by
/// `compiled-plugins`' build script) lint with the same driver what they compile for
/// `wasm32-wasip1` and `wasm32-wasip2`: every crate that is ever built for wasm (the SDK, its
/// executor and ABI, every plugin). The crates that only run natively (the host, the emulated
/// proxy, the test crates) are linted natively.
fn clippy_and_tests() -> Result<Command, String> {
    let sysroot = Command::new("rustc")
        .current_dir(workspace())
        .args(["--print", "sysroot"])
        .output()
        .map_err(|error| format!("cannot run rustc: {error}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let driver = std::path::Path::new(&sysroot)
        .join("bin")
        .join("clippy-driver");
    if !driver.is_file() {
        return Err(format!("no clippy-driver at {}", driver.display()));
    }
    let mut command = cargo();
    command
        .current_dir(workspace())
        .env("RUSTC_WORKSPACE_WRAPPER", &driver)
        .env(proxy_async_guests::LINT_ENV, &driver)
        // How `cargo clippy -- -D warnings` hands its arguments to the driver.
        .env(
            "CLIPPY_ARGS",
            "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
        )
        .args(["test", "--workspace"]);
    Ok(command)
}

/// `cargo package` of the published crates, built from their packages as crates.io would.
fn package() -> Result<(), String> {
    forget_packaged_sources();
    let mut command = cargo();
    command.args(["package", "--allow-dirty"]);
    for name in PUBLISHED {
        command.args(["-p", name]);
    }
    run("cargo package", &mut command)
}

/// Removes cargo's extractions of the crates an earlier `cargo package` run packaged. Cargo
/// verifies a package against the sources it extracts from the temporary local registry it
/// packages into (`$CARGO_HOME/registry/src/-<hash of that registry's path>/<crate>-<version>`),
/// and never extracts a crate again whose folder exists: with the version unchanged, a second
/// run in the same folder compiled the first run's sources and failed on code since removed.
fn forget_packaged_sources() {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cargo"))
        });
    let Some(sources) = home.map(|home| home.join("registry").join("src")) else {
        return;
    };
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return;
    };
    // Local registries' folders are named `-<hash>`; crates.io's, `index.crates.io-<hash>`.
    let local = registries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with('-'));
    for registry in local {
        let Ok(crates) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for extracted in crates.flatten() {
            let name = extracted.file_name().to_string_lossy().into_owned();
            let ours = PUBLISHED.iter().any(|published| {
                name.strip_prefix(published)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            });
            if ours && let Err(error) = std::fs::remove_dir_all(extracted.path()) {
                println!(
                    "xtask: cannot remove {} ({error}); cargo package may verify stale sources",
                    extracted.path().display()
                );
            }
        }
    }
}

/// `cargo doc` of the published crates, every warning an error.
fn docs() -> Result<(), String> {
    let mut command = cargo();
    command
        .env("RUSTDOCFLAGS", "-D warnings")
        .args(["doc", "--no-deps"]);
    for name in PUBLISHED {
        command.args(["-p", name]);
    }
    run("cargo doc", &mut command)
}

/// Miri over the crates in [`UNDER_MIRI`], in a process of its own (its own target folder,
/// `target/miri`), its output in `target/miri.log`.
struct Miri {
    child: Child,
    /// Watches for the process's end without waiting for it (see [`exited_cpu`]), so that its
    /// time is taken when it ends and its CPU time is not counted in whichever step is running
    /// then; `None` where `/proc` cannot tell.
    ended: std::thread::JoinHandle<Option<(Duration, Duration)>>,
    started: Instant,
}

impl Miri {
    fn start() -> Result<Miri, String> {
        let log_path = target_dir().join("miri.log");
        std::fs::create_dir_all(target_dir()).map_err(|error| error.to_string())?;
        let log = File::create(&log_path)
            .map_err(|error| format!("cannot create {}: {error}", log_path.display()))?;
        let errors = log.try_clone().map_err(|error| error.to_string())?;
        let mut command = Command::new("cargo");
        command
            .current_dir(workspace())
            // proptest's default generator (ChaCha) is most of what a case costs under Miri;
            // XorShift draws the same kinds of cases for a fraction of it (681 s -> 323 s
            // here, same tests, same cases).
            .env("PROPTEST_RNG_ALGORITHM", "xs")
            .env("MIRIFLAGS", "-Zmiri-env-forward=PROPTEST_RNG_ALGORITHM")
            .args(["+nightly", "miri", "test"]);
        for name in UNDER_MIRI {
            command.args(["-p", name]);
        }
        // Each `--test` selects that target in whichever of the packages has it. (Cargo runs
        // no doc tests with a target selection; the examples run natively.)
        command.arg("--lib");
        for name in MIRI_TESTS {
            command.args(["--test", name]);
        }
        println!(
            "xtask: Miri over {} (beside the next steps; its output goes to {})",
            UNDER_MIRI.join(", "),
            log_path.display()
        );
        let child = command
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(errors))
            .spawn()
            .map_err(|error| format!("cannot start Miri: {error}"))?;
        let started = Instant::now();
        let pid = child.id();
        let ended = std::thread::spawn(move || {
            loop {
                if let Some(cpu) = exited_cpu(pid) {
                    return Some((started.elapsed(), cpu));
                }
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Ok(Miri {
            child,
            ended,
            started,
        })
    }

    /// Waits for Miri; its wall time and, where known, CPU time. On a failure, its log.
    fn finish(mut self) -> Result<(Duration, Option<Duration>), String> {
        println!("xtask: wait for Miri");
        let status = self
            .child
            .wait()
            .map_err(|error| format!("Miri: {error}"))?;
        let (took, cpu) = match self.ended.join().ok().flatten() {
            Some((took, cpu)) => (took, Some(cpu)),
            None => (self.started.elapsed(), None),
        };
        let log_path = target_dir().join("miri.log");
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let results: Vec<&str> = log
            .lines()
            .filter(|line| line.starts_with("test result:"))
            .collect();
        if !status.success() {
            return Err(format!("Miri failed ({status}):\n{log}"));
        }
        println!(
            "xtask: Miri passed in {} ({} test binaries)",
            minutes(took),
            results.len()
        );
        Ok((took, cpu))
    }
}

/// `cargo xtask bench`: installs wrk, binaryen and Envoy when missing, then runs the benchmark
/// binary and writes its table to `BENCHMARKS.md`; with `quick`, short runs of a debug build
/// (counts of instructions and bytes are the same, timings are not meant to be quoted) to
/// `target/BENCHMARKS.quick.md`. (`cargo xtask test` runs the quick one as a test of
/// `proxy-async-bench`, `benches/tests/quick.rs`.)
pub(crate) fn bench(quick: bool) -> Result<(), String> {
    install::for_tests()?;
    let mut command = cargo();
    command
        .current_dir(workspace())
        .args(["run", "-p", "proxy-async-bench"]);
    let out = if quick {
        target_dir().join("BENCHMARKS.quick.md")
    } else {
        command.arg("--release");
        workspace().join("BENCHMARKS.md")
    };
    command.arg("--").arg("--out").arg(&out);
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

/// `cargo xtask profile <example> <scenario>`: the wasm targets when missing, then the
/// benchmark binary's `profile` (a debug build, as for `bench --quick`: the counts are the
/// same): one request's instructions per callback and per function and its allocations by call
/// site, the SDK plugin beside its baseline, printed (`benches/src/profile.rs`); with `lines`,
/// the SDK plugin's instructions by source line too (`benches/src/lines.rs`).
pub(crate) fn profile(example: &str, scenario: &str, lines: bool) -> Result<(), String> {
    install::wasm_targets()?;
    run(
        &format!("profile of {example} {scenario}"),
        cargo()
            .current_dir(workspace())
            .args(["run", "--quiet", "-p", "proxy-async-bench", "--", "profile"])
            .args([example, scenario])
            .args(lines.then_some("--lines")),
    )
}

/// `cargo xtask soak`: installs Envoy when missing, then runs the soak tests with their full
/// counts (`SOAK_FULL=1`), optimized, one at a time so that neither slows the other down, with
/// their figures printed: in our host, then in Envoy.
pub(crate) fn soak() -> Result<(), String> {
    install::envoy()?;
    for (package, test) in [("proxy-async-host", "host"), ("e2e", "envoy")] {
        run(
            &format!("the soak in {test} (full counts, release)"),
            cargo()
                .current_dir(workspace())
                .env("SOAK_FULL", "1")
                .args(["test", "--release", "-p", package, "--test", test])
                .args(["--", "soak", "--nocapture", "--test-threads", "1"]),
        )?;
    }
    Ok(())
}
