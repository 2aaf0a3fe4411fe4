//! The stream driver as a plugin author sees it: when streams continue, pause, resume and get
//! local replies, through the native testing API.

use std::rc::Rc;
use std::time::Duration;

use proxy_async::testing::{Action, PluginTest};
use proxy_async::{
    CallError, ConfigError, Done, Error, Flow, HttpClient, LocalReply, NoConfig, Plugin,
    PluginConfig, Request, Response, Root, Settings,
};

/// Calls the `backend` cluster, copies `x-token` from its answer into the request; replies 403
/// on a non-200 answer; fails (Err) on call errors. Marks every response it sees.
struct Gate {
    backend: HttpClient,
}

impl Plugin for Gate {
    type Root = NoConfig;

    fn new(_: &Rc<NoConfig>) -> Self {
        Gate {
            backend: HttpClient::new("backend"),
        }
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        req.headers_mut().insert("x-before-await", "1");
        let answer = self.backend.get("/check").send().await?;
        if answer.status() != 200 {
            return Ok(LocalReply::new(403)
                .body("denied")
                .details("gate_denied")
                .into());
        }
        req.headers_mut()
            .insert("x-token", answer.header("x-token")?);
        Ok(Flow::Continue)
    }

    async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        resp.headers_mut().insert("x-gate-saw-response", "1");
        Ok(Flow::Continue)
    }
}

#[test]
fn a_hook_that_does_not_await_continues_without_resume() {
    struct Immediate;
    impl Plugin for Immediate {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            Immediate
        }
        async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
            req.headers_mut().insert("x-seen", "yes");
            Ok(Flow::Continue)
        }
    }

    let test = PluginTest::<Immediate>::new("").unwrap();
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":path", "/")], true),
        Action::Continue
    );
    assert_eq!(stream.request_header("x-seen").as_deref(), Some("yes"));
    assert_eq!(stream.resumed_requests(), 0);
    assert!(test.calls().is_empty());
}

#[test]
fn an_awaiting_hook_pauses_and_is_resumed_exactly_once() {
    let test = PluginTest::<Gate>::new("").unwrap();
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":path", "/a")], true),
        Action::Pause
    );
    assert!(stream.is_request_paused());
    assert_eq!(stream.resumed_requests(), 0);
    // Changes made before the await are already visible to the proxy.
    assert_eq!(
        stream.request_header("x-before-await").as_deref(),
        Some("1")
    );

    let calls = test.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster(), "backend");
    assert_eq!(calls[0].method(), "GET");
    assert_eq!(calls[0].path(), "/check");
    assert_eq!(calls[0].authority(), "backend");
    assert_eq!(calls[0].timeout(), Duration::from_millis(500));

    test.respond(&calls[0], 200, &[("x-token", "t-1")], "");
    assert_eq!(stream.resumed_requests(), 1);
    assert!(!stream.is_request_paused());
    assert_eq!(stream.request_header("x-token").as_deref(), Some("t-1"));
    assert_eq!(stream.local_reply(), None);

    // The response passes through the plugin's response hook as usual.
    assert_eq!(
        stream.send_response_headers(&[(":status", "200")], true),
        Action::Continue
    );
    assert_eq!(
        stream.response_header("x-gate-saw-response").as_deref(),
        Some("1")
    );
    stream.end();
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(test.live_tasks(), 0);
    assert_eq!(test.live_streams(), 0);
}

#[test]
fn a_local_reply_after_an_await_is_sent_and_the_stream_never_resumes() {
    let test = PluginTest::<Gate>::new("").unwrap();
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":path", "/")], true),
        Action::Pause
    );
    test.respond(&test.calls()[0], 401, &[], "");

    let reply = stream.local_reply().expect("a local reply");
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body_str(), "denied");
    assert_eq!(reply.details, "gate_denied");
    assert_eq!(stream.resumed_requests(), 0);
    // Envoy runs the response callbacks for the reply; the plugin does not see its own reply.
    assert_eq!(stream.response_header(":status").as_deref(), Some("403"));
    assert_eq!(stream.response_header("x-gate-saw-response"), None);
    stream.end();
    assert_eq!(stream.resumed_requests(), 0);
}

