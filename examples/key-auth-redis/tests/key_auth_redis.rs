//! Behaviour of `key-auth-redis` as a gateway user sees it, against a real `redis-server` each
//! test starts (the emulated proxy performs the plugin's Redis commands on it). Every test also
//! runs against the compiled plugin, in lockstep.

use std::time::Duration;

use key_auth_redis::KeyAuthRedis;
use proxy_async::testing::{Action, PluginTest, RedisServer, TestStream};

const CLUSTER: &str = "outbound|6379||redis.static";

const CONFIG: &str = r#"{"redis": {"service_name": "redis.static"}, "cache_ttl_ms": 1000}"#;

const LIMITED: &str = r#"{"redis": {"service_name": "redis.static"}, "cache_ttl_ms": 0,
    "rate_limit": {"requests": 2, "window_seconds": 60}}"#;

/// A Redis holding the consumers `alice` (key `k-alice`) and `bob` (key `k-bob`).
fn redis() -> RedisServer {
    let server = RedisServer::start();
    server.command(&["SET", "api-key:k-alice", "alice"]);
    server.command(&["SET", "api-key:k-bob", "bob"]);
    server
}

fn plugin(server: &RedisServer, config: &str) -> PluginTest<KeyAuthRedis> {
    PluginTest::<KeyAuthRedis>::builder()
        .config(config)
        .redis_server(CLUSTER, server.addr())
        .build()
        .expect("the configuration is valid")
}

fn request<'t>(
    test: &'t PluginTest<KeyAuthRedis>,
    headers: &[(&str, &str)],
) -> TestStream<'t, KeyAuthRedis> {
    let stream = test.stream();
    let mut all = vec![
        (":method", "GET"),
        (":path", "/orders"),
        (":authority", "shop"),
    ];
    all.extend_from_slice(headers);
    stream.send_request_headers(&all, true);
    test.run_redis();
    stream
}

/// The consumer headers the upstream would see, in any spelling.
fn consumers(stream: &TestStream<'_, KeyAuthRedis>) -> Vec<String> {
    stream
        .request_headers()
        .into_iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-mse-consumer") || name == "x_mse_consumer")
        .map(|(_, value)| value)
        .collect()
}

fn assert_refused(stream: &TestStream<'_, KeyAuthRedis>, status: u16, details: &str) {
    let reply = stream.local_reply().expect("a local reply");
    assert_eq!((reply.status, reply.details.as_str()), (status, details));
    assert_eq!(stream.resumed_requests(), 0, "the request must not go on");
}

#[test]
fn a_known_key_names_its_consumer() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    let stream = request(&test, &[("x-api-key", "k-alice")]);
    assert_eq!(stream.local_reply(), None);
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(consumers(&stream), ["alice"]);
}

#[test]
fn a_missing_key_is_401_without_a_redis_command() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    let stream = request(&test, &[]);
    assert_refused(&stream, 401, "key_auth_missing");
    assert_eq!(
        stream.local_reply().unwrap().header("www-authenticate"),
        Some("Key")
    );
    assert!(test.redis_calls().is_empty());
}

#[test]
fn an_unknown_key_is_401() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    let stream = request(&test, &[("x-api-key", "k-mallory")]);
    assert_refused(&stream, 401, "key_auth_invalid");
}

#[test]
fn spoofed_consumer_headers_never_reach_the_upstream() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    let spoofs = [
        ("x-mse-consumer", "admin"),
        ("X-Mse-Consumer", "admin2"),
        ("X-MSE-CONSUMER", "admin3"),
        ("x_mse_consumer", "admin4"),
    ];
    let mut headers = spoofs.to_vec();
    headers.push(("x-api-key", "k-bob"));
    let stream = request(&test, &headers);
    assert_eq!(
        consumers(&stream),
        ["bob"],
        "exactly the plugin's one consumer header"
    );

    // And on every refusal: gone too.
    for key in [None, Some("k-mallory"), Some("bad key")] {
        let mut headers = spoofs.to_vec();
        if let Some(key) = key {
            headers.push(("x-api-key", key));
        }
        let stream = request(&test, &headers);
        assert!(stream.local_reply().is_some());
        assert!(
            consumers(&stream).is_empty(),
            "{key:?}: {:?}",
            consumers(&stream)
        );
    }
}

#[test]
fn two_keys_or_a_malformed_key_are_401_without_a_redis_command() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    let long = "k".repeat(257);
    for headers in [
        vec![("x-api-key", "k-alice"), ("x-api-key", "k-bob")],
        vec![("x-api-key", "k-alice"), ("X-Api-Key", "k-alice")],
        vec![("x-api-key", "key with spaces")],
        vec![("x-api-key", long.as_str())],
    ] {
        let stream = request(&test, &headers);
        assert_refused(&stream, 401, "key_auth_malformed");
    }
    assert!(test.redis_calls().is_empty());
}

#[test]
fn a_key_of_the_wrong_redis_type_fails_closed() {
    let server = redis();
    server.command(&["HSET", "api-key:k-hash", "consumer", "carol"]);
    let test = plugin(&server, CONFIG);
    let stream = request(&test, &[("x-api-key", "k-hash")]);
    assert_refused(&stream, 503, "plugin_error");
    assert!(
        test.logs_at(log::Level::Error)
            .iter()
            .any(|line| line.contains("WRONGTYPE")),
        "{:?}",
        test.logs()
    );
}

