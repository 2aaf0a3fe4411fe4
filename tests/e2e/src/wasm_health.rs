//! Signs that a wasm VM in Envoy failed: its stats and its log.

use std::collections::BTreeMap;

use crate::envoy::Envoy;

/// The log lines Envoy writes when a plugin traps or its VM fails: a failed stream's response
/// details, V8's report of a trap, a Rust panic message, and the VM's own failure.
pub const WASM_FAILURE_SIGNS: [&str; 4] = [
    "wasm_fail_stream",
    "Uncaught RuntimeError",
    "panicked at",
    "Wasm VM failed",
];

/// The stats that record a wasm VM failing, being replaced or being created: Envoy has no
/// `vm_failed` counter (envoyproxy/envoy#40882), so a failure shows as a VM created or
/// reloaded, or a request failed by the wasm filter itself. Compare them before and after.
pub fn wasm_vm_stats(stats: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    stats
        .iter()
        .filter(|(name, _)| {
            name.starts_with("wasm.")
                && (name.contains("created")
                    || name.contains("active")
                    || name.contains("vm_reload")
                    || name.contains("fail"))
        })
        .map(|(name, value)| (name.clone(), *value))
        .collect()
}

/// Panics, with the offending lines, when Envoy's log holds one of [`WASM_FAILURE_SIGNS`].
pub fn assert_no_wasm_failure_logged(envoy: &Envoy) {
    let log = envoy.log();
    for sign in WASM_FAILURE_SIGNS {
        let lines: Vec<&str> = log.lines().filter(|line| line.contains(sign)).collect();
        assert!(
            lines.is_empty(),
            "Envoy's log shows `{sign}` ({} lines), e.g.:\n{}",
            lines.len(),
            lines[..lines.len().min(5)].join("\n")
        );
    }
}
