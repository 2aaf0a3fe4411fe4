//! The request and response a hook works on: headers and body, read and changed in place.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::headers::Headers;
use crate::host::{BufferType, HostError, MapType};
use crate::runtime::{Event, Phase, StreamShared};
use proxy_async_abi::Direction;
// A proxy-wasm module's host is a concrete type: its hostcalls need the trait in scope.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
use crate::host::Host as _;

/// A header value: bytes, since HTTP allows values that are not UTF-8.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HeaderValue(Vec<u8>);

impl HeaderValue {
    /// The value as text, if it is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Takes the raw bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl From<Vec<u8>> for HeaderValue {
    fn from(bytes: Vec<u8>) -> Self {
        HeaderValue(bytes)
    }
}

impl AsRef<[u8]> for HeaderValue {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for HeaderValue {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for HeaderValue {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Display for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

/// The side of the stream a hook is working on: headers and body of the request (in request
/// hooks) or of the response (in response hooks). [`Request`] and [`Response`] dereference to it.
///
/// Reads and writes go straight to the proxy. A write the proxy refuses (the stream is gone,
/// or the phase does not allow it) is logged as a warning; the hook goes on. Header names are
/// case-insensitive: the proxy lower-cases every name a hostcall passes (Envoy's header maps do,
/// and so does every host of this SDK), so names go to it as written, at no cost.
pub struct Message<'a> {
    stream: &'a StreamShared,
    // The callback's `Event`, field by field: rustc packs them in 8 bytes on wasm32, where the
    // `Event` itself takes 12 (`repr(C)`, phase first, so that a hook start writes it in three
    // stores) in every paused hook.
    size: usize,
    phase: Phase,
    end_of_stream: bool,
}

impl<'a> Message<'a> {
    /// The plugin leaves this stream alone from now on: later callbacks continue at once,
    /// bodies are not held, no hook runs again (`on_log` included).
    pub(crate) fn pass_stream(&self) {
        self.stream.pass();
    }

    /// The plugin skips `direction`'s body on this stream from now on: no body hook runs for
    /// it and nothing of it is buffered (see `StreamGate::skip_body`).
    pub(crate) fn skip_body_of(&self, direction: Direction) {
        self.stream.with_gate(|gate| gate.skip_body(direction));
    }

    /// The most bytes `direction`'s buffered body may have on this stream.
    pub(crate) fn set_body_buffer_limit_of(&self, direction: Direction, bytes: usize) {
        warn_host_buffers("a stream's own body buffer limit");
        self.stream
            .with_gate(|gate| gate.set_body_buffer_limit(direction, bytes));
    }

    /// This stream buffers `direction`'s body (see `StreamGate::buffer_body`).
    pub(crate) fn buffer_body_of(&self, direction: Direction) {
        warn_host_buffers("buffering one stream's body");
        self.stream.with_gate(|gate| gate.buffer_body(direction));
    }

    /// Whether the plugin skips the body of this message's direction.
    pub(crate) fn skips_body(&self) -> bool {
        let direction = self.phase.direction();
        self.stream.with_gate(|gate| gate.skips_body(direction))
    }

    /// The callback this message is of.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// What `on_log` reads of this message's stream.
    pub(crate) fn done(&self) -> Done<'a> {
        Done::new(self.stream)
    }

    /// The header map of this hook's message.
    fn map(&self) -> MapType {
        self.stream.map(self.phase)
    }

    /// The trailer map of this hook's message.
    fn trailer_map(&self) -> MapType {
        self.stream.trailer_map(self.phase)
    }

    /// The body buffer of this hook's message.
    fn buffer(&self) -> BufferType {
        self.stream.buffer(self.phase)
    }

    /// The message of the callback `event` on `stream`.
    pub(crate) fn new(stream: &'a StreamShared, event: Event) -> Self {
        Message {
            stream,
            size: event.size,
            phase: event.phase,
            end_of_stream: event.end_of_stream,
        }
    }

