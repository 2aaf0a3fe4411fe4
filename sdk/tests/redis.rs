//! Redis commands awaited from a hook, against a real `redis-server` each test starts (the
//! emulated proxy performs the plugin's calls on it), and the failures a plugin must see as
//! typed errors: server errors, an unreachable Redis, a proxy that refuses the client, a
//! `NOAUTH` connection, a reply that is not RESP, a stream that ends mid-command.

use std::rc::Rc;

use proxy_async::redis::{RedisClient, RedisError, RedisValue};
use proxy_async::testing::{Action, PluginTest, RedisServer};
use proxy_async::{ConfigError, Error, Flow, LocalReply, Plugin, PluginConfig, Request};

const CLUSTER: &str = "outbound|6379||redis.static";

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Config {
    cluster: String,
    password: String,
    database: u32,
    unbuffered: bool,
    /// Initialize the client at configuration time, as Higress's Go plugins do.
    init_at_configure: bool,
}

impl Config {
    fn client(&self) -> RedisClient {
        let client = RedisClient::new(self.cluster.as_str())
            .with_password(self.password.as_str())
            .with_database(self.database);
        if self.unbuffered {
            client.without_buffer()
        } else {
            client
        }
    }
}

impl PluginConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.init_at_configure {
            // A Redis that is not there yet must not stop the plugin: commands init lazily.
            let _ = self.client().init();
        }
        Ok(())
    }
}

/// Runs the Redis scenario the path names and replies with what it found: 200 and one line
/// per command, or the error's kind.
struct RedisPlugin {
    redis: RedisClient,
}

impl Plugin for RedisPlugin {
    type Root = Config;

