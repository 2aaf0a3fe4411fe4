//! `proxy-async-bench profile <example> <scenario>` (`cargo xtask profile`): where one request's
//! wasm instructions and allocations go, callback by callback, in the SDK plugin and in its
//! hand-written baseline side by side.
//!
//! Each plugin runs twice, in our wasmtime host and the emulated proxy, with the traffic of the
//! benchmark (`scenarios.rs`) and the same warm-up: once as built, for the real fuel of each
//! callback (what `BENCHMARKS.md` counts), and once instrumented (`instrument.rs`), for the
//! instructions each function executed itself and the calls to the allocator by calling
//! function. The instrumented sum is printed beside the real fuel, so that a reader sees how
//! far the breakdown is from what it breaks down.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::rc::Rc;

use proxy_async_host::proxy_async_abi::{Action, Callbacks, PluginFailure};
use proxy_async_host::proxy_async_emulator::{Proxy, ProxyConfig, ProxyState};
use proxy_async_host::{Plugin, PluginModule};

use crate::instrument::{self, AllocationSite, FUNCTION_COUNTER, Instrumented, SITE_COUNTER};
use crate::lines;
use crate::plugins;
use crate::scenarios::{
    AUTH_CONFIG, HELLO_HEADER_CONFIG, HELLO_REPLY_CONFIG, WARMUP, auth_denied, auth_success,
    hello_request,
};

/// The emulated proxy with a recorder between it and the plugin.
type RecordedProxy = Proxy<Recorder>;

/// A request the profiler can break down.
struct Scenario {
    /// The example, as `cargo xtask profile` names it.
    example: &'static str,
    /// The scenario's name.
    name: &'static str,
    /// What the request does.
    description: &'static str,
    /// The plugin configuration.
    config: &'static str,
    /// The traffic of one request.
    request: fn(&RecordedProxy),
}

/// The scenarios: the requests `cargo xtask bench` counts the instructions of.
const SCENARIOS: [Scenario; 4] = [
    Scenario {
        example: "hello",
        name: "header",
        description: "the request gets a header, the response goes back",
        config: HELLO_HEADER_CONFIG,
        request: hello_request,
    },
    Scenario {
        example: "hello",
        name: "reply",
        description: "mockEnable: the plugin answers the request itself",
        config: HELLO_REPLY_CONFIG,
        request: hello_request,
    },
    Scenario {
        example: "auth-flow",
        name: "success",
        description: "both calls answered, the response goes back",
        config: AUTH_CONFIG,
        request: auth_success,
    },
    Scenario {
        example: "auth-flow",
        name: "denied",
        description: "the auth service answers 401, the plugin replies 403",
        config: AUTH_CONFIG,
        request: auth_denied,
    },
];

/// Functions listed for the whole request, and for each callback that costs at least
/// [`BIG_CALLBACK`] instructions in either plugin.
const TOP_FUNCTIONS: usize = 25;
/// Functions listed for a smaller callback.
const TOP_FUNCTIONS_SMALL: usize = 6;
/// The fuel from which a callback is big enough for a long list.
const BIG_CALLBACK: u64 = 1_000;
/// The width of a function name in the side-by-side lists.
const NAME_WIDTH: usize = 56;

/// `profile <example> <scenario>`: prints the profile to stdout.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let usage = || {
        let scenarios: Vec<String> = SCENARIOS
            .iter()
            .map(|scenario| format!("{} {}", scenario.example, scenario.name))
            .collect();
        format!(
            "usage: profile <example> <scenario> [--lines], one of: {}",
            scenarios.join(", ")
        )
    };
    let (lines, args): (bool, Vec<&String>) = (
        args.iter().any(|arg| arg == "--lines"),
        args.iter().filter(|arg| *arg != "--lines").collect(),
    );
    let [example, name] = args.as_slice() else {
        return Err(usage());
    };
    let scenario = SCENARIOS
        .iter()
        .find(|scenario| scenario.example == example.as_str() && scenario.name == name.as_str())
        .ok_or_else(usage)?;
    let built = plugins::load()?;
    let pair = if scenario.example == "hello" {
        &built.hello
    } else {
        &built.auth_flow
    };
    let sdk = profile(&pair.sdk, scenario).map_err(|error| format!("the SDK plugin: {error}"))?;
    let baseline =
        profile(&pair.baseline, scenario).map_err(|error| format!("the baseline: {error}"))?;
    print!("{}", render(scenario, &sdk, &baseline));
    if lines {
        print!("{}", by_line(scenario, &pair.sdk, &sdk)?);
    }
    Ok(())
}

