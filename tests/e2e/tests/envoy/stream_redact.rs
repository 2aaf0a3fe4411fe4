//! `stream-redact` in a real Envoy (1.40, V8): secrets split across chunks that leave the
//! upstream apart, redacted while the body streams on to the client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{
    Envoy, EnvoyConfig, RawPart, RawServer, assert_no_wasm_failure_logged, plugin_wasm,
    raw_response, wasm_vm_stats,
};

const CONFIG: &str = r#"{"patterns": ["secret-token", "sk_live_"]}"#;

/// The upstream's pause between two writes: long enough that Envoy reads each chunk apart
/// and hands it to the plugin alone.
const GAP: Duration = Duration::from_millis(200);

/// The data chunks of `/split`: both secrets are cut, and the body ends in what could be the
/// start of one, which the plugin holds until the body ends.
const SPLIT: [&str; 4] = [
    "the token is secr",
    "et-to",
    "ken; the key is sk_li",
    "ve_abc; not a secr",
];

/// What the client gets for `/split`.
const SPLIT_REDACTED: &str = "the token is [REDACTED]; the key is [REDACTED]abc; not a secr";

/// One HTTP/1.1 chunk.
fn chunk(data: &str) -> Vec<u8> {
    format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
}

/// A chunked `text/plain` response: the head with the first chunk, then each later chunk and
/// the last (empty) one after `gap`.
fn chunked(chunks: &[&str], gap: Duration) -> Vec<RawPart> {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
                transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let mut parts = Vec::new();
    let mut first = head.as_bytes().to_vec();
    if let Some(data) = chunks.first() {
        first.extend_from_slice(&chunk(data));
    }
    parts.push((Duration::ZERO, first));
    for data in chunks.iter().skip(1) {
        parts.push((gap, chunk(data)));
    }
    parts.push((gap, b"0\r\n\r\n".to_vec()));
    parts
}

/// The upstream: `/split` (above), `/bytewise` (a secret one byte per chunk), `/image` (a
/// secret in a PNG, with a `content-length`). Records each request's raw head.
fn upstream() -> (RawServer, Arc<Mutex<Vec<String>>>) {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    let server = RawServer::start(move |request| {
        let request = String::from_utf8_lossy(request).into_owned();
        let path = request.split(' ').nth(1).unwrap_or_default().to_string();
        if let Ok(mut seen) = seen.lock() {
            seen.push(request);
        }
        match path.as_str() {
            "/split" => chunked(&SPLIT, GAP),
            "/bytewise" => {
                let body = "<p>secret-token</p>";
                let bytes: Vec<String> = body.chars().map(String::from).collect();
                let bytes: Vec<&str> = bytes.iter().map(String::as_str).collect();
                chunked(&bytes, Duration::from_millis(20))
            }
            "/image" => raw_response(
                "HTTP/1.1 200 OK",
                &[("content-type", "image/png")],
                "PNG secret-token",
            ),
            _ => raw_response("HTTP/1.1 404 Not Found", &[], ""),
        }
    });
    (server, requests)
}

fn envoy(upstream: &RawServer, config: &str) -> Envoy {
    Envoy::start(
        &EnvoyConfig::new(plugin_wasm("stream_redact"), upstream.addr()).plugin_config(config),
    )
}

#[test]
fn secrets_split_across_chunks_are_redacted_in_envoy() {
    let (upstream, requests) = upstream();
    let envoy = envoy(&upstream, CONFIG);

    let response = envoy.send("GET", "/split", &[("accept-encoding", "gzip")], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), SPLIT_REDACTED);
    assert_eq!(response.header("content-length"), None);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    let vm_before = wasm_vm_stats(&envoy.stats());
    assert!(
        vm_before.keys().any(|name| name.contains("created")),
        "no wasm VM stats: {vm_before:?}"
    );

    let bytewise = envoy.send("GET", "/bytewise", &[], b"");
    assert_eq!(bytewise.status, 200, "{}", bytewise.text());
    assert_eq!(bytewise.text(), "<p>[REDACTED]</p>");

    // A body the plugin does not scan keeps its framing and its bytes.
    let image = envoy.send("GET", "/image", &[], b"");
    assert_eq!(image.status, 200, "{}", image.text());
    assert_eq!(image.text(), "PNG secret-token");
    assert_eq!(image.header("content-length"), Some("16"));

    // The plugin asked the upstream for uncompressed bodies.
    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3);
    assert!(
        !requests[0].to_ascii_lowercase().contains("accept-encoding"),
        "{}",
        requests[0]
    );

    assert_eq!(
        wasm_vm_stats(&envoy.stats()),
        vm_before,
        "a wasm VM failed or was replaced"
    );
    assert_no_wasm_failure_logged(&envoy);
}

#[test]
fn the_body_reaches_the_client_while_the_upstream_still_sends() {
    let (upstream, _) = upstream();
    let envoy = envoy(&upstream, CONFIG);
    let mut client = TcpStream::connect(("127.0.0.1", envoy.port())).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    client
        .write_all(b"GET /split HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    // Every read, with when it came.
    let mut raw = Vec::new();
    let mut reads = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match client.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                raw.extend_from_slice(&buffer[..read]);
                reads.push((Instant::now(), raw.len()));
            }
            Err(error) => panic!("reading the response: {error}\n{}", envoy.log()),
        }
    }
    let ended = Instant::now();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The chunks' data, in order, once the chunk sizes are gone.
    let first = "the token is ";
    let first_end = text
        .find(first)
        .map(|at| at + first.len())
        .unwrap_or_else(|| panic!("no `{first}` in {text}"));
    let (first_came, _) = reads
        .iter()
        .find(|(_, len)| *len >= first_end)
        .copied()
        .unwrap();
    // The upstream sent three more chunks and the end, a gap apart, after the first one: the
    // client had the first chunk's text long before the end, so nothing buffered the body.
    assert!(
        ended.duration_since(first_came) >= GAP * 2,
        "the first chunk came {:?} before the end",
        ended.duration_since(first_came)
    );
    // The part of a secret held back between chunks never reached the client.
    for leak in ["secret-", "et-to", "sk_li", "ve_abc"] {
        assert!(!text.contains(leak), "`{leak}` reached the client: {text}");
    }
    assert!(text.contains("[REDACTED]"), "{text}");
    assert_no_wasm_failure_logged(&envoy);
}

#[test]
fn envoy_refuses_a_configuration_without_patterns() {
    let (upstream, _) = upstream();
    let exited = Envoy::try_start(
        &EnvoyConfig::new(plugin_wasm("stream_redact"), upstream.addr())
            .plugin_config(r#"{"patterns": ["secret-token", ""]}"#),
    )
    .map(|_| "Envoy started")
    .expect_err("the configuration has an empty pattern");
    assert!(
        exited
            .log
            .contains("invalid plugin configuration: field `patterns[1]`: must not be empty"),
        "{}",
        exited.log
    );
}
