//! gRPC calls and streams to clusters the proxy knows: a unary call is awaited; a stream is
//! an async [`Stream`](futures::Stream) of messages with `send` and `close`.
//!
//! Messages are bytes (the serialized protobuf): the SDK does not pick a protobuf library for
//! the plugin; `prost` or `protobuf` encode and decode them.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proxy_async_executor::Registry;

use crate::client::Cluster;
use crate::host::Host as _;
use crate::host::{BufferType, GrpcRequest, HostError, HostStatus, host_of};
use crate::runtime::{Extension, Runtime};

/// A gRPC status code (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrpcCode(pub u32);

impl GrpcCode {
    /// 0: not an error.
    pub const OK: GrpcCode = GrpcCode(0);
    /// 1: the caller cancelled.
    pub const CANCELLED: GrpcCode = GrpcCode(1);
    /// 2: an unknown error.
    pub const UNKNOWN: GrpcCode = GrpcCode(2);
    /// 3: the request is invalid.
    pub const INVALID_ARGUMENT: GrpcCode = GrpcCode(3);
    /// 4: the deadline (the call's timeout) passed first.
    pub const DEADLINE_EXCEEDED: GrpcCode = GrpcCode(4);
    /// 5: not found.
    pub const NOT_FOUND: GrpcCode = GrpcCode(5);
    /// 7: the caller may not do this.
    pub const PERMISSION_DENIED: GrpcCode = GrpcCode(7);
    /// 8: a quota or rate limit is exhausted.
    pub const RESOURCE_EXHAUSTED: GrpcCode = GrpcCode(8);
    /// 12: the service does not implement the method.
    pub const UNIMPLEMENTED: GrpcCode = GrpcCode(12);
    /// 13: an internal error.
    pub const INTERNAL: GrpcCode = GrpcCode(13);
    /// 14: the service is unavailable (also: the cluster has no healthy host, or is unknown).
    pub const UNAVAILABLE: GrpcCode = GrpcCode(14);
    /// 16: the caller is not authenticated.
    pub const UNAUTHENTICATED: GrpcCode = GrpcCode(16);
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "OK",
            1 => "CANCELLED",
            2 => "UNKNOWN",
            3 => "INVALID_ARGUMENT",
            4 => "DEADLINE_EXCEEDED",
            5 => "NOT_FOUND",
            6 => "ALREADY_EXISTS",
            7 => "PERMISSION_DENIED",
            8 => "RESOURCE_EXHAUSTED",
            9 => "FAILED_PRECONDITION",
            10 => "ABORTED",
            11 => "OUT_OF_RANGE",
            12 => "UNIMPLEMENTED",
            13 => "INTERNAL",
            14 => "UNAVAILABLE",
            15 => "DATA_LOSS",
            16 => "UNAUTHENTICATED",
            other => return write!(f, "status {other}"),
        };
        f.write_str(name)
    }
}

/// Why a gRPC call or stream failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrpcError {
    /// The proxy refused to open the call (the host status says why).
    Refused {
        /// The cluster.
        cluster: String,
        /// What the proxy answered.
        status: HostStatus,
    },
    /// The call ended with a non-OK status from the service or the proxy.
    Status {
        /// The status code.
        code: GrpcCode,
        /// The status message (`grpc-message`), possibly empty.
        message: String,
        /// Who ended the call, as Envoy tells it (its response code details): `via_upstream`
        /// for the service's own status, else Envoy's reason (`no_healthy_upstream`, ...);
        /// empty when the proxy does not say.
        details: String,
    },
    /// The call's timeout passed first (`DEADLINE_EXCEEDED`).
    Timeout {
        /// The timeout the call had.
        timeout: Duration,
    },
    /// The stream is closed: nothing more can be sent.
    Closed,
    /// Used outside a plugin callback: there is no proxy to call.
    NoHost,
}

impl GrpcError {
    /// The gRPC status code this error stands for.
    pub fn code(&self) -> GrpcCode {
        match self {
            GrpcError::Status { code, .. } => *code,
            GrpcError::Timeout { .. } => GrpcCode::DEADLINE_EXCEEDED,
            GrpcError::Refused { .. } | GrpcError::NoHost => GrpcCode::UNAVAILABLE,
            GrpcError::Closed => GrpcCode::CANCELLED,
        }
    }

