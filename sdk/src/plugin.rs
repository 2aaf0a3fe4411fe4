//! The plugin trait and what its hooks return.

use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::config::PluginConfig;
use crate::error::Error;
use crate::message::{Done, Request, Response};
use crate::runtime::{Event, Phase, Runtime, StreamShared};
use crate::stream_task::StreamTask;
use crate::timer::TickFunction;

/// A proxy-wasm HTTP plugin with `async` hooks.
///
/// One value of the implementing type exists per HTTP stream, made by [`Plugin::new`] from the
/// plugin-wide configuration; every hook gets it as `&mut self`. A hook may `.await` calls to
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
///     type Config = NoConfig;
///
///     fn new(_config: &Rc<NoConfig>) -> Self {
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
    /// The plugin configuration, parsed from the JSON the proxy delivers.
    type Config: PluginConfig;

    /// The status of the local reply sent when a hook returns `Err` (unless the error names one).
    const ERROR_STATUS: u16 = 500;

    /// When true, [`on_request_body`](Plugin::on_request_body) runs once, with the whole body,
    /// after the proxy has buffered it (bodies over [`BODY_BUFFER_LIMIT`](Plugin::BODY_BUFFER_LIMIT)
    /// get a 413). When false, it runs once per chunk as the chunks arrive.
    ///
    /// When true, the SDK removes `content-length` from request headers that are followed by a
    /// body, so that the hook may change the body's size (the proxy then frames it itself).
    const BUFFER_REQUEST_BODY: bool = false;

    /// Like [`BUFFER_REQUEST_BODY`](Plugin::BUFFER_REQUEST_BODY), for the response body.
    const BUFFER_RESPONSE_BODY: bool = false;

    /// The most bytes a buffered body may have. A longer request body is refused with a local
    /// `413 Payload Too Large` (details `request_payload_too_large`), a longer response body
    /// with a `500` (details `response_payload_too_large`), as soon as the proxy has buffered
    /// more than this; the body hook does not run. The default matches Envoy's default
    /// per-connection buffer limit (1 MiB), which refuses such bodies the same way when it is
    /// the lower of the two.
    const BODY_BUFFER_LIMIT: usize = 1024 * 1024;

    /// Whether the configuration's `_rules_` are Higress's rule-level configuration: with
    /// [`Rules::Separate`](crate::higress::Rules::Separate) or
    /// [`Rules::Override`](crate::higress::Rules::Override), [`new`](Plugin::new) gets the
    /// configuration of the first rule the request's route, domain or service matches, else
    /// the global one; without a global configuration, a request no rule matches runs no hook
    /// at all. See [`higress`](crate::higress).
    const HIGRESS_RULES: crate::higress::Rules = crate::higress::Rules::Off;

    /// How the plugin's log lines are written: as the hook wrote them, or in Higress's format
    /// `[<plugin name>] [<plugin id>] [<x-request-id>] <message>` (the id from the
    /// configuration's `_plugin_id_`, `nil` when absent or outside a request), which Higress's
    /// log tooling and its operators expect. See [`LogFormat`](crate::higress::LogFormat).
    const LOG_FORMAT: crate::higress::LogFormat = crate::higress::LogFormat::Plain;

    /// The period of the root context's tick, which drives [`sleep`](crate::sleep),
    /// [`timeout`](crate::timeout) and [`tick_functions`](Plugin::tick_functions). A timer ends
    /// on the first tick at or after its deadline: late by less than this, never early. The
    /// tick starts with the first timer and then runs while the plugin lives (one callback per
    /// period per worker). Higress's Go SDK ticks every 100 ms too.
    const TICK_PERIOD: Duration = Duration::from_millis(100);

    /// Functions to run periodically on the root context, outside any request (Higress's
    /// `RegisterTickFunc`); asked once per (re)configuration. None by default.
    fn tick_functions(config: &Rc<Self::Config>) -> Vec<TickFunction> {
        let _ = config;
        Vec::new()
    }

    /// Tasks to run on the root context, outside any request, while this configuration is in
    /// force (refreshing a key set, warming a cache): started right after the configuration
    /// is accepted, dropped when the plugin is reconfigured or stops. Asked once per
    /// (re)configuration, for each configuration it holds (Higress rules included). None by
    /// default. See [`BackgroundTask`](crate::BackgroundTask).
    ///
    /// The component build (wasm32-wasip2) has no root context to run them on: there they are
    /// not started, and a warning says so at configuration.
    fn background_tasks(config: &Rc<Self::Config>) -> Vec<crate::BackgroundTask> {
        let _ = config;
        Vec::new()
    }

    /// Creates the per-stream value at the start of an HTTP stream.
    fn new(config: &Rc<Self::Config>) -> Self;

    /// The request headers arrived.
    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let _ = req;
        default_hook(Phase::RequestHeaders);
        Ok(Flow::Continue)
    }

    /// Request body data arrived (all of it, when [`BUFFER_REQUEST_BODY`](Plugin::BUFFER_REQUEST_BODY)).
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

    /// Response body data arrived (all of it, when [`BUFFER_RESPONSE_BODY`](Plugin::BUFFER_RESPONSE_BODY)).
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
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
    pub(crate) details: String,
}

impl LocalReply {
    /// A reply with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        LocalReply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            details: String::new(),
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
        self.headers
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
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
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
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

/// The task of one stream: waits for an event, runs the hook, records the outcome; ends after
/// `on_log`. The plugin value lives inside it, so dropping the task drops the stream's state.
pub(crate) async fn stream_task<P: Plugin>(mut plugin: P, task: Weak<dyn StreamTask>) {
    // Upgraded at the first poll, when the task exists: the future then holds its own task
    // until the runtime stops it (see `stream_task`).
    let Some(task) = task.upgrade() else {
        return;
    };
    let shared = task.shared();
    loop {
        let event = shared.next_event().await;
        let outcome = run_hook(&mut plugin, shared, event).await;
        shared.finish(outcome);
        if event.phase == Phase::Log {
            return;
        }
    }
}

/// Runs the plugin's hook for `event` on the stream's request or response; `on_log` has no
/// decision and continues. Shared by the proxy-wasm driver and the component build.
pub(crate) async fn run_hook<P: Plugin>(
    plugin: &mut P,
    shared: &StreamShared,
    event: Event,
) -> Result<Flow, Error> {
    match event.phase {
        Phase::RequestHeaders => {
            plugin
                .on_request_headers(&mut Request::new(shared, event))
                .await
        }
        Phase::RequestBody => {
            plugin
                .on_request_body(&mut Request::new(shared, event))
                .await
        }
        Phase::RequestTrailers => {
            plugin
                .on_request_trailers(&mut Request::new(shared, event))
                .await
        }
        Phase::ResponseTrailers => {
            plugin
                .on_response_trailers(&mut Response::new(shared, event))
                .await
        }
        Phase::ResponseHeaders => {
            plugin
                .on_response_headers(&mut Response::new(shared, event))
                .await
        }
        Phase::ResponseBody => {
            plugin
                .on_response_body(&mut Response::new(shared, event))
                .await
        }
        Phase::Log => {
            plugin.on_log(&Done::new(shared)).await;
            Ok(Flow::Continue)
        }
    }
}
