//! The Redis client: its options, the proxy's client it initializes, and one awaited command.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use proxy_async_executor::Registry;

use crate::host::{BufferType, HostError, HostStatus};
use crate::redis::error::RedisError;
use crate::redis::resp::{RedisValue, encode_command};
use crate::runtime::{Extension, Runtime};
// A proxy-wasm module's host is a concrete type: its hostcalls need the trait in scope.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
use crate::host::Host as _;

/// A command's reply, copied out of the proxy during `proxy_on_redis_call_response`: the RESP
/// bytes, or the callback's status when it is not 0 (no reply).
pub(crate) type RedisReply = Result<Vec<u8>, u32>;

/// The Redis side of one plugin instance (a root context).
#[derive(Default)]
pub(crate) struct RedisState {
    /// Commands waiting for their reply, by the proxy's token.
    pub(crate) pending: Registry<RedisReply>,
    // The clients the proxy initialized (see `RedisClient::init_key`): clients made per stream
    // with the same options share one `proxy_redis_init`.
    ready: RefCell<BTreeSet<String>>,
}

impl Extension for RedisState {
    fn installed() {
        #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
        crate::exports::FEATURES.with(|features| {
            features
                .redis_response
                .set(Some(super::abi::deliver_response));
        });
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// `proxy_on_redis_call_response` (Higress): the reply to a Redis command, readable only now;
/// `status != 0` means there is none.
pub(crate) fn on_response(
    runtime: &Rc<Runtime>,
    context_id: u32,
    token: u32,
    status: u32,
    size: usize,
) {
    runtime.deliver(context_id, |runtime| {
        let redis = runtime.extension::<RedisState>();
        if !redis.pending.is_waiting(token) {
            log::debug!(
                "reply to Redis call {token} ignored: nothing waits for it (its stream ended, or the token is unknown)"
            );
            return;
        }
        let reply: RedisReply = if status != 0 {
            Err(status)
        } else {
            // An unreadable reply is decoded as an empty one: the command fails as invalid.
            Ok(runtime
                .host
                .get_buffer(BufferType::RedisCallResponse, 0, size)
                .unwrap_or_else(|error| {
                    log::warn!("reading the reply of Redis call {token}: {error}");
                    Vec::new()
                }))
        };
        redis.pending.complete(token, reply);
    });
}

/// A client for one Redis cluster of the proxy (Higress's extension to proxy-wasm), whose
/// commands are `async fn`s.
///
/// ```no_run
/// # use proxy_async::redis::{RedisClient, RedisError};
/// # async fn example() -> Result<(), RedisError> {
/// let redis = RedisClient::new("outbound|6379||redis.default.svc.cluster.local")
///     .with_password("secret")
///     .with_database(1);
/// let hits = redis.incr("hits").await?;
/// redis.expire("hits", 60).await?;
/// let name: Option<Vec<u8>> = redis.get("user:42:name").await?;
/// # Ok(())
/// # }
/// ```
///
/// The proxy's client is initialized (`proxy_redis_init`) by [`init`](RedisClient::init), or
/// else by the first command; a failed init is retried by the next command, and a command
/// answered `NOAUTH` re-initializes the client and is sent once more, as in Higress's Go SDK.
/// Clients are cheap to clone and to make per stream: those with the same cluster and options
/// share one initialization per plugin instance.
///
/// Only Higress offers Redis: a module that sends Redis commands imports `proxy_redis_init`
/// and `proxy_redis_call`, which Envoy and Istio do not provide, so they refuse to load it. A
/// plugin that never uses `RedisClient` does not import them. Components (`wasm32-wasip2`)
/// send them through the world's `redis` interface; a host without Redis answers
/// [`RedisError::Unsupported`].
#[derive(Clone)]
pub struct RedisClient {
    cluster: Rc<str>,
    username: Rc<str>,
    password: Rc<str>,
    database: u32,
    timeout: Duration,
    buffer_flush_timeout: Duration,
    max_buffer_size: u32,
}

impl fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClient")
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("database", &self.database)
            .field("timeout", &self.timeout)
            .field("buffer_flush_timeout", &self.buffer_flush_timeout)
            .field("max_buffer_size", &self.max_buffer_size)
            .finish()
    }
}