/// Lines shown for the whole request, and for each callback.
const TOP_LINES: usize = 40;
const TOP_LINES_PER_CALLBACK: usize = 15;

/// `--lines`: the SDK plugin's instructions by source line, for the whole request and per
/// callback, from a build with line tables whose fuel is checked against the measured one.
fn by_line(scenario: &Scenario, measured: &[u8], profile: &Profile) -> Result<String, String> {
    let workspace = plugins::workspace();
    let wasm = lines::build_with_line_tables(workspace, scenario.example)?;
    let tables = lines::LineTables::read(&wasm, workspace)?;
    let ran: HashSet<String> = profile
        .callbacks
        .iter()
        .flat_map(|callback| callback.functions.iter().map(|(name, _)| name.clone()))
        .collect();
    let (instrumented, runs) = instrument::instrument_runs(&wasm, &ran)?;
    let real = record(&wasm, scenario)?;
    let counted = record(&instrumented.wasm, scenario)?;
    let mut out = String::new();
    let measured_fuel: u64 = record(measured, scenario)?.iter().map(|r| r.fuel).sum();
    let line_fuel: u64 = real.iter().map(|r| r.fuel).sum();
    let _ = writeln!(
        out,
        "\ninstructions by source line, SDK (a build with line tables: {} fuel per request, the \
         measured module {}{})",
        thousands(line_fuel),
        thousands(measured_fuel),
        if line_fuel == measured_fuel {
            ""
        } else {
            ": the code differs, read the lines as approximate"
        }
    );
    let _ = writeln!(
        out,
        "a line outside the workspace is followed by the workspace line it was inlined into\n"
    );
    let counts_of = |record: &CallbackRecord| -> Vec<u64> {
        (0..runs.len())
            .map(|index| counter(&record.counters, instrument::RUN_COUNTER, index))
            .collect()
    };
    let mut whole = vec![0u64; runs.len()];
    for record in &counted {
        for (total, count) in whole.iter_mut().zip(counts_of(record)) {
            *total += count;
        }
    }
    render_lines(
        &mut out,
        "whole request",
        &tables.attribute(&runs, &whole),
        TOP_LINES,
    );
    let labels = number_repeated(&counted.iter().map(|r| r.callback).collect::<Vec<_>>());
    for (record, label) in counted.iter().zip(labels) {
        let attributed = tables.attribute(&runs, &counts_of(record));
        render_lines(&mut out, &label, &attributed, TOP_LINES_PER_CALLBACK);
    }
    Ok(out)
}

/// One callback's lines: by workspace line (with what it inlined) on the left, by innermost
/// line on the right.
fn render_lines(out: &mut String, label: &str, lines: &[(lines::SourceLine, u64)], rows: usize) {
    let total: u64 = lines.iter().map(|(_, count)| count).sum();
    let ours = lines::by_workspace_line(lines);
    let _ = writeln!(
        out,
        "{label} ({} instr)\n{:<50}{:>7} | {:<64}{:>7}",
        thousands(total),
        "workspace line, with what it inlined",
        "instr",
        "innermost line (<- the workspace line it is inlined into)",
        "instr"
    );
    for row in 0..rows.min(ours.len().max(lines.len())) {
        let left = ours.get(row).map_or_else(
            || format!("{:57}", ""),
            |(line, count)| format!("{:<50}{:>7}", shorten(line, 50), thousands(*count)),
        );
        let right = lines.get(row).map_or_else(String::new, |(line, count)| {
            let shown = match &line.via {
                Some(via) => format!("{} <- {via}", line.at),
                None => line.at.clone(),
            };
            format!("{:<64}{:>7}", shorten(&shown, 64), thousands(*count))
        });
        let _ = writeln!(out, "{left} | {right}");
    }
    let _ = writeln!(out);
}

