//! API keys checked against Redis, with a local cache and a per-consumer rate limit: Higress's
//! `key-auth` with its consumers kept in Redis, every Redis command awaited.
//!
//! For every request, in `on_request_headers`:
//!
//! 1. Every client-sent consumer header (`x-mse-consumer` by default, in any case, and its
//!    `_` spelling) is removed, first of all: only this plugin names the consumer.
//! 2. The API key is read from the first configured key header present (`x-api-key` by
//!    default). Missing or empty → `401` (`key_auth_missing`); sent twice, or more than 256
//!    bytes, or not printable ASCII → `401` (`key_auth_malformed`). No Redis command is sent.
//! 3. The consumer is looked up: in the local cache (entries live `cache_ttl_ms`; a tick
//!    function drops expired ones), else with `GET <key_prefix><key>` on Redis. A missing key
//!    → `401` (`key_auth_invalid`); a value that is not a consumer name (empty, not a header
//!    value) → `503`.
//! 4. With `rate_limit` set: `INCR <rate_prefix><consumer>:<window>` (the first of a window
//!    also sets `EXPIRE`); past `requests` in the window → `429` (`key_auth_rate_limited`) with
//!    `retry-after`.
//! 5. The request goes on with the consumer header set.
//!
//! # Fail-closed rules
//!
//! Any Redis failure (no Redis in this proxy, the connection refused or timed out, an error
//! reply such as `WRONGTYPE`, a reply of an unexpected type) is a `503` and an error log line:
//! the request never goes on unchecked. Only the key's absence is the client's fault (401).
//!
//! # Configuration
//!
//! ```json
//! {
//!   "redis": {"service_name": "redis.static", "service_port": 6379, "database": 0,
//!             "username": "", "password": "", "timeout_ms": 500},
//!   "keys": ["x-api-key"],
//!   "consumer_header": "x-mse-consumer",
//!   "key_prefix": "api-key:",
//!   "cache_ttl_ms": 30000,
//!   "rate_limit": {"requests": 100, "window_seconds": 60}
//! }
//! ```
//!
//! Only `redis.service_name` is required (the Redis cluster is Higress's FQDN form,
//! `outbound|<service_port>||<service_name>`); `rate_limit` is off when absent; `cache_ttl_ms`
//! 0 turns the cache off. Errors name the field.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use proxy_async::higress::FqdnCluster;
use proxy_async::redis::{RedisClient, RedisError};
use proxy_async::{
    Cluster, ConfigError, Error, Flow, LocalReply, Plugin, PluginConfig, Request, Root,
    TickFunction,
};

/// The longest API key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// The most keys the local cache holds; past it, a new key is looked up but not cached.
pub const MAX_CACHED_KEYS: usize = 10_000;

/// The plugin configuration; see the [crate documentation](crate).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the consumers are.
    pub redis: Redis,
    /// The request headers that may carry the key, in order of preference.
    pub keys: Vec<String>,
    /// The request header naming the consumer for the upstream.
    pub consumer_header: String,
    /// The Redis key of an API key is this prefix and the key.
    pub key_prefix: String,
    /// The rate-limit counters' key prefix.
    pub rate_prefix: String,
    /// How long a looked-up key stays in the local cache, in ms (0: no cache).
    pub cache_ttl_ms: u64,
    /// Requests per consumer and window; none when absent.
    pub rate_limit: Option<RateLimit>,
}

/// The Redis service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redis {
    /// Its FQDN as the gateway knows it, e.g. `redis.static`, `redis.default.svc.cluster.local`.
    pub service_name: String,
    /// Its port.
    pub service_port: u16,
    /// The database number.
    pub database: u32,
    /// The user, if Redis has ACLs.
    pub username: String,
    /// The password, if any.
    pub password: String,
    /// The timeout of each command, in ms.
    pub timeout_ms: u64,
}