#[test]
fn a_stored_consumer_that_is_not_a_header_value_fails_closed() {
    let server = redis();
    server.command(&["SET", "api-key:k-evil", "eve\r\nx-admin: 1"]);
    server.command(&["SET", "api-key:k-empty", ""]);
    let test = plugin(&server, CONFIG);
    for key in ["k-evil", "k-empty"] {
        let stream = request(&test, &[("x-api-key", key)]);
        assert_refused(&stream, 503, "plugin_error");
        assert!(consumers(&stream).is_empty());
    }
}

#[test]
fn redis_that_does_not_answer_fails_closed() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/"), ("x-api-key", "k-alice")], true);
    // The proxy reports the command timed out (no reply).
    test.fail_redis(&test.redis_calls()[0]);
    assert_refused(&stream, 503, "plugin_error");
}

#[test]
fn redis_that_is_down_fails_closed() {
    let mut server = redis();
    let test = plugin(&server, CONFIG);
    server.stop();
    let stream = request(&test, &[("x-api-key", "k-alice")]);
    assert_refused(&stream, 503, "plugin_error");
}

#[test]
fn a_looked_up_key_is_served_from_the_cache_until_its_ttl() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    request(&test, &[("x-api-key", "k-alice")]);
    // Revoked in Redis: the cache still knows it, for its 1 s.
    server.command(&["DEL", "api-key:k-alice"]);
    let cached = request(&test, &[("x-api-key", "k-alice")]);
    assert_eq!(cached.resumed_requests(), 0, "answered in its own callback");
    assert_eq!(consumers(&cached), ["alice"]);
    test.advance_time(Duration::from_millis(1_000));
    let revoked = request(&test, &[("x-api-key", "k-alice")]);
    assert_refused(&revoked, 401, "key_auth_invalid");
}

#[test]
fn the_tick_function_drops_expired_entries() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    request(&test, &[("x-api-key", "k-alice")]);
    request(&test, &[("x-api-key", "k-bob")]);
    let root = test.root().expect("configured");
    assert_eq!(root.cached_keys(), 2);
    // Expired at 1 s, dropped by the tick function that runs every 1 s (on the 100 ms tick).
    test.advance_time(Duration::from_millis(1_100));
    assert_eq!(root.cached_keys(), 0);
}

#[test]
fn the_rate_limit_counts_per_consumer_in_redis() {
    let server = redis();
    let test = plugin(&server, LIMITED);
    for _ in 0..2 {
        let stream = request(&test, &[("x-api-key", "k-alice")]);
        assert_eq!(consumers(&stream), ["alice"]);
    }
    let limited = request(&test, &[("x-api-key", "k-alice")]);
    assert_refused(&limited, 429, "key_auth_rate_limited");
    let retry_after: u64 = limited
        .local_reply()
        .unwrap()
        .header("retry-after")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another consumer has its own count.
    let bob = request(&test, &[("x-api-key", "k-bob")]);
    assert_eq!(consumers(&bob), ["bob"]);
    // The counter expires with Redis's clock, but the window is the proxy's: the next window
    // starts afresh.
    test.advance_time(Duration::from_secs(60));
    let next = request(&test, &[("x-api-key", "k-alice")]);
    assert_eq!(consumers(&next), ["alice"]);
}

#[test]
fn a_client_that_leaves_mid_command_leaves_nothing_behind() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":path", "/"), ("x-api-key", "k-alice")], true),
        Action::Pause
    );
    stream.end();
    assert_eq!(test.live_tasks(), 0);
    // The late reply reaches nobody.
    test.run_redis();
    assert_eq!(test.awaited_calls(), 0);
}

#[test]
fn bad_configurations_are_rejected_naming_the_field() {
    for (config, field) in [
        (r#"{}"#, "redis.service_name"),
        (
            r#"{"redis": {"service_name": "r", "timeout_ms": 0}}"#,
            "redis.timeout_ms",
        ),
        (r#"{"redis": {"service_name": "r"}, "keys": []}"#, "keys"),
        (
            r#"{"redis": {"service_name": "r"}, "keys": ["bad header"]}"#,
            "keys[0]",
        ),
        (
            r#"{"redis": {"service_name": "r"}, "rate_limit": {"requests": 0, "window_seconds": 1}}"#,
            "rate_limit.requests",
        ),
        (r#"{"redis": {"service_name": "r", "port": 1}}"#, "port"),
    ] {
        let errors = match PluginTest::<KeyAuthRedis>::new(config) {
            Ok(_) => panic!("accepted: {config}"),
            Err(rejected) => rejected.errors.join("\n"),
        };
        assert!(errors.contains(field), "{config}: {errors}");
    }
}

#[test]
fn replies_of_an_unexpected_type_or_not_resp_fail_closed() {
    let server = redis();
    let test = plugin(&server, CONFIG);
    for reply in [
        &b":1\r\n"[..],
        b"*1\r\n$5\r\nalice\r\n",
        b"+alice\r\n",
        b"-ERR boom\r\n",
        b"not resp at all",
    ] {
        let stream = test.stream();
        stream.send_request_headers(&[(":path", "/"), ("x-api-key", "k-alice")], true);
        test.respond_redis(&test.redis_calls()[0], reply);
        assert_refused(&stream, 503, "plugin_error");
        assert!(consumers(&stream).is_empty());
    }
}
