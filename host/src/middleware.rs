//! `wasi:http@0.3.0` middleware components served over HTTP by wasmtime's own `wasi:http`
//! implementation (`wasmtime-wasi-http`'s `p3`): the SDK's middleware build (`wasm32-wasip2`
//! with `proxy-async/wasi-http`) in front of a real upstream.
//!
//! wasmtime-wasi-http binds the `service` world: it gives the component `wasi:http/types` and
//! `wasi:http/client`, and calls its exported `handler`. A middleware also imports a
//! `handler`, the next hop; here that import sends the request to the upstream (through the
//! same client a `client.send` uses), so the chain is middleware → upstream.
//!
//! One instance serves every request, concurrently (`run_concurrent`), as `wasmtime serve`
//! reuses an instance for many requests: the plugin's configuration, shared data and metrics
//! live as long as the server. The configuration and clusters reach the component as
//! environment variables (`PROXY_ASYNC_CONFIG`, `PROXY_ASYNC_CLUSTERS`), as `wasmtime serve
//! --env` gives them.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use proxy_async_host::middleware::{Middleware, MiddlewareOptions};
//!
//! let wasm = std::fs::read("target/wasm32-wasip2/release/hello.wasm")?;
//! let options = MiddlewareOptions::new("127.0.0.1:9000".parse()?)
//!     .env("PROXY_ASYNC_CONFIG", r#"{"mockEnable": false}"#);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! Middleware::new(&wasm)?.serve(options, listener).await?;
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{Accessor, Component, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p3::bindings::http::client::HostWithStore as _;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};
use wasmtime_wasi_http::{WasiHttp, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::plugin::PluginError;

/// The store's data: WASI (preview 2, for Rust's std, and 0.3), `wasi:http`, and where the
/// next hop goes.
struct MiddlewareState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    upstream: Authority,
}

impl WasiView for MiddlewareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for MiddlewareState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// How a middleware is served.
#[derive(Debug, Clone)]
pub struct MiddlewareOptions {
    upstream: SocketAddr,
    env: Vec<(String, String)>,
    stderr: Option<MemoryOutputPipe>,
}

impl MiddlewareOptions {
    /// Requests go on to `upstream` (plain HTTP/1.1).
    pub fn new(upstream: SocketAddr) -> Self {
        MiddlewareOptions {
            upstream,
            env: Vec::new(),
            stderr: None,
        }
    }

    /// Sets the environment variable `name` of the component (its configuration:
    /// `PROXY_ASYNC_CONFIG`, `PROXY_ASYNC_CLUSTERS`, `PROXY_ASYNC_LOG_LEVEL`).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Keeps what the component writes to stderr (its log) in `pipe` instead of this
    /// process's stderr.
    pub fn stderr(mut self, pipe: MemoryOutputPipe) -> Self {
        self.stderr = Some(pipe);
        self
    }
}

/// A compiled middleware component, linked with WASI and `wasi:http`.
pub struct Middleware {
    pre: ServicePre<MiddlewareState>,
    engine: Engine,
}

impl std::fmt::Debug for Middleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Middleware").finish_non_exhaustive()
    }
}

fn load_error(error: wasmtime::Error) -> PluginError {
    PluginError::Load(format!("{error:#}"))
}

/// A response of the component, as `wasmtime-wasi-http` hands it over.
type WasiResponse = http::Response<
    http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, wasmtime_wasi_http::Error>,
>;

/// What the request's body transmission came to, for the response's body.
type IoResult =
    std::pin::Pin<Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send + 'static>>;

/// A request the server hands to the instance, and where its response goes.
type Exchange = (
    hyper::Request<Incoming>,
    oneshot::Sender<Result<WasiResponse, String>>,
);

impl Middleware {
    /// Compiles `wasm`, a component of the `wasi:http@0.3.0` middleware world.
    pub fn new(wasm: &[u8]) -> Result<Middleware, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model_async(true);
        let compile = |error: wasmtime::Error| PluginError::Compile(format!("{error:#}"));
        let engine = Engine::new(&config).map_err(compile)?;
        let component = Component::new(&engine, wasm).map_err(compile)?;
        let mut linker = Linker::<MiddlewareState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(load_error)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(load_error)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker).map_err(load_error)?;
        link_next_handler(&mut linker).map_err(load_error)?;
        let pre = linker.instantiate_pre(&component).map_err(load_error)?;
        let pre = ServicePre::new(pre).map_err(load_error)?;
        Ok(Middleware { pre, engine })
    }

    /// Serves HTTP/1.1 on `listener` until the future is dropped: every request through one
    /// instance of the component, on to the upstream.
    pub async fn serve(
        &self,
        options: MiddlewareOptions,
        listener: tokio::net::TcpListener,
    ) -> Result<(), PluginError> {
        let mut wasi = WasiCtx::builder();
        for (name, value) in &options.env {
            wasi.env(name, value);
        }
        match options.stderr {
            Some(pipe) => {
                wasi.stderr(pipe);
            }
            None => {
                wasi.inherit_stderr();
            }
        }
        let upstream = Authority::try_from(options.upstream.to_string())
            .map_err(|error| PluginError::Load(format!("upstream: {error}")))?;
        let mut store = Store::new(
            &self.engine,
            MiddlewareState {
                wasi: wasi.build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                upstream,
            },
        );
        let service = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(load_error)?;
        let (requests, arrivals) = mpsc::unbounded_channel::<Exchange>();
        let local = tokio::task::LocalSet::new();
        let server = local.run_until(async move {
            let mut instance = tokio::task::spawn_local(async move {
                store
                    .run_concurrent(async move |accessor| {
                        serve_instance(accessor, &service, arrivals).await;
                    })
                    .await
            });
            let requests = Rc::new(requests);
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((connection, _)) = accepted else { continue };
                        let requests = Rc::clone(&requests);
                        tokio::task::spawn_local(async move {
                            let service = service_fn(move |request| {
                                let requests = Rc::clone(&requests);
                                async move { Ok::<_, Infallible>(exchange(&requests, request).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(connection), service)
                                .await;
                        });
                    }
                    finished = &mut instance => {
                        return match finished {
                            Ok(Ok(())) => Err(PluginError::Load("the instance stopped".to_string())),
                            Ok(Err(error)) => Err(PluginError::Load(format!("the instance failed: {error:#}"))),
                            Err(error) => Err(PluginError::Load(format!("{error}"))),
                        };
                    }
                }
            }
        });
        server.await
    }
}