impl RedisClient {
    /// The timeout of a command unless [`with_timeout`](RedisClient::with_timeout) sets another.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
    /// How long the proxy buffers commands before it sends them, by default (Envoy's).
    pub const DEFAULT_BUFFER_FLUSH_TIMEOUT: Duration = Duration::from_millis(3);
    /// How many bytes of commands the proxy buffers before it sends them, by default (Envoy's).
    pub const DEFAULT_MAX_BUFFER_SIZE: u32 = 1024;

    /// A client for `cluster`, the name of a Redis cluster in the proxy's configuration (in
    /// Higress, e.g. `outbound|6379||redis.default.svc.cluster.local` or
    /// `outbound|6379||redis.static`).
    pub fn new(cluster: impl Into<String>) -> Self {
        RedisClient {
            cluster: Rc::from(cluster.into()),
            username: Rc::from(""),
            password: Rc::from(""),
            database: 0,
            timeout: Self::DEFAULT_TIMEOUT,
            buffer_flush_timeout: Self::DEFAULT_BUFFER_FLUSH_TIMEOUT,
            max_buffer_size: Self::DEFAULT_MAX_BUFFER_SIZE,
        }
    }

    /// Sets the user name (Redis 6 ACLs); none by default.
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Rc::from(username.into());
        self
    }

    /// Sets the password; none by default.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Rc::from(password.into());
        self
    }

    /// Sets the database (`SELECT`); 0 by default.
    pub fn with_database(mut self, database: u32) -> Self {
        self.database = database;
        self
    }

    /// Sets the timeout of every command.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how long the proxy may hold a command to send it with others
    /// (`buffer_flush_timeout`, whole milliseconds).
    pub fn with_buffer_flush_timeout(mut self, timeout: Duration) -> Self {
        self.buffer_flush_timeout = timeout;
        self
    }

    /// Sets how many bytes of commands the proxy buffers before sending them
    /// (`max_buffer_size_before_flush`).
    pub fn with_max_buffer_size(mut self, bytes: u32) -> Self {
        self.max_buffer_size = bytes;
        self
    }

    /// Makes the proxy send every command at once, unbuffered: lowest latency, more packets.
    pub fn without_buffer(self) -> Self {
        self.with_buffer_flush_timeout(Duration::ZERO)
            .with_max_buffer_size(0)
    }

    /// The cluster this client sends commands to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The timeout of the commands.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The upstream `proxy_redis_init` gets: the cluster with the client's options as query
    /// parameters, as Higress's Go SDK writes them
    /// (`cluster?db=1&buffer_flush_timeout=3&max_buffer_size_before_flush=1024`; `db` only
    /// when not 0). Commands go to the plain cluster.
    pub fn upstream(&self) -> String {
        let mut upstream = format!("{}?", self.cluster);
        if self.database != 0 {
            upstream.push_str(&format!("db={}&", self.database));
        }
        upstream.push_str(&format!(
            "buffer_flush_timeout={}&max_buffer_size_before_flush={}",
            self.buffer_flush_timeout.as_millis(),
            self.max_buffer_size
        ));
        upstream
    }

    /// Initializes the proxy's client for this cluster and options now (`proxy_redis_init`),
    /// e.g. at configuration time from [`PluginConfig::validate`](crate::PluginConfig::validate)
    /// as Higress's Go plugins do in `parseConfig`. Optional: the first command initializes
    /// a client that is not ready. On failure the client stays not ready and the next command
    /// tries again.
    pub fn init(&self) -> Result<(), RedisError> {
        let runtime = Runtime::current().ok_or(RedisError::NoHost)?;
        self.init_on(&runtime)
    }

    /// Whether the proxy's client is initialized (false outside plugin callbacks).
    pub fn is_ready(&self) -> bool {
        Runtime::current().is_some_and(|runtime| {
            runtime
                .extension::<RedisState>()
                .ready
                .borrow()
                .contains(&self.init_key())
        })
    }

    /// Sends a command (its words: `["SET", "key", "value"]`) and returns the reply. An error
    /// reply is [`RedisError::Server`]; errors inside an array (`EXEC`) stay values.
    pub async fn command<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<RedisValue, RedisError> {
        let args: Vec<&[u8]> = args.iter().map(AsRef::as_ref).collect();
        self.query(&args).await
    }

    /// Runs a Lua script (`EVAL script numkeys keys... args...`) and returns its reply.
    pub async fn eval<K: AsRef<[u8]>, A: AsRef<[u8]>>(
        &self,
        script: &str,
        keys: &[K],
        args: &[A],
    ) -> Result<RedisValue, RedisError> {
        let numkeys = keys.len().to_string();
        let mut words: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), numkeys.as_bytes()];
        words.extend(keys.iter().map(AsRef::as_ref));
        words.extend(args.iter().map(AsRef::as_ref));
        self.query(&words).await
    }

    /// Sends a command and converts its reply: an error reply is [`RedisError::Server`], a
    /// reply `convert` does not take is [`RedisError::UnexpectedReply`].
    pub(crate) async fn typed<T>(
        &self,
        args: &[&[u8]],
        convert: impl FnOnce(&RedisValue) -> Option<T>,
    ) -> Result<T, RedisError> {
        let reply = self.query(args).await?;
        convert(&reply).ok_or_else(|| RedisError::UnexpectedReply {
            cluster: self.cluster.to_string(),
            command: args
                .first()
                .map(|name| String::from_utf8_lossy(name).to_ascii_uppercase())
                .unwrap_or_default(),
            reply,
        })
    }

    /// Sends a command; an error reply becomes [`RedisError::Server`]. A `NOAUTH` reply (the
    /// proxy's connection is not authenticated: Redis restarted with a password, or the
    /// password changed) re-initializes the client and sends the command once more.
    async fn query(&self, args: &[&[u8]]) -> Result<RedisValue, RedisError> {
        let query = encode_command(args);
        let mut reply = self.send(&query).await?;
        if let RedisValue::Error(message) = &reply
            && message.starts_with("NOAUTH")
        {
            log::warn!(
                "Redis cluster `{}` answered {message}; initializing its client again and retrying once",
                self.cluster
            );
            let runtime = Runtime::current().ok_or(RedisError::NoHost)?;
            runtime
                .extension::<RedisState>()
                .ready
                .borrow_mut()
                .remove(&self.init_key());
            if self.init_on(&runtime).is_ok() {
                drop(runtime);
                reply = self.send(&query).await?;
            }
        }
        match reply {
            RedisValue::Error(message) => Err(RedisError::Server {
                cluster: self.cluster.to_string(),
                message,
            }),
            value => Ok(value),
        }
    }

    /// Sends `query` once, initializing the proxy's client first if it is not ready.
    async fn send(&self, query: &[u8]) -> Result<RedisValue, RedisError> {
        let pending = {
            let runtime = Runtime::current().ok_or(RedisError::NoHost)?;
            if !runtime
                .extension::<RedisState>()
                .ready
                .borrow()
                .contains(&self.init_key())
            {
                self.init_on(&runtime)?;
            }
            let token = hostcall_call(&runtime, &self.cluster, query)
                .map_err(|error| self.refused(error))?;
            runtime
                .extension::<RedisState>()
                .pending
                .register(token)
                .map_err(|duplicate| {
                    log::error!("{duplicate}");
                    RedisError::Refused {
                        cluster: self.cluster.to_string(),
                        status: HostStatus::InternalFailure,
                    }
                })?
        };
        match pending.await {
            Ok(bytes) => RedisValue::decode(&bytes).map_err(|error| RedisError::Decode {
                cluster: self.cluster.to_string(),
                error,
            }),
            Err(status) => Err(RedisError::NoResponse {
                cluster: self.cluster.to_string(),
                status,
            }),
        }
    }

    fn init_on(&self, runtime: &Runtime) -> Result<(), RedisError> {
        let key = self.init_key();
        let result = hostcall_init(
            runtime,
            &self.upstream(),
            &self.username,
            &self.password,
            self.timeout,
        );
        match result {
            Ok(()) => {
                runtime
                    .extension::<RedisState>()
                    .ready
                    .borrow_mut()
                    .insert(key);
                Ok(())
            }
            Err(error) => {
                runtime
                    .extension::<RedisState>()
                    .ready
                    .borrow_mut()
                    .remove(&key);
                let error = match self.refused(error) {
                    RedisError::Refused { cluster, status } => {
                        RedisError::NotReady { cluster, status }
                    }
                    other => other,
                };
                log::warn!("{error}; the next command will try again");
                Err(error)
            }
        }
    }

    fn refused(&self, error: HostError) -> RedisError {
        let cluster = self.cluster.to_string();
        match error.status {
            HostStatus::Unimplemented => RedisError::Unsupported { cluster },
            status => RedisError::Refused { cluster, status },
        }
    }

    /// What identifies the proxy's client: everything `proxy_redis_init` gets.
    fn init_key(&self) -> String {
        format!(
            "{}\0{}\0{}\0{}",
            self.upstream(),
            self.username,
            self.password,
            self.timeout.as_millis()
        )
    }
}