    /// One trailer (the first, if repeated). The proxy has trailers from the trailers hook
    /// on ([`Plugin::on_request_trailers`](crate::Plugin::on_request_trailers)); before,
    /// there are none.
    pub fn trailer(&self, name: &str) -> Option<HeaderValue> {
        match self.stream.host.get_map_value(self.trailer_map(), name) {
            Ok(value) => value.map(HeaderValue),
            Err(error) => {
                log::debug!("reading trailer {name}: {error}");
                None
            }
        }
    }

    /// All trailers, in order; empty before the trailers hook.
    pub fn trailers(&self) -> Headers {
        self.stream
            .host
            .get_headers(self.trailer_map())
            .unwrap_or_else(|error| {
                log::debug!("reading trailers: {error}");
                Headers::default()
            })
    }

    /// Changes the trailers (in the trailers hook: the proxy cannot add trailers to a message
    /// that has none).
    pub fn trailers_mut(&mut self) -> HeadersMut<'_> {
        HeadersMut {
            stream: self.stream,
            map: self.trailer_map(),
        }
    }

    /// One header (the first, if repeated); names are case-insensitive.
    pub fn header(&self, name: &str) -> Option<HeaderValue> {
        match self.stream.host.get_map_value(self.map(), name) {
            Ok(value) => value.map(HeaderValue),
            Err(error) => {
                log::debug!("reading header {name}: {error}");
                None
            }
        }
    }

    /// One header as text; `None` when it is missing or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .and_then(|value| String::from_utf8(value.into_bytes()).ok())
    }

    /// All headers, in order, pseudo-headers (`:path`, `:status`, ...) included: one read of
    /// the proxy's map, kept as one buffer (see [`Headers`]).
    pub fn headers(&self) -> Headers {
        self.stream
            .host
            .get_headers(self.map())
            .unwrap_or_else(|error| {
                log::debug!("reading headers: {error}");
                Headers::default()
            })
    }

    /// Changes the headers.
    pub fn headers_mut(&mut self) -> HeadersMut<'_> {
        HeadersMut {
            stream: self.stream,
            map: self.map(),
        }
    }

    /// Whether this is the last callback of this direction (no body follows headers, or this is
    /// the last body chunk).
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// The body the proxy holds now: in a body hook, the chunk (or the whole body when
    /// buffering); empty in a headers hook.
    pub fn body(&self) -> Vec<u8> {
        if !self.in_body_phase() || self.size == 0 {
            return Vec::new();
        }
        self.stream
            .host
            .get_buffer(self.buffer(), self.chunk_offset(), self.size)
            .unwrap_or_else(|error| {
                log::warn!("reading the body: {error}");
                Vec::new()
            })
    }

    /// The body as text; `None` when it is not UTF-8.
    pub fn body_str(&self) -> Option<String> {
        String::from_utf8(self.body()).ok()
    }

    /// Replaces the body (in a body hook: the chunk, or the whole body when buffering).
    pub fn set_body(&mut self, body: impl AsRef<[u8]>) {
        let len = self.current_body_len();
        let offset = self.chunk_offset();
        if self.write_body(offset, len, body.as_ref(), "replacing") {
            self.resize(body.as_ref().len());
        }
    }

    /// Appends to the body (in a body hook).
    pub fn append_body(&mut self, data: impl AsRef<[u8]>) {
        let len = self.current_body_len();
        let offset = self.chunk_offset();
        if self.write_body(offset + len, 0, data.as_ref(), "appending to") {
            self.resize(len + data.as_ref().len());
        }
    }

    /// Prepends to the body (in a body hook).
    pub fn prepend_body(&mut self, data: impl AsRef<[u8]>) {
        let len = self.current_body_len();
        let offset = self.chunk_offset();
        if self.write_body(offset, 0, data.as_ref(), "prepending to") {
            self.resize(len + data.as_ref().len());
        }
    }

    /// Where this hook's chunk starts in the proxy's body buffer: after the chunks the proxy
    /// still holds whose hooks already ran (see `BodyWindow`).
    fn chunk_offset(&self) -> usize {
        if self.in_body_phase() {
            self.stream.window(self.phase).offset
        } else {
            0
        }
    }

    fn resize(&mut self, len: usize) {
        self.size = len;
        self.stream.resize_chunk(self.phase, len);
    }

    fn in_body_phase(&self) -> bool {
        matches!(self.phase, Phase::RequestBody | Phase::ResponseBody)
    }

    fn current_body_len(&self) -> usize {
        if self.in_body_phase() { self.size } else { 0 }
    }

    /// Writes to the body; whether the proxy took it.
    fn write_body(&self, start: usize, size: usize, data: &[u8], what: &str) -> bool {
        if !self.in_body_phase() {
            log::warn!("{what} the body outside a body hook is not possible; ignored");
            return false;
        }
        match self
            .stream
            .host
            .set_buffer(self.buffer(), start, size, data)
        {
            Ok(()) => true,
            Err(error) => {
                log::warn!("{what} the body: {error}");
                false
            }
        }
    }
}

