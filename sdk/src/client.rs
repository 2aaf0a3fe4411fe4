//! HTTP calls to other clusters, awaited.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::CallError;
use crate::headers::{Headers, NO_HEADERS};
use crate::host::{AwaitedCall, HostError};
use crate::runtime::{CallReply, ReplyParts, Runtime};
use proxy_async_abi::envoy_replies::{RESET_BEFORE_HEADERS, TIMEOUT_BODY};
use proxy_async_executor::Pending;
// A proxy-wasm module's host is a concrete type: its hostcalls need the trait in scope.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
use crate::host::Host as _;

/// A cluster's name, shared by a client, its calls and their responses. Boxed behind the
/// `Rc` so that it is one word: a paused request keeps one in its pending call.
type ClusterName = Rc<Box<str>>;

/// A call in flight, by how the host delivers its response.
enum Call {
    Awaited(AwaitedCall),
    Callback(Pending<CallReply>),
}

/// Where an [`HttpClient`]'s calls go: the proxy's name for a cluster, and the `:authority`
/// the calls carry unless the client or the call sets another (Higress's `Cluster`).
///
/// A plain name (`&str`, `String`) is a cluster whose calls carry the name itself as their
/// `:authority`. [`higress`](crate::higress) has the cluster names Higress gives its services
/// ([`K8sCluster`](crate::higress::K8sCluster), [`NacosCluster`](crate::higress::NacosCluster),
/// ...), whose `:authority` is the service's host name.
pub trait Cluster {
    /// The proxy's name for the cluster, e.g. `outbound|8080||auth.default.svc.cluster.local`.
    fn cluster_name(&self) -> String;

    /// The `:authority` of calls to the cluster. Empty means none: the calls then carry
    /// `unknownhost`, as in Higress (the proxy refuses a call without one).
    fn host_name(&self) -> String;

    /// For a cluster whose names depend on the request being served (Higress's
    /// [`RouteCluster`](crate::higress::RouteCluster)): the cluster the client asks again at
    /// each call. `None` (the default): the names are fixed and the client reads them once.
    fn per_call(&self) -> Option<Rc<dyn Cluster>> {
        None
    }
}

impl Cluster for str {
    fn cluster_name(&self) -> String {
        self.to_string()
    }

    fn host_name(&self) -> String {
        self.to_string()
    }
}

impl Cluster for String {
    fn cluster_name(&self) -> String {
        self.clone()
    }

    fn host_name(&self) -> String {
        self.clone()
    }
}

impl<T: Cluster + ?Sized> Cluster for &T {
    fn cluster_name(&self) -> String {
        (**self).cluster_name()
    }

    fn host_name(&self) -> String {
        (**self).host_name()
    }

    fn per_call(&self) -> Option<Rc<dyn Cluster>> {
        (**self).per_call()
    }
}

/// The `:authority` Higress sends when the cluster has no host name.
const UNKNOWN_HOST: &str = "unknownhost";

fn authority_of(host_name: String) -> Rc<str> {
    if host_name.is_empty() {
        Rc::from(UNKNOWN_HOST)
    } else {
        Rc::from(host_name)
    }
}

/// A client for one upstream cluster of the proxy.
///
/// ```no_run
/// # use proxy_async::{CallError, HttpClient};
/// # async fn example() -> Result<(), CallError> {
/// let auth = HttpClient::new("outbound|8080||auth.default.svc.cluster.local")
///     .with_authority("auth.internal");
/// let reply = auth
///     .post("/token")
///     .json(&serde_json::json!({"user": "alice"}))
///     .send()
///     .await?;
/// if reply.status() == 200 {
///     let token: String = reply.json()?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HttpClient {
    cluster: ClusterName,
    authority: Rc<str>,
    timeout: Duration,
    per_call: Option<PerCall>,
}

/// A cluster named per request, asked again at each call.
#[derive(Clone)]
struct PerCall {
    cluster: Rc<dyn Cluster>,
    // `with_authority` was called: its authority wins over the cluster's host name.
    authority_set: bool,
}