/// What one plugin did in one request.
#[derive(Debug, Clone, Default)]
struct Profile {
    callbacks: Vec<CallbackProfile>,
}

/// What one callback of the request cost.
#[derive(Debug, Clone, Default)]
struct CallbackProfile {
    /// The callback, numbered when the request has several of it (`http call response 2`).
    label: String,
    /// Its real fuel, in the module as built.
    fuel: u64,
    /// The instructions the instrumented copy counted, by function name (functions that share
    /// a name, such as the instances of one generic function, are added up), most first.
    functions: Vec<(String, u64)>,
    /// The calls to the allocator, by call site, most first.
    allocations: Vec<(AllocationSite, u64)>,
}

impl CallbackProfile {
    /// The instructions the instrumented copy counted in this callback.
    fn counted(&self) -> u64 {
        self.functions.iter().map(|(_, count)| count).sum()
    }
}

/// Runs `wasm` as built and instrumented through the scenario, and puts the two together.
fn profile(wasm: &[u8], scenario: &Scenario) -> Result<Profile, String> {
    let real = record(wasm, scenario)?;
    let instrumented = instrument::instrument(wasm)?;
    let counted = record(&instrumented.wasm, scenario)?;
    let callbacks: Vec<&str> = real.iter().map(|record| record.callback).collect();
    let counted_callbacks: Vec<&str> = counted.iter().map(|record| record.callback).collect();
    if callbacks != counted_callbacks {
        return Err(format!(
            "the instrumented module got other callbacks ({counted_callbacks:?}) than the \
             module as built ({callbacks:?})"
        ));
    }
    let labels = number_repeated(&callbacks);
    let callbacks = real
        .iter()
        .zip(&counted)
        .zip(labels)
        .map(|((real, counted), label)| CallbackProfile {
            label,
            fuel: real.fuel,
            functions: by_function(&instrumented, &counted.counters),
            allocations: by_site(&instrumented, &counted.counters),
        })
        .collect();
    Ok(Profile { callbacks })
}

/// Callback names, with `1`, `2`, ... appended to those that occur more than once.
fn number_repeated(callbacks: &[&str]) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    callbacks
        .iter()
        .map(|&callback| {
            let total = callbacks.iter().filter(|&&other| other == callback).count();
            let nth = seen.entry(callback).or_insert(0);
            *nth += 1;
            if total > 1 {
                format!("{callback} {nth}")
            } else {
                callback.to_string()
            }
        })
        .collect()
}

/// The function counters of one callback, added up by function name, most first.
fn by_function(instrumented: &Instrumented, counters: &HashMap<String, i64>) -> Vec<(String, u64)> {
    let mut totals: HashMap<&str, u64> = HashMap::new();
    for (index, name) in instrumented.functions.iter().enumerate() {
        let count = counter(counters, FUNCTION_COUNTER, index);
        if count > 0 {
            *totals.entry(name).or_insert(0) += count;
        }
    }
    most_first(
        totals
            .into_iter()
            .map(|(name, count)| (name.to_string(), count)),
    )
}

/// The allocation site counters of one callback, most first.
fn by_site(
    instrumented: &Instrumented,
    counters: &HashMap<String, i64>,
) -> Vec<(AllocationSite, u64)> {
    most_first(
        instrumented
            .sites
            .iter()
            .enumerate()
            .map(|(index, site)| (site.clone(), counter(counters, SITE_COUNTER, index)))
            .filter(|(_, count)| *count > 0),
    )
}

/// What counter `{prefix}{index}` rose by (counters only rise).
fn counter(counters: &HashMap<String, i64>, prefix: &str, index: usize) -> u64 {
    counters
        .get(&format!("{prefix}{index}"))
        .map_or(0, |&delta| u64::try_from(delta).unwrap_or(0))
}

/// Sorted by count, most first, then by name.
fn most_first<K: Ord>(items: impl Iterator<Item = (K, u64)>) -> Vec<(K, u64)> {
    let mut items: Vec<(K, u64)> = items.collect();
    items.sort_by(|(a, a_count), (b, b_count)| b_count.cmp(a_count).then_with(|| a.cmp(b)));
    items
}

