//! Higress's Redis extension to the ABI (`proxy_redis_init`, `proxy_redis_call`, buffer 9,
//! `proxy_on_redis_call_response`): what the proxy records, and the real-Redis mode in which it
//! performs queued calls against a `redis-server`.
//!
//! Higress's Envoy keeps one Redis client per cluster, created by `proxy_redis_init` (its
//! upstream is `cluster?db=N&buffer_flush_timeout=..&max_buffer_size_before_flush=..`) and used
//! by `proxy_redis_call` under the plain cluster name. The emulator does the same: a call to a
//! cluster that was never initialized is refused. In real-Redis mode each cluster a test maps to
//! a server address gets one blocking connection, opened on first use with the credentials and
//! database of the last init (a new init reconnects, as a new client would), and each call
//! writes its query and reads exactly one reply: deterministic, one call at a time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::state::ProxyState;
use proxy_async_abi::Status;

/// A `proxy_redis_init` the plugin made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisInit {
    pub(crate) upstream: String,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) timeout: Duration,
}

impl RedisInit {
    /// The upstream as the plugin passed it, with its `?` parameters.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The cluster: the upstream without its parameters.
    pub fn cluster(&self) -> &str {
        split_upstream(&self.upstream).0
    }

    /// A parameter of the upstream (`db`, `buffer_flush_timeout`,
    /// `max_buffer_size_before_flush`), if the plugin passed it.
    pub fn param(&self, name: &str) -> Option<&str> {
        split_upstream(&self.upstream)
            .1
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// The database (`db`), 0 when absent, as Envoy reads it.
    pub fn database(&self) -> u32 {
        self.param("db").and_then(|db| db.parse().ok()).unwrap_or(0)
    }

    /// The user name; empty for none.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password; empty for none.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The operation timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A Redis command the plugin sent with `proxy_redis_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisCall {
    pub(crate) token: u32,
    pub(crate) context_id: u32,
    pub(crate) cluster: String,
    pub(crate) query: Vec<u8>,
}

impl RedisCall {
    /// The token the proxy returned for it.
    pub fn token(&self) -> u32 {
        self.token
    }

    /// The context that was current when it was sent.
    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    /// The cluster it went to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The query as sent (RESP).
    pub fn query(&self) -> &[u8] {
        &self.query
    }

    /// The command's words, if the query is a RESP array of bulk strings (what clients send),
    /// lossy as text: `["SET", "key", "value"]`.
    pub fn args(&self) -> Option<Vec<String>> {
        let mut rest = self.query.strip_prefix(b"*")?;
        let (count, after) = read_line(rest)?;
        rest = after;
        let count: usize = std::str::from_utf8(count).ok()?.parse().ok()?;
        let mut args = Vec::with_capacity(count.min(rest.len()));
        for _ in 0..count {
            rest = rest.strip_prefix(b"$")?;
            let (len, after) = read_line(rest)?;
            let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
            let arg = after.get(..len)?;
            rest = after.get(len..)?.strip_prefix(b"\r\n")?;
            args.push(String::from_utf8_lossy(arg).into_owned());
        }
        rest.is_empty().then_some(args)
    }
}

/// `(line, rest)` for the bytes up to the first CRLF.
fn read_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.windows(2).position(|pair| pair == b"\r\n")?;
    Some((&bytes[..end], &bytes[end + 2..]))
}

fn split_upstream(upstream: &str) -> (&str, &str) {
    upstream.split_once('?').unwrap_or((upstream, ""))
}

pub(crate) struct RedisCallRecord {
    pub(crate) call: RedisCall,
    pub(crate) answered: bool,
}

/// What the proxy knows about Redis.
#[derive(Default)]
pub(crate) struct RedisState {
    pub(crate) inits: Vec<RedisInit>,
    pub(crate) calls: Vec<RedisCallRecord>,
    // The reply of the callback running now (buffer 9).
    pub(crate) response: Option<Vec<u8>>,
    // The last init of each cluster: its client.
    clients: BTreeMap<String, RedisInit>,
    refuse_init: bool,
    servers: BTreeMap<String, SocketAddr>,
    connections: BTreeMap<String, TcpStream>,
}