impl fmt::Debug for PerCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerCall")
            .field("authority_set", &self.authority_set)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// The timeout of a call unless the client or the call sets another (as in Higress).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

    /// A client for `cluster`: the name of a cluster in the proxy's configuration (the
    /// `:authority` of the calls is then the name too), or a [`Cluster`] such as Higress's
    /// [`K8sCluster`](crate::higress::K8sCluster) (the `:authority` is its host name), until
    /// [`with_authority`](HttpClient::with_authority) sets another.
    ///
    /// ```
    /// use proxy_async::HttpClient;
    /// use proxy_async::higress::K8sCluster;
    ///
    /// let client = HttpClient::new(K8sCluster {
    ///     service_name: "token".into(),
    ///     namespace: "auth".into(),
    ///     port: 8080,
    ///     ..K8sCluster::default()
    /// });
    /// assert_eq!(client.cluster(), "outbound|8080||token.auth.svc.cluster.local");
    /// assert_eq!(client.authority(), "token.auth.svc.cluster.local");
    /// ```
    pub fn new(cluster: impl Cluster) -> Self {
        let name = ClusterName::new(cluster.cluster_name().into_boxed_str());
        HttpClient {
            cluster: name,
            authority: authority_of(cluster.host_name()),
            timeout: Self::DEFAULT_TIMEOUT,
            per_call: cluster.per_call().map(|cluster| PerCall {
                cluster,
                authority_set: false,
            }),
        }
    }

    /// Sets the `:authority` (host) of the calls.
    pub fn with_authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = Rc::from(authority.into());
        if let Some(per_call) = &mut self.per_call {
            per_call.authority_set = true;
        }
        self
    }

    /// Sets the timeout of the calls.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The cluster this client calls. For a cluster named per request
    /// ([`RouteCluster`](crate::higress::RouteCluster)), the name it had when the client was
    /// made; each call asks again.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The timeout of the calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The `:authority` of the calls (for a cluster named per request, as for
    /// [`cluster`](HttpClient::cluster)).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// A GET request for `path` (which may carry a query string).
    pub fn get(&self, path: &str) -> CallBuilder {
        self.start(Cow::Borrowed("GET"), path)
    }

    /// A POST request.
    pub fn post(&self, path: &str) -> CallBuilder {
        self.start(Cow::Borrowed("POST"), path)
    }

    /// A PUT request.
    pub fn put(&self, path: &str) -> CallBuilder {
        self.start(Cow::Borrowed("PUT"), path)
    }

    /// A PATCH request.
    pub fn patch(&self, path: &str) -> CallBuilder {
        self.start(Cow::Borrowed("PATCH"), path)
    }

    /// A DELETE request.
    pub fn delete(&self, path: &str) -> CallBuilder {
        self.start(Cow::Borrowed("DELETE"), path)
    }

    /// A HEAD request.
    pub fn head(&self, path: &str) -> CallBuilder {
        self.start(Cow::Borrowed("HEAD"), path)
    }

    /// A request with any method. `path` is a path (`/v1/token?x=1`), or an absolute URL
    /// (`http://auth.internal/v1/token`), whose host becomes the call's `:authority`, as in
    /// the Higress Go client; the call still goes to this client's cluster.
    pub fn request(&self, method: &str, path: &str) -> CallBuilder {
        self.start(Cow::Owned(method.to_string()), path)
    }

    fn start(&self, method: Cow<'static, str>, path: &str) -> CallBuilder {
        let (cluster, authority) = match &self.per_call {
            None => (Rc::clone(&self.cluster), Rc::clone(&self.authority)),
            Some(per_call) => (
                ClusterName::new(per_call.cluster.cluster_name().into_boxed_str()),
                if per_call.authority_set {
                    Rc::clone(&self.authority)
                } else {
                    authority_of(per_call.cluster.host_name())
                },
            ),
        };
        let (authority, path) = match split_absolute_url(path) {
            Some((host, rest)) => (Rc::from(host), call_path(rest)),
            None => (authority, call_path(path)),
        };
        CallBuilder {
            cluster,
            authority,
            method,
            path,
            headers: Vec::new(),
            body: Vec::new(),
            timeout: self.timeout,
            invalid: None,
        }
    }
}

/// One call being built; [`send`](CallBuilder::send) dispatches it.
#[derive(Debug)]
#[must_use = "a call does nothing until it is sent and awaited"]
pub struct CallBuilder {
    cluster: ClusterName,
    authority: Rc<str>,
    method: Cow<'static, str>,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
    invalid: Option<String>,
}

impl CallBuilder {
    /// Adds a header. Pseudo-headers (`:method`, `:path`, `:authority`) come from the builder
    /// and are ignored here; set the authority with [`authority`](CallBuilder::authority).
    pub fn header(self, name: &str, value: &str) -> Self {
        self.push_header(name, value.to_string())
    }