/// One callback as the recorder saw it.
#[derive(Debug, Clone)]
struct CallbackRecord {
    /// The callback, e.g. `request headers`.
    callback: &'static str,
    /// Its fuel.
    fuel: u64,
    /// What each exported `i64` global (the instrumented module's counters) rose by.
    counters: HashMap<String, i64>,
}

/// Runs the scenario's warm-up requests, then records each callback of one more request.
fn record(wasm: &[u8], scenario: &Scenario) -> Result<Vec<CallbackRecord>, String> {
    let module = PluginModule::new(wasm).map_err(|error| error.to_string())?;
    let state = Rc::new(RefCell::new(ProxyState::default()));
    let plugin = module
        .instantiate_shared(Rc::clone(&state))
        .map_err(|error| error.to_string())?;
    let config = ProxyConfig {
        plugin_config: scenario.config.as_bytes().to_vec(),
        ..ProxyConfig::default()
    };
    let proxy = Proxy::start(state, Recorder::new(plugin), config)
        .map_err(|rejected| rejected.to_string())?;
    for _ in 0..WARMUP {
        (scenario.request)(&proxy);
    }
    proxy.plugin().start_recording();
    (scenario.request)(&proxy);
    if let Some(failure) = proxy.failure() {
        return Err(format!("the plugin failed: {failure}"));
    }
    let records = std::mem::take(&mut proxy.plugin().records);
    Ok(records)
}

/// A plugin with a recorder around it: after each callback, once recording, its fuel and
/// what the module's counters rose by.
struct Recorder {
    plugin: Plugin<ProxyState>,
    /// The counters after the last callback; `None` until recording starts.
    counters: Option<HashMap<String, i64>>,
    records: Vec<CallbackRecord>,
}

impl Recorder {
    fn new(plugin: Plugin<ProxyState>) -> Recorder {
        Recorder {
            plugin,
            counters: None,
            records: Vec::new(),
        }
    }

    /// Records every later callback.
    fn start_recording(&mut self) {
        self.counters = Some(self.read_counters());
    }

    fn read_counters(&mut self) -> HashMap<String, i64> {
        self.plugin.exported_i64_globals().into_iter().collect()
    }

    /// Called after each callback.
    fn record(&mut self, callback: &'static str) {
        let Some(before) = self.counters.take() else {
            return;
        };
        let after = self.read_counters();
        let counters = after
            .iter()
            .map(|(name, value)| {
                let delta = value - before.get(name).copied().unwrap_or(0);
                (name.clone(), delta)
            })
            .filter(|(_, delta)| *delta != 0)
            .collect();
        self.records.push(CallbackRecord {
            callback,
            fuel: self.plugin.last_call_fuel(),
            counters,
        });
        self.counters = Some(after);
    }
}

/// Implements [`Callbacks`] for [`Recorder`]: each callback goes to the plugin, then is
/// recorded under its label.
macro_rules! recorded_callbacks {
    ($($callback:ident($($arg:ident: $ty:ty),*) -> $result:ty, $label:literal;)*) => {
        impl Callbacks for Recorder {
            $(
                fn $callback(&mut self, $($arg: $ty),*) -> Result<$result, PluginFailure> {
                    let result = Callbacks::$callback(&mut self.plugin, $($arg),*);
                    self.record($label);
                    result
                }
            )*
        }
    };
}