/// The largest reply the real-Redis mode reads; a bigger one fails the call.
const MAX_REPLY: usize = 64 * 1024 * 1024;

impl ProxyState {
    /// What `proxy_redis_init` does (see the [`Hostcalls`](proxy_async_abi::Hostcalls) impl).
    pub(crate) fn init_redis_client(&mut self, init: RedisInit) -> Result<(), Status> {
        let cluster = init.cluster().to_string();
        if self.redis.refuse_init {
            return Err(Status::BadArgument);
        }
        self.known_cluster(&cluster)?;
        self.redis.inits.push(init.clone());
        // A new client has new connections, authenticated with the new credentials.
        self.redis.connections.remove(&cluster);
        self.redis.clients.insert(cluster, init);
        Ok(())
    }

    /// What `proxy_redis_call` does (see the [`Hostcalls`](proxy_async_abi::Hostcalls) impl).
    pub(crate) fn queue_redis_call(&mut self, cluster: &str, query: &[u8]) -> Result<u32, Status> {
        self.known_cluster(cluster)?;
        if !self.redis.clients.contains_key(cluster) {
            return Err(Status::BadArgument);
        }
        let token = self.next_token();
        self.redis.calls.push(RedisCallRecord {
            call: RedisCall {
                token,
                context_id: self.current,
                cluster: cluster.to_string(),
                query: query.to_vec(),
            },
            answered: false,
        });
        Ok(token)
    }

    /// While `refuse` holds, `proxy_redis_init` answers BAD_ARGUMENT: a Redis the proxy cannot
    /// set up a client for (yet).
    pub fn refuse_redis_init(&mut self, refuse: bool) {
        self.redis.refuse_init = refuse;
    }

    /// Every `proxy_redis_init` that succeeded, in order.
    pub fn redis_inits(&self) -> Vec<RedisInit> {
        self.redis.inits.clone()
    }

    /// Real-Redis mode: the calls to `cluster` go to the `redis-server` at `server` (see
    /// [`Proxy::run_redis`](crate::Proxy::run_redis)).
    pub fn set_redis_server(&mut self, cluster: &str, server: SocketAddr) {
        self.redis.servers.insert(cluster.to_string(), server);
        self.redis.connections.remove(cluster);
    }

    /// Performs `call` against the server its cluster maps to and returns the reply's bytes;
    /// `None` when there is no reply: no server for the cluster, the server is down, or the
    /// connection failed or timed out (the connection is then dropped, and the next call
    /// reconnects).
    pub fn exchange_redis(&mut self, call: &RedisCall) -> Option<Vec<u8>> {
        let server = *self.redis.servers.get(&call.cluster)?;
        let client = self.redis.clients.get(&call.cluster)?.clone();
        let connection = match self.redis.connections.remove(&call.cluster) {
            Some(connection) => connection,
            None => connect(server, &client).ok()?,
        };
        let mut connection = connection;
        let reply = roundtrip(&mut connection, &call.query).ok()?;
        self.redis
            .connections
            .insert(call.cluster.clone(), connection);
        Some(reply)
    }
}

/// Opens a connection as the client set up by `init` does: authenticated when it has a
/// password, on its database. Their replies are not checked: a failed `AUTH` shows as the
/// server's `NOAUTH` error on the plugin's command, as in the proxy.
fn connect(server: SocketAddr, init: &RedisInit) -> std::io::Result<TcpStream> {
    let timeout = if init.timeout.is_zero() {
        Duration::from_secs(1)
    } else {
        init.timeout
    };
    let mut connection = TcpStream::connect_timeout(&server, timeout)?;
    connection.set_read_timeout(Some(timeout))?;
    connection.set_write_timeout(Some(timeout))?;
    connection.set_nodelay(true)?;
    if !init.password.is_empty() {
        let mut auth = vec!["AUTH".as_bytes()];
        if !init.username.is_empty() {
            auth.push(init.username.as_bytes());
        }
        auth.push(init.password.as_bytes());
        roundtrip(&mut connection, &command(&auth))?;
    }
    let database = init.database();
    if database != 0 {
        let database = database.to_string();
        roundtrip(
            &mut connection,
            &command(&[b"SELECT".as_slice(), database.as_bytes()]),
        )?;
    }
    Ok(connection)
}

