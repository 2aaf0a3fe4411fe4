//! Behaviour of the `stream-redact` plugin as a proxy user sees it: what the client receives,
//! chunk by chunk. Every test also runs against the compiled module and component, in lockstep.

use proxy_async::PluginConfig;
use proxy_async::testing::{Action, PluginTest, TestStream};
use stream_redact::{Config, StreamRedact};

const CONFIG: &str = r#"{"patterns": ["secret-token", "sk_live_"], "replacement": "[REDACTED]"}"#;

const REQUEST: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/account"),
    (":authority", "shop.example"),
    ("accept-encoding", "gzip, br"),
];

const TEXT: &[(&str, &str)] = &[
    (":status", "200"),
    ("content-type", "text/plain; charset=utf-8"),
    ("content-length", "1000"),
];

fn plugin(config: &str) -> PluginTest<StreamRedact> {
    PluginTest::<StreamRedact>::new(config).expect("the configuration is valid")
}

/// A stream whose request went upstream and whose response headers `headers` arrived.
fn responding<'t>(
    test: &'t PluginTest<StreamRedact>,
    headers: &[(&str, &str)],
) -> TestStream<'t, StreamRedact> {
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Continue);
    assert_eq!(
        stream.send_response_headers(headers, false),
        Action::Continue
    );
    stream
}

/// What the client receives for a text response sent in `chunks`, the last one ending it.
fn client_gets(test: &PluginTest<StreamRedact>, chunks: &[&[u8]]) -> Vec<u8> {
    let stream = responding(test, TEXT);
    for (index, chunk) in chunks.iter().enumerate() {
        let last = index + 1 == chunks.len();
        assert_eq!(
            stream.send_response_body(chunk, last),
            Action::Continue,
            "a chunk is never held by the proxy"
        );
    }
    let body = stream.response_body();
    stream.end();
    body
}

#[test]
fn a_secret_inside_one_chunk_is_replaced() {
    let test = plugin(CONFIG);
    assert_eq!(
        client_gets(&test, &[b"token=secret-token; key=sk_live_123\n"]),
        b"token=[REDACTED]; key=[REDACTED]123\n"
    );
}

#[test]
fn a_secret_split_across_two_chunks_is_replaced_and_the_rest_streams_on() {
    let test = plugin(CONFIG);
    let stream = responding(&test, TEXT);
    stream.send_response_body("token=secret-to", false);
    // Everything but the possible start of a match has gone on to the client already.
    assert_eq!(stream.response_body(), b"token=");
    stream.send_response_body("ken; more", false);
    assert_eq!(stream.response_body(), b"token=[REDACTED]; more");
    stream.send_response_body("\n", true);
    assert_eq!(stream.response_body(), b"token=[REDACTED]; more\n");
}

#[test]
fn a_secret_sent_one_byte_per_chunk_is_replaced() {
    let test = plugin(CONFIG);
    let body = b"a secret-token, then sk_live_x and secret-tokensecret-token.";
    let chunks: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(
        client_gets(&test, &chunks),
        b"a [REDACTED], then [REDACTED]x and [REDACTED][REDACTED]."
    );
}

