//! The auth flow as a client and the two services see it, through the native testing API.

use std::time::Duration;

use auth_flow::AuthFlow;
use proxy_async::testing::{Action, Call, CallFailure, PluginTest, TestStream};

const CONFIG: &str = r#"{
    "auth":  {"cluster": "auth",  "authority": "auth.local",  "path": "/token", "timeout_ms": 500},
    "users": {"cluster": "users", "authority": "users.local", "path": "/me",    "timeout_ms": 250},
    "credential_header": "authorization"
}"#;

const TOKEN_OK: &str = r#"{"token": "tok-123"}"#;
const USER_OK: &str = r#"{"id": "u-42", "name": "Alice"}"#;

/// The headers of a JSON answer.
const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

/// A request with a credential and two headers a client must not be able to set.
const REQUEST: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/orders"),
    (":authority", "shop.example"),
    ("authorization", "secret-credential"),
    ("x-user-id", "admin"),
    ("X-User-Admin", "true"),
    ("x-request-id", "r1"),
];

fn plugin() -> PluginTest<AuthFlow> {
    PluginTest::new(CONFIG).expect("the configuration is valid")
}

/// The one pending call of the stream, checked to go to `cluster`.
fn only_call(stream: &TestStream<'_, AuthFlow>, cluster: &str) -> Call {
    let calls = stream.calls();
    assert_eq!(calls.len(), 1, "exactly one call in flight: {calls:?}");
    assert_eq!(calls[0].cluster(), cluster);
    calls[0].clone()
}

/// Sends [`REQUEST`] and answers the auth call with `status`/`body`.
fn after_auth<'t>(
    test: &'t PluginTest<AuthFlow>,
    status: u16,
    body: &str,
) -> TestStream<'t, AuthFlow> {
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    let auth = only_call(&stream, "auth");
    test.respond(&auth, status, JSON, body);
    stream
}

/// Sends [`REQUEST`], lets auth succeed and answers the users call with `status`/`body`.
fn after_users<'t>(
    test: &'t PluginTest<AuthFlow>,
    status: u16,
    body: &str,
) -> TestStream<'t, AuthFlow> {
    let stream = after_auth(test, 200, TOKEN_OK);
    let users = only_call(&stream, "users");
    test.respond(&users, status, JSON, body);
    stream
}

/// The client got a local reply with `status`, the request never went upstream, and no
/// identity header (client-made or not) is on it.
fn assert_rejected(stream: &TestStream<'_, AuthFlow>, status: u16) {
    let reply = stream.local_reply().expect("a local reply");
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        stream.response_header(":status").as_deref(),
        Some(status.to_string().as_str())
    );
    assert_eq!(
        stream.resumed_requests(),
        0,
        "a rejected request is never resumed"
    );
    assert_no_identity_headers(stream);
    assert!(stream.calls().is_empty(), "no call is left pending");
}

/// Whether a header, as an upstream may read it, is an identity header: CGI-style servers
/// read `_` and `-` alike, and every server ignores case.
fn looks_like_identity(name: &str) -> bool {
    name.to_ascii_lowercase()
        .replace('_', "-")
        .starts_with("x-user-")
}

fn assert_no_identity_headers(stream: &TestStream<'_, AuthFlow>) {
    let leaked: Vec<_> = stream
        .request_headers()
        .into_iter()
        .filter(|(name, _)| looks_like_identity(name))
        .collect();
    assert!(
        leaked.is_empty(),
        "identity headers on the request: {leaked:?}"
    );
}

