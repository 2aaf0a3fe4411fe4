//! The middleware as the plugin's proxy: each request's messages, and the hostcalls on them
//! (headers, bodies, calls through `wasi:http/client` answered as Envoy's router answers,
//! sleeps on the monotonic clock, the instance's shared data and metrics).

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use futures::future::{Either, select};

use super::bindings::wasi::clocks::monotonic_clock;
use super::bindings::wasi::http::client;
use super::bindings::wasi::http::types::{ErrorCode, Response, Scheme};
use super::bindings::wit_future;
use super::http::{CHUNK, forbidden, method_of, outgoing};
use crate::headers::Headers;
use crate::host::{
    AwaitedCall, AwaitedSleep, BufferType, Direction, Host, HostError, HostStatus, LogLevel,
    MapType, MetricType, Pairs, pseudo_header, unimplemented,
};
use crate::runtime::ReplyParts;
use proxy_async_abi::envoy_replies::{RESET_BEFORE_HEADERS, TIMEOUT_BODY, router_reply};
use proxy_async_abi::hostcalls::{buffer_window, edit_buffer};

/// The messages of one request, as the plugin's hostcalls read and change them.
#[derive(Default)]
pub(super) struct Exchange {
    pub(super) request_headers: RefCell<Pairs>,
    pub(super) request_trailers: RefCell<Pairs>,
    pub(super) response_headers: RefCell<Pairs>,
    pub(super) response_trailers: RefCell<Pairs>,
    /// The request body the running hook sees: its chunk, or the whole buffered body.
    pub(super) request_body: RefCell<Vec<u8>>,
    pub(super) response_body: RefCell<Vec<u8>>,
}

impl Exchange {
    pub(super) fn map(&self, map: MapType) -> Option<&RefCell<Pairs>> {
        match map {
            MapType::HttpRequestHeaders => Some(&self.request_headers),
            MapType::HttpRequestTrailers => Some(&self.request_trailers),
            MapType::HttpResponseHeaders => Some(&self.response_headers),
            MapType::HttpResponseTrailers => Some(&self.response_trailers),
            _ => None,
        }
    }

    pub(super) fn body(&self, buffer: BufferType) -> Option<&RefCell<Vec<u8>>> {
        match buffer {
            BufferType::HttpRequestBody => Some(&self.request_body),
            BufferType::HttpResponseBody => Some(&self.response_body),
            _ => None,
        }
    }

    pub(super) fn header(&self, map: MapType, name: &str) -> Option<Vec<u8>> {
        let pairs = self.map(map)?.borrow();
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }
}

/// What one instance of the middleware keeps for all its requests.
#[derive(Default)]
pub(super) struct InstanceState {
    /// Cluster name → (scheme, authority), from `PROXY_ASYNC_CLUSTERS`.
    pub(super) clusters: HashMap<String, (Scheme, String)>,
    pub(super) shared_data: HashMap<String, (Vec<u8>, u32)>,
    pub(super) metrics: Vec<(MetricType, String, u64)>,
    pub(super) log_level: Option<LogLevel>,
}

thread_local! {
    pub(super) static STATE: RefCell<InstanceState> = RefCell::new(InstanceState::default());
    // The request whose hook runs: the plugin-level host's stream operations act on it.
    pub(super) static CURRENT: RefCell<Option<Rc<Exchange>>> = const { RefCell::new(None) };
}

/// The hostcalls of the middleware, behind the SDK's [`Host`] trait: `exchange` is the
/// request a stream's messages act on (`None` for the plugin-level host, which acts on the
/// request whose hook runs).
pub(super) struct MiddlewareHost {
    pub(super) exchange: Option<Rc<Exchange>>,
}

pub(super) fn bad_argument(call: &'static str) -> HostError {
    HostError {
        call,
        status: HostStatus::BadArgument,
    }
}

impl MiddlewareHost {
    pub(super) fn exchange(&self, call: &'static str) -> Result<Rc<Exchange>, HostError> {
        self.exchange
            .clone()
            .or_else(|| CURRENT.with(|current| current.borrow().clone()))
            .ok_or_else(|| unimplemented(call))
    }

    pub(super) fn with_map<R>(
        &self,
        call: &'static str,
        map: MapType,
        f: impl FnOnce(&mut Pairs) -> R,
    ) -> Result<R, HostError> {
        let exchange = self.exchange(call)?;
        let pairs = exchange.map(map).ok_or_else(|| unimplemented(call))?;
        Ok(f(&mut pairs.borrow_mut()))
    }
}

impl Host for MiddlewareHost {
    fn log(&self, level: LogLevel, message: &str) {
        eprintln!("proxy-async {}: {message}", level.name());
    }

    fn log_level(&self) -> LogLevel {
        STATE.with(|state| state.borrow().log_level.unwrap_or(LogLevel::Info))
    }