#[test]
fn the_longest_match_wins_and_matches_do_not_overlap() {
    let test = plugin(r#"{"patterns": ["secret", "secret-token", "token", "aba"]}"#);
    // Adjacent matches are each replaced; `secret-token` beats `secret` where both match.
    assert_eq!(
        client_gets(&test, &[b"secret-tokentoken secretsecret"]),
        b"[REDACTED][REDACTED] [REDACTED][REDACTED]"
    );
    // Overlapping candidates: the leftmost wins, the scan goes on after it.
    assert_eq!(client_gets(&test, &[b"ababa"]), b"[REDACTED]ba");
    assert_eq!(client_gets(&test, &[b"ab", b"a", b"ba"]), b"[REDACTED]ba");
    // `secret-to` held back, then the body goes on otherwise: `secret` alone matched.
    assert_eq!(client_gets(&test, &[b"secret-to", b"p"]), b"[REDACTED]-top");
}

#[test]
fn a_body_without_secrets_is_unchanged_byte_for_byte() {
    let test = plugin(CONFIG);
    // Not UTF-8, near misses, and prefixes of a pattern at chunk ends.
    let chunks: [&[u8]; 5] = [
        b"\xff\xfe binary \x00 secret-",
        b"tokeN sk_live",
        b"-secret",
        b"-toke",
        b"\xc3",
    ];
    assert_eq!(client_gets(&test, &chunks), chunks.concat());
}

#[test]
fn the_end_of_the_stream_flushes_the_held_back_tail() {
    let test = plugin(CONFIG);
    let stream = responding(&test, TEXT);
    stream.send_response_body("id=42 secret-tok", false);
    assert_eq!(stream.response_body(), b"id=42 ");
    // The body ends on an empty chunk (as a chunked HTTP/1.1 upstream ends it).
    stream.send_response_body("", true);
    assert_eq!(stream.response_body(), b"id=42 secret-tok");
}

#[test]
fn a_long_streamed_body_is_never_buffered() {
    let test = plugin(CONFIG);
    let stream = responding(&test, TEXT);
    let chunk = "s".repeat(1024);
    let mut sent = 0;
    for _ in 0..64 {
        stream.send_response_body(&chunk, false);
        sent += chunk.len();
        let received = stream.response_body().len();
        // At most `secret-token` minus one byte stays behind.
        assert!(received + 11 >= sent, "sent {sent}, client has {received}");
    }
    stream.send_response_body("ecret-token", true);
    let body = stream.response_body();
    assert_eq!(body.len(), 64 * 1024 - 1 + "[REDACTED]".len());
    assert!(body.ends_with(b"s[REDACTED]"));
}

#[test]
fn every_chunking_of_a_body_gives_the_same_result() {
    let test = plugin(r#"{"patterns": ["secret-token", "secret", "tok", "xx"]}"#);
    let body = b"xsecret-tokxxxsecret-token tok secrexx";
    let expected = b"x[REDACTED]-[REDACTED][REDACTED]x[REDACTED] [REDACTED] secre[REDACTED]";
    let config: Config =
        serde_json::from_str(r#"{"patterns": ["secret-token", "secret", "tok", "xx"]}"#)
            .expect("valid");
    assert_eq!(config.redactor().redact(body), expected);
    let cut = |cuts: &[usize]| -> Vec<&[u8]> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(body.len());
        bounds
            .windows(2)
            .map(|pair| &body[pair[0]..pair[1]])
            .collect()
    };
    // Every way to cut it into one, two or three chunks (empty ones included), and bytewise.
    let mut chunkings = vec![cut(&[]), body.chunks(1).collect()];
    for first in 0..=body.len() {
        chunkings.push(cut(&[first]));
        for second in first..=body.len() {
            chunkings.push(cut(&[first, second]));
        }
    }
    for chunks in chunkings {
        assert_eq!(
            client_gets(&test, &chunks),
            expected,
            "chunks {:?}",
            chunks
                .iter()
                .map(|chunk| String::from_utf8_lossy(chunk))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn headers_describing_the_original_body_are_removed() {
    let test = plugin(CONFIG);
    let stream = responding(
        &test,
        &[
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", "27"),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
            ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
            ("cache-control", "no-store"),
        ],
    );
    assert_eq!(stream.response_header("content-length"), None);
    assert_eq!(stream.response_header("content-md5"), None);
    assert_eq!(stream.response_header("accept-ranges"), None);
    assert_eq!(stream.response_header("etag").as_deref(), Some("W/\"v1\""));
    assert_eq!(
        stream.response_header("cache-control").as_deref(),
        Some("no-store")
    );
    stream.send_response_body(r#"{"key": "sk_live_abc"}"#, true);
    assert_eq!(stream.response_body(), br#"{"key": "[REDACTED]abc"}"#);
}

#[test]
fn a_weak_etag_stays_as_it_is() {
    let test = plugin(CONFIG);
    let stream = responding(
        &test,
        &[
            (":status", "200"),
            ("content-type", "text/html"),
            ("etag", "W/\"v1\""),
        ],
    );
    assert_eq!(stream.response_header("etag").as_deref(), Some("W/\"v1\""));
}

#[test]
fn requests_ask_for_an_uncompressed_body() {
    let test = plugin(CONFIG);
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    assert_eq!(stream.request_header("accept-encoding"), None);
    assert_eq!(stream.request_header(":path").as_deref(), Some("/account"));
}

#[test]
fn other_content_types_pass_untouched() {
    let test = plugin(CONFIG);
    let headers = [
        (":status", "200"),
        ("content-type", "image/png"),
        ("content-length", "16"),
    ];
    let stream = responding(&test, &headers);
    assert_eq!(
        stream.response_header("content-length").as_deref(),
        Some("16")
    );
    stream.send_response_body("png secret-", false);
    // Nothing held back: the plugin does not look at this body.
    assert_eq!(stream.response_body(), b"png secret-");
    stream.send_response_body("token", true);
    assert_eq!(stream.response_body(), b"png secret-token");
}

#[test]
fn configured_content_types_choose_what_is_redacted() {
    let test = plugin(
        r#"{"patterns": ["secret-token"], "content_types": ["application/xml", "text/csv"]}"#,
    );
    for (content_type, redacted) in [
        ("application/xml", true),
        ("TEXT/CSV; charset=utf-8", true),
        ("text/plain", false),
        ("application/json", false),
    ] {
        let stream = responding(&test, &[(":status", "200"), ("content-type", content_type)]);
        stream.send_response_body("<a>secret-token</a>", true);
        let expected: &[u8] = if redacted {
            b"<a>[REDACTED]</a>"
        } else {
            b"<a>secret-token</a>"
        };
        assert_eq!(stream.response_body(), expected, "{content_type}");
        stream.end();
    }
}

#[test]
fn a_response_without_content_type_is_redacted() {
    let test = plugin(CONFIG);
    let stream = responding(&test, &[(":status", "200")]);
    stream.send_response_body("secret-token", true);
    assert_eq!(stream.response_body(), b"[REDACTED]");
}

#[test]
fn a_compressed_response_passes_untouched_with_a_warning() {
    let test = plugin(CONFIG);
    let stream = responding(
        &test,
        &[
            (":status", "200"),
            ("content-type", "text/plain"),
            ("content-encoding", "gzip"),
            ("content-length", "12"),
        ],
    );
    stream.send_response_body("secret-token", true);
    assert_eq!(stream.response_body(), b"secret-token");
    assert_eq!(
        stream.response_header("content-length").as_deref(),
        Some("12")
    );
    assert!(
        test.logs_at(log::Level::Warn)
            .iter()
            .any(|line| line.contains("content-encoding `gzip`")),
        "{:?}",
        test.logs()
    );
}

#[test]
fn ignore_case_and_an_empty_replacement() {
    let test = plugin(r#"{"patterns": ["Secret-Token"], "replacement": "", "ignore_case": true}"#);
    assert_eq!(
        client_gets(&test, &[b"a SECRET-to", b"KEN b secret-token c"]),
        b"a  b  c"
    );
}

#[test]
fn a_response_without_body_only_loses_its_content_length() {
    let test = plugin(CONFIG);
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    stream.send_response_headers(TEXT, true);
    assert_eq!(stream.response_header("content-length"), None);
    assert_eq!(stream.response_body(), b"");
}

#[test]
fn the_match_count_is_logged_at_debug() {
    let test = plugin(CONFIG);
    client_gets(&test, &[b"secret-token sk_live_", b"x secret-token"]);
    assert!(
        test.logs_at(log::Level::Debug)
            .contains(&"redacted 3 matches in the response body".to_string()),
        "{:?}",
        test.logs()
    );
}

#[test]
fn a_client_leaving_mid_body_leaves_nothing_behind() {
    let test = plugin(CONFIG);
    let stream = responding(&test, TEXT);
    stream.send_response_body("secret-to", false);
    stream.end();
    assert_eq!(test.live_tasks(), 0);
    assert_eq!(test.live_streams(), 0);
}

#[test]
fn bad_configurations_are_rejected_naming_the_field() {
    let too_long = format!(r#"{{"patterns": ["{}"]}}"#, "x".repeat(1025));
    for (config, field) in [
        ("", "patterns"),
        ("{}", "patterns"),
        (r#"{"patterns": []}"#, "patterns"),
        (r#"{"patterns": "secret"}"#, "patterns"),
        (r#"{"patterns": ["a", ""]}"#, "patterns[1]"),
        (too_long.as_str(), "patterns[0]"),
        (r#"{"patterns": ["a"], "replacement": 7}"#, "replacement"),
        (
            r#"{"patterns": ["a"], "ignore_case": "yes"}"#,
            "ignore_case",
        ),
        (
            r#"{"patterns": ["a"], "content_types": []}"#,
            "content_types",
        ),
        (
            r#"{"patterns": ["a"], "content_types": ["text/*", "json"]}"#,
            "content_types[1]",
        ),
        (
            r#"{"patterns": ["a"], "content_types": ["*/json"]}"#,
            "content_types[0]",
        ),
        (r#"{"patterns": ["a"], "replacment": "x"}"#, "replacment"),
    ] {
        let errors = match PluginTest::<StreamRedact>::new(config) {
            Ok(_) => panic!("accepted: {config}"),
            Err(rejected) => rejected.errors.join("\n"),
        };
        assert!(
            errors.contains(&format!("field `{field}`")),
            "{config}: {errors}"
        );
    }
}

#[test]
fn keys_added_by_istio_and_higress_are_ignored() {
    let test = plugin(r#"{"patterns": ["secret-token"], "_plugin_id_": "p-1", "_rules_": []}"#);
    assert_eq!(client_gets(&test, &[b"secret-token"]), b"[REDACTED]");
    let config: Config =
        serde_json::from_str(r#"{"patterns": ["a"], "_x_": {"y": [1]}}"#).expect("valid JSON");
    assert_eq!(config.validate(), Ok(()));
}
