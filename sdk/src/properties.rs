//! The proxy's properties: what it knows about the request, the connection, the route and
//! the plugin (Envoy calls them [attributes]).
//!
//! The typed getters below read one property each, named after it (`connection_tls_version`
//! reads `connection.tls_version`), and decode it as Envoy encodes its type for plugins:
//! strings and bytes as they are, `int` and `uint` as 8 bytes little-endian, `bool` as one
//! byte, durations and timestamps as 8 bytes of nanoseconds. They answer `None` when the
//! property is absent (not known at this point of the stream, or not offered by the proxy),
//! when the proxy refuses to read it, and when its bytes are not of the expected type (these
//! two are logged at debug level): a property is never worth a panic. [`try_get`] tells them
//! apart.
//!
//! Stream properties read the stream whose hook runs; plugin properties (`plugin_name`) work
//! in tick functions too. Request properties are there from the request headers on; the
//! response and the totals (`response.code`, `request.duration`) once the stream is complete,
//! in [`on_log`](crate::Plugin::on_log), where [`Done`] reads them.
//!
//! ```
//! use std::rc::Rc;
//! use proxy_async::{Error, Flow, NoConfig, Plugin, Request, properties};
//!
//! struct Routes;
//!
//! impl Plugin for Routes {
//!     type Root = NoConfig;
//!     fn new(_: &Rc<NoConfig>) -> Self { Routes }
//!     async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
//!         if let Some(route) = properties::route_name() {
//!             req.headers_mut().insert("x-route", route);
//!         }
//!         if properties::connection_mtls() == Some(true) {
//!             req.headers_mut().insert("x-mtls", "1");
//!         }
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! use proxy_async::testing::PluginTest;
//!
//! let test = PluginTest::<Routes>::new("").unwrap();
//! let stream = test.stream();
//! stream.set_property(&["route_name"], "default/api");
//! stream.set_property(&["connection", "mtls"], [1]);
//! stream.send_request_headers(&[(":path", "/")], true);
//! assert_eq!(stream.request_header("x-route").as_deref(), Some("default/api"));
//! assert_eq!(stream.request_header("x-mtls").as_deref(), Some("1"));
//! ```
//!
//! [attributes]: https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/advanced/attributes

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::host::{Host, HostError, HostStatus};
use crate::message::Done;
use crate::runtime::Runtime;

/// The raw value of the property at `path` (e.g. `&["request", "path"]`); `Ok(None)` when the
/// proxy has none. Outside a plugin callback (natively, in test code) there is no proxy to
/// ask: `UNIMPLEMENTED`.
pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    let runtime = Runtime::current().ok_or_else(|| no_host("proxy_get_property"))?;
    runtime.host.get_property(path)
}

/// Sets the property at `path` (`proxy_set_property`). In Envoy it goes to the stream's
/// filter state as `wasm.<path>`: later hooks of the stream read it back with
/// [`get_property`], other filters and the access log (`%FILTER_STATE(wasm.<path>)%`) see it,
/// and it ends with the stream; outside a stream (in a tick function) Envoy refuses it with
/// `NOT_FOUND`. Use a path of one segment.
///
/// The testing API's proxy keeps such properties proxy-wide (every later stream reads them).
pub fn set_property(path: &[&str], value: impl AsRef<[u8]>) -> Result<(), HostError> {
    let runtime = Runtime::current().ok_or_else(|| no_host("proxy_set_property"))?;
    set_property_on(&runtime, path, value.as_ref())
}

fn set_property_on(runtime: &Runtime, path: &[&str], value: &[u8]) -> Result<(), HostError> {
    Host::set_property(crate::host::backend(&runtime.host), path, value)
}

/// The property at `path` decoded as a `T`; `None` when it is absent, refused or not a `T`
/// (see the [module](self) docs).
///
/// ```
/// # fn hook() {
/// use std::time::Duration;
/// use proxy_async::properties;
///
/// let backend: Option<Duration> = properties::get(&["response", "backend_latency"]);
/// # }
/// ```
pub fn get<T: PropertyValue>(path: &[&str]) -> Option<T> {
    let runtime = Runtime::current()?;
    logged(path, decode(crate::host::backend(&runtime.host), path))
}

