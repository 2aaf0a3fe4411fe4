//! Serves a compiled plugin locally: `cargo xtask run <example>` runs this.
//!
//! ```text
//! proxy-async-serve --wasm PLUGIN.wasm [--demo EXAMPLE] [--config JSON] [--port N]
//!                   [--upstream HOST:PORT] [--cluster NAME=HOST:PORT]... [--log-level LEVEL]
//!                   [--plugin MORE.wasm [--config JSON]]... [--middleware]
//! ```
//!
//! `--wasm` is a proxy-wasm module (the SDK's wasm32-wasip1 build) or a component of the
//! `plugin` world (its wasm32-wasip2 build); the host tells them apart. With `--middleware` it is
//! a `wasi:http@0.3.0` middleware component (the wasm32-wasip2 build with
//! `proxy-async/wasi-http`), served by wasmtime-wasi-http: its configuration, clusters and log
//! level reach it as the environment variables it reads.
//!
//! `--demo auth-flow` starts, on free loopback ports in this process, the services the
//! auth-flow example calls (an auth service and a users service) and an echo upstream, maps the
//! clusters `auth` and `users` to them, and prints curl lines that show each outcome.
//! `--demo hello` and `--demo hello-no-config` start the echo upstream. Without `--demo`, the
//! clusters are the `--cluster` ones, and without `--upstream` requests go on to the echo
//! upstream (it answers with the request it got, as JSON). Each `--plugin` adds a
//! plugin after the `--wasm` one (a chain, run in order on requests and in reverse order on
//! responses); a `--config` after a `--plugin` is that plugin's configuration (default empty).
//! Stops on Ctrl-C (or SIGTERM).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use proxy_async_demo::{DemoRequest, auth_service, json, users_service};
use proxy_async_host::middleware::{Middleware, MiddlewareOptions};
use proxy_async_host::proxy_async_emulator::LogLevel;
use proxy_async_host::serve::PluginCode;
use proxy_async_host::serve::{Gateway, ServeConfig};
use tokio::net::TcpListener;
use tokio::task::LocalSet;