#[test]
fn a_call_error_becomes_the_error_reply_and_a_log_line() {
    let test = PluginTest::<Gate>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    test.fail(&test.calls()[0]);

    let reply = stream.local_reply().expect("a local reply");
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body_str(), "Internal Server Error");
    assert_eq!(reply.details, "plugin_error");
    assert_eq!(stream.resumed_requests(), 0);
    let errors = test.logs_at(log::Level::Error);
    assert_eq!(
        errors,
        [
            "on_request_headers failed: the response from cluster `backend` broke off before it was whole (connection reset, or timeout after 500 ms); replying 500"
        ]
    );
}

#[test]
fn a_missing_header_in_the_answer_names_cluster_and_header() {
    let test = PluginTest::<Gate>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    test.respond(&test.calls()[0], 200, &[], "");
    assert_eq!(stream.local_reply().map(|reply| reply.status), Some(500));
    assert!(
        test.logs_at(log::Level::Error)[0]
            .contains("response from cluster `backend` has no header `x-token`")
    );
}

#[test]
fn a_response_without_status_is_an_invalid_status_error() {
    let test = PluginTest::<Gate>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    test.respond_raw(&test.calls()[0], &[("x-token", b"t")], "");
    assert_eq!(stream.local_reply().map(|reply| reply.status), Some(500));
    assert!(
        test.logs_at(log::Level::Error)[0]
            .contains("response from cluster `backend` has no valid :status")
    );
}

#[test]
fn a_cluster_unknown_to_the_proxy_is_refused_with_a_typed_error() {
    struct Probe;
    impl Plugin for Probe {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            Probe
        }
        async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
            match HttpClient::new("nowhere").get("/").send().await {
                Err(CallError::Refused { cluster, .. }) => {
                    req.headers_mut().insert("x-refused", cluster);
                    Ok(Flow::Continue)
                }
                other => Err(Error::new(format!("unexpected {other:?}"))),
            }
        }
    }

    let test = PluginTest::<Probe>::builder()
        .clusters(&["somewhere"])
        .build()
        .unwrap();
    let stream = test.stream();
    // Refused at dispatch: the hook finishes inside its callback, no pause, no resume.
    assert_eq!(
        stream.send_request_headers(&[(":path", "/")], true),
        Action::Continue
    );
    assert_eq!(
        stream.request_header("x-refused").as_deref(),
        Some("nowhere")
    );
    assert_eq!(stream.resumed_requests(), 0);
}

#[test]
fn error_status_comes_from_the_plugin_or_the_error() {
    struct Strict;
    impl Plugin for Strict {
        type Root = NoConfig;
        const ERROR_STATUS: u16 = 503;
        fn new(_: &Rc<NoConfig>) -> Self {
            Strict
        }
        async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
            if req.header("x-slow-down").is_some() {
                return Err(Error::new("rate limited").with_status(429));
            }
            Err(Error::new("backend unavailable"))
        }
    }

    let test = PluginTest::<Strict>::new("").unwrap();
    let plain = test.stream();
    assert_eq!(
        plain.send_request_headers(&[(":path", "/")], true),
        Action::Pause
    );
    assert_eq!(plain.local_reply().map(|reply| reply.status), Some(503));
    assert_eq!(
        plain.local_reply().map(|reply| reply.body_str()).as_deref(),
        Some("Service Unavailable")
    );
    let limited = test.stream();
    limited.send_request_headers(&[(":path", "/"), ("x-slow-down", "1")], true);
    assert_eq!(limited.local_reply().map(|reply| reply.status), Some(429));
    assert_eq!(
        test.logs_at(log::Level::Error),
        [
            "on_request_headers failed: backend unavailable; replying 503",
            "on_request_headers failed: rate limited; replying 429"
        ]
    );
}

