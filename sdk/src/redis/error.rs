//! Why a Redis command failed.

use std::fmt;

use crate::host::HostStatus;
use crate::redis::resp::{RedisValue, RespError};

/// Why a Redis command failed. The cluster is in every variant, so `?` into a hook's
/// [`Error`](crate::Error) gives a log line that says which Redis.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RedisError {
    /// The proxy has no Redis: `proxy_redis_init` is Higress's extension to the ABI, absent
    /// from other proxies (a component host without it answers the same).
    Unsupported {
        /// The cluster the command was for.
        cluster: String,
    },
    /// The client is not ready: the proxy refused `proxy_redis_init` for the cluster (it does
    /// not know the cluster, or the upstream's parameters). The next command tries again.
    NotReady {
        /// The cluster.
        cluster: String,
        /// What the proxy answered the init.
        status: HostStatus,
    },
    /// The proxy refused to send the command (`proxy_redis_call`).
    Refused {
        /// The cluster.
        cluster: String,
        /// What the proxy answered.
        status: HostStatus,
    },
    /// The command got no reply: the proxy could not reach Redis, or the command timed out
    /// (the proxy's callback reported `status`, not 0). Higress's Go SDK calls this "cannot
    /// connect to redis cluster".
    NoResponse {
        /// The cluster.
        cluster: String,
        /// The status the proxy reported.
        status: u32,
    },
    /// Redis answered with an error reply: `ERR ...`, `WRONGTYPE ...`, `NOAUTH ...`.
    Server {
        /// The cluster.
        cluster: String,
        /// The error as Redis sent it, its kind first (see [`RedisError::kind`]).
        message: String,
    },
    /// Redis answered with a type the command does not return (a client or proxy bug, or a
    /// server speaking something else).
    UnexpectedReply {
        /// The cluster.
        cluster: String,
        /// The command, e.g. `GET`.
        command: String,
        /// The reply.
        reply: RedisValue,
    },
    /// The reply is not valid RESP2.
    Decode {
        /// The cluster.
        cluster: String,
        /// What is wrong with it.
        error: RespError,
    },
    /// The command was sent outside a plugin callback, where there is no proxy to send it to.
    NoHost,
}

impl RedisError {
    /// The kind of a server error: its first word (`ERR`, `WRONGTYPE`, `NOAUTH`,
    /// `NOSCRIPT`...), as Redis clients classify them; `None` for the other variants.
    pub fn kind(&self) -> Option<&str> {
        match self {
            RedisError::Server { message, .. } => message.split(' ').next(),
            _ => None,
        }
    }

    /// The cluster the command was for (`None` for [`RedisError::NoHost`]).
    pub fn cluster(&self) -> Option<&str> {
        match self {
            RedisError::Unsupported { cluster }
            | RedisError::NotReady { cluster, .. }
            | RedisError::Refused { cluster, .. }
            | RedisError::NoResponse { cluster, .. }
            | RedisError::Server { cluster, .. }
            | RedisError::UnexpectedReply { cluster, .. }
            | RedisError::Decode { cluster, .. } => Some(cluster),
            RedisError::NoHost => None,
        }
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Unsupported { cluster } => write!(
                f,
                "Redis cluster `{cluster}`: the proxy does not offer Redis (it is Higress's extension)"
            ),
            RedisError::NotReady { cluster, status } => write!(
                f,
                "Redis cluster `{cluster}` is not ready: the proxy refused to initialize its client ({status}); is the cluster configured in the proxy?"
            ),
            RedisError::Refused { cluster, status } => write!(
                f,
                "the proxy refused a command to Redis cluster `{cluster}` ({status})"
            ),
            RedisError::NoResponse { cluster, status } => write!(
                f,
                "cannot connect to redis cluster `{cluster}`: no reply (status {status}: unreachable or timed out)"
            ),
            RedisError::Server { cluster, message } => {
                write!(f, "Redis cluster `{cluster}` answered an error: {message}")
            }
            RedisError::UnexpectedReply {
                cluster,
                command,
                reply,
            } => write!(
                f,
                "Redis cluster `{cluster}` answered {command} with an unexpected reply: {reply}"
            ),
            RedisError::Decode { cluster, error } => {
                write!(f, "the reply of Redis cluster `{cluster}` is not RESP: {error}")
            }
            RedisError::NoHost => f.write_str(
                "a Redis command was sent outside a plugin callback; commands can only be sent from hooks",
            ),
        }
    }
}

impl std::error::Error for RedisError {}
