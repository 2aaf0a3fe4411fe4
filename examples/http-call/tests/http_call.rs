//! Behaviour of the `http-call` plugin as a proxy user sees it.

use std::time::Duration;

use http_call::{HttpCall, HttpCallConfig};
use proxy_async::PluginConfig;
use proxy_async::testing::{Action, PluginTest};

const K8S: &str = r#"{
    "serviceSource": "k8s",
    "serviceName": "token-server",
    "servicePort": 8080,
    "namespace": "auth",
    "requestPath": "/token?scope=read",
    "tokenHeader": "x-token"
}"#;

const K8S_CLUSTER: &str = "outbound|8080||token-server.auth.svc.cluster.local";

const REQUEST: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/api/items"),
    (":authority", "shop.example"),
];

fn test_with(config: &str) -> PluginTest<HttpCall> {
    PluginTest::<HttpCall>::new(config)
        .map_err(|error| format!("{config}: {error}"))
        .expect("the configuration must be accepted")
}

/// The error lines of a configuration the plugin must reject.
fn rejection(config: &str) -> String {
    let result = PluginTest::<HttpCall>::new(config);
    assert!(result.is_err(), "configuration accepted: {config}");
    result
        .err()
        .map(|rejected| rejected.errors.join("\n"))
        .unwrap_or_default()
}

/// The field `validate` blames for a configuration serde accepts.
fn invalid_field(config: &str) -> Option<String> {
    let parsed: HttpCallConfig = serde_json::from_str(config).expect("valid JSON for the type");
    let error = parsed.validate().expect_err("validation must fail");
    error.field_name().map(str::to_string)
}

#[test]
fn each_service_source_calls_the_higress_cluster_with_its_authority() {
    let cases = [
        (
            r#""serviceSource": "k8s", "serviceName": "foo", "servicePort": 8080, "namespace": "bar""#,
            "outbound|8080||foo.bar.svc.cluster.local",
            "foo.bar.svc.cluster.local",
        ),
        (
            r#""serviceSource": "k8s", "serviceName": "foo", "servicePort": 8080"#,
            "outbound|8080||foo.default.svc.cluster.local",
            "foo.default.svc.cluster.local",
        ),
        (
            r#""serviceSource": "nacos", "serviceName": "foo", "servicePort": 8080, "namespace": "xxxx""#,
            "outbound|8080||foo.DEFAULT-GROUP.xxxx.nacos",
            "foo",
        ),
        (
            r#""serviceSource": "ip", "serviceName": "foo", "servicePort": 80"#,
            "outbound|80||foo.static",
            "foo",
        ),
        (
            r#""serviceSource": "dns", "serviceName": "foo", "servicePort": 443, "domain": "api.foo.com""#,
            "outbound|443||foo.dns",
            "api.foo.com",
        ),
    ];
    for (fields, cluster, authority) in cases {
        let config = format!(r#"{{{fields}, "requestPath": "/token"}}"#);
        // The proxy knows only this cluster: a wrong name would be refused.
        let test = PluginTest::<HttpCall>::builder()
            .config(&config)
            .clusters(&[cluster])
            .build()
            .unwrap_or_else(|error| panic!("{config}: {error}"));
        let stream = test.stream();

        assert_eq!(
            stream.send_request_headers(REQUEST, true),
            Action::Pause,
            "{config}"
        );
        let calls = stream.calls();
        assert_eq!(calls.len(), 1, "{config}");
        assert_eq!(calls[0].cluster(), cluster, "{config}");
        assert_eq!(calls[0].authority(), authority, "{config}");
        assert_eq!(calls[0].method(), "GET", "{config}");
        assert_eq!(calls[0].path(), "/token", "{config}");

        test.respond(&calls[0], 200, &[], "");
        assert_eq!(stream.resumed_requests(), 1, "{config}");
        assert_eq!(stream.local_reply(), None, "{config}");
    }
}

#[test]
fn sends_get_request_path_with_default_timeout_and_pauses() {
    let test = test_with(K8S);
    let stream = test.stream();

    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    assert!(stream.is_request_paused());
    let call = &stream.calls()[0];
    assert_eq!(call.cluster(), K8S_CLUSTER);
    assert_eq!(call.authority(), "token-server.auth.svc.cluster.local");
    assert_eq!(call.method(), "GET");
    assert_eq!(call.path(), "/token?scope=read");
    assert_eq!(call.timeout(), Duration::from_millis(500));
    assert!(call.body().is_empty());
    assert_eq!(stream.resumed_requests(), 0);
    assert_eq!(stream.local_reply(), None);
}

#[test]
fn success_copies_token_header_and_resumes_once() {
    let test = test_with(K8S);
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    let call = &stream.calls()[0];

    test.respond(
        call,
        200,
        &[("x-token", "abc123"), ("x-other", "not copied")],
        "ok",
    );

    assert_eq!(stream.request_header("x-token").as_deref(), Some("abc123"));
    assert_eq!(stream.request_header("x-other"), None);
    assert_eq!(
        stream.request_header(":path").as_deref(),
        Some("/api/items")
    );
    assert_eq!(stream.resumed_requests(), 1);
    assert!(!stream.is_request_paused());
    assert_eq!(stream.local_reply(), None);
    assert!(test.logs_at(log::Level::Error).is_empty());

    // The upstream's answer reaches the client untouched.
    assert_eq!(
        stream.send_response_headers(&[(":status", "200")], true),
        Action::Continue
    );
    stream.end();
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(test.live_tasks(), 0);
}

#[test]
fn token_replaces_the_value_the_client_sent() {
    let test = test_with(K8S);
    let stream = test.stream();
    let headers = [
        (":path", "/"),
        ("x-token", "forged"),
        ("x-token", "forged2"),
    ];
    assert_eq!(stream.send_request_headers(&headers, true), Action::Pause);

    test.respond(&stream.calls()[0], 200, &[("X-Token", "real")], "");

    let tokens: Vec<_> = stream
        .request_headers()
        .into_iter()
        .filter(|(name, _)| name == "x-token")
        .map(|(_, value)| value)
        .collect();
    assert_eq!(tokens, ["real"]);
    assert_eq!(stream.resumed_requests(), 1);
}

#[test]
fn success_without_token_header_continues_unchanged() {
    let test = test_with(K8S);
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);

    test.respond(
        &stream.calls()[0],
        200,
        &[("content-type", "text/plain")],
        "",
    );

    assert_eq!(stream.request_header("x-token"), None);
    assert_eq!(stream.request_headers().len(), REQUEST.len());
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(stream.local_reply(), None);
}