    fn new(config: &Rc<Config>) -> Self {
        RedisPlugin {
            redis: config.client(),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let path = req.path().unwrap_or_default();
        Ok(match scenario(&self.redis, &path).await {
            Ok(lines) => LocalReply::new(200).body(lines.join("\n")).into(),
            Err(error) => error_reply(&error).into(),
        })
    }
}

/// What a user of the proxy sees for each error.
fn error_reply(error: &RedisError) -> LocalReply {
    let (status, body) = match error {
        RedisError::Server { .. } => (502, format!("server {}", error.kind().unwrap_or("?"))),
        RedisError::NoResponse { .. } => (503, "no response".to_string()),
        RedisError::NotReady { status, .. } => (503, format!("not ready {status}")),
        RedisError::Refused { status, .. } => (503, format!("refused {status}")),
        RedisError::Decode { .. } => (502, "not RESP".to_string()),
        RedisError::UnexpectedReply { command, .. } => (502, format!("unexpected {command}")),
        other => (500, other.to_string()),
    };
    LocalReply::new(status).body(body)
}

fn text(bytes: Option<Vec<u8>>) -> String {
    bytes.map_or_else(
        || "nil".to_string(),
        |bytes| String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn texts(items: Vec<Vec<u8>>) -> String {
    let mut items: Vec<String> = items.into_iter().map(|item| text(Some(item))).collect();
    items.sort();
    items.join(",")
}

async fn scenario(redis: &RedisClient, path: &str) -> Result<Vec<String>, RedisError> {
    let mut out = Vec::new();
    match path {
        "/strings" => {
            redis.set("s", "hello").await?;
            out.push(format!("get {}", text(redis.get("s").await?)));
            out.push(format!("get missing {}", text(redis.get("missing").await?)));
            out.push(format!("setnx taken {}", redis.setnx("s", "x", 0).await?));
            out.push(format!("setnx free {}", redis.setnx("s2", "x", 60).await?));
            redis.setex("t", "v", 100).await?;
            out.push(format!("ttl {}", redis.command(&["TTL", "t"]).await?));
            out.push(format!("incr {}", redis.incr("n").await?));
            out.push(format!("incrby {}", redis.incrby("n", 10).await?));
            out.push(format!("decr {}", redis.decr("n").await?));
            out.push(format!("decrby {}", redis.decrby("n", 5).await?));
            redis.mset(&[("m1", "a"), ("m2", "b")]).await?;
            let values = redis.mget(&["m1", "missing", "m2"]).await?;
            let values: Vec<String> = values.into_iter().map(text).collect();
            out.push(format!("mget {}", values.join(",")));
            out.push(format!("exists {}", redis.exists("m1").await?));
            out.push(format!("expire {}", redis.expire("m1", 100).await?));
            out.push(format!("persist {}", redis.persist("m1").await?));
            out.push(format!("del {}", redis.del("m1").await?));
            out.push(format!("exists after del {}", redis.exists("m1").await?));
        }
        "/hashes" => {
            out.push(format!("hset new {}", redis.hset("h", "f1", "v1").await?));
            out.push(format!("hset again {}", redis.hset("h", "f1", "v1").await?));
            redis.hmset("h", &[("f2", "v2"), ("f3", "3")]).await?;
            out.push(format!("hget {}", text(redis.hget("h", "f2").await?)));
            out.push(format!("hincrby {}", redis.hincrby("h", "f3", 4).await?));
            out.push(format!(
                "hincrbyfloat {}",
                redis.hincrbyfloat("h", "f3", 0.5).await?
            ));
            let mut all: Vec<String> = redis
                .hgetall("h")
                .await?
                .into_iter()
                .map(|(field, value)| format!("{}={}", text(Some(field)), text(Some(value))))
                .collect();
            all.sort();
            out.push(format!("hgetall {}", all.join(",")));
            out.push(format!("hkeys {}", texts(redis.hkeys("h").await?)));
            let values: Vec<String> = redis
                .hmget("h", &["f1", "nope"])
                .await?
                .into_iter()
                .map(text)
                .collect();
            out.push(format!("hmget {}", values.join(",")));
            out.push(format!("hdel {}", redis.hdel("h", &["f1", "nope"]).await?));
            out.push(format!("hexists {}", redis.hexists("h", "f1").await?));
            out.push(format!("hlen {}", redis.hlen("h").await?));
        }
        "/lists" => {
            out.push(format!(
                "rpush {}",
                redis.rpush("l", &["a", "b", "c"]).await?
            ));
            out.push(format!("lpush {}", redis.lpush("l", &["z"]).await?));
            let items: Vec<String> = redis
                .lrange("l", 0, -1)
                .await?
                .into_iter()
                .map(|item| text(Some(item)))
                .collect();
            out.push(format!("lrange {}", items.join(",")));
            out.push(format!("lpop {}", text(redis.lpop("l").await?)));
            out.push(format!("rpop {}", text(redis.rpop("l").await?)));
            out.push(format!("llen {}", redis.llen("l").await?));
            out.push(format!("lindex {}", text(redis.lindex("l", -1).await?)));
            out.push(format!(
                "linsert {}",
                redis.linsert_after("l", "a", "x").await?
            ));
            out.push(format!("lrem {}", redis.lrem("l", 0, "x").await?));
            out.push(format!("lpop empty {}", text(redis.lpop("empty").await?)));
        }
        "/sets" => {
            out.push(format!(
                "sadd {}",
                redis.sadd("s1", &["a", "b", "c"]).await?
            ));
            out.push(format!("sadd again {}", redis.sadd("s1", &["a"]).await?));
            out.push(format!("sismember {}", redis.sismember("s1", "b").await?));
            out.push(format!("srem {}", redis.srem("s1", &["b"]).await?));
            out.push(format!("smembers {}", texts(redis.smembers("s1").await?)));
            out.push(format!("scard {}", redis.scard("s1").await?));
            redis.sadd("s2", &["c", "d"]).await?;
            out.push(format!(
                "sinter {}",
                texts(redis.sinter(&["s1", "s2"]).await?)
            ));
            out.push(format!(
                "sunion {}",
                texts(redis.sunion(&["s1", "s2"]).await?)
            ));
            out.push(format!(
                "sdiff {}",
                texts(redis.sdiff(&["s1", "s2"]).await?)
            ));
            out.push(format!(
                "sunionstore {}",
                redis.sunionstore("s3", &["s1", "s2"]).await?
            ));
        }
        "/zsets" => {
            let members = [(1.0, "a"), (2.5, "b"), (3.0, "c")];
            out.push(format!("zadd {}", redis.zadd("z", &members).await?));
            out.push(format!("zscore {:?}", redis.zscore("z", "b").await?));
            out.push(format!(
                "zscore missing {:?}",
                redis.zscore("z", "x").await?
            ));
            out.push(format!("zincrby {}", redis.zincrby("z", 1.5, "a").await?));
            let range: Vec<String> = redis
                .zrange("z", 0, -1)
                .await?
                .into_iter()
                .map(|member| text(Some(member)))
                .collect();
            out.push(format!("zrange {}", range.join(",")));
            out.push(format!("zrank {:?}", redis.zrank("z", "c").await?));
            out.push(format!("zrevrank {:?}", redis.zrevrank("z", "c").await?));
            out.push(format!(
                "zcount all {}",
                redis.zcount("z", f64::NEG_INFINITY, f64::INFINITY).await?
            ));
            out.push(format!("zcount {}", redis.zcount("z", 2.0, 2.6).await?));
            out.push(format!("zrem {}", redis.zrem("z", &["a"]).await?));
            out.push(format!("zcard {}", redis.zcard("z").await?));
        }
        "/eval" => {
            redis.set("e", "stored").await?;
            let script = "return {KEYS[1], ARGV[1], 42, redis.call('get', KEYS[1]), false}";
            out.push(format!(
                "eval {}",
                redis.eval(script, &["e"], &["arg"]).await?
            ));
            let counter = "return redis.call('incrby', KEYS[1], ARGV[1])";
            let value = redis.eval(counter, &["c"], &["5"]).await?;
            out.push(format!("eval incrby {:?}", value.as_integer()));
        }
        "/wrongtype" => {
            redis.set("wt", "a string").await?;
            redis.lpush("wt", &["x"]).await?;
            out.push("unreachable".to_string());
        }
        "/counter" => out.push(format!("counter {}", redis.incr("counter").await?)),
        "/joined" => {
            redis.mset(&[("j1", "one"), ("j2", "two")]).await?;
            let (first, second) = futures::join!(redis.get("j1"), redis.get("j2"));
            out.push(format!("joined {} {}", text(first?), text(second?)));
        }
        _ => out.push(format!("ping {}", redis.command(&["PING"]).await?)),
    }
    Ok(out)
}

fn config(extra: &str) -> String {
    format!(r#"{{"cluster": "{CLUSTER}"{extra}}}"#)
}

fn start(server: &RedisServer, extra: &str) -> PluginTest<RedisPlugin> {
    PluginTest::builder()
        .config(&config(extra))
        .redis_server(CLUSTER, server.addr())
        .build()
        .expect("the plugin accepts its configuration")
}

/// Sends a request for `path` and answers its Redis calls from the server; returns the local
/// reply's status and body.
fn request(test: &PluginTest<RedisPlugin>, path: &str) -> (u16, String) {
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":path", path)], true),
        Action::Pause,
        "the hook awaits Redis"
    );
    assert!(test.run_redis() > 0);
    let reply = stream.local_reply().expect("the plugin replies");
    stream.end();
    assert_eq!((test.live_tasks(), test.awaited_calls()), (0, 0));
    (reply.status, reply.body_str())
}

