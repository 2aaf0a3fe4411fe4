//! The plugin trait and what its hooks return.

use std::borrow::Cow;
use std::rc::Rc;

use crate::error::Error;
use crate::headers::Headers;
use crate::message::{Done, Message, Request, Response};
use crate::root::Root;
use crate::runtime::{Phase, Runtime};

/// A proxy-wasm HTTP plugin with `async` hooks.
///
/// One value of the implementing type exists per HTTP stream, made by [`Plugin::new`] from the
/// configuration's [`Root`]; every hook gets it as `&mut self`. A hook may `.await` calls to
/// other clusters: while it waits the stream is paused, and when it returns the SDK resumes the
/// stream (or sends the local reply the hook asked for) by itself. A hook that returns without
/// waiting continues the stream at once, with no resume at all.
///
/// Hooks run one at a time per stream, in the proxy's order: request headers, request body,
/// response headers, response body, log. An `Err` from a hook becomes a local reply with status
/// [`Plugin::ERROR_STATUS`] (or the one the error names) and an error log line.
///
/// ```
/// use std::rc::Rc;
/// use proxy_async::{Error, Flow, NoConfig, Plugin, Request};
///
/// struct AddHeader;
///
/// impl Plugin for AddHeader {
///     type Root = NoConfig;
///
///     fn new(_root: &Rc<NoConfig>) -> Self {
///         AddHeader
///     }
///
///     async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
///         req.headers_mut().insert("hello", "world");
///         Ok(Flow::Continue)
///     }
/// }
/// ```
// The hooks' futures are polled on the module's one thread, so they need not be `Send`.
#[allow(
    async_fn_in_trait,
    reason = "plugins are single-threaded; hook futures are never sent"
)]
pub trait Plugin: Sized + 'static {
    /// What the plugin keeps per configuration: the configuration itself when it needs
    /// nothing more (every [`PluginConfig`](crate::PluginConfig) is a [`Root`]), or a value
    /// of its own built from it (clients, caches, settings, background tasks).
    type Root: Root;

    /// The status of the local reply sent when a hook returns `Err` (unless the error names one).
    const ERROR_STATUS: u16 = 500;

    /// Creates the per-stream value at the start of an HTTP stream, from the root of the
    /// configuration that serves it.
    fn new(root: &Rc<Self::Root>) -> Self;

    /// The request headers arrived.
    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let _ = req;
        default_hook(Phase::RequestHeaders);
        Ok(Flow::Continue)
    }

    /// Request body data arrived (all of it, when the root's [`Settings`](crate::Settings) buffer it).
    /// Not called for requests without a body.
    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let _ = req;
        default_hook(Phase::RequestBody);
        Ok(Flow::Continue)
    }

    /// The request trailers arrived (they end the request; only requests that have some,
    /// e.g. gRPC). Read and change them with [`trailers`](crate::Message::trailers) and
    /// [`trailers_mut`](crate::Message::trailers_mut).
    async fn on_request_trailers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let _ = req;
        default_hook(Phase::RequestTrailers);
        Ok(Flow::Continue)
    }

    /// The response headers arrived from upstream.
    async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        let _ = resp;
        default_hook(Phase::ResponseHeaders);
        Ok(Flow::Continue)
    }

    /// Response body data arrived (all of it, when the root's [`Settings`](crate::Settings) buffer it).
    async fn on_response_body(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        let _ = resp;
        default_hook(Phase::ResponseBody);
        Ok(Flow::Continue)
    }

    /// The response trailers arrived (gRPC's `grpc-status` is one).
    async fn on_response_trailers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        let _ = resp;
        default_hook(Phase::ResponseTrailers);
        Ok(Flow::Continue)
    }

    /// The stream is complete and about to be logged; request and response headers are
    /// readable. Not called when the stream ended while a hook was still waiting (the client
    /// went away): that hook's future is dropped instead. Anything still pending when the
    /// stream ends right after is dropped, so `on_log` should not wait on calls.
    async fn on_log(&mut self, done: &Done<'_>) {
        let _ = done;
        default_hook(Phase::Log);
    }
}