#[test]
fn a_stream_that_ends_mid_call_drops_its_futures_and_ignores_the_late_answer() {
    let test = PluginTest::<Gate>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    let call = test.calls()[0].clone();
    assert_eq!((test.live_tasks(), test.awaited_calls()), (1, 1));

    // The client goes away while the plugin awaits.
    stream.end();
    assert_eq!(test.live_tasks(), 0);
    assert_eq!(test.awaited_calls(), 0);
    assert_eq!(test.live_streams(), 0);

    // The proxy still answers the call; the SDK ignores it.
    test.respond(&call, 200, &[("x-token", "late")], "");
    assert_eq!(stream.resumed_requests(), 0);
    assert_eq!(stream.local_reply(), None);
    assert!(
        test.logs_at(log::Level::Debug)
            .iter()
            .any(|line| line.contains("response to call 1 ignored"))
    );
}

#[test]
fn interleaved_streams_are_each_resumed_once_with_their_own_answer() {
    let test = PluginTest::<Gate>::new("").unwrap();
    let first = test.stream();
    let second = test.stream();
    first.send_request_headers(&[(":path", "/1")], true);
    second.send_request_headers(&[(":path", "/2")], true);
    let (call_1, call_2) = (first.calls()[0].clone(), second.calls()[0].clone());

    test.respond(&call_2, 200, &[("x-token", "two")], "");
    assert_eq!(
        (first.resumed_requests(), second.resumed_requests()),
        (0, 1)
    );
    test.respond(&call_1, 200, &[("x-token", "one")], "");
    assert_eq!(
        (first.resumed_requests(), second.resumed_requests()),
        (1, 1)
    );
    assert_eq!(first.request_header("x-token").as_deref(), Some("one"));
    assert_eq!(second.request_header("x-token").as_deref(), Some("two"));
}

#[test]
fn joined_calls_are_in_flight_together() {
    struct Both;
    impl Plugin for Both {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            Both
        }
        async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
            let (a, b) = futures::join!(
                HttpClient::new("a").get("/a").send(),
                HttpClient::new("b").get("/b").send()
            );
            let joined = format!("{}+{}", a?.text()?, b?.text()?);
            req.headers_mut().insert("x-joined", joined);
            Ok(Flow::Continue)
        }
    }

    let test = PluginTest::<Both>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    let calls = test.calls();
    assert_eq!(
        calls.iter().map(|call| call.cluster()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    test.respond(&calls[1], 200, &[], "B");
    assert_eq!(stream.resumed_requests(), 0);
    test.respond(&calls[0], 200, &[], "A");
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.request_header("x-joined").as_deref(), Some("A+B"));
}

/// Sees the whole request body once, asks a cluster about it, and replaces it.
struct Rewrite;

/// No configuration; buffers request bodies (and response bodies when `BOTH`) of up to `LIMIT`
/// bytes.
struct Buffering<const BOTH: bool, const LIMIT: usize>;

impl<const BOTH: bool, const LIMIT: usize> Root for Buffering<BOTH, LIMIT> {
    type Config = NoConfig;

    fn configure(_: NoConfig) -> Result<Self, ConfigError> {
        Ok(Buffering)
    }

    fn settings(&self) -> Settings {
        Settings::default()
            .buffer_request_body(true)
            .buffer_response_body(BOTH)
            .body_buffer_limit(LIMIT)
    }
}

/// Buffers request bodies up to the default limit.
type BufferRequests = Buffering<false, { 1024 * 1024 }>;

impl Plugin for Rewrite {
    type Root = BufferRequests;

    fn new(_: &Rc<BufferRequests>) -> Self {
        Rewrite
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        let body = req.body_str().unwrap_or_default();
        let verdict = HttpClient::new("scanner")
            .post("/scan")
            .body(body.clone())
            .send()
            .await?;
        req.set_body(format!("{}:{body}", verdict.text()?));
        Ok(Flow::Continue)
    }
}