recorded_callbacks! {
    on_context_create(context_id: u32, parent_id: u32) -> (), "context create";
    on_vm_start(root_id: u32, vm_config_size: usize) -> bool, "vm start";
    on_configure(root_id: u32, config_size: usize) -> bool, "configure";
    on_request_headers(context_id: u32, headers: usize, end_of_stream: bool) -> Action,
        "request headers";
    on_request_body(context_id: u32, size: usize, end_of_stream: bool) -> Action,
        "request body";
    on_request_trailers(context_id: u32, trailers: usize) -> Action, "request trailers";
    on_response_headers(context_id: u32, headers: usize, end_of_stream: bool) -> Action,
        "response headers";
    on_response_body(context_id: u32, size: usize, end_of_stream: bool) -> Action,
        "response body";
    on_response_trailers(context_id: u32, trailers: usize) -> Action, "response trailers";
    on_http_call_response(
        context_id: u32, token: u32, headers: usize, body_size: usize, trailers: usize
    ) -> (), "http call response";
    on_tick(root_id: u32) -> (), "tick";
    on_queue_ready(root_id: u32, queue_id: u32) -> (), "queue ready";
    on_grpc_receive_initial_metadata(context_id: u32, token: u32, elements: usize) -> (),
        "grpc initial metadata";
    on_grpc_receive(context_id: u32, token: u32, size: usize) -> (), "grpc receive";
    on_grpc_receive_trailing_metadata(context_id: u32, token: u32, elements: usize) -> (),
        "grpc trailing metadata";
    on_grpc_close(context_id: u32, token: u32, status_code: u32) -> (), "grpc close";
    on_redis_call_response(context_id: u32, token: u32, status: u32, response_size: usize)
        -> (), "redis call response";
    on_log(context_id: u32) -> (), "log";
    on_done(context_id: u32) -> bool, "done";
    on_delete(context_id: u32) -> (), "delete";
}

/// The whole profile as text.
fn render(scenario: &Scenario, sdk: &Profile, baseline: &Profile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}: {}\n(one request after {WARMUP} warm-up requests, in our wasmtime host with the \
         emulated proxy, as `cargo xtask bench` drives it)\n",
        scenario.example, scenario.name, scenario.description
    );
    render_callbacks(&mut out, sdk, baseline);
    render_functions(&mut out, sdk, baseline);
    render_allocations(&mut out, "SDK", sdk);
    render_allocations(&mut out, "baseline", baseline);
    out
}

/// The labels of both profiles' callbacks, in the SDK's order, then any only the baseline has.
fn labels(sdk: &Profile, baseline: &Profile) -> Vec<String> {
    let mut labels: Vec<String> = sdk.callbacks.iter().map(|c| c.label.clone()).collect();
    for callback in &baseline.callbacks {
        if !labels.contains(&callback.label) {
            labels.push(callback.label.clone());
        }
    }
    labels
}

fn callback<'a>(profile: &'a Profile, label: &str) -> Option<&'a CallbackProfile> {
    profile
        .callbacks
        .iter()
        .find(|callback| callback.label == label)
}