fn lines(body: &str) -> Vec<&str> {
    body.lines().collect()
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn string_and_key_commands_return_what_redis_holds() {
    let server = RedisServer::start();
    let test = start(&server, "");
    let (status, body) = request(&test, "/strings");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        lines(&body),
        [
            "get hello",
            "get missing nil",
            "setnx taken false",
            "setnx free true",
            "ttl (integer) 100",
            "incr 1",
            "incrby 11",
            "decr 10",
            "decrby 5",
            "mget a,nil,b",
            "exists true",
            "expire true",
            "persist true",
            "del true",
            "exists after del false",
        ]
    );
    // The commands reached the real server.
    assert_eq!(server.command(&["GET", "n"]), b"$1\r\n5\r\n");
    let ttl = RedisValue::decode(&server.command(&["TTL", "s2"])).unwrap();
    assert!(
        ttl.as_integer().is_some_and(|ttl| (1..=60).contains(&ttl)),
        "{ttl}"
    );
    // One client, initialized by the first command with Higress's default options; every
    // later command reused it.
    let inits = test.redis_inits();
    assert_eq!(inits.len(), 1);
    assert_eq!(
        inits[0].upstream(),
        "outbound|6379||redis.static?buffer_flush_timeout=3&max_buffer_size_before_flush=1024"
    );
    assert_eq!(inits[0].timeout(), RedisClient::DEFAULT_TIMEOUT);
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn hash_list_set_and_sorted_set_commands_return_typed_values() {
    let server = RedisServer::start();
    let test = start(&server, "");
    let (status, body) = request(&test, "/hashes");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        lines(&body),
        [
            "hset new true",
            "hset again false",
            "hget v2",
            "hincrby 7",
            "hincrbyfloat 7.5",
            "hgetall f1=v1,f2=v2,f3=7.5",
            "hkeys f1,f2,f3",
            "hmget v1,nil",
            "hdel 1",
            "hexists false",
            "hlen 2",
        ]
    );
    let (status, body) = request(&test, "/lists");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        lines(&body),
        [
            "rpush 3",
            "lpush 4",
            "lrange z,a,b,c",
            "lpop z",
            "rpop c",
            "llen 2",
            "lindex b",
            "linsert 3",
            "lrem 1",
            "lpop empty nil",
        ]
    );
    let (status, body) = request(&test, "/sets");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        lines(&body),
        [
            "sadd 3",
            "sadd again 0",
            "sismember true",
            "srem 1",
            "smembers a,c",
            "scard 2",
            "sinter c",
            "sunion a,c,d",
            "sdiff a",
            "sunionstore 3",
        ]
    );
    let (status, body) = request(&test, "/zsets");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        lines(&body),
        [
            "zadd 3",
            "zscore Some(2.5)",
            "zscore missing None",
            "zincrby 2.5",
            "zrange a,b,c",
            "zrank Some(2)",
            "zrevrank Some(0)",
            "zcount all 3",
            "zcount 2",
            "zrem 1",
            "zcard 2",
        ]
    );
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn eval_returns_the_scripts_reply() {
    let server = RedisServer::start();
    let test = start(&server, "");
    let (status, body) = request(&test, "/eval");
    assert_eq!(status, 200, "{body}");
    // Lua's `false` is Redis's nil.
    assert_eq!(
        lines(&body),
        [
            r#"eval ["e", "arg", (integer) 42, "stored", (nil)]"#,
            "eval incrby Some(5)",
        ]
    );
}