#[test]
fn a_buffered_body_hook_sees_the_whole_body_once_and_can_replace_it() {
    let test = PluginTest::<Rewrite>::new("").unwrap();
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":method", "POST"), ("content-length", "11")], false),
        Action::Continue
    );
    // The body will change size: a stale content-length would truncate it upstream.
    assert_eq!(stream.request_header("content-length"), None);
    // Chunks before the end are held in the proxy's buffer; the hook has not run.
    assert_eq!(stream.send_request_body("hello ", false), Action::Pause);
    assert!(test.calls().is_empty());
    assert_eq!(stream.send_request_body("world", true), Action::Pause);
    let calls = test.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body_str(), "hello world");
    test.respond(&calls[0], 200, &[], "clean");
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.request_body(), b"clean:hello world");
}

/// Buffers both bodies, with a 16-byte limit; marks what its hooks saw.
struct Small;

impl Plugin for Small {
    type Root = Buffering<true, 16>;

    fn new(_: &Rc<Buffering<true, 16>>) -> Self {
        Small
    }

    async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        req.headers_mut().insert("x-body-hook", "ran");
        Ok(Flow::Continue)
    }

    async fn on_response_body(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        resp.headers_mut().insert("x-body-hook", "ran");
        Ok(Flow::Continue)
    }
}

#[test]
fn a_buffered_request_body_over_the_limit_is_refused_with_413() {
    let test = PluginTest::<Small>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":method", "POST")], false);
    assert_eq!(stream.send_request_body("0123456789", false), Action::Pause);
    // 20 bytes buffered: over the limit before the end of the body.
    assert_eq!(stream.send_request_body("0123456789", false), Action::Pause);
    let reply = stream.local_reply().expect("a 413 reply");
    assert_eq!(reply.status, 413);
    assert_eq!(reply.details, "request_payload_too_large");
    assert_eq!(reply.body_str(), "Payload Too Large");
    assert_eq!(
        stream.request_header("x-body-hook"),
        None,
        "the hook never ran"
    );
    assert_eq!(stream.resumed_requests(), 0);
    assert!(
        test.logs_at(log::Level::Warn)
            .iter()
            .any(|line| line.contains("20 bytes, over the limit of 16 bytes")),
        "{:?}",
        test.logs()
    );
    stream.end();
    assert_eq!(test.live_tasks(), 0);
}

#[test]
fn a_buffered_body_at_the_limit_reaches_the_hook() {
    let test = PluginTest::<Small>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":method", "POST")], false);
    assert_eq!(stream.send_request_body("0123456789", false), Action::Pause);
    assert_eq!(stream.send_request_body("012345", true), Action::Continue);
    assert_eq!(stream.local_reply(), None);
    assert_eq!(stream.request_header("x-body-hook").as_deref(), Some("ran"));
    assert_eq!(stream.request_body(), b"0123456789012345");
}

#[test]
fn a_buffered_response_body_over_the_limit_is_refused_with_500() {
    let test = PluginTest::<Small>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":method", "GET")], true);
    stream.send_response_headers(&[(":status", "200")], false);
    assert_eq!(
        stream.send_response_body("a response longer than sixteen bytes", true),
        Action::Pause
    );
    let reply = stream.local_reply().expect("a 500 reply");
    assert_eq!(reply.status, 500);
    assert_eq!(reply.details, "response_payload_too_large");
    assert_eq!(stream.response_header(":status").as_deref(), Some("500"));
    assert_eq!(stream.response_body(), b"Internal Server Error");
}