/// Tells the running plugin instance that its hook for `phase` is the trait's default.
fn default_hook(phase: Phase) {
    if let Some(runtime) = Runtime::current() {
        runtime.note_default_hook(phase);
    }
}

/// What a hook decided.
#[derive(Debug)]
pub enum Flow {
    /// Let the stream go on.
    Continue,
    /// Stop the stream and answer the client with this reply. The upstream never sees the
    /// request (from a request hook), and the stream is never resumed.
    Reply(LocalReply),
}

impl From<LocalReply> for Flow {
    fn from(reply: LocalReply) -> Self {
        Flow::Reply(reply)
    }
}

/// A response the plugin sends to the client itself.
///
/// ```
/// use proxy_async::{Flow, LocalReply};
///
/// let flow: Flow = LocalReply::new(401)
///     .header("www-authenticate", "Bearer")
///     .body("missing credential")
///     .into();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub(crate) status: u16,
    // Kept encoded as the proxy takes them: one buffer for all of them.
    pub(crate) headers: Headers,
    pub(crate) body: ReplyBody,
    pub(crate) details: Cow<'static, str>,
}

impl LocalReply {
    /// A reply with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        LocalReply {
            status,
            headers: Headers::default(),
            body: ReplyBody::EMPTY,
            details: Cow::Borrowed(""),
        }
    }

    /// The reply the SDK sends for a hook's `Err`: the status and its reason phrase, nothing
    /// from the error itself (it may hold internal details; it goes to the log instead).
    pub(crate) fn error(status: u16) -> Self {
        LocalReply::new(status)
            .header("content-type", "text/plain")
            .body(reason_phrase(status))
            .details("plugin_error")
    }

    /// Adds a header. The proxy lower-cases its name, as HTTP/2 wants (Envoy does so for
    /// every header a plugin hands over).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push(name, value.as_ref());
        self
    }

    /// Sets the body: text or bytes, owned or `'static` (a literal is sent from where it is,
    /// with no copy).
    pub fn body(mut self, body: impl Into<ReplyBody>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Sets the response code details the proxy logs (`%RESPONSE_CODE_DETAILS%` in Envoy).
    /// Use a token without spaces, e.g. `auth_denied`.
    pub fn details(mut self, details: impl Into<Cow<'static, str>>) -> Self {
        self.details = details.into();
        self
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }
}

/// The body of a [`LocalReply`]: owned bytes, or bytes that live for the whole program (a
/// literal), which need no allocation. Made from `&'static str`, `&'static [u8]`, `String`,
/// `Vec<u8>` and their `Cow`s.
///
/// ```
/// use proxy_async::ReplyBody;
///
/// let fixed = ReplyBody::from("forbidden");
/// let made = ReplyBody::from(format!("{} left", 3));
/// assert_eq!(fixed.as_bytes(), b"forbidden");
/// assert_eq!(made.as_bytes(), b"3 left");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyBody(Cow<'static, [u8]>);

impl ReplyBody {
    /// No body.
    pub const EMPTY: ReplyBody = ReplyBody(Cow::Borrowed(&[]));

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned (copied only if they were borrowed).
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_owned()
    }
}

impl From<&'static str> for ReplyBody {
    fn from(text: &'static str) -> Self {
        ReplyBody(Cow::Borrowed(text.as_bytes()))
    }
}

impl From<&'static [u8]> for ReplyBody {
    fn from(bytes: &'static [u8]) -> Self {
        ReplyBody(Cow::Borrowed(bytes))
    }
}

impl<const N: usize> From<&'static [u8; N]> for ReplyBody {
    fn from(bytes: &'static [u8; N]) -> Self {
        ReplyBody(Cow::Borrowed(bytes))
    }
}

impl From<String> for ReplyBody {
    fn from(text: String) -> Self {
        ReplyBody(Cow::Owned(text.into_bytes()))
    }
}