/// The property at `path` decoded as a `T`, telling an absent property (`Ok(None)`) from a
/// refusal or a value that is not a `T`.
pub fn try_get<T: PropertyValue>(path: &[&str]) -> Result<Option<T>, PropertyError> {
    let runtime =
        Runtime::current().ok_or_else(|| PropertyError::Host(no_host("proxy_get_property")))?;
    decode(crate::host::backend(&runtime.host), path)
}

fn decode<T: PropertyValue, H: Host + ?Sized>(
    host: &H,
    path: &[&str],
) -> Result<Option<T>, PropertyError> {
    let Some(bytes) = host.get_property(path).map_err(PropertyError::Host)? else {
        return Ok(None);
    };
    let size = bytes.len();
    match T::from_bytes(bytes) {
        Some(value) => Ok(Some(value)),
        None => Err(PropertyError::Invalid {
            path: path.join("."),
            expected: T::TYPE,
            size,
        }),
    }
}

fn logged<T>(path: &[&str], result: Result<Option<T>, PropertyError>) -> Option<T> {
    result.unwrap_or_else(|error| {
        log::debug!("reading the property {}: {error}", path.join("."));
        None
    })
}

fn no_host(call: &'static str) -> HostError {
    HostError {
        call,
        status: HostStatus::Unimplemented,
    }
}

/// Why a property could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PropertyError {
    /// The proxy refused to read it.
    Host(HostError),
    /// Its bytes are not a value of the type asked for.
    Invalid {
        /// The property, with `.` between segments.
        path: String,
        /// The type asked for (`int`, `bool`, ...).
        expected: &'static str,
        /// How many bytes the proxy gave.
        size: usize,
    },
}

impl fmt::Display for PropertyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyError::Host(error) => error.fmt(f),
            PropertyError::Invalid {
                path,
                expected,
                size,
            } => write!(f, "{path} is not a valid {expected} ({size} bytes)"),
        }
    }
}

impl std::error::Error for PropertyError {}

/// A type a property decodes to, from the bytes Envoy hands plugins for its attribute type.
pub trait PropertyValue: Sized {
    /// The attribute type, for messages (`string`, `int`, ...).
    const TYPE: &'static str;

    /// The value those bytes encode, or `None` if they encode none (wrong size, not UTF-8).
    fn from_bytes(bytes: Vec<u8>) -> Option<Self>;
}

/// `bytes`: as they are.
impl PropertyValue for Vec<u8> {
    const TYPE: &'static str = "bytes";

    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        Some(bytes)
    }
}

/// `string`: UTF-8.
impl PropertyValue for String {
    const TYPE: &'static str = "string";

    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        String::from_utf8(bytes).ok()
    }
}

fn eight(bytes: &[u8]) -> Option<[u8; 8]> {
    <[u8; 8]>::try_from(bytes).ok()
}

/// `int`: 8 bytes, little-endian.
impl PropertyValue for i64 {
    const TYPE: &'static str = "int";

    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        eight(&bytes).map(i64::from_le_bytes)
    }
}

/// `uint`: 8 bytes, little-endian.
impl PropertyValue for u64 {
    const TYPE: &'static str = "uint";

    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        eight(&bytes).map(u64::from_le_bytes)
    }
}

/// `double`: 8 bytes, little-endian IEEE 754.
impl PropertyValue for f64 {
    const TYPE: &'static str = "double";

    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        eight(&bytes).map(f64::from_le_bytes)
    }
}

/// `bool`: one byte, 0 for false.
impl PropertyValue for bool {
    const TYPE: &'static str = "bool";

    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        match bytes.as_slice() {
            [byte] => Some(*byte != 0),
            _ => None,
        }
    }
}

