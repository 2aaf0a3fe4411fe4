//! Behaviour of the `hello-no-config` plugin as a proxy user sees it.

use hello_no_config::HelloNoConfig;
use proxy_async::testing::{Action, PluginTest};

fn assert_hello_world(test: &PluginTest<HelloNoConfig>, headers: &[(&str, &str)]) {
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(headers, true), Action::Pause);

    let reply = stream.local_reply().expect("a local reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body_str(), "hello world");
    assert_eq!(stream.response_header(":status").as_deref(), Some("200"));
    assert_eq!(stream.response_body(), b"hello world");
    assert_eq!(stream.resumed_requests(), 0);
    assert!(!stream.is_request_paused());

    stream.end();
    assert_eq!(stream.resumed_requests(), 0);
}

#[test]
fn replies_hello_world_to_any_request() {
    let test = PluginTest::<HelloNoConfig>::new("").unwrap();
    let requests: &[&[(&str, &str)]] = &[
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "a.example"),
        ],
        &[
            (":method", "POST"),
            (":path", "/api/v1/items?x=1"),
            (":authority", "b.example"),
            ("content-type", "application/json"),
        ],
        &[(":method", "DELETE"), (":path", "/anything")],
        &[],
    ];
    for headers in requests {
        assert_hello_world(&test, headers);
    }
    assert!(test.all_calls().is_empty());
    assert!(test.logs_at(log::Level::Error).is_empty());
    assert_eq!(test.live_tasks(), 0);
}

#[test]
fn replies_before_the_request_body_reaches_the_upstream() {
    let test = PluginTest::<HelloNoConfig>::new("").unwrap();
    let stream = test.stream();
    // Headers followed by a body: the reply comes on the headers, nothing is forwarded.
    let headers = [(":method", "POST"), (":path", "/upload")];
    assert_eq!(stream.send_request_headers(&headers, false), Action::Pause);
    assert_eq!(stream.local_reply().map(|reply| reply.status), Some(200));
    assert!(stream.request_body().is_empty());
    assert_eq!(stream.resumed_requests(), 0);
}

#[test]
fn empty_and_object_configs_are_accepted() {
    for config in ["", " ", "{}", r#"{"_plugin_id_": "x", "anything": [1, 2]}"#] {
        let test = PluginTest::<HelloNoConfig>::new(config)
            .unwrap_or_else(|error| panic!("config {config:?} rejected: {error}"));
        assert_hello_world(&test, &[(":path", "/")]);
    }
}

#[test]
fn non_json_config_is_rejected() {
    let rejected = PluginTest::<HelloNoConfig>::new("not json")
        .err()
        .expect("the configuration must be rejected");
    assert!(
        rejected.errors.join("\n").contains("not valid JSON"),
        "{rejected}"
    );
}