/// The plugin failed closed with 503, and its latest error log line (this stream's, when the
/// test drives one stream at a time) contains every one of `words`.
fn assert_failed_closed(
    test: &PluginTest<AuthFlow>,
    stream: &TestStream<'_, AuthFlow>,
    words: &[&str],
) {
    assert_rejected(stream, 503);
    let errors = test.logs_at(log::Level::Error);
    let last = errors.last().map_or("", String::as_str);
    assert!(
        words.iter().all(|word| last.contains(word)),
        "the last error log line lacks one of {words:?}: {errors:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Success.

#[test]
fn success_calls_auth_then_users_and_sets_the_identity() {
    let test = plugin();
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);

    // Only the auth call is out; the users call waits for its answer.
    let auth = only_call(&stream, "auth");
    assert_eq!(auth.method(), "POST");
    assert_eq!(auth.path(), "/token");
    assert_eq!(auth.authority(), "auth.local");
    assert_eq!(auth.timeout(), Duration::from_millis(500));
    assert_eq!(auth.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(auth.body()).expect("a JSON body");
    assert_eq!(body, serde_json::json!({"credential": "secret-credential"}));
    // The client's identity headers are gone already, while the request is held.
    assert_no_identity_headers(&stream);
    assert_eq!(stream.resumed_requests(), 0);

    test.respond(
        &auth,
        200,
        &[("content-type", "application/json")],
        TOKEN_OK,
    );

    let users = only_call(&stream, "users");
    assert_eq!(users.method(), "GET");
    assert_eq!(users.path(), "/me");
    assert_eq!(users.authority(), "users.local");
    assert_eq!(users.timeout(), Duration::from_millis(250));
    assert_eq!(users.header("authorization"), Some("Bearer tok-123"));
    assert!(users.body().is_empty());
    assert_eq!(
        stream.resumed_requests(),
        0,
        "still held while the users call is out"
    );
    assert!(stream.is_request_paused());

    test.respond(
        &users,
        200,
        &[("content-type", "application/json")],
        USER_OK,
    );

    assert_eq!(stream.resumed_requests(), 1);
    assert!(!stream.is_request_paused());
    assert_eq!(stream.local_reply(), None);
    assert_eq!(stream.request_header("x-user-id").as_deref(), Some("u-42"));
    assert_eq!(
        stream.request_header("x-user-name").as_deref(),
        Some("Alice")
    );
    assert_eq!(
        stream.request_header("x-user-admin"),
        None,
        "client-sent header stripped"
    );
    assert_eq!(
        stream.request_header("x-request-id").as_deref(),
        Some("r1"),
        "others kept"
    );
    let user_headers = stream
        .request_headers()
        .into_iter()
        .filter(|(name, _)| name.starts_with("x-user-"))
        .count();
    assert_eq!(user_headers, 2, "exactly x-user-id and x-user-name");
    assert_eq!(test.all_calls().len(), 2);
    assert!(test.logs_at(log::Level::Error).is_empty());

    // The rest of the exchange goes through untouched, and nothing is resumed twice.
    assert_eq!(
        stream.send_response_headers(&[(":status", "200")], true),
        Action::Continue
    );
    stream.end();
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(test.live_tasks(), 0);
}

#[test]
fn the_request_body_reaches_the_upstream_after_the_awaits() {
    let test = plugin();
    let stream = test.stream();
    let post = [
        (":method", "POST"),
        (":path", "/orders"),
        ("authorization", "c"),
    ];
    assert_eq!(stream.send_request_headers(&post, false), Action::Pause);
    test.respond(&only_call(&stream, "auth"), 200, JSON, TOKEN_OK);
    test.respond(&only_call(&stream, "users"), 200, JSON, USER_OK);
    assert_eq!(stream.resumed_requests(), 1);

    assert_eq!(stream.send_request_body(b"payload", true), Action::Continue);
    assert_eq!(stream.request_body(), b"payload");
    assert_eq!(stream.request_header("x-user-id").as_deref(), Some("u-42"));
    assert_eq!(stream.resumed_requests(), 1);
}

#[test]
fn the_credential_header_is_configurable() {
    let test = PluginTest::<AuthFlow>::new(
        r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "X-Api-Key"}"#,
    )
    .expect("valid");
    // `authorization` is not the credential any more.
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/"), ("authorization", "c")], true);
    assert_rejected(&stream, 401);

    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/"), ("x-api-key", "key-1")], true);
    let auth = only_call(&stream, "a");
    assert_eq!(auth.body_str(), r#"{"credential":"key-1"}"#);
}

#[test]
fn upstream_blocks_have_defaults() {
    let test =
        PluginTest::<AuthFlow>::new(r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}}"#)
            .expect("valid");
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/"), ("authorization", "c")], true);
    let auth = only_call(&stream, "a");
    assert_eq!((auth.path(), auth.authority()), ("/token", "a"));
    assert_eq!(auth.timeout(), Duration::from_millis(500));
    test.respond(&auth, 200, JSON, TOKEN_OK);
    let users = only_call(&stream, "u");
    assert_eq!((users.path(), users.authority()), ("/me", "u"));
    assert_eq!(users.timeout(), Duration::from_millis(500));
}

#[test]
fn bad_configurations_are_rejected_naming_the_field() {
    let rejected = |json: &str| {
        PluginTest::<AuthFlow>::new(json)
            .err()
            .unwrap_or_else(|| panic!("accepted: {json}"))
            .to_string()
    };
    let cases = [
        ("", "`auth.cluster`"),
        (r#"{"users": {"cluster": "u"}}"#, "`auth.cluster`"),
        (r#"{"auth": {"cluster": "a"}}"#, "`users.cluster`"),
        (
            r#"{"auth": {"cluster": "a", "timeout_ms": 0}, "users": {"cluster": "u"}}"#,
            "`auth.timeout_ms`",
        ),
        (
            r#"{"auth": {"cluster": "a", "timeout_ms": -5}, "users": {"cluster": "u"}}"#,
            "`auth.timeout_ms`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u", "authority": ""}}"#,
            "`users.authority`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u", "path": "me"}}"#,
            "`users.path`",
        ),
        (
            r#"{"auth": {"cluster": "a", "timeout": 5}, "users": {"cluster": "u"}}"#,
            "unknown field `timeout`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "x-user-key"}"#,
            "`credential_header`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": ""}"#,
            "`credential_header`",
        ),
        // Stripped as identity headers before they could be read.
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "X_User_Key"}"#,
            "`credential_header`",
        ),
        (
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "x-user_key"}"#,
            "`credential_header`",
        ),
    ];
    for (json, field) in cases {
        let message = rejected(json);
        assert!(message.contains(field), "{json}: {message}");
    }
    // Keys added by Istio or Higress at the top level are fine.
    assert!(
        PluginTest::<AuthFlow>::new(
            r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "_plugin_id_": "x"}"#
        )
        .is_ok()
    );
}