/// `duration`: 8 bytes of nanoseconds, little-endian; not negative.
impl PropertyValue for Duration {
    const TYPE: &'static str = "duration";

    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        let nanos = u64::try_from(i64::from_bytes(bytes)?).ok()?;
        Some(Duration::from_nanos(nanos))
    }
}

/// `timestamp`: 8 bytes of nanoseconds since the Unix epoch, little-endian.
impl PropertyValue for SystemTime {
    const TYPE: &'static str = "timestamp";

    fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        let nanos = i64::from_bytes(bytes)?;
        let since = Duration::from_nanos(nanos.unsigned_abs());
        if nanos >= 0 {
            UNIX_EPOCH.checked_add(since)
        } else {
            UNIX_EPOCH.checked_sub(since)
        }
    }
}

/// A non-negative `int` that fits `T` (a port, a status code, a size).
fn narrow<T: TryFrom<i64>>(value: Option<i64>) -> Option<T> {
    T::try_from(value?).ok()
}

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident -> $ty:ty = [$($segment:literal),+];)*) => {
        $(
            $(#[$doc])*
            pub fn $name() -> Option<$ty> {
                get::<$ty>(&[$($segment),+])
            }
        )*
    };
}

getters! {
    /// `request.path`: the path with the query string.
    request_path -> String = ["request", "path"];
    /// `request.url_path`: the path without the query string.
    request_url_path -> String = ["request", "url_path"];
    /// `request.host`: the host (`:authority`).
    request_host -> String = ["request", "host"];
    /// `request.scheme`: `http` or `https`.
    request_scheme -> String = ["request", "scheme"];
    /// `request.method`.
    request_method -> String = ["request", "method"];
    /// `request.id`: the `x-request-id` the proxy gave the request.
    request_id -> String = ["request", "id"];
    /// `request.protocol`: `HTTP/1.1`, `HTTP/2`, ...
    request_protocol -> String = ["request", "protocol"];
    /// `request.time`: when the request's first byte arrived.
    request_time -> SystemTime = ["request", "time"];
    /// `source.address`: the downstream peer, `ip:port`.
    source_address -> String = ["source", "address"];
    /// `destination.address`: the downstream connection's local address, `ip:port`.
    destination_address -> String = ["destination", "address"];
    /// `upstream.address`: the upstream host the request went to, `ip:port` (once connected).
    upstream_address -> String = ["upstream", "address"];
    /// `connection.id`: the downstream connection's id.
    connection_id -> u64 = ["connection", "id"];
    /// `connection.mtls`: whether the downstream connection is TLS with a client certificate.
    connection_mtls -> bool = ["connection", "mtls"];
    /// `connection.tls_version`: e.g. `TLSv1.3`.
    connection_tls_version -> String = ["connection", "tls_version"];
    /// `connection.requested_server_name`: the SNI the client asked for.
    connection_requested_server_name -> String = ["connection", "requested_server_name"];
    /// `connection.subject_peer_certificate`: the client certificate's subject.
    connection_subject_peer_certificate -> String = ["connection", "subject_peer_certificate"];
    /// `connection.subject_local_certificate`: the proxy's certificate's subject.
    connection_subject_local_certificate -> String = ["connection", "subject_local_certificate"];
    /// `connection.uri_san_peer_certificate`: the client certificate's first URI SAN (in
    /// Istio, the peer's SPIFFE identity).
    connection_uri_san_peer_certificate -> String = ["connection", "uri_san_peer_certificate"];
    /// `connection.dns_san_peer_certificate`: the client certificate's first DNS SAN.
    connection_dns_san_peer_certificate -> String = ["connection", "dns_san_peer_certificate"];
    /// `connection.sha256_peer_certificate_digest`: the client certificate's SHA-256.
    connection_sha256_peer_certificate_digest -> String =
        ["connection", "sha256_peer_certificate_digest"];
    /// `route_name`: the route the request took (Higress: `<namespace>/<ingress>`).
    route_name -> String = ["route_name"];
    /// `cluster_name`: the upstream cluster (Istio: `outbound|80||svc.ns.svc.cluster.local`).
    cluster_name -> String = ["cluster_name"];
    /// `plugin_name`: this plugin's name in the proxy's configuration.
    plugin_name -> String = ["plugin_name"];
    /// `plugin_root_id`: its root id.
    plugin_root_id -> String = ["plugin_root_id"];
    /// `plugin_vm_id`: its VM id (shared data is per VM id).
    plugin_vm_id -> String = ["plugin_vm_id"];
}

