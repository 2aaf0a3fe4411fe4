//! `auth-flow` in a real Envoy (1.40, V8): the two awaited calls and every fail-closed case.

use e2e::scenarios::{self, EnvoyBackend};

#[test]
fn auth_flow_success_sets_the_identity() {
    scenarios::auth_flow_success_sets_the_identity(&EnvoyBackend);
}

#[test]
fn auth_flow_missing_credential_is_401() {
    scenarios::auth_flow_missing_credential_is_401(&EnvoyBackend);
}

#[test]
fn auth_flow_wrong_credential_is_403() {
    scenarios::auth_flow_wrong_credential_is_403(&EnvoyBackend);
}

#[test]
fn auth_flow_slow_auth_is_503() {
    scenarios::auth_flow_slow_auth_is_503(&EnvoyBackend);
}

#[test]
fn auth_flow_unreachable_auth_is_503() {
    scenarios::auth_flow_unreachable_auth_is_503(&EnvoyBackend);
}

#[test]
fn auth_flow_post_body_reaches_the_upstream() {
    scenarios::auth_flow_post_body_reaches_the_upstream(&EnvoyBackend);
}

#[test]
fn auth_flow_auth_5xx_is_503() {
    scenarios::auth_flow_auth_5xx_is_503(&EnvoyBackend);
}

#[test]
fn auth_flow_malformed_token_json_is_503() {
    scenarios::auth_flow_malformed_token_json_is_503(&EnvoyBackend);
}

#[test]
fn auth_flow_cluster_missing_from_envoy_is_503() {
    scenarios::auth_flow_cluster_missing_is_503(&EnvoyBackend);
}