    /// A call's close as the proxy reports it. Envoy ends a unary call whose timeout passed
    /// with its router's `504`, which reaches the plugin as `UNAVAILABLE`, `upstream request
    /// timeout`, details `response_timeout` (seen in Envoy 1.40): that is the timeout. Without
    /// details (another host), `DEADLINE_EXCEEDED` is.
    fn from_close(code: u32, message: &str, timeout: Duration) -> GrpcError {
        let (message, details) = split_details(message);
        let timed_out = match details {
            "response_timeout" => true,
            "" => GrpcCode(code) == GrpcCode::DEADLINE_EXCEEDED,
            _ => false,
        };
        if timed_out {
            return GrpcError::Timeout { timeout };
        }
        GrpcError::Status {
            code: GrpcCode(code),
            message: message.to_string(),
            details: details.to_string(),
        }
    }
}

impl fmt::Display for GrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrpcError::Refused { cluster, status } => {
                write!(f, "the proxy refused the gRPC call to {cluster}: {status}")
            }
            GrpcError::Status { code, message, .. } if message.is_empty() => {
                write!(f, "gRPC status {code}")
            }
            GrpcError::Status { code, message, .. } => write!(f, "gRPC status {code}: {message}"),
            GrpcError::Timeout { timeout } => {
                write!(f, "the gRPC call got no response within {timeout:?}")
            }
            GrpcError::Closed => f.write_str("the gRPC stream is closed"),
            GrpcError::NoHost => f.write_str("gRPC call outside a plugin callback"),
        }
    }
}

impl std::error::Error for GrpcError {}

/// A unary call's reply, copied out of the host in its callback: the message, or the
/// status (code, message) it closed with.
pub(crate) type GrpcReply = Result<Vec<u8>, (u32, String)>;

/// What one gRPC stream received and has not been read yet.
#[derive(Default)]
pub(crate) struct Inbox {
    messages: VecDeque<Vec<u8>>,
    // The status it closed with.
    closed: Option<(u32, String)>,
    waker: Option<Waker>,
}

/// The runtime's gRPC calls and streams in flight.
#[derive(Default)]
pub(crate) struct GrpcState {
    pub(crate) calls: Registry<GrpcReply>,
    streams: RefCell<HashMap<u32, Rc<RefCell<Inbox>>>>,
}

impl Extension for GrpcState {
    fn installed() {
        #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
        crate::exports::FEATURES.with(|features| {
            features.grpc.set(Some(crate::exports::GrpcCallbacks {
                receive: on_receive,
                close: on_close,
            }));
        });
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn pending(&self) -> usize {
        self.calls.len() + self.streams.borrow().len()
    }
}

/// `proxy_on_grpc_receive`: a message on a gRPC call (its reply) or stream, readable now.
pub(crate) fn on_receive(runtime: &Rc<Runtime>, context_id: u32, token: u32, size: usize) {
    runtime.deliver(context_id, |runtime| {
        let grpc = runtime.extension::<GrpcState>();
        if !grpc.is_open(token) {
            log::debug!("gRPC message on {token} ignored: nothing waits for it");
            return;
        }
        let message = runtime
            .host
            .get_buffer(BufferType::GrpcCallMessage, 0, size)
            .unwrap_or_else(|error| {
                log::warn!("reading the gRPC message of {token}: {error}");
                Vec::new()
            });
        grpc.receive(token, message);
    });
}

/// `proxy_on_grpc_close`: a gRPC call or stream ended with `code`.
pub(crate) fn on_close(runtime: &Rc<Runtime>, context_id: u32, token: u32, code: u32) {
    runtime.deliver(context_id, |runtime| {
        let grpc = runtime.extension::<GrpcState>();
        if !grpc.is_open(token) {
            log::debug!("gRPC close of {token} ignored: nothing waits for it");
            return;
        }
        let message = match crate::host::host_of(runtime).grpc_status() {
            Ok((_, message)) => String::from_utf8_lossy(&message).into_owned(),
            Err(error) => {
                log::debug!("reading the status of gRPC {token}: {error}");
                String::new()
            }
        };
        grpc.close(token, code, message);
    });
}

impl GrpcState {
    /// Whether a unary call or a stream waits for callbacks on `token`.
    pub(crate) fn is_open(&self, token: u32) -> bool {
        self.calls.is_waiting(token) || self.streams.borrow().contains_key(&token)
    }

