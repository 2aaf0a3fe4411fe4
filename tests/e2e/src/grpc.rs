//! A gRPC server for the tests: HTTP/2 in cleartext with prior knowledge (what Envoy speaks to
//! a cluster with `http2_protocol_options`), on its own thread. Each call's path, metadata and
//! messages (read whole, to the client's half-close) go to a handler that chooses the answer:
//! messages, a status, and how long to wait first. Calls the client cancels while the handler
//! waits are counted.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use tokio::sync::oneshot;

/// A call as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    /// `/<service>/<method>`.
    pub path: String,
    /// The request's headers but the pseudo-headers (names lowercase).
    pub metadata: Vec<(String, String)>,
    /// The messages, unframed.
    pub messages: Vec<Vec<u8>>,
}

impl GrpcCall {
    /// The first metadata value named `name`.
    pub fn metadata(&self, name: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// What the server answers to a call.
#[derive(Debug, Clone, Default)]
pub struct GrpcAnswer {
    /// How long to wait before answering.
    pub delay: Duration,
    /// The reply messages.
    pub messages: Vec<Vec<u8>>,
    /// The `grpc-status` (0: OK).
    pub status: u32,
    /// The `grpc-message`.
    pub message: String,
}

impl GrpcAnswer {
    /// OK with these messages.
    pub fn ok<M: AsRef<[u8]>>(messages: &[M]) -> GrpcAnswer {
        GrpcAnswer {
            messages: messages
                .iter()
                .map(|message| message.as_ref().to_vec())
                .collect(),
            ..GrpcAnswer::default()
        }
    }

    /// No message, status `status` with `message`.
    pub fn status(status: u32, message: &str) -> GrpcAnswer {
        GrpcAnswer {
            status,
            message: message.to_string(),
            ..GrpcAnswer::default()
        }
    }
}

type Handler = dyn Fn(&GrpcCall) -> GrpcAnswer + Send + Sync;

/// A running gRPC server; dropping it stops it.
#[derive(Debug)]
pub struct GrpcServer {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<GrpcCall>>>,
    cancelled: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GrpcServer {
    /// Starts a server answering every call with `handler`.
    pub fn start(handler: impl Fn(&GrpcCall) -> GrpcAnswer + Send + Sync + 'static) -> GrpcServer {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|error| panic!("cannot start the test gRPC server: {error}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (stop, stopped) = oneshot::channel::<()>();
        let state = (Arc::clone(&calls), Arc::clone(&cancelled));
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot start the gRPC server's runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    () = accept_loop(listener, handler, state) => {}
                    _ = stopped => {}
                }
            });
        });
        GrpcServer {
            addr,
            calls,
            cancelled,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The calls received, in order.
    pub fn calls(&self) -> Vec<GrpcCall> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls the client cancelled before their answer.
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type State = (Arc<Mutex<Vec<GrpcCall>>>, Arc<AtomicUsize>);

async fn accept_loop(listener: tokio::net::TcpListener, handler: Arc<Handler>, state: State) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let handler = Arc::clone(&handler);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                serve(request, Arc::clone(&handler), state.clone())
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Counts the call as cancelled unless it answered: hyper drops a call's future when the
/// client resets its stream.
struct Answering {
    cancelled: Arc<AtomicUsize>,
    answered: bool,
}

impl Drop for Answering {
    fn drop(&mut self) {
        if !self.answered {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type GrpcBody =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

async fn serve(
    request: Request<Incoming>,
    handler: Arc<Handler>,
    (calls, cancelled): State,
) -> Result<Response<GrpcBody>, Infallible> {
    let path = request.uri().path().to_string();
    let metadata = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut guard = Answering {
        cancelled,
        answered: false,
    };
    let body = request
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    let call = GrpcCall {
        path,
        metadata,
        messages: unframe(&body),
    };
    calls.lock().unwrap().push(call.clone());
    let answer = handler(&call);
    tokio::time::sleep(answer.delay).await;
    guard.answered = true;
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = answer
        .messages
        .iter()
        .map(|message| Ok(Frame::data(frame(message))))
        .collect();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(answer.status));
    if !answer.message.is_empty() {
        trailers.insert(
            "grpc-message",
            HeaderValue::from_str(&answer.message).expect("a header-safe grpc-message"),
        );
    }
    frames.push(Ok(Frame::trailers(trailers)));
    let mut response = Response::new(StreamBody::new(futures::stream::iter(frames)));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    Ok(response)
}

/// gRPC's length-prefixed messages (uncompressed).
fn unframe(body: &[u8]) -> Vec<Vec<u8>> {
    let mut rest: VecDeque<u8> = body.iter().copied().collect();
    let mut messages = Vec::new();
    while rest.len() >= 5 {
        let head: Vec<u8> = rest.drain(..5).collect();
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let len = len.min(rest.len());
        messages.push(rest.drain(..len).collect());
    }
    messages
}

fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).expect("a small message"));
    framed.put_slice(message);
    framed.freeze()
}