    fn set_effective_context(&self, _context_id: u32) -> Result<(), HostError> {
        Ok(())
    }

    fn get_map(&self, map: MapType) -> Result<Pairs, HostError> {
        self.with_map("get-headers", map, |pairs| pairs.clone())
    }

    fn get_map_value(&self, map: MapType, name: &str) -> Result<Option<Vec<u8>>, HostError> {
        let exchange = self.exchange("get-header")?;
        if exchange.map(map).is_none() {
            return Err(unimplemented("get-header"));
        }
        Ok(exchange.header(map, name))
    }

    fn set_map(&self, map: MapType, pairs: &[(&str, &[u8])]) -> Result<(), HostError> {
        self.with_map("set-headers", map, |current| {
            *current = pairs
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_vec()))
                .collect();
        })
    }

    fn add_map_value(&self, map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.with_map("add-header", map, |pairs| {
            pairs.push((name.to_ascii_lowercase(), value.to_vec()));
        })
    }

    fn replace_map_value(&self, map: MapType, name: &str, value: &[u8]) -> Result<(), HostError> {
        let name = name.to_ascii_lowercase();
        self.with_map("replace-header", map, |pairs| {
            match pairs.iter().position(|(key, _)| *key == name) {
                Some(first) => {
                    pairs[first].1 = value.to_vec();
                    let mut index = 0;
                    pairs.retain(|(key, _)| {
                        index += 1;
                        index - 1 == first || *key != name
                    });
                }
                None => pairs.push((name, value.to_vec())),
            }
        })
    }

    fn remove_map_value(&self, map: MapType, name: &str) -> Result<(), HostError> {
        let name = name.to_ascii_lowercase();
        self.with_map("remove-header", map, |pairs| {
            pairs.retain(|(key, _)| *key != name);
        })
    }

    fn get_buffer(
        &self,
        buffer: BufferType,
        start: usize,
        max: usize,
    ) -> Result<Vec<u8>, HostError> {
        let exchange = self.exchange("get-body")?;
        let body = exchange
            .body(buffer)
            .ok_or_else(|| unimplemented("get-body"))?;
        let body = body.borrow();
        Ok(body
            .get(buffer_window(body.len(), start, max))
            .unwrap_or_default()
            .to_vec())
    }

    fn set_buffer(
        &self,
        buffer: BufferType,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), HostError> {
        let exchange = self.exchange("set-body")?;
        let body = exchange
            .body(buffer)
            .ok_or_else(|| unimplemented("set-body"))?;
        edit_buffer(&mut body.borrow_mut(), start, size, data);
        Ok(())
    }

    fn http_call(
        &self,
        _cluster: &str,
        _headers: &[(&str, &str)],
        _body: &[u8],
        _timeout: Duration,
    ) -> Result<u32, HostError> {
        // Calls go through `send_awaited`.
        Err(unimplemented("wasi:http/client.send"))
    }

    fn send_awaited(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<AwaitedCall> {
        let destination = STATE.with(|state| state.borrow().clusters.get(cluster).cloned());
        let Some((scheme, authority)) = destination else {
            log::warn!(
                "a call to cluster `{cluster}` refused: PROXY_ASYNC_CLUSTERS does not map it to a destination"
            );
            return Some(Box::pin(std::future::ready(Err(bad_argument(
                "wasi:http/client.send",
            )))));
        };
        let (method, path) = (
            pseudo_header(headers, ":method").to_string(),
            pseudo_header(headers, ":path").to_string(),
        );
        let fields: Vec<(String, Vec<u8>)> = headers
            .iter()
            .filter(|(name, _)| !forbidden(name))
            .map(|(name, value)| ((*name).to_string(), value.as_bytes().to_vec()))
            .collect();
        let body = body.to_vec();
        Some(Box::pin(async move {
            let started = now_millis();
            let request = match outgoing(&fields, method_of(&method), &path, scheme, &authority) {
                Ok(request) => request,
                Err(reason) => {
                    log::warn!(
                        "a call to cluster `{cluster_name}` refused: {reason}",
                        cluster_name = authority
                    );
                    return Err(bad_argument("wasi:http/client.send"));
                }
            };
            let (request, _sent) = request.with_body(body);
            let send = pin!(async move { answer(client::send(request).await).await });
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            let expired = pin!(monotonic_clock::wait_for(nanos));
            Ok(Some(match select(send, expired).await {
                Either::Left((Ok(mut parts), _)) => {
                    // Envoy's router marks every answer of an upstream; the client tells
                    // them from the router's own answers by it.
                    let elapsed = now_millis().saturating_sub(started);
                    parts.headers = with_header(
                        &parts.headers,
                        "x-envoy-upstream-service-time",
                        elapsed.to_string().as_bytes(),
                    );
                    parts
                }
                // The SDK's client reads a call failure from the answer Envoy's router makes
                // up, as in Envoy.
                Either::Left((Err(code), _)) => router_answer(503, unreachable_reason(&code)),
                Either::Right(((), _)) => router_answer(504, TIMEOUT_BODY.to_string()),
            }))
        }))
    }

    fn continue_stream(&self, _direction: Direction) -> Result<(), HostError> {
        // The middleware goes on when the hook returns.
        Err(unimplemented("continue-stream"))
    }

    fn sleep_awaited(&self, duration: Duration) -> Option<AwaitedSleep> {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Some(Box::pin(monotonic_clock::wait_for(nanos)))
    }

    fn now_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            })
    }

    fn set_tick_period(&self, _period: Duration) -> Result<(), HostError> {
        // No tick: sleeps are the clock's, tick functions run as requests arrive.
        Ok(())
    }

    fn send_local_response(
        &self,
        _status: u16,
        _details: &str,
        _body: &[u8],
        _headers: &Headers,
    ) -> Result<(), HostError> {
        // A reply is the hook's result.
        Err(unimplemented("send-local-response"))
    }

    fn get_shared_data(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostError> {
        Ok(STATE.with(|state| state.borrow().shared_data.get(key).cloned()))
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            let current = state
                .shared_data
                .get(key)
                .map_or(0, |(_, version)| *version);
            if cas != 0 && cas != current {
                return Err(HostError {
                    call: "set-shared-data",
                    status: HostStatus::CasMismatch,
                });
            }
            let version = current.wrapping_add(1).max(1);
            state
                .shared_data
                .insert(key.to_string(), (value.to_vec(), version));
            Ok(())
        })
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, HostError> {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            let found = state
                .metrics
                .iter()
                .position(|(known, named, _)| *known == kind && named == name);
            let index = found.unwrap_or_else(|| {
                state.metrics.push((kind, name.to_string(), 0));
                state.metrics.len() - 1
            });
            u32::try_from(index).map_err(|_| bad_argument("define-metric"))
        })
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostError> {
        with_metric(id, |value| *value = value.saturating_add_signed(delta))
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostError> {
        with_metric(id, |current| *current = value)
    }

    fn get_metric(&self, id: u32) -> Result<u64, HostError> {
        with_metric(id, |value| *value)
    }
}