/// Table 1: fuel and counted instructions per callback.
fn render_callbacks(out: &mut String, sdk: &Profile, baseline: &Profile) {
    let _ = writeln!(out, "instructions per callback");
    let _ = writeln!(
        out,
        "{:<24}{:>12}{:>12}{:>14}{:>12}",
        "callback", "SDK fuel", "counted", "baseline fuel", "counted"
    );
    let cell = |callback: Option<&CallbackProfile>, value: fn(&CallbackProfile) -> u64| {
        callback.map_or_else(|| "-".to_string(), |callback| thousands(value(callback)))
    };
    for label in labels(sdk, baseline) {
        let (ours, theirs) = (callback(sdk, &label), callback(baseline, &label));
        let _ = writeln!(
            out,
            "{label:<24}{:>12}{:>12}{:>14}{:>12}",
            cell(ours, |c| c.fuel),
            cell(ours, CallbackProfile::counted),
            cell(theirs, |c| c.fuel),
            cell(theirs, CallbackProfile::counted),
        );
    }
    let total = |profile: &Profile, value: fn(&CallbackProfile) -> u64| -> u64 {
        profile.callbacks.iter().map(value).sum()
    };
    let (sdk_fuel, sdk_counted) = (total(sdk, |c| c.fuel), total(sdk, CallbackProfile::counted));
    let (baseline_fuel, baseline_counted) = (
        total(baseline, |c| c.fuel),
        total(baseline, CallbackProfile::counted),
    );
    let _ = writeln!(
        out,
        "{:<24}{:>12}{:>12}{:>14}{:>12}",
        "whole request",
        thousands(sdk_fuel),
        thousands(sdk_counted),
        thousands(baseline_fuel),
        thousands(baseline_counted),
    );
    let _ = writeln!(
        out,
        "counted - fuel: SDK {}, baseline {}\n",
        difference(sdk_counted, sdk_fuel),
        difference(baseline_counted, baseline_fuel)
    );
    for line in COUNTING_NOTE {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
}

/// What the two columns of the first table are, under it.
const COUNTING_NOTE: [&str; 6] = [
    "fuel: wasmtime's fuel for the module as built (what BENCHMARKS.md counts). counted: the sum of",
    "the per-function counters of an instrumented copy, which the lists below come from. Each",
    "straight-line run of code adds wasmtime's weights to its function's counter as it starts (1",
    "per operator; 0 for nop, drop, block, loop, end, else, unreachable, return; 1 on entering a",
    "function; 1 more per byte of memory.copy/fill), so only a trap mid-run would be over-counted.",
    "Hostcalls cost no fuel; the allocator's work on their behalf counts in the callback.",
];

/// `+12 (+0.15%)`.
fn difference(counted: u64, fuel: u64) -> String {
    let delta = i128::from(counted) - i128::from(fuel);
    let percent = if fuel == 0 {
        0.0
    } else {
        delta as f64 * 100.0 / fuel as f64
    };
    format!("{delta:+} ({percent:+.2}%)")
}

/// Lists 2: the functions by their own instructions, over the whole request and per callback.
fn render_functions(out: &mut String, sdk: &Profile, baseline: &Profile) {
    let whole = |profile: &Profile| -> CallbackProfile {
        let mut totals: HashMap<String, u64> = HashMap::new();
        for callback in &profile.callbacks {
            for (name, count) in &callback.functions {
                *totals.entry(name.clone()).or_insert(0) += count;
            }
        }
        CallbackProfile {
            label: "whole request".to_string(),
            fuel: profile.callbacks.iter().map(|c| c.fuel).sum(),
            functions: most_first(totals.into_iter()),
            allocations: Vec::new(),
        }
    };
    let _ = writeln!(
        out,
        "top functions by own instructions (exclusive: callees not included; instances of a \
         generic function added up)\n"
    );
    side_by_side(
        out,
        "whole request",
        Some(&whole(sdk)),
        Some(&whole(baseline)),
        TOP_FUNCTIONS,
    );
    for label in labels(sdk, baseline) {
        let (ours, theirs) = (callback(sdk, &label), callback(baseline, &label));
        let big = [ours, theirs]
            .iter()
            .flatten()
            .any(|callback| callback.fuel >= BIG_CALLBACK);
        let rows = if big {
            TOP_FUNCTIONS
        } else {
            TOP_FUNCTIONS_SMALL
        };
        side_by_side(out, &label, ours, theirs, rows);
    }
}

/// One list: the SDK's top functions on the left, the baseline's on the right.
fn side_by_side(
    out: &mut String,
    label: &str,
    sdk: Option<&CallbackProfile>,
    baseline: Option<&CallbackProfile>,
    rows: usize,
) {
    let heading = |who: &str, callback: Option<&CallbackProfile>| {
        let counted = callback.map_or(0, CallbackProfile::counted);
        format!("{label}, {who} ({} instr)", thousands(counted))
    };
    let _ = writeln!(
        out,
        "{:<width$} {:>7} | {:<width$} {:>7}",
        heading("SDK", sdk),
        "instr",
        heading("baseline", baseline),
        "instr",
        width = NAME_WIDTH
    );
    let functions = |callback: Option<&CallbackProfile>| -> Vec<(String, u64)> {
        callback.map_or_else(Vec::new, |callback| callback.functions.clone())
    };
    let (ours, theirs) = (functions(sdk), functions(baseline));
    for row in 0..rows.min(ours.len().max(theirs.len())) {
        let cell = |functions: &[(String, u64)]| match functions.get(row) {
            Some((name, count)) => (shorten(name, NAME_WIDTH), thousands(*count)),
            None => (String::new(), String::new()),
        };
        let ((our_name, our_count), (their_name, their_count)) = (cell(&ours), cell(&theirs));
        let _ = writeln!(
            out,
            "{our_name:<width$} {our_count:>7} | {their_name:<width$} {their_count:>7}",
            width = NAME_WIDTH
        );
    }
    let _ = writeln!(out);
}

/// Lists 3: per callback, the calls to the allocator and the functions that made them.
fn render_allocations(out: &mut String, who: &str, profile: &Profile) {
    let _ = writeln!(
        out,
        "allocations per callback, {who} (calls to {}, by calling function)",
        instrument::ALLOCATOR_ENTRY_POINTS.join(", ")
    );
    let mut whole: HashMap<&'static str, u64> = HashMap::new();
    for callback in &profile.callbacks {
        let mut per_entry: HashMap<&'static str, u64> = HashMap::new();
        for (site, count) in &callback.allocations {
            *per_entry.entry(site.allocator).or_insert(0) += count;
            *whole.entry(site.allocator).or_insert(0) += count;
        }
        let _ = writeln!(out, "  {}: {}", callback.label, entry_counts(&per_entry));
        // Where memory is taken first, then where it is given back.
        let mut sites: Vec<&(AllocationSite, u64)> = callback.allocations.iter().collect();
        sites.sort_by_key(|(site, _)| site.allocator == "__rust_dealloc");
        for (site, count) in sites {
            let _ = writeln!(
                out,
                "    {count:>4}  {:<20} <- {}",
                site.allocator, site.caller
            );
        }
    }
    let _ = writeln!(out, "  whole request: {}\n", entry_counts(&whole));
}

/// `alloc 2, realloc 0, dealloc 2` (`__rust_alloc_zeroed` counts as alloc).
fn entry_counts(per_entry: &HashMap<&'static str, u64>) -> String {
    let count = |entry: &str| per_entry.get(entry).copied().unwrap_or(0);
    format!(
        "alloc {}, realloc {}, dealloc {}",
        count("__rust_alloc") + count("__rust_alloc_zeroed"),
        count("__rust_realloc"),
        count("__rust_dealloc")
    )
}

/// `name` in at most `width` characters: first the traits of `<T as path::Trait>` lose their
/// paths, then the types inside `<...>` theirs, then what is still too long loses its middle
/// (`…`), keeping its start and its end (the function's own name).
fn shorten(name: &str, width: usize) -> String {
    let fits = |name: &str| name.chars().count() <= width;
    if fits(name) {
        return name.to_string();
    }
    let name = without_trait_paths(name);
    if fits(&name) {
        return name;
    }
    let name = without_paths_in_brackets(&name);
    if fits(&name) {
        return name;
    }
    let chars: Vec<char> = name.chars().collect();
    let head = width / 3;
    let tail = width - head - 1;
    let start: String = chars[..head].iter().collect();
    let end: String = chars[chars.len() - tail..].iter().collect();
    format!("{start}…{end}")
}

/// `core::ptr::drop_in_place<a::b::C>` as `core::ptr::drop_in_place<C>`, and
/// `<a::b::T as Trait>::f` as `<T as Trait>::f`: paths inside angle brackets keep only their
/// last segment (a trailing `::` stays, as in `a::f::{{closure}}`).
fn without_paths_in_brackets(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0_usize;
    let mut path = String::new();
    let flush = |path: &mut String, out: &mut String, depth: usize| {
        if depth > 0 && !path.starts_with(':') {
            let trailing = path.ends_with("::");
            let trimmed = path.trim_end_matches(':');
            out.push_str(trimmed.rsplit("::").next().unwrap_or(trimmed));
            if trailing {
                out.push_str("::");
            }
        } else {
            out.push_str(path);
        }
        path.clear();
    };
    for character in name.chars() {
        if character.is_alphanumeric() || character == '_' || character == ':' {
            path.push(character);
            continue;
        }
        flush(&mut path, &mut out, depth);
        match character {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(character);
    }
    flush(&mut path, &mut out, depth);
    out
}

/// `<a::T as core::iter::Iterator>::next` as `<a::T as Iterator>::next`.
fn without_trait_paths(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find(" as ") {
        let (before, after) = rest.split_at(at + " as ".len());
        out.push_str(before);
        // The trait's path ends where its generic arguments or the `<...>` around it do.
        let path_end = after.find(['<', '>']).unwrap_or(after.len());
        let path = &after[..path_end];
        out.push_str(path.rsplit("::").next().unwrap_or(path));
        rest = &after[path_end..];
    }
    out.push_str(rest);
    out
}

/// `12,345`.
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