/// A fixed-window rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u64,
    /// The window, in seconds.
    pub window_seconds: u64,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            service_name: String::new(),
            service_port: 6379,
            database: 0,
            username: String::new(),
            password: String::new(),
            timeout_ms: 500,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            redis: Redis::default(),
            keys: vec!["x-api-key".to_string()],
            consumer_header: "x-mse-consumer".to_string(),
            key_prefix: "api-key:".to_string(),
            rate_prefix: "rate:".to_string(),
            cache_ttl_ms: 30_000,
            rate_limit: None,
        }
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.redis.service_name.trim().is_empty() {
            return Err(ConfigError::field(
                "redis.service_name",
                "must name the Redis service",
            ));
        }
        if self.redis.timeout_ms == 0 {
            return Err(ConfigError::field("redis.timeout_ms", "must be at least 1"));
        }
        if self.keys.is_empty() {
            return Err(ConfigError::field("keys", "must list at least one header"));
        }
        for (index, key) in self.keys.iter().enumerate() {
            if !is_header_name(key) {
                return Err(ConfigError::field(
                    format!("keys[{index}]"),
                    "must be a header name",
                ));
            }
        }
        if !is_header_name(&self.consumer_header) {
            return Err(ConfigError::field(
                "consumer_header",
                "must be a header name",
            ));
        }
        if let Some(limit) = self.rate_limit {
            if limit.requests == 0 {
                return Err(ConfigError::field(
                    "rate_limit.requests",
                    "must be at least 1",
                ));
            }
            if limit.window_seconds == 0 {
                return Err(ConfigError::field(
                    "rate_limit.window_seconds",
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// The Redis cluster, in Higress's FQDN form.
    pub fn redis_cluster(&self) -> String {
        FqdnCluster {
            fqdn: self.redis.service_name.clone(),
            host: String::new(),
            port: self.redis.service_port,
        }
        .cluster_name()
    }

    fn redis_client(&self) -> RedisClient {
        let mut client = RedisClient::new(self.redis_cluster())
            .with_database(self.redis.database)
            .with_timeout(Duration::from_millis(self.redis.timeout_ms));
        if !self.redis.username.is_empty() {
            client = client.with_username(self.redis.username.as_str());
        }
        if !self.redis.password.is_empty() {
            client = client.with_password(self.redis.password.as_str());
        }
        client
    }
}

/// A cached consumer and when it stops counting.
struct Cached {
    consumer: String,
    until: SystemTime,
}

/// What the plugin keeps per configuration: the configuration, its Redis client, and the
/// consumers it looked up (one VM per worker: the cache is per worker, as Higress's Go caches
/// are).
pub struct KeyAuth {
    config: Config,
    redis: RedisClient,
    cache: RefCell<HashMap<String, Cached>>,
}

impl Root for KeyAuth {
    type Config = Config;

    fn configure(config: Config) -> Result<Self, ConfigError> {
        Ok(KeyAuth {
            redis: config.redis_client(),
            config,
            cache: RefCell::new(HashMap::new()),
        })
    }

    fn tick_functions(self: &Rc<Self>) -> Vec<TickFunction> {
        if self.config.cache_ttl_ms == 0 {
            return Vec::new();
        }
        let root = Rc::clone(self);
        vec![TickFunction::new(
            Duration::from_millis(self.config.cache_ttl_ms),
            move || {
                let now = proxy_async::now();
                root.cache.borrow_mut().retain(|_, entry| entry.until > now);
            },
        )]
    }
}

impl KeyAuth {
    /// Consumers in the local cache now (for tests and logs).
    pub fn cached_keys(&self) -> usize {
        self.cache.borrow().len()
    }
}

/// The plugin: one value per HTTP stream.
pub struct KeyAuthRedis {
    root: Rc<KeyAuth>,
}

/// The outcome of the checks, before it becomes a reply.
enum Denied {
    Missing,
    Malformed,
    Invalid,
    Limited(u64),
}

impl Denied {
    fn reply(self) -> LocalReply {
        let (status, details, body) = match self {
            Denied::Missing => (401, "key_auth_missing", "missing API key"),
            Denied::Malformed => (401, "key_auth_malformed", "malformed API key"),
            Denied::Invalid => (401, "key_auth_invalid", "invalid API key"),
            Denied::Limited(retry_after) => {
                return LocalReply::new(429)
                    .header("retry-after", retry_after.to_string())
                    .header("content-type", "text/plain")
                    .body("rate limit exceeded")
                    .details("key_auth_rate_limited");
            }
        };
        LocalReply::new(status)
            .header("www-authenticate", "Key")
            .header("content-type", "text/plain")
            .body(body)
            .details(details)
    }
}

impl Plugin for KeyAuthRedis {
    type Root = KeyAuth;

    /// Redis is down, slow or answers nonsense: refuse, never let the request through.
    const ERROR_STATUS: u16 = 503;

    fn new(root: &Rc<KeyAuth>) -> Self {
        KeyAuthRedis {
            root: Rc::clone(root),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        // First: only this plugin names the consumer, on every path.
        let header = &self.root.config.consumer_header;
        {
            let mut headers = req.headers_mut();
            headers.try_remove(header)?;
            headers.try_remove(&header.replace('-', "_"))?;
        }

        match self.check(req).await? {
            Ok(consumer) => {
                req.headers_mut()
                    .try_insert(&self.root.config.consumer_header, &consumer)?;
                Ok(Flow::Continue)
            }
            Err(denied) => Ok(denied.reply().into()),
        }
    }
}

impl KeyAuthRedis {
    /// The consumer of the request's key, or why there is none.
    async fn check(&self, req: &Request<'_>) -> Result<Result<String, Denied>, Error> {
        let key = match self.key(req) {
            Ok(key) => key,
            Err(denied) => return Ok(Err(denied)),
        };
        let consumer = match self.consumer(&key).await? {
            Some(consumer) => consumer,
            None => return Ok(Err(Denied::Invalid)),
        };
        if let Some(limit) = self.root.config.rate_limit
            && let Some(retry_after) = self.over_limit(&consumer, limit).await?
        {
            return Ok(Err(Denied::Limited(retry_after)));
        }
        Ok(Ok(consumer))
    }

    /// The API key: from the first configured header present.
    fn key(&self, req: &Request<'_>) -> Result<String, Denied> {
        for name in &self.root.config.keys {
            let all = req.headers();
            let values: Vec<&[u8]> = all.get_all(name).collect();
            match values.as_slice() {
                [] => continue,
                [value] => {
                    let bytes: &[u8] = value;
                    if bytes.is_empty() {
                        return Err(Denied::Missing);
                    }
                    if bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
                        return Err(Denied::Malformed);
                    }
                    return String::from_utf8(bytes.to_vec()).map_err(|_| Denied::Malformed);
                }
                // Two keys: which one would the upstream believe? Neither.
                _ => return Err(Denied::Malformed),
            }
        }
        Err(Denied::Missing)
    }

    /// The key's consumer: from the cache, or from Redis.
    async fn consumer(&self, key: &str) -> Result<Option<String>, Error> {
        let now = proxy_async::now();
        let cached = self
            .root
            .cache
            .borrow()
            .get(key)
            .filter(|entry| entry.until > now)
            .map(|entry| entry.consumer.clone());
        if let Some(consumer) = cached {
            return Ok(Some(consumer));
        }
        let stored = self
            .root
            .redis
            .get(format!("{}{key}", self.root.config.key_prefix))
            .await
            .map_err(redis_failure)?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let consumer = String::from_utf8(stored)
            .ok()
            .filter(|name| !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_graphic()))
            .ok_or_else(|| {
                Error::new("redis: the stored consumer is empty or not a header value")
            })?;
        if self.root.config.cache_ttl_ms > 0 {
            let mut cache = self.root.cache.borrow_mut();
            if cache.len() < MAX_CACHED_KEYS || cache.contains_key(key) {
                cache.insert(
                    key.to_string(),
                    Cached {
                        consumer: consumer.clone(),
                        until: now + Duration::from_millis(self.root.config.cache_ttl_ms),
                    },
                );
            }
        }
        Ok(Some(consumer))
    }

    /// `Some(seconds to wait)` when the consumer is over its limit in this window.
    async fn over_limit(&self, consumer: &str, limit: RateLimit) -> Result<Option<u64>, Error> {
        let now = proxy_async::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let window = now / limit.window_seconds;
        let counter = format!("{}{consumer}:{window}", self.root.config.rate_prefix);
        let count = self
            .root
            .redis
            .incr(&counter)
            .await
            .map_err(redis_failure)?;
        if count == 1 {
            // Twice the window: the counter outlives its window a little, never a lot.
            self.root
                .redis
                .expire(&counter, limit.window_seconds.saturating_mul(2))
                .await
                .map_err(redis_failure)?;
        }
        if u64::try_from(count).unwrap_or(0) > limit.requests {
            let retry_after = (window + 1) * limit.window_seconds - now;
            return Ok(Some(retry_after.max(1)));
        }
        Ok(None)
    }
}

fn redis_failure(error: RedisError) -> Error {
    Error::new(format_args!("redis: {error}"))
}

proxy_async::main!(KeyAuthRedis);