#[test]
fn request_body_waits_for_the_call_and_then_goes_upstream() {
    let test = test_with(K8S);
    let stream = test.stream();
    let headers = [(":method", "POST"), (":path", "/upload")];
    assert_eq!(stream.send_request_headers(&headers, false), Action::Pause);

    test.respond(&stream.calls()[0], 200, &[("x-token", "t")], "");
    assert_eq!(stream.resumed_requests(), 1);

    assert_eq!(stream.send_request_body("payload", true), Action::Continue);
    assert_eq!(stream.request_body(), b"payload");
    assert_eq!(stream.request_header("x-token").as_deref(), Some("t"));
    assert_eq!(test.all_calls().len(), 1);
}

#[test]
fn non_200_status_replies_500_and_never_resumes() {
    for status in [201, 204, 302, 401, 404, 500, 503] {
        let test = test_with(K8S);
        let stream = test.stream();
        assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);

        test.respond(&stream.calls()[0], status, &[("x-token", "abc123")], "nope");

        let reply = stream.local_reply().expect("a local reply");
        assert_eq!(reply.status, 500, "upstream status {status}");
        assert_eq!(
            reply.body_str(),
            "http call failed",
            "upstream status {status}"
        );
        assert_eq!(stream.response_header(":status").as_deref(), Some("500"));
        assert_eq!(stream.resumed_requests(), 0, "upstream status {status}");
        assert_eq!(stream.request_header("x-token"), None);

        let errors = test.logs_at(log::Level::Error);
        assert!(
            errors
                .iter()
                .any(|line| line.contains("http call failed") && line.contains(&status.to_string())),
            "{errors:?}"
        );
        stream.end();
        assert_eq!(stream.resumed_requests(), 0);
    }
}

#[test]
fn call_failure_replies_500_and_never_resumes() {
    let test = test_with(K8S);
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);

    test.fail(&stream.calls()[0]);

    let reply = stream.local_reply().expect("a local reply");
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body_str(), "http call failed");
    assert_eq!(stream.resumed_requests(), 0);
    let errors = test.logs_at(log::Level::Error);
    assert!(
        errors
            .iter()
            .any(|line| line.contains("http call failed") && line.contains(K8S_CLUSTER)),
        "{errors:?}"
    );
}

#[test]
fn cluster_unknown_to_the_proxy_replies_500_at_once() {
    let test = PluginTest::<HttpCall>::builder()
        .config(K8S)
        .clusters(&["outbound|8080||some-other.svc"])
        .build()
        .unwrap();
    let stream = test.stream();

    // The proxy refuses the dispatch: the hook replies inside the same callback.
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    assert!(test.all_calls().is_empty());
    let reply = stream.local_reply().expect("a local reply");
    assert_eq!(
        (reply.status, reply.body_str().as_str()),
        (500, "http call failed")
    );
    assert_eq!(stream.resumed_requests(), 0);
    assert!(
        test.logs_at(log::Level::Error)
            .iter()
            .any(|line| line.contains("refused") && line.contains(K8S_CLUSTER))
    );
}

