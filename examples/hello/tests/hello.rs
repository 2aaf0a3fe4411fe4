//! Behaviour of the `hello` plugin as a proxy user sees it.

use hello::Hello;
use proxy_async::testing::{Action, PluginTest};

const REQUEST: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/"),
    (":authority", "example.com"),
];

#[test]
fn adds_hello_header_and_continues_without_resume() {
    let test = PluginTest::<Hello>::new(r#"{"mockEnable": false}"#).unwrap();
    let stream = test.stream();

    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Continue);

    assert_eq!(stream.request_header("hello").as_deref(), Some("world"));
    assert_eq!(stream.request_header(":path").as_deref(), Some("/"));
    assert_eq!(stream.resumed_requests(), 0);
    assert!(!stream.is_request_paused());
    assert_eq!(stream.local_reply(), None);
    assert!(test.all_calls().is_empty());

    // The upstream's response goes through untouched.
    assert_eq!(
        stream.send_response_headers(&[(":status", "204")], true),
        Action::Continue
    );
    assert_eq!(stream.response_header(":status").as_deref(), Some("204"));
    stream.end();
    assert_eq!(test.live_tasks(), 0);
}

#[test]
fn replaces_a_hello_header_sent_by_the_client() {
    let test = PluginTest::<Hello>::new("").unwrap();
    let stream = test.stream();

    let headers = [(":path", "/"), ("hello", "client"), ("hello", "again")];
    assert_eq!(
        stream.send_request_headers(&headers, true),
        Action::Continue
    );

    let hello: Vec<_> = stream
        .request_headers()
        .into_iter()
        .filter(|(name, _)| name == "hello")
        .collect();
    assert_eq!(hello, [("hello".to_string(), "world".to_string())]);
}

#[test]
fn mock_enable_replies_hello_world_and_never_resumes() {
    let test = PluginTest::<Hello>::new(r#"{"mockEnable": true}"#).unwrap();
    let stream = test.stream();

    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);

    let reply = stream.local_reply().expect("a local reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body_str(), "hello world");
    assert_eq!(stream.response_header(":status").as_deref(), Some("200"));
    assert_eq!(stream.response_body(), b"hello world");
    assert_eq!(stream.resumed_requests(), 0);
    assert!(!stream.is_request_paused());
    assert!(test.logs_at(log::Level::Error).is_empty());

    stream.end();
    assert_eq!(stream.resumed_requests(), 0);
    assert_eq!(test.live_tasks(), 0);
}

#[test]
fn every_stream_gets_its_own_reply() {
    let test = PluginTest::<Hello>::new(r#"{"mockEnable": true}"#).unwrap();
    for _ in 0..3 {
        let stream = test.stream();
        assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
        assert_eq!(
            stream
                .local_reply()
                .map(|reply| (reply.status, reply.body_str())),
            Some((200, "hello world".to_string()))
        );
        stream.end();
    }
    assert_eq!(test.live_streams(), 0);
}

#[test]
fn empty_config_means_mock_disabled() {
    for config in ["", "  \n", "{}", r#"{"_rules_": [], "other": 1}"#] {
        let test = PluginTest::<Hello>::new(config)
            .unwrap_or_else(|error| panic!("config {config:?} rejected: {error}"));
        let stream = test.stream();
        assert_eq!(
            stream.send_request_headers(REQUEST, true),
            Action::Continue,
            "config {config:?}"
        );
        assert_eq!(stream.request_header("hello").as_deref(), Some("world"));
        assert_eq!(stream.local_reply(), None, "config {config:?}");
    }
}

#[test]
fn non_boolean_mock_enable_is_rejected_naming_the_field() {
    let rejected = PluginTest::<Hello>::new(r#"{"mockEnable": "yes"}"#)
        .err()
        .expect("the configuration must be rejected");
    let message = rejected.errors.join("\n");
    assert!(message.contains("`mockEnable`"), "{message}");
    assert!(message.contains("expected a boolean"), "{message}");
}

#[test]
fn non_json_config_is_rejected() {
    let rejected = PluginTest::<Hello>::new("mockEnable: true")
        .err()
        .expect("YAML must be rejected");
    assert!(
        rejected.errors.join("\n").contains("not valid JSON"),
        "{rejected}"
    );
}