impl From<Vec<u8>> for ReplyBody {
    fn from(bytes: Vec<u8>) -> Self {
        ReplyBody(Cow::Owned(bytes))
    }
}

impl From<Cow<'static, str>> for ReplyBody {
    fn from(text: Cow<'static, str>) -> Self {
        match text {
            Cow::Borrowed(text) => text.into(),
            Cow::Owned(text) => text.into(),
        }
    }
}

impl From<Cow<'static, [u8]>> for ReplyBody {
    fn from(bytes: Cow<'static, [u8]>) -> Self {
        ReplyBody(bytes)
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Runs the plugin's hook for `message`'s callback on it (as the request or the response);
/// `on_log` has no decision and continues. Shared by the proxy-wasm driver and the component
/// build.
///
/// Not an `async fn`, and the message is the caller's: each hook's future is then the plugin's
/// own, which keeps only what the hook's state machine holds (an `async fn` would keep its
/// arguments for the future's whole life, rust-lang/rust#62958, and a block owning the message
/// would add its own state and captures to every paused stream).
pub(crate) fn run_hook<'a, P: Plugin>(
    plugin: &'a mut P,
    message: &'a mut Message<'a>,
) -> impl Future<Output = Result<Flow, Error>> + 'a {
    match message.phase() {
        Phase::RequestHeaders => {
            Hook::RequestHeaders(plugin.on_request_headers(Request::of(message)))
        }
        // A body the plugin skips on this stream whose callback came while another hook ran.
        Phase::RequestBody if message.skips_body() => Hook::Skipped,
        Phase::RequestBody => Hook::RequestBody(plugin.on_request_body(Request::of(message))),
        Phase::RequestTrailers => {
            Hook::RequestTrailers(plugin.on_request_trailers(Request::of(message)))
        }
        Phase::ResponseHeaders => {
            Hook::ResponseHeaders(plugin.on_response_headers(Response::of(message)))
        }
        Phase::ResponseBody if message.skips_body() => Hook::Skipped,
        Phase::ResponseBody => Hook::ResponseBody(plugin.on_response_body(Response::of(message))),
        Phase::ResponseTrailers => {
            Hook::ResponseTrailers(plugin.on_response_trailers(Response::of(message)))
        }
        Phase::Log => {
            let done = message.done();
            Hook::Log(async move {
                plugin.on_log(&done).await;
                Ok(Flow::Continue)
            })
        }
    }
}

/// The future of one hook, whichever it is.
#[pin_project::pin_project(project = HookProjection)]
enum Hook<A, B, C, D, E, F, G> {
    RequestHeaders(#[pin] A),
    RequestBody(#[pin] B),
    RequestTrailers(#[pin] C),
    ResponseHeaders(#[pin] D),
    ResponseBody(#[pin] E),
    ResponseTrailers(#[pin] F),
    Log(#[pin] G),
    Skipped,
}

impl<A, B, C, D, E, F, G> Future for Hook<A, B, C, D, E, F, G>
where
    A: Future<Output = Result<Flow, Error>>,
    B: Future<Output = Result<Flow, Error>>,
    C: Future<Output = Result<Flow, Error>>,
    D: Future<Output = Result<Flow, Error>>,
    E: Future<Output = Result<Flow, Error>>,
    F: Future<Output = Result<Flow, Error>>,
    G: Future<Output = Result<Flow, Error>>,
{
    type Output = Result<Flow, Error>;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            HookProjection::RequestHeaders(hook) => hook.poll(cx),
            HookProjection::RequestBody(hook) => hook.poll(cx),
            HookProjection::RequestTrailers(hook) => hook.poll(cx),
            HookProjection::ResponseHeaders(hook) => hook.poll(cx),
            HookProjection::ResponseBody(hook) => hook.poll(cx),
            HookProjection::ResponseTrailers(hook) => hook.poll(cx),
            HookProjection::Log(hook) => hook.poll(cx),
            HookProjection::Skipped => std::task::Poll::Ready(Ok(Flow::Continue)),
        }
    }
}
