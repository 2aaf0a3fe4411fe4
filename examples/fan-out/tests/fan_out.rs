//! Two concurrent calls merged into the request, through the native testing API.

use std::time::Duration;

use fan_out::FanOut;
use proxy_async::testing::{Action, Call, CallFailure, PluginTest, TestStream};

const CONFIG: &str = r#"{
    "profile": {"cluster": "profile", "path": "/profile"},
    "flags":   {"cluster": "flags",   "path": "/flags", "timeout_ms": 100}
}"#;

const PROFILE_OK: &str = r#"{"tier": "gold"}"#;
const FLAGS_OK: &str = r#"{"flags": ["a", "b"]}"#;

const REQUEST: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/catalog"),
    ("x-user-id", "u-42"),
    // A client must not be able to choose these.
    ("x-profile-tier", "platinum"),
    ("X-Flags", "admin"),
];

fn plugin() -> PluginTest<FanOut> {
    PluginTest::new(CONFIG).expect("the configuration is valid")
}

/// Sends [`REQUEST`]; returns the stream and its (profile, flags) calls, both in flight.
fn start(test: &PluginTest<FanOut>) -> (TestStream<'_, FanOut>, Call, Call) {
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    let calls = stream.calls();
    assert_eq!(calls.len(), 2, "both calls in flight: {calls:?}");
    let profile = calls.iter().find(|call| call.cluster() == "profile");
    let flags = calls.iter().find(|call| call.cluster() == "flags");
    (
        stream,
        profile.expect("a profile call").clone(),
        flags.expect("a flags call").clone(),
    )
}

fn assert_warned(test: &PluginTest<FanOut>, words: &[&str]) {
    let warnings = test.logs_at(log::Level::Warn);
    assert!(
        warnings
            .iter()
            .any(|line| words.iter().all(|word| line.contains(word))),
        "no warning with {words:?}: {warnings:?}"
    );
}

/// The request went on with the tier and without any `x-flags` (not even the client's).
fn assert_continued_without_flags(stream: &TestStream<'_, FanOut>) {
    assert_eq!(stream.local_reply(), None);
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(
        stream.request_header("x-profile-tier").as_deref(),
        Some("gold")
    );
    assert_eq!(stream.request_header("x-flags"), None);
}

/// The client got a 503 and an error line names the profile service and `words`.
fn assert_failed_closed(
    test: &PluginTest<FanOut>,
    stream: &TestStream<'_, FanOut>,
    words: &[&str],
) {
    let reply = stream.local_reply().expect("a local reply");
    assert_eq!(reply.status, 503);
    assert_eq!(stream.resumed_requests(), 0);
    assert_eq!(stream.request_header("x-profile-tier"), None);
    assert_eq!(stream.request_header("x-flags"), None);
    let errors = test.logs_at(log::Level::Error);
    assert!(
        errors
            .iter()
            .any(|line| line.contains("profile") && words.iter().all(|word| line.contains(word))),
        "no error line with {words:?}: {errors:?}"
    );
}

#[test]
fn both_calls_are_in_flight_before_either_is_answered() {
    let test = plugin();
    let (stream, profile, flags) = start(&test);

    assert_eq!(profile.method(), "GET");
    assert_eq!(profile.path(), "/profile?user=u-42");
    assert_eq!(profile.authority(), "profile");
    assert_eq!(profile.timeout(), Duration::from_millis(500));
    assert_eq!(flags.method(), "GET");
    assert_eq!(flags.path(), "/flags?user=u-42");
    assert_eq!(flags.authority(), "flags");
    assert_eq!(flags.timeout(), Duration::from_millis(100));
    assert_eq!(test.awaited_calls(), 2);
    assert_eq!(stream.resumed_requests(), 0);
    assert!(stream.is_request_paused());
}

#[test]
fn answers_in_reverse_order_are_merged_and_the_request_resumed_once() {
    let test = plugin();
    let (stream, profile, flags) = start(&test);

    test.respond(&flags, 200, &[], FLAGS_OK);
    assert_eq!(stream.resumed_requests(), 0, "the profile is still out");
    assert!(stream.is_request_paused());
    assert_eq!(stream.calls(), vec![profile.clone()]);

    test.respond(&profile, 200, &[], PROFILE_OK);
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.local_reply(), None);
    assert_eq!(
        stream.request_header("x-profile-tier").as_deref(),
        Some("gold")
    );
    assert_eq!(stream.request_header("x-flags").as_deref(), Some("a,b"));
    assert_eq!(stream.request_header("x-user-id").as_deref(), Some("u-42"));
    assert!(test.logs_at(log::Level::Warn).is_empty());

    assert_eq!(
        stream.send_response_headers(&[(":status", "200")], true),
        Action::Continue
    );
    stream.end();
    assert_eq!(stream.resumed_requests(), 1, "resumed exactly once");
    assert_eq!((test.live_tasks(), test.awaited_calls()), (0, 0));
}