/// `source.port`: the downstream peer's port.
pub fn source_port() -> Option<u16> {
    narrow(get::<i64>(&["source", "port"]))
}

/// `destination.port`: the port the request arrived on.
pub fn destination_port() -> Option<u16> {
    narrow(get::<i64>(&["destination", "port"]))
}

// `Done` is defined with the other messages; its property readers live here, next to the
// decoding they share.
/// What an access log needs, read from the properties Envoy sets once the stream is complete
/// (each method reads one, on demand).
impl Done<'_> {
    /// The property at `path` decoded as a `T` (see [`properties::get`](get)).
    pub fn property<T: PropertyValue>(&self, path: &[&str]) -> Option<T> {
        if self.stream.is_ended() {
            return None;
        }
        logged(path, decode(crate::host::backend(&self.stream.host), path))
    }

    /// `response.code`: the status the client got (a local reply's included).
    pub fn response_code(&self) -> Option<u16> {
        narrow(self.property(&["response", "code"]))
    }

    /// `response.code_details`: why the proxy answered that status (`via_upstream`, a local
    /// reply's details, ...).
    pub fn response_code_details(&self) -> Option<String> {
        self.property(&["response", "code_details"])
    }

    /// `response.flags`: Envoy's response flags (as the bits of `%RESPONSE_FLAGS%`).
    pub fn response_flags(&self) -> Option<u64> {
        narrow(self.property(&["response", "flags"]))
    }

    /// `response.grpc_status`: the gRPC status, for gRPC.
    pub fn grpc_status(&self) -> Option<u32> {
        narrow(self.property(&["response", "grpc_status"]))
    }

    /// `request.duration`: from the request's first byte to the stream's end.
    pub fn duration(&self) -> Option<Duration> {
        self.property(&["request", "duration"])
    }

    /// `response.backend_latency`: from the first byte sent upstream to the last received.
    pub fn backend_latency(&self) -> Option<Duration> {
        self.property(&["response", "backend_latency"])
    }

    /// `request.time`: when the request's first byte arrived.
    pub fn request_time(&self) -> Option<SystemTime> {
        self.property(&["request", "time"])
    }

    /// `request.size`: the request body's size.
    pub fn request_size(&self) -> Option<u64> {
        narrow(self.property(&["request", "size"]))
    }

    /// `request.total_size`: the bytes received from the client (headers, about, included).
    pub fn request_total_size(&self) -> Option<u64> {
        narrow(self.property(&["request", "total_size"]))
    }

    /// `response.size`: the response body's size.
    pub fn response_size(&self) -> Option<u64> {
        narrow(self.property(&["response", "size"]))
    }

    /// `response.total_size`: the bytes sent to the client (headers and trailers, about,
    /// included).
    pub fn response_total_size(&self) -> Option<u64> {
        narrow(self.property(&["response", "total_size"]))
    }

    /// `upstream.address`: the upstream host that answered, `ip:port`; `None` when the
    /// request never went upstream (a local reply).
    pub fn upstream_address(&self) -> Option<String> {
        self.property(&["upstream", "address"])
    }

    /// `upstream.request_attempt_count`: how many times the proxy tried upstream (retries
    /// included); 0 when it never did.
    pub fn upstream_attempts(&self) -> Option<u64> {
        self.property(&["upstream", "request_attempt_count"])
    }

    /// `source.address`: the client, `ip:port`.
    pub fn source_address(&self) -> Option<String> {
        self.property(&["source", "address"])
    }

    /// `route_name`: the route the request took.
    pub fn route_name(&self) -> Option<String> {
        self.property(&["route_name"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_eight_bytes_little_endian() {
        assert_eq!(i64::from_bytes(503i64.to_le_bytes().to_vec()), Some(503));
        assert_eq!(i64::from_bytes((-1i64).to_le_bytes().to_vec()), Some(-1));
        assert_eq!(
            u64::from_bytes(u64::MAX.to_le_bytes().to_vec()),
            Some(u64::MAX)
        );
        assert_eq!(f64::from_bytes(1.5f64.to_le_bytes().to_vec()), Some(1.5));
        // Any other size is not an integer: no panic, no guess.
        for size in [0, 1, 4, 7, 9, 16] {
            assert_eq!(i64::from_bytes(vec![1; size]), None, "{size} bytes");
            assert_eq!(u64::from_bytes(vec![1; size]), None, "{size} bytes");
        }
    }

    #[test]
    fn bools_are_one_byte() {
        assert_eq!(bool::from_bytes(vec![1]), Some(true));
        assert_eq!(bool::from_bytes(vec![0]), Some(false));
        assert_eq!(bool::from_bytes(Vec::new()), None);
        assert_eq!(bool::from_bytes(vec![1, 0]), None);
        assert_eq!(bool::from_bytes(1i64.to_le_bytes().to_vec()), None);
    }

    #[test]
    fn durations_and_timestamps_are_nanoseconds() {
        let nanos = 1_500_000_000i64;
        assert_eq!(
            Duration::from_bytes(nanos.to_le_bytes().to_vec()),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(Duration::from_bytes((-1i64).to_le_bytes().to_vec()), None);
        assert_eq!(Duration::from_bytes(vec![0; 4]), None);
        assert_eq!(
            SystemTime::from_bytes(nanos.to_le_bytes().to_vec()),
            Some(UNIX_EPOCH + Duration::from_millis(1500))
        );
        assert_eq!(
            SystemTime::from_bytes((-nanos).to_le_bytes().to_vec()),
            UNIX_EPOCH.checked_sub(Duration::from_millis(1500))
        );
        // The extremes decode or are refused, without overflow panics.
        let _ = SystemTime::from_bytes(i64::MIN.to_le_bytes().to_vec());
        let _ = SystemTime::from_bytes(i64::MAX.to_le_bytes().to_vec());
    }

    #[test]
    fn strings_must_be_utf8() {
        assert_eq!(
            String::from_bytes(b"TLSv1.3".to_vec()).as_deref(),
            Some("TLSv1.3")
        );
        assert_eq!(String::from_bytes(vec![0xff, 0xfe]), None);
        assert_eq!(Vec::<u8>::from_bytes(vec![0xff]), Some(vec![0xff]));
    }

    #[test]
    fn narrowing_refuses_what_does_not_fit() {
        assert_eq!(narrow::<u16>(Some(8080)), Some(8080));
        assert_eq!(narrow::<u16>(Some(-1)), None);
        assert_eq!(narrow::<u16>(Some(70_000)), None);
        assert_eq!(narrow::<u64>(None), None);
    }

    #[test]
    fn outside_a_plugin_there_are_no_properties() {
        assert_eq!(route_name(), None);
        assert_eq!(
            try_get::<String>(&["route_name"]),
            Err(PropertyError::Host(no_host("proxy_get_property")))
        );
        assert_eq!(
            set_property(&["k"], "v").map_err(|error| error.status),
            Err(HostStatus::Unimplemented)
        );
    }

    #[test]
    fn invalid_values_say_what_was_expected() {
        let error = PropertyError::Invalid {
            path: "response.code".into(),
            expected: i64::TYPE,
            size: 3,
        };
        assert_eq!(
            error.to_string(),
            "response.code is not a valid int (3 bytes)"
        );
    }
}
