//! The table: one row per measurement, SDK next to baseline, with the ratio and the target.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::Settings;
use crate::executor_cycle::CycleResult;

/// What a row must reach.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// SDK/baseline at most this.
    RatioAtMost(f64),
    /// SDK/baseline at least this.
    RatioAtLeast(f64),
    /// The SDK's value is zero (and the baseline's, for reference).
    Zero,
    /// No target: a figure for the reader.
    None,
}

/// One measurement.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) label: String,
    pub(crate) sdk: f64,
    pub(crate) baseline: f64,
    /// SDK/baseline (or the mean of per-pair ratios, when runs are paired).
    pub(crate) ratio: f64,
    pub(crate) target: Target,
    pub(crate) note: String,
}

impl Row {
    pub(crate) fn new(label: impl Into<String>, sdk: f64, baseline: f64, target: Target) -> Row {
        Row {
            label: label.into(),
            sdk,
            baseline,
            ratio: if baseline == 0.0 {
                f64::NAN
            } else {
                sdk / baseline
            },
            target,
            note: String::new(),
        }
    }

    /// Whether the row meets its target; `None` without one.
    pub(crate) fn met(&self) -> Option<bool> {
        match self.target {
            Target::RatioAtMost(limit) => Some(self.ratio <= limit),
            Target::RatioAtLeast(limit) => Some(self.ratio >= limit),
            Target::Zero => Some(self.sdk == 0.0),
            Target::None => None,
        }
    }

    fn target_text(&self) -> String {
        match self.target {
            Target::RatioAtMost(limit) => format!("≤ {limit:.2}×"),
            Target::RatioAtLeast(limit) => format!("≥ {limit:.2}×"),
            Target::Zero => "0 (no growth)".to_string(),
            Target::None => "—".to_string(),
        }
    }

    fn cells(&self) -> [String; 7] {
        let ratio = if self.ratio.is_finite() {
            format!("{:.3}", self.ratio)
        } else {
            "—".to_string()
        };
        let met = match self.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        [
            self.label.clone(),
            number(self.sdk),
            number(self.baseline),
            ratio,
            self.target_text(),
            met.to_string(),
            self.note.clone(),
        ]
    }
}

/// Large figures without decimals, small ones with enough to read.
fn number(value: f64) -> String {
    if value.abs() >= 1000.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// Every row of one run.
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: Vec<Row>,
    /// Instructions per callback of one successful request: `(callback, SDK, baseline)`.
    pub(crate) breakdown: Vec<(String, u64, u64)>,
}

const HEADER: [&str; 7] = [
    "measurement",
    "SDK",
    "baseline",
    "SDK/baseline",
    "target",
    "met",
    "notes",
];

impl Table {
    pub(crate) fn push(&mut self, row: Row) {
        println!(
            "bench:   {}: SDK {} baseline {} ratio {:.3}",
            row.label,
            number(row.sdk),
            number(row.baseline),
            row.ratio
        );
        self.rows.push(row);
    }

    /// The executor row: ours next to `futures::executor::LocalPool`.
    pub(crate) fn executor(&mut self, cycle: &CycleResult) {
        let mut row = Row::new(
            "executor: spawn→pend→wake→complete, native (ns/cycle, median; baseline = futures LocalPool)",
            cycle.ours.median_ns,
            cycle.local_pool.median_ns,
            Target::None,
        );
        row.note = format!(
            "p10–p90: ours {:.1}–{:.1}, LocalPool {:.1}–{:.1}; {} samples × {} cycles",
            cycle.ours.p10_ns,
            cycle.ours.p90_ns,
            cycle.local_pool.p10_ns,
            cycle.local_pool.p90_ns,
            cycle.ours.samples,
            cycle.cycles_per_sample
        );
        self.push(row);
    }

    /// The table as Markdown.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", HEADER.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.cells().join(" | "));
        }
        out
    }
}