#[test]
fn a_response_that_arrives_while_the_body_hook_awaits_runs_its_hook_afterwards() {
    struct Both;
    impl Plugin for Both {
        type Root = BufferRequests;
        fn new(_: &Rc<BufferRequests>) -> Self {
            Both
        }
        async fn on_request_body(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
            let answer = HttpClient::new("scanner").get("/").send().await?;
            req.set_body(answer.body());
            Ok(Flow::Continue)
        }
        async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
            resp.headers_mut().insert("x-after-body", "1");
            Ok(Flow::Continue)
        }
    }

    let test = PluginTest::<Both>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":method", "POST")], false);
    assert_eq!(stream.send_request_body("data", true), Action::Pause);
    // An upstream that answers before reading the body: its headers reach the plugin while
    // the body hook still awaits. The callback is held, not lost.
    assert_eq!(
        stream.send_response_headers(&[(":status", "200")], true),
        Action::Pause
    );
    assert_eq!(stream.response_header("x-after-body"), None);
    test.respond(&test.calls()[0], 200, &[], "scanned");
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.resumed_responses(), 1);
    assert_eq!(stream.request_body(), b"scanned");
    assert_eq!(stream.response_header("x-after-body").as_deref(), Some("1"));
}

#[test]
fn a_streaming_body_hook_runs_per_chunk() {
    struct Stamp;
    impl Plugin for Stamp {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            Stamp
        }
        async fn on_response_body(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
            resp.prepend_body("<");
            resp.append_body(">");
            Ok(Flow::Continue)
        }
    }

    let test = PluginTest::<Stamp>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    stream.send_response_headers(&[(":status", "200")], false);
    assert_eq!(stream.send_response_body("a", false), Action::Continue);
    assert_eq!(stream.send_response_body("b", true), Action::Continue);
    assert_eq!(stream.response_body(), b"<a><b>");
}

#[test]
fn a_chunk_that_arrives_while_the_previous_chunk_awaits_is_held_until_its_own_hook_ran() {
    // Found by the random schedules (tests/schedules.rs): the request used to be resumed when
    // the first chunk's hook finished, which let the proxy send the second chunk upstream
    // before its hook ran, and the second hook's resume then hit a stream no longer paused.
    struct Inspect;
    impl Plugin for Inspect {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            Inspect
        }
        async fn on_request_body(&mut self, _req: &mut Request<'_>) -> Result<Flow, Error> {
            HttpClient::new("scanner").get("/").send().await?;
            Ok(Flow::Continue)
        }
    }

    let test = PluginTest::<Inspect>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":method", "POST")], false);
    assert_eq!(stream.send_request_body("a", false), Action::Pause);
    assert_eq!(stream.send_request_body("b", true), Action::Pause);
    assert_eq!(test.calls().len(), 1, "the second hook waits for the first");

    test.respond(&test.calls()[0], 200, &[], "");
    assert_eq!(
        stream.resumed_requests(),
        0,
        "chunk b has not been inspected"
    );
    assert!(stream.is_request_paused());
    assert_eq!(test.calls().len(), 1, "the second chunk's hook now runs");

    test.respond(&test.calls()[0], 200, &[], "");
    assert_eq!(stream.resumed_requests(), 1);
    assert!(!stream.is_request_paused());
    assert_eq!(stream.request_body(), b"ab");
}

#[test]
fn a_paused_response_hook_resumes_the_response() {
    struct Annotate;
    impl Plugin for Annotate {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            Annotate
        }
        async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
            let status = resp.status().map_or(0, u16::from);
            let note = HttpClient::new("notes")
                .get("/note")
                .query("status", &status.to_string())
                .query("q", "a b&c")
                .send()
                .await?;
            resp.headers_mut().insert("x-note", note.text()?);
            Ok(Flow::Continue)
        }
    }

    let test = PluginTest::<Annotate>::new("").unwrap();
    let stream = test.stream();
    assert_eq!(
        stream.send_request_headers(&[(":path", "/")], true),
        Action::Continue
    );
    assert_eq!(
        stream.send_response_headers(&[(":status", "404")], true),
        Action::Pause
    );
    let call = &test.calls()[0];
    assert_eq!(call.path(), "/note?status=404&q=a%20b%26c");
    test.respond(call, 200, &[], "missing");
    assert_eq!(stream.resumed_responses(), 1);
    assert_eq!(stream.resumed_requests(), 0);
    assert_eq!(stream.response_header("x-note").as_deref(), Some("missing"));
}

