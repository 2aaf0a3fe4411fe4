//! The auth flow as a client and the two services see it, through the native testing API.

use std::time::Duration;

use auth_flow::AuthFlow;
use proxy_async::testing::{Action, Call, PluginTest, TestStream};

const CONFIG: &str = r#"{
    "auth":  {"cluster": "auth",  "authority": "auth.local",  "path": "/token", "timeout_ms": 500},
    "users": {"cluster": "users", "authority": "users.local", "path": "/me",    "timeout_ms": 250},
    "credential_header": "authorization"
}"#;

const TOKEN_OK: &str = r#"{"token": "tok-123"}"#;
const USER_OK: &str = r#"{"id": "u-42", "name": "Alice"}"#;

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
    test.respond(&auth, status, &[("content-type", "application/json")], body);
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
    test.respond(
        &users,
        status,
        &[("content-type", "application/json")],
        body,
    );
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

fn assert_no_identity_headers(stream: &TestStream<'_, AuthFlow>) {
    let leaked: Vec<_> = stream
        .request_headers()
        .into_iter()
        .filter(|(name, _)| name.to_ascii_lowercase().starts_with("x-user-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "identity headers on the request: {leaked:?}"
    );
}

/// The plugin failed closed with 503 and logged an error line containing every one of `words`.
fn assert_failed_closed(
    test: &PluginTest<AuthFlow>,
    stream: &TestStream<'_, AuthFlow>,
    words: &[&str],
) {
    assert_rejected(stream, 503);
    let errors = test.logs_at(log::Level::Error);
    assert!(
        errors
            .iter()
            .any(|line| words.iter().all(|word| line.contains(word))),
        "no error log line with {words:?}: {errors:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Success.

#[test]
fn success_calls_auth_then_users_and_sets_the_identity() {
    let test = plugin();
    // This scenario also runs against the proxy-wasm module and the component, in lockstep.
    assert!(test.runs_compiled() && test.runs_component());
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
    test.respond(&only_call(&stream, "auth"), 200, &[], TOKEN_OK);
    test.respond(&only_call(&stream, "users"), 200, &[], USER_OK);
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
    test.respond(&auth, 200, &[], TOKEN_OK);
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

#[test]
fn auth_timeout_is_503() {
    let test = plugin();
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    test.fail(&only_call(&stream, "auth"));
    assert_failed_closed(&test, &stream, &["auth", "no response", "500 ms"]);
    assert_eq!(test.all_calls().len(), 1);
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
    test.fail(&only_call(&stream, "users"));
    assert_failed_closed(&test, &stream, &["users", "no response", "250 ms"]);
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
    test.respond(&auth, 200, &[], TOKEN_OK);
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
