//! `retry` in a real Envoy (1.40, V8): waits and deadlines on Envoy's root-context tick.

use e2e::scenarios::{self, EnvoyBackend};

#[test]
fn retry_waits_on_envoys_tick_then_goes_on() {
    scenarios::retry_waits_then_goes_on(&EnvoyBackend);
}

#[test]
fn the_deadline_replies_504_in_envoy() {
    scenarios::retry_deadline_replies_504(&EnvoyBackend);
}