// ---------------------------------------------------------------------------------------------
// The caller's fault: 401 and 403.

#[test]
fn a_missing_credential_is_401_without_any_call() {
    let test = plugin();
    for headers in [
        &[(":path", "/"), ("x-user-id", "admin")][..],
        &[(":path", "/"), ("authorization", ""), ("X-User-Admin", "1")][..],
        &[(":path", "/"), ("authorization", "   ")][..],
    ] {
        let stream = test.stream();
        assert_eq!(stream.send_request_headers(headers, true), Action::Pause);
        assert_rejected(&stream, 401);
        let reply = stream.local_reply().expect("a reply");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert_eq!(reply.details, "auth_missing_credential");
        assert_eq!(
            stream.response_header("www-authenticate").as_deref(),
            Some("Bearer")
        );
    }
    assert!(
        test.all_calls().is_empty(),
        "no call for a request without a credential"
    );
}

#[test]
fn auth_401_is_403() {
    let test = plugin();
    let stream = after_auth(&test, 401, "");
    assert_rejected(&stream, 403);
    assert_eq!(
        stream.local_reply().expect("a reply").details,
        "auth_denied"
    );
    assert_eq!(test.all_calls().len(), 1, "no users call after a denial");
}

#[test]
fn auth_403_is_403() {
    let test = plugin();
    let stream = after_auth(&test, 403, r#"{"error": "revoked"}"#);
    assert_rejected(&stream, 403);
    assert_eq!(
        stream.local_reply().expect("a reply").details,
        "auth_denied"
    );
    assert_eq!(test.all_calls().len(), 1, "no users call after a denial");
}

#[test]
fn users_401_is_403() {
    let test = plugin();
    let stream = after_users(&test, 401, "");
    assert_rejected(&stream, 403);
    assert_eq!(
        stream.local_reply().expect("a reply").details,
        "user_denied"
    );
}

#[test]
fn users_403_is_403() {
    let test = plugin();
    let stream = after_users(&test, 403, "");
    assert_rejected(&stream, 403);
}

// ---------------------------------------------------------------------------------------------
// The services' fault: 503, and an error log line that says why.

#[test]
fn auth_500_is_503() {
    let test = plugin();
    let stream = after_auth(&test, 500, TOKEN_OK);
    assert_failed_closed(&test, &stream, &["auth", "500"]);
    assert_eq!(test.all_calls().len(), 1, "no users call after a failure");
}

#[test]
fn auth_redirect_is_503() {
    let test = plugin();
    let stream = after_auth(&test, 302, "");
    assert_failed_closed(&test, &stream, &["auth", "302"]);
}

// The ways a call gets no answer, each as Envoy 1.40 hands it over (the same cases run in
// Envoy in tests/e2e/tests/envoy/auth_flow.rs, where the log lines are the same).

#[test]
fn auth_timeout_is_503() {
    let test = plugin();
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    // Envoy answers the call itself, with a 504: the plugin sees the timeout, not a status.
    test.fail_call(&only_call(&stream, "auth"), &CallFailure::Timeout);
    assert_failed_closed(
        &test,
        &stream,
        &["auth: no response from cluster `auth` within the call's timeout (500 ms)"],
    );
    assert_eq!(test.all_calls().len(), 1);
}

#[test]
fn a_call_left_unanswered_times_out_when_its_timeout_expires() {
    // Nobody answers: the proxy's clock reaching the call's timeout is what ends it, as in
    // Envoy, whose own 504 then arrives.
    let test = plugin();
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    test.advance_time(Duration::from_millis(499));
    assert_eq!(test.calls().len(), 1, "the auth call is still out");
    assert_eq!(stream.local_reply(), None);
    test.advance_time(Duration::from_millis(1));
    assert!(test.calls().is_empty());
    assert_failed_closed(
        &test,
        &stream,
        &["auth: no response from cluster `auth` within the call's timeout (500 ms)"],
    );
}

#[test]
fn auth_unreachable_is_503() {
    let test = plugin();
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    test.fail_call(&only_call(&stream, "auth"), &CallFailure::ConnectionRefused);
    assert_failed_closed(
        &test,
        &stream,
        &["auth: cluster `auth` could not be reached (remote connection failure"],
    );
}

#[test]
fn auth_answer_broken_off_is_503() {
    let test = plugin();
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    test.fail(&only_call(&stream, "auth"));
    assert_failed_closed(
        &test,
        &stream,
        &["auth: the response from cluster `auth` broke off before it was whole"],
    );
}

#[test]
fn an_upstream_answering_like_envoys_timeout_is_still_its_answer() {
    // The same status and body, but from the upstream: Envoy's router marks every upstream
    // answer with `x-envoy-upstream-service-time`.
    let test = plugin();
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    test.respond_raw(
        &only_call(&stream, "auth"),
        &[
            (":status", b"504"),
            ("content-type", b"text/plain"),
            ("x-envoy-upstream-service-time", b"3"),
        ],
        "upstream request timeout",
    );
    assert_failed_closed(&test, &stream, &["auth", "answered 504"]);
}

#[test]
fn auth_malformed_json_is_503() {
    let test = plugin();
    let stream = after_auth(&test, 200, "{not json");
    assert_failed_closed(&test, &stream, &["auth", "not the expected JSON"]);
}

#[test]
fn auth_200_without_a_token_is_503() {
    for body in [
        r#"{"user": "x"}"#,
        r#"{"token": 42}"#,
        r#"{"token": ""}"#,
        r#"{"token": "a b"}"#,
    ] {
        let test = plugin();
        let stream = after_auth(&test, 200, body);
        assert_failed_closed(&test, &stream, &["auth", "`auth`"]);
        assert_eq!(
            test.all_calls().len(),
            1,
            "{body}: no users call without a token"
        );
    }
}

#[test]
fn auth_without_status_is_503() {
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    test.respond_raw(
        &only_call(&stream, "auth"),
        &[("content-type", b"application/json")],
        TOKEN_OK,
    );
    assert_failed_closed(&test, &stream, &["auth", ":status"]);
}

#[test]
fn an_auth_cluster_unknown_to_the_proxy_is_503() {
    let test = PluginTest::<AuthFlow>::builder()
        .config(CONFIG)
        .clusters(&["users"])
        .build()
        .expect("valid");
    let stream = test.stream();
    // The call is refused at once: the hook finishes inside the callback, no pause needed.
    let action = stream.send_request_headers(REQUEST, true);
    assert_eq!(action, Action::Pause, "a local reply stops the request");
    assert!(test.all_calls().is_empty());
    assert_failed_closed(&test, &stream, &["cluster `auth`", "refused"]);
    assert_eq!(
        test.live_tasks(),
        1,
        "the stream's task waits for the next event"
    );
    assert_eq!(test.awaited_calls(), 0);
}

#[test]
fn users_500_is_503() {
    let test = plugin();
    let stream = after_users(&test, 500, USER_OK);
    assert_failed_closed(&test, &stream, &["users", "500"]);
}

#[test]
fn users_malformed_is_503() {
    for body in [
        "<html>oops</html>",
        r#"{"id": "u-42"}"#,
        r#"{"id": "", "name": "Alice"}"#,
        r#"{"id": "u-42\r\nx-user-admin: true", "name": "Alice"}"#,
    ] {
        let test = plugin();
        let stream = after_users(&test, 200, body);
        assert_failed_closed(&test, &stream, &["users", "`users`"]);
    }
}

#[test]
fn users_timeout_is_503() {
    let test = plugin();
    let stream = after_auth(&test, 200, TOKEN_OK);
    test.fail_call(&only_call(&stream, "users"), &CallFailure::Timeout);
    assert_failed_closed(
        &test,
        &stream,
        &["users: no response from cluster `users` within the call's timeout (250 ms)"],
    );
}

// ---------------------------------------------------------------------------------------------
// The client goes away.

#[test]
fn a_client_that_goes_away_mid_call_leaves_nothing_behind() {
    let test = plugin();
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    let auth = only_call(&stream, "auth");
    assert_eq!(test.live_tasks(), 1);
    assert_eq!(test.awaited_calls(), 1);

    stream.end();
    assert_eq!(test.live_tasks(), 0);
    assert_eq!(test.awaited_calls(), 0);
    assert_eq!(test.live_streams(), 0);

    // The orphaned call still gets its answer; it changes nothing.
    test.respond(&auth, 200, JSON, TOKEN_OK);
    assert_eq!(
        test.all_calls().len(),
        1,
        "no users call for a stream that is gone"
    );
    assert_eq!(test.live_tasks(), 0);
    assert_eq!(test.awaited_calls(), 0);
    assert_eq!(stream.resumed_requests(), 0);
    assert_eq!(stream.local_reply(), None);
    assert!(test.logs_at(log::Level::Error).is_empty());

    // Other streams are unaffected.
    let next = after_users(&test, 200, USER_OK);
    assert_eq!(next.resumed_requests(), 1);
}

#[test]
fn a_client_that_goes_away_during_the_users_call_leaves_nothing_behind() {
    let test = plugin();
    let stream = after_auth(&test, 200, TOKEN_OK);
    let users = only_call(&stream, "users");
    stream.end();
    assert_eq!((test.live_tasks(), test.awaited_calls()), (0, 0));
    test.fail(&users);
    assert_eq!((test.live_tasks(), test.awaited_calls()), (0, 0));
    assert_eq!(stream.local_reply(), None);
    assert_eq!(stream.resumed_requests(), 0);
}

// ---------------------------------------------------------------------------------------------
// Header spoofing: identity headers the client made up, in any spelling, never go anywhere.

/// A request carrying every spelling of a made-up identity a client could try: mixed case,
/// repeated names with different values, and `_` for `-` (which CGI-style upstreams read as
/// the same header).
const SPOOFED: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/orders"),
    (":authority", "shop.example"),
    ("X-User-Id", "admin"),
    ("authorization", "secret-credential"),
    ("X-USER-NAME", "Mallory"),
    ("x-user-id", "root"),
    ("x-user-admin", "true"),
    ("X-User-Admin", "yes"),
    ("x_user_id", "underscored"),
    ("X_User-Name", "mixed"),
    ("x-user_role", "admin"),
    ("x-request-id", "r1"),
    ("X-USER-ID", "third"),
];