/// The first line of `command --version`-like output, or why not.
fn version(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
            text.lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(error) => format!("{program}: {error}"),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// `BENCHMARKS.md`: the table with what produced it.
pub(crate) fn markdown(table: &Table, settings: &Settings, elapsed: Duration) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |cores| cores.get());
    let command = if settings.quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmarks: the SDK against hand-written callback plugins\n"
    );
    let _ = writeln!(
        out,
        "Produced by `{command}` in one run ({:.0} s). SDK = the example built with proxy-async; \
         baseline = the same plugin written by hand with raw callbacks on the `proxy-wasm` crate \
         ([`benches/baselines/`](benches/baselines), behaviour proven identical by \
         `benches/identical`). Ratios are SDK/baseline.\n",
        elapsed.as_secs_f64()
    );
    if settings.quick {
        let _ = writeln!(
            out,
            "**Quick mode**: every run shortened for CI; these figures are not meant to be quoted.\n"
        );
    }
    out.push_str(&table.render());
    let _ = writeln!(
        out,
        "\n## Where the instructions go\n\nOne successful request, callback by callback (wasm \
         instructions, after warm-up):\n"
    );
    let _ = writeln!(
        out,
        "| callback | SDK | baseline | SDK − baseline |\n|---|---|---|---|"
    );
    for (step, sdk, baseline) in &table.breakdown {
        let _ = writeln!(
            out,
            "| {step} | {sdk} | {baseline} | {} |",
            i128::from(*sdk) - i128::from(*baseline)
        );
    }
    let _ = writeln!(out, "\n## How each figure is taken\n");
    let _ = writeln!(
        out,
        "- **Size**: the release `.wasm` (wasm32-wasip1, `lto`, `opt-level = 3`, `panic = \"abort\"`), \
         raw and after `wasm-opt -Oz --strip-debug --strip-producers`."
    );
    let _ = writeln!(
        out,
        "- **Instructions per request**: our wasmtime host's fuel, summed over every callback of a \
         request (context create, request headers, call responses, response headers, log, done, \
         delete) in the emulated proxy; mean of 200 requests after 20 warm-up ones."
    );
    let _ = writeln!(
        out,
        "- **Memory**: the plugin's linear memory (64 KiB pages) in our host. Per paused request: \
         growth while the requests wait on their auth call, divided by their number, after 100 \
         warm-up requests. Growth: memory after the late count of complete requests minus after \
         the early one."
    );
    let _ = writeln!(
        out,
        "- **Envoy**: Envoy 1.40 (V8), `--concurrency 1`, auth-flow in front of an echo upstream, \
         with the demo auth and users services in-process on loopback; `wrk -t1 -c16 --latency` \
         with the demo credential; a fresh Envoy per run; SDK and baseline alternated, the \
         throughput ratio is the mean of the per-pair ratios (listed in the notes)."
    );
    let _ = writeln!(
        out,
        "- **Envoy, direct response**: the same Envoy and `wrk` settings, `hello` (its default \
         configuration: `hello: world` added) in front of a route whose `direct_response` \
         answers 200 itself, so that no upstream is involved; no wasm filter, then the baseline \
         and the SDK, in rounds (which of the two runs first swaps every round), each a fresh Envoy checked first (the direct response, \
         the header added exactly when a plugin runs, a V8 VM exactly then) and warmed up with \
         1 s of `wrk`; ratios are the means of the per-round ratios. In the rows against no \
         filter the SDK column holds the plugin and the baseline column Envoy alone. The time \
         the filter adds per request is 1/throughput minus 1/throughput without a filter, per \
         round: the worker is kept busy."
    );
    let _ = writeln!(
        out,
        "- **Executor**: one task that awaits a registry token, run until stalled, the token \
         completed, run until stalled (the task finishes), timed natively; LocalPool does the \
         same with a oneshot channel."
    );
    let _ = writeln!(out, "\n## Machine and versions\n");
    let _ = writeln!(out, "- CPU: {} ({cores} cores available)", cpu_model());
    let _ = writeln!(out, "- OS: {}", version("uname", &["-srm"]));
    let _ = writeln!(out, "- Rust: {}", version("rustc", &["--version"]));
    let envoy = e2e::envoy_bin();
    let _ = writeln!(
        out,
        "- Envoy: {}",
        version(&envoy.to_string_lossy(), &["--version"])
    );
    let _ = writeln!(out, "- wrk: {}", version("wrk", &["-v"]));
    let _ = writeln!(out, "- binaryen: {}", version("wasm-opt", &["--version"]));
    let _ = writeln!(out, "- wasmtime: 48 (our host, Cranelift, fuel metering)");
    let _ = writeln!(
        out,
        "\nReproduce: `{command}` (it installs wrk and binaryen when missing)."
    );
    out
}
