//! The bodies a plugin does not read: Higress's rules for binary, compressed and websocket
//! streams (higress-group/wasm-go v1.1.1, `pkg/wrapper/plugin_wrapper.go:991-1013`, applied at
//! l.1076-1082 and l.1137-1139), the opt-out, and `skip_body` itself. A skipped body passes
//! through unseen and is not buffered: a buffering plugin neither holds a gRPC stream nor
//! refuses an upload past its limit.

use std::rc::Rc;

use proxy_async::higress::{Higress, HigressPlugin, Rules};
use proxy_async::testing::{Action, PluginTest};
use proxy_async::{
    ConfigError, Error, Flow, HttpClient, NoConfig, Plugin, Request, Response, Root, Settings,
};

/// Buffers both bodies, with a limit of 1 KiB, and logs each body hook.
struct Buffering;

impl Root for Buffering {
    type Config = NoConfig;

    fn configure(_: NoConfig) -> Result<Self, ConfigError> {
        Ok(Buffering)
    }

    fn settings(&self) -> Settings {
        Settings::default()
            .buffer_request_body(true)
            .buffer_response_body(true)
            .body_buffer_limit(1024)
    }
}

/// A plugin written for Higress, with Higress's body rules.
struct Reader;

impl HigressPlugin for Reader {
    const RULES: Rules = Rules::Separate;
}

/// The same plugin, reading every body.
struct EveryBody;

impl HigressPlugin for EveryBody {
    const RULES: Rules = Rules::Separate;
    const READ_BINARY_BODIES: bool = true;
}

macro_rules! body_logger {
    ($plugin:ident) => {
        impl Plugin for $plugin {
            type Root = Buffering;

            fn new(_: &Rc<Buffering>) -> Self {
                $plugin
            }

            async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
                log::info!("request body: {} bytes", req.body().len());
                Ok(Flow::Continue)
            }

            async fn on_response_body(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
                log::info!("response body: {} bytes", resp.body().len());
                Ok(Flow::Continue)
            }
        }
    };
}

body_logger!(Reader);
body_logger!(EveryBody);

/// What the body hooks logged for a request with `request` headers (and a 2 KiB body, over
/// the buffer limit) and a response with `response` headers (and a small body).
fn seen<P: HigressPlugin<Root = Buffering>>(
    request: &[(&str, &str)],
    response: &[(&str, &str)],
) -> Vec<String> {
    let test = PluginTest::<Higress<P>>::new("").expect("no configuration is valid");
    let stream = test.stream();
    let mut headers = vec![
        (":method", "POST"),
        (":path", "/upload"),
        (":authority", "a.com"),
        ("content-length", "2048"),
    ];
    headers.extend_from_slice(request);
    assert_eq!(
        stream.send_request_headers(&headers, false),
        Action::Continue
    );
    let skipped = stream.request_header("content-length").is_some();
    let body = vec![b'x'; 2048];
    let action = stream.send_request_body(&body, true);
    if skipped {
        // Not buffered: it goes on at once, and is not refused for its size.
        assert_eq!(action, Action::Continue);
        assert_eq!(stream.local_reply(), None);
    } else {
        let reply = stream
            .local_reply()
            .expect("a body over the limit is refused");
        assert_eq!(reply.status, 413);
        return vec!["refused 413".to_string()];
    }
    let mut headers = vec![(":status", "200")];
    headers.extend_from_slice(response);
    stream.send_response_headers(&headers, false);
    stream.send_response_body("tiny", true);
    test.logs_at(log::Level::Info)
}

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

#[test]
fn binary_and_compressed_request_bodies_are_not_read() {
    for request in [
        &[("content-type", "application/grpc")][..],
        &[("content-type", "application/grpc-web+proto")],
        &[("content-type", "application/octet-stream")],
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        // Any content-encoding, as Higress reads it.
        &[
            ("content-type", "text/plain"),
            ("content-encoding", "identity"),
        ],
    ] {
        assert_eq!(
            seen::<Reader>(request, JSON),
            ["response body: 4 bytes"],
            "{request:?}"
        );
    }
}

#[test]
fn the_content_type_test_is_case_sensitive_as_in_higress() {
    // `strings.Contains(contentType, "grpc")`: `application/GRPC` is read, and refused here
    // for its size.
    assert_eq!(
        seen::<Reader>(&[("content-type", "application/GRPC")], JSON),
        ["refused 413"]
    );
}

#[test]
fn a_websocket_upgrade_reads_neither_body() {
    assert_eq!(
        seen::<Reader>(&[("connection", "Upgrade"), ("upgrade", "WebSocket")], JSON),
        Vec::<String>::new()
    );
    // Another `connection` value is no upgrade (the whole value is compared).
    assert_eq!(
        seen::<Reader>(
            &[
                ("connection", "keep-alive, Upgrade"),
                ("upgrade", "websocket")
            ],
            JSON
        ),
        ["refused 413"]
    );
}

