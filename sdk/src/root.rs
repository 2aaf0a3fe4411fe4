//! The value a plugin keeps per configuration: its root.

use std::rc::Rc;
use std::time::Duration;

use crate::background::BackgroundTask;
use crate::config::PluginConfig;
use crate::error::ConfigError;
use crate::timer::TickFunction;

/// What a plugin keeps per configuration (a root context, in proxy-wasm terms): built once
/// from the parsed configuration when the proxy delivers it, shared by every stream the
/// configuration serves ([`Plugin::new`](crate::Plugin::new) gets it as `&Rc<Self>`), and
/// dropped when the plugin is reconfigured or stops. Clients, caches, compiled patterns and
/// anything derived from the configuration belong here, built once rather than per request.
///
/// A configuration type is its own root when the plugin needs nothing more (every
/// [`PluginConfig`] is a `Root` with the default settings, no background task and no tick
/// function). Otherwise implement `Root` on a type of your own:
///
/// ```
/// use std::rc::Rc;
/// use proxy_async::{ConfigError, Error, Flow, HttpClient, Plugin, PluginConfig, Request, Root, Settings};
///
/// #[derive(serde::Deserialize, Default)]
/// struct Config {
///     auth_cluster: String,
///     max_body_bytes: usize,
/// }
/// impl PluginConfig for Config {}
///
/// struct Filter {
///     auth: HttpClient,
///     max_body_bytes: usize,
/// }
///
/// impl Root for Filter {
///     type Config = Config;
///
///     fn configure(config: Config) -> Result<Self, ConfigError> {
///         if config.auth_cluster.is_empty() {
///             return Err(ConfigError::field("auth_cluster", "must name a cluster"));
///         }
///         Ok(Filter {
///             auth: HttpClient::new(config.auth_cluster),
///             max_body_bytes: config.max_body_bytes,
///         })
///     }
///
///     fn settings(&self) -> Settings {
///         Settings::default()
///             .buffer_request_body(true)
///             .body_buffer_limit(self.max_body_bytes)
///     }
/// }
///
/// struct Stream {
///     root: Rc<Filter>,
/// }
///
/// impl Plugin for Stream {
///     type Root = Filter;
///
///     fn new(root: &Rc<Filter>) -> Self {
///         Stream { root: Rc::clone(root) }
///     }
///
///     async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
///         self.root.auth.post("/scan").body(req.body()).send().await?;
///         Ok(Flow::Continue)
///     }
/// }
/// ```
pub trait Root: Sized + 'static {
    /// The configuration the root is built from, parsed from the JSON the proxy delivers.
    type Config: PluginConfig;

    /// Builds the root from a configuration that parsed and passed
    /// [`validate`](PluginConfig::validate). An `Err` rejects the configuration: the proxy
    /// is told so (`on_configure` returns false) and the error, naming its field, is logged.
    /// A rejected reconfiguration keeps the previous root in force.
    fn configure(config: Self::Config) -> Result<Self, ConfigError>;

    /// How the SDK runs this configuration's streams; asked once, right after
    /// [`configure`](Root::configure). The defaults stream bodies chunk by chunk and tick
    /// every 100 ms.
    fn settings(&self) -> Settings {
        Settings::default()
    }

    /// Tasks to run on the root context, outside any request, while this root is in force
    /// (refreshing a key set, warming a cache): started right after the configuration is
    /// accepted, dropped (mid-await) when the plugin is reconfigured or stops. Asked once per
    /// root (with Higress rules, once for each rule's root). None by default. See
    /// [`BackgroundTask`].
    ///
    /// The component build (wasm32-wasip2) runs them in the world's `root.run-background`
    /// export call, which the host keeps running beside the hooks.
    fn background_tasks(self: &Rc<Self>) -> Vec<BackgroundTask> {
        Vec::new()
    }

    /// Functions to run periodically on the root context, outside any request (Higress's
    /// `RegisterTickFunc`); asked once per root. None by default.
    fn tick_functions(self: &Rc<Self>) -> Vec<TickFunction> {
        Vec::new()
    }
}

impl<C: PluginConfig> Root for C {
    type Config = C;

    fn configure(config: C) -> Result<Self, ConfigError> {
        Ok(config)
    }
}

/// How the SDK runs a configuration's streams: body buffering, the buffer limit and the tick
/// period. [`Root::settings`] returns them; start from `Settings::default()` and change what
/// the plugin needs.
///
/// ```
/// use std::time::Duration;
/// use proxy_async::Settings;
///
/// let settings = Settings::default()
///     .buffer_request_body(true)
///     .body_buffer_limit(64 * 1024)
///     .tick_period(Duration::from_millis(50));
/// # let _ = settings;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub(crate) buffer_request_body: bool,
    pub(crate) buffer_response_body: bool,
    pub(crate) body_buffer_limit: usize,
    pub(crate) tick_period: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        // The body settings are the gate's defaults.
        let gate = proxy_async_abi::gate::GateSettings::default();
        Settings {
            buffer_request_body: gate.buffer_request_body,
            buffer_response_body: gate.buffer_response_body,
            body_buffer_limit: gate.body_buffer_limit,
            tick_period: Duration::from_millis(100),
        }
    }
}

impl Settings {
    /// When true, [`on_request_body`](crate::Plugin::on_request_body) runs once, with the
    /// whole body, after the proxy has buffered it (bodies over the
    /// [`body_buffer_limit`](Settings::body_buffer_limit) get a 413). When false (the
    /// default), it runs once per chunk as the chunks arrive.
    ///
    /// When true, the SDK removes `content-length` from request headers that are followed by
    /// a body, so that the hook may change the body's size (the proxy then frames it itself).
    pub fn buffer_request_body(mut self, buffer: bool) -> Self {
        self.buffer_request_body = buffer;
        self
    }

    /// Like [`buffer_request_body`](Settings::buffer_request_body), for the response body.
    pub fn buffer_response_body(mut self, buffer: bool) -> Self {
        self.buffer_response_body = buffer;
        self
    }

    /// The most bytes a buffered body may have (default 1 MiB, Envoy's default
    /// per-connection buffer limit, which refuses such bodies the same way when it is the
    /// lower of the two). A longer request body is refused with a local
    /// `413 Payload Too Large` (details `request_payload_too_large`), a longer response body
    /// with a `500` (details `response_payload_too_large`), as soon as the proxy has buffered
    /// more than this; the body hook does not run.
    pub fn body_buffer_limit(mut self, bytes: usize) -> Self {
        self.body_buffer_limit = bytes;
        self
    }

    /// The period of the root context's tick (default 100 ms, as Higress's Go SDK), which
    /// drives [`sleep`](crate::sleep), [`timeout`](crate::timeout) and
    /// [`tick_functions`](Root::tick_functions). A timer ends on the first tick at or after
    /// its deadline: late by less than this, never early. The tick starts with the first
    /// timer and then runs while the plugin lives (one callback per period per worker).
    pub fn tick_period(mut self, period: Duration) -> Self {
        self.tick_period = period;
        self
    }
}

/// Parses the configuration bytes the proxy delivered and builds their root.
pub(crate) fn from_configuration<R: Root>(bytes: &[u8]) -> Result<R, ConfigError> {
    crate::config::parse::<R::Config>(bytes).and_then(R::configure)
}
