//! `fan-out` in a real Envoy (1.40, V8): both calls are in flight at once.

use e2e::scenarios::{self, EnvoyBackend};

#[test]
fn fan_out_calls_overlap() {
    scenarios::fan_out_calls_overlap(&EnvoyBackend);
}