#[test]
fn binary_and_compressed_response_bodies_are_not_read() {
    for response in [
        &[("content-type", "application/grpc")][..],
        &[("content-type", "application/octet-stream")],
        &[("content-type", "text/html"), ("content-encoding", "br")],
    ] {
        let test = PluginTest::<Higress<Reader>>::new("").unwrap();
        let stream = test.stream();
        stream.send_request_headers(
            &[(":method", "GET"), (":path", "/"), (":authority", "a.com")],
            true,
        );
        let mut headers = vec![(":status", "200"), ("content-length", "4")];
        headers.extend_from_slice(response);
        assert_eq!(
            stream.send_response_headers(&headers, false),
            Action::Continue
        );
        assert_eq!(
            stream.response_header("content-length").as_deref(),
            Some("4")
        );
        assert_eq!(stream.send_response_body("tiny", true), Action::Continue);
        assert!(test.logs_at(log::Level::Info).is_empty(), "{response:?}");
    }
}

#[test]
fn a_plugin_can_read_every_body() {
    assert_eq!(
        seen::<EveryBody>(&[("content-type", "application/grpc")], JSON),
        ["refused 413"]
    );
    let test = PluginTest::<Higress<EveryBody>>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(
        &[(":method", "GET"), (":path", "/"), (":authority", "a.com")],
        true,
    );
    stream.send_response_headers(
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    stream.send_response_body("tiny", true);
    assert_eq!(test.logs_at(log::Level::Info), ["response body: 4 bytes"]);
}

/// Skips the request body when the request says so, after a call its headers' hook awaits.
struct Skipper;

impl Plugin for Skipper {
    type Root = Buffering;

    fn new(_: &Rc<Buffering>) -> Self {
        Skipper
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        if req.header("x-skip").is_some() {
            req.skip_body();
        }
        HttpClient::new("check").get("/check").send().await?;
        Ok(Flow::Continue)
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        log::info!("request body: {} bytes", req.body().len());
        Ok(Flow::Continue)
    }
}

#[test]
fn a_body_skipped_by_a_headers_hook_that_awaited_passes_unseen_and_unbuffered() {
    for skip in [true, false] {
        let test = PluginTest::<Skipper>::new("").unwrap();
        let stream = test.stream();
        let mut headers = vec![
            (":method", "POST"),
            (":path", "/"),
            (":authority", "a.com"),
            ("content-length", "10"),
        ];
        if skip {
            headers.push(("x-skip", "1"));
        }
        assert_eq!(stream.send_request_headers(&headers, false), Action::Pause);
        test.respond(&test.calls()[0], 200, &[], "");
        assert_eq!(stream.resumed_requests(), 1);
        let first = stream.send_request_body("01234", false);
        let last = stream.send_request_body("56789", true);
        let logs = test.logs_at(log::Level::Info);
        if skip {
            assert_eq!((first, last), (Action::Continue, Action::Continue));
            assert!(logs.is_empty(), "{logs:?}");
            assert_eq!(
                stream.request_header("content-length").as_deref(),
                Some("10")
            );
        } else {
            assert_eq!((first, last), (Action::Pause, Action::Continue));
            assert_eq!(logs, ["request body: 10 bytes"]);
            assert_eq!(stream.request_header("content-length"), None);
        }
    }
}

/// Streams bodies, but buffers the request body of a request that asks for it.
struct Switcher;

impl Root for Switcher {
    type Config = NoConfig;

    fn configure(_: NoConfig) -> Result<Self, ConfigError> {
        Ok(Switcher)
    }
}

struct SwitchingPlugin;

impl Plugin for SwitchingPlugin {
    type Root = Switcher;

    fn new(_: &Rc<Switcher>) -> Self {
        SwitchingPlugin
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        if req.header("x-buffer").is_some() {
            req.buffer_body();
        }
        Ok(Flow::Continue)
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        log::info!("request body: {:?}", req.body_str().unwrap_or_default());
        Ok(Flow::Continue)
    }
}

#[test]
fn one_request_can_buffer_the_body_a_plugin_streams() {
    for buffer in [true, false] {
        let test = PluginTest::<SwitchingPlugin>::new("").expect("valid");
        let stream = test.stream();
        let mut headers = vec![
            (":method", "POST"),
            (":path", "/"),
            (":authority", "a.com"),
            ("content-length", "6"),
        ];
        if buffer {
            headers.push(("x-buffer", "1"));
        }
        assert_eq!(
            stream.send_request_headers(&headers, false),
            Action::Continue
        );
        let actions = [
            stream.send_request_body("ab", false),
            stream.send_request_body("cd", false),
            stream.send_request_body("ef", true),
        ];
        let logs = test.logs_at(log::Level::Info);
        if buffer {
            // Higress's BufferRequestBody: one hook, on the whole body.
            assert_eq!(actions, [Action::Pause, Action::Pause, Action::Continue]);
            assert_eq!(logs, [r#"request body: "abcdef""#]);
            assert_eq!(stream.request_header("content-length"), None);
        } else {
            assert_eq!(actions, [Action::Continue; 3]);
            assert_eq!(
                logs,
                [
                    r#"request body: "ab""#,
                    r#"request body: "cd""#,
                    r#"request body: "ef""#
                ]
            );
            assert_eq!(
                stream.request_header("content-length").as_deref(),
                Some("6")
            );
        }
    }
}