pub(super) fn with_metric<R>(id: u32, f: impl FnOnce(&mut u64) -> R) -> Result<R, HostError> {
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        let index = usize::try_from(id).map_err(|_| bad_argument("metric"))?;
        let (_, _, value) = state.metrics.get_mut(index).ok_or(bad_argument("metric"))?;
        Ok(f(value))
    })
}

pub(super) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// `headers` with `name: value` added.
pub(super) fn with_header(headers: &Headers, name: &str, value: &[u8]) -> Headers {
    let mut pairs = headers.to_vec();
    pairs.push((name.to_string(), value.to_vec()));
    Headers::from_pairs(&pairs)
}

/// The answer Envoy's router makes up when a call fails: plain text, no upstream's mark.
pub(super) fn router_answer(status: u16, body: String) -> ReplyParts {
    let (headers, body) = router_reply(status, body);
    ReplyParts {
        headers: Headers::from_pairs(&headers),
        body,
        trailers: None,
    }
}

/// Envoy's words for a call whose upstream could not be reached, or broke off.
pub(super) fn unreachable_reason(code: &ErrorCode) -> String {
    let reason = match code {
        ErrorCode::ConnectionRefused
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::ConnectionTimeout
        | ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_) => "remote connection failure".to_string(),
        ErrorCode::ConnectionTerminated | ErrorCode::HttpResponseIncomplete => {
            "connection termination".to_string()
        }
        other => format!("{other:?}"),
    };
    format!("{RESET_BEFORE_HEADERS}{reason}")
}

/// A call's whole response, read off its streams.
pub(super) async fn answer(response: Result<Response, ErrorCode>) -> Result<ReplyParts, ErrorCode> {
    let response = response?;
    let mut pairs: Pairs = vec![(
        ":status".to_string(),
        response.get_status_code().to_string().into_bytes(),
    )];
    pairs.extend(response.get_headers().copy_all());
    let (_done, done_reader) = wit_future::new(|| Ok(()));
    let (mut contents, trailers) = Response::consume_body(response, done_reader);
    let mut body = Vec::new();
    loop {
        let (result, chunk) = contents.read(Vec::with_capacity(CHUNK)).await;
        body.extend_from_slice(&chunk);
        if !matches!(result, wit_bindgen::StreamResult::Complete(_)) {
            break;
        }
    }
    let trailers = trailers.await?.map(|fields| fields.copy_all());
    Ok(ReplyParts {
        headers: Headers::from_pairs(&pairs),
        body,
        trailers: trailers
            .map(|pairs| Headers::from_pairs(&pairs))
            .and_then(Headers::boxed_unless_empty),
    })
}