#[test]
fn commands_joined_in_one_hook_are_in_flight_together() {
    let test = PluginTest::<RedisPlugin>::new(&config("")).unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/joined")], true);
    // MSET first, then both GETs at once.
    assert_eq!(test.redis_calls().len(), 1);
    test.respond_redis(&test.redis_calls()[0], b"+OK\r\n");
    let pending = test.redis_calls();
    let args: Vec<Vec<String>> = pending.iter().map(|call| call.args().unwrap()).collect();
    assert_eq!(args, [["GET", "j1"], ["GET", "j2"]]);
    assert_eq!(test.awaited_calls(), 2);
    // Answered in the opposite order: each future gets its own reply.
    test.respond_redis(
        &pending[1],
        RedisValue::BulkString(b"two".to_vec()).to_resp(),
    );
    test.respond_redis(
        &pending[0],
        RedisValue::BulkString(b"one".to_vec()).to_resp(),
    );
    assert_eq!(stream.local_reply().unwrap().body_str(), "joined one two");
    assert_eq!(stream.resumed_requests(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn a_server_error_is_a_typed_error_the_hook_can_answer() {
    let server = RedisServer::start();
    let test = start(&server, "");
    let (status, body) = request(&test, "/wrongtype");
    assert_eq!((status, body.as_str()), (502, "server WRONGTYPE"));
    assert_eq!(server.command(&["GET", "wt"]), b"$8\r\na string\r\n");
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn an_unreachable_redis_is_no_response() {
    let mut server = RedisServer::start();
    let test = start(&server, "");
    assert_eq!(request(&test, "/counter"), (200, "counter 1".to_string()));
    server.stop();
    assert_eq!(request(&test, "/counter"), (503, "no response".to_string()));
    // A cluster the test did not map to any server cannot connect either.
    let unmapped = PluginTest::<RedisPlugin>::new(&config("")).unwrap();
    assert_eq!(
        request(&unmapped, "/counter"),
        (503, "no response".to_string())
    );
}

#[test]
fn a_cluster_the_proxy_does_not_know_is_not_ready_and_sends_nothing() {
    let test = PluginTest::<RedisPlugin>::builder()
        .config(&config(""))
        .clusters(&["outbound|80||other"])
        .build()
        .unwrap();
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":path", "/counter")], true),
        Action::Pause,
        "the reply is sent after the hook returns"
    );
    let reply = stream.local_reply().unwrap();
    assert_eq!(
        (reply.status, reply.body_str().as_str()),
        (503, "not ready BAD_ARGUMENT")
    );
    assert!(test.redis_calls().is_empty());
    assert!(test.redis_inits().is_empty());
    assert!(
        test.logs_at(log::Level::Warn)
            .iter()
            .any(|line| line.contains("the next command will try again")),
        "{:?}",
        test.logs()
    );
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn a_failed_init_is_retried_by_the_next_command() {
    let server = RedisServer::start();
    let test = start(&server, r#", "database": 3"#);
    // The proxy cannot set up the client: the command fails, and nothing is sent.
    test.refuse_redis_init(true);
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/counter")], true);
    assert_eq!(
        stream.local_reply().unwrap().body_str(),
        "not ready BAD_ARGUMENT"
    );
    assert!(test.redis_calls().is_empty());
    stream.end();
    // Once the proxy accepts it, the next command initializes the client and goes out.
    test.refuse_redis_init(false);
    assert_eq!(request(&test, "/counter"), (200, "counter 1".to_string()));
    let inits = test.redis_inits();
    assert_eq!(inits.len(), 1);
    assert_eq!(inits[0].database(), 3);
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn a_client_initialized_at_configuration_serves_every_stream() {
    let server = RedisServer::start();
    let test = start(&server, r#", "initAtConfigure": true"#);
    assert_eq!(test.redis_inits().len(), 1, "initialized by on_configure");
    assert_eq!(request(&test, "/counter"), (200, "counter 1".to_string()));
    assert_eq!(request(&test, "/counter"), (200, "counter 2".to_string()));
    // Each stream made its own client; the proxy's client was set up once.
    assert_eq!(test.redis_inits().len(), 1);
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn options_reach_the_proxy_and_the_database_is_used() {
    let server = RedisServer::with_password("s3cret");
    let test = start(
        &server,
        r#", "password": "s3cret", "database": 2, "unbuffered": true"#,
    );
    assert_eq!(request(&test, "/counter"), (200, "counter 1".to_string()));
    let init = &test.redis_inits()[0];
    assert_eq!(
        init.upstream(),
        "outbound|6379||redis.static?db=2&buffer_flush_timeout=0&max_buffer_size_before_flush=0"
    );
    assert_eq!((init.username(), init.password()), ("", "s3cret"));
    // The counter is in database 2, not in 0.
    assert_eq!(server.command(&["EXISTS", "counter"]), b":0\r\n");
    assert_eq!(
        server.command(&[
            "EVAL",
            "redis.call('select', 2) return redis.call('get', KEYS[1])",
            "1",
            "counter"
        ]),
        b"$1\r\n1\r\n"
    );
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn a_wrong_password_is_a_noauth_error_after_one_retry() {
    let server = RedisServer::with_password("right");
    let test = start(&server, r#", "password": "wrong""#);
    assert_eq!(
        request(&test, "/counter"),
        (502, "server NOAUTH".to_string())
    );
    // NOAUTH made the client initialize again and send the command once more.
    assert_eq!(test.redis_inits().len(), 2);
    assert_eq!(server.command(&["EXISTS", "counter"]), b":0\r\n");
}

#[test]
fn noauth_reinitializes_the_client_and_retries_once() {
    let test = PluginTest::<RedisPlugin>::new(&config("")).unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/counter")], true);
    let first = test.redis_calls();
    assert_eq!(test.redis_inits().len(), 1);
    test.respond_redis(&first[0], b"-NOAUTH Authentication required.\r\n");
    // A new client, and the same command again.
    assert_eq!(test.redis_inits().len(), 2);
    let retry = test.redis_calls();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].query(), first[0].query());
    assert_ne!(retry[0].token(), first[0].token());
    assert!(stream.local_reply().is_none(), "the hook still awaits");
    test.respond_redis(&retry[0], b":7\r\n");
    assert_eq!(stream.local_reply().unwrap().body_str(), "counter 7");
}

#[test]
fn a_reply_that_is_not_resp_or_not_the_commands_type_is_a_typed_error() {
    let test = PluginTest::<RedisPlugin>::new(&config("")).unwrap();
    for (reply, body) in [
        (b"!garbage\r\n".as_slice(), "not RESP"),
        (b"$5\r\nab".as_slice(), "not RESP"),
        (b"+OK\r\n".as_slice(), "unexpected INCR"),
    ] {
        let stream = test.stream();
        stream.send_request_headers(&[(":path", "/counter")], true);
        test.respond_redis(&test.redis_calls()[0], reply);
        assert_eq!(stream.local_reply().unwrap().body_str(), body);
        stream.end();
    }
    assert_eq!((test.live_tasks(), test.awaited_calls()), (0, 0));
}

#[test]
#[cfg_attr(miri, ignore = "Miri runs no processes and opens no sockets")]
fn a_stream_that_ends_mid_command_drops_it_and_ignores_the_late_reply() {
    let server = RedisServer::start();
    let test = start(&server, "");
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/counter")], true);
    assert_eq!((test.live_tasks(), test.awaited_calls()), (1, 1));
    // The client goes away while the hook awaits Redis.
    stream.end();
    assert_eq!((test.live_tasks(), test.awaited_calls()), (0, 0));
    // The proxy still delivers the reply; nothing waits for it.
    assert_eq!(test.run_redis(), 1);
    assert_eq!(stream.local_reply(), None);
    assert!(
        test.logs_at(log::Level::Debug)
            .iter()
            .any(|line| line.contains("ignored: nothing waits for it")),
        "{:?}",
        test.logs()
    );
    // A reply for a token nobody ever used is ignored the same way.
    test.respond_redis_to_token(9_999, b"+OK\r\n");
    // The next stream works.
    assert_eq!(request(&test, "/counter"), (200, "counter 2".to_string()));
}

#[test]
fn commands_outside_a_callback_fail_without_a_host() {
    let client = RedisClient::new(CLUSTER);
    assert_eq!(client.init(), Err(RedisError::NoHost));
    assert!(!client.is_ready());
    let mut get = std::pin::pin!(client.get("k"));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    assert_eq!(
        get.as_mut().poll(&mut context),
        std::task::Poll::Ready(Err(RedisError::NoHost))
    );
}