    /// Sets `authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        let mut value = String::with_capacity(7 + token.len());
        value.push_str("Bearer ");
        value.push_str(token);
        self.push_header("authorization", value)
    }

    fn push_header(mut self, name: &str, value: String) -> Self {
        if name.starts_with(':') {
            log::debug!("pseudo-header {name} ignored on a call; the builder sets it");
        } else {
            // As written: the proxy lower-cases the names of a call's headers itself.
            self.headers.push((name.to_string(), value));
        }
        self
    }

    /// Appends `name=value` to the query string, percent-encoded.
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.path
            .push(if self.path.contains('?') { '&' } else { '?' });
        percent_encode(name, &mut self.path);
        self.path.push('=');
        percent_encode(value, &mut self.path);
        self
    }

    /// Sets the `:authority` of this call.
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = Rc::from(authority);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `content-type: application/json`.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = body;
                self.header("content-type", "application/json")
            }
            Err(error) => {
                self.invalid = Some(format!("JSON body: {error}"));
                self
            }
        }
    }

    /// Sets the timeout of this call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Hands the call to the proxy. What the request was made of is freed here, before the
    /// caller awaits the answer: a stream paused on the call keeps only the cluster (for error
    /// messages), the timeout and the pending call.
    fn dispatch(self) -> Result<(ClusterName, Duration, Call), CallError> {
        let CallBuilder {
            cluster,
            authority,
            method,
            path,
            headers,
            body,
            timeout,
            invalid,
        } = self;
        if let Some(reason) = invalid {
            return Err(CallError::InvalidRequest {
                cluster: cluster.to_string(),
                reason,
            });
        }
        let runtime = Runtime::current().ok_or(CallError::NoHost)?;
        // The pseudo-headers and a few more on the stack; a longer list on the heap.
        const ON_STACK: usize = 8;
        let mut stack = [("", ""); ON_STACK];
        stack[0] = (":method", &*method);
        stack[1] = (":path", &*path);
        stack[2] = (":authority", &*authority);
        let len = headers.len() + 3;
        let mut heap = Vec::new();
        let pairs: &[(&str, &str)] = if len <= ON_STACK {
            for (slot, (name, value)) in stack[3..].iter_mut().zip(&headers) {
                *slot = (name.as_str(), value.as_str());
            }
            stack.get(..len).unwrap_or_default()
        } else {
            heap.reserve_exact(len);
            heap.extend_from_slice(&stack[..3]);
            heap.extend(
                headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            );
            &heap
        };
        let call = match runtime.host.send_awaited(&cluster, pairs, &body, timeout) {
            // A component host: the response is the value of the host's async call.
            Some(awaited) => Call::Awaited(awaited),
            // proxy-wasm: the response arrives by callback, routed here by its token.
            None => {
                let token = runtime
                    .host
                    .http_call(&cluster, pairs, &body, timeout)
                    .map_err(|error| refused(&cluster, &error))?;
                Call::Callback(runtime.calls.register(token).map_err(|duplicate| {
                    log::error!("{duplicate}");
                    CallError::InvalidResponse {
                        cluster: cluster.to_string(),
                        reason: duplicate.to_string(),
                    }
                })?)
            }
        };
        Ok((cluster, timeout, call))
    }

    /// Dispatches the call; the returned future waits for its response. The call goes out
    /// here, when `send` is called, so calls sent before any of them is awaited (two joined
    /// with `futures::join!`, say) are in flight at once; a future dropped unawaited leaves its
    /// answer ignored.
    ///
    /// A response with any status is `Ok`; check [`CallResponse::status`]. Errors are the
    /// proxy's refusal to dispatch, no response (timeout, reset), or no valid `:status`.
    pub fn send(self) -> ResponseFuture {
        let state = match self.dispatch() {
            Ok((cluster, timeout, call)) => Awaiting::Answer {
                cluster,
                // What the proxy was given: whole milliseconds that fit its `u32`.
                timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
                call,
            },
            Err(error) => Awaiting::Over(Some(Box::new(error))),
        };
        ResponseFuture { state }
    }
}

/// The response to a call [sent](CallBuilder::send): a future of the reply alone, since
/// the request was dispatched before it was made. It is what a hook paused on a call keeps,
/// so it holds no more than the pending call, the cluster (for errors) and the timeout.
#[must_use = "the response is only read when the future is awaited"]
pub struct ResponseFuture {
    state: Awaiting,
}

