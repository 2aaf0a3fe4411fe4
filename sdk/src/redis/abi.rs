//! Higress's Redis extension in the proxy-wasm build: the `proxy_redis_init` and
//! `proxy_redis_call` imports, and the `proxy_on_redis_call_response` export.
//!
//! Stock Envoy (and Istio) refuse to load a module with an import they do not provide
//! (proxy-wasm-cpp-host's `V8::link`: "Failed to load Wasm module due to a missing import"),
//! so a plugin must import the Redis hostcalls only if it sends Redis commands. The Redis
//! client calls them directly, not through the `Host` trait: a trait object's vtable keeps
//! every method of `AbiHost`, and so every import they call, in every plugin. Called directly,
//! they are linked only into plugins that use the client. The export costs a few bytes and
//! nothing else where no one calls it.

use std::time::Duration;

use crate::host::{HostError, check};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_redis_init(
        upstream_data: *const u8,
        upstream_size: usize,
        username_data: *const u8,
        username_size: usize,
        password_data: *const u8,
        password_size: usize,
        timeout_milliseconds: u32,
    ) -> u32;
    fn proxy_redis_call(
        upstream_data: *const u8,
        upstream_size: usize,
        query_data: *const u8,
        query_size: usize,
        return_token: *mut u32,
    ) -> u32;
}

/// `proxy_redis_init`.
pub(crate) fn redis_init(
    upstream: &str,
    username: &str,
    password: &str,
    timeout: Duration,
) -> Result<(), HostError> {
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: every pointer is valid for reads of its length during the call.
    let code = unsafe {
        proxy_redis_init(
            upstream.as_ptr(),
            upstream.len(),
            username.as_ptr(),
            username.len(),
            password.as_ptr(),
            password.len(),
            timeout_ms,
        )
    };
    check("proxy_redis_init", code)
}

/// `proxy_redis_call`: the token of the command.
pub(crate) fn redis_call(cluster: &str, query: &[u8]) -> Result<u32, HostError> {
    let mut token = 0;
    // SAFETY: `cluster` and `query` are valid for reads of their lengths and `token` for a
    // write during the call.
    let code = unsafe {
        proxy_redis_call(
            cluster.as_ptr(),
            cluster.len(),
            query.as_ptr(),
            query.len(),
            &mut token,
        )
    };
    check("proxy_redis_call", code).map(|()| token)
}

/// `proxy_on_redis_call_response(plugin_context_id, token, status, response_size)`: the reply
/// to a `proxy_redis_call`, in buffer 9 during this callback; `status != 0` means none.
/// Higress calls it on the root context that sent the command; should a host name another
/// context, the plugin instance waiting for the token takes it.
#[unsafe(no_mangle)]
extern "C" fn proxy_on_redis_call_response(
    plugin_context_id: u32,
    token: u32,
    status: u32,
    response_size: usize,
) {
    match crate::exports::FEATURES.with(|features| features.redis_response.get()) {
        Some(respond) => respond(plugin_context_id, token, status, response_size),
        None => log::debug!("Redis reply {token} ignored: the plugin sent no Redis command"),
    }
}

/// Hands a Redis reply to the plugin instance that waits for it (installed with the Redis
/// client's state, see `RedisState::installed`).
pub(crate) fn deliver_response(
    plugin_context_id: u32,
    token: u32,
    status: u32,
    response_size: usize,
) {
    match crate::exports::runtime_for(plugin_context_id, |runtime| {
        runtime
            .extension::<super::client::RedisState>()
            .pending
            .is_waiting(token)
    }) {
        Some(runtime) => {
            super::client::on_response(&runtime, plugin_context_id, token, status, response_size);
        }
        None => log::debug!(
            "Redis reply {token} for context {plugin_context_id} ignored: no plugin instance waits for it"
        ),
    }
}