#[test]
fn answers_in_order_are_merged_too() {
    let test = plugin();
    let (stream, profile, flags) = start(&test);
    test.respond(&profile, 200, &[], PROFILE_OK);
    assert_eq!(stream.resumed_requests(), 0, "the flags are still out");
    assert_eq!(
        stream.request_header("x-profile-tier"),
        None,
        "the client's is gone, the plugin's is not set yet"
    );
    test.respond(&flags, 200, &[], r#"{"flags": ["beta"]}"#);
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(
        stream.request_header("x-profile-tier").as_deref(),
        Some("gold")
    );
    assert_eq!(stream.request_header("x-flags").as_deref(), Some("beta"));
}

#[test]
fn the_request_body_reaches_the_upstream_after_the_awaits() {
    let test = plugin();
    let stream = test.stream();
    let post = [(":method", "POST"), (":path", "/"), ("x-user-id", "u-1")];
    assert_eq!(stream.send_request_headers(&post, false), Action::Pause);
    for call in stream.calls() {
        let body = if call.cluster() == "profile" {
            PROFILE_OK
        } else {
            FLAGS_OK
        };
        test.respond(&call, 200, &[], body);
    }
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.send_request_body(b"payload", true), Action::Continue);
    assert_eq!(stream.request_body(), b"payload");
}

#[test]
fn the_user_id_is_percent_encoded_in_the_query() {
    let test = plugin();
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/"), ("x-user-id", "a b&c=d")], true);
    assert_eq!(stream.calls().len(), 2);
    for call in stream.calls() {
        assert!(
            call.path().ends_with("?user=a%20b%26c%3Dd"),
            "{}",
            call.path()
        );
    }
}

#[test]
fn an_empty_flag_list_sets_an_empty_header() {
    let test = plugin();
    let (stream, profile, flags) = start(&test);
    test.respond(&flags, 200, &[], r#"{"flags": []}"#);
    test.respond(&profile, 200, &[], PROFILE_OK);
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.request_header("x-flags").as_deref(), Some(""));
}

// ---------------------------------------------------------------------------------------------
// The flags are optional.