#[test]
fn header_operations_cover_get_add_replace_remove_and_set_all() {
    struct Headers;
    impl Plugin for Headers {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            Headers
        }
        async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
            let all = req.headers();
            let names: Vec<&str> = all.iter().map(|(name, _)| name).collect();
            let seen = names.join(",");
            let method = req.method().unwrap_or_default();
            let path = req.path().unwrap_or_default();
            req.headers_mut()
                .append("x-multi", "1")
                .append("x-multi", "2")
                .insert("X-Replaced", "new")
                .remove("x-drop")
                .remove_prefixed("x-internal-")
                .insert("x-seen", &seen)
                .insert("x-method-path", format!("{method} {path}"));
            Ok(Flow::Continue)
        }
        async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
            resp.headers_mut()
                .set_all(&[(":status", "201"), ("X-Only", "this")]);
            Ok(Flow::Continue)
        }
    }

    let test = PluginTest::<Headers>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(
        &[
            (":method", "GET"),
            (":path", "/p"),
            ("x-replaced", "old"),
            ("x-replaced", "older"),
            ("x-drop", "1"),
            ("X-Internal-A", "1"),
            ("x-internal-b", "2"),
        ],
        true,
    );
    assert_eq!(
        stream.request_headers(),
        [
            (":method", "GET"),
            (":path", "/p"),
            ("x-replaced", "new"),
            ("x-multi", "1"),
            ("x-multi", "2"),
            (
                "x-seen",
                ":method,:path,x-replaced,x-replaced,x-drop,x-internal-a,x-internal-b"
            ),
            ("x-method-path", "GET /p"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()))
    );
    stream.send_response_headers(&[(":status", "200"), ("x-old", "1")], true);
    assert_eq!(
        stream.response_headers(),
        [(":status", "201"), ("x-only", "this")]
            .map(|(name, value)| (name.to_string(), value.to_string()))
    );
}

#[test]
fn on_log_reads_the_finished_exchange_and_logs_through_the_log_crate() {
    struct Access;
    impl Plugin for Access {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            Access
        }
        async fn on_log(&mut self, done: &Done<'_>) {
            let path = done.request_header(":path").map(|value| value.to_string());
            let status = done
                .response_header(":status")
                .map(|value| value.to_string());
            log::info!(
                "{} {}",
                path.unwrap_or_default(),
                status.unwrap_or_default()
            );
        }
    }

    let test = PluginTest::<Access>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/log-me")], true);
    stream.send_response_headers(&[(":status", "204")], true);
    assert!(test.logs_at(log::Level::Info).is_empty());
    stream.end();
    assert_eq!(test.logs_at(log::Level::Info), ["/log-me 204"]);
    assert_eq!(test.live_tasks(), 0);
}

