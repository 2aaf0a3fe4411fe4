//! `proxy-async-bench profile hello header` (`cargo xtask profile`) against an independent
//! measurement: its fuel per request is what our host counts for the same traffic, the
//! instrumented module's counters add up to that fuel (within 5%), and the counters of the
//! allocator's call sites see the SDK plugin allocate when a stream is created. Any of these
//! fails when the instrumentation breaks (a counter never raised, a run miscounted, the
//! allocator no longer found, the names lost).

use std::process::Command;

use proxy_async_host::proxy_async_emulator::ProxyConfig;
use proxy_async_host::start_emulated;

// The traffic the profiler drives, so that this measures the same request.
#[allow(
    dead_code,
    reason = "this test drives only the `hello` scenario of the file"
)]
#[path = "../src/scenarios.rs"]
mod scenarios;

/// The fuel of one `hello header` request after the benchmark's warm-up, straight from our
/// host (no instrumentation, no recorder).
fn hello_header_fuel(plugin: &str) -> u64 {
    let wasm = std::fs::read(compiled_plugins::module(plugin)).expect("compiled-plugins built it");
    let proxy = start_emulated(
        &wasm,
        ProxyConfig {
            plugin_config: scenarios::HELLO_HEADER_CONFIG.as_bytes().to_vec(),
            ..ProxyConfig::default()
        },
    )
    .expect("the plugin starts");
    for _ in 0..scenarios::WARMUP {
        scenarios::hello_request(&proxy);
    }
    let before = proxy.plugin().total_fuel();
    scenarios::hello_request(&proxy);
    assert_eq!(proxy.failure(), None);
    proxy.plugin().total_fuel() - before
}

/// `1,234` as 1234 (the test prints the profile first, so a failure here shows the cell).
fn number(cell: &str) -> u64 {
    cell.replace(',', "")
        .parse()
        .expect("a count of the profile")
}

#[test]
fn the_profile_of_hello_header_adds_up_to_the_real_fuel() {
    let output = Command::new(env!("CARGO_BIN_EXE_proxy-async-bench"))
        .args(["profile", "hello", "header"])
        .output()
        .unwrap();
    let profile = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "proxy-async-bench profile hello header: {}\n{profile}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{profile}");

    // The table's last row: SDK fuel, SDK counted, baseline fuel, baseline counted.
    let whole_request: Vec<u64> = profile
        .lines()
        .find_map(|line| line.strip_prefix("whole request "))
        .unwrap_or_else(|| panic!("no `whole request` row in:\n{profile}"))
        .split_whitespace()
        .map(number)
        .collect();
    let [sdk_fuel, sdk_counted, baseline_fuel, baseline_counted] = whole_request[..] else {
        panic!("the `whole request` row has {whole_request:?}");
    };
    assert_eq!(sdk_fuel, hello_header_fuel("hello"), "the SDK's fuel");
    assert_eq!(
        baseline_fuel,
        hello_header_fuel("hello-baseline"),
        "the baseline's fuel"
    );
    for (who, fuel, counted) in [
        ("SDK", sdk_fuel, sdk_counted),
        ("baseline", baseline_fuel, baseline_counted),
    ] {
        assert!(
            counted.abs_diff(fuel) * 20 <= fuel,
            "{who}: the counters add up to {counted}, the fuel is {fuel}"
        );
    }

    // The functions are named (and demangled): the SDK's own are among the top ones.
    assert!(
        profile.contains("proxy_async::runtime::"),
        "no SDK function named in:\n{profile}"
    );

    // The SDK plugin allocates when a stream is created: at least one call site counted.
    let sdk_allocations: Vec<&str> = profile
        .lines()
        .skip_while(|line| !line.starts_with("allocations per callback, SDK"))
        .skip_while(|line| !line.starts_with("  context create: "))
        .skip(1)
        .take_while(|line| line.starts_with("    "))
        .collect();
    let sites: u64 = sdk_allocations
        .iter()
        .filter(|line| line.contains("__rust_alloc") && line.contains(" <- "))
        .map(|line| number(line.split_whitespace().next().unwrap_or_default()))
        .sum();
    assert!(
        sites >= 1,
        "no allocation counted in the SDK's context create:\n{profile}"
    );
}

#[test]
fn the_profile_by_line_adds_up_to_the_counted_instructions_and_names_the_plugins_lines() {
    let output = Command::new(env!("CARGO_BIN_EXE_proxy-async-bench"))
        .args(["profile", "hello", "header", "--lines"])
        .output()
        .unwrap();
    let profile = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "proxy-async-bench profile hello header --lines: {}\n{profile}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{profile}");
    let (table, by_line) = profile
        .split_once("instructions by source line")
        .unwrap_or_else(|| panic!("no lines section in:\n{profile}"));

    // The build with line tables runs the same code as the measured module.
    assert!(
        !by_line.contains("the code differs"),
        "the line-table build's fuel differs from the measured module's:\n{by_line}"
    );
    // Every instruction the per-function counters saw is on some line.
    let counted = table
        .lines()
        .find_map(|line| line.strip_prefix("whole request "))
        .and_then(|row| row.split_whitespace().nth(1))
        .map(number)
        .unwrap_or_else(|| panic!("no `whole request` row in:\n{table}"));
    let on_lines = by_line
        .lines()
        .find_map(|line| line.strip_prefix("whole request ("))
        .and_then(|rest| rest.split_whitespace().next())
        .map(number)
        .unwrap_or_else(|| panic!("no whole-request total in:\n{by_line}"));
    assert_eq!(on_lines, counted, "instructions on lines vs counted");
    // The plugin's own hook is among the request headers' lines, named by its file.
    let request_headers = by_line
        .split("request headers (")
        .nth(1)
        .unwrap_or_else(|| panic!("no request headers section in:\n{by_line}"));
    let section = request_headers.split("\n\n").next().unwrap_or_default();
    assert!(
        section.contains("examples/hello/src/lib.rs:"),
        "hello's hook is not among the request headers' lines:\n{section}"
    );
}