const USAGE: &str =
    "usage: proxy-async-serve --wasm PLUGIN.wasm [--demo EXAMPLE] [--config JSON] [--port N]
                         [--upstream HOST:PORT] [--cluster NAME=HOST:PORT]... [--log-level LEVEL]
                         [--plugin MORE.wasm [--config JSON]]... [--middleware]

  --wasm PATH            the compiled plugin (proxy-wasm module or component)
  --demo EXAMPLE         start the demo services of an example (auth-flow, hello, hello-no-config)
  --config JSON          the plugin configuration (default: the demo's)
  --port N               listen on 127.0.0.1:N (default 8080; 0 picks a free port)
  --upstream HOST:PORT   where requests go on to (default: an echo service on loopback, which
                         answers with the request it got, as JSON)
  --cluster NAME=ADDR    a cluster the plugin may call (repeatable)
  --log-level LEVEL      trace, debug, info, warn, error, critical (default: debug with --demo,
                         else info)
  --plugin PATH          another plugin after the ones before it, in a chain (repeatable); a
                         --config after it is its configuration (default: empty)
  --middleware           --wasm is a wasi:http@0.3 middleware component (no --plugin)";

/// The demos this binary knows.
const DEMOS: [&str; 3] = ["auth-flow", "hello", "hello-no-config"];

/// The parsed command line.
#[derive(Debug, Default)]
struct Args {
    wasm: String,
    demo: Option<String>,
    config: Option<String>,
    port: u16,
    upstream: Option<String>,
    clusters: BTreeMap<String, String>,
    log_level: Option<LogLevel>,
    /// The `--plugin`s, in chain order after `--wasm`, each with its `--config`.
    more_plugins: Vec<(String, Option<String>)>,
    /// `--wasm` is a `wasi:http` middleware component.
    middleware: bool,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            port: 8080,
            ..Args::default()
        };
        let mut wasm = None;
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--wasm" => wasm = Some(value()?),
                "--demo" => {
                    let demo = value()?;
                    if !DEMOS.contains(&demo.as_str()) {
                        return Err(format!("no demo for {demo} (demos: {})", DEMOS.join(", ")));
                    }
                    parsed.demo = Some(demo);
                }
                "--config" => {
                    let config = Some(value()?);
                    match parsed.more_plugins.last_mut() {
                        Some((_, plugin_config)) => *plugin_config = config,
                        None => parsed.config = config,
                    }
                }
                "--plugin" => parsed.more_plugins.push((value()?, None)),
                "--port" => {
                    let port = value()?;
                    parsed.port = port
                        .parse()
                        .map_err(|_| format!("--port {port}: not a port number"))?;
                }
                "--upstream" => parsed.upstream = Some(value()?),
                "--cluster" => {
                    let mapping = value()?;
                    let (name, address) = mapping
                        .split_once('=')
                        .ok_or_else(|| format!("--cluster {mapping}: expected NAME=HOST:PORT"))?;
                    parsed
                        .clusters
                        .insert(name.to_string(), address.to_string());
                }
                "--log-level" => {
                    let level = value()?;
                    parsed.log_level = Some(
                        LogLevel::from_name(&level)
                            .ok_or_else(|| format!("--log-level {level}: unknown level"))?,
                    );
                }
                "--middleware" => parsed.middleware = true,
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        parsed.wasm = wasm.ok_or("--wasm is required")?;
        if parsed.middleware && !parsed.more_plugins.is_empty() {
            return Err("--plugin chains proxy-wasm plugins, not middleware".to_string());
        }
        Ok(parsed)
    }

    /// The plugin's log level: `--log-level`, else debug for a demo (it is for watching what
    /// the plugin does) and info otherwise.
    fn log_level(&self) -> LogLevel {
        self.log_level.unwrap_or(if self.demo.is_some() {
            LogLevel::Debug
        } else {
            LogLevel::Info
        })
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("proxy-async-serve: {message}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("proxy-async-serve: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match LocalSet::new().block_on(&runtime, run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("proxy-async-serve: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let wasm = std::fs::read(&args.wasm).map_err(|error| format!("{}: {error}", args.wasm))?;

    let mut clusters = args.clusters.clone();
    let mut default_config = String::new();
    let mut upstream = args.upstream.clone();
    match args.demo.as_deref() {
        Some("auth-flow") => {
            let auth = spawn_service(auth_service).await?;
            let users = spawn_service(users_service).await?;
            clusters
                .entry("auth".to_string())
                .or_insert_with(|| auth.to_string());
            clusters
                .entry("users".to_string())
                .or_insert_with(|| users.to_string());
            default_config =
                r#"{"auth": {"cluster": "auth"}, "users": {"cluster": "users"}}"#.to_string();
        }
        Some("hello") => default_config = r#"{"mockEnable": false}"#.to_string(),
        _ => {}
    }
    if upstream.is_none() {
        upstream = Some(spawn_service(echo_service).await?.to_string());
    }
    let upstream = upstream.unwrap_or_default();
    let plugin_config = args.config.clone().unwrap_or(default_config);
    if args.middleware {
        return serve_middleware(&args, &wasm, &upstream, &plugin_config, &clusters).await;
    }
    let module = PluginCode::new(&wasm).map_err(|error| format!("{}: {error}", args.wasm))?;

    let mut config =
        ServeConfig::new(module, upstream.clone()).plugin_config(plugin_config.clone());
    for (path, plugin_config) in &args.more_plugins {
        let wasm = std::fs::read(path).map_err(|error| format!("{path}: {error}"))?;
        let module = PluginCode::new(&wasm).map_err(|error| format!("{path}: {error}"))?;
        config = config.then(module, plugin_config.clone().unwrap_or_default());
    }
    config.clusters = clusters.clone();
    config.log_level = args.log_level();
    let (listener, addr) = listen(args.port).await?;
    let gateway = Gateway::new(config).map_err(|error| error.to_string())?;

    println!("Serving {} on http://{addr}", args.wasm);
    println!("  plugin config: {plugin_config}");
    for (path, plugin_config) in &args.more_plugins {
        println!("  then plugin:   {path}");
        println!(
            "    its config:  {}",
            plugin_config.as_deref().unwrap_or("")
        );
    }
    println!("  upstream:      {upstream}");
    for (name, address) in &clusters {
        println!("  cluster {name:<6} -> {address}");
    }
    println!();
    print_demo(args.demo.as_deref(), addr, args.config.is_some());
    println!("Plugin logs and server errors go to stderr. Stop with Ctrl-C.");

    gateway.serve(listener, stop_signal()).await;
    println!("stopped");
    Ok(())
}

/// A listener on 127.0.0.1:`port` (0: a free one), and where it listens.
async fn listen(port: u16) -> Result<(TcpListener, SocketAddr), String> {
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    let addr = listener
        .local_addr()
        .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    Ok((listener, addr))
}

/// Serves `--wasm` as a `wasi:http` middleware component until Ctrl-C.
async fn serve_middleware(
    args: &Args,
    wasm: &[u8],
    upstream: &str,
    plugin_config: &str,
    clusters: &BTreeMap<String, String>,
) -> Result<(), String> {
    let middleware = Middleware::new(wasm).map_err(|error| format!("{}: {error}", args.wasm))?;
    let upstream_addr: SocketAddr = upstream
        .parse()
        .map_err(|_| format!("--upstream {upstream}: expected IP:PORT"))?;
    let destinations: serde_json::Map<String, serde_json::Value> = clusters
        .iter()
        .map(|(name, address)| (name.clone(), format!("http://{address}").into()))
        .collect();
    let level = args.log_level();
    let options = MiddlewareOptions::new(upstream_addr)
        .env("PROXY_ASYNC_CONFIG", plugin_config)
        .env(
            "PROXY_ASYNC_CLUSTERS",
            &serde_json::Value::Object(destinations).to_string(),
        )
        .env("PROXY_ASYNC_LOG_LEVEL", level.name());
    let (listener, addr) = listen(args.port).await?;
    println!(
        "Serving {} (wasi:http middleware) on http://{addr}",
        args.wasm
    );
    println!("  plugin config: {plugin_config}");
    println!("  upstream:      {upstream}");
    for (name, address) in clusters {
        println!("  cluster {name:<6} -> {address}");
    }
    println!();
    print_demo(args.demo.as_deref(), addr, args.config.is_some());
    println!("Plugin logs go to stderr. Stop with Ctrl-C.");
    tokio::select! {
        served = middleware.serve(options, listener) => served.map_err(|error| error.to_string())?,
        () = stop_signal() => {}
    }
    println!("stopped");
    Ok(())
}

fn print_demo(demo: Option<&str>, addr: SocketAddr, custom_config: bool) {
    let url = format!("http://{addr}");
    match demo {
        Some("auth-flow") => {
            println!(
                "Demo credential: `authorization: Bearer demo-token` (the auth service swaps it for the\n\
                 token t-alice, which the users service knows as user u-1, alice). `Bearer slow` makes the\n\
                 auth service answer after 2 s, past the plugin's 500 ms timeout. The upstream echoes the\n\
                 request it got as JSON.\n"
            );
            println!(
                "# 200: the upstream sees x-user-id: u-1 and x-user-name: alice; the client's x-user-admin is stripped"
            );
            println!(
                "curl -i -H 'authorization: Bearer demo-token' -H 'x-user-admin: 1' {url}/orders"
            );
            println!("# 200 with a body: the body reaches the upstream after the two calls");
            println!(
                "curl -i -H 'authorization: Bearer demo-token' -H 'content-type: application/json' -d '{{\"item\": 42}}' {url}/orders"
            );
            println!("# 401: no credential");
            println!("curl -i {url}/orders");
            println!("# 403: a credential the auth service refuses");
            println!("curl -i -H 'authorization: Bearer wrong' {url}/orders");
            println!("# 503: the auth service is too slow (the plugin's timeout is 500 ms)");
            println!("curl -i -H 'authorization: Bearer slow' {url}/orders");
        }
        Some("hello") => {
            if custom_config {
                println!("# with your --config");
            } else {
                println!(
                    "# 200: the upstream echoes the request, with the header hello: world the plugin added"
                );
            }
            println!("curl -i {url}/");
            println!(
                "# for the plugin's own reply, run again with --config '{{\"mockEnable\": true}}'"
            );
        }
        Some(_) => {
            println!("# 200: the upstream echoes the request as the plugin let it through");
            println!("curl -i {url}/");
        }
        None => println!("curl -i {url}/"),
    }
    println!();
}

/// Ctrl-C, or SIGTERM on Unix.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Starts a demo HTTP service on a free loopback port, as a task of the current `LocalSet`.
async fn spawn_service<F, Fut>(handler: F) -> Result<SocketAddr, String>
where
    F: Fn(DemoRequest) -> Fut + Copy + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|error| format!("cannot start a demo service: {error}"))?;
    let addr = listener
        .local_addr()
        .map_err(|error| format!("cannot start a demo service: {error}"))?;
    tokio::task::spawn_local(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::task::spawn_local(proxy_async_demo::serve_connection(stream, handler));
        }
    });
    Ok(addr)
}

/// Answers 200 with the request it got: method, path, headers (repeated ones joined with
/// `, `) and body (as text), as JSON.
async fn echo_service(request: DemoRequest) -> Response<Full<Bytes>> {
    let mut headers = serde_json::Map::new();
    for (name, value) in &request.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let joined = match headers.get(name.as_str()).and_then(|old| old.as_str()) {
            Some(old) => format!("{old}, {value}"),
            None => value,
        };
        headers.insert(name.as_str().to_string(), serde_json::Value::String(joined));
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