/// Changes a header map in place.
///
/// Each change has two forms: `insert`, `append`, ... log a warning when the proxy refuses the
/// change and go on (the stream is gone, or the phase does not allow it), and chain;
/// `try_insert`, `try_append`, ... return the refusal, for plugins that must fail closed when a
/// header could not be set or removed (an auth plugin stripping identity headers, say).
pub struct HeadersMut<'a> {
    stream: &'a StreamShared,
    map: MapType,
}

impl HeadersMut<'_> {
    /// Sets a header, replacing every value it had.
    pub fn insert(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let result = self.try_insert(name, value);
        warn_refused(result, "setting header", name);
        self
    }

    /// Adds a value to a header, keeping the values it has.
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        let result = self.try_append(name, value);
        warn_refused(result, "adding header", name);
        self
    }

    /// Removes a header (every value); nothing happens if it is missing.
    pub fn remove(&mut self, name: &str) -> &mut Self {
        let result = self.try_remove(name);
        warn_refused(result, "removing header", name);
        self
    }

    /// Removes every header whose name starts with `prefix` (case-insensitive).
    pub fn remove_prefixed(&mut self, prefix: &str) -> &mut Self {
        let result = self.try_remove_prefixed(prefix);
        warn_refused(result, "removing headers", &format!("{prefix}*"));
        self
    }

    /// Replaces all headers with `pairs`.
    pub fn set_all<V: AsRef<[u8]>>(&mut self, pairs: &[(&str, V)]) -> &mut Self {
        let result = self.try_set_all(pairs);
        warn_refused(result, "replacing", "all headers");
        self
    }

    /// [`insert`](HeadersMut::insert), returning the proxy's refusal.
    pub fn try_insert(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), HostError> {
        self.stream
            .host
            .replace_map_value(self.map, name, value.as_ref())
    }

    /// [`append`](HeadersMut::append), returning the proxy's refusal.
    pub fn try_append(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), HostError> {
        self.stream
            .host
            .add_map_value(self.map, name, value.as_ref())
    }

    /// [`remove`](HeadersMut::remove), returning the proxy's refusal.
    pub fn try_remove(&mut self, name: &str) -> Result<(), HostError> {
        self.stream.host.remove_map_value(self.map, name)
    }

    /// [`remove_prefixed`](HeadersMut::remove_prefixed), returning the proxy's refusal (of
    /// reading the headers, or of removing one of them).
    pub fn try_remove_prefixed(&mut self, prefix: &str) -> Result<(), HostError> {
        let prefix = prefix.to_ascii_lowercase();
        let names: Vec<String> = self
            .stream
            .host
            .get_map(self.map)?
            .into_iter()
            .map(|(name, _)| name.to_ascii_lowercase())
            .filter(|name| name.starts_with(&prefix))
            .collect();
        for name in names {
            self.try_remove(&name)?;
        }
        Ok(())
    }

    /// [`set_all`](HeadersMut::set_all), returning the proxy's refusal.
    pub fn try_set_all<V: AsRef<[u8]>>(&mut self, pairs: &[(&str, V)]) -> Result<(), HostError> {
        let pairs: Vec<(&str, &[u8])> = pairs
            .iter()
            .map(|(name, value)| (*name, value.as_ref()))
            .collect();
        self.stream.host.set_map(self.map, &pairs)
    }
}