#[test]
fn json_bodies_and_timeouts_reach_the_call() {
    struct Post;
    impl Plugin for Post {
        type Root = NoConfig;
        fn new(_: &Rc<NoConfig>) -> Self {
            Post
        }
        async fn on_request_headers(&mut self, _req: &mut Request<'_>) -> Result<Flow, Error> {
            let client = HttpClient::new("api")
                .with_authority("api.internal")
                .with_timeout(Duration::from_millis(250));
            let answer = client
                .post("token")
                .json(&serde_json::json!({"user": "alice"}))
                .bearer("secret")
                .header("X-Trace", "7")
                .timeout(Duration::from_millis(100))
                .send()
                .await?;
            let parsed: serde_json::Value = answer.json()?;
            log::info!("{}", parsed["ok"]);
            Ok(Flow::Continue)
        }
    }

    let test = PluginTest::<Post>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], true);
    let call = &test.calls()[0];
    assert_eq!(call.method(), "POST");
    assert_eq!(call.path(), "/token");
    assert_eq!(call.authority(), "api.internal");
    assert_eq!(call.timeout(), Duration::from_millis(100));
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(call.header("authorization"), Some("Bearer secret"));
    assert_eq!(call.header("x-trace"), Some("7"));
    assert_eq!(call.body_str(), r#"{"user":"alice"}"#);
    test.respond(call, 200, &[], r#"{"ok": true}"#);
    assert_eq!(test.logs_at(log::Level::Info), ["true"]);
    assert_eq!(stream.resumed_requests(), 1);
}

#[test]
fn a_bad_configuration_is_rejected_with_the_field_named() {
    #[derive(serde::Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Config {
        #[serde(default)]
        #[allow(dead_code, reason = "only parsed")]
        timeout_ms: u32,
    }
    impl PluginConfig for Config {}
    struct Configured;
    impl Plugin for Configured {
        type Root = Config;
        fn new(_: &Rc<Config>) -> Self {
            Configured
        }
    }

    let rejected = PluginTest::<Configured>::new(r#"{"timeoutMs": "soon"}"#)
        .err()
        .expect("rejected");
    assert_eq!(
        rejected.errors,
        [
            "invalid plugin configuration: field `timeoutMs`: invalid type: string \"soon\", expected u32 at line 1 column 20"
        ]
    );
    assert!(PluginTest::<Configured>::new(r#"{"timeoutMs": 5}"#).is_ok());
    assert!(PluginTest::<Configured>::new("").is_ok());
}

#[test]
#[should_panic(expected = "the proxy holds body callbacks until the plugin resumes")]
fn the_test_proxy_holds_the_body_while_headers_are_paused() {
    let test = PluginTest::<Gate>::new("").unwrap();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/")], false);
    stream.send_request_body("too early", true);
}

/// Implements only the request hook; counts its logs to show the default hooks are skipped
/// without changing what the proxy sees.
struct OnlyRequest;

impl Plugin for OnlyRequest {
    type Root = NoConfig;

    fn new(_: &Rc<NoConfig>) -> Self {
        OnlyRequest
    }

    async fn on_request_headers(&mut self, req: &mut Request<'_>) -> Result<Flow, Error> {
        req.headers_mut().insert("x-seen", "1");
        Ok(Flow::Continue)
    }
}

/// Implements only the response hook, which must run on every stream.
struct OnlyResponse;

impl Plugin for OnlyResponse {
    type Root = NoConfig;

    fn new(_: &Rc<NoConfig>) -> Self {
        OnlyResponse
    }

    async fn on_response_headers(&mut self, resp: &mut Response<'_>) -> Result<Flow, Error> {
        resp.headers_mut().insert("x-response-seen", "1");
        Ok(Flow::Continue)
    }
}

#[test]
fn hooks_left_at_their_default_continue_on_every_stream_and_implemented_ones_always_run() {
    let only_request = PluginTest::<OnlyRequest>::new("").unwrap();
    let only_response = PluginTest::<OnlyResponse>::new("").unwrap();
    for _ in 0..3 {
        let stream = only_request.stream();
        assert_eq!(
            stream.send_request_headers(&[(":path", "/")], true),
            Action::Continue
        );
        assert_eq!(stream.request_header("x-seen").as_deref(), Some("1"));
        assert_eq!(
            stream.send_response_headers(&[(":status", "200")], true),
            Action::Continue
        );
        assert_eq!(stream.response_header("x-response-seen"), None);

        let stream = only_response.stream();
        assert_eq!(
            stream.send_request_headers(&[(":path", "/")], true),
            Action::Continue
        );
        assert_eq!(
            stream.send_response_headers(&[(":status", "200")], true),
            Action::Continue
        );
        assert_eq!(
            stream.response_header("x-response-seen").as_deref(),
            Some("1"),
            "an implemented hook was skipped"
        );
    }
}