#[test]
fn concurrent_streams_get_their_own_answers() {
    let test = test_with(K8S);
    let first = test.stream();
    let second = test.stream();
    assert_eq!(first.send_request_headers(REQUEST, true), Action::Pause);
    assert_eq!(second.send_request_headers(REQUEST, true), Action::Pause);
    assert_eq!(test.calls().len(), 2);

    // Answered in the other order.
    test.respond(&second.calls()[0], 200, &[("x-token", "two")], "");
    test.respond(&first.calls()[0], 503, &[], "");

    assert_eq!(second.request_header("x-token").as_deref(), Some("two"));
    assert_eq!(second.resumed_requests(), 1);
    assert_eq!(second.local_reply(), None);
    assert_eq!(first.local_reply().map(|reply| reply.status), Some(500));
    assert_eq!(first.resumed_requests(), 0);
}

#[test]
fn client_leaving_mid_call_drops_the_late_answer() {
    let test = test_with(K8S);
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    let call = stream.calls()[0].clone();

    stream.end();
    test.respond(&call, 200, &[("x-token", "late")], "");

    assert_eq!(stream.resumed_requests(), 0);
    assert_eq!(stream.local_reply(), None);
    assert_eq!(test.live_tasks(), 0);
    assert_eq!(test.awaited_calls(), 0);
}

#[test]
fn missing_or_empty_request_path_is_rejected() {
    for config in [
        r#"{"serviceSource": "ip", "serviceName": "foo", "servicePort": 80}"#,
        r#"{"serviceSource": "ip", "serviceName": "foo", "servicePort": 80, "requestPath": ""}"#,
        r#"{"serviceSource": "ip", "serviceName": "foo", "servicePort": 80, "requestPath": "token"}"#,
    ] {
        assert!(rejection(config).contains("`requestPath`"), "{config}");
        assert_eq!(invalid_field(config).as_deref(), Some("requestPath"));
    }
}

#[test]
fn empty_config_is_rejected_naming_request_path() {
    assert!(rejection("").contains("`requestPath`"));
    assert!(rejection("{}").contains("`requestPath`"));
}

#[test]
fn empty_service_name_is_rejected() {
    for config in [
        r#"{"serviceSource": "ip", "servicePort": 80, "requestPath": "/t"}"#,
        r#"{"serviceSource": "ip", "serviceName": "", "servicePort": 80, "requestPath": "/t"}"#,
    ] {
        assert!(rejection(config).contains("`serviceName`"), "{config}");
        assert_eq!(invalid_field(config).as_deref(), Some("serviceName"));
    }
}

#[test]
fn zero_or_missing_service_port_is_rejected() {
    for config in [
        r#"{"serviceSource": "ip", "serviceName": "foo", "servicePort": 0, "requestPath": "/t"}"#,
        r#"{"serviceSource": "ip", "serviceName": "foo", "requestPath": "/t"}"#,
    ] {
        assert!(rejection(config).contains("`servicePort`"), "{config}");
        assert_eq!(invalid_field(config).as_deref(), Some("servicePort"));
    }
    // Out of range or not a number: serde's own error, naming the field too.
    for config in [
        r#"{"serviceSource": "ip", "serviceName": "foo", "servicePort": 70000, "requestPath": "/t"}"#,
        r#"{"serviceSource": "ip", "serviceName": "foo", "servicePort": "80", "requestPath": "/t"}"#,
    ] {
        assert!(rejection(config).contains("`servicePort`"), "{config}");
    }
}

#[test]
fn unknown_or_missing_service_source_is_rejected() {
    let unknown = r#"{"serviceSource": "consul", "serviceName": "foo", "servicePort": 80, "requestPath": "/t"}"#;
    let message = rejection(unknown);
    assert!(message.contains("`serviceSource`"), "{message}");
    assert!(message.contains("consul"), "{message}");

    let missing = r#"{"serviceName": "foo", "servicePort": 80, "requestPath": "/t"}"#;
    assert!(rejection(missing).contains("`serviceSource`"));
    assert_eq!(invalid_field(missing).as_deref(), Some("serviceSource"));
}

#[test]
fn nacos_without_namespace_and_dns_without_domain_are_rejected() {
    let nacos = r#"{"serviceSource": "nacos", "serviceName": "foo", "servicePort": 80, "requestPath": "/t"}"#;
    assert!(rejection(nacos).contains("`namespace`"));
    assert_eq!(invalid_field(nacos).as_deref(), Some("namespace"));

    let dns =
        r#"{"serviceSource": "dns", "serviceName": "foo", "servicePort": 80, "requestPath": "/t"}"#;
    assert!(rejection(dns).contains("`domain`"));
    assert_eq!(invalid_field(dns).as_deref(), Some("domain"));
}

#[test]
fn keys_added_by_the_control_plane_are_ignored() {
    let config = r#"{"serviceSource": "ip", "serviceName": "foo", "servicePort": 80,
        "requestPath": "/t", "_rules_": [], "_match_route_": ["r"]}"#;
    let test = test_with(config);
    let stream = test.stream();
    assert_eq!(stream.send_request_headers(REQUEST, true), Action::Pause);
    assert_eq!(stream.calls()[0].cluster(), "outbound|80||foo.static");
}