// Small, as every paused request keeps one: the timeout as the proxy's milliseconds, a
// refusal (rare) boxed.
enum Awaiting {
    Answer {
        cluster: ClusterName,
        timeout_ms: u32,
        call: Call,
    },
    // The refusal not yet handed out, or `None` once the future has finished. One variant
    // for both, so that the pointers' niche tells it from `Answer` (no tag of its own).
    Over(Option<Box<CallError>>),
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            Awaiting::Answer { .. } => "awaiting the answer",
            Awaiting::Over(Some(_)) => "failed",
            Awaiting::Over(None) => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl Future for ResponseFuture {
    type Output = Result<CallResponse, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Awaiting::Answer {
            cluster,
            timeout_ms,
            call,
        } = &mut this.state
        else {
            return match std::mem::replace(&mut this.state, Awaiting::Over(None)) {
                Awaiting::Over(Some(error)) => Poll::Ready(Err(*error)),
                // Polled again after it finished: there is nothing more to give.
                _ => Poll::Pending,
            };
        };
        let reply = match call {
            Call::Awaited(awaited) => match Pin::new(awaited).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(reply)) => Ok(reply),
                Poll::Ready(Err(error)) => Err(refused(cluster, &error)),
            },
            Call::Callback(pending) => match Pin::new(pending).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(reply) => Ok(reply),
            },
        };
        let (cluster, timeout) = (
            Rc::clone(cluster),
            Duration::from_millis(u64::from(*timeout_ms)),
        );
        this.state = Awaiting::Over(None);
        Poll::Ready(reply.and_then(|reply| response(cluster, timeout, reply)))
    }
}

/// The proxy refused the call to `cluster`.
fn refused(cluster: &str, error: &HostError) -> CallError {
    CallError::Refused {
        cluster: cluster.to_string(),
        status: error.status,
    }
}

/// The call's reply as the plugin sees it.
fn response(
    cluster: ClusterName,
    timeout: Duration,
    reply: CallReply,
) -> Result<CallResponse, CallError> {
    let Some(parts) = reply else {
        return Err(CallError::NoResponse {
            cluster: cluster.to_string(),
            timeout,
        });
    };
    let Some(status) = parts.headers.get(":status").and_then(parse_status) else {
        return Err(CallError::InvalidStatus {
            cluster: cluster.to_string(),
        });
    };
    // Only an error status can be the proxy's own answer: a successful call pays nothing.
    if status.as_u16() >= 502
        && let Some(error) = proxy_answer(&cluster, timeout, status, &parts)
    {
        return Err(error);
    }
    Ok(CallResponse {
        cluster,
        status,
        headers: parts.headers,
        body: parts.body,
        trailers: parts.trailers,
    })
}

/// The header Envoy's router adds to every response an upstream sent, and never to its own.
const UPSTREAM_SERVICE_TIME: &str = "x-envoy-upstream-service-time";

/// The failure a response stands for when the proxy made it up because the upstream did not
/// answer: Envoy's router answers a timeout with a `504` and an unreachable or reset upstream
/// with a `503` (`502` for a protocol error), as plain text, and without the header it puts
/// on every upstream's answer. `None` for anything else, which is the upstream's own answer.
fn proxy_answer(
    cluster: &str,
    timeout: Duration,
    status: StatusCode,
    parts: &ReplyParts,
) -> Option<CallError> {
    if parts.headers.get(UPSTREAM_SERVICE_TIME).is_some()
        || parts.headers.get("content-type") != Some(b"text/plain".as_slice())
    {
        return None;
    }
    let body = std::str::from_utf8(&parts.body).ok()?;
    match status.as_u16() {
        504 if body == TIMEOUT_BODY => Some(CallError::Timeout {
            cluster: cluster.to_string(),
            timeout,
        }),
        502 | 503 => body
            .strip_prefix(RESET_BEFORE_HEADERS)
            .map(|reason| CallError::Unreachable {
                cluster: cluster.to_string(),
                reason: reason.to_string(),
            }),
        _ => None,
    }
}

/// An HTTP status as the proxy hands it over: exactly three digits, 100 to 999 (RFC 9110
/// `3DIGIT`). `str::parse` would also take `+200`, `0200` or `65535`, none of which an HTTP
/// peer may send; a plugin comparing with 200 must not be handed one of them as a status.
pub(crate) fn parse_status(value: &[u8]) -> Option<StatusCode> {
    let &[
        hundreds @ b'1'..=b'9',
        tens @ b'0'..=b'9',
        ones @ b'0'..=b'9',
    ] = value
    else {
        return None;
    };
    let code =
        u16::from(hundreds - b'0') * 100 + u16::from(tens - b'0') * 10 + u16::from(ones - b'0');
    StatusCode::from_u16(code).ok()
}

/// `http://host[:port]/rest`, `https://...` or `//host/rest` → `(host[:port], /rest)`, without
/// any `user:password@`, as Go's `url.Parse` gives Higress's client its host
/// (higress-group/wasm-go v1.1.1 `pkg/wrapper/http_wrapper.go:103-109`); `None` for anything
/// else.
fn split_absolute_url(url: &str) -> Option<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .or_else(|| url.strip_prefix("//"))?;
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, path) = rest.split_at(split);
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    (!host.is_empty()).then_some((host, path))
}