/// In the component build the host buffers bodies, by the root's settings alone: what a
/// stream asks of buffering differently is not carried out there, and says so.
#[inline]
fn warn_host_buffers(what: &str) {
    if cfg!(all(target_arch = "wasm32", target_env = "p2")) {
        log::warn!(
            "{what} is not supported in the component build (the host buffers by the root's settings); ignored"
        );
    }
}

#[inline]
fn warn_refused(result: Result<(), HostError>, what: &str, name: &str) {
    if let Err(error) = result {
        warn_refusal(&error, what, name);
    }
}

#[cold]
fn warn_refusal(error: &HostError, what: &str, name: &str) {
    log::warn!("{what} {name}: {error}");
}

/// The request, in request hooks.
// `repr(transparent)`: a hook's request is its stream's message, seen as a request (`of`).
#[repr(transparent)]
pub struct Request<'a> {
    message: Message<'a>,
}

impl<'a> Request<'a> {
    /// `message`, as a request.
    pub(crate) fn of<'b>(message: &'b mut Message<'a>) -> &'b mut Request<'a> {
        // SAFETY: `Request` is a `repr(transparent)` wrapper of `Message`, so both have one
        // layout; the reference keeps `message`'s borrow and lifetimes.
        unsafe { &mut *std::ptr::from_mut(message).cast::<Request<'a>>() }
    }

    /// `:method`; `None` when missing or not a valid method token.
    pub fn method(&self) -> Option<http::Method> {
        http::Method::from_bytes(self.message.header(":method")?.as_bytes()).ok()
    }

    /// `:path`, with the query string.
    pub fn path(&self) -> Option<String> {
        self.message.header_str(":path")
    }

    /// `:authority` (the host).
    pub fn authority(&self) -> Option<String> {
        self.message.header_str(":authority")
    }

    /// The request body passes through this stream unseen: `on_request_body` does not run for
    /// it and nothing of it is buffered, so a buffering plugin does not hold an upload or a
    /// gRPC stream, nor refuse it past its buffer limit (Higress's `DontReadRequestBody`).
    /// Call it from `on_request_headers`; a `content-length` is then kept.
    pub fn skip_body(&mut self) {
        self.message.skip_body_of(Direction::Request);
    }

    /// This stream's request body is buffered although the root streams bodies
    /// ([`Settings::buffer_request_body`](crate::Settings::buffer_request_body)):
    /// `on_request_body` runs once, on the whole body (Higress's `BufferRequestBody`). Call it
    /// from `on_request_headers`; the `content-length` then goes, as for any buffered body.
    pub fn buffer_body(&mut self) {
        self.message.buffer_body_of(Direction::Request);
    }

    /// The most bytes this stream's buffered request body may have, instead of
    /// [`Settings::body_buffer_limit`](crate::Settings::body_buffer_limit) (a larger upload on
    /// one route; past it, 413). Call it from `on_request_headers`.
    pub fn set_body_buffer_limit(&mut self, bytes: usize) {
        self.message
            .set_body_buffer_limit_of(Direction::Request, bytes);
    }
}

impl<'a> Deref for Request<'a> {
    type Target = Message<'a>;