    /// A message arrived on `token` (unary: its reply).
    pub(crate) fn receive(&self, token: u32, message: Vec<u8>) {
        if self.calls.is_waiting(token) {
            self.calls.complete(token, Ok(message));
            return;
        }
        let inbox = self.streams.borrow().get(&token).cloned();
        if let Some(inbox) = inbox {
            let waker = {
                let mut inbox = inbox.borrow_mut();
                inbox.messages.push_back(message);
                inbox.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// `token` closed with `code` (unary: the failed call's reply).
    pub(crate) fn close(&self, token: u32, code: u32, message: String) {
        if self.calls.is_waiting(token) {
            self.calls.complete(token, Err((code, message)));
            return;
        }
        let inbox = self.streams.borrow_mut().remove(&token);
        if let Some(inbox) = inbox {
            let waker = {
                let mut inbox = inbox.borrow_mut();
                inbox.closed = Some((code, message));
                inbox.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// Envoy ends the status message of a closed call with its response code details in braces
/// (`not yours{via_upstream}`, `upstream request timeout{response_timeout}`; seen in Envoy
/// 1.40): the message, and the details (which may hold braces themselves). A message without
/// them has no details.
fn split_details(message: &str) -> (&str, &str) {
    let Some(inner) = message.strip_suffix('}') else {
        return (message, "");
    };
    let mut depth = 1usize;
    for (index, byte) in inner.bytes().enumerate().rev() {
        match byte {
            b'}' => depth += 1,
            b'{' => {
                depth -= 1;
                if depth == 0 {
                    return (&message[..index], &inner[index + 1..]);
                }
            }
            _ => {}
        }
    }
    (message, "")
}

/// The upstream argument of `proxy_grpc_call`/`proxy_grpc_stream`: an encoded
/// `envoy.config.core.v3.GrpcService { envoy_grpc { cluster_name } }`. Envoy also takes a bare
/// cluster name, but only after failing to parse it as that message, and some names parse
/// (to a service without a target, which Envoy refuses with a status the `proxy-wasm` crate
/// panics on). Names too long for one-byte lengths (over 125 bytes) go bare.
pub(crate) fn upstream(cluster: &str) -> String {
    let len = cluster.len();
    if len > 125 {
        return cluster.to_string();
    }
    // Lengths below 128 are one-byte varints; every byte stays ASCII (valid UTF-8).
    let mut encoded = String::with_capacity(len + 4);
    encoded.push('\u{a}'); // field 1 (envoy_grpc), length-delimited
    encoded.push(char::from(u8::try_from(len + 2).unwrap_or(127)));
    encoded.push('\u{a}'); // field 1 (cluster_name), length-delimited
    encoded.push(char::from(u8::try_from(len).unwrap_or(125)));
    encoded.push_str(cluster);
    encoded
}

/// A client for one gRPC cluster.
///
/// ```
/// use std::rc::Rc;
/// use proxy_async::{Error, Flow, GrpcClient, LocalReply, NoConfig, Plugin, Request};
///
/// struct Check;
///
/// impl Plugin for Check {
///     type Root = NoConfig;
///     fn new(_: &Rc<NoConfig>) -> Self { Check }
///     async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
///         let path = req.path().unwrap_or_default();
///         let verdict = GrpcClient::new("authz")
///             .call("authz.v1.Authz", "Check", path.as_bytes())
///             .await;
///         match verdict {
///             Ok(reply) if reply == b"allow" => Ok(Flow::Continue),
///             Ok(_) => Ok(LocalReply::new(403).into()),
///             Err(error) => Err(error.into()),
///         }
///     }
/// }
/// ```
#[derive(Clone, Debug)]
pub struct GrpcClient {
    cluster: String,
    timeout: Duration,
    metadata: Vec<(String, Vec<u8>)>,
}

impl GrpcClient {
    /// A client for `cluster`, with a 5 s timeout for unary calls.
    pub fn new(cluster: impl Cluster) -> Self {
        GrpcClient {
            cluster: cluster.cluster_name(),
            timeout: Duration::from_secs(5),
            metadata: Vec::new(),
        }
    }

    /// Sets the timeout of unary calls (a call past it fails with [`GrpcError::Timeout`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Adds initial metadata (a request header, name lower-cased) sent on every call and stream.
    pub fn with_metadata(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.metadata
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// The cluster.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn request<'a>(
        &'a self,
        service: &'a str,
        method: &'a str,
        metadata: &'a [(&'a str, &'a [u8])],
    ) -> GrpcRequest<'a> {
        GrpcRequest {
            cluster: &self.cluster,
            service,
            method,
            metadata,
            timeout: self.timeout,
        }
    }

    fn refused(&self, error: HostError) -> GrpcError {
        GrpcError::Refused {
            cluster: self.cluster.clone(),
            status: error.status,
        }
    }

    /// Calls `service`/`method` (e.g. `"grpc.health.v1.Health"`, `"Check"`) with one message
    /// and waits for the reply message. A non-OK status is an error; so is the timeout.
    pub async fn call(
        &self,
        service: &str,
        method: &str,
        message: impl AsRef<[u8]>,
    ) -> Result<Vec<u8>, GrpcError> {
        let runtime = Runtime::current().ok_or(GrpcError::NoHost)?;
        let metadata = self.metadata_pairs();
        let token = host_of(&runtime)
            .grpc_call(&self.request(service, method, &metadata), message.as_ref())
            .map_err(|error| self.refused(error))?;
        let pending = runtime
            .extension::<GrpcState>()
            .calls
            .register(token)
            .map_err(|duplicate| {
                log::error!("{duplicate}");
                GrpcError::Status {
                    code: GrpcCode::INTERNAL,
                    message: duplicate.to_string(),
                    details: String::new(),
                }
            })?;
        // Dropped before the reply (the stream ended, a timeout around it fired): the proxy
        // is told to abandon the call.
        let mut guard = CancelOnDrop {
            runtime: Rc::clone(&runtime),
            token,
            armed: true,
        };
        drop(runtime);
        let reply = pending.await;
        guard.armed = false;
        reply.map_err(|(code, message)| GrpcError::from_close(code, &message, self.timeout))
    }

    /// Opens a stream to `service`/`method`; send messages with [`GrpcStream::send`], read the
    /// replies as a [`Stream`](futures::Stream) or with [`GrpcStream::message`].
    pub fn open_stream(&self, service: &str, method: &str) -> Result<GrpcStream, GrpcError> {
        let runtime = Runtime::current().ok_or(GrpcError::NoHost)?;
        let metadata = self.metadata_pairs();
        let token = host_of(&runtime)
            .grpc_stream(&self.request(service, method, &metadata))
            .map_err(|error| self.refused(error))?;
        let inbox = Rc::new(RefCell::new(Inbox::default()));
        runtime
            .extension::<GrpcState>()
            .streams
            .borrow_mut()
            .insert(token, Rc::clone(&inbox));
        Ok(GrpcStream {
            runtime,
            cluster: self.cluster.clone(),
            token,
            inbox,
            half_closed: false,
        })
    }

    fn metadata_pairs(&self) -> Vec<(&str, &[u8])> {
        self.metadata
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
            .collect()
    }
}

struct CancelOnDrop {
    runtime: Rc<Runtime>,
    token: u32,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed
            && let Err(error) = host_of(&self.runtime).grpc_cancel(self.token, false)
        {
            log::debug!("cancelling gRPC call {}: {error}", self.token);
        }
    }
}

/// An open gRPC stream: send messages, read the replies. Dropping it resets the stream.
pub struct GrpcStream {
    runtime: Rc<Runtime>,
    cluster: String,
    token: u32,
    inbox: Rc<RefCell<Inbox>>,
    half_closed: bool,
}

impl fmt::Debug for GrpcStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcStream")
            .field("cluster", &self.cluster)
            .field("token", &self.token)
            .finish()
    }
}

impl GrpcStream {
    /// Sends one message.
    pub fn send(&mut self, message: impl AsRef<[u8]>) -> Result<(), GrpcError> {
        self.send_inner(message.as_ref(), false)
    }

    /// Half-closes the stream (`proxy_grpc_close`): the plugin sends nothing more; replies
    /// still arrive, until the service closes its side.
    pub fn close(&mut self) -> Result<(), GrpcError> {
        if self.half_closed || self.inbox.borrow().closed.is_some() {
            return Err(GrpcError::Closed);
        }
        host_of(&self.runtime)
            .grpc_close(self.token)
            .map_err(|error| stream_refusal(&self.cluster, error))?;
        self.half_closed = true;
        Ok(())
    }

    /// Sends one message and half-closes the stream with it.
    pub fn send_last(&mut self, message: impl AsRef<[u8]>) -> Result<(), GrpcError> {
        self.send_inner(message.as_ref(), true)
    }

    fn send_inner(&mut self, message: &[u8], end_stream: bool) -> Result<(), GrpcError> {
        if self.half_closed || self.inbox.borrow().closed.is_some() {
            return Err(GrpcError::Closed);
        }
        host_of(&self.runtime)
            .grpc_send(self.token, message, end_stream)
            .map_err(|error| stream_refusal(&self.cluster, error))?;
        self.half_closed |= end_stream;
        Ok(())
    }

    /// The next reply message; `None` once the stream closed with OK. A non-OK close is one
    /// `Some(Err(..))`, then `None`.
    pub async fn message(&mut self) -> Option<Result<Vec<u8>, GrpcError>> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Vec<u8>, GrpcError>>> {
        let mut inbox = self.inbox.borrow_mut();
        if let Some(message) = inbox.messages.pop_front() {
            return Poll::Ready(Some(Ok(message)));
        }
        match inbox.closed.take() {
            Some((0, _)) => {
                inbox.closed = Some((0, String::new()));
                Poll::Ready(None)
            }
            Some((code, message)) => {
                // Reported once; afterwards the stream reads as ended.
                inbox.closed = Some((0, String::new()));
                let (message, details) = split_details(&message);
                Poll::Ready(Some(Err(GrpcError::Status {
                    code: GrpcCode(code),
                    message: message.to_string(),
                    details: details.to_string(),
                })))
            }
            None => {
                inbox.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A refused send or close on a stream: NOT_FOUND means the proxy closed it already.
fn stream_refusal(cluster: &str, error: HostError) -> GrpcError {
    match error.status {
        HostStatus::NotFound => GrpcError::Closed,
        status => GrpcError::Refused {
            cluster: cluster.to_string(),
            status,
        },
    }
}

impl futures::Stream for GrpcStream {
    type Item = Result<Vec<u8>, GrpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_message(cx)
    }
}

impl Drop for GrpcStream {
    // Dropped before the proxy closed it: reset it, so that no callback comes for it.
    fn drop(&mut self) {
        if self.inbox.borrow().closed.is_some() {
            return;
        }
        self.runtime
            .extension::<GrpcState>()
            .streams
            .borrow_mut()
            .remove(&self.token);
        if let Err(error) = host_of(&self.runtime).grpc_cancel(self.token, true) {
            log::debug!("cancelling gRPC stream {}: {error}", self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_is_an_encoded_grpc_service_naming_the_cluster() {
        assert_eq!(upstream("authz").as_bytes(), b"\x0a\x07\x0a\x05authz");
        let long = "c".repeat(126);
        assert_eq!(upstream(&long), long, "too long for one-byte lengths: bare");
        let longest = "c".repeat(125);
        assert_eq!(upstream(&longest).as_bytes()[..4], [0x0a, 127, 0x0a, 125]);
    }

    #[test]
    fn envoys_timeout_is_a_timeout_and_a_services_status_is_its_own() {
        let timeout = Duration::from_millis(250);
        // What Envoy 1.40 reports (tests/e2e/tests/envoy/grpc.rs sees it).
        assert_eq!(
            GrpcError::from_close(14, "upstream request timeout{response_timeout}", timeout),
            GrpcError::Timeout { timeout }
        );
        assert_eq!(
            GrpcError::from_close(7, "not yours{via_upstream}", timeout),
            GrpcError::Status {
                code: GrpcCode::PERMISSION_DENIED,
                message: "not yours".into(),
                details: "via_upstream".into(),
            }
        );
        // A service that says "upstream request timeout" itself is not Envoy's timeout.
        assert_eq!(
            GrpcError::from_close(14, "upstream request timeout{via_upstream}", timeout).code(),
            GrpcCode::UNAVAILABLE
        );
        // Details that hold braces, and a message that ends in its own.
        assert_eq!(
            split_details(
                "a {b}{upstream_reset_before_response_started{remote_connection_failure}}"
            ),
            (
                "a {b}",
                "upstream_reset_before_response_started{remote_connection_failure}"
            )
        );
        // A host that gives no details: DEADLINE_EXCEEDED is the timeout.
        assert_eq!(
            GrpcError::from_close(4, "deadline", timeout),
            GrpcError::Timeout { timeout }
        );
        assert_eq!(
            GrpcError::from_close(7, "denied", timeout).to_string(),
            "gRPC status PERMISSION_DENIED: denied"
        );
    }
}