/// What the services do with a request that was sent: answer its calls, or not.
type Scenario = fn(&PluginTest<AuthFlow>, &TestStream<'_, AuthFlow>);

/// Sends [`SPOOFED`] on a new stream, with `credential` as its only credential (none if
/// `None`).
fn send_spoofed<'t>(
    test: &'t PluginTest<AuthFlow>,
    credential: Option<&str>,
) -> (TestStream<'t, AuthFlow>, Action) {
    let headers: Vec<(&str, &str)> = SPOOFED
        .iter()
        .copied()
        .filter(|(name, _)| *name != "authorization")
        .chain(credential.map(|value| ("authorization", value)))
        .collect();
    let stream = test.stream();
    let action = stream.send_request_headers(&headers, true);
    (stream, action)
}

#[test]
fn spoofed_identity_headers_in_any_spelling_are_replaced_by_exactly_one_of_each() {
    let test = plugin();
    let (stream, action) = send_spoofed(&test, Some("secret-credential"));
    assert_eq!(action, Action::Pause);
    // Gone while the request is held, before any answer.
    assert_no_identity_headers(&stream);
    test.respond(&only_call(&stream, "auth"), 200, JSON, TOKEN_OK);
    assert_no_identity_headers(&stream);
    test.respond(&only_call(&stream, "users"), 200, JSON, USER_OK);

    assert_eq!(stream.resumed_requests(), 1);
    let identity: Vec<(String, String)> = stream
        .request_headers()
        .into_iter()
        .filter(|(name, _)| looks_like_identity(name))
        .collect();
    assert_eq!(
        identity,
        [
            ("x-user-id".to_string(), "u-42".to_string()),
            ("x-user-name".to_string(), "Alice".to_string())
        ],
        "only the plugin's identity goes upstream"
    );
    assert_eq!(stream.request_header("x-request-id").as_deref(), Some("r1"));
    assert_eq!(
        stream.request_header("authorization").as_deref(),
        Some("secret-credential")
    );
}