    fn deref(&self) -> &Message<'a> {
        &self.message
    }
}

impl DerefMut for Request<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.message
    }
}

/// The response, in response hooks.
// `repr(transparent)`: a hook's response is its stream's message, seen as a response (`of`).
#[repr(transparent)]
pub struct Response<'a> {
    message: Message<'a>,
}

impl<'a> Response<'a> {
    /// `message`, as a response.
    pub(crate) fn of<'b>(message: &'b mut Message<'a>) -> &'b mut Response<'a> {
        // SAFETY: `Response` is a `repr(transparent)` wrapper of `Message`, so both have one
        // layout; the reference keeps `message`'s borrow and lifetimes.
        unsafe { &mut *std::ptr::from_mut(message).cast::<Response<'a>>() }
    }

    /// `:status`, if present and a valid status (three digits, 100 to 999).
    pub fn status(&self) -> Option<http::StatusCode> {
        crate::client::parse_status(self.message.header(":status")?.as_bytes())
    }

    /// The response body passes through this stream unseen: `on_response_body` does not run
    /// for it and nothing of it is buffered (Higress's `DontReadResponseBody`). Call it from
    /// `on_response_headers`; a `content-length` is then kept.
    pub fn skip_body(&mut self) {
        self.message.skip_body_of(Direction::Response);
    }

    /// This stream's response body is buffered although the root streams bodies:
    /// `on_response_body` runs once, on the whole body (Higress's `BufferResponseBody`). Call it
    /// from `on_response_headers`.
    pub fn buffer_body(&mut self) {
        self.message.buffer_body_of(Direction::Response);
    }

    /// The most bytes this stream's buffered response body may have, instead of
    /// [`Settings::body_buffer_limit`](crate::Settings::body_buffer_limit) (past it, 500).
    /// Call it from `on_response_headers`.
    pub fn set_body_buffer_limit(&mut self, bytes: usize) {
        self.message
            .set_body_buffer_limit_of(Direction::Response, bytes);
    }
}

impl<'a> Deref for Response<'a> {
    type Target = Message<'a>;

    fn deref(&self) -> &Message<'a> {
        &self.message
    }
}

impl DerefMut for Response<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.message
    }
}

/// A finished stream, in `on_log`: its request and response headers, read-only, and what an
/// access log needs, from the proxy's properties: [`response_code`](Done::response_code),
/// [`response_code_details`](Done::response_code_details), [`duration`](Done::duration),
/// [`request_total_size`](Done::request_total_size),
/// [`response_total_size`](Done::response_total_size),
/// [`upstream_address`](Done::upstream_address), any [`property`](Done::property).
pub struct Done<'a> {
    pub(crate) stream: &'a StreamShared,
}

impl<'a> Done<'a> {
    pub(crate) fn new(stream: &'a StreamShared) -> Self {
        Done { stream }
    }

    /// A request header.
    pub fn request_header(&self, name: &str) -> Option<HeaderValue> {
        self.read(MapType::HttpRequestHeaders, name)
    }

    /// A response header (`:status` included).
    pub fn response_header(&self, name: &str) -> Option<HeaderValue> {
        self.read(MapType::HttpResponseHeaders, name)
    }

    /// A request trailer, if the request had trailers.
    pub fn request_trailer(&self, name: &str) -> Option<HeaderValue> {
        self.read(MapType::HttpRequestTrailers, name)
    }

    /// A response trailer (e.g. `grpc-status`), if the response had trailers.
    pub fn response_trailer(&self, name: &str) -> Option<HeaderValue> {
        self.read(MapType::HttpResponseTrailers, name)
    }

    fn read(&self, map: MapType, name: &str) -> Option<HeaderValue> {
        if self.stream.is_ended() {
            return None;
        }
        self.stream
            .host
            .get_map_value(map, name)
            .ok()
            .flatten()
            .map(HeaderValue)
    }
}