#[test]
fn a_flags_failure_goes_on_without_flags_and_warns() {
    let cases: [(u16, &str, &str); 4] = [
        (500, FLAGS_OK, "500"),
        (200, "not json", "not the expected JSON"),
        (200, r#"{"flags": "a,b"}"#, "not the expected JSON"),
        (200, r#"{"flags": ["a", "b,admin"]}"#, "not a header token"),
    ];
    for (status, body, why) in cases {
        let test = plugin();
        let (stream, profile, flags) = start(&test);
        test.respond(&flags, status, &[], body);
        test.respond(&profile, 200, &[], PROFILE_OK);
        assert_continued_without_flags(&stream);
        assert_warned(&test, &["flags", "`flags`", why]);
        assert!(test.logs_at(log::Level::Error).is_empty());
    }
}

#[test]
fn a_flags_timeout_goes_on_without_flags() {
    let test = plugin();
    let (stream, profile, flags) = start(&test);
    test.respond(&profile, 200, &[], PROFILE_OK);
    test.fail_call(&flags, &CallFailure::Timeout);
    assert_continued_without_flags(&stream);
    assert_warned(
        &test,
        &["no response from cluster `flags` within the call's timeout (100 ms)"],
    );
}

#[test]
fn a_flags_cluster_unknown_to_the_proxy_goes_on_without_flags() {
    let test = PluginTest::<FanOut>::builder()
        .config(CONFIG)
        .clusters(&["profile"])
        .build()
        .expect("valid");
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    let calls = stream.calls();
    assert_eq!(calls.len(), 1, "only the profile call went out");
    test.respond(&calls[0], 200, &[], PROFILE_OK);
    assert_continued_without_flags(&stream);
    assert_warned(&test, &["refused", "`flags`"]);
}

// ---------------------------------------------------------------------------------------------
// The profile is required.

#[test]
fn a_profile_failure_is_503() {
    let cases: [(u16, &str, &str); 5] = [
        (500, PROFILE_OK, "500"),
        (404, "", "404"),
        (200, "<html>", "not the expected JSON"),
        (200, r#"{"level": "gold"}"#, "missing field `tier`"),
        (200, r#"{"tier": ""}"#, "empty tier"),
    ];
    for (status, body, why) in cases {
        let test = plugin();
        let (stream, profile, flags) = start(&test);
        test.respond(&profile, status, &[], body);
        assert_eq!(stream.local_reply(), None, "waits for the flags call too");
        test.respond(&flags, 200, &[], FLAGS_OK);
        assert_failed_closed(&test, &stream, &["`profile`", why]);
    }
}

#[test]
fn a_profile_timeout_is_503() {
    let test = plugin();
    let (stream, profile, flags) = start(&test);
    test.respond(&flags, 200, &[], FLAGS_OK);
    test.fail_call(&profile, &CallFailure::Timeout);
    assert_failed_closed(
        &test,
        &stream,
        &["no response from cluster `profile` within the call's timeout (500 ms)"],
    );
}

#[test]
fn a_profile_cluster_unknown_to_the_proxy_is_503() {
    let test = PluginTest::<FanOut>::builder()
        .config(CONFIG)
        .clusters(&["flags"])
        .build()
        .expect("valid");
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    let calls = stream.calls();
    assert_eq!(calls.len(), 1, "only the flags call went out");
    test.respond(&calls[0], 200, &[], FLAGS_OK);
    assert_failed_closed(&test, &stream, &["refused", "`profile`"]);
}

#[test]
fn a_missing_user_id_is_401_without_calls() {
    let test = plugin();
    for headers in [
        &[(":path", "/"), ("x-flags", "admin")][..],
        &[(":path", "/"), ("x-user-id", "")][..],
    ] {
        let stream = test.stream();
        assert_eq!(stream.send_request_headers(headers, true), Action::Pause);
        let reply = stream.local_reply().expect("a local reply");
        assert_eq!(reply.status, 401);
        assert_eq!(reply.details, "missing_user_id");
        assert_eq!(stream.resumed_requests(), 0);
        assert_eq!(stream.request_header("x-flags"), None);
    }
    assert!(test.all_calls().is_empty());
}

#[test]
fn a_client_that_goes_away_mid_call_leaves_nothing_behind() {
    let test = plugin();
    let (stream, profile, flags) = start(&test);
    test.respond(&flags, 200, &[], FLAGS_OK);
    stream.end();
    assert_eq!((test.live_tasks(), test.awaited_calls()), (0, 0));
    test.respond(&profile, 200, &[], PROFILE_OK);
    assert_eq!((test.live_tasks(), test.awaited_calls()), (0, 0));
    assert_eq!(stream.resumed_requests(), 0);
    assert_eq!(stream.local_reply(), None);
}

// ---------------------------------------------------------------------------------------------
// Configuration.

#[test]
fn blocks_have_defaults() {
    let test = PluginTest::<FanOut>::new(
        r#"{"profile": {"cluster": "p", "authority": "profile.local"}, "flags": {"cluster": "f"}}"#,
    )
    .expect("valid");
    let stream = test.stream();
    stream.send_request_headers(&[(":path", "/"), ("x-user-id", "u")], true);
    let calls = stream.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].cluster(), calls[0].path()),
        ("p", "/profile?user=u")
    );
    assert_eq!(calls[0].authority(), "profile.local");
    assert_eq!(
        (calls[1].cluster(), calls[1].path()),
        ("f", "/flags?user=u")
    );
    assert_eq!(calls[1].authority(), "f");
    assert_eq!(calls[1].timeout(), Duration::from_millis(500));
}

#[test]
fn bad_configurations_are_rejected_naming_the_field() {
    let cases = [
        ("", "`profile.cluster`"),
        (r#"{"profile": {"cluster": "p"}}"#, "`flags.cluster`"),
        (
            r#"{"profile": {"cluster": "p", "timeout_ms": 0}, "flags": {"cluster": "f"}}"#,
            "`profile.timeout_ms`",
        ),
        (
            r#"{"profile": {"cluster": "p"}, "flags": {"cluster": "f", "path": "flags"}}"#,
            "`flags.path`",
        ),
        (
            r#"{"profile": {"cluster": "p", "authority": ""}, "flags": {"cluster": "f"}}"#,
            "`profile.authority`",
        ),
        (
            r#"{"profile": {"cluster": "p", "clustr": "x"}, "flags": {"cluster": "f"}}"#,
            "unknown field `clustr`",
        ),
    ];
    for (json, field) in cases {
        let message = PluginTest::<FanOut>::new(json)
            .err()
            .unwrap_or_else(|| panic!("accepted: {json}"))
            .to_string();
        assert!(message.contains(field), "{json}: {message}");
    }
}
