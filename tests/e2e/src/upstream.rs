//! The test upstreams, in this process: HTTP/1.1 servers whose behaviour each test chooses, and
//! the usual set of an echo upstream and the demo auth and users services (the same behaviour
//! as the host's `proxy-async-serve --demo auth-flow`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
pub use proxy_async_demo::{DemoRequest, json};
use proxy_async_demo::{auth_service, users_service};
use tokio::sync::oneshot;

/// What a test upstream answers.
pub type HttpResponse = hyper::Response<Full<Bytes>>;

/// A request the echo upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The method.
    pub method: String,
    /// The path with the query.
    pub path: String,
    /// The headers, in order (names lowercase).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 server on a free loopback port, answering every request with a handler, on
/// its own thread; dropping it stops the server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts a server answering each request (read whole, at most 1 MiB) with `handler`.
    pub fn start<H, F>(handler: H) -> Server
    where
        H: Fn(DemoRequest) -> F + Send + Sync + 'static,
        F: Future<Output = HttpResponse> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|error| panic!("cannot start a test upstream: {error}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handler = Arc::new(handler);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot start a test upstream's runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    () = accept_loop(listener, handler) => {}
                    _ = stopped => {}
                }
            });
        });
        Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop<H, F>(listener: tokio::net::TcpListener, handler: Arc<H>)
where
    H: Fn(DemoRequest) -> F + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let handler = Arc::clone(&handler);
        tokio::spawn(proxy_async_demo::serve_connection(stream, move |request| {
            handler(request)
        }));
    }
}

/// The echo upstream, the auth service and the users service, each on a free loopback port;
/// dropping this stops them.
#[derive(Debug)]
pub struct Upstreams {
    /// The echo upstream: answers 200 with the request (method, path, headers, body) as JSON,
    /// and records it.
    pub echo: SocketAddr,
    /// `POST /token` with `{"credential": "..."}`: `Bearer demo-token` gets `{"token":
    /// "t-alice"}`, `Bearer slow` gets it after 2 s, anything else a 401.
    pub auth: SocketAddr,
    /// `GET /me` with `authorization: Bearer t-alice`: `{"id": "u-1", "name": "alice"}`;
    /// anything else a 403.
    pub users: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    _servers: [Server; 3],
}

impl Upstreams {
    /// Starts the three services.
    pub fn start() -> Upstreams {
        Upstreams::start_with(true)
    }

    /// Starts the three services with an echo upstream that keeps nothing (for load runs of
    /// millions of requests); [`Upstreams::recorded`] stays empty.
    pub fn start_unrecorded() -> Upstreams {
        Upstreams::start_with(false)
    }

    fn start_with(record: bool) -> Upstreams {
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let echo_recorded = Arc::clone(&recorded);
        let echo = Server::start(move |request| {
            let response = echo_service(request, record.then_some(&*echo_recorded));
            async move { response }
        });
        let auth = Server::start(auth_service);
        let users = Server::start(users_service);
        Upstreams {
            echo: echo.addr(),
            auth: auth.addr(),
            users: users.addr(),
            recorded,
            _servers: [echo, auth, users],
        }
    }

    /// Every request the echo upstream received so far, in order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }
}

fn echo_service(request: DemoRequest, recorded: Option<&Mutex<Vec<Recorded>>>) -> HttpResponse {
    let pairs: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut headers = serde_json::Map::new();
    for (name, value) in &pairs {
        let joined = match headers.get(name.as_str()).and_then(|old| old.as_str()) {
            Some(old) => format!("{old}, {value}"),
            None => value.clone(),
        };
        headers.insert(name.clone(), serde_json::Value::String(joined));
    }
    if let Some(recorded) = recorded {
        recorded.lock().unwrap().push(Recorded {
            method: request.method.as_str().to_string(),
            path: request.target.clone(),
            headers: pairs,
            body: request.body.to_vec(),
        });
    }
    json(
        StatusCode::OK,
        &serde_json::json!({
            "method": request.method.as_str(),
            "path": request.target,
            "headers": headers,
            "body": String::from_utf8_lossy(&request.body),
        }),
    )
}