#[test]
fn spoofed_identity_headers_are_gone_on_every_rejection_path() {
    let scenarios: &[(&str, Option<&str>, u16, Scenario)] = &[
        ("no credential", None, 401, |_, _| {}),
        ("empty credential", Some(" "), 401, |_, _| {}),
        ("auth denies", Some("c"), 403, |test, stream| {
            test.respond(&only_call(stream, "auth"), 401, JSON, "{}");
        }),
        ("users denies", Some("c"), 403, |test, stream| {
            test.respond(&only_call(stream, "auth"), 200, JSON, TOKEN_OK);
            test.respond(&only_call(stream, "users"), 403, JSON, "{}");
        }),
        ("auth answers 500", Some("c"), 503, |test, stream| {
            test.respond(&only_call(stream, "auth"), 500, JSON, TOKEN_OK);
        }),
        ("auth answers HTML", Some("c"), 503, |test, stream| {
            let html = [("content-type", "text/html")];
            test.respond(&only_call(stream, "auth"), 200, &html, TOKEN_OK);
        }),
        ("auth times out", Some("c"), 503, |test, stream| {
            test.fail(&only_call(stream, "auth"));
        }),
        ("users times out", Some("c"), 503, |test, stream| {
            test.respond(&only_call(stream, "auth"), 200, JSON, TOKEN_OK);
            test.fail(&only_call(stream, "users"));
        }),
        ("users answers garbage", Some("c"), 503, |test, stream| {
            test.respond(&only_call(stream, "auth"), 200, JSON, TOKEN_OK);
            test.respond(&only_call(stream, "users"), 200, JSON, "{");
        }),
    ];
    let test = plugin();
    for &(name, credential, status, finish) in scenarios {
        let (stream, action) = send_spoofed(&test, credential);
        assert_eq!(action, Action::Pause, "{name}");
        finish(&test, &stream);
        let reply = stream
            .local_reply()
            .unwrap_or_else(|| panic!("{name}: no reply"));
        assert_eq!(reply.status, status, "{name}: {reply:?}");
        assert_rejected(&stream, status);
    }

    // A call the proxy refuses, inside the request callback.
    let test = PluginTest::<AuthFlow>::builder()
        .config(CONFIG)
        .clusters(&["users"])
        .build()
        .expect("valid");
    let (stream, _) = send_spoofed(&test, Some("c"));
    assert_rejected(&stream, 503);
}