/// Hands `request` to the instance and waits for its response (a 502 when it failed).
async fn exchange(
    requests: &mpsc::UnboundedSender<Exchange>,
    request: hyper::Request<Incoming>,
) -> hyper::Response<http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, String>> {
    use http_body_util::BodyExt as _;
    let (reply, response) = oneshot::channel();
    let failed = |message: String| {
        hyper::Response::builder()
            .status(502)
            .body(
                http_body_util::Full::new(bytes::Bytes::from(message))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap_or_default()
    };
    if requests.send((request, reply)).is_err() {
        return failed("the middleware instance is gone\n".to_string());
    }
    match response.await {
        Ok(Ok(response)) => {
            response.map(|body| body.map_err(|error| format!("{error:?}")).boxed_unsync())
        }
        Ok(Err(message)) => failed(format!("{message}\n")),
        Err(_) => failed("the middleware instance is gone\n".to_string()),
    }
}

/// Runs every request that arrives through the instance, concurrently, until the server ends.
async fn serve_instance(
    accessor: &Accessor<MiddlewareState>,
    service: &Service,
    mut arrivals: mpsc::UnboundedReceiver<Exchange>,
) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            arrival = arrivals.recv() => match arrival {
                Some((request, reply)) => running.push(handle(accessor, service, request, reply)),
                None => break,
            },
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}

/// One request through the component's `handler.handle`.
async fn handle(
    accessor: &Accessor<MiddlewareState>,
    service: &Service,
    request: hyper::Request<Incoming>,
    reply: oneshot::Sender<Result<WasiResponse, String>>,
) {
    let (mut parts, body) = request.into_parts();
    // Hosts hand the guest no authority for an origin-form request: give it the `Host`.
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|host| host.to_str().ok())
        .and_then(|host| Authority::try_from(host).ok());
    if let Some(host) = host {
        let mut uri = parts.uri.clone().into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(host);
        if let Ok(uri) = http::Uri::from_parts(uri) {
            parts.uri = uri;
        }
    }
    let request = hyper::Request::from_parts(parts, body);
    let (request, io) = accessor.with(|mut access| {
        let hooks = access.get().http().hooks;
        let (request, io) = wasmtime_wasi_http::p3::Request::from_http(hooks, request);
        // The future is `'static`; boxed, its type no longer names the borrow of `hooks`.
        let io: IoResult = Box::pin(io);
        (request, io)
    });
    let result = match service.handle(accessor, request).await {
        Ok(Ok(response)) => accessor
            .with(|mut access| response.into_http(&mut access, io))
            .map_err(|error| format!("the middleware's response is invalid: {error:#}")),
        Ok(Err(code)) => Err(format!("the middleware failed the request: {code:?}")),
        Err(error) => Err(format!("the middleware trapped: {error:#}")),
    };
    let _ = reply.send(result);
}

/// The middleware's `wasi:http/handler` import: the next hop, here the upstream.
fn link_next_handler(linker: &mut Linker<MiddlewareState>) -> wasmtime::Result<()> {
    linker
        .instance("wasi:http/handler@0.3.0")?
        .func_wrap_concurrent(
            "handle",
            |accessor: &Accessor<MiddlewareState>,
             (request,): (Resource<wasmtime_wasi_http::p3::Request>,)| {
                Box::pin(async move {
                    accessor.with(|mut access| -> wasmtime::Result<()> {
                        let state = access.get();
                        let upstream = state.upstream.clone();
                        let request = state.table.get_mut(&request)?;
                        request.scheme = Some(Scheme::HTTP);
                        request.authority = Some(upstream);
                        Ok(())
                    })?;
                    let http = accessor.with_getter::<WasiHttp>(MiddlewareState::http);
                    match WasiHttp::send(&http, request).await {
                        Ok(response) => Ok((Ok(response),)),
                        Err(error) => Ok((Err(error.downcast()?),)),
                    }
                })
            },
        )
}
