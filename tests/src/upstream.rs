//! The test upstreams, in this process: an echo upstream and the demo auth and users services
//! (the same behaviour as the host's `proxy-async-serve --demo auth-flow`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use proxy_async_host::demo::{DemoRequest, auth_service, json, users_service};
use tokio::sync::oneshot;

type HttpResponse = hyper::Response<Full<Bytes>>;

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

/// The echo upstream, the auth service and the users service, each on a free loopback port,
/// served by one thread; dropping this stops them.
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
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Which demo service a listener serves.
#[derive(Debug, Clone, Copy)]
enum Service {
    Echo,
    Auth,
    Users,
}

impl Upstreams {
    /// Starts the three services.
    pub fn start() -> Upstreams {
        let bind = || {
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
                .unwrap_or_else(|error| panic!("cannot start a test upstream: {error}"));
            listener.set_nonblocking(true).unwrap();
            listener
        };
        let listeners = [
            (Service::Echo, bind()),
            (Service::Auth, bind()),
            (Service::Users, bind()),
        ];
        let addr = |index: usize| listeners[index].1.local_addr().unwrap();
        let (echo, auth, users) = (addr(0), addr(1), addr(2));
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread_recorded = Arc::clone(&recorded);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot start the upstreams' runtime");
            runtime.block_on(async move {
                for (service, listener) in listeners {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    tokio::spawn(serve(service, listener, Arc::clone(&thread_recorded)));
                }
                let _ = stopped.await;
            });
        });
        Upstreams {
            echo,
            auth,
            users,
            recorded,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every request the echo upstream received so far, in order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    service: Service,
    listener: tokio::net::TcpListener,
    recorded: Arc<Mutex<Vec<Recorded>>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let recorded = Arc::clone(&recorded);
        tokio::spawn(async move {
            let handler = service_fn(move |request: Request<Incoming>| {
                let recorded = Arc::clone(&recorded);
                async move {
                    let (parts, body) = request.into_parts();
                    let response = match Limited::new(body, 1 << 20).collect().await {
                        Ok(body) => {
                            let request = DemoRequest {
                                method: parts.method,
                                path: parts.uri.path().to_string(),
                                target: parts
                                    .uri
                                    .path_and_query()
                                    .map_or("/", |target| target.as_str())
                                    .to_string(),
                                headers: parts.headers,
                                body: body.to_bytes(),
                            };
                            match service {
                                Service::Echo => echo_service(request, &recorded),
                                Service::Auth => auth_service(request).await,
                                Service::Users => users_service(request).await,
                            }
                        }
                        Err(_) => json(StatusCode::BAD_REQUEST, &serde_json::json!({})),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

fn echo_service(request: DemoRequest, recorded: &Mutex<Vec<Recorded>>) -> HttpResponse {
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
    recorded.lock().unwrap().push(Recorded {
        method: request.method.as_str().to_string(),
        path: request.target.clone(),
        headers: pairs,
        body: request.body.to_vec(),
    });
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