/// A call's `:path` as Higress's client sends it (`http_wrapper.go:110-113`): the fragment
/// dropped (it never leaves the client), an empty query's `?` too, and a leading `/`.
fn call_path(path: &str) -> String {
    // One pass over the bytes: calls are made per request, and paths are short.
    let mut end = path.len();
    let mut query = None;
    for (index, byte) in path.bytes().enumerate() {
        match byte {
            b'#' => {
                end = index;
                break;
            }
            b'?' if query.is_none() => query = Some(index),
            _ => {}
        }
    }
    let end = match query {
        Some(at) if at + 1 == end => at,
        _ => end,
    };
    let path = &path[..end];
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

fn percent_encode(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The response to a call.
#[derive(Debug, Clone)]
pub struct CallResponse {
    cluster: ClusterName,
    status: StatusCode,
    headers: Headers,
    body: Vec<u8>,
    trailers: Option<Box<Headers>>,
}

impl CallResponse {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// A header as text; an error when it is missing or not UTF-8 (the error names the
    /// cluster and the header, so `?` gives a useful log line).
    pub fn header(&self, name: &str) -> Result<&str, CallError> {
        let value = self
            .header_bytes(name)
            .ok_or_else(|| CallError::MissingHeader {
                cluster: self.cluster.to_string(),
                name: name.to_string(),
            })?;
        std::str::from_utf8(value).map_err(|_| CallError::InvalidResponse {
            cluster: self.cluster.to_string(),
            reason: format!("header `{name}` is not UTF-8"),
        })
    }

    /// A header's bytes, if present (the first, if repeated).
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// All headers, pseudo-headers included, read in place (no copy per header).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The trailers, if the response had any.
    pub fn trailers(&self) -> &Headers {
        self.trailers.as_deref().unwrap_or(&NO_HEADERS)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text.
    pub fn text(&self) -> Result<&str, CallError> {
        std::str::from_utf8(&self.body).map_err(|_| CallError::InvalidResponse {
            cluster: self.cluster.to_string(),
            reason: "body is not UTF-8".to_string(),
        })
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, CallError> {
        serde_json::from_slice(&self.body).map_err(|error| CallError::InvalidResponse {
            cluster: self.cluster.to_string(),
            reason: format!("body is not the expected JSON: {error}"),
        })
    }

    /// The cluster that answered.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_urls_give_the_authority() {
        let client = HttpClient::new("outbound|80||httpbin.org");
        assert_eq!(client.authority(), "outbound|80||httpbin.org");
        let call = client.get("http://httpbin.org:8080/get?a=1");
        assert_eq!(
            (&*call.authority, call.path.as_str()),
            ("httpbin.org:8080", "/get?a=1")
        );
        let call = client.get("https://example.com");
        assert_eq!((&*call.authority, call.path.as_str()), ("example.com", "/"));
        let call = client.get("relative/path");
        assert_eq!(call.path, "/relative/path");
        assert_eq!(split_absolute_url("http:///nohost"), None);
    }

    #[test]
    fn urls_are_read_as_higress_reads_them() {
        // wasm-go v1.1.1 pkg/wrapper/http_wrapper.go:98-113: Go's url.Parse, the host for the
        // authority, the fragment and an empty query dropped, `/` by default.
        let client = HttpClient::new("auth");
        for (url, authority, path) in [
            ("//auth.internal/check?x=1", "auth.internal", "/check?x=1"),
            (
                "http://user:secret@auth.internal:8080/check",
                "auth.internal:8080",
                "/check",
            ),
            ("https://auth.internal#top", "auth.internal", "/"),
            ("/check#section", "auth", "/check"),
            ("/check?", "auth", "/check"),
            ("/check?a=1?", "auth", "/check?a=1?"),
            ("", "auth", "/"),
        ] {
            let call = client.get(url);
            assert_eq!(
                (&*call.authority, call.path.as_str()),
                (authority, path),
                "{url}"
            );
        }
    }

    #[test]
    fn a_status_is_three_digits() {
        for (text, status) in [("200", 200), ("100", 100), ("418", 418), ("999", 999)] {
            let parsed = parse_status(text.as_bytes()).map(u16::from);
            assert_eq!(parsed, Some(status), "{text}");
        }
        for text in [
            "", "20", "2000", "+200", "0200", "099", "2 0", " 200", "20x", "65535",
        ] {
            assert_eq!(parse_status(text.as_bytes()), None, "{text:?}");
        }
    }
}
