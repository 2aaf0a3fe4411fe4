//! 3. Linear memory: bytes per request paused on a call (10,000 at once), and whether memory
//!    grows between the first 1,000 and 100,000 completed requests.

use crate::Settings;
use crate::fuel::start;
use crate::plugins::Built;
use crate::report::{Row, Table, Target};
use crate::scenarios::{AUTH_CONFIG, auth_success, open_auth_request};

pub(crate) fn measure(built: &Built, settings: &Settings, table: &mut Table) -> Result<(), String> {
    let in_flight: u32 = if settings.quick { 1_000 } else { 10_000 };
    let (early, late): (u32, u32) = if settings.quick {
        (1_000, 10_000)
    } else {
        (1_000, 100_000)
    };
    let pair = &built.auth_flow;
    let sdk = paused_bytes(&pair.sdk, in_flight)?;
    let baseline = paused_bytes(&pair.baseline, in_flight)?;
    table.push(Row::new(
        format!("auth-flow: linear memory per paused request, {in_flight} in flight (bytes)"),
        sdk,
        baseline,
        Target::RatioAtMost(2.0),
    ));
    let sdk = growth(&pair.sdk, early, late)?;
    let baseline = growth(&pair.baseline, early, late)?;
    table.push(Row::new(
        format!("auth-flow: linear memory growth, after {early} → {late} requests (bytes)"),
        sdk,
        baseline,
        Target::Zero,
    ));
    Ok(())
}

/// Linear memory added per request while `count` requests wait on their auth call.
fn paused_bytes(wasm: &[u8], count: u32) -> Result<f64, String> {
    let proxy = start(wasm, AUTH_CONFIG)?;
    // Warm the allocator up with complete requests first.
    for _ in 0..100 {
        auth_success(&proxy);
    }
    let before = proxy.plugin().memory_size();
    for _ in 0..count {
        open_auth_request(&proxy, "Bearer demo-token");
    }
    let paused = proxy.calls().len();
    if paused != count as usize {
        return Err(format!("{paused} calls pending, expected {count}"));
    }
    let after = proxy.plugin().memory_size();
    Ok((after - before) as f64 / f64::from(count))
}

/// Linear memory after `late` complete requests minus after the first `early`.
fn growth(wasm: &[u8], early: u32, late: u32) -> Result<f64, String> {
    let proxy = start(wasm, AUTH_CONFIG)?;
    for _ in 0..early {
        auth_success(&proxy);
    }
    let after_early = proxy.plugin().memory_size();
    for _ in early..late {
        auth_success(&proxy);
    }
    if let Some(failure) = proxy.failure() {
        return Err(format!("the plugin failed: {failure}"));
    }
    let after_late = proxy.plugin().memory_size();
    Ok(after_late as f64 - after_early as f64)
}
