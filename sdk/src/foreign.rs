//! The proxy's own extensions, called by name (`proxy_call_foreign_function`).

use crate::host::{Host as _, HostError, HostStatus, host_of};
use crate::runtime::Runtime;

/// Calls the proxy's extension function `name` with `arguments` and returns its result.
///
/// Envoy registers, among others, `declare_property`, `set_envoy_filter_state`, `compress` and
/// `uncompress`, and (in Higress) `clear_route_cache`; each defines its own argument encoding
/// (often a serialized protobuf). A name the proxy does not know is `NotFound`.
///
/// ```
/// # async fn reroute() {
/// // Higress: recompute the route after the hook changed the headers it matches on.
/// if let Err(error) = proxy_async::call_foreign_function("clear_route_cache", b"") {
///     log::warn!("clearing the route cache: {error}");
/// }
/// # }
/// ```
pub fn call_foreign_function(name: &str, arguments: &[u8]) -> Result<Vec<u8>, HostError> {
    let runtime = Runtime::current().ok_or(HostError {
        call: "proxy_call_foreign_function",
        status: HostStatus::InternalFailure,
    })?;
    host_of(&runtime).call_foreign_function(name, arguments)
}