// ---------------------------------------------------------------------------------------------
// The credential header: read in any case, refused when repeated.

#[test]
fn the_credential_header_is_read_in_any_case() {
    let test = PluginTest::<AuthFlow>::new(
        r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}, "credential_header": "X-Api-Key"}"#,
    )
    .expect("valid");
    for name in ["x-api-key", "X-API-KEY", "X-Api-Key"] {
        let stream = test.stream();
        stream.send_request_headers(&[(":path", "/"), (name, "key-1")], true);
        assert_eq!(
            only_call(&stream, "a").body_str(),
            r#"{"credential":"key-1"}"#,
            "{name}"
        );
        stream.end();
    }
}

#[test]
fn a_repeated_credential_is_401_without_any_call() {
    let test = plugin();
    for credentials in [
        ["secret-credential", "other-credential"],
        // The same value twice is still two credentials: refuse rather than guess.
        ["secret-credential", "secret-credential"],
        ["", "secret-credential"],
    ] {
        let stream = test.stream();
        let headers = [
            (":path", "/"),
            ("Authorization", credentials[0]),
            ("x-user-id", "admin"),
            ("AUTHORIZATION", credentials[1]),
        ];
        assert_eq!(stream.send_request_headers(&headers, true), Action::Pause);
        assert_rejected(&stream, 401);
        let reply = stream.local_reply().expect("a reply");
        assert_eq!(
            reply.details, "auth_ambiguous_credential",
            "{credentials:?}"
        );
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    assert!(
        test.all_calls().is_empty(),
        "no call for an ambiguous credential"
    );
}

// ---------------------------------------------------------------------------------------------
// Unexpected answers from the services: never let through.

/// Statuses that are neither 200 nor a denial, as a service or a proxy in front of it may
/// answer them.
const UNEXPECTED_STATUSES: &[u16] = &[
    100, 101, 103, 199, 201, 202, 204, 206, 226, 299, 300, 301, 302, 303, 304, 307, 308, 400, 402,
    404, 405, 407, 408, 409, 410, 418, 422, 429, 451, 499, 500, 501, 502, 503, 504, 599, 600, 999,
];

#[test]
fn unexpected_statuses_from_auth_are_503() {
    let test = plugin();
    for &status in UNEXPECTED_STATUSES {
        let stream = test.stream();
        stream.send_request_headers(REQUEST, true);
        test.respond(&only_call(&stream, "auth"), status, JSON, TOKEN_OK);
        let answered = format!("answered {status} to /token");
        assert_failed_closed(&test, &stream, &["cluster `auth`", &answered]);
    }
    assert_eq!(
        test.all_calls().len(),
        UNEXPECTED_STATUSES.len(),
        "no users call after any of them"
    );
}

#[test]
fn unexpected_statuses_from_users_are_503() {
    let test = plugin();
    for &status in UNEXPECTED_STATUSES {
        let stream = after_users(&test, status, USER_OK);
        let answered = format!("answered {status} to /me");
        assert_failed_closed(&test, &stream, &["cluster `users`", &answered]);
    }
}

#[test]
fn a_status_that_is_not_a_status_is_503() {
    let statuses: &[&[u8]] = &[
        b"",
        b"OK",
        b"2OO",
        b"20",
        b"2000",
        b"65536",
        b"-200",
        b"+200",
        b"0200",
        b" 200",
        b"200 OK",
        b"099",
        b"\xff\xfe\xfd",
    ];
    let test = plugin();
    for &status in statuses {
        let stream = test.stream();
        stream.send_request_headers(REQUEST, true);
        test.respond_raw(
            &only_call(&stream, "auth"),
            &[(":status", status), ("content-type", b"application/json")],
            TOKEN_OK,
        );
        assert_failed_closed(&test, &stream, &["cluster `auth`", "no valid :status"]);

        let stream = after_auth(&test, 200, TOKEN_OK);
        test.respond_raw(
            &only_call(&stream, "users"),
            &[(":status", status), ("content-type", b"application/json")],
            USER_OK,
        );
        assert_failed_closed(&test, &stream, &["cluster `users`", "no valid :status"]);
    }
}

#[test]
fn a_200_that_does_not_say_json_is_503_even_with_a_json_body() {
    let content_types: &[(&[&[u8]], &str)] = &[
        (&[b"text/html"], "content-type \"text/html\""),
        (&[b"text/plain; charset=utf-8"], "text/plain"),
        (&[b"application/jsonp"], "application/jsonp"),
        (&[b"application/json-seq"], "application/json-seq"),
        (&[b"application/problem+json"], "application/problem+json"),
        (&[b"json"], "\"json\""),
        (&[b""], "content-type \"\""),
        (&[b"application/json, text/html"], "text/html"),
        (&[b"application/\xffjson"], "content-type"),
        (&[], "no content-type"),
        (
            &[b"application/json", b"text/html"],
            "more than one content-type",
        ),
        (
            &[b"application/json", b"application/json"],
            "more than one content-type",
        ),
    ];
    let test = plugin();
    for &(values, words) in content_types {
        let headers: Vec<(&str, &[u8])> = [(":status", &b"200"[..])]
            .into_iter()
            .chain(values.iter().map(|value| ("content-type", *value)))
            .collect();

        let stream = test.stream();
        stream.send_request_headers(REQUEST, true);
        test.respond_raw(&only_call(&stream, "auth"), &headers, TOKEN_OK);
        assert_failed_closed(&test, &stream, &["cluster `auth`", "answered 200", words]);
        assert!(stream.calls().is_empty(), "{words}: no users call");

        let stream = after_auth(&test, 200, TOKEN_OK);
        test.respond_raw(&only_call(&stream, "users"), &headers, USER_OK);
        assert_failed_closed(&test, &stream, &["cluster `users`", "answered 200", words]);
    }
}

#[test]
fn json_content_types_with_parameters_or_in_another_case_are_accepted() {
    let test = plugin();
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "APPLICATION/JSON;charset=UTF-8",
        "application/json ; charset=\"utf-8\"",
        " application/json",
    ] {
        let headers = [("content-type", content_type)];
        let stream = test.stream();
        stream.send_request_headers(REQUEST, true);
        test.respond(&only_call(&stream, "auth"), 200, &headers, TOKEN_OK);
        test.respond(&only_call(&stream, "users"), 200, &headers, USER_OK);
        assert_eq!(stream.resumed_requests(), 1, "{content_type}");
        assert_eq!(stream.request_header("x-user-id").as_deref(), Some("u-42"));
    }
    assert!(test.logs_at(log::Level::Error).is_empty());
}

#[test]
fn a_denial_needs_no_json() {
    // 401 and 403 are denials whatever their body says: an HTML error page is fine.
    let test = plugin();
    let html = [("content-type", "text/html")];
    let stream = test.stream();
    stream.send_request_headers(REQUEST, true);
    test.respond(&only_call(&stream, "auth"), 401, &html, "<h1>no</h1>");
    assert_rejected(&stream, 403);

    let stream = after_auth(&test, 200, TOKEN_OK);
    test.respond(&only_call(&stream, "users"), 403, &[], "");
    assert_rejected(&stream, 403);
}