/// `proxy_redis_init`. The proxy-wasm build calls the import directly, so that only plugins
/// using the client import it (see `redis::abi`); other builds go through the `Host`.
fn hostcall_init(
    runtime: &Runtime,
    upstream: &str,
    username: &str,
    password: &str,
    timeout: Duration,
) -> Result<(), HostError> {
    #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
    {
        let _ = runtime;
        crate::redis::abi::redis_init(upstream, username, password, timeout)
    }
    #[cfg(not(all(target_arch = "wasm32", not(target_env = "p2"))))]
    runtime
        .host
        .redis_init(upstream, username, password, timeout)
}

/// `proxy_redis_call`, like [`hostcall_init`].
fn hostcall_call(runtime: &Runtime, cluster: &str, query: &[u8]) -> Result<u32, HostError> {
    #[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
    {
        let _ = runtime;
        crate::redis::abi::redis_call(cluster, query)
    }
    #[cfg(not(all(target_arch = "wasm32", not(target_env = "p2"))))]
    runtime.host.redis_call(cluster, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_the_upstreams_query_parameters() {
        let client = RedisClient::new("outbound|6379||redis.static");
        assert_eq!(
            client.upstream(),
            "outbound|6379||redis.static?buffer_flush_timeout=3&max_buffer_size_before_flush=1024"
        );
        let client = client
            .with_database(7)
            .with_buffer_flush_timeout(Duration::from_millis(10))
            .with_max_buffer_size(4096);
        assert_eq!(
            client.upstream(),
            "outbound|6379||redis.static?db=7&buffer_flush_timeout=10&max_buffer_size_before_flush=4096"
        );
        assert_eq!(
            client.without_buffer().upstream(),
            "outbound|6379||redis.static?db=7&buffer_flush_timeout=0&max_buffer_size_before_flush=0"
        );
    }

    #[test]
    fn a_host_without_redis_is_unsupported_and_the_password_is_not_printed() {
        let client = RedisClient::new("redis").with_password("hunter2");
        let error = client.refused(HostError {
            call: "proxy_redis_call",
            status: HostStatus::Unimplemented,
        });
        assert_eq!(
            error,
            RedisError::Unsupported {
                cluster: "redis".into()
            }
        );
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