/// A command as clients send it: a RESP array of bulk strings.
pub(crate) fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Writes `query` and reads one complete reply.
pub(crate) fn roundtrip(connection: &mut TcpStream, query: &[u8]) -> std::io::Result<Vec<u8>> {
    connection.write_all(query)?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match reply_len(&reply) {
            Ok(Some(len)) if len == reply.len() => return Ok(reply),
            Ok(Some(_)) => return Err(invalid("bytes after the reply")),
            Ok(None) => {}
            Err(reason) => return Err(invalid(reason)),
        }
        if reply.len() > MAX_REPLY {
            return Err(invalid("reply too large"));
        }
        let read = connection.read(&mut chunk)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        reply.extend_from_slice(&chunk[..read]);
    }
}

fn invalid(reason: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason)
}

/// The length of the complete RESP2 reply at the start of `bytes`; `None` while incomplete.
/// Only frames the reply (the plugin decodes it), so it checks no more than it needs to.
pub(crate) fn reply_len(bytes: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut pos = 0;
    // Values still to read: 1 for the reply, plus the elements of each array header met.
    let mut pending: u64 = 1;
    while pending > 0 {
        let Some(rest) = bytes.get(pos..) else {
            return Ok(None);
        };
        let Some((line, _)) = read_line(rest) else {
            return Ok(None);
        };
        let Some((&kind, header)) = line.split_first() else {
            return Err("empty line");
        };
        pos += line.len() + 2;
        pending -= 1;
        let length = || -> Result<i64, &'static str> {
            std::str::from_utf8(header)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or("invalid length")
        };
        match kind {
            b'+' | b'-' | b':' => {}
            b'$' => {
                let len = length()?;
                if len >= 0 {
                    let len = usize::try_from(len).map_err(|_| "invalid length")?;
                    pos = pos.saturating_add(len).saturating_add(2);
                    if bytes.len() < pos {
                        return Ok(None);
                    }
                }
            }
            b'*' => {
                let len = length()?;
                if len > 0 {
                    pending = pending.saturating_add(len.unsigned_abs());
                }
            }
            _ => return Err("unknown reply type"),
        }
    }
    Ok(Some(pos))
}

#[cfg(test)]
mod tests {
    use proxy_async_abi::Hostcalls;

    use super::*;

    #[test]
    fn frames_replies() {
        assert_eq!(reply_len(b"+OK\r\n"), Ok(Some(5)));
        assert_eq!(reply_len(b"+OK\r"), Ok(None));
        assert_eq!(reply_len(b"$3\r\nabc\r\n"), Ok(Some(9)));
        assert_eq!(reply_len(b"$3\r\nab"), Ok(None));
        assert_eq!(reply_len(b"$-1\r\n"), Ok(Some(5)));
        assert_eq!(reply_len(b"*2\r\n:1\r\n$1\r\na\r\n"), Ok(Some(15)));
        assert_eq!(reply_len(b"*2\r\n:1\r\n"), Ok(None));
        assert_eq!(reply_len(b"*-1\r\n"), Ok(Some(5)));
        assert_eq!(reply_len(b"?x\r\n"), Err("unknown reply type"));
        assert_eq!(reply_len(b"$x\r\n"), Err("invalid length"));
    }

    #[test]
    fn calls_to_clusters_without_a_client_are_refused() {
        let mut state = ProxyState::default();
        assert_eq!(
            state.redis_call(b"redis", b"*1\r\n$4\r\nPING\r\n"),
            Err(Status::BadArgument)
        );
        state.redis_init(b"redis?db=2", b"", b"", 5).unwrap();
        let token = state.redis_call(b"redis", b"*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(state.redis.calls[0].call.token(), token);
        assert_eq!(
            state.redis.calls[0].call.args(),
            Some(vec!["PING".to_string()])
        );
        assert_eq!(state.redis_inits()[0].database(), 2);
        assert_eq!(state.redis_inits()[0].cluster(), "redis");
        state.refuse_redis_init(true);
        assert_eq!(
            state.redis_init(b"redis", b"", b"", 0),
            Err(Status::BadArgument)
        );
    }
}
